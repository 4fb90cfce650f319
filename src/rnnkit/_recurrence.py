"""The formulas the fast paths share, below both (rnnkit/_fused.py runs them in XLA, rnnkit/_native
in C++, rnnkit/experimental/pallas.py in Pallas kernels): each loop kind's step forward and
backward in the layered arrangement, and the weight layout that arrangement takes.

The layout: TF1's `[x, h] @ kernel` is `x @ kernel[:input_size] + h @ kernel[input_size:]`;
the first term (the input projection, `W_in` and `b_in`) does not depend on the recurrence and
is applied to a whole sequence at once, the second (the loop weights) runs in the loop. A
reset-after GRU keeps its hidden projection's bias in the loop, where the reset gate scales it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jaxtyping import Array

from rnnkit._cells import LSTMStateTuple, RNNCell

# ---------------------------------------------------------------------------------------------
# One layer's recurrence. Each kind defines the loop's weights, a forward step that also
# returns what its backward step needs, the backward step, and the weights' gradients from
# the whole sequence. States are tuples (c, h) or (h,); the output is always the last entry.


class Kind(NamedTuple):
    step: Callable[..., tuple[tuple[Array, ...], tuple[Array, ...]]]  # (ws, xp_t, state) -> (state', saved)
    # (ws_t, state_prev, saved, d_state') -> (d_state_prev, d_xp_t, d_loop_t); ws_t holds the loop
    # matrices transposed once, outside the loop; d_loop_t (the gradient of the loop's matmul
    # output) is None where it equals d_xp_t, so it is stored once.
    step_bwd: Callable[..., tuple[tuple[Array, ...], Array, Array | None]]
    weight_grads: Callable[..., tuple[Array, ...]]  # (ws, prev_h [T,B,H], saved, d_loop [T,B,*]) -> d_ws


def matmul_at(precision: Any) -> Callable[[Array, Array], Array]:
    return functools.partial(jnp.matmul, precision=precision)


def outer_sum(a: Array, b: Array, precision: Any) -> Array:
    """sum over time and batch of a[t, b]^T b[t, b]: [T, B, m] x [T, B, n] -> [m, n], one matmul."""
    return jnp.einsum("tbm,tbn->mn", a, b, precision=precision)


def _rnn_kind(precision: Any, forget_bias: float) -> Kind:
    del forget_bias
    mm = matmul_at(precision)

    def step(ws, xp, state):
        (wh,) = ws
        h = jnp.tanh(xp + mm(state[0], wh))
        return (h,), (h,)

    def step_bwd(ws_t, state, saved, d_new):
        (wh_t,), (h,) = ws_t, saved
        dz = d_new[0] * (1 - h * h)
        return (mm(dz, wh_t),), dz, None

    def weight_grads(ws, prev_h, saved, d_loop):
        return (outer_sum(prev_h, d_loop, precision),)

    return Kind(step, step_bwd, weight_grads)


def _lstm_kind(precision: Any, forget_bias: float) -> Kind:
    mm = matmul_at(precision)

    def step(ws, xp, state):
        (wh,) = ws
        c, h = state
        i, j, f, o = jnp.split(xp + mm(h, wh), 4, axis=-1)
        si, tj, sf, so = jax.nn.sigmoid(i), jnp.tanh(j), jax.nn.sigmoid(f + forget_bias), jax.nn.sigmoid(o)
        new_c = c * sf + si * tj
        tc = jnp.tanh(new_c)
        return (new_c, tc * so), (si, tj, sf, so, tc)

    def step_bwd(ws_t, state, saved, d_new):
        (wh_t,) = ws_t
        c, _ = state
        si, tj, sf, so, tc = saved
        dc, dh = d_new
        dso = dh * tc
        dc = dc + dh * so * (1 - tc * tc)
        dz = jnp.concatenate(
            [dc * tj * si * (1 - si), dc * si * (1 - tj * tj), dc * c * sf * (1 - sf), dso * so * (1 - so)], axis=-1
        )
        return (dc * sf, mm(dz, wh_t)), dz, None

    def weight_grads(ws, prev_h, saved, d_loop):
        return (outer_sum(prev_h, d_loop, precision),)

    return Kind(step, step_bwd, weight_grads)


def _gru_kind(precision: Any, forget_bias: float) -> Kind:
    """TF1's GRUCell: the reset gate scales h before the candidate's matmul, so each step has
    two dependent matmuls; xp holds [x @ gates (2H) + bias, x @ candidate (H) + bias]."""
    del forget_bias
    mm = matmul_at(precision)

    def step(ws, xp, state):
        w_gates, w_cand = ws
        (h,) = state
        n = h.shape[-1]
        r, u = jnp.split(jax.nn.sigmoid(xp[..., : 2 * n] + mm(h, w_gates)), 2, axis=-1)
        c = jnp.tanh(xp[..., 2 * n :] + mm(r * h, w_cand))
        return (u * h + (1 - u) * c,), (r, u, c)

    def step_bwd(ws_t, state, saved, d_new):
        w_gates_t, w_cand_t = ws_t
        (h,), (r, u, c), (dh,) = state, saved, d_new
        dcz = dh * (1 - u) * (1 - c * c)
        drh = mm(dcz, w_cand_t)
        dgz = jnp.concatenate([drh * h * r * (1 - r), dh * (h - c) * u * (1 - u)], axis=-1)
        dh_prev = dh * u + drh * r + mm(dgz, w_gates_t)
        return (dh_prev,), jnp.concatenate([dgz, dcz], axis=-1), None

    def weight_grads(ws, prev_h, saved, d_loop):
        r = saved[0]
        n = prev_h.shape[-1]
        return (
            outer_sum(prev_h, d_loop[..., : 2 * n], precision),
            outer_sum(r * prev_h, d_loop[..., 2 * n :], precision),
        )

    return Kind(step, step_bwd, weight_grads)


def _gru_reset_after_kind(precision: Any, forget_bias: float) -> Kind:
    """The cuDNN formula: one matmul per step, h @ [gates | hidden projection] (3H columns);
    xp holds [x @ gates (2H) + bias, x @ input projection (H) + bias]."""
    del forget_bias
    mm = matmul_at(precision)

    def step(ws, xp, state):
        w_hidden, b_hidden = ws
        (h,) = state
        n = h.shape[-1]
        zh = mm(h, w_hidden)
        r, u = jnp.split(jax.nn.sigmoid(xp[..., : 2 * n] + zh[..., : 2 * n]), 2, axis=-1)
        hidden = zh[..., 2 * n :] + b_hidden
        c = jnp.tanh(xp[..., 2 * n :] + r * hidden)
        return ((1 - u) * c + u * h,), (r, u, c, hidden)

    def step_bwd(ws_t, state, saved, d_new):
        w_hidden_t, _ = ws_t
        (h,), (r, u, c, hidden), (dh,) = state, saved, d_new
        dcz = dh * (1 - u) * (1 - c * c)
        dgz = jnp.concatenate([dcz * hidden * r * (1 - r), dh * (h - c) * u * (1 - u)], axis=-1)
        d_loop = jnp.concatenate([dgz, dcz * r], axis=-1)  # d(h @ w_hidden), before the bias
        return (dh * u + mm(d_loop, w_hidden_t),), jnp.concatenate([dgz, dcz], axis=-1), d_loop

    def weight_grads(ws, prev_h, saved, d_loop):
        n = prev_h.shape[-1]
        return (outer_sum(prev_h, d_loop, precision), jnp.sum(d_loop[..., 2 * n :], axis=(0, 1)))

    return Kind(step, step_bwd, weight_grads)


KINDS = {"rnn": _rnn_kind, "lstm": _lstm_kind, "gru": _gru_kind, "gru_reset_after": _gru_reset_after_kind}


def masked_step(kind: Kind, masked: bool, ws: Any, xp_t: Array, valid_t: Any, state: tuple) -> tuple:
    """One step of one layer: (new state, output, saved). With `masked`, rows past their
    length (valid_t False) keep their state and output zeros."""
    new_state, saved = kind.step(ws, xp_t, state)
    out = new_state[-1]
    if masked:
        out = jnp.where(valid_t, out, jnp.zeros_like(out))
        new_state = tuple(jnp.where(valid_t, new, old) for new, old in zip(new_state, state, strict=True))
    return new_state, out, saved


def masked_step_back(
    kind: Kind, masked: bool, ws_t: Any, state: tuple, saved_t: Any, d_state: tuple, d_out: Array, valid_t: Any
) -> tuple:
    """`masked_step`'s backward: from the carried state gradient and the output's, the previous
    state's gradient, the projection's (d_xp) and the loop matmul's (d_loop, or None)."""
    d_new = (*d_state[:-1], d_state[-1] + d_out)
    if masked:
        d_new = tuple(jnp.where(valid_t, d, jnp.zeros_like(d)) for d in d_new)
    d_prev, d_xp, d_loop = kind.step_bwd(ws_t, state, saved_t, d_new)
    if masked:  # a padded step passed the state through unchanged
        passed = (jnp.where(valid_t, jnp.zeros_like(d), d) for d in d_state)
        d_prev = tuple(p + q for p, q in zip(d_prev, passed, strict=True))
    return d_prev, d_xp, d_loop


# ---------------------------------------------------------------------------------------------
# From a cell to (input projection, loop weights): the layout the fused and native loops take.


def split_weights(cell: RNNCell, kind: str) -> tuple[Array, Array, tuple[Array, ...]]:
    """(input kernel [input, G], input-side bias [G], loop weights) in the fused layout."""
    return in_and_loop(kind, cell_weights(cell, kind), cell.input_size)


def cell_weights(cell: RNNCell, kind: str) -> tuple[Array, ...]:
    """The arrays the native kernel's forward call takes: the cell's own (kernel and bias; a
    GRU's gates' and candidate's kernels and biases), but a reset-after GRU's, prepared as
    (W_in, b_in, W_hidden, b_hidden)."""
    if kind in ("rnn", "lstm"):
        return cell.kernel, cell.bias
    if kind == "gru":
        return cell.gates_kernel, cell.candidate_kernel, cell.gates_bias, cell.candidate_bias
    n_in = cell.input_size
    w_in = jnp.concatenate([cell.gates_kernel[:n_in], cell.candidate_input_kernel], axis=1)
    b_in = jnp.concatenate([cell.gates_bias, cell.candidate_input_bias])
    w_hidden = jnp.concatenate([cell.gates_kernel[n_in:], cell.candidate_hidden_kernel], axis=1)
    return w_in, b_in, w_hidden, cell.candidate_hidden_bias


def in_and_loop(kind: str, weights: tuple[Array, ...], n_in: int) -> tuple[Array, Array, tuple[Array, ...]]:
    """`cell_weights`'s arrays as (W_in [input, G], b_in [G], loop weights)."""
    if kind in ("rnn", "lstm"):
        kernel, bias = weights
        return kernel[:n_in], bias, (kernel[n_in:],)
    if kind == "gru":
        gates, candidate, gates_bias, candidate_bias = weights
        w_in = jnp.concatenate([gates[:n_in], candidate[:n_in]], axis=1)
        return w_in, jnp.concatenate([gates_bias, candidate_bias]), (gates[n_in:], candidate[n_in:])
    w_in, b_in, w_hidden, b_hidden = weights
    return w_in, b_in, (w_hidden, b_hidden)


def cell_weight_grads(kind: str, d_w_in: Array, d_b_in: Array, d_ws: tuple[Array, ...]) -> tuple[Array, ...]:
    """The gradients of `cell_weights`'s arrays from those of (W_in, b_in, loop weights)."""
    if kind in ("rnn", "lstm"):
        return jnp.concatenate([d_w_in, d_ws[0]], axis=0), d_b_in
    if kind == "gru":
        n = d_ws[0].shape[1]  # the gates' columns
        d_gates = jnp.concatenate([d_w_in[:, :n], d_ws[0]], axis=0)
        d_candidate = jnp.concatenate([d_w_in[:, n:], d_ws[1]], axis=0)
        return d_gates, d_candidate, d_b_in[:n], d_b_in[n:]
    return d_w_in, d_b_in, *d_ws


def state_tuple(kind: str, state: Any) -> tuple[Array, ...]:
    """A cell's state as the loops carry it: (c, h) for an LSTM, (h,) otherwise."""
    return (state.c, state.h) if kind == "lstm" else (state,)


def cell_state(kind: str, state: tuple[Array, ...]) -> Any:
    """`state_tuple`'s inverse: the cell's own state (an LSTMStateTuple for an LSTM)."""
    return LSTMStateTuple(*state) if kind == "lstm" else state[0]
