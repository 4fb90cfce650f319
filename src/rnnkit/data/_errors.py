"""The one exception type of `rnnkit.data`.

It subclasses ValueError because every failure it reports is a bad value reaching us: a corrupt
or truncated file, a missing file, an argument out of range. The CLI catches exactly this type
and turns it into a one-line message with exit status 2, so every message must stand alone:
it names the file or argument, what was expected, and what came instead.
"""

from __future__ import annotations


class DataError(ValueError):
    """A data file or a data-loading argument is not what rnnkit expected; the message says why."""
