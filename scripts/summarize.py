"""Summarise a sweep: `python -m scripts.summarize MULTIRUN_DIR [--metric eval/nll]`.

Reads every job folder of a Hydra multirun (its `.hydra/overrides.yaml` and
`results.json`, or `failure.json` for a job that failed) and writes, into
MULTIRUN_DIR:

* `summary.csv` and `summary.md`: one row per job, its overrides and final metrics;
* `summary_by_setting.md`: mean ± standard deviation over seeds for each
  setting (the overrides other than `seed`), with the number of seeds;
* `summary_<metric>.png`: the metric against each swept hyperparameter.

Failed jobs are listed with their error. Prints the Markdown tables.
A search's folder (`sweep=...`, it holds search.json) gets the study's
summary instead: trials with their state (pruned among them), the best one and
its command, Optuna's plots (experiments/search_report.py).
"""

from __future__ import annotations

import argparse
import csv
import pathlib
import statistics
from collections import defaultdict
from typing import Any

import yaml

from jaxdl.records import read_record


def read_jobs(sweep_dir: pathlib.Path) -> list[dict[str, Any]]:
    """One record per job folder: overrides, status, metrics, error."""
    jobs = []
    for overrides_file in sorted(sweep_dir.glob("**/.hydra/overrides.yaml")):
        job_dir = overrides_file.parent.parent
        overrides = {}
        for item in yaml.safe_load(overrides_file.read_text()) or []:
            key, _, value = item.partition("=")
            overrides[key.lstrip("+~")] = value
        record: dict[str, Any] = {"job": str(job_dir.relative_to(sweep_dir)), "overrides": overrides}
        record.update(_job_status(job_dir))
        jobs.append(record)
    return jobs


def _job_status(job_dir: pathlib.Path) -> dict[str, Any]:
    """status ("ok", "failed", "incomplete"), metrics, wall time and error of one job; never raises.

    An empty or unreadable results.json or failure.json (a full disk, a job
    killed while writing) makes the job "failed", with the reason.
    """
    results, results_problem = read_record(job_dir / "results.json")
    failure, failure_problem = read_record(job_dir / "failure.json")
    failed_last = results is None or _mtime(job_dir / "failure.json") >= _mtime(job_dir / "results.json")
    if failure is not None and failed_last:
        error = f"{failure.get('error', 'error')}: {failure.get('message', '')}".strip()
        return {"status": "failed", "metrics": {}, "error": error}
    if results is not None and isinstance(results.get("metrics"), dict):
        return {"status": "ok", "metrics": results["metrics"], "wall_time_s": results.get("wall_time_s")}
    if results_problem != "missing":
        why = results_problem if results is None else "it has no metrics"
        return {"status": "failed", "metrics": {}, "error": f"results.json is unusable: {why}"}
    if failure_problem != "missing":
        return {"status": "failed", "metrics": {}, "error": f"failed; failure.json is unusable: {failure_problem}"}
    return {"status": "incomplete", "metrics": {}, "error": "no results.json (still running or killed)"}


def _mtime(path: pathlib.Path) -> float:
    """When `path` was last written: of a results.json and a failure.json, the newer tells how the job last ended."""
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def _markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


def summarize(sweep_dir: pathlib.Path, metric: str | None = None) -> str:
    """Writes the summary files into `sweep_dir` and returns the Markdown text.

    Raises:
      FileNotFoundError: `sweep_dir` holds no Hydra job folders.
    """
    from experiments import search_report

    if search_report.is_search(sweep_dir):
        return search_report.summarize(sweep_dir)
    jobs = read_jobs(sweep_dir)
    if not jobs:
        raise FileNotFoundError(f"No job folders (*/.hydra/overrides.yaml) under {sweep_dir}; pass a multirun folder.")
    keys = sorted({k for job in jobs for k in job["overrides"]})
    metrics = sorted({m for job in jobs for m in job["metrics"]})
    metric = metric or next((m for m in ("eval/nll", "eval/loss", "eval/accuracy", "eval/elbo") if m in metrics), None)

    header = ["job", "status", *keys, *metrics, "wall_time_s", "error"]
    rows = [
        [job["job"], job["status"], *(job["overrides"].get(k, "") for k in keys),
         *(_fmt(job["metrics"].get(m)) for m in metrics), _fmt(job.get("wall_time_s")), job.get("error", "")]
        for job in jobs
    ]
    with open(sweep_dir / "summary.csv", "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([header, *rows])
    per_job = _markdown(header, rows)
    (sweep_dir / "summary.md").write_text(per_job + "\n")

    # A setting is what was swept: overrides that differ between jobs, other than the seed.
    setting_keys = [k for k in keys if k != "seed" and len({job["overrides"].get(k) for job in jobs}) > 1]
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for job in jobs:
        if job["status"] == "ok":
            groups[tuple(job["overrides"].get(k, "") for k in setting_keys)].append(job)
    by_setting_rows = []
    for setting, members in sorted(groups.items()):
        cells = []
        for m in metrics:
            values = [j["metrics"][m] for j in members if m in j["metrics"]]
            if not values:
                cells.append("")
            elif len(values) == 1:
                cells.append(_fmt(values[0]))
            else:
                cells.append(f"{statistics.mean(values):.4g} ± {statistics.stdev(values):.2g}")
        by_setting_rows.append([*setting, str(len(members)), *cells])
    by_setting = _markdown([*setting_keys, "seeds", *metrics], by_setting_rows)
    (sweep_dir / "summary_by_setting.md").write_text(by_setting + "\n")

    failed = [job for job in jobs if job["status"] != "ok"]
    text = f"{len(jobs)} jobs, {len(jobs) - len(failed)} finished, {len(failed)} failed or incomplete\n\n{by_setting}\n"
    if failed:
        text += "\nFailed or incomplete:\n" + "\n".join(f"- {j['job']} {j['overrides']}: {j['error']}" for j in failed) + "\n"
    if metric is not None:
        _plot(jobs, setting_keys, metric, sweep_dir / f"summary_{metric.replace('/', '_')}.png")
    return text


def _plot(jobs: list[dict], keys: list[str], metric: str, path: pathlib.Path) -> None:
    import matplotlib.ticker

    from jaxdl.viz.figures import pyplot, save_figure

    plt = pyplot()

    swept = [k for k in keys if len({j["overrides"].get(k) for j in jobs}) > 1]
    if not swept:
        return
    fig, axes = plt.subplots(1, len(swept), figsize=(4.5 * len(swept), 3.8), squeeze=False, dpi=100)
    for ax, key in zip(axes[0], swept, strict=True):
        points = [(j["overrides"].get(key), j["metrics"][metric]) for j in jobs if metric in j["metrics"]]
        try:
            xs = [float(x) for x, _ in points]
            numeric = True
        except (TypeError, ValueError):
            labels = sorted({str(x) for x, _ in points})
            xs = [labels.index(str(x)) for x, _ in points]
            ax.set_xticks(range(len(labels)), labels)
            numeric = False
        ax.scatter(xs, [y for _, y in points])
        if numeric and min(xs) > 0 and max(xs) / min(xs) >= 5:
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
            ax.set_xticks(sorted(set(xs)), [f"{x:g}" for x in sorted(set(xs))])
        ax.set_xlabel(key)
        ax.set_ylabel(metric)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("sweep_dir", type=pathlib.Path, help="a Hydra multirun folder")
    parser.add_argument("--metric", default=None, help="metric to plot (default: eval/nll, eval/loss or eval/accuracy)")
    args = parser.parse_args()
    print(summarize(args.sweep_dir, args.metric))


if __name__ == "__main__":
    main()
