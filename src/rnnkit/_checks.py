"""Argument checks shared by the cells and the drivers.

Every check runs at trace time (shapes and dtypes are static under `jax.jit`), and every
message names the argument, what was expected and what came, so a user can fix the call
without reading rnnkit's source.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def dtype_name(dtype: Any) -> str:
    return jnp.dtype(dtype).name


def check_float_dtype(dtype: Any, *, name: str) -> jnp.dtype:
    """Return `dtype` as a NumPy dtype, refusing anything that is not a float type."""
    try:
        dt = jnp.dtype(dtype)
    except TypeError as err:
        raise TypeError(f"{name} must be a floating-point dtype; got {dtype!r}") from err
    if not jnp.issubdtype(dt, jnp.floating):
        raise TypeError(f"{name} must be a floating-point dtype (RNN cells only support floats); got {dt.name}")
    if dt == jnp.float64 and not jax.config.read("jax_enable_x64"):
        raise ValueError(
            f"{name}=float64 needs JAX's 64-bit mode: call jax.config.update('jax_enable_x64', True) "
            "before building the cell"
        )
    return dt


def check_precision(precision: Any) -> Any:
    """A matmul precision JAX accepts: None (JAX's default), "default" / "high" / "highest"
    (or a `jax.lax.Precision`), or a `jax.lax.DotAlgorithmPreset` or its name, such as
    "TF32_TF32_F32_X3" (three TF32 passes: near float32's accuracy on GPU tensor cores).
    Returned as given, so it stays hashable for a static field. Whether a backend runs an
    algorithm is JAX's to say, when the matmul is compiled."""
    if precision is None or isinstance(precision, (jax.lax.Precision, jax.lax.DotAlgorithmPreset)):
        return precision
    if isinstance(precision, str) and precision in jax.lax.DotAlgorithmPreset.__members__:
        return precision
    try:
        jax.lax.Precision(precision)
    except (ValueError, TypeError) as err:
        raise ValueError(
            "precision must be None, 'default', 'high' or 'highest' (a jax.lax.Precision), or the name of a "
            f"jax.lax.DotAlgorithmPreset such as 'TF32_TF32_F32_X3'; got {precision!r}"
        ) from err
    return precision


def full_float32(precision: Any) -> bool:
    """True when `precision` lets a float32 matmul run as XLA's CPU backend runs it, in full
    float32: a `jax.lax.Precision` (or its name), None, or the DEFAULT / F32_F32_F32 algorithms.
    The native CPU kernel computes that way, so it takes only these."""
    if precision is None or isinstance(precision, jax.lax.Precision):
        return True
    name = precision.name if isinstance(precision, jax.lax.DotAlgorithmPreset) else precision
    return name not in jax.lax.DotAlgorithmPreset.__members__ or name in ("DEFAULT", "F32_F32_F32")


def check_inputs(x: Any, *, name: str, cell: Any, rank: int, layout: str) -> jax.Array:
    """Check one input array: floating, of the cell's dtype, rank `rank`, last axis `cell.input_size`.

    `layout` is the expected shape in words ("batch, time, depth"), used in messages.
    """
    if not hasattr(x, "shape") or not hasattr(x, "dtype"):
        raise TypeError(f"{name} must be an array of shape [{layout}]; got {type(x).__name__}")
    if isinstance(x, np.ndarray):
        # JAX's usual conversion: without 64-bit mode a NumPy float64 batch becomes float32,
        # as a TF1 feed_dict cast it to the placeholder's dtype.
        x = jnp.asarray(x)
    if x.ndim != rank:
        raise ValueError(f"{name} must be [{layout}] (rank {rank}); got shape {tuple(x.shape)}")
    if x.shape[-1] != cell.input_size:
        expected = layout.replace("depth", str(cell.input_size))
        raise ValueError(f"{name} must be [{expected}] for input_size={cell.input_size}; got {tuple(x.shape)}")
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"{name} must be floating point (RNN cells only support floats); got {x.dtype}")
    if jnp.dtype(x.dtype) != jnp.dtype(cell.dtype):
        raise TypeError(
            f"{name} must have the cell's dtype {dtype_name(cell.dtype)}; got {dtype_name(x.dtype)} "
            f"(build the cell with dtype=jnp.{dtype_name(x.dtype)}, or cast the inputs)"
        )
    return jnp.asarray(x)


def check_state(state: Any, *, name: str, cell: Any, batch_size: int) -> Any:
    """Check that `state` has the structure of `cell.state_size`, each leaf [batch_size, size]."""
    expected = jax.tree_util.tree_map(lambda n: jax.ShapeDtypeStruct((batch_size, n), cell.dtype), cell.state_size)
    got_def = jax.tree_util.tree_structure(state)
    exp_def = jax.tree_util.tree_structure(expected)
    if got_def != exp_def:
        raise ValueError(
            f"{name} must have the structure of cell.state_size {_describe(cell.state_size)}; got {_describe(state)}"
        )
    for got, want in zip(jax.tree_util.tree_leaves(state), jax.tree_util.tree_leaves(expected), strict=True):
        if not hasattr(got, "shape") or tuple(got.shape) != want.shape:
            raise ValueError(
                f"{name} must be {_describe(expected)} for batch_size={batch_size}; got {_describe(state)}"
            )
        if jnp.dtype(got.dtype) != jnp.dtype(cell.dtype):
            raise TypeError(f"{name} must have the cell's dtype {dtype_name(cell.dtype)}; got {dtype_name(got.dtype)}")
    return state


def check_sequence_length(sequence_length: Any, *, batch_size: int, max_time: int) -> jax.Array | None:
    """Validate `sequence_length`: integers shaped [batch_size]; values in [0, max_time] where concrete.

    Under `jax.jit` the values are not known at trace time; there a value below 0 acts as 0
    (the example is all padding) and a value above `max_time` acts as `max_time`.
    """
    if sequence_length is None:
        return None
    lengths = sequence_length
    if not hasattr(lengths, "dtype"):
        lengths = np.asarray(lengths)
    if not jnp.issubdtype(lengths.dtype, jnp.integer):
        raise TypeError(f"sequence_length must be integers shaped [batch]; got dtype {lengths.dtype}")
    if tuple(lengths.shape) != (batch_size,):
        raise ValueError(f"sequence_length must be [batch] = ({batch_size},); got shape {tuple(lengths.shape)}")
    try:
        values = np.asarray(lengths)
    except jax.errors.TracerArrayConversionError:
        values = None  # traced under jit: the values are only known at run time
    if values is not None:
        bad = (values < 0) | (values > max_time)
        if bad.any():
            b = int(np.argmax(bad))
            raise ValueError(
                f"sequence_length values must lie in [0, {max_time}] (the time steps in inputs); "
                f"got {int(values[b])} at batch index {b}"
            )
    return jnp.asarray(lengths, dtype=jnp.int32)


def _describe(tree: Any) -> str:
    """A short, readable rendering of a pytree of arrays or ints: shapes instead of values."""

    def leaf(x: Any) -> str:
        if hasattr(x, "shape"):
            return str(tuple(x.shape))
        return repr(x)

    if isinstance(tree, tuple) and hasattr(tree, "_fields"):
        inner = ", ".join(f"{f}={_describe(getattr(tree, f))}" for f in tree._fields)
        return f"{type(tree).__name__}({inner})"
    if isinstance(tree, (tuple, list)):
        inner = ", ".join(_describe(t) for t in tree)
        return f"({inner},)" if len(tree) == 1 else f"({inner})"
    return leaf(tree)
