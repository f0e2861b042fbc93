"""Confusion-matrix picture."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from jaxdl.viz.figures import pyplot, save_figure


def plot_confusion(confusion: np.ndarray, class_names: Sequence[str], path: os.PathLike | str, *, title: str = "") -> None:
    """Draws a confusion matrix (rows: true class, columns: predicted) as a row-normalised heat map.

    Each cell shows the fraction of the true class predicted as the column's
    class; the diagonal is the per-class accuracy. Written atomically.
    """
    counts = np.asarray(confusion, np.float64)
    rates = counts / np.maximum(counts.sum(1, keepdims=True), 1.0)
    k = len(class_names)
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(1.0 + 0.6 * k, 0.8 + 0.6 * k), dpi=100)
    ax.imshow(rates, cmap="Blues", vmin=0.0, vmax=1.0)
    for i in range(k):
        for j in range(k):
            ax.text(j, i, f"{rates[i, j]:.2f}", ha="center", va="center", fontsize=7,
                    color="white" if rates[i, j] > 0.5 else "black")
    ax.set_xticks(range(k), class_names, rotation=45, ha="right")
    ax.set_yticks(range(k), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title or f"accuracy {np.trace(counts) / max(counts.sum(), 1):.4f}")
    fig.tight_layout()
    save_figure(fig, path)
