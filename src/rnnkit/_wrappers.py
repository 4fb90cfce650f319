"""Cells built from cells: TF1's `MultiRNNCell`, `DropoutWrapper` and `ResidualWrapper`.

Wrappers are transparent to variable names, as in TF1 (a wrapped `LSTMCell` keeps
`.../lstm_cell/kernel`); `MultiRNNCell` puts layer k under `multi_rnn_cell/cell_k/`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, PRNGKeyArray

from rnnkit._cells import LSTMStateTuple, RNNCell, check_cell
from rnnkit._checks import dtype_name


class MultiRNNCell(RNNCell):
    """TF1's `MultiRNNCell`: layers applied in order at each step, the output of layer k the
    input of layer k + 1. State is a tuple with one entry per layer (an `LSTMStateTuple` for
    LSTM layers); output is the last layer's output. Variables of layer k live under
    `<scope>/multi_rnn_cell/cell_<k>/<cell name>/...`. Layers may differ in kind and size
    (the seed stacks `LSTMCell(128)` and `GRUCell(256)`) but must chain:
    `cells[k].input_size == cells[k - 1].output_size`, and share one dtype.
    """

    cells: tuple[RNNCell, ...]

    def __init__(self, cells: Sequence[RNNCell]):
        cells = tuple(cells)
        if not cells:
            raise ValueError("cells must be a non-empty list of RNN cells; got an empty list")
        for k, cell in enumerate(cells):
            check_cell(cell, f"cells[{k}]")
        for k in range(1, len(cells)):
            if cells[k].input_size != cells[k - 1].output_size:
                raise ValueError(
                    f"cells[{k}].input_size must equal cells[{k - 1}].output_size = {cells[k - 1].output_size} "
                    f"(each layer reads the previous layer's output); got {cells[k].input_size}"
                )
            if jnp.dtype(cells[k].dtype) != jnp.dtype(cells[0].dtype):
                raise TypeError(
                    f"cells[{k}].dtype must equal cells[0].dtype = {dtype_name(cells[0].dtype)}; "
                    f"got {dtype_name(cells[k].dtype)}"
                )
        self.cells = cells

    @property
    def input_size(self) -> int:
        return self.cells[0].input_size

    @property
    def output_size(self) -> int:
        return self.cells[-1].output_size

    @property
    def state_size(self) -> tuple[Any, ...]:
        return tuple(cell.state_size for cell in self.cells)

    @property
    def dtype(self) -> Any:
        return self.cells[0].dtype

    def _step(self, inputs: Array, state: tuple[Any, ...]) -> tuple[Array, tuple[Any, ...]]:
        new_states = []
        x = inputs
        for cell, layer_state in zip(self.cells, state, strict=True):
            x, new_state = cell._step(x, layer_state)
            new_states.append(new_state)
        return x, tuple(new_states)

    def _tf1_leaves(self, scope: str) -> list[tuple[str, Callable[[Any], Array]]]:
        leaves = []
        for k, cell in enumerate(self.cells):
            for path, get in cell._tf1_leaves(f"{scope}/multi_rnn_cell/cell_{k}"):
                leaves.append((path, _in_layer(k, get)))
        return leaves

    def _at_step(self, step: Any) -> MultiRNNCell:
        cells = tuple(cell._at_step(step) for cell in self.cells)
        if all(new is old for new, old in zip(cells, self.cells, strict=True)):
            return self  # no dropout inside: skip rebuilding the module at every traced step
        return eqx.tree_at(lambda m: m.cells, self, cells)


def _in_layer(k: int, get: Callable[[Any], Array]) -> Callable[[Any], Array]:
    return lambda multi: get(multi.cells[k])


class _Wrapper(RNNCell):
    """A cell around one cell: same sizes, dtype and variable names as the wrapped cell."""

    cell: RNNCell

    @property
    def input_size(self) -> int:
        return self.cell.input_size

    @property
    def output_size(self) -> int:
        return self.cell.output_size

    @property
    def state_size(self) -> Any:
        return self.cell.state_size

    @property
    def dtype(self) -> Any:
        return self.cell.dtype

    def _tf1_leaves(self, scope: str) -> list[tuple[str, Callable[[Any], Array]]]:
        return [(path, _in_wrapper(get)) for path, get in self.cell._tf1_leaves(scope)]


def _in_wrapper(get: Callable[[Any], Array]) -> Callable[[Any], Array]:
    return lambda wrapper: get(wrapper.cell)


class ResidualWrapper(_Wrapper):
    """TF1's `ResidualWrapper`: output = residual_fn(inputs, cell_output), by default
    `inputs + cell_output`; the state passes through. Needs `input_size == output_size`
    for the default sum."""

    residual_fn: Callable[[Array, Array], Array] | None = eqx.field(static=True)

    def __init__(self, cell: RNNCell, residual_fn: Callable[[Array, Array], Array] | None = None):
        cell = check_cell(cell)
        if residual_fn is None and cell.input_size != cell.output_size:
            raise ValueError(
                f"cell.output_size must equal cell.input_size = {cell.input_size} to add the input to the "
                f"output; got {cell.output_size} (pass residual_fn to combine them differently)"
            )
        self.cell, self.residual_fn = cell, residual_fn

    def _step(self, inputs: Array, state: Any) -> tuple[Array, Any]:
        output, new_state = self.cell._step(inputs, state)
        combined = inputs + output if self.residual_fn is None else self.residual_fn(inputs, output)
        return combined, new_state

    def _at_step(self, step: Any) -> ResidualWrapper:
        return eqx.tree_at(lambda w: w.cell, self, self.cell._at_step(step))


def _check_keep_prob(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < value <= 1.0:
        raise ValueError(f"{name} must be a number in (0, 1] (the probability of keeping a unit); got {value!r}")
    return float(value)


def _mask_keys(key: PRNGKeyArray) -> tuple[PRNGKeyArray, PRNGKeyArray, PRNGKeyArray]:
    """One step's keys for its input, state and output masks."""
    k_in, k_state, k_out = jax.random.split(key, 3)
    return k_in, k_state, k_out


def _dropout(x: Array, keep_prob: float, key: PRNGKeyArray, variational: bool) -> Array:
    # TF1's nn.dropout: x / keep_prob * floor(keep_prob + U[0, 1)). With variational
    # recurrence TF1 draws one [1, size] mask shared by the whole batch and every step.
    if keep_prob == 1.0:
        return x
    shape = (1, *x.shape[1:]) if variational else x.shape
    keep = jax.random.bernoulli(key, keep_prob, shape).astype(x.dtype)
    return x / keep_prob * keep


class DropoutWrapper(_Wrapper):
    """TF1's `DropoutWrapper`, with TF1's keep probabilities (not drop rates).

    Drops the cell's inputs (`input_keep_prob`), outputs (`output_keep_prob`) and new state
    (`state_keep_prob`; as in TF1 the `c` of an `LSTMStateTuple` is never dropped, only `h`).
    Kept units are scaled by 1 / keep_prob. With `variational_recurrent=True` each mask is
    drawn once per sequence, shaped [1, size] and shared by the whole batch and every time
    step (Gal and Ghahramani; TF1's convention); otherwise masks are fresh at every step.

    Randomness comes from `key` (or `seed`, TF1's spelling: `key = jax.random.key(seed)`).
    `static_rnn` / `dynamic_rnn` fold the time step into it, so each step draws its own
    masks; give a new key for each batch (for example
    `eqx.tree_at(lambda w: w.key, wrapper, new_key)`), or the same masks repeat.
    `eqx.nn.inference_mode(cell)` (or keep probabilities of 1.0) turns dropout off for
    evaluation. The wrapper holds a key and that flag, which are not differentiable floats:
    pass it through `eqx.filter_jit` / `eqx.filter_grad` (or close over it) rather than
    straight through `jax.jit` / `jax.grad` arguments.
    """

    input_keep_prob: float = eqx.field(static=True)
    output_keep_prob: float = eqx.field(static=True)
    state_keep_prob: float = eqx.field(static=True)
    variational_recurrent: bool = eqx.field(static=True)
    key: PRNGKeyArray | None
    inference: bool

    def __init__(
        self,
        cell: RNNCell,
        input_keep_prob: float = 1.0,
        output_keep_prob: float = 1.0,
        state_keep_prob: float = 1.0,
        variational_recurrent: bool = False,
        seed: int | None = None,
        *,
        key: PRNGKeyArray | None = None,
        inference: bool = False,
    ):
        self.cell = check_cell(cell)
        self.input_keep_prob = _check_keep_prob("input_keep_prob", input_keep_prob)
        self.output_keep_prob = _check_keep_prob("output_keep_prob", output_keep_prob)
        self.state_keep_prob = _check_keep_prob("state_keep_prob", state_keep_prob)
        self.variational_recurrent = bool(variational_recurrent)
        if key is not None and seed is not None:
            raise ValueError("pass either key or seed to DropoutWrapper, not both")
        if seed is not None:
            key = jax.random.key(seed)
        drops = min(self.input_keep_prob, self.output_keep_prob, self.state_keep_prob) < 1.0
        if drops and key is None:
            raise ValueError("DropoutWrapper needs key= (or seed=) when a keep probability is below 1.0; got neither")
        self.key = key
        self.inference = inference

    def _step(self, inputs: Array, state: Any) -> tuple[Array, Any]:
        if self.inference or self.key is None:
            return self.cell._step(inputs, state)
        k_in, k_state, k_out = _mask_keys(self.key)
        variational = self.variational_recurrent
        inputs = _dropout(inputs, self.input_keep_prob, k_in, variational)
        output, new_state = self.cell._step(inputs, state)
        new_state = self._drop_state(new_state, k_state)
        return _dropout(output, self.output_keep_prob, k_out, variational), new_state

    def _drop_state(self, state: Any, key: PRNGKeyArray) -> Any:
        if self.state_keep_prob == 1.0:
            return state
        parts, treedef = jax.tree_util.tree_flatten(state, is_leaf=lambda s: isinstance(s, LSTMStateTuple))
        keys = jax.random.split(key, len(parts))
        dropped = []
        for part, k in zip(parts, keys, strict=True):
            if isinstance(part, LSTMStateTuple):  # TF1's default filter: keep c, drop h
                part = LSTMStateTuple(part.c, _dropout(part.h, self.state_keep_prob, k, self.variational_recurrent))
            else:
                part = _dropout(part, self.state_keep_prob, k, self.variational_recurrent)
            dropped.append(part)
        return jax.tree_util.tree_unflatten(treedef, dropped)

    def _key_at(self, step: Any) -> PRNGKeyArray:
        """The key step `step` draws its masks from (`_mask_keys` splits it): the wrapper's own
        with variational masks, the same at every step; else the step folded into it."""
        return self.key if self.variational_recurrent else jax.random.fold_in(self.key, step)

    def _at_step(self, step: Any) -> DropoutWrapper:
        wrapper = eqx.tree_at(lambda w: w.cell, self, self.cell._at_step(step))
        if self.variational_recurrent or self.key is None:
            return wrapper  # the same masks at every step
        return eqx.tree_at(lambda w: w.key, wrapper, self._key_at(step))


# A step from a cell to one inside it: ("cells", k) into a MultiRNNCell's layer k, ("cell",)
# into a wrapper's cell.
PathStep = tuple[str] | tuple[str, int]


@dataclass(frozen=True)
class Leaf:
    """A cell inside a tree of MultiRNNCells and wrappers that is neither (a weight-holding
    cell, or a cell class rnnkit does not know): the steps from the root to it, and the
    wrappers around it (outermost first) with the path to each."""

    cell: RNNCell
    path: tuple[PathStep, ...]
    wrappers: tuple[RNNCell, ...]
    wrapper_paths: tuple[tuple[PathStep, ...], ...]


def leaves(cell: RNNCell) -> Iterator[Leaf]:
    """The leaves of `cell`'s tree in the order they run (layer 0 first): the one walk of the
    wrapper tree. Each caller filters what it meets by its own rule (`_fused.unsupported`,
    the converters' `leaf_cells`, a classifier's dropout keys)."""

    def walk(node: RNNCell, path: tuple[PathStep, ...], wrapped: tuple[tuple[tuple[PathStep, ...], RNNCell], ...]):
        if isinstance(node, MultiRNNCell):
            for k, layer in enumerate(node.cells):
                yield from walk(layer, (*path, ("cells", k)), wrapped)
        elif isinstance(node, _Wrapper):
            yield from walk(node.cell, (*path, ("cell",)), (*wrapped, (path, node)))
        else:
            yield Leaf(node, path, tuple(w for _, w in wrapped), tuple(p for p, _ in wrapped))

    yield from walk(cell, (), ())


def at_path(cell: Any, path: tuple[PathStep, ...]) -> Any:
    """The cell `path` (from `leaves`) leads to inside `cell`."""
    for step in path:
        cell = getattr(cell, step[0]) if len(step) == 1 else getattr(cell, step[0])[step[1]]
    return cell
