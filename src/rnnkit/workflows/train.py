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

import contextlib
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
from rnnkit.workflows.train_report import (
    Reporter,
    SilentReporter,
    TrainingDiverged,
    TrainingInterrupted,
    TrainResult,
    plot_curves,
)
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
    "TrainingDiverged",
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
    """Ctrl-C (SIGINT) or SIGTERM (a cluster's time limit, `kill`) during training, deferred to
    the end of the step in flight.

    A KeyboardInterrupt raised inside a train-step call can land after JAX has taken the
    donated params and optimizer state and before the new ones are returned: the arrays are
    deleted and there is nothing left to checkpoint. So while the loop runs, the first signal
    only sets `requested` and the loop stops after the step; a second one interrupts at once
    (the default behaviour), for a step that hangs."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.requested: int | None = None  # the signal received

    @contextmanager
    def installed(self) -> Iterator[_StopRequest]:
        if threading.current_thread() is not threading.main_thread():
            yield self  # signal handlers live in the main thread; elsewhere KeyboardInterrupt stays as it is
            return
        previous = {signum: signal.getsignal(signum) for signum in self.SIGNALS}

        def on_signal(signum: int, frame: Any) -> None:
            self.requested = signum
            for s in self.SIGNALS:  # a second signal interrupts now
                signal.signal(s, signal.default_int_handler)

        for signum in self.SIGNALS:
            signal.signal(signum, on_signal)
        try:
            yield self
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)


def _default_run_dir(config: TrainConfig) -> Path:
    """runs/<mode>-<local time>, created now (with -2, -3, ... for runs started in the same second)."""
    return runs.new_run_dir(Path("runs"), f"{config.mode}-{datetime.now().strftime('%Y%m%d-%H%M%S')}")


def _absolute(path: str | None) -> str | None:
    return None if path is None else str(Path(path).expanduser().absolute())


def _resolve_run_dir(
    config: TrainConfig, resume: bool, changes: dict[str, Any] | None = None, lock: bool = True
) -> tuple[TrainConfig, Path]:
    """The config to train with and its run directory, locked for this process (with `lock`);
    refuses to start over an existing run, and applies `changes` to a resumed one."""
    if resume:
        if config.run_dir is None:
            raise ConfigError("--resume needs --run-dir: the run directory to continue")
        run_dir = Path(config.run_dir)
        runs.read_config(run_dir)  # "not a run directory" before anything is locked or created
        if lock:
            runs.lock_run_dir(run_dir)
        saved = runs.read_run_config(run_dir)
        if changes and changes.get("data_dir") is not None:
            changes = {**changes, "data_dir": _absolute(changes["data_dir"])}
        resumed = runs.resume_config(saved, dict(changes or {}), runs.saved_step(run_dir))
        resumed.validate(backend=False)
        try:
            check_backend_precision(resumed.precision)
        except ConfigError as err:  # begun where it runs (a GPU), continued where it doesn't
            raise ConfigError(f"{err}; continue the run here with --resume --precision highest") from None
        return dataclasses.replace(resumed, run_dir=str(run_dir)), run_dir
    run_dir = Path(config.run_dir) if config.run_dir is not None else _default_run_dir(config)
    if lock:
        runs.lock_run_dir(run_dir)
    if runs.has_checkpoint(run_dir):
        raise CheckpointError(
            f"{run_dir} already holds a run; pass --resume to continue it, or choose another --run-dir"
        )
    # A config.json without a checkpoint is a run stopped before its first checkpoint: nothing
    # trained is lost by starting it afresh, so its metrics go and the new config replaces it.
    if (run_dir / runs.CONFIG).exists():
        (run_dir / runs.METRICS).unlink(missing_ok=True)
    return dataclasses.replace(config, run_dir=str(run_dir), data_dir=_absolute(config.data_dir)), run_dir


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
        if write and config.history != runs.read_run_config(run_dir).history:  # settings changed: recorded
            atomic_write_text(run_dir / runs.CONFIG, config.to_json())
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
    created: bool = False  # this call created the run directory (a new run)


def _open_run(
    config: TrainConfig,
    resume: bool,
    parallel: DataParallel | None,
    writer: bool,
    progress: _Progress,
    changes: dict[str, Any] | None = None,
) -> tuple[TrainConfig, Path, Data]:
    """The config to train with (its data's facts recorded), its run directory (config.json
    written there by the writing process of a new run) and its data; every check that can
    refuse the run comes before training starts."""
    several = jax.process_count() > 1
    if several and config.run_dir is None:
        raise ConfigError("several processes need --run-dir: one directory that every process sees (shared storage)")
    progress.created = not resume and (config.run_dir is None or not Path(config.run_dir).exists())
    config, run_dir = _resolve_run_dir(config, resume, changes, lock=writer)
    progress.run_dir = run_dir
    if parallel is not None:
        distributed.check_batch_size(config.batch_size, parallel.num_devices)
    data, image_shape = load_data(config)
    if several:  # every process has checked the run directory before process 0 writes into it
        multihost_utils.sync_global_devices("rnnkit train: run directory checked")
    if config.batch_size > len(data.train_x):
        raise ConfigError(
            f"--batch-size must be at most the {len(data.train_x)} training examples; got {config.batch_size}"
        )
    total = total_steps(config, len(data.train_x))
    if total < 1:
        raise ConfigError(
            f"--train-samples {config.train_samples} gives no training step at --batch-size {config.batch_size}; "
            f"it must be more than the batch size"
        )
    at = runs.saved_step(run_dir) if resume else 0
    if total < at:
        raise ConfigError(f"--resume: the run is at step {at}, but its settings now give {total} steps")
    config = _with_data_facts(config, data, image_shape, run_dir, resume, write=writer)
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
    changes: dict[str, Any] | None = None,
) -> TrainResult:
    """Train (or, with `resume`, continue) a run; returns the test figures. Raises
    `TrainingInterrupted` on Ctrl-C or SIGTERM after saving a checkpoint, and
    `TrainingDiverged` when the loss or a weight turns NaN or infinite (nothing non-finite is
    saved).

    The run directory is locked for the call (`rnnkit.runs.lock_run_dir`): a second writer gets
    `runs.RunInUse`. With `resume`, only `config.run_dir` is read from `config`; `changes` are
    settings given for the resumed run, applied where they may change (`runs.resume_config`:
    its length, data directory, precision, cadence) and refused where they define the run.
    A config.json without a checkpoint resumes from step 0.

    `devices` (a count or "all") trains data-parallel over that many devices, the global batch
    `config.batch_size` split over them (see `rnnkit.workflows.distributed`); None is one
    device, or every device when this process is one of several (`distributed.initialize`).
    Several processes all call `train` with the same arguments; only process 0 writes the run
    directory. A lost peer process raises `distributed.PeerLost`."""
    reporter = reporter or SilentReporter()
    if not resume:
        config.validate()
    chosen = distributed.select_devices(devices)
    parallel = None if chosen is None else DataParallel(chosen)
    progress = _Progress()
    try:
        return _train(config, resume, reporter, parallel, progress, changes)
    except (ConfigError, CheckpointError, DataError):
        raise
    except Exception as err:
        if distributed.lost_peer(err):
            raise distributed.peer_lost(err, progress.step, progress.saved, progress.run_dir) from None
        raise
    finally:
        if progress.run_dir is not None:
            runs.release_run_dir(progress.run_dir)
            if progress.created and distributed.is_writer() and not runs.holds_run(progress.run_dir):
                _remove_unstarted(progress.run_dir)


def _remove_unstarted(run_dir: Path) -> None:
    """Remove a run directory this call created and refused before it wrote its config: a
    refused start leaves nothing behind."""
    (run_dir / runs.LOCK).unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        run_dir.rmdir()  # only if empty


def _train(
    config: TrainConfig,
    resume: bool,
    reporter: Reporter,
    parallel: DataParallel | None,
    progress: _Progress,
    changes: dict[str, Any] | None = None,
) -> TrainResult:
    writer = distributed.is_writer()
    config, run_dir, data = _open_run(config, resume, parallel, writer, progress, changes)
    model = build_model(config, data.train_x.shape[1:], data.num_classes)
    params, static = eqx.partition(model, eqx.is_inexact_array)
    optimizer = make_optimizer(config)
    opt_state = optimizer.init(params)
    step = 0
    if resume and runs.has_checkpoint(run_dir):  # else stopped before its first checkpoint: from step 0
        params, opt_state, step = _restore(model, opt_state, config, run_dir)
        progress.saved = step
    if resume and writer:
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

    last_save = time.perf_counter()

    def save(at_step: int) -> None:
        nonlocal last_save
        if writer:  # parameters are replicated: process 0's copy is the whole model
            current = eqx.combine(params, static)
            variables = current.variables()
            bad = runs.first_non_finite({k: np.asarray(v) for k, v in variables.items()})
            if bad is not None:
                raise TrainingDiverged(run_dir, at_step, f"weight {bad}", progress.saved)
            runs.save_checkpoint(run_dir, variables, optimizer_variables(opt_state), at_step)
        progress.saved = at_step
        last_save = time.perf_counter()

    def checkpoint_due(at_step: int) -> bool:
        if at_step % config.checkpoint_every == 0:
            return True
        if not is_display_step(at_step):  # the clock is read where the loop syncs anyway
            return False
        # every process must agree on a time-based checkpoint: process 0's clock decides
        due = time.perf_counter() - last_save >= 60 * config.checkpoint_minutes
        if jax.process_count() > 1:
            due = bool(multihost_utils.broadcast_one_to_all(np.bool_(due)))
        return due

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
                    if not np.isfinite(loss_v):
                        raise TrainingDiverged(run_dir, step, "the loss", progress.saved)
                    elapsed = time.perf_counter() - t_steady - aside_s
                    speed = steady_steps * config.batch_size / elapsed if steady_steps and elapsed > 0 else 0.0
                    reporter.step(step, loss_v, acc_v, speed)
                    if step % config.display_step == 0:
                        samples = step * config.batch_size
                        reporter.line(f"Iter {samples}, Minibatch Loss= {loss_v:.6f}, Training Accuracy= {acc_v:.5f}")
                if step % steps_per_epoch == 0:
                    aside(validate, step)
                if checkpoint_due(step):
                    aside(save, step)
                if stop.requested:
                    raise KeyboardInterrupt  # after the step: params and optimizer state are whole
    except KeyboardInterrupt:
        batches.close()  # stop the prefetch thread now, not whenever the generator is collected
        reporter.stop()
        if logged != step and is_display_step(step):
            log(step, loss, acc)  # interrupted between the step and its record: a resume starts after it
        save(step)
        raise TrainingInterrupted(run_dir, step, stop.requested or signal.SIGINT) from None
    except TrainingDiverged:
        batches.close()
        reporter.stop()
        raise
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
    return TrainResult(run_dir, step, first_100, test_acc, test_loss, wall, speed, first_step_s, len(data.test_y))
