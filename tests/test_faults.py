"""Fault injection: `rnnkit train` killed with SIGKILL at random moments, again and again,
then resumed, reaches the uninterrupted run's weights bit for bit. A kill may land anywhere:
while JAX starts, before the first checkpoint (config.json only), between a checkpoint's two
renames, while metrics.jsonl is appended. The default run kills twice; `-m slow` soaks."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from rnnkit import runs
from rnnkit.workflows.train import TrainConfig, train

from small_runs import signal_mid_run, steps_logged

STEPS, BATCH = 24, 16


pytestmark = pytest.mark.usefixtures("standard_promotion")  # optax mixes Python floats and int32 counts


def argv(data_dir: Path, run: Path) -> list[str]:
    args = [sys.executable, "-m", "rnnkit.cli", "train", "--cells", "gru:8", "--data-dir", str(data_dir)]
    args += ["--run-dir", str(run), "--batch-size", str(BATCH), "--validation-size", "40", "--display-step", "1"]
    return [*args, "--checkpoint-every", "1", "--train-samples", str(STEPS * BATCH + 1)]


def killed_then_resumed(data_dir: Path, run: Path, kills: int, rng: random.Random) -> list[str]:
    """Start (or resume) the run up to `kills` times (until it has trained to the end), each
    killed with SIGKILL at a random moment:
    now and then while it starts (before any step), mostly once a random step has been logged
    (plus up to 20 ms, so a kill can land inside a checkpoint or an append). Returns the
    moments, as a log for the failure message."""
    log = []
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    for _ in range(kills):
        logged = steps_logged(run)
        if logged >= STEPS:
            break  # trained to the end: finish() does the rest
        command = argv(data_dir, run) + (["--resume"] if runs.holds_run(run) else [])
        proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
        try:
            if rng.random() < 0.15:
                moment = f"{rng.uniform(0, 2):.2f} s after the start"
                time.sleep(float(moment.split()[0]))
            else:
                target = rng.randint(logged + 1, STEPS)  # a step this process has yet to take
                deadline = time.monotonic() + 120
                while steps_logged(run) < target and proc.poll() is None and time.monotonic() < deadline:
                    time.sleep(0.002)
                delay = rng.uniform(0, 0.02)
                time.sleep(delay)
                moment = f"step {target} logged + {1000 * delay:.0f} ms"
            proc.send_signal(signal.SIGKILL)
            _, err = proc.communicate(timeout=60)
        finally:
            proc.kill()
        step = runs.saved_step(run) if runs.has_checkpoint(run) else None
        log.append(f"killed at {moment} (exit {proc.returncode}), checkpoint at step {step}")
        assert proc.returncode in (-signal.SIGKILL, 0), err[-2000:]
    return log


def finish(data_dir: Path, run: Path) -> None:
    config = TrainConfig(
        cells="gru:8",
        data_dir=str(data_dir),
        run_dir=str(run),
        batch_size=BATCH,
        validation_size=40,
        display_step=1,
        checkpoint_every=1,
        train_samples=STEPS * BATCH + 1,
    )
    if runs.holds_run(run):
        train(TrainConfig(run_dir=str(run)), resume=True)
    else:
        train(config)


def assert_same_weights(a_run: Path, b_run: Path, log: list[str]) -> None:
    a, a_step = runs.load_model_variables(a_run)
    b, b_step = runs.load_model_variables(b_run)
    assert a_step == b_step == STEPS, log
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=f"{name}; {log}")
    losses = [r["loss"] for r in runs.read_metrics(a_run) if "loss" in r]
    assert losses == [r["loss"] for r in runs.read_metrics(b_run) if "loss" in r], log


@pytest.fixture(scope="module")
def uninterrupted(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("whole") / "run"
    finish(data_dir, run)
    return run


def test_sigkill_at_random_moments_then_resume_reaches_the_same_weights(
    data_dir: Path, uninterrupted: Path, tmp_path: Path
) -> None:
    seed = random.randrange(2**32)
    log = [f"seed {seed}", *killed_then_resumed(data_dir, tmp_path / "run", kills=2, rng=random.Random(seed))]
    finish(data_dir, tmp_path / "run")
    assert_same_weights(uninterrupted, tmp_path / "run", log)


@pytest.mark.slow
def test_soak_many_kills(data_dir: Path, uninterrupted: Path, tmp_path: Path) -> None:
    """Runs killed again and again until they train to the end, until 60 kills in all; prints
    the counts (RNNKIT_SOAK_SEED picks the moments)."""
    rng = random.Random(int(os.environ.get("RNNKIT_SOAK_SEED", "0")))
    runs_done, kills, before_checkpoint = 0, 0, 0
    while kills < 60:
        run = tmp_path / f"run{runs_done}"
        log = killed_then_resumed(data_dir, run, kills=60, rng=rng)
        finish(data_dir, run)
        assert_same_weights(uninterrupted, run, log)
        runs_done, kills = runs_done + 1, kills + len(log)
        before_checkpoint += sum("checkpoint at step None" in line for line in log)
        print(f"soak: run {runs_done}: {'; '.join(log)}")
    print(
        f"soak: {runs_done} runs, {kills} kills ({before_checkpoint} before the first checkpoint), "
        "every run resumed to the uninterrupted weights"
    )


def test_sigterm_saves_a_checkpoint_and_exits_143(data_dir: Path, tmp_path: Path) -> None:
    """A cluster's time limit: SIGTERM finishes the step in flight, checkpoints, exits 143."""
    import re

    run = tmp_path / "run"
    command = [*argv(data_dir, run)[:-1], "1000000", "--checkpoint-every", "1000"]  # far more steps than we wait for
    code, err = signal_mid_run(command, run, signal.SIGTERM)
    assert code == 143, err[-3000:]
    match = re.search(r"rnnkit: stopped by SIGTERM at step (\d+); checkpoint saved", err)
    assert match is not None, err
    assert "Traceback" not in err
    assert runs.load_checkpoint(run)[2] == int(match.group(1)) >= 3
