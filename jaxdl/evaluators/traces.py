"""Anomaly scores of system-call traces and their report: ROC on test traces, a threshold from normal ones.

A trace detector's evaluation split (see `jaxdl.data.sequences.trace_examples`)
holds windows of held-out normal traces (group HOLDOUT), which calibrate the
alarm threshold, and of test traces (TEST_NORMAL and ATTACK), on which the
report is made. A task's eval step adds, per window, a score sum and a count
of scored calls (`window_sums`); here they become per-trace scores
(`trace_scores`): "mean" (the sum over the trace's windows divided by its
scored calls; for a language model the NLL per call in nats, Kim et al. 2016,
arXiv:1611.01726) and "max_window" (the largest per-call mean of any window).
`TraceEvaluator` turns the scores into `jaxdl.metrics.anomaly.evaluate`'s
metrics (ROC AUC, detection at fixed false-alarm rates, per-family rates)
and writes `roc.png`, `scores.csv` and `anomaly.json` (threshold, step).

`score_traces` scores raw traces with a trained language model outside a
run (`scripts.detect`).

Shapes: W windows, K traces, T calls per window.
"""

from __future__ import annotations

import csv
import functools
import json
import pathlib
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxdl.data.sequences import ATTACK, HOLDOUT, TEST_NORMAL, trace_windows
from jaxdl.metrics import anomaly

SCORES = ("mean", "max_window")
Arrays = dict[str, np.ndarray]


class TraceTable(NamedTuple):
    """Host-side description of an anomaly-evaluation split of windows.

    Attributes:
      window_trace: int [W] trace of each window.
      group: int [K] HOLDOUT, TEST_NORMAL or ATTACK per trace.
      family: int [K] attack family id per trace (0 = normal).
      names: [K] trace names ("" when unknown).
    """

    window_trace: np.ndarray
    group: np.ndarray
    family: np.ndarray
    names: np.ndarray

    @classmethod
    def from_windows(cls, arrays: Mapping[str, np.ndarray], names: np.ndarray | None) -> TraceTable:
        trace = np.asarray(arrays["trace"])
        first = np.unique(trace, return_index=True)[1]  # first window of each trace
        if not np.array_equal(np.unique(trace), np.arange(len(first))):
            raise ValueError("Eval windows must number their traces 0..K-1 (a limit may not cut a trace id out).")
        family = np.asarray(arrays["family"])[first] if "family" in arrays else np.zeros(len(first), int)
        names = np.asarray(names)[first] if names is not None else np.full(len(first), "", object)
        return cls(trace, np.asarray(arrays["group"])[first], family, names)


def prepare(train: Arrays, eval: Arrays) -> tuple[Arrays, Arrays, TraceTable | None]:  # noqa: A002 (the split's role)
    """A trace detector's (train, eval, context): on a trace split (windows with `trace` and `group`) the eval
    split without its names (they cannot be batched) and its `TraceTable`; on other data (text) the splits as
    they are and no context. A task's `prepare` returns `Prepared(*prepare(train, eval))`."""
    if "trace" not in eval or "group" not in eval:
        return train, eval, None
    eval = dict(eval)
    names = eval.pop("name", None)
    return train, eval, TraceTable.from_windows(eval, names)


def window_sums(table: TraceTable, batch: Mapping[str, jax.Array], score: jax.Array, count: jax.Array) -> dict:
    """Per-window totals of one eval batch, to be summed over batches.

    Args:
      table: the split's trace table (its window count W sizes the totals).
      batch: holds `index` int32 [B] (the window) and `mask` bool [B].
      score: float [B] each window's summed score (e.g. NLL in nats over its scored calls).
      count: float [B] each window's scored calls.

    Returns:
      "window_nll_sum" and "window_count", float32 [W]; loader padding falls outside and is dropped.
    """
    num = len(table.window_trace)
    slot = jnp.where(batch["mask"], batch["index"], num)
    return {
        "window_nll_sum": jnp.zeros(num).at[slot].add(score, mode="drop"),
        "window_count": jnp.zeros(num).at[slot].add(count, mode="drop"),
    }


def trace_scores(window_nll_sum: np.ndarray, window_count: np.ndarray, window_trace: np.ndarray) -> dict[str, np.ndarray]:
    """Per-trace anomaly scores from per-window NLL sums.

    Args:
      window_nll_sum: [W] summed NLL (nats) of each window's scored calls.
      window_count: [W] scored calls per window.
      window_trace: int [W] trace of each window, 0..K-1.

    Returns:
      "mean": [K] NLL per call over the whole trace; "max_window": [K] the
      largest per-call NLL of any window of the trace.
    """
    num = int(window_trace.max()) + 1
    total = np.bincount(window_trace, weights=window_nll_sum, minlength=num)
    count = np.bincount(window_trace, weights=window_count, minlength=num)
    per_window = np.where(window_count > 0, window_nll_sum / np.maximum(window_count, 1), -np.inf)
    worst = np.full(num, -np.inf)
    np.maximum.at(worst, window_trace, per_window)
    return {"mean": total / np.maximum(count, 1), "max_window": worst}


class TraceEvaluator:
    """The anomaly report of a trace detector's evaluation.

    Args:
      score: the anomaly score whose threshold and per-family rates are
        reported: "mean" (per call over the whole trace) or "max_window".
      false_alarm_rate: target false-alarm rate of the threshold calibrated on
        held-out normal traces.
      family_names: attack family id -> name, for the per-family metrics.
    """

    def __init__(self, score: str = "mean", false_alarm_rate: float = 0.05, family_names: Sequence[str] | None = None):
        if score not in SCORES:
            raise ValueError(f"task.score={score!r}; choose one of {SCORES}.")
        if not 0.0 <= false_alarm_rate < 1.0:
            raise ValueError(f"task.false_alarm_rate={false_alarm_rate} must be in [0, 1).")
        self.score = score
        self.false_alarm_rate = false_alarm_rate
        self.family_names = tuple(family_names) if family_names is not None else None

    def metrics(self, totals: Mapping[str, np.ndarray], table: TraceTable) -> tuple[dict[str, float], dict[str, Any]]:
        """Trace scores and `jaxdl.metrics.anomaly.evaluate` on the test traces.

        Args:
          totals: the evaluation's summed outputs, with `window_nll_sum` and `window_count` [W].
          table: the split's trace table.

        Returns:
          (metrics, report): the chosen score's metrics and `auc_<other score>`
          (empty when a truncated split lacks a class); report holds "scores"
          (per-trace arrays by score name) and "reports" (`AnomalyReport` by
          score name, None when a class is missing).
        """
        window_nll_sum, window_count = np.asarray(totals["window_nll_sum"]), np.asarray(totals["window_count"])
        scores = trace_scores(window_nll_sum, window_count, table.window_trace)
        holdout, test = table.group == HOLDOUT, table.group != HOLDOUT
        labels = (table.group == ATTACK).astype(int)
        if not holdout.any() or len(np.unique(labels[test])) < 2:
            return {}, {"scores": scores, "reports": None}  # a truncated split (debug runs) may lack a class
        reports = {
            name: anomaly.evaluate(
                s[test], labels[test], holdout_scores=s[holdout], false_alarm_rate=self.false_alarm_rate,
                families=table.family[test], family_names=self.family_names,
            )
            for name, s in scores.items()
        }
        out = dict(reports[self.score].metrics)
        other = "max_window" if self.score == "mean" else "mean"
        out[f"auc_{other}"] = reports[other].metrics["auc"]
        return out, {"scores": scores, "reports": reports}

    def summarize(self, totals: Mapping[str, np.ndarray], table: TraceTable | None) -> dict[str, float]:
        """The metrics of `metrics` for an evaluation on a trace split; {} on other data (no table or no
        window totals)."""
        if table is None or "window_nll_sum" not in totals:
            return {}
        return self.metrics(totals, table)[0]

    def write_report(
        self, run_dir: pathlib.Path, step: int, totals: Mapping[str, np.ndarray], table: TraceTable | None
    ) -> None:
        """`write`s the report of an evaluation on a trace split (nothing on other data)."""
        if table is not None and "window_nll_sum" in totals:
            self.write(run_dir, step, table, self.metrics(totals, table)[1])

    def write(self, run_dir: pathlib.Path, step: int, table: TraceTable, report: Mapping[str, Any]) -> None:
        """Rewrites `scores.csv` (every trace's scores and flag) and, when the split has both classes,
        `roc.png` and `anomaly.json` (threshold, step, metrics) in `run_dir`."""
        run_dir = pathlib.Path(run_dir)
        scores, reports = report["scores"], report["reports"]
        threshold = reports[self.score].threshold if reports else None
        with open(run_dir / "scores.csv.tmp", "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["name", "group", "family", "score_mean", "score_max_window", "flagged"])
            groups = {HOLDOUT: "holdout_normal", TEST_NORMAL: "test_normal", ATTACK: "attack"}
            for k in range(len(table.group)):
                family = self.family_names[table.family[k]] if self.family_names else int(table.family[k])
                flagged = "" if threshold is None else int(scores[self.score][k] > threshold)
                writer.writerow([table.names[k], groups[int(table.group[k])], family,
                                 f"{scores['mean'][k]:.6f}", f"{scores['max_window'][k]:.6f}", flagged])
        (run_dir / "scores.csv.tmp").replace(run_dir / "scores.csv")
        if not reports:
            return
        anomaly.plot_roc(
            run_dir / "roc.png",
            {f"{name} NLL (AUC {r.metrics['auc']:.3f})": (r.fpr, r.tpr) for name, r in reports.items()},
            title=f"ADFA-LD test traces, step {step}",
            marks={f"threshold ({self.score}, {self.false_alarm_rate:.0%} held-out FA)": (
                reports[self.score].metrics["false_alarm_at_threshold"],
                reports[self.score].metrics["detection_at_threshold"])},
        )
        summary = {"step": step, "score": self.score, "threshold": threshold, "false_alarm_rate": self.false_alarm_rate,
                   "metrics": reports[self.score].metrics}
        (run_dir / "anomaly.json.tmp").write_text(json.dumps(summary, indent=2) + "\n")
        (run_dir / "anomaly.json.tmp").replace(run_dir / "anomaly.json")


def score_traces(
    model, params, traces: Sequence[np.ndarray], *, seq_len: int, context: int, batch_size: int = 64
) -> dict[str, np.ndarray]:
    """Anomaly scores of traces under a trained language model (host-side, one device).

    Args:
      model: the token model (`jaxdl.models.contract.TokenModel`); params: its parameters.
      traces: K traces of system-call numbers, each int [L].
      seq_len, context: the evaluation windows of the run (data.seq_len, data.eval_context).
      batch_size: windows per forward pass.

    Returns:
      "mean" and "max_window" float64 [K] (nats per call), as in evaluation.
    """
    windows = trace_windows(traces, seq_len, context)
    count = len(windows["tokens"])
    pad = -count % batch_size
    sums, counts = [], []
    for start in range(0, count + pad, batch_size):
        chunk = {k: windows[k][start : start + batch_size] for k in ("tokens", "targets", "token_mask")}
        valid = len(chunk["tokens"])
        if valid < batch_size:  # one compiled shape: pad the last chunk
            chunk = {k: np.concatenate([v, np.zeros((batch_size - valid, *v.shape[1:]), v.dtype)]) for k, v in chunk.items()}
        s, c = _window_nll(model, params, chunk)
        sums.append(np.asarray(s)[:valid])
        counts.append(np.asarray(c)[:valid])
    return trace_scores(np.concatenate(sums), np.concatenate(counts), windows["trace"])


@functools.partial(jax.jit, static_argnums=0)
def _window_nll(model, params, chunk: Mapping[str, jax.Array]) -> tuple[jax.Array, jax.Array]:
    """Per-window summed NLL [B] and scored positions [B]."""
    logits = model.apply({"params": params}, chunk["tokens"], train=False)
    nll = optax.softmax_cross_entropy_with_integer_labels(logits, chunk["targets"])
    weights = chunk["token_mask"].astype(jnp.float32)
    return jnp.sum(nll * weights, 1), weights.sum(1)
