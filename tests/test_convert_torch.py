"""rnnkit.convert against PyTorch itself: the same network built in torch.nn and in rnnkit,
weights converted one way or the other, outputs and every layer's final state compared on
random inputs (float32, 1e-5); rnnkit -> PyTorch -> rnnkit bit for bit; .pt files and the CLI.

Needs torch (the `torch` extra); skipped without it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np
import pytest

import rnnkit as rk
import rnnkit.convert as rc
from rnnkit.cli import main
from rnnkit.errors import CheckpointError
from rnnkit.workflows.convert import load_run_model

from convert_cases import random_classifier

torch = pytest.importorskip("torch")

pytestmark = [
    pytest.mark.torch,
    # PyTorch's LSTM with proj_size falls back from oneDNN and says so on every call.
    pytest.mark.filterwarnings("ignore:LSTM with projections is not supported with oneDNN:UserWarning"),
]

TOL = 1e-5
BATCH, TIME, DEPTH, CLASSES = 3, 6, 5, 4

# Stacks covering every cell PyTorch has: nn.RNN, nn.LSTM (plain, forget_bias != 1, proj_size),
# nn.GRU (the reset-after cell), and multi-layer modules (num_layers > 1, with and without proj).
CASES = {
    "every_kind": "rnn:5,basic_lstm:6:forget_bias=0.5,lstm:6:proj=4,lstm:4,gru_reset_after:6",
    "multi_layer": "lstm:5:proj=3,lstm:5:proj=3,gru_reset_after:4,gru_reset_after:4,gru_reset_after:4",
    "seed": "lstm:16,gru_reset_after:32",
}


class Stack(torch.nn.Module):
    """What the state_dict naming convention describes: `rnn` (ModuleList) and `fc`."""

    def __init__(self, modules: list[dict[str, Any]], classes: int, *, bias: bool = True, batch_first: bool = True):
        super().__init__()
        built = []
        for m in modules:
            kwargs = {k: v for k, v in m.items() if k not in ("prefix", "type")}
            built.append(getattr(torch.nn, m["type"])(bias=bias, batch_first=batch_first, **kwargs))
        self.rnn = torch.nn.ModuleList(built)
        last = modules[-1]
        self.fc = torch.nn.Linear(last.get("proj_size") or last["hidden_size"], classes)
        self.batch_first = batch_first

    def forward(self, x: Any) -> tuple[Any, list[Any], Any]:
        """(last outputs, per-module final states, logits)."""
        states = []
        for module in self.rnn:
            x, state = module(x)
            states.append(state)
        last = x[:, -1] if self.batch_first else x[-1]
        return x, states, self.fc(last)


def rnnkit_model(cells: str, seed: int = 0) -> Any:
    return random_classifier(cells, input_size=DEPTH, num_classes=CLASSES, num_steps=TIME, seed=seed)


def inputs(seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((BATCH, TIME, DEPTH)).astype(np.float32)


def torch_layer_states(states: list[Any], modules: list[dict[str, Any]]) -> list[Any]:
    """PyTorch's per-module (h_n[, c_n]) [num_layers, batch, ...] as one entry per layer."""
    out = []
    for state, module in zip(states, modules, strict=True):
        for k in range(module["num_layers"]):
            if module["type"] == "LSTM":
                out.append((state[0][k].detach().numpy(), state[1][k].detach().numpy()))
            else:
                out.append(state[k].detach().numpy())
    return out


def compare(model: Any, net: Stack, modules: list[dict[str, Any]], x: np.ndarray) -> None:
    with torch.no_grad():
        xt = torch.from_numpy(x) if net.batch_first else torch.from_numpy(x.transpose(1, 0, 2).copy())
        want_out, want_states, want_logits = net(xt)
    want_out = want_out.numpy() if net.batch_first else want_out.numpy().transpose(1, 0, 2)
    got_out, got_state = rk.dynamic_rnn(model.cell, jnp.asarray(x))
    got_states = list(got_state) if isinstance(model.cell, rk.MultiRNNCell) else [got_state]
    np.testing.assert_allclose(np.asarray(got_out), want_out, rtol=TOL, atol=TOL)
    for k, (got, want) in enumerate(zip(got_states, torch_layer_states(want_states, modules), strict=True)):
        if isinstance(got, rk.LSTMStateTuple):  # rnnkit (c, h), PyTorch (h, c)
            np.testing.assert_allclose(np.asarray(got.h), want[0], rtol=TOL, atol=TOL, err_msg=f"layer {k} h")
            np.testing.assert_allclose(np.asarray(got.c), want[1], rtol=TOL, atol=TOL, err_msg=f"layer {k} c")
        else:
            np.testing.assert_allclose(np.asarray(got), want, rtol=TOL, atol=TOL, err_msg=f"layer {k}")
    np.testing.assert_allclose(np.asarray(model(jnp.asarray(x))), want_logits.numpy(), rtol=TOL, atol=TOL)


@pytest.mark.parametrize("batch_first", [True, False], ids=["batch_first", "time_major"])
@pytest.mark.parametrize("cells", CASES.values(), ids=CASES.keys())
def test_rnnkit_to_torch(cells: str, batch_first: bool) -> None:
    model = rnnkit_model(cells)
    modules = rc.torch_modules(model)
    net = Stack(modules, CLASSES, batch_first=batch_first)
    net.load_state_dict(rc.to_torch_state_dict(model, tensors=True), strict=True)
    compare(model, net, modules, inputs())


def random_torch_net(cells: str, *, bias: bool = True, seed: int = 0) -> tuple[Stack, list[dict[str, Any]]]:
    """PyTorch's own initialisation, then every bias (bias_hh too) redrawn so none is zero."""
    modules = rc.torch_modules(rnnkit_model(cells))  # just the module shapes
    torch.manual_seed(seed)
    net = Stack(modules, CLASSES, bias=bias)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if "bias" in name:
                p.uniform_(-1.0, 1.0)
    return net, modules


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no_bias"])
@pytest.mark.parametrize("cells", CASES.values(), ids=CASES.keys())
def test_torch_to_rnnkit(cells: str, bias: bool) -> None:
    net, modules = random_torch_net(cells, bias=bias)
    conversion = rc.from_torch_state_dict(net.state_dict())
    compare(conversion.classifier(num_steps=TIME), net, modules, inputs())


@pytest.mark.parametrize("cells", CASES.values(), ids=CASES.keys())
def test_rnnkit_torch_rnnkit_is_bit_identical(cells: str) -> None:
    model = rnnkit_model(cells)
    net = Stack(rc.torch_modules(model), CLASSES)
    net.load_state_dict(rc.to_torch_state_dict(model, tensors=True))
    back = rc.from_torch_state_dict(net.state_dict(), cells=cells)
    want = model.variables()
    assert sorted(back.variables) == sorted(want)
    for name, value in want.items():
        np.testing.assert_array_equal(back.variables[name], value, err_msg=name)


def test_pt_files_both_ways_through_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    net, modules = random_torch_net("lstm:6,gru_reset_after:8")
    net.rnn[0] = torch.nn.LSTM(28, 6, batch_first=True)  # read 28 features: MNIST rows
    torch.save(net.state_dict(), tmp_path / "net.pt")
    assert main(["convert", "torch", str(tmp_path / "net.pt"), "--out", str(tmp_path / "run")]) == 0
    x = np.random.default_rng(2).standard_normal((BATCH, 28, 28)).astype(np.float32)
    model = load_run_model(tmp_path / "run")
    with torch.no_grad():
        want = net(torch.from_numpy(x))[2].numpy()
    np.testing.assert_allclose(np.asarray(model(jnp.asarray(x))), want, rtol=TOL, atol=TOL)

    assert main(["convert", "torch", str(tmp_path / "run"), "--out", str(tmp_path / "back.pt")]) == 0
    capsys.readouterr()
    again = Stack(modules, CLASSES)
    again.rnn[0] = torch.nn.LSTM(28, 6, batch_first=True)
    again.load_state_dict(torch.load(tmp_path / "back.pt", weights_only=True), strict=True)
    with torch.no_grad():
        np.testing.assert_allclose(again(torch.from_numpy(x))[2].numpy(), want, rtol=TOL, atol=TOL)


def test_pt_file_that_is_not_a_state_dict_is_refused(tmp_path: Path) -> None:
    net, _ = random_torch_net("gru_reset_after:4")
    torch.save({"model": net.state_dict(), "epoch": 3}, tmp_path / "checkpoint.pt")
    with pytest.raises(CheckpointError, match=r"expected a state_dict \(names -> tensors\), but model, epoch are not"):
        rc.load_torch_file(tmp_path / "checkpoint.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a pickle")
    with pytest.raises(CheckpointError, match="not a weights-only PyTorch file"):
        rc.load_torch_file(tmp_path / "junk.pt")
