"""Training-step speed of the reference models beside PyTorch (eager, torch.compile) and Keras 3 (JAX backend).

    python -m scripts.benchmark                                  # every reference model, writes benchmarks/RESULTS.md
    python -m scripts.benchmark --models lstm vae --repeats 5     # a few models
    python -m scripts.benchmark --models mlp --tiny --repeats 1 --no-write   # seconds: smoke test
    python -m scripts.benchmark --require-idle                   # refuse to start, or to keep a row, under load

The jaxdl side is the real step: each case composes the Hydra config of its
command (`model=vae`, `experiment=shakespeare_char_cpu`, ...), builds the
model, task, optimizer and first batches exactly as `jaxdl.experiment.run`
does, and times `task.train_step` under `jaxdl.training.parallel.data_parallel`
(donated state, the loop's default backend) on batches already on the
devices. "jaxdl xN" is the same on N CPU host devices (the batch split over
them; `--host-devices`, default: the machine's cores).

The peers (`benchmarks.peers`; torch and keras are the optional extra
`bench`, never runtime dependencies) build the same architecture, loss,
optimizer and batch. PyTorch (eager and torch.compile) and Keras each run in
a child process of their own that inherits this process's environment and
changes nothing about threads, so each framework runs with its own defaults,
as its users run it (`benchmarks.peers.process`). Frameworks are timed
round-robin, one window each per repeat, only one computing at a time; a
column's figure is the median over repeats of (window time / steps in the
window). The "jaxdl xN" column's host devices are set through JAX's
`jax_num_cpu_devices` option in this process only, never through the
environment the peers inherit.

Load: every row records the load average before and after it and the CPU
that other processes used meanwhile; a row measured under load (the rule is in
`benchmarks.machine_load`) is marked in the table and the JSON, and
`--require-idle` refuses to start under load and drops such rows. Every
column records its thread settings (torch's thread counts, OpenMP/MKL/XLA
environment, XLA flags, JAX devices, Keras backend).

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


#: The config key of the global batch size, the one key this script both sets and reads (it may move, e.g. to
#: trainer.batch_size); every override and read of it below goes through `batch` and `batch_size_of`.
BATCH_SIZE_KEY = "trainer.batch_size"


def batch(n: int) -> str:
    """The override that sets the global batch size to n."""
    return f"{BATCH_SIZE_KEY}={n}"


def batch_size_of(settings: dict[str, Any]) -> int:
    """The global batch size of composed settings."""
    section, key = BATCH_SIZE_KEY.split(".")
    return int(settings[section][key])


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
        Case("mlp", ("model=mlp",), "mlp", (batch(16), "model.hidden_dims=[32,32]")),
        Case("cnn", ("model=cnn",), "cnn", (batch(16),)),
        Case(
            "cnn_vgg",
            ("experiment=cifar10_cnn", "task.augment.crop_pad=0", "task.augment.flip=false", "task.augment.cutout_size=0"),
            "cnn",
            (batch(16), "model.channels=[8,8,8]", "model.dense_dims=[16]"),
            note="experiment=cifar10_cnn without augmentation (the peers do not augment)",
        ),
        Case("airbench94", ("model=airbench94", batch(256), "task.flip=false", "task.translate=0", "task.lookahead=false"),
             "airbench94", (batch(16),),
             note="batch 256 (the recipe's 1024 takes ~15 s a step here)"),
        Case("lstm", ("model=lstm",), "lstm", (batch(8), "model.hidden_dim=16", "data.seq_len=10", "data.eval_context=2")),
        Case("transformer", ("experiment=shakespeare_char_cpu",), "transformer",
             (batch(4), "model.num_layers=1", "model.embed_dim=32"),
             note="nanoGPT's CPU setting; model=transformer's default takes ~10 s a step here"),
        Case("vae", ("model=vae",), "vae", (batch(16), "model.hidden_dims=[32,32]")),
        Case("gan", ("model=gan",), "gan", (batch(16),)),
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
                                              "task.lookahead=false"), "airbench94", (batch(16),),
                           note="the recipe's batch 1024"),
})
#: What --dtype adds to every case's overrides (one place, for when a global precision setting replaces it).
DTYPE_OVERRIDES = {"float32": ("precision=float32",), "bfloat16": ("precision=bfloat16",)}


def compose(overrides: tuple[str, ...]) -> dict[str, Any]:
    """The resolved config of `python -m experiments.run OVERRIDES` as plain dicts."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    from experiments.config import register

    register()
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
    context: Any = None


def build(settings: dict[str, Any], *, train_limit: int | None) -> Built:
    """Builds model, task, optimizer, state and the training loader through `jaxdl.build`, as a run does.

    Args:
      settings: composed config (see `compose`).
      train_limit: read at most this many training records (None: the run's own limit).
    """
    import jax

    from jaxdl import build as builder_of
    from jaxdl.data import sequences, sources
    from jaxdl.data.pipeline import ArrayLoader
    from jaxdl.experiment import data_settings, trainer_settings
    from jaxdl.tasks.base import RunFacts, initial_state

    data = dict(settings["data"])
    if train_limit is not None:
        data["train_limit"] = train_limit
    trainer = trainer_settings(settings["trainer"])
    data["eval_limit"] = min(data.get("eval_limit") or 10**9, 2 * (trainer.eval_batch_size or trainer.batch_size))
    common, windows = data_settings(data)
    prepared_data = sources.prepare(common.name, data_dir=common.data_dir, manual_dir=common.manual_dir)
    spec = builder_of.data_spec(prepared_data, data)
    module = builder_of.build_model(settings["model"], spec, precision=settings.get("precision", "auto"))
    task = builder_of.build_task(settings["task"], module, spec)
    # the peers build the same network from the settings as built (image shape, vocabulary and widths filled in)
    settings = {**settings, "model": builder_of.resolve_model(settings["model"], spec),
                "task": builder_of.resolve_task(settings["task"], spec)}
    train = sources.load_arrays(prepared_data, common.train_split, limit=common.train_limit)
    evaluation = sources.load_arrays(prepared_data, common.eval_split, limit=common.eval_limit)
    train, evaluation = sequences.make_examples(
        {"name": common.name, "train_limit": common.train_limit, "eval_limit": common.eval_limit, **windows},
        train, evaluation,
    )
    prepared = task.prepare(train, evaluation, RunFacts(trainer.batch_size, trainer.epochs, trainer.max_steps))
    loader = ArrayLoader(prepared.train, trainer.batch_size, shuffle=True, seed=settings["seed"], drop_remainder=True)
    total = trainer.max_steps or trainer.epochs * loader.steps_per_epoch
    warmup = (settings["optimizer"].get("schedule") or {}).get("warmup_steps") or 0
    total = max(total, warmup + 1)  # a --train-limit run still fits the warmup
    tx = builder_of.build_optimizer(settings["optimizer"], total_steps=total, steps_per_epoch=loader.steps_per_epoch)
    key = jax.random.fold_in(jax.random.key(settings["seed"]), 0)
    state = initial_state(task, key, tx, {k: v[:1] for k, v in prepared.train.items()}, prepared.context)
    return Built(settings, task, state, loader, next(iter(loader.epoch(0))), prepared.context)


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
    step = parallel.data_parallel(built.task.train_step, devices, backend=backend, donate_state=True,
                                  returns_state=True, context=built.context)
    holder = {"state": parallel.replicate(built.state, devices, backend=backend)}
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
    Then `repeats` rounds each time one window per runner, in turn. Every
    window starts with one untimed step, for every column alike: a step that
    follows another framework's window is not a step of a running training
    loop. On a 2-core VM whose kernel hands 2 MB blocks that stay free for a
    few seconds back to the host, airbench94's jaxdl step took 1,123-1,162 ms
    back to back and 1,502-1,663 ms after a 3 s pause with huge pages
    (`python -m benchmarks.window_pause`; benchmarks/RESULTS.md).
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
            run(1)
            out[name]["windows"].append(timed(run, out[name]["k"]))
    for name, r in out.items():
        r["step_s"] = statistics.median(r["windows"])
    return out


def bench_case(case: Case, args, monitor=None, log=print) -> dict[str, Any]:
    """Times one case: jaxdl on 1 and N devices and each requested peer; with `monitor`, the load around it."""
    import jax

    before = monitor.read() if monitor is not None else None
    overrides = case.overrides + (case.tiny if args.tiny else ()) + DTYPE_OVERRIDES[args.dtype] + tuple(args.override)
    settings = compose(overrides)
    built = build(settings, train_limit=args.train_limit or (64 if args.tiny else None))
    batch_size = batch_size_of(settings)
    runners: dict[str, Callable[[int], None]] = {"jaxdl": jaxdl_runner(built, 1)}
    threads = {"jaxdl": jaxdl_threads(1)}
    ndev = min(args.host_devices, jax.local_device_count())
    if ndev > 1 and batch_size % ndev == 0:
        runners["jaxdl xN"] = jaxdl_runner(built, ndev)
        threads["jaxdl xN"] = jaxdl_threads(ndev)
    if args.variants and case.name in VARIANTS:
        from scripts import bench_variants

        label, patch = VARIANTS[case.name]
        with getattr(bench_variants, patch)():
            runners[f"jaxdl {label}"] = jaxdl_runner(build(settings, train_limit=built.loader.size), 1, trace=True)
            threads[f"jaxdl {label}"] = jaxdl_threads(1)
    remotes = []
    try:
        # One child process per framework: PyTorch's (eager and compiled share it) and Keras's.
        for group in ([p for p in args.peers if p in ("torch", "compile")], [p for p in args.peers if p == "keras"]):
            if not group:
                continue
            from benchmarks.peers.process import RemotePeers

            device = peer_device(args.peer_device) if group != ["keras"] else "cpu"
            remote = RemotePeers(group, case.peer, built.settings, built.host_batch, device=device, dtype=args.dtype)
            remotes.append(remote)
            for peer, why in remote.skipped.items():
                log(f"    {peer}: not measured ({why})")
            for peer in remote.ready:
                runners[PEER_COLUMNS[peer]] = remote.runner(peer)
                threads[PEER_COLUMNS[peer]] = remote.threads
        if args.end_to_end and case.name in args.pipeline:
            runners["jaxdl (pipeline)"] = jaxdl_runner(built, 1, pipeline=True)
            threads["jaxdl (pipeline)"] = jaxdl_threads(1)
        results = measure(runners, repeats=args.repeats, window_s=args.window, log=log)
        after = monitor.read() if monitor is not None else None  # before the children exit: their CPU counts as ours
    finally:
        for remote in remotes:
            remote.close()
    for col, r in results.items():
        r["threads"] = threads[col]
    params = sum(int(x.size) for x in jax.tree.leaves(built.state.params))
    row = {"case": case.name, "command": " ".join(case.overrides), "note": case.note, "batch": batch_size,
           "parameters": params, "results": results}
    if monitor is not None:
        row["load"] = monitor.row(before, after)
    if args.mfu:
        row["flops_per_step"] = step_flops(built)
    return row


def jaxdl_threads(num_devices: int) -> dict[str, Any]:
    """Thread settings of a jaxdl column: this process's (`thread_settings`) and the devices its step maps over."""
    import jax

    from benchmarks.peers.process import thread_settings

    return {**thread_settings(), "step_devices": num_devices,
            "jax_num_cpu_devices": jax.config.jax_num_cpu_devices}


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
        "| jaxdl / keras | xN / torch | xN / keras | jaxdl compile (s) | jaxdl examples/s | attempt (ms) | other load, start / end |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        res = row["results"]
        lines.append(
            f"| {row['case']} (`{row['command']}`) | {row['batch']} | {_ms(res, 'jaxdl')} | {_ms(res, 'jaxdl xN')} | "
            f"{_ms(res, 'torch')} | {_ms(res, 'torch.compile')} | {_ms(res, 'keras-jax')} | "
            f"{_ratio(res, 'jaxdl', 'torch')} | {_ratio(res, 'jaxdl', 'torch.compile')} | {_ratio(res, 'jaxdl', 'keras-jax')} | "
            f"{_ratio(res, 'jaxdl xN', 'torch')} | {_ratio(res, 'jaxdl xN', 'keras-jax')} | "
            f"{res['jaxdl']['compile_s']:.2f} | {row['batch'] / res['jaxdl']['step_s']:,.0f} | {_attempt(res)} | "
            f"{_load(row)} |"
        )
    return lines


def _load(row: dict[str, Any]) -> str:
    """Other processes' share of the 1-minute load average before / after the row; marked when under load."""
    load = row.get("load")
    if not load:
        return "-"
    text = f"{load['before']['other_load']:.2f} / {load['after']['other_load']:.2f}"
    return f"**under load** {text}" if load["loaded"] else text


def thread_table(rows: list[dict[str, Any]]) -> list[str]:
    """Markdown: the thread settings each column ran with (one line per column and distinct setting)."""
    seen: dict[tuple[str, str], list[str]] = {}
    for row in rows:
        for col, r in row["results"].items():
            key = (col, json.dumps(r.get("threads", {}), sort_keys=True))
            seen.setdefault(key, []).append(row["case"])
    if not seen:
        return []
    lines = ["| column | models | torch threads (intra-op / inter-op) | thread environment | XLA_FLAGS "
             "| JAX devices (process / step) | Keras backend |", "|---|---|---|---|---|---|---|"]
    every = {row["case"] for row in rows}
    for (col, text), models in seen.items():
        t = json.loads(text)
        torch_threads = f"{t['torch_threads']} / {t['torch_interop_threads']}" if "torch_threads" in t else "-"
        env = ", ".join(f"{k}={v}" for k, v in t.get("env", {}).items() if k != "XLA_FLAGS") or "none set"
        devices = f"{t['jax_devices']} / {t.get('step_devices', 1)}" if "jax_devices" in t else "-"
        which = "all" if set(models) == every else ", ".join(models)
        lines.append(f"| {col} | {which} | {torch_threads} | {env} | `{t.get('xla_flags') or ''}` | {devices} | "
                     f"{t.get('keras_backend', '-')} |")
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
        f"Load: {record.get('load_rule', 'not recorded')}.",
        *([f"Dropped as measured under load (--require-idle): {', '.join(r['case'] for r in record['rejected'])}."]
          if record.get("rejected") else []),
        "",
        "Thread settings of each column (each framework in its own process with its defaults; "
        f"{record['machine']}):",
        "",
        *thread_table(record["rows"]),
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
    lines = summary_table(rows) + [""] + thread_table(rows)
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
                        help="CPU host devices for the 'jaxdl xN' column (JAX's jax_num_cpu_devices, this process only)")
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
    parser.add_argument("--require-idle", action="store_true",
                        help="refuse to start under load, and drop rows measured under load (benchmarks.machine_load)")
    args = parser.parse_args(argv)

    from benchmarks.machine_load import LoadMonitor

    monitor = LoadMonitor()
    start = monitor.read()
    print(f"load average {start['load1']:.2f} (1 min), {start['other_load']:.2f} of it not this benchmark's; "
          f"{monitor.rule()}", flush=True)
    if args.require_idle and start["loaded"]:
        print("--require-idle: the machine is under load; not starting. Stop the other work and run again.", flush=True)
        return 3
    from jaxdl import backend

    xla_cpu = backend.configure()  # the jaxdl columns run with the XLA CPU settings every run gets
    print(f"jaxdl XLA CPU settings: {xla_cpu['added_by_jaxdl'] or 'none'} ({xla_cpu['reason']}); "
          f"huge pages {xla_cpu['huge_pages']}", flush=True)
    set_host_devices(args.host_devices)
    record = {"jaxdl_backend": xla_cpu, "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), "machine": machine(),
              "versions": versions(), "argv": " ".join(argv if argv is not None else sys.argv[1:]),
              "host_devices": args.host_devices, "load_rule": monitor.rule(), "rows": [], "pending": list(args.models),
              "dtype": args.dtype, "accelerator": accelerator()}
    rows = record["rows"]
    for name in args.models:
        case = CASES[name]
        print(f"{name}: {' '.join(case.overrides)}", flush=True)
        try:
            row = bench_case(case, args, monitor)
        except Exception as error:  # a model still being written must not stop the others
            print(f"  {name}: not measured: {type(error).__name__}: {error}", flush=True)
        else:
            load = row["load"]
            if load["loaded"]:
                print(f"  {name}: measured UNDER LOAD (1-min load {load['before']['load1']:.2f} -> "
                      f"{load['after']['load1']:.2f}, other processes {load['other_cpu_cores']:.2f} cores)", flush=True)
            if load["loaded"] and args.require_idle:
                record.setdefault("rejected", []).append(row)
                print(f"  {name}: dropped (--require-idle); re-run it with --models {name}", flush=True)
            else:
                rows.append(row)
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


def set_host_devices(n: int) -> None:
    """Gives this process `n` CPU host devices (JAX's `jax_num_cpu_devices`) if JAX has not started its backends.

    An option of this process's JAX only: the environment, which the peer
    processes inherit, is left as it was. Kept when XLA_FLAGS already forces a
    device count, or when the backends already run (e.g. under pytest).
    """
    if n <= 1 or "xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", ""):
        return
    import jax

    try:
        jax.config.update("jax_num_cpu_devices", n)
    except RuntimeError:  # backends already initialised
        pass


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
    step = parallel.data_parallel(built.task.train_step, devices, backend=backend, returns_state=True)
    args = parallel.replicate(built.state, devices, backend=backend), parallel.shard(built.host_batch, 1), jax.random.key(0)
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
    from jaxdl import backend

    backend.restart_with_huge_pages()  # the jaxdl columns run as `python -m experiments.run` does; peers never
    raise SystemExit(main())
