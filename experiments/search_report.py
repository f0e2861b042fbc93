"""What a search found: `python -m scripts.summarize SWEEP_DIR` on a search folder, and the end of every search.

Writes into the sweep folder:

* `summary.md` and `summary.csv`: every trial with its state (complete,
  pruned, failed, killed, running), parameters, value (mean over its seeds,
  with their spread), epochs and CPU-seconds spent, and its folder;
* the best trial and the command that trains it again as a single run;
* Optuna's pictures (`optuna.visualization.matplotlib`): `search_history.png`
  (optimisation history), `search_intermediate_values.png` (each trial's
  reported metric against evaluations, pruned ones stopping early),
  `search_importances.png` (fANOVA parameter importances),
  `search_parallel_coordinate.png` and `search_slice.png`.
"""

from __future__ import annotations

import csv
import logging
import os
import pathlib
import warnings
from typing import Any

from experiments import search

log = logging.getLogger(__name__)

PLOTS = {
    "search_history.png": "plot_optimization_history",
    "search_intermediate_values.png": "plot_intermediate_values",
    "search_importances.png": "plot_param_importances",
    "search_parallel_coordinate.png": "plot_parallel_coordinate",
    "search_slice.png": "plot_slice",
}


def is_search(sweep_dir: os.PathLike | str) -> bool:
    """True for a folder written by the jaxdl_search sweeper."""
    return (pathlib.Path(sweep_dir) / search.SPEC_FILE).is_file()


def load(sweep_dir: os.PathLike | str):
    """(search.json, the Optuna study) of a search folder."""
    optuna = search._optuna()
    spec = search.read_spec(sweep_dir)
    study = optuna.load_study(study_name=spec["study_name"], storage=search.open_storage(spec, sweep_dir))
    return spec, study


def state_name(trial) -> str:
    """complete | pruned | failed (raised) | killed (its worker stopped; run again) | running | waiting."""
    name = trial.state.name
    if name == "FAIL":
        return "failed" if "error" in trial.user_attrs else "killed"
    return {"COMPLETE": "complete"}.get(name, name.lower())


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


def _markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def summarize(sweep_dir: os.PathLike | str) -> str:
    """Writes the summary and the pictures into `sweep_dir`; returns the Markdown text."""
    sweep_dir = pathlib.Path(sweep_dir)
    spec, study = load(sweep_dir)
    trials = study.get_trials(deepcopy=False)
    keys = list(spec["params"])
    several = spec["seeds_per_trial"] > 1
    header = ["trial", "state", *keys, spec["metric"], *(["std", "per seed"] if several else []), "epochs", "cpu_s",
              "folder", "note"]
    rows = []
    for t in trials:
        note = t.user_attrs.get("error", "")
        if state_name(t) == "killed":
            retries = [r.number for r in trials if r.system_attrs.get("retry_history", [None])[-1] == t.number]
            note = f"worker stopped; run again as trial {retries[0]}" if retries else "worker stopped; not run again"
        value = t.value if t.state.name == "COMPLETE" else (
            t.intermediate_values[max(t.intermediate_values)] if t.intermediate_values else None)
        row = [str(t.number), state_name(t), *(_fmt(t.params.get(k)) for k in keys), _fmt(value)]
        if several:
            row += [_fmt(t.user_attrs.get("std")), " ".join(_fmt(v) for v in t.user_attrs.get("values", []))]
        row += [_fmt(t.user_attrs.get("epochs")), _fmt(t.user_attrs.get("cpu_s")), t.user_attrs.get("folder", ""), note]
        rows.append(row)
    with open(sweep_dir / "summary.csv", "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([header, *rows])

    by_state: dict[str, int] = {}
    for t in trials:
        by_state[state_name(t)] = by_state.get(state_name(t), 0) + 1
    finished = sum(search.counts(t) for t in trials)
    epochs = sum(t.user_attrs.get("epochs", 0.0) for t in trials)
    cpu_s = sum(t.user_attrs.get("cpu_s", 0.0) for t in trials)
    lines = [
        f"Search {spec['study_name']!r}: {finished} of {spec['n_trials']} trials finished ("
        + ", ".join(f"{n} {s}" for s, n in sorted(by_state.items())) + f"); {spec['direction']} {spec['metric']}"
        + (f", mean over {spec['seeds_per_trial']} seeds" if several else "") + ".",
        f"Compute: {epochs:.1f} epochs, {cpu_s:.0f} CPU-seconds of training processes.",
    ]
    completed = [t for t in trials if t.state.name == "COMPLETE"]
    if completed:
        best = study.best_trial
        seeds = [spec["base_seed"] + i for i in range(spec["seeds_per_trial"])]
        spread = f" ± {best.user_attrs['std']:.4g} over seeds {seeds}" if "std" in best.user_attrs else ""
        lines += [
            f"Best: trial {best.number}, {spec['metric']} {best.value:.6g}{spread}, "
            + " ".join(f"{k}={_fmt(v)}" for k, v in best.params.items()) + f" ({best.user_attrs.get('folder', '')}).",
            "Train it again: `" + search.reproduce_command(spec["overrides"], best.params, seeds) + "`",
        ]
    else:
        lines.append("No trial has completed yet.")
    text = "\n".join(lines) + "\n\n" + _markdown(header, rows) + "\n"
    (sweep_dir / "summary.md").write_text(text)
    plot(study, spec["metric"], sweep_dir)
    return text


def plot(study, metric: str, sweep_dir: pathlib.Path) -> list[str]:
    """Writes Optuna's matplotlib pictures of `study`; returns the files written (a picture needing more trials is left out)."""
    import matplotlib.ticker
    import numpy as np
    import optuna.visualization.matplotlib as ovm

    from jaxdl.viz.figures import pyplot, save_figure

    pyplot()  # the Agg backend, before Optuna imports pyplot
    logging.getLogger("matplotlib.category").setLevel(logging.WARNING)  # categorical numbers (latent widths) are meant
    written = []
    for name, function in PLOTS.items():
        kwargs = {} if function == "plot_intermediate_values" else {"target_name": metric}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                axes = getattr(ovm, function)(study, **kwargs)
            except (ValueError, RuntimeError, ZeroDivisionError) as error:  # importances need two completed trials
                log.info("%s not drawn: %s", name, error)
                continue
            if function == "plot_intermediate_values":
                axes.set_xlabel("evaluations (epochs by default), summed over a trial's seeds")
                axes.set_ylabel(metric)
            fig = np.ravel(axes)[0].figure
            for ax in fig.axes:
                if ax.get_xscale() == "log":  # labels at 1, 2 and 5 of each decade: a search range is often under one
                    ax.xaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
                    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
                    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
            save_figure(fig, sweep_dir / name, bbox_inches="tight")  # Optuna's long labels and colour bars
        written.append(name)
    return written
