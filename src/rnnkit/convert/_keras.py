"""rnnkit cells <-> Keras 3 `SimpleRNN` / `LSTM` / `GRU` weights, in `get_weights()` order.

A stack is the flat list a `keras.Sequential` of those layers (all but the last with
`return_sequences=True`) and an optional final `Dense` returns from `model.get_weights()`:

    per layer   [kernel [D, gH], recurrent_kernel [H, gH], bias]     (g = 1, 4, 3)
    head        [kernel [H, classes], bias [classes]]                (= fully_connected/weights, biases)

Correspondence (reference §2.9): `rnn` <-> SimpleRNN; `lstm` / `basic_lstm` <-> LSTM (gates
i, j, f, o <-> i, f, c, o; Keras stores the forget bias in its bias, rnnkit adds it at run
time); `gru` (TF1's GRUCell) <-> GRU(reset_after=False), exactly; `gru_reset_after` <->
GRU(reset_after=True) (Keras's default; bias [2, 3H], input and recurrent). Keras's defaults
(activation tanh, recurrent_activation sigmoid) are assumed, as the weights cannot show them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from rnnkit._kinds import CELL_KINDS
from rnnkit.convert import _layouts as L
from rnnkit.convert._stack import (
    Conversion,
    Layer,
    check_given_spec,
    conversion_from_layers,
    layers_of,
    refuse_lstm_options,
)
from rnnkit.errors import ConfigError
from rnnkit.models.classifier import CellSpec, parse_cells

# The Keras layer holding each kind's weights, read off rnnkit's cell kinds.
KERAS_LAYER = {kind.spec: kind.keras for kind in CELL_KINDS}


def _check_exportable(layer: Layer, index: int) -> None:
    refuse_lstm_options(layer, index, "Keras's LSTM")


def to_keras_weights(model: Any) -> list[np.ndarray]:
    """An rnnkit cell stack or SequenceClassifier as the weights list of the Keras model
    `keras_layers(model)` describes (`model.set_weights(...)` takes it)."""
    layers, head = layers_of(model)
    weights: list[np.ndarray] = []
    for k, layer in enumerate(layers):
        _check_exportable(layer, k)
        kind = layer.spec.kind
        if KERAS_LAYER[kind] == "LSTM":
            weights += L.lstm_to_keras(layer.weights, layer.input_size, layer.forget_bias)
        elif KERAS_LAYER[kind] == "GRU":
            weights += L.gru_to_keras(layer.weights, layer.input_size, reset_after=kind == "gru_reset_after")
        else:
            weights += L.rnn_to_keras(layer.weights, layer.input_size)
    if head is not None:
        weights += [np.ascontiguousarray(head[0]), np.asarray(head[1])]
    return weights


def keras_layers(model: Any) -> list[dict[str, Any]]:
    """The Keras layers `to_keras_weights(model)` fits, in order, as (class name, arguments):
    e.g. [{'class': 'LSTM', 'units': 128, 'return_sequences': True}, {'class': 'GRU', 'units': 256,
    'reset_after': False}, {'class': 'Dense', 'units': 10}]. Input: (time, input_size)."""
    layers, head = layers_of(model)
    out: list[dict[str, Any]] = []
    for k, layer in enumerate(layers):
        _check_exportable(layer, k)
        entry: dict[str, Any] = {"class": KERAS_LAYER[layer.spec.kind], "units": layer.spec.units}
        if entry["class"] == "GRU":
            entry["reset_after"] = layer.spec.kind == "gru_reset_after"
        if k < len(layers) - 1:
            entry["return_sequences"] = True
        out.append(entry)
    if head is not None:
        out.append({"class": "Dense", "units": int(head[0].shape[1])})
    return out


def _recurrent_at(weights: Sequence[np.ndarray], i: int) -> int | None:
    """The gate count g if weights[i:i+2] are a recurrent layer's kernel [D, gH] and
    recurrent_kernel [H, gH], else None."""
    if i + 1 >= len(weights):
        return None
    kernel, recurrent = weights[i], weights[i + 1]
    if kernel.ndim != 2 or recurrent.ndim != 2 or kernel.shape[1] != recurrent.shape[1] or recurrent.shape[0] < 1:
        return None
    units = recurrent.shape[0]
    gates = recurrent.shape[1] // units
    return gates if gates in (1, 3, 4) and gates * units == recurrent.shape[1] else None


def from_keras_weights(
    weights: Sequence[Any],
    *,
    cells: str | None = None,
    reset_after: bool | None = None,
    forget_bias: float = 0.0,
    source: str = "Keras weights",
) -> Conversion:
    """A Keras `get_weights()` list (SimpleRNN / LSTM / GRU layers, then optionally a Dense
    head) as rnnkit weights. Kinds and sizes come from the shapes; a GRU's variant from its
    bias ([3H]: reset_after=False -> `gru`, [2, 3H]: True -> `gru_reset_after`), or from
    `reset_after` for a GRU without bias. LSTMs become `lstm` cells with `forget_bias`
    (default 0.0: Keras's bias already holds it). `cells` overrides kinds and forget biases.
    """
    arrays = [np.asarray(w.numpy() if hasattr(w, "numpy") and not isinstance(w, np.ndarray) else w) for w in weights]
    given = parse_cells(cells) if cells is not None else None
    layers: list[Layer] = []
    head = None
    i = 0
    while i < len(arrays):
        gates = _recurrent_at(arrays, i)
        if gates is None:
            rest = arrays[i:]
            if len(rest) in (1, 2) and rest[0].ndim == 2 and (len(rest) == 1 or rest[1].shape == (rest[0].shape[1],)):
                bias = rest[1] if len(rest) == 2 else np.zeros(rest[0].shape[1], rest[0].dtype)
                head = (rest[0], bias)
                break
            shapes = ", ".join(str(list(a.shape)) for a in rest[:3])
            raise ConfigError(
                f"{source}: weights[{i}:] ({shapes}, ...) are neither a recurrent layer's [kernel [D, gH], "
                "recurrent_kernel [H, gH], bias] nor a final Dense's [kernel, bias]"
            )
        kernel, recurrent = arrays[i], arrays[i + 1]
        units = recurrent.shape[0]
        layer_weights = [kernel, recurrent]
        nxt = arrays[i + 2] if i + 2 < len(arrays) else None
        has_bias = nxt is not None and (nxt.shape == (gates * units,) or (gates == 3 and nxt.shape == (2, 3 * units)))
        if has_bias:
            layer_weights.append(nxt)
        index = len(layers)
        spec_given = None
        if given is not None:
            if index >= len(given):
                raise ConfigError(f"--cells lists {len(given)} layers but {source} has more")
            spec_given = given[index]
        spec, layer_reset_after = _spec_for(
            gates, units, layer_weights, reset_after, forget_bias, spec_given, index, source
        )
        if gates == 4:
            fb = float(dict(spec.options).get("forget_bias", 1.0))
            local = L.lstm_from_keras(layer_weights, fb)
        elif gates == 3:
            local = L.gru_from_keras(layer_weights, layer_reset_after)
        else:
            local = L.rnn_from_keras(layer_weights)
        layers.append(Layer(spec, int(kernel.shape[0]), local))
        i += len(layer_weights)
    if given is not None and len(given) != len(layers):
        raise ConfigError(f"--cells lists {len(given)} layers but {source} has {len(layers)}")
    return conversion_from_layers(layers, head, source=source)


def _spec_for(
    gates: int,
    units: int,
    layer_weights: list[np.ndarray],
    reset_after: bool | None,
    forget_bias: float,
    given: CellSpec | None,
    index: int,
    source: str,
) -> tuple[CellSpec, bool]:
    layer_reset_after = False
    if gates == 3:
        if len(layer_weights) == 3:
            from_bias = layer_weights[2].ndim == 2
            if reset_after is not None and reset_after != from_bias:
                raise ConfigError(
                    f"{source}: layer {index} is a GRU with reset_after={from_bias} (its bias is "
                    f"{list(layer_weights[2].shape)}); got reset_after={reset_after}"
                )
            layer_reset_after = from_bias
        elif reset_after is None:
            raise ConfigError(
                f"{source}: layer {index} is a GRU without bias, whose weights do not show reset_after; "
                "pass reset_after"
            )
        else:
            layer_reset_after = reset_after
    kind = {1: "rnn", 4: "lstm", 3: "gru_reset_after" if layer_reset_after else "gru"}[gates]
    if given is None:
        options = (("forget_bias", float(forget_bias)),) if gates == 4 else ()
        return CellSpec(kind, units, options), layer_reset_after
    check_given_spec(given, kind, units, index, source, "Keras's LSTM")
    return given, layer_reset_after
