"""Test-wide set-up: strict dtype promotion everywhere, and a fixture for 64-bit mode."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

# The CLI's host settings (rnnkit/_host.py) stay out of the test processes: no compilation
# cache in the user's home, glibc's allocator as it is. tests/test_host.py turns them on where
# it tests them, in subprocesses.
os.environ.setdefault("RNNKIT_NO_COMPILE_CACHE", "1")
os.environ.setdefault("RNNKIT_KEEP_ALLOCATOR", "1")

# Instead, one JAX compilation cache for the whole run, in a temporary folder: the first
# conftest to load (pytest's own process, before it starts xdist's workers) makes it, and the
# workers and every subprocess a test starts inherit it through the environment. Most of the
# suite's time is XLA compiling, and many programs come again in another worker or process
# (a resumed run, the distributed tests' processes). rnnkit compare and bench measure
# compile times with the cache off (their own tests included). A cache already set (the
# user's, or this run's in a worker) is used as it is, and only its maker removes it.
_OWN_CACHE = None if "JAX_COMPILATION_CACHE_DIR" in os.environ else tempfile.mkdtemp(prefix="rnnkit-test-xla-")
if _OWN_CACHE:
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _OWN_CACHE
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"

import jax  # noqa: E402 (after the environment it reads)

# Any silent float32 -> float64 or bfloat16 -> float32 promotion inside rnnkit is a bug.
jax.config.update("jax_numpy_dtype_promotion", "strict")


def pytest_unconfigure(config: pytest.Config) -> None:
    if _OWN_CACHE:
        shutil.rmtree(_OWN_CACHE, ignore_errors=True)


@pytest.fixture
def standard_promotion() -> Iterator[None]:
    """JAX's standard dtype promotion for the test: optax (training) mixes Python floats and int32
    step counts, which the suite's strict promotion refuses. A module that trains opts in with
    `pytestmark = pytest.mark.usefixtures("standard_promotion")`."""
    with jax.numpy_dtype_promotion("standard"):
        yield


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small MNIST-format data set (tests/small_runs.py) shared by a module's tests; a module
    that needs other data defines its own `data_dir`."""
    from small_runs import make_idx_dir

    return make_idx_dir(tmp_path_factory.mktemp("idx"))


@pytest.fixture
def x64() -> Iterator[None]:
    """Run the test in JAX's 64-bit mode (float64 arrays), restored afterwards."""
    with jax.enable_x64(True):
        yield


@pytest.fixture
def per_step_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """dynamic_rnn without its fast path (rnnkit/_fused.py), for tests that compare it bit for
    bit with a path the fast one doesn't take (wrappers, return_all_states): the fast path adds
    x @ W_x + h @ W_h where the per-step cells multiply [x, h] @ W, equal up to float rounding
    (tests/test_fused.py checks that)."""
    from rnnkit import _fused

    monkeypatch.setattr(_fused, "unsupported", lambda cell: "the fast paths are turned off for this test")


@pytest.fixture
def native_kernel() -> None:
    """For tests of the native CPU kernel (rnnkit/_native): skipped where none could have been
    built (not x86-64, or no C++ compiler); elsewhere the package's build built it, and the
    test fails saying why the kernel can't be used."""
    import platform
    import shutil

    from rnnkit import _native

    if platform.machine().lower() not in ("x86_64", "amd64"):
        pytest.skip("the native CPU kernel is built for x86-64 only")
    if not _native.available() and not any(shutil.which(c) for c in ("c++", "g++", "clang++")):
        pytest.skip("no C++ compiler here, so no native CPU kernel")
    _native.require()
