"""Two builds of rnnkit's native CPU kernel in one process, timed step by step in alternation.

    mkdir -p /tmp/old && git archive HEAD~1 src/rnnkit/_native | tar -x -C /tmp/old
    PYTHONPATH=src python benchmarks/native_ab.py --other /tmp/old/src/rnnkit/_native/rnn_cpu.cc \\
        --workloads train:128:28:28,train:1024:28:28 --steps 60

On a shared machine whose speed drifts by 15% or more between minutes, two processes timed
one after the other can't resolve a change worth a few percent. Here the kernel built from
this checkout's `rnn_cpu.cc` ("this") and one built from `--other` (say, the previous commit's,
extracted as above with the headers it includes beside it; one from before the headers were
split out of it is a single file) are loaded side by side, each under its own
FFI target names, and the seed's model is compiled once against each. Their steps then run
alternately, this, other, this, other, ..., so drift falls on both alike; the figure that
counts is the median of the paired ratios (other's step time over this one's: above 1, this
build is faster). Both builds are called the same way, so they must share the FFI signatures:
a `rnn_cpu.cc` from before 0d8b00d (forward calls taking prepared weights) can't be paired with
a later one; compare those with `rnnkit bench` runs alternating between two checkouts.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def _targets_prefixed(prefix: str) -> Iterator[None]:
    """While tracing: every native FFI call goes to `prefix` + its usual target name."""
    from rnnkit import _native

    call = _native._call

    def renamed(target: str, results: Any, *args: Any, **attrs: Any) -> Any:
        return call(prefix + target, results, *args, **attrs)

    _native._call = renamed
    try:
        yield
    finally:
        _native._call = call


def load_other(source: Path, prefix: str, flags: tuple[str, ...] = ()) -> None:
    """Build `source` into a temporary library and register its handlers as `prefix` + target.
    `flags` go on the compiler's command line after rnnkit's own (`-mno-avx512f`: the build a
    CPU without AVX-512 gets)."""
    import subprocess

    import jax

    from rnnkit import _native

    _native.require()  # this checkout's kernel first: OpenBLAS starts single-threaded
    out = Path(tempfile.mkdtemp(prefix="rnnkit-ab-")) / "librnnkit_other.so"
    command = [str(source) if part == str(_native.SOURCE) else part for part in _native.compile_command(out)]
    command += flags
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"building {source} failed:\n{done.stderr}")
    lib = ctypes.CDLL(str(out))
    if hasattr(lib, "rnnkit_set_threads"):  # older builds took OpenBLAS's thread count
        lib.rnnkit_set_threads.argtypes = (ctypes.c_int64,)
        lib.rnnkit_set_threads(_native.kernel_threads())
    for target, symbol in _native.TARGETS.items():
        jax.ffi.register_ffi_target(prefix + target, jax.ffi.pycapsule(getattr(lib, symbol)), platform="cpu")
    load_other.library = lib  # type: ignore[attr-defined]  # kept alive with the process


def main(argv: list[str] | None = None) -> int:
    import jax

    from rnnkit._host import tune_allocator
    from rnnkit.cli import _workload_list

    tune_allocator()
    from rnnkit.workflows.bench import _RnnkitRunner

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--other", required=True, type=Path, help="the other kernel's rnn_cpu.cc, its headers beside it")
    p.add_argument("--other-flags", default="", help="extra compiler flags for the other build, space-separated")
    p.add_argument("--workloads", default="train:128:28:28")
    p.add_argument("--steps", type=int, default=60, help="timed steps of each build per workload")
    p.add_argument("--warmup", type=int, default=5)
    args = p.parse_args(argv)
    load_other(args.other, "other_", tuple(args.other_flags.split()))
    for w in _workload_list(args.workloads):
        with jax.numpy_dtype_promotion("standard"):
            this = _RnnkitRunner(w, 0, "dynamic", "native")
            with _targets_prefixed("other_"):
                other = _RnnkitRunner(w, 0, "dynamic", "native")
                for _ in range(args.warmup):  # compiles (traces) under the other targets
                    other.step()
            for _ in range(args.warmup):
                this.step()
            ratios, times = [], {"this": [], "other": []}
            for _ in range(args.steps):
                pair = {}
                for name, runner in (("this", this), ("other", other)):
                    t = time.perf_counter()
                    runner.step()
                    pair[name] = time.perf_counter() - t
                    times[name].append(pair[name])
                ratios.append(pair["other"] / pair["this"])
        q = statistics.quantiles(ratios, n=4)
        print(
            f"{w.key}: this {statistics.median(times['this']) * 1e3:.1f} ms, other "
            f"{statistics.median(times['other']) * 1e3:.1f} ms (medians); other/this per pair: median "
            f"{statistics.median(ratios):.3f}, quartiles {q[0]:.3f}-{q[2]:.3f}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
