"""`rnnkit bench`: the seed's model, trained and run by rnnkit and by every peer installed here.

One run measures, for each row (a framework's way of running LSTM(128) -> GRU(256) ->
dense(10), see `bench_rows.py` and `bench_peers.py`) and each workload (training or inference,
batch 128 or 1024, 28 steps x 28 features or 784 steps x 1 feature):

- time to first step: building the model (and the graph, for TF1) plus the first step, which
  includes any compilation;
- steady-state speed: after warm-up, individual steps timed until both `repeats` steps and
  `min_time_s` seconds are reached; the median step time gives samples/s;
- the fraction of this machine's float32 matmul peak that speed reaches, with the FLOP count
  stated in `flops_per_sample` (measured in the same run: the best of XLA and NumPy on a large
  square matmul).

Each row runs each workload in its own subprocess (`python -m rnnkit.workflows.bench --child
...`): frameworks keep their own thread pools and allocators, TF1 and Keras-on-JAX can't share a
process, nothing compiled for one workload is reused by the next, and a workload that crashes
or hangs is recorded as an error instead of ending the run.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from rnnkit._version import __version__
from rnnkit.errors import ConfigError
from rnnkit.workflows.bench_rows import (
    GRU_UNITS,
    LSTM_UNITS,
    NUM_CLASSES,
    TASKS,
    UNROLLED_MAX_STEPS,
    Row,
    Runner,
    Workload,
)

# The default sweep. Training at batch 1024 over 784 steps takes minutes per step on two CPU
# cores for every row, so it is left to --full.
DEFAULT_WORKLOADS = (
    Workload("train", 128, 28, 28),
    Workload("train", 1024, 28, 28),
    Workload("infer", 128, 28, 28),
    Workload("infer", 1024, 28, 28),
    Workload("train", 128, 784, 1),
    Workload("infer", 128, 784, 1),
    Workload("infer", 1024, 784, 1),
)
FULL_EXTRA = (Workload("train", 1024, 784, 1),)
GPU_EXTRA = (Workload("infer", 4096, 28, 28),)
QUICK_WORKLOADS = (Workload("train", 128, 28, 28), Workload("infer", 1024, 28, 28))


@dataclass(frozen=True)
class BenchConfig:
    workloads: tuple[Workload, ...] = DEFAULT_WORKLOADS
    rows: tuple[str, ...] | None = None  # None: every row
    repeats: int = 5  # at least this many timed steps per figure ...
    min_time_s: float = 2.0  # ... and at least this long
    max_steps: int = 200  # never more timed steps than this
    warmup: int = 1  # untimed steps after the first
    seed: int = 0
    timeout_s: float = 1200.0  # per row and workload; recorded as an error past it
    # Rounds over all rows, alternating their order; each figure is the median round's. On a
    # shared machine whose speed drifts by 15% or more between minutes, one round puts the
    # drift into the ratios between rows; several interleaved rounds spread it over all rows.
    rounds: int = 1

    @classmethod
    def quick_preset(cls, **overrides: Any) -> BenchConfig:
        return cls(**{"workloads": QUICK_WORKLOADS, "repeats": 3, "min_time_s": 0.3, **overrides})

    def validate(self) -> None:
        known = {row.name for row in all_rows()}
        for name in self.rows or ():
            if name not in known:
                raise ConfigError(f"--rows: unknown row {name!r}; expected some of {', '.join(sorted(known))}")
        if not self.workloads:
            raise ConfigError("workloads must not be empty")
        for w in self.workloads:
            if w.task not in TASKS:
                raise ConfigError(f"workload task must be one of {', '.join(TASKS)}; got {w.task!r}")
            if min(w.batch, w.steps, w.features) < 1:
                raise ConfigError(f"workload sizes must be positive; got {w.key}")
        if self.repeats < 1 or self.max_steps < self.repeats:
            raise ConfigError(f"repeats must be in [1, max_steps={self.max_steps}]; got {self.repeats}")
        if self.rounds < 1:
            raise ConfigError(f"rounds must be at least 1; got {self.rounds}")


# --- what is counted -------------------------------------------------------------------------


def flops_per_sample(w: Workload) -> int:
    """Matmul FLOPs (2 per multiply-add) per sample: what the fraction of peak is measured in.

    Forward, per step: the LSTM's [x, h] @ kernel, (F + 128) x 512; the GRU's gates,
    (128 + 256) x 512, and candidate, (128 + 256) x 256 (the reset-after GRU of PyTorch and
    Keras multiplies the same sizes, split differently). Once: the head, 256 x 10. Training
    counts 3x the forward: the backward pass has two matmuls for each forward one (the
    gradients of the inputs and of the weights). Elementwise work is not counted."""
    lstm = (w.features + LSTM_UNITS) * 4 * LSTM_UNITS
    gru = (LSTM_UNITS + GRU_UNITS) * 3 * GRU_UNITS
    forward = 2 * ((lstm + gru) * w.steps + GRU_UNITS * NUM_CLASSES)
    return 3 * forward if w.task == "train" else forward


def matmul_peak(size: int = 2048, seconds: float = 1.0) -> dict[str, Any]:
    """This machine's float32 matmul rate, GFLOP/s: the best of XLA (on JAX's default device)
    and NumPy's BLAS on [size, size] x [size, size], each repeated for about `seconds`."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    def rate(fn: Callable[[], Any]) -> float:
        fn()
        best, spent = float("inf"), 0.0
        while spent < seconds:
            t0 = time.perf_counter()
            fn()
            dt = time.perf_counter() - t0
            best, spent = min(best, dt), spent + dt
        return 2 * size**3 / best / 1e9

    a = jnp.ones((size, size), jnp.float32)
    matmul = jax.jit(jnp.matmul)
    rates = {"xla": rate(lambda: matmul(a, a).block_until_ready())}
    if jax.default_backend() == "cpu":
        an = np.ones((size, size), np.float32)
        rates["numpy"] = rate(lambda: an @ an)
    best = max(rates, key=rates.__getitem__)
    return {"gflops": rates[best], "by": best, "rates": rates, "size": size, "device": _device_name()}


# --- rnnkit's rows ---------------------------------------------------------------------------


def _forget_compiled() -> None:
    import jax

    jax.clear_caches()


def _rnnkit_versions() -> dict[str, str]:
    import jax

    return {"rnnkit": __version__, "jax": jax.__version__}


def _same_as_auto(implementation: str) -> str | None:
    """The forced-implementation rows run only where auto picks the other one."""
    import jax

    from rnnkit._rnn import auto_implementation

    auto = auto_implementation()
    if implementation == auto:
        return f"the same program as rnnkit-dynamic here (auto is {auto} on {jax.default_backend()})"
    return None


def _native_skip() -> str | None:
    import jax

    from rnnkit import _native

    if jax.default_backend() != "cpu":
        return "the native kernel runs on CPU only"
    reason = _native.unavailable_reason()
    return f"rnnkit's native CPU kernel can't run: {reason}" if reason else _same_as_auto("native")


def _tf32_skip() -> str | None:
    import jax

    if jax.default_backend() == "cpu":
        return (
            "TF32 is a GPU format: on CPU JAX's default precision is full float32, the same program as rnnkit-dynamic"
        )
    return None


def _static_skip(w: Workload) -> str | None:
    if w.steps > UNROLLED_MAX_STEPS:
        return (
            f"static programs are built up to {UNROLLED_MAX_STEPS} steps: compile time grows faster than "
            f"linearly (see rnnkit compare), {w.steps} steps would take many minutes"
        )
    return None


class _RnnkitRunner:
    def __init__(
        self,
        w: Workload,
        seed: int,
        mode: str,
        implementation: str = "auto",
        unroll: int | None = None,
        precision: Any = "highest",
    ):
        import equinox as eqx
        import jax

        from rnnkit._rnn import auto_implementation
        from rnnkit.models.classifier import build_classifier, parse_cells
        from rnnkit.runs import tf1_adam
        from rnnkit.workflows.train_step import make_predict, make_train_step

        # What `auto` resolved to in this process, recorded with the figures: a native kernel
        # that went stale or failed to load mid-run would otherwise pass as rnnkit-dynamic.
        self.implementation = None if mode == "static" else implementation
        if self.implementation == "auto":
            self.implementation = auto_implementation()

        model = build_classifier(
            parse_cells(f"lstm:{LSTM_UNITS},gru:{GRU_UNITS}"),
            input_size=w.features,
            num_classes=NUM_CLASSES,
            num_steps=w.steps,
            mode=mode,
            key=jax.random.key(seed),
            implementation=implementation,
            unroll=unroll,
            precision=precision,
        )
        self.params, static = eqx.partition(model, eqx.is_array)
        x, y = w.batch_arrays(seed)
        self.x, self.y = jax.device_put(x), jax.device_put(y)
        self.task = w.task
        if w.task == "train":
            optimizer = tf1_adam(1e-3)
            self.opt_state = optimizer.init(self.params)
            self.train_step = make_train_step(static, optimizer)
            self.key = jax.random.key(seed)
        else:
            self.predict = make_predict(static)

    def step(self) -> None:
        if self.task == "train":
            state = (self.params, self.opt_state)
            self.params, self.opt_state, loss, _ = self.train_step(*state, self.x, self.y, self.key)
            loss.block_until_ready()
        else:
            self.predict(self.params, self.x).block_until_ready()


def _rnnkit_row(name: str, label: str, mode: str, implementation: str, precision: Any = "highest", **more: Any) -> Row:
    return Row(
        name=name,
        label=label,
        requires=("jax",),
        build=lambda w, seed: _RnnkitRunner(w, seed, mode, implementation, precision=precision),
        versions=_rnnkit_versions,
        forget_compiled=_forget_compiled,
        **more,
    )


RNNKIT_ROWS = (
    _rnnkit_row(
        "rnnkit-dynamic",
        "rnnkit dynamic_rnn (TF1 cells, implementation='auto')",
        "dynamic",
        "auto",
        note="rnnkit train's own step: TF1's Adam, donated buffers; auto is native on CPU, fused on GPU",
    ),
    _rnnkit_row(
        "rnnkit-dynamic-native",
        "rnnkit dynamic_rnn, implementation='native'",
        "dynamic",
        "native",
        skip=lambda w: _native_skip(),
        note="each layer's loop and gradients in rnnkit's C++ kernel (OpenBLAS sgemm)",
    ),
    _rnnkit_row(
        "rnnkit-dynamic-fused",
        "rnnkit dynamic_rnn, implementation='fused'",
        "dynamic",
        "fused",
        skip=lambda w: _same_as_auto("fused"),
        note="hoisted input projections, hand-written backward pass",
    ),
    _rnnkit_row(
        "rnnkit-dynamic-fused-stack",
        "rnnkit dynamic_rnn, implementation='fused_stack'",
        "dynamic",
        "fused_stack",
        note="fused with one loop over time for the whole stack (each iteration steps both layers)",
    ),
    _rnnkit_row(
        "rnnkit-dynamic-per-step",
        "rnnkit dynamic_rnn, implementation='per_step'",
        "dynamic",
        "per_step",
        skip=lambda w: _same_as_auto("per_step"),
        note="the cell's own step in lax.scan, autodiff's backward pass",
    ),
    _rnnkit_row("rnnkit-static", "rnnkit static_rnn (TF1 cells, unrolled)", "static", "auto", skip=_static_skip),
    _rnnkit_row(
        "rnnkit-dynamic-tf32",
        "rnnkit dynamic_rnn, JAX's default matmul precision (TF32 on NVIDIA GPUs)",
        "dynamic",
        "auto",
        precision=None,
        skip=lambda w: _tf32_skip(),
        note=(
            "every matmul at JAX's default precision instead of 'highest': float32 inputs multiplied in TF32 on "
            "NVIDIA GPUs since Ampere, as PyTorch's cuDNN RNNs do by default (torch.backends.cudnn.allow_tf32); "
            "not TF1's numbers"
        ),
    ),
)


def all_rows() -> tuple[Row, ...]:
    from rnnkit.workflows.bench_peers import PEER_ROWS

    return RNNKIT_ROWS + tuple(PEER_ROWS)


def find_row(name: str) -> Row:
    for row in all_rows():
        if row.name == name:
            return row
    raise ConfigError(f"unknown bench row {name!r}")


# --- measuring one row (in the child process) ------------------------------------------------


def _first_step(runner_factory: Callable[[], Runner]) -> tuple[Runner, float]:
    t0 = time.perf_counter()
    runner = runner_factory()
    runner.step()
    return runner, time.perf_counter() - t0


def measure(
    runner_factory: Callable[[], Runner],
    w: Workload,
    config: BenchConfig,
    forget_compiled: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Time to first step, then the timed steps of one workload. With `forget_compiled`, also
    the time to first step of a second build once in-process caches are cleared (a warm
    on-disk compilation cache)."""
    runner, first_step_s = _first_step(runner_factory)
    warm: dict[str, float] = {}
    if forget_compiled is not None:
        forget_compiled()
        runner, warm["first_step_warm_cache_s"] = _first_step(runner_factory)
    for _ in range(config.warmup):
        runner.step()
    times: list[float] = []
    started = time.perf_counter()
    while len(times) < config.max_steps and (
        len(times) < config.repeats or time.perf_counter() - started < config.min_time_s
    ):
        t = time.perf_counter()
        runner.step()
        times.append(time.perf_counter() - t)
    step_s = statistics.median(times)
    taken = getattr(runner, "implementation", None)
    math_mode = getattr(runner, "math_mode", None)  # e.g. whether cuDNN was allowed TF32, as the runner ran
    return {
        "status": "ok",
        **({"implementation": taken} if taken else {}),
        **({"math_mode": math_mode} if math_mode else {}),
        "first_step_s": first_step_s,
        **warm,
        "step_s": step_s,
        "steps_timed": len(times),
        "step_s_min": min(times),
        "samples_per_s": w.batch / step_s,
    }


def run_row(row: Row, config: BenchConfig) -> dict[str, Any]:
    """Every workload of one row, in this process. Skips and errors are results, not exceptions."""
    results: dict[str, Any] = {"row": row.name, "label": row.label, "note": row.note, "workloads": {}}
    missing = row.missing()
    if missing is None:
        try:
            results["versions"] = row.versions()
        except Exception as err:  # a broken install: report it as this row's error
            missing = f"could not import: {type(err).__name__}: {err}"
    for w in config.workloads:
        reason = missing or row.skip(w)
        if reason is not None:
            results["workloads"][w.key] = {"status": "skipped", "reason": reason}
            continue
        try:
            results["workloads"][w.key] = measure(lambda w=w: row.build(w, config.seed), w, config, row.forget_compiled)
        except Exception as err:  # one workload failing must not lose the others
            message = f"{type(err).__name__}: {err}".splitlines()[0][:300]
            results["workloads"][w.key] = {"status": "error", "reason": message}
    return results


def _child(argv: list[str]) -> int:
    """`python -m rnnkit.workflows.bench --child ROW CONFIG_JSON`: one row, its result as JSON on
    the last line of stdout."""
    from rnnkit._host import tune_allocator

    name, config_json = argv
    config = config_from_json(config_json)
    row = find_row(name)
    # What `rnnkit train` does for itself, done for every row alike, before any framework
    # starts its threads: XLA:CPU (rnnkit, Keras on JAX, Flax) and PyTorch's CPU tensors take
    # their large buffers from glibc's malloc, and a process setting that spares rnnkit's
    # steps their page faults would otherwise spare only rnnkit's (rnnkit/_host.py).
    allocator_tuned = tune_allocator()
    cache_dir = None
    if row.name.startswith("rnnkit-"):
        import tempfile

        from rnnkit._host import use_compile_cache

        # A compilation cache of its own, empty, whatever the user's settings: the first step
        # is a cold compile, and the warm-cache figure (forget_compiled) reads what it stored.
        cache_dir = tempfile.mkdtemp(prefix="rnnkit-bench-xla-")
        use_compile_cache(cache_dir)
    try:
        result = run_row(row, config)
    finally:
        if cache_dir is not None:
            import shutil

            shutil.rmtree(cache_dir, ignore_errors=True)
    for measured in result["workloads"].values():
        if measured.get("status") == "ok":
            measured["allocator_tuned"] = allocator_tuned  # kept with each figure in bench.json
    sys.stdout.write("\n" + json.dumps(result) + "\n")
    sys.stdout.flush()
    return 0


def config_to_json(config: BenchConfig) -> str:
    return json.dumps({**asdict(config), "workloads": [asdict(w) for w in config.workloads]})


def config_from_json(text: str) -> BenchConfig:
    data = json.loads(text)
    data["workloads"] = tuple(Workload(**w) for w in data["workloads"])
    data["rows"] = None if data["rows"] is None else tuple(data["rows"])
    return BenchConfig(**data)


def _workload_in_subprocess(row: Row, config: BenchConfig) -> dict[str, Any]:
    """`config` holds one workload; its result, or the error that ended the process."""
    cmd = [sys.executable, "-m", "rnnkit.workflows.bench", "--child", row.name, config_to_json(config)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=config.timeout_s, env=env, check=False)
    except subprocess.TimeoutExpired:
        return {"status": "error", "reason": f"timed out after {config.timeout_s:.0f} s"}
    lines = proc.stdout.strip().splitlines()
    if proc.returncode == 0 and lines:
        try:
            return json.loads(lines[-1])
        except json.JSONDecodeError:
            pass
    tail = (proc.stderr.strip().splitlines() or ["no output"])[-1][:300]
    return {"status": "error", "reason": f"process exited with status {proc.returncode}: {tail}"}


def _row_in_subprocesses(row: Row, config: BenchConfig) -> dict[str, Any]:
    """Each workload in a fresh process: a crash or timeout loses only that workload, and no
    framework carries compiled programs or warmed caches from one workload to the next."""
    result: dict[str, Any] = {"row": row.name, "label": row.label, "note": row.note, "workloads": {}}
    missing = row.missing()
    for w in config.workloads:
        if missing is not None:
            result["workloads"][w.key] = {"status": "skipped", "reason": missing}
            continue
        child = _workload_in_subprocess(row, replace(config, workloads=(w,)))
        if "workloads" in child:  # a full row result from the child
            result.setdefault("versions", child.get("versions"))
            child = child["workloads"][w.key]
        result["workloads"][w.key] = child
    return result


# --- the whole run ---------------------------------------------------------------------------


def _device_name() -> str:
    import jax

    if jax.default_backend() != "cpu":
        return str(getattr(jax.devices()[0], "device_kind", jax.devices()[0]))
    return _cpu_model()


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment() -> dict[str, Any]:
    """compare's record of the machine and versions, with the CPU's model name as the device on CPU."""
    from rnnkit.workflows import compare

    return {**compare.environment(), "device": _device_name(), "cpu": _cpu_model()}


def default_workloads(full: bool = False) -> tuple[Workload, ...]:
    import jax

    extra = (FULL_EXTRA if full else ()) + (GPU_EXTRA if jax.default_backend() != "cpu" else ())
    return DEFAULT_WORKLOADS + extra


def run_bench(
    config: BenchConfig,
    log: Callable[[str], None] = lambda _: None,
    run_one: Callable[[Row, BenchConfig], dict[str, Any]] = _row_in_subprocesses,
) -> dict[str, Any]:
    """Every row on every workload; the dict `bench.json` holds."""
    config.validate()
    # Rows run (and are tabled) in the order asked for, each once; by default, all in all_rows()'s order.
    rows = list(all_rows()) if config.rows is None else [find_row(name) for name in dict.fromkeys(config.rows)]
    log("measuring the float32 matmul peak")
    peak = matmul_peak()
    log(f"  {peak['gflops']:.0f} GFLOP/s ({peak['by']}, {peak['size']}^3)")
    by_round: dict[str, list[dict[str, Any]]] = {row.name: [] for row in rows}
    for k in range(config.rounds):
        for row in rows if k % 2 == 0 else rows[::-1]:  # alternate: no row always runs first
            log(f"{row.name}: {row.label}" + (f" (round {k + 1} of {config.rounds})" if config.rounds > 1 else ""))
            result = run_one(row, config)
            for key, r in result["workloads"].items():
                if r["status"] == "ok":
                    how = f" ({r['implementation']})" if "implementation" in r else ""
                    log(f"  {key}: {r['samples_per_s']:,.0f} samples/s{how}, first step {r['first_step_s']:.2f} s")
                else:
                    log(f"  {key}: {r['status']}: {r['reason']}")
            by_round[row.name].append(result)
    results = []
    for row in rows:
        result = median_round(by_round[row.name])
        for key, r in result["workloads"].items():
            if r["status"] == "ok":
                w = next(w for w in config.workloads if w.key == key)
                r["gflops"] = r["samples_per_s"] * flops_per_sample(w) / 1e9
                r["fraction_of_peak"] = r["gflops"] / peak["gflops"]
        results.append(result)
    return {
        "environment": environment(),
        "config": json.loads(config_to_json(config)),
        "peak": peak,
        "flops_per_sample": {w.key: flops_per_sample(w) for w in config.workloads},
        "rows": results,
        "ratios": ratios(results, config.workloads),
    }


def median_round(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """One row's result from its rounds: per workload, the round with the median samples/s
    (the lower median for an even count) among those that ran, with every round's samples/s
    beside it; where no round ran, the first round's skip or error."""
    merged = {**rounds[0], "workloads": {}}
    for key, first in rounds[0]["workloads"].items():
        ok = sorted(
            (r["workloads"][key] for r in rounds if r["workloads"][key]["status"] == "ok"),
            key=lambda r: r["samples_per_s"],
        )
        if not ok:
            merged["workloads"][key] = first
            continue
        chosen = dict(ok[(len(ok) - 1) // 2])
        if len(rounds) > 1:
            chosen["rounds_samples_per_s"] = [
                r["workloads"][key].get("samples_per_s") for r in rounds
            ]  # in run order; None where a round did not run
        merged["workloads"][key] = chosen
    return merged


def ratios(results: list[dict[str, Any]], workloads: tuple[Workload, ...]) -> dict[str, dict[str, float]]:
    """rnnkit-dynamic's samples/s over each other row's, per workload (where both ran)."""
    by_row = {r["row"]: r["workloads"] for r in results}
    ours = by_row.get("rnnkit-dynamic", {})
    out: dict[str, dict[str, float]] = {}
    for w in workloads:
        mine = ours.get(w.key, {})
        if mine.get("status") != "ok":
            continue
        out[w.key] = {
            name: mine["samples_per_s"] / res[w.key]["samples_per_s"]
            for name, res in by_row.items()
            if name != "rnnkit-dynamic" and res.get(w.key, {}).get("status") == "ok"
        }
    return out


# --- output ----------------------------------------------------------------------------------


def cell_text(r: dict[str, Any]) -> str:
    """One workload's result in a table: samples/s, or why there is none."""
    if r["status"] == "ok":
        return f"{r['samples_per_s']:,.0f}"
    return "skipped" if r["status"] == "skipped" else "error"


def markdown_table(result: dict[str, Any]) -> str:
    """Samples/s per row and workload, rnnkit-dynamic's ratio to the best peer, and time to
    first step (training, the first workload that has it)."""
    keys = list(result["flops_per_sample"])
    first_key = next((k for k in keys if k.startswith("train")), keys[0])
    head = ["row", *keys, f"first step, s ({first_key})", "same, warm compile cache"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in result["rows"]:
        cells = [cell_text(row["workloads"].get(k, {"status": "skipped"})) for k in keys]
        first = row["workloads"].get(first_key, {})
        cells.append(f"{first['first_step_s']:.1f}" if first.get("status") == "ok" else "")
        cells.append(f"{first['first_step_warm_cache_s']:.1f}" if "first_step_warm_cache_s" in first else "")
        lines.append(f"| {row['row']} | " + " | ".join(cells) + " |")
    peak = result["peak"]
    fractions = []
    for row in result["rows"]:
        r = row["workloads"].get(keys[0], {})
        if r.get("status") == "ok":
            fractions.append(f"{row['row']} {100 * r['fraction_of_peak']:.0f}%")
    tuned = {
        r.get("allocator_tuned") for row in result["rows"] for r in row["workloads"].values() if r.get("status") == "ok"
    }
    allocator = (
        " Every row ran with glibc's allocator keeping freed memory, as `rnnkit train` sets it."
        if tuned == {True}
        else ""
    )
    lines.append("")
    lines.append(
        f"samples/s, median step after warm-up.{allocator} Matmul peak {peak['gflops']:.0f} GFLOP/s ({peak['by']}); "
        f"share of it at {keys[0]} ({result['flops_per_sample'][keys[0]] / 1e6:.1f} MFLOP/sample): "
        + ", ".join(fractions)
    )
    return "\n".join(lines) + "\n"


def plot(result: dict[str, Any], path: Path) -> None:
    """Grouped bars: samples/s (log scale) per workload, one bar per row that ran."""
    from rnnkit.workflows.plots import pyplot, save_png

    plt = pyplot()
    keys = list(result["flops_per_sample"])
    rows = [r for r in result["rows"] if any(v["status"] == "ok" for v in r["workloads"].values())]
    fig, ax = plt.subplots(figsize=(max(8, 1.6 * len(keys)), 5))
    width = 0.8 / max(1, len(rows))
    for i, row in enumerate(rows):
        xs, ys = [], []
        for k, key in enumerate(keys):
            r = row["workloads"].get(key, {})
            if r.get("status") == "ok":
                xs.append(k + (i - (len(rows) - 1) / 2) * width)
                ys.append(r["samples_per_s"])
        ax.bar(xs, ys, width, label=row["row"])
    ax.set_yscale("log")
    ax.set_xticks(range(len(keys)))
    ax.set_xticklabels([k.replace(" F", "\nF") for k in keys], fontsize=8)
    ax.set_ylabel("samples/s (log)")
    env = result["environment"]
    ax.set_title(f"LSTM(128) -> GRU(256) -> dense(10): {env['device']}, {env['cpu_count']} cores", fontsize=10)
    if rows:  # else every row skipped or failed: an empty chart, no legend
        ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    save_png(fig, path)


def write_results(result: dict[str, Any], out_dir: Path, command: str) -> dict[str, Path]:
    """bench.json, bench.md (the table) and bench.png into `out_dir`, each written atomically."""
    from rnnkit._atomic import atomic_write_bytes

    out_dir.mkdir(parents=True, exist_ok=True)
    files = {"json": out_dir / "bench.json", "markdown": out_dir / "bench.md", "png": out_dir / "bench.png"}
    result = {**result, "command": command}
    atomic_write_bytes(files["json"], (json.dumps(result, indent=2) + "\n").encode())
    atomic_write_bytes(files["markdown"], (f"`{command}`\n\n" + markdown_table(result)).encode())
    plot(result, files["png"])
    return files


def with_overrides(config: BenchConfig, **overrides: Any) -> BenchConfig:
    return replace(config, **{k: v for k, v in overrides.items() if v is not None})


def bench_config(quick: bool = False, full: bool = False, **overrides: Any) -> BenchConfig:
    """The configuration `rnnkit bench` runs, validated: the quick preset (`quick`), or the
    default workloads (with `full`, training at batch 1024 over 784 steps too), with
    `overrides` (BenchConfig fields; None keeps the preset's value) over it."""
    if quick and full:
        raise ConfigError("--quick and --full contradict each other: pick one")
    base = BenchConfig.quick_preset() if quick else BenchConfig(workloads=default_workloads(full))
    config = with_overrides(base, **overrides)
    config.validate()
    return config


if __name__ == "__main__":
    if sys.argv[1:2] == ["--child"]:
        sys.exit(_child(sys.argv[2:]))
    sys.exit("usage: rnnkit bench (this module's --child mode is run by it)")
