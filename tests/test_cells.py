"""Every cell against the independent NumPy float64 implementation in `reference.py`."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnnkit as rk
import rnnkit.models
from rnnkit import _kinds
from rnnkit._cells import _LeafCell
from rnnkit._wrappers import at_path, leaves

import reference as ref
from cases import CELL_CASES, INPUT_SIZE, assert_close, cell_variables_below_scope, flat_state, make_cell, random_inputs
from jaxprs import params_of

TOL = {jnp.float32: 1e-5, jnp.float64: 1e-12}


def random_state(cell: rk.RNNCell, batch: int, seed: int = 2) -> Any:
    rng = np.random.default_rng(seed)
    zero = cell.zero_state(batch)
    return jax.tree_util.tree_map(lambda z: jnp.asarray(0.8 * rng.standard_normal(z.shape), dtype=z.dtype), zero)


def reference_step(name: str, cell: rk.RNNCell) -> Any:
    return CELL_CASES[name].reference(cell_variables_below_scope(cell))


def check_step(name: str, dtype: Any) -> None:
    cell = make_cell(name, dtype=dtype)
    x = random_inputs((3, INPUT_SIZE), dtype)
    state = random_state(cell, 3)
    output, new_state = cell(x, state)
    assert output.dtype == jnp.dtype(dtype)
    want_out, want_state = reference_step(name, cell)(np.asarray(x, np.float64), flat_state(state))
    np.testing.assert_allclose(np.asarray(output, np.float64), want_out, rtol=TOL[dtype], atol=TOL[dtype])
    assert_close(new_state, want_state, TOL[dtype])


@pytest.mark.parametrize("name", sorted(CELL_CASES))
def test_one_step_matches_numpy_reference_float32(name: str) -> None:
    check_step(name, jnp.float32)


@pytest.mark.parametrize("name", sorted(CELL_CASES))
def test_one_step_matches_numpy_reference_float64(name: str, x64: None) -> None:
    check_step(name, jnp.float64)


@pytest.mark.parametrize("name", sorted(CELL_CASES))
@pytest.mark.parametrize("driver", ["static", "dynamic"])
def test_sequence_with_lengths_matches_numpy_reference(name: str, driver: str, x64: None) -> None:
    cell = make_cell(name, dtype=jnp.float64)
    x = random_inputs((4, 6, INPUT_SIZE), jnp.float64)
    lengths = np.array([6, 0, 3, 1])
    state = random_state(cell, 4)
    if driver == "static":
        outputs, final = rk.static_rnn(cell, x, initial_state=state, sequence_length=lengths)
        outputs = jnp.stack(outputs, axis=1)
    else:
        outputs, final = rk.dynamic_rnn(cell, x, sequence_length=lengths, initial_state=state)
    want_out, want_state = ref.run_sequence(
        reference_step(name, cell), np.asarray(x), flat_state(state), sequence_length=lengths
    )
    np.testing.assert_allclose(np.asarray(outputs), want_out, rtol=1e-12, atol=1e-12)
    assert_close(final, want_state, 1e-12)


def test_lstm_options_are_all_exercised(x64: None) -> None:
    """The peephole/clip/projection case only proves something if the clips actually bite and
    the peepholes change the result; check that on the reference's own numbers."""
    cell = make_cell("lstm_peephole_clip_proj", dtype=jnp.float64)
    w = cell_variables_below_scope(cell)
    x = np.asarray(random_inputs((3, INPUT_SIZE), jnp.float64))
    state = flat_state(random_state(cell, 3))
    out, (c, _) = ref.lstm_step(w, x, state, forget_bias=0.7, cell_clip=0.4, proj_clip=0.25)
    assert np.isclose(np.abs(c), 0.4).any(), "cell_clip never reached: the test would not see a missing clip"
    assert np.isclose(np.abs(out), 0.25).any(), "proj_clip never reached"
    no_peep = {k: v for k, v in w.items() if not k.endswith("_diag")}
    out_np, _ = ref.lstm_step(no_peep, x, state, forget_bias=0.7, cell_clip=0.4, proj_clip=0.25)
    assert np.abs(out - out_np).max() > 1e-3, "peepholes make no difference with these weights"


def test_output_peephole_uses_new_clipped_c(x64: None) -> None:
    """TF1's output gate peeks at the new, clipped c; using the previous c must give other numbers."""
    cell = make_cell("lstm_peephole_clip_proj", dtype=jnp.float64)
    x = random_inputs((3, INPUT_SIZE), jnp.float64)
    state = random_state(cell, 3)
    output, _ = cell(x, state)
    w = cell_variables_below_scope(cell)
    wx, wh = w["kernel"][:INPUT_SIZE], w["kernel"][INPUT_SIZE:]
    c_prev, m_prev = (np.asarray(s) for s in state)
    z = np.asarray(x) @ wx + m_prev @ wh + w["bias"]
    o = z[:, 21:28]
    c_new = np.asarray(cell(x, state)[1].c)
    with_old_c = ref.sigmoid(o + w["w_o_diag"] * c_prev) * np.tanh(c_new) @ w["projection/kernel"]
    assert np.abs(np.clip(with_old_c, -0.25, 0.25) - np.asarray(output)).max() > 1e-3


def test_forget_bias_is_applied_at_run_time_not_stored() -> None:
    a = rk.BasicLSTMCell(4, input_size=3, key=jax.random.key(0), forget_bias=1.0)
    b = rk.BasicLSTMCell(4, input_size=3, key=jax.random.key(0), forget_bias=0.0)
    for name, value in rk.get_variables(a).items():
        np.testing.assert_array_equal(value, rk.get_variables(b)[name])
    assert not np.any(rk.get_variables(a)["rnn/basic_lstm_cell/bias"])
    x = random_inputs((2, 3))
    state = random_state(a, 2)
    assert np.abs(np.asarray(a(x, state)[0]) - np.asarray(b(x, state)[0])).max() > 1e-3


def test_custom_activation_is_used(x64: None) -> None:
    cell = rk.BasicRNNCell(4, input_size=3, key=jax.random.key(0), activation=jax.nn.relu, dtype=jnp.float64)
    x = random_inputs((2, 3), jnp.float64)
    h = random_state(cell, 2)
    out, _ = cell(x, h)
    w = cell_variables_below_scope(cell)
    want, _ = ref.basic_rnn_step(w, np.asarray(x), np.asarray(h), act=lambda v: np.maximum(v, 0.0))
    np.testing.assert_allclose(np.asarray(out), want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    ("cell", "state_size", "output_size"),
    [
        (rk.BasicRNNCell(5, input_size=3, key=jax.random.key(0)), 5, 5),
        (rk.BasicLSTMCell(5, input_size=3, key=jax.random.key(0)), rk.LSTMStateTuple(5, 5), 5),
        (rk.LSTMCell(5, input_size=3, key=jax.random.key(0), num_proj=2), rk.LSTMStateTuple(5, 2), 2),
        (rk.GRUCell(5, input_size=3, key=jax.random.key(0)), 5, 5),
        (
            rk.MultiRNNCell(
                [
                    rk.LSTMCell(4, input_size=3, key=jax.random.key(0)),
                    rk.GRUCell(6, input_size=4, key=jax.random.key(1)),
                ]
            ),
            (rk.LSTMStateTuple(4, 4), 6),
            6,
        ),
    ],
)
def test_sizes_and_zero_state(cell: rk.RNNCell, state_size: Any, output_size: int) -> None:
    assert cell.state_size == state_size
    assert cell.output_size == output_size
    zero = cell.zero_state(3)
    assert jax.tree_util.tree_map(lambda z: z.shape[1], zero) == state_size
    assert all(z.shape[0] == 3 for z in jax.tree_util.tree_leaves(zero))
    assert all(not np.any(np.asarray(z)) for z in jax.tree_util.tree_leaves(zero))
    assert all(z.dtype == jnp.float32 for z in jax.tree_util.tree_leaves(zero))


def test_lstm_state_tuple_is_c_then_h() -> None:
    state = rk.LSTMStateTuple(c=1, h=2)
    assert tuple(state) == (1, 2)
    assert state._fields == ("c", "h")


@pytest.mark.parametrize("name", sorted(CELL_CASES))
def test_every_matmul_runs_at_highest_precision_by_default(name: str) -> None:
    """TF1 multiplied in full float32. On CPU that is all XLA does anyway, so the reference tests
    cannot see a lost precision; on GPUs JAX's default (TF32 / bf16 passes) moved results by
    ~1e-3 on an H200. So check what the cell asks XLA for."""
    cell = make_cell(name)
    dots = params_of("dot_general", cell, random_inputs((2, INPUT_SIZE)), cell.zero_state(2))
    assert len(dots) > 0
    highest = jax.lax.Precision.HIGHEST
    assert [d["precision"] for d in dots] == [(highest, highest)] * len(dots)


def test_precision_none_follows_jax_default_and_bad_precision_is_refused() -> None:
    cell = rk.GRUCell(3, input_size=2, key=jax.random.key(0), precision=None)
    dots = params_of("dot_general", cell, jnp.ones((1, 2)), cell.zero_state(1))
    assert [d["precision"] for d in dots] == [None, None]  # the gates and the candidate
    with pytest.raises(ValueError, match=r"precision must be None, 'default', 'high' or 'highest' .* got 'fast'"):
        rk.LSTMCell(3, input_size=2, key=jax.random.key(0), precision="fast")


@pytest.mark.parametrize("precision", ["TF32_TF32_F32_X3", jax.lax.DotAlgorithmPreset.BF16_BF16_F32_X6])
def test_a_dot_algorithm_preset_reaches_every_matmul(precision: object) -> None:
    """JAX's named algorithms (near-float32 multi-pass products on GPU tensor cores) are taken as
    a precision, by name or as the enum, and every matmul asks XLA for that algorithm."""
    cell = rk.LSTMCell(3, input_size=2, key=jax.random.key(0), precision=precision)
    dots = params_of("dot_general", cell, jnp.ones((1, 2)), cell.zero_state(1))
    name = getattr(precision, "name", precision)
    assert [d["precision"] for d in dots] == [jax.lax.DotAlgorithmPreset[name]]
    with pytest.raises(ValueError, match=r"DotAlgorithmPreset such as 'TF32_TF32_F32_X3'; got 'TF32_X3'"):
        rk.GRUCell(3, input_size=2, key=jax.random.key(0), precision="TF32_X3")


# ---------------------------------------------------------------------------------------------
# The table of cell kinds (rnnkit/_kinds.py) every part reads: each entry must describe the
# cell it builds, and every leaf cell class must have an entry.

# Non-default values for every option, so a mapping that drops or swaps one shows.
OPTION_VALUES = {"forget_bias": 0.25, "peepholes": True, "proj": 3, "cell_clip": 2.5, "proj_clip": 1.5}


@pytest.mark.parametrize("kind", _kinds.CELL_KINDS, ids=lambda k: k.spec)
def test_each_cell_kind_builds_the_cell_it_declares(kind: _kinds.CellKind) -> None:
    options = {o.name: OPTION_VALUES[o.name] for o in kind.options}
    cell = kind.build(6, input_size=INPUT_SIZE, key=jax.random.key(0), options=options)
    assert type(cell) is kind.cell_class
    assert _kinds.kind_of(cell) is kind
    assert cell.name == kind.scope  # the class's default TF1 scope is the table's
    assert kind.options_of(cell) == options  # read back off the cell, as the converters write it
    assert kind.options_of(kind.build(6, input_size=INPUT_SIZE, key=jax.random.key(0), options={})) == {
        o.name: o.default for o in kind.options if o.default not in (None, False)
    }
    assert kind.loop in _kinds.LOOP_KIND
    assert kind.spec in rk.models.CELL_KINDS


def test_every_leaf_cell_class_has_a_cell_kind() -> None:
    leaf_classes = {c for c in vars(rk).values() if isinstance(c, type) and issubclass(c, _LeafCell)}
    assert leaf_classes == {k.cell_class for k in _kinds.CELL_KINDS}
    assert (
        len({k.spec for k in _kinds.CELL_KINDS}) == len({k.scope for k in _kinds.CELL_KINDS}) == len(_kinds.CELL_KINDS)
    )


def test_fast_reason_names_what_the_fast_paths_lack() -> None:
    key = jax.random.key(0)
    assert _kinds.fast_reason(rk.LSTMCell(4, input_size=INPUT_SIZE, key=key)) is None
    assert _kinds.fast_reason(rk.GRUCell(4, input_size=INPUT_SIZE, key=key, activation=jax.lax.tanh)) is None
    lstm = rk.LSTMCell(4, input_size=INPUT_SIZE, key=key, num_proj=2, cell_clip=3.0)
    assert _kinds.fast_reason(lstm) == "has cell_clip=3.0, num_proj=2"
    relu = rk.BasicRNNCell(4, input_size=INPUT_SIZE, key=key, activation=jax.nn.relu)
    assert _kinds.fast_reason(relu) == "has activation relu, not tanh"
    stack = rk.MultiRNNCell([lstm])
    assert _kinds.fast_reason(stack) == "is not one of BasicLSTMCell, BasicRNNCell, GRUCell, LSTMCell"


def test_the_wrapper_walk_yields_leaves_with_their_paths_and_wrappers() -> None:
    k = jax.random.split(jax.random.key(0), 3)
    lstm = rk.LSTMCell(4, input_size=INPUT_SIZE, key=k[0])
    gru = rk.GRUCell(4, input_size=4, key=k[1])
    rnn = rk.BasicRNNCell(4, input_size=4, key=k[2])
    inner = rk.DropoutWrapper(rk.ResidualWrapper(gru), output_keep_prob=0.5, seed=1)
    cell = rk.DropoutWrapper(rk.MultiRNNCell([lstm, inner, rk.MultiRNNCell([rnn])]), input_keep_prob=0.5, seed=2)
    found = list(leaves(cell))
    assert [leaf.cell for leaf in found] == [lstm, gru, rnn]
    assert [leaf.path for leaf in found] == [
        (("cell",), ("cells", 0)),
        (("cell",), ("cells", 1), ("cell",), ("cell",)),
        (("cell",), ("cells", 2), ("cells", 0)),
    ]
    assert [tuple(type(w).__name__ for w in leaf.wrappers) for leaf in found] == [
        ("DropoutWrapper",),
        ("DropoutWrapper", "DropoutWrapper", "ResidualWrapper"),
        ("DropoutWrapper",),
    ]
    for leaf in found:
        assert at_path(cell, leaf.path) is leaf.cell
        for path, wrapper in zip(leaf.wrapper_paths, leaf.wrappers, strict=True):
            assert at_path(cell, path) is wrapper
