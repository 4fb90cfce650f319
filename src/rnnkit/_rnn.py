"""Running a cell over a sequence: TF1's `static_rnn`, `dynamic_rnn` and their bidirectional forms.

`sequence_length`, everywhere, has TF1's meaning. For example b and step t:

    t <  sequence_length[b]:  (output, state) = cell(inputs[b, t], state[b, t - 1])
    t >= sequence_length[b]:  output = 0 and the state is carried through unchanged,

so the final state of example b is its state after step sequence_length[b] - 1 (the initial
state when the length is 0) and padded steps never leak into it. Sequences are right-padded.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

from rnnkit import _loops
from rnnkit._cells import RNNCell, check_cell
from rnnkit._checks import check_inputs, check_sequence_length, check_state, dtype_name
from rnnkit._loops import IMPLEMENTATIONS as IMPLEMENTATIONS
from rnnkit._loops import auto_implementation as auto_implementation
from rnnkit._loops import default_unroll as default_unroll

# Public functions take JAX or NumPy arrays (TF1 users feed NumPy batches).
ArrayLike = Array | np.ndarray


def _initial_state(cell: RNNCell, initial_state: Any, dtype: Any, batch_size: int, name: str) -> Any:
    if dtype is not None and jnp.dtype(dtype) != jnp.dtype(cell.dtype):
        raise TypeError(f"dtype must be the cell's dtype {dtype_name(cell.dtype)} (or None); got {dtype_name(dtype)}")
    if initial_state is None:
        return cell.zero_state(batch_size)
    return check_state(initial_state, name=name, cell=cell, batch_size=batch_size)


def _unstack(inputs: Any, cell: RNNCell) -> list[Array]:
    """static_rnn's inputs as a list of [batch, depth] arrays, checked."""
    if isinstance(inputs, (list, tuple)):
        if not inputs:
            raise ValueError("inputs must not be empty: static_rnn needs at least one time step; got an empty list")
        steps = [
            check_inputs(x, name=f"inputs[{t}]", cell=cell, rank=2, layout="batch, depth") for t, x in enumerate(inputs)
        ]
        for t, x in enumerate(steps):
            if x.shape[0] != steps[0].shape[0]:
                raise ValueError(
                    f"inputs[{t}] must have the batch size of inputs[0], ({steps[0].shape[0]}, {cell.input_size}); "
                    f"got {tuple(x.shape)}"
                )
        return steps
    x = check_inputs(inputs, name="inputs", cell=cell, rank=3, layout="batch, time, depth")
    if x.shape[1] == 0:
        raise ValueError(f"inputs must not be empty: static_rnn needs at least one time step; got shape {x.shape}")
    return [x[:, t] for t in range(x.shape[1])]


def _check_num_steps(steps: list[Array], num_steps: int | None) -> None:
    if num_steps is not None and len(steps) != num_steps:
        raise ValueError(
            f"inputs must have num_steps={num_steps} time steps (the length this static RNN is built for); "
            f"got {len(steps)}"
        )


def static_rnn(
    cell: RNNCell,
    inputs: Sequence[Float[ArrayLike, "batch depth"]] | Float[ArrayLike, "batch time depth"],
    initial_state: Any = None,
    dtype: Any = None,
    sequence_length: Int[ArrayLike, " batch"] | Sequence[int] | None = None,
    *,
    num_steps: int | None = None,
) -> tuple[list[Array], Any]:
    """Run `cell` over a sequence by unrolling it in Python: TF1's `static_rnn`.

    `inputs` is a list of T arrays [batch, input_size] (TF1's form, e.g. from
    `tf.unstack(x, T, 1)`), or one [batch, T, input_size] array that is unstacked here.
    Returns `(outputs, state)`: a list of T arrays [batch, output_size] and the final state.

    Compiles to: T copies of the cell, one after the other. The program's size, trace and
    compile time grow linearly with T, and under `jax.jit` every new T is a new program.
    In exchange XLA sees the whole computation at once, which can make each step faster at
    short lengths. `num_steps=T` pins the length the way TF1's graph did: any other length is
    refused with an error. See `dynamic_rnn` for one loop body that runs at any length.

    `initial_state` defaults to `cell.zero_state(batch, dtype)`; `dtype`, if given, must be
    the cell's dtype. `sequence_length` ([batch] integers in [0, T]) masks as described in
    this module: zero outputs and carried-through state past each example's length.
    """
    cell = check_cell(cell)
    steps = _unstack(inputs, cell)
    _check_num_steps(steps, num_steps)
    batch_size = steps[0].shape[0]
    lengths = check_sequence_length(sequence_length, batch_size=batch_size, max_time=len(steps))
    state = _initial_state(cell, initial_state, dtype, batch_size, "initial_state")
    outputs = []
    for t, x_t in enumerate(steps):
        output, state = _loops.masked_step(cell, x_t, state, t, lengths)
        outputs.append(output)
    return outputs, state


def _check_unroll(unroll: Any) -> int | bool | None:
    if unroll is None or unroll is True or (isinstance(unroll, int) and not isinstance(unroll, bool) and unroll >= 1):
        return unroll
    raise ValueError(
        "unroll must be a positive int (steps per loop iteration), True (unroll fully) or None (rnnkit "
        f"chooses); got {unroll!r}"
    )


def dynamic_rnn(
    cell: RNNCell,
    inputs: Float[ArrayLike, "batch time depth"] | Float[ArrayLike, "time batch depth"],
    sequence_length: Int[ArrayLike, " batch"] | Sequence[int] | None = None,
    initial_state: Any = None,
    dtype: Any = None,
    time_major: bool = False,
    unroll: int | bool | None = None,
    *,
    return_all_states: bool = False,
    implementation: str = "auto",
    parallel_iterations: int | None = None,
    swap_memory: bool = False,
) -> tuple[Array, Any] | tuple[Array, Any, Any]:
    """Run `cell` over a sequence in a loop: TF1's `dynamic_rnn`, built on `jax.lax.scan`.

    `inputs` is [batch, time, input_size] (or [time, batch, input_size] with
    `time_major=True`). Returns `(outputs, state)`: outputs [batch, time, output_size] (or
    time-major) and the final state. With `return_all_states=True` it returns
    `(outputs, state, states)`, where `states` holds the state after every step, each leaf
    [batch, time, size] (or time-major); TF1 gave only the last.

    Compiles to: one loop whose body is one cell step, so trace and compile cost do not
    depend on the length, and a program built for one length runs at any other (under
    `jax.jit` a new length re-traces only the cheap loop). `unroll=k` puts k steps in each
    loop iteration (more work for XLA, fewer loop trips; `True` unrolls fully, like
    `static_rnn`). The default, `None`, lets rnnkit choose: 4 for the fused path on GPUs
    (measured fastest there), 1 elsewhere. See `static_rnn` for the fully unrolled form; all
    give the same numbers.

    `initial_state`, `dtype` and `sequence_length` as in `static_rnn`. TF1's
    `parallel_iterations` and `swap_memory` are accepted so TF1 code ports unchanged and have
    no effect: XLA schedules the loop itself (for memory, wrap the loss in `jax.checkpoint`).

    `implementation` picks how the loop is arranged, like Keras' `implementation=`; the
    numbers are the same up to float rounding. rnnkit/_loops.py chooses, in one place:

    - `"per_step"` runs the cell's own step in the loop and lets autodiff derive the
      backward pass. It takes every cell.
    - `"fused"` runs a layer at a time, the input projections of the whole sequence hoisted
      into one matmul, with a hand-written backward pass whose weight gradients are one
      matmul after the loop (see rnnkit/_fused.py). It takes LSTM, GRU and basic RNN cells
      with tanh (LSTMCell without peepholes, clipping or projection), stacks of them, and
      input/output DropoutWrappers (drawing the per-step path's masks) and default
      ResidualWrappers around them.
    - `"fused_stack"` is fused with one loop for a whole MultiRNNCell of unwrapped layers:
      each iteration steps every layer, only the first layer's input projection hoisted (half
      the loop iterations for two layers, for GPUs where an iteration's fixed cost dominates;
      1.07-1.22x slower than fused on an H200). Other cells fused takes run as fused.
    - `"native"` (CPU, float32 cells at full float32 precision, the cells fused takes) runs
      each layer, loop and gradients, in rnnkit's C++ kernel (rnnkit/_native; compiled into
      the wheel, one build per instruction set); it raises `NativeUnavailableError` where
      there is none (`rnnkit env` says why).
    - `"auto"` (default) is native on CPU where the kernel is built, else per_step; fused
      on GPUs, where hoisting the input projection measured faster. A cell the chosen fast
      path does not take, or `return_all_states=True`, runs per_step.

    An explicit choice that can't take the cell raises ValueError saying why (e.g. an
    LSTMCell with peepholes and `implementation="fused"`); only `"auto"` falls back.
    The per-step Pallas kernels once offered as `"pallas"` live in
    `rnnkit.experimental.pallas` (an experiment, slower than fused everywhere measured).
    fused and native have hand-written reverse-mode gradients, as cuDNN's RNNs
    do: `jax.grad` and `jax.vjp` work, forward mode (`jax.jvp`, `jax.jacfwd`) does not, and
    native's gradient can't be differentiated again (Hessian-vector products). Use
    `implementation="per_step"` for those.
    """
    del parallel_iterations, swap_memory  # no-ops, see the docstring
    cell = check_cell(cell)
    unroll = _check_unroll(unroll)
    platform = jax.default_backend()
    loop = _loops.choose(cell, implementation, platform=platform, return_all_states=return_all_states)
    layout = "time, batch, depth" if time_major else "batch, time, depth"
    x = check_inputs(inputs, name="inputs", cell=cell, rank=3, layout=layout)
    x = x if time_major else jnp.swapaxes(x, 0, 1)  # [time, batch, depth]
    max_time, batch_size = x.shape[0], x.shape[1]
    lengths = check_sequence_length(sequence_length, batch_size=batch_size, max_time=max_time)
    state = _initial_state(cell, initial_state, dtype, batch_size, "initial_state")
    unroll = loop.default_unroll(platform) if unroll is None else unroll
    outputs, final_state, *states = loop.run(cell, x, state, lengths, unroll, return_all_states)

    def batch_major(y: Array) -> Array:
        return y if time_major else jnp.swapaxes(y, 0, 1)

    if return_all_states:
        return batch_major(outputs), final_state, jax.tree_util.tree_map(batch_major, states[0])
    return batch_major(outputs), final_state


def _reverse_sequence(x: Array, lengths: Array | None) -> Array:
    """TF1's `reverse_sequence` on [batch, time, ...]: reverse each example's first
    lengths[b] steps, leave its padding where it is. No lengths: reverse every step."""
    if lengths is None:
        return jnp.flip(x, axis=1)
    t = jnp.arange(x.shape[1], dtype=jnp.int32)[None, :]  # [1, time]
    lengths = lengths[:, None]  # [batch, 1]
    index = jnp.where(t < lengths, lengths - 1 - t, t)  # [batch, time]
    index = index.reshape(index.shape + (1,) * (x.ndim - 2))
    return jnp.take_along_axis(x, index, axis=1)


def _check_initial_states(cell_fw: RNNCell, cell_bw: RNNCell, state_fw: Any, state_bw: Any, batch_size: int) -> None:
    """Check each direction's initial state under its own argument name."""
    if state_fw is not None:
        check_state(state_fw, name="initial_state_fw", cell=cell_fw, batch_size=batch_size)
    if state_bw is not None:
        check_state(state_bw, name="initial_state_bw", cell=cell_bw, batch_size=batch_size)


def _check_pair(cell_fw: Any, cell_bw: Any) -> tuple[RNNCell, RNNCell]:
    cell_fw, cell_bw = check_cell(cell_fw, "cell_fw"), check_cell(cell_bw, "cell_bw")
    if cell_bw.input_size != cell_fw.input_size:
        raise ValueError(
            f"cell_bw.input_size must equal cell_fw.input_size = {cell_fw.input_size} "
            f"(both read the same inputs); got {cell_bw.input_size}"
        )
    return cell_fw, cell_bw


def bidirectional_dynamic_rnn(
    cell_fw: RNNCell,
    cell_bw: RNNCell,
    inputs: Float[ArrayLike, "batch time depth"] | Float[ArrayLike, "time batch depth"],
    sequence_length: Int[ArrayLike, " batch"] | Sequence[int] | None = None,
    initial_state_fw: Any = None,
    initial_state_bw: Any = None,
    dtype: Any = None,
    time_major: bool = False,
    unroll: int | bool | None = None,
    *,
    parallel_iterations: int | None = None,
    swap_memory: bool = False,
) -> tuple[tuple[Array, Array], tuple[Any, Any]]:
    """TF1's `bidirectional_dynamic_rnn`: `dynamic_rnn` forwards with `cell_fw` and backwards
    with `cell_bw`. Returns `((output_fw, output_bw), (state_fw, state_bw))`, outputs not
    concatenated (`jnp.concatenate(outputs, axis=-1)` does that).

    The backward pass reverses each example over its valid steps only (TF1's
    `reverse_sequence` with `sequence_length`), runs, and reverses the outputs back, so
    `output_bw[b, t]` has read steps t .. length[b] - 1 and padding stays zero.
    Weights in TF1 live under `bidirectional_rnn/fw/...` and `bidirectional_rnn/bw/...`:
    use those scopes with `get_variables` / `set_variables`.
    """
    del parallel_iterations, swap_memory  # no-ops, as in dynamic_rnn
    cell_fw, cell_bw = _check_pair(cell_fw, cell_bw)
    layout = "time, batch, depth" if time_major else "batch, time, depth"
    x = check_inputs(inputs, name="inputs", cell=cell_fw, rank=3, layout=layout)
    x = jnp.swapaxes(x, 0, 1) if time_major else x  # [batch, time, depth]
    lengths = check_sequence_length(sequence_length, batch_size=x.shape[0], max_time=x.shape[1])
    _check_initial_states(cell_fw, cell_bw, initial_state_fw, initial_state_bw, x.shape[0])

    out_fw, state_fw = dynamic_rnn(cell_fw, x, lengths, initial_state_fw, dtype, unroll=unroll)
    reversed_out, state_bw = dynamic_rnn(
        cell_bw, _reverse_sequence(x, lengths), lengths, initial_state_bw, dtype, unroll=unroll
    )
    out_bw = _reverse_sequence(reversed_out, lengths)
    if time_major:
        out_fw, out_bw = jnp.swapaxes(out_fw, 0, 1), jnp.swapaxes(out_bw, 0, 1)
    return (out_fw, out_bw), (state_fw, state_bw)


def static_bidirectional_rnn(
    cell_fw: RNNCell,
    cell_bw: RNNCell,
    inputs: Sequence[Float[ArrayLike, "batch depth"]] | Float[ArrayLike, "batch time depth"],
    initial_state_fw: Any = None,
    initial_state_bw: Any = None,
    dtype: Any = None,
    sequence_length: Int[ArrayLike, " batch"] | Sequence[int] | None = None,
    *,
    num_steps: int | None = None,
) -> tuple[list[Array], Any, Any]:
    """TF1's `static_bidirectional_rnn`: `static_rnn` forwards and (over each example's valid
    steps) backwards. Returns `(outputs, state_fw, state_bw)` where `outputs[t]` is
    [batch, fw.output_size + bw.output_size], the two directions concatenated, as in TF1.
    """
    cell_fw, cell_bw = _check_pair(cell_fw, cell_bw)
    steps = _unstack(inputs, cell_fw)
    _check_num_steps(steps, num_steps)
    x = jnp.stack(steps, axis=1)  # [batch, time, depth]
    lengths = check_sequence_length(sequence_length, batch_size=x.shape[0], max_time=x.shape[1])
    _check_initial_states(cell_fw, cell_bw, initial_state_fw, initial_state_bw, x.shape[0])
    out_fw, state_fw = static_rnn(cell_fw, steps, initial_state_fw, dtype, lengths)
    reversed_x = _reverse_sequence(x, lengths)
    reversed_out, state_bw = static_rnn(cell_bw, reversed_x, initial_state_bw, dtype, lengths)
    out_bw = _reverse_sequence(jnp.stack(reversed_out, axis=1), lengths)
    outputs = [jnp.concatenate([fw, out_bw[:, t]], axis=1) for t, fw in enumerate(out_fw)]
    return outputs, state_fw, state_bw


def last_relevant(
    outputs: Float[ArrayLike, "batch time units"] | Sequence[Float[ArrayLike, "batch units"]],
    sequence_length: Int[ArrayLike, " batch"] | Sequence[int],
    time_major: bool = False,
) -> Float[Array, "batch units"]:
    """The last valid output of each example, `outputs[b, sequence_length[b] - 1]`.

    With `sequence_length`, `outputs[:, -1]` is zero for every example shorter than the batch
    (TF1 zeroes padded steps); this picks the step that is not. Accepts `dynamic_rnn`'s array
    or `static_rnn`'s list. An example of length 0 gets zeros.
    """
    if isinstance(outputs, (list, tuple)):
        if not outputs:
            raise ValueError("outputs must not be empty; got an empty list")
        outputs = jnp.stack(outputs, axis=1)
    elif time_major:
        outputs = jnp.swapaxes(outputs, 0, 1)
    if not hasattr(outputs, "ndim") or outputs.ndim != 3:
        shape = getattr(outputs, "shape", type(outputs).__name__)
        raise ValueError(f"outputs must be [batch, time, units] or a list of [batch, units]; got {shape}")
    lengths = check_sequence_length(sequence_length, batch_size=outputs.shape[0], max_time=outputs.shape[1])
    assert lengths is not None
    index = jnp.clip(lengths - 1, 0, outputs.shape[1] - 1)  # [batch]
    last = jnp.take_along_axis(outputs, index[:, None, None], axis=1)[:, 0]  # [batch, units]
    return jnp.where((lengths > 0)[:, None], last, jnp.zeros_like(last))
