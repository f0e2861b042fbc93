"""A run's JSON records (manifest.json, results.json, failure.json): written atomically, read without raising.

`write_json` never leaves a record empty or half-written, `write_failure`
always leaves a valid failure.json (or says on stderr why it could not), and
`read_record` reads any record back, reporting why one is unusable instead of
raising, so that a summary of a sweep survives one damaged job.
"""

from __future__ import annotations

import json
import os
import pathlib
import sys
import traceback as traceback_lib
from collections.abc import Mapping
from typing import Any

from jaxdl import errors


def read_record(path: os.PathLike | str) -> tuple[dict[str, Any] | None, str | None]:
    """Reads a JSON record (results.json, failure.json, manifest.json) without raising.

    Returns:
      (record, None) when it is a JSON object; (None, reason) when it is
      missing, empty, unreadable or not a JSON object ("empty file", ...).
    """
    path = pathlib.Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None, "missing"
    except (OSError, UnicodeDecodeError) as e:
        return None, f"unreadable: {e}"
    if not text.strip():
        return None, "empty file"
    try:
        record = json.loads(text)
    except json.JSONDecodeError as e:
        return None, f"not valid JSON ({e.msg} at line {e.lineno})"
    if not isinstance(record, dict):
        return None, f"not a JSON object but a {type(record).__name__}"
    return record, None


def write_json(path: os.PathLike | str, payload: Mapping[str, Any]) -> None:
    """Writes JSON atomically: a temporary file in the same folder, synced, then renamed over `path`.

    A failed write leaves `path` as it was (never empty or half-written) and no temporary file.

    Raises:
      jaxdl.errors.StorageError: the folder is full or not writable.
      OSError: any other failure.
    """
    path = pathlib.Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    data = (json.dumps(to_jsonable(payload), indent=2, sort_keys=True) + "\n").encode("utf-8")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        error = errors.storage_error(e, path, doing=f"writing {path.name}")
        if error is None:
            raise
        raise error from e


def failure_record(error: BaseException) -> dict[str, Any]:
    """What failure.json holds: the error's type and one-line message, whether the user can fix it, the traceback."""
    return {
        "error": type(error).__name__,
        "message": " ".join(str(error).split()) or type(error).__name__,
        "user_error": isinstance(error, errors.UserError),
        "traceback": "".join(traceback_lib.format_exception(error)),
    }


def write_failure(run_dir: os.PathLike | str, error: BaseException) -> pathlib.Path | None:
    """Writes `run_dir/failure.json` for `error`, atomically; never leaves an empty or partial file.

    When the full record cannot be written (a full disk), a short one
    (type and message, at most 500 characters) is tried; when that fails too,
    the record is printed to stderr as one line.

    Returns:
      The path written, or None when only stderr received the record.
    """
    path = pathlib.Path(run_dir) / "failure.json"
    record = failure_record(error)
    short = {"error": record["error"], "message": record["message"][:500], "user_error": record["user_error"]}
    for payload in (record, short):
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_json(path, payload)
            return path
        except (OSError, errors.StorageError):
            continue
    print(f"could not write {path}; the failure was: {json.dumps(short)}", file=sys.stderr)
    return None


def to_jsonable(value: Any) -> Any:
    """`value` as plain JSON types: mappings with str keys, lists, scalars (numpy scalars as Python ones), else str."""
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    try:
        return value.item()  # numpy scalars
    except (AttributeError, ValueError):
        return str(value)
