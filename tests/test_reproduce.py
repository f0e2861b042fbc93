"""scripts.reproduce: the record of a finished run and the README table made from records."""

import json

import pytest
import yaml

from scripts import reproduce

EXPECTED = {"metric": "eval/tta_accuracy", "value": 0.94, "comparison": "at_least", "tolerance": 0.005,
            "source": "a paper"}
OVERRIDES = ["experiment=cifar10_airbench94", "trainer.progress=false"]


def finished_run(tmp_path, tta_accuracy, archive):
    run_dir = tmp_path / "run"
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump([*OVERRIDES, "hydra.run.dir=x"]))
    results = {
        "metrics": {"eval/tta_accuracy": tta_accuracy},
        "wall_time_s": 600.0,
        "environment": {"device_count": 2, "device_kind": "cpu", "packages": {"jax": "0", "flax": "0"}},
        "dataset": {"name": "cifar10_binary", "version": "1.0.0", "metadata": {"archive": archive} if archive else {}},
    }
    (run_dir / "results.json").write_text(json.dumps(results))
    (run_dir / "manifest.json").write_text(json.dumps({"git": {"commit": "abc"}}))
    return run_dir


def test_a_run_on_a_non_canonical_copy_is_marked_in_the_record_and_the_table(tmp_path):
    archive = {"canonical": False, "sha256": "8cbe", "name": "cifar-10-binary.tar.xz"}
    record = reproduce.record(OVERRIDES, finished_run(tmp_path, 0.9059, archive), EXPECTED)
    assert record["pass"] is False and record["measured"] == 0.9059 and record["commit"] == "abc"
    assert record["data"] == {"name": "cifar10_binary", "version": "1.0.0", "archive_sha256": "8cbe",
                              "canonical": False}
    row = reproduce.table([record]).splitlines()[-1]
    assert "| 0.9059 | FAIL (non-canonical data) | 10.0 min |" in row


def test_a_run_on_canonical_data_passes_without_a_mark(tmp_path):
    record = reproduce.record(OVERRIDES, finished_run(tmp_path, 0.9402, None), EXPECTED)
    assert record["pass"] is True and record["data"]["canonical"] is True
    assert "| 0.9402 | PASS | 10.0 min |" in reproduce.table([record])


def test_a_record_from_before_the_data_field_still_renders(tmp_path):
    record = reproduce.record(OVERRIDES, finished_run(tmp_path, 0.95, None), EXPECTED)
    del record["data"]
    assert "| PASS |" in reproduce.table([record])


def test_a_run_with_other_overrides_is_refused(tmp_path):
    with pytest.raises(SystemExit, match="was run with overrides"):
        reproduce.record(["experiment=cifar10_airbench94"], finished_run(tmp_path, 0.95, None), EXPECTED)
