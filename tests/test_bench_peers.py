"""`rnnkit bench`'s peer rows (rnnkit.workflows.bench_peers): each installed peer builds the seed's
model on a tiny workload, trains (parameters change, the loss falls on the fixed batch) and
infers; the TF1 GRU written in PyTorch matches TF1's formula in NumPy.

The row table's own checks run everywhere; a peer's tests skip where it is not installed.
TensorFlow 1 and Keras rows run in a child process, as the harness runs them: each changes
process-wide state (TF1 turns off eager execution; Keras fixes its backend at first import)
that the other tests in this process must not inherit. The child is this file run as a script.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import math
import os
import subprocess
import sys
import types
from dataclasses import replace
from pathlib import Path
from typing import Any

import jax
import numpy as np
import pytest

from rnnkit.workflows.bench_peers import PEER_ROWS, UNROLLED_MAX_STEPS
from rnnkit.workflows.bench_rows import Workload

from peer_formulas import sigmoid

ROWS = {row.name: row for row in PEER_ROWS}
TINY = Workload("train", batch=4, steps=3, features=5)
PEERS = ("torch", "tensorflow", "tf_keras", "keras", "flax", "optax")


def probe(name: str, steps: int = 4) -> dict[str, Any]:
    """Build `name` on TINY: the loss before and after each of `steps` training steps, which
    parameters the first step changed, and whether an inference step leaves them unchanged."""
    row = ROWS[name]
    runner: Any = row.build(TINY, 0)
    before, losses = runner.weights(), [runner.loss()]
    runner.step()
    changed = [not np.array_equal(a, b) for a, b in zip(before, runner.weights(), strict=True)]
    losses.append(runner.loss())
    for _ in range(steps - 1):
        runner.step()
        losses.append(runner.loss())
    infer: Any = row.build(replace(TINY, task="infer"), 0)
    before = infer.weights()
    infer.step()
    kept = all(np.array_equal(a, b) for a, b in zip(before, infer.weights(), strict=True))
    return {"versions": row.versions(), "losses": losses, "changed": changed, "infer_kept_weights": kept}


def probe_in_child(name: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, __file__, name],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def check_probe(result: dict[str, Any], versions: set[str]) -> None:
    assert set(result["versions"]) == versions
    assert all(isinstance(v, str) and v for v in result["versions"].values())
    assert result["changed"], "the row has no trainable parameters"
    assert all(result["changed"]), f"the first step left some parameters unchanged: {result['changed']}"
    losses = result["losses"]
    assert all(math.isfinite(loss) for loss in losses), losses
    assert all(b < a for a, b in itertools.pairwise(losses)), f"the loss did not fall: {losses}"
    assert result["infer_kept_weights"]


def skip_if_missing(name: str) -> None:
    """Skip unless `name`'s modules are installed, without importing them here (see the docstring)."""
    missing = ROWS[name].missing()
    if missing is not None:
        pytest.skip(missing)


# --- the row table (everywhere) ---------------------------------------------------------------


def test_rows_are_named_once_and_described() -> None:
    assert [row.name for row in PEER_ROWS] == [
        "torch-eager",
        "torch-eager-fp32",
        "torch-tf1gru-loop",
        "torch-tf1gru-compile",
        "tf1-dynamic",
        "tf1-static",
        "keras-jax",
        "flax-nnx",
    ]
    assert len({row.label for row in PEER_ROWS}) == len(PEER_ROWS)
    assert all(row.requires and row.note for row in PEER_ROWS)


def test_missing_names_the_absent_framework(monkeypatch: pytest.MonkeyPatch) -> None:
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *args: None if name in PEERS else find_spec(name, *args)
    )
    for row in PEER_ROWS:
        assert row.missing() == f"{row.requires[0]} is not installed"


def test_importing_the_rows_imports_no_peer() -> None:
    code = f"import sys, rnnkit.workflows.bench_peers; print(sorted(set({PEERS!r}) & set(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize("name", ["tf1-static", "torch-tf1gru-compile"])
def test_unrolled_rows_skip_long_sequences_only(name: str) -> None:
    for task in ("train", "infer"):
        assert ROWS[name].skip(Workload(task, 128, 28, 28)) is None
        assert ROWS[name].skip(Workload(task, 1024, UNROLLED_MAX_STEPS, 1)) is None
        reason = ROWS[name].skip(Workload(task, 128, 784, 1))
        assert reason is not None
        assert "784" in reason
        assert str(UNROLLED_MAX_STEPS) in reason


def test_other_rows_run_every_workload() -> None:
    for row in PEER_ROWS:
        if row.name not in ("tf1-static", "torch-tf1gru-compile", "torch-eager-fp32"):
            assert all(row.skip(Workload(task, 1024, 784, 1)) is None for task in ("train", "infer"))


@pytest.mark.parametrize("cuda", [True, False])
def test_fp32_torch_row_runs_where_cuda_is(monkeypatch: pytest.MonkeyPatch, cuda: bool) -> None:
    """torch-eager-fp32 (TF32 off) means something on NVIDIA GPUs only: every workload there,
    none elsewhere, saying why."""
    fake = types.SimpleNamespace(cuda=types.SimpleNamespace(is_available=lambda: cuda))
    monkeypatch.setitem(sys.modules, "torch", fake)
    row = next(r for r in PEER_ROWS if r.name == "torch-eager-fp32")
    reasons = {row.skip(Workload(task, 1024, steps, 1)) for task in ("train", "infer") for steps in (28, 784)}
    assert reasons == ({None} if cuda else {"TF32 is a GPU format: on CPU this is torch-eager's program"})


# --- PyTorch ----------------------------------------------------------------------------------


@pytest.mark.torch
@pytest.mark.parametrize("name", ["torch-eager", "torch-tf1gru-loop"])
def test_torch_row_trains_and_infers(name: str) -> None:
    pytest.importorskip("torch")
    check_probe(probe(name), {"torch"})


def tf1_gru(
    x: np.ndarray, gates_kernel: np.ndarray, gates_bias: np.ndarray, kernel: np.ndarray, bias: np.ndarray
) -> np.ndarray:
    """TF1's GRUCell over x [batch, time, depth] from h = 0, in float64; the final h. Gates r, u;
    the reset applies to h before the candidate's matmul."""
    units = bias.shape[0]
    h = np.zeros((x.shape[0], units))
    for t in range(x.shape[1]):
        r, u = np.split(sigmoid(np.concatenate([x[:, t], h], 1) @ gates_kernel + gates_bias), 2, axis=1)
        c = np.tanh(np.concatenate([x[:, t], r * h], 1) @ kernel + bias)
        h = u * h + (1 - u) * c
    return h


@pytest.mark.torch
def test_torch_tf1_gru_is_tf1s_formula() -> None:
    torch = pytest.importorskip("torch")
    runner: Any = ROWS["torch-tf1gru-loop"].build(replace(TINY, steps=6, task="infer"), 0)
    model = runner.model
    rng = np.random.default_rng(1)
    gru = model.gru
    with torch.no_grad():  # every GRU weight random, the biases too: their init (1 and 0) would hide mix-ups
        for p in gru.parameters():
            p.copy_(torch.from_numpy(rng.uniform(-0.5, 0.5, tuple(p.shape)).astype(np.float32)))
        seq = model.lstm(runner.x)[0]
        h, logits = gru(seq), model(runner.x)
    params = [p.detach().numpy().astype(np.float64) for p in gru.parameters()]
    expected = tf1_gru(seq.numpy().astype(np.float64), *params)
    np.testing.assert_allclose(h.numpy(), expected, rtol=1e-5, atol=1e-5)
    head_w, head_b = (p.detach().numpy().astype(np.float64) for p in model.head.parameters())
    np.testing.assert_allclose(logits.numpy(), expected @ head_w.T + head_b, rtol=1e-5, atol=1e-5)


@pytest.mark.torch
@pytest.mark.slow  # inductor compiles forward and backward: about a minute on 2 cores with a cold cache
# Both raised inside torch: by torch.utils.mkldnn when inductor imports it, and by dynamo when it
# inspects the tensors it traces (it reads .grad of non-leaf ones).
@pytest.mark.filterwarnings(r"ignore:`torch\.jit\.script_method` is deprecated:DeprecationWarning")
@pytest.mark.filterwarnings(r"ignore:The \.grad attribute of a Tensor that is not a leaf Tensor:UserWarning")
def test_torch_compile_row_matches_the_loop() -> None:
    pytest.importorskip("torch")
    compiled = probe("torch-tf1gru-compile")
    check_probe(compiled, {"torch"})
    # Same seed, same module: compiling changes the kernels, not the arithmetic beyond round-off.
    np.testing.assert_allclose(compiled["losses"], probe("torch-tf1gru-loop")["losses"], rtol=1e-5)


@pytest.mark.torch
def test_torch_compile_row_says_when_compiling_failed(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("on a GPU inductor compiles with Triton, not the C++ compiler")
    code = (
        "from rnnkit.workflows.bench_peers import PEER_ROWS\n"
        "from rnnkit.workflows.bench_rows import Workload\n"
        "row = {r.name: r for r in PEER_ROWS}['torch-tf1gru-compile']\n"
        "row.build(Workload('infer', 2, 2, 3), 0).step()\n"
    )
    # A fresh cache, so that inductor compiles instead of reusing a kernel built by an earlier run.
    env = {**os.environ, "CXX": str(tmp_path / "no-such-compiler"), "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "cache")}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300, check=False
    )
    assert done.returncode != 0
    assert "RuntimeError: torch.compile failed on cpu (it needs a C++ compiler on CPU, Triton on GPU): " in done.stderr
    assert "no-such-compiler" in done.stderr


# --- TensorFlow 1 and Keras (in a child process each) ------------------------------------------


@pytest.mark.tf
@pytest.mark.parametrize("name", ["tf1-dynamic", "tf1-static"])
def test_tf1_row_trains_and_infers(name: str) -> None:
    skip_if_missing(name)
    check_probe(probe_in_child(name), {"tensorflow", "tf_keras"})


@pytest.mark.keras
def test_keras_row_trains_and_infers() -> None:
    skip_if_missing("keras-jax")
    # The row must clear TF_USE_LEGACY_KERAS, which the tf1 rows set for tensorflow.
    check_probe(probe_in_child("keras-jax", {"TF_USE_LEGACY_KERAS": "1"}), {"keras", "jax"})


@pytest.mark.keras
@pytest.mark.tf
def test_keras_row_refuses_another_backend() -> None:
    skip_if_missing("keras-jax")
    skip_if_missing("tf1-dynamic")
    code = (
        "import os\n"
        "os.environ['KERAS_BACKEND'] = 'tensorflow'\n"
        "import keras\n"
        "from rnnkit.workflows.bench_peers import PEER_ROWS\n"
        "{r.name: r for r in PEER_ROWS}['keras-jax'].versions()\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "TF_USE_LEGACY_KERAS"}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300, check=False
    )
    assert done.returncode != 0
    assert "keras was already imported in this process with the 'tensorflow' backend" in done.stderr


# --- Flax NNX ---------------------------------------------------------------------------------


def test_flax_row_trains_and_infers() -> None:
    pytest.importorskip("flax")
    pytest.importorskip("optax")
    # conftest makes JAX's dtype promotion strict, for rnnkit's code; optax's Adam raises a Python
    # float to its int32 step count (bias correction), which only standard promotion allows.
    with jax.numpy_dtype_promotion("standard"):
        result = probe("flax-nnx")
    check_probe(result, {"flax", "jax"})


if __name__ == "__main__":  # the child process of probe_in_child
    print(json.dumps(probe(sys.argv[1])))
