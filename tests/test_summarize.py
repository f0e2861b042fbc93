"""scripts.summarize on a sweep whose records are damaged: every job listed, none crashes the summary."""

import json

from scripts.summarize import read_jobs, summarize


def job(sweep, name, lr, **files):
    folder = sweep / name
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "overrides.yaml").write_text(f"- optimizer.learning_rate={lr}\n")
    for file_name, text in files.items():
        (folder / f"{file_name}.json").write_text(text)


def test_empty_or_garbled_records_list_the_job_as_failed_with_the_reason(tmp_path):
    job(tmp_path, "0", 0.001, results=json.dumps({"metrics": {"eval/nll": 90.0}, "wall_time_s": 5.0}))
    job(tmp_path, "1", 0.01, failure="")  # written on a full disk before failure records were atomic
    job(tmp_path, "2", 0.1, results="{\"metrics\": {")  # a job killed while writing
    job(tmp_path, "3", 0.3, failure=json.dumps({"error": "NonFiniteMetricError", "message": "eval/nll=nan at step 8"}))
    job(tmp_path, "4", 1.0)
    status = {j["job"]: (j["status"], j.get("error")) for j in read_jobs(tmp_path)}
    assert status == {
        "0": ("ok", None),
        "1": ("failed", "failed; failure.json is unusable: empty file"),
        "2": ("failed", "results.json is unusable: not valid JSON (Expecting property name enclosed in double quotes at line 1)"),
        "3": ("failed", "NonFiniteMetricError: eval/nll=nan at step 8"),
        "4": ("incomplete", "no results.json (still running or killed)"),
    }
    text = summarize(tmp_path, "eval/nll")
    assert text.startswith("5 jobs, 1 finished, 4 failed or incomplete")
    assert (tmp_path / "summary.csv").read_text().count("\n") == 6
