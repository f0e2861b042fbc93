"""Errors a user can fix: each carries one line that names what is wrong and the fix.

The entry point prints a `UserError` as that single line (the traceback goes
to the run's `failure.json`); anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class UserError(Exception):
    """Base of the errors caused by settings, data or files rather than by jaxdl's code."""


class SettingsError(UserError, ValueError):
    """A setting is unknown, of the wrong kind, or does not fit the model, task or data chosen."""
