"""Training curves drawn from a run's `metrics.jsonl` with matplotlib."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence

from jaxdl.viz.figures import pyplot, save_figure


def plot_curves(
    records: Iterable[dict], path: os.PathLike | str, *, metrics: Sequence[str], title: str = "", ylabel: str = ""
) -> None:
    """Plots each metric in `metrics` against `step` into one PNG.

    Records are metric dicts as written to metrics.jsonl; a step logged twice
    (a run resumed from an earlier checkpoint) keeps its last value.
    """
    series: dict[str, dict[int, float]] = {m: {} for m in metrics}
    for record in records:
        for m in metrics:
            if m in record and "step" in record:
                series[m][int(record["step"])] = float(record[m])
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=100)
    for m, points in series.items():
        if points:
            steps = sorted(points)
            ax.plot(steps, [points[s] for s in steps], marker="o" if len(steps) < 30 else None, label=m)
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    save_figure(fig, path)
