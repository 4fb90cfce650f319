"""Atomic file writes: a reader (or a crash) never sees a half-written file under the final name.

The data is written to a temporary file in the destination's own directory (so the final
`os.replace` is a rename within one file system, which POSIX makes atomic), flushed and fsynced,
and only then renamed over the destination. On any failure the temporary file is removed and
whatever the user had under the final name is left exactly as it was.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO


def temp_path_for(path: Path) -> Path:
    """A fresh hidden name next to `path`, unlikely to collide with a concurrent writer's."""
    return path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")


def open_exclusive(path: Path) -> BinaryIO:
    """Create `path` for writing, failing if it exists; permissions follow the umask like `open`."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    return os.fdopen(fd, "wb")


def fsync_dir(directory: Path) -> None:
    """Make a rename in `directory` durable; best effort (not every platform can open directories)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def commit(tmp: Path, path: Path) -> None:
    """Rename a fully written and fsynced temporary file over `path`."""
    os.replace(tmp, path)
    fsync_dir(path.parent)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str]) -> Iterator[BinaryIO]:
    """Yield a binary file; on normal exit its contents replace `path` atomically, on error nothing changes."""
    path = Path(path)
    tmp = temp_path_for(path)
    try:
        with open_exclusive(tmp) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        commit(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):  # a failing cleanup must not hide the error that caused it
            tmp.unlink()
        raise


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Replace `path` with `data` atomically."""
    with atomic_write(path) as f:
        f.write(data)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Replace `path` with `text`, UTF-8 encoded, atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))
