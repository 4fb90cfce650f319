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

Built by the package's build backend (scikit-build-core running CMakeLists.txt) when a wheel
is built or the package installed from source: rnn_cpu.cc compiled once per instruction set,
`librnnkit_cpu_avx512.so` (x86-64-v4), `librnnkit_cpu_avx2.so` (x86-64-v3: AVX2 and FMA) and
`librnnkit_cpu_portable.so` (any x86-64), so one wheel serves every x86-64 CPU. The first use
loads the best build this CPU can run (`select_isa`); RNNKIT_NATIVE_ISA=avx512|avx2|portable
forces one. OpenBLAS is the `scipy-openblas32` wheel's, loaded from wherever that package is
installed just before the kernel. Nothing is compiled at run time. Where there is no kernel
(the machine is not x86-64, or the package was installed from source without a C++ compiler),
`implementation="auto"` uses the per-step path, and `implementation="native"` raises saying why.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import jax
import numpy as np
from jaxtyping import Array

from rnnkit._kinds import LOOP_KIND, LOOP_KINDS

# The kernel's one translation unit, which includes the rnn_*.h headers beside it (in a source
# checkout and the sdist; a wheel ships the built libraries only).
SOURCE = Path(__file__).with_name("rnn_cpu.cc")
# The instruction sets the kernel is built for (CMakeLists.txt), best first, each with the CPU
# features (as Linux's /proc/cpuinfo names them) its build's -march level lets the compiler use.
_X86_64_V3 = ("avx", "avx2", "bmi1", "bmi2", "f16c", "fma", "movbe", "abm", "xsave")
ISAS: dict[str, tuple[str, ...]] = {
    "avx512": (*_X86_64_V3, "avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl"),  # x86-64-v4
    "avx2": _X86_64_V3,
    "portable": (),  # x86-64: SSE2
}
# Forces one of ISAS (auto or unset: the best this CPU runs); read once, at the first use.
ISA_VARIABLE = "RNNKIT_NATIVE_ISA"
# FFI target name -> symbol in the library: a forward and a backward call per loop kind
# (rnnkit/_kinds.py), `rnnkit_lstm_fwd` -> `RnnkitLstmFwd`.
TARGETS = {
    f"rnnkit_{kind.name}_{way}": f"Rnnkit{kind.symbol}{way.title()}" for kind in LOOP_KINDS for way in ("fwd", "bwd")
}


class NativeUnavailableError(RuntimeError):
    """The native kernel is not built here, or could not be loaded."""


def library(isa: str) -> Path:
    """The library built for `isa`: in the first folder of this package's path that has it (an
    editable install keeps the built libraries apart from the sources), else where a wheel
    puts it, next to this module."""
    name = f"librnnkit_cpu_{isa}.so"
    found = (Path(folder) / name for folder in __path__)
    return next((path for path in found if path.exists()), Path(__file__).with_name(name))


def cpu_features() -> frozenset[str]:
    """The CPU's features as Linux lists them (/proc/cpuinfo's flags); empty where unknown."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.partition(":")[2].split())
    except OSError:
        pass
    return frozenset()


@functools.cache
def select_isa() -> tuple[str, str]:
    """(the instruction set whose build this process runs, why). RNNKIT_NATIVE_ISA names it
    where set (and not `auto`); otherwise the best of ISAS this CPU has every feature for.
    Raises NativeUnavailableError where the machine is not x86-64, or the variable names no
    build or one this CPU can't run."""
    machine = platform.machine()
    if machine.lower() not in ("x86_64", "amd64"):
        raise NativeUnavailableError(f"there is none for this machine ({machine}; the kernel is built for x86-64)")
    have = cpu_features()
    forced = os.environ.get(ISA_VARIABLE, "").strip()
    if forced in ("", "auto"):
        isa = next(isa for isa, needs in ISAS.items() if have.issuperset(needs))
        return isa, {
            "avx512": "this CPU has AVX-512",
            "avx2": "this CPU has AVX2 and FMA, not AVX-512",
            "portable": "this CPU has neither AVX-512 nor AVX2 with FMA",
        }[isa]
    if forced not in ISAS:
        raise NativeUnavailableError(f"{ISA_VARIABLE} must be auto, {', '.join(ISAS)} or unset; got {forced!r}")
    missing = [feature for feature in ISAS[forced] if feature not in have]
    if missing:
        raise NativeUnavailableError(
            f"{ISA_VARIABLE}={forced} asks for the {forced} build, which this CPU can't run "
            f"(it lacks {', '.join(missing)})"
        )
    return forced, f"forced by {ISA_VARIABLE}={forced}"


def build(
    prefix: Path, *, source: Path = SOURCE, isas: tuple[str, ...] = tuple(ISAS), build_dir: Path | None = None
) -> list[Path]:
    """Build the kernel from a source checkout with the package's own CMake project (the one
    the wheel's build runs) and install its libraries under `prefix` (prefix/rnnkit/_native):
    for runs from the checkout's src/ without installing (`python -m rnnkit._native`), and
    for benchmarks/native_ab.py's builds of other sources or flags (`isas` may name `native`,
    -march=native). CMake works in `build_dir` (default: the checkout's build/native).
    Raises NativeUnavailableError where this is no checkout, CMake is missing or the build
    fails."""
    root = SOURCE.parents[3]
    cmake = shutil.which("cmake")
    if not (root / "CMakeLists.txt").exists():
        raise NativeUnavailableError(
            f"{root} is no source checkout of rnnkit (no CMakeLists.txt); pip builds the kernel"
        )
    if cmake is None:
        raise NativeUnavailableError("building the kernel needs CMake (cmake on the PATH, or `pip install cmake`)")
    build_dir = build_dir or root / "build" / "native"
    steps = [
        [cmake, "-S", str(root), "-B", str(build_dir), f"-DPython_EXECUTABLE={sys.executable}",
         f"-DRNNKIT_KERNEL_SOURCE={source}", f"-DRNNKIT_ISAS={';'.join(isas)}"],
        [cmake, "--build", str(build_dir)],
        [cmake, "--install", str(build_dir), "--prefix", str(prefix)],
    ]  # fmt: skip
    for command in steps:
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise NativeUnavailableError(
                f"the build failed:\n{' '.join(command)}\n{(done.stdout + done.stderr).strip()}"
            )
    return [prefix / "rnnkit" / "_native" / f"librnnkit_cpu_{isa}.so" for isa in isas]


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


def _load_openblas() -> None:
    """Load the scipy-openblas32 wheel's OpenBLAS into the process's global symbols, where the
    kernel's libraries, which don't link it, find its functions (scipy-openblas32's
    "preloading" use)."""
    import scipy_openblas32

    path = Path(scipy_openblas32.get_lib_dir()) / scipy_openblas32.get_library(fullname=True)
    _library.append(ctypes.CDLL(str(path), mode=ctypes.RTLD_GLOBAL))


@functools.cache
def _load() -> str | None:
    """Load the library `select_isa` picks and register its FFI targets; the reason it can't be
    used, or None."""
    try:
        isa, _ = select_isa()
    except NativeUnavailableError as e:
        return str(e)
    path = library(isa)
    if not path.exists():
        return f"it is not built ({path.name} is not in {path.parent}: installed without a C++ compiler?)"
    threads = kernel_threads()  # before the load changes the environment
    try:
        with _single_threaded_openblas():
            _load_openblas()
            lib = ctypes.CDLL(str(path))
    except OSError as e:
        return f"it could not be loaded ({e})"
    lib.rnnkit_set_threads.argtypes = (ctypes.c_int64,)
    lib.rnnkit_set_threads(threads)
    _library.append(lib)
    if not _registered:  # once per process: a target's handler stays what was first registered
        for target, symbol in TARGETS.items():
            jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(getattr(lib, symbol)), platform="cpu")
        _registered.append(str(path))
    return None


_library: list[ctypes.CDLL] = []


def threads() -> int:
    """How many threads the loaded kernel runs (NativeUnavailableError where it can't load)."""
    require()
    lib = _library[-1]
    lib.rnnkit_threads.restype = ctypes.c_int64
    return int(lib.rnnkit_threads())


def avx512() -> bool:
    """Whether the loaded kernel runs its products on its AVX-512 microkernels (the avx512
    build) rather than on OpenBLAS (NativeUnavailableError where it can't load)."""
    require()
    lib = _library[-1]
    lib.rnnkit_avx512.restype = ctypes.c_int64
    return bool(lib.rnnkit_avx512())


def isa() -> str:
    """Which build the loaded kernel is: a key of ISAS (NativeUnavailableError where it can't load)."""
    require()
    return select_isa()[0]


def describe() -> str:
    """One line on the kernel, for `rnnkit env`: the build in use and why, or why there is none."""
    reason = unavailable_reason()
    if reason is not None:
        return f"absent: {reason}; dynamic_rnn runs its per-step XLA loop"
    chosen, why = select_isa()
    return f"{chosen} ({why}; {library(chosen).name}), {threads()} threads"


def unavailable_reason() -> str | None:
    """Why the native kernel can't run here, or None when it can."""
    return _load()


def available() -> bool:
    """Whether the native kernel runs here. A RNNKIT_NATIVE_ISA this CPU can't honour is an
    error (NativeUnavailableError), not a reason to fall back to the per-step path unseen."""
    if os.environ.get(ISA_VARIABLE, "").strip() not in ("", "auto"):
        try:
            select_isa()
        except NativeUnavailableError:
            require()
    return _load() is None


def require() -> None:
    """Raise NativeUnavailableError (saying why) unless the kernel is usable."""
    reason = _load()
    if reason is not None:
        raise NativeUnavailableError(f"implementation='native' needs rnnkit's native CPU kernel, but {reason}")


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
