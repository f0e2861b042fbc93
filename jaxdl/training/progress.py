"""What the training loop remembers across a resume, and its guard against non-finite metrics."""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from jaxdl.errors import UserError
from jaxdl.training.checkpoint import Checkpointer


class NonFiniteMetricError(UserError, FloatingPointError):
    """A logged or final metric became NaN or infinite; the run stopped and its checkpoints are kept."""


@dataclasses.dataclass
class Progress:
    """What the loop must remember across a resume; saved as checkpoint meta."""

    best: float | None = None
    best_step: int | None = None
    evals_since_best: int = 0
    elapsed_s: float = 0.0
    stopped_early: bool = False
    stop_reason: str | None = None  # why it stopped before its planned length: "early_stopping" or a callback's reason
    last_eval: dict[str, float] = dataclasses.field(default_factory=dict)

    def improved(self, value: float, mode: str, min_delta: float) -> bool:
        """Whether `value` beats the best so far by more than `min_delta` ("min": lower is better, "max": higher)."""
        if self.best is None:
            return True
        return value < self.best - min_delta if mode == "min" else value > self.best + min_delta


def check_finite(
    metrics: Mapping[str, Any], step: int, checkpointer: Checkpointer | None, *, when: str = "training stopped"
) -> None:
    """Raises `NonFiniteMetricError` naming each NaN/Inf float in `metrics` and the last good checkpoint."""
    bad = {k: v for k, v in metrics.items() if isinstance(v, (float, np.floating)) and not math.isfinite(v)}
    if not bad:
        return
    last = checkpointer.latest_step() if checkpointer is not None else None
    where = f"the last good checkpoint is step {last} in {checkpointer.directory}" if last is not None else "no checkpoint was saved"
    raise NonFiniteMetricError(
        f"{', '.join(f'{k}={float(v)}' for k, v in bad.items())} at step {step}; {when} and {where}. "
        "Lower optimizer.learning_rate or set optimizer.grad_clip_norm."
    )


def checkpoint_meta(progress: Progress, t0: float) -> dict[str, Any]:
    """The checkpoint meta of `progress`, its elapsed time brought up to now (`t0`: this segment's start, perf_counter s)."""
    snapshot = dataclasses.replace(progress, elapsed_s=progress.elapsed_s + time.perf_counter() - t0)
    return {"progress": dataclasses.asdict(snapshot)}
