"""A cell's weights by their TF1 variable paths, out and back in.

The paths are the ones TF1 writes in a checkpoint for the same network:
`rnn/multi_rnn_cell/cell_0/lstm_cell/kernel`, `bidirectional_rnn/fw/gru_cell/gates/bias`, ...
so a TF1 checkpoint, a safetensors file and an rnnkit cell share one naming.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import equinox as eqx
import jax.numpy as jnp
import numpy as np

from rnnkit._cells import RNNCell, check_cell
from rnnkit._checks import dtype_name


def _leaves(cell: Any, scope: str) -> list[tuple[str, Any]]:
    check_cell(cell)
    if not isinstance(scope, str) or not scope or scope.startswith("/") or scope.endswith("/"):
        raise ValueError(f"scope must be a non-empty variable scope such as 'rnn'; got {scope!r}")
    return cell._tf1_leaves(scope)


def get_variables(cell: RNNCell, scope: str = "rnn") -> dict[str, np.ndarray]:
    """Every weight of `cell` as a NumPy array, keyed by its TF1 variable path under `scope`.

    `scope` is TF1's: "rnn" for `static_rnn` / `dynamic_rnn` (the default in TF1 too),
    "bidirectional_rnn/fw" and "bidirectional_rnn/bw" for the bidirectional drivers, or
    whatever `variable_scope` the TF1 program used.
    """
    return {path: np.asarray(get(cell)) for path, get in _leaves(cell, scope)}


def set_variables(cell: RNNCell, variables: Mapping[str, Any], scope: str = "rnn") -> RNNCell:
    """A new cell with `cell`'s structure and the weights in `variables` (TF1 paths as keys).

    Strict: every variable the cell needs must be there with its exact shape and dtype, and
    nothing else may be; otherwise a `ValueError` names each offending variable. The values
    are copied bit for bit (no casting).
    """
    leaves = _leaves(cell, scope)
    expected = {path: get(cell) for path, get in leaves}
    missing = sorted(set(expected) - set(variables))
    extra = sorted(set(variables) - set(expected))
    problems = []
    if missing:
        problems.append(f"missing {missing}")
    if extra:
        problems.append(f"unexpected {extra}")
    for path in sorted(set(expected) & set(variables)):
        want, got = expected[path], variables[path]
        if not hasattr(got, "shape") or not hasattr(got, "dtype"):
            problems.append(f"{path} must be an array; got {type(got).__name__}")
        elif tuple(got.shape) != tuple(want.shape):
            problems.append(f"{path} must have shape {tuple(want.shape)}; got {tuple(got.shape)}")
        elif np.dtype(got.dtype) != np.dtype(want.dtype):
            problems.append(f"{path} must have dtype {dtype_name(want.dtype)}; got {dtype_name(got.dtype)}")
    if problems:
        raise ValueError(f"variables do not match the cell under scope {scope!r}: " + "; ".join(problems))
    getters = [get for _, get in leaves]
    values = [jnp.asarray(variables[path]) for path, _ in leaves]
    return eqx.tree_at(lambda c: [get(c) for get in getters], cell, values)
