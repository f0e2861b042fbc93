"""Evaluation of anomaly scores: ROC, detection at fixed false-alarm rates, a calibrated threshold.

Shared by every detector that gives each example a score where higher means
more anomalous (a language model's negative log-likelihood, an autoencoder's
reconstruction error, STIDE's mismatch rate). Attacks are the positive class.

Protocol (the one host-intrusion papers report, e.g. Kim et al. 2016,
arXiv:1611.01726, on ADFA-LD):

* ROC over the test set (normal vs attack): area under the curve, the
  detection rate (true-positive rate) reached at 1%, 5% and 10% false alarms,
  and the false-alarm rate needed for 90% detection. These read the curve and
  describe the score; they pick no operating point.
* The operating threshold is calibrated on held-out *normal* examples only
  (never on attacks): the smallest score that at most `false_alarm_rate` of
  them exceed. Its false-alarm and detection rates on the test set, and the
  detection rate of each attack family, are then reported.

ROC and AUC come from scikit-learn (`roc_curve`, `roc_auc_score`); ties in the
scores count as half (the Mann-Whitney statistic).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence

import numpy as np

from jaxdl.viz.figures import pyplot, save_figure

FALSE_ALARM_RATES = (0.01, 0.05, 0.10)
DETECTION_RATE = 0.90


@dataclasses.dataclass(frozen=True)
class AnomalyReport:
    """What `evaluate` computed.

    Attributes:
      metrics: flat dict of floats (see `evaluate`).
      fpr, tpr: float64 [K] the test ROC curve (false-alarm rate, detection rate).
      threshold: the calibrated threshold; an example is flagged when score > threshold.
    """

    metrics: dict[str, float]
    fpr: np.ndarray
    tpr: np.ndarray
    threshold: float


def _check(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    scores, labels = np.asarray(scores, np.float64), np.asarray(labels).astype(bool)
    if scores.shape != labels.shape or scores.ndim != 1:
        raise ValueError(f"scores {scores.shape} and labels {labels.shape} must be matching 1-D arrays.")
    if not np.isfinite(scores).all():
        raise ValueError("Anomaly scores must be finite.")
    if labels.all() or not labels.any():
        raise ValueError("The test set needs both normal (label 0) and attack (label 1) examples for a ROC curve.")
    return scores, labels


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve of `scores` (higher = attack) against `labels` (1 = attack)."""
    from sklearn import metrics as skm  # here, not at import: scikit-learn and SciPy take ~0.8 s to import

    scores, labels = _check(scores, labels)
    return float(skm.roc_auc_score(labels, scores))


def roc_curve(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(false-alarm rate [K], detection rate [K], thresholds [K]), thresholds decreasing; flag when score >= threshold."""
    from sklearn import metrics as skm

    scores, labels = _check(scores, labels)
    fpr, tpr, thresholds = skm.roc_curve(labels, scores, drop_intermediate=False)
    return fpr, tpr, thresholds


def detection_at_false_alarm(fpr: np.ndarray, tpr: np.ndarray, rate: float) -> float:
    """Highest detection rate of any threshold whose false-alarm rate is at most `rate`."""
    return float(np.max(tpr[fpr <= rate + 1e-12]))


def false_alarm_at_detection(fpr: np.ndarray, tpr: np.ndarray, rate: float) -> float:
    """Lowest false-alarm rate of any threshold whose detection rate is at least `rate`."""
    return float(np.min(fpr[tpr >= rate - 1e-12]))


def calibrate_threshold(normal_scores: np.ndarray, false_alarm_rate: float) -> float:
    """The smallest threshold t such that at most `false_alarm_rate` of `normal_scores` are > t.

    Args:
      normal_scores: [N] scores of held-out normal examples (no attacks).
      false_alarm_rate: target fraction of normal examples flagged, in [0, 1).

    Raises:
      ValueError: empty scores or a rate outside [0, 1).
    """
    normal_scores = np.sort(np.asarray(normal_scores, np.float64))
    if normal_scores.size == 0:
        raise ValueError("Cannot calibrate a threshold without held-out normal scores.")
    if not 0.0 <= false_alarm_rate < 1.0:
        raise ValueError(f"false_alarm_rate={false_alarm_rate} must be in [0, 1).")
    allowed = int(np.floor(false_alarm_rate * normal_scores.size + 1e-9))  # examples that may exceed t
    return float(normal_scores[normal_scores.size - 1 - allowed])


def evaluate(
    scores: np.ndarray,
    labels: np.ndarray,
    *,
    holdout_scores: np.ndarray,
    false_alarm_rate: float = 0.05,
    families: np.ndarray | None = None,
    family_names: Sequence[str] | None = None,
) -> AnomalyReport:
    """Scores a detector on a test set, with a threshold calibrated on held-out normals.

    Args:
      scores: [N] test scores, higher = more anomalous.
      labels: [N] 1 for attack, 0 for normal.
      holdout_scores: [M] scores of held-out normal examples (disjoint from the test set).
      false_alarm_rate: target false-alarm rate of the calibrated threshold.
      families: optional int [N] attack family per example (ignored for normals).
      family_names: names of the family ids.

    Returns:
      An AnomalyReport whose metrics are: auc; detection_at_{1,5,10}pct_fa;
      false_alarm_at_90pct_detection; threshold; false_alarm_at_threshold and
      detection_at_threshold (test rates of the calibrated threshold); and
      family_detection/<name> per attack family present.
    """
    scores, labels = _check(scores, labels)
    fpr, tpr, _ = roc_curve(scores, labels)
    threshold = calibrate_threshold(holdout_scores, false_alarm_rate)
    flagged = scores > threshold
    metrics = {"auc": roc_auc(scores, labels)}
    for rate in FALSE_ALARM_RATES:
        metrics[f"detection_at_{round(rate * 100)}pct_fa"] = detection_at_false_alarm(fpr, tpr, rate)
    metrics[f"false_alarm_at_{round(DETECTION_RATE * 100)}pct_detection"] = false_alarm_at_detection(fpr, tpr, DETECTION_RATE)
    metrics["threshold"] = threshold
    metrics["false_alarm_at_threshold"] = float(flagged[~labels].mean())
    metrics["detection_at_threshold"] = float(flagged[labels].mean())
    if families is not None:
        families = np.asarray(families)
        for family in np.unique(families[labels]):
            name = family_names[family] if family_names is not None else str(family)
            metrics[f"family_detection/{name}"] = float(flagged[labels & (families == family)].mean())
    return AnomalyReport(metrics=metrics, fpr=fpr, tpr=tpr, threshold=threshold)


def plot_roc(
    path: os.PathLike | str,
    curves: Mapping[str, tuple[np.ndarray, np.ndarray]],
    *,
    title: str = "ROC: attack vs normal",
    marks: Mapping[str, tuple[float, float]] | None = None,
) -> None:
    """Draws ROC curves (false-alarm rate on a log axis, detection rate) into a PNG.

    Args:
      path: output file (written atomically).
      curves: label -> (fpr [K], tpr [K]); the label should carry the AUC.
      marks: label -> (fpr, tpr) operating points drawn as dots (e.g. the calibrated threshold).
    """
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 5), dpi=100)
    for label, (fpr, tpr) in curves.items():
        ax.plot(np.maximum(fpr, 1e-4), tpr, label=label)
    for label, (x, y) in (marks or {}).items():
        ax.plot([max(x, 1e-4)], [y], "o", label=label)
    ax.set_xscale("log")
    ax.set_xlim(1e-3, 1.0)
    ax.set_ylim(0.0, 1.01)
    ax.set_xlabel("false-alarm rate (normal traces flagged)")
    ax.set_ylabel("detection rate (attacks flagged)")
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)
