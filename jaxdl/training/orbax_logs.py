"""Orbax's logging, made to fit one-line errors: its storage-error tracebacks hidden, other errors cut to a line.

`jaxdl.training.checkpoint` reports each failed save or restore once, as a
`jaxdl.errors.UserError`; orbax's own ERROR logs of the same failure (one
traceback per writer thread) are filtered here.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator

from jaxdl import errors


def short_reason(error: BaseException) -> str:
    """One short line saying why a checkpoint did not restore: the innermost cause's first line."""
    innermost, seen = error, set()
    while (innermost.__cause__ or innermost.__context__) is not None and id(innermost) not in seen:
        seen.add(id(innermost))
        innermost = innermost.__cause__ or innermost.__context__
    text = (str(innermost).strip().splitlines() or [""])[0]
    text = f"{type(innermost).__name__}: {text}" if text else type(innermost).__name__
    return text if len(text) <= 240 else text[:237] + "..."


class _OrbaxStorageLogFilter(logging.Filter):
    """Drops orbax's ERROR logs of a full or unwritable disk and shortens its other errors to one line.

    A failed write is logged by each orbax thread it reaches, with a
    traceback each (about 270 lines for one full disk), before `Checkpointer`
    raises it once as a one-line `StorageError`. Other orbax errors keep
    their first line (no traceback).
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.ERROR or f"{os.sep}orbax{os.sep}" not in record.pathname:
            return True
        error = record.exc_info[1] if record.exc_info else None
        if error is not None and errors.os_errno(error) is not None:
            return False
        record.msg, record.args = (record.getMessage().splitlines() or [""])[0][:300], None
        record.exc_info, record.exc_text, record.stack_info = None, None, None
        return True


def install_log_filter() -> None:
    """Adds `_OrbaxStorageLogFilter` to the absl logger orbax logs through (once)."""
    logger = logging.getLogger("absl")  # orbax logs through absl.logging
    if not any(isinstance(f, _OrbaxStorageLogFilter) for f in logger.filters):
        logger.addFilter(_OrbaxStorageLogFilter())


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Hides orbax's own ERROR logs while a checkpoint is tried: a failure is reported once, by the caller."""
    logger = logging.getLogger("absl")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)
