"""Vanishing gradients, measured: deep MLPs (sigmoid / ReLU, with and without batch norm) and RNN vs LSTM.

    python -m scripts.vanishing_gradients                      # MNIST from $JAXDL_MANUAL_DIR or prepared data
    python -m scripts.vanishing_gradients --out benchmarks/vanishing_gradients --mlp-steps 1000 --rnn-steps 2000

Writes into `--out`:
  grad_norm_vs_depth.png     gradient norm of each Dense layer (input layer 1 ... output layer) at
                             initialization and averaged over training, one line per MLP setting
  grad_norm_vs_distance.png  norm of d(loss at the last step) / d(input embedding k steps earlier),
                             Elman RNN vs LSTM, at initialization and after training
  loss_vs_steps.png          training loss of every setting against optimizer steps
  results.json               the numbers behind the plots (ratios first/last layer, distance 1 vs 50/100)

Settings (units): the MLP has `--depth` hidden Dense layers of `--width` units (Flax's default LeCun-normal
init) on MNIST, plain SGD (no momentum, so no adaptive rescaling hides the effect) at `--mlp-lr`, batch 128.
The recurrent task asks for the first of T = `--seq-len` random tokens (vocabulary 8) at the last
position (tokens 1..7); only the last position is scored, so the loss stays near ln 7 = 1.95 nats until the
network carries the token across all T steps. The nets (Elman RNN; LSTM with forget-gate bias 0, Flax's default, and
1) have 64 hidden units and train with Adam at `--rnn-lr`, batch 64.
The gradient norms come from the tasks' `diagnostics` steps (`jaxdl.training.diagnostics`), the same
ones `trainer.diagnostics_every_steps=N` logs in any run. Glorot & Bengio 2010 (deep sigmoid nets);
Ioffe & Szegedy 2015 (batch norm, arXiv:1502.03167); Bengio et al. 1994 and Pascanu et al. 2013
(arXiv:1211.5063) for recurrent nets; Hochreiter & Schmidhuber 1997 (LSTM).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxdl.data import sources
from jaxdl.data.pipeline import ArrayLoader
from jaxdl.models.mlp import MLP
from jaxdl.models.rnn import RNNLM
from jaxdl.tasks.classification import ClassificationTask
from jaxdl.tasks.language_model import LanguageModelTask
from jaxdl.viz.figures import pyplot, save_figure

MLP_SETTINGS = {  # name -> (activation, batch_norm)
    "sigmoid": ("sigmoid", False),
    "relu": ("relu", False),
    "sigmoid + BN": ("sigmoid", True),
    "relu + BN": ("relu", True),
}
VOCAB = 8
RNN_SETTINGS = {  # name -> (cell, forget-gate bias at init; None: no forget gate)
    "Elman RNN (tanh)": ("rnn", None),
    "LSTM, forget bias 0 (Flax default)": ("lstm", 0.0),
    "LSTM, forget bias 1": ("lstm", 1.0),
}


def batches_forever(loader: ArrayLoader):
    epoch = 0
    while True:
        yield from loader.epoch(epoch)
        epoch += 1


def train(task, state, batches, *, steps: int, diag_every: int, key: jax.Array):
    """Runs `steps` updates; returns (per-step losses [steps], {step: diagnostics}) as numpy/floats."""
    step_fn = jax.jit(task.train_step, donate_argnums=0)
    diag_fn = jax.jit(task.diagnostics)
    losses, diags = [], {}
    for step in range(steps + 1):
        batch = {k: jnp.asarray(v) for k, v in next(batches).items()}
        if step % diag_every == 0 or step == steps:
            diags[step] = {k: float(v) for k, v in jax.device_get(diag_fn(state, batch, key)).items()}
        if step == steps:
            break
        state, metrics = step_fn(state, batch, key)
        losses.append(metrics["loss"])
    return np.asarray(jax.device_get(losses), np.float64), diags


def layer_norms(diag: dict[str, float], depth: int) -> np.ndarray:
    """float [depth + 1]: gradient norms of Dense_0 .. Dense_{depth-1} and the output layer."""
    names = [f"Dense_{i}" for i in range(depth)] + ["output"]
    return np.array([diag[f"diag/grad_norm/{n}"] for n in names])


def run_mlps(args, key) -> dict:
    builder = sources.prepare("mnist", data_dir=args.data_dir, manual_dir=args.manual_dir)
    arrays = sources.load_arrays(builder, "train", limit=args.mlp_examples)
    out = {}
    for name, (activation, batch_norm) in MLP_SETTINGS.items():
        t0 = time.perf_counter()
        model = MLP(hidden_dims=(args.width,) * args.depth, activation=activation, batch_norm=batch_norm)
        task = ClassificationTask(model)
        example = {k: v[:1] for k, v in arrays.items()}
        state = task.init_state(jax.random.key(args.seed), optax.sgd(args.mlp_lr), example)
        loader = ArrayLoader(arrays, 128, shuffle=True, seed=args.seed, drop_remainder=True)
        batches = batches_forever(loader)
        losses, diags = train(task, state, batches, steps=args.mlp_steps, diag_every=args.diag_every, key=key)
        norms = np.stack([layer_norms(d, args.depth) for d in diags.values()])  # [checks, depth + 1]
        dead = [d.get("diag/dead/all", 0.0) for d in diags.values()]
        out[name] = {
            "losses": losses,
            "norms_init": norms[0],
            "norms_mean": norms.mean(0),
            "ratio_first_last_init": float(norms[0, 0] / norms[0, -1]),
            "ratio_first_last_mean": float(np.mean(norms[:, 0] / norms[:, -1])),
            "dead_fraction_init": float(dead[0]),
            "dead_fraction_end": float(dead[-1]),
            "final_loss": float(losses[-50:].mean()),
            "seconds": time.perf_counter() - t0,
        }
        print(
            f"MLP {name:13s} first/last layer grad norm: init {out[name]['ratio_first_last_init']:.3g}, "
            f"mean over training {out[name]['ratio_first_last_mean']:.3g}; "
            f"dead units init {dead[0]:.3f} end {dead[-1]:.3f}; "
            f"loss (mean of last 50 steps) {out[name]['final_loss']:.3f}; {out[name]['seconds']:.1f} s",
            flush=True,
        )
    return out


def recall_batches(seq_len: int, batch: int, seed: int):
    """Recall-task batches: tokens int32 [B, T] uniform in [1, V); only position T-1 counts, target tokens[:, 0]."""
    rng = np.random.default_rng(seed)
    mask = np.zeros((batch, seq_len), bool)
    mask[:, -1] = True
    while True:
        tokens = rng.integers(1, VOCAB, (batch, seq_len)).astype(np.int32)
        targets = np.zeros_like(tokens)
        targets[:, -1] = tokens[:, 0]
        yield {"tokens": tokens, "targets": targets, "token_mask": mask, "index": np.arange(batch, dtype=np.int32)}


def run_rnns(args, key) -> dict:
    out = {}
    for name, (cell, forget_bias) in RNN_SETTINGS.items():
        t0 = time.perf_counter()
        task = LanguageModelTask(RNNLM(vocab_size=VOCAB, cell=cell, hidden_dim=64, embed_dim=16))
        task.diagnostic_distances = tuple(range(args.seq_len))
        batches = recall_batches(args.seq_len, 64, args.seed)
        example = next(recall_batches(args.seq_len, 1, 0))
        state = task.init_state(jax.random.key(args.seed), optax.adam(args.rnn_lr), example)
        if forget_bias is not None:  # Gers et al. 2000; Jozefowicz et al. 2015 recommend 1
            params = jax.tree.map(lambda x: x, state.params)
            params["cell_0"]["hf"]["bias"] = jnp.full_like(params["cell_0"]["hf"]["bias"], forget_bias)
            state = state.replace(params=params)
        losses, diags = train(task, state, batches, steps=args.rnn_steps, diag_every=args.diag_every, key=key)
        first, last = diags[min(diags)], diags[max(diags)]
        by_distance = lambda d: np.array([d[f"diag/time_grad_norm/d{k}"] for k in range(args.seq_len)])  # noqa: E731
        far = [k for k in (50, 100) if k < args.seq_len]
        ratio = lambda d, k: float(d[f"diag/time_grad_norm/d{k}"] / d["diag/time_grad_norm/d1"])  # noqa: E731
        out[name] = {
            "losses": losses,
            "distance_init": by_distance(first),
            "distance_end": by_distance(last),
            "final_loss": float(losses[-50:].mean()),
            "seconds": time.perf_counter() - t0,
            **{f"ratio_d{k}_d1_init": ratio(first, k) for k in far},
            **{f"ratio_d{k}_d1_end": ratio(last, k) for k in far},
        }
        ratios = "  ".join(f"{k}: {v:.3g}" for k, v in out[name].items() if k.startswith("ratio"))
        print(
            f"{name}: grad norm ratios (distance k / distance 1): {ratios}; last-position loss "
            f"(mean of last 50 steps) {out[name]['final_loss']:.3f} nats; {out[name]['seconds']:.1f} s",
            flush=True,
        )
    return out


def plot(args, mlps: dict, rnns: dict, out_dir: pathlib.Path) -> None:
    depth_axis = np.arange(1, args.depth + 2)
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), dpi=90, sharey=True)
    for name, r in mlps.items():
        axes[0].semilogy(depth_axis, r["norms_init"], marker="o", ms=3, label=name)
        axes[1].semilogy(depth_axis, r["norms_mean"], marker="o", ms=3, label=name)
    for ax, title in zip(axes, ("at initialization", f"mean over {args.mlp_steps} SGD steps")):
        ax.set_xlabel(f"layer (1 = input, {args.depth + 1} = output)")
        ax.set_title(title)
        ax.grid(alpha=0.3, which="both")
    axes[0].set_ylabel("gradient norm of the layer")
    axes[1].legend(fontsize=8)
    fig.suptitle(f"{args.depth}-hidden-layer MLP ({args.width} units) on MNIST", fontsize=10)
    fig.tight_layout()
    save_figure(fig, out_dir / "grad_norm_vs_depth.png")

    distance = np.arange(args.seq_len)
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), dpi=90, sharey=True)
    for name, r in rnns.items():
        axes[0].semilogy(distance, r["distance_init"], label=name)
        axes[1].semilogy(distance, r["distance_end"], label=name)
    for ax, title in zip(axes, ("at initialization", f"after {args.rnn_steps} Adam steps")):
        ax.set_xlabel("distance from the last step (time steps)")
        ax.set_title(title)
        ax.grid(alpha=0.3, which="both")
    axes[0].set_ylabel("|d loss(T) / d x(T - k)|")
    axes[1].legend(fontsize=8)
    fig.suptitle(f"recall the first of T = {args.seq_len} tokens", fontsize=10)
    fig.tight_layout()
    save_figure(fig, out_dir / "grad_norm_vs_distance.png")

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), dpi=90)
    smooth = lambda x: np.convolve(x, np.ones(20) / 20, mode="valid")  # noqa: E731  20-step running mean
    for name, r in mlps.items():
        axes[0].plot(smooth(r["losses"]), label=name)
    for name, r in rnns.items():
        axes[1].plot(smooth(r["losses"]), label=name)
    axes[1].axhline(np.log(VOCAB - 1), color="grey", ls=":", lw=1, label="chance, ln 7")
    axes[0].set_title("MLP on MNIST (cross-entropy)")
    axes[1].set_title(f"recall across {args.seq_len} steps (last-step NLL)")
    for ax in axes:
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("training loss, nats (20-step mean)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, out_dir / "loss_vs_steps.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/vanishing_gradients", help="folder for the PNGs and results.json")
    parser.add_argument("--data-dir", default=None, help="prepared TFDS datasets (default $JAXDL_DATA_DIR)")
    parser.add_argument("--manual-dir", default=None, help="raw MNIST files (default $JAXDL_MANUAL_DIR)")
    parser.add_argument("--depth", type=int, default=10, help="hidden layers of the MLP")
    parser.add_argument("--width", type=int, default=128, help="units per hidden layer")
    parser.add_argument("--mlp-steps", type=int, default=1000)
    parser.add_argument("--mlp-lr", type=float, default=0.1, help="SGD step size")
    parser.add_argument("--mlp-examples", type=int, default=None, help="first N MNIST training images (default all)")
    parser.add_argument("--seq-len", type=int, default=101, help="T; distances 0 .. T-1 are measured")
    parser.add_argument("--rnn-steps", type=int, default=2000)
    parser.add_argument("--rnn-lr", type=float, default=3e-3, help="Adam step size")
    parser.add_argument("--diag-every", type=int, default=50, help="steps between diagnostics")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    out_dir = pathlib.Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    key = jax.random.key(args.seed)
    mlps = run_mlps(args, key)
    rnns = run_rnns(args, key)
    plot(args, mlps, rnns, out_dir)
    summary = {
        "settings": vars(args),
        "mlp": {k: {n: v for n, v in r.items() if n != "losses"} for k, r in mlps.items()},
        "rnn": {k: {n: v for n, v in r.items() if n != "losses"} for k, r in rnns.items()},
    }
    as_list = lambda a: np.asarray(a).tolist()  # noqa: E731
    (out_dir / "results.json").write_text(json.dumps(summary, indent=2, default=as_list) + "\n")
    print(f"wrote {out_dir}/grad_norm_vs_depth.png, grad_norm_vs_distance.png, loss_vs_steps.png, results.json")


if __name__ == "__main__":
    main()
