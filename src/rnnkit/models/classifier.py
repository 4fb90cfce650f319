"""The seed's model, generalised: a stack of TF1 cells read over a sequence, its last output
through a fully connected layer to class logits.

    --cells lstm:128,gru:256   ->  MultiRNNCell([LSTMCell(128), GRUCell(256)])  (the seed's)

A spec is `kind:units[:option[=value]]...` per layer, comma-separated. The kinds and their
options are rnnkit's cell kinds, declared in rnnkit/_kinds.py:

    rnn                 BasicRNNCell
    basic_lstm          BasicLSTMCell        forget_bias=F
    lstm                LSTMCell             peepholes, proj=N, cell_clip=F, proj_clip=F, forget_bias=F
    gru                 GRUCell (TF1's, reset before the candidate matmul)
    gru_reset_after     GRUCell(reset_after=True) (cuDNN / PyTorch formula)

Variables carry TF1's names: one cell lives under `rnn/<cell>/...`, several under
`rnn/multi_rnn_cell/cell_<k>/<cell>/...`, and the head is the seed's
`tf.contrib.layers.fully_connected`: `fully_connected/weights`, `fully_connected/biases`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int, PRNGKeyArray

from rnnkit import _kinds
from rnnkit._cells import RNNCell, draw_at_level0_on_cpu, glorot_uniform
from rnnkit._checks import check_precision
from rnnkit._rnn import dynamic_rnn, last_relevant, static_rnn
from rnnkit._variables import get_variables, set_variables
from rnnkit._wrappers import DropoutWrapper, MultiRNNCell, at_path, leaves
from rnnkit.errors import ConfigError

MODES = ("static", "dynamic")

# kind -> {option: type}, read off rnnkit's cell kinds; `bool` options are flags written without a value.
CELL_KINDS: dict[str, dict[str, type]] = {k.spec: {o.name: o.type for o in k.options} for k in _kinds.CELL_KINDS}

HEAD_WEIGHTS, HEAD_BIASES = "fully_connected/weights", "fully_connected/biases"


@dataclass(frozen=True)
class CellSpec:
    """One layer of a `--cells` spec."""

    kind: str
    units: int
    options: tuple[tuple[str, Any], ...] = ()  # sorted (name, value) pairs

    @property
    def output_size(self) -> int:
        return int(dict(self.options).get("proj", self.units))

    def build(self, input_size: int, key: PRNGKeyArray, precision: Any = "highest") -> RNNCell:
        kind = _kinds.BY_SPEC[self.kind]
        return kind.build(self.units, input_size=input_size, key=key, options=dict(self.options), precision=precision)


def _parse_option(kind: str, text: str, layer: str) -> tuple[str, Any]:
    name, _, value = text.partition("=")
    allowed = {o.name: o for o in _kinds.BY_SPEC[kind].options}
    if name not in allowed:
        valid = ", ".join(allowed) or "none"
        raise ConfigError(f"--cells: option {name!r} in {layer!r} is not one of {kind}'s options ({valid})")
    kind_type = allowed[name].type
    if kind_type is bool:
        if value:
            raise ConfigError(f"--cells: option {name!r} in {layer!r} is a flag and takes no value; got {value!r}")
        return name, True
    try:
        parsed = kind_type(value)
    except ValueError:
        raise ConfigError(
            f"--cells: option {name!r} in {layer!r} needs a {kind_type.__name__}; got {value!r}"
        ) from None
    if allowed[name].positive and not parsed > 0:
        raise ConfigError(f"--cells: option {name!r} in {layer!r} must be positive; got {value!r}")
    return name, parsed


def parse_cells(spec: str) -> tuple[CellSpec, ...]:
    """`"lstm:128,gru:256"` -> (CellSpec("lstm", 128), CellSpec("gru", 256)); ConfigError on
    anything else, naming the layer and what was expected."""
    if not spec or not spec.strip():
        raise ConfigError("--cells must list at least one layer, such as 'lstm:128,gru:256'; got an empty spec")
    layers = []
    for layer in spec.split(","):
        parts = layer.strip().split(":")
        kind = parts[0]
        if kind not in CELL_KINDS:
            raise ConfigError(
                f"--cells: unknown cell kind {kind!r} in {layer!r}; expected one of {', '.join(CELL_KINDS)}"
            )
        if len(parts) < 2 or not parts[1].isdigit() or int(parts[1]) < 1:
            got = parts[1] if len(parts) > 1 else "nothing"
            raise ConfigError(f"--cells: {layer!r} must be kind:units with units a positive integer; got {got!r}")
        options = tuple(sorted(_parse_option(kind, text, layer) for text in parts[2:]))
        for option in _kinds.BY_SPEC[kind].options:
            if option.name in dict(options) and option.needs and option.needs not in dict(options):
                raise ConfigError(f"--cells: option {option.name!r} in {layer!r} needs '{option.needs}=N'")
        layers.append(CellSpec(kind, int(parts[1]), options))
    return tuple(layers)


def format_cells(specs: tuple[CellSpec, ...]) -> str:
    """The inverse of `parse_cells`: a spec string that parses back to `specs`."""

    def option(name: str, value: Any) -> str:
        return name if value is True else f"{name}={value}"

    return ",".join(":".join([s.kind, str(s.units), *(option(n, v) for n, v in s.options)]) for s in specs)


class SequenceClassifier(eqx.Module):
    """Cells over the sequence, the last step's output through a dense layer to logits.

    `mode="static"` unrolls with `static_rnn`, pinned to `num_steps` (like the seed's TF1
    graph, it refuses other lengths); `mode="dynamic"` loops with `dynamic_rnn` and takes any
    length. Both give the same numbers for the same weights (to float32 rounding where
    dynamic_rnn runs rnnkit's native CPU kernel).
    """

    cell: RNNCell
    weights: Array  # [cell.output_size, num_classes]
    biases: Array  # [num_classes]
    mode: str = eqx.field(static=True)
    num_steps: int = eqx.field(static=True)
    unroll: int | None = eqx.field(static=True, default=None)  # dynamic mode: see dynamic_rnn (None: rnnkit picks)
    implementation: str = eqx.field(static=True, default="auto")  # dynamic mode: see dynamic_rnn
    precision: Any = eqx.field(static=True, default="highest")  # the head's matmul; the cells carry their own

    def _run(
        self, inputs: Float[Array, "batch time depth"], sequence_length: Int[Array, " batch"] | None
    ) -> tuple[Array, Any]:
        """Every step's output [batch, time, units] and the final state."""
        if self.mode == "static":
            outputs, state = static_rnn(self.cell, inputs, sequence_length=sequence_length, num_steps=self.num_steps)
            return jnp.stack(outputs, axis=1), state
        return dynamic_rnn(
            self.cell, inputs, sequence_length=sequence_length, unroll=self.unroll, implementation=self.implementation
        )

    def _last(self, outputs: Array, sequence_length: Int[Array, " batch"] | None) -> Array:
        if sequence_length is None:
            return outputs[:, -1]  # the seed's outputs[-1]: [batch, units]
        return last_relevant(outputs, sequence_length)  # padded batches: each example's own last step

    def __call__(
        self, inputs: Float[Array, "batch time depth"], sequence_length: Int[Array, " batch"] | None = None
    ) -> Float[Array, "batch classes"]:
        """Class logits from the last step's output (with `sequence_length`, each example's last
        valid step: padding past it does not change the result)."""
        logits, _ = self.logits_and_state(inputs, sequence_length)
        return logits

    def logits_and_state(
        self, inputs: Float[Array, "batch time depth"], sequence_length: Int[Array, " batch"] | None = None
    ) -> tuple[Float[Array, "batch classes"], Any]:
        """The logits and the cell stack's final state (TF1's `state` from the driver)."""
        outputs, state = self._run(inputs, sequence_length)
        last = self._last(outputs, sequence_length)
        return jnp.matmul(last, self.weights, precision=self.precision) + self.biases, state

    def step_logits(self, inputs: Float[Array, "batch time depth"]) -> Float[Array, "batch time classes"]:
        """The logits the head would give after each step: how the prediction forms while reading."""
        outputs, _ = self._run(inputs, None)
        return jnp.matmul(outputs, self.weights, precision=self.precision) + self.biases

    def variables(self) -> dict[str, np.ndarray]:
        """All weights by TF1 name (cells under `rnn/`, head under `fully_connected/`)."""
        return {
            **get_variables(self.cell, "rnn"),
            HEAD_WEIGHTS: np.asarray(self.weights),
            HEAD_BIASES: np.asarray(self.biases),
        }

    def with_variables(self, variables: dict[str, Any]) -> SequenceClassifier:
        """A copy with these weights; strict like `set_variables` (missing, extra, shape, dtype)."""
        head = {HEAD_WEIGHTS: self.weights, HEAD_BIASES: self.biases}
        cell_vars = {k: v for k, v in variables.items() if k not in head}
        problems = [
            f"{name} must have shape {tuple(want.shape)} and dtype {want.dtype}; got "
            + (f"{tuple(variables[name].shape)} {variables[name].dtype}" if name in variables else "nothing")
            for name, want in head.items()
            if name not in variables
            or tuple(variables[name].shape) != tuple(want.shape)
            or np.dtype(variables[name].dtype) != np.dtype(want.dtype)
        ]
        if problems:
            raise ValueError("variables do not match the model: " + "; ".join(problems))
        cell = set_variables(self.cell, cell_vars, "rnn")
        new_head = (jnp.asarray(variables[HEAD_WEIGHTS]), jnp.asarray(variables[HEAD_BIASES]))
        return eqx.tree_at(lambda m: (m.cell, m.weights, m.biases), self, (cell, *new_head))

    def with_dropout_key(self, key: PRNGKeyArray) -> SequenceClassifier:
        """A copy whose dropout wrappers (if any) draw from `key`, one stream per layer."""
        wrappers = _dropout_wrappers(self)
        if not wrappers:
            return self
        keys = [jax.random.fold_in(key, k) for k in range(len(wrappers))]
        return eqx.tree_at(lambda m: [w(m).key for w in _dropout_wrappers(m)], self, keys)


def _dropout_wrappers(model: SequenceClassifier) -> list[Callable[[SequenceClassifier], DropoutWrapper]]:
    """Accessors from the model to each DropoutWrapper in its cell stack, in layer order."""
    paths = []
    for leaf in leaves(model.cell):
        for path, wrapper in zip(leaf.wrapper_paths, leaf.wrappers, strict=True):
            if isinstance(wrapper, DropoutWrapper) and path not in paths:
                paths.append(path)
    return [(lambda m, p=p: at_path(m.cell, p)) for p in paths]


def build_classifier(
    specs: tuple[CellSpec, ...],
    *,
    input_size: int,
    num_classes: int,
    num_steps: int,
    mode: str,
    key: PRNGKeyArray,
    dropout: float = 0.0,
    unroll: int | None = None,
    implementation: str = "auto",
    precision: Any = "highest",
) -> SequenceClassifier:
    """The model for a parsed `--cells` spec. `dropout` > 0 wraps every layer in a
    `DropoutWrapper(output_keep_prob=1 - dropout)`, the usual TF1 recipe. `precision` is every
    matmul's, the cells' and the head's: "highest" (full float32, TF1's numbers) by default;
    None takes JAX's default, which on NVIDIA GPUs since Ampere multiplies float32 in TF32, as
    PyTorch's cuDNN RNNs do by default (see rnnkit/_cells.py). rnnkit's native CPU kernel
    always multiplies in full float32."""
    if mode not in MODES:
        raise ConfigError(f"mode must be 'static' or 'dynamic'; got {mode!r}")
    if not 0.0 <= dropout < 1.0:
        raise ConfigError(f"dropout must be in [0, 1) (the fraction of outputs dropped); got {dropout}")
    try:
        precision = check_precision(precision)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    # Level 0 on CPUs only (GPU compilers take it too, untried). A traced key (eval_shape, a jit
    # taking the key) draws inside that program.
    args = (specs, input_size, num_classes, dropout, precision, key)
    stack, weights, biases = draw_at_level0_on_cpu(_initialised, _initialised_traced, key, *args)
    return SequenceClassifier(stack, weights, biases, mode, num_steps, unroll, implementation, precision)


# One compiled program draws every initial weight. Run op by op, the same draws compile a small
# program per distinct op and shape: the seed's model's first build took 2.6 s on two CPU cores
# that way and 1.65 s this way, JAX's start-up included (the values are bit for bit the same).
# LLVM's optimisations took most of that compile, for a program that runs once: at level 0 the
# build takes 0.7-0.9 s (compile 0.4 s against 1.2-1.5 s), the program 20 ms longer to run.
# The values are the same at any level (glorot_uniform, tests/test_variables.py). The program
# takes only what the weights depend on, so models that differ in mode, steps, unroll or
# implementation (rnnkit compare builds a dozen) share one compilation.
def _draw(
    specs: tuple[CellSpec, ...],
    input_size: int,
    num_classes: int,
    dropout: float,
    precision: Any,
    key: PRNGKeyArray,
) -> tuple[RNNCell, Array, Array]:
    keys = jax.random.split(key, len(specs) + 1)
    cells: list[RNNCell] = []
    size = input_size
    for spec, k in zip(specs, keys[:-1], strict=True):
        cell = spec.build(size, k, precision)
        if dropout > 0:
            cell = DropoutWrapper(cell, output_keep_prob=1.0 - dropout, key=jax.random.key(0))
        cells.append(cell)
        size = spec.output_size
    stack = cells[0] if len(cells) == 1 else MultiRNNCell(cells)
    # tf.contrib.layers.fully_connected: xavier (glorot-uniform) weights, zero biases.
    weights = glorot_uniform(keys[-1], (size, num_classes), jnp.float32)
    biases = jnp.zeros((num_classes,), jnp.float32)
    return stack, weights, biases


_initialised = eqx.filter_jit(_draw, compiler_options={"xla_backend_optimization_level": 0})
_initialised_traced = eqx.filter_jit(_draw)  # the default level: under another trace, or off CPUs
