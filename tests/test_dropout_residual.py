"""DropoutWrapper with TF1's keep-probability semantics, and ResidualWrapper."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnnkit as rk

from cases import INPUT_SIZE, assert_close, make_cell, random_inputs


def identity_rnn(size: int) -> rk.BasicRNNCell:
    """output = state = x: kernel [I; 0], zero bias, identity activation. Makes masks visible."""
    cell = rk.BasicRNNCell(size, input_size=size, key=jax.random.key(0), activation=lambda v: v)
    kernel = np.concatenate([np.eye(size), np.zeros((size, size))]).astype(np.float32)
    return rk.set_variables(
        cell, {"rnn/basic_rnn_cell/kernel": kernel, "rnn/basic_rnn_cell/bias": np.zeros(size, np.float32)}
    )


def test_keep_probabilities_of_one_and_inference_mode_are_the_plain_cell(per_step_path: None) -> None:
    cell = make_cell("lstm")
    x = random_inputs((5, 6, INPUT_SIZE))
    plain = rk.dynamic_rnn(cell, x)
    assert_close(rk.dynamic_rnn(rk.DropoutWrapper(cell), x), plain, 0.0)
    wrapped = rk.DropoutWrapper(cell, 0.5, 0.5, 0.5, seed=0)
    assert np.abs(np.asarray(rk.dynamic_rnn(wrapped, x)[0]) - np.asarray(plain[0])).max() > 1e-2
    assert_close(rk.dynamic_rnn(eqx.nn.inference_mode(wrapped), x), plain, 0.0)


@pytest.mark.parametrize("variational", [False, True])
def test_output_dropout_zeroes_or_scales_by_one_over_keep(variational: bool, per_step_path: None) -> None:
    cell = make_cell("gru")
    x = random_inputs((64, 6, INPUT_SIZE))
    plain, plain_state = rk.dynamic_rnn(cell, x)
    dropped, state = rk.dynamic_rnn(
        rk.DropoutWrapper(cell, output_keep_prob=0.7, variational_recurrent=variational, seed=3), x
    )
    assert_close(state, plain_state, 0.0)  # output dropout never touches the state
    kept = np.asarray(dropped) != 0
    np.testing.assert_allclose(np.asarray(dropped)[kept], np.asarray(plain)[kept] / 0.7, rtol=1e-6)
    assert kept.mean() == pytest.approx(0.7, abs=0.05 if not variational else 0.3)
    pattern = kept.reshape(64, 6, -1)
    same_over_time = (pattern == pattern[:, :1]).all()
    same_over_batch = (pattern == pattern[:1]).all()
    # TF1: variational masks are [1, size], shared by the batch and every step; others are fresh.
    assert same_over_time == variational
    assert same_over_batch == variational


def test_input_dropout_feeds_the_cell_masked_scaled_inputs() -> None:
    cell = rk.DropoutWrapper(identity_rnn(8), input_keep_prob=0.5, seed=1)
    x = random_inputs((32, 4, 8))
    out, _ = rk.dynamic_rnn(cell, x)
    kept = np.asarray(out) != 0
    np.testing.assert_allclose(np.asarray(out)[kept], np.asarray(x)[kept] / 0.5, rtol=1e-6)
    assert kept.mean() == pytest.approx(0.5, abs=0.05)


def test_state_dropout_never_drops_lstm_c() -> None:
    cell = make_cell("lstm")
    wrapped = rk.DropoutWrapper(cell, state_keep_prob=0.5, seed=2)
    x = random_inputs((16, INPUT_SIZE))
    state = jax.tree_util.tree_map(lambda z: z + 0.3, cell.zero_state(16))
    out, new_state = wrapped(x, state)
    want_out, want_state = cell(x, state)
    np.testing.assert_array_equal(new_state.c, want_state.c)
    np.testing.assert_array_equal(out, want_out)  # output_keep_prob is 1.0
    h_kept = np.asarray(new_state.h) != 0
    np.testing.assert_allclose(np.asarray(new_state.h)[h_kept], np.asarray(want_state.h)[h_kept] / 0.5, rtol=1e-6)
    assert 0.3 < h_kept.mean() < 0.7


def test_new_key_new_masks_same_key_same_masks() -> None:
    cell = make_cell("gru")
    x = random_inputs((8, 6, INPUT_SIZE))
    a = rk.DropoutWrapper(cell, output_keep_prob=0.5, key=jax.random.key(0))
    b = eqx.tree_at(lambda w: w.key, a, jax.random.key(1))
    assert_close(rk.dynamic_rnn(a, x), rk.dynamic_rnn(a, x), 0.0)
    assert not np.array_equal(rk.dynamic_rnn(a, x)[0], rk.dynamic_rnn(b, x)[0])


def test_dropout_static_equals_dynamic() -> None:
    """Both drivers fold the same step index into the key, so they draw the same masks."""
    stack = make_cell("multi_lstm_gru")
    wrapped = rk.MultiRNNCell(
        [
            rk.DropoutWrapper(stack.cells[0], 0.8, 0.9, 0.7, seed=1),
            rk.DropoutWrapper(stack.cells[1], 0.8, 0.9, 0.7, variational_recurrent=True, seed=2),
        ]
    )
    x = random_inputs((5, 6, INPUT_SIZE))
    lengths = np.array([6, 0, 3, 1, 5])
    static_out, static_state = rk.static_rnn(wrapped, x, sequence_length=lengths)
    assert_close((jnp.stack(static_out, 1), static_state), rk.dynamic_rnn(wrapped, x, lengths), 1e-6)


def test_dropout_gradients_flow_with_filter_grad() -> None:
    wrapped = rk.DropoutWrapper(make_cell("gru"), output_keep_prob=0.5, seed=0)
    x = random_inputs((4, 6, INPUT_SIZE))
    grads = eqx.filter_grad(lambda c: jnp.sum(rk.dynamic_rnn(c, x)[0] ** 2))(wrapped)
    assert np.abs(np.asarray(grads.cell.gates_kernel)).max() > 0


def test_residual_wrapper_adds_the_input(per_step_path: None) -> None:
    cell = make_cell("gru", input_size=7)
    x = random_inputs((5, 6, 7))
    out, state = rk.dynamic_rnn(rk.ResidualWrapper(cell), x)
    plain, plain_state = rk.dynamic_rnn(cell, x)
    np.testing.assert_allclose(out, plain + x, rtol=1e-6, atol=1e-6)
    assert_close(state, plain_state, 0.0)
    scaled, _ = rk.dynamic_rnn(rk.ResidualWrapper(cell, residual_fn=lambda i, o: o - 2 * i), x)
    np.testing.assert_allclose(scaled, plain - 2 * x, rtol=1e-6, atol=1e-6)
