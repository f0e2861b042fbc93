"""matplotlib for files only: the non-interactive Agg backend and crash-safe PNG writes.

Every plot in jaxdl gets pyplot from `pyplot()`, so the backend is set once,
before pyplot loads, and only when a picture is drawn (importing pyplot takes
about 0.3 s, which a run's start should not pay); every figure is written by
`save_figure`.
"""

from __future__ import annotations

import os
import pathlib
from typing import Any


def pyplot() -> Any:
    """`matplotlib.pyplot` on the Agg backend (no display needed), imported on first use."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: os.PathLike | str, **savefig_kwargs: Any) -> None:
    """Writes the matplotlib figure `fig` as a PNG at `path` and closes it.

    `savefig_kwargs` go to `fig.savefig` (e.g. `bbox_inches="tight"` for a
    figure laid out by another library).

    The file is written under a temporary name in the same folder and renamed,
    so a crash or a kill never leaves a truncated picture (an older one stays
    whole; a failed write removes its partial file and re-raises). Parent
    folders are created.
    """
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.png")
    try:
        fig.savefig(tmp, **savefig_kwargs)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    finally:
        pyplot().close(fig)
    os.replace(tmp, path)
