"""Gradients through the drivers against central finite differences, in float64."""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnnkit as rk

from cases import INPUT_SIZE, make_cell, random_inputs

LENGTHS = np.array([6, 2, 0, 4])


def loss(cell: rk.RNNCell, x: jax.Array, driver: str) -> jax.Array:
    """A loss that reads every output and every leaf of the final state, with fixed weights."""
    if driver == "static":
        outputs, state = rk.static_rnn(cell, x, sequence_length=LENGTHS)
        outputs = jnp.stack(outputs, axis=1)
    else:
        outputs, state = rk.dynamic_rnn(cell, x, sequence_length=LENGTHS)
    rng = np.random.default_rng(7)
    total = jnp.sum(outputs * jnp.asarray(rng.standard_normal(outputs.shape)))
    for leaf in jax.tree_util.tree_leaves(state):
        total = total + jnp.sum(jnp.tanh(leaf) * jnp.asarray(rng.standard_normal(leaf.shape)))
    return total


def directional_fd(f: Any, params: Any, direction: Any, eps: float = 1e-6) -> float:
    plus = jax.tree_util.tree_map(lambda p, d: p + eps * d, params, direction)
    minus = jax.tree_util.tree_map(lambda p, d: p - eps * d, params, direction)
    return float((f(plus) - f(minus)) / (2 * eps))


CASES = [
    ("dynamic", "lstm_peephole_clip_proj"),
    ("dynamic", "gru"),
    ("dynamic", "gru_reset_after"),
    ("dynamic", "basic_rnn"),
    ("dynamic", "multi_lstm_gru"),
    # static_rnn's gradients also equal dynamic_rnn's (test below), for every layer of the stack
    ("static", "multi_lstm_gru"),
]


@pytest.mark.parametrize(("driver", "name"), CASES)
def test_gradients_match_finite_differences(driver: str, name: str, x64: None) -> None:
    cell = make_cell(name, dtype=jnp.float64, seed=3)
    x = random_inputs((4, 6, INPUT_SIZE), jnp.float64)
    params, static = eqx.partition(cell, eqx.is_array)

    @jax.jit
    def f(p: Any, x: jax.Array) -> jax.Array:
        return loss(eqx.combine(p, static), x, driver)

    grads, gx = jax.jit(jax.grad(f, argnums=(0, 1)))(params, x)  # one program for both
    rng = np.random.default_rng(11)
    for trial in range(2):
        direction = jax.tree_util.tree_map(lambda p: jnp.asarray(rng.standard_normal(p.shape)), params)
        analytic = sum(
            float(jnp.vdot(g, d))
            for g, d in zip(jax.tree_util.tree_leaves(grads), jax.tree_util.tree_leaves(direction), strict=True)
        )
        numeric = directional_fd(lambda p: f(p, x), params, direction)
        assert analytic == pytest.approx(numeric, rel=1e-6, abs=1e-8), f"trial {trial}"
    # With respect to the inputs, padded steps get exactly zero gradient.
    dx = jnp.asarray(rng.standard_normal(x.shape))
    assert float(jnp.vdot(gx, dx)) == pytest.approx(directional_fd(lambda x: f(params, x), x, dx), rel=1e-6, abs=1e-8)
    t = np.arange(6)[None, :, None]
    assert not np.any(np.asarray(gx) * (t >= LENGTHS[:, None, None]))


def test_static_and_dynamic_gradients_agree() -> None:
    cell = make_cell("multi_lstm_gru")
    x = random_inputs((4, 6, INPUT_SIZE))
    g_static = jax.jit(jax.grad(lambda c: loss(c, x, "static")))(cell)
    g_dynamic = jax.jit(jax.grad(lambda c: loss(c, x, "dynamic")))(cell)
    for a, b in zip(jax.tree_util.tree_leaves(g_static), jax.tree_util.tree_leaves(g_dynamic), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
