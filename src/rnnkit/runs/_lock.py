"""One writer per run directory: an OS file lock on `<run>/.lock`, held for the writer's life.

The lock is `fcntl.flock` on a file that stays open in the process: the kernel releases it when
the process ends, however it ends (SIGKILL included), so a crashed run never leaves a stale lock
behind. The file holds the holder's PID, for the message a second writer gets.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from rnnkit.errors import CheckpointError

LOCK = ".lock"

_held: dict[Path, IO[str]] = {}  # run directory -> the open lock file, for the process's life


class RunInUse(CheckpointError):
    """Another process writes this run directory now."""


def lock_run_dir(run_dir: Path) -> None:
    """Take `run_dir`'s lock (creating the directory) or raise RunInUse naming the holder's PID.
    Taking a lock this process already holds is a no-op; `release_run_dir` gives it back."""
    run_dir = Path(run_dir)
    key = run_dir.resolve()
    if key in _held:
        return
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise CheckpointError(f"--run-dir: {run_dir} exists and is not a directory") from None
    if not run_dir.is_dir():
        raise CheckpointError(f"--run-dir: {run_dir} exists and is not a directory")
    f = open(run_dir / LOCK, "a+")  # noqa: SIM115  held open until release or exit
    try:
        import fcntl

        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except ImportError:  # no flock (Windows): one writer is the user's to ensure
        pass
    except BlockingIOError:
        f.seek(0)
        holder = f.read().strip() or "unknown"
        f.close()
        raise RunInUse(
            f"{run_dir} is in use by another rnnkit process (PID {holder}); wait for it to finish, "
            "or choose another --run-dir"
        ) from None
    except BaseException:
        f.close()
        raise
    f.seek(0)
    f.truncate()
    f.write(f"{os.getpid()}\n")
    f.flush()
    _held[key] = f


def release_run_dir(run_dir: Path) -> None:
    """Give back the lock `lock_run_dir` took (closing the file releases it)."""
    f = _held.pop(Path(run_dir).resolve(), None)
    if f is not None:
        with contextlib.suppress(OSError):
            f.close()


@contextlib.contextmanager
def locked_run_dir(run_dir: Path) -> Iterator[Path]:
    """`lock_run_dir` for the duration of a `with` block."""
    run_dir = Path(run_dir)
    already = run_dir.resolve() in _held
    lock_run_dir(run_dir)
    try:
        yield run_dir
    finally:
        if not already:
            release_run_dir(run_dir)


def new_run_dir(parent: Path, name: str) -> Path:
    """A run directory `parent/name` created now, or `name-2`, `name-3`, ... when it exists: two
    runs started in the same second never share one (mkdir is atomic)."""
    parent.mkdir(parents=True, exist_ok=True)
    for n in range(1, 10_000):
        candidate = parent / (name if n == 1 else f"{name}-{n}")
        try:
            candidate.mkdir()
        except FileExistsError:
            continue
        return candidate
    raise CheckpointError(f"{parent}: no free run directory name {name}-N")
