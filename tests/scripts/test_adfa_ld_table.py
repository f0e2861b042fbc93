"""scripts.adfa_ld_table on hand-written scores.csv files: rows, ensembles, split checks."""

import csv
import json

import numpy as np
import pytest

from scripts import adfa_ld_table


def write_run(path, scores, groups, families, seconds=60.0):
    path.mkdir(parents=True)
    with open(path / "scores.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["name", "group", "family", "score_mean", "score_max_window", "flagged"])
        for i, (s, g, fam) in enumerate(zip(scores, groups, families, strict=True)):
            writer.writerow([f"t{i}", g, fam, s, s, ""])
    (path / "results.json").write_text(json.dumps({"wall_time_s": seconds}))


GROUPS = ["holdout_normal"] * 20 + ["test_normal"] * 20 + ["attack"] * 10
FAMILIES = ["normal"] * 40 + ["Adduser"] * 5 + ["Web_Shell"] * 5


def test_rows_for_runs_and_ensembles(tmp_path, capsys):
    rng = np.random.default_rng(0)
    a = np.r_[rng.normal(0, 1, 40), rng.normal(3, 1, 10)]
    b = np.r_[rng.normal(0, 1, 40), rng.normal(2, 1, 10)]
    write_run(tmp_path / "a", a, GROUPS, FAMILIES)
    write_run(tmp_path / "b", b, GROUPS, FAMILIES)
    assert adfa_ld_table.main(["--run", f"a={tmp_path / 'a'}", "--ensemble", f"e={tmp_path / 'a'},{tmp_path / 'b'}",
                               "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "| a |" in out and "| e average |" in out and "| e all-flag |" in out and "Web_Shell" in out
    table = json.loads((tmp_path / "out" / "table.json").read_text())
    test = np.array(GROUPS) != "holdout_normal"
    from sklearn.metrics import roc_auc_score

    expected = roc_auc_score(np.array(GROUPS)[test] == "attack", ((a + b) / 2)[test])
    assert table["e average"]["auc"] == pytest.approx(expected)


def test_runs_on_different_splits_are_refused(tmp_path):
    write_run(tmp_path / "a", np.arange(50.0), GROUPS, FAMILIES)
    write_run(tmp_path / "b", np.arange(50.0), GROUPS[::-1], FAMILIES)
    with pytest.raises(SystemExit, match="different split"):
        adfa_ld_table.main(["--run", f"a={tmp_path / 'a'}", "--run", f"b={tmp_path / 'b'}"])
