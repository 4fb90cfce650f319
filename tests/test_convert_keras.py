"""rnnkit.convert against Keras 3 itself (JAX backend): the same network as a keras.Sequential
of SimpleRNN / LSTM / GRU layers and a Dense head and as rnnkit cells, weights converted one
way or the other, outputs, every layer's final state and the logits compared on random
inputs (float32, 1e-5); round trips bit for bit.

Needs keras 3 (in the `test` extra); skipped without it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

os.environ.setdefault("KERAS_BACKEND", "jax")  # must precede the first import of keras

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnnkit as rk
import rnnkit.convert as rc

from convert_cases import random_classifier

keras = pytest.importorskip("keras", minversion="3")

pytestmark = pytest.mark.keras

TOL = 1e-5
BATCH, TIME, DEPTH, CLASSES = 3, 6, 5, 4

# Every cell Keras has a counterpart for: SimpleRNN, LSTM (forget_bias 1.0 folded into Keras's
# bias, and 0.0), GRU(reset_after=False) = TF1's GRUCell, GRU(reset_after=True).
EVERY_KIND = "rnn:5,lstm:6,basic_lstm:6:forget_bias=0.0,gru:6,gru_reset_after:5"
# Keras keeps the forget bias inside its one LSTM bias: only forget_bias=0 comes back bit for bit.
EXACT = "rnn:5,lstm:6:forget_bias=0.0,gru:6,gru_reset_after:5"
SEED = "lstm:16:forget_bias=0.0,gru:32"


@pytest.fixture(autouse=True)
def standard_promotion() -> Iterator[None]:
    """Keras's JAX backend mixes dtypes the way NumPy does; the suite's strict promotion is for rnnkit."""
    with jax.numpy_dtype_promotion("standard"):
        yield


def rnnkit_model(cells: str, seed: int = 0) -> Any:
    return random_classifier(cells, input_size=DEPTH, num_classes=CLASSES, num_steps=TIME, seed=seed)


def keras_model(layers: list[dict[str, Any]]) -> Any:
    """A functional model returning (last outputs, [each layer's final state], logits)."""
    x = inputs_ = keras.Input((TIME, DEPTH))
    states = []
    for spec in layers[:-1]:
        args = {k: v for k, v in spec.items() if k not in ("class", "return_sequences")}
        x, *state = getattr(keras.layers, spec["class"])(return_sequences=True, return_state=True, **args)(x)
        states.append(state)
    logits = keras.layers.Dense(layers[-1]["units"])(x[:, -1])
    return keras.Model(inputs_, [x, states, logits])


def inputs(seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((BATCH, TIME, DEPTH)).astype(np.float32)


def compare(model: Any, net: Any, x: np.ndarray) -> None:
    want_out, want_states, want_logits = net(x)
    got_out, got_state = rk.dynamic_rnn(model.cell, jnp.asarray(x))
    got_states = list(got_state) if isinstance(model.cell, rk.MultiRNNCell) else [got_state]
    np.testing.assert_allclose(np.asarray(got_out), np.asarray(want_out), rtol=TOL, atol=TOL)
    for k, (got, want) in enumerate(zip(got_states, want_states, strict=True)):
        got = [got.h, got.c] if isinstance(got, rk.LSTMStateTuple) else [got]  # Keras's LSTM state: [h, c]
        assert len(got) == len(want), f"layer {k}"
        for g, w in zip(got, want, strict=True):
            np.testing.assert_allclose(np.asarray(g), np.asarray(w), rtol=TOL, atol=TOL, err_msg=f"layer {k}")
    np.testing.assert_allclose(np.asarray(model(jnp.asarray(x))), np.asarray(want_logits), rtol=TOL, atol=TOL)


@pytest.mark.parametrize("cells", [EVERY_KIND, SEED], ids=["every_kind", "seed"])
def test_rnnkit_to_keras(cells: str) -> None:
    model = rnnkit_model(cells)
    net = keras_model(rc.keras_layers(model))
    net.set_weights(rc.to_keras_weights(model))
    compare(model, net, inputs())


@pytest.mark.parametrize("cells", [EVERY_KIND, SEED], ids=["every_kind", "seed"])
def test_keras_to_rnnkit(cells: str) -> None:
    net = keras_model(rc.keras_layers(rnnkit_model(cells)))  # Keras's own initialisation
    rng = np.random.default_rng(4)
    # Keras starts biases at 0 (and the LSTM forget slice at 1): redraw them so every bias counts.
    net.set_weights(
        [
            w if w.ndim == 2 and w.shape[0] != 2 else rng.uniform(-1, 1, w.shape).astype(w.dtype)
            for w in net.get_weights()
        ]
    )
    conversion = rc.from_keras_weights(net.get_weights())
    compare(conversion.classifier(num_steps=TIME), net, inputs())


def test_round_trips_are_bit_identical() -> None:
    model = rnnkit_model(EXACT)
    net = keras_model(rc.keras_layers(model))
    net.set_weights(rc.to_keras_weights(model))
    back = rc.from_keras_weights(net.get_weights(), cells=EXACT)
    for name, value in model.variables().items():
        np.testing.assert_array_equal(back.variables[name], value, err_msg=name)
    keras_weights = net.get_weights()
    again = rc.to_keras_weights(rc.from_keras_weights(keras_weights).classifier(num_steps=TIME))
    for got, want in zip(again, keras_weights, strict=True):
        np.testing.assert_array_equal(got, want)
