"""The drivers: static_rnn == dynamic_rnn, TF1's sequence_length semantics, bidirectional,
time-major, unroll, every-step states, last_relevant, and jit / vmap / dtypes."""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnnkit as rk

from cases import CELL_CASES, INPUT_SIZE, assert_close, make_cell, random_inputs
from jaxprs import params_of

LENGTHS = np.array([6, 0, 3, 1, 5])


def run(driver: str, cell: rk.RNNCell, x: Any, lengths: Any = None, **kwargs: Any) -> tuple[jax.Array, Any]:
    if driver == "static":
        outputs, state = rk.static_rnn(cell, x, sequence_length=lengths, **kwargs)
        return jnp.stack(outputs, axis=1), state
    return rk.dynamic_rnn(cell, x, sequence_length=lengths, **kwargs)


@pytest.mark.parametrize("name", sorted(CELL_CASES))
@pytest.mark.parametrize("with_lengths", [False, True], ids=["full", "lengths"])
def test_static_equals_dynamic(name: str, with_lengths: bool) -> None:
    cell = make_cell(name)
    x = random_inputs((5, 6, INPUT_SIZE))
    lengths = LENGTHS if with_lengths else None
    static_out, static_state = run("static", cell, x, lengths)
    dynamic_out, dynamic_state = run("dynamic", cell, x, lengths)
    assert static_out.shape == dynamic_out.shape == (5, 6, cell.output_size)
    assert_close(static_out, dynamic_out, 1e-6)
    assert_close(static_state, dynamic_state, 1e-6)


@pytest.mark.parametrize("driver", ["static", "dynamic"])
def test_masked_batch_equals_each_example_alone_on_its_truncated_sequence(driver: str) -> None:
    cell = make_cell("multi_lstm_gru")
    x = random_inputs((5, 6, INPUT_SIZE))
    outputs, state = run(driver, cell, x, LENGTHS)
    for b, length in enumerate(LENGTHS):
        if length == 0:
            want_state = cell.zero_state(1)
        else:
            want_out, want_state = rk.dynamic_rnn(cell, x[b : b + 1, :length])
            np.testing.assert_allclose(outputs[b : b + 1, :length], want_out, rtol=1e-6, atol=1e-6)
        assert not np.any(np.asarray(outputs[b, length:])), f"example {b}: outputs past its length must be zero"
        assert_close(jax.tree_util.tree_map(lambda s, b=b: s[b : b + 1], state), want_state, 1e-6)


def test_padding_values_never_reach_the_result() -> None:
    cell = make_cell("multi_lstm_gru")
    x = random_inputs((5, 6, INPUT_SIZE))
    t = np.arange(6)[None, :, None]
    garbage = jnp.where(t >= LENGTHS[:, None, None], 1e3, x)  # padding replaced by huge values
    a = rk.dynamic_rnn(cell, x, LENGTHS)
    b = rk.dynamic_rnn(cell, garbage, LENGTHS)
    assert_close(a, b, 0.0)


def test_sequence_length_as_list_and_jax_array_agree() -> None:
    cell = make_cell("gru")
    x = random_inputs((5, 6, INPUT_SIZE))
    a = rk.dynamic_rnn(cell, x, LENGTHS.tolist())
    b = rk.dynamic_rnn(cell, x, jnp.asarray(LENGTHS, dtype=jnp.int32))
    assert_close(a, b, 0.0)


def _manual_backward(cell: rk.RNNCell, x: jax.Array, lengths: np.ndarray) -> tuple[np.ndarray, list[Any]]:
    """Each example reversed over its valid steps, run alone, outputs put back in place."""
    out = np.zeros((x.shape[0], x.shape[1], cell.output_size), np.float32)
    states = []
    for b, length in enumerate(lengths):
        if length == 0:
            states.append(cell.zero_state(1))
            continue
        o, s = rk.dynamic_rnn(cell, x[b : b + 1, :length][:, ::-1])
        out[b, :length] = np.asarray(o[0, ::-1])
        states.append(s)
    return out, states


@pytest.mark.parametrize("with_lengths", [False, True], ids=["full", "lengths"])
def test_bidirectional_dynamic_equals_manual_reverse(with_lengths: bool) -> None:
    cell_fw, cell_bw = make_cell("lstm", seed=1), make_cell("gru", seed=2)
    x = random_inputs((5, 6, INPUT_SIZE))
    lengths = LENGTHS if with_lengths else np.full(5, 6)
    (out_fw, out_bw), (state_fw, state_bw) = rk.bidirectional_dynamic_rnn(
        cell_fw, cell_bw, x, LENGTHS if with_lengths else None
    )
    want_fw, want_state_fw = rk.dynamic_rnn(cell_fw, x, lengths)
    assert_close((out_fw, state_fw), (want_fw, want_state_fw), 1e-6)
    want_bw, want_states_bw = _manual_backward(cell_bw, x, lengths)
    np.testing.assert_allclose(out_bw, want_bw, rtol=1e-6, atol=1e-6)
    for b in range(5):
        assert_close(state_bw[b : b + 1], want_states_bw[b], 1e-6)


def test_static_bidirectional_equals_dynamic_concatenated() -> None:
    cell_fw, cell_bw = make_cell("lstm_peephole_clip_proj", seed=1), make_cell("basic_rnn", seed=2)
    x = random_inputs((5, 6, INPUT_SIZE))
    outputs, state_fw, state_bw = rk.static_bidirectional_rnn(cell_fw, cell_bw, x, sequence_length=LENGTHS)
    (out_fw, out_bw), (want_fw, want_bw) = rk.bidirectional_dynamic_rnn(cell_fw, cell_bw, x, LENGTHS)
    assert len(outputs) == 6
    assert_close(jnp.stack(outputs, axis=1), jnp.concatenate([out_fw, out_bw], axis=-1), 1e-6)
    assert_close((state_fw, state_bw), (want_fw, want_bw), 1e-6)


def test_bidirectional_time_major_matches_batch_major() -> None:
    cell_fw, cell_bw = make_cell("gru", seed=1), make_cell("gru", seed=2)
    x = random_inputs((5, 6, INPUT_SIZE))
    batch = rk.bidirectional_dynamic_rnn(cell_fw, cell_bw, x, LENGTHS)
    (fw, bw), states = rk.bidirectional_dynamic_rnn(cell_fw, cell_bw, jnp.swapaxes(x, 0, 1), LENGTHS, time_major=True)
    assert_close(((jnp.swapaxes(fw, 0, 1), jnp.swapaxes(bw, 0, 1)), states), batch, 0.0)


def test_time_major_matches_batch_major() -> None:
    cell = make_cell("multi_lstm_gru")
    x = random_inputs((5, 6, INPUT_SIZE))
    out, state = rk.dynamic_rnn(cell, x, LENGTHS)
    out_tm, state_tm = rk.dynamic_rnn(cell, jnp.swapaxes(x, 0, 1), LENGTHS, time_major=True)
    assert out_tm.shape == (6, 5, cell.output_size)
    assert_close((jnp.swapaxes(out_tm, 0, 1), state_tm), (out, state), 0.0)


@pytest.mark.parametrize("unroll", [2, 4, 6, True])
def test_unroll_gives_the_same_numbers(unroll: int | bool) -> None:
    cell = make_cell("multi_lstm_gru")
    x = random_inputs((5, 6, INPUT_SIZE))
    assert_close(rk.dynamic_rnn(cell, x, LENGTHS, unroll=unroll), rk.dynamic_rnn(cell, x, LENGTHS), 1e-6)


@pytest.mark.parametrize(
    ("backend", "implementation", "cell_name", "unroll", "expected"),
    [
        ("gpu", "auto", "multi_lstm_gru", None, 4),  # auto is fused on GPUs: the measured choice
        ("gpu", "fused", "multi_lstm_gru", None, 4),
        ("gpu", "fused_stack", "multi_lstm_gru", None, 4),
        ("gpu", "per_step", "multi_lstm_gru", None, 1),  # nothing measured for per_step: 1 as before
        ("gpu", "auto", "lstm_peephole_clip_proj", None, 1),  # a cell fused can't take runs per_step
        ("cpu", "fused", "multi_lstm_gru", None, 1),
        ("gpu", "auto", "multi_lstm_gru", 2, 2),  # the caller's choice wins
    ],
)
def test_default_unroll_is_chosen_per_path_and_platform(
    monkeypatch: pytest.MonkeyPatch, backend: str, implementation: str, cell_name: str, unroll: Any, expected: int
) -> None:
    # Only tracing happens here (no lowering), so pretending to be on a GPU is safe.
    monkeypatch.setattr(jax, "default_backend", lambda: backend)
    cell = make_cell(cell_name)
    x = random_inputs((5, 6, INPUT_SIZE))
    scans = params_of(
        "scan", lambda x: rk.dynamic_rnn(cell, x, LENGTHS, unroll=unroll, implementation=implementation), x
    )
    assert {scan["unroll"] for scan in scans} == {expected}


def test_return_all_states_gives_the_state_after_every_step(per_step_path: None) -> None:
    cell = make_cell("multi_lstm_gru")
    x = random_inputs((5, 6, INPUT_SIZE))
    outputs, final, states = rk.dynamic_rnn(cell, x, LENGTHS, return_all_states=True)
    assert_close((outputs, final), rk.dynamic_rnn(cell, x, LENGTHS), 0.0)
    for t in range(6):
        _, state_t = rk.dynamic_rnn(cell, x[:, : t + 1], np.minimum(LENGTHS, t + 1))
        assert_close(jax.tree_util.tree_map(lambda s, t=t: s[:, t], states), state_t, 1e-6)
    _, _, states_tm = rk.dynamic_rnn(cell, jnp.swapaxes(x, 0, 1), LENGTHS, time_major=True, return_all_states=True)
    assert_close(jax.tree_util.tree_map(lambda s: jnp.swapaxes(s, 0, 1), states_tm), states, 0.0)


def test_last_relevant_picks_the_last_valid_step() -> None:
    cell = make_cell("gru")
    x = random_inputs((5, 6, INPUT_SIZE))
    outputs, state = rk.dynamic_rnn(cell, x, LENGTHS)
    last = rk.last_relevant(outputs, LENGTHS)
    for b, length in enumerate(LENGTHS):
        want = np.zeros(cell.output_size) if length == 0 else np.asarray(outputs[b, length - 1])
        np.testing.assert_array_equal(np.asarray(last[b]), want)
    # For a GRU the output is the state, so the last valid output is the final state.
    np.testing.assert_allclose(np.asarray(last)[LENGTHS > 0], np.asarray(state)[LENGTHS > 0], rtol=1e-6, atol=1e-6)
    static_outputs, _ = rk.static_rnn(cell, x, sequence_length=LENGTHS)
    from_list = rk.last_relevant(static_outputs, LENGTHS)
    np.testing.assert_array_equal(from_list, rk.last_relevant(jnp.stack(static_outputs, axis=1), LENGTHS))
    tm = rk.last_relevant(jnp.swapaxes(outputs, 0, 1), LENGTHS, time_major=True)
    np.testing.assert_array_equal(np.asarray(tm), np.asarray(last))


@pytest.mark.parametrize("driver", ["static", "dynamic"])
def test_jit_equals_eager(driver: str) -> None:
    cell = make_cell("multi_lstm_gru")
    x = random_inputs((5, 6, INPUT_SIZE))
    eager = run(driver, cell, x, LENGTHS)
    jitted = jax.jit(lambda c, x, n: run(driver, c, x, n))(cell, x, jnp.asarray(LENGTHS))
    assert_close(jitted, eager, 1e-6)


def test_dynamic_rnn_under_jit_runs_any_length_static_pins_num_steps() -> None:
    cell = make_cell("gru")
    dynamic = jax.jit(lambda x: rk.dynamic_rnn(cell, x)[0])
    for length in (3, 8, 11):
        assert dynamic(random_inputs((2, length, INPUT_SIZE))).shape == (2, length, cell.output_size)
    static = jax.jit(lambda x: rk.static_rnn(cell, x, num_steps=8)[0])
    assert len(static(random_inputs((2, 8, INPUT_SIZE)))) == 8
    with pytest.raises(ValueError, match=r"num_steps=8 .* got 11"):
        static(random_inputs((2, 11, INPUT_SIZE)))


def test_vmap_over_a_leading_axis_equals_a_loop() -> None:
    cell = make_cell("multi_lstm_gru")
    xs = random_inputs((3, 5, 6, INPUT_SIZE))
    mapped = jax.vmap(lambda x: rk.dynamic_rnn(cell, x, LENGTHS))(xs)
    for e in range(3):
        assert_close(jax.tree_util.tree_map(lambda a, e=e: a[e], mapped), rk.dynamic_rnn(cell, xs[e], LENGTHS), 1e-6)
    static_mapped = jax.vmap(lambda x: rk.static_rnn(cell, x, sequence_length=LENGTHS))(xs)
    assert_close(static_mapped[1], mapped[1], 1e-6)


def test_vmap_over_an_ensemble_of_cells() -> None:
    keys = jax.random.split(jax.random.key(0), 3)
    cells = eqx.filter_vmap(lambda k: rk.GRUCell(4, input_size=INPUT_SIZE, key=k))(keys)
    x = random_inputs((5, 6, INPUT_SIZE))
    out = eqx.filter_vmap(lambda c: rk.dynamic_rnn(c, x)[0])(cells)
    for e in range(3):
        one = rk.GRUCell(4, input_size=INPUT_SIZE, key=keys[e])
        np.testing.assert_allclose(out[e], rk.dynamic_rnn(one, x)[0], rtol=1e-6, atol=1e-6)


def test_bfloat16_cells_run_in_bfloat16_and_track_float32() -> None:
    cell32 = make_cell("multi_lstm_gru")
    cell16 = rk.set_variables(
        make_cell("multi_lstm_gru", dtype=jnp.bfloat16),
        {k: v.astype(jnp.bfloat16) for k, v in rk.get_variables(cell32).items()},
    )
    x = random_inputs((5, 6, INPUT_SIZE))
    out16, state16 = rk.dynamic_rnn(cell16, x.astype(jnp.bfloat16), LENGTHS)
    assert out16.dtype == jnp.bfloat16
    assert all(s.dtype == jnp.bfloat16 for s in jax.tree_util.tree_leaves(state16))
    out32, _ = rk.dynamic_rnn(cell32, x, LENGTHS)
    np.testing.assert_allclose(np.asarray(out16, np.float32), np.asarray(out32), atol=0.05)
    static16, _ = rk.static_rnn(cell16, x.astype(jnp.bfloat16), sequence_length=LENGTHS)
    np.testing.assert_allclose(np.asarray(jnp.stack(static16, 1), np.float32), np.asarray(out16, np.float32), atol=1e-2)


def test_float64_cells_keep_float64(x64: None) -> None:
    cell = make_cell("multi_lstm_gru", dtype=jnp.float64)
    out, state = rk.dynamic_rnn(cell, random_inputs((5, 6, INPUT_SIZE), jnp.float64), LENGTHS)
    assert out.dtype == jnp.float64
    assert all(s.dtype == jnp.float64 for s in jax.tree_util.tree_leaves(state))


def test_initial_state_is_used() -> None:
    cell = make_cell("lstm")
    x = random_inputs((5, 6, INPUT_SIZE))
    state = jax.tree_util.tree_map(lambda z: z + 0.5, cell.zero_state(5))
    with_state = rk.dynamic_rnn(cell, x, LENGTHS, initial_state=state)
    first_output, _ = cell(x[:, 0], state)
    np.testing.assert_allclose(with_state[0][:, 0][LENGTHS > 0], first_output[LENGTHS > 0], rtol=1e-6, atol=1e-6)
    assert np.abs(np.asarray(with_state[0]) - np.asarray(rk.dynamic_rnn(cell, x, LENGTHS)[0])).max() > 1e-3
    # length 0 keeps the given initial state, not zeros
    assert_close(
        jax.tree_util.tree_map(lambda s: s[1], with_state[1]), jax.tree_util.tree_map(lambda s: s[1], state), 0
    )


def test_numpy_inputs_are_accepted_like_a_feed_dict() -> None:
    """NumPy batches (float64 by default) become float32 without 64-bit mode, as TF1's feed cast them."""
    cell = make_cell("gru")
    x = np.random.default_rng(0).standard_normal((5, 6, INPUT_SIZE))
    out, _ = rk.dynamic_rnn(cell, x, LENGTHS)
    assert out.dtype == jnp.float32
    np.testing.assert_array_equal(out, rk.dynamic_rnn(cell, jnp.asarray(x, jnp.float32), LENGTHS)[0])
    static_out, _ = rk.static_rnn(cell, list(np.swapaxes(x, 0, 1)), sequence_length=LENGTHS)
    assert_close(jnp.stack(static_out, 1), out, 1e-6)
