"""Anomaly-score evaluation on hand-made scores with known answers."""

import numpy as np
import pytest

from jaxdl.metrics import anomaly


def test_auc_of_hand_made_scores():
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    assert anomaly.roc_auc(np.array([1, 2, 3, 4, 5, 6, 7, 8.0]), labels) == 1.0
    assert anomaly.roc_auc(np.array([8, 7, 6, 5, 4, 3, 2, 1.0]), labels) == 0.0
    # attacks 3, 5, 6, 8 against normals 1, 2, 4, 7: 13 of the 16 pairs are ordered correctly
    assert anomaly.roc_auc(np.array([1, 2, 4, 7, 3, 5, 6, 8.0]), labels) == pytest.approx(12 / 16)
    assert anomaly.roc_auc(np.array([1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]), labels) == 0.5  # ties count half


def test_detection_and_false_alarm_readings_of_the_curve():
    normal = np.arange(100, dtype=float)  # 0..99
    attack = np.arange(95, 195, dtype=float)  # 95..194: 5 attacks tie with or fall below the top normals
    scores = np.concatenate([normal, attack])
    labels = np.r_[np.zeros(100), np.ones(100)]
    fpr, tpr, _ = anomaly.roc_curve(scores, labels)
    # flagging >= 100 catches 95 attacks and no normal; >= 99 adds one normal (1%) and one attack
    assert anomaly.detection_at_false_alarm(fpr, tpr, 0.0) == pytest.approx(0.95)
    assert anomaly.detection_at_false_alarm(fpr, tpr, 0.01) == pytest.approx(0.96)
    assert anomaly.detection_at_false_alarm(fpr, tpr, 0.05) == pytest.approx(1.0)
    assert anomaly.false_alarm_at_detection(fpr, tpr, 0.90) == 0.0
    assert anomaly.false_alarm_at_detection(fpr, tpr, 1.0) == pytest.approx(0.05)


def test_threshold_is_calibrated_on_normal_scores_only():
    normal = np.arange(1, 101, dtype=float)  # 1..100
    t = anomaly.calibrate_threshold(normal, 0.05)
    assert t == 95.0 and (normal > t).mean() == 0.05
    assert anomaly.calibrate_threshold(normal, 0.0) == 100.0
    assert anomaly.calibrate_threshold(normal, 0.019) == 99.0  # 1.9% of 100: one may exceed, not two
    with pytest.raises(ValueError, match="held-out normal"):
        anomaly.calibrate_threshold(np.array([]), 0.05)


def test_evaluate_reports_every_metric_and_per_family_rates():
    holdout = np.linspace(0.0, 1.0, 101)  # threshold at 5%: 0.95
    scores = np.array([0.1, 0.5, 0.97, 0.2, 2.0, 3.0, 0.3, 5.0])
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    families = np.array([0, 0, 0, 0, 1, 1, 2, 2])
    report = anomaly.evaluate(scores, labels, holdout_scores=holdout, false_alarm_rate=0.05,
                              families=families, family_names=["normal", "Adduser", "Web_Shell"])
    m = report.metrics
    assert m["threshold"] == pytest.approx(0.95)
    assert m["false_alarm_at_threshold"] == 0.25 and m["detection_at_threshold"] == 0.75
    assert m["family_detection/Adduser"] == 1.0 and m["family_detection/Web_Shell"] == 0.5
    assert m["auc"] == pytest.approx(14 / 16)
    assert {"detection_at_1pct_fa", "detection_at_5pct_fa", "detection_at_10pct_fa",
            "false_alarm_at_90pct_detection"} <= set(m)
    assert report.fpr[0] == 0.0 and report.tpr[-1] == 1.0


def test_one_class_test_set_is_refused():
    with pytest.raises(ValueError, match="both normal"):
        anomaly.roc_auc(np.array([1.0, 2.0]), np.array([1, 1]))


def test_roc_png_is_written(tmp_path):
    fpr, tpr, _ = anomaly.roc_curve(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1]))
    path = tmp_path / "roc" / "roc.png"
    anomaly.plot_roc(path, {"model (AUC 0.75)": (fpr, tpr)}, marks={"threshold": (0.5, 0.5)})
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
