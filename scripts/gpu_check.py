"""One bounded check of jaxdl on an NVIDIA GPU: tests, the main job, the benchmark, nanoGPT and airbench94.

    bash scripts/gpu_check.sh OUT_DIR [--budget-s 480] [--data DIR] [--tiny] [--parts tests vae ...]
    JAX_PLATFORMS=cpu bash scripts/gpu_check.sh OUT_DIR --budget-s 180 --tiny     # dry run on a CPU

Run from a checkout with jaxdl's dependencies installed (on a node without
internet: `python -m scripts.wheelhouse`, README "On a GPU cluster"). Parts,
in this order, each a command under a timeout:

  1. tests: `pytest -m gpu tests/gpu` (bf16 and cuDNN numerics, checkpoints
     between GPU and CPU, pmap/shard_map over all GPUs, the persistent cache).
  2. vae: the main job, `python -m experiments.run model=vae`, to completion;
     eval/nll beside the CPU figure, wall time and images/s.
  3. benchmark: `python -m scripts.benchmark` for every reference model
     (GPU-sized Transformer and airbench94), float32 then bfloat16, beside
     PyTorch eager and torch.compile on the same GPU where PyTorch has CUDA;
     model FLOPs utilisation from XLA's cost analysis.
  4. shakespeare: `experiment=shakespeare_char` beside
     benchmarks/reference/nanogpt_shakespeare_char.py, to the same iteration
     count: whole 5,000-iteration runs when the budget holds both, otherwise
     a capped count (stated).
  5. airbench: `experiment=cifar10_airbench94` beside
     benchmarks/reference/airbench94_cifar10.py; on CIFAR-shaped random data
     (stated) when the data folder has no CIFAR-10 archive.

Budget: the whole check stays inside `--budget-s` (default 480 s: 8 minutes
on an H100-class GPU, compilation included). Each part gets a share of what
is left, in proportion to `WEIGHTS` among the parts still to run, so time a
part does not use passes to the next; a part whose share is under
`MIN_PART_S` is skipped with the reason, and a command that outlives its
share is stopped (its whole process group) and reported as failed.

Data (`--data`, default $JAXDL_MANUAL_DIR): raw files in the layout of
`data.manual_dir` (mnist/*-ubyte.gz, tinyshakespeare/input.txt and, if it
fits, cifar-10/cifar-10-binary.tar.*; MNIST and tiny Shakespeare are 13 MB),
and/or datasets already prepared by jaxdl (TFDS folders such as
mnist_idx/1.0.0/), which are linked into OUT_DIR/tfds.

Writes OUT_DIR/summary.md (the table, also printed at the end),
OUT_DIR/summary.json, one log per command in OUT_DIR/logs/, run folders in
OUT_DIR/runs/, prepared datasets in OUT_DIR/tfds/ and the compilation cache
in OUT_DIR/xla_cache/.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import io
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import xml.etree.ElementTree as ElementTree
from collections.abc import Callable
from typing import Any

REPO = pathlib.Path(__file__).resolve().parents[1]
PARTS = ("tests", "vae", "benchmark", "shakespeare", "airbench")
WEIGHTS = {"tests": 0.12, "vae": 0.30, "benchmark": 0.22, "shakespeare": 0.18, "airbench": 0.18}
WEIGHTS_TINY = {"tests": 0.05, "vae": 0.12, "benchmark": 0.2, "shakespeare": 0.28, "airbench": 0.35}  # measured
MIN_PART_S = 15.0  # a part with less time than this is skipped
JAXDL_SIDE = 0.6  # of a part that times jaxdl and then a PyTorch reference, the jaxdl run's share
RESERVE_S = 5.0  # kept for writing the summary

# ------------------------------------------------------------------------------------------------------------
# Every setting the check passes to experiments.run and scripts.benchmark, in one place. The main job runs with
# its defaults, as a user runs it: precision=auto is bfloat16 compute on a GPU (float32 parameters and losses).
OVERRIDES: dict[str, tuple[str, ...]] = {
    "every_run": ("trainer.progress=false",),
    "bfloat16": ("precision=bfloat16",),
    "tiny": ("debug=smoke", "trainer.artifacts=false"),
    "vae": ("model=vae",),
    "vae_tiny": ("model=vae", "task.iw_samples=50"),
    "shakespeare": ("experiment=shakespeare_char",),
    "shakespeare_tiny": ("experiment=shakespeare_char_cpu", "task.sample_tokens=0"),
    "airbench": ("experiment=cifar10_airbench94",),
    "airbench_tiny": ("experiment=cifar10_airbench94", "task.tta_level=0"),  # float32 (part_airbench)
}
BENCHMARK = {
    "models": ("transformer_gpu", "airbench94_gpu", "vae", "mlp", "cnn", "cnn_vgg", "lstm", "gan"),
    "models_tiny": ("transformer_gpu",),
    "flags": ("--repeats", "3", "--window", "0.3", "--host-devices", "1", "--no-write", "--mfu"),
    "flags_tiny": ("--tiny", "--repeats", "1", "--window", "0.05", "--host-devices", "1", "--no-write", "--mfu"),
    "dtypes": ("float32", "bfloat16"),
    "dtypes_tiny": ("bfloat16",),  # the float32 path is the default one, which tests/test_benchmark.py runs
}
REFERENCE = {
    "nanogpt": ("--setting", "gpu", "--dtype", "bfloat16", "--compile"),  # as nanoGPT runs on a GPU
    "nanogpt_tiny": ("--setting", "cpu"),
    "airbench": ("--dtype", "bfloat16"),
    "airbench_tiny": ("--train-epochs", "0.25"),
}
CPU_VAE_NLL = 89.51  # nats; README, `python -m experiments.run model=vae` on a 2-core CPU
VAE_NLL_TOLERANCE = 0.3
NANOGPT_ITERS, NANOGPT_LOSS = 5000, 1.4697  # nanoGPT README: shakespeare_char, one A100, about 3 minutes
SHAKESPEARE_CAPPED_ITERS = 300
SHAKESPEARE_WHOLE_RUNS_S = 720.0  # a share that holds two whole 5,000-iteration runs with compilation (estimate)
RANDOM_CIFAR = {"full": (10_000, 10_000), "tiny": (250, 250)}  # records per training batch file, test records
CIFAR_MODELS = ("cnn", "cnn_vgg", "airbench94", "airbench94_gpu")  # benchmark cases that read CIFAR-10
# ------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Part:
    """One row of the summary."""

    name: str
    title: str
    status: str = "skipped"  # ran | skipped | failed
    reason: str = ""
    numbers: dict[str, Any] = dataclasses.field(default_factory=dict)
    logs: list[str] = dataclasses.field(default_factory=list)
    seconds: float = 0.0
    details: list[str] = dataclasses.field(default_factory=list)  # Markdown lines below the table


class Budget:
    """Seconds left of the whole check, and each part's share of them."""

    def __init__(self, total_s: float, weights: dict[str, float] = WEIGHTS):
        self.total_s, self.weights, self.start = total_s, weights, time.monotonic()

    def used(self) -> float:
        return time.monotonic() - self.start

    def left(self) -> float:
        return self.total_s - self.used() - RESERVE_S

    def share(self, part: str, remaining: list[str]) -> float:
        """`part`'s share of what is left: in proportion to its weight, at least MIN_PART_S while that is left."""
        left = max(0.0, self.left())
        return max(left * self.weights[part] / sum(self.weights[p] for p in remaining), min(MIN_PART_S, left))


def run(cmd: list[str], log: pathlib.Path, timeout_s: float, env: dict[str, str],
        grace_s: float = 10.0) -> tuple[int | None, float]:
    """Runs `cmd` from the repository root, output to `log`; (exit code or None when stopped at `timeout_s`, seconds).

    The command gets its own process group, so a stop ends everything it started (PyTorch's worker process, a
    test's child processes): SIGTERM, then SIGKILL `grace_s` later.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    with log.open("a") as out:
        out.write(f"$ {' '.join(cmd)}\n# limit {timeout_s:.0f} s\n")
        out.flush()
        process = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            code = process.wait(timeout=max(1.0, timeout_s))
        except subprocess.TimeoutExpired:
            code = None
        except BaseException:
            _stop(process, grace_s)
            raise
        if code is None:
            _stop(process, grace_s)
            out.write(f"\n# stopped at its {timeout_s:.0f} s limit\n")
        out.write(f"# exit {code}, {time.monotonic() - t0:.1f} s\n")
    return code, time.monotonic() - t0


def _stop(process: subprocess.Popen, grace_s: float) -> None:
    for sig, grace in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            continue


def last_line(log: pathlib.Path, run_dir: pathlib.Path | None = None) -> str:
    """One line saying why a command failed: failure.json's message, else the log's last non-empty line."""
    if run_dir is not None and (run_dir / "failure.json").exists():
        failure = json.loads((run_dir / "failure.json").read_text())
        return f"{failure['error']}: {failure['message'].splitlines()[0] if failure['message'] else ''}"[:300]
    lines = [ln for ln in log.read_text(errors="replace").splitlines() if ln.strip() and not ln.startswith("# ")]
    return lines[-1][:300] if lines else "no output"


def failed(part: Part, code: int | None, timeout_s: float, log: pathlib.Path, run_dir: pathlib.Path | None = None):
    part.status = "failed"
    part.reason = (f"stopped at its {timeout_s:.0f} s share of the budget" if code is None
                   else f"exit {code}: {last_line(log, run_dir)}")


class Check:
    """The state the parts share: output folders, the child environment, what the machine has."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.out = args.out.resolve()
        self.logs, self.runs, self.data_dir = self.out / "logs", self.out / "runs", self.out / "tfds"
        for folder in (self.logs, self.runs, self.data_dir):
            folder.mkdir(parents=True, exist_ok=True)
        self.budget = Budget(args.budget_s, WEIGHTS_TINY if args.tiny else WEIGHTS)
        self.python = sys.executable
        self.data = pathlib.Path(args.data).resolve() if args.data else None
        self.env = dict(os.environ, PYTHONUNBUFFERED="1", JAXDL_DATA_DIR=str(self.data_dir),
                        JAXDL_CACHE_DIR=str(self.out / "xla_cache"))
        if self.data is not None:
            self.env["JAXDL_MANUAL_DIR"] = str(self.data)
        self.machine: dict[str, Any] = {}
        self.cifar: dict[str, Any] | None = None  # how CIFAR-10 was provided, once it is

    def overrides(self, part: str, *keys: str) -> list[str]:
        """experiments.run overrides of a part (its --tiny set with --tiny), then those of `keys`."""
        keys = (f"{part}_tiny", *keys, "tiny") if self.tiny else (part, *keys)
        return [o for key in ("every_run", *keys) for o in OVERRIDES[key]]

    @property
    def tiny(self) -> bool:
        return self.args.tiny

    # --------------------------------------------------------------------------------- machine and data

    def probe(self) -> None:
        """What JAX and PyTorch see (each in a child process, under a timeout); sets JAX_PLATFORMS for the tests."""
        code = ("import json, jax; d = jax.devices(); print(json.dumps({'platform': d[0].platform, "
                "'device_kind': d[0].device_kind, 'count': len(d), 'jax': jax.__version__}))")
        self.machine["jax"] = self._probe_json([self.python, "-c", code], "probe_jax.log")
        code = ("import json, torch; c = torch.cuda.is_available(); print(json.dumps({'torch': torch.__version__, "
                "'cuda': c, 'device': torch.cuda.get_device_name() if c else None}))")
        self.machine["torch"] = self._probe_json([self.python, "-c", code], "probe_torch.log")
        if "JAX_PLATFORMS" not in os.environ:  # tests/conftest.py would otherwise pin the tests to the CPU
            on_gpu = (self.machine["jax"] or {}).get("platform") == "gpu"
            self.env["JAX_PLATFORMS"] = "cuda,cpu" if on_gpu else "cpu"

    def _probe_json(self, cmd: list[str], log_name: str) -> dict[str, Any] | None:
        log = self.logs / log_name
        code, _ = run(cmd, log, 180, self.env)
        if code != 0:
            return None
        for line in reversed(log.read_text().splitlines()):
            if line.startswith("{"):
                return json.loads(line)
        return None

    @property
    def on_gpu(self) -> bool:
        return (self.machine.get("jax") or {}).get("platform") == "gpu"

    def torch_device(self) -> tuple[str | None, str]:
        """("cuda" / "cpu", "") where the PyTorch references run beside JAX, or (None, why not)."""
        torch = self.machine.get("torch")
        if torch is None:
            return None, "PyTorch is not importable here"
        if self.on_gpu:
            return ("cuda", "") if torch["cuda"] else (None, f"PyTorch {torch['torch']} has no CUDA device here")
        return "cpu", ""

    def link_prepared(self) -> list[str]:
        """Links datasets already prepared by jaxdl in --data (TFDS folders <name>/<version>/) into OUT/tfds."""
        linked = []
        if self.data is None or not self.data.is_dir():
            return linked
        for folder in sorted(self.data.iterdir()):
            if folder.is_dir() and (list(folder.glob("*/dataset_info.json")) or folder.name == "jaxdl_arrays"):
                target = self.data_dir / folder.name
                if not target.exists():
                    target.symlink_to(folder, target_is_directory=True)
                linked.append(folder.name)
        return linked

    def raw(self, *candidates: str) -> pathlib.Path | None:
        """The first of `candidates` (paths relative to --data) that exists."""
        for name in candidates:
            if self.data is not None and (self.data / name).exists():
                return self.data / name
        return None

    def has_mnist(self) -> bool:
        return bool(self.raw("mnist/train-images-idx3-ubyte.gz", "train-images-idx3-ubyte.gz")
                    or (self.data_dir / "mnist_idx").exists())

    def shakespeare_text(self) -> pathlib.Path | None:
        return self.raw("tinyshakespeare/input.txt", "input.txt")

    def ensure_cifar(self, timeout_s: float) -> tuple[bool, str]:
        """Prepares CIFAR-10 once: the archive from --data, else CIFAR-shaped random data. (ok, one line).

        Random data goes to a data folder of its own (OUT/tfds_random: the other datasets linked from OUT/tfds),
        so that it can never stand in for the real dataset; `self.cifar["data_dir"]` names the folder to use.
        """
        if self.cifar is not None:
            return self.cifar["ok"], self.cifar["line"]
        archive = None if self.tiny else self.raw(*(f"{folder}{name}" for folder in ("cifar-10/", "cifar10/", "")
                                                    for name in ("cifar-10-binary.tar.gz", "cifar-10-binary.tar.xz")))
        if archive is None and not self.tiny and (self.data_dir / "cifar10_binary").exists():
            self.cifar = {"ok": True, "archive": None, "random": False, "data_dir": str(self.data_dir),
                          "line": "prepared CIFAR-10 from --data"}
            return True, self.cifar["line"]
        random_data = archive is None
        data_dir = self.out / "tfds_random" if random_data else self.data_dir
        t0 = time.monotonic()
        log = self.logs / "cifar10_prepare.log"
        if random_data:
            shutil.rmtree(data_dir, ignore_errors=True)
            data_dir.mkdir()
            for entry in self.data_dir.iterdir():
                if entry.name != "cifar10_binary":
                    (data_dir / entry.name).symlink_to(entry.resolve(), target_is_directory=entry.is_dir())
            archive = write_random_cifar(self.out / "random_cifar10", *RANDOM_CIFAR["tiny" if self.tiny else "full"])
            code = PREPARE_RANDOM_CIFAR
        else:
            code = "import sys; from jaxdl.data import sources; sources.prepare('cifar10', data_dir=sys.argv[1])"
        manual = str(archive.parent) if random_data else self.env.get("JAXDL_MANUAL_DIR", "")
        env = dict(self.env, JAXDL_MANUAL_DIR=manual)
        returncode, _ = run([self.python, "-c", code, str(data_dir), str(archive)], log, timeout_s, env)
        what = ("CIFAR-shaped random data (uniform pixels and labels; times only"
                + (", --tiny: always" if self.tiny else "") + ")" if random_data else f"CIFAR-10 from {archive.name}")
        ok = returncode == 0
        line = f"{what}, prepared in {time.monotonic() - t0:.0f} s" if ok else f"preparing {what} failed"
        self.cifar = {"ok": ok, "archive": str(archive), "random": random_data, "data_dir": str(data_dir),
                      "line": line}
        return ok, line

    def cifar_env(self) -> dict[str, str]:
        """The child environment, reading datasets from where CIFAR-10 was prepared."""
        return dict(self.env, JAXDL_DATA_DIR=self.cifar["data_dir"]) if self.cifar else self.env


#: Prepares the random archive through jaxdl's own CIFAR-10 builder, which accepts only archives it knows: the
#: random one is added to that list (as not canonical, with a note) in this child process only.
PREPARE_RANDOM_CIFAR = """
import os, sys
from jaxdl.data import cifar10, sources
from jaxdl.data.raw_files import RawFile, sha256sum
data_dir, path = sys.argv[1], sys.argv[2]
note = "random CIFAR-shaped data written by scripts.gpu_check (uniform pixels and labels): timings only"
cifar10.ARCHIVES += (cifar10.Archive(RawFile(os.path.basename(path), os.path.getsize(path), sha256sum(path)),
                                     canonical=False, note=note),)
sources.prepare("cifar10", data_dir=data_dir, manual_dir=os.path.dirname(path))
"""


def write_random_cifar(folder: pathlib.Path, per_batch: int, test: int, seed: int = 0) -> pathlib.Path:
    """A tar in CIFAR-10's binary layout (5 training files, 1 test file) of uniform random records."""
    import numpy as np

    from jaxdl.data.cifar10 import RECORD_BYTES, TEST_MEMBERS, TRAIN_MEMBERS

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "cifar-10-random.tar"
    rng = np.random.default_rng(seed)
    with tarfile.open(path, "w") as tar:
        for name, n in [(m, per_batch) for m in TRAIN_MEMBERS] + [(m, test) for m in TEST_MEMBERS]:
            records = rng.integers(0, 256, (n, RECORD_BYTES), dtype=np.uint8)
            records[:, 0] %= 10  # the label byte
            info = tarfile.TarInfo(name)
            info.size = records.nbytes
            tar.addfile(info, io.BytesIO(records.tobytes()))
    return path


def results(run_dir: pathlib.Path) -> dict[str, Any]:
    return json.loads((run_dir / "results.json").read_text())


def iterations_per_s(res: dict[str, Any]) -> float | None:
    """Training iterations per second after the first (compilation), evaluations excluded."""
    return (res["steps"] - 1) / res["train_time_s"] if res.get("train_time_s") and res["steps"] > 1 else None


# --------------------------------------------------------------------------------------------------- the parts


def part_tests(check: Check, part: Part, timeout_s: float) -> None:
    log, xml = check.logs / "1_gpu_tests.log", check.logs / "1_gpu_tests.xml"
    part.logs.append(str(log.relative_to(check.out)))
    cmd = [check.python, "-m", "pytest", "-m", "gpu", "tests/gpu", "-q", "-rs", "-p", "no:cacheprovider",
           f"--junitxml={xml}"]
    code, _ = run(cmd, log, timeout_s, check.env)
    counts = junit_counts(xml) if xml.exists() else None
    if counts:
        part.numbers["tests"] = (f"{counts['passed']} passed, {counts['failed']} failed, "
                                 f"{counts['skipped']} skipped")
        if counts["skip_reason"]:
            part.numbers["skipped because"] = counts["skip_reason"]
    part.numbers["JAX_PLATFORMS"] = check.env.get("JAX_PLATFORMS", "")
    if code == 0:
        part.status = "ran"
    elif code == 1 and counts:
        part.status, part.reason = "failed", f"{counts['failed']} failed, first: {counts['first_failure']}"
    else:
        failed(part, code, timeout_s, log)


def junit_counts(path: pathlib.Path) -> dict[str, Any] | None:
    try:
        root = ElementTree.parse(path).getroot()
    except ElementTree.ParseError:
        return None
    cases = list(root.iter("testcase"))
    failures = [c for c in cases if c.find("failure") is not None or c.find("error") is not None]
    skips = [c.find("skipped") for c in cases if c.find("skipped") is not None]
    first_failure = ""
    if failures:
        element = failures[0].find("failure") if failures[0].find("failure") is not None else failures[0].find("error")
        message = (element.get("message") or "").splitlines()
        first_failure = f"{failures[0].get('name')}: {message[0][:200] if message else ''}"
    return {"passed": len(cases) - len(failures) - len(skips), "failed": len(failures), "skipped": len(skips),
            "skip_reason": skips[0].get("message", "") if skips else "", "first_failure": first_failure}


def run_jaxdl(check: Check, part: Part, overrides: list[str], run_dir: pathlib.Path, log: pathlib.Path,
              timeout_s: float, env: dict[str, str] | None = None) -> dict[str, Any] | None:
    """Runs `python -m experiments.run OVERRIDES` into `run_dir`; its results.json, or None with the part failed."""
    cmd = [check.python, "-m", "experiments.run", *overrides, f"hydra.run.dir={run_dir}"]
    code, _ = run(cmd, log, timeout_s, check.env if env is None else env)
    if code != 0:
        failed(part, code, timeout_s, log, run_dir)
        return None
    return results(run_dir)


def part_vae(check: Check, part: Part, timeout_s: float) -> None:
    if not check.has_mnist():
        part.reason = f"no MNIST in --data ({check.data}): needs mnist/*-ubyte.gz or a prepared mnist_idx"
        return
    run_dir, log = check.runs / "vae", check.logs / "2_vae.log"
    part.logs.append(str(log.relative_to(check.out)))
    res = run_jaxdl(check, part, check.overrides("vae"), run_dir, log, timeout_s)
    if res is None:
        return
    nll = res["metrics"]["eval/nll"]
    part.status = "ran"
    part.numbers["eval/nll"] = f"{nll:.2f} nats"
    if not check.tiny:
        off = abs(nll - CPU_VAE_NLL)
        part.numbers["vs CPU"] = (f"{nll - CPU_VAE_NLL:+.2f} against {CPU_VAE_NLL} "
                                  f"({'within' if off <= VAE_NLL_TOLERANCE else 'OUTSIDE'} {VAE_NLL_TOLERANCE})")
    part.numbers["wall time"] = f"{res['wall_time_s']:.1f} s"
    if res.get("train_examples_per_s"):
        part.numbers["images/s"] = f"{res['train_examples_per_s']:,.0f}"
    part.numbers["first step"] = f"{res['first_step_s']:.1f} s"


def part_benchmark(check: Check, part: Part, timeout_s: float) -> None:
    if not check.has_mnist():
        part.reason = f"no MNIST in --data ({check.data}) for the MNIST models"
        return
    t_end = time.monotonic() + timeout_s
    models = BENCHMARK["models_tiny" if check.tiny else "models"]
    if set(models) & set(CIFAR_MODELS):
        ok, line = check.ensure_cifar(min(180.0, timeout_s / 3))
        part.numbers["CIFAR-10"] = line
    device, why = check.torch_device()
    peers = [] if device is None else (["torch"] if check.tiny else ["torch", "compile"])
    part.numbers["peers"] = (f"PyTorch {', '.join(peers)} on {device}" if peers else f"none: {why}")
    if check.tiny:
        part.numbers["--tiny"] = "bfloat16 only, no torch.compile"
    flags = BENCHMARK["flags_tiny" if check.tiny else "flags"]
    env = dict(check.cifar_env(), XLA_PYTHON_CLIENT_MEM_FRACTION="0.5")  # the GPU's other half: PyTorch's process
    records, stopped = {}, []
    dtypes = BENCHMARK["dtypes_tiny" if check.tiny else "dtypes"]
    for i, dtype in enumerate(dtypes):
        left = t_end - time.monotonic()
        share = left / (len(dtypes) - i)
        if share < MIN_PART_S:
            stopped.append(f"{dtype}: not started ({left:.0f} s left)")
            continue
        log, out = check.logs / f"3_benchmark_{dtype}.log", check.out / f"benchmark_{dtype}.json"
        part.logs.append(str(log.relative_to(check.out)))
        cmd = [check.python, "-m", "scripts.benchmark", "--models", *models, "--peers", *peers, *flags,
               "--dtype", dtype, "--json", str(out)]
        code, _ = run(cmd, log, share, env)
        if out.exists():
            records[dtype] = json.loads(out.read_text())
        if code is None:
            stopped.append(f"{dtype}: stopped at its {share:.0f} s share")
        elif code != 0:
            stopped.append(f"{dtype}: exit {code}: {last_line(log)}")
    measured = {d: [row["case"] for row in r["rows"]] for d, r in records.items()}
    for dtype in dtypes:
        done = measured.get(dtype, [])
        part.numbers[dtype] = f"{len(done)} of {len(models)} models" + (
            f" (not reached: {', '.join(m for m in models if m not in done)})" if len(done) < len(models) else "")
    lines, mfu = benchmark_details(records)
    part.details += lines
    if not any(measured.values()):
        part.status, part.reason = "failed", "; ".join(stopped) or "no model measured"
        return
    part.status = "ran"
    if stopped:
        part.numbers["incomplete"] = "; ".join(stopped)
    for (case, dtype), cells in mfu.items():
        if case in ("transformer_gpu", "airbench94_gpu"):
            part.numbers[f"MFU {case} {dtype}"] = ", ".join(f"{col} {value}" for col, value in cells.items())


COLUMNS = ("jaxdl", "torch", "torch.compile")


def benchmark_details(records: dict[str, dict]) -> tuple[list[str], dict[tuple[str, str], dict[str, str]]]:
    """A Markdown table of step times, ratios and MFU of every measured model and dtype; MFU by (case, dtype)."""
    from scripts.benchmark import peak_flops

    if not records:
        return [], {}
    device = next(iter(records.values())).get("accelerator", "")
    lines = ["", f"Benchmark (`python -m scripts.benchmark`) on {device}: median step (ms), ratio jaxdl / torch "
             "(lower is better), MFU = XLA's FLOPs per step of jaxdl's program / step time / dense peak "
             "(the same FLOP count for every column).", "",
             "| model | dtype | batch | jaxdl (ms) | torch (ms) | torch.compile (ms) | jaxdl / torch | "
             "jaxdl MFU | torch MFU | torch.compile MFU | GFLOP/step | peak |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    mfus = {}
    for dtype, record in records.items():
        peak = peak_flops(device, dtype)
        for row in record["rows"]:
            res, flops = row["results"], row.get("flops_per_step")
            ms = {c: f"{res[c]['step_s'] * 1e3:,.2f}" if c in res else "-" for c in COLUMNS}
            mfu = {c: f"{100 * flops / res[c]['step_s'] / peak[1]:.1f} %" if c in res and flops and peak else "-"
                   for c in COLUMNS}
            mfus[row["case"], dtype] = mfu
            ratio = f"{res['jaxdl']['step_s'] / res['torch']['step_s']:.2f}" if "torch" in res else "-"
            gflops = f"{flops / 1e9:,.2f}" if flops else "-"
            lines.append(f"| {row['case']} | {dtype} | {row['batch']} | " + " | ".join(ms.values()) + f" | {ratio} | "
                         + " | ".join(mfu.values()) + f" | {gflops} | {peak[0] if peak else 'none known'} |")
    return lines, mfus


def part_shakespeare(check: Check, part: Part, timeout_s: float) -> None:
    text = check.shakespeare_text()
    if text is None and not (check.data_dir / "tiny_shakespeare_text").exists():
        part.reason = f"no tiny Shakespeare in --data ({check.data}): needs tinyshakespeare/input.txt"
        return
    t_end = time.monotonic() + timeout_s
    device, why = check.torch_device()
    if text is None:
        device, why = None, "the nanoGPT reference needs tinyshakespeare/input.txt"
    if check.tiny:
        iters, capped = None, "--tiny: debug=smoke on nanoGPT's CPU setting"
    elif timeout_s >= SHAKESPEARE_WHOLE_RUNS_S or device is None and timeout_s >= SHAKESPEARE_WHOLE_RUNS_S / 2:
        iters, capped = NANOGPT_ITERS, ""
    else:
        iters = SHAKESPEARE_CAPPED_ITERS
        capped = (f"capped at {iters} iterations (each run a whole {iters}-iteration schedule): a {timeout_s:.0f} s "
                  f"share cannot hold two {NANOGPT_ITERS}-iteration runs (--budget-s 1800 can)")
    part.numbers["length"] = capped or f"whole {NANOGPT_ITERS}-iteration runs"

    run_dir, log = check.runs / "shakespeare_char", check.logs / "4_shakespeare_jaxdl.log"
    part.logs.append(str(log.relative_to(check.out)))
    overrides = check.overrides("shakespeare", "bfloat16")
    if iters is not None and iters != NANOGPT_ITERS:
        overrides.append(f"trainer.max_steps={iters}")
    share = timeout_s if device is None else timeout_s * JAXDL_SIDE
    jaxdl = run_jaxdl(check, part, overrides, run_dir, log, share)
    if jaxdl is not None:
        iters = iters or jaxdl["steps"]
        speed = iterations_per_s(jaxdl)
        part.numbers["jaxdl"] = (f"{jaxdl['steps']} iterations, eval/loss {jaxdl['metrics']['eval/loss']:.4f}, "
                                 f"wall {jaxdl['wall_time_s']:.1f} s, {speed or float('nan'):.1f} it/s "
                                 f"(first step {jaxdl['first_step_s']:.1f} s)")
    else:
        part.numbers["jaxdl"] = part.reason

    if device is None:
        part.numbers["nanoGPT reference"] = f"skipped: {why}"
    elif iters is None:
        part.numbers["nanoGPT reference"] = "skipped: the jaxdl run gave no iteration count to match"
    else:
        ref_log, ref_out = check.logs / "4_shakespeare_nanogpt.log", check.out / "nanogpt_shakespeare_char.json"
        part.logs.append(str(ref_log.relative_to(check.out)))
        if check.tiny:  # the reference scores its whole validation split twice: a tenth of the text keeps that short
            short = check.out / "tiny_input.txt"
            short.write_text(text.read_text()[: len(text.read_text()) // 10])
            text = short
        cmd = [check.python, "benchmarks/reference/nanogpt_shakespeare_char.py", "--input", str(text),
               *REFERENCE["nanogpt_tiny" if check.tiny else "nanogpt"], "--device", device, "--iters", str(iters),
               "--output", str(ref_out)]
        run_reference(check, part, "nanoGPT reference", cmd, ref_log, ref_out, t_end, lambda ref: (
            f"{ref['iters']} iterations, whole-split loss {ref['evals'][-1]['val_whole']:.4f}, "
            f"wall {ref['wall_time_s']:.1f} s, {ref['iters_per_s'] or float('nan'):.1f} it/s "
            f"(first iteration {ref['first_iter_s']:.1f} s; {ref['dtype']}, compile {ref['compile']}, no dropout)"))
    if jaxdl is not None:
        part.status = "ran"
    if not check.tiny:
        part.numbers["published"] = f"nanoGPT: {NANOGPT_LOSS} after {NANOGPT_ITERS} iterations, about 3 min on an A100"


def run_reference(check: Check, part: Part, name: str, cmd: list[str], log: pathlib.Path, out: pathlib.Path,
                  t_end: float, describe: Callable[[dict[str, Any]], str]) -> None:
    """Runs a PyTorch reference script in the time left of its part and writes `describe(its JSON)` as `name`,
    or why it did not start, stopped or failed."""
    left = t_end - time.monotonic()
    if left < MIN_PART_S:
        part.numbers[name] = f"not started: {left:.0f} s left"
        return
    code, _ = run(cmd, log, left, check.env)
    if code == 0:
        part.numbers[name] = describe(json.loads(out.read_text()))
    else:
        part.numbers[name] = "stopped at its limit" if code is None else f"exit {code}: {last_line(log)}"


def part_airbench(check: Check, part: Part, timeout_s: float) -> None:
    t_end = time.monotonic() + timeout_s
    ok, line = check.ensure_cifar(min(180.0, timeout_s / 2))
    part.numbers["data"] = line
    if not ok:
        part.status, part.reason = "failed", line
        return
    device, why = check.torch_device()
    archive = check.cifar.get("archive")
    if archive is None:
        device, why = None, "the reference needs the CIFAR-10 archive, and --data holds only the prepared dataset"
    run_dir, log = check.runs / "airbench94", check.logs / "5_airbench_jaxdl.log"
    part.logs.append(str(log.relative_to(check.out)))
    left = t_end - time.monotonic()
    share = left if device is None else left * JAXDL_SIDE
    # bfloat16 convolutions are emulated, slowly, on a CPU: --tiny runs float32 (the override is tried by part 4)
    overrides = check.overrides("airbench", *([] if check.tiny else ["bfloat16"]))
    res = run_jaxdl(check, part, overrides, run_dir, log, share, check.cifar_env())
    if res is not None:
        part.status = "ran"
        accuracy = res["metrics"].get("eval/tta_accuracy", res["metrics"].get("eval/accuracy"))
        part.numbers["jaxdl"] = (f"training steps {res['train_time_s']:.2f} s after a first step of "
                                 f"{res['first_step_s']:.1f} s, {res['steps']} steps, wall {res['wall_time_s']:.1f} s, "
                                 f"TTA accuracy {accuracy:.4f}")
    else:
        part.numbers["jaxdl"] = part.reason
    if device is None:
        part.numbers["PyTorch reference"] = f"skipped: {why}"
    else:
        ref_log, ref_out = check.logs / "5_airbench_torch.log", check.out / "airbench94_torch.json"
        part.logs.append(str(ref_log.relative_to(check.out)))
        cmd = [check.python, "benchmarks/reference/airbench94_cifar10.py", "--archive", archive, "--device", device,
               *REFERENCE["airbench_tiny" if check.tiny else "airbench"], "--output", str(ref_out)]
        run_reference(check, part, "PyTorch reference", cmd, ref_log, ref_out, t_end, lambda ref: (
            f"total_time_seconds {ref['total_time_seconds']:.2f} s (whitening, training steps, TTA), "
            f"{ref['steps']} steps, wall {ref['wall_time_s']:.1f} s, TTA accuracy {ref['tta_val_acc']:.4f} "
            f"({ref['dtype']})"))
    if not check.tiny:
        part.numbers["published"] = "airbench94: 94.01 % in 3.83 s on an A100 (float16)"


PART_FUNCTIONS: dict[str, tuple[str, Callable[[Check, Part, float], None]]] = {
    "tests": ("1. GPU tests (`pytest -m gpu tests/gpu`)", part_tests),
    "vae": ("2. main job (`experiments.run model=vae`)", part_vae),
    "benchmark": ("3. benchmark (`scripts.benchmark`, float32 and bfloat16)", part_benchmark),
    "shakespeare": ("4. `experiment=shakespeare_char` beside nanoGPT", part_shakespeare),
    "airbench": ("5. `experiment=cifar10_airbench94` beside airbench94", part_airbench),
}


# ------------------------------------------------------------------------------------------------- the summary


def summary(check: Check, parts: list[Part]) -> str:
    jax_info, torch_info = check.machine.get("jax") or {}, check.machine.get("torch") or {}
    device = (f"{jax_info.get('count', '?')} x {jax_info.get('device_kind', '?')} ({jax_info.get('platform', '?')})"
              if jax_info else "JAX did not start (logs/probe_jax.log)")
    versions = f"jax {jax_info.get('jax', '?')}" + (f", torch {torch_info['torch']}" if torch_info else ", no torch")
    lines = [
        "# jaxdl GPU check",
        "",
        f"{datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')} on {device}; {versions}; "
        f"budget {check.args.budget_s:.0f} s, used {check.budget.used():.0f} s"
        + ("; --tiny (smoke sizes: no figure here is a result)" if check.tiny else "") + ".",
        f"Command: `bash scripts/gpu_check.sh {' '.join(sys.argv[1:])}`",
        "",
        "| part | status | numbers | log |",
        "|---|---|---|---|",
    ]
    for part in parts:
        status = part.status + (f" ({part.reason})" if part.reason else "")
        numbers = "; ".join(f"{k}: {v}" for k, v in part.numbers.items()) or "-"
        logs = ", ".join(part.logs) or "-"
        lines.append(f"| {part.title} | {status} | {escape(numbers)} | {logs} |")
    for part in parts:
        lines += part.details
    return "\n".join(lines) + "\n"


def escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=pathlib.Path, help="output folder (created)")
    parser.add_argument("--budget-s", type=float, default=480.0, help="seconds for the whole check (default 480)")
    parser.add_argument("--data", default=os.environ.get("JAXDL_MANUAL_DIR"),
                        help="raw dataset files and/or prepared datasets (default: $JAXDL_MANUAL_DIR)")
    parser.add_argument("--tiny", action="store_true", help="smoke sizes in every part (a dry run of the script)")
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS), help="parts to run (in order)")
    args = parser.parse_args(argv)

    check = Check(args)
    print(f"gpu_check: budget {args.budget_s:.0f} s, output in {check.out}", flush=True)
    linked = check.link_prepared()
    check.probe()
    print(f"  JAX: {check.machine.get('jax')}; PyTorch: {check.machine.get('torch')}"
          + (f"; prepared datasets linked: {', '.join(linked)}" if linked else ""), flush=True)
    selected = [p for p in PARTS if p in args.parts]
    parts = [Part(name, PART_FUNCTIONS[name][0]) for name in selected]
    for i, part in enumerate(parts):
        share = check.budget.share(part.name, selected[i:])
        if share < MIN_PART_S:
            part.reason = f"budget spent: {max(0.0, check.budget.left()):.0f} s left for {len(selected) - i} part(s)"
        else:
            print(f"{part.title}: up to {share:.0f} s", flush=True)
            t0 = time.monotonic()
            try:
                PART_FUNCTIONS[part.name][1](check, part, share)
            except Exception as error:  # a bug in one part must not lose the others' rows
                part.status, part.reason = "failed", f"gpu_check: {type(error).__name__}: {error}"[:300]
            part.seconds = time.monotonic() - t0
        reason = f" ({part.reason})" if part.reason else ""
        print(f"  -> {part.status}{reason} in {part.seconds:.0f} s", flush=True)
        write(check, parts)
    text = write(check, parts)
    print(text)
    return 0 if all(p.status != "failed" for p in parts) else 1


def write(check: Check, parts: list[Part]) -> str:
    text = summary(check, parts)
    (check.out / "summary.md").write_text(text)
    record = {"argv": sys.argv[1:], "budget_s": check.args.budget_s, "used_s": check.budget.used(),
              "machine": check.machine, "cifar": check.cifar, "parts": [dataclasses.asdict(p) for p in parts]}
    (check.out / "summary.json").write_text(json.dumps(record, indent=2, default=str) + "\n")
    return text


if __name__ == "__main__":
    raise SystemExit(main())
