"""Bad input raises at trace time, and the message names the argument, what was expected and
what came."""

from __future__ import annotations

import re
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnnkit as rk


def lstm(units: int = 4, input_size: int = 3, **kwargs: Any) -> rk.LSTMCell:
    return rk.LSTMCell(units, input_size=input_size, key=jax.random.key(0), **kwargs)


X = jnp.zeros((2, 5, 3), jnp.float32)


def raises(exc: type[Exception], *fragments: str) -> Any:
    """pytest.raises matching every fragment literally, in order."""
    return pytest.raises(exc, match=".*".join(re.escape(f) for f in fragments))


@pytest.mark.parametrize(
    ("call", "exc", "fragments"),
    [
        # wrong rank
        (
            lambda: rk.dynamic_rnn(lstm(), jnp.zeros((2, 3))),
            ValueError,
            ["inputs must be [batch, time, depth]", "(2, 3)"],
        ),
        (
            lambda: rk.dynamic_rnn(lstm(), jnp.zeros((2, 5, 3)), time_major=True, sequence_length=[1, 2]),
            ValueError,
            ["sequence_length must be [batch] = (5,)", "got shape (2,)"],
        ),
        (
            lambda: rk.static_rnn(lstm(), jnp.zeros((2, 3))),
            ValueError,
            ["inputs must be [batch, time, depth]", "(2, 3)"],
        ),
        (lambda: lstm()(jnp.zeros((2, 1, 3)), lstm().zero_state(2)), ValueError, ["inputs must be [batch, depth]"]),
        # wrong depth
        (
            lambda: rk.dynamic_rnn(lstm(), jnp.zeros((128, 28, 27))),
            ValueError,
            ["inputs must be [batch, time, 3] for input_size=3; got (128, 28, 27)"],
        ),
        (
            lambda: rk.static_rnn(lstm(), [jnp.zeros((2, 3)), jnp.zeros((2, 4))]),
            ValueError,
            ["inputs[1] must be [batch, 3] for input_size=3; got (2, 4)"],
        ),
        (
            lambda: rk.dynamic_rnn(lstm(), jnp.zeros((5, 2, 4)), time_major=True),
            ValueError,
            ["inputs must be [time, batch, 3] for input_size=3; got (5, 2, 4)"],
        ),
        # mismatched batch sizes
        (
            lambda: rk.static_rnn(lstm(), [jnp.zeros((2, 3)), jnp.zeros((4, 3))]),
            ValueError,
            ["inputs[1] must have the batch size of inputs[0], (2, 3); got (4, 3)"],
        ),
        (
            lambda: rk.dynamic_rnn(lstm(), X, initial_state=lstm().zero_state(3)),
            ValueError,
            [
                "initial_state must be LSTMStateTuple(c=(2, 4), h=(2, 4)) for batch_size=2",
                "got LSTMStateTuple(c=(3, 4)",
            ],
        ),
        (
            lambda: lstm()(jnp.zeros((2, 3)), lstm().zero_state(5)),
            ValueError,
            ["state must be LSTMStateTuple(c=(2, 4), h=(2, 4))", "got LSTMStateTuple(c=(5, 4), h=(5, 4))"],
        ),
        # wrong state structure
        (
            lambda: rk.dynamic_rnn(lstm(), X, initial_state=jnp.zeros((2, 4))),
            ValueError,
            ["initial_state must have the structure of cell.state_size LSTMStateTuple(c=4, h=4); got (2, 4)"],
        ),
        # empty input list / no steps
        (lambda: rk.static_rnn(lstm(), []), ValueError, ["inputs must not be empty", "got an empty list"]),
        (lambda: rk.static_rnn(lstm(), jnp.zeros((2, 0, 3))), ValueError, ["inputs must not be empty", "(2, 0, 3)"]),
        # non-float input, wrong float dtype
        (
            lambda: rk.dynamic_rnn(lstm(), jnp.zeros((2, 5, 3), jnp.int32)),
            TypeError,
            ["inputs must be floating point", "got int32"],
        ),
        (
            lambda: rk.static_rnn(lstm(), [jnp.zeros((2, 3), jnp.int32)]),
            TypeError,
            ["inputs[0] must be floating point", "got int32"],
        ),
        (
            lambda: rk.dynamic_rnn(lstm(), jnp.zeros((2, 5, 3), jnp.bfloat16)),
            TypeError,
            ["inputs must have the cell's dtype float32; got bfloat16"],
        ),
        (lambda: rk.dynamic_rnn(lstm(), [[1.0, 2.0, 3.0]]), TypeError, ["inputs must be an array", "got list"]),
        (
            lambda: rk.dynamic_rnn(lstm(), X, dtype=jnp.float16),
            TypeError,
            ["dtype must be the cell's dtype float32 (or None); got float16"],
        ),
        # sequence_length: shape, dtype, values
        (
            lambda: rk.dynamic_rnn(lstm(), X, sequence_length=jnp.array([[1, 2]])),
            ValueError,
            ["sequence_length must be [batch] = (2,); got shape (1, 2)"],
        ),
        (
            lambda: rk.static_rnn(lstm(), X, sequence_length=[1, 2, 3]),
            ValueError,
            ["sequence_length must be [batch] = (2,); got shape (3,)"],
        ),
        (
            lambda: rk.dynamic_rnn(lstm(), X, sequence_length=jnp.array([1.0, 2.0])),
            TypeError,
            ["sequence_length must be integers shaped [batch]; got dtype float32"],
        ),
        (
            lambda: rk.dynamic_rnn(lstm(), X, sequence_length=[2, 6]),
            ValueError,
            ["sequence_length values must lie in [0, 5]", "got 6 at batch index 1"],
        ),
        (
            lambda: rk.static_rnn(lstm(), X, sequence_length=np.array([-1, 2])),
            ValueError,
            ["sequence_length values must lie in [0, 5]", "got -1 at batch index 0"],
        ),
        (
            lambda: rk.last_relevant(jnp.zeros((2, 5, 4)), [1, 2, 3]),
            ValueError,
            ["sequence_length must be [batch] = (2,); got shape (3,)"],
        ),
        (
            lambda: rk.last_relevant(jnp.zeros((2, 5)), [1, 2]),
            ValueError,
            ["outputs must be [batch, time, units] or a list of [batch, units]; got (2, 5)"],
        ),
        # static_rnn built for one length, called with another
        (lambda: rk.static_rnn(lstm(), X, num_steps=28), ValueError, ["num_steps=28", "got 5"]),
        (
            lambda: rk.static_bidirectional_rnn(lstm(), lstm(), X, num_steps=28),
            ValueError,
            ["num_steps=28", "got 5"],
        ),
        # unroll
        (lambda: rk.dynamic_rnn(lstm(), X, unroll=0), ValueError, ["unroll must be a positive int", "got 0"]),
        # not a cell
        (lambda: rk.dynamic_rnn("lstm", X), TypeError, ["cell must be an rnnkit RNN cell; got str"]),
        (
            lambda: rk.bidirectional_dynamic_rnn(lstm(), lstm(input_size=4), X),
            ValueError,
            ["cell_bw.input_size must equal cell_fw.input_size = 3", "got 4"],
        ),
        (lambda: rk.get_variables(object()), TypeError, ["cell must be an rnnkit RNN cell; got object"]),
        (
            lambda: rk.bidirectional_dynamic_rnn(lstm(), lstm(), X, initial_state_bw=lstm().zero_state(3)),
            ValueError,
            ["initial_state_bw must be LSTMStateTuple(c=(2, 4), h=(2, 4)) for batch_size=2"],
        ),
        (
            lambda: rk.static_bidirectional_rnn(lstm(), lstm(), X, initial_state_fw=jnp.zeros((2, 4))),
            ValueError,
            ["initial_state_fw must have the structure of cell.state_size"],
        ),
    ],
)
def test_bad_driver_input(call: Any, exc: type[Exception], fragments: list[str]) -> None:
    with raises(exc, *fragments):
        call()


def test_errors_raise_at_trace_time_under_jit() -> None:
    cell = lstm()
    with raises(ValueError, "inputs must be [batch, time, 3] for input_size=3; got (2, 5, 4)"):
        jax.jit(lambda x: rk.dynamic_rnn(cell, x))(jnp.zeros((2, 5, 4)))
    # Under jit the lengths are not known at trace time: the shape is still checked ...
    with raises(ValueError, "sequence_length must be [batch] = (2,); got shape (3,)"):
        jax.jit(lambda n: rk.dynamic_rnn(cell, X, n))(jnp.array([1, 2, 3]))
    # ... and out-of-range values act as clipped to [0, time], as documented.
    out, _ = jax.jit(lambda n: rk.dynamic_rnn(cell, X, n))(jnp.array([-3, 99]))
    want, _ = rk.dynamic_rnn(cell, X, [0, 5])
    np.testing.assert_array_equal(out, want)


@pytest.mark.parametrize(
    ("build", "exc", "fragments"),
    [
        (
            lambda: rk.MultiRNNCell([lstm(4, 3), rk.GRUCell(6, input_size=5, key=jax.random.key(1))]),
            ValueError,
            ["cells[1].input_size must equal cells[0].output_size = 4", "got 5"],
        ),
        (
            lambda: rk.MultiRNNCell([lstm(4, 3, num_proj=2), rk.GRUCell(6, input_size=4, key=jax.random.key(1))]),
            ValueError,
            ["cells[1].input_size must equal cells[0].output_size = 2", "got 4"],
        ),
        (lambda: rk.MultiRNNCell([]), ValueError, ["cells must be a non-empty list", "got an empty list"]),
        (lambda: rk.MultiRNNCell([lstm(), "gru"]), TypeError, ["cells[1] must be an rnnkit RNN cell; got str"]),
        (
            lambda: rk.MultiRNNCell([lstm(4, 3), lstm(4, 4, dtype=jnp.bfloat16)]),
            TypeError,
            ["cells[1].dtype must equal cells[0].dtype = float32; got bfloat16"],
        ),
        (lambda: lstm(0), ValueError, ["num_units must be a positive int; got 0"]),
        (lambda: lstm(4, input_size=2.5), ValueError, ["input_size must be a positive int; got 2.5"]),
        (lambda: lstm(num_proj=0), ValueError, ["num_proj must be a positive int or None; got 0"]),
        (lambda: lstm(cell_clip=-1.0), ValueError, ["cell_clip must be a positive number or None; got -1.0"]),
        (lambda: lstm(proj_clip=1.0), ValueError, ["proj_clip needs num_proj"]),
        (lambda: lstm(dtype=jnp.int32), TypeError, ["dtype must be a floating-point dtype", "got int32"]),
        (lambda: lstm(dtype=jnp.float64), ValueError, ["dtype=float64 needs JAX's 64-bit mode"]),
        (
            lambda: rk.ResidualWrapper(lstm(4, 3)),
            ValueError,
            ["cell.output_size must equal cell.input_size = 3", "got 4"],
        ),
        (
            lambda: rk.DropoutWrapper(lstm(), input_keep_prob=0.0, seed=1),
            ValueError,
            ["input_keep_prob must be a number in (0, 1]", "got 0.0"],
        ),
        (
            lambda: rk.DropoutWrapper(lstm(), output_keep_prob=1.5, seed=1),
            ValueError,
            ["output_keep_prob must be a number in (0, 1]", "got 1.5"],
        ),
        (lambda: rk.DropoutWrapper(lstm(), state_keep_prob=0.5), ValueError, ["needs key= (or seed=)"]),
        (
            lambda: rk.DropoutWrapper(lstm(), state_keep_prob=0.5, seed=1, key=jax.random.key(1)),
            ValueError,
            ["either key or seed"],
        ),
        (lambda: rk.DropoutWrapper("cell"), TypeError, ["cell must be an rnnkit RNN cell; got str"]),
        (lambda: lstm().zero_state(-1), ValueError, ["batch_size must be a non-negative int; got -1"]),
        (
            lambda: lstm().zero_state(2, jnp.bfloat16),
            TypeError,
            ["dtype must be the cell's dtype float32 (or None); got bfloat16"],
        ),
    ],
)
def test_bad_cell_construction(build: Any, exc: type[Exception], fragments: list[str]) -> None:
    with raises(exc, *fragments):
        build()
