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
arrangement runs in rnnkit's native kernel (rnnkit/_native/_layer.py runs a layer there, through
`layered` below): the projection, the loop and the gradients in C++, one call per layer. Which
loop runs is chosen in one place, rnnkit/_loops.py; the formulas live in rnnkit/_recurrence.py.

The results equal the per-step cells' up to float rounding: `x @ Wx + h @ Wh` adds the same
products as `[x, h] @ W` in another order (differences of a few ulp; tests/test_fused.py
checks values and gradients against the plain path and a NumPy reference).

Cells it takes: BasicRNNCell, BasicLSTMCell, LSTMCell without peepholes, clipping or
projection, GRUCell (both formulas), all with tanh; MultiRNNCell stacks of them; and
DropoutWrappers (input and output dropout; masks drawn for the whole sequence from the keys
the per-step path uses, so the same masks) and ResidualWrappers (the default sum) around any
of these (`unsupported` says why a cell is not taken: state dropout, a residual_fn, peepholes,
other activations).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array

from rnnkit._cells import RNNCell
from rnnkit._kinds import fast_reason, loop_kind
from rnnkit._recurrence import (
    KINDS,
    cell_state,
    masked_step,
    masked_step_back,
    matmul_at,
    outer_sum,
    split_weights,
    state_tuple,
)
from rnnkit._wrappers import DropoutWrapper, MultiRNNCell, ResidualWrapper, _dropout, _mask_keys, leaves


def _dropout_off(wrapper: DropoutWrapper) -> bool:
    """Whether a DropoutWrapper draws no mask at all: the wrapped cell's numbers exactly."""
    return bool(wrapper.inference) or wrapper.key is None


def _wrapper_reason(wrapper: RNNCell) -> str | None:
    """Why the layered arrangement can't reproduce a wrapper exactly, or None when it can: a
    DropoutWrapper that drops only inputs and outputs (whole-sequence masks, drawn from the
    keys the per-step path folds; state dropout changes the recurrence itself), and a
    ResidualWrapper with the default sum."""
    if type(wrapper) is DropoutWrapper:
        if _dropout_off(wrapper) or wrapper.state_keep_prob == 1.0:
            return None
        return f"is in a DropoutWrapper with state_keep_prob={wrapper.state_keep_prob} (state dropout)"
    if type(wrapper) is ResidualWrapper:
        return None if wrapper.residual_fn is None else "is in a ResidualWrapper with a residual_fn"
    return f"is in a {type(wrapper).__name__}"


def unsupported(cell: RNNCell) -> str | None:
    """Why this module can't run `cell`, naming the first layer it can't take, or None when it
    can: every leaf a cell kind with a loop kind (rnnkit/_kinds.py), every wrapper one
    `_wrapper_reason` takes."""
    for k, leaf in enumerate(leaves(cell)):
        reasons = [_wrapper_reason(w) for w in leaf.wrappers]
        reason = next((r for r in reasons if r is not None), None)
        if reason is None and (why := fast_reason(leaf.cell)) is not None:
            reason = why
        if reason is not None:
            return f"layer {k} ({type(leaf.cell).__name__}) {reason}"
    return None


@functools.cache
def _recurrence(kind_name: str, precision: Any, forget_bias: float, unroll: int | bool, masked: bool) -> Callable:
    """recurrence(ws, xp [T,B,G], state0, valid [T,B,1] or None) -> (outputs [T,B,H], final state),
    differentiable in ws, xp and state0 through the hand-written backward pass."""
    kind = KINDS[kind_name](precision, forget_bias)
    step = functools.partial(masked_step, kind, masked)

    def run(ws, xp, state0, valid):
        def body(state, xs):
            xp_t, valid_t = xs
            new_state, out, _ = step(ws, xp_t, valid_t, state)
            return new_state, out

        final, outs = jax.lax.scan(body, state0, (xp, valid), unroll=unroll)
        return outs, final

    def run_fwd(ws, xp, state0, valid):
        def body(state, xs):
            xp_t, valid_t = xs
            new_state, out, saved = step(ws, xp_t, valid_t, state)
            return new_state, (out, state, saved)

        final, (outs, prev_states, saved) = jax.lax.scan(body, state0, (xp, valid), unroll=unroll)
        return (outs, final), (ws, prev_states, saved, valid)

    def run_bwd(residuals, cotangents):
        ws, prev_states, saved, valid = residuals
        d_outs, d_final = cotangents
        ws_t = tuple(w.T if w.ndim == 2 else w for w in ws)

        def body(d_state, xs):
            state, saved_t, d_out, valid_t = xs
            d_prev, d_xp, d_loop = masked_step_back(kind, masked, ws_t, state, saved_t, d_state, d_out, valid_t)
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
    kinds = [KINDS[k](p, fb) for k, p, fb in zip(kind_names, precisions, forget_biases, strict=True)]
    layers = range(len(kinds))

    def step_all(ws, w_ins, b_ins, xp0_t, valid_t, states):
        """One step of every layer: (new states, every layer's (masked) output, saved)."""
        new_states, outs, saved = [], [], []
        for k in layers:
            xp = xp0_t if k == 0 else matmul_at(precisions[k])(outs[-1], w_ins[k - 1]) + b_ins[k - 1]
            new, out, kept = masked_step(kinds[k], masked, ws[k], xp, valid_t, states[k])
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
                d_prev_all[k], d_xps[k], d_loops[k] = masked_step_back(
                    kinds[k], masked, ws_t[k], states_t[k], saved_t[k], d_states[k], d_in, valid_t
                )
                if k > 0:
                    d_in = matmul_at(precisions[k])(d_xps[k], w_ins_t[k - 1])
            return tuple(d_prev_all), (tuple(d_xps), tuple(d_loops))

        d_states0, (d_xps, d_loops) = jax.lax.scan(
            body, tuple(d_final), (prev_states, saved, d_outs, valid), reverse=True, unroll=unroll
        )
        d_ws = tuple(
            kinds[k].weight_grads(ws[k], prev_states[k][-1], saved[k], d_xps[k] if d_loops[k] is None else d_loops[k])
            for k in layers
        )
        d_w_ins = tuple(outer_sum(inputs[k - 1], d_xps[k], precisions[k]) for k in layers if k > 0)
        d_b_ins = tuple(jnp.sum(d_xps[k], axis=(0, 1)) for k in layers if k > 0)
        d_valid = None if valid is None else np.zeros(valid.shape, jax.dtypes.float0)
        return d_ws, d_w_ins, d_b_ins, d_xps[0], d_states0, d_valid

    fn = jax.custom_vjp(run)
    fn.defvjp(run_fwd, run_bwd)
    return fn


# ---------------------------------------------------------------------------------------------
# The layer and stack drivers.


def valid_mask(lengths: Array | None, steps: int) -> Array | None:
    """[T, B, 1], True where t < lengths[b]; None without lengths."""
    if lengths is None:
        return None
    return (jnp.arange(steps, dtype=jnp.int32)[:, None] < lengths[None, :])[..., None]


def layer(cell: RNNCell, x: Array, state: Any, valid: Array | None, unroll: int | bool) -> tuple[Array, Any]:
    """One cell over time-major x [T, B, input] in XLA: (outputs [T, B, output], final state),
    rows past their length (`valid` False) masked."""
    kind = loop_kind(cell)
    assert kind is not None
    forget_bias = getattr(cell, "forget_bias", 0.0)
    w_in, b_in, ws = split_weights(cell, kind)
    xp = jnp.matmul(x, w_in, precision=cell.precision) + b_in  # [T, B, G]: the hoisted input projection
    run_loop = _recurrence(kind, cell.precision, forget_bias, unroll, valid is not None)
    outputs, final = run_loop(ws, xp, state_tuple(kind, state), valid)
    return outputs, cell_state(kind, final)


def run(cell: RNNCell, x: Array, state: Any, lengths: Array | None, unroll: int | bool) -> tuple[Array, Any]:
    """`dynamic_rnn` on time-major x [T, B, input] a loop per layer, for a cell the fused loops
    take (`unsupported` is None): the top layer's outputs [T, B, output] (zero past each
    length) and the final state."""
    valid = valid_mask(lengths, x.shape[0])
    return layered(cell, x, state, valid, functools.partial(layer, valid=valid, unroll=unroll))


def run_one_loop(cell: RNNCell, x: Array, state: Any, lengths: Array | None, unroll: int | bool) -> tuple[Array, Any]:
    """`run`, but a MultiRNNCell of unwrapped layers in one loop over time (`_stack_recurrence`);
    anything else (one cell, wrapped layers) a loop per layer, as `run`."""
    if type(cell) is not MultiRNNCell or any(loop_kind(c) is None for c in cell.cells):
        return run(cell, x, state, lengths, unroll)
    return _run_stack(cell, x, state, valid_mask(lengths, x.shape[0]), unroll)


def layered(
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
            x, final = layered(layer, x, layer_state, padded, run_leaf)
            finals.append(final)
        return x, tuple(finals)
    if type(cell) is DropoutWrapper:
        if _dropout_off(cell):
            return layered(cell.cell, x, state, padded, run_leaf)
        in_keys, out_keys = _dropout_keys(cell, x.shape[0])
        x = _drop_sequence(x, cell.input_keep_prob, in_keys, cell.variational_recurrent)
        outputs, final = layered(cell.cell, x, state, padded, run_leaf)
        return _drop_sequence(outputs, cell.output_keep_prob, out_keys, cell.variational_recurrent), final
    if type(cell) is ResidualWrapper:
        outputs, final = layered(cell.cell, x, state, padded, run_leaf)
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
    kinds = tuple(loop_kind(c) for c in cell.cells)
    assert None not in kinds
    split = [split_weights(c, k) for c, k in zip(cell.cells, kinds, strict=True)]
    first = cell.cells[0]
    xp0 = jnp.matmul(x, split[0][0], precision=first.precision) + split[0][1]  # the first layer's, hoisted
    states0 = tuple(state_tuple(k, s) for s, k in zip(state, kinds, strict=True))
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
    return outputs, tuple(cell_state(k, f) for f, k in zip(finals, kinds, strict=True))
