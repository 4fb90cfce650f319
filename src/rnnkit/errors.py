"""Errors that mean "the user asked for something that cannot be done", as opposed to bugs.

The CLI prints these as one line on stderr and exits with status 2; anything else is an
internal error and keeps its traceback. `rnnkit.data.DataError` is the data package's own.
"""

from __future__ import annotations


class ConfigError(ValueError):
    """A setting that cannot be used: an unknown cell kind, sizes that do not fit, ..."""


class CheckpointError(ValueError):
    """A run directory or checkpoint that is missing, incomplete or does not match its config."""
