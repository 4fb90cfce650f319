"""A layer of `dynamic_rnn` in the native kernel: the custom VJP around `forward` and `backward`
(rnnkit/_native/__init__.py) and the weight layout it hands them (rnnkit/_recurrence.py).

`dynamic_rnn(implementation="native")` runs each layer through `layer` below, the wrappers
between layers as the fused path runs them (`_fused.layered`), so it computes what `"fused"`
and `"per_step"` compute, to float32 rounding.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.custom_derivatives import CustomVJPPrimal, SymbolicZero
from jaxtyping import Array

from rnnkit import _native
from rnnkit._cells import RNNCell
from rnnkit._kinds import loop_kind
from rnnkit._recurrence import cell_state, cell_weight_grads, cell_weights, in_and_loop, state_tuple


@functools.cache
def _native_layer(kind_name: str, forget_bias: float) -> Callable:
    """One layer in rnnkit's native CPU kernel, input projection, loop and gradients:
    layer(weights, x [T,B,I], state0, lengths [B] int32) -> (outputs [T,B,H], final state),
    differentiable in all but the lengths; `weights` as `_recurrence.cell_weights` gives them
    (the cell's own arrays, which the forward call reads in place)."""

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
        w_in, _, ws = in_and_loop(kind_name, weights, x.shape[-1])
        d_x, d_w_in, d_b_in, d_ws, d_state0 = _native.backward(
            kind_name, x, w_in, ws, saved, d_outs, tuple(d_final), lengths, need_dx=need_dx
        )
        d_weights = cell_weight_grads(kind_name, d_w_in, d_b_in, d_ws)
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


def layer(cell: RNNCell, x: Array, state: Any, lengths: Array) -> tuple[Array, Any]:
    """One leaf cell over time-major x [T, B, input] in the kernel: (outputs [T, B, output],
    final state); rows past `lengths` (int32 [B]) keep their state and output zeros."""
    kind = loop_kind(cell)
    assert kind is not None
    forget_bias = getattr(cell, "forget_bias", 0.0)
    run = _native_layer(kind, forget_bias)
    outputs, final = run(cell_weights(cell, kind), x, state_tuple(kind, state), lengths)
    return outputs, cell_state(kind, final)
