"""One line for every error a user can fix: composition errors and jaxdl's `UserError`s.

Hydra prints a composition error in four or more lines and a job's exception
with a traceback. `install()` wraps Hydra's reporting so that a misspelled or
mistyped setting, an unknown option, and any `jaxdl.errors.UserError` raised in
a job end in one line (with the closest valid name for a misspelling); the
traceback of a job stays in its `failure.json`. Bugs keep their traceback, and
`HYDRA_FULL_ERROR=1` shows everything as before.
"""

from __future__ import annotations

import dataclasses
import os
import re
import sys

from hydra.errors import ConfigCompositionException, MissingConfigException
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException, ValidationError

from jaxdl.errors import UserError
from jaxdl.settings import suggest


def _valid_keys(object_type: object) -> list[str]:
    if isinstance(object_type, type) and dataclasses.is_dataclass(object_type):
        return [f.name for f in dataclasses.fields(object_type)]
    return []


def one_line(error: BaseException) -> str | None:
    """The one-line message of a user error, or None when `error` is a bug (it keeps its traceback)."""
    if isinstance(error, UserError):
        return f"Error: {error}"
    if isinstance(error, MissingConfigException):
        options = f"; choose one of: {', '.join(sorted(error.options))}" if error.options else ""
        first = str(error).splitlines()[0].rstrip(".")
        return f"Error: {first}{options}."
    cause = (error.__cause__ or error.__context__) if isinstance(error, ConfigCompositionException) else error
    preset = re.match(r"In '(experiment|model)/([^']+)'", str(error))
    if preset and isinstance(cause, (ConfigKeyError, ConfigAttributeError)) and getattr(cause, "full_key", None):
        group = cause.full_key.split(".", 1)[0]
        return (
            f"Error: {preset[1]}={preset[2]} sets {cause.full_key}, which the {group} option you chose does not have; "
            f"drop {group}=... and override single values, or start from the model without the {preset[1]}."
        )
    if isinstance(cause, (ConfigKeyError, ConfigAttributeError)) and getattr(cause, "full_key", None):
        key = str(cause.key)
        valid = _valid_keys(cause.object_type)
        where = cause.full_key.rsplit(".", 1)[0] if "." in cause.full_key else "the config"
        return f"Error: {cause.full_key}: {where} has no setting {key!r}{suggest(key, valid)}."
    if isinstance(cause, ValidationError) and getattr(cause, "full_key", None):
        message = str(cause.msg).splitlines()[0]
        return f"Error: {cause.full_key}: {message}."
    if isinstance(error, ConfigCompositionException):
        text = " ".join(line.strip() for line in str(error).splitlines() if line.strip())
        if isinstance(error.__cause__, OmegaConfBaseException):
            text += ": " + re.sub(r"\s+", " ", str(error.__cause__.msg if hasattr(error.__cause__, "msg") else error.__cause__))
        return f"Error: {text}"
    return None


def install() -> None:
    """Makes Hydra report user errors in one line (idempotent; a no-op if Hydra's internals moved)."""
    try:
        import hydra._internal.utils as internal
    except ImportError:  # pragma: no cover - Hydra's layout changed: keep its own reporting
        return
    if getattr(internal.run_and_report, "_jaxdl", False):
        return
    original = internal.run_and_report

    def run_and_report(func):
        def reported():
            try:
                return func()
            except Exception as error:
                message = None if os.environ.get("HYDRA_FULL_ERROR") == "1" else one_line(error)
                if message is None:
                    raise
            print(message, file=sys.stderr)
            sys.exit(1)

        return original(reported)

    run_and_report._jaxdl = True
    internal.run_and_report = run_and_report
