"""Weights by TF1 variable path: the names TF1 writes, strict loading, bit-identical round
trips, and TF1's initializers."""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnnkit as rk

from cases import CELL_CASES, make_cell


def seed_cell() -> rk.MultiRNNCell:
    k1, k2 = jax.random.split(jax.random.key(0))
    return rk.MultiRNNCell([rk.LSTMCell(128, input_size=28, key=k1), rk.GRUCell(256, input_size=128, key=k2)])


def test_seed_model_has_tf1_names_and_shapes() -> None:
    """The table of the seed's variables in TF1 (reference §2.8); with the 2 570 of the dense
    head this is the seed's 378 634 parameters."""
    shapes = {name: value.shape for name, value in rk.get_variables(seed_cell()).items()}
    assert shapes == {
        "rnn/multi_rnn_cell/cell_0/lstm_cell/kernel": (156, 512),
        "rnn/multi_rnn_cell/cell_0/lstm_cell/bias": (512,),
        "rnn/multi_rnn_cell/cell_1/gru_cell/gates/kernel": (384, 512),
        "rnn/multi_rnn_cell/cell_1/gru_cell/gates/bias": (512,),
        "rnn/multi_rnn_cell/cell_1/gru_cell/candidate/kernel": (384, 256),
        "rnn/multi_rnn_cell/cell_1/gru_cell/candidate/bias": (256,),
    }
    assert sum(math.prod(s) for s in shapes.values()) + 256 * 10 + 10 == 378_634


@pytest.mark.parametrize(
    ("cell", "names"),
    [
        (rk.BasicRNNCell(3, input_size=2, key=jax.random.key(0)), {"basic_rnn_cell/kernel", "basic_rnn_cell/bias"}),
        (rk.BasicLSTMCell(3, input_size=2, key=jax.random.key(0)), {"basic_lstm_cell/kernel", "basic_lstm_cell/bias"}),
        (
            rk.LSTMCell(3, input_size=2, key=jax.random.key(0), use_peepholes=True, num_proj=2),
            {
                "lstm_cell/kernel",
                "lstm_cell/bias",
                "lstm_cell/w_f_diag",
                "lstm_cell/w_i_diag",
                "lstm_cell/w_o_diag",
                "lstm_cell/projection/kernel",
            },
        ),
        (
            rk.GRUCell(3, input_size=2, key=jax.random.key(0), reset_after=True),
            {
                "cudnn_compatible_gru_cell/gates/kernel",
                "cudnn_compatible_gru_cell/gates/bias",
                "cudnn_compatible_gru_cell/candidate/input_projection/kernel",
                "cudnn_compatible_gru_cell/candidate/input_projection/bias",
                "cudnn_compatible_gru_cell/candidate/hidden_projection/kernel",
                "cudnn_compatible_gru_cell/candidate/hidden_projection/bias",
            },
        ),
        (
            rk.DropoutWrapper(rk.ResidualWrapper(rk.GRUCell(2, input_size=2, key=jax.random.key(0))), seed=1),
            {"gru_cell/gates/kernel", "gru_cell/gates/bias", "gru_cell/candidate/kernel", "gru_cell/candidate/bias"},
        ),
    ],
)
def test_cell_variable_names(cell: rk.RNNCell, names: set[str]) -> None:
    assert set(rk.get_variables(cell, scope="bidirectional_rnn/fw")) == {f"bidirectional_rnn/fw/{n}" for n in names}


def test_cell_name_can_be_overridden_like_tf1() -> None:
    cell = rk.LSTMCell(3, input_size=2, key=jax.random.key(0), name="basic_lstm_cell")
    assert set(rk.get_variables(cell)) == {"rnn/basic_lstm_cell/kernel", "rnn/basic_lstm_cell/bias"}


@pytest.mark.parametrize("name", sorted(CELL_CASES))
def test_round_trip_is_bit_identical(name: str) -> None:
    cell = make_cell(name)
    variables = rk.get_variables(cell)
    rebuilt = rk.set_variables(CELL_CASES[name].make(jax.random.key(99), 5, jnp.float32), variables)
    again = rk.get_variables(rebuilt)
    assert again.keys() == variables.keys()
    for key, value in variables.items():
        assert again[key].dtype == value.dtype
        np.testing.assert_array_equal(again[key].view(np.uint8), value.view(np.uint8))
    x = jnp.ones((2, 6, 5), jnp.float32)
    np.testing.assert_array_equal(rk.dynamic_rnn(rebuilt, x)[0], rk.dynamic_rnn(cell, x)[0])


def test_set_variables_returns_a_new_cell_and_leaves_the_old_one() -> None:
    cell = rk.GRUCell(3, input_size=2, key=jax.random.key(0))
    before = rk.get_variables(cell)
    zeros = {k: np.zeros_like(v) for k, v in before.items()}
    new = rk.set_variables(cell, zeros)
    assert not any(np.any(v) for v in rk.get_variables(new).values())
    for k, v in rk.get_variables(cell).items():
        np.testing.assert_array_equal(v, before[k])


def test_set_variables_is_strict_and_names_each_offender() -> None:
    cell = seed_cell()
    good = rk.get_variables(cell)
    kernel = "rnn/multi_rnn_cell/cell_0/lstm_cell/kernel"
    bias = "rnn/multi_rnn_cell/cell_1/gru_cell/gates/bias"

    missing = {k: v for k, v in good.items() if k != kernel}
    with pytest.raises(ValueError, match=rf"missing \['{kernel}'\]"):
        rk.set_variables(cell, missing)

    extra = {**good, "rnn/multi_rnn_cell/cell_2/gru_cell/gates/bias": good[bias]}
    with pytest.raises(ValueError, match=r"unexpected \['rnn/multi_rnn_cell/cell_2/gru_cell/gates/bias'\]"):
        rk.set_variables(cell, extra)

    wrong_shape = {**good, kernel: good[kernel][:-1]}
    with pytest.raises(ValueError, match=rf"{kernel} must have shape \(156, 512\); got \(155, 512\)"):
        rk.set_variables(cell, wrong_shape)

    wrong_dtype = {**good, bias: good[bias].astype(np.float16)}
    with pytest.raises(ValueError, match=rf"{bias} must have dtype float32; got float16"):
        rk.set_variables(cell, wrong_dtype)

    with pytest.raises(ValueError, match=r"missing \['other/multi_rnn_cell"):
        rk.set_variables(cell, good, scope="other")


def test_scope_must_be_a_plain_scope() -> None:
    cell = rk.GRUCell(3, input_size=2, key=jax.random.key(0))
    for scope in ("", "/rnn", "rnn/"):
        with pytest.raises(ValueError, match="scope must be a non-empty variable scope"):
            rk.get_variables(cell, scope=scope)


def glorot_limit(fan_in: int, fan_out: int) -> float:
    return math.sqrt(6.0 / (fan_in + fan_out))


def check_uniform(values: np.ndarray, limit: float) -> None:
    """Within the bound, reaching near it, and with U(-l, l)'s variance l^2 / 3 (to 10%)."""
    assert np.abs(values).max() <= limit
    assert np.abs(values).max() > 0.97 * limit
    assert abs(values.mean()) < 0.05 * limit
    assert values.var() == pytest.approx(limit**2 / 3, rel=0.1)


def test_initializers_match_tf1() -> None:
    variables = rk.get_variables(seed_cell())
    lstm, gru = "rnn/multi_rnn_cell/cell_0/lstm_cell", "rnn/multi_rnn_cell/cell_1/gru_cell"
    check_uniform(variables[f"{lstm}/kernel"], glorot_limit(156, 512))
    check_uniform(variables[f"{gru}/gates/kernel"], glorot_limit(384, 512))
    check_uniform(variables[f"{gru}/candidate/kernel"], glorot_limit(384, 256))
    assert not variables[f"{lstm}/bias"].any()  # forget_bias is added at run time, not stored
    np.testing.assert_array_equal(variables[f"{gru}/gates/bias"], np.ones(512, np.float32))
    assert not variables[f"{gru}/candidate/bias"].any()


def test_peephole_and_projection_initializers_match_tf1() -> None:
    cell = rk.LSTMCell(400, input_size=30, key=jax.random.key(3), use_peepholes=True, num_proj=200)
    variables = rk.get_variables(cell)
    # TF counts a vector's fan_in and fan_out as its length: limit sqrt(6 / (2 n)).
    for diag in ("w_f_diag", "w_i_diag", "w_o_diag"):
        check_uniform(variables[f"rnn/lstm_cell/{diag}"], glorot_limit(400, 400))
    check_uniform(variables["rnn/lstm_cell/projection/kernel"], glorot_limit(400, 200))
    assert variables["rnn/lstm_cell/kernel"].shape == (30 + 200, 1600)
    assert not np.array_equal(variables["rnn/lstm_cell/w_f_diag"], variables["rnn/lstm_cell/w_i_diag"])


def test_reset_after_gru_initializers() -> None:
    variables = rk.get_variables(rk.GRUCell(300, input_size=100, key=jax.random.key(4), reset_after=True))
    prefix = "rnn/cudnn_compatible_gru_cell"
    np.testing.assert_array_equal(variables[f"{prefix}/gates/bias"], np.ones(600, np.float32))
    check_uniform(variables[f"{prefix}/candidate/input_projection/kernel"], glorot_limit(100, 300))
    check_uniform(variables[f"{prefix}/candidate/hidden_projection/kernel"], glorot_limit(300, 300))
    assert not variables[f"{prefix}/candidate/hidden_projection/bias"].any()


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_glorot_draws_do_not_depend_on_the_optimisation_level(dtype: Any, x64: None) -> None:
    """(2u - 1) * limit from u ~ U[0, 1): the same values compiled at XLA's optimisation level
    0 (as the one-program initialisation is, for its compile time) and at the default, equal
    to NumPy's evaluation of that formula on the same u."""
    from rnnkit._cells import glorot_uniform

    key, shape = jax.random.key(5), (37, 70)

    def compiled(level: int) -> np.ndarray:
        lowered = jax.jit(glorot_uniform, static_argnums=(1, 2)).lower(key, shape, dtype)
        return np.asarray(lowered.compile({"xla_backend_optimization_level": level})(key))

    u = np.asarray(jax.random.uniform(key, shape, dtype))
    limit = np.asarray(glorot_limit(*shape), u.dtype)
    want = (2 * u - 1) * limit
    assert want.dtype == np.dtype(dtype)
    for level in (0, 2):
        np.testing.assert_array_equal(compiled(level), want)
    check_uniform(want, glorot_limit(*shape))


def test_one_program_build_draws_what_the_cells_draw_op_by_op() -> None:
    """build_classifier draws every weight in one program, compiled at XLA's optimisation
    level 0 for its compile time: the weights equal those of the cells and head built op by
    op (each op compiled at the default level)."""
    from rnnkit.models.classifier import build_classifier, parse_cells

    key = jax.random.key(9)
    model = build_classifier(
        parse_cells("lstm:12,gru:10"), input_size=5, num_classes=3, num_steps=4, mode="dynamic", key=key
    )
    keys = jax.random.split(key, 3)
    cells = [rk.LSTMCell(12, input_size=5, key=keys[0]), rk.GRUCell(10, input_size=12, key=keys[1])]
    want = rk.get_variables(rk.MultiRNNCell(cells))
    got = model.variables()
    for name, value in want.items():
        np.testing.assert_array_equal(got[name], value)
    from rnnkit._cells import glorot_uniform

    np.testing.assert_array_equal(got["fully_connected/weights"], glorot_uniform(keys[2], (10, 3), jnp.float32))

    # Under another trace (eval_shape, a jit taking the key or closing over it) the draws are
    # part of that program, as jit refuses compile options there.
    def build(k: Any) -> Any:
        return build_classifier(
            parse_cells("lstm:12,gru:10"), input_size=5, num_classes=3, num_steps=4, mode="dynamic", key=k
        )

    assert jax.eval_shape(build, key).weights.shape == (10, 3)
    under_jit = [jax.jit(lambda k: build(k).weights)(key), jax.jit(lambda: build(key).weights)()]
    for weights in under_jit:
        np.testing.assert_array_equal(weights, got["fully_connected/weights"])


def test_different_keys_give_different_weights_same_key_the_same() -> None:
    a = rk.get_variables(rk.GRUCell(8, input_size=4, key=jax.random.key(0)))
    b = rk.get_variables(rk.GRUCell(8, input_size=4, key=jax.random.key(0)))
    c = rk.get_variables(rk.GRUCell(8, input_size=4, key=jax.random.key(1)))
    np.testing.assert_array_equal(a["rnn/gru_cell/gates/kernel"], b["rnn/gru_cell/gates/kernel"])
    assert not np.array_equal(a["rnn/gru_cell/gates/kernel"], c["rnn/gru_cell/gates/kernel"])
    assert not np.array_equal(a["rnn/gru_cell/gates/kernel"][:, :8], a["rnn/gru_cell/candidate/kernel"])
