"""TF1 checkpoints (`tf.compat.v1.train.Saver`) <-> rnnkit weights, by variable name.

rnnkit keeps TF1's variable names, so the cells map one to one: a checkpoint's
`rnn/multi_rnn_cell/cell_0/lstm_cell/kernel` is rnnkit's variable of the same name. What has
to be worked out is the stack itself, from the names and shapes (`--cells` overrides):

    <scope>/<cell>/...                          one cell
    <scope>/multi_rnn_cell/cell_<k>/<cell>/...  a MultiRNNCell

    <cell>: basic_rnn_cell -> rnn, basic_lstm_cell -> basic_lstm, lstm_cell -> lstm (peepholes
    if w_f_diag is there, proj=P from projection/kernel), gru_cell -> gru,
    cudnn_compatible_gru_cell -> gru_reset_after

and the dense head: `fully_connected/weights|biases` (tf.contrib.layers.fully_connected) or
`dense/kernel|bias` (tf.layers.dense), or the scope given as `head`. What a checkpoint does not
store cannot be inferred: forget_bias (TF1's default 1.0 is assumed), cell_clip, proj_clip
and the activation; pass them in `cells` when the TF1 program set them.

Optimizer slots (`<variable>/Adam`, `/Adam_1`, `/Momentum`, ...), `beta1_power`,
`beta2_power` and `global_step` are training state. When the checkpoint holds TF1 Adam's
moments for every variable (and beta powers of Adam's default betas), they become
`Conversion.adam`, which `write_run_dir` saves as the run's optimizer state, so
`rnnkit train --resume` continues TF1's training; every other piece of training state is
listed in `Conversion.skipped`. Any other variable is an error that names it, unless
`allow_unused`.

The other way, `tf1_variables` names a model's weights as TF1 does (they already carry TF1's
names) and, given TF1 Adam's state, adds its slots, beta powers and `global_step`, and
`write_tf1_checkpoint` saves them as TF1's Saver does (`_bundle`, no TensorFlow needed): a TF1
program that builds the same graph restores it and goes on training where rnnkit stopped.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from rnnkit.convert._bundle import by_variable_name, read_bundle, resolve_prefix, write_bundle, write_checkpoint_state
from rnnkit.convert._stack import KIND_OF_CELL_NAME, AdamState, Conversion, Layer, cell_scope, conversion_from_layers
from rnnkit.errors import CheckpointError, ConfigError
from rnnkit.models.classifier import HEAD_BIASES, HEAD_WEIGHTS, CellSpec, format_cells, parse_cells

_HEADS = (("fully_connected", "weights", "biases"), ("dense", "kernel", "bias"))
_BOOKKEEPING = re.compile(r"^(beta1_power|beta2_power|global_step|save_counter|_CHECKPOINTABLE_OBJECT_GRAPH)(_\d+)?$")


def read_tf1_checkpoint(prefix: str | Path) -> dict[str, np.ndarray]:
    """Every variable of a TF1 checkpoint by name. `prefix` is what Saver.save returned
    (`model.ckpt-100`, beside `model.ckpt-100.index`); a `.index` file, a `.data-*` shard or a
    directory (its latest checkpoint) work too. A checkpoint of `tf.train.Checkpoint` comes under
    its variables' own names (see `_bundle.by_variable_name`). Read by rnnkit's reader of
    TensorFlow's format, every checksum verified: TensorFlow is not needed."""
    try:
        path = resolve_prefix(prefix)
        return by_variable_name(read_bundle(path), str(path))
    except OSError as err:  # unreadable, a directory where a file belongs, ...
        raise CheckpointError(f"{err.filename or prefix}: cannot be read ({err.strerror or err})") from None


def from_tf1_checkpoint(prefix: str | Path, **options: Any) -> Conversion:
    """A TF1 checkpoint as rnnkit weights: `read_tf1_checkpoint` then `from_tf1_variables`."""
    return from_tf1_variables(read_tf1_checkpoint(prefix), source=str(prefix), **options)


def _group_cells(
    variables: Mapping[str, np.ndarray], scope: str, source: str
) -> list[tuple[str, dict[str, np.ndarray]]]:
    """[(cell name, {name below the cell's scope: array})] in layer order."""
    prefix = scope + "/"
    multi = re.compile(rf"^{re.escape(prefix)}multi_rnn_cell/cell_(\d+)/([^/]+)/(.+)$")
    single = re.compile(rf"^{re.escape(prefix)}([^/]+)/(.+)$")
    cells: dict[int, tuple[str, dict[str, np.ndarray]]] = {}
    singles: dict[str, dict[str, np.ndarray]] = {}
    for name, value in variables.items():
        if (m := multi.match(name)) is not None:
            index, cell_name, local = int(m[1]), m[2], m[3]
            entry = cells.setdefault(index, (cell_name, {}))
            if entry[0] != cell_name:
                raise ConfigError(f"{source}: cell_{index} holds both {entry[0]} and {cell_name}")
            entry[1][local] = value
        elif (m := single.match(name)) is not None and m[1] != "multi_rnn_cell":
            singles.setdefault(m[1], {})[m[2]] = value
    if cells and singles:
        raise ConfigError(f"{source}: {scope}/ holds both a MultiRNNCell and {', '.join(singles)}")
    if singles:
        if len(singles) > 1:
            raise ConfigError(f"{source}: {scope}/ holds several cells ({', '.join(singles)}) outside a MultiRNNCell")
        return list(singles.items())
    if sorted(cells) != list(range(len(cells))):
        raise ConfigError(f"{source}: {scope}/multi_rnn_cell has cells {sorted(cells)}; expected 0..{len(cells) - 1}")
    return [cells[k] for k in range(len(cells))]


def _infer_spec(cell_name: str, weights: dict[str, np.ndarray], where: str) -> tuple[CellSpec, int]:
    """The spec and input size of one TF1 cell from its variables' names and shapes."""
    kind = KIND_OF_CELL_NAME.get(cell_name)
    if kind is None:
        raise ConfigError(
            f"{where}: unknown cell {cell_name!r}; rnnkit converts {', '.join(KIND_OF_CELL_NAME)} (pass --cells "
            "and --scope if the program named its cells differently)"
        )

    def shape(name: str) -> tuple[int, ...]:
        if name not in weights:
            raise ConfigError(f"{where}/{name} is missing")
        return tuple(weights[name].shape)

    options: dict[str, Any] = {}
    if kind in ("rnn", "basic_lstm", "lstm"):
        gates = 1 if kind == "rnn" else 4
        units = shape("bias")[0] // gates
        h_size = units
        if kind == "lstm":
            if "w_f_diag" in weights:
                options["peepholes"] = True
            if "projection/kernel" in weights:
                h_size = options["proj"] = shape("projection/kernel")[1]
        input_size = shape("kernel")[0] - h_size
    elif kind == "gru":
        units = shape("candidate/bias")[0]
        input_size = shape("candidate/kernel")[0] - units
    else:
        units = shape("candidate/hidden_projection/bias")[0]
        input_size = shape("candidate/input_projection/kernel")[0]
    if units < 1 or input_size < 1:
        raise ConfigError(f"{where}: shapes give {units} units reading {input_size} features")
    return CellSpec(kind, units, tuple(sorted(options.items()))), input_size


def _find_head(
    variables: Mapping[str, np.ndarray], head: str | None, source: str
) -> tuple[tuple[np.ndarray, np.ndarray] | None, dict[str, str]]:
    """The head's (weights, biases) and {checkpoint name: rnnkit name} for them."""
    scopes = [head] if head is not None else [scope for scope, _, _ in _HEADS]
    found = []
    for scope in scopes:
        for _, w_name, b_name in _HEADS:
            if f"{scope}/{w_name}" in variables:
                found.append((scope, w_name, b_name))
    if head is not None and not found:
        raise ConfigError(f"--head: {source} has no {head}/weights or {head}/kernel")
    if not found:
        return None, {}
    if len(found) > 1:
        names = ", ".join(f"{s}/{w}" for s, w, _ in found)
        raise ConfigError(f"{source}: several dense heads ({names}); choose one with --head")
    scope, w_name, b_name = found[0]
    weights = variables[f"{scope}/{w_name}"]
    biases = variables.get(f"{scope}/{b_name}", np.zeros(weights.shape[-1], weights.dtype))
    names = {f"{scope}/{w_name}": HEAD_WEIGHTS}
    if f"{scope}/{b_name}" in variables:
        names[f"{scope}/{b_name}"] = HEAD_BIASES
    return (weights, biases), names


def from_tf1_variables(
    variables: Mapping[str, Any],
    *,
    cells: str | None = None,
    scope: str = "rnn",
    head: str | None = None,
    allow_unused: bool = False,
    source: str = "checkpoint",
) -> Conversion:
    """TF1 variables by name (as `read_tf1_checkpoint` returns them) as rnnkit weights; see the
    module's docstring for what is inferred and what is skipped."""
    variables = {name: np.asarray(value) for name, value in variables.items()}
    names = set(variables)

    def is_training_state(name: str) -> bool:  # a slot hangs below the variable it belongs to
        parts = name.split("/")
        return bool(_BOOKKEEPING.match(name)) or any("/".join(parts[:i]) in names for i in range(1, len(parts)))

    training_state = [name for name in variables if is_training_state(name)]
    model_vars = {name: value for name, value in variables.items() if name not in set(training_state)}
    groups = _group_cells(model_vars, scope, source)
    if not groups:
        raise ConfigError(
            f"{source}: no RNN cell variables under {scope}/ (pass --scope: the checkpoint's top scopes are "
            f"{', '.join(sorted({n.split('/')[0] for n in model_vars})) or 'none'})"
        )
    given = parse_cells(cells) if cells is not None else None
    if given is not None and len(given) != len(groups):
        raise ConfigError(f"--cells lists {len(given)} layers but {source} has {len(groups)} under {scope}/")
    layers: list[Layer] = []
    rnnkit_names: dict[str, str] = {}  # checkpoint name -> rnnkit name
    for k, (cell_name, weights) in enumerate(groups):
        cell_path = f"{scope}/" + ("" if len(groups) == 1 else f"multi_rnn_cell/cell_{k}/") + cell_name
        where = f"{source}: {cell_path}"
        spec, input_size = _infer_spec(cell_name, weights, where)
        if given is not None:
            # BasicLSTMCell and LSTMCell store the same variables, so either spec takes either cell's.
            if given[k].kind != spec.kind and {given[k].kind, spec.kind} != {"lstm", "basic_lstm"}:
                raise ConfigError(f"--cells: layer {k} is {given[k].kind} but {where} is a {spec.kind} cell")
            stored = [(given[k].units, spec.units)] + [
                (dict(given[k].options).get(name), dict(spec.options).get(name)) for name in ("proj", "peepholes")
            ]
            if any(want != have for want, have in stored):
                raise ConfigError(
                    f"--cells: layer {k} is {format_cells((given[k],))} but {where} holds {format_cells((spec,))} "
                    "(units, proj and peepholes are fixed by the weights; only forget_bias and clips are free)"
                )
            spec = given[k]
        layers.append(Layer(spec, input_size, weights))
        target = cell_scope(k, len(groups), spec.kind)
        rnnkit_names.update({f"{cell_path}/{local}": f"{target}/{local}" for local in weights})
    head_arrays, head_names = _find_head(model_vars, head, source)
    rnnkit_names.update(head_names)
    unused = [name for name in model_vars if not name.startswith(scope + "/") and name not in head_names]
    if unused and not allow_unused:
        raise ConfigError(
            f"{source}: these variables are neither the RNN under {scope}/, a dense head nor optimizer state: "
            f"{', '.join(unused)} (pass --allow-unused to convert the rest anyway)"
        )
    adam = _adam_state(variables, rnnkit_names)
    carried = set() if adam is None else _ADAM_NAMES | {f"{n}/{s}" for n in rnnkit_names for s in ("Adam", "Adam_1")}
    skipped = tuple(name for name in training_state + unused if name not in carried)
    return conversion_from_layers(layers, head_arrays, skipped=skipped, source=source, adam=adam)


_ADAM_NAMES = {"beta1_power", "beta2_power"}


def _adam_state(variables: dict[str, np.ndarray], rnnkit_names: dict[str, str]) -> AdamState | None:
    """TF1 AdamOptimizer's slots for every variable, if the checkpoint has all of them and
    beta powers of Adam's defaults (beta1 0.9, beta2 0.999, as rnnkit train uses); else None."""
    slots = [f"{name}/{slot}" for name in rnnkit_names for slot in ("Adam", "Adam_1")]
    if not all(name in variables for name in [*slots, *_ADAM_NAMES]):
        return None
    beta1_power, beta2_power = float(variables["beta1_power"]), float(variables["beta2_power"])
    if not 0.0 < beta1_power < 1.0:
        return None
    # TF1 multiplies beta1_power by beta1 after each update: after t updates it is beta1^(t + 1).
    step = round(math.log(beta1_power) / math.log(0.9)) - 1
    expected = (0.9 ** (step + 1), 0.999 ** (step + 1))
    if step < 0 or not np.allclose((beta1_power, beta2_power), expected, rtol=1e-4, atol=0.0):
        return None
    m = {rk: variables[f"{name}/Adam"] for name, rk in rnnkit_names.items()}
    v = {rk: variables[f"{name}/Adam_1"] for name, rk in rnnkit_names.items()}
    return AdamState(m, v, step)


def tf1_variables(model: Any, adam: AdamState | None = None) -> dict[str, np.ndarray]:
    """A SequenceClassifier's (or cell stack's) weights by TF1 name, and with `adam` TF1
    AdamOptimizer's state as its Saver stores it: `<variable>/Adam` (m), `<variable>/Adam_1`
    (v), `beta1_power` = 0.9^(step + 1), `beta2_power` = 0.999^(step + 1) (what TF1 holds after
    `step` updates) and `global_step`."""
    variables = {name: np.asarray(value) for name, value in model.variables().items()}
    if adam is None:
        return variables
    missing = sorted(set(variables) - set(adam.m)) + sorted(set(variables) - set(adam.v))
    if missing:
        raise ConfigError(f"the Adam state has no moments for {', '.join(missing)}")
    for name in list(variables):
        variables[f"{name}/Adam"] = np.asarray(adam.m[name])
        variables[f"{name}/Adam_1"] = np.asarray(adam.v[name])
    variables["beta1_power"] = np.asarray(0.9 ** (adam.step + 1), np.float32)
    variables["beta2_power"] = np.asarray(0.999 ** (adam.step + 1), np.float32)
    variables["global_step"] = np.asarray(adam.step, np.int64)
    return variables


def write_tf1_checkpoint(variables: Mapping[str, np.ndarray], prefix: str | Path) -> Path:
    """Save `variables` (name -> array) as a TF1 checkpoint at `prefix` (`prefix.index` and
    `prefix.data-00000-of-00001`), the same bytes tf.compat.v1.train.Saver writes for them, and
    point the directory's `checkpoint` file at it as Saver does (so tf.train.latest_checkpoint
    finds it). Each file is written under a temporary name, fsynced and renamed into place, the
    data before the index that names it: a failure leaves what was there. TensorFlow is not needed."""
    prefix = Path(prefix)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    write_bundle(variables, prefix)
    write_checkpoint_state(prefix)
    return prefix
