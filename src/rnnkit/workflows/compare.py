"""`rnnkit compare`: the seed's claims about static_rnn and dynamic_rnn, measured on this machine.

For one model (`--cells`, the seed's by default) and a sweep of sequence lengths, both modes are
traced, lowered and compiled ahead of time (`jit(...).trace().lower().compile()`), for the
training step (forward, backward, TF1's Adam) and for inference, in this one process:

- time to trace / lower / compile; XLA's memory analysis of the compiled program (temp,
  argument, output, code bytes) and the growth of the process's peak RSS while compiling;
- program size: StableHLO text bytes and op count (deterministic), and the size of the
  serialized `jax.export` artifact that `rnnkit export` would write;
- steady-state speed: training steps/s and inference samples/s (warm-up call, then the median
  of repeated timed calls, each ended by `block_until_ready`);
- a stream of batches of varying length (the seed's 10, 12, 8, ...): compilations needed and
  total wall time per mode, exact lengths vs lengths bucketed up to a few sizes (padding masked
  by `sequence_length`, which leaves the logits unchanged: checked, bit for bit);
- `dynamic_rnn(unroll=k)`: compile time against step time.

Static compile cost grows fast with length, so every static point first gets a projection
(a power law through the static points already measured) and is skipped, with its projection
reported, when that exceeds the time or memory budget.
"""

from __future__ import annotations

import math
import os
import platform
import re
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from rnnkit._rnn import dynamic_rnn
from rnnkit._version import __version__
from rnnkit.errors import ConfigError
from rnnkit.export import ExportedModel, artifact_bytes, export_model, portable
from rnnkit.models.classifier import SequenceClassifier, build_classifier, parse_cells
from rnnkit.runs import tf1_adam
from rnnkit.workflows.train_step import cross_entropy


@dataclass(frozen=True)
class CompareConfig:
    cells: str = "lstm:128,gru:256"  # the seed's model
    lengths: tuple[int, ...] = (28, 56, 112, 224, 448, 896)
    features: int = 28  # input depth, fixed while the length varies
    num_classes: int = 10
    batch_size: int = 128  # training batch (the seed's)
    infer_batch_size: int = 256
    repeats: int = 5  # timed calls per speed figure (median reported)
    max_speed_s: float = 10.0  # stop repeating a speed measurement after this long
    budget_s: float = 120.0  # skip a static point whose projected train-step compile exceeds this
    budget_mb: float = 6144.0  # ... or whose projected compile RSS growth exceeds this
    stream: tuple[int, ...] = (10, 12, 8, 24, 40, 16, 56, 33, 64, 20, 48, 10)  # lengths, one batch each
    buckets: tuple[int, ...] = (16, 32, 64)  # --bucket: stream lengths round up to the next of these
    unroll: tuple[int, ...] = (1, 2, 4, 8)
    unroll_length: int | None = None  # None: the first of `lengths`
    export_tries: tuple[int, ...] | None = None  # lengths fed to the exports; None: 8, 10, 12, T, 2T, 1000
    export_platforms: tuple[str, ...] = ("cpu", "cuda")  # as `rnnkit export` writes them
    modes: tuple[str, ...] = ("dynamic", "static")  # the sweep's modes
    seed: int = 0
    quick: bool = False

    @classmethod
    def quick_preset(cls, **overrides: Any) -> CompareConfig:
        """Two short lengths, few repeats, a short stream: about fifteen training-step
        compilations of the model, most of the time it takes."""
        base = {
            "lengths": (6, 12),
            "repeats": 3,
            "max_speed_s": 2.0,
            "stream": (6, 8, 6, 8),
            "buckets": (8,),
            "unroll": (1, 2),
            "infer_batch_size": 128,
            "export_tries": (8, 1000),
            "quick": True,
        }
        return cls(**{**base, **overrides})

    def validate(self) -> None:
        specs = parse_cells(self.cells)
        del specs
        for name in ("lengths", "stream", "buckets", "unroll"):
            values = getattr(self, name)
            if not values or any(not isinstance(v, int) or isinstance(v, bool) or v < 1 for v in values):
                raise ConfigError(f"--{name.rstrip('s')} must be positive integers; got {list(values)}")
        if not self.modes or set(self.modes) - {"static", "dynamic"}:
            raise ConfigError(f"modes must be 'static' and/or 'dynamic'; got {list(self.modes)}")
        if list(self.lengths) != sorted(set(self.lengths)):
            raise ConfigError(f"--lengths must be increasing and distinct; got {list(self.lengths)}")
        if max(self.stream) > max(self.buckets):
            raise ConfigError(
                f"--bucket sizes must reach the longest --stream length {max(self.stream)}; got {list(self.buckets)}"
            )
        for name in ("features", "num_classes", "batch_size", "infer_batch_size", "repeats"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be a positive integer; got {getattr(self, name)}")
        if not (self.budget_s > 0 and self.budget_mb > 0):
            raise ConfigError(f"--budget-s and --budget-mb must be positive; got {self.budget_s}, {self.budget_mb}")

    @property
    def unroll_at(self) -> int:
        return self.unroll_length if self.unroll_length is not None else self.lengths[0]


def compare_config(quick: bool = False, **options: Any) -> CompareConfig:
    """The sweep `rnnkit compare` runs, validated: the quick preset (`quick`) or the full one,
    with `options` (CompareConfig fields; None keeps the preset's value) over it. A stream
    given without buckets gets power-of-two buckets that reach its longest length."""
    given = {name: value for name, value in options.items() if value is not None}
    config = CompareConfig.quick_preset(**given) if quick else CompareConfig(**given)
    if "stream" in given and "buckets" not in given:
        config = replace(config, buckets=power_of_two_buckets(config.stream))
    config.validate()
    return config


# --- measuring -------------------------------------------------------------------------------


def _rss_bytes() -> int | None:
    """This process's resident set size now (Linux /proc), or None where unavailable."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError, AttributeError):
        return None


def _trim_heap() -> None:
    """Hand freed heap pages back to the OS (glibc's malloc_trim) so the next RSS baseline is
    what is live, not what an earlier compilation left cached; a no-op elsewhere."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


@contextmanager
def _peak_rss_growth() -> Iterator[dict[str, int | None]]:
    """Sample RSS every 2 ms while the block runs; yields a dict whose "growth" is set on exit
    to the peak minus the RSS at entry (bytes), or None where RSS cannot be read."""
    result: dict[str, int | None] = {"growth": None}
    _trim_heap()
    start = _rss_bytes()
    if start is None:
        yield result
        return
    peak = [start]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.002):
            now = _rss_bytes()
            if now is not None and now > peak[0]:
                peak[0] = now

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield result
    finally:
        done.set()
        sampler.join()
        end = _rss_bytes() or start
        result["growth"] = max(peak[0], end) - start


_OP = re.compile(r"\bstablehlo\.[a-z_]+")


def program_stats(text: str) -> tuple[int, int]:
    """(bytes, op count) of a StableHLO module's text: both deterministic for a given program."""
    return len(text.encode("utf-8")), len(_OP.findall(text))


@dataclass
class Compiled:
    trace_s: float
    lower_s: float
    compile_s: float
    rss_growth_bytes: int | None
    hlo_bytes: int
    hlo_ops: int
    temp_bytes: int | None
    argument_bytes: int | None
    output_bytes: int | None
    code_bytes: int | None
    call: Any = field(repr=False)


def aot_compile(jitted: Any, *args: Any) -> Compiled:
    """Trace, lower and compile `jitted` for `args` ahead of time, timing each stage."""
    t0 = time.perf_counter()
    traced = jitted.trace(*args)
    t1 = time.perf_counter()
    lowered = traced.lower()
    t2 = time.perf_counter()
    with _peak_rss_growth() as rss:
        compiled = lowered.compile()
    t3 = time.perf_counter()
    hlo_bytes, hlo_ops = program_stats(lowered.as_text())
    memory = compiled.memory_analysis()

    def mem(name: str) -> int | None:
        return int(getattr(memory, name)) if memory is not None and hasattr(memory, name) else None

    return Compiled(
        trace_s=t1 - t0,
        lower_s=t2 - t1,
        compile_s=t3 - t2,
        rss_growth_bytes=rss["growth"],
        hlo_bytes=hlo_bytes,
        hlo_ops=hlo_ops,
        temp_bytes=mem("temp_size_in_bytes"),
        argument_bytes=mem("argument_size_in_bytes"),
        output_bytes=mem("output_size_in_bytes"),
        code_bytes=mem("generated_code_size_in_bytes"),
        call=compiled,
    )


def median_seconds(run_once: Callable[[], Any], repeats: int, max_s: float) -> float:
    """Median wall time of `run_once` (which must block until its result is ready) after one
    warm-up call; stops early once `max_s` has been spent (at least one timed call)."""
    run_once()
    times: list[float] = []
    spent = 0.0
    while len(times) < repeats and (not times or spent < max_s):
        t0 = time.perf_counter()
        run_once()
        times.append(time.perf_counter() - t0)
        spent += times[-1]
    return statistics.median(times)


# --- the model and its programs --------------------------------------------------------------


def build_model(config: CompareConfig, mode: str, length: int, unroll: int | None = None) -> SequenceClassifier:
    """The compared model; its weights depend only on the seed, not on the mode or length."""
    return build_classifier(
        parse_cells(config.cells),
        input_size=config.features,
        num_classes=config.num_classes,
        num_steps=length,
        mode=mode,
        key=jax.random.key(config.seed),
        unroll=unroll,
    )


class Programs:
    """The training step and inference function of one model, as jitted functions of the
    weights as a flat list (so programs for other lengths or unroll factors, whose model
    pytrees differ in static fields, take the same weights), compiled ahead of time and
    called with donated buffers."""

    def __init__(self, model: SequenceClassifier):

        params, static = eqx.partition(model, eqx.is_inexact_array)
        self.leaves, treedef = jax.tree_util.tree_flatten(params)
        self.optimizer = tf1_adam(0.001)
        optimizer = self.optimizer

        def logits_of(leaves: list[jax.Array], x: jax.Array, lengths: jax.Array | None) -> jax.Array:
            return eqx.combine(jax.tree_util.tree_unflatten(treedef, leaves), static)(x, lengths)

        def train_step(leaves: Any, opt_state: Any, x: jax.Array, y: jax.Array, lengths: Any) -> tuple[Any, ...]:
            def loss_fn(p: Any) -> tuple[jax.Array, jax.Array]:
                logits = logits_of(p, x, lengths)
                return cross_entropy(logits, y), logits

            (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(leaves)
            updates, opt_state = optimizer.update(grads, opt_state, leaves)
            leaves = jax.tree_util.tree_map(lambda p, u: p + u, leaves, updates)
            return leaves, opt_state, loss, logits

        def infer(leaves: Any, x: jax.Array, lengths: Any) -> jax.Array:
            return logits_of(leaves, x, lengths)

        self.train_step = jax.jit(train_step, donate_argnums=(0, 1))
        self.infer = jax.jit(infer)

    def fresh_state(self) -> tuple[Any, Any]:
        leaves = [jnp.copy(v) for v in self.leaves]
        return leaves, self.optimizer.init(leaves)


def _batch(config: CompareConfig, batch: int, length: int, salt: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng([config.seed, length, batch, salt])
    x = rng.random((batch, length, config.features), dtype=np.float32)
    y = rng.integers(0, config.num_classes, batch).astype(np.int32)
    return x, y


# --- the sweep -------------------------------------------------------------------------------


def project(points: list[tuple[int, float]], length: int) -> float | None:
    """A static cost at `length` from (length, cost) points already measured: a power law
    through the last two (cost ~ length^k), or proportional to length from a single point."""
    points = [(n, c) for n, c in points if c is not None and c > 0]
    if not points:
        return None
    if len(points) == 1:
        n, c = points[0]
        return c * length / n
    (n0, c0), (n1, c1) = points[-2:]
    k = max(1.0, math.log(c1 / c0) / math.log(n1 / n0))  # never assume it grows slower than linearly
    return c1 * (length / n1) ** k


def measure_point(config: CompareConfig, mode: str, length: int) -> dict[str, Any]:
    """Every figure for one (mode, length): compile the training step and inference, export,
    then time both."""

    model = build_model(config, mode, length)
    programs = Programs(model)
    params, opt_state = programs.fresh_state()
    x, y = _batch(config, config.batch_size, length, 0)
    train = aot_compile(programs.train_step, params, opt_state, x, y, None)
    xi, _ = _batch(config, config.infer_batch_size, length, 1)
    infer = aot_compile(programs.infer, params, xi, None)
    t0 = time.perf_counter()
    export_bytes = len(artifact_bytes(export_model(model, platforms=config.export_platforms)))
    export_s = time.perf_counter() - t0

    state = [params, opt_state]

    def train_once() -> None:
        state[0], state[1], loss, _ = train.call(state[0], state[1], x, y, None)
        loss.block_until_ready()

    step_s = median_seconds(train_once, config.repeats, config.max_speed_s)
    frozen = programs.leaves

    def infer_once() -> None:
        infer.call(frozen, xi, None).block_until_ready()

    infer_s = median_seconds(infer_once, config.repeats, config.max_speed_s)
    return {
        "mode": mode,
        "length": length,
        "status": "measured",
        "trace_s": train.trace_s,
        "lower_s": train.lower_s,
        "compile_s": train.compile_s,
        "build_s": train.trace_s + train.lower_s + train.compile_s,
        "rss_growth_bytes": train.rss_growth_bytes,
        "temp_bytes": train.temp_bytes,
        "argument_bytes": train.argument_bytes,
        "output_bytes": train.output_bytes,
        "code_bytes": train.code_bytes,
        "hlo_bytes": train.hlo_bytes,
        "hlo_ops": train.hlo_ops,
        "infer_trace_s": infer.trace_s,
        "infer_lower_s": infer.lower_s,
        "infer_compile_s": infer.compile_s,
        "infer_rss_growth_bytes": infer.rss_growth_bytes,
        "infer_temp_bytes": infer.temp_bytes,
        "infer_hlo_bytes": infer.hlo_bytes,
        "infer_hlo_ops": infer.hlo_ops,
        "export_bytes": export_bytes,
        "export_s": export_s,
        "train_step_s": step_s,
        "train_steps_per_s": 1.0 / step_s,
        "train_samples_per_s": config.batch_size / step_s,
        "infer_batch_s": infer_s,
        "infer_samples_per_s": config.infer_batch_size / infer_s,
    }


MEASURED_KEYS = (
    "trace_s",
    "lower_s",
    "compile_s",
    "build_s",
    "rss_growth_bytes",
    "temp_bytes",
    "argument_bytes",
    "output_bytes",
    "code_bytes",
    "hlo_bytes",
    "hlo_ops",
    "infer_trace_s",
    "infer_lower_s",
    "infer_compile_s",
    "infer_rss_growth_bytes",
    "infer_temp_bytes",
    "infer_hlo_bytes",
    "infer_hlo_ops",
    "export_bytes",
    "export_s",
    "train_step_s",
    "train_steps_per_s",
    "train_samples_per_s",
    "infer_batch_s",
    "infer_samples_per_s",
)


def _skipped_row(mode: str, length: int, compile_s: float | None, rss: float | None, reason: str) -> dict[str, Any]:
    """A row with every measured key present and null, so readers of compare.json see one schema."""
    return {
        "mode": mode,
        "length": length,
        "status": "skipped",
        **dict.fromkeys(MEASURED_KEYS),
        "reason": reason,
        "projected_compile_s": compile_s,
        "projected_rss_growth_bytes": rss,
    }


def sweep(config: CompareConfig, log: Callable[[str], None]) -> list[dict[str, Any]]:
    """All (mode, length) rows; static points over budget are skipped with their projection."""
    rows: list[dict[str, Any]] = []
    for mode in config.modes:
        over = False
        for length in config.lengths:
            done = [r for r in rows if r["mode"] == mode and r["status"] == "measured"]
            compile_proj = project([(r["length"], r["compile_s"]) for r in done], length)
            rss_proj = project([(r["length"], r["rss_growth_bytes"]) for r in done], length)
            if mode == "static" and not over:
                too_slow = compile_proj is not None and compile_proj > config.budget_s
                too_big = rss_proj is not None and rss_proj > config.budget_mb * 2**20
                over = too_slow or too_big
            if over:
                reason = (
                    f"projected compile {compile_proj:.0f} s / {_mb(rss_proj)} over the budget "
                    f"({config.budget_s:.0f} s, {config.budget_mb:.0f} MB)"
                )
                log(f"{mode:7s} T={length:4d}: skipped, {reason}")
                rows.append(_skipped_row(mode, length, compile_proj, rss_proj, reason))
                continue
            row = measure_point(config, mode, length)
            row["projected_compile_s"] = compile_proj
            row["projected_rss_growth_bytes"] = rss_proj
            log(
                f"{mode:7s} T={length:4d}: build {row['build_s']:.2f} s, {row['hlo_ops']} ops, "
                f"{row['train_steps_per_s']:.1f} train steps/s, {row['infer_samples_per_s']:.0f} inference samples/s"
            )
            rows.append(row)
    return rows


def _mb(value: float | None) -> str:
    return "? MB" if value is None else f"{value / 2**20:.0f} MB"


# --- variable lengths ------------------------------------------------------------------------


def power_of_two_buckets(stream: tuple[int, ...], smallest: int = 16) -> tuple[int, ...]:
    """Powers of two from `smallest` up to the first that holds the longest length."""
    sizes = [smallest]
    while sizes[-1] < max(stream):
        sizes.append(sizes[-1] * 2)
    return tuple(sizes)


def bucket_of(length: int, buckets: tuple[int, ...]) -> int:
    """The smallest bucket size that holds `length`."""
    for size in sorted(buckets):
        if size >= length:
            return size
    raise ConfigError(f"--bucket sizes must reach the longest length {length}; got {list(buckets)}")


def run_stream(
    config: CompareConfig, mode: str, bucketed: bool, static_compile_estimate: Callable[[int], float | None]
) -> dict[str, Any]:
    """Train on the stream of lengths (one batch each) from the same initial weights: each new
    length (or bucket) is a new program to compile. Returns compilations, wall time, and each
    step's loss and logits (the forward pass the gradients came from)."""
    shapes = [bucket_of(n, config.buckets) if bucketed else n for n in config.stream]
    distinct = sorted(set(shapes))
    if mode == "static":
        estimate = [static_compile_estimate(n) for n in distinct]
        total = sum(e for e in estimate if e is not None)
        if total > config.budget_s:
            return {
                "mode": mode,
                "bucketed": bucketed,
                "status": "skipped",
                "compilations": len(distinct),
                "projected_compile_s": total,
                "reason": f"projected {total:.0f} s of compilation, over the {config.budget_s:.0f} s budget",
            }
    programs: dict[int, Any] = {}
    base = build_model(config, mode, distinct[0])
    params, opt_state = Programs(base).fresh_state()
    losses, logits = [], []
    compile_s = 0.0
    t0 = time.perf_counter()
    for k, (length, shape) in enumerate(zip(config.stream, shapes, strict=True)):
        x, y = _batch(config, config.batch_size, length, 100 + k)
        # Both runs pass sequence_length (a real variable-length batch needs it anyway), so the
        # only difference between them is the padding: the check below is that padding is inert.
        lengths = np.full((len(x),), length, np.int32)
        if bucketed and shape > length:
            x = np.concatenate([x, np.zeros((len(x), shape - length, config.features), np.float32)], axis=1)
        if shape not in programs:
            c0 = time.perf_counter()
            prog = Programs(build_model(config, mode, shape))
            programs[shape] = prog.train_step.trace(params, opt_state, x, y, lengths).lower().compile()
            compile_s += time.perf_counter() - c0
        params, opt_state, loss, batch_logits = programs[shape](params, opt_state, x, y, lengths)
        losses.append(float(loss))
        logits.append(np.asarray(batch_logits))
    wall = time.perf_counter() - t0
    return {
        "mode": mode,
        "bucketed": bucketed,
        "status": "measured",
        "compilations": len(programs),
        "shapes": shapes,
        "compile_s": compile_s,
        "wall_s": wall,
        "losses": losses,
        "_logits": logits,  # compared, then dropped before writing JSON
    }


def stream_section(config: CompareConfig, rows: list[dict[str, Any]], log: Callable[[str], None]) -> dict[str, Any]:
    static_rows = [r for r in rows if r["mode"] == "static" and r["status"] == "measured"]

    def estimate(length: int) -> float | None:
        return project([(r["length"], r["compile_s"]) for r in static_rows], length) if static_rows else None

    runs = []
    for mode in ("dynamic", "static"):
        pair = {}
        for bucketed in (False, True):
            result = run_stream(config, mode, bucketed, estimate)
            kind = "bucketed" if bucketed else "exact   "
            pair[bucketed] = result
            if result["status"] == "measured":
                log(f"stream {mode:7s} {kind}: {result['compilations']} compilations, {result['wall_s']:.2f} s")
            else:
                log(f"stream {mode:7s} {kind}: skipped, {result['reason']}")
        exact, bucket = pair[False], pair[True]
        if exact["status"] == bucket["status"] == "measured":
            diffs = [float(np.max(np.abs(a - b))) for a, b in zip(exact["_logits"], bucket["_logits"], strict=True)]
            identical = all(np.array_equal(a, b) for a, b in zip(exact["_logits"], bucket["_logits"], strict=True))
            loss_diff = max(abs(a - b) for a, b in zip(exact["losses"], bucket["losses"], strict=True))
            for r in (exact, bucket):
                r["logits_identical_to_exact"] = identical
                r["max_abs_logit_diff_vs_exact"] = max(diffs)
                r["max_abs_loss_diff_vs_exact"] = loss_diff
        runs.extend([exact, bucket])
    return {"lengths": list(config.stream), "buckets": list(config.buckets), "runs": runs}


# --- unroll ----------------------------------------------------------------------------------


def unroll_section(config: CompareConfig, log: Callable[[str], None]) -> dict[str, Any]:
    length = config.unroll_at
    x, y = _batch(config, config.batch_size, length, 7)
    results = []
    for k in config.unroll:
        programs = Programs(build_model(config, "dynamic", length, unroll=k))
        params, opt_state = programs.fresh_state()
        compiled = aot_compile(programs.train_step, params, opt_state, x, y, None)
        state = [params, opt_state]

        def once(compiled: Compiled = compiled, state: list[Any] = state) -> None:
            state[0], state[1], loss, _ = compiled.call(state[0], state[1], x, y, None)
            loss.block_until_ready()

        step_s = median_seconds(once, config.repeats, config.max_speed_s)
        results.append(
            {
                "unroll": k,
                "build_s": compiled.trace_s + compiled.lower_s + compiled.compile_s,
                "compile_s": compiled.compile_s,
                "hlo_ops": compiled.hlo_ops,
                "train_step_s": step_s,
                "train_samples_per_s": config.batch_size / step_s,
            }
        )
        log(f"unroll={k}: build {results[-1]['build_s']:.2f} s, {config.batch_size / step_s:.0f} samples/s")
    fastest = min(results, key=lambda r: r["train_step_s"])["unroll"]
    return {"length": length, "results": results, "fastest": fastest}


# --- the seed's claims 2 and 6: lengths an export accepts, states returned -------------------


def export_lengths_section(config: CompareConfig) -> dict[str, Any]:
    """Export both modes at the first length, reload from bytes, and feed other lengths."""
    from jax import export as jax_export

    length = config.lengths[0]
    tries = sorted(set(config.export_tries or (8, 10, 12, length, 2 * length, 1000)) | {length})
    out: dict[str, Any] = {"built_for": length, "tried": tries}
    for mode in ("static", "dynamic"):
        model = build_model(config, mode, length)
        data = artifact_bytes(export_model(model, platforms=(jax.default_backend(),)))
        exported = jax_export.deserialize(bytearray(data))  # from bytes, as a user's load would
        in_aval = exported.in_avals[0]
        time_steps = in_aval.shape[1] if isinstance(in_aval.shape[1], int) else None
        meta = {"mode": mode, "time_steps": time_steps, "input": {"shape": ["batch", time_steps, config.features]}}
        loaded = ExportedModel(exported, meta, Path(f"{mode}.rnnx"))
        # weights closed over, as in the export: the same program, so the same bits
        exported_model = portable(model)
        reference = jax.jit(lambda v, m=exported_model: m(v))
        results = []
        for n in tries:
            x, _ = _batch(config, 4, n, 3)
            try:
                got = loaded(x)
                want = np.asarray(reference(jnp.asarray(x)))
                results.append(
                    {
                        "length": n,
                        "accepted": True,
                        "equals_in_process": bool(np.array_equal(got, want)),
                    }
                )
            except ConfigError as err:
                results.append({"length": n, "accepted": False, "error": str(err)})
        out[mode] = results
    return out


def states_section(config: CompareConfig) -> dict[str, Any]:
    """The seed: dynamic_rnn holds only the last state. rnnkit's `return_all_states=True`
    returns every step's; check the state after step t against a run over the first t steps."""

    length = config.lengths[0]
    model = build_model(config, "dynamic", length)
    x, _ = _batch(config, 4, length, 5)
    _, final, states = dynamic_rnn(model.cell, jnp.asarray(x), return_all_states=True)
    t = max(1, length // 2)
    _, state_t = dynamic_rnn(model.cell, jnp.asarray(x[:, :t]))
    at_t = jax.tree_util.tree_map(lambda s: s[:, t - 1], states)
    at_end = jax.tree_util.tree_map(lambda s: s[:, -1], states)

    def diff(a: Any, b: Any) -> float:
        return max(float(jnp.max(jnp.abs(u - v))) for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True))

    return {
        "length": length,
        "checked_step": t,
        "max_abs_diff_at_step": diff(at_t, state_t),
        "max_abs_diff_final": diff(at_end, final),
        "state_shapes": [list(s.shape) for s in jax.tree.leaves(states)],
    }


# --- everything ------------------------------------------------------------------------------


def environment() -> dict[str, Any]:
    import jaxlib

    device = jax.devices()[0]
    return {
        "rnnkit": __version__,
        "jax": jax.__version__,
        "jaxlib": jaxlib.__version__,
        "backend": jax.default_backend(),
        "device": getattr(device, "device_kind", str(device)),
        "device_count": jax.device_count(),
        "python": platform.python_version(),
        "machine": platform.machine(),
        "system": platform.system(),
        "cpu_count": os.cpu_count(),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def _warm_up(config: CompareConfig) -> None:
    """Compile one small program first, so XLA's one-time start-up (its compiler's own memory,
    thread pools) is not charged to the first point measured."""
    small = CompareConfig(cells="lstm:2", features=config.features, num_classes=config.num_classes)
    model = build_model(small, "dynamic", 2)
    programs = Programs(model)
    params, opt_state = programs.fresh_state()
    x, y = _batch(config, 2, 2, 99)
    programs.train_step.trace(params, opt_state, x, y, None).lower().compile()


def run_compare(config: CompareConfig, log: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """Every measurement; the dict `compare.json` holds. JAX's persistent compilation cache is
    off meanwhile: with one set (`JAX_COMPILATION_CACHE_DIR`), a second run would time loading
    programs from disk as their build."""
    from jax.experimental.compilation_cache import compilation_cache

    cache_was_on = jax.config.jax_enable_compilation_cache
    jax.config.update("jax_enable_compilation_cache", False)
    compilation_cache.reset_cache()  # JAX decides once whether to use its cache, then keeps to it
    try:
        return _run_compare(config, log)
    finally:
        jax.config.update("jax_enable_compilation_cache", cache_was_on)
        compilation_cache.reset_cache()


def _run_compare(config: CompareConfig, log: Callable[[str], None]) -> dict[str, Any]:
    config.validate()
    t0 = time.perf_counter()
    _warm_up(config)
    sections: dict[str, float] = {}

    def timed(name: str, fn: Callable[[], Any]) -> Any:
        start = time.perf_counter()
        value = fn()
        sections[name] = time.perf_counter() - start
        return value

    rows = timed("sweep", lambda: sweep(config, log))
    stream = timed("variable_lengths", lambda: stream_section(config, rows, log))
    unroll = timed("unroll", lambda: unroll_section(config, log))
    lengths = timed("export_lengths", lambda: export_lengths_section(config))
    states = timed("states", lambda: states_section(config))
    for run in stream["runs"]:
        run.pop("_logits", None)
    result = {
        "config": {**asdict(config), "unroll_length": config.unroll_at},
        "environment": environment(),
        "rows": rows,
        "variable_lengths": stream,
        "unroll": unroll,
        "export_lengths": lengths,
        "states": states,
        "wall_s": time.perf_counter() - t0,
        "section_s": sections,
    }
    from rnnkit.workflows.compare_report import verdicts

    result["claims"] = verdicts(result)
    return result
