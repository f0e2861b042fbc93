"""Run a named result and check it: `python -m scripts.reproduce experiment=NAME [overrides]`.

The expected number lives in the config it reproduces (an `expected:` block:
metric, value, comparison, tolerance, source). This command runs
`python -m experiments.run` with the given overrides, compares the run's final
metric with the expectation, prints PASS or FAIL, and appends a record to
`benchmarks/reproductions.jsonl`. `--from-run RUN_DIR` checks a run that has
already finished (its saved overrides must be the ones given) instead of
training again. `--table` rewrites the README's results table from the records;
the table is never typed by hand.

Exit status: 0 when the check passes, 1 when it fails, 2 on bad input.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import pathlib
import platform
import subprocess
import sys

import yaml
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from experiments.config import register

REPO = pathlib.Path(__file__).resolve().parents[1]
RECORDS = REPO / "benchmarks" / "reproductions.jsonl"
README = REPO / "README.md"
TABLE_START, TABLE_END = "<!-- reproductions:start -->", "<!-- reproductions:end -->"


def expectation(overrides: list[str]) -> dict:
    """The composed config's `expected` block.

    Raises:
      SystemExit: the config has none.
    """
    register()
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    if cfg.get("expected") is None:
        raise SystemExit(f"{' '.join(overrides)} has no `expected:` block to check against; add one to its YAML.")
    return OmegaConf.to_container(cfg.expected, resolve=True)


def check(measured: float, expected: dict) -> bool:
    """Whether `measured` meets the expectation's comparison."""
    if expected["comparison"] == "at_most":
        return measured <= expected["value"] + expected["tolerance"]
    if expected["comparison"] == "at_least":
        return measured >= expected["value"] - expected["tolerance"]
    if expected["comparison"] == "within":
        return abs(measured - expected["value"]) <= expected["tolerance"]
    raise SystemExit(f"Unknown comparison {expected['comparison']!r}; use within, at_most or at_least.")


def train(overrides: list[str], run_dir: pathlib.Path) -> None:
    command = [sys.executable, "-m", "experiments.run", *overrides, f"hydra.run.dir={run_dir}"]
    print("running:", " ".join(command), flush=True)
    subprocess.run(command, cwd=REPO, check=True)


def record(overrides: list[str], run_dir: pathlib.Path, expected: dict) -> dict:
    saved = yaml.safe_load((run_dir / ".hydra" / "overrides.yaml").read_text())
    saved = [o for o in saved if not o.startswith("hydra.")]
    if sorted(saved) != sorted(overrides):
        raise SystemExit(f"{run_dir} was run with overrides {saved}, not {overrides}.")
    results = json.loads((run_dir / "results.json").read_text())
    measured = results["metrics"][expected["metric"]]
    environment = results["environment"]
    return {
        "config": " ".join(overrides),
        "metric": expected["metric"],
        "expected": expected["value"],
        "comparison": expected["comparison"],
        "tolerance": expected["tolerance"],
        "source": expected["source"],
        "measured": measured,
        "pass": check(measured, expected),
        "data": data_identity(results.get("dataset", {})),
        "wall_time_s": results["wall_time_s"],
        "machine": f"{environment['device_count']}x {environment['device_kind']} ({platform.machine()}, {os.cpu_count()} cores)",
        "packages": {k: environment["packages"].get(k) for k in ("jax", "flax")},
        "commit": _run_commit(run_dir),
        "date": datetime.date.today().isoformat(),
        "run_dir": str(run_dir),
    }


def data_identity(dataset: dict) -> dict:
    """What the run trained on, from results.json's `dataset`: name, version, and the
    source archive's sha256 and `canonical` flag where the builder records them (a local
    copy that is not the canonical file, e.g. CIFAR-10 re-encoded from JPEG, carries
    `canonical: false`; expectations quoted from papers hold for the canonical data).
    """
    archive = (dataset.get("metadata") or {}).get("archive") or {}
    return {
        "name": dataset.get("name"),
        "version": dataset.get("version"),
        "archive_sha256": archive.get("sha256"),
        "canonical": archive.get("canonical", True),
    }


def _run_commit(run_dir: pathlib.Path) -> str | None:
    """The commit the run was made from (its manifest), else the checkout's when that is clean."""
    manifest = run_dir / "manifest.json"
    if manifest.exists():
        return json.loads(manifest.read_text())["git"]["commit"]
    return None


def table(records: list[dict]) -> str:
    """Markdown table of the latest record per config."""
    latest = {r["config"]: r for r in records}
    symbol = {"at_most": "≤", "at_least": "≥", "within": "±"}
    lines = [
        "| command | metric | expected | measured | check | wall time | machine | date |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in latest.values():
        target = f"{symbol[r['comparison']]} {r['expected']:g}" if r["comparison"] != "within" else f"{r['expected']:g} ± {r['tolerance']:g}"
        lines.append(
            f"| `python -m experiments.run {r['config']}` | {r['metric']} | {target} | {r['measured']:.4g} | "
            f"{_verdict(r)} | {r['wall_time_s'] / 60:.1f} min | {r['machine']} | {r['date']} |"
        )
    return "\n".join(lines)


def _verdict(r: dict) -> str:
    verdict = "PASS" if r["pass"] else "FAIL"
    if not r.get("data", {}).get("canonical", True):
        verdict += " (non-canonical data)"
    return verdict


def write_table() -> None:
    """Replaces the README block between the reproduction markers with the table of records."""
    records = [json.loads(line) for line in RECORDS.read_text().splitlines() if line.strip()]
    text = README.read_text()
    if TABLE_START not in text or TABLE_END not in text:
        raise SystemExit(f"README.md lacks the markers {TABLE_START} ... {TABLE_END}.")
    head, rest = text.split(TABLE_START, 1)
    _, tail = rest.split(TABLE_END, 1)
    README.write_text(f"{head}{TABLE_START}\n{table(records)}\n{TABLE_END}{tail}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("overrides", nargs="*", help="Hydra overrides naming the experiment, e.g. experiment=NAME")
    parser.add_argument("--from-run", type=pathlib.Path, help="check this finished run instead of training")
    parser.add_argument("--run-dir", type=pathlib.Path, help="where to train (default: outputs/reproduce/<time>)")
    parser.add_argument("--table", action="store_true", help="rewrite the README table from the records and exit")
    args = parser.parse_args()
    if args.table:
        write_table()
        print(table([json.loads(line) for line in RECORDS.read_text().splitlines() if line.strip()]))
        return
    if not args.overrides:
        parser.error("name what to reproduce, e.g. experiment=mnist_vae_burda2015")
    expected = expectation(args.overrides)
    run_dir = args.from_run
    if run_dir is None:
        run_dir = args.run_dir or REPO / "outputs" / "reproduce" / datetime.datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
        train(args.overrides, run_dir)
    result = record(args.overrides, run_dir, expected)
    RECORDS.parent.mkdir(exist_ok=True)
    with open(RECORDS, "a", encoding="utf-8") as f:
        f.write(json.dumps(result) + "\n")
    verdict = _verdict(result)
    print(f"{verdict}: {result['metric']} measured {result['measured']:.4f}, expected {result['comparison']} "
          f"{result['expected']} (tolerance {result['tolerance']}), source: {result['source']}")
    sys.exit(0 if result["pass"] else 1)


if __name__ == "__main__":
    main()
