"""How `dynamic_rnn` runs its loop: the ways it can (per_step, fused, fused_stack, native), what
each takes, and the one place that chooses among them (`choose`).

Each `Loop` says why it can't run a cell (`supports`: a reason, or None when it can) and runs
it (`run`) on time-major inputs. `choose` picks one from the cell, JAX's platform and the
caller's `implementation`:

- an explicit `implementation` runs that loop, or raises ValueError saying why it can't take
  the cell (`implementation='native' runs float32 cells at full float32 precision; layer 1
  (LSTMCell) has use_peepholes=True`); nothing falls back silently;
- `"auto"` takes the first loop of `auto_order(platform)` that takes the cell: on CPU native
  (where the kernel is built) then per_step; elsewhere fused then per_step. per_step takes
  every cell, so a cell the fast paths don't take (peepholes, state dropout,
  `return_all_states=True`) runs per_step.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
from jaxtyping import Array

from rnnkit import _fused, _native
from rnnkit._cells import RNNCell
from rnnkit._checks import dtype_name, full_float32
from rnnkit._native import _layer as _native_layer
from rnnkit._wrappers import leaves

# `unroll=None` (the default) lets rnnkit choose per path and platform. On an H200 (JAX 0.11.2,
# benchmarks/unroll_probe.py, the seed's model; benchmarks/RESULTS.md) the fused path trained
# at unroll 1 / 2 / 4 / 8 / 16: 59.6k / 70.2k / 74.8k / 67.6k / 68.0k samples/s at T=28 batch
# 128, 2.87k / 3.64k / 4.17k / 4.07k / 3.83k at T=784, 205k / 229k / 239k / 235k / 253k at
# T=28 batch 1024; inference at batch 4096 was within 10% across them. 4 was the fastest for
# training at T=28 batch 128 and at T=784, within 6% of the fastest at batch 1024. Elsewhere
# (per_step; fused on CPU; native, which has no use for it) the default stays 1: nothing
# measured says otherwise. fused_stack (one loop for the whole stack) takes the same until it
# is measured on a GPU.
GPU_FUSED_UNROLL = 4


def masked_step(cell: RNNCell, x_t: Array, state: Any, t: Any, lengths: Array | None) -> tuple[Array, Any]:
    """One step with TF1's masking: zero output and carried-through state where t >= length."""
    output, new_state = cell._at_step(t)._step(x_t, state)
    if lengths is None:
        return output, new_state
    valid = (t < lengths)[:, None]  # [batch, 1]
    output = jnp.where(valid, output, jnp.zeros_like(output))
    new_state = jax.tree_util.tree_map(lambda new, old: jnp.where(valid, new, old), new_state, state)
    return output, new_state


@dataclass(frozen=True)
class Loop:
    """One way of running `dynamic_rnn`'s loop.

    `supports(cell, platform, return_all_states)` is why it can't run `cell` there, or None;
    `run(cell, x [T, B, input], state, lengths, unroll, return_all_states)` returns
    `(outputs [T, B, output], final state)`, with every step's states third when asked;
    `takes` says in words what it runs, for errors; `gpu_unroll` is what `unroll=None` means
    off CPUs (1 on CPUs)."""

    name: str
    takes: str
    supports: Callable[[RNNCell, str, bool], str | None]
    run: Callable[..., tuple[Any, ...]]
    gpu_unroll: int = 1

    def default_unroll(self, platform: str) -> int:
        return self.gpu_unroll if platform != "cpu" else 1


def _run_per_step(
    cell: RNNCell, x: Array, state: Any, lengths: Array | None, unroll: int | bool, return_all_states: bool
) -> tuple[Any, ...]:
    def step(state: Any, xs: tuple[Array, Array]) -> tuple[Any, Any]:
        x_t, t = xs
        output, new_state = masked_step(cell, x_t, state, t, lengths)
        return new_state, ((output, new_state) if return_all_states else output)

    time_index = jnp.arange(x.shape[0], dtype=jnp.int32)
    final_state, emitted = jax.lax.scan(step, state, (x, time_index), unroll=unroll)
    if return_all_states:
        outputs, states = emitted
        return outputs, final_state, states
    return emitted, final_state


def _fused_reason(cell: RNNCell, platform: str, return_all_states: bool) -> str | None:
    del platform  # XLA runs it anywhere
    if return_all_states:
        return "return_all_states=True asks for every step's state, and it returns the final state only"
    return _fused.unsupported(cell)


def _native_reason(cell: RNNCell, platform: str, return_all_states: bool) -> str | None:
    if platform != "cpu":
        return f"JAX's default backend is {platform}, and the kernel runs on CPU"
    reason = _fused_reason(cell, platform, return_all_states)
    if reason is not None:
        return reason
    for k, leaf in enumerate(leaves(cell)):
        where = f"layer {k} ({type(leaf.cell).__name__})"
        if jnp.dtype(leaf.cell.dtype) != jnp.float32:
            return f"{where} has dtype {dtype_name(leaf.cell.dtype)}"
        if not full_float32(leaf.cell.precision):
            return f"{where} has precision={leaf.cell.precision!r}"
    return None


def _fused_runner(one_loop: bool) -> Callable[..., tuple[Any, ...]]:
    run = _fused.run_one_loop if one_loop else _fused.run

    def run_fused(cell, x, state, lengths, unroll, return_all_states):
        del return_all_states  # refused by `supports`
        return run(cell, x, state, lengths, unroll)

    return run_fused


def _run_native(cell, x, state, lengths, unroll, return_all_states):
    del unroll, return_all_states  # the kernel has no use for unroll; return_all_states refused by `supports`
    valid = _fused.valid_mask(lengths, x.shape[0])  # zeroes a residual sum's padded steps
    native_lengths = jnp.full(x.shape[1], x.shape[0], jnp.int32) if lengths is None else lengths.astype(jnp.int32)
    run_leaf = lambda cell, x, state: _native_layer.layer(cell, x, state, native_lengths)  # noqa: E731
    return _fused.layered(cell, x, state, valid, run_leaf)


PER_STEP = Loop("per_step", "runs any cell", lambda cell, platform, return_all_states: None, _run_per_step)
FUSED = Loop(
    "fused",
    "runs LSTM, GRU and basic RNN cells with tanh, stacks of them, and input/output DropoutWrappers and default "
    "ResidualWrappers around them, returning the final state only",
    _fused_reason,
    _fused_runner(one_loop=False),
    gpu_unroll=GPU_FUSED_UNROLL,
)
FUSED_STACK = Loop("fused_stack", FUSED.takes, _fused_reason, _fused_runner(one_loop=True), GPU_FUSED_UNROLL)
NATIVE = Loop(
    "native",
    "runs float32 cells at full float32 precision on CPU, of the kinds fused takes",
    _native_reason,
    _run_native,
)
LOOPS = {loop.name: loop for loop in (PER_STEP, FUSED, FUSED_STACK, NATIVE)}
IMPLEMENTATIONS = ("auto", *LOOPS)
PALLAS_MOVED = (
    "implementation='pallas' is no longer one of dynamic_rnn's: the per-step Pallas kernels are an experiment "
    "(3-14x slower than fused where measured); call rnnkit.experimental.pallas.dynamic_rnn(cell, inputs, ...) "
    "to run them"
)


def auto_order(platform: str) -> tuple[Loop, ...]:
    """The loops `"auto"` tries, in order, on `platform`: native (where the kernel is built)
    then per_step on CPU, where the kernel measured fastest; fused then per_step elsewhere
    (GPUs), where hoisting the input projection measured faster (benchmarks/RESULTS.md)."""
    if platform == "cpu":
        return (NATIVE, PER_STEP) if _native.available() else (PER_STEP,)
    return (FUSED, PER_STEP)


def auto_implementation() -> str:
    """What `implementation="auto"` means on JAX's default backend for the cells the fast
    paths take: the native kernel on CPU where it is built, else per_step; fused on GPUs."""
    return auto_order(jax.default_backend())[0].name


def default_unroll(path: str) -> int:
    """The unroll factor `unroll=None` means for the loop that runs (fused, fused_stack,
    native or per_step) on JAX's default backend."""
    return LOOPS[path].default_unroll(jax.default_backend())


def choose(cell: RNNCell, implementation: str, *, platform: str, return_all_states: bool) -> Loop:
    """The loop that runs `cell` for `implementation` on `platform` (see the module docstring).
    Raises ValueError for an unknown implementation or one that can't take `cell`, and
    NativeUnavailableError for "native" where the kernel is not built."""
    if implementation == "pallas":
        raise ValueError(PALLAS_MOVED)
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(f"implementation must be one of {', '.join(IMPLEMENTATIONS)}; got {implementation!r}")
    if implementation == "auto":
        return next(loop for loop in auto_order(platform) if loop.supports(cell, platform, return_all_states) is None)
    if implementation == "native":
        _native.require()
    loop = LOOPS[implementation]
    reason = loop.supports(cell, platform, return_all_states)
    if reason is not None:
        raise ValueError(f"implementation={implementation!r} {loop.takes}; {reason}")
    return loop
