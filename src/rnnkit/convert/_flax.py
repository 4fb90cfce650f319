"""rnnkit cells <-> Flax parameter trees (Linen and NNX recurrent cells).

Flax's cells, by the names their parameters take (kernels [in, out], one Dense/Linear each):

    Linen LSTMCell, OptimizedLSTMCell   ii, if, ig, io: kernel [D, H]; hi, hf, hg, ho: kernel [H, H], bias [H]
    NNX LSTMCell                        the same with if_ for if
    NNX OptimizedLSTMCell               dense_i: kernel [D, 4H]; dense_h: kernel [H, 4H], bias [4H] (i, f, g, o)
    Linen GRUCell                       ir, iz, in: kernel [D, H], bias [H]; hr, hz: kernel [H, H];
                                        hn: kernel [H, H], bias [H]
    NNX GRUCell                         dense_i: kernel [D, 3H], bias [3H] (r, z, n); dense_h: kernel [H, 3H]
    Linen SimpleCell                    i: kernel [D, H], bias [H]; h: kernel [H, H]
    NNX SimpleCell                      dense_i: kernel [D, H], bias [H]; dense_h: kernel [H, H]
    a dense head                        kernel [H, classes], bias [classes]

and their formulas: LSTM c' = σ(f) c + σ(i) tanh(g), h' = σ(o) tanh(c') with no forget bias added
at run time; GRU r, z = σ(x W_i + b_i + h W_h), n = tanh(x W_in + b_in + r (h W_hn + b_hn)),
h' = (1 - z) n + z h, the reset applied after the candidate's product (NNX's GRUCell has no
b_hn); SimpleCell h' = tanh(x W_i + b_i + h W_h).

Correspondence: `lstm` / `basic_lstm` <-> the LSTM cells (gates i, j, f, o <-> i, g, f, o; the
forget bias folds into the f bias, as for Keras); `gru_reset_after` <-> GRUCell, exactly
(its gates' bias is Flax's input bias; NNX needs its candidate's hidden bias to be zero);
`rnn` <-> SimpleCell. TF1's GRUCell (`gru`) resets before its candidate's product, which no
Flax cell does: converting one is refused. Peepholes, projections and clipping too.

Into rnnkit, `from_flax_params` reads any nested mapping: a Linen `variables` or `params`
dict, an NNX `nnx.State` or its `to_pure_dict()`. Cells are found by those names wherever
they sit and put in the order their sizes chain (a tree's own order is no guide: NNX sorts
attribute names, and jax.tree.map sorts a dict's keys), and a lone kernel/bias pair outside
them is the head. Out of rnnkit, `to_flax_params(model, style=)`
writes the tree of the module `flax_model(model, style=)` builds:

    linen   {"params": {"RNN_0": {"cell": {...}}, "RNN_1": ..., "Dense_0": {...}}}
    nnx     {"layers": {0: {"cell": {...}}, 1: ...}, "head": {...}}

(nn.RNN / nnx.RNN over each cell, every step's output into the next layer, the head on the
last step). Nothing here imports Flax except `flax_model`.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rnnkit.convert import _layouts as L
from rnnkit.convert._stack import (
    Conversion,
    Layer,
    check_given_spec,
    conversion_from_layers,
    layers_of,
    refuse_lstm_options,
    with_forget_bias,
)
from rnnkit.errors import CheckpointError, ConfigError
from rnnkit.models.classifier import CellSpec, parse_cells
from rnnkit.runs import read_safetensors

STYLES = ("linen", "nnx")
_LSTM_GATES = ("i", "f", "g", "o")  # Flax's order, as Keras's
_FLAX_TF1_GRU = (
    "TF1's GRUCell (kind 'gru') applies the reset gate before its candidate's product; Flax's GRUCell applies it "
    "after (r * (h W_hn + b_hn)), so no Flax cell computes the same function and converting would silently change "
    "the model. Use GRUCell(reset_after=True) (kind 'gru_reset_after')"
)


# --- reading a tree ------------------------------------------------------------------------------


def _leaf(value: Any) -> np.ndarray:
    """An array from a tree leaf: a NumPy or JAX array, or an NNX Variable holding one."""
    if hasattr(value, "get_value"):
        value = value.get_value()
    elif hasattr(value, "value") and not isinstance(value, np.ndarray):
        value = value.value
    return np.asarray(value)


def _children(node: Mapping[Any, Any]) -> list[tuple[str, Any]]:
    return [(str(k), v) for k, v in node.items()]


def _is_dense(node: Any) -> bool:
    """A Dense/Linear's parameters: a mapping of a 2-D kernel and, optionally, a bias."""
    if not isinstance(node, Mapping) or "kernel" not in node or not set(map(str, node)) <= {"kernel", "bias"}:
        return False
    return _leaf(node["kernel"]).ndim == 2


_LINEN_LSTM = {"ii", "if", "ig", "io", "hi", "hf", "hg", "ho"}
_NNX_LSTM = {"ii", "if_", "ig", "io", "hi", "hf", "hg", "ho"}
_LINEN_GRU = {"ir", "iz", "in", "hr", "hz", "hn"}
_LINEN_SIMPLE = {"i", "h"}
_NNX_FUSED = {"dense_i", "dense_h"}


def _cell_type(node: Any) -> str | None:
    """Which Flax cell a subtree is, by its children's names: lstm, gru or simple (per-gate
    Linen/NNX names), or fused (NNX's dense_i / dense_h, sized later), else None."""
    if not isinstance(node, Mapping):
        return None
    keys = set(map(str, node))
    if not all(_is_dense(node[k]) for k in node):
        return None
    if keys in (_LINEN_LSTM, _NNX_LSTM):
        return "lstm"
    if keys == _LINEN_GRU:
        return "gru"
    if keys == _LINEN_SIMPLE:
        return "simple"
    if keys == _NNX_FUSED:
        return "fused"
    return None


def _walk(node: Mapping[Any, Any], path: str, cells: list[tuple[str, str, Any]], others: list[tuple[str, Any]]) -> None:
    for key, child in _children(node):
        where = f"{path}/{key}" if path else key
        kind = _cell_type(child)
        if kind is not None:
            cells.append((where, kind, child))
        elif _is_dense(child):
            others.append((where, child))
        elif isinstance(child, Mapping):
            _walk(child, where, cells, others)
        else:
            others.append((where, child))


def _get(node: Mapping[Any, Any], name: str) -> np.ndarray:
    return _leaf(node[name])


def _bias(dense: Mapping[Any, Any]) -> np.ndarray:
    """A Dense's bias, zeros where it has none (Flax's recurrent cells leave some out)."""
    if "bias" in dense:
        return _get(dense, "bias")
    kernel = _get(dense, "kernel")
    return np.zeros(kernel.shape[1], kernel.dtype)


def _keras_layout(kind: str, node: Mapping[Any, Any], where: str) -> tuple[int, list[np.ndarray]]:
    """(gate count, Keras's [kernel, recurrent_kernel, bias]) for one Flax cell: the layout the
    Keras maps in _layouts already handle (LSTM i, f, g, o; GRU z, r, h with bias [2, 3H])."""
    if kind == "lstm":
        inputs = {"i": "ii", "f": "if" if "if" in map(str, node) else "if_", "g": "ig", "o": "io"}
        kernel = np.concatenate([_get(node[inputs[g]], "kernel") for g in _LSTM_GATES], 1)
        recurrent = np.concatenate([_get(node["h" + g], "kernel") for g in _LSTM_GATES], 1)
        bias = np.concatenate([_bias(node["h" + g]) + _bias(node[inputs[g]]) for g in _LSTM_GATES])
        return 4, [kernel, recurrent, bias]
    if kind == "gru":
        kernel = np.concatenate([_get(node[n], "kernel") for n in ("iz", "ir", "in")], 1)
        recurrent = np.concatenate([_get(node[n], "kernel") for n in ("hz", "hr", "hn")], 1)
        input_bias = np.concatenate([_bias(node["iz"]) + _bias(node["hz"]), _bias(node["ir"]) + _bias(node["hr"])])
        input_bias = np.concatenate([input_bias, _bias(node["in"])])
        hn = _bias(node["hn"])
        recurrent_bias = np.concatenate([np.zeros_like(hn), np.zeros_like(hn), hn])
        return 3, [kernel, recurrent, np.stack([input_bias, recurrent_bias])]
    if kind == "simple":
        return 1, [_get(node["i"], "kernel"), _get(node["h"], "kernel"), _bias(node["i"]) + _bias(node["h"])]
    dense_i, dense_h = node["dense_i"], node["dense_h"]
    kernel, recurrent = _get(dense_i, "kernel"), _get(dense_h, "kernel")
    units = recurrent.shape[0]
    gates = recurrent.shape[1] // max(units, 1)
    if gates == 4 and "bias" in dense_h and "bias" not in dense_i:  # NNX OptimizedLSTMCell
        return 4, [kernel, recurrent, _get(dense_h, "bias")]
    if gates == 3 and "bias" in dense_i and "bias" not in dense_h:  # NNX GRUCell: r, z, n
        r, z, n = np.split(kernel, 3, axis=1)
        hr, hz, hn = np.split(recurrent, 3, axis=1)
        br, bz, bn = np.split(_get(dense_i, "bias"), 3)
        zero = np.zeros_like(bn)
        return 3, [
            np.concatenate([z, r, n], 1),
            np.concatenate([hz, hr, hn], 1),
            np.stack([np.concatenate([bz, br, bn]), np.concatenate([zero, zero, zero])]),
        ]
    if gates == 1 and "bias" in dense_i and "bias" not in dense_h:  # NNX SimpleCell
        return 1, [kernel, recurrent, _get(dense_i, "bias")]
    raise ConfigError(
        f"{where}: dense_i {list(kernel.shape)} and dense_h {list(recurrent.shape)} are none of NNX's "
        "OptimizedLSTMCell, GRUCell or SimpleCell"
    )


def _natural(path: str) -> list[Any]:
    """A path's sort key with its numbers as numbers: RNN_2 before RNN_10, layers/2 before layers/10."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path)]


def _chains(order: Sequence[int], sizes: Sequence[tuple[int, int]], head_in: int | None) -> bool:
    """Whether layers in this order each read what the one before gives (and the head the last's)."""
    ok = all(sizes[a][1] == sizes[b][0] for a, b in itertools.pairwise(order))
    return ok and (head_in is None or sizes[order[-1]][1] == head_in)


def _forward_order(
    paths: list[str], sizes: list[tuple[int, int]], head_in: int | None, modules: Sequence[str] | None, source: str
) -> list[int]:
    """The cells' forward order: `modules` where given; else the only order whose sizes chain
    ((input, units) each, the head's input last); else, where several chain (layers of one
    size), the paths' natural order. A tree's own order cannot be trusted: jax.tree.map (an
    optimizer's update, say) rebuilds dicts with sorted keys, and NNX sorts attribute names."""
    if modules is not None:
        missing = [m for m in modules if m not in paths]
        if missing:
            raise ConfigError(
                f"modules: {', '.join(missing)} not among {source}'s cells ({', '.join(paths) or 'none'})"
            )
        if len(set(modules)) != len(paths):
            raise ConfigError(f"modules: list each of {source}'s cells once ({', '.join(paths)}); got {list(modules)}")
        return [paths.index(m) for m in modules]
    natural = sorted(range(len(paths)), key=lambda k: _natural(paths[k]))
    if 1 < len(paths) <= 8:
        valid = [list(o) for o in itertools.permutations(range(len(paths))) if _chains(o, sizes, head_in)]
        if len(valid) == 1:
            return valid[0]
    return natural  # several orders chain (or too many cells to try them all): check_chain judges this one


def from_flax_params(
    tree: Mapping[Any, Any],
    *,
    cells: str | None = None,
    modules: Sequence[str] | None = None,
    head: str | None = None,
    forget_bias: float = 0.0,
    allow_unused: bool = False,
    source: str = "Flax parameters",
) -> Conversion:
    """A Flax parameter tree (Linen or NNX cells, then optionally a dense head) as rnnkit
    weights. Kinds and sizes come from the names and shapes; LSTMs become `lstm` cells with
    `forget_bias` (default 0.0: Flax adds none at run time). The forward order is the only one
    in which the layers' sizes chain, else (layers of one size) the paths' natural order
    (LSTMCell_0, LSTMCell_1; layers/0, layers/1); `modules` lists the cells' paths
    ("layers/0/cell", "LSTMCell_0") in forward order where neither tells. `head` is the head's
    path where there is not exactly one kernel/bias pair beside the cells. `cells`
    overrides kinds and forget biases. NNX's RNG state (under `rngs`) is listed in `skipped`;
    anything else in the tree is refused unless `allow_unused` (then it is listed too)."""
    if not isinstance(tree, Mapping):
        raise ConfigError(f"{source}: expected a mapping of parameters (a Flax params dict or nnx.State)")
    found: list[tuple[str, str, Any]] = []
    others: list[tuple[str, Any]] = []
    _walk(tree, "", found, others)
    head_node, skipped = _find_head(others, head, source)
    unknown = [path for path in skipped if "rngs" not in path.split("/")]  # NNX's RNG streams: bookkeeping
    if unknown and not allow_unused:
        raise ConfigError(
            f"{source}: {', '.join(unknown)} {'is' if len(unknown) == 1 else 'are'} neither a recurrent cell's nor "
            "the head's; pass allow_unused (--allow-unused) to convert without them"
        )
    read = [_keras_layout(kind, node, f"{source}: {where}") for where, kind, node in found]
    sizes = [(int(weights[0].shape[0]), int(weights[1].shape[0])) for _, weights in read]
    head_in = int(_get(head_node, "kernel").shape[0]) if head_node is not None else None
    order = _forward_order([where for where, _, _ in found], sizes, head_in, modules, source)
    given = parse_cells(cells) if cells is not None else None
    if given is not None and len(given) != len(found):
        raise ConfigError(f"--cells lists {len(given)} layers but {source} has {len(found)} recurrent cells")
    layers: list[Layer] = []
    for k, index in enumerate(order):
        gates, weights = read[index]
        units = weights[1].shape[0]
        spec = _spec_for(gates, units, forget_bias, given[k] if given is not None else None, k, source)
        if gates == 4:
            local = L.lstm_from_keras(weights, float(dict(spec.options).get("forget_bias", 1.0)))
        elif gates == 3:
            local = L.gru_from_keras(weights, reset_after=True)
        else:
            local = L.rnn_from_keras(weights)
        layers.append(Layer(spec, int(weights[0].shape[0]), local))
    head_pair = None
    if head_node is not None:
        kernel = _get(head_node, "kernel")
        head_pair = (kernel, _bias(head_node))
    return conversion_from_layers(layers, head_pair, skipped=tuple(skipped), source=source)


def _find_head(others: list[tuple[str, Any]], head: str | None, source: str) -> tuple[Any, list[str]]:
    """The head's parameters (or None) and the paths of everything else left over."""
    dense = [(path, node) for path, node in others if _is_dense(node)]
    rest = [path for path, node in others if not _is_dense(node)]
    if head is not None:
        chosen = [node for path, node in dense if path == head]
        if not chosen:
            raise ConfigError(f"head: no kernel/bias pair at {head} in {source} ({', '.join(p for p, _ in dense)})")
        return chosen[0], rest + [path for path, _ in dense if path != head]
    if len(dense) == 1:
        return dense[0][1], rest
    if len(dense) > 1:
        raise ConfigError(
            f"{source}: several kernel/bias pairs besides the cells ({', '.join(p for p, _ in dense)}); "
            "pass head (--head) to say which is the head"
        )
    return None, rest


def _spec_for(gates: int, units: int, forget_bias: float, given: CellSpec | None, index: int, source: str) -> CellSpec:
    kind = {1: "rnn", 4: "lstm", 3: "gru_reset_after"}[gates]
    if given is None:
        return CellSpec(kind, units, (("forget_bias", float(forget_bias)),) if gates == 4 else ())
    if given.kind == "gru" and gates == 3:
        raise ConfigError(f"--cells: layer {index} of {source}: {_FLAX_TF1_GRU}")
    check_given_spec(given, kind, units, index, source, "Flax's LSTMCell")
    if gates == 4 and "forget_bias" not in dict(given.options):
        return with_forget_bias(given, forget_bias)
    return given


# --- writing a tree ------------------------------------------------------------------------------


def _check_exportable(layer: Layer, index: int, style: str) -> None:
    kind = layer.spec.kind
    if kind == "gru":
        raise ConfigError(f"layer {index} (gru:{layer.spec.units}): {_FLAX_TF1_GRU}")
    refuse_lstm_options(layer, index, "Flax's LSTMCell")
    if kind == "gru_reset_after" and style == "nnx":
        hidden_bias = layer.weights["candidate/hidden_projection/bias"]
        if np.any(hidden_bias != 0):
            raise ConfigError(
                f"layer {index} (gru_reset_after:{layer.spec.units}) has a nonzero bias on its candidate's hidden "
                "product, which NNX's GRUCell does not have (r * (h W_hn) only); use style='linen', whose GRUCell "
                "has it"
            )


def _dense(kernel: np.ndarray, bias: np.ndarray | None = None) -> dict[str, np.ndarray]:
    out = {"kernel": np.ascontiguousarray(kernel)}
    if bias is not None:
        out["bias"] = np.ascontiguousarray(bias)
    return out


def _flax_cell(layer: Layer, style: str) -> dict[str, Any]:
    """One layer's parameters as Flax's LSTMCell / GRUCell / SimpleCell of `style` hold them."""
    kind = layer.spec.kind
    if kind in ("lstm", "basic_lstm"):
        kernel, recurrent, bias = L.lstm_to_keras(layer.weights, layer.input_size, layer.forget_bias)
        ks, rs, bs = np.split(kernel, 4, axis=1), np.split(recurrent, 4, axis=1), np.split(bias, 4)
        f_name = "if" if style == "linen" else "if_"
        cell: dict[str, Any] = {}
        for g, k, r, b in zip(_LSTM_GATES, ks, rs, bs, strict=True):
            cell[f_name if g == "f" else "i" + g] = _dense(k)
            cell["h" + g] = _dense(r, b)
        return cell
    if kind == "gru_reset_after":
        kernel, recurrent, bias = L.gru_to_keras(layer.weights, layer.input_size, reset_after=True)
        (kz, kr, kn), (hz, hr, hn) = np.split(kernel, 3, axis=1), np.split(recurrent, 3, axis=1)
        (bz, br, bn), (_, _, bhn) = np.split(bias[0], 3), np.split(bias[1], 3)
        if style == "linen":
            return {
                "ir": _dense(kr, br),
                "iz": _dense(kz, bz),
                "in": _dense(kn, bn),
                "hr": _dense(hr),
                "hz": _dense(hz),
                "hn": _dense(hn, bhn),
            }
        return {
            "dense_i": _dense(np.concatenate([kr, kz, kn], 1), np.concatenate([br, bz, bn])),
            "dense_h": _dense(np.concatenate([hr, hz, hn], 1)),
        }
    kernel, recurrent, bias = L.rnn_to_keras(layer.weights, layer.input_size)
    if style == "linen":
        return {"i": _dense(kernel, bias), "h": _dense(recurrent)}
    return {"dense_i": _dense(kernel, bias), "dense_h": _dense(recurrent)}


def _check_style(style: str) -> None:
    if style not in STYLES:
        raise ConfigError(f"style must be one of {', '.join(STYLES)}; got {style!r}")


def to_flax_params(model: Any, *, style: str = "nnx") -> dict[str, Any]:
    """An rnnkit cell stack or SequenceClassifier as the parameter tree of the Flax module
    `flax_model(model, style=style)` builds (NumPy arrays; see the module docstring)."""
    _check_style(style)
    layers, head = layers_of(model)
    for k, layer in enumerate(layers):
        _check_exportable(layer, k, style)
    cells = [_flax_cell(layer, style) for layer in layers]
    if style == "linen":
        params: dict[str, Any] = {f"RNN_{k}": {"cell": cell} for k, cell in enumerate(cells)}
        if head is not None:
            params["Dense_0"] = _dense(head[0], head[1])
        return {"params": params}
    tree: dict[str, Any] = {"layers": {k: {"cell": cell} for k, cell in enumerate(cells)}}
    if head is not None:
        tree["head"] = _dense(head[0], head[1])
    return tree


def flax_model(model: Any, *, style: str = "nnx") -> Any:
    """The Flax module computing what `model` computes, holding its weights (needs flax):
    for nnx an `nnx.Module`, called on x [batch, time, depth]; for linen a pair (module,
    variables) for `module.apply(variables, x)`. It returns the head's logits on the last step
    (a SequenceClassifier), else every step's output of the last layer."""
    _check_style(style)
    tree = to_flax_params(model, style=style)
    layers, head = layers_of(model)
    try:
        import jax.numpy as jnp
        from flax import linen as nn
        from flax import nnx
    except ImportError:
        raise ConfigError("flax_model needs flax, which is not installed: pip install 'rnnkit[flax]'") from None
    kinds = [layer.spec.kind for layer in layers]
    sizes = [(layer.input_size, layer.spec.units) for layer in layers]
    with_head = head is not None

    if style == "linen":
        linen_cell = {
            "lstm": nn.LSTMCell,
            "basic_lstm": nn.LSTMCell,
            "gru_reset_after": nn.GRUCell,
            "rnn": nn.SimpleCell,
        }

        class Stack(nn.Module):
            @nn.compact
            def __call__(self, x: Any) -> Any:
                for k, (kind, (_, units)) in enumerate(zip(kinds, sizes, strict=True)):
                    x = nn.RNN(linen_cell[kind](units, parent=None), name=f"RNN_{k}")(x)
                return nn.Dense(head[0].shape[1], name="Dense_0")(x[:, -1]) if with_head else x

        return Stack(), {"params": _to_jax(tree["params"], jnp)}

    nnx_cell = {"lstm": nnx.LSTMCell, "basic_lstm": nnx.LSTMCell, "gru_reset_after": nnx.GRUCell, "rnn": nnx.SimpleCell}

    class NnxStack(nnx.Module):
        def __init__(self, rngs: Any) -> None:
            self.layers = nnx.List(
                [nnx.RNN(nnx_cell[kind](d, units, rngs=rngs)) for kind, (d, units) in zip(kinds, sizes, strict=True)]
            )
            self.head = nnx.Linear(head[0].shape[0], head[0].shape[1], rngs=rngs) if with_head else None

        def __call__(self, x: Any) -> Any:
            for layer in self.layers:
                x = layer(x)
            return self.head(x[:, -1]) if self.head is not None else x

    module = NnxStack(nnx.Rngs(0))
    state = nnx.state(module, nnx.Param)
    replace = getattr(nnx, "replace_by_pure_dict", None)  # flax >= 0.12; before, State's method
    if replace is not None:
        replace(state, _to_jax(tree, jnp))
    else:
        state.replace_by_pure_dict(_to_jax(tree, jnp))
    nnx.update(module, state)
    return module


def _to_jax(tree: Any, jnp: Any) -> Any:
    if isinstance(tree, Mapping):
        return {k: _to_jax(v, jnp) for k, v in tree.items()}
    return jnp.asarray(tree)


# --- files ---------------------------------------------------------------------------------------

FILE_SUFFIXES = (".msgpack", ".safetensors")


def _import_flax_serialization(path: Path) -> Any:
    try:
        from flax import serialization
    except ImportError:
        raise ConfigError(
            f"{path}: a .msgpack file needs flax, which is not installed: pip install 'rnnkit[flax]' (or use a "
            ".safetensors file with the tree's paths joined by '/')"
        ) from None
    return serialization


def _flatten(tree: Mapping[Any, Any], path: str = "") -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for key, value in tree.items():
        where = f"{path}/{key}" if path else str(key)
        if isinstance(value, Mapping):
            out.update(_flatten(value, where))
        else:
            out[where] = np.ascontiguousarray(value)
    return out


def _unflatten(flat: Mapping[str, np.ndarray]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for name, value in flat.items():
        node = tree
        *parents, leaf = name.split("/")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{name}: a parameter's path runs through another parameter")
        node[leaf] = value
    return tree


def load_flax_file(path: str | Path) -> dict[str, Any]:
    """A Flax parameter tree from a file: `.msgpack` as `flax.serialization.msgpack_serialize`
    writes it (needs flax), or `.safetensors` with each leaf named by its path joined by '/'
    (`flax.traverse_util.flatten_dict(tree, sep="/")`; no flax needed)."""
    path = Path(path)
    if path.suffix not in FILE_SUFFIXES:
        raise ConfigError(f"{path}: expected a .msgpack or .safetensors file; got {path.suffix or 'no suffix'!r}")
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    if path.suffix == ".safetensors":
        return _unflatten(read_safetensors(path)[0])
    serialization = _import_flax_serialization(path)
    try:
        tree = serialization.msgpack_restore(path.read_bytes())
    except Exception as err:  # msgpack's errors have no common base: any failure is an unreadable file
        raise CheckpointError(f"{path}: not a readable Flax .msgpack file ({type(err).__name__}: {err})") from None
    if not isinstance(tree, Mapping):
        raise CheckpointError(f"{path}: holds a {type(tree).__name__}, not a tree of parameters")
    return tree


def flax_file_bytes(tree: Mapping[Any, Any], path: Path) -> bytes:
    """The bytes of `path` (.msgpack needs flax; .safetensors does not) holding `tree`; keys
    written as strings (NNX's list indices too: nnx.statelib.restore_int_paths turns them back)."""
    if path.suffix == ".safetensors":
        import safetensors.numpy

        return safetensors.numpy.save(_flatten(tree))
    if path.suffix == ".msgpack":
        serialization = _import_flax_serialization(path)
        return serialization.msgpack_serialize(_unflatten(_flatten(tree)))
    raise ConfigError(f"--out: {path} must end in .msgpack or .safetensors")
