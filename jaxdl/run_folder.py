"""A run folder's identity: whose run it holds, and the record kept when a run is rerun into it.

Rerunning a command into its run folder resumes it (or, when it finished,
keeps it); running a *different* command into it would mix two runs in one
record. `check(settings, run_dir)` decides which, from the settings recorded
in the folder's `manifest.json`, before anything in the folder is written:

* `Decision.status == "new"`: no run recorded there (no manifest, no checkpoints);
* `"resume"`: the same run, not finished (no results.json): continue it;
* `"finished"`: the same run, finished: keep its record (`merge_results`);
* a `RunFolderError` when settings that change what is trained differ,
  naming each differing key (old -> new) and the two fixes: a new
  `hydra.run.dir`, or `allow_changed=[key, ...]` to continue on purpose.

Settings that cannot change the trained result may differ (`NEUTRAL`, each
with the reason it is safe). Everything else counts, including keys only one
side has (a setting added to the code since the run started).

The folder's JSON records are read and written through `jaxdl.records`.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import json
import os
import pathlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from jaxdl import errors
from jaxdl.records import read_record, to_jsonable

#: Dotted settings (fnmatch patterns) that may differ between the runs sharing a folder, with why each is safe:
#: none of them changes the parameters, the data order, the random streams or the metrics of the run.
NEUTRAL: dict[str, str] = {
    "trainer.progress": "console progress bar only",
    "trainer.log_every_steps": "how often the host fetches train metrics for the log; the steps are the same program",
    "trainer.tensorboard": "whether the metrics are also written as TensorBoard events",
    "trainer.artifacts": "whether pictures (samples, curves) are written",
    "trainer.diagnostics_every_steps": "a separate diagnostic program run beside the step; the step is unchanged",
    "trainer.prefetch_to_device": "when batches are copied to the devices, not which batches",
    "trainer.checkpoint_every_steps": "extra checkpoints inside epochs; a resumed run equals an uninterrupted one",
    "trainer.checkpoint.keep_last": "how many old checkpoints are kept on disk",
    "trainer.nan_guard": "whether a non-finite metric stops the run; a finite run is the same either way",
    "data.data_dir": "where prepared datasets are stored; the data are checked by their raw-file checksums",
    "data.manual_dir": "where raw files are read from; they are checked against published checksums",
    "data.num_workers": "reader processes of the streaming loader; the same batches in the same order",
    "data.prefetch_batches": "batches the streaming readers keep ready; the same batches",
    "compilation_cache_dir": "where compiled programs are cached; the same programs",
    "distributed.coordinator_address": "where the processes of a multi-host run meet (changes between allocations)",
    "distributed.process_id": "this process's index, which differs between the processes of one run",
    "expected.*": "the result a reproduction expects; used only to compare after training",
    "allow_changed": "the list of keys allowed to change (this option itself)",
}


@dataclasses.dataclass(frozen=True)
class Change:
    """A setting that differs from the recorded run: its dotted key, old and new value (MISSING when absent)."""

    key: str
    old: Any
    new: Any

    def __str__(self) -> str:
        return f"{self.key}: {_show(self.old)} -> {_show(self.new)}"


class _Missing:
    def __repr__(self) -> str:
        return "(absent)"


MISSING = _Missing()


@dataclasses.dataclass(frozen=True)
class Decision:
    """What `check` found.

    Attributes:
      status: "new", "resume" or "finished".
      allowed: settings that differ from the recorded run but may (NEUTRAL or allow_changed).
      recorded: the recorded manifest (None for a new folder).
    """

    status: str
    allowed: tuple[Change, ...] = ()
    recorded: dict[str, Any] | None = None


def flatten(settings: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"trainer": {"checkpoint": {"keep_last": 2}}} -> {"trainer.checkpoint.keep_last": 2}; lists stay values."""
    flat: dict[str, Any] = {}
    for key, value in settings.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, dotted + "."))
        else:
            flat[dotted] = value
    return flat


def differences(recorded: Mapping[str, Any], new: Mapping[str, Any]) -> list[Change]:
    """Every dotted setting whose value differs between two settings trees (compared as JSON)."""
    old_flat, new_flat = flatten(_as_json(recorded)), flatten(_as_json(new))
    return [
        Change(key, old_flat.get(key, MISSING), new_flat.get(key, MISSING))
        for key in sorted(set(old_flat) | set(new_flat))
        if old_flat.get(key, MISSING) != new_flat.get(key, MISSING)
    ]


def is_neutral(key: str, allow_changed: Iterable[str] = ()) -> bool:
    """Whether setting `key` may differ: listed in NEUTRAL, or matched by a pattern of `allow_changed`."""
    patterns = [*NEUTRAL, *allow_changed]
    return any(fnmatch.fnmatchcase(key, p) or key.startswith(p.rstrip(".*") + ".") for p in patterns)


def check(
    settings: Mapping[str, Any], run_dir: os.PathLike | str, *, allow_changed: Sequence[str] = ()
) -> Decision:
    """Decides whether `run_dir` is new, holds this run (to resume or keep), or holds a different run.

    Reads only; call it before anything is written into the folder.

    Args:
      settings: the new run's resolved settings as plain dicts (seed, model,
        task, data, optimizer, trainer, ...), as they will be recorded in
        manifest.json["settings"].
      run_dir: the run folder (need not exist).
      allow_changed: dotted keys or patterns ("trainer.epochs", "trainer.*")
        the user lets differ on purpose, e.g. to train a finished run longer.

    Returns:
      A `Decision`; its `allowed` lists the differences that were let through
      (report them, and record them with `updated_manifest`).

    Raises:
      jaxdl.errors.RunFolderError: the folder holds a run with other settings
        (one line listing each key, old -> new, and the fixes), or holds
        checkpoints but no readable manifest.json to compare with.
    """
    run_dir = pathlib.Path(run_dir)
    recorded, problem = read_record(run_dir / "manifest.json")
    has_checkpoints = _has_checkpoints(run_dir / "checkpoints")
    if recorded is None or not isinstance(recorded.get("settings"), Mapping):
        if not has_checkpoints:
            return Decision("new")  # nothing was trained here (perhaps a run that failed while preparing)
        why = problem or "it has no settings"
        raise errors.RunFolderError(
            f"{run_dir} holds checkpoints but its manifest.json cannot be read ({why}), so it cannot be checked "
            f"that they belong to this run. Rerun with a new hydra.run.dir, or move {run_dir / 'checkpoints'} away "
            "to start this run there."
        )
    changes = differences(recorded["settings"], settings)
    refused = [c for c in changes if not is_neutral(c.key, allow_changed)]
    if refused:
        listed = "; ".join(str(c) for c in refused)
        keys = ",".join(c.key for c in refused)
        raise errors.RunFolderError(
            f"{run_dir} holds a run with different settings ({listed}); nothing was changed there. "
            f"Rerun with a new hydra.run.dir, or add allow_changed=[{keys}] to continue that run with the new "
            "values on purpose."
        )
    allowed = tuple(changes)
    finished = read_record(run_dir / "results.json")[0] is not None
    return Decision("finished" if finished else "resume", allowed, dict(recorded))


def updated_manifest(recorded: Mapping[str, Any] | None, new: Mapping[str, Any], decision: Decision) -> dict[str, Any]:
    """The manifest to write for a run continued in its folder: `new`, with the earlier segments kept.

    Each earlier segment's command, git state and environment, with the
    settings that changed since (old -> new), are appended to "history", so
    the record says what every segment ran with.
    """
    if recorded is None:
        return dict(new)
    history = list(recorded.get("history", []))
    history.append(
        {
            "command": recorded.get("command"),
            "git": recorded.get("git"),
            "environment": recorded.get("environment"),
            "changed": {c.key: [_plain(c.old), _plain(c.new)] for c in decision.allowed},
        }
    )
    return {**new, "history": history}


#: Figures of a results.json measured while training; a rerun that trains no step has none of its own.
#: ("final_evaluation_s": folders written before it became phase_s["final_evaluation"].)
SEGMENT_FIGURES = (
    "train_examples_per_s", "train_time_s", "first_step_s", "setup_s", "wall_time_s", "final_evaluation_s",
    "phase_s", "resumed_from", "environment",
)


def merge_results(recorded: Mapping[str, Any] | None, new: Mapping[str, Any]) -> dict[str, Any]:
    """The results.json to write after rerunning a run into its folder.

    * Nothing recorded: `new`.
    * The rerun trained no step (a finished run started again: the loop only
      evaluates): the recorded results stand, timings included; if the
      re-evaluated metrics differ, they are added as "reevaluated_metrics".
    * The rerun trained (a continued run): `new`, except that a value recorded
      before is never replaced by a null.
    """
    if not recorded:
        return dict(new)
    trained_nothing = new.get("resumed_from") is not None and new.get("steps") == new.get("resumed_from")
    if trained_nothing:
        merged = dict(recorded)
        if _as_json(new.get("metrics")) != _as_json(recorded.get("metrics")):
            merged["reevaluated_metrics"] = new.get("metrics")
        return merged
    merged = dict(new)
    for key, value in recorded.items():
        if merged.get(key) is None and value is not None:
            merged[key] = value
    return merged


def _has_checkpoints(folder: pathlib.Path) -> bool:
    try:
        return any(p.name.isdigit() for p in folder.iterdir())
    except OSError:
        return False


def _as_json(value: Any) -> Any:
    """`value` as it reads back from JSON (tuples become lists, unknown objects strings)."""
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def _plain(value: Any) -> Any:
    """`value` for the manifest's history; a key one side lacks reads "(absent)", unlike a recorded null."""
    return repr(MISSING) if value is MISSING else to_jsonable(value)


def _show(value: Any) -> str:
    return repr(value) if value is MISSING else json.dumps(value, default=str)
