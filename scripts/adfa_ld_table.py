"""One table of ADFA-LD detectors scored by the same evaluation: runs, ensembles, STIDE.

    python -m scripts.adfa_ld_table --run lstm=RUN_DIR [--run transformer=RUN_DIR ...] \
        [--ensemble kim2016=RUN_1x200,RUN_1x400,RUN_2x400] [--stide 6] \
        [--supervised classifier=RUN_DIR] [--out DIR]

Every run must be a trace language-model run on the same eval split (same
`data.holdout_fraction` and `data.holdout_seed`); its `scores.csv` (written at
its last evaluation) gives each trace's score. Each row is evaluated by
`jaxdl.metrics.anomaly.evaluate` on validation-normal vs attack traces, with
the threshold calibrated on the held-out normal traces.

Ensembles of runs, two combinations of the members' mean-NLL scores:
  * "average": the mean of the members' scores (Kim et al. 2016's averaging baseline).
  * "all-flag": a trace is flagged only when every member flags it at the same
    strictness, i.e. the score is the minimum over members of the member's
    score standardised by the mean and standard deviation of its held-out normal
    scores. This is our reading of Kim et al.'s ensemble, which "blends multiple
    thresholding classifiers into a single one ... to accumulate 'highly normal'
    sequences" (a trace any member finds very normal is normal); it uses
    held-out normal traces only, never attacks.

`--stide N` adds STIDE with window N fitted on the training traces, on the
same split (the data are prepared as the first run prepared them).

`--supervised NAME=RUN_DIR` adds a supervised classifier run
(experiment=adfa_ld_supervised). It trained on half of the attacks, so it is
tested on the other half only; for comparison the first --run is also
evaluated on exactly those test traces.
"""

from __future__ import annotations

import argparse
import csv
import json
import pathlib
import sys
import time

import numpy as np

from jaxdl.baselines.stide import Stide
from jaxdl.data import sequences, sources
from jaxdl.data.sequences import ATTACK, HOLDOUT
from jaxdl.metrics import anomaly
from jaxdl.runs import load_settings

GROUPS = {"holdout_normal": HOLDOUT, "test_normal": sequences.TEST_NORMAL, "attack": ATTACK}
COLUMNS = ("auc", "detection_at_1pct_fa", "detection_at_5pct_fa", "detection_at_10pct_fa",
           "false_alarm_at_90pct_detection", "false_alarm_at_threshold", "detection_at_threshold")


def read_scores(run: pathlib.Path) -> dict[str, np.ndarray]:
    """A run's scores.csv as arrays: name, group, family, score_mean, score_max_window."""
    path = run / "scores.csv"
    if not path.is_file():
        raise SystemExit(f"{path} not found: is {run} a finished trace language-model run?")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return {
        "name": np.array([r["name"] for r in rows]),
        "group": np.array([GROUPS[r["group"]] for r in rows]),
        "family": np.array([r["family"] for r in rows]),
        "score_mean": np.array([float(r["score_mean"]) for r in rows]),
        "score_max_window": np.array([float(r["score_max_window"]) for r in rows]),
    }


def wall_time(run: pathlib.Path) -> float | None:
    path = run / "results.json"
    return json.loads(path.read_text()).get("wall_time_s") if path.is_file() else None


def evaluate(score: np.ndarray, table: dict[str, np.ndarray], false_alarm_rate: float) -> dict[str, float]:
    holdout, test = table["group"] == HOLDOUT, table["group"] != HOLDOUT
    families = np.unique(table["family"][test])
    ids = np.searchsorted(families, table["family"][test])
    report = anomaly.evaluate(score[test], (table["group"][test] == ATTACK).astype(int), holdout_scores=score[holdout],
                              false_alarm_rate=false_alarm_rate, families=ids, family_names=list(families))
    return report.metrics


def standardised(score: np.ndarray, group: np.ndarray) -> np.ndarray:
    normal = score[group == HOLDOUT]
    return (score - normal.mean()) / normal.std()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", action="append", default=[], metavar="NAME=RUN_DIR")
    parser.add_argument("--ensemble", action="append", default=[], metavar="NAME=RUN,RUN,...")
    parser.add_argument("--stide", type=int, default=None, metavar="N", help="add STIDE with window length N")
    parser.add_argument("--supervised", action="append", default=[], metavar="NAME=RUN_DIR")
    parser.add_argument("--false-alarm-rate", type=float, default=0.05, help="threshold target on held-out normals")
    parser.add_argument("--out", type=pathlib.Path, default=None, help="also write the table (markdown) and JSON here")
    args = parser.parse_args(argv)

    rows: list[tuple[str, dict[str, float], str]] = []
    reference = None

    def check_split(table, where):
        nonlocal reference
        if reference is None:
            reference = table
        elif not (np.array_equal(reference["name"], table["name"]) and np.array_equal(reference["group"], table["group"])):
            raise SystemExit(f"{where} was evaluated on a different split (names or held-out traces differ).")

    first_run = None
    for spec in args.run:
        name, run = spec.split("=", 1)
        run = pathlib.Path(run)
        first_run = first_run or run
        table = read_scores(run)
        check_split(table, run)
        seconds = wall_time(run)
        rows.append((name, evaluate(table["score_mean"], table, args.false_alarm_rate),
                     f"{seconds / 60:.1f} min train+eval" if seconds else ""))
    for spec in args.ensemble:
        name, runs = spec.split("=", 1)
        tables = [read_scores(pathlib.Path(r)) for r in runs.split(",")]
        first_run = first_run or pathlib.Path(runs.split(",")[0])
        for r, t in zip(runs.split(","), tables, strict=True):
            check_split(t, r)
        table = tables[0]
        average = np.mean([t["score_mean"] for t in tables], axis=0)
        all_flag = np.min([standardised(t["score_mean"], t["group"]) for t in tables], axis=0)
        seconds = sum(wall_time(pathlib.Path(r)) or 0.0 for r in runs.split(","))
        note = f"{len(tables)} runs, {seconds / 60:.1f} min in all"
        rows.append((f"{name} average", evaluate(average, table, args.false_alarm_rate), note))
        rows.append((f"{name} all-flag", evaluate(all_flag, table, args.false_alarm_rate), note))
    if args.stide is not None:
        if first_run is None:
            raise SystemExit("--stide needs at least one --run or --ensemble to take the data settings from.")
        data = load_settings(first_run)["data"]
        train, held = sources.load_splits(data["name"], [data["train_split"], data["eval_split"]],
                                          data_dir=data.get("data_dir"), manual_dir=data.get("manual_dir"))
        group = sequences.holdout_groups(held["label"], data["holdout_fraction"], data["holdout_seed"])
        names = np.array([n.decode() for n in held["name"]])
        families = np.array([data["family_names"][f] for f in held["family"]])
        table = {"name": names, "group": group, "family": families}
        check_split(table, "the prepared data")
        start = time.perf_counter()
        score = Stide(args.stide).fit(list(train["syscalls"])).score(list(held["syscalls"]))
        seconds = time.perf_counter() - start
        rows.append((f"STIDE n={args.stide}", evaluate(score, table, args.false_alarm_rate),
                     f"{seconds:.1f} s fit+score"))

    for spec in args.supervised:
        name, run = spec.split("=", 1)
        table = read_scores(pathlib.Path(run))
        seconds = wall_time(pathlib.Path(run))
        attacks = int((table["group"] == ATTACK).sum())
        rows.append((f"{name} (SUPERVISED)", evaluate(table["score_mean"], table, args.false_alarm_rate),
                     f"{seconds / 60:.1f} min; tested on the {attacks} attacks it did not see"))
        if reference is not None and rows:
            keep = np.isin(reference["name"], table["name"])
            same = {k: v[keep] for k, v in reference.items()}
            first_name = rows[0][0]
            first_scores = read_scores(pathlib.Path(args.run[0].split("=", 1)[1]))["score_mean"][keep] if args.run else None
            if first_scores is not None:
                rows.append((f"{first_name} on the same test traces", evaluate(first_scores, same, args.false_alarm_rate),
                             "for comparison with the supervised row"))

    header = "| detector | AUC | DR@1%FA | DR@5%FA | DR@10%FA | FA@90%DR | FA / DR at threshold | time |"
    lines = [header, "|" + " --- |" * 8]
    for name, m, note in rows:
        lines.append(
            f"| {name} | {m['auc']:.3f} | {m['detection_at_1pct_fa']:.3f} | {m['detection_at_5pct_fa']:.3f} | "
            f"{m['detection_at_10pct_fa']:.3f} | {m['false_alarm_at_90pct_detection']:.3f} | "
            f"{m['false_alarm_at_threshold']:.3f} / {m['detection_at_threshold']:.3f} | {note} |"
        )
    text = "\n".join(lines)
    print(text)
    print(f"\nthreshold: at most {args.false_alarm_rate:.0%} of the held-out normal traces flagged; "
          "DR = detection rate (attacks flagged), FA = false-alarm rate (test-normal traces flagged).")
    families = sorted({k.split("/", 1)[1] for _, m, _ in rows for k in m if k.startswith("family_detection/")})
    if families:
        print("\nper-family detection rate at the threshold:")
        print("| detector | " + " | ".join(families) + " |")
        print("|" + " --- |" * (len(families) + 1))
        for name, m, _ in rows:
            print(f"| {name} | " + " | ".join(f"{m.get('family_detection/' + f, float('nan')):.3f}" for f in families) + " |")
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "table.md").write_text(text + "\n")
        (args.out / "table.json").write_text(json.dumps({n: m for n, m, _ in rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
