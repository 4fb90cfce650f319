"""Cross-check rnnkit against TensorFlow 1 itself (tf.compat.v1, graph mode).

Every test builds the network in TF1, sets every variable from a seeded NumPy generator
(non-zero biases and peephole diagonals, so the bias paths are exercised), reads the variables back
and pushes them into rnnkit with `rk.set_variables` under the same names (which proves
that the names and shapes agree), then compares outputs and every leaf of the final state
on random inputs, to 1e-5 in float32.

Needs tensorflow (the `tf` extra) and tf-keras, imported as `tf1.py` says (TF1's cells exist
only with TF_USE_LEGACY_KERAS=1 set before tensorflow is imported). Skipped without them.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnnkit as rk

import tf1
from tf1 import rnn_cell, tf, v1

pytestmark = tf1.MARKS

RTOL = ATOL = 1e-5
BATCH, TIME, DEPTH, UNITS = 4, 6, 5, 7
LENGTHS = np.array([TIME, 0, 3, 5], dtype=np.int32)  # a full length and a length 0
CELL_CLIP, NUM_PROJ, PROJ_CLIP = 0.5, 3, 0.1

# Largest |rnnkit - TF| seen per comparison group (read by a scratch script for the report).
MAX_ABS_DIFF: dict[str, float] = {}


# --- the cells, built alike on both sides -------------------------------------------------------

CELL_KINDS = ["basic_rnn", "basic_lstm", "basic_lstm_fb0.5", "lstm", "lstm_peep_clip_proj", "gru"]


def tf_cell(kind: str) -> Any:
    if kind == "basic_rnn":
        return rnn_cell.BasicRNNCell(UNITS)
    if kind == "basic_lstm":
        return rnn_cell.BasicLSTMCell(UNITS)
    if kind == "basic_lstm_fb0.5":
        return rnn_cell.BasicLSTMCell(UNITS, forget_bias=0.5)
    if kind == "lstm":
        return rnn_cell.LSTMCell(UNITS)
    if kind == "lstm_peep_clip_proj":
        return rnn_cell.LSTMCell(UNITS, use_peepholes=True, cell_clip=CELL_CLIP, num_proj=NUM_PROJ, proj_clip=PROJ_CLIP)
    if kind == "gru":
        return rnn_cell.GRUCell(UNITS)
    if kind == "stack":  # the seed's network: LSTMCell(n) under GRUCell(2n)
        return rnn_cell.MultiRNNCell([rnn_cell.LSTMCell(UNITS), rnn_cell.GRUCell(2 * UNITS)])
    raise AssertionError(kind)


def rk_cell(kind: str, key: Any, input_size: int = DEPTH) -> rk.RNNCell:
    kw = {"input_size": input_size, "key": key}
    if kind == "basic_rnn":
        return rk.BasicRNNCell(UNITS, **kw)
    if kind == "basic_lstm":
        return rk.BasicLSTMCell(UNITS, **kw)
    if kind == "basic_lstm_fb0.5":
        return rk.BasicLSTMCell(UNITS, forget_bias=0.5, **kw)
    if kind == "lstm":
        return rk.LSTMCell(UNITS, **kw)
    if kind == "lstm_peep_clip_proj":
        return rk.LSTMCell(UNITS, use_peepholes=True, cell_clip=CELL_CLIP, num_proj=NUM_PROJ, proj_clip=PROJ_CLIP, **kw)
    if kind == "gru":
        return rk.GRUCell(UNITS, **kw)
    if kind == "stack":
        k1, k2 = jax.random.split(key)
        return rk.MultiRNNCell(
            [rk.LSTMCell(UNITS, input_size=input_size, key=k1), rk.GRUCell(2 * UNITS, input_size=UNITS, key=k2)]
        )
    raise AssertionError(kind)


# --- helpers ----------------------------------------------------------------------------------


def _inputs(rng: np.random.Generator, shape: tuple[int, ...] = (BATCH, TIME, DEPTH)) -> np.ndarray:
    return rng.standard_normal(shape).astype(np.float32)


def initialize(sess: Any, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Run TF's initializer, then overwrite every variable with values from the seeded `rng`
    (TF's own random draws were not repeatable from run to run here, and TF starts LSTM
    biases at 0 and GRU gate biases at 1, which would hide the bias paths). Kernels get
    U(-0.5, 0.5), biases and peephole diagonals U(-1, 1). Returns all variables by name."""
    sess.run(v1.global_variables_initializer())
    variables = v1.global_variables()
    assert variables, "the TF graph has no variables"
    assert any(v.name.endswith(("bias:0", "_diag:0")) for v in variables), "no bias variables to randomise"
    for v in variables:
        scale = 1.0 if v.name.endswith(("bias:0", "_diag:0")) else 0.5
        v.load(rng.uniform(-scale, scale, v.shape.as_list()).astype(np.float32), sess)
    values = sess.run(variables)
    return {v.name.removesuffix(":0"): value for v, value in zip(variables, values, strict=True)}


def load(cell: rk.RNNCell, variables: dict[str, np.ndarray], scope: str) -> rk.RNNCell:
    """Check that TF made exactly the variables rnnkit names under `scope`, then load them."""
    prefix = scope + "/"
    ours = {name: value for name, value in variables.items() if name.startswith(prefix)}
    assert set(ours) == set(rk.get_variables(cell, scope=scope)), "variable names differ from TF's"
    loaded = rk.set_variables(cell, ours, scope=scope)
    for name, value in rk.get_variables(loaded, scope=scope).items():
        np.testing.assert_array_equal(value, ours[name], err_msg=name)
    return loaded


def as_rk_structure(tree: Any) -> Any:
    """TF's fetched state (TF LSTMStateTuples, tuples, lists of arrays) in rnnkit's types."""
    if type(tree).__name__ == "LSTMStateTuple":
        return rk.LSTMStateTuple(as_rk_structure(tree.c), as_rk_structure(tree.h))
    if isinstance(tree, (tuple, list)):
        return type(tree)(as_rk_structure(t) for t in tree)
    return np.asarray(tree)


def as_tf_structure(tree: Any) -> Any:
    """An rnnkit state of NumPy arrays as TF constants, with TF's LSTMStateTuple."""
    if isinstance(tree, rk.LSTMStateTuple):
        return rnn_cell.LSTMStateTuple(tf.constant(tree.c), tf.constant(tree.h))
    if isinstance(tree, tuple):
        return tuple(as_tf_structure(t) for t in tree)
    return tf.constant(tree)


def random_state(cell: rk.RNNCell, rng: np.random.Generator) -> Any:
    return jax.tree_util.tree_map(
        lambda n: rng.uniform(-1.0, 1.0, (BATCH, n)).astype(np.float32),
        cell.state_size,
    )


def assert_close(got: Any, want: Any, group: str) -> None:
    """Same tree structure, and every leaf within tolerance of TF's; records the largest diff."""
    want = as_rk_structure(want)
    got = jax.tree_util.tree_map(np.asarray, got)
    assert jax.tree_util.tree_structure(got) == jax.tree_util.tree_structure(want)
    got_leaves = jax.tree_util.tree_flatten_with_path(got)[0]
    for (path, g), w in zip(got_leaves, jax.tree_util.tree_leaves(want), strict=True):
        where = f"{group}{jax.tree_util.keystr(path)}"
        assert g.shape == w.shape, where
        assert g.dtype == np.float32, where
        assert np.abs(w).max() > 1e-3, f"{where}: TF's reference is all ~0, the comparison would be vacuous"
        diff = float(np.abs(g - w).max())
        MAX_ABS_DIFF[group] = max(MAX_ABS_DIFF.get(group, 0.0), diff)
        np.testing.assert_allclose(g, w, rtol=RTOL, atol=ATOL, err_msg=where)


def assert_masked(outputs: np.ndarray, lengths: np.ndarray, time_axis: int = 1) -> None:
    """TF1 zeroes outputs past each example's length; checks the reference exercises that."""
    out = np.moveaxis(np.asarray(outputs), time_axis, 1)
    for b, n in enumerate(lengths):
        assert not out[b, n:].any(), f"example {b}: outputs past length {n} are not zero"
        assert n == 0 or out[b, :n].any()


# --- 1. each cell alone under dynamic_rnn ------------------------------------------------------


@pytest.mark.parametrize("with_lengths", [False, True], ids=["full", "lengths"])
@pytest.mark.parametrize("kind", CELL_KINDS)
def test_cell_dynamic_rnn(kind: str, with_lengths: bool) -> None:
    rng = np.random.default_rng(1)
    x = _inputs(rng)
    lengths = LENGTHS if with_lengths else None
    g = tf.Graph()
    with g.as_default(), v1.Session(graph=g) as sess:
        v1.set_random_seed(1)
        outputs, state = v1.nn.dynamic_rnn(tf_cell(kind), tf.constant(x), sequence_length=lengths, dtype=tf.float32)
        variables = initialize(sess, rng)
        want_out, want_state = sess.run((outputs, state))

    cell = load(rk_cell(kind, jax.random.key(0)), variables, "rnn")
    got_out, got_state = rk.dynamic_rnn(cell, jnp.asarray(x), sequence_length=lengths, dtype=jnp.float32)
    assert_close(got_out, want_out, f"dynamic_rnn/{kind}")
    assert_close(got_state, want_state, f"dynamic_rnn/{kind}")
    if with_lengths:
        assert_masked(want_out, LENGTHS)
    if kind == "lstm_peep_clip_proj":  # the clips must actually bite for this case to test them
        assert np.abs(want_state.c).max() == pytest.approx(CELL_CLIP)
        assert np.abs(want_out).max() == pytest.approx(PROJ_CLIP)


# --- 2. the seed's stack under static_rnn and dynamic_rnn ---------------------------------------


@pytest.mark.parametrize("with_lengths", [False, True], ids=["full", "lengths"])
@pytest.mark.parametrize("driver", ["static_rnn", "dynamic_rnn"])
def test_stack(driver: str, with_lengths: bool) -> None:
    rng = np.random.default_rng(2)
    x = _inputs(rng)
    lengths = LENGTHS if with_lengths else None
    g = tf.Graph()
    with g.as_default(), v1.Session(graph=g) as sess:
        v1.set_random_seed(2)
        if driver == "static_rnn":
            steps = tf.unstack(tf.constant(x), TIME, 1)
            outputs, state = v1.nn.static_rnn(tf_cell("stack"), steps, sequence_length=lengths, dtype=tf.float32)
        else:
            outputs, state = v1.nn.dynamic_rnn(
                tf_cell("stack"), tf.constant(x), sequence_length=lengths, dtype=tf.float32
            )
        variables = initialize(sess, rng)
        want_out, want_state = sess.run((outputs, state))

    cell = load(rk_cell("stack", jax.random.key(0)), variables, "rnn")
    if driver == "static_rnn":
        steps = [jnp.asarray(x[:, t]) for t in range(TIME)]
        got_out, got_state = rk.static_rnn(cell, steps, sequence_length=lengths, dtype=jnp.float32)
        assert isinstance(got_out, list)
    else:
        got_out, got_state = rk.dynamic_rnn(cell, jnp.asarray(x), sequence_length=lengths, dtype=jnp.float32)
    assert_close(got_out, want_out, f"{driver}/stack")
    assert_close(got_state, want_state, f"{driver}/stack")
    if with_lengths:
        assert_masked(np.stack(want_out, axis=1) if driver == "static_rnn" else want_out, LENGTHS)
        # the length-0 example keeps the zero initial state; the full one ends at the last step
        assert not any(leaf[1].any() for leaf in jax.tree_util.tree_leaves(as_rk_structure(want_state)))


# --- 3. bidirectional drivers -------------------------------------------------------------------

PAIRS = [
    pytest.param("lstm_peep_clip_proj", "gru", False, id="lstmp-gru"),
    pytest.param("lstm", "lstm", True, id="lstm-lstm-initial_state"),  # a fw/bw swap shows in the numbers
]


@pytest.mark.parametrize(("fw_kind", "bw_kind", "with_initial_state"), PAIRS)
@pytest.mark.parametrize("driver", ["bidirectional_dynamic_rnn", "static_bidirectional_rnn"])
def test_bidirectional(driver: str, fw_kind: str, bw_kind: str, with_initial_state: bool) -> None:
    rng = np.random.default_rng(3)
    x = _inputs(rng)
    key_fw, key_bw = jax.random.split(jax.random.key(0))
    cell_fw, cell_bw = rk_cell(fw_kind, key_fw), rk_cell(bw_kind, key_bw)
    init_fw = random_state(cell_fw, rng) if with_initial_state else None
    init_bw = random_state(cell_bw, rng) if with_initial_state else None
    g = tf.Graph()
    with g.as_default(), v1.Session(graph=g) as sess:
        v1.set_random_seed(3)
        tf_init = {
            "initial_state_fw": None if init_fw is None else as_tf_structure(init_fw),
            "initial_state_bw": None if init_bw is None else as_tf_structure(init_bw),
        }
        tf_fw, tf_bw = tf_cell(fw_kind), tf_cell(bw_kind)
        if driver == "bidirectional_dynamic_rnn":
            outputs, states = v1.nn.bidirectional_dynamic_rnn(
                tf_fw, tf_bw, tf.constant(x), sequence_length=LENGTHS, dtype=tf.float32, **tf_init
            )
        else:
            steps = tf.unstack(tf.constant(x), TIME, 1)
            out, state_fw, state_bw = v1.nn.static_bidirectional_rnn(
                tf_fw, tf_bw, steps, sequence_length=LENGTHS, dtype=tf.float32, **tf_init
            )
            outputs, states = out, (state_fw, state_bw)
        variables = initialize(sess, rng)
        want_out, want_states = sess.run((outputs, states))

    assert set(variables) == set(rk.get_variables(cell_fw, scope="bidirectional_rnn/fw")) | set(
        rk.get_variables(cell_bw, scope="bidirectional_rnn/bw")
    )
    cell_fw = load(cell_fw, variables, "bidirectional_rnn/fw")
    cell_bw = load(cell_bw, variables, "bidirectional_rnn/bw")
    rk_init = {"initial_state_fw": init_fw, "initial_state_bw": init_bw}
    if driver == "bidirectional_dynamic_rnn":
        got_out, got_states = rk.bidirectional_dynamic_rnn(
            cell_fw, cell_bw, jnp.asarray(x), sequence_length=LENGTHS, dtype=jnp.float32, **rk_init
        )
        for direction in want_out:
            assert_masked(direction, LENGTHS)
    else:
        steps = [jnp.asarray(x[:, t]) for t in range(TIME)]
        got_out, state_fw, state_bw = rk.static_bidirectional_rnn(
            cell_fw, cell_bw, steps, sequence_length=LENGTHS, dtype=jnp.float32, **rk_init
        )
        got_states = (state_fw, state_bw)
        assert_masked(np.stack(want_out, axis=1), LENGTHS)
    assert_close(got_out, want_out, f"{driver}/{fw_kind}-{bw_kind}")
    assert_close(got_states, want_states, f"{driver}/{fw_kind}-{bw_kind}")


# --- 4. time-major dynamic_rnn ------------------------------------------------------------------


def test_dynamic_rnn_time_major() -> None:
    rng = np.random.default_rng(4)
    x = _inputs(rng, (TIME, BATCH, DEPTH))
    g = tf.Graph()
    with g.as_default(), v1.Session(graph=g) as sess:
        v1.set_random_seed(4)
        outputs, state = v1.nn.dynamic_rnn(
            tf_cell("stack"), tf.constant(x), sequence_length=LENGTHS, dtype=tf.float32, time_major=True
        )
        variables = initialize(sess, rng)
        want_out, want_state = sess.run((outputs, state))

    assert want_out.shape == (TIME, BATCH, 2 * UNITS)
    assert_masked(want_out, LENGTHS, time_axis=0)
    cell = load(rk_cell("stack", jax.random.key(0)), variables, "rnn")
    got_out, got_state = rk.dynamic_rnn(
        cell, jnp.asarray(x), sequence_length=LENGTHS, dtype=jnp.float32, time_major=True
    )
    assert_close(got_out, want_out, "dynamic_rnn/time_major/stack")
    assert_close(got_state, want_state, "dynamic_rnn/time_major/stack")


# --- 5. one step of a cell, from a random state -------------------------------------------------


@pytest.mark.parametrize("kind", [*CELL_KINDS, "stack"])
def test_single_step(kind: str) -> None:
    rng = np.random.default_rng(5)
    x = _inputs(rng, (BATCH, DEPTH))
    cell = rk_cell(kind, jax.random.key(0))
    state = random_state(cell, rng)
    g = tf.Graph()
    with g.as_default(), v1.Session(graph=g) as sess:
        v1.set_random_seed(5)
        with v1.variable_scope("step"):
            output, new_state = tf_cell(kind)(tf.constant(x), as_tf_structure(state))
        variables = initialize(sess, rng)
        want_out, want_state = sess.run((output, new_state))

    cell = load(cell, variables, "step")
    got_out, got_state = cell(jnp.asarray(x), jax.tree_util.tree_map(jnp.asarray, state))
    assert_close(got_out, want_out, f"cell_call/{kind}")
    assert_close(got_state, want_state, f"cell_call/{kind}")
