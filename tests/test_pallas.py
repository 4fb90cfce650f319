"""rnnkit.experimental.pallas (experimental, outside dynamic_rnn's implementations): per-step
Pallas kernels for LSTM and TF1 GRU layers. Here they run in Pallas's interpreter on the CPU and must equal the plain per-step path
(itself checked against the NumPy reference and finite differences); their lowering for Triton is
checked by exporting a gradient program for CUDA, which needs no GPU."""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnnkit as rk
from rnnkit.experimental import pallas

from cases import INPUT_SIZE, assert_trees_close, count_primitive, random_inputs, read_everything


def _stack() -> rk.MultiRNNCell:
    """An LSTM and a TF1 GRU the kernels take, then a basic RNN cell that runs the fused path,
    with non-default biases so a bias dropped or doubled would show."""
    k = jax.random.split(jax.random.key(5), 3)
    cells = [
        rk.LSTMCell(16, input_size=INPUT_SIZE, key=k[0], forget_bias=0.5),
        rk.GRUCell(32, input_size=16, key=k[1]),
        rk.BasicRNNCell(8, input_size=32, key=k[2]),
    ]

    def shifted(a: jax.Array) -> jax.Array:
        return a + 0.3 * jnp.sin(jnp.arange(a.shape[0], dtype=a.dtype)) if a.ndim == 1 else a

    return rk.MultiRNNCell([jax.tree_util.tree_map(shifted, c) for c in cells])


def _kernel_launches(cell: rk.RNNCell, x: jax.Array, lengths: Any = None) -> int:
    """How many pallas_calls the gradient program of `pallas.dynamic_rnn` holds."""

    def loss(c: Any, v: jax.Array) -> jax.Array:
        return jnp.sum(pallas.dynamic_rnn(c, v, lengths)[0])

    return count_primitive(jax.grad(loss), "pallas_call", cell, x)


def _value_and_grads(cell: rk.RNNCell, x: jax.Array, run: Any) -> Any:
    """Value and gradients (weights, inputs, initial state) of a loss reading every output and
    final state leaf, `run(cell, x, state0)` giving (outputs, final state)."""
    state0 = jax.tree_util.tree_map(lambda z: z + 0.1, cell.zero_state(x.shape[0]))
    params, static = eqx.partition(cell, eqx.is_inexact_array)

    def f(p: Any, v: jax.Array, s: Any) -> jax.Array:
        return read_everything(*run(eqx.combine(p, static), v, s))

    return jax.jit(jax.value_and_grad(f, argnums=(0, 1, 2)))(params, x, state0)


def test_pallas_equals_plain_path_values_and_gradients() -> None:
    """Batch 20, which the kernels' 16-row tiles pad to 32; float32 rounding apart, the same
    values and gradients (weights, inputs, initial state) as per_step."""
    cell = _stack()
    x = random_inputs((20, 5, INPUT_SIZE), jnp.float32)
    # forward: one kernel for the LSTM, two for the GRU; backward the same again
    assert _kernel_launches(cell, x) == 6
    fast = _value_and_grads(cell, x, lambda c, v, s: pallas.dynamic_rnn(c, v, initial_state=s))
    plain = _value_and_grads(cell, x, lambda c, v, s: rk.dynamic_rnn(c, v, initial_state=s, implementation="per_step"))
    assert_trees_close(fast, plain, 2e-5)


def test_pallas_with_sequence_length_runs_fused() -> None:
    """The kernels have no mask: with sequence_length every layer runs the fused path (tested
    in test_fused), and gives fused's numbers, bit for bit."""
    cell = _stack()
    x = random_inputs((4, 5, INPUT_SIZE), jnp.float32)
    lengths = np.array([5, 2, 0, 3])
    assert _kernel_launches(cell, x, lengths) == 0
    got = jax.jit(lambda v: pallas.dynamic_rnn(cell, v, lengths, unroll=1))(x)
    want = jax.jit(lambda v: rk.dynamic_rnn(cell, v, lengths, implementation="fused", unroll=1))(x)
    assert_trees_close(got, want, 0.0)


def test_cells_the_fused_path_does_not_take_are_refused() -> None:
    cell = rk.LSTMCell(16, input_size=INPUT_SIZE, key=jax.random.key(0), use_peepholes=True)
    with pytest.raises(ValueError, match=r"layer 0 \(LSTMCell\) has use_peepholes=True"):
        pallas.dynamic_rnn(cell, random_inputs((2, 3, INPUT_SIZE), jnp.float32))


@pytest.mark.parametrize(
    ("kind", "units", "dtype", "taken"),
    [
        ("lstm", 16, jnp.float32, True),
        ("gru", 256, jnp.float32, True),
        ("lstm", 8, jnp.float32, False),  # below the kernels' smallest tile
        ("gru", 100, jnp.float32, False),  # Triton's blocks are powers of two
        ("lstm", 32, jnp.float64, False),
        ("rnn", 32, jnp.float32, False),
        ("gru_reset_after", 32, jnp.float32, False),
    ],
)
def test_layers_the_kernels_take(kind: str, units: int, dtype: Any, taken: bool) -> None:
    assert pallas.supports(kind, units, dtype) == taken


def test_kernels_lower_for_triton(monkeypatch: pytest.MonkeyPatch) -> None:
    """The seed model's layer sizes, lowered for CUDA as on a GPU (Pallas's Triton backend)
    without running: every kernel is a Triton custom call, and nothing slices a step out of a
    whole-sequence buffer or writes one into it (the kernels do, in place), as XLA's scans
    would."""
    monkeypatch.setattr(pallas, "INTERPRET", False)
    k = jax.random.split(jax.random.key(0), 2)
    cell = rk.MultiRNNCell([rk.LSTMCell(128, input_size=28, key=k[0]), rk.GRUCell(256, input_size=128, key=k[1])])
    x = jnp.zeros((128, 28, 28), jnp.float32)

    def loss(c: Any, v: jax.Array) -> jax.Array:
        return jnp.sum(pallas.dynamic_rnn(c, v, unroll=1)[0])

    triton = "__gpu$xla.gpu.triton"
    exported = jax.export.export(
        jax.jit(jax.grad(loss)),
        platforms=["cuda"],
        disabled_checks=[jax.export.DisabledSafetyCheck.custom_call(triton)],
    )(cell, x)
    text = exported.mlir_module()
    assert text.count(f"@{triton}") == 6
    assert text.count("stablehlo.while") == 4  # each layer's loop, forward and backward
    assert "stablehlo.dynamic_slice" not in text
    assert "stablehlo.dynamic_update_slice" not in text
