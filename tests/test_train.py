"""Training, checkpoints, resume, eval and predict on a small synthetic MNIST-format data set,
and the CLI's exit codes and messages for them."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rnnkit.workflows import checkpoint as ckpt
from rnnkit.workflows.evaluate import evaluate_run, predict_images
from rnnkit.workflows.train import TrainConfig, TrainingInterrupted, train

from cases import run_cli
from small_runs import CLASSES, SIDE, config, make_idx_dir, signal_mid_run

pytestmark = pytest.mark.usefixtures("standard_promotion")  # optax mixes Python floats and int32 counts


def losses(run_dir: Path) -> list[float]:
    return [r["loss"] for r in ckpt.read_metrics(run_dir) if "loss" in r]


def test_training_lowers_the_loss_and_writes_the_run_directory(data_dir: Path, tmp_path: Path) -> None:
    result = train(config(data_dir, tmp_path / "run", train_samples=40 * 16 + 1))
    trace = losses(tmp_path / "run")
    assert len(trace) == 40
    assert np.mean(trace[-5:]) < 0.5 * np.mean(trace[:5])
    assert result.test_accuracy > 0.9
    for name in (ckpt.CONFIG, ckpt.MODEL, ckpt.OPTIMIZER, ckpt.METRICS, ckpt.CURVES):
        assert (tmp_path / "run" / name).stat().st_size > 0, name
    variables, step = ckpt.load_model_variables(tmp_path / "run")
    assert step == 40
    assert set(variables) == {
        "rnn/multi_rnn_cell/cell_0/lstm_cell/kernel",
        "rnn/multi_rnn_cell/cell_0/lstm_cell/bias",
        "rnn/multi_rnn_cell/cell_1/gru_cell/gates/kernel",
        "rnn/multi_rnn_cell/cell_1/gru_cell/gates/bias",
        "rnn/multi_rnn_cell/cell_1/gru_cell/candidate/kernel",
        "rnn/multi_rnn_cell/cell_1/gru_cell/candidate/bias",
        "fully_connected/weights",
        "fully_connected/biases",
    }
    assert json.loads((tmp_path / "run" / ckpt.CONFIG).read_text())["cells"] == "lstm:8,gru:12"
    # eval recomputes the same test accuracy from the saved checkpoint
    evaluated = evaluate_run(tmp_path / "run", plot=tmp_path / "confusion.png")
    assert evaluated.accuracy == pytest.approx(result.test_accuracy, abs=1e-9)
    assert (tmp_path / "confusion.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    np.testing.assert_allclose(
        evaluated.per_class_accuracy, np.diag(evaluated.confusion) / evaluated.confusion.sum(axis=1)
    )
    assert evaluated.confusion.sum() == 60
    assert evaluated.confusion.shape == (CLASSES, CLASSES)


def test_static_and_dynamic_training_give_the_same_losses(data_dir: Path, tmp_path: Path) -> None:
    train(config(data_dir, tmp_path / "dynamic", train_samples=6 * 16 + 1, mode="dynamic"))
    train(config(data_dir, tmp_path / "static", train_samples=6 * 16 + 1, mode="static"))
    np.testing.assert_allclose(losses(tmp_path / "static"), losses(tmp_path / "dynamic"), rtol=1e-4, atol=1e-5)


class InterruptAt:
    """A reporter that presses Ctrl-C when the loop reports step `at`."""

    def __init__(self, at: int):
        self.at = at

    def start(self, *args: Any) -> None:
        pass

    def step(self, step: int, *args: Any) -> None:
        if step == self.at:
            raise KeyboardInterrupt

    def line(self, text: str) -> None:
        pass

    def stop(self) -> None:
        pass


def test_resume_reaches_the_same_weights_as_an_uninterrupted_run(data_dir: Path, tmp_path: Path) -> None:
    whole = train(config(data_dir, tmp_path / "whole", dropout=0.2))
    with pytest.raises(TrainingInterrupted) as stop:
        train(config(data_dir, tmp_path / "parts", dropout=0.2), reporter=InterruptAt(7))
    assert stop.value.step == 7
    assert ckpt.load_model_variables(tmp_path / "parts")[1] == 7  # Ctrl-C saved a checkpoint
    resumed = train(TrainConfig(run_dir=str(tmp_path / "parts")), resume=True)
    assert resumed.steps == whole.steps == 12
    a, _ = ckpt.load_model_variables(tmp_path / "whole")
    b, _ = ckpt.load_model_variables(tmp_path / "parts")
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    assert losses(tmp_path / "parts") == losses(tmp_path / "whole")


def test_predict_matches_eval_logits(data_dir: Path, tmp_path: Path) -> None:
    from PIL import Image

    from rnnkit.data import load_idx_dir

    train(config(data_dir, tmp_path / "run", train_samples=20 * 16 + 1))
    test = load_idx_dir(data_dir)
    paths = []
    for i in range(4):
        paths.append(tmp_path / f"digit{i}.png")
        Image.fromarray(test.test_images[i]).save(paths[-1])
    predictions = predict_images(tmp_path / "run", paths, steps=True)
    assert [p.predicted for p in predictions] == list(test.test_labels[:4])
    for p in predictions:
        assert p.probabilities.sum() == pytest.approx(1.0, abs=1e-5)
        assert p.step_probabilities.shape == (SIDE, CLASSES)
        np.testing.assert_allclose(p.step_probabilities[-1], p.probabilities, rtol=1e-5, atol=1e-6)


def test_cli_train_prints_the_seed_lines(data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["train", "--cells", "gru:8", "--data-dir", str(data_dir), "--run-dir", str(tmp_path / "run")]
    argv += ["--train-samples", "65", "--batch-size", "16", "--display-step", "2", "--validation-size", "40"]
    code, out, err = run_cli(argv, capsys)
    assert code == 0, err
    assert "Iter 32, Minibatch Loss= " in out
    assert ", Training Accuracy= " in out
    lines = out.strip().splitlines()
    assert lines[-3].startswith("Testing Accuracy (first 100 images): ")
    assert lines[-2].startswith("Testing Accuracy (60 images): ")  # the test split's size
    assert "samples/s" in lines[-1]


def one_line_error(code: int, err: str) -> str:
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def test_cli_user_errors_exit_2_and_keep_checkpoints(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    base = ["train", "--cells", "gru:8", "--data-dir", str(data_dir), "--batch-size", "16", "--validation-size", "40"]
    base += ["--num-classes", "3"]
    assert run_cli([*base, "--run-dir", str(run), "--train-samples", "33"], capsys)[0] == 0
    before = (run / ckpt.MODEL).read_bytes()

    line = one_line_error(*run_cli([*base, "--run-dir", str(run)], capsys)[::2])
    assert "already holds a run; pass --resume" in line
    line = one_line_error(*run_cli([*base, "--run-dir", str(tmp_path / "x"), "--cells", "lstmm:8"], capsys)[::2])
    assert "unknown cell kind 'lstmm'" in line
    line = one_line_error(*run_cli(["eval", str(tmp_path / "nowhere")], capsys)[::2])
    assert "not a run directory" in line
    line = one_line_error(*run_cli(["train", "--run-dir", str(tmp_path / "empty"), "--resume"], capsys)[::2])
    assert "not a run directory" in line
    line = one_line_error(*run_cli([*base, "--run-dir", str(tmp_path / "y"), "--data-dir", str(tmp_path)], capsys)[::2])
    assert "train-images-idx3-ubyte" in line

    # a config that no longer matches the checkpoint's shapes
    cfg = json.loads((run / ckpt.CONFIG).read_text())
    (tmp_path / "mismatch").mkdir()
    (tmp_path / "mismatch" / ckpt.CONFIG).write_text(json.dumps({**cfg, "cells": "gru:9"}))
    (tmp_path / "mismatch" / ckpt.MODEL).write_bytes(before)
    line = one_line_error(*run_cli(["eval", str(tmp_path / "mismatch")], capsys)[::2])
    assert "does not match config.json" in line

    more_classes = make_idx_dir(tmp_path / "ten", classes=10)
    line = one_line_error(*run_cli(["eval", str(run), "--data-dir", str(more_classes)], capsys)[::2])
    assert "the test labels go up to 9, the run knows 3 classes" in line

    (tmp_path / "not.png").write_text("hello")
    line = one_line_error(*run_cli(["predict", str(run), str(tmp_path / "not.png")], capsys)[::2])
    assert "not a readable image" in line
    from PIL import Image

    Image.new("L", (28, 28)).save(tmp_path / "big.png")
    line = one_line_error(*run_cli(["predict", str(run), str(tmp_path / "big.png")], capsys)[::2])
    assert "expected a 8x8 grayscale image; got 28x28" in line

    assert (run / ckpt.MODEL).read_bytes() == before  # nothing above touched the saved run


def test_interrupted_checkpoint_pair_is_refused_for_resume(data_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    train(config(data_dir, run, train_samples=6 * 16 + 1))
    model_vars, opt_vars, step = ckpt.load_checkpoint(run)
    ckpt.save_checkpoint(run, model_vars, opt_vars, step)  # a consistent pair loads
    opt_only = ckpt.read_safetensors(run / ckpt.OPTIMIZER)[0]
    opt_only = {k: v for k, v in opt_only.items() if not k.startswith("model:")}  # no model copy to fall back on
    import safetensors.numpy

    ckpt.atomic_write_bytes(run / ckpt.OPTIMIZER, safetensors.numpy.save(opt_only, metadata={"step": "99"}))
    with pytest.raises(
        ckpt.CheckpointError, match=r"model\.safetensors is from step 6 but optimizer\.safetensors from step 99"
    ):
        train(TrainConfig(run_dir=str(run)), resume=True)


def test_tf1_adam_follows_tf1s_update_rule() -> None:
    """Against a NumPy transcription of TF1's AdamOptimizer (lr_t with both bias corrections,
    epsilon added to sqrt(v) unscaled), on gradients that include tiny ones where the epsilon
    placement matters."""
    import jax.numpy as jnp

    from rnnkit.workflows.train import tf1_adam

    rng = np.random.default_rng(0)
    grads = [rng.standard_normal(6) * np.array([1, 1e-3, 1e-6, 1e-8, 10, 0.1]) for _ in range(5)]
    lr, b1, b2, eps = 0.01, 0.9, 0.999, 1e-8
    var = np.ones(6)
    m = v = np.zeros(6)
    opt = tf1_adam(lr)
    params = jnp.ones(6, jnp.float32)
    state = opt.init(params)
    for t, g in enumerate(grads, start=1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        lr_t = lr * np.sqrt(1 - b2**t) / (1 - b1**t)
        var = var - lr_t * m / (np.sqrt(v) + eps)
        updates, state = opt.update(jnp.asarray(g, jnp.float32), state)
        params = params + updates
        np.testing.assert_allclose(np.asarray(params), var, rtol=1e-6, atol=1e-7)
    assert int(state.count) == 5


def test_tf1_adam_init_copies_zeros_without_compiling(caplog: pytest.LogCaptureFixture) -> None:
    """Adam's moments start as zeros copied from the host, placed as the parameters are
    (committed only where they are: a committed argument would compile the train step again
    on its second call), one buffer each (both are donated); under jit, zeros_like as before."""
    import jax
    import jax.numpy as jnp

    from rnnkit.workflows.train import tf1_adam

    params = {"a": jnp.ones((3, 7), jnp.float32), "b": jax.device_put(np.ones(5, np.float32), jax.devices()[0])}
    with jax.log_compiles(), caplog.at_level(logging.DEBUG):
        state = tf1_adam(1e-3).init(params)
    assert not [r for r in caplog.records if "Compiling" in r.getMessage()]
    for name, p in params.items():
        for moment in (state.mu[name], state.nu[name]):
            np.testing.assert_array_equal(np.asarray(moment), np.zeros(p.shape, np.float32))
            assert moment.dtype == p.dtype
            assert moment.committed == p.committed
            assert moment.sharding == p.sharding
        assert state.mu[name].unsafe_buffer_pointer() != state.nu[name].unsafe_buffer_pointer()
    traced = jax.jit(lambda p: tf1_adam(1e-3).init(p).mu)(params)
    np.testing.assert_array_equal(np.asarray(traced["a"]), np.zeros((3, 7), np.float32))


def test_ctrl_c_saves_a_checkpoint_and_exits_130(data_dir: Path, tmp_path: Path) -> None:
    """A real SIGINT to a real `rnnkit train` process, mid-run."""
    import signal
    import sys

    run = tmp_path / "run"
    argv = [sys.executable, "-m", "rnnkit.cli", "train", "--cells", "gru:8", "--data-dir", str(data_dir)]
    argv += ["--run-dir", str(run), "--batch-size", "16", "--validation-size", "40", "--display-step", "1"]
    argv += ["--train-samples", "1000000"]  # far more steps than the test waits for
    code, err = signal_mid_run(argv, run, signal.SIGINT)
    assert code == 130, (code, err[-4000:])
    match = re.search(r"interrupted at step (\d+); checkpoint saved", err)
    assert match is not None, err
    assert "Traceback" not in err
    _, _, step = ckpt.load_checkpoint(run)  # a consistent, resumable pair
    assert step == int(match.group(1)) >= 3


def test_precision_is_kept_with_the_run_and_eval_falls_back_where_the_backend_lacks_it(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import jax

    from rnnkit.workflows.convert import load_run_model

    run = tmp_path / "run"
    train(config(data_dir, run, train_samples=3 * 16 + 1, precision="default"))
    assert json.loads((run / ckpt.CONFIG).read_text())["precision"] == "default"
    model = load_run_model(run)
    assert [model.precision, *(c.precision for c in model.cell.cells)] == ["default"] * 3
    at_default = evaluate_run(run).accuracy

    saved = json.loads((run / ckpt.CONFIG).read_text())
    (run / ckpt.CONFIG).write_text(json.dumps({**saved, "precision": "fast"}))
    line = one_line_error(*run_cli(["eval", str(run)], capsys)[::2])
    assert "config.json: precision must be None, 'default', 'high' or 'highest'" in line
    assert "got 'fast'" in line

    if jax.default_backend() != "cpu":
        return  # the rest needs a backend without TF32 algorithms
    (run / ckpt.CONFIG).write_text(json.dumps({**saved, "precision": "TF32_TF32_F32_X3"}))
    model = load_run_model(run)  # trained on a GPU, say: evaluated here in full float32
    assert [model.precision, *(c.precision for c in model.cell.cells)] == ["highest"] * 3
    assert evaluate_run(run).accuracy == pytest.approx(at_default, abs=1e-12)  # XLA's CPU: float32 either way
    line = one_line_error(*run_cli(["train", "--run-dir", str(run), "--resume"], capsys)[::2])
    assert line.endswith(
        "--precision TF32_TF32_F32_X3: JAX's cpu backend does not run it "
        "(The precision 'TF32_TF32_F32_X3' is not supported by dot_general on CPU); "
        "continue the run here with --resume --precision highest"
    )
    code, _, err = run_cli(["train", "--run-dir", str(run), "--resume", "--precision", "highest"], capsys)
    assert code == 0, err
    history = json.loads((run / ckpt.CONFIG).read_text())["history"]
    assert history == [{"step": 3, "changed": {"precision": ["TF32_TF32_F32_X3", "highest"]}}]
    line = one_line_error(
        *run_cli(["train", "--precision", "BF16_BF16_BF16", "--data-dir", str(data_dir)], capsys)[::2]
    )
    assert "--precision BF16_BF16_BF16: JAX's cpu backend does not run it" in line


def test_samples_per_s_counts_training_steps_not_validation_or_checkpoints(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a clock where every reading advances 1 ms, and validating or writing a checkpoint takes
    1000 s (a GPU compiling its predict program can take tens of seconds), the reported speed
    is the steps' own: each step reads the clock a few times, so it is far above
    (steps x batch) / 1000 s."""
    import rnnkit.workflows.train as train_module

    clock = [0.0]

    def perf_counter() -> float:
        clock[0] += 1e-3
        return clock[0]

    def slow(fn: Any) -> Any:
        def run(*args: Any, **kwargs: Any) -> Any:
            clock[0] += 1000.0
            return fn(*args, **kwargs)

        return run

    monkeypatch.setattr(train_module, "time", type("Clock", (), {"perf_counter": staticmethod(perf_counter)}))
    monkeypatch.setattr(train_module, "loss_and_accuracy", slow(train_module.loss_and_accuracy))
    monkeypatch.setattr(train_module.runs, "save_checkpoint", slow(train_module.runs.save_checkpoint))
    result = train(config(data_dir, tmp_path / "run"))  # 12 steps: checkpoints at 5 and 10, a validation at 12
    assert result.steps == 12
    assert result.samples_per_s > 11 * 16 / 1.0  # 11 steady steps in well under a second of this clock
    assert result.wall_s > 3000.0  # the clock did run through the validations and checkpoints
