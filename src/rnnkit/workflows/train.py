"""`rnnkit train`: the seed's program, a sequence classifier on MNIST read row by row.

Defaults reproduce the seed: `MultiRNNCell([LSTMCell(128), GRUCell(256)])`, last output to a
dense layer, mean softmax cross-entropy, Adam 0.001, batch 128, training while
`step * batch_size < 100000` (781 steps), a line every 10 steps, then test accuracy.

The whole train step (forward, backward, Adam) is one jitted function with donated buffers;
batches are cut in a background thread so the step never waits on NumPy. Batch k is a pure
function of (seed, k) (`rnnkit.data.batch_indices`), so a resumed run sees exactly the
batches an uninterrupted one would, and reaches the same weights.

This module holds the loop and the run's life (new, resumed, interrupted); the parts it
composes live beside it: the run directory, config and optimizer in `rnnkit.runs`, the data
and batches in `train_data`, the jitted steps in `train_step`, what the caller is told in
`train_report`. Every name this module offered before stays importable from it.
"""

from __future__ import annotations

import dataclasses
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import numpy as np
from jax.experimental import multihost_utils

from rnnkit import runs
from rnnkit._atomic import atomic_write_text
from rnnkit.data import DataError
from rnnkit.errors import CheckpointError, ConfigError
from rnnkit.models import SequenceClassifier
from rnnkit.runs import (
    TrainConfig,
    build_model,
    check_backend_precision,
    load_model,
    make_optimizer,
    optimizer_variables,
    restore_optimizer_state,
    tf1_adam,
    with_checkpoint_weights,
)
from rnnkit.workflows import distributed
from rnnkit.workflows.distributed import DataParallel
from rnnkit.workflows.train_data import Data, load_data, prefetch_batches, total_steps
from rnnkit.workflows.train_report import Reporter, SilentReporter, TrainingInterrupted, TrainResult, plot_curves
from rnnkit.workflows.train_step import (
    cross_entropy,
    loss_and_accuracy,
    make_parallel_train_step,
    make_predict,
    make_train_step,
    predict_logits,
)

__all__ = [  # the names this module has always offered; each is defined where its concept lives
    "Data",
    "Reporter",
    "SilentReporter",
    "TrainConfig",
    "TrainResult",
    "TrainingInterrupted",
    "build_model",
    "check_backend_precision",
    "cross_entropy",
    "load_data",
    "load_model",
    "loss_and_accuracy",
    "make_optimizer",
    "make_parallel_train_step",
    "make_predict",
    "make_train_step",
    "predict_logits",
    "tf1_adam",
    "total_steps",
    "train",
]


class _StopRequest:
    """Ctrl-C during training, deferred to the end of the step in flight.

    A KeyboardInterrupt raised inside a train-step call can land after JAX has taken the
    donated params and optimizer state and before the new ones are returned: the arrays are
    deleted and there is nothing left to checkpoint. So while the loop runs, the first SIGINT
    only sets `requested` and the loop stops after the step; a second one interrupts at once
    (the default behaviour), for a step that hangs."""

    def __init__(self) -> None:
        self.requested = False

    @contextmanager
    def installed(self) -> Iterator[_StopRequest]:
        if threading.current_thread() is not threading.main_thread():
            yield self  # signal handlers live in the main thread; elsewhere KeyboardInterrupt stays as it is
            return
        previous = signal.getsignal(signal.SIGINT)

        def on_sigint(signum: int, frame: Any) -> None:
            self.requested = True
            signal.signal(signal.SIGINT, signal.default_int_handler)  # a second Ctrl-C interrupts now

        signal.signal(signal.SIGINT, on_sigint)
        try:
            yield self
        finally:
            signal.signal(signal.SIGINT, previous)


def _default_run_dir(config: TrainConfig) -> Path:
    return Path("runs") / f"{config.mode}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def _resolve_run_dir(config: TrainConfig, resume: bool) -> tuple[TrainConfig, Path]:
    """The config to train with and its run directory; refuses to start over an existing run."""
    if resume:
        if config.run_dir is None:
            raise ConfigError("--resume needs --run-dir: the run directory to continue")
        run_dir = Path(config.run_dir)
        saved = runs.read_run_config(run_dir)
        if not runs.has_checkpoint(run_dir):
            raise CheckpointError(f"{run_dir}: no checkpoint to resume from ({runs.MODEL} is missing)")
        check_backend_precision(saved.precision)  # a run started on a GPU, continued on a CPU
        return saved, run_dir
    run_dir = Path(config.run_dir) if config.run_dir is not None else _default_run_dir(config)
    if runs.holds_run(run_dir):
        raise CheckpointError(
            f"{run_dir} already holds a run; pass --resume to continue it, or choose another --run-dir"
        )
    return dataclasses.replace(config, run_dir=str(run_dir)), run_dir


def _with_data_facts(
    config: TrainConfig, data: Data, image_shape: tuple[int, int], run_dir: Path, resume: bool, write: bool = True
) -> TrainConfig:
    """Record the image shape and class count in the config (written to config.json for a new
    run); on resume, refuse data that no longer matches the run."""
    facts = {"image_shape": image_shape, "num_classes": data.num_classes}
    if resume:
        for name, value in facts.items():
            if getattr(config, name) != value:
                raise CheckpointError(
                    f"{run_dir}: the data gives {name}={value}, but the run was trained with {getattr(config, name)}"
                )
        return config
    config = dataclasses.replace(config, **facts)
    if write:
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(run_dir / runs.CONFIG, config.to_json())
    return config


@dataclass
class _Progress:
    """Where a run is, for the message when a peer process is lost."""

    run_dir: Path | None = None
    step: int = 0
    saved: int | None = None  # the step of the last checkpoint on disk


def _open_run(
    config: TrainConfig, resume: bool, parallel: DataParallel | None, writer: bool, progress: _Progress
) -> tuple[TrainConfig, Path, Data]:
    """The config to train with (its data's facts recorded), its run directory (config.json
    written there by the writing process of a new run) and its data; every check that can
    refuse the run comes before training starts."""
    several = jax.process_count() > 1
    if several and config.run_dir is None:
        raise ConfigError("several processes need --run-dir: one directory that every process sees (shared storage)")
    config, run_dir = _resolve_run_dir(config, resume)
    progress.run_dir = run_dir
    if parallel is not None:
        distributed.check_batch_size(config.batch_size, parallel.num_devices)
    data, image_shape = load_data(config)
    if several:  # every process has checked the run directory before process 0 writes into it
        multihost_utils.sync_global_devices("rnnkit train: run directory checked")
    config = _with_data_facts(config, data, image_shape, run_dir, resume, write=writer)
    if config.batch_size > len(data.train_x):
        raise ConfigError(
            f"--batch-size must be at most the {len(data.train_x)} training examples; got {config.batch_size}"
        )
    return config, run_dir, data


def _restore(model: SequenceClassifier, opt_state: Any, config: TrainConfig, run_dir: Path) -> tuple[Any, Any, int]:
    """The parameters, optimizer state and step of the run's last checkpoint, each checked
    against the fresh `model` and `opt_state` it replaces."""
    model_vars, opt_vars, step = runs.load_checkpoint(run_dir)
    restored = with_checkpoint_weights(model, model_vars, run_dir, config)
    params, _ = eqx.partition(restored, eqx.is_inexact_array)
    return params, restore_optimizer_state(opt_state, opt_vars, run_dir), step


def train(
    config: TrainConfig,
    *,
    resume: bool = False,
    reporter: Reporter | None = None,
    devices: int | str | None = None,
) -> TrainResult:
    """Train (or, with `resume`, continue) a run; returns the test figures. Raises
    `TrainingInterrupted` on Ctrl-C after saving a checkpoint.

    `devices` (a count or "all") trains data-parallel over that many devices, the global batch
    `config.batch_size` split over them (see `rnnkit.workflows.distributed`); None is one
    device, or every device when this process is one of several (`distributed.initialize`).
    Several processes all call `train` with the same arguments; only process 0 writes the run
    directory. A lost peer process raises `distributed.PeerLost`."""
    reporter = reporter or SilentReporter()
    config.validate()
    chosen = distributed.select_devices(devices)
    parallel = None if chosen is None else DataParallel(chosen)
    progress = _Progress()
    try:
        return _train(config, resume, reporter, parallel, progress)
    except (ConfigError, CheckpointError, DataError):
        raise
    except Exception as err:
        if distributed.lost_peer(err):
            raise distributed.peer_lost(err, progress.step, progress.saved, progress.run_dir) from None
        raise


def _train(
    config: TrainConfig, resume: bool, reporter: Reporter, parallel: DataParallel | None, progress: _Progress
) -> TrainResult:
    writer = distributed.is_writer()
    config, run_dir, data = _open_run(config, resume, parallel, writer, progress)
    model = build_model(config, data.train_x.shape[1:], data.num_classes)
    params, static = eqx.partition(model, eqx.is_inexact_array)
    optimizer = make_optimizer(config)
    opt_state = optimizer.init(params)
    step = 0
    if resume:
        params, opt_state, step = _restore(model, opt_state, config, run_dir)
        progress.saved = step
        if writer:
            runs.truncate_metrics(run_dir, step)

    total = total_steps(config, len(data.train_x))
    steps_per_epoch = len(data.train_x) // config.batch_size
    num_params = sum(int(np.prod(v.shape)) for v in model.variables().values())
    dropout_key = jax.random.fold_in(jax.random.key(config.seed), 1)
    predict = make_predict(static, parallel)
    if parallel is None:
        train_step = make_train_step(static, optimizer)
        rows = slice(None)

        def step_inputs(x: np.ndarray, y: np.ndarray, at_step: int) -> tuple[Any, ...]:
            return x, y, jax.random.fold_in(dropout_key, at_step)

        def logits_of(x: np.ndarray) -> np.ndarray:
            return predict_logits(predict, params, x, config.eval_batch_size)
    else:
        train_step = make_parallel_train_step(static, optimizer, parallel, dropout_key)
        params, opt_state = parallel.replicate((params, opt_state))
        rows = parallel.local_rows(config.batch_size)  # this process reads only its rows of each batch

        def step_inputs(x: np.ndarray, y: np.ndarray, at_step: int) -> tuple[Any, ...]:
            batch = config.batch_size
            return parallel.global_batch(x, batch), parallel.global_batch(y, batch), np.int32(at_step)

        def logits_of(x: np.ndarray) -> np.ndarray:
            return parallel.predict_logits(predict, params, x, config.eval_batch_size)

    def save(at_step: int) -> None:
        if writer:  # parameters are replicated: process 0's copy is the whole model
            current = eqx.combine(params, static)
            runs.save_checkpoint(run_dir, current.variables(), optimizer_variables(opt_state), at_step)
        progress.saved = at_step

    def append_metrics(record: dict[str, Any]) -> None:
        if writer:
            runs.append_metrics(run_dir, record)

    def validate(at_step: int) -> None:
        if not len(data.valid_x):
            return
        loss, acc = loss_and_accuracy(logits_of(data.valid_x), data.valid_y)
        append_metrics({"step": at_step, "val_loss": loss, "val_accuracy": acc})
        epoch = at_step / steps_per_epoch
        reporter.line(f"Step {at_step} (epoch {epoch:.2f}): validation loss= {loss:.6f}, accuracy= {acc:.5f}")

    reporter.start(config, total, step, run_dir, num_params)
    if parallel is not None:
        per_device = config.batch_size // parallel.num_devices
        reporter.line(
            f"data parallel: {parallel.describe()}, global batch {config.batch_size}, {per_device} per device"
        )
    t_start = time.perf_counter()
    first_step_s, t_steady, steady_steps = 0.0, None, 0
    logged = step  # the last step whose minibatch record is in metrics.jsonl
    aside_s = 0.0  # time the loop spends validating and checkpointing: not training, so not in samples/s

    def aside(fn: Any, at_step: int) -> None:
        nonlocal aside_s
        jax.block_until_ready((params, opt_state))  # the steps queued before it count as training
        t0 = time.perf_counter()
        fn(at_step)
        aside_s += time.perf_counter() - t0

    def log(at_step: int, loss: jax.Array, acc: jax.Array) -> tuple[float, float]:
        nonlocal logged
        loss_v, acc_v = float(loss), float(acc)
        record = {"step": at_step, "samples": at_step * config.batch_size, "loss": loss_v, "accuracy": acc_v}
        append_metrics(record)
        logged = at_step
        return loss_v, acc_v

    def is_display_step(at_step: int) -> bool:
        return at_step % config.display_step == 0 or at_step == total

    batches = prefetch_batches(data, config, step, total, rows)
    stop = _StopRequest()
    try:
        with stop.installed():
            for x, y in batches:
                t0 = time.perf_counter()
                params, opt_state, loss, acc = train_step(params, opt_state, *step_inputs(x, y, step))
                step += 1
                progress.step = step
                if t_steady is None:  # the first step includes tracing and compiling
                    jax.block_until_ready(loss)
                    first_step_s, t_steady = time.perf_counter() - t0, time.perf_counter()
                else:
                    steady_steps += 1
                if is_display_step(step):
                    loss_v, acc_v = log(step, loss, acc)  # the record first: Ctrl-C may come during reporting
                    elapsed = time.perf_counter() - t_steady - aside_s
                    speed = steady_steps * config.batch_size / elapsed if steady_steps and elapsed > 0 else 0.0
                    reporter.step(step, loss_v, acc_v, speed)
                    if step % config.display_step == 0:
                        samples = step * config.batch_size
                        reporter.line(f"Iter {samples}, Minibatch Loss= {loss_v:.6f}, Training Accuracy= {acc_v:.5f}")
                if step % steps_per_epoch == 0:
                    aside(validate, step)
                if step % config.checkpoint_every == 0:
                    aside(save, step)
                if stop.requested:
                    raise KeyboardInterrupt  # after the step: params and optimizer state are whole
    except KeyboardInterrupt:
        batches.close()  # stop the prefetch thread now, not whenever the generator is collected
        if logged != step and is_display_step(step):
            log(step, loss, acc)  # interrupted between the step and its record: a resume starts after it
        save(step)
        reporter.stop()
        raise TrainingInterrupted(run_dir, step) from None
    jax.block_until_ready(params)
    train_s = time.perf_counter() - (t_steady or t_start) - aside_s
    save(step)
    if step % steps_per_epoch != 0:
        validate(step)
    reporter.stop()
    reporter.line(" Finished!")

    logits = logits_of(data.test_x)
    test_loss, test_acc = loss_and_accuracy(logits, data.test_y)
    first_100 = float(np.mean(logits[:100].argmax(-1) == data.test_y[:100]))
    wall = time.perf_counter() - t_start
    speed = steady_steps * config.batch_size / train_s if steady_steps and train_s > 0 else 0.0
    append_metrics(
        {"step": step, "test_loss": test_loss, "test_accuracy": test_acc, "test_accuracy_first_100": first_100}
    )
    if writer:
        plot_curves(run_dir)
    return TrainResult(run_dir, step, first_100, test_acc, test_loss, wall, speed, first_step_s)
