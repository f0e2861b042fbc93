"""Errors a user can fix, each with a one-line message naming what is wrong and the fix.

A `UserError` is a fault of the settings, the data, the run folder or the
machine (a full disk, a read-only folder), never of the code: the entry point
prints `str(error)` as one line and no traceback. Any other exception is a bug
and keeps its traceback.

    UserError
      SettingsError      a setting's value cannot work (also a ValueError)
      DataError          a dataset is missing, empty or damaged (also a ValueError)
      CheckpointError    no checkpoint restores, or one cannot be saved
      RunFolderError     the run folder holds a different run
      StorageError       a folder cannot be written
        DiskFullError    ... because its disk or quota is full (ENOSPC, EDQUOT)
        NotWritableError ... because of permissions or a read-only file system (EACCES, EPERM, EROFS)

`storage_error(exc, path, doing=...)` turns an OSError (or an error that wraps
one, as orbax and TensorStore do) into the matching `StorageError`.
"""

from __future__ import annotations

import errno
import numbers
import os
import re
from collections.abc import Sequence


class UserError(Exception):
    """A fault the user can fix; `str(error)` is one line: what is wrong, then the fix.

    Whitespace in the message (newlines from wrapped instructions) is folded
    into single spaces so the line stays one line.
    """

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))

    @property
    def message(self) -> str:
        return str(self)


class SettingsError(UserError, ValueError):
    """A setting's value cannot work (a zero width, an empty split); the message names the setting."""


class DataError(UserError, ValueError):
    """A dataset's files are missing, empty or damaged; the message names the folder or file."""


class CheckpointError(UserError):
    """No checkpoint of the run restores, or a checkpoint could not be written."""


class RunFolderError(UserError):
    """The run folder already holds a run with different settings."""


class StorageError(UserError):
    """A folder or file cannot be written.

    Attributes:
      path: what could not be written.
      errno: the operating system's error number (e.g. errno.ENOSPC), or None.
    """

    def __init__(self, message: str, *, path: os.PathLike | str | None = None, errno_: int | None = None):
        super().__init__(message)
        self.path = None if path is None else os.fspath(path)
        self.errno = errno_


class DiskFullError(StorageError):
    """The disk (or the user's quota) holding a path is full."""


class NotWritableError(StorageError):
    """A path is not writable: permission denied or a read-only file system."""


_FULL = (errno.ENOSPC, errno.EDQUOT)
_NOT_WRITABLE = (errno.EACCES, errno.EPERM, errno.EROFS)
_OS_ERROR_CODE = re.compile(r"os_error_code='?(\d+)")  # how TensorStore quotes the errno it met


def os_errno(exc: BaseException) -> int | None:
    """The errno of the first OSError in `exc`'s chain (causes and contexts), or None.

    TensorStore (under orbax) raises ValueError("RESOURCE_EXHAUSTED: ... No
    space left on device [os_error_code='28']") instead of an OSError; the
    number in that text counts too.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno is not None:
            return current.errno
        match = _OS_ERROR_CODE.search(str(current)[-2000:])
        if match:
            return int(match.group(1))
        current = current.__cause__ or current.__context__
    return None


def storage_error(
    exc: BaseException, path: os.PathLike | str, *, doing: str, fix: str | None = None
) -> StorageError | None:
    """The `StorageError` matching `exc` (a full disk, a folder that is not writable), or None.

    Args:
      exc: the error met while writing (an OSError, or an error wrapping one).
      path: the folder or file being written.
      doing: what was being done, for the message ("saving checkpoint step 8").
      fix: the sentence saying what to do instead of the default one.

    Returns:
      DiskFullError for ENOSPC/EDQUOT, NotWritableError for EACCES/EPERM/EROFS,
      None for anything else (the caller re-raises `exc`: it may be a bug).
    """
    code = os_errno(exc)
    if code in _FULL:
        kind, why = DiskFullError, "the disk quota" if code == errno.EDQUOT else "no space left on the device"
        fix = fix or "Free space on that disk or choose a folder on another one."
    elif code in _NOT_WRITABLE:
        kind, why = NotWritableError, "read-only file system" if code == errno.EROFS else "permission denied"
        fix = fix or "Make the folder writable or choose another one."
    else:
        return None
    path = os.fspath(path)
    return kind(f"Could not write {path} while {doing}: {why} ({errno.errorcode[code]}). {fix}", path=path, errno_=code)


def check_writable(folder: os.PathLike | str, *, doing: str, fix: str | None = None) -> None:
    """Creates `folder` if needed and writes, syncs and removes a small probe file in it.

    Catches an unwritable or full folder before work that would be lost
    (training until the first checkpoint), with one clear error.

    Raises:
      StorageError: the folder cannot be created or written (its subclass says why).
      OSError: any other failure (re-raised unchanged).
    """
    folder = os.fspath(folder)
    probe = os.path.join(folder, f".write-probe-{os.getpid()}")
    try:
        os.makedirs(folder, exist_ok=True)
        with open(probe, "wb") as f:
            f.write(b"\0" * 4096)  # a whole block: an empty file fits on a full disk
            f.flush()
            os.fsync(f.fileno())
    except OSError as e:
        error = storage_error(e, folder, doing=doing, fix=fix)
        if error is None:
            raise
        raise error from e
    finally:
        try:
            os.remove(probe)
        except OSError:
            pass


def require_positive(prefix: str, **sizes: int | Sequence[int] | None) -> None:
    """Checks that each size (or each entry of a sequence of sizes) is at least 1.

    A size of 0 gives a layer no units: Flax then divides by zero in its
    initialisers or builds arrays with no elements, far from the setting that
    caused it. An empty sequence (no hidden layers) and None are allowed.

    Args:
      prefix: the settings' group, for the message ("model").
      sizes: setting name -> value, e.g. latent_dim=0, hidden_dims=(200, 0).

    Raises:
      SettingsError: naming the first bad setting, e.g. "model.latent_dim=0 ...".
    """
    for name, value in sizes.items():
        if value is None:
            continue
        values = list(value) if isinstance(value, (list, tuple)) else [value]
        if any(not isinstance(v, numbers.Integral) or isinstance(v, bool) or v < 1 for v in values):
            shown = list(value) if isinstance(value, (list, tuple)) else value
            sequence = isinstance(value, (list, tuple))
            what = "every entry must be a whole number of at least 1" if sequence else "it must be at least 1"
            raise SettingsError(
                f"{prefix}.{name}={shown} cannot build a layer: {what} (a size of 0 leaves the layer no units). "
                f"Set {prefix}.{name} to a positive size."
            )
