"""Streaming keeps host memory bounded: train on a split larger than the memory allowed, beside the in-memory path.

    python -m scripts.streaming_memory prepare                       # mnist_big: 720k 56x56 records, 2.26 GB
    python -m scripts.streaming_memory run --max-steps 2000 --budget-mb 800

`prepare` writes the `mnist_big` array_record dataset (MNIST at 56x56, its training split
12 times, each copy shifted; `jaxdl/data/mnist_repeated.py`) from the raw MNIST
files in $JAXDL_MANUAL_DIR. `run` trains the same command twice,
`python -m experiments.run model=mlp data=mnist_big trainer.max_steps=N ...`,
once with `data.streaming=true` under a resident-memory budget and once with
`data.streaming=false` (the whole split read into memory, no budget), each in
its own process, and prints for each: peak resident memory, training
examples/s (`results.json`, compile step excluded), set-up time before the
first step, and wall time.

How memory is measured and enforced: a watchdog samples the resident set
size (RSS) of the run's process and all its children every 0.05 s, records
the peak of their sum, and kills the run if that sum exceeds `--budget-mb`;
the kernel's own high-water mark (`ru_maxrss` of the largest process, from
`wait4`) is printed beside it. `--address-space-mb` additionally sets the
kernel limit RLIMIT_AS on every run (note that a JAX process reserves about
1.5 GB of address space before it touches any data).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import resource
import subprocess
import sys
import time

import psutil

DATASET = "mnist_big"


def tree_rss(process: psutil.Process) -> int:
    """Bytes resident in `process` and all its descendants (0 for those that are gone)."""
    total = 0
    for p in [process, *process.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


def measured_run(
    command: list[str], *, budget_mb: float | None, address_space_mb: float | None, log: pathlib.Path
) -> dict:
    """Runs `command`, sampling its process tree's RSS; kills it above `budget_mb`. Returns the measurements."""

    def limit_address_space():
        if address_space_mb:
            limit = int(address_space_mb * 2**20)
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    t0 = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, preexec_fn=limit_address_space)
        watched = psutil.Process(proc.pid)
        peak, killed, status, usage = 0, False, None, None
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            try:
                rss = tree_rss(watched)
            except psutil.NoSuchProcess:
                rss = 0
            peak = max(peak, rss)
            if budget_mb and rss > budget_mb * 2**20 and not killed:
                killed = True
                for p in [*watched.children(recursive=True), watched]:
                    p.kill()
            time.sleep(0.05)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return {
        "returncode": proc.returncode,
        "killed_over_budget": killed,
        "peak_rss_mb": peak / 2**20,
        "kernel_max_rss_mb": usage.ru_maxrss / 1024,  # KiB on Linux
        "wall_s": time.perf_counter() - t0,
    }


def prepare(args) -> None:
    from jaxdl.data import sources

    t0 = time.perf_counter()
    builder = sources.prepare(DATASET, data_dir=args.data_dir, manual_dir=args.manual_dir)
    size = sum(f.stat().st_size for f in pathlib.Path(builder.data_dir).glob("*train.array_record*"))
    print(f"{DATASET}: {builder.info.splits['train'].num_examples} training records, {size / 2**30:.2f} GiB of "
          f"array_record files in {builder.data_dir}; {time.perf_counter() - t0:.0f} s")


def run(args) -> None:
    out_dir = pathlib.Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    common = [
        "model=mlp", f"data={args.dataset}", f"trainer.max_steps={args.max_steps}",
        f"trainer.eval_every_steps={args.max_steps}", f"trainer.log_every_steps={min(200, args.max_steps)}",
        "trainer.progress=false", "trainer.artifacts=false",
        "trainer.tensorboard=false", f"trainer.prefetch_to_device={args.prefetch_to_device}", f"seed={args.seed}",
    ]
    if args.data_dir:
        common.append(f"data.data_dir={args.data_dir}")
    summary = {}
    for mode, streaming, budget in (("streaming", True, args.budget_mb), ("in_memory", False, args.memory_budget_mb)):
        run_dir = out_dir / mode
        command = [sys.executable, "-m", "experiments.run", *common, f"data.streaming={str(streaming).lower()}",
                   f"data.num_workers={args.num_workers}", f"hydra.run.dir={run_dir}"]
        print("$", " ".join(command[1:]), flush=True)
        log = out_dir / f"{mode}.log"
        measured = measured_run(command, budget_mb=budget, address_space_mb=args.address_space_mb, log=log)
        results_path = run_dir / "results.json"
        if measured["returncode"] == 0 and results_path.exists():
            results = json.loads(results_path.read_text())
            measured.update(
                examples_per_s=results["train_examples_per_s"],
                setup_s=results["setup_s"],
                first_step_s=results["first_step_s"],
                steps=results["steps"],
                accuracy=results["metrics"].get("eval/accuracy"),
                train_examples=results["dataset"]["train_examples"],
            )
        summary[mode] = {"budget_mb": budget, **measured}
        print(json.dumps({mode: summary[mode]}, indent=1), flush=True)
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare", help=f"write the {DATASET} array_record dataset")
    p.add_argument("--data-dir", default=None, help="where prepared datasets live (default $JAXDL_DATA_DIR)")
    p.add_argument("--manual-dir", default=None, help="raw MNIST files (default $JAXDL_MANUAL_DIR)")
    r = sub.add_parser("run", help="train streaming (under the budget) and in memory; print peak RSS and examples/s")
    r.add_argument("--out", default="outputs/streaming_memory")
    r.add_argument("--dataset", default=DATASET, help="data option (conf/data) to train on")
    r.add_argument("--data-dir", default=None)
    r.add_argument("--max-steps", type=int, default=2000, help="optimizer steps of batch 256 per run")
    r.add_argument("--budget-mb", type=float, default=500.0, help="RSS allowed to the streaming run (MiB)")
    r.add_argument("--memory-budget-mb", type=float, default=None, help="RSS allowed to the in-memory run (none)")
    r.add_argument("--address-space-mb", type=float, default=None, help="RLIMIT_AS for both runs (MiB)")
    r.add_argument("--num-workers", type=int, default=0, help="data.num_workers of the streaming run")
    r.add_argument("--prefetch-to-device", type=int, default=2)
    r.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    prepare(args) if args.command == "prepare" else run(args)


if __name__ == "__main__":
    main()
