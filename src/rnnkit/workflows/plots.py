"""Figures for run directories: matplotlib without a display, PNGs written atomically."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from rnnkit._atomic import atomic_write_bytes


def pyplot() -> Any:
    """matplotlib.pyplot on the Agg backend (no display needed), imported only when plotting."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_png(fig: Any, path: Path) -> None:
    """Render `fig` to PNG in memory, close it, and replace `path` atomically."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    pyplot().close(fig)
    atomic_write_bytes(Path(path), buffer.getvalue())
