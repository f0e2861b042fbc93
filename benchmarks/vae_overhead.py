"""The framework's overhead on `model=vae`: jaxdl's training path against a bare jitted loop of the same maths.

    python -m benchmarks.vae_overhead                          # 3 alternating pairs of 3 epochs each
    python -m benchmarks.vae_overhead --epochs 1 --pairs 1     # a smoke run (about a minute)

In one process, alternating, pair after pair (jaxdl first in even pairs, the
bare loop first in odd ones):

(a) jaxdl: `jaxdl.experiment.run` with the composed config of
    `python -m experiments.run model=vae` (plus `OVERRIDES`): the loop, the
    in-memory loader, `VAETask.train_step` over the shard_map backend on one
    CPU device, evaluation and an asynchronous checkpoint after each epoch.
    Its training-steps time is the run's `train_time_s`: every step after the
    first (which compiles), evaluation excluded.
(b) bare: `bare_loop`, about 60 lines: the same `jaxdl.models.vae.VAE`, the
    same loss, Adam with the same cosine schedule, the same batches in the same
    order, dynamic binarization and latent noise from the same per-example
    keys, the state donated, numpy batches gathered on the host and handed to
    one jitted step, the last step's metrics fetched every `log_every_steps`.
    Timed over the same steps (all but the first).

Both start from the same parameters and draw the same randomness, so they
compute the same numbers: the script prints the difference of their last
logged train/elbo as a check that like is timed against like. Then, per
pair, the two training-steps times and their ratio, and the median ratio
(target <= 1.05). Timings need an idle machine (`benchmarks.machine_load`
reports the load at the start and the end). Both loops run with the huge pages
jaxdl gives a run (`jaxdl.backend.restart_with_huge_pages`; `JAXDL_HUGE_PAGES=0` for glibc's default pages).
"""

from __future__ import annotations

import argparse
import functools
import json
import pathlib
import statistics
import sys
import tempfile
import time
from typing import Any

from jaxdl import backend  # light: it imports jax only where a function needs it

# The overrides of `python -m experiments.run` this script composes, in one place (config keys may be renamed).
OVERRIDES = (
    "model=vae",
    "trainer.num_devices=1",  # what experiments.run has on a CPU without forced host devices
    "trainer.progress=false",
    "trainer.artifacts=false",  # pictures: evaluation-time work, not in the timed steps
    "task.iw_samples=0",  # the final k = 1000 importance-weighted NLL: after training, not timed
)


def jaxdl_run(settings: dict[str, Any], run_dir: pathlib.Path) -> dict[str, Any]:
    """Runs `jaxdl.experiment.run` with the composed settings; returns its results."""
    from jaxdl import experiment

    keys = ("seed", "precision", "model", "task", "data", "optimizer", "trainer")
    return experiment.run(**{k: settings[k] for k in keys if k in settings}, run_dir=run_dir)


def bare_loop(settings: dict[str, Any], images, total: int, log_every_steps: int) -> dict[str, Any]:
    """`total` steps of model=vae's training as a plain jitted loop (see the module docstring).

    Returns {"train_time_s": seconds after the first step, "steps", "logged": [(step, elbo of that step)]}.
    """
    import jax
    import jax.numpy as jnp
    import numpy as np
    import optax

    from jaxdl.models.vae import VAE
    from scripts.benchmark import batch_size_of

    m, opt, seed = dict(settings["model"]), settings["optimizer"], settings["seed"]
    m.pop("name")
    m["image_shape"] = m.get("image_shape") or images.shape[1:]  # the run takes it from the data
    m["param_dtype"] = jnp.dtype(m.get("param_dtype", "float32"))
    model = VAE(**{k: tuple(v) if isinstance(v, list) else v for k, v in m.items()})
    batch, n = batch_size_of(settings), len(images)
    steps_per_epoch = n // batch
    schedule = optax.warmup_cosine_decay_schedule(opt["learning_rate"], opt["learning_rate"], 0, total,
                                                  end_value=opt["schedule"]["end_factor"] * opt["learning_rate"])
    tx = optax.adam(schedule, b1=opt["b1"], b2=opt["b2"], eps=opt["eps"])
    init = jax.jit(functools.partial(model.init, train=False))
    params = init({"params": jax.random.fold_in(jax.random.key(seed), 0)}, jnp.zeros((1, *images.shape[1:])),
                  example_keys=jax.random.key(0))["params"]
    train_key = jax.random.fold_in(jax.random.key(seed), 1)
    per_example = jax.vmap(jax.random.fold_in, in_axes=(None, 0))

    def loss_fn(params, x, keys):
        out = model.apply({"params": params}, x, train=True, example_keys=keys)
        recon = (jax.nn.softplus(out.recon_logits) - x * out.recon_logits).reshape(len(x), -1).sum(-1)
        kl = 0.5 * jnp.sum(jnp.square(out.mu) + jnp.exp(out.logvar) - 1.0 - out.logvar, axis=-1)
        return (recon + kl).mean(), {"elbo": recon + kl, "recon": recon, "kl": kl}

    @functools.partial(jax.jit, donate_argnums=0)
    def step(state, image, index):
        params, opt_state, count = state
        binarize_key, latent_key = jax.random.split(jax.random.fold_in(train_key, count))
        index = index.astype(jnp.uint32)
        x = jax.vmap(lambda k, p: jax.random.bernoulli(k, p).astype(jnp.float32))(
            per_example(binarize_key, index), image.astype(jnp.float32) / 255.0)
        (_, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, x, per_example(latent_key, index))
        updates, opt_state = tx.update(grads, opt_state, params)
        metrics = {k: v.mean() for k, v in aux.items()} | {"grad_norm": optax.tree.norm(grads)}
        return (optax.apply_updates(params, updates), opt_state, count + 1), metrics

    state, done, logged, t0 = (params, tx.init(params), jnp.zeros((), jnp.int32)), 0, [], None
    for epoch in range(-(-total // steps_per_epoch)):
        order = np.random.default_rng([seed, epoch]).permutation(n)
        for s in range(min(steps_per_epoch, total - done)):
            idx = order[s * batch : (s + 1) * batch]
            state, metrics = step(state, images[idx], idx.astype(np.int32))
            done += 1
            if t0 is None:  # the first step compiles: timed from its end, as jaxdl's train_time_s
                jax.block_until_ready(metrics)
                t0 = time.perf_counter()
            elif done % log_every_steps == 0 or done == total:
                logged.append((done, float(jax.device_get(metrics["elbo"]))))
    jax.block_until_ready(state)
    return {"train_time_s": time.perf_counter() - t0, "steps": done, "logged": logged}


def logged_elbo(run_dir: pathlib.Path) -> list[tuple[int, float]]:
    """(step, train/elbo) of every training log of a jaxdl run (each the mean over its window)."""
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["train/elbo"]) for r in records if "train/elbo" in r]


def same_maths(settings: dict[str, Any], images, steps: int = 8) -> float:
    """Largest |difference| of train/elbo between jaxdl and the bare loop over `steps` steps logged one by one.

    jaxdl logs from its second step on (the first compiles); the schedule of
    both is over `steps` steps.
    """
    short = {**settings, "trainer": {**settings["trainer"], "max_steps": steps, "log_every_steps": 1}}
    with tempfile.TemporaryDirectory() as tmp:
        jaxdl_run(short, pathlib.Path(tmp))
        ours = dict(logged_elbo(pathlib.Path(tmp)))
    bare = dict(bare_loop(short, images, steps, 1)["logged"])
    common = sorted(set(ours) & set(bare))
    if len(common) < steps - 1:
        raise RuntimeError(f"expected train/elbo at steps 2..{steps}, got jaxdl {sorted(ours)}, bare {sorted(bare)}")
    return max(abs(ours[s] - bare[s]) for s in common)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=3, help="epochs per run (600 steps each at batch 100)")
    parser.add_argument("--pairs", type=int, default=3, help="alternating (jaxdl, bare) pairs")
    parser.add_argument("--override", nargs="*", default=[], help="extra Hydra overrides, e.g. data.data_dir=...")
    parser.add_argument("--json", type=pathlib.Path, default=None, help="also write the numbers here")
    args = parser.parse_args(argv)

    from benchmarks.machine_load import LoadMonitor
    from jaxdl.data import sources
    from scripts.benchmark import batch_size_of, compose

    print(f"huge pages: {backend.describe()['huge_pages']}", flush=True)
    monitor = LoadMonitor()
    before = monitor.read()
    settings = compose((*OVERRIDES, f"trainer.epochs={args.epochs}", *args.override))
    data = settings["data"]
    builder = sources.prepare(data["name"], data_dir=data.get("data_dir"), manual_dir=data.get("manual_dir"))
    images = sources.load_arrays(builder, data.get("train_split", "train"), limit=data.get("train_limit"))["image"]
    log_every = settings["trainer"]["log_every_steps"]
    difference = same_maths(settings, images)
    print(f"same maths: train/elbo of steps 2-8, jaxdl against bare, differ by at most {difference:.2e} nats", flush=True)
    pairs = []
    total = settings["trainer"]["epochs"] * (len(images) // batch_size_of(settings))
    for pair in range(args.pairs):
        # the order alternates (jaxdl first in even pairs), so neither loop always runs in the other's wake
        bare_first = pair % 2 == 1
        if bare_first:
            bare = bare_loop(settings, images, total, log_every)
        with tempfile.TemporaryDirectory() as tmp:
            results = jaxdl_run(settings, pathlib.Path(tmp))
        if results["steps"] != total:
            raise RuntimeError(f"jaxdl ran {results['steps']} steps, the bare loop {total}")
        if not bare_first:
            bare = bare_loop(settings, images, total, log_every)
        steps = results["steps"] - 1
        ratio = results["train_time_s"] / bare["train_time_s"]
        pairs.append({"jaxdl_s": results["train_time_s"], "bare_s": bare["train_time_s"], "steps": steps, "ratio": ratio})
        print(f"pair {pair}: {steps} timed steps: jaxdl {results['train_time_s']:.2f} s "
              f"({1e3 * results['train_time_s'] / steps:.3f} ms/step), bare {bare['train_time_s']:.2f} s "
              f"({1e3 * bare['train_time_s'] / steps:.3f} ms/step), ratio {ratio:.3f}", flush=True)
    after = monitor.read()
    load = monitor.row(before, after)
    median = statistics.median(p["ratio"] for p in pairs)
    print(f"median ratio jaxdl / bare: {median:.3f} (target <= 1.05); "
          f"{'UNDER LOAD: ' if load['loaded'] else ''}1-min load {before['load1']:.2f} -> {after['load1']:.2f}, "
          f"other processes {load['other_cpu_cores']:.2f} cores", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"overrides": [*OVERRIDES, *args.override], "epochs": args.epochs,
                                         "same_maths_max_difference": difference, "pairs": pairs,
                                         "median_ratio": median, "load": load}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    backend.restart_with_huge_pages()  # both loops run with the memory a run has (`python -m experiments.run`)
    sys.exit(main())
