"""Training-step speed of the reference models beside PyTorch (eager, torch.compile) and Keras 3 (JAX backend).

    python -m scripts.benchmark                                  # every reference model, writes benchmarks/RESULTS.md
    python -m scripts.benchmark --models lstm vae --repeats 5     # a few models
    python -m scripts.benchmark --models mlp --tiny --repeats 1 --no-write   # seconds: smoke test

The jaxdl side is the real step: each case composes the Hydra config of its
command (`model=vae`, `experiment=shakespeare_char_cpu`, ...), builds the
model, task, optimizer and first batches exactly as `jaxdl.experiment.run`
does, and times `task.train_step` under `jaxdl.training.parallel.data_parallel`
(donated state, the loop's default backend) on batches already on the
devices. "jaxdl xN" is the same on N CPU host devices (the batch split over
them; `--host-devices`, default: the machine's cores).

The peers (`scripts.bench_peers`; torch and keras are the optional extra
`bench`, never runtime dependencies) build the same architecture, loss,
optimizer and batch. Frameworks are timed round-robin, one window each per
repeat, so load from other processes hits every column alike; a column's
figure is the median over repeats of (window time / steps in the window).

Columns: step = median training-step time after warm-up (ms); compile = the
first step, compilation included (s); ex/s = batch / step. Ratios are
jaxdl's step over the peer's (lower is better; the target is <= 1.0).

End-to-end (`--end-to-end`): input-pipeline overhead (steps fed by the run's
real `ArrayLoader`, host batches copied each step as the loop does, against
the same steps on a batch already on the devices) and the time to the first
step of `python -m experiments.run model=vae`, cold and with the persistent
compilation cache warm (from the run's results.json: setup_s + first_step_s).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import math
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

REPO = pathlib.Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "RESULTS.md"
PEER_COLUMNS = {"torch": "torch", "compile": "torch.compile", "keras": "keras-jax"}


@dataclasses.dataclass(frozen=True)
class Case:
    """One benchmark row: the command's overrides and which peer architecture mirrors it."""

    name: str
    overrides: tuple[str, ...]
    peer: str
    tiny: tuple[str, ...] = ()  # extra overrides for --tiny (smoke tests)
    note: str = ""


CASES = {
    c.name: c
    for c in (
        Case("mlp", ("model=mlp",), "mlp", ("data.batch_size=16", "model.hidden_dims=[32,32]")),
        Case("cnn", ("model=cnn",), "cnn", ("data.batch_size=16",)),
        Case(
            "cnn_vgg",
            ("experiment=cifar10_cnn", "task.augment.crop_pad=0", "task.augment.flip=false", "task.augment.cutout_size=0"),
            "cnn",
            ("data.batch_size=16", "model.channels=[8,8,8]", "model.dense_dims=[16]"),
            note="experiment=cifar10_cnn without augmentation (the peers do not augment)",
        ),
        Case("airbench94", ("model=airbench94", "data.batch_size=256", "task.flip=false", "task.translate=0", "task.lookahead=false"),
             "airbench94", ("data.batch_size=16",),
             note="batch 256 (the recipe's 1024 takes ~15 s a step here)"),
        Case("lstm", ("model=lstm",), "lstm", ("data.batch_size=8", "model.hidden_dim=16", "data.seq_len=10", "data.eval_context=2")),
        Case("transformer", ("experiment=shakespeare_char_cpu",), "transformer",
             ("data.batch_size=4", "model.num_layers=1", "model.embed_dim=32"),
             note="nanoGPT's CPU setting; model=transformer's default takes ~10 s a step here"),
        Case("vae", ("model=vae",), "vae", ("data.batch_size=16", "model.hidden_dims=[32,32]")),
        Case("gan", ("model=gan",), "gan", ("data.batch_size=16",)),
    )
}
DEFAULT_CASES = ("mlp", "cnn", "cnn_vgg", "airbench94", "lstm", "transformer", "vae", "gan")
#: The settings the CPU rows shrink, for accelerators (not in the default list).
CASES.update({
    "transformer_gpu": Case("transformer_gpu", ("experiment=shakespeare_char", "model.dropout_rate=0.0"), "transformer",
                            CASES["transformer"].tiny + ("model.num_heads=2", "data.seq_len=32"),
                            note="nanoGPT's GPU setting (batch 64 x 256, 10.7M parameters), dropout 0: "
                                 "the peers have none"),
    "airbench94_gpu": Case("airbench94_gpu", ("model=airbench94", "task.flip=false", "task.translate=0",
                                              "task.lookahead=false"), "airbench94", ("data.batch_size=16",),
                           note="the recipe's batch 1024"),
})
#: What --dtype adds to every case's overrides (one place, for when a global precision setting replaces it).
DTYPE_OVERRIDES = {"float32": (), "bfloat16": ("model.dtype=bfloat16",)}


def compose(overrides: tuple[str, ...]) -> dict[str, Any]:
    """The resolved config of `python -m experiments.run OVERRIDES` as plain dicts."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    from experiments.config import register
    from experiments.sweeps import register_resolvers

    register()
    register_resolvers()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = hydra_compose(config_name="config", overrides=list(overrides))
    return OmegaConf.to_container(cfg, resolve=True)


@dataclasses.dataclass
class Built:
    """What a jaxdl case needs: settings, task, host state, loader and an on-device batch."""

    settings: dict[str, Any]
    task: Any
    state: Any
    loader: Any
    host_batch: dict[str, Any]


def build(settings: dict[str, Any], *, train_limit: int | None) -> Built:
    """Builds model, task, optimizer, state and the training loader as `jaxdl.experiment.run` does.

    Args:
      settings: composed config (see `compose`).
      train_limit: read at most this many training records (None: the run's own limit).
    """
    import jax

    from jaxdl import experiment
    from jaxdl.data import sequences, sources
    from jaxdl.data.pipeline import ArrayLoader
    from jaxdl.training import optim

    model_settings, task_settings = dict(settings["model"]), dict(settings["task"])
    data, optimizer = dict(settings["data"]), dict(settings["optimizer"])
    if train_limit is not None:
        data["train_limit"] = train_limit
    data["eval_limit"] = min(data.get("eval_limit") or 10**9, 2 * (data.get("eval_batch_size") or data["batch_size"]))
    module = experiment.build_model(model_settings.pop("name"), **model_settings)
    task = experiment.build_task(task_settings.pop("name"), module, **task_settings)
    builder = sources.prepare(data["name"], data_dir=data.get("data_dir"), manual_dir=data.get("manual_dir"))
    train = sources.load_arrays(builder, data.get("train_split", "train"), limit=data.get("train_limit"))
    evaluation = sources.load_arrays(builder, data.get("eval_split", "test"), limit=data.get("eval_limit"))
    train, evaluation = sequences.make_examples(data, train, evaluation)
    train = task.prepare_train_split(train)
    task.prepare_eval_split(evaluation)
    loader = ArrayLoader(train, data["batch_size"], shuffle=True, seed=settings["seed"], drop_remainder=True)
    schedule_settings = dict(optimizer.pop("schedule", None) or {"name": "constant"})
    total = (settings["trainer"].get("max_steps") or settings["trainer"]["epochs"] * loader.steps_per_epoch)
    total = max(total, (schedule_settings.get("warmup_steps") or 0) + 1)  # a --train-limit run still fits the warmup
    schedule = optim.make_schedule(
        schedule_settings.pop("name"), optimizer.pop("learning_rate"), total_steps=total,
        steps_per_epoch=loader.steps_per_epoch, **schedule_settings,
    )
    tx = optim.make_optimizer(optimizer.pop("name"), schedule, **optimizer)
    state = task.init_state(jax.random.fold_in(jax.random.key(settings["seed"]), 0), tx, {k: v[:1] for k, v in train.items()})
    return Built(settings, task, state, loader, next(iter(loader.epoch(0))))


#: case -> (column label, name of a context manager in scripts.bench_variants): attempts timed with --variants.
VARIANTS = {"mlp": ("batch-wide dropout", "batch_dropout"), "lstm": ("hoisted LSTM input", "hoisted_lstm"),
            "cnn": ("im2col conv", "im2col_conv"),
            "cnn_vgg": ("im2col conv", "im2col_conv")}


def jaxdl_runner(built: Built, num_devices: int, *, pipeline: bool = False, trace: bool = False) -> Callable[[int], None]:
    """`run(k)`: k training steps of the real jaxdl step on `num_devices` devices, blocking at the end.

    With `pipeline` each step takes the next batch of the run's `ArrayLoader`
    (host numpy, sharded and copied when the step starts, as `fit` does);
    otherwise every step reuses one batch already on the devices.

    On several CPU host devices every step is waited for before the next is
    dispatched: XLA's CPU all-reduce holds a thread-pool thread while it waits
    for the other devices, and with steps queued ahead on a 2-core machine one
    run of this benchmark stalled in that rendezvous until XLA aborted the
    process (40 s timeout, VAE, 2 devices). The wait costs microseconds against
    steps of milliseconds, and only makes the "jaxdl xN" column conservative.
    """
    import jax

    from jaxdl.training import parallel

    devices = parallel.select_devices(num_devices)
    n = len(devices)
    backend = built.settings["trainer"].get("backend", "shard_map")
    step = parallel.data_parallel(built.task.train_step, devices, backend=backend, donate_state=True)
    holder = {"state": parallel.replicate(built.state, devices)}
    on_device = next(parallel.prefetch_to_device([parallel.shard(built.host_batch, n)], 1, devices))
    key = jax.random.fold_in(jax.random.key(built.settings["seed"]), 1)
    batches = _endless(built.loader)

    def run(k: int) -> None:
        state, metrics = holder["state"], None
        for _ in range(k):
            batch = parallel.shard(next(batches), n) if pipeline else on_device
            state, metrics = step(state, batch, key)
            if n > 1:
                jax.block_until_ready(metrics)
        jax.block_until_ready(metrics)
        holder["state"] = state

    if trace:  # compile now (e.g. inside a variant's context); measure() reports this first step's time
        run.compile_s = timed(run, 1)
    return run


def _endless(loader):
    epoch = 0
    while True:
        yield from loader.epoch(epoch)
        epoch += 1


def timed(run: Callable[[int], None], k: int) -> float:
    """Seconds per step of `run(k)`."""
    t0 = time.perf_counter()
    run(k)
    return (time.perf_counter() - t0) / k


def measure(runners: dict[str, Callable[[int], None]], *, repeats: int, window_s: float, log=print) -> dict[str, dict]:
    """Compile time, then round-robin windows; returns {column: {compile_s, step_s, steps, windows}}.

    Each runner's first step is timed alone (compile), its second calibrates
    the window length (steps such that a window lasts about `window_s`).
    Then `repeats` rounds each time one window per runner, in turn.
    """
    out: dict[str, dict] = {}
    for name, run in list(runners.items()):
        try:
            compile_s = getattr(run, "compile_s", None) or timed(run, 1)
            warm = timed(run, 1)
        except Exception as error:  # one framework failing (e.g. torch.compile) must not lose the row
            log(f"    {name:14s} not measured: {type(error).__name__}: {str(error)[:300]}")
            del runners[name]
            continue
        out[name] = {"compile_s": compile_s, "k": max(1, min(200, math.ceil(window_s / max(warm, 1e-6)))), "windows": []}
        log(f"    {name:14s} compile {compile_s:7.2f} s, first warm step {warm * 1e3:9.2f} ms")
    for _ in range(repeats):
        for name, run in runners.items():
            out[name]["windows"].append(timed(run, out[name]["k"]))
    for name, r in out.items():
        r["step_s"] = statistics.median(r["windows"])
    return out


def bench_case(case: Case, args, log=print) -> dict[str, Any]:
    """Times one case: jaxdl on 1 and N devices and each requested peer."""
    import jax

    overrides = case.overrides + (case.tiny if args.tiny else ()) + DTYPE_OVERRIDES[args.dtype] + tuple(args.override)
    settings = compose(overrides)
    built = build(settings, train_limit=args.train_limit or (64 if args.tiny else None))
    batch_size = settings["data"]["batch_size"]
    runners: dict[str, Callable[[int], None]] = {"jaxdl": jaxdl_runner(built, 1)}
    ndev = min(args.host_devices, jax.local_device_count())
    if ndev > 1 and batch_size % ndev == 0:
        runners["jaxdl xN"] = jaxdl_runner(built, ndev)
    if args.variants and case.name in VARIANTS:
        from scripts import bench_variants

        label, patch = VARIANTS[case.name]
        with getattr(bench_variants, patch)():
            runners[f"jaxdl {label}"] = jaxdl_runner(build(settings, train_limit=built.loader.size), 1, trace=True)
    remote = None
    if args.peers:
        from scripts import bench_peers

        torch_peers = [p for p in args.peers if p in ("torch", "compile")]
        if torch_peers:
            device = peer_device(args.peer_device)
            if device == "cpu" and args.dtype == "float32":
                remote = bench_peers.RemotePeers(torch_peers, case.peer, settings, built.host_batch)
            else:
                remote = device_peers(torch_peers, case.peer, settings, built.host_batch, device, args.dtype)
            for peer, why in remote.skipped.items():
                log(f"    {peer}: not measured ({why})")
            for peer in remote.ready:
                runners[PEER_COLUMNS[peer]] = remote.runner(peer)
        if "keras" in args.peers:
            try:
                runners[PEER_COLUMNS["keras"]] = bench_peers.make("keras", case.peer, settings, built.host_batch)
            except bench_peers.NotAvailable as why:
                log(f"    keras: not measured ({why})")
    if args.end_to_end and case.name in args.pipeline:
        runners["jaxdl (pipeline)"] = jaxdl_runner(built, 1, pipeline=True)
    try:
        results = measure(runners, repeats=args.repeats, window_s=args.window, log=log)
    finally:
        if remote is not None:
            remote.close()
    params = sum(int(x.size) for x in jax.tree.leaves(built.state.params))
    row = {"case": case.name, "command": " ".join(case.overrides), "note": case.note, "batch": batch_size,
           "parameters": params, "results": results}
    if args.mfu:
        row["flops_per_step"] = step_flops(built)
    return row


def first_step_times(cache_dir: str, overrides: list[str], log=print) -> list[dict[str, Any]]:
    """Runs `python -m experiments.run model=vae` for one step twice into `cache_dir` (cold, then warm cache)."""
    out = []
    for label in ("cold cache", "warm cache"):
        with tempfile.TemporaryDirectory() as run_dir:
            env = dict(os.environ, JAXDL_CACHE_DIR=cache_dir)
            cmd = [sys.executable, "-m", "experiments.run", "model=vae", "trainer.max_steps=1", "trainer.artifacts=false",
                   "trainer.progress=false", "task.iw_samples=1", "task.iw_chunk=1", f"hydra.run.dir={run_dir}", *overrides]
            t0 = time.perf_counter()
            proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
            wall = time.perf_counter() - t0
            if proc.returncode:
                raise RuntimeError(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
            results = json.loads((pathlib.Path(run_dir) / "results.json").read_text())
        row = {"label": label, "setup_s": results["setup_s"], "first_step_s": results["first_step_s"], "process_s": wall}
        row["to_first_step_s"] = row["setup_s"] + row["first_step_s"]
        # From the launch: the whole process less what followed the first step (evaluation, checkpoint, results);
        # an upper bound, as it still holds the interpreter's exit.
        row["launch_to_first_step_s"] = wall - (results["wall_time_s"] - results["first_step_s"])
        log(f"  time to first step, {label}: setup {row['setup_s']:.2f} s + first step {row['first_step_s']:.2f} s "
            f"= {row['to_first_step_s']:.2f} s; from launch {row['launch_to_first_step_s']:.1f} s "
            f"(whole 1-step process {wall:.1f} s)")
        out.append(row)
    return out


def versions() -> dict[str, str]:
    from importlib import metadata

    out = {"python": platform.python_version()}
    for dist in ("jax", "jaxlib", "flax", "optax", "torch", "keras", "numpy"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            pass
    return out


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.machine()}"


def _ms(res: dict, col: str) -> str:
    return f"{res[col]['step_s'] * 1e3:,.1f}" if col in res else "-"


def _ratio(res: dict, col: str, peer: str) -> str:
    if col not in res or peer not in res:
        return "-"
    r = res[col]["step_s"] / res[peer]["step_s"]
    return f"**{r:.2f}**" if r > 1.0 else f"{r:.2f}"


def _attempt(res: dict) -> str:
    """The --variants column of a row, "label: step ms" (or "-")."""
    labels = {label for label, _ in VARIANTS.values()}
    found = [c for c in res if c.removeprefix("jaxdl ") in labels]
    return ", ".join(f"{c.removeprefix('jaxdl ')}: {_ms(res, c)}" for c in found) or "-"


def summary_table(rows: list[dict[str, Any]]) -> list[str]:
    """Markdown: one line per model; step times (ms), jaxdl's compile time and examples/s, ratios jaxdl / peer."""
    lines = [
        "| model (command) | batch | jaxdl | jaxdl xN | torch | torch.compile | keras-jax | jaxdl / torch | jaxdl / compile "
        "| jaxdl / keras | xN / torch | xN / keras | jaxdl compile (s) | jaxdl examples/s | attempt (ms) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        res = row["results"]
        lines.append(
            f"| {row['case']} (`{row['command']}`) | {row['batch']} | {_ms(res, 'jaxdl')} | {_ms(res, 'jaxdl xN')} | "
            f"{_ms(res, 'torch')} | {_ms(res, 'torch.compile')} | {_ms(res, 'keras-jax')} | "
            f"{_ratio(res, 'jaxdl', 'torch')} | {_ratio(res, 'jaxdl', 'torch.compile')} | {_ratio(res, 'jaxdl', 'keras-jax')} | "
            f"{_ratio(res, 'jaxdl xN', 'torch')} | {_ratio(res, 'jaxdl xN', 'keras-jax')} | "
            f"{res['jaxdl']['compile_s']:.2f} | {row['batch'] / res['jaxdl']['step_s']:,.0f} | {_attempt(res)} |"
        )
    return lines


def detail_table(rows: list[dict[str, Any]]) -> list[str]:
    """Markdown: every measured column of every model (step, first step with compilation, examples/s, windows)."""
    lines = ["| model | column | step (ms) | first step (s) | examples/s | steps x windows | window medians (ms) |",
             "|---|---|---|---|---|---|---|"]
    for row in rows:
        for col, r in row["results"].items():
            windows = ", ".join(f"{w * 1e3:.1f}" for w in r["windows"])
            lines.append(f"| {row['case']} | {col} | {r['step_s'] * 1e3:,.2f} | {r['compile_s']:.2f} | "
                         f"{row['batch'] / r['step_s']:,.0f} | {r['k']} x {len(r['windows'])} | {windows} |")
    return lines


def end_to_end_lines(rows: list[dict[str, Any]], first_step: list[dict[str, Any]] | None) -> list[str]:
    lines = []
    piped = [r for r in rows if "jaxdl (pipeline)" in r["results"]]
    if piped:
        lines += ["| model | step, batch on device (ms) | step fed by the run's ArrayLoader (ms) | overhead | target |",
                  "|---|---|---|---|---|"]
        for row in piped:
            a, b = row["results"]["jaxdl"]["step_s"], row["results"]["jaxdl (pipeline)"]["step_s"]
            lines.append(f"| {row['case']} | {a * 1e3:.2f} | {b * 1e3:.2f} | {100 * (b / a - 1):+.1f}% | <= 5% |")
        lines.append("")
    if first_step:
        lines += ["| `python -m experiments.run model=vae` | setup (s) | first step (s) | setup + first step (s) | "
                  "from launch, imports included (s) | whole 1-step process (s) |", "|---|---|---|---|---|---|"]
        for r in first_step:
            lines.append(f"| {r['label']} | {r['setup_s']:.2f} | {r['first_step_s']:.2f} | {r['to_first_step_s']:.2f} | "
                         f"{r.get('launch_to_first_step_s', float('nan')):.1f} | {r['process_s']:.1f} |")
    return lines


def write_results(record: dict[str, Any], path: pathlib.Path = RESULTS) -> None:
    """Writes the generated part of RESULTS.md between its markers, keeping the hand-written text around it."""
    start, end = "<!-- benchmark:start -->", "<!-- benchmark:end -->"
    v = record["versions"]
    body = [
        start,
        f"Measured {record['date']} on {record['machine']}; " + ", ".join(f"{k} {x}" for k, x in v.items()) + ".",
        f"Command: `python -m scripts.benchmark {record['argv']}`.",
        *([f"Incomplete: still to measure {', '.join(record['pending'])} (the run stopped or is still going)."]
          if record.get("pending") else []),
        "",
        "Median training-step time (ms) after warm-up; ratios are jaxdl's step over the peer's (target <= 1.0, "
        "in bold where above). jaxdl = one CPU device (what `experiments.run` uses by default); "
        f"jaxdl xN = the batch split over {record['host_devices']} XLA host devices.",
        "",
        *summary_table(record["rows"]),
        "",
        *end_to_end_lines(record["rows"], record.get("first_step")),
        "",
        "<details><summary>every column and window</summary>",
        "",
        *detail_table(record["rows"]),
        "",
        "</details>",
        end,
    ]
    text = path.read_text() if path.exists() else "# Benchmarks\n\n" + start + "\n" + end + "\n"
    if start not in text:
        text += "\n" + start + "\n" + end + "\n"
    head, rest = text.split(start, 1)
    tail = rest.split(end, 1)[1]
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(head + "\n".join(body) + tail)
    os.replace(tmp, path)


def print_table(rows: list[dict[str, Any]], log=print) -> list[str]:
    lines = summary_table(rows)
    for line in lines:
        log(line)
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=list(DEFAULT_CASES), choices=sorted(CASES))
    parser.add_argument("--peers", nargs="*", default=["torch", "compile", "keras"], choices=["torch", "compile", "keras"])
    parser.add_argument("--repeats", type=int, default=5, help="round-robin windows per framework")
    parser.add_argument("--window", type=float, default=1.0, help="seconds per timed window (about)")
    parser.add_argument("--host-devices", type=int, default=os.cpu_count() or 1,
                        help="CPU host devices for the 'jaxdl xN' column (sets XLA_FLAGS before JAX starts)")
    parser.add_argument("--train-limit", type=int, default=None, help="training records to read (default: all)")
    parser.add_argument("--override", nargs="*", default=[], help="extra Hydra overrides for every case, e.g. data.data_dir=...")
    parser.add_argument("--tiny", action="store_true", help="tiny model sizes and batches (smoke test)")
    parser.add_argument("--end-to-end", action="store_true", help="also pipeline overhead and time to first step")
    parser.add_argument("--variants", action="store_true", help="also time the implementation before each change")
    parser.add_argument("--no-first-step", action="store_true", help="--end-to-end without the time-to-first-step runs")
    parser.add_argument("--pipeline", nargs="*", default=["vae", "mlp", "cnn"],
                        help="--end-to-end: models whose steps are also timed fed by the real pipeline")
    parser.add_argument("--json", type=pathlib.Path, default=None, help="also write the raw numbers here")
    parser.add_argument("--dtype", choices=sorted(DTYPE_OVERRIDES), default="float32",
                        help="compute dtype of every model (PyTorch peers: autocast)")
    parser.add_argument("--peer-device", choices=["auto", "cpu", "cuda"], default="auto",
                        help="where the PyTorch peers run (auto: cuda when JAX runs on a GPU)")
    parser.add_argument("--mfu", action="store_true",
                        help="also FLOPs per step (XLA's cost analysis) and model FLOPs utilisation")
    parser.add_argument("--no-write", action="store_true", help="do not write benchmarks/RESULTS.md")
    args = parser.parse_args(argv)

    if "jax" not in sys.modules and args.host_devices > 1:
        flag = f"--xla_force_host_platform_device_count={args.host_devices}"
        if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
            os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + flag).strip()
    os.environ.setdefault("KERAS_BACKEND", "jax")
    record = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), "machine": machine(),
              "versions": versions(), "argv": " ".join(argv if argv is not None else sys.argv[1:]),
              "host_devices": args.host_devices, "rows": [], "pending": list(args.models),
              "dtype": args.dtype, "accelerator": accelerator()}
    rows = record["rows"]
    for name in args.models:
        case = CASES[name]
        print(f"{name}: {' '.join(case.overrides)}", flush=True)
        try:
            rows.append(bench_case(case, args))
        except Exception as error:  # a model still being written must not stop the others
            print(f"  {name}: not measured: {type(error).__name__}: {error}", flush=True)
        record["pending"].remove(name)
        save(record, args)  # after every model: a crash later (XLA aborts the process on some faults) keeps these rows
    print_table(rows)
    if args.mfu:
        for line in mfu_table(rows, record["accelerator"], args.dtype):
            print(line)
    if args.end_to_end and not args.no_first_step:
        with tempfile.TemporaryDirectory() as cache:
            record["first_step"] = first_step_times(cache, ["data.eval_limit=100"])
    for line in end_to_end_lines(rows, record.get("first_step")):
        print(line)
    del record["pending"]
    save(record, args)
    if not args.no_write:
        print(f"wrote {RESULTS} and {RESULTS.with_suffix('.json')}")
    return 0


def save(record: dict[str, Any], args) -> None:
    """Writes the record so far to `--json` and (unless `--no-write`) RESULTS.md/.json, each atomically."""
    text = json.dumps(record, indent=2, default=str) + "\n"
    targets = [args.json] if args.json else []
    if not args.no_write:
        RESULTS.parent.mkdir(exist_ok=True)
        targets.append(RESULTS.with_suffix(".json"))
        write_results(record)
    for path in targets:
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, path)


# ------------------------------------------- accelerators: PyTorch peers on a GPU, bfloat16, FLOPs and MFU


def peer_device(requested: str) -> str:
    """"cpu" or "cuda": as requested, or for "auto" "cuda" when JAX itself runs on a GPU."""
    if requested != "auto":
        return requested
    import jax

    return "cuda" if jax.default_backend() == "gpu" else "cpu"


def device_peers(peers, arch, settings, batch, device: str, dtype: str):
    """`scripts.bench_peers.RemotePeers` whose child runs the peers on `device`, under autocast to `dtype`."""
    import multiprocessing

    from scripts import bench_peers

    remote = bench_peers.RemotePeers.__new__(bench_peers.RemotePeers)
    ctx = multiprocessing.get_context("spawn")
    remote.conn, child = ctx.Pipe()
    remote.process = ctx.Process(target=_serve_on_device, daemon=True,
                                 args=(child, list(peers), arch, dict(settings), dict(batch), device, dtype))
    remote.process.start()
    hello = remote.conn.recv()
    remote.ready, remote.skipped = hello["ready"], hello["skipped"]
    return remote


def _serve_on_device(conn, peers, arch, settings, batch, device: str, dtype: str) -> None:
    """`bench_peers.serve` with every tensor on `device` and each step under autocast to `dtype`.

    The peers build their tensors with `torch.from_numpy` and factory
    functions: with the default device set and `from_numpy` moving its result
    there, the same builders place model, batch and noise on the device. Each
    timed call ends with a device synchronisation, so a window counts finished
    steps. float32 matrix products use TF32 (`set_float32_matmul_precision
    ("high")`), as XLA's default precision does on these GPUs.
    """
    import contextlib

    import torch

    from scripts import bench_peers

    if device == "cuda" and not torch.cuda.is_available():
        conn.send({"ready": [], "skipped": {peer: "PyTorch has no CUDA device here" for peer in peers}})
        while conn.recv()[0] != "stop":
            pass
        return
    torch.set_default_device(device)
    from_numpy = torch.from_numpy
    torch.from_numpy = lambda array: from_numpy(array).to(device)
    if device == "cuda":
        torch.set_float32_matmul_precision("high")
    make = bench_peers.make

    def make_on_device(peer, arch, settings, batch):
        run = make(peer, arch, settings, batch)

        def timed(k: int) -> None:
            with torch.autocast(device, dtype=torch.bfloat16) if dtype == "bfloat16" else contextlib.nullcontext():
                run(k)
            if device == "cuda":
                torch.cuda.synchronize()

        return timed

    bench_peers.make = make_on_device
    bench_peers.serve(conn, peers, arch, settings, batch)


#: Dense (no sparsity) peak TFLOP/s: (text in JAX's device_kind, name, bfloat16, float32 as TF32). From NVIDIA's
#: datasheets (H100, H200 and A100 Tensor Core GPU), which print sparse figures for the tensor cores: dense is half.
#: float32 is set against TF32 because at JAX's default matmul precision XLA computes float32 products on the TF32
#: tensor cores of these GPUs (docs.jax.dev, "Matmul precision"); first match wins.
PEAK_TFLOPS = (
    ("GH200", "GH200 (H100 SXM rates)", 989.4, 494.7),
    ("H200 NVL", "H200 NVL", 835.5, 417.5),
    ("H200", "H200 SXM", 989.4, 494.7),
    ("H100 NVL", "H100 NVL", 835.5, 417.5),
    ("H100 PCIe", "H100 PCIe", 756.5, 378.0),
    ("H100", "H100 SXM", 989.4, 494.7),
    ("A100", "A100", 312.0, 156.0),
)


def peak_flops(device_kind: str, dtype: str) -> tuple[str, float] | None:
    """(description, FLOP/s) of the dense peak for `dtype` on this device, or None when not in `PEAK_TFLOPS`."""
    for text, name, bf16, tf32 in PEAK_TFLOPS:
        if text in device_kind:
            tflops = bf16 if dtype == "bfloat16" else tf32
            unit = "bf16" if dtype == "bfloat16" else "TF32 (float32 products)"
            return f"{name} dense {unit} {tflops:g} TFLOP/s", tflops * 1e12
    return None


def accelerator() -> str:
    import jax

    devices = jax.local_devices()
    return f"{len(devices)} x {devices[0].device_kind} ({devices[0].platform})"


def step_flops(built: Built) -> float | None:
    """FLOPs of one training step of the jaxdl case on one device, as XLA's cost analysis of the compiled program
    counts them (None when it reports none)."""
    import jax

    from jaxdl.training import parallel

    devices = parallel.select_devices(1)
    backend = built.settings["trainer"].get("backend", "shard_map")
    step = parallel.data_parallel(built.task.train_step, devices, backend=backend)
    args = parallel.replicate(built.state, devices), parallel.shard(built.host_batch, 1), jax.random.key(0)
    analysis = step.lower(*args).compile().cost_analysis()
    if isinstance(analysis, (list, tuple)):
        analysis = analysis[0] if analysis else None
    flops = (analysis or {}).get("flops")
    return float(flops) if flops else None


def mfu_table(rows: list[dict[str, Any]], device: str, dtype: str) -> list[str]:
    """Markdown: FLOPs per step and model FLOPs utilisation of every column, against the device's dense peak."""
    peak = peak_flops(device, dtype)
    lines = [f"Model FLOPs utilisation, {dtype}, on {device}: FLOPs per step from XLA's cost analysis of jaxdl's "
             f"compiled step, the same count for every column; peak: "
             f"{peak[0] + ' (NVIDIA datasheet)' if peak else 'none known for this device (MFU not computed)'}.",
             "", "| model | batch | GFLOP per step | jaxdl MFU | torch MFU | torch.compile MFU |",
             "|---|---|---|---|---|---|"]
    for row in rows:
        flops = row.get("flops_per_step")
        cells = []
        for col in ("jaxdl", "torch", "torch.compile"):
            r = row["results"].get(col)
            cells.append(f"{100 * flops / r['step_s'] / peak[1]:.1f} %" if flops and peak and r else "-")
        gflops = f"{flops / 1e9:,.2f}" if flops else "-"
        lines.append(f"| {row['case']} | {row['batch']} | {gflops} | " + " | ".join(cells) + " |")
    return lines


if __name__ == "__main__":
    raise SystemExit(main())
