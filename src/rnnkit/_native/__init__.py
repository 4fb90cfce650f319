"""rnnkit's native CPU kernel: each RNN layer over a whole sequence, forward and backward, in C++.

On CPU, XLA runs a `lax.scan` step as a few dozen small operations, each with its own
dispatch, and the loop's small matrix products well below the machine's matmul speed (see
benchmarks/RESULTS.md). `rnn_cpu.cc` runs one layer per XLA FFI call instead, with its own
threads: per step the input projection (with fewer batch rows than threads, a block of steps
at a time), one or two products by the loop weights and one vectorised pass over each row for
the gates; in the backward pass the weight and input gradients a block of steps at a time.
Products by a weight matrix run on an AVX-512 microkernel over weights packed once per call,
and the weight gradients on another over both operands packed a chunk of rows at a time
(`avx512()` says whether this build has them). Without AVX-512 the products run on OpenBLAS's
`sgemm`, which is loaded single-threaded (the kernel runs its own threads, `kernel_threads`),
but those of one to three rows, which with AVX2 and FMA run on a small kernel of their own.
`_layer._native_layer` wraps a forward and a backward call in a custom VJP, so
`dynamic_rnn(implementation="native")` computes what `"fused"` and `"per_step"` compute, to
float32 rounding.

Built, not shipped: `python -m rnnkit._native` compiles it on the machine that runs it
(`make install` does), with the C++ compiler found as `$CXX` or `c++`, the XLA FFI headers
jaxlib ships and the OpenBLAS of the `scipy-openblas32` wheel. Where it is not built (no
compiler, or the build failed), `implementation="auto"` uses the per-step path, and
`implementation="native"` raises saying how to build it.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import jax
import numpy as np
from jaxtyping import Array

from rnnkit._kinds import LOOP_KIND, LOOP_KINDS

SOURCE = Path(__file__).with_name("rnn_cpu.cc")
# The headers SOURCE includes (rnn_math.h, rnn_cells.h, ...): the kernel is one translation
# unit, SOURCE, split by concern into these files beside it.
HEADERS = tuple(sorted(SOURCE.parent.glob("rnn_*.h")))
LIBRARY = Path(__file__).with_name("librnnkit_cpu.so")
# Optimised for the CPU it is built on (it is built where it runs). -fno-math-errno and
# -fno-trapping-math let the compiler vectorise the row loops: tanh's final select leaves its
# division to one branch, which only AVX-512's masked instructions could vectorise as long as
# the division might trap; without AVX-512 (AVX2 CPUs: most AMD ones, older Intel ones) every
# activation ran one float at a time, the forward pass 2-3x slower. Neither flag lets the
# compiler reorder arithmetic, so the numbers stay the same.
CXXFLAGS = (
    "-O3",
    "-march=native",
    "-fno-math-errno",
    "-fno-trapping-math",
    "-fopenmp-simd",
    "-std=c++17",
    "-pthread",
    "-shared",
    "-fPIC",
)
# FFI target name -> symbol in the library: a forward and a backward call per loop kind
# (rnnkit/_kinds.py), `rnnkit_lstm_fwd` -> `RnnkitLstmFwd`.
TARGETS = {
    f"rnnkit_{kind.name}_{way}": f"Rnnkit{kind.symbol}{way.title()}" for kind in LOOP_KINDS for way in ("fwd", "bwd")
}


class NativeUnavailableError(RuntimeError):
    """The native kernel is not built here, or could not be loaded."""


def compiler() -> str | None:
    """The C++ compiler a build uses: $CXX, else c++ or g++ on the PATH (None: none found)."""
    return os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++")


def compile_command(output: Path) -> list[str]:
    """The compiler command line that builds the kernel into `output`."""
    import scipy_openblas32

    lib_dir = scipy_openblas32.get_lib_dir()
    return [
        compiler() or "c++",
        *CXXFLAGS,
        f"-I{jax.ffi.include_dir()}",
        f"-I{scipy_openblas32.get_include_dir()}",
        str(SOURCE),
        f"-L{lib_dir}",
        f"-l{scipy_openblas32.get_library()}",
        f"-Wl,-rpath,{lib_dir}",
        "-o",
        str(output),
    ]


def _newer_source() -> Path | None:
    """The kernel's first source file (SOURCE, then its HEADERS) newer than the built library,
    or None. The library is built from all of them: it is out of date where any changed."""
    built = LIBRARY.stat().st_mtime
    return next((p for p in (SOURCE, *HEADERS) if p.stat().st_mtime > built), None)


def build() -> Path:
    """Compile the kernel next to this module. The new library replaces the old one only once
    it is complete (a failed build leaves the previous one in place). Raises
    NativeUnavailableError with the compiler's message when the build fails."""
    try:
        scratch = tempfile.TemporaryDirectory(dir=LIBRARY.parent)
    except OSError as e:
        raise NativeUnavailableError(f"can't write next to the package ({e})") from e
    with scratch as tmp:
        partial = Path(tmp) / LIBRARY.name
        command = compile_command(partial)
        try:
            done = subprocess.run(command, capture_output=True, text=True, check=False)
        except OSError as e:
            raise NativeUnavailableError(f"no C++ compiler: running {command[0]!r} failed ({e})") from e
        if done.returncode != 0:
            raise NativeUnavailableError(f"the build failed:\n{' '.join(command)}\n{done.stderr.strip()}")
        os.replace(partial, LIBRARY)
    _load.cache_clear()
    return LIBRARY


_registered: list[str] = []
# The environment variables OpenBLAS takes its thread count from, the first set one winning.
_THREAD_VARIABLES = ("OPENBLAS_NUM_THREADS", "GOTO_NUM_THREADS", "OMP_NUM_THREADS")


def kernel_threads() -> int:
    """How many threads the kernel runs: what OpenBLAS would have used, the first positive
    OPENBLAS_NUM_THREADS, GOTO_NUM_THREADS or OMP_NUM_THREADS (its first entry), at most the
    CPUs this process may run on, else those CPUs."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    for name in _THREAD_VARIABLES:
        try:
            n = int(os.environ.get(name, "").split(",")[0])
        except ValueError:
            continue
        if n > 0:
            return max(1, min(n, cpus))
    return max(1, cpus)


@contextlib.contextmanager
def _single_threaded_openblas() -> Any:
    """OPENBLAS_NUM_THREADS=1 while the library (and with it scipy-openblas32) loads, then the
    user's setting back. OpenBLAS reads it once, when it loads: started with more threads and
    set to one afterwards, it keeps a worker thread, which right after start-up kept the
    kernel's own threads from running their sgemm calls side by side (see kThreads in
    rnn_cpu.cc)."""
    saved = os.environ.get("OPENBLAS_NUM_THREADS")
    os.environ["OPENBLAS_NUM_THREADS"] = "1"
    try:
        yield
    finally:
        if saved is None:
            del os.environ["OPENBLAS_NUM_THREADS"]
        else:
            os.environ["OPENBLAS_NUM_THREADS"] = saved


@functools.cache
def _load() -> str | None:
    """Load the library and register its FFI targets; the reason it can't be used, or None."""
    if not LIBRARY.exists():
        return f"it is not built ({LIBRARY} is missing)"
    newer = _newer_source()
    if newer is not None:
        return f"it is out of date ({LIBRARY} is older than {newer.name})"
    threads = kernel_threads()  # before the load changes the environment
    try:
        with _single_threaded_openblas():
            lib = ctypes.cdll.LoadLibrary(str(LIBRARY))
    except OSError as e:
        return f"it could not be loaded ({e})"
    lib.rnnkit_set_threads.argtypes = (ctypes.c_int64,)
    lib.rnnkit_set_threads(threads)
    _library.append(lib)
    if not _registered:  # once per process: a target's handler stays what was first registered
        for target, symbol in TARGETS.items():
            jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(getattr(lib, symbol)), platform="cpu")
        _registered.append(str(LIBRARY))
    return None


_library: list[ctypes.CDLL] = []


def threads() -> int:
    """How many threads the loaded kernel runs (NativeUnavailableError where it can't load)."""
    require()
    lib = _library[-1]
    lib.rnnkit_threads.restype = ctypes.c_int64
    return int(lib.rnnkit_threads())


def avx512() -> bool:
    """Whether the loaded kernel runs its products on its AVX-512 microkernels (built on a CPU
    with AVX-512) rather than on OpenBLAS (NativeUnavailableError where it can't load)."""
    require()
    lib = _library[-1]
    lib.rnnkit_avx512.restype = ctypes.c_int64
    return bool(lib.rnnkit_avx512())


def unavailable_reason() -> str | None:
    """Why the native kernel can't run here, or None when it can."""
    return _load()


def available() -> bool:
    return _load() is None


def require() -> None:
    """Raise NativeUnavailableError (saying how to build) unless the kernel is usable."""
    reason = _load()
    if reason is not None:
        raise NativeUnavailableError(
            f"implementation='native' needs rnnkit's native CPU kernel, but {reason}; "
            f"build it with `{Path(sys.executable).name} -m rnnkit._native` (needs a C++ compiler)"
        )


# ---------------------------------------------------------------------------------------------
# The calls. States are tuples, (c, h) for LSTMs and (h,) otherwise, as in `_recurrence`.


def _f32(*shape: int) -> jax.ShapeDtypeStruct:
    return jax.ShapeDtypeStruct(shape, np.float32)


def _call(target: str, results: list[jax.ShapeDtypeStruct], *args: Array, **attrs: Any) -> Any:
    require()  # loads the library and registers its targets, once
    return jax.ffi.ffi_call(target, results, vmap_method="sequential")(*args, **attrs)


def forward(
    kind: str,
    x: Array,
    weights: tuple[Array, ...],
    state0: tuple[Array, ...],
    lengths: Array,
    forget_bias: float,
    save: bool,
) -> tuple[Array, tuple[Array, ...], tuple[Array, ...]]:
    """One layer over x [T, B, I]: (outputs [T, B, H], final state, what `backward` needs;
    the last is empty arrays unless `save`). `weights` are the cell's own arrays (`_recurrence.
    cell_weights`): the kernel reads its input and loop parts where they lie, so the
    program makes no copies of them before the call (at batch 1 those small XLA operations
    around the kernel's call cost more than the call: 3x the time on two cores)."""
    t, b, _ = x.shape
    h = state0[-1].shape[-1]
    n_saved = LOOP_KIND[kind].saved_per_unit * h
    saved = _f32(t, b, n_saved) if save else _f32(0)
    seq = _f32(t, b, h) if save else _f32(0)
    states = [_f32(b, h) for _ in state0]
    extra = [seq, seq] if kind == "lstm" else []  # tanh(c) and the previous c
    attrs = {"forget_bias": np.float32(forget_bias)} if kind == "lstm" else {}
    results = [_f32(t, b, h), *states, saved, *extra, seq]
    outs, *rest = _call(f"rnnkit_{kind}_fwd", results, x, *weights, *state0, lengths, **attrs)
    return outs, tuple(rest[: len(state0)]), tuple(rest[len(state0) :])


def backward(
    kind: str,
    x: Array,
    w_in: Array,
    ws: tuple[Array, ...],
    saved: tuple[Array, ...],
    d_outs: Array,
    d_final: tuple[Array, ...],
    lengths: Array,
    need_dx: bool = True,
) -> tuple[Array | None, Array, Array, tuple[Array, ...], tuple[Array, ...]]:
    """The layer's gradients from its outputs' and final state's: (d_x, d_w_in, d_b_in,
    d_ws, d_state0). Without `need_dx` the kernel skips the input's gradient and d_x is None."""
    results = [_f32(*x.shape) if need_dx else _f32(0), _f32(*w_in.shape), _f32(w_in.shape[1])]
    results += [_f32(*w.shape) for w in ws]
    results += [_f32(*d.shape) for d in d_final]
    loop_weights = ws[:1] if kind == "gru_reset_after" else ws  # its hidden bias is not needed
    d_x, d_w_in, d_b_in, *rest = _call(
        f"rnnkit_{kind}_bwd", results, x, w_in, *loop_weights, *saved, d_outs, *d_final, lengths
    )
    return d_x if need_dx else None, d_w_in, d_b_in, tuple(rest[: len(ws)]), tuple(rest[len(ws) :])
