"""`rnnkit demo`: the seed's network run both ways, static and dynamic, on one random batch.

Builds `MultiRNNCell([LSTMCell(128), GRUCell(256)])` on 28 features, runs `static_rnn` and
`dynamic_rnn` on the same [batch, time, 28] input, and reports how long each took to trace
and to compile, their output shapes and the largest difference between their results.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp

from rnnkit._cells import GRUCell, LSTMCell
from rnnkit._rnn import dynamic_rnn, static_rnn
from rnnkit._wrappers import MultiRNNCell


@dataclass(frozen=True)
class DemoConfig:
    batch_size: int = 128  # the seed's batch
    time_steps: int = 28  # MNIST read row by row: 28 rows ...
    input_size: int = 28  # ... of 28 pixels
    lstm_units: int = 128  # the seed's n_hidden
    gru_units: int = 256  # the seed's GRU has 2 * n_hidden
    seed: int = 0


@dataclass(frozen=True)
class ModeTiming:
    mode: str  # "static" or "dynamic"
    output_shape: tuple[int, ...]  # [batch, time, units]; static_rnn's list stacked on axis 1
    trace_s: float  # Python tracing to a jaxpr
    lower_s: float  # jaxpr to StableHLO
    compile_s: float  # XLA compilation
    run_s: float  # first run of the compiled program


@dataclass(frozen=True)
class DemoResult:
    config: DemoConfig
    timings: tuple[ModeTiming, ...]
    max_abs_diff_outputs: float
    max_abs_diff_state: float
    backend: str


def seed_cell(config: DemoConfig, key: jax.Array) -> MultiRNNCell:
    k_lstm, k_gru = jax.random.split(key)
    return MultiRNNCell(
        [
            LSTMCell(config.lstm_units, input_size=config.input_size, key=k_lstm),
            GRUCell(config.gru_units, input_size=config.lstm_units, key=k_gru),
        ]
    )


def _static(cell: MultiRNNCell, x: jax.Array) -> tuple[jax.Array, Any]:
    outputs, state = static_rnn(cell, x, dtype=jnp.float32)
    return jnp.stack(outputs, axis=1), state  # [batch, time, units]


def _dynamic(cell: MultiRNNCell, x: jax.Array) -> tuple[jax.Array, Any]:
    outputs, state = dynamic_rnn(cell, x, dtype=jnp.float32)
    return outputs, state


def _time_mode(mode: str, fn: Any, cell: MultiRNNCell, x: jax.Array) -> tuple[ModeTiming, Any]:
    jitted = jax.jit(fn)
    t0 = time.perf_counter()
    traced = jitted.trace(cell, x)
    t1 = time.perf_counter()
    lowered = traced.lower()
    t2 = time.perf_counter()
    compiled = lowered.compile()
    t3 = time.perf_counter()
    result = jax.block_until_ready(compiled(cell, x))
    t4 = time.perf_counter()
    timing = ModeTiming(mode, tuple(result[0].shape), t1 - t0, t2 - t1, t3 - t2, t4 - t3)
    return timing, result


def _max_abs_diff(a: Any, b: Any) -> float:
    diffs = jax.tree_util.tree_map(lambda u, v: float(jnp.max(jnp.abs(u - v))), a, b)
    return max(jax.tree_util.tree_leaves(diffs))


def run_demo(config: DemoConfig = DemoConfig()) -> DemoResult:
    k_cell, k_x = jax.random.split(jax.random.key(config.seed))
    cell = seed_cell(config, k_cell)
    x = jax.random.normal(k_x, (config.batch_size, config.time_steps, config.input_size), jnp.float32)
    static_timing, (static_out, static_state) = _time_mode("static", _static, cell, x)
    dynamic_timing, (dynamic_out, dynamic_state) = _time_mode("dynamic", _dynamic, cell, x)
    return DemoResult(
        config=config,
        timings=(static_timing, dynamic_timing),
        max_abs_diff_outputs=_max_abs_diff(static_out, dynamic_out),
        max_abs_diff_state=_max_abs_diff(static_state, dynamic_state),
        backend=jax.default_backend(),
    )
