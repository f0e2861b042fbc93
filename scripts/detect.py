"""Score system-call traces with a trained language model and flag the anomalous ones.

    python -m scripts.detect --run RUN_DIR TRACE_FILE [TRACE_FILE ...]

A trace file holds whitespace-separated system-call numbers (ADFA-LD's
format). Each trace's score is its mean negative log-likelihood per call in
nats (and, beside it, the worst window's), computed with the run's model and
evaluation windows; a trace is flagged when the run's score exceeds the
threshold its last evaluation calibrated on held-out normal traces
(`RUN_DIR/anomaly.json`; `--threshold` overrides it). The checkpoint of that
same evaluation is restored.

Prints one tab-separated line per trace: file, calls, score_mean,
score_max_window, flagged. Exit status: 0, or 2 when a file is missing or
malformed (the message names the file and line).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

import numpy as np

from jaxdl.data.adfa_ld import read_trace
from jaxdl.data.raw_files import RawFileError
from jaxdl.evaluators.traces import score_traces
from jaxdl.runs import load_settings, restore


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", required=True, help="a finished trace language-model run's folder")
    parser.add_argument("traces", nargs="+", help="trace files to score")
    parser.add_argument("--threshold", type=float, default=None, help="flag above this score (default: the run's)")
    parser.add_argument("--batch-size", type=int, default=64, help="windows per forward pass")
    args = parser.parse_args(argv)

    run = pathlib.Path(args.run)
    summary_path = run / "anomaly.json"
    if not summary_path.is_file():
        print(f"{summary_path} not found: the run has no calibrated threshold (was it trained on traces?).", file=sys.stderr)
        return 2
    summary = json.loads(summary_path.read_text())
    settings = load_settings(run)
    data = settings["data"]
    try:
        traces = [read_trace(path, max_call=data["vocab_size"] - 1) for path in args.traces]
    except RawFileError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    restored = restore(run, {"tokens": np.zeros((1, data["seq_len"]), np.int32)}, step=summary["step"])
    scores = score_traces(
        restored.task.model, restored.state.params, traces, seq_len=data["seq_len"],
        context=data.get("eval_context", 0),
        batch_size=args.batch_size,
    )
    threshold = summary["threshold"] if args.threshold is None else args.threshold
    print(f"# run {run}, step {restored.step}, score {summary['score']} (nats per call), threshold {threshold:.4f}")
    print("file\tcalls\tscore_mean\tscore_max_window\tflagged")
    for path, trace, mean, worst in zip(args.traces, traces, scores["mean"], scores["max_window"], strict=True):
        flagged = (mean if summary["score"] == "mean" else worst) > threshold
        print(f"{path}\t{len(trace)}\t{mean:.4f}\t{worst:.4f}\t{int(flagged)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
