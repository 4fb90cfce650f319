"""dynamic_rnn's fast paths, fused (rnnkit/_fused.py) and native (rnnkit/_native), against
the plain per-step path: values and gradients, with and without sequence_length, for every
cell kind they take. The plain path is itself checked against the NumPy reference and finite
differences (test_rnn, test_gradients), so equality here ties the fast paths to TF1's
formulas."""

from __future__ import annotations

import ctypes
import re
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnnkit as rk
from rnnkit import _fused, _loops, _native
from rnnkit._wrappers import leaves

from cases import (
    INPUT_SIZE,
    assert_trees_close,
    benchmark_script,
    count_primitive,
    make_cell,
    path_taken,
    random_inputs,
    read_everything,
)
from jaxprs import ffi_targets_in

FUSED_KINDS = ["basic_rnn", "basic_lstm", "basic_lstm_forget_bias_0.5", "lstm", "gru", "gru_reset_after"]
LENGTHS = np.array([6, 2, 0, 4, 6])


def _stack(dtype: Any) -> rk.RNNCell:
    """Every fused kind in one stack, sizes chaining."""
    key = jax.random.key(11)
    k = jax.random.split(key, 4)
    cells = [
        rk.LSTMCell(6, input_size=INPUT_SIZE, key=k[0], dtype=dtype),
        rk.GRUCell(5, input_size=6, key=k[1], dtype=dtype),
        rk.GRUCell(4, input_size=5, key=k[2], dtype=dtype, reset_after=True),
        rk.BasicRNNCell(3, input_size=4, key=k[3], dtype=dtype),
    ]

    # Non-default biases, so a bias the fast path dropped or doubled would show.
    def shifted(a: jax.Array) -> jax.Array:
        return a + 0.3 * jnp.sin(jnp.arange(a.shape[0], dtype=a.dtype)) if a.ndim == 1 else a

    cells = [jax.tree_util.tree_map(shifted, c) for c in cells]
    return rk.MultiRNNCell(cells)


def _make(name: str, dtype: Any) -> rk.RNNCell:
    return _stack(dtype) if name == "stack" else make_cell(name, dtype=dtype, seed=3)


def _loss(cell: rk.RNNCell, x: jax.Array, state0: Any, lengths: Any, time_major: bool, how: str) -> jax.Array:
    """Reads every output and every leaf of the final state through fixed random weights."""
    outputs, state = rk.dynamic_rnn(cell, x, lengths, initial_state=state0, time_major=time_major, implementation=how)
    return read_everything(outputs, state)


# The plain path is the reference here: per_step, itself checked against the NumPy reference
# and finite differences compiled as users compile it (test_rnn, test_cells, test_gradients).
# As a reference it is compiled for compile speed (XLA's older CPU emitters, LLVM without
# optimisation): about 4x faster to build (2.1 s -> 0.5 s for two small layers' gradient, most
# of these tests' time), the same formulas to float rounding. The paths under test keep XLA's
# defaults.
REFERENCE_COMPILE = {"xla_cpu_use_fusion_emitters": False, "xla_backend_optimization_level": 0}


def _jit(fn: Any, how: str) -> Any:
    """jax.jit, with REFERENCE_COMPILE for the plain path."""
    return jax.jit(fn, compiler_options=REFERENCE_COMPILE if how == "per_step" else None)


def _value_and_grads(cell: rk.RNNCell, x: jax.Array, lengths: Any, time_major: bool, how: str) -> Any:
    state0 = jax.tree_util.tree_map(
        lambda z: z + 0.1, cell.zero_state(x.shape[1] if time_major else x.shape[0])
    )  # a non-zero initial state, so its gradient is exercised
    params, static = eqx.partition(cell, eqx.is_inexact_array)  # a DropoutWrapper's key stays static

    def f(p: Any, x: jax.Array, s: Any) -> jax.Array:
        return _loss(eqx.combine(p, static), x, s, lengths, time_major, how)

    # The path asked for is the path that runs: a fallback would compare per_step with itself.
    assert path_taken(f, params, x, state0) == ("fused" if how == "fused_stack" else how)
    return _jit(jax.value_and_grad(f, argnums=(0, 1, 2)), how)(params, x, state0)


# With sequence_length (the masked backward is the harder one); without it, the float32 test
# below. "stack" holds every fused kind but BasicLSTMCell, which has its own case; the kinds
# one by one, and the seed's two layers (LSTM and GRU, both in "stack"), are a slow sweep
# (pytest -m slow). A stack runs both fast paths: fused (a loop per layer) and fused_stack
# (one loop for every layer; a single cell is fused's case), against one plain-path result.
SLOW_KINDS = [
    pytest.param(name, marks=pytest.mark.slow)
    for name in [*FUSED_KINDS, "multi_lstm_gru"]
    if name != "basic_lstm_forget_bias_0.5"
]


@pytest.mark.parametrize("name", ["stack", "basic_lstm_forget_bias_0.5", *SLOW_KINDS])
def test_fast_path_equals_plain_path_values_and_gradients(name: str, x64: None) -> None:
    cell = _make(name, jnp.float64)
    assert _fused.unsupported(cell) is None
    x = random_inputs((5, 6, INPUT_SIZE), jnp.float64)
    plain = _value_and_grads(cell, x, LENGTHS, False, "per_step")
    for how in ["fused", "fused_stack"] if isinstance(cell, rk.MultiRNNCell) else ["fused"]:
        assert_trees_close(_value_and_grads(cell, x, LENGTHS, False, how), plain, 1e-11)


def test_fast_path_time_major_float32_no_lengths() -> None:
    """Time-major inputs, float32, no sequence_length: both fast paths equal to float32 rounding."""
    cell = _stack(jnp.float32)
    x = jnp.swapaxes(random_inputs((5, 6, INPUT_SIZE), jnp.float32), 0, 1)
    plain = _value_and_grads(cell, x, None, True, "per_step")
    for how in ["fused", "fused_stack"]:
        assert_trees_close(_value_and_grads(cell, x, None, True, how), plain, 2e-5)


@pytest.mark.parametrize("unroll", [1, 4])
def test_fused_stack_is_one_loop_over_time(unroll: int) -> None:
    """fused_stack: one scan forward and one reversed in the gradient for the four-layer
    stack, against fused's one per layer each way; unroll reaches its loops."""
    cell = _stack(jnp.float32)
    x = random_inputs((2, 6, INPUT_SIZE), jnp.float32)

    def gradient_program(how: str) -> str:
        def loss(c: Any, v: jax.Array) -> jax.Array:
            return jnp.sum(rk.dynamic_rnn(c, v, LENGTHS[:2], implementation=how, unroll=unroll)[0])

        return str(jax.make_jaxpr(jax.grad(loss))(cell, x))

    stacked = gradient_program("fused_stack")
    assert len(re.findall(r"\bscan\[", stacked)) == 2
    assert set(re.findall(r"unroll=(\d+)", stacked)) == {str(unroll)}
    assert len(re.findall(r"\bscan\[", gradient_program("fused"))) == 2 * 4

    def forward(how: str) -> Any:
        return lambda v: rk.dynamic_rnn(cell, v, LENGTHS[:2], implementation=how, unroll=unroll)

    assert count_primitive(forward("fused_stack"), "custom_vjp_call", x) == 1  # one for the whole stack
    assert count_primitive(forward("fused"), "custom_vjp_call", x) == 4  # one per layer


def test_padded_steps_give_zero_outputs_and_carried_state() -> None:
    cell = _stack(jnp.float32)
    x = random_inputs((5, 6, INPUT_SIZE), jnp.float32)
    outputs, state = rk.dynamic_rnn(cell, x, LENGTHS, implementation="fused")
    for b, length in enumerate(LENGTHS):
        assert np.all(np.asarray(outputs)[b, length:] == 0)
        if length in (2, 4):  # two padded examples, each run alone at its own length
            short, short_state = rk.dynamic_rnn(cell, x[b : b + 1, :length], implementation="fused")
            np.testing.assert_allclose(np.asarray(outputs)[b, :length], np.asarray(short)[0], rtol=1e-6, atol=1e-6)
            for got, want in zip(jax.tree_util.tree_leaves(state), jax.tree_util.tree_leaves(short_state), strict=True):
                np.testing.assert_allclose(np.asarray(got)[b], np.asarray(want)[0], rtol=1e-6, atol=1e-6)


def _outside(name: str) -> rk.RNNCell:
    key = jax.random.key(0)
    if name == "basic_rnn_relu":
        return rk.BasicRNNCell(4, input_size=INPUT_SIZE, key=key, activation=jax.nn.relu)
    if name == "state_dropout":  # changes the recurrence itself
        return rk.DropoutWrapper(rk.GRUCell(4, input_size=INPUT_SIZE, key=key), state_keep_prob=0.5, seed=0)
    if name == "residual_fn":  # any function of one step's input and output
        gru = rk.GRUCell(INPUT_SIZE, input_size=INPUT_SIZE, key=key)
        return rk.ResidualWrapper(gru, residual_fn=lambda i, o: o - i)
    if name == "dropout_around_peepholes":
        return rk.DropoutWrapper(make_cell("lstm_peephole_clip_proj"), output_keep_prob=0.5, seed=0)
    return make_cell(name)


OUTSIDE = ["lstm_peephole_clip_proj", "basic_rnn_relu", "state_dropout", "residual_fn", "dropout_around_peepholes"]
# What each says about the layer it can't take.
OUTSIDE_REASONS = {
    "lstm_peephole_clip_proj": r"layer 0 \(LSTMCell\) has use_peepholes=True, cell_clip=.*, num_proj=",
    "basic_rnn_relu": r"layer 0 \(BasicRNNCell\) has activation relu, not tanh",
    "state_dropout": r"layer 0 \(GRUCell\) is in a DropoutWrapper with state_keep_prob=0.5",
    "residual_fn": r"layer 0 \(GRUCell\) is in a ResidualWrapper with a residual_fn",
    "dropout_around_peepholes": r"layer 0 \(LSTMCell\) has use_peepholes=True",
}


@pytest.mark.parametrize("name", OUTSIDE)
def test_cells_outside_the_fast_path_are_refused_by_name_and_run_per_step_under_auto(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An explicit fast path refuses a cell it can't take, saying which layer and why (a
    fallback would run something else than asked); "auto" runs it per_step."""
    cell = _outside(name)
    fusable = rk.GRUCell(INPUT_SIZE, input_size=INPUT_SIZE, key=jax.random.key(1))
    assert _fused.unsupported(fusable) is None
    x = random_inputs((2, 3, INPUT_SIZE), jnp.float32)
    for how in ["fused", "fused_stack"]:
        with pytest.raises(ValueError, match=rf"implementation='{how}' runs .*; {OUTSIDE_REASONS[name]}"):
            rk.dynamic_rnn(cell, x, implementation=how)
    monkeypatch.setattr(_native, "require", lambda: None)  # as where the kernel is built
    with pytest.raises(ValueError, match=rf"implementation='native' runs .*; {OUTSIDE_REASONS[name]}"):
        _loops.choose(cell, "native", platform="cpu", return_all_states=False)
    monkeypatch.undo()
    in_a_stack = rk.MultiRNNCell([fusable, cell])  # one layer outside it: the stack is too, naming that layer
    with pytest.raises(ValueError, match=OUTSIDE_REASONS[name].replace("layer 0", "layer 1")):
        rk.dynamic_rnn(in_a_stack, x, implementation="fused")
    assert path_taken(lambda v: rk.dynamic_rnn(cell, v), x) == "per_step"
    outputs, _ = rk.dynamic_rnn(cell, x)
    assert outputs.shape == (2, 3, cell.output_size)


def test_return_all_states_is_refused_by_the_fast_paths_and_runs_per_step_under_auto() -> None:
    cell = _stack(jnp.float32)
    x = random_inputs((2, 3, INPUT_SIZE), jnp.float32)
    for how in ["fused", "fused_stack"]:
        with pytest.raises(ValueError, match=rf"implementation='{how}' .*; return_all_states=True"):
            rk.dynamic_rnn(cell, x, implementation=how, return_all_states=True)
    assert path_taken(lambda v: rk.dynamic_rnn(cell, v, return_all_states=True), x) == "per_step"


def _wrapped(dtype: Any, variant: str) -> rk.RNNCell:
    """The wrappers the fast paths take, around every fused kind. "layers": input and output
    dropout with fresh masks each step; variational output dropout under a residual sum; input
    dropout over a residual sum; a residual sum in a wrapper in inference mode (its state
    dropout is off, so it is taken). "around_the_stack": those layers, with output dropout
    around the whole MultiRNNCell. "residual_from_the_input": residual sums from the inputs up
    to the top, so padded steps come out zero only if the fast path zeroes them."""
    k = jax.random.split(jax.random.key(5), 4)
    if variant == "residual_from_the_input":
        lstm = rk.LSTMCell(INPUT_SIZE, input_size=INPUT_SIZE, key=k[0], dtype=dtype)
        gru = rk.GRUCell(INPUT_SIZE, input_size=INPUT_SIZE, key=k[1], dtype=dtype)
        dropped = rk.DropoutWrapper(lstm, input_keep_prob=0.8, output_keep_prob=0.7, seed=6)
        return rk.MultiRNNCell([rk.ResidualWrapper(dropped), rk.ResidualWrapper(gru)])
    layers = [
        rk.DropoutWrapper(
            rk.LSTMCell(6, input_size=INPUT_SIZE, key=k[0], dtype=dtype),
            input_keep_prob=0.8,
            output_keep_prob=0.7,
            seed=1,
        ),
        rk.ResidualWrapper(
            rk.DropoutWrapper(
                rk.GRUCell(6, input_size=6, key=k[1], dtype=dtype),
                output_keep_prob=0.6,
                variational_recurrent=True,
                seed=2,
            )
        ),
        rk.DropoutWrapper(
            rk.ResidualWrapper(rk.GRUCell(6, input_size=6, key=k[2], dtype=dtype, reset_after=True)),
            input_keep_prob=0.75,
            seed=3,
        ),
        eqx.nn.inference_mode(
            rk.DropoutWrapper(
                rk.ResidualWrapper(rk.BasicRNNCell(6, input_size=6, key=k[3], dtype=dtype)), 0.5, 0.5, 0.5, seed=4
            )
        ),
    ]
    stack = rk.MultiRNNCell(layers)
    return rk.DropoutWrapper(stack, output_keep_prob=0.9, seed=5) if variant == "around_the_stack" else stack


def _outputs(cell: rk.RNNCell, x: jax.Array, lengths: Any, how: str) -> np.ndarray:
    return np.asarray(rk.dynamic_rnn(cell, x, lengths, implementation=how)[0])


@pytest.mark.parametrize("variant", ["layers", "around_the_stack", "residual_from_the_input"])
def test_wrappers_take_the_fast_path_with_the_plain_paths_masks(variant: str, x64: None) -> None:
    """Dropout and residual wrappers run through fused: the same dropout masks as the plain
    path (the same units zeroed, bit for bit) and the same values and gradients."""
    cell = _wrapped(jnp.float64, variant)
    assert _fused.unsupported(cell) is None
    x = random_inputs((5, 6, INPUT_SIZE), jnp.float64)
    plain = _value_and_grads(cell, x, LENGTHS, False, "per_step")
    plain_zeros = _outputs(cell, x, LENGTHS, "per_step") == 0
    assert 0.05 < plain_zeros.mean() < 0.6  # masks dropped units, or padding is zero
    for how in ["fused", "fused_stack"]:
        np.testing.assert_array_equal(_outputs(cell, x, LENGTHS, how) == 0, plain_zeros)
        assert_trees_close(_value_and_grads(cell, x, LENGTHS, False, how), plain, 1e-11)
    fused = count_primitive(lambda v: rk.dynamic_rnn(cell, v, implementation="fused"), "custom_vjp_call", x)
    assert fused == len(list(leaves(cell)))  # every layer's loop fused


@pytest.mark.parametrize("lengths", [LENGTHS, None], ids=["lengths", "no_lengths"])
def test_native_runs_wrapped_layers(lengths: Any, native_kernel: None) -> None:
    cell = _wrapped(jnp.float32, "around_the_stack")
    x = random_inputs((5, 6, INPUT_SIZE), jnp.float32)
    targets = ffi_targets_in(jax.make_jaxpr(lambda v: rk.dynamic_rnn(cell, v, lengths, implementation="native"))(x))
    assert targets == [f"rnnkit_{kernel}_fwd" for kernel in ["lstm", "gru", "gru_reset_after", "rnn"]]  # every layer
    np.testing.assert_array_equal(
        _outputs(cell, x, lengths, "native") == 0, _outputs(cell, x, lengths, "per_step") == 0
    )
    native = _value_and_grads(cell, x, lengths, False, "native")
    assert_trees_close(native, _value_and_grads(cell, x, lengths, False, "per_step"), 2e-5)


def _path_taken(how: str, dtype: Any = jnp.float32) -> str:
    cell = _stack(dtype)
    x = random_inputs((2, 3, INPUT_SIZE), dtype)
    return path_taken(lambda x: rk.dynamic_rnn(cell, x, implementation=how), x)


def test_implementation_picks_the_path() -> None:
    assert _path_taken("fused") == "fused"
    assert _path_taken("fused_stack") == "fused"
    assert _path_taken("per_step") == "per_step"
    # auto: on CPU the native kernel where it is built, else per-step; fused on accelerators
    if jax.default_backend() != "cpu":
        assert _path_taken("auto") == "fused"
    else:
        assert _path_taken("auto") == ("native" if _native.available() else "per_step")


@pytest.mark.parametrize(
    ("platform", "native_built", "expected"),
    [("cpu", True, "native"), ("cpu", False, "per_step"), ("gpu", True, "fused"), ("gpu", False, "fused")],
)
def test_auto_picks_by_platform(
    monkeypatch: pytest.MonkeyPatch, platform: str, native_built: bool, expected: str
) -> None:
    """What the docstring promises for "auto", for a cell every fast path takes, and per_step
    for one they don't (peepholes) or for return_all_states."""
    monkeypatch.setattr(_native, "available", lambda: native_built)
    stack = _stack(jnp.float32)
    assert _loops.choose(stack, "auto", platform=platform, return_all_states=False).name == expected
    assert _loops.choose(stack, "auto", platform=platform, return_all_states=True).name == "per_step"
    peepholes = make_cell("lstm_peephole_clip_proj")
    assert _loops.choose(peepholes, "auto", platform=platform, return_all_states=False).name == "per_step"


def test_native_is_refused_off_cpu_and_for_other_dtypes_and_precisions(
    monkeypatch: pytest.MonkeyPatch, x64: None
) -> None:
    monkeypatch.setattr(_native, "require", lambda: None)  # as where the kernel is built
    stack = _stack(jnp.float32)
    with pytest.raises(ValueError, match=r"implementation='native' .*; JAX's default backend is gpu"):
        _loops.choose(stack, "native", platform="gpu", return_all_states=False)
    with pytest.raises(ValueError, match=r"runs float32 cells .*; layer 0 \(LSTMCell\) has dtype float64"):
        _loops.choose(_stack(jnp.float64), "native", platform="cpu", return_all_states=False)
    reduced = rk.GRUCell(4, input_size=INPUT_SIZE, key=jax.random.key(0), precision="BF16_BF16_F32")
    with pytest.raises(
        ValueError, match=r"full float32 precision.*; layer 0 \(GRUCell\) has precision='BF16_BF16_F32'"
    ):
        _loops.choose(reduced, "native", platform="cpu", return_all_states=False)
    with pytest.raises(ValueError, match=r"; return_all_states=True"):
        _loops.choose(stack, "native", platform="cpu", return_all_states=True)


def test_native_takes_float32_only(native_kernel: None, x64: None) -> None:
    assert _path_taken("native") == "native"
    assert _path_taken("auto", jnp.float64) == "per_step"
    with pytest.raises(ValueError, match=r"implementation='native' .* has dtype float64"):
        _path_taken("native", jnp.float64)


def test_pallas_is_refused_naming_its_new_place() -> None:
    with pytest.raises(ValueError, match=r"implementation='pallas' .* rnnkit\.experimental\.pallas\.dynamic_rnn"):
        rk.dynamic_rnn(make_cell("lstm"), random_inputs((2, 3, INPUT_SIZE)), implementation="pallas")


@pytest.mark.parametrize("lengths", [LENGTHS, None], ids=["lengths", "no_lengths"])
@pytest.mark.parametrize("name", ["stack", "basic_lstm_forget_bias_0.5"])
def test_native_equals_plain_path_values_and_gradients(name: str, lengths: Any, native_kernel: None) -> None:
    """float32 (the kernel's type): equal to float32 rounding, with the stack covering every
    kind the kernel has (LSTM, both GRUs, basic RNN) and BasicLSTMCell's forget bias."""
    cell = _make(name, jnp.float32)
    x = random_inputs((5, 6, INPUT_SIZE), jnp.float32)
    native = _value_and_grads(cell, x, lengths, False, "native")
    plain = _value_and_grads(cell, x, lengths, False, "per_step")
    assert_trees_close(native, plain, 2e-5)


def test_native_long_batches_cross_its_blocks(native_kernel: None) -> None:
    """The kernel projects inputs and sums weight gradients a block of about 4096 rows at a
    time: 300 examples x 31 steps is three blocks of 14 steps, the last one short."""
    cell = _stack(jnp.float32)
    x = random_inputs((300, 31, INPUT_SIZE), jnp.float32)
    lengths = np.random.default_rng(5).integers(0, 32, size=300)
    native = _value_and_grads(cell, x, lengths, False, "native")
    plain = _value_and_grads(cell, x, lengths, False, "per_step")
    assert_trees_close(native, plain, 1e-4)


def _wide_layers() -> tuple[rk.RNNCell, jax.Array, np.ndarray]:
    """Every kind the kernel has, at widths that leave partial panels and row groups, with
    13 examples of 9 steps and their lengths."""
    k = jax.random.split(jax.random.key(12), 4)
    cell = rk.MultiRNNCell(
        [
            rk.LSTMCell(72, input_size=20, key=k[0]),
            rk.GRUCell(40, input_size=72, key=k[1]),
            rk.GRUCell(24, input_size=40, key=k[2], reset_after=True),
            rk.BasicRNNCell(17, input_size=24, key=k[3]),
        ]
    )
    x = random_inputs((13, 9, 20), jnp.float32)
    return cell, x, np.array([9, 3, 0, 8, 9, 1, 5, 9, 2, 7, 6, 4, 9])


def test_native_wide_layers_cross_its_panels(native_kernel: None) -> None:
    """Layers wide enough for the kernel's packed products (panels of 32 columns, at most 256
    of the inner dimension per pass, 8 rows at a time): widths that leave partial panels
    (72, 40, 24, 17 units; 20 input features), a backward product deeper than 256 (the LSTM's
    4 x 72), 13 rows (8 + 5) and an input projection of 117 rows (row groups of 64)."""
    cell, x, lengths = _wide_layers()
    native = _value_and_grads(cell, x, lengths, False, "native")
    plain = _value_and_grads(cell, x, lengths, False, "per_step")
    assert_trees_close(native, plain, 1e-4)


def _unit_split_layers() -> tuple[rk.RNNCell, jax.Array, np.ndarray]:
    """LSTM and GRU layers with a whole 32-unit panel or more for every kernel thread, in equal
    and unequal parts, then a reset-after GRU (split by rows), with 5 examples of 7 steps."""
    units = 32 * max(2, _native.threads())
    k = jax.random.split(jax.random.key(13), 3)
    cell = rk.MultiRNNCell(
        [
            rk.LSTMCell(units, input_size=INPUT_SIZE, key=k[0]),
            rk.GRUCell(units + 32, input_size=units, key=k[1]),
            rk.GRUCell(units, input_size=units + 32, key=k[2], reset_after=True),
        ]
    )
    return cell, random_inputs((5, 7, INPUT_SIZE), jnp.float32), np.array([7, 3, 0, 5, 7])


def _few_rows_cases() -> list[tuple[rk.RNNCell, jax.Array, np.ndarray]]:
    """Batches of one to three rows: the products a build with AVX2 but not AVX-512 runs on
    its own kernel (rows_product), 32 columns at a time, with partial last chunks (the GRU's
    80 gate and 40 candidate columns, the LSTM's 144); the first case's input projection
    (3 steps x 1 row) is one of them, with its bias. Two layers, to keep the compiles short."""
    k = jax.random.split(jax.random.key(14), 2)
    cell = rk.MultiRNNCell([rk.GRUCell(40, input_size=20, key=k[0]), rk.LSTMCell(36, input_size=40, key=k[1])])
    return [
        (cell, random_inputs((1, 3, 20), jnp.float32), np.array([3])),
        (cell, random_inputs((2, 5, 20), jnp.float32), np.array([5, 2])),
        (cell, random_inputs((3, 4, 20), jnp.float32), np.array([4, 0, 3])),
    ]


def test_native_batches_of_one_to_three_rows(native_kernel: None) -> None:
    for cell, x, lengths in _few_rows_cases():
        native = _value_and_grads(cell, x, lengths, False, "native")
        plain = _value_and_grads(cell, x, lengths, False, "per_step")
        assert_trees_close(native, plain, 1e-4)


def test_native_small_batches_split_each_step_by_units(native_kernel: None) -> None:
    """With fewer than 32 rows per thread, the forward and backward passes give every thread
    all rows and a range of units instead, the threads meeting once or twice a step. Values
    and gradients equal per_step's; and inference over two blocks of
    steps (5 rows x 830 steps: the blocks hold about 4096 rows), whose projections share one
    scratch buffer the threads take turns with."""
    cell, x, lengths = _unit_split_layers()
    native = _value_and_grads(cell, x, lengths, False, "native")
    plain = _value_and_grads(cell, x, lengths, False, "per_step")
    assert_trees_close(native, plain, 1e-4)

    long_x = random_inputs((5, 830, INPUT_SIZE), jnp.float32)
    long_lengths = np.array([830, 400, 0, 829, 12])

    def outputs(how: str) -> Any:
        return _jit(lambda v: rk.dynamic_rnn(cell, v, long_lengths, implementation=how), how)(long_x)

    assert_trees_close(outputs("native"), outputs("per_step"), 1e-4)


def _lowered_backward_dx(loss: Any, *args: Any) -> list[str]:
    """The type of the first result (the input's gradient) of every backward kernel call in
    the lowered gradient of `loss`, in program order."""
    text = jax.jit(jax.grad(loss)).lower(*args).as_text()
    return re.findall(r"custom_call @rnnkit_\w+_bwd\(.*\) -> \((tensor<[^>]*>)", text)


@pytest.mark.parametrize("reads", ["outputs", "final_state"])
def test_native_skips_the_input_gradient_nothing_asks_for(reads: str, native_kernel: None) -> None:
    """Differentiated in the weights alone (as a training step is, its first layer running on
    the data), the first layer's backward call is not asked for the input's gradient: its
    first result is empty, the later layers' are not. The weights' gradients still equal
    per_step's, with a loss of the outputs alone or of the final state alone (the other's
    cotangent then a symbolic zero, which the kernel gets as zeros)."""
    cell = _stack(jnp.float32)
    x = random_inputs((5, 6, INPUT_SIZE), jnp.float32)
    params, static = eqx.partition(cell, eqx.is_array)

    def loss(p: Any, v: jax.Array, how: str) -> jax.Array:
        outputs, state = rk.dynamic_rnn(eqx.combine(p, static), v, LENGTHS, implementation=how)
        read = outputs if reads == "outputs" else state
        return sum(jnp.sum(jnp.tanh(leaf) * (k + 1)) for k, leaf in enumerate(jax.tree_util.tree_leaves(read)))

    def of_weights(how: str) -> Any:
        return _jit(jax.grad(lambda p: loss(p, x, how)), how)(params)

    assert_trees_close(of_weights("native"), of_weights("per_step"), 2e-5)
    dx_types = _lowered_backward_dx(lambda p: loss(p, x, "native"), params)
    assert len(dx_types) == 4
    assert dx_types[-1] == "tensor<0xf32>"  # the backward runs from the last layer to the first
    assert all(t != "tensor<0xf32>" for t in dx_types[:-1])
    both = _lowered_backward_dx(lambda v: loss(params, v, "native"), x)
    assert len(both) == 4
    assert all(t != "tensor<0xf32>" for t in both)


# The builds a CPU with fewer vector extensions gets (rnnkit._native.ISAS), made here with the
# package's CMake project: (instruction set, rnnkit_avx512(), rnnkit_avx2_rows()) of each.
OTHER_BUILDS = [
    pytest.param("avx2", 0, 1, id="avx2"),  # AVX2 + FMA: OpenBLAS and the few-rows kernel
    pytest.param("portable", 0, 0, id="plain"),  # OpenBLAS for every product
]


@pytest.mark.slow
@pytest.mark.parametrize(("isa", "avx512", "avx2_rows"), OTHER_BUILDS)
def test_native_builds_for_other_cpus_equal_plain_path(
    native_kernel: None, isa: str, avx512: int, avx2_rows: int
) -> None:
    """A CPU without AVX-512 gets a build whose products are OpenBLAS's sgemm (the products of
    one to three rows on a kernel of its own where there is AVX2) and whose bias gradients are
    separate column sums. Built here under FFI target names of its own (benchmarks/native_ab.py's
    loader), each says which it is and computes what per_step does: on the layers with partial
    panels, on a small batch whose steps the threads split by units, and on batches of one to
    three rows."""
    if not _native.cpu_features().issuperset(_native.ISAS[isa]):
        pytest.skip(f"this CPU can't run the {isa} build")
    ab = benchmark_script("native_ab")
    prefix = f"other_{isa}_"
    ab.load_other(_native.SOURCE, prefix, isa)
    library = ab.load_other.library
    library.rnnkit_avx512.restype = library.rnnkit_avx2_rows.restype = ctypes.c_int64
    assert (library.rnnkit_avx512(), library.rnnkit_avx2_rows()) == (avx512, avx2_rows)
    for cell, x, lengths in (_wide_layers(), _unit_split_layers(), *_few_rows_cases()):
        with ab._targets_prefixed(prefix):
            native = _value_and_grads(cell, x, lengths, False, "native")
        plain = _value_and_grads(cell, x, lengths, False, "per_step")
        assert_trees_close(native, plain, 1e-4)


def test_unknown_implementation_is_refused() -> None:
    cell = make_cell("gru")
    with pytest.raises(
        ValueError,
        match=r"implementation must be one of auto, per_step, fused, fused_stack, native; got 'cudnn'",
    ):
        rk.dynamic_rnn(cell, random_inputs((2, 3, INPUT_SIZE)), implementation="cudnn")


def test_forward_mode_and_second_order_need_per_step(native_kernel: None) -> None:
    """The fast paths' gradients are hand-written (reverse mode only, like cuDNN's RNNs);
    per_step, which the docstring points to, takes forward mode and second order."""
    cell = make_cell("gru")
    x = random_inputs((2, 5, INPUT_SIZE), jnp.float32)

    def f(how: str) -> Any:
        return lambda v: jnp.sum(rk.dynamic_rnn(cell, v, implementation=how)[0] ** 2)

    def hvp(how: str) -> jax.Array:  # jitted, as every program here: one compilation each
        return jax.jit(jax.grad(lambda v: jnp.vdot(jax.grad(f(how))(v), v)))(x)

    grad = jax.jit(jax.grad(f("per_step")))(x)
    np.testing.assert_allclose(jax.jit(jax.grad(f("native")))(x), grad, rtol=1e-5, atol=1e-6)
    _, tangent = jax.jit(lambda v: jax.jvp(f("per_step"), (v,), (v,)))(x)
    np.testing.assert_allclose(tangent, jnp.vdot(grad, x), rtol=1e-5)
    np.testing.assert_allclose(hvp("fused"), hvp("per_step"), rtol=1e-4, atol=1e-5)
    with pytest.raises(TypeError, match="forward-mode autodiff"):
        jax.jvp(f("native"), (x,), (x,))
    with pytest.raises(ValueError, match="rnnkit_gru_fwd` cannot be differentiated"):
        hvp("native")


def test_native_forward_reads_each_cells_weights_where_they_lie(native_kernel: None) -> None:
    """The forward calls take the cells' own arrays (a GRU's two kernels and two biases), so
    no slice or concatenation of weights runs before them: with the weights a jitted
    function's arguments, those small XLA operations around the calls made batch-1 inference
    of the seed's model 3x slower on two cores."""
    k = jax.random.split(jax.random.key(15), 3)
    cell = rk.MultiRNNCell(
        [
            rk.LSTMCell(8, input_size=INPUT_SIZE, key=k[0]),
            rk.GRUCell(6, input_size=8, key=k[1]),
            rk.BasicRNNCell(5, input_size=6, key=k[2]),
        ]
    )
    params, static = eqx.partition(cell, eqx.is_array)
    x = random_inputs((1, 4, INPUT_SIZE), jnp.float32)

    def run(p: Any, v: jax.Array) -> Any:
        return rk.dynamic_rnn(eqx.combine(p, static), v, implementation="native")

    text = jax.jit(run).lower(params, x).as_text()
    assert re.findall(r"custom_call @(rnnkit_\w+)", text) == ["rnnkit_lstm_fwd", "rnnkit_gru_fwd", "rnnkit_rnn_fwd"]
    assert "stablehlo.slice" not in text
    assert "stablehlo.concatenate" not in text


def test_native_under_vmap_per_example_gradients(native_kernel: None) -> None:
    """jax.vmap over the kernel's calls (run one after another): outputs and per-example
    gradients equal per_step's."""
    cell = make_cell("lstm")
    xs = random_inputs((3, 2, 4, INPUT_SIZE), jnp.float32)  # 3 separate batches of 2
    params, static = eqx.partition(cell, eqx.is_array)

    def loss(p: Any, x: jax.Array, how: str) -> jax.Array:
        return jnp.sum(jnp.tanh(rk.dynamic_rnn(eqx.combine(p, static), x, implementation=how)[0]))

    per_example = jax.vmap(jax.value_and_grad(loss), in_axes=(None, 0, None))
    native, plain = per_example(params, xs, "native"), per_example(params, xs, "per_step")
    assert all(leaf.shape[0] == 3 for leaf in jax.tree_util.tree_leaves(native))
    assert_trees_close(native, plain, 2e-5)
