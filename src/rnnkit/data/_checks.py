"""Argument checks shared by the data functions: every message names the argument, the expectation and the value."""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np

from rnnkit.data._errors import DataError


def check_int(value: Any, *, name: str, minimum: int) -> int:
    """Return `value` as a Python int, refusing bools, floats and anything below `minimum`.

    Floats are refused even when integral: `batch_size=32.0` usually means a config value was
    parsed wrongly, and silently accepting it would hide that.
    """
    if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Integral):
        raise DataError(f"{name} must be an integer >= {minimum}; got {value!r} ({type(value).__name__})")
    value = int(value)
    if value < minimum:
        raise DataError(f"{name} must be an integer >= {minimum}; got {value}")
    return value


def check_images(images: Any, *, name: str) -> np.ndarray:
    """Images as rnnkit stores them: a uint8 NumPy array [N, H, W]."""
    if not isinstance(images, np.ndarray):
        raise DataError(f"{name} must be a NumPy uint8 array [N, H, W]; got {type(images).__name__}")
    if images.dtype != np.uint8 or images.ndim != 3:
        raise DataError(f"{name} must be a uint8 array [N, H, W]; got {images.dtype} with shape {tuple(images.shape)}")
    return images


def check_labels(labels: Any, *, name: str, count: int, count_of: str) -> np.ndarray:
    """Labels as rnnkit stores them: an int64 array [N] with one label per image."""
    if not isinstance(labels, np.ndarray):
        raise DataError(f"{name} must be a NumPy int64 array [N]; got {type(labels).__name__}")
    if labels.dtype != np.int64 or labels.ndim != 1:
        raise DataError(f"{name} must be an int64 array [N]; got {labels.dtype} with shape {tuple(labels.shape)}")
    if labels.shape[0] != count:
        raise DataError(f"{name} holds {labels.shape[0]} labels but {count_of} holds {count} images; they must match")
    return labels
