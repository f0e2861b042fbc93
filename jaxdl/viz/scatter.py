"""Side-by-side 2-D scatter plots coloured by label, written as PNG with matplotlib."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from jaxdl.viz.figures import pyplot, save_figure


def save_scatter_panels(
    path: os.PathLike | str,
    panels: Sequence[tuple[str, np.ndarray]],
    labels: np.ndarray,
    *,
    class_names: Sequence[str] | None = None,
    point_size: float = 2.0,
) -> None:
    """Draws one scatter panel per (title, points [N, 2]) with points coloured by `labels` [N].

    The file is written under a temporary name and renamed, so a crash never
    leaves a truncated PNG.
    """
    labels = np.asarray(labels)
    classes = np.unique(labels)
    plt = pyplot()
    cmap = plt.get_cmap("tab10" if len(classes) <= 10 else "tab20")
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 5), dpi=100, squeeze=False)
    for ax, (title, points) in zip(axes[0], panels, strict=True):
        points = np.asarray(points)
        for i, c in enumerate(classes):
            chosen = labels == c
            name = class_names[int(c)] if class_names is not None else str(c)
            color = cmap(i % cmap.N)
            ax.scatter(points[chosen, 0], points[chosen, 1], s=point_size, color=color, label=name, alpha=0.6,
                       linewidths=0)
        ax.set_title(title)
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0][-1].legend(markerscale=4, fontsize=8, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    fig.tight_layout()
    save_figure(fig, path)
