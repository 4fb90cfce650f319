"""The rule every command follows for a file it writes (an export, a plot, a converted file):
an existing file is replaced only with `--force`, a file a run directory owns (its config,
checkpoints, metrics, curves, lock) never, and the directory it goes into must exist. Checked
before any work, so a refusal costs nothing; the write itself is atomic (`rnnkit._atomic`)."""

from __future__ import annotations

import os
from pathlib import Path

from rnnkit.errors import ConfigError
from rnnkit.runs._files import CONFIG, CURVES, METRICS, MODEL, OPTIMIZER, holds_run
from rnnkit.runs._lock import LOCK

RUN_FILES = frozenset({CONFIG, MODEL, OPTIMIZER, METRICS, CURVES, LOCK})


def check_output(path: str | os.PathLike[str], force: bool = False, flag: str = "--out") -> Path:
    """`path` as a Path, or a ConfigError naming `flag` when the output rule refuses it."""
    path = Path(path)
    if path.name in RUN_FILES and holds_run(path.parent):
        raise ConfigError(f"{flag}: {path} belongs to the run in {path.parent}; write it elsewhere")
    if path.is_dir():
        raise ConfigError(f"{flag}: {path} is a directory; name a file")
    if (path.exists() or path.is_symlink()) and not force:
        raise ConfigError(f"{flag}: {path} exists; choose another name or pass --force to replace it")
    parent = path.parent
    if not parent.is_dir():
        raise ConfigError(f"{flag}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"{flag}: directory {parent} is not writable")
    return path
