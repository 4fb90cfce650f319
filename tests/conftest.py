"""Test-wide set-up: strict dtype promotion everywhere, and a fixture for 64-bit mode."""

from __future__ import annotations

from collections.abc import Iterator

import jax
import pytest

# Any silent float32 -> float64 or bfloat16 -> float32 promotion inside rnnkit is a bug.
jax.config.update("jax_numpy_dtype_promotion", "strict")


@pytest.fixture
def x64() -> Iterator[None]:
    """Run the test in JAX's 64-bit mode (float64 arrays), restored afterwards."""
    with jax.enable_x64(True):
        yield
