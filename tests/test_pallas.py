"""implementation="pallas" (rnnkit/_pallas.py): per-step Pallas kernels for LSTM and TF1 GRU
layers. Here they run in Pallas's interpreter on the CPU and must equal the plain per-step path
(itself checked against the NumPy reference and finite differences); their lowering for Triton is
checked by exporting a gradient program for CUDA, which needs no GPU."""

from __future__ import annotations

import re
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnnkit as rk
from rnnkit import _pallas
from test_fused import _assert_trees_close, _value_and_grads

from cases import INPUT_SIZE, random_inputs


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
    """How many pallas_calls the gradient program of dynamic_rnn(implementation="pallas") holds."""

    def loss(c: Any, v: jax.Array) -> jax.Array:
        return jnp.sum(rk.dynamic_rnn(c, v, lengths, implementation="pallas")[0])

    return len(re.findall(r"\bpallas_call\[", str(jax.make_jaxpr(jax.grad(loss))(cell, x))))


def test_pallas_equals_plain_path_values_and_gradients() -> None:
    """Batch 20, which the kernels' 16-row tiles pad to 32; float32 rounding apart, the same
    values and gradients (weights, inputs, initial state) as per_step."""
    cell = _stack()
    x = random_inputs((20, 5, INPUT_SIZE), jnp.float32)
    # forward: one kernel for the LSTM, two for the GRU; backward the same again
    assert _kernel_launches(cell, x) == 6
    fast = _value_and_grads(cell, x, None, False, "pallas")
    plain = _value_and_grads(cell, x, None, False, "per_step")
    _assert_trees_close(fast, plain, 2e-5)


def test_pallas_with_sequence_length_runs_fused() -> None:
    """The kernels have no mask: with sequence_length every layer runs the fused path (tested
    in test_fused), and dynamic_rnn gives fused's numbers."""
    cell = _stack()
    x = random_inputs((4, 5, INPUT_SIZE), jnp.float32)
    lengths = np.array([5, 2, 0, 3])
    assert _kernel_launches(cell, x, lengths) == 0

    def program(how: str) -> str:  # fused's program exactly, so fused's numbers
        return str(jax.make_jaxpr(lambda v: rk.dynamic_rnn(cell, v, lengths, implementation=how))(x))

    assert program("pallas") == program("fused")


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
    assert _pallas.supports(kind, units, dtype) == taken


def test_kernels_lower_for_triton(monkeypatch: pytest.MonkeyPatch) -> None:
    """The seed model's layer sizes, lowered for CUDA as on a GPU (Pallas's Triton backend)
    without running: every kernel is a Triton custom call, and nothing slices a step out of a
    whole-sequence buffer or writes one into it (the kernels do, in place), as XLA's scans
    would."""
    monkeypatch.setattr(_pallas, "INTERPRET", False)
    k = jax.random.split(jax.random.key(0), 2)
    cell = rk.MultiRNNCell([rk.LSTMCell(128, input_size=28, key=k[0]), rk.GRUCell(256, input_size=128, key=k[1])])
    x = jnp.zeros((128, 28, 28), jnp.float32)

    def loss(c: Any, v: jax.Array) -> jax.Array:
        return jnp.sum(rk.dynamic_rnn(c, v, implementation="pallas", unroll=1)[0])

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
