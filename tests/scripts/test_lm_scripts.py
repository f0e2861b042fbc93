"""scripts.sample and scripts.detect on tiny runs written here (manifest + checkpoint), no training."""

import json
import re

import numpy as np
import pytest

from jaxdl.build import DataSpec
from jaxdl.runs import restore
from scripts import detect, sample
from tests.helpers import compose_with, run_settings, write_run


def make_run(run, overrides: list[str], spec: DataSpec, example: dict) -> None:
    """Writes manifest.json and an initial checkpoint, as a finished run would have them."""
    write_run(run, run_settings(compose_with(*overrides)), spec, example)


@pytest.fixture
def text_run(tmp_path):
    run = tmp_path / "text_run"
    overrides = ["experiment=shakespeare_char_cpu", "model.num_layers=1", "model.num_heads=2", "model.embed_dim=16",
                 "data.seq_len=16"]
    vocabulary = compose_with(*overrides).data.vocabulary
    spec = DataSpec("tiny_shakespeare", vocab_size=len(vocabulary), vocabulary=vocabulary, seq_len=16)
    make_run(run, overrides, spec, {"tokens": np.zeros((1, 16), np.int32)})
    return run


def test_sample_is_reproducible_from_its_seed(text_run, capsys):
    args = ["--run", str(text_run), "--prompt", "ROMEO:", "--max-new-tokens", "20", "--seed", "3"]
    assert sample.main(args) == 0
    first = capsys.readouterr().out
    assert sample.main(args) == 0
    assert capsys.readouterr().out == first and first.startswith("ROMEO:") and len(first.rstrip("\n")) >= 26
    assert sample.main(args[:-1] + ["4"]) == 0
    assert capsys.readouterr().out != first


def test_sample_refuses_characters_outside_the_vocabulary(text_run, capsys):
    assert sample.main(["--run", str(text_run), "--prompt", "naïve"]) == 2
    assert "not in the 65-character vocabulary" in capsys.readouterr().err


def test_benchmark_times_both_paths_and_greedy_outputs_agree_within_the_context(text_run, capsys):
    # seq_len 16: prompt 3 + 13 tokens fill the context, so greedy outputs agree on at least 13 tokens.
    args = ["--run", str(text_run), "--prompt", "ROM", "--max-new-tokens", "20", "--temperature", "0",
            "--benchmark", "--repeats", "1"]
    assert sample.main(args) == 0
    out = capsys.readouterr().out
    rates = {name: float(re.search(rf"^{name}: 20 tokens x 1 in [\d.]+ s = ([\d.]+) tokens/s", out, re.M).group(1))
             for name in ("cached", "recomputed")}
    assert all(rate > 0 for rate in rates.values()), out
    ratio = float(re.search(r"cached / recomputed: ([\d.]+)x", out).group(1))
    assert ratio == pytest.approx(rates["cached"] / rates["recomputed"], rel=0.01, abs=0.006), out  # printed rounded
    assert int(re.search(r"the first (\d+) of 20 generated tokens are identical", out).group(1)) >= 13, out


def test_restore_needs_a_run_folder(tmp_path):
    message = r"manifest.json not found: --run must be the folder of an `experiments.run` run"
    with pytest.raises(FileNotFoundError, match=message):
        restore(tmp_path, {"tokens": np.zeros((1, 4), np.int32)})


@pytest.fixture
def trace_run(tmp_path):
    run = tmp_path / "trace_run"
    spec = DataSpec("adfa_ld", vocab_size=341, seq_len=10, family_names=("normal", "Adduser"))
    make_run(run, ["model=lstm", "model.hidden_dim=8", "model.embed_dim=4", "data.seq_len=10", "data.eval_context=2"],
             spec, {"tokens": np.zeros((1, 10), np.int32)})
    (run / "anomaly.json").write_text(json.dumps({"step": 0, "score": "mean", "threshold": 5.8}))
    return run


def test_detect_prints_scores_and_flags(trace_run, tmp_path, capsys):
    normal = tmp_path / "normal.txt"
    normal.write_text("6 6 63 6 42 120 6 195 120 6 6 114 114 1 1 252 252 252 1 1\n")
    assert detect.main(["--run", str(trace_run), str(normal), "--threshold", "0.0"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("# run") and lines[1].split("\t")[:2] == ["file", "calls"]
    path, calls, mean, worst, flagged = lines[2].split("\t")
    assert path == str(normal) and calls == "20" and float(mean) > 0 and flagged == "1"
    assert abs(float(mean) - np.log(341)) < 0.5  # an untrained model is near uniform over 341 tokens


def test_detect_names_the_file_and_line_of_a_malformed_trace(trace_run, tmp_path, capsys):
    bad = tmp_path / "bad.txt"
    bad.write_text("1 2 3\n4 five 6\n")
    assert detect.main(["--run", str(trace_run), str(bad)]) == 2
    assert f"{bad}, line 2: 'five' is not a system-call number" in capsys.readouterr().err
    big = tmp_path / "big.txt"
    big.write_text("1 2 999\n")
    assert detect.main(["--run", str(trace_run), str(big)]) == 2
    assert "line 1: system call 999 is outside the model's vocabulary 0..340" in capsys.readouterr().err
