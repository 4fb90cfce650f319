"""rnnkit.convert without any peer framework installed: every layout against an independent
NumPy implementation of PyTorch's and Keras's documented equations (tests/peer_formulas.py),
bit-identical round trips, TF1 name mapping, converted run directories and `rnnkit convert`.

The same conversions against the real frameworks are in test_convert_torch.py,
test_convert_keras.py and test_convert_tf1.py (skipped when the framework is absent).
"""

from __future__ import annotations

import inspect
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.numpy

import rnnkit as rk
import rnnkit.convert as rc
from rnnkit.cli import main
from rnnkit.data import batch_indices, load_mnist, split_validation, to_layout, write_idx
from rnnkit.errors import ConfigError
from rnnkit.models.classifier import SequenceClassifier
from rnnkit.workflows import checkpoint as ckpt
from rnnkit.workflows.evaluate import evaluate_run
from rnnkit.workflows.train import TrainConfig, train

import peer_formulas as peer
from cases import run_cli
from convert_cases import random_classifier

TOL = 1e-5
BATCH, TIME, DEPTH, CLASSES = 3, 5, 4, 3


def random_model(cells: str, seed: int = 0, input_size: int = DEPTH, classes: int = CLASSES) -> SequenceClassifier:
    return random_classifier(cells, input_size=input_size, num_classes=classes, num_steps=TIME, seed=seed)


def inputs(seed: int = 1, shape: tuple[int, ...] = (BATCH, TIME, DEPTH)) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def rnnkit_run(model: SequenceClassifier, x: np.ndarray) -> tuple[np.ndarray, list[Any], np.ndarray]:
    """(last layer's outputs, final state per layer, logits), with one compiled dynamic_rnn: the
    logits are the head's variables applied to the last output (float64)."""
    outputs, state = rk.dynamic_rnn(model.cell, jnp.asarray(x))
    states = list(state) if isinstance(model.cell, rk.MultiRNNCell) else [state]
    variables = model.variables()
    last = np.asarray(outputs[:, -1], np.float64)
    logits = last @ variables["fully_connected/weights"] + variables["fully_connected/biases"]
    return np.asarray(outputs), states, logits


def assert_same_variables(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    assert sorted(got) == sorted(want)
    for name in want:
        assert got[name].dtype == want[name].dtype, name
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)


# --- PyTorch layout ---------------------------------------------------------------------------

# Each stack holds every kind PyTorch has a counterpart for, so one compiled run compares every
# layer's final state; the second also puts several layers in one multi-layer module.
TORCH_CASES = {
    "every_kind": "rnn:5,basic_lstm:6:forget_bias=0.5,lstm:6:proj=4,lstm:4,gru_reset_after:6",
    "multi_layer_modules": "lstm:5,lstm:5,gru_reset_after:4,gru_reset_after:4",
}


def torch_formula(state: dict[str, np.ndarray], modules: list[dict[str, Any]], x: np.ndarray) -> tuple[Any, ...]:
    """Run a state_dict through peer_formulas' PyTorch layers: (outputs, per-layer states, logits)."""
    layer = {"LSTM": peer.torch_lstm, "GRU": peer.torch_gru, "RNN": peer.torch_rnn}
    h = np.asarray(x, np.float64)
    states = []
    for module in modules:
        for k in range(module["num_layers"]):
            params = {
                name.removeprefix(module["prefix"]).removesuffix(f"_l{k}"): value
                for name, value in state.items()
                if name.startswith(module["prefix"]) and name.endswith(f"_l{k}")
            }
            h, final = layer[module["type"]](params, h)
            states.append(final)
    logits = h[:, -1] @ np.asarray(state["fc.weight"], np.float64).T + state["fc.bias"]
    return h, states, logits


def assert_state_matches_torch(got: Any, want: Any) -> None:
    if isinstance(got, rk.LSTMStateTuple):  # rnnkit (c, h); PyTorch (h, c)
        np.testing.assert_allclose(np.asarray(got.h), want[0], rtol=TOL, atol=TOL)
        np.testing.assert_allclose(np.asarray(got.c), want[1], rtol=TOL, atol=TOL)
    else:
        np.testing.assert_allclose(np.asarray(got), want, rtol=TOL, atol=TOL)


@pytest.mark.parametrize("cells", TORCH_CASES.values(), ids=TORCH_CASES.keys())
def test_rnnkit_to_torch_computes_what_pytorch_would(cells: str) -> None:
    model = random_model(cells)
    state = rc.to_torch_state_dict(model)
    x = inputs()
    want_out, want_states, want_logits = torch_formula(state, rc.torch_modules(model), x)
    got_out, got_states, got_logits = rnnkit_run(model, x)
    np.testing.assert_allclose(got_out, want_out, rtol=TOL, atol=TOL)
    for got, want in zip(got_states, want_states, strict=True):
        assert_state_matches_torch(got, want)
    np.testing.assert_allclose(got_logits, want_logits, rtol=TOL, atol=TOL)


def random_torch_state(cells: str, seed: int = 2, bias: bool = True) -> tuple[dict[str, np.ndarray], list[Any]]:
    """A PyTorch-layout state_dict with every entry random (bias_hh too, which rnnkit's own
    export leaves at zero), and its module list."""
    model = random_model(cells)
    rng = np.random.default_rng(seed)
    state = {
        name: (0.5 * rng.standard_normal(v.shape)).astype(np.float32)
        for name, v in rc.to_torch_state_dict(model).items()
        if bias or "bias_" not in name
    }
    return state, rc.torch_modules(model)


@pytest.mark.parametrize(
    ("cells", "bias"), [(TORCH_CASES["every_kind"], True), (TORCH_CASES["multi_layer_modules"], False)]
)
def test_torch_to_rnnkit_computes_what_pytorch_does(cells: str, bias: bool) -> None:
    state, modules = random_torch_state(cells, bias=bias)
    conversion = rc.from_torch_state_dict(state)
    model = conversion.classifier(num_steps=TIME)
    x = inputs()
    want_out, want_states, want_logits = torch_formula(state, modules, x)
    got_out, got_states, got_logits = rnnkit_run(model, x)
    np.testing.assert_allclose(got_out, want_out, rtol=TOL, atol=TOL)
    for got, want in zip(got_states, want_states, strict=True):
        assert_state_matches_torch(got, want)
    np.testing.assert_allclose(got_logits, want_logits, rtol=TOL, atol=TOL)


@pytest.mark.parametrize("cells", TORCH_CASES.values(), ids=TORCH_CASES.keys())
def test_rnnkit_torch_rnnkit_round_trip_is_bit_identical(cells: str) -> None:
    model = random_model(cells)
    back = rc.from_torch_state_dict(rc.to_torch_state_dict(model), cells=cells)
    assert back.cells == cells
    assert_same_variables(back.variables, model.variables())


def test_torch_import_infers_kinds_and_sizes_and_folds_biases_with_forget_bias_0() -> None:
    state, _ = random_torch_state("lstm:6:proj=4,lstm:5,gru_reset_after:7,rnn:3")
    conversion = rc.from_torch_state_dict(state)
    assert conversion.cells == "lstm:6:forget_bias=0.0:proj=4,lstm:5:forget_bias=0.0,gru_reset_after:7,rnn:3"
    assert (conversion.input_size, conversion.num_classes) == (DEPTH, CLASSES)
    bias = conversion.variables["rnn/multi_rnn_cell/cell_1/lstm_cell/bias"]
    folded = state["rnn.1.bias_ih_l0"] + state["rnn.1.bias_hh_l0"]  # PyTorch order i, f, g, o
    i, f, g, o = np.split(folded, 4)
    np.testing.assert_array_equal(bias, np.concatenate([i, g, f, o]))  # rnnkit order i, j, f, o


def test_torch_import_orders_modules_by_number_or_as_told() -> None:
    state, _ = random_torch_state("lstm:6,gru_reset_after:8")
    renamed = {name.replace("rnn.0.", "lstm.").replace("rnn.1.", "gru."): v for name, v in state.items()}
    in_dict_order = rc.from_torch_state_dict(renamed)
    backwards = dict(sorted(renamed.items()))  # gru. before lstm.: a stack that does not chain
    with pytest.raises(ConfigError, match=r"layer 1 reads 4 features but layer 0 gives 8"):
        rc.from_torch_state_dict(backwards)
    told = rc.from_torch_state_dict(backwards, modules=["lstm", "gru"])
    assert_same_variables(told.variables, in_dict_order.variables)
    numbered_backwards = dict(reversed(list(state.items())))  # rnn.1. first, as a sorted file might list it
    assert_same_variables(rc.from_torch_state_dict(numbered_backwards).variables, in_dict_order.variables)


@pytest.mark.parametrize(
    ("cells", "message"),
    [
        ("gru:6", "TF1's GRUCell .* applies the reset gate before its candidate matmul"),
        ("lstm:6:peepholes", "uses peepholes, which nn.LSTM does not have"),
        ("lstm:6:cell_clip=0.5", "uses cell_clip, which nn.LSTM does not have"),
    ],
)
def test_to_torch_refuses_what_pytorch_cannot_compute(cells: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        rc.to_torch_state_dict(random_model(cells))


def test_torch_import_refuses_tf1_gru_spec_bidirectional_and_leftovers() -> None:
    state, _ = random_torch_state("gru_reset_after:6")
    with pytest.raises(ConfigError, match=r"layer 0 is an nn.GRU; TF1's GRUCell"):
        rc.from_torch_state_dict(state, cells="gru:6")
    reverse = {**state, "rnn.0.weight_ih_l0_reverse": state["rnn.0.weight_ih_l0"]}
    with pytest.raises(ConfigError, match=r"bidirectional"):
        rc.from_torch_state_dict(reverse)
    extra = {**state, "embedding.weight": np.zeros((3, 4), np.float32)}
    with pytest.raises(ConfigError, match=r"no place in an rnnkit stack with a dense head: embedding.weight"):
        rc.from_torch_state_dict(extra)
    assert rc.from_torch_state_dict(extra, allow_unused=True).skipped == ("embedding.weight",)
    bad = {**state, "rnn.0.bias_hh_l0": np.zeros(5, np.float32)}
    with pytest.raises(ConfigError, match=r"bias_hh_l0 must be \[18\] for an nn.GRU; got \[5\]"):
        rc.from_torch_state_dict(bad)


# --- Keras layout -----------------------------------------------------------------------------

# Every kind Keras has a counterpart for, in one stack. Keras keeps the forget bias inside its
# LSTM bias, so only forget_bias=0 cells come back bit for bit (see the test below for 1.0).
KERAS_CASES = {
    "every_kind": "rnn:5,lstm:6:forget_bias=0.0,basic_lstm:6:forget_bias=0.0,gru:6,gru_reset_after:5",
    "seed_stack": "lstm:6:forget_bias=0.0,gru:8",
}


def keras_formula(weights: list[np.ndarray], layers: list[dict[str, Any]], x: np.ndarray) -> tuple[Any, ...]:
    h = np.asarray(x, np.float64)
    states, i = [], 0
    for layer in layers[:-1]:
        n = 3
        if layer["class"] == "LSTM":
            h, final = peer.keras_lstm(weights[i : i + n], h)
        elif layer["class"] == "GRU":
            h, final = peer.keras_gru(weights[i : i + n], h, layer["reset_after"])
        else:
            h, final = peer.keras_simple_rnn(weights[i : i + n], h)
        states.append(final)
        i += n
    assert layers[-1]["class"] == "Dense"
    return h, states, h[:, -1] @ weights[i] + weights[i + 1]


@pytest.mark.parametrize("cells", ["rnn:5,lstm:6,basic_lstm:6:forget_bias=0.5,gru:6,gru_reset_after:5"])
def test_rnnkit_to_keras_computes_what_keras_would(cells: str) -> None:
    model = random_model(cells)
    weights = rc.to_keras_weights(model)
    x = inputs()
    want_out, want_states, want_logits = keras_formula(weights, rc.keras_layers(model), x)
    got_out, got_states, got_logits = rnnkit_run(model, x)
    np.testing.assert_allclose(got_out, want_out, rtol=TOL, atol=TOL)
    for got, want in zip(got_states, want_states, strict=True):
        assert_state_matches_torch(got, want)  # Keras's LSTM state is [h, c] too
    np.testing.assert_allclose(got_logits, want_logits, rtol=TOL, atol=TOL)


@pytest.mark.parametrize("cells", [KERAS_CASES["every_kind"]])
def test_keras_to_rnnkit_computes_what_keras_does(cells: str) -> None:
    model = random_model(cells)
    rng = np.random.default_rng(3)
    weights = [(0.5 * rng.standard_normal(w.shape)).astype(np.float32) for w in rc.to_keras_weights(model)]
    conversion = rc.from_keras_weights(weights)
    assert conversion.cells == cells.replace("basic_lstm", "lstm")
    x = inputs()
    want_out, want_states, want_logits = keras_formula(weights, rc.keras_layers(model), x)
    got_out, got_states, got_logits = rnnkit_run(conversion.classifier(num_steps=TIME), x)
    np.testing.assert_allclose(got_out, want_out, rtol=TOL, atol=TOL)
    for got, want in zip(got_states, want_states, strict=True):
        assert_state_matches_torch(got, want)
    np.testing.assert_allclose(got_logits, want_logits, rtol=TOL, atol=TOL)


@pytest.mark.parametrize("cells", KERAS_CASES.values(), ids=KERAS_CASES.keys())
def test_keras_round_trips_are_bit_identical(cells: str) -> None:
    model = random_model(cells)
    back = rc.from_keras_weights(rc.to_keras_weights(model), cells=cells)
    assert_same_variables(back.variables, model.variables())
    keras_weights = rc.to_keras_weights(model)
    again = rc.to_keras_weights(rc.from_keras_weights(keras_weights).classifier(num_steps=TIME))
    for got, want in zip(again, keras_weights, strict=True):
        np.testing.assert_array_equal(got, want)


def test_keras_lstm_holds_the_forget_bias_in_its_bias() -> None:
    """Keras has one bias: a forget_bias of 1.0 comes back folded in (forget_bias=0.0), the same function."""
    model = random_model("lstm:6")
    weights = rc.to_keras_weights(model)
    i, f, c, o = np.split(weights[2], 4)
    b_i, b_j, b_f, b_o = np.split(model.variables()["rnn/lstm_cell/bias"], 4)
    np.testing.assert_array_equal(f, b_f + np.float32(1.0))
    np.testing.assert_array_equal(np.concatenate([i, c, o]), np.concatenate([b_i, b_j, b_o]))
    back = rc.from_keras_weights(weights)
    assert back.cells == "lstm:6:forget_bias=0.0"
    x = inputs()
    got = back.classifier(num_steps=TIME)(jnp.asarray(x))
    np.testing.assert_allclose(np.asarray(got), np.asarray(model(jnp.asarray(x))), atol=TOL)


def test_keras_gru_without_bias_needs_reset_after_and_projection_is_refused() -> None:
    weights = rc.to_keras_weights(random_model("gru:6"))
    no_bias = [weights[0], weights[1], *weights[3:]]
    with pytest.raises(ConfigError, match=r"GRU without bias.*pass reset_after"):
        rc.from_keras_weights(no_bias)
    assert rc.from_keras_weights(no_bias, reset_after=False).cells == "gru:6"
    with pytest.raises(ConfigError, match=r"reset_after=False .* got reset_after=True"):
        rc.from_keras_weights(weights, reset_after=True)
    with pytest.raises(ConfigError, match=r"uses proj, which Keras's LSTM does not have"):
        rc.to_keras_weights(random_model("lstm:6:proj=3"))


# --- TF1 names ----------------------------------------------------------------------------------


ADAM_STEP = 7  # updates made before the checkpoint


def tf1_checkpoint_like(model: SequenceClassifier, head: str = "fully_connected") -> dict[str, np.ndarray]:
    """The variables a TF1 Saver writes for `model` after ADAM_STEP Adam updates: the weights,
    a moment pair per weight (/Adam, /Adam_1), Adam's beta powers and a global step."""
    rng = np.random.default_rng(8)
    variables = dict(model.variables())
    if head == "dense":
        variables["dense/kernel"] = variables.pop("fully_connected/weights")
        variables["dense/bias"] = variables.pop("fully_connected/biases")
    for name, value in list(variables.items()):
        variables[f"{name}/Adam"] = (0.01 * rng.standard_normal(value.shape)).astype(np.float32)
        variables[f"{name}/Adam_1"] = rng.uniform(1e-5, 1e-4, value.shape).astype(np.float32)
    variables["beta1_power"] = np.float32(0.9 ** (ADAM_STEP + 1))  # TF1: beta^(updates + 1)
    variables["beta2_power"] = np.float32(0.999 ** (ADAM_STEP + 1))
    variables["global_step"] = np.int64(ADAM_STEP)
    return variables


@pytest.mark.parametrize("head", ["fully_connected", "dense"])
def test_tf1_names_map_one_to_one_and_adam_state_is_carried(head: str) -> None:
    model = random_model("lstm:8,gru:12")
    checkpoint = tf1_checkpoint_like(model, head)
    conversion = rc.from_tf1_variables(checkpoint)
    assert (conversion.cells, conversion.input_size, conversion.num_classes) == ("lstm:8,gru:12", DEPTH, CLASSES)
    assert_same_variables(conversion.variables, model.variables())
    assert conversion.skipped == ("global_step",)
    assert conversion.adam is not None
    assert conversion.adam.step == ADAM_STEP
    renamed = {"fully_connected/weights": "dense/kernel", "fully_connected/biases": "dense/bias"}
    for name in model.variables():
        source = renamed.get(name, name) if head == "dense" else name
        np.testing.assert_array_equal(conversion.adam.m[name], checkpoint[f"{source}/Adam"])
        np.testing.assert_array_equal(conversion.adam.v[name], checkpoint[f"{source}/Adam_1"])


def test_tf1_optimizer_state_without_every_slot_is_listed_not_carried() -> None:
    checkpoint = tf1_checkpoint_like(random_model("gru:4"))
    del checkpoint["rnn/gru_cell/gates/bias/Adam_1"]
    conversion = rc.from_tf1_variables(checkpoint)
    assert conversion.adam is None
    assert {"beta1_power", "beta2_power", "global_step", "rnn/gru_cell/gates/bias/Adam"} <= set(conversion.skipped)
    assert len(conversion.skipped) == 3 + 2 * 6 - 1


@pytest.mark.parametrize("cells", ["basic_lstm:8", "lstm:8:peepholes:proj=3,rnn:5,gru_reset_after:4,gru:3"])
def test_tf1_cells_are_inferred_from_names_and_shapes(cells: str) -> None:
    model = random_model(cells)
    conversion = rc.from_tf1_variables(model.variables())
    assert conversion.cells == cells
    assert_same_variables(conversion.variables, model.variables())


def test_tf1_cells_override_what_names_cannot_show() -> None:
    model = random_model("lstm:8,gru:12")
    conversion = rc.from_tf1_variables(model.variables(), cells="basic_lstm:8:forget_bias=0.0,gru:12")
    assert conversion.cells == "basic_lstm:8:forget_bias=0.0,gru:12"
    assert "rnn/multi_rnn_cell/cell_0/basic_lstm_cell/kernel" in conversion.variables
    with pytest.raises(ConfigError, match=r"layer 1 is gru_reset_after but .*cell_1/gru_cell is a gru cell"):
        rc.from_tf1_variables(model.variables(), cells="lstm:8,gru_reset_after:12")
    with pytest.raises(ConfigError, match=r"--cells lists 1 layers but checkpoint has 2"):
        rc.from_tf1_variables(model.variables(), cells="lstm:8")
    with pytest.raises(
        ConfigError, match=r"layer 0 is lstm:8:proj=4 but .*cell_0/lstm_cell holds lstm:8 \(units, proj"
    ):
        rc.from_tf1_variables(model.variables(), cells="lstm:8:proj=4,gru:12")


def test_tf1_unknown_and_missing_variables_are_named() -> None:
    variables = dict(random_model("lstm:8,gru:12").variables())
    variables["fully_connected_1/weights"] = np.zeros((10, 3), np.float32)
    with pytest.raises(
        ConfigError, match=r"neither the RNN under rnn/, a dense head nor optimizer state: fully_connected_1/weights"
    ):
        rc.from_tf1_variables(variables)
    assert rc.from_tf1_variables(variables, allow_unused=True).skipped == ("fully_connected_1/weights",)
    del variables["fully_connected_1/weights"]
    del variables["rnn/multi_rnn_cell/cell_1/gru_cell/gates/bias"]
    with pytest.raises(ConfigError, match=r"missing \['rnn/multi_rnn_cell/cell_1/gru_cell/gates/bias'\]"):
        rc.from_tf1_variables(variables)
    scoped = {f"encoder/{k}" if k.startswith("rnn/") else k: v for k, v in random_model("gru:4").variables().items()}
    with pytest.raises(
        ConfigError, match=r"no RNN cell variables under rnn/ .*top scopes are encoder, fully_connected"
    ):
        rc.from_tf1_variables(scoped)
    assert rc.from_tf1_variables(scoped, scope="encoder/rnn").cells == "gru:4"


def test_tf1_checkpoint_needs_no_tensorflow(monkeypatch: pytest.MonkeyPatch) -> None:
    from rnnkit.errors import CheckpointError

    monkeypatch.setitem(sys.modules, "tensorflow", None)  # import tensorflow -> ImportError
    with pytest.raises(CheckpointError, match=r"model.ckpt: not a TF1 checkpoint prefix"):
        rc.read_tf1_checkpoint("model.ckpt")  # the format's own reader (tests/test_tf1_bundle.py)


# --- run directories ----------------------------------------------------------------------------

SIDE = 8  # 8x8 images read as 8 rows of 8


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("idx")
    rng = np.random.default_rng(0)
    for split, n in (("train", 64), ("t10k", 24)):
        write_idx(path / f"{split}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, SIDE, SIDE)).astype(np.uint8))
        write_idx(path / f"{split}-labels-idx1-ubyte.gz", (np.arange(n) % CLASSES).astype(np.uint8))
    return path


def test_converted_run_directory_evaluates_to_pytorchs_numbers(data_dir: Path, tmp_path: Path) -> None:
    state, modules = random_torch_state("lstm:6,gru_reset_after:5")
    state = {k: v.astype(np.float32) for k, v in state.items()}
    state["rnn.0.weight_ih_l0"] = (0.1 * np.random.default_rng(4).standard_normal((24, SIDE))).astype(np.float32)
    conversion = rc.from_torch_state_dict(state)
    run = rc.write_run_dir(conversion, tmp_path / "run", image_shape=(SIDE, SIDE))
    assert sorted(p.name for p in run.iterdir()) == [ckpt.CONFIG, ckpt.MODEL, ckpt.OPTIMIZER]
    config = json.loads((run / ckpt.CONFIG).read_text())
    assert (config["cells"], config["image_shape"], config["num_classes"]) == (conversion.cells, [8, 8], CLASSES)

    result = evaluate_run(run, data_dir=str(data_dir))
    splits = load_mnist(str(data_dir))
    _, _, logits = torch_formula(state, modules, to_layout(splits.test_images, "rows").astype(np.float64))
    labels = splits.test_labels.astype(np.int64)
    log_softmax = logits - logits.max(-1, keepdims=True)
    log_softmax -= np.log(np.exp(log_softmax).sum(-1, keepdims=True))
    assert result.loss == pytest.approx(-log_softmax[np.arange(len(labels)), labels].mean(), abs=TOL)
    assert result.accuracy == np.mean(logits.argmax(-1) == labels)


def test_run_directory_is_not_overwritten_without_force(tmp_path: Path) -> None:
    conversion = rc.from_keras_weights(rc.to_keras_weights(random_model("gru:6", input_size=28)))
    run = tmp_path / "run"
    run.mkdir()
    (run / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match=r"exists and is not empty; choose another directory or pass --force"):
        rc.write_run_dir(conversion, run)
    assert [p.name for p in run.iterdir()] == ["notes.txt"]
    with pytest.raises(ConfigError, match=r"--layout pixels on 28x28 images gives 1 features per step"):
        rc.write_run_dir(conversion, run, layout="pixels", force=True)
    assert [p.name for p in run.iterdir()] == ["notes.txt"]
    rc.write_run_dir(conversion, run, force=True)
    assert sorted(p.name for p in run.iterdir()) == [ckpt.CONFIG, ckpt.MODEL, ckpt.OPTIMIZER]
    assert [p.name for p in tmp_path.iterdir()] == ["run"]  # no temporary or old directory left behind
    with pytest.raises(ConfigError, match=r"has no dense head; a run directory needs one"):
        rc.write_run_dir(rc.from_keras_weights(rc.to_keras_weights(random_model("gru:6").cell)), tmp_path / "r2")


def test_resume_on_a_converted_run_fine_tunes_the_converted_weights(data_dir: Path, tmp_path: Path) -> None:
    """`train --resume` on a converted run starts a fresh optimizer from the converted weights:
    its first minibatch loss is the converted model's loss on batch 0."""
    model = random_model("gru:5", input_size=SIDE)
    settings = TrainConfig(
        data_dir=str(data_dir), train_samples=3 * 16 + 1, batch_size=16, validation_size=16, display_step=1
    )
    conversion = rc.from_tf1_variables(model.variables())
    run = rc.write_run_dir(conversion, tmp_path / "run", image_shape=(SIDE, SIDE), settings=settings)
    with jax.numpy_dtype_promotion("standard"):  # optax mixes Python floats and int32 counts
        result = train(TrainConfig(run_dir=str(run)), resume=True)
    assert result.steps == 3
    first = next(r for r in ckpt.read_metrics(run) if "loss" in r)
    splits = load_mnist(str(data_dir))
    (train_x, train_y), _ = split_validation(splits.train_images, splits.train_labels, 16, settings.seed)
    idx = batch_indices(len(train_x), 16, settings.seed, 0)
    logits = np.asarray(model(jnp.asarray(to_layout(train_x[idx], "rows"))), np.float64)
    log_softmax = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    want = -log_softmax[np.arange(16), train_y[idx].astype(np.int64)].mean()
    assert first["step"] == 1
    assert first["loss"] == pytest.approx(want, abs=1e-5)


def test_resume_on_a_converted_tf1_run_makes_tf1s_next_adam_update(data_dir: Path, tmp_path: Path) -> None:
    """With TF1's Adam moments and beta powers carried over, one resumed step is TF1's Adam
    update number ADAM_STEP + 1, written out here in NumPy:
        m' = 0.9 m + 0.1 g;  v' = 0.999 v + 0.001 g^2;  lr_t = 0.001 sqrt(1 - 0.999^t) / (1 - 0.9^t)
        w' = w - lr_t m' / (sqrt(v') + 1e-8),  t = ADAM_STEP + 1."""
    model = random_model("gru:5", input_size=SIDE)
    checkpoint = tf1_checkpoint_like(model)
    settings = TrainConfig(
        data_dir=str(data_dir), train_samples=(ADAM_STEP + 1) * 16 + 1, batch_size=16, validation_size=16
    )
    run = rc.write_run_dir(
        rc.from_tf1_variables(checkpoint), tmp_path / "run", image_shape=(SIDE, SIDE), settings=settings
    )
    assert ckpt.load_model_variables(run)[1] == ADAM_STEP
    with jax.numpy_dtype_promotion("standard"):  # optax mixes Python floats and int32 counts
        train(TrainConfig(run_dir=str(run)), resume=True)
    got, step = ckpt.load_model_variables(run)
    assert step == ADAM_STEP + 1

    splits = load_mnist(str(data_dir))
    (train_x, train_y), _ = split_validation(splits.train_images, splits.train_labels, 16, settings.seed)
    idx = batch_indices(len(train_x), 16, settings.seed, ADAM_STEP)
    x, y = jnp.asarray(to_layout(train_x[idx], "rows")), jnp.asarray(train_y[idx].astype(np.int32))

    def loss(m: SequenceClassifier) -> jax.Array:
        return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(m(x)), y[:, None], axis=1))

    grads = eqx.filter_grad(loss)(model).variables()
    t = ADAM_STEP + 1
    lr_t = 0.001 * np.sqrt(1 - 0.999**t) / (1 - 0.9**t)
    for name, w in model.variables().items():
        g = grads[name].astype(np.float64)
        m = 0.9 * checkpoint[f"{name}/Adam"] + 0.1 * g
        v = 0.999 * checkpoint[f"{name}/Adam_1"] + 0.001 * g * g
        want = w - lr_t * m / (np.sqrt(v) + 1e-8)
        assert np.abs(want - w).max() > 1e-4, f"{name}: the update is too small to tell"
        # The update itself, to 0.2%: an update count off by one would change it by about 2%.
        np.testing.assert_allclose(got[name] - w, want - w, rtol=2e-3, atol=2e-7, err_msg=name)


# --- rnnkit convert -------------------------------------------------------------------------------


def test_cli_torch_both_ways_round_trips_bit_identically(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    state, _ = random_torch_state("lstm:6,gru_reset_after:8", seed=5)
    state["rnn.0.weight_ih_l0"] = np.zeros((24, 28), np.float32)
    source = tmp_path / "model.safetensors"
    source.write_bytes(safetensors.numpy.save(state))
    code, out, err = run_cli(["convert", "torch", str(source), "--out", str(tmp_path / "run")], capsys)
    assert (code, err) == (0, "")
    assert "cells lstm:6:forget_bias=0.0,gru_reset_after:8, reading 28 features, 3 classes" in out
    code, out, err = run_cli(
        ["convert", "torch", str(tmp_path / "run"), "--out", str(tmp_path / "back.safetensors")], capsys
    )
    assert (code, err) == (0, "")
    run_vars, _ = ckpt.load_model_variables(tmp_path / "run")
    again = rc.from_torch_file(tmp_path / "back.safetensors", cells="lstm:6:forget_bias=0.0,gru_reset_after:8")
    assert_same_variables(again.variables, run_vars)


def test_cli_keras_both_ways(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = random_model("lstm:6:forget_bias=0.0,gru:5", input_size=28)
    np.savez(tmp_path / "weights.npz", *rc.to_keras_weights(model))
    code, _out, err = run_cli(
        ["convert", "keras", str(tmp_path / "weights.npz"), "--out", str(tmp_path / "run")], capsys
    )
    assert (code, err) == (0, "")
    code, _, err = run_cli(["convert", "keras", str(tmp_path / "run"), "--out", str(tmp_path / "back.npz")], capsys)
    assert (code, err) == (0, "")
    with np.load(tmp_path / "back.npz") as back:
        for k, want in enumerate(rc.to_keras_weights(model)):
            np.testing.assert_array_equal(back[f"arr_{k}"], want)


def test_predict_reads_a_converted_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from PIL import Image

    model = random_model("lstm:6:forget_bias=0.0,gru:5", input_size=28, classes=10)
    np.savez(tmp_path / "weights.npz", *rc.to_keras_weights(model))
    assert main(["convert", "keras", str(tmp_path / "weights.npz"), "--out", str(tmp_path / "run")]) == 0
    image = np.random.default_rng(6).integers(0, 256, (28, 28)).astype(np.uint8)
    Image.fromarray(image).save(tmp_path / "digit.png")
    capsys.readouterr()
    assert main(["predict", str(tmp_path / "run"), str(tmp_path / "digit.png")]) == 0
    logits = np.asarray(model(jnp.asarray(to_layout(image[None], "rows"))), np.float64)[0]
    probabilities = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    best = int(probabilities.argmax())
    assert f"digit.png: class {best} (p={probabilities[best]:.4f})" in capsys.readouterr().out


@pytest.fixture
def gru_run(tmp_path: Path) -> Path:
    return rc.write_run_dir(rc.from_tf1_variables(random_model("gru:6", input_size=28).variables()), tmp_path / "gru")


def cli_mistakes(tmp: Path, gru_run: Path) -> list[tuple[list[str], str]]:
    ambiguous = tmp / "two.safetensors"
    state, _ = random_torch_state("lstm:6,gru_reset_after:8")
    ambiguous.write_bytes(
        safetensors.numpy.save({n.replace("rnn.0.", "lstm.").replace("rnn.1.", "gru."): v for n, v in state.items()})
    )
    return [
        (
            ["convert", "torch", str(gru_run), "--out", str(tmp / "x.pt")],
            r"TF1's GRUCell \(kind 'gru'\) applies the reset gate before",
        ),
        (["convert", "torch", str(ambiguous), "--out", str(tmp / "r")], "does not keep module order .* pass --modules"),
        (["convert", "torch", str(tmp / "nope.pt"), "--out", str(tmp / "r")], "nope.pt: no such file"),
        (["convert", "torch", str(gru_run), "--out", str(tmp / "x.bin")], r"must end in \.pt, \.pth or \.safetensors"),
        (["convert", "keras", str(gru_run), "--out", str(gru_run / ckpt.CONFIG)], r"must end in \.npz"),
        (
            ["convert", "tf1", str(tmp / "model.ckpt"), "--out", str(tmp / "r"), "--image-shape", "28"],
            "--image-shape: expected HEIGHTxWIDTH",
        ),
        (
            ["convert", "torch", str(ambiguous), "--out", str(gru_run), "--modules", "lstm,gru"],
            "exists and is not empty",
        ),
    ]


def test_cli_mistakes_exit_2_with_one_line_and_touch_nothing(
    tmp_path: Path, gru_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = {p.name: p.read_bytes() for p in gru_run.iterdir()}
    for argv, message in cli_mistakes(tmp_path, gru_run):
        code, out, err = run_cli(argv, capsys)
        assert code == 2, argv
        assert out == ""
        assert len(err.strip().splitlines()) == 1, err
        assert re.search(message, err), (message, err)
        assert "Traceback" not in err
    assert {p.name: p.read_bytes() for p in gru_run.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gru", "two.safetensors"]


# --- the public surface -----------------------------------------------------------------------------

CONVERT_PUBLIC = {
    "AdamState",
    "Conversion",
    "export_flax_file",
    "export_tf1_checkpoint",
    "export_torch_file",
    "flax_model",
    "from_flax_params",
    "from_keras_weights",
    "from_tf1_checkpoint",
    "from_tf1_variables",
    "from_torch_file",
    "from_torch_state_dict",
    "keras_layers",
    "load_torch_file",
    "read_tf1_checkpoint",
    "tf1_variables",
    "to_flax_params",
    "to_keras_weights",
    "to_torch_state_dict",
    "torch_modules",
    "write_run_dir",
    "write_tf1_checkpoint",
}


def test_convert_public_names_are_pinned() -> None:
    assert set(rc.__all__) == CONVERT_PUBLIC
    assert {name for name in vars(rc) if not name.startswith("_") and not inspect.ismodule(vars(rc)[name])} - {
        "annotations"
    } == CONVERT_PUBLIC


def test_importing_rnnkit_convert_imports_no_peer_framework() -> None:
    """torch, tensorflow, keras and flax are optional: only the functions that need one import it."""
    peers = "('torch', 'tensorflow', 'keras', 'flax')"
    code = f"import sys, rnnkit, rnnkit.convert, rnnkit.cli; print(sorted(m for m in {peers} if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_a_converted_run_exports_and_the_artifact_computes_the_converted_model(tmp_path: Path) -> None:
    from rnnkit.export import export_run, load

    model = random_model("lstm:6:forget_bias=0.0,gru:5", input_size=28, classes=10)
    np.savez(tmp_path / "weights.npz", *rc.to_keras_weights(model))
    assert main(["convert", "keras", str(tmp_path / "weights.npz"), "--out", str(tmp_path / "run")]) == 0
    for mode in ("static", "dynamic"):
        export_run(tmp_path / "run", tmp_path / f"{mode}.rnnx", mode=mode)
        x = inputs(seed=7, shape=(3, 28, 28)).astype(np.float32)
        want = np.asarray(model(jnp.asarray(x)))
        np.testing.assert_allclose(load(tmp_path / f"{mode}.rnnx")(x), want, rtol=1e-6, atol=1e-6)
