"""Two builds of rnnkit's native CPU kernel in one process, timed step by step in alternation.

    mkdir -p /tmp/old && git archive HEAD~1 src/rnnkit/_native | tar -x -C /tmp/old
    PYTHONPATH=src python benchmarks/native_ab.py --other /tmp/old/src/rnnkit/_native/rnn_cpu.cc \\
        --workloads train:128:28:28,train:1024:28:28 --steps 60
    PYTHONPATH=src python benchmarks/native_ab.py --other-isa native   # the wheel's build vs -march=native

On a shared machine whose speed drifts by 15% or more between minutes, two processes timed
one after the other can't resolve a change worth a few percent. Here the kernel this process
loads ("this": the build rnnkit picks for this CPU, or RNNKIT_NATIVE_ISA's) and one built from
`--other` (default: this checkout's `rnn_cpu.cc`; say, the previous commit's, extracted as
above with the headers it includes beside it) for `--other-isa` (default `native`,
-march=native, the build rnnkit made on each machine before its wheel) with the package's own
CMake project are loaded side by side, each under its own
FFI target names, and the seed's model is compiled once against each. Their steps then run
alternately, this, other, this, other, ..., so drift falls on both alike; the figure that
counts is the median of the paired ratios (other's step time over this one's: above 1, this
build is faster). First it says whether the two give the same outputs and gradients, bit for
bit, on the seed's two layers. Both builds are called the same way, so they must share the FFI signatures:
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


def load_other(source: Path, prefix: str, isa: str = "native") -> None:
    """Build `source` for `isa` (one of rnnkit._native.ISAS, or `native`: -march=native, the
    build of each machine's own CPU that rnnkit used before its wheel) with the package's own
    CMake project, into a temporary folder, and register its handlers as `prefix` + target."""
    import jax

    from rnnkit import _native

    _native.require()  # this checkout's kernel first: OpenBLAS starts single-threaded
    scratch = Path(tempfile.mkdtemp(prefix="rnnkit-ab-"))
    (out,) = _native.build(scratch, source=source, isas=(isa,), build_dir=scratch / "build")
    lib = ctypes.CDLL(str(out))
    if hasattr(lib, "rnnkit_set_threads"):  # older builds took OpenBLAS's thread count
        lib.rnnkit_set_threads.argtypes = (ctypes.c_int64,)
        lib.rnnkit_set_threads(_native.kernel_threads())
    for target, symbol in _native.TARGETS.items():
        jax.ffi.register_ffi_target(prefix + target, jax.ffi.pycapsule(getattr(lib, symbol)), platform="cpu")
    load_other.library = lib  # type: ignore[attr-defined]  # kept alive with the process


def same_numbers(prefix: str) -> tuple[bool, float]:
    """Whether the seed's two layers (LSTM(128), GRU(256), batch 16 of 28 steps, with sequence
    lengths) give the same outputs, final state and gradients, bit for bit, on this build and
    on the one registered under `prefix`; and the largest difference."""
    import equinox as eqx
    import jax
    import jax.numpy as jnp
    import numpy as np

    import rnnkit as rk

    k = jax.random.split(jax.random.key(5), 3)
    cell = rk.MultiRNNCell([rk.LSTMCell(128, input_size=28, key=k[0]), rk.GRUCell(256, input_size=128, key=k[1])])
    x = jax.random.normal(k[2], (16, 28, 28))
    lengths = jnp.asarray(np.random.default_rng(0).integers(1, 29, 16))
    params, static = eqx.partition(cell, eqx.is_inexact_array)

    def loss(p: Any, x: Any) -> Any:
        out, state = rk.dynamic_rnn(eqx.combine(p, static), x, lengths, implementation="native")
        return jnp.sum(jnp.sin(out)) + sum(jnp.sum(jnp.cos(s)) for s in jax.tree_util.tree_leaves(state)), (out, state)

    def run() -> list[Any]:
        return [
            np.asarray(a)
            for a in jax.tree_util.tree_leaves(jax.jit(jax.value_and_grad(loss, (0, 1), has_aux=True))(params, x))
        ]

    this = run()
    with _targets_prefixed(prefix):
        other = run()
    worst = max(float(np.max(np.abs(a - b), initial=0.0)) for a, b in zip(this, other, strict=True))
    return all(np.array_equal(a, b) for a, b in zip(this, other, strict=True)), worst


def main(argv: list[str] | None = None) -> int:
    import jax

    from rnnkit._host import tune_allocator
    from rnnkit.cli import _workload_list

    tune_allocator()
    from rnnkit.workflows.bench import _RnnkitRunner

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    from rnnkit import _native

    p.add_argument(
        "--other", type=Path, default=_native.SOURCE, help="the other kernel's rnn_cpu.cc, its headers beside it"
    )
    p.add_argument(
        "--other-isa",
        default="native",
        choices=[*_native.ISAS, "native"],
        help="the instruction set the other kernel is built for (native: -march=native)",
    )
    p.add_argument("--workloads", default="train:128:28:28")
    p.add_argument("--steps", type=int, default=60, help="timed steps of each build per workload")
    p.add_argument("--warmup", type=int, default=5)
    args = p.parse_args(argv)
    load_other(args.other, "other_", args.other_isa)
    this_isa, why = _native.select_isa()
    equal, worst = same_numbers("other_")
    print(
        f"this: the {this_isa} build ({why}); other: {args.other} for {args.other_isa}; outputs and gradients "
        + ("bit-identical" if equal else f"differ, by up to {worst:.3g}"),
        flush=True,
    )
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
