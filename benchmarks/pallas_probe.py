"""Where the experimental per-step Pallas kernels (src/rnnkit/experimental/pallas.py) spend their
time on a GPU, against the fused path XLA runs (written for the speed issue's GPU rows; the
figures are in benchmarks/RESULTS.md, "GPU, fourth run").

    PYTHONPATH=src python benchmarks/pallas_probe.py recurrence   # one layer's loop, fwd and grad
    PYTHONPATH=src python benchmarks/pallas_probe.py launch       # one kernel, launched 1000 times

`recurrence`: one layer of the seed's model (LSTM 128 at T=28 and T=784, GRU 256 at T=28,
batch 128) as `pallas.recurrence` at unroll 4 and 1 and `_fused._recurrence` at unroll 4:
microseconds per forward pass and per gradient, mean of 30 calls after one warm-up. With
OUT set, each T=28 gradient program's optimized HLO is written there (to look for copies).
`launch`: the LSTM's forward kernel at several tilings (batch rows x hidden units x warps), in
a `fori_loop` of 1000 launches on the same buffers, against a kernel that only adds
(`nodot`), one that does nothing (`empty`), and XLA's own matmul + tanh and elementwise step in
the same loop: microseconds per iteration, mean of 3 calls after one warm-up.
"""

from __future__ import annotations

import functools
import os
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

from rnnkit import _fused
from rnnkit.experimental import pallas as _pallas


def _mean_us(fn: Any, *args: Any, n: int) -> float:
    r = fn(*args)
    jax.block_until_ready(r)
    t = time.perf_counter()
    for _ in range(n):
        r = fn(*args)
    jax.block_until_ready(r)
    return (time.perf_counter() - t) / n * 1e6


def recurrence(out: str | None) -> None:
    for kind, steps, batch, n in [("lstm", 28, 128, 128), ("gru", 28, 128, 256), ("lstm", 784, 128, 128)]:
        width = 4 * n if kind == "lstm" else 3 * n
        xp = jnp.ones((steps, batch, width)) * 0.01
        if kind == "lstm":
            ws: tuple = (jnp.ones((n, 4 * n)) * 0.01,)
        else:
            ws = (jnp.ones((n, 2 * n)) * 0.01, jnp.ones((n, n)) * 0.01)
        state = (jnp.zeros((batch, n)),) * (2 if kind == "lstm" else 1)
        fused = _fused._recurrence(kind, "highest", 1.0, 4, False)
        runs = {
            "pallas4": _pallas.recurrence(kind, "highest", 1.0, 4),
            "pallas1": _pallas.recurrence(kind, "highest", 1.0, 1),
            "fused4": lambda ws, xp, st, f=fused: f(ws, xp, st, None),
        }
        for name, f in runs.items():
            fwd = jax.jit(lambda ws, xp, st, f=f: f(ws, xp, st)[0])
            grad = jax.jit(jax.grad(lambda ws, xp, st, f=f: jnp.sum(f(ws, xp, st)[0]), argnums=(0, 1, 2)))
            compiled = grad.lower(ws, xp, state).compile()
            if out and steps == 28:
                with open(os.path.join(out, f"{kind}_{name}_grad_hlo.txt"), "w") as fh:
                    fh.write(compiled.as_text())
            f_us, g_us = _mean_us(fwd, ws, xp, state, n=30), _mean_us(compiled, ws, xp, state, n=30)
            print(kind, steps, name, "fwd us", round(f_us), "grad us", round(g_us), flush=True)


def launch() -> None:
    from jax.experimental.pallas import triton as pl_triton

    steps, batch, n = 28, 128, 128
    xp = jnp.ones((steps, batch, 4 * n))
    w = jnp.ones((n, 4 * n)) * 0.01
    bufs = (jnp.zeros((steps + 1, batch, n)), jnp.zeros((steps + 1, batch, n)), jnp.zeros((steps, batch, 4 * n)))

    def nodot(t_ref, xp_ref, w_ref, _h, _c, _g, h_ref, c_ref, g_ref, *, n, bb, hb, **kw):
        t = t_ref[0]
        rows, j0 = _pallas._tile(bb, hb)
        cols = pl.ds(j0, hb)
        h_ref[t + 1, rows, cols] = jnp.tanh(xp_ref[t, rows, cols] + h_ref[t, rows, cols])

    def empty(t_ref, xp_ref, w_ref, _h, _c, _g, h_ref, c_ref, g_ref, **kw):
        pass

    def per_launch_us(kernel: Any, bb: int, hb: int, warps: int, precision: Any, stages: int = 1) -> float:
        k = functools.partial(kernel, forget_bias=1.0, n=n, bb=bb, hb=hb, precision=precision)

        def call(b: tuple) -> tuple:
            return pl.pallas_call(
                k,
                out_shape=tuple(jax.ShapeDtypeStruct(o.shape, o.dtype) for o in b),
                grid=(batch // bb, n // hb),
                input_output_aliases={3: 0, 4: 1, 5: 2},
                compiler_params=pl_triton.CompilerParams(num_warps=warps, num_stages=stages),
            )(jnp.zeros((1,), jnp.int32), xp, w, *b)

        f = jax.jit(lambda b: jax.lax.fori_loop(0, 1000, lambda i, b: call(b), b))
        return _mean_us(f, bufs, n=3) / 1000

    cases = [
        ("lstm 16x32x4", _pallas._lstm_fwd_kernel, 16, 32, 4, "highest"),
        ("lstm 16x32x4 tf32", _pallas._lstm_fwd_kernel, 16, 32, 4, None),
        ("lstm 16x16x1", _pallas._lstm_fwd_kernel, 16, 16, 1, "highest"),
        ("lstm 16x128x4", _pallas._lstm_fwd_kernel, 16, 128, 4, "highest"),
        ("lstm 64x32x4", _pallas._lstm_fwd_kernel, 64, 32, 4, "highest"),
        ("nodot 16x32x4", nodot, 16, 32, 4, "highest"),
        ("empty 16x32x4", empty, 16, 32, 4, "highest"),
        ("lstm 16x32x4 stages2", _pallas._lstm_fwd_kernel, 16, 32, 4, "highest", 2),
    ]
    for name, *args in cases:
        try:
            print(f"{name:32s} {per_launch_us(*args):8.1f} us per launch", flush=True)
        except Exception as e:  # a tiling Triton refuses is reported; the rest still run
            print(name, "error", str(e)[:300], flush=True)

    @jax.jit
    def xla_matmul(h: jax.Array) -> jax.Array:
        step = lambda i, h: jnp.tanh(xp[0] + jnp.matmul(h, w, precision="highest"))[:, :n]  # noqa: E731
        return jax.lax.fori_loop(0, 1000, step, h)

    @jax.jit
    def xla_elementwise(h: jax.Array) -> jax.Array:
        return jax.lax.fori_loop(0, 1000, lambda i, h: jnp.tanh(xp[0, :, :n] + h), h)

    print("xla matmul+tanh per step", _mean_us(xla_matmul, jnp.zeros((batch, n)), n=3) / 1000, flush=True)
    print("xla elementwise per step", _mean_us(xla_elementwise, jnp.zeros((batch, n)), n=3) / 1000, flush=True)


if __name__ == "__main__":
    what = sys.argv[1] if len(sys.argv) > 1 else ""
    if what == "recurrence":
        recurrence(os.environ.get("OUT"))
    elif what == "launch":
        launch()
    else:
        sys.exit("usage: pallas_probe.py recurrence|launch")
