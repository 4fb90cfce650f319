"""The fast path of `dynamic_rnn`: a layer at a time, with a hand-written backward pass.

Same formulas as the cells in `_cells.py` (TF1's), arranged the way cuDNN and oneDNN arrange
them rather than the way autodiff of a per-step cell would:

- The input half of every kernel is applied to the whole sequence at once, before the loop:
  TF1's `[x, h] @ kernel` is `x @ kernel[:input_size] + h @ kernel[input_size:]`, and the first
  term does not depend on the recurrence. One [time * batch, input] x [input, gates] matmul
  replaces `time` small ones, and its gradient is again one large matmul (autodiff's).
- A `MultiRNNCell` runs layer by layer: layer k's whole output sequence is layer k + 1's
  input, so layer k + 1's input projection is hoisted too. Masking (`sequence_length`) is
  per step and per layer, which gives the stack's numbers exactly (a padded step leaves every
  layer's state alone and zeroes every output).
- The recurrence has a custom VJP. Autodiff of `lax.scan` computes each step's weight
  gradient inside the backward loop (`time` small matmuls accumulated into a carry); here the
  backward loop computes only the gradients that flow through time, and the weight gradient
  is one [hidden, time * batch] x [time * batch, gates] matmul after it. The loop's matmul
  work halves.

Whether that wins depends on the machine. On two CPU cores it measured 0.66x-1.11x the
per-step path (XLA:CPU ran the large matmuls well below their standalone speed, with
transposing copies around them, and the hoisted projections cost memory: several GB at
batch 1024 x 784 steps), so `dynamic_rnn(implementation="auto")` uses it only on GPUs, where
hoisting the input projection measured faster (benchmarks/RESULTS.md). On CPU the same
arrangement runs in rnnkit's native kernel (`_native_layer` below, rnnkit/_native): the
projection, the loop and the gradients in C++, one call per layer.

The results equal the per-step cells' up to float rounding: `x @ Wx + h @ Wh` adds the same
products as `[x, h] @ W` in another order (differences of a few ulp; tests/test_fused.py
checks values and gradients against the plain path and a NumPy reference).

Cells it takes: BasicRNNCell, BasicLSTMCell, LSTMCell without peepholes, clipping or
projection, GRUCell (both formulas), all with tanh; MultiRNNCell stacks of them; and
DropoutWrappers (input and output dropout; masks drawn for the whole sequence from the keys
the per-step path uses, so the same masks) and ResidualWrappers (the default sum) around any
of these. Anything else (state dropout, a residual_fn, peepholes, other activations) takes
the plain path.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.custom_derivatives import CustomVJPPrimal, SymbolicZero
from jaxtyping import Array

from rnnkit import _native
from rnnkit._cells import BasicLSTMCell, BasicRNNCell, GRUCell, LSTMCell, LSTMStateTuple, RNNCell
from rnnkit._checks import full_float32
from rnnkit._wrappers import DropoutWrapper, MultiRNNCell, ResidualWrapper, _dropout, _mask_keys


def _is_tanh(fn: Any) -> bool:
    return fn is jnp.tanh or fn is jax.numpy.tanh or fn is jax.lax.tanh


def _leaf_kind(cell: RNNCell) -> str | None:
    """Which fused recurrence runs this cell, or None when it needs the plain path."""
    if type(cell) is BasicRNNCell and _is_tanh(cell.activation):
        return "rnn"
    if type(cell) is BasicLSTMCell and _is_tanh(cell.activation):
        return "lstm"
    if (
        type(cell) is LSTMCell
        and _is_tanh(cell.activation)
        and not cell.use_peepholes
        and cell.cell_clip is None
        and cell.num_proj is None
    ):
        return "lstm"
    if type(cell) is GRUCell and _is_tanh(cell.activation):
        return "gru_reset_after" if cell.reset_after else "gru"
    return None


def _dropout_off(wrapper: DropoutWrapper) -> bool:
    """Whether a DropoutWrapper draws no mask at all: the wrapped cell's numbers exactly."""
    return bool(wrapper.inference) or wrapper.key is None


def _leaves(cell: RNNCell) -> list[RNNCell] | None:
    """The cells with a fused kind that `cell` is made of, in order, or None where some part of
    it needs the plain path. Wrappers the layered arrangement can reproduce exactly are looked
    through: a MultiRNNCell (layer by layer), a DropoutWrapper that drops only inputs and
    outputs (whole-sequence masks, drawn from the keys the per-step path folds; state dropout
    changes the recurrence itself), and a ResidualWrapper with the default sum."""
    if type(cell) is MultiRNNCell:
        parts = [_leaves(c) for c in cell.cells]
        return None if any(p is None for p in parts) else [leaf for p in parts for leaf in p]
    if type(cell) is DropoutWrapper:
        takes = _dropout_off(cell) or cell.state_keep_prob == 1.0
        return _leaves(cell.cell) if takes else None
    if type(cell) is ResidualWrapper:
        return _leaves(cell.cell) if cell.residual_fn is None else None
    return [cell] if _leaf_kind(cell) is not None else None


def supports(cell: RNNCell) -> bool:
    """True when `dynamic_rnn` runs `cell` through this module."""
    return _leaves(cell) is not None


def native_supports(cell: RNNCell) -> bool:
    """True when the native CPU kernel can run `cell`: a cell `supports` takes, in float32, at a
    precision that multiplies in full float32 (the kernel has no other arithmetic)."""
    if not supports(cell):  # through `supports`, so that a test turning the fast paths off turns off both
        return False
    return all(jnp.dtype(c.dtype) == jnp.float32 and full_float32(c.precision) for c in _leaves(cell) or ())


# ---------------------------------------------------------------------------------------------
# One layer's recurrence. Each kind defines the loop's weights, a forward step that also
# returns what its backward step needs, the backward step, and the weights' gradients from
# the whole sequence. States are tuples (c, h) or (h,); the output is always the last entry.


class _Kind(NamedTuple):
    step: Callable[..., tuple[tuple[Array, ...], tuple[Array, ...]]]  # (ws, xp_t, state) -> (state', saved)
    # (ws_t, state_prev, saved, d_state') -> (d_state_prev, d_xp_t, d_loop_t); ws_t holds the loop
    # matrices transposed once, outside the loop; d_loop_t (the gradient of the loop's matmul
    # output) is None where it equals d_xp_t, so it is stored once.
    step_bwd: Callable[..., tuple[tuple[Array, ...], Array, Array | None]]
    weight_grads: Callable[..., tuple[Array, ...]]  # (ws, prev_h [T,B,H], saved, d_loop [T,B,*]) -> d_ws


def _mm(precision: Any) -> Callable[[Array, Array], Array]:
    return functools.partial(jnp.matmul, precision=precision)


def _outer_sum(a: Array, b: Array, precision: Any) -> Array:
    """sum over time and batch of a[t, b]^T b[t, b]: [T, B, m] x [T, B, n] -> [m, n], one matmul."""
    return jnp.einsum("tbm,tbn->mn", a, b, precision=precision)


def _rnn_kind(precision: Any, forget_bias: float) -> _Kind:
    del forget_bias
    mm = _mm(precision)

    def step(ws, xp, state):
        (wh,) = ws
        h = jnp.tanh(xp + mm(state[0], wh))
        return (h,), (h,)

    def step_bwd(ws_t, state, saved, d_new):
        (wh_t,), (h,) = ws_t, saved
        dz = d_new[0] * (1 - h * h)
        return (mm(dz, wh_t),), dz, None

    def weight_grads(ws, prev_h, saved, d_loop):
        return (_outer_sum(prev_h, d_loop, precision),)

    return _Kind(step, step_bwd, weight_grads)


def _lstm_kind(precision: Any, forget_bias: float) -> _Kind:
    mm = _mm(precision)

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
        return (_outer_sum(prev_h, d_loop, precision),)

    return _Kind(step, step_bwd, weight_grads)


def _gru_kind(precision: Any, forget_bias: float) -> _Kind:
    """TF1's GRUCell: the reset gate scales h before the candidate's matmul, so each step has
    two dependent matmuls; xp holds [x @ gates (2H) + bias, x @ candidate (H) + bias]."""
    del forget_bias
    mm = _mm(precision)

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
            _outer_sum(prev_h, d_loop[..., : 2 * n], precision),
            _outer_sum(r * prev_h, d_loop[..., 2 * n :], precision),
        )

    return _Kind(step, step_bwd, weight_grads)


def _gru_reset_after_kind(precision: Any, forget_bias: float) -> _Kind:
    """The cuDNN formula: one matmul per step, h @ [gates | hidden projection] (3H columns);
    xp holds [x @ gates (2H) + bias, x @ input projection (H) + bias]."""
    del forget_bias
    mm = _mm(precision)

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
        return (_outer_sum(prev_h, d_loop, precision), jnp.sum(d_loop[..., 2 * n :], axis=(0, 1)))

    return _Kind(step, step_bwd, weight_grads)


_KINDS = {"rnn": _rnn_kind, "lstm": _lstm_kind, "gru": _gru_kind, "gru_reset_after": _gru_reset_after_kind}


def _masked_step(kind: _Kind, masked: bool, ws: Any, xp_t: Array, valid_t: Any, state: tuple) -> tuple:
    """One step of one layer: (new state, output, saved). With `masked`, rows past their
    length (valid_t False) keep their state and output zeros."""
    new_state, saved = kind.step(ws, xp_t, state)
    out = new_state[-1]
    if masked:
        out = jnp.where(valid_t, out, jnp.zeros_like(out))
        new_state = tuple(jnp.where(valid_t, new, old) for new, old in zip(new_state, state, strict=True))
    return new_state, out, saved


def _masked_step_back(
    kind: _Kind, masked: bool, ws_t: Any, state: tuple, saved_t: Any, d_state: tuple, d_out: Array, valid_t: Any
) -> tuple:
    """`_masked_step`'s backward: from the carried state gradient and the output's, the previous
    state's gradient, the projection's (d_xp) and the loop matmul's (d_loop, or None)."""
    d_new = (*d_state[:-1], d_state[-1] + d_out)
    if masked:
        d_new = tuple(jnp.where(valid_t, d, jnp.zeros_like(d)) for d in d_new)
    d_prev, d_xp, d_loop = kind.step_bwd(ws_t, state, saved_t, d_new)
    if masked:  # a padded step passed the state through unchanged
        passed = (jnp.where(valid_t, jnp.zeros_like(d), d) for d in d_state)
        d_prev = tuple(p + q for p, q in zip(d_prev, passed, strict=True))
    return d_prev, d_xp, d_loop


@functools.cache
def _recurrence(kind_name: str, precision: Any, forget_bias: float, unroll: int | bool, masked: bool) -> Callable:
    """recurrence(ws, xp [T,B,G], state0, valid [T,B,1] or None) -> (outputs [T,B,H], final state),
    differentiable in ws, xp and state0 through the hand-written backward pass."""
    kind = _KINDS[kind_name](precision, forget_bias)
    masked_step = functools.partial(_masked_step, kind, masked)

    def run(ws, xp, state0, valid):
        def body(state, xs):
            xp_t, valid_t = xs
            new_state, out, _ = masked_step(ws, xp_t, valid_t, state)
            return new_state, out

        final, outs = jax.lax.scan(body, state0, (xp, valid), unroll=unroll)
        return outs, final

    def run_fwd(ws, xp, state0, valid):
        def body(state, xs):
            xp_t, valid_t = xs
            new_state, out, saved = masked_step(ws, xp_t, valid_t, state)
            return new_state, (out, state, saved)

        final, (outs, prev_states, saved) = jax.lax.scan(body, state0, (xp, valid), unroll=unroll)
        return (outs, final), (ws, prev_states, saved, valid)

    def run_bwd(residuals, cotangents):
        ws, prev_states, saved, valid = residuals
        d_outs, d_final = cotangents
        ws_t = tuple(w.T if w.ndim == 2 else w for w in ws)

        def body(d_state, xs):
            state, saved_t, d_out, valid_t = xs
            d_prev, d_xp, d_loop = _masked_step_back(kind, masked, ws_t, state, saved_t, d_state, d_out, valid_t)
            return d_prev, (d_xp, d_loop)

        d_state0, (d_xp, d_loop) = jax.lax.scan(
            body, tuple(d_final), (prev_states, saved, d_outs, valid), reverse=True, unroll=unroll
        )
        d_ws = kind.weight_grads(ws, prev_states[-1], saved, d_xp if d_loop is None else d_loop)
        d_valid = None if valid is None else np.zeros(valid.shape, jax.dtypes.float0)  # a mask has no gradient
        return d_ws, d_xp, d_state0, d_valid

    fn = jax.custom_vjp(run)
    fn.defvjp(run_fwd, run_bwd)
    return fn


@functools.cache
def _stack_recurrence(
    kind_names: tuple[str, ...],
    precisions: tuple[Any, ...],
    forget_biases: tuple[float, ...],
    unroll: int | bool,
    masked: bool,
) -> Callable:
    """The whole stack in one loop over time (implementation="fused_stack"): each iteration
    steps every layer, layer k + 1 projecting layer k's output of that step inside the loop.
    Only the first layer's input projection is hoisted.

    stack(ws, w_ins, b_ins, xp0 [T,B,G0], states0, valid [T,B,1] or None) -> (top outputs
    [T,B,H], final states); ws, states0: per layer, as in `_recurrence`; w_ins, b_ins: the
    input kernels and biases of layers 1 and up. Differentiable in all but `valid`, through a
    hand-written backward pass that runs the layers top down in each step of one reversed
    loop, and takes every weight gradient as one matmul after it."""
    kinds = [_KINDS[k](p, fb) for k, p, fb in zip(kind_names, precisions, forget_biases, strict=True)]
    layers = range(len(kinds))

    def step_all(ws, w_ins, b_ins, xp0_t, valid_t, states):
        """One step of every layer: (new states, every layer's (masked) output, saved)."""
        new_states, outs, saved = [], [], []
        for k in layers:
            xp = xp0_t if k == 0 else _mm(precisions[k])(outs[-1], w_ins[k - 1]) + b_ins[k - 1]
            new, out, kept = _masked_step(kinds[k], masked, ws[k], xp, valid_t, states[k])
            new_states.append(new)
            outs.append(out)
            saved.append(kept)
        return tuple(new_states), tuple(outs), tuple(saved)

    def run(ws, w_ins, b_ins, xp0, states0, valid):
        def body(states, xs):
            new_states, outs, _ = step_all(ws, w_ins, b_ins, *xs, states)
            return new_states, outs[-1]

        final, outs = jax.lax.scan(body, states0, (xp0, valid), unroll=unroll)
        return outs, final

    def run_fwd(ws, w_ins, b_ins, xp0, states0, valid):
        def body(states, xs):
            new_states, outs, saved = step_all(ws, w_ins, b_ins, *xs, states)
            return new_states, (outs, states, saved)

        final, (outs, prev_states, saved) = jax.lax.scan(body, states0, (xp0, valid), unroll=unroll)
        return (outs[-1], final), (ws, w_ins, outs[:-1], prev_states, saved, valid)

    def run_bwd(residuals, cotangents):
        ws, w_ins, inputs, prev_states, saved, valid = residuals  # inputs: layers 1 and up's, [T,B,*]
        d_outs, d_final = cotangents
        ws_t = tuple(tuple(w.T if w.ndim == 2 else w for w in layer) for layer in ws)
        w_ins_t = tuple(w.T for w in w_ins)

        def body(d_states, xs):
            states_t, saved_t, d_out, valid_t = xs
            d_prev_all, d_xps, d_loops = [None] * len(kinds), [None] * len(kinds), [None] * len(kinds)
            d_in = d_out  # the gradient reaching layer k's output at this step, from above
            for k in reversed(layers):
                d_prev_all[k], d_xps[k], d_loops[k] = _masked_step_back(
                    kinds[k], masked, ws_t[k], states_t[k], saved_t[k], d_states[k], d_in, valid_t
                )
                if k > 0:
                    d_in = _mm(precisions[k])(d_xps[k], w_ins_t[k - 1])
            return tuple(d_prev_all), (tuple(d_xps), tuple(d_loops))

        d_states0, (d_xps, d_loops) = jax.lax.scan(
            body, tuple(d_final), (prev_states, saved, d_outs, valid), reverse=True, unroll=unroll
        )
        d_ws = tuple(
            kinds[k].weight_grads(ws[k], prev_states[k][-1], saved[k], d_xps[k] if d_loops[k] is None else d_loops[k])
            for k in layers
        )
        d_w_ins = tuple(_outer_sum(inputs[k - 1], d_xps[k], precisions[k]) for k in layers if k > 0)
        d_b_ins = tuple(jnp.sum(d_xps[k], axis=(0, 1)) for k in layers if k > 0)
        d_valid = None if valid is None else np.zeros(valid.shape, jax.dtypes.float0)
        return d_ws, d_w_ins, d_b_ins, d_xps[0], d_states0, d_valid

    fn = jax.custom_vjp(run)
    fn.defvjp(run_fwd, run_bwd)
    return fn


@functools.cache
def _native_layer(kind_name: str, forget_bias: float) -> Callable:
    """One layer in rnnkit's native CPU kernel (rnnkit/_native), input projection, loop and
    gradients: layer(weights, x [T,B,I], state0, lengths [B] int32) -> (outputs [T,B,H],
    final state), differentiable in all but the lengths; `weights` as `_cell_weights` gives
    them (the cell's own arrays, which the forward call reads in place)."""

    def run(weights, x, state0, lengths):
        outs, final, _ = _native.forward(kind_name, x, weights, state0, lengths, forget_bias, save=False)
        return outs, final

    # Symbolic zeros: the forward learns which inputs are differentiated (`perturbed`), so the
    # backward skips the input's gradient, dz @ W_in^T, when nothing asks for it (a model's
    # first layer on its data); and a cotangent nothing produced (an unused final state) comes
    # as a SymbolicZero, made real here since the kernel reads every cotangent.
    def run_fwd(weights, x, state0, lengths):
        need_dx = x.perturbed
        weights, x, state0, lengths = jax.tree.map(lambda p: p.value, (weights, x, state0, lengths), is_leaf=_is_primal)
        outs, final, saved = _native.forward(kind_name, x, weights, state0, lengths, forget_bias, save=True)
        return (outs, final), (weights, x, saved, lengths, need_dx)

    def run_bwd(residuals, cotangents):
        weights, x, saved, lengths, need_dx = residuals
        d_outs, d_final = jax.tree.map(_real, cotangents, is_leaf=_is_zero)
        w_in, _, ws = _in_and_loop(kind_name, weights, x.shape[-1])
        d_x, d_w_in, d_b_in, d_ws, d_state0 = _native.backward(
            kind_name, x, w_in, ws, saved, d_outs, tuple(d_final), lengths, need_dx=need_dx
        )
        d_weights = _cell_weight_grads(kind_name, d_w_in, d_b_in, d_ws)
        return d_weights, d_x, d_state0, np.zeros(lengths.shape, jax.dtypes.float0)

    fn = jax.custom_vjp(run)
    fn.defvjp(run_fwd, run_bwd, symbolic_zeros=True)
    return fn


def _is_primal(p: Any) -> bool:
    return isinstance(p, CustomVJPPrimal)


def _is_zero(z: Any) -> bool:
    return isinstance(z, SymbolicZero)


def _real(z: Any) -> Array:
    return jnp.zeros(z.shape, z.aval.dtype) if _is_zero(z) else z


# ---------------------------------------------------------------------------------------------
# From a cell to (input projection, loop weights), and the layer and stack drivers.


def _split_weights(cell: RNNCell, kind: str) -> tuple[Array, Array, tuple[Array, ...]]:
    """(input kernel [input, G], input-side bias [G], loop weights) in the fused layout."""
    return _in_and_loop(kind, _cell_weights(cell, kind), cell.input_size)


def _cell_weights(cell: RNNCell, kind: str) -> tuple[Array, ...]:
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


def _in_and_loop(kind: str, weights: tuple[Array, ...], n_in: int) -> tuple[Array, Array, tuple[Array, ...]]:
    """`_cell_weights`'s arrays as (W_in [input, G], b_in [G], loop weights)."""
    if kind in ("rnn", "lstm"):
        kernel, bias = weights
        return kernel[:n_in], bias, (kernel[n_in:],)
    if kind == "gru":
        gates, candidate, gates_bias, candidate_bias = weights
        w_in = jnp.concatenate([gates[:n_in], candidate[:n_in]], axis=1)
        return w_in, jnp.concatenate([gates_bias, candidate_bias]), (gates[n_in:], candidate[n_in:])
    w_in, b_in, w_hidden, b_hidden = weights
    return w_in, b_in, (w_hidden, b_hidden)


def _cell_weight_grads(kind: str, d_w_in: Array, d_b_in: Array, d_ws: tuple[Array, ...]) -> tuple[Array, ...]:
    """The gradients of `_cell_weights`'s arrays from those of (W_in, b_in, loop weights)."""
    if kind in ("rnn", "lstm"):
        return jnp.concatenate([d_w_in, d_ws[0]], axis=0), d_b_in
    if kind == "gru":
        n = d_ws[0].shape[1]  # the gates' columns
        d_gates = jnp.concatenate([d_w_in[:, :n], d_ws[0]], axis=0)
        d_candidate = jnp.concatenate([d_w_in[:, n:], d_ws[1]], axis=0)
        return d_gates, d_candidate, d_b_in[:n], d_b_in[n:]
    return d_w_in, d_b_in, *d_ws


def _layer(
    cell: RNNCell,
    x: Array,
    state: Any,
    valid: Array | None,
    lengths: Array | None,
    unroll: int | bool,
    pallas: bool = False,
) -> tuple[Array, Any]:
    """One cell over time-major x [T, B, input]: (outputs [T, B, output], final state). With
    `lengths` (int32 [B]) the loop runs in the native kernel, else in XLA with mask `valid`,
    or with `pallas` and no mask in Pallas kernels where `_pallas.supports` the layer."""
    kind = _leaf_kind(cell)
    assert kind is not None
    forget_bias = getattr(cell, "forget_bias", 0.0)
    state0 = (state.c, state.h) if kind == "lstm" else (state,)
    if lengths is not None:
        outputs, final = _native_layer(kind, forget_bias)(_cell_weights(cell, kind), x, state0, lengths)
    else:
        w_in, b_in, ws = _split_weights(cell, kind)
        xp = jnp.matmul(x, w_in, precision=cell.precision) + b_in  # [T, B, G]: the hoisted input projection
        run = None
        if pallas and valid is None:
            from rnnkit import _pallas  # Pallas is imported only where it runs

            if _pallas.supports(kind, state0[-1].shape[-1], x.dtype):
                run = _pallas.recurrence(kind, cell.precision, float(forget_bias), unroll)
        if run is not None:
            outputs, final = run(ws, xp, state0)
        else:
            masked = valid is not None
            outputs, final = _recurrence(kind, cell.precision, forget_bias, unroll, masked)(ws, xp, state0, valid)
    return outputs, (LSTMStateTuple(*final) if kind == "lstm" else final[0])


def run_time_major(
    cell: RNNCell,
    x: Array,
    state: Any,
    lengths: Array | None,
    unroll: int | bool,
    native: bool = False,
    one_loop: bool = False,
    pallas: bool = False,
) -> tuple[Array, Any]:
    """`dynamic_rnn` on time-major x [T, B, input] for a cell `supports` accepts: the top
    layer's outputs [T, B, output] (zero past each length) and the final state. `native` runs
    the loops in rnnkit's native CPU kernel (float32; see `native_supports`); `one_loop` runs a
    MultiRNNCell in one loop over time (`_stack_recurrence`) instead of a loop per layer;
    `pallas` runs the loops of the layers `_pallas.supports` as Pallas kernels."""
    padded = (
        None if lengths is None else (jnp.arange(x.shape[0], dtype=jnp.int32)[:, None] < lengths[None, :])[..., None]
    )
    valid = None if native else padded  # [T, B, 1]: the XLA loops' mask; the kernel takes lengths
    native_lengths = None
    if native:
        native_lengths = jnp.full(x.shape[1], x.shape[0], jnp.int32) if lengths is None else lengths.astype(jnp.int32)
    plain_stack = type(cell) is MultiRNNCell and all(_leaf_kind(c) is not None for c in cell.cells)
    if one_loop and not native and plain_stack:
        return _run_stack(cell, x, state, valid, unroll)
    run_leaf = functools.partial(_layer, valid=valid, lengths=native_lengths, unroll=unroll, pallas=pallas)
    return _layered(cell, x, state, padded, run_leaf)


def _layered(
    cell: RNNCell, x: Array, state: Any, padded: Array | None, run_leaf: Callable[..., tuple[Array, Any]]
) -> tuple[Array, Any]:
    """`cell` over time-major x [T, B, input] a layer at a time, `run_leaf` running each cell
    with a fused kind. Wrappers act on whole sequences, as the per-step path acts on each step:
    a DropoutWrapper masks the layer's input sequence and its output sequence with the masks
    the per-step path draws (the same keys, so the same bits), a ResidualWrapper adds the
    layer's input to its output. `padded` ([T, B, 1], True where t < length) zeroes a residual
    sum's padded steps, as the per-step path's masking does; a layer's own outputs are zero
    there already, and so stay zero through dropout."""
    if type(cell) is MultiRNNCell:
        finals = []
        for layer, layer_state in zip(cell.cells, state, strict=True):
            x, final = _layered(layer, x, layer_state, padded, run_leaf)
            finals.append(final)
        return x, tuple(finals)
    if type(cell) is DropoutWrapper:
        if _dropout_off(cell):
            return _layered(cell.cell, x, state, padded, run_leaf)
        in_keys, out_keys = _dropout_keys(cell, x.shape[0])
        x = _drop_sequence(x, cell.input_keep_prob, in_keys, cell.variational_recurrent)
        outputs, final = _layered(cell.cell, x, state, padded, run_leaf)
        return _drop_sequence(outputs, cell.output_keep_prob, out_keys, cell.variational_recurrent), final
    if type(cell) is ResidualWrapper:
        outputs, final = _layered(cell.cell, x, state, padded, run_leaf)
        combined = x + outputs
        return (combined if padded is None else jnp.where(padded, combined, jnp.zeros_like(combined))), final
    return run_leaf(cell, x, state)


def _dropout_keys(wrapper: DropoutWrapper, steps: int) -> tuple[Any, Any]:
    """The input and output masks' keys of every step, derived as the per-step path derives
    them (`DropoutWrapper._key_at`, `_mask_keys`): stacked over the steps, or with variational
    masks the one pair every step uses."""
    if wrapper.variational_recurrent:
        k_in, _, k_out = _mask_keys(wrapper._key_at(0))
    else:
        k_in, _, k_out = jax.vmap(lambda t: _mask_keys(wrapper._key_at(t)))(jnp.arange(steps, dtype=jnp.int32))
    return k_in, k_out


def _drop_sequence(x: Array, keep_prob: float, keys: Any, variational: bool) -> Array:
    """`_wrappers._dropout` at every step of x [T, B, size] at once: step t's mask from keys[t],
    or from the one key at every step for variational masks."""
    if keep_prob == 1.0:
        return x
    drop = functools.partial(_dropout, keep_prob=keep_prob, variational=variational)
    return jax.vmap(lambda x_t, k: drop(x_t, key=k), in_axes=(0, None if variational else 0))(x, keys)


def _run_stack(cell: MultiRNNCell, x: Array, state: Any, valid: Array | None, unroll: int | bool) -> tuple[Array, Any]:
    kinds = tuple(_leaf_kind(c) for c in cell.cells)
    assert None not in kinds
    split = [_split_weights(c, k) for c, k in zip(cell.cells, kinds, strict=True)]
    first = cell.cells[0]
    xp0 = jnp.matmul(x, split[0][0], precision=first.precision) + split[0][1]  # the first layer's, hoisted
    states0 = tuple((s.c, s.h) if k == "lstm" else (s,) for s, k in zip(state, kinds, strict=True))
    run = _stack_recurrence(
        kinds,
        tuple(c.precision for c in cell.cells),
        tuple(float(getattr(c, "forget_bias", 0.0)) for c in cell.cells),
        unroll,
        valid is not None,
    )
    outputs, finals = run(
        tuple(ws for _, _, ws in split),
        tuple(w for w, _, _ in split[1:]),
        tuple(b for _, b, _ in split[1:]),
        xp0,
        states0,
        valid,
    )
    return outputs, tuple(LSTMStateTuple(*f) if k == "lstm" else f[0] for f, k in zip(finals, kinds, strict=True))
