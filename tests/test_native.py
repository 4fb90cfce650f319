"""rnnkit's native CPU kernel (rnnkit/_native): which of its builds (instruction sets) a CPU
gets, RNNKIT_NATIVE_ISA forcing one, what happens when none can run, which programs call it,
and its numbers at the seed's size (the small cases' numbers are checked in test_fused.py, and
under each build here)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnnkit as rk
from rnnkit import _native

from cases import INPUT_SIZE, make_cell, path_taken, random_inputs
from jaxprs import ffi_targets, ffi_targets_in, walk

EVERY_FEATURE = frozenset(f for needs in _native.ISAS.values() for f in needs)


@pytest.fixture
def fresh(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """Forget which build was chosen and loaded, before and after the test (which may patch
    the CPU's features, the variable or the library's place through the monkeypatch)."""
    monkeypatch.delenv(_native.ISA_VARIABLE, raising=False)
    _native.select_isa.cache_clear()
    _native._load.cache_clear()
    yield monkeypatch
    monkeypatch.undo()
    _native.select_isa.cache_clear()
    _native._load.cache_clear()


def test_missing_library_is_reported_and_auto_runs_without_it(fresh: pytest.MonkeyPatch, tmp_path: Path) -> None:
    fresh.setattr(_native, "library", lambda isa: tmp_path / f"librnnkit_cpu_{isa}.so")
    isa, _ = _native.select_isa()
    assert _native.unavailable_reason() == (
        f"it is not built (librnnkit_cpu_{isa}.so is not in {tmp_path}: installed without a C++ compiler?)"
    )
    assert _native.describe().startswith("absent: it is not built (")
    assert _native.describe().endswith("; dynamic_rnn runs its per-step XLA loop")
    cell = make_cell("gru")
    x = random_inputs((2, 3, INPUT_SIZE))
    with pytest.raises(_native.NativeUnavailableError, match=r"implementation='native' needs .*, but it is not built"):
        rk.dynamic_rnn(cell, x, implementation="native")
    if jax.default_backend() == "cpu":
        assert path_taken(lambda v: rk.dynamic_rnn(cell, v), x) == "per_step"  # auto: the per-step path


@pytest.mark.parametrize(
    ("features", "isa", "why"),
    [
        (EVERY_FEATURE, "avx512", "this CPU has AVX-512"),
        (frozenset(_native.ISAS["avx2"]) | {"sse2", "avx512f"}, "avx2", "this CPU has AVX2 and FMA, not AVX-512"),
        (frozenset(_native.ISAS["avx2"]) - {"fma"}, "portable", "this CPU has neither AVX-512 nor AVX2 with FMA"),
        (frozenset(), "portable", "this CPU has neither AVX-512 nor AVX2 with FMA"),
    ],
)
def test_each_cpu_gets_the_best_build_it_runs(
    fresh: pytest.MonkeyPatch, features: frozenset[str], isa: str, why: str
) -> None:
    fresh.setattr(_native, "cpu_features", lambda: features)
    assert _native.select_isa() == (isa, why)


@pytest.mark.parametrize("isa", [*_native.ISAS])
def test_the_variable_forces_a_build(fresh: pytest.MonkeyPatch, isa: str) -> None:
    fresh.setattr(_native, "cpu_features", lambda: EVERY_FEATURE)
    fresh.setenv(_native.ISA_VARIABLE, isa)
    assert _native.select_isa() == (isa, f"forced by RNNKIT_NATIVE_ISA={isa}")


def test_a_forced_build_this_cpu_cant_run_is_an_error_not_a_fallback(fresh: pytest.MonkeyPatch) -> None:
    fresh.setattr(_native, "cpu_features", lambda: frozenset(_native.ISAS["avx2"]) | {"avx512f"})
    fresh.setenv(_native.ISA_VARIABLE, "avx512")
    message = (
        "RNNKIT_NATIVE_ISA=avx512 asks for the avx512 build, which this CPU can't run "
        "(it lacks avx512bw, avx512cd, avx512dq, avx512vl)"
    )
    assert _native.unavailable_reason() == message
    assert _native.describe() == f"absent: {message}; dynamic_rnn runs its per-step XLA loop"
    with pytest.raises(
        _native.NativeUnavailableError, match=r"needs rnnkit's native CPU kernel, but RNNKIT_NATIVE_ISA"
    ):
        _native.available()
    cell = make_cell("gru")
    with pytest.raises(_native.NativeUnavailableError, match=r"it lacks avx512bw"):  # auto too: it was asked for
        rk.dynamic_rnn(cell, random_inputs((2, 3, INPUT_SIZE)))


def test_an_unknown_forced_build_is_an_error(fresh: pytest.MonkeyPatch) -> None:
    fresh.setenv(_native.ISA_VARIABLE, "sse9")
    with pytest.raises(
        _native.NativeUnavailableError,
        match=r"RNNKIT_NATIVE_ISA must be auto, avx512, avx2, portable or unset; got 'sse9'",
    ):
        _native.available()


def test_other_machines_have_no_kernel(fresh: pytest.MonkeyPatch) -> None:
    fresh.setattr(_native.platform, "machine", lambda: "aarch64")
    assert _native.unavailable_reason() == "there is none for this machine (aarch64; the kernel is built for x86-64)"
    assert not _native.available()


def test_the_built_kernel_is_loaded_here(native_kernel: None) -> None:
    """Where a C++ compiler is, `make install` built the kernel and auto uses it on CPU."""
    assert _native.available()
    if jax.default_backend() == "cpu":
        cell = make_cell("gru")
        jaxpr = jax.make_jaxpr(lambda v: rk.dynamic_rnn(cell, v))(random_inputs((2, 3, INPUT_SIZE)))
        assert ffi_targets_in(jaxpr) == ["rnnkit_gru_fwd"]


# Each build this CPU runs, forced in a new process (a process loads one): the library loaded
# is that build's, its products run where that build runs them, and dynamic_rnn's values and
# gradients through it equal the per-step path's to float32 rounding, with sequence lengths.
_FORCED_BUILD = """
import json, sys
import jax, jax.numpy as jnp, numpy as np, equinox as eqx
import rnnkit as rk
from rnnkit import _native
from cases import INPUT_SIZE, make_cell, random_inputs
lstm = make_cell("lstm", seed=1)
cell = rk.MultiRNNCell([lstm, make_cell("gru", seed=2, input_size=lstm.output_size)])
x = random_inputs((5, 7, INPUT_SIZE))
lengths = jnp.asarray([7, 2, 0, 4, 6])
params, static = eqx.partition(cell, eqx.is_inexact_array)
def loss(p, x, how):
    out, state = rk.dynamic_rnn(eqx.combine(p, static), x, lengths, implementation=how)
    return jnp.sum(jnp.sin(out)) + sum(jnp.sum(jnp.cos(s)) for s in jax.tree_util.tree_leaves(state))
def run(how):
    v, g = jax.jit(jax.value_and_grad(lambda p, x: loss(p, x, how), (0, 1)))(params, x)
    return [np.asarray(a) for a in [v, *jax.tree_util.tree_leaves(g)]]
native, plain = run("native"), run("per_step")
for a, b in zip(native, plain, strict=True):
    np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-5)
maps = open("/proc/self/maps").read()
lib = _native._library[-1]
print(json.dumps({"isa": _native.isa(), "avx512": _native.avx512(), "avx2_rows": lib.rnnkit_avx2_rows(),
                  "loaded": sorted({n for n in ("avx512", "avx2", "portable") if f"librnnkit_cpu_{n}.so" in maps}),
                  "jaxpr_native": "rnnkit_lstm_bwd" in str(jax.make_jaxpr(jax.grad(lambda p: loss(p, x, "native")))(params))}))
"""


@pytest.mark.skipif(not Path("/proc/self/maps").is_file(), reason="reads the loaded libraries from Linux's /proc")
@pytest.mark.parametrize(
    ("isa", "avx512", "avx2_rows"), [("avx512", True, 0), ("avx2", False, 1), ("portable", False, 0)]
)
def test_each_forced_build_gives_the_per_step_paths_values_and_gradients(
    native_kernel: None, isa: str, avx512: bool, avx2_rows: int
) -> None:
    import json

    if not _native.cpu_features().issuperset(_native.ISAS[isa]):
        pytest.skip(f"this CPU can't run the {isa} build")
    tests = str(Path(__file__).parent)
    env = {**os.environ, _native.ISA_VARIABLE: isa, "PYTHONPATH": os.pathsep.join([*sys.path, tests])}
    done = subprocess.run([sys.executable, "-c", _FORCED_BUILD], env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout.strip().splitlines()[-1])
    assert got == {"isa": isa, "avx512": avx512, "avx2_rows": avx2_rows, "loaded": [isa], "jaxpr_native": True}


@pytest.mark.parametrize(
    ("precision", "native"), [("highest", True), (None, True), ("F32_F32_F32", True), ("BF16_BF16_F32_X3", False)]
)
def test_the_kernel_takes_only_full_float32_precisions(native_kernel: None, precision: object, native: bool) -> None:
    """The kernel multiplies in float32 and nothing else, so a cell that asks for another
    algorithm is refused by implementation="native", naming its precision, and runs per_step
    under "auto", through XLA, which does what the algorithm says (or refuses it)."""
    if jax.default_backend() != "cpu":
        pytest.skip("the native kernel is CPU-only")
    cell = rk.GRUCell(4, input_size=INPUT_SIZE, key=jax.random.key(0), precision=precision)
    x = random_inputs((2, 3, INPUT_SIZE))
    if native:
        assert ffi_targets_in(jax.make_jaxpr(lambda v: rk.dynamic_rnn(cell, v, implementation="native"))(x))
    else:
        with pytest.raises(ValueError, match=r"implementation='native' .*; layer 0 \(GRUCell\) has precision="):
            rk.dynamic_rnn(cell, x, implementation="native")
    auto = jax.make_jaxpr(lambda v: rk.dynamic_rnn(cell, v))(x)
    assert (ffi_targets_in(auto) == ["rnnkit_gru_fwd"]) is native
    dots = [str(e.params["precision"]) for e in walk(auto) if e.primitive.name == "dot_general"]
    assert any("BF16_BF16_F32_X3" in p for p in dots) is not native


def test_ffi_targets_keep_their_names() -> None:
    """The FFI targets, derived from the loop kinds, keep the names of the C symbols the kernel
    exports (loading it looks each one up)."""
    assert _native.TARGETS == {
        "rnnkit_rnn_fwd": "RnnkitRnnFwd",
        "rnnkit_rnn_bwd": "RnnkitRnnBwd",
        "rnnkit_lstm_fwd": "RnnkitLstmFwd",
        "rnnkit_lstm_bwd": "RnnkitLstmBwd",
        "rnnkit_gru_fwd": "RnnkitGruFwd",
        "rnnkit_gru_bwd": "RnnkitGruBwd",
        "rnnkit_gru_reset_after_fwd": "RnnkitGruAfterFwd",
        "rnnkit_gru_reset_after_bwd": "RnnkitGruAfterBwd",
    }


_LOAD_IN_A_NEW_PROCESS = """
import json, os, sys
import jax  # its threads, and NumPy's OpenBLAS's, exist before the kernel loads
def tasks():
    return len(os.listdir("/proc/self/task"))
before = tasks()
from rnnkit import _native
_native.require()
print(json.dumps({"added": tasks() - before, "threads": _native.threads(),
                  "env": os.environ.get("OPENBLAS_NUM_THREADS")}))
"""


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="counts threads through Linux's /proc")
@pytest.mark.parametrize(("setting", "expected"), [(None, None), ("1", 1), ("64", None)])
def test_kernel_threads_follow_openblas_settings_and_openblas_starts_single_threaded(
    native_kernel: None, setting: str | None, expected: int | None
) -> None:
    """OpenBLAS loads with one thread (no worker threads of its own, which kept the kernel's
    threads from calling sgemm side by side), the kernel runs as many threads as OpenBLAS would
    have (OPENBLAS_NUM_THREADS, at most the CPUs; else the CPUs), and the user's setting is
    left as it was."""
    import json
    import subprocess
    import sys

    env = {
        k: v for k, v in os.environ.items() if k not in ("OPENBLAS_NUM_THREADS", "GOTO_NUM_THREADS", "OMP_NUM_THREADS")
    }
    if setting is not None:
        env["OPENBLAS_NUM_THREADS"] = setting
    done = subprocess.run(
        [sys.executable, "-c", _LOAD_IN_A_NEW_PROCESS], env=env, capture_output=True, text=True, check=True
    )
    got = json.loads(done.stdout.strip().splitlines()[-1])
    cpus = len(os.sched_getaffinity(0))
    assert got == {"added": 0, "threads": expected or cpus, "env": setting}


# --- The seed's model at a training batch size, against per_step ------------------------------
# The tests of the kernel's numbers elsewhere (test_fused.py) use a few rows and units. Here the
# seed's stack, MultiRNNCell([LSTMCell(128), GRUCell(256)]) over 28 steps of 28 features, with
# full 32-unit panels (4 and 8 of them), a batch of 72 rows and each of the kernel's ways of
# splitting the work between its threads, picked by setting the thread count (so what is covered
# does not depend on the machine's CPUs): 2 threads take 36 rows each, step by step (row
# groups of 8 end in a partial one); with 4, fewer than 32 rows each, they split each step's
# units instead, whole panels each; with 8, the LSTM's 4 panels are too few for that and its
# steps go by rows a block at a time, while the GRU's 8 panels split by units.


SEED_BATCH, SEED_STEPS, SEED_FEATURES = 72, 28, 28
SEED_THREADS = (2, 4, 8)

# Tolerance, per leaf, relative to the leaf's largest magnitude (the gradients of this loss reach
# ~1e2, the outputs ~1). Measured on an AVX-512 build over outputs, final states and the gradients
# of every weight, the inputs and the initial state: native against per_step at most 1.7e-6 of
# the leaf's scale (the same at 2, 4 and 8 threads), and per_step's own float32 results against
# the same model in float64 1.2e-6: a few float32 ulps from sums taken in another order. 1e-5 is
# 6x the larger, room for builds whose products sum in yet another order (AVX2, OpenBLAS). A
# real fault is far above it: one weight of the second layer's kernel moved by 1e-3 (of ~0.1)
# for the native call alone moves the results by 2e-4 to 1.2e-3 of their scale.
SEED_TOL = 1e-5

# per_step, the reference, compiled for compile speed as in test_fused.py (the same formulas to
# float rounding, a third of the compile time); the native path keeps XLA's defaults.
_REFERENCE_COMPILE = {"xla_cpu_use_fusion_emitters": False, "xla_backend_optimization_level": 0}


def _seed_stack() -> rk.MultiRNNCell:
    k = jax.random.split(jax.random.key(21), 2)
    cell = rk.MultiRNNCell(
        [
            rk.LSTMCell(128, input_size=SEED_FEATURES, key=k[0]),
            rk.GRUCell(256, input_size=128, key=k[1]),
        ]
    )
    return _with_random_biases(cell)


def _reset_after_and_basic_stack() -> rk.MultiRNNCell:
    k = jax.random.split(jax.random.key(22), 2)
    cell = rk.MultiRNNCell(
        [
            rk.GRUCell(256, input_size=SEED_FEATURES, key=k[0], reset_after=True),
            rk.BasicRNNCell(128, input_size=256, key=k[1]),
        ]
    )
    return _with_random_biases(cell)


def _with_random_biases(cell: rk.RNNCell) -> rk.RNNCell:
    """TF1's initial kernels (random weights of the model's own scale) and non-zero biases, so
    the bias paths count; random kernels at these widths would saturate every gate."""
    rng = np.random.default_rng(23)
    variables = {
        name: value + (0.5 * rng.standard_normal(value.shape)).astype(value.dtype) if name.endswith("bias") else value
        for name, value in rk.get_variables(cell).items()
    }
    return rk.set_variables(cell, variables)


def _with_kernel_threads(n: int, fn: Callable[..., Any], *args: Any) -> Any:
    """fn(*args) with the loaded kernel running n threads (rnnkit/_native sets the count once,
    at load), finished before the count is restored: a running call reads it."""
    before = _native.threads()
    _native._library[-1].rnnkit_set_threads(n)
    try:
        return jax.block_until_ready(fn(*args))
    finally:
        _native._library[-1].rnnkit_set_threads(before)


def _seed_loss(cell: rk.RNNCell, lengths: np.ndarray | None, how: str) -> tuple[Callable[..., Any], tuple[Any, ...]]:
    """A loss of every output and every final-state leaf, each weighted by fixed random numbers
    (so no permutation of rows, steps or units goes unseen), as a function of the cell's weights,
    the inputs and a non-zero initial state; and those arguments."""
    rng = np.random.default_rng(24)
    x = jnp.asarray(rng.standard_normal((SEED_BATCH, SEED_STEPS, SEED_FEATURES)), jnp.float32)
    zero = cell.zero_state(SEED_BATCH)
    state0 = jax.tree_util.tree_map(lambda z: jnp.asarray(0.3 * rng.standard_normal(z.shape), z.dtype), zero)
    out_weights = jnp.asarray(rng.standard_normal((SEED_BATCH, SEED_STEPS, cell.output_size)), jnp.float32)
    state_weights = jax.tree_util.tree_map(lambda z: jnp.asarray(rng.standard_normal(z.shape), z.dtype), zero)
    params, static = eqx.partition(cell, eqx.is_inexact_array)

    def loss(p: Any, x: jax.Array, s: Any) -> tuple[jax.Array, Any]:
        outputs, final = rk.dynamic_rnn(eqx.combine(p, static), x, lengths, initial_state=s, implementation=how)
        weighted = jax.tree_util.tree_map(lambda a, w: jnp.sum(a * w), (outputs, final), (out_weights, state_weights))
        return sum(jax.tree_util.tree_leaves(weighted)), (outputs, final)

    def values_and_grads(p: Any, x: jax.Array, s: Any) -> Any:
        (_, values), grads = jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True)(p, x, s)
        return values, grads  # not the loss: a sum of cancelling terms, less exact than its parts

    return values_and_grads, (params, x, state0)


def _assert_close_to_scale(got: Any, want: Any, tol: float) -> None:
    """Same tree; every leaf within tol times the largest magnitude of want's leaf."""
    assert jax.tree_util.tree_structure(got) == jax.tree_util.tree_structure(want)
    for (path, g), w in zip(jax.tree_util.tree_leaves_with_path(got), jax.tree_util.tree_leaves(want), strict=True):
        w = np.asarray(w, np.float64)
        scale = float(np.max(np.abs(w)))
        assert scale > 0, f"{jax.tree_util.keystr(path)} is all zeros: nothing to compare"
        np.testing.assert_allclose(
            np.asarray(g, np.float64), w, rtol=0, atol=tol * scale, err_msg=jax.tree_util.keystr(path)
        )


_SEED_LENGTHS = np.random.default_rng(25).integers(1, SEED_STEPS + 1, SEED_BATCH)
_SEED_LENGTHS[:4] = [1, SEED_STEPS, 0, SEED_STEPS - 1]  # one step, every step, none, all but the last


_SEED_TARGETS = {"rnnkit_lstm_fwd", "rnnkit_lstm_bwd", "rnnkit_gru_fwd", "rnnkit_gru_bwd"}
_OTHER_TARGETS = {"rnnkit_gru_reset_after_fwd", "rnnkit_gru_reset_after_bwd", "rnnkit_rnn_fwd", "rnnkit_rnn_bwd"}


@pytest.mark.parametrize(
    ("make", "targets", "lengths"),
    [
        pytest.param(_seed_stack, _SEED_TARGETS, _SEED_LENGTHS, id="seed-lengths"),
        pytest.param(_seed_stack, _SEED_TARGETS, None, id="seed-no_lengths"),
        # The kinds that split only by rows (reset-after GRU, basic RNN), in the slow sweep
        # (pytest -m slow): 3-4 s each here.
        pytest.param(
            _reset_after_and_basic_stack,
            _OTHER_TARGETS,
            _SEED_LENGTHS,
            id="reset_after_basic-lengths",
            marks=pytest.mark.slow,
        ),
        pytest.param(
            _reset_after_and_basic_stack,
            _OTHER_TARGETS,
            None,
            id="reset_after_basic-no_lengths",
            marks=pytest.mark.slow,
        ),
    ],
)
def test_native_equals_per_step_for_the_seeds_model_at_batch_size(
    native_kernel: None, make: Callable[[], rk.RNNCell], targets: set[str], lengths: np.ndarray | None
) -> None:
    """Outputs, final state and the gradients of every weight, the inputs and the initial state,
    native against per_step, with each thread split; the native kernel ran, per_step did not."""
    if jax.default_backend() != "cpu":
        pytest.skip("the native kernel is CPU-only")
    cell = make()
    native, args = _seed_loss(cell, lengths, "native")
    plain, _ = _seed_loss(cell, lengths, "per_step")
    assert set(ffi_targets(native, *args)) == targets
    assert ffi_targets(plain, *args) == []
    want = jax.jit(plain, compiler_options=_REFERENCE_COMPILE)(*args)
    native = jax.jit(native)
    for threads in SEED_THREADS:
        _assert_close_to_scale(_with_kernel_threads(threads, native, *args), want, SEED_TOL)


def test_rnnkit_env_names_the_build_in_use_and_why(native_kernel: None, capsys: pytest.CaptureFixture[str]) -> None:
    from rnnkit.cli import main

    isa, why = _native.select_isa()
    assert main(["env"]) == 0
    line = f"native CPU kernel: {isa} ({why}; librnnkit_cpu_{isa}.so), {_native.threads()} threads"
    assert line in capsys.readouterr().out.splitlines()
    forced = subprocess.run(
        [sys.executable, "-m", "rnnkit.cli", "env"],
        env={**os.environ, _native.ISA_VARIABLE: "portable"},
        capture_output=True,
        text=True,
        check=True,
    )
    assert (
        "native CPU kernel: portable (forced by RNNKIT_NATIVE_ISA=portable; librnnkit_cpu_portable.so)" in forced.stdout
    )
