"""The two exceptions a user sees as one line (`error: ...`, exit 2) instead of a traceback."""

from __future__ import annotations


class WmError(Exception):
    """A problem the user can fix (missing input, corrupt file, bad setting): ``str(err)`` says what and how."""


class ConfigError(WmError):
    """A problem in ``params.yaml``: ``str(err)`` is one line per problem, each naming the dotted key path."""
