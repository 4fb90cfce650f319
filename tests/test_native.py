"""Building and loading rnnkit's native CPU kernel (rnnkit/_native): what happens when it
isn't there or its build fails. Its numbers are checked in test_fused.py."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import jax
import pytest

import rnnkit as rk
from rnnkit import _native

from cases import INPUT_SIZE, equations, ffi_targets, make_cell, path_taken, random_inputs


@pytest.fixture
def elsewhere(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    """Point the module at a library path in tmp_path, and forget what was loaded."""
    library = tmp_path / "librnnkit_cpu.so"
    monkeypatch.setattr(_native, "LIBRARY", library)
    _native._load.cache_clear()
    yield library
    _native._load.cache_clear()


def test_missing_library_is_reported_and_auto_runs_without_it(elsewhere: Path) -> None:
    assert _native.unavailable_reason() == f"it is not built ({elsewhere} is missing)"
    cell = make_cell("gru")
    x = random_inputs((2, 3, INPUT_SIZE))
    with pytest.raises(_native.NativeUnavailableError, match=r"implementation='native' needs .*-m rnnkit\._native"):
        rk.dynamic_rnn(cell, x, implementation="native")
    if jax.default_backend() == "cpu":
        assert path_taken(lambda v: rk.dynamic_rnn(cell, v), x) == "per_step"  # auto: the per-step path


def test_failed_build_raises_with_the_compiler_message_and_keeps_the_old_library(
    elsewhere: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    elsewhere.write_bytes(b"the previous build")
    compiler = tmp_path / "broken-c++"
    compiler.write_text("#!/bin/sh\necho 'error: no space left' >&2\nexit 1\n")
    compiler.chmod(0o755)
    monkeypatch.setenv("CXX", str(compiler))
    with pytest.raises(
        _native.NativeUnavailableError, match=r"the build failed:\n.*broken-c\+\+.*\nerror: no space left"
    ):
        _native.build()
    assert elsewhere.read_bytes() == b"the previous build"
    assert {p.name for p in tmp_path.iterdir()} == {"librnnkit_cpu.so", "broken-c++"}  # no partial file left


def test_no_compiler_is_reported(elsewhere: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
    with pytest.raises(_native.NativeUnavailableError, match=r"no C\+\+ compiler: running .*no-such-compiler"):
        _native.build()
    assert not elsewhere.exists()


def test_library_older_than_its_source_is_not_used(elsewhere: Path) -> None:
    elsewhere.write_bytes(b"stale")
    source_time = _native.SOURCE.stat().st_mtime
    os.utime(elsewhere, (source_time - 10, source_time - 10))
    assert _native.unavailable_reason() == f"it is out of date ({elsewhere} is older than rnn_cpu.cc)"


def test_the_built_kernel_is_loaded_here(native_kernel: None) -> None:
    """Where a C++ compiler is, `make install` built the kernel and auto uses it on CPU."""
    assert _native.available()
    if jax.default_backend() == "cpu":
        cell = make_cell("gru")
        jaxpr = jax.make_jaxpr(lambda v: rk.dynamic_rnn(cell, v))(random_inputs((2, 3, INPUT_SIZE)))
        assert ffi_targets(jaxpr) == ["rnnkit_gru_fwd"]


@pytest.mark.parametrize(
    ("precision", "native"), [("highest", True), (None, True), ("F32_F32_F32", True), ("BF16_BF16_F32_X3", False)]
)
def test_the_kernel_takes_only_full_float32_precisions(native_kernel: None, precision: object, native: bool) -> None:
    """The kernel multiplies in float32 and nothing else, so a cell that asks for another
    algorithm is refused by implementation="native", naming its precision, and runs per_step
    under "auto", through XLA, which does what the algorithm says (or refuses it)."""
    if jax.default_backend() != "cpu":
        pytest.skip("the native kernel is CPU-only")
    cell = rk.GRUCell(4, input_size=INPUT_SIZE, key=jax.random.key(0), precision=precision)
    x = random_inputs((2, 3, INPUT_SIZE))
    if native:
        assert ffi_targets(jax.make_jaxpr(lambda v: rk.dynamic_rnn(cell, v, implementation="native"))(x))
    else:
        with pytest.raises(ValueError, match=r"implementation='native' .*; layer 0 \(GRUCell\) has precision="):
            rk.dynamic_rnn(cell, x, implementation="native")
    auto = jax.make_jaxpr(lambda v: rk.dynamic_rnn(cell, v))(x)
    assert (ffi_targets(auto) == ["rnnkit_gru_fwd"]) is native
    dots = [str(e.params["precision"]) for e in equations(auto) if e.primitive.name == "dot_general"]
    assert any("BF16_BF16_F32_X3" in p for p in dots) is not native


def test_ffi_targets_keep_their_names() -> None:
    """The FFI targets, derived from the loop kinds, keep the names of the C symbols the kernel
    exports (loading it looks each one up)."""
    assert _native.TARGETS == {
        "rnnkit_rnn_fwd": "RnnkitRnnFwd",
        "rnnkit_rnn_bwd": "RnnkitRnnBwd",
        "rnnkit_lstm_fwd": "RnnkitLstmFwd",
        "rnnkit_lstm_bwd": "RnnkitLstmBwd",
        "rnnkit_gru_fwd": "RnnkitGruFwd",
        "rnnkit_gru_bwd": "RnnkitGruBwd",
        "rnnkit_gru_reset_after_fwd": "RnnkitGruAfterFwd",
        "rnnkit_gru_reset_after_bwd": "RnnkitGruAfterBwd",
    }


def test_unwritable_package_directory_is_reported(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(_native, "LIBRARY", tmp_path / "no-such-dir" / "librnnkit_cpu.so")
    with pytest.raises(_native.NativeUnavailableError, match=r"can't write next to the package"):
        _native.build()


_LOAD_IN_A_NEW_PROCESS = """
import json, os, sys
import jax  # its threads, and NumPy's OpenBLAS's, exist before the kernel loads
def tasks():
    return len(os.listdir("/proc/self/task"))
before = tasks()
from rnnkit import _native
_native.require()
print(json.dumps({"added": tasks() - before, "threads": _native.threads(),
                  "env": os.environ.get("OPENBLAS_NUM_THREADS")}))
"""


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="counts threads through Linux's /proc")
@pytest.mark.parametrize(("setting", "expected"), [(None, None), ("1", 1), ("64", None)])
def test_kernel_threads_follow_openblas_settings_and_openblas_starts_single_threaded(
    native_kernel: None, setting: str | None, expected: int | None
) -> None:
    """OpenBLAS loads with one thread (no worker threads of its own, which kept the kernel's
    threads from calling sgemm side by side), the kernel runs as many threads as OpenBLAS would
    have (OPENBLAS_NUM_THREADS, at most the CPUs; else the CPUs), and the user's setting is
    left as it was."""
    import json
    import subprocess
    import sys

    env = {
        k: v for k, v in os.environ.items() if k not in ("OPENBLAS_NUM_THREADS", "GOTO_NUM_THREADS", "OMP_NUM_THREADS")
    }
    if setting is not None:
        env["OPENBLAS_NUM_THREADS"] = setting
    done = subprocess.run(
        [sys.executable, "-c", _LOAD_IN_A_NEW_PROCESS], env=env, capture_output=True, text=True, check=True
    )
    got = json.loads(done.stdout.strip().splitlines()[-1])
    cpus = len(os.sched_getaffinity(0))
    assert got == {"added": 0, "threads": expected or cpus, "env": setting}
