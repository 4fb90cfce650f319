"""EXPERIMENTAL: dynamic_rnn's loops as per-step Pallas (Triton) kernels, for NVIDIA GPUs.

Not part of rnnkit's product: `dynamic_rnn(implementation=...)` does not offer it (it raises,
pointing here), and nothing in rnnkit runs it. It is kept as the checked base for a persistent
kernel (one launch for the whole loop), reached by its own function, `dynamic_rnn` below. Why it
is apart: measured on an H200 (benchmarks/RESULTS.md, "GPU, fourth run") it is 3x to 14x slower
than the fused path on every case measured, and its tiles, warps and precision are mutable module
globals (`TILES`, `NUM_WARPS`, `DOT_PRECISION`, `INTERPRET`) that probes set
(benchmarks/pallas_probe.py, unroll_probe.py, precision_probe.py).

On a GPU the fused path's training step at T=28, batch 128 is bound by how many small kernels
each time step launches (benchmarks/RESULTS.md, "What holds the GPU rows"): XLA runs a layer's
step as a matmul, then one or more elementwise fusions, and the backward step likewise. Here
each step of an LSTM is one kernel forward and one backward, and each step of a TF1 GRU (whose
reset gate scales h before the candidate's matmul, so the step has two dependent products) two
each way. Each kernel computes a tile of [batch rows x hidden units]: it multiplies the rows'
full previous state (or state gradient) by the tile's columns of the loop weights, in float32
("highest") unless the cell asks otherwise, and applies the gates' formulas to the tile.

The loop carries whole-sequence buffers ([T+1, B, H] states, [T, B, G] gates), which the kernels
read at step t and write at t or t+1 in place (`input_output_aliases`), so no step copies or
slices in XLA. The backward loop carries the gates' gradient of step t+1 instead of the state's,
and each kernel first finishes the state gradient with the product of that by the transposed loop
weights: one kernel per LSTM step again. The weights' gradients are one matmul after each loop,
as in the fused path (`_fused._recurrence`), whose formulas (rnnkit/_recurrence.py) these
kernels follow. The Pallas call inside XLA's loop costs about 13 µs more than an XLA fusion
before it computes anything, and Triton's float32 products are slow at these tile sizes.

Off GPUs the same kernels run in Pallas's interpreter (slow; what the tests use to check them).
Layers this path does not take (basic RNN cells, reset-after GRUs, sequence_length masks, hidden
sizes that are not a power of two from 16 up, dtypes other than float32) run the fused path.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl
from jaxtyping import Array

from rnnkit import _fused
from rnnkit._cells import RNNCell, check_cell
from rnnkit._checks import check_inputs, check_sequence_length, check_state
from rnnkit._kinds import loop_kind
from rnnkit._recurrence import cell_state, split_weights, state_tuple
from rnnkit._recurrence import outer_sum as _outer_sum

KINDS = ("lstm", "gru")
# Tiles: (batch rows, hidden units) per program, and warps per program. None picks by size;
# benchmarks/unroll_probe.py sets them to compare.
TILES: tuple[int, int] | None = None
NUM_WARPS: int | None = None
# The kernels' matmul precision in place of the cell's, e.g. "TF32_TF32_F32_X3" (for probes).
DOT_PRECISION: Any = None
# Run the kernels in Pallas's interpreter: None = where JAX's default backend is not a GPU.
# False lowers them for Triton anywhere (tests export a program for CUDA on a CPU machine).
INTERPRET: bool | None = None


def supports(kind: str | None, num_units: int, dtype: Any) -> bool:
    """Whether a layer of this kind and size runs here (else it runs the fused path)."""
    n = num_units
    return kind in KINDS and n >= 16 and n & (n - 1) == 0 and jnp.dtype(dtype) == jnp.float32


def _interpret() -> bool:
    return jax.default_backend() != "gpu" if INTERPRET is None else INTERPRET


def _tiles(batch: int, n: int) -> tuple[int, int, int]:
    bb, hb = TILES if TILES is not None else (16 if batch <= 1024 else 32, min(n, 32))
    return bb, min(hb, n), NUM_WARPS or 4


def _launch(batch: int, n: int, precision: Any) -> tuple[tuple[int, int], int, dict[str, Any]]:
    """A layer's kernels' grid, warps, and the sizes and precision each kernel takes."""
    bb, hb, warps = _tiles(batch, n)
    return (batch // bb, n // hb), warps, dict(n=n, bb=bb, hb=hb, precision=DOT_PRECISION or precision)


def _pad_batch(a: Array, pad: int) -> Array:
    """`a` with `pad` zero rows more along its batch axis (the second to last)."""
    if not pad:
        return a
    return jnp.pad(a, [(0, pad) if axis == a.ndim - 2 else (0, 0) for axis in range(a.ndim)])


def _call(kernel: Any, grid: tuple[int, int], num_warps: int, outs: tuple[Array, ...], ins: tuple[Any, ...]) -> Any:
    """One kernel launch: `ins` (the step t as an int32 [1] first) are read, `outs` (the loop's
    buffers) are updated in place and returned; the kernel's refs are (*ins, *outs as inputs,
    *outs)."""
    kwargs: dict[str, Any] = {"interpret": True}
    if not _interpret():
        from jax.experimental.pallas import triton as pl_triton

        kwargs = {"compiler_params": pl_triton.CompilerParams(num_warps=num_warps, num_stages=1)}
    first = len(ins)
    return pl.pallas_call(
        kernel,
        out_shape=tuple(jax.ShapeDtypeStruct(o.shape, o.dtype) for o in outs),
        grid=grid,
        input_output_aliases={first + i: i for i in range(len(outs))},
        **kwargs,
    )(*ins, *outs)


def _tile(bb: int, hb: int) -> tuple[Any, Any]:
    """This program's batch rows and its first hidden unit."""
    return pl.ds(pl.program_id(0) * bb, bb), pl.program_id(1) * hb


# ---- LSTM ------------------------------------------------------------------------------------


def _lstm_fwd_kernel(t_ref, xp_ref, w_ref, _h, _c, _g, h_ref, c_ref, g_ref, *, n, bb, hb, forget_bias, precision):
    """h, c [T+1, B, n] (index t holds step t's input state), gates [T, B, 4n] (sigmoid(i),
    tanh(j), sigmoid(f + forget_bias), sigmoid(o))."""
    t = t_ref[0]
    rows, j0 = _tile(bb, hb)
    h = h_ref[t, rows, :]

    def z(g):
        cols = pl.ds(g * n + j0, hb)
        return xp_ref[t, rows, cols] + jnp.dot(h, w_ref[:, cols], precision=precision)

    si, tj, sf, so = jax.nn.sigmoid(z(0)), jnp.tanh(z(1)), jax.nn.sigmoid(z(2) + forget_bias), jax.nn.sigmoid(z(3))
    cols = pl.ds(j0, hb)
    c = c_ref[t, rows, cols] * sf + si * tj
    c_ref[t + 1, rows, cols] = c
    h_ref[t + 1, rows, cols] = jnp.tanh(c) * so
    for g, a in enumerate((si, tj, sf, so)):
        g_ref[t, rows, pl.ds(g * n + j0, hb)] = a


def _lstm_bwd_kernel(t_ref, wt_ref, dy_ref, c_ref, g_ref, _dz, _dc, dz_ref, dc_ref, *, n, bb, hb, precision):
    """dz [T+1, B, 4n]: the gates' pre-activation gradients (index T zero); dc [B, n] carries
    the cell state's gradient from step t+1 to t."""
    t = t_ref[0]
    rows, j0 = _tile(bb, hb)
    cols = pl.ds(j0, hb)
    dh = dy_ref[t, rows, cols] + jnp.dot(dz_ref[t + 1, rows, :], wt_ref[:, cols], precision=precision)
    si, tj, sf, so = (g_ref[t, rows, pl.ds(g * n + j0, hb)] for g in range(4))
    tc = jnp.tanh(c_ref[t + 1, rows, cols])
    dc = dc_ref[rows, cols] + dh * so * (1 - tc * tc)
    dz = (dc * tj * si * (1 - si), dc * si * (1 - tj * tj), dc * c_ref[t, rows, cols] * sf * (1 - sf))
    for g, d in enumerate((*dz, dh * tc * so * (1 - so))):
        dz_ref[t, rows, pl.ds(g * n + j0, hb)] = d
    dc_ref[rows, cols] = dc * sf


# ---- GRU (TF1's, reset gate before the candidate's matmul) -------------------------------------


def _gru_gates_kernel(t_ref, xp_ref, w_ref, h_ref, _ru, _rh, ru_ref, rh_ref, *, n, bb, hb, precision):
    """ru [T, B, 2n] (sigmoid(r), sigmoid(u)); rh [T, B, n] = r * h, the candidate's input."""
    t = t_ref[0]
    rows, j0 = _tile(bb, hb)
    h = h_ref[t, rows, :]
    r, u = (
        jax.nn.sigmoid(
            xp_ref[t, rows, pl.ds(g * n + j0, hb)] + jnp.dot(h, w_ref[:, pl.ds(g * n + j0, hb)], precision=precision)
        )
        for g in range(2)
    )
    ru_ref[t, rows, pl.ds(j0, hb)] = r
    ru_ref[t, rows, pl.ds(n + j0, hb)] = u
    rh_ref[t, rows, pl.ds(j0, hb)] = r * h_ref[t, rows, pl.ds(j0, hb)]


def _gru_candidate_kernel(t_ref, xp_ref, w_ref, ru_ref, rh_ref, _c, _h, c_ref, h_ref, *, n, bb, hb, precision):
    """c [T, B, n] the candidate; h [T+1, B, n]."""
    t = t_ref[0]
    rows, j0 = _tile(bb, hb)
    cols = pl.ds(j0, hb)
    z = xp_ref[t, rows, pl.ds(2 * n + j0, hb)] + jnp.dot(rh_ref[t, rows, :], w_ref[:, cols], precision=precision)
    c = jnp.tanh(z)
    u = ru_ref[t, rows, pl.ds(n + j0, hb)]
    c_ref[t, rows, cols] = c
    h_ref[t + 1, rows, cols] = u * h_ref[t, rows, cols] + (1 - u) * c


def _gru_bwd_state_kernel(
    t_ref, wgt_ref, dy_ref, ru_ref, c_ref, p_ref, _dxp, _gh, dxp_ref, gh_ref, *, n, bb, hb, precision
):
    """dxp [T+1, B, 3n] the projections' gradients ([gates 2n, candidate n], index T zero);
    p [B, n] the part of h's gradient step t+1 passed back outside the gates' product; gh [B, n]
    h's whole gradient at step t, for the second kernel."""
    t = t_ref[0]
    rows, j0 = _tile(bb, hb)
    cols = pl.ds(j0, hb)
    dgz = dxp_ref[t + 1, rows, pl.ds(0, 2 * n)]
    gh = dy_ref[t, rows, cols] + p_ref[rows, cols] + jnp.dot(dgz, wgt_ref[:, cols], precision=precision)
    u, c = ru_ref[t, rows, pl.ds(n + j0, hb)], c_ref[t, rows, cols]
    dxp_ref[t, rows, pl.ds(2 * n + j0, hb)] = gh * (1 - u) * (1 - c * c)
    gh_ref[rows, cols] = gh


def _gru_bwd_gates_kernel(
    t_ref, wct_ref, h_ref, ru_ref, c_ref, gh_ref, _dxp, _p, dxp_ref, p_ref, *, n, bb, hb, precision
):
    t = t_ref[0]
    rows, j0 = _tile(bb, hb)
    cols = pl.ds(j0, hb)
    drh = jnp.dot(dxp_ref[t, rows, pl.ds(2 * n, n)], wct_ref[:, cols], precision=precision)
    h, c, gh = h_ref[t, rows, cols], c_ref[t, rows, cols], gh_ref[rows, cols]
    r, u = ru_ref[t, rows, cols], ru_ref[t, rows, pl.ds(n + j0, hb)]
    dxp_ref[t, rows, cols] = drh * h * r * (1 - r)
    dxp_ref[t, rows, pl.ds(n + j0, hb)] = gh * (h - c) * u * (1 - u)
    p_ref[rows, cols] = gh * u + drh * r


# ---- the loops -------------------------------------------------------------------------------


def _loop(steps: int, body: Any, carry: tuple[Array, ...], unroll: int | bool, reverse: bool = False) -> tuple:
    def step(i, carry):
        t = (steps - 1 - i) if reverse else i
        return body(jnp.reshape(t, (1,)).astype(jnp.int32), carry)

    return jax.lax.fori_loop(0, steps, step, carry, unroll=unroll)


def _forward(
    kind: str,
    ws: tuple[Array, ...],
    xp: Array,
    state0: tuple[Array, ...],
    forget_bias: float,
    precision: Any,
    unroll: int | bool,
) -> tuple[Array, ...]:
    """The forward loop: lstm -> (h [T+1,B,n], c [T+1,B,n], gates); gru -> (h, ru, rh, c)."""
    steps, batch = xp.shape[:2]
    n = state0[-1].shape[-1]
    grid, warps, kw = _launch(batch, n, precision)

    def stacked(first: Array | None, width: int, length: int) -> Array:
        buf = jnp.zeros((length, batch, width), xp.dtype)
        return buf if first is None else buf.at[0].set(first)

    if kind == "lstm":
        (w,) = ws
        c0, h0 = state0
        kernel = functools.partial(_lstm_fwd_kernel, forget_bias=forget_bias, **kw)
        bufs = (stacked(h0, n, steps + 1), stacked(c0, n, steps + 1), stacked(None, 4 * n, steps))
        return _loop(steps, lambda t, b: _call(kernel, grid, warps, b, (t, xp, w)), bufs, unroll)
    w_gates, w_cand = ws
    gates = functools.partial(_gru_gates_kernel, **kw)
    candidate = functools.partial(_gru_candidate_kernel, **kw)

    def body(t, bufs):
        h, ru, rh, c = bufs
        ru, rh = _call(gates, grid, warps, (ru, rh), (t, xp, w_gates, h))
        c, h = _call(candidate, grid, warps, (c, h), (t, xp, w_cand, ru, rh))
        return h, ru, rh, c

    bufs = (
        stacked(state0[0], n, steps + 1),
        stacked(None, 2 * n, steps),
        stacked(None, n, steps),
        stacked(None, n, steps),
    )
    return _loop(steps, body, bufs, unroll)


def _backward(
    kind: str,
    ws: tuple[Array, ...],
    saved: tuple[Array, ...],
    dy: Array,
    d_final: tuple[Array, ...],
    precision: Any,
    unroll: int | bool,
) -> tuple[tuple[Array, ...], Array, tuple[Array, ...]]:
    """(weights' gradients, d_xp [T,B,G], initial state's gradient) from the forward's buffers,
    the outputs' gradient dy [T,B,n] and the final state's."""
    h_all = saved[0]
    steps, batch, n = dy.shape
    grid, warps, kw = _launch(batch, n, precision)
    dy = dy.at[-1].add(d_final[-1])  # the final h's gradient joins the last output's
    prev_h = h_all[:steps]
    if kind == "lstm":
        (w,) = ws
        _, c_all, g_all = saved
        kernel = functools.partial(_lstm_bwd_kernel, **kw)
        bufs = (jnp.zeros((steps + 1, batch, 4 * n), dy.dtype), d_final[0])
        dz, dc = _loop(
            steps, lambda t, b: _call(kernel, grid, warps, b, (t, w.T, dy, c_all, g_all)), bufs, unroll, reverse=True
        )
        d_xp = dz[:steps]
        d_h0 = jnp.matmul(dz[0], w.T, precision=precision)
        d_w = _outer_sum(prev_h, d_xp, precision)
        return (d_w,), d_xp, (dc, d_h0)
    w_gates, w_cand = ws
    _, ru, rh, c_all = saved
    state_k = functools.partial(_gru_bwd_state_kernel, **kw)
    gates_k = functools.partial(_gru_bwd_gates_kernel, **kw)
    wg_t, wc_t = w_gates.T, w_cand.T

    def body(t, bufs):
        dxp, p, gh = bufs
        dxp, gh = _call(state_k, grid, warps, (dxp, gh), (t, wg_t, dy, ru, c_all, p))
        dxp, p = _call(gates_k, grid, warps, (dxp, p), (t, wc_t, h_all, ru, c_all, gh))
        return dxp, p, gh

    zeros = jnp.zeros((batch, n), dy.dtype)
    bufs = (jnp.zeros((steps + 1, batch, 3 * n), dy.dtype), zeros, zeros)
    dxp, p, _ = _loop(steps, body, bufs, unroll, reverse=True)
    d_xp = dxp[:steps]
    d_h0 = p + jnp.matmul(dxp[0, :, : 2 * n], wg_t, precision=precision)
    d_wg = _outer_sum(prev_h, d_xp[..., : 2 * n], precision)
    d_wc = _outer_sum(rh, d_xp[..., 2 * n :], precision)
    return (d_wg, d_wc), d_xp, (d_h0,)


@functools.cache
def recurrence(kind: str, precision: Any, forget_bias: float, unroll: int | bool) -> Any:
    """recurrence(ws, xp [T,B,G], state0) -> (outputs [T,B,n], final state), like
    `_fused._recurrence` with no mask, differentiable in ws, xp and state0."""

    def padded(xp: Array, state0: tuple[Array, ...]) -> tuple[Array, tuple[Array, ...], int]:
        batch = xp.shape[1]
        bb = _tiles(batch, state0[-1].shape[-1])[0]
        pad = -batch % bb
        return _pad_batch(xp, pad), tuple(_pad_batch(s, pad) for s in state0), batch

    def results(bufs: tuple[Array, ...], batch: int) -> tuple[Array, tuple[Array, ...]]:
        h_all = bufs[0][:, :batch]
        final = (bufs[1][-1, :batch], h_all[-1]) if kind == "lstm" else (h_all[-1],)
        return h_all[1:], final

    def run(ws, xp, state0):
        return run_fwd(ws, xp, state0)[0]

    def run_fwd(ws, xp, state0):
        xp, state0_p, batch = padded(xp, state0)
        bufs = _forward(kind, ws, xp, state0_p, forget_bias, precision, unroll)
        return results(bufs, batch), (ws, bufs)

    def run_bwd(residuals, cotangents):
        ws, bufs = residuals
        d_outs, d_final = cotangents
        batch = d_outs.shape[1]
        pad = bufs[0].shape[1] - batch
        d_final = tuple(_pad_batch(d, pad) for d in d_final)
        d_ws, d_xp, d_state0 = _backward(kind, ws, bufs, _pad_batch(d_outs, pad), d_final, precision, unroll)
        return d_ws, d_xp[:, :batch], tuple(d[:batch] for d in d_state0)

    fn = jax.custom_vjp(run)
    fn.defvjp(run_fwd, run_bwd)
    return fn


def _layer(cell: RNNCell, x: Array, state: Any, valid: Array | None, unroll: int | bool) -> tuple[Array, Any]:
    """One fused-kind cell over time-major x [T, B, input]: in Pallas kernels where `supports`
    takes the layer and there is no mask, else the fused path's XLA loop."""
    kind = loop_kind(cell)
    assert kind is not None
    if valid is not None or not supports(kind, cell.num_units, x.dtype):
        return _fused.layer(cell, x, state, valid, unroll)
    w_in, b_in, ws = split_weights(cell, kind)
    xp = jnp.matmul(x, w_in, precision=cell.precision) + b_in  # [T, B, G]: the hoisted input projection
    run = recurrence(kind, cell.precision, float(getattr(cell, "forget_bias", 0.0)), unroll)
    outputs, final = run(ws, xp, state_tuple(kind, state))
    return outputs, cell_state(kind, final)


def dynamic_rnn(
    cell: RNNCell,
    inputs: Array,
    sequence_length: Any = None,
    initial_state: Any = None,
    time_major: bool = False,
    unroll: int | bool = 4,
) -> tuple[Array, Any]:
    """`rnnkit.dynamic_rnn` with the loops of LSTM and TF1 GRU layers as Pallas kernels
    (EXPERIMENTAL, see the module docstring): `(outputs, final state)`, the same numbers as
    `implementation="fused"` up to float rounding. Takes the cells the fused path takes
    (ValueError otherwise); layers the kernels don't take, and any layer when
    `sequence_length` is given, run the fused path's loop. `unroll` defaults to the fused
    path's GPU default."""
    cell = check_cell(cell)
    reason = _fused.unsupported(cell)
    if reason is not None:
        raise ValueError(f"cell must be one the fused path takes; {reason}")
    layout = "time, batch, depth" if time_major else "batch, time, depth"
    x = check_inputs(inputs, name="inputs", cell=cell, rank=3, layout=layout)
    x = x if time_major else jnp.swapaxes(x, 0, 1)  # [time, batch, depth]
    lengths = check_sequence_length(sequence_length, batch_size=x.shape[1], max_time=x.shape[0])
    state = cell.zero_state(x.shape[1]) if initial_state is None else initial_state
    state = check_state(state, name="initial_state", cell=cell, batch_size=x.shape[1])
    valid = _fused.valid_mask(lengths, x.shape[0])
    run_leaf = functools.partial(_layer, valid=valid, unroll=unroll)
    outputs, final = _fused.layered(cell, x, state, valid, run_leaf)
    return (outputs if time_major else jnp.swapaxes(outputs, 0, 1)), final
