"""SequenceClassifier and the --cells spec."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnnkit as rk
from rnnkit.errors import ConfigError
from rnnkit.models import CellSpec, build_classifier, format_cells, parse_cells

from cases import random_inputs
from jaxprs import params_of


def seed_model(mode: str = "dynamic", **kwargs: object) -> rk.RNNCell:
    return build_classifier(
        parse_cells("lstm:128,gru:256"),
        input_size=28,
        num_classes=10,
        num_steps=28,
        mode=mode,
        key=jax.random.key(0),
        **kwargs,
    )


def test_seed_model_has_the_seeds_names_and_378634_parameters() -> None:
    variables = seed_model().variables()
    assert sum(v.size for v in variables.values()) == 378_634
    assert variables["fully_connected/weights"].shape == (256, 10)
    assert variables["fully_connected/biases"].shape == (10,)
    assert "rnn/multi_rnn_cell/cell_1/gru_cell/candidate/kernel" in variables


def test_one_layer_lives_directly_under_rnn_like_tf1() -> None:
    model = build_classifier(
        parse_cells("basic_lstm:16"), input_size=28, num_classes=10, num_steps=28, mode="dynamic", key=jax.random.key(0)
    )
    assert set(model.variables()) == {
        "rnn/basic_lstm_cell/kernel",
        "rnn/basic_lstm_cell/bias",
        "fully_connected/weights",
        "fully_connected/biases",
    }


def test_static_and_dynamic_models_give_the_same_logits() -> None:
    x = random_inputs((4, 28, 28))
    dynamic, static = seed_model("dynamic"), seed_model("static")
    np.testing.assert_allclose(static(x), dynamic(x), rtol=1e-5, atol=1e-5)
    # the logits after the last step are the model's logits
    np.testing.assert_allclose(dynamic.step_logits(x)[:, -1], dynamic(x), rtol=1e-6, atol=1e-6)
    # a static model is built for its length, like the seed's TF1 graph; a dynamic one takes any
    assert dynamic(random_inputs((4, 30, 28))).shape == (4, 10)
    with pytest.raises(ValueError, match=r"num_steps=28 .* got 30"):
        static(random_inputs((4, 30, 28)))


def test_head_is_the_last_output_through_the_dense_layer() -> None:
    model = seed_model()
    x = random_inputs((3, 28, 28))
    outputs, _ = rk.dynamic_rnn(model.cell, x)
    want = np.asarray(outputs[:, -1], np.float64) @ np.asarray(model.weights, np.float64) + np.asarray(model.biases)
    np.testing.assert_allclose(model(x), want, rtol=1e-5, atol=1e-5)


def test_with_variables_round_trip_and_strictness() -> None:
    model = seed_model()
    variables = model.variables()
    changed = {k: v + 1 for k, v in variables.items()}
    other = model.with_variables(changed)
    for k, v in other.variables().items():
        np.testing.assert_array_equal(v, changed[k])
    with pytest.raises(ValueError, match=r"fully_connected/weights must have shape \(256, 10\)"):
        model.with_variables({**variables, "fully_connected/weights": np.zeros((128, 10), np.float32)})
    with pytest.raises(ValueError, match="missing"):
        model.with_variables({k: v for k, v in variables.items() if "gates/bias" not in k})


def test_dropout_changes_training_logits_not_inference() -> None:
    import equinox as eqx

    model = seed_model(dropout=0.5)
    x = random_inputs((4, 28, 28))
    a = model.with_dropout_key(jax.random.key(1))(x)
    b = model.with_dropout_key(jax.random.key(2))(x)
    assert np.abs(np.asarray(a) - np.asarray(b)).max() > 1e-3
    plain = seed_model()
    np.testing.assert_allclose(eqx.nn.inference_mode(model)(x), plain(x), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    ("spec", "parsed"),
    [
        ("lstm:128,gru:256", (CellSpec("lstm", 128), CellSpec("gru", 256))),
        ("rnn:8", (CellSpec("rnn", 8),)),
        (
            "lstm:64:peepholes:proj=32:cell_clip=3:forget_bias=0,gru_reset_after:16",
            (
                CellSpec("lstm", 64, (("cell_clip", 3.0), ("forget_bias", 0.0), ("peepholes", True), ("proj", 32))),
                CellSpec("gru_reset_after", 16),
            ),
        ),
        ("basic_lstm:4:forget_bias=0.5", (CellSpec("basic_lstm", 4, (("forget_bias", 0.5),)),)),
    ],
)
def test_parse_cells_and_format_round_trip(spec: str, parsed: tuple[CellSpec, ...]) -> None:
    assert parse_cells(spec) == parsed
    assert parse_cells(format_cells(parsed)) == parsed


def test_projection_sets_the_next_layers_input() -> None:
    model = build_classifier(
        parse_cells("lstm:16:proj=8,gru:4"),
        input_size=3,
        num_classes=2,
        num_steps=5,
        mode="dynamic",
        key=jax.random.key(0),
    )
    assert model.variables()["rnn/multi_rnn_cell/cell_1/gru_cell/gates/kernel"].shape == (8 + 4, 8)
    assert model(jnp.zeros((2, 5, 3))).shape == (2, 2)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("", "--cells must list at least one layer"),
        (
            "lstmm:8",
            "unknown cell kind 'lstmm' in 'lstmm:8'; expected one of rnn, basic_lstm, lstm, gru, gru_reset_after",
        ),
        ("lstm", "'lstm' must be kind:units with units a positive integer; got 'nothing'"),
        ("lstm:0", "'lstm:0' must be kind:units with units a positive integer; got '0'"),
        ("gru:8:peepholes", "option 'peepholes' in 'gru:8:peepholes' is not one of gru's options (none)"),
        ("lstm:8:proj=x", "option 'proj' in 'lstm:8:proj=x' needs a int; got 'x'"),
        ("lstm:8:proj=0", "option 'proj' in 'lstm:8:proj=0' must be positive; got '0'"),
        ("lstm:8:peepholes=1", "option 'peepholes' in 'lstm:8:peepholes=1' is a flag and takes no value"),
        ("lstm:8:proj_clip=1", "option 'proj_clip' in 'lstm:8:proj_clip=1' needs 'proj=N'"),
    ],
)
def test_bad_cell_specs(spec: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_cells(spec)
    assert message in str(err.value)


def _small_model(cells: str, mode: str = "dynamic", **kwargs: object) -> rk.RNNCell:
    """A model on 3 features, 5 steps and 2 classes."""
    return build_classifier(
        parse_cells(cells), input_size=3, num_classes=2, num_steps=5, mode=mode, key=jax.random.key(0), **kwargs
    )


@pytest.mark.parametrize("mode", ["static", "dynamic"])
@pytest.mark.parametrize(("precision", "expected"), [("highest", jax.lax.Precision.HIGHEST), (None, None)])
def test_precision_reaches_every_matmul(mode: str, precision: object, expected: object) -> None:
    model = _small_model(
        "lstm:8,gru:4",
        mode=mode,
        implementation="per_step",  # matmuls in the jaxpr (the native kernel's are not)
        precision=precision,
    )
    precisions = [dot["precision"] for dot in params_of("dot_general", model, jnp.zeros((2, 5, 3)))]
    # LSTM: 1 matmul a step; TF1's GRU: 2; the head: 1.
    assert len(precisions) == (5 * 3 + 1 if mode == "static" else 3 + 1)
    assert all(p in (expected, (expected, expected)) for p in precisions), precisions


def test_precision_is_checked() -> None:
    with pytest.raises(ConfigError, match=r"precision must be None, 'default', 'high' or 'highest'.*got 'tf32'"):
        _small_model("gru:4", precision="tf32")
