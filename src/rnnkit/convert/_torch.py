"""rnnkit cells <-> PyTorch `nn.LSTM` / `nn.GRU` / `nn.RNN` state_dicts.

Naming convention for a whole stack (what `to_torch_state_dict` writes):

    rnn.<g>.weight_ih_l<k>, rnn.<g>.weight_hh_l<k>, rnn.<g>.bias_ih_l<k>, rnn.<g>.bias_hh_l<k>
    rnn.<g>.weight_hr_l<k>                      (LSTM with a projection: proj_size)
    fc.weight [classes, units], fc.bias [classes]   (a SequenceClassifier's dense head)

i.e. the state_dict of a module holding `self.rnn = nn.ModuleList([...])` and
`self.fc = nn.Linear(units, classes)`, where consecutive rnnkit layers of one PyTorch type and
size share one multi-layer module. The seed's LSTM(128) -> GRU(256) becomes
`rnn.0 = nn.LSTM(28, 128)`, `rnn.1 = nn.GRU(128, 256)` (both `batch_first=True` or not: the
weights are the same either way), `fc = nn.Linear(256, 10)`; three `lstm:64` layers become
one `nn.LSTM(D, 64, num_layers=3)`. The head's weight is rnnkit's `fully_connected/weights`
transposed.

The way in accepts any module names: parameters are grouped by the prefix before
`weight_ih_l<k>`; modules are taken in the order given by `modules=`, else by a trailing
number (`rnn.0.`, `rnn.1.`), else in the state_dict's own order (PyTorch's order of
registration, the forward order in ordinary models).

PyTorch has one GRU, the reset-after one: only `GRUCell(reset_after=True)` (`gru_reset_after`)
converts. TF1's GRUCell resets before its candidate matmul; no nn.GRU computes that, so
converting one is refused rather than approximated. nn.LSTM has no peepholes and no clipping,
so LSTMCells that use them are refused too. Bidirectional modules (`_reverse`) are refused.
"""

from __future__ import annotations

import io
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rnnkit._kinds import CELL_KINDS
from rnnkit.convert import _layouts as L
from rnnkit.convert._stack import (
    Conversion,
    Layer,
    as_numpy_mapping,
    check_chain,
    conversion_from_layers,
    layers_of,
    refuse_lstm_options,
)
from rnnkit.errors import CheckpointError, ConfigError
from rnnkit.models.classifier import CellSpec, parse_cells
from rnnkit.runs import read_safetensors

_PARAM = re.compile(
    r"^(?P<module>.*?)(?P<param>weight_ih|weight_hh|bias_ih|bias_hh|weight_hr)_l(?P<layer>\d+)(?P<rev>_reverse)?$"
)
_TORCH_TYPE = {kind.spec: kind.torch for kind in CELL_KINDS}  # the nn module holding each kind's weights
_TORCH_TF1_GRU = (
    "TF1's GRUCell (kind 'gru') applies the reset gate before its candidate matmul; PyTorch's nn.GRU applies it "
    "after (r * (W_hn h + b_hn)), so no nn.GRU computes the same function and converting would silently change "
    "the model. Use GRUCell(reset_after=True) (kind 'gru_reset_after') for weights PyTorch can hold, or Keras "
    "GRU(reset_after=False), which matches TF1's GRUCell exactly"
)


def _torch_type(layer: Layer, index: int) -> str:
    spec = layer.spec
    if spec.kind == "gru":
        raise ConfigError(f"layer {index}: {_TORCH_TF1_GRU}")
    refuse_lstm_options(layer, index, "nn.LSTM", ("peepholes", "cell_clip", "proj_clip"))  # proj: proj_size
    return _TORCH_TYPE[spec.kind]


def _groups(layers: list[Layer]) -> list[list[int]]:
    """Consecutive layers that one multi-layer PyTorch module holds: same type, units, proj."""
    groups: list[list[int]] = []
    previous = None
    for k, layer in enumerate(layers):
        signature = (_torch_type(layer, k), layer.spec.units, dict(layer.spec.options).get("proj"))
        if groups and signature == previous:
            groups[-1].append(k)
        else:
            groups.append([k])
        previous = signature
    return groups


def to_torch_state_dict(model: Any, *, tensors: bool = False) -> dict[str, Any]:
    """An rnnkit cell stack or SequenceClassifier as a PyTorch state_dict (see the module's
    naming convention). NumPy arrays by default; `tensors=True` gives torch tensors (needs torch),
    ready for `module.load_state_dict`."""
    layers, head = layers_of(model)
    state: dict[str, np.ndarray] = {}
    for g, group in enumerate(_groups(layers)):
        for k, index in enumerate(group):
            layer = layers[index]
            kind = layer.spec.kind
            if kind in ("lstm", "basic_lstm"):
                params = L.lstm_to_torch(layer.weights, layer.input_size, layer.forget_bias)
            elif kind == "gru_reset_after":
                params = L.gru_to_torch(layer.weights, layer.input_size)
            else:
                params = L.rnn_to_torch(layer.weights, layer.input_size)
            state.update({f"rnn.{g}.{name}_l{k}": value for name, value in params.items()})
    if head is not None:
        state["fc.weight"] = np.ascontiguousarray(head[0].T)
        state["fc.bias"] = np.asarray(head[1])
    if tensors:
        torch = _import_torch()
        return {name: torch.from_numpy(np.array(value)) for name, value in state.items()}
    return state


def torch_modules(model: Any) -> list[dict[str, Any]]:
    """The PyTorch modules `to_torch_state_dict(model)` fills, in order: for each, its prefix,
    type ('LSTM', 'GRU', 'RNN') and constructor arguments, e.g.
    {'prefix': 'rnn.0.', 'type': 'LSTM', 'input_size': 28, 'hidden_size': 128, 'num_layers': 1, 'proj_size': 0}."""
    layers, _ = layers_of(model)
    modules = []
    for g, group in enumerate(_groups(layers)):
        first = layers[group[0]]
        proj = dict(first.spec.options).get("proj")
        module = {
            "prefix": f"rnn.{g}.",
            "type": _torch_type(first, group[0]),
            "input_size": first.input_size,
            "hidden_size": first.spec.units,
            "num_layers": len(group),
        }
        if module["type"] == "LSTM":
            module["proj_size"] = proj or 0
        modules.append(module)
    return modules


def _parse_modules(state: dict[str, np.ndarray], source: str) -> dict[str, dict[int, dict[str, np.ndarray]]]:
    """prefix -> layer -> {param: array}, in the state_dict's order of first appearance."""
    modules: dict[str, dict[int, dict[str, np.ndarray]]] = {}
    for name, value in state.items():
        match = _PARAM.match(name)
        if match is None:
            continue
        if match["rev"]:
            raise ConfigError(
                f"{source}: {name} belongs to a bidirectional module; rnnkit's stacks read one direction, "
                "so bidirectional PyTorch modules are not converted"
            )
        layers = modules.setdefault(match["module"], {})
        layers.setdefault(int(match["layer"]), {})[match["param"]] = value
    return modules


def _module_order(found: list[str], modules: Sequence[str] | None, source: str) -> list[str]:
    if modules is not None:
        wanted = [m if (m == "" or m.endswith(".")) else m + "." for m in modules]
        missing = [m for m in wanted if m not in found]
        if missing or len(set(wanted)) != len(wanted):
            raise ConfigError(
                f"--modules: {', '.join(repr(m) for m in modules)} must name recurrent modules of {source}, each once; "
                f"it has {', '.join(repr(m) for m in found)}"
            )
        return wanted
    numbers = {m: int(match.group(1)) for m in found if (match := re.search(r"(\d+)\.$", m))}
    if len(found) > 1 and len(numbers) == len(found):
        return sorted(found, key=numbers.__getitem__)
    return list(found)


def _layer_from_torch(
    prefix: str, k: int, params: dict[str, np.ndarray], source: str
) -> tuple[str, int, int, int | None]:
    """(PyTorch type, input size, hidden size, proj size or None) of one layer, checked."""
    where = f"{source}: {prefix}*_l{k}"
    for needed in ("weight_ih", "weight_hh"):
        if needed not in params:
            raise ConfigError(f"{where} has no {needed}_l{k}")
    if ("bias_ih" in params) != ("bias_hh" in params):
        raise ConfigError(f"{where} has only one of bias_ih_l{k} and bias_hh_l{k}")
    weight_ih, weight_hh = params["weight_ih"], params["weight_hh"]
    if weight_ih.ndim != 2 or weight_hh.ndim != 2:
        raise ConfigError(f"{where}: weight_ih and weight_hh must be matrices")
    proj = None
    if "weight_hr" in params:
        proj, units = params["weight_hr"].shape
        kind, gates = "LSTM", 4
    else:
        units = weight_hh.shape[1]
        gates = weight_hh.shape[0] // units if units else 0
        kind = {1: "RNN", 3: "GRU", 4: "LSTM"}.get(gates if weight_hh.shape[0] == gates * units else 0, "")
        if not kind:
            raise ConfigError(
                f"{where}: weight_hh is {list(weight_hh.shape)}; expected [H, H] (nn.RNN), [3H, H] (nn.GRU) "
                "or [4H, H] (nn.LSTM)"
            )
    expected = {
        "weight_ih": (gates * units, weight_ih.shape[1]),
        "weight_hh": (gates * units, proj or units),
        "bias_ih": (gates * units,),
        "bias_hh": (gates * units,),
        "weight_hr": (proj, units),
    }
    for name, value in params.items():
        if tuple(value.shape) != expected[name]:
            raise ConfigError(
                f"{where}: {name}_l{k} must be {list(expected[name])} for an nn.{kind}; got {list(value.shape)}"
            )
    return kind, int(weight_ih.shape[1]), int(units), proj


def _spec_for(
    kind: str, units: int, proj: int | None, forget_bias: float, given: CellSpec | None, index: int
) -> CellSpec:
    if given is None:
        if kind == "LSTM":
            options: dict[str, Any] = {"forget_bias": float(forget_bias)}
            if proj:
                options["proj"] = proj
            return CellSpec("lstm", units, tuple(sorted(options.items())))
        return CellSpec("gru_reset_after" if kind == "GRU" else "rnn", units)
    allowed = {"LSTM": ("lstm", "basic_lstm"), "GRU": ("gru_reset_after",), "RNN": ("rnn",)}[kind]
    if given.kind == "gru" and kind == "GRU":
        raise ConfigError(f"--cells: layer {index} is an nn.GRU; {_TORCH_TF1_GRU}")
    if given.kind not in allowed:
        raise ConfigError(
            f"--cells: layer {index} is an nn.{kind}, which converts to {' or '.join(allowed)}; got {given.kind!r}"
        )
    opts = dict(given.options)
    extra = [name for name in ("peepholes", "cell_clip", "proj_clip") if name in opts]
    if extra:
        raise ConfigError(f"--cells: layer {index} asks for {', '.join(extra)}, which nn.LSTM does not have")
    if given.units != units or opts.get("proj") != proj:
        got = f"{units}" + (f" with proj={proj}" if proj else "")
        raise ConfigError(f"--cells: layer {index} is {given.kind}:{given.units} but the state_dict's is {got}")
    return given


def from_torch_state_dict(
    state_dict: Mapping[str, Any],
    *,
    cells: str | None = None,
    modules: Sequence[str] | None = None,
    head: str | None = None,
    forget_bias: float = 0.0,
    allow_unused: bool = False,
    source: str = "state_dict",
) -> Conversion:
    """A PyTorch state_dict of nn.LSTM / nn.GRU / nn.RNN modules (and an nn.Linear head) as rnnkit
    weights.

    Kinds and sizes come from the shapes: nn.LSTM -> `lstm` (with `proj` for proj_size),
    nn.GRU -> `gru_reset_after`, nn.RNN -> `rnn` (tanh; a state_dict cannot show relu).
    LSTM biases fold into one, `bias_ih + bias_hh - forget_bias` in the f slice, for cells
    that add `forget_bias` at run time (0.0 keeps PyTorch's sum as it is). `cells` (a
    `--cells` spec) overrides the kinds and forget biases layer by layer and must match the
    sizes. `head` names the nn.Linear (prefix such as 'fc'); by default `fc.` if present, else
    the one remaining weight/bias pair that fits. Any other name is an error listing it,
    unless `allow_unused` (then it is listed in `Conversion.skipped`).
    """
    state = as_numpy_mapping(state_dict, source)
    found = _parse_modules(state, source)
    if not found:
        raise ConfigError(f"{source}: no nn.LSTM / nn.GRU / nn.RNN parameters (names like 'weight_ih_l0')")
    order = _module_order(list(found), modules, source)
    given = parse_cells(cells) if cells is not None else None
    layers: list[Layer] = []
    used: set[str] = set()
    for prefix in order:
        module = found[prefix]
        if sorted(module) != list(range(len(module))):
            raise ConfigError(f"{source}: module {prefix!r} has layers {sorted(module)}; expected 0..{len(module) - 1}")
        for k in range(len(module)):
            params = module[k]
            kind, input_size, units, proj = _layer_from_torch(prefix, k, params, source)
            used.update(f"{prefix}{name}_l{k}" for name in params)
            index = len(layers)
            if given is not None and index >= len(given):
                raise ConfigError(f"--cells lists {len(given)} layers but {source} has more")
            spec = _spec_for(kind, units, proj, forget_bias, None if given is None else given[index], index)
            if kind == "LSTM":
                weights = L.lstm_from_torch(params, float(dict(spec.options).get("forget_bias", 1.0)))
            elif kind == "GRU":
                weights = L.gru_from_torch(params)
            else:
                weights = L.rnn_from_torch(params)
            layers.append(Layer(spec, input_size, weights))
    if given is not None and len(given) != len(layers):
        raise ConfigError(f"--cells lists {len(given)} layers but {source} has {len(layers)}")
    check_chain(layers, source)
    head_arrays, head_names = _find_head(state, used, head, layers[-1].spec.output_size, source)
    used |= head_names
    unused = tuple(name for name in state if name not in used)
    if unused and not allow_unused:
        raise ConfigError(
            f"{source}: these entries have no place in an rnnkit stack with a dense head: {', '.join(unused)} "
            "(pass allow_unused=True / --allow-unused to convert the rest anyway)"
        )
    return conversion_from_layers(layers, head_arrays, skipped=unused, source=source)


def _find_head(
    state: dict[str, np.ndarray], used: set[str], head: str | None, units: int, source: str
) -> tuple[tuple[np.ndarray, np.ndarray] | None, set[str]]:
    if head is not None:
        prefix = head if head.endswith(".") else head + "."
        if prefix + "weight" not in state:
            raise ConfigError(f"--head: {source} has no {prefix}weight")
    elif "fc.weight" in state:
        prefix = "fc."
    else:
        candidates = [
            name.removesuffix("weight")
            for name, value in state.items()
            if name.endswith("weight") and name not in used and value.ndim == 2 and value.shape[1] == units
        ]
        if len(candidates) != 1:
            return None, set()
        prefix = candidates[0]
    weight = state[prefix + "weight"]
    bias = state.get(prefix + "bias", np.zeros(weight.shape[0], weight.dtype))
    if weight.ndim != 2 or weight.shape[1] != units or bias.shape != (weight.shape[0],):
        raise ConfigError(
            f"{source}: the head {prefix}weight must be [classes, {units}] with {prefix}bias [classes]; "
            f"got {list(weight.shape)} and {list(bias.shape)}"
        )
    names = {prefix + "weight"} | ({prefix + "bias"} if prefix + "bias" in state else set())
    return (np.ascontiguousarray(weight.T), bias), names


# --- files ------------------------------------------------------------------------------------


def _import_torch() -> Any:
    try:
        import torch
    except ImportError:
        raise ConfigError(
            "this needs PyTorch, which is not installed: pip install 'rnnkit[torch]' (or use a .safetensors file)"
        ) from None
    return torch


def load_torch_file(path: str | Path) -> dict[str, np.ndarray]:
    """A state_dict from a `.pt` / `.pth` file (`torch.load(..., weights_only=True)`: it cannot
    run code; needs torch) or a `.safetensors` file (no torch needed), as NumPy arrays in the
    file's order (safetensors files keep names sorted)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    if path.suffix == ".safetensors":
        return read_safetensors(path)[0]
    if path.suffix not in (".pt", ".pth", ".bin"):
        raise ConfigError(
            f"{path}: expected a .pt, .pth, .bin or .safetensors file; got {path.suffix or 'no suffix'!r}"
        )
    torch = _import_torch()
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises UnpicklingError, RuntimeError, EOFError... for bad files
        raise CheckpointError(
            f"{path}: not a weights-only PyTorch file ({type(err).__name__}: {err})".replace("\n", " ")
        ) from None
    if not isinstance(loaded, Mapping):
        raise CheckpointError(f"{path}: expected a state_dict (names -> tensors); got a {type(loaded).__name__}")
    not_tensors = [name for name, value in loaded.items() if not isinstance(value, torch.Tensor)]
    if not_tensors:
        raise CheckpointError(
            f"{path}: expected a state_dict (names -> tensors), but {', '.join(map(str, not_tensors[:5]))} "
            "are not tensors; save model.state_dict() itself"
        )
    return as_numpy_mapping(loaded, str(path))


def from_torch_file(path: str | Path, **options: Any) -> Conversion:
    """`from_torch_state_dict` on a `.pt` or `.safetensors` file. A safetensors file keeps no
    module order, so one with several recurrent modules whose names carry no number needs
    `modules=`."""
    path = Path(path)
    state = load_torch_file(path)
    if path.suffix == ".safetensors" and options.get("modules") is None:
        found = list(_parse_modules(state, str(path)))
        if len(found) > 1 and not all(re.search(r"\d+\.$", m) for m in found):
            raise ConfigError(
                f"{path}: a safetensors file does not keep module order and its recurrent modules "
                f"({', '.join(repr(m) for m in found)}) carry no number; pass --modules in forward order"
            )
    return from_torch_state_dict(state, source=str(path), **options)


def torch_file_bytes(state: dict[str, np.ndarray], path: Path) -> bytes:
    """The bytes of `path` (.pt needs torch; .safetensors does not) holding `state`."""
    if path.suffix == ".safetensors":
        import safetensors.numpy

        return safetensors.numpy.save({k: np.ascontiguousarray(v) for k, v in state.items()})
    if path.suffix in (".pt", ".pth"):
        torch = _import_torch()
        buffer = io.BytesIO()
        torch.save({k: torch.from_numpy(np.array(v)) for k, v in state.items()}, buffer)
        return buffer.getvalue()
    raise ConfigError(f"--out: {path} must end in .pt, .pth or .safetensors")
