"""What every converter shares: a stack described layer by layer, and the `Conversion` result.

A converter reads a peer's weights into a list of `Layer`s (kind, size, weights below the
cell's scope) plus an optional dense head, and `Conversion` turns that into rnnkit's
variable names (the TF1 paths a SequenceClassifier uses). The way out goes through
`layers_of`, which reads the layers back off an rnnkit cell or classifier.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import equinox as eqx
import jax
import numpy as np

from rnnkit._cells import RNNCell
from rnnkit._kinds import CELL_KINDS, is_tanh, kind_of
from rnnkit._variables import get_variables
from rnnkit._wrappers import DropoutWrapper, leaves
from rnnkit.errors import ConfigError
from rnnkit.models.classifier import (
    HEAD_BIASES,
    HEAD_WEIGHTS,
    CellSpec,
    SequenceClassifier,
    build_classifier,
    format_cells,
    parse_cells,
)

# The TF1 scope name each kind's cell lives under (its `name`), read off rnnkit's cell kinds.
CELL_NAMES = {kind.spec: kind.scope for kind in CELL_KINDS}
KIND_OF_CELL_NAME = {kind.scope: kind.spec for kind in CELL_KINDS}


@dataclass(frozen=True)
class Layer:
    """One cell of a stack: its spec, what it reads, and its weights below its own scope."""

    spec: CellSpec
    input_size: int
    weights: dict[str, np.ndarray]

    @property
    def forget_bias(self) -> float:
        return float(dict(self.spec.options).get("forget_bias", 1.0))


def cell_scope(index: int, num_layers: int, kind: str) -> str:
    """TF1's scope of layer `index`: `rnn/<cell>` alone, `rnn/multi_rnn_cell/cell_<k>/<cell>` in a stack."""
    stack = "rnn" if num_layers == 1 else f"rnn/multi_rnn_cell/cell_{index}"
    return f"{stack}/{CELL_NAMES[kind]}"


@dataclass(frozen=True)
class AdamState:
    """TF1 `AdamOptimizer` state carried over from a checkpoint: the first (`<var>/Adam`) and
    second (`<var>/Adam_1`) moments by rnnkit variable name, and how many updates were made
    (from `beta1_power` = beta1^(step + 1))."""

    m: dict[str, np.ndarray]
    v: dict[str, np.ndarray]
    step: int


@dataclass(frozen=True)
class Conversion:
    """Weights brought into rnnkit from another framework.

    `cells` is the stack as a `--cells` spec (what `rnnkit train --cells` takes),
    `input_size` the depth the first layer reads, `variables` every weight by its rnnkit
    (TF1) name: the cells under `rnn/...` and, when the source had a dense head,
    `fully_connected/weights` [units, classes] and `fully_connected/biases`. `skipped` lists
    every source name that was not converted (optimizer slots, step counters, or anything
    else that was allowed to stay behind): nothing is dropped without being named. `adam`
    holds a TF1 checkpoint's Adam state when it has one for every variable; `write_run_dir`
    then saves it, so `rnnkit train --resume` continues TF1's training.
    """

    cells: str
    input_size: int
    variables: dict[str, np.ndarray]
    num_classes: int | None = None
    skipped: tuple[str, ...] = ()
    source: str = field(default="", compare=False)
    adam: AdamState | None = field(default=None, compare=False)  # TF1 checkpoints with Adam slots

    def specs(self) -> tuple[CellSpec, ...]:
        return parse_cells(self.cells)

    def cell(self) -> RNNCell:
        """The cell stack with these weights (a MultiRNNCell for several layers)."""
        model = self._model(num_steps=1, mode="dynamic", num_classes=self.num_classes or 1, with_head=False)
        return model.cell

    def classifier(self, *, num_steps: int = 28, mode: str = "dynamic") -> SequenceClassifier:
        """A SequenceClassifier (cells + dense head); needs a source with a head.
        `num_steps` only matters for mode='static', which is pinned to one length."""
        if self.num_classes is None:
            raise ConfigError(f"{self.source or 'the source'} has no dense head, so it makes no classifier")
        return self._model(num_steps=num_steps, mode=mode, num_classes=self.num_classes, with_head=True)

    def _model(self, *, num_steps: int, mode: str, num_classes: int, with_head: bool) -> SequenceClassifier:
        # Only the structure is needed (every weight is replaced), so nothing is initialised:
        # the skeleton's leaves are shapes and dtypes, which `with_variables` checks against.
        model = eqx.filter_eval_shape(
            build_classifier,
            self.specs(),
            input_size=self.input_size,
            num_classes=num_classes,
            num_steps=num_steps,
            mode=mode,
            key=jax.random.key(0),
        )
        variables = dict(self.variables)
        if not with_head:
            variables = {k: v for k, v in variables.items() if k not in (HEAD_WEIGHTS, HEAD_BIASES)}
            variables[HEAD_WEIGHTS] = np.zeros(model.weights.shape, model.weights.dtype)
            variables[HEAD_BIASES] = np.zeros(model.biases.shape, model.biases.dtype)
        try:
            return model.with_variables(variables)
        except ValueError as err:
            raise ConfigError(
                f"{self.source or 'the converted weights'} do not fit --cells {self.cells}: {err}"
            ) from None


def check_chain(layers: list[Layer], source: str) -> None:
    """Each layer must read what the one before it gives."""
    if not layers:
        raise ConfigError(f"{source}: found no recurrent layer to convert")
    for k in range(1, len(layers)):
        want = layers[k - 1].spec.output_size
        if layers[k].input_size != want:
            raise ConfigError(
                f"{source}: layer {k} reads {layers[k].input_size} features but layer {k - 1} gives {want}; "
                "the layers are not one stack in this order"
            )


def conversion_from_layers(
    layers: list[Layer],
    head: tuple[np.ndarray, np.ndarray] | None,
    *,
    skipped: tuple[str, ...] = (),
    source: str = "",
    adam: AdamState | None = None,
) -> Conversion:
    """Name the layers' weights as rnnkit does, check the stack chains, and check it builds."""
    check_chain(layers, source)
    variables: dict[str, np.ndarray] = {}
    for k, layer in enumerate(layers):
        scope = cell_scope(k, len(layers), layer.spec.kind)
        variables.update({f"{scope}/{name}": np.asarray(v) for name, v in layer.weights.items()})
    num_classes = None
    if head is not None:
        weights, biases = head
        if weights.ndim != 2 or biases.shape != (weights.shape[1],) or weights.shape[0] != layers[-1].spec.output_size:
            raise ConfigError(
                f"{source}: the dense head must be weights [{layers[-1].spec.output_size}, classes] and biases "
                f"[classes]; got {list(weights.shape)} and {list(biases.shape)}"
            )
        variables[HEAD_WEIGHTS], variables[HEAD_BIASES] = np.ascontiguousarray(weights), np.asarray(biases)
        num_classes = int(weights.shape[1])
    conversion = Conversion(
        format_cells(tuple(layer.spec for layer in layers)),
        layers[0].input_size,
        variables,
        num_classes,
        tuple(skipped),
        source,
        adam,
    )
    conversion.cell()  # every name, shape and dtype checked against the cells the spec builds
    return conversion


# What TF1's LSTMCell has beyond a plain LSTM: options a peer's LSTM may lack.
LSTM_OPTIONS = ("peepholes", "proj", "cell_clip", "proj_clip")


def refuse_lstm_options(layer: Layer, index: int, peer_lstm: str, lacking: tuple[str, ...] = LSTM_OPTIONS) -> None:
    """Refuse to write out a layer using any of the options `lacking`, which `peer_lstm` does not have."""
    unsupported = [name for name in lacking if name in dict(layer.spec.options)]
    if unsupported:
        raise ConfigError(
            f"layer {index} ({layer.spec.kind}:{layer.spec.units}) uses {', '.join(unsupported)}, which {peer_lstm} "
            "does not have; it cannot be converted exactly"
        )


def check_given_spec(given: CellSpec, kind: str, units: int, index: int, source: str, peer_lstm: str) -> None:
    """A `--cells` entry for a layer the weights show as `kind`:`units` (an LSTM may be given as
    lstm or basic_lstm) must name that cell, and no LSTM option the peer's LSTM (`peer_lstm`)
    lacks."""
    allowed = ("lstm", "basic_lstm") if kind == "lstm" else (kind,)
    if given.kind not in allowed or given.units != units:
        raise ConfigError(
            f"--cells: layer {index} of {source} is {' or '.join(allowed)}:{units}; got {given.kind}:{given.units}"
        )
    extra = [name for name in LSTM_OPTIONS if name in dict(given.options)]
    if extra:
        raise ConfigError(f"--cells: layer {index} asks for {', '.join(extra)}, which {peer_lstm} does not have")


def with_forget_bias(spec: CellSpec, forget_bias: float) -> CellSpec:
    options = {**dict(spec.options), "forget_bias": float(forget_bias)}
    return CellSpec(spec.kind, spec.units, tuple(sorted(options.items())))


def leaf_cells(cell: Any) -> list[RNNCell]:
    """The weight-holding cells of a stack, in order; dropout wrappers (identity at inference)
    are looked through, anything that changes the math is refused: the converters' rule on
    the wrapper tree's walk (`_wrappers.leaves`)."""
    found = []
    for leaf in leaves(cell):
        other = next((w for w in leaf.wrappers if not isinstance(w, DropoutWrapper)), None)
        if other is not None or kind_of(leaf.cell) is None:
            raise ConfigError(
                f"cannot convert a {type(other or leaf.cell).__name__}: only "
                f"{', '.join(dict.fromkeys(k.cell_class.__name__ for k in CELL_KINDS))} "
                "(alone, in a MultiRNNCell, or in a DropoutWrapper) have a counterpart in the other frameworks"
            )
        found.append(leaf.cell)
    return found


def _spec_of(cell: RNNCell) -> CellSpec:
    kind = kind_of(cell)
    assert kind is not None
    return CellSpec(kind.spec, cell.num_units, tuple(sorted(kind.options_of(cell).items())))


def layers_of(model: RNNCell | SequenceClassifier) -> tuple[list[Layer], tuple[np.ndarray, np.ndarray] | None]:
    """An rnnkit cell stack or classifier as layers (weights below each cell's scope) and its head."""
    if isinstance(model, SequenceClassifier):
        cell, head = model.cell, (np.asarray(model.weights), np.asarray(model.biases))
    elif isinstance(model, RNNCell):
        cell, head = model, None
    else:
        raise ConfigError(f"expected an rnnkit cell or SequenceClassifier; got {type(model).__name__}")
    layers = []
    for leaf in leaf_cells(cell):
        if not is_tanh(leaf.activation):
            raise ConfigError(
                f"cannot convert a {type(leaf).__name__} with activation {getattr(leaf.activation, '__name__', '?')}: "
                "PyTorch's and Keras's recurrent layers are converted here with tanh only"
            )
        prefix = f"x/{leaf.name}/"
        weights = {k.removeprefix(prefix): v for k, v in get_variables(leaf, "x").items()}
        layers.append(Layer(_spec_of(leaf), leaf.input_size, weights))
    return layers, head


def as_numpy_mapping(state: Mapping[str, Any], where: str) -> dict[str, np.ndarray]:
    """Names -> NumPy arrays, from NumPy arrays, JAX arrays or torch tensors (moved to the CPU)."""
    out = {}
    for name, value in state.items():
        if not isinstance(name, str):
            raise ConfigError(f"{where}: names must be strings; got {name!r}")
        if hasattr(value, "detach"):  # a torch.Tensor; .numpy() needs a CPU tensor without grad
            value = value.detach().cpu().numpy()
        if not hasattr(value, "shape") or not hasattr(value, "dtype"):
            raise ConfigError(f"{where}: {name} must be an array or tensor; got {type(value).__name__}")
        out[name] = np.asarray(value)
    return out
