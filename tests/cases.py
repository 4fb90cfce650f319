"""The registry of every public cell kind, and helpers the tests share.

The registry (as in dm-haiku's descriptors) drives the generic tests: static == dynamic,
NumPy reference, jit == eager, vmap, masking, gradients. `test_registry_covers_every_public_cell`
fails when a public cell class has no entry here.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import rnnkit as rk

import reference as ref
from jaxprs import eqns, primitives

INPUT_SIZE = 5


@dataclass(frozen=True)
class CellCase:
    """How to build one kind of cell and how the NumPy reference steps it."""

    make: Callable[..., rk.RNNCell]  # (key, input_size, dtype) -> cell
    reference: Callable[[dict[str, np.ndarray]], Callable[[np.ndarray, Any], tuple[Any, Any]]] | None
    # reference(weights below the cell's own scope) -> step(x, flat_state_tuple_or_array)


def _below(variables: dict[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    return {k[len(prefix) :]: v for k, v in variables.items() if k.startswith(prefix)}


def _lstm_ref(**opts: Any) -> Callable:
    return lambda w: lambda x, s: ref.lstm_step(w, x, s, **opts)


def _stack_reference(variables: dict[str, np.ndarray]) -> Callable:
    """The seed's stack, LSTMCell then GRUCell; flat state (c0, h0, h1)."""
    lstm = _below(variables, "multi_rnn_cell/cell_0/lstm_cell/")
    gru = _below(variables, "multi_rnn_cell/cell_1/gru_cell/")

    def step(x: np.ndarray, state: tuple) -> tuple:
        c0, h0, h1 = state
        out0, (c0, h0) = ref.lstm_step(lstm, x, (c0, h0))
        out1, h1 = ref.gru_step(gru, out0, h1)
        return out1, (c0, h0, h1)

    return step


CELL_CASES: dict[str, CellCase] = {
    "basic_rnn": CellCase(
        lambda key, d, dtype: rk.BasicRNNCell(7, input_size=d, key=key, dtype=dtype),
        lambda w: lambda x, s: ref.basic_rnn_step(w, x, s),
    ),
    "basic_lstm": CellCase(
        lambda key, d, dtype: rk.BasicLSTMCell(7, input_size=d, key=key, dtype=dtype),
        _lstm_ref(),
    ),
    "basic_lstm_forget_bias_0.5": CellCase(
        lambda key, d, dtype: rk.BasicLSTMCell(7, input_size=d, key=key, forget_bias=0.5, dtype=dtype),
        _lstm_ref(forget_bias=0.5),
    ),
    "lstm": CellCase(lambda key, d, dtype: rk.LSTMCell(7, input_size=d, key=key, dtype=dtype), _lstm_ref()),
    "lstm_peephole_clip_proj": CellCase(
        lambda key, d, dtype: rk.LSTMCell(
            7,
            input_size=d,
            key=key,
            use_peepholes=True,
            cell_clip=0.4,
            num_proj=4,
            proj_clip=0.25,
            forget_bias=0.7,
            dtype=dtype,
        ),
        _lstm_ref(forget_bias=0.7, cell_clip=0.4, proj_clip=0.25),
    ),
    "gru": CellCase(
        lambda key, d, dtype: rk.GRUCell(7, input_size=d, key=key, dtype=dtype),
        lambda w: lambda x, s: ref.gru_step(w, x, s),
    ),
    "gru_reset_after": CellCase(
        lambda key, d, dtype: rk.GRUCell(7, input_size=d, key=key, reset_after=True, dtype=dtype),
        lambda w: lambda x, s: ref.gru_reset_after_step(w, x, s),
    ),
    "multi_lstm_gru": CellCase(
        lambda key, d, dtype: rk.MultiRNNCell(
            [
                rk.LSTMCell(6, input_size=d, key=jax.random.fold_in(key, 0), dtype=dtype),
                rk.GRUCell(8, input_size=6, key=jax.random.fold_in(key, 1), dtype=dtype),
            ]
        ),
        _stack_reference,
    ),
    "residual_gru": CellCase(
        lambda key, d, dtype: rk.ResidualWrapper(rk.GRUCell(d, input_size=d, key=key, dtype=dtype)),
        lambda w: lambda x, s: (lambda out, new: (x + out, new))(*ref.gru_step(w, x, s)),
    ),
    # keep probabilities of 1.0 make the wrapper the identity, so the reference is the cell's.
    "dropout_wrapper_keep_all": CellCase(
        lambda key, d, dtype: rk.DropoutWrapper(rk.LSTMCell(7, input_size=d, key=key, dtype=dtype)),
        _lstm_ref(),
    ),
}


def cell_variables_below_scope(cell: rk.RNNCell, scope: str = "rnn") -> dict[str, np.ndarray]:
    """The cell's weights named as below its own scope ('kernel', 'gates/bias', ...), or below
    the stack's scope ('multi_rnn_cell/cell_0/...') for a MultiRNNCell."""
    variables = rk.get_variables(cell, scope)
    if isinstance(cell, rk.MultiRNNCell):
        return _below(variables, f"{scope}/")
    inner = cell
    while not hasattr(inner, "name"):
        inner = inner.cell
    return _below(variables, f"{scope}/{inner.name}/")


def randomize(cell: rk.RNNCell, seed: int = 0, scale: float = 0.6) -> rk.RNNCell:
    """The same cell with every weight drawn from N(0, scale^2): non-zero biases and peepholes,
    nothing like the initializer's values, so every term of each formula matters."""
    rng = np.random.default_rng(seed)
    variables = rk.get_variables(cell)
    new = {k: (scale * rng.standard_normal(v.shape)).astype(v.dtype) for k, v in variables.items()}
    return rk.set_variables(cell, new)


def make_cell(name: str, *, dtype: Any = jnp.float32, seed: int = 0, input_size: int = INPUT_SIZE) -> rk.RNNCell:
    return randomize(CELL_CASES[name].make(jax.random.key(seed), input_size, dtype), seed=seed)


def to_numpy(tree: Any) -> Any:
    return jax.tree_util.tree_map(lambda a: np.asarray(a, dtype=np.float64), tree)


def flat_state(state: Any) -> Any:
    """rnnkit's (possibly nested) state as the reference's flat tuple, or one array."""
    leaves = [np.asarray(a, dtype=np.float64) for a in jax.tree_util.tree_leaves(state)]
    return leaves[0] if len(leaves) == 1 else tuple(leaves)


def random_inputs(shape: tuple[int, ...], dtype: Any = jnp.float32, seed: int = 1) -> jax.Array:
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), dtype=dtype)


def assert_close(got: Any, want: Any, tol: float) -> None:
    """Leaf by leaf (leaves may differ in shape, e.g. an LSTMP's c and m), abs and rel `tol`."""
    got_leaves = [np.asarray(g, np.float64) for g in jax.tree_util.tree_leaves(got)]
    want_leaves = [np.asarray(w, np.float64) for w in jax.tree_util.tree_leaves(want)]
    assert len(got_leaves) == len(want_leaves), f"{len(got_leaves)} leaves, expected {len(want_leaves)}"
    for k, (g, w) in enumerate(zip(got_leaves, want_leaves, strict=True)):
        np.testing.assert_allclose(g, w, rtol=tol, atol=tol, err_msg=f"leaf {k}")


def benchmark_script(name: str) -> Any:
    """benchmarks/NAME.py imported as a module (the folder is not a package)."""
    spec = importlib.util.spec_from_file_location(name, Path(__file__).parents[1] / "benchmarks" / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_cli(argv: list[str], capsys: Any) -> tuple[int, str, str]:
    """rnnkit's CLI in this process (capsys: pytest's fixture): (exit status, stdout, stderr),
    argparse's exits included."""
    from rnnkit.cli import main

    try:
        code = main(argv)
    except SystemExit as stop:
        code = stop.code
    out, err = capsys.readouterr()
    return int(code or 0), out, err


def path_taken(fn: Callable[..., Any], *args: Any) -> str:
    """Which of dynamic_rnn's loops the program `fn(*args)` runs, read off its jaxpr's
    primitives: "native" where it calls the native kernel, "fused" where a custom VJP wraps
    its loops (the fused paths' hand-written backward), else "per_step"."""
    found = eqns(fn, *args)
    if any(e.primitive.name == "ffi_call" and str(e.params["target_name"]).startswith("rnnkit_") for e in found):
        return "native"
    if any(e.primitive.name == "custom_vjp_call" for e in found):
        return "fused"
    return "per_step"


def count_primitive(fn: Callable[..., Any], name: str, *args: Any) -> int:
    """How many equations of primitive `name` the program `fn(*args)` holds, nested ones included."""
    return primitives(fn, *args).count(name)


def assert_trees_close(got: Any, want: Any, tol: float) -> None:
    """Same tree structure, and every leaf equal within tol (relative and absolute)."""
    assert jax.tree_util.tree_structure(got) == jax.tree_util.tree_structure(want)
    for a, b in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=tol, atol=tol)


def read_everything(outputs: jax.Array, state: Any) -> jax.Array:
    """A loss that reads every output and every leaf of a final state through fixed random
    weights, so that a wrong value or gradient anywhere shows."""
    rng = np.random.default_rng(7)
    total = jnp.sum(outputs * jnp.asarray(rng.standard_normal(outputs.shape), outputs.dtype))
    for leaf in jax.tree_util.tree_leaves(state):
        total = total + jnp.sum(jnp.tanh(leaf) * jnp.asarray(rng.standard_normal(leaf.shape), leaf.dtype))
    return total
