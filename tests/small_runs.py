"""A small run to train in tests: a synthetic MNIST-format data set that a model learns in a
few steps, and the training configuration of a small model on it."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np

from rnnkit import runs
from rnnkit.data import write_idx
from rnnkit.workflows.train import TrainConfig

SIDE, CLASSES = 8, 3  # 8x8 images (8 steps of 8 features), 3 classes


def make_idx_dir(path: Path, n_train: int = 240, n_test: int = 60, seed: int = 0, classes: int = CLASSES) -> Path:
    """Class c lights up columns c, c+3, ... of an 8x8 image, plus noise."""
    rng = np.random.default_rng(seed)

    def images(n: int) -> tuple[np.ndarray, np.ndarray]:
        labels = rng.integers(0, classes, n).astype(np.uint8)
        x = rng.integers(0, 60, (n, SIDE, SIDE)).astype(np.uint8)
        for i, c in enumerate(labels):
            x[i, :, c::classes] = 250  # every row shows the class: learnable in a few steps
        return x, labels

    path.mkdir(parents=True, exist_ok=True)
    train_x, train_y = images(n_train)
    test_x, test_y = images(n_test)
    write_idx(path / "train-images-idx3-ubyte.gz", train_x)
    write_idx(path / "train-labels-idx1-ubyte.gz", train_y)
    write_idx(path / "t10k-images-idx3-ubyte.gz", test_x)
    write_idx(path / "t10k-labels-idx1-ubyte.gz", test_y)
    return path


def config(data_dir: Path, run_dir: Path, **changes: Any) -> TrainConfig:
    """A small stacked model (lstm:8,gru:12) trained 12 steps of 16 on `data_dir`, with a
    checkpoint every 5 steps; `changes` replace any field."""
    base = TrainConfig(
        cells="lstm:8,gru:12",
        data_dir=str(data_dir),
        run_dir=str(run_dir),
        train_samples=12 * 16 + 1,  # 12 steps of 16
        batch_size=16,
        learning_rate=0.01,
        display_step=1,
        checkpoint_every=5,
        validation_size=40,
        eval_batch_size=32,
        num_classes=CLASSES,
    )
    return dataclasses.replace(base, **changes)


def steps_logged(run: Path) -> int:
    """How many training steps `run`'s metrics.jsonl records so far (0 while it is being written)."""
    try:
        return len([r for r in runs.read_metrics(run) if "loss" in r])
    except (OSError, ValueError):  # the file being rewritten by a resume, or a line being appended
        return 0


def signal_mid_run(command: list[str], run: Path, sig: int, steps: int = 3) -> tuple[int, str]:
    """Start `command` (an `rnnkit train` process writing `run`), send it `sig` once it has
    logged `steps` training steps, and return its exit status and stderr."""
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 120
        while steps_logged(run) < steps:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "training never got going"
            time.sleep(0.05)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    return proc.returncode, err
