"""Host-side settings rnnkit's own commands make for speed, each documented and each skipped
where the user has already chosen.

The allocator. On Linux with glibc, XLA:CPU takes each program's scratch memory with one
malloc per call (about 90 MB for the seed's training step at batch 128). glibc serves a block
that large with a fresh mmap and returns it with munmap on free, so every call page-faults the
whole block in again: ~23 000 minor faults per training step, measured with getrusage, and
about a tenth of the step's time. `tune_allocator` asks glibc to serve every block from one
heap it keeps (mallopt: one arena, no mmap, no trimming), after which a step faults no page
(0 faults per step, measured the same way). The price is that freed memory stays with the
process for reuse instead of going back to the system: its resident size stays at its peak.

It is for XLA:CPU only, and left out where JAX will run on a GPU (`gpu_expected`): there a
step's buffers live on the device, and one arena serialises the threads XLA compiles with. On
two CPU cores the seed's static training step reached its first step in 21.4-24.6 s tuned
against 18.4-21.8 s untuned (four processes of each, alternating; one arena alone, without
the other two settings, 23.9-24.7 s). On the 16-core H200 machine, rnnkit's bench processes,
which tuned it and used a fresh compilation cache, took 36-70 s to their first step; the
unroll probe, one process with neither, built, compiled and timed each figure in 2-23 s.
Which of the two cost the time there was not isolated.
"""

from __future__ import annotations

import ctypes
import os
import sys

# mallopt parameters, from glibc's malloc.h.
_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8
# Environment variables through which a user tunes glibc's malloc: if any is set, theirs wins.
_USER_MALLOC_SETTINGS = (
    "GLIBC_TUNABLES",
    "MALLOC_ARENA_MAX",
    "MALLOC_MMAP_MAX_",
    "MALLOC_MMAP_THRESHOLD_",
    "MALLOC_TRIM_THRESHOLD_",
    "MALLOC_TOP_PAD_",
)
OPT_OUT = "RNNKIT_KEEP_ALLOCATOR"  # set to 1 to leave the allocator as it is
_GPU_PLUGINS = ("jax-cuda", "jax_cuda", "jax-rocm", "jax_rocm")  # JAX's GPU PJRT plugins' distributions
_GPU_DEVICE_FILES = ("/dev/nvidiactl", "/dev/kfd")  # NVIDIA's and AMD's (ROCm) driver

_tuned = False


def _gpu_plugin_installed() -> bool:
    from importlib import metadata

    return any((d.metadata["Name"] or "").lower().startswith(_GPU_PLUGINS) for d in metadata.distributions())


def gpu_expected() -> bool:
    """Whether JAX's default backend in this process will be a GPU, decided without starting
    JAX (the allocator must be set before its threads start): `JAX_PLATFORMS` (or the older
    `JAX_PLATFORM_NAME`) when set, its first entry being the default; else whether a GPU
    plugin for JAX is installed and a GPU driver's device file exists."""
    chosen = os.environ.get("JAX_PLATFORMS") or os.environ.get("JAX_PLATFORM_NAME") or ""
    first = chosen.split(",")[0].strip().lower()
    if first:
        return first != "cpu"
    return any(os.path.exists(f) for f in _GPU_DEVICE_FILES) and _gpu_plugin_installed()


def tune_allocator() -> bool:
    """Keep freed memory for reuse (see the module's docstring). Returns whether it did.

    Call it before JAX starts its thread pools (rnnkit's CLI does, for `train` and `bench`).
    It does nothing off Linux/glibc, when `RNNKIT_KEEP_ALLOCATOR=1`, when any of glibc's own
    malloc environment variables is set (the user's choice stands), or when JAX will run on a
    GPU (`gpu_expected`)."""
    global _tuned
    if _tuned:
        return True
    if sys.platform != "linux" or os.environ.get(OPT_OUT, "") not in ("", "0"):
        return False
    if gpu_expected():
        return False
    if any(name in os.environ for name in _USER_MALLOC_SETTINGS):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl, another allocator)
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    _tuned = all(
        mallopt(param, value) == 1
        for param, value in ((_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, 2**31 - 1))
    )
    return _tuned


# --- the compilation cache -------------------------------------------------------------------

CACHE_OPT_OUT = "RNNKIT_NO_COMPILE_CACHE"  # set to 1 to compile afresh in every process
MIN_COMPILE_TIME_S = 0.2  # programs that compile faster are not worth a file


def default_cache_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "rnnkit", "xla")


def enable_compile_cache(path: str | None = None) -> str | None:
    """Keep compiled XLA programs on disk (JAX's persistent compilation cache), so a program
    compiled once loads in a later process instead of compiling again. Returns the directory,
    or None where it left things alone.

    A static model is where this matters: the seed's static training step takes ~25 s to
    compile on two CPU cores and ~1.5 s to load from the cache. Only programs that took over
    0.2 s to compile are stored. It does nothing when `RNNKIT_NO_COMPILE_CACHE=1`, or when
    the user already chose a cache (`JAX_COMPILATION_CACHE_DIR` or jax's
    `jax_compilation_cache_dir`): theirs is used as it is."""
    import jax

    if os.environ.get(CACHE_OPT_OUT, "") not in ("", "0"):
        return None
    if os.environ.get("JAX_COMPILATION_CACHE_DIR") or jax.config.jax_compilation_cache_dir:
        return None
    path = path or default_cache_dir()
    try:
        os.makedirs(path, exist_ok=True)
    except OSError:  # a read-only home: compile as before
        return None
    use_compile_cache(path)
    return path


def use_compile_cache(path: str) -> None:
    """Point JAX's persistent compilation cache at `path`, unconditionally, storing programs that
    took over 0.2 s to compile (`rnnkit bench` gives each measurement an empty one). JAX's own
    threshold, a second, would leave out the program drawing a model's initial weights
    (0.4-1.4 s to compile, by machine load): a new process then compiled it again."""
    import jax

    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", MIN_COMPILE_TIME_S)
