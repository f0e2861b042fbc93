"""Run-folder identity, results kept on rerun, failure records that are never empty."""

import errno
import json
import os

import pytest

from jaxdl import errors, records, run_folder
from tests import disk

SETTINGS = {
    "seed": 0,
    "model": {"name": "vae", "latent_dim": 50, "hidden_dims": [200, 200]},
    "task": {"name": "vae", "iw_samples": 1000},
    "data": {"name": "mnist", "batch_size": 100, "data_dir": "/a", "manual_dir": None},
    "optimizer": {"name": "adam", "learning_rate": 1e-3, "schedule": {"name": "cosine"}},
    "trainer": {"epochs": 10, "progress": True, "log_every_steps": 100, "checkpoint": {"keep_last": 2}},
}


def recorded_run(run_dir, settings=SETTINGS, *, checkpoints=True, results=None):
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "manifest.json").write_text(json.dumps({"command": ["old"], "settings": settings}))
    if checkpoints:
        (run_dir / "checkpoints" / "4").mkdir(parents=True)
    if results is not None:
        (run_dir / "results.json").write_text(json.dumps(results))
    return {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()}


def changed(settings, **dotted):
    out = json.loads(json.dumps(settings))
    for key, value in dotted.items():
        *path, last = key.split("__")
        node = out
        for part in path:
            node = node[part]
        node[last] = value
    return out


def test_a_missing_or_empty_folder_is_new(tmp_path):
    assert run_folder.check(SETTINGS, tmp_path / "nothing").status == "new"
    (tmp_path / "failed" / ".hydra").mkdir(parents=True)  # a run that failed before training
    (tmp_path / "failed" / "failure.json").write_text("{}")
    assert run_folder.check(SETTINGS, tmp_path / "failed").status == "new"


def test_the_same_settings_resume_and_a_finished_run_is_kept(tmp_path):
    recorded_run(tmp_path / "a")
    assert run_folder.check(SETTINGS, tmp_path / "a").status == "resume"
    recorded_run(tmp_path / "b", results={"metrics": {}})
    decision = run_folder.check(json.loads(json.dumps(SETTINGS)), tmp_path / "b")
    assert decision.status == "finished" and decision.allowed == ()


def test_settings_that_cannot_change_the_result_may_differ(tmp_path):
    recorded_run(tmp_path)
    new = changed(SETTINGS, trainer__progress=False, trainer__log_every_steps=7, data__data_dir="/b",
                  trainer__checkpoint__keep_last=5)
    decision = run_folder.check({**new, "compilation_cache_dir": "/cache"}, tmp_path)
    assert decision.status == "resume"
    assert [c.key for c in decision.allowed] == [
        "compilation_cache_dir", "data.data_dir", "trainer.checkpoint.keep_last", "trainer.log_every_steps",
        "trainer.progress",
    ]


def test_a_different_run_is_refused_before_anything_is_written(tmp_path):
    before = recorded_run(tmp_path)
    new = changed(SETTINGS, model__latent_dim=20, optimizer__learning_rate=0.3)
    new["trainer"]["max_steps"] = 50  # a key the recorded run did not have
    with pytest.raises(errors.RunFolderError) as info:
        run_folder.check(new, tmp_path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(
        f"{tmp_path} holds a run with different settings (model.latent_dim: 50 -> 20; "
        "optimizer.learning_rate: 0.001 -> 0.3; trainer.max_steps: (absent) -> 50); nothing was changed there."
    )
    assert "new hydra.run.dir" in message
    assert "allow_changed=[model.latent_dim,optimizer.learning_rate,trainer.max_steps]" in message
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()} == before


def test_allow_changed_lets_named_keys_differ_and_the_manifest_keeps_the_history(tmp_path):
    recorded_run(tmp_path, results={"metrics": {}})
    new = changed(SETTINGS, trainer__epochs=20)
    with pytest.raises(errors.RunFolderError, match=r"trainer\.epochs: 10 -> 20"):
        run_folder.check(new, tmp_path)
    decision = run_folder.check({**new, "allow_changed": ["trainer.epochs"]}, tmp_path, allow_changed=["trainer.epochs"])
    assert decision.status == "finished"
    assert [str(c) for c in decision.allowed] == [
        'allow_changed: (absent) -> ["trainer.epochs"]', "trainer.epochs: 10 -> 20"
    ]
    manifest = run_folder.updated_manifest(decision.recorded, {"command": ["new"], "settings": new}, decision)
    assert manifest["command"] == ["new"] and manifest["settings"]["trainer"]["epochs"] == 20
    assert manifest["history"] == [
        {"command": ["old"], "git": None, "environment": None,
         "changed": {"allow_changed": ["(absent)", ["trainer.epochs"]], "trainer.epochs": [10, 20]}}
    ]
    assert run_folder.check(new, tmp_path, allow_changed=["trainer.*"]).status == "finished"


@pytest.mark.parametrize("manifest", [None, "", "{half"])
def test_checkpoints_without_a_readable_manifest_are_refused(tmp_path, manifest):
    (tmp_path / "checkpoints" / "4").mkdir(parents=True)
    if manifest is not None:
        (tmp_path / "manifest.json").write_text(manifest)
    with pytest.raises(errors.RunFolderError, match=r"holds checkpoints but its manifest.json cannot be read \((missing|empty file|not valid JSON)"):
        run_folder.check(SETTINGS, tmp_path)


RESULTS = {
    "metrics": {"eval/nll": 89.5}, "steps": 100, "resumed_from": None, "wall_time_s": 489.0,
    "train_examples_per_s": 25300.0, "first_step_s": 2.1, "train_time_s": 300.0, "setup_s": 11.0,
}


def test_a_finished_run_started_again_keeps_its_recorded_timings():
    rerun = {**RESULTS, "resumed_from": 100, "wall_time_s": 520.0, "train_examples_per_s": None,
             "first_step_s": None, "train_time_s": 0.0, "setup_s": 3.0}
    assert run_folder.merge_results(RESULTS, rerun) == RESULTS
    drifted = run_folder.merge_results(RESULTS, {**rerun, "metrics": {"eval/nll": 89.6}})
    assert drifted == {**RESULTS, "reevaluated_metrics": {"eval/nll": 89.6}}


def test_a_continued_run_reports_its_own_segment_but_never_replaces_a_value_by_null():
    continued = {**RESULTS, "steps": 200, "resumed_from": 100, "first_step_s": 1.5, "train_examples_per_s": None}
    merged = run_folder.merge_results(RESULTS, continued)
    assert merged["steps"] == 200 and merged["first_step_s"] == 1.5
    assert merged["train_examples_per_s"] == 25300.0
    assert run_folder.merge_results(None, continued) == continued


def test_write_failure_is_atomic_valid_json_and_names_a_user_error(tmp_path):
    path = records.write_failure(tmp_path, errors.SettingsError("model.latent_dim=0 cannot build a layer.\n Fix it."))
    record = json.loads(path.read_text())
    assert record["error"] == "SettingsError" and record["user_error"] is True
    assert record["message"] == "model.latent_dim=0 cannot build a layer. Fix it."
    assert sorted(os.listdir(tmp_path)) == ["failure.json"]


def test_write_failure_on_a_full_disk_never_leaves_an_empty_file(tmp_path, monkeypatch, capsys):
    (tmp_path / "failure.json").write_text('{"error": "Earlier", "message": "kept"}')
    real_open = open

    def full_disk_open(file, mode="r", *args, **kwargs):
        if "w" in mode and str(file).endswith(".tmp"):
            handle = real_open(file, mode, *args, **kwargs)  # the file is created, then no byte fits
            handle.close()
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(file))
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr("builtins.open", full_disk_open)
    assert records.write_failure(tmp_path, RuntimeError("boom")) is None
    monkeypatch.undo()
    assert sorted(os.listdir(tmp_path)) == ["failure.json"]
    assert json.loads((tmp_path / "failure.json").read_text()) == {"error": "Earlier", "message": "kept"}
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and '"error": "RuntimeError", "message": "boom"' in err


def test_write_failure_on_a_real_full_disk_falls_back_to_a_short_record_or_stderr(tmp_path, capsys):
    with disk.small_disk(tmp_path / "disk", 64) as folder:
        disk.fill(folder)
        written = records.write_failure(folder, RuntimeError("x" * 10_000))
        names = [n for n in os.listdir(folder) if n != "fill"]
        if written is None:
            assert names == [] and "could not write" in capsys.readouterr().err
        else:
            assert names == ["failure.json"] and json.loads(written.read_text())["error"] == "RuntimeError"
        assert all(os.path.getsize(folder / n) > 0 for n in names)


@pytest.mark.parametrize("text, reason", [("", "empty file"), ("{half", "not valid JSON"), ("[1]", "not a JSON object")])
def test_read_record_never_raises(tmp_path, text, reason):
    (tmp_path / "r.json").write_text(text)
    record, why = records.read_record(tmp_path / "r.json")
    assert record is None and why.startswith(reason)
    assert records.read_record(tmp_path / "absent.json") == (None, "missing")
