"""`rnnkit train`: the seed's program, a sequence classifier on MNIST read row by row.

Defaults reproduce the seed: `MultiRNNCell([LSTMCell(128), GRUCell(256)])`, last output to a
dense layer, mean softmax cross-entropy, Adam 0.001, batch 128, training while
`step * batch_size < 100000` (781 steps), a line every 10 steps, then test accuracy.

The whole train step (forward, backward, Adam) is one jitted function with donated buffers;
batches are cut in a background thread so the step never waits on NumPy. Batch k is a pure
function of (seed, k) (`rnnkit.data.batch_indices`), so a resumed run sees exactly the
batches an uninterrupted one would, and reaches the same weights.
"""

from __future__ import annotations

import dataclasses
import queue
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.experimental import multihost_utils

from rnnkit import runs
from rnnkit._atomic import atomic_write_text
from rnnkit.data import DataError, batch_indices, load_mnist, split_validation, to_layout
from rnnkit.errors import CheckpointError, ConfigError
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
from rnnkit.workflows.plots import pyplot, save_png

__all__ = [  # the names this module has always offered, some now defined in rnnkit.runs
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


@dataclass
class Data:
    """Arrays in the model's layout: x float32 [N, time, features], y int32 [N]."""

    train_x: np.ndarray
    train_y: np.ndarray
    valid_x: np.ndarray
    valid_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    num_classes: int


def load_data(config: TrainConfig) -> tuple[Data, tuple[int, int]]:
    """The run's data in the model's layout, and the images' [height, width]."""
    splits = load_mnist(config.data_dir)
    (train_images, train_labels), (valid_images, valid_labels) = split_validation(
        splits.train_images, splits.train_labels, config.validation_size, config.seed
    )
    num_classes = int(max(splits.train_labels.max(), splits.test_labels.max())) + 1

    def layout(images: np.ndarray) -> np.ndarray:
        return to_layout(images, config.layout)

    image_shape = (int(splits.train_images.shape[1]), int(splits.train_images.shape[2]))
    data = Data(
        layout(train_images),
        train_labels.astype(np.int32),
        layout(valid_images),
        valid_labels.astype(np.int32),
        layout(splits.test_images),
        splits.test_labels.astype(np.int32),
        num_classes,
    )
    return data, image_shape


def total_steps(config: TrainConfig, num_train: int) -> int:
    if config.epochs is not None:
        return config.epochs * (num_train // config.batch_size)
    return (config.train_samples - 1) // config.batch_size  # the seed's `while step * batch < iters`, step from 1


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def make_train_step(static: Any, optimizer: optax.GradientTransformation) -> Any:
    """One jitted step: loss, gradients, the optimizer update. Params and optimizer state are
    donated: their buffers are reused for the new values."""
    return jax.jit(_train_step_fn(static, optimizer), donate_argnums=(0, 1))


def _train_step_fn(static: Any, optimizer: optax.GradientTransformation) -> Any:
    def step(params: Any, opt_state: Any, x: jax.Array, y: jax.Array, key: jax.Array) -> tuple[Any, ...]:
        def loss_fn(p: Any) -> tuple[jax.Array, jax.Array]:
            model = eqx.combine(p, static).with_dropout_key(key)
            logits = model(x)
            return cross_entropy(logits, y), logits

        (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        accuracy = jnp.mean(jnp.argmax(logits, axis=-1) == y)
        return params, opt_state, loss, accuracy

    return step


def make_parallel_train_step(
    static: Any, optimizer: optax.GradientTransformation, parallel: DataParallel, dropout_key: jax.Array
) -> Any:
    """The train step over a device mesh: x and y sharded over the batch, the rest replicated;
    takes the step number (the dropout key is derived inside, as the single-device loop does
    outside, so both draw the same masks)."""
    step_fn = _train_step_fn(static, optimizer)

    def step(params: Any, opt_state: Any, x: jax.Array, y: jax.Array, at: jax.Array) -> tuple[Any, ...]:
        return step_fn(params, opt_state, x, y, jax.random.fold_in(dropout_key, at))

    return parallel.jit(step, batch_args=(2, 3), num_args=5, donate_argnums=(0, 1))


def make_predict(static: Any, parallel: DataParallel | None = None) -> Any:
    """Jitted inference: dropout off. Over `parallel`'s mesh, x is sharded over the batch and
    the logits gathered on every device."""

    def predict(params: Any, x: jax.Array) -> jax.Array:
        return eqx.nn.inference_mode(eqx.combine(params, static))(x)

    return jax.jit(predict) if parallel is None else parallel.jit(predict, batch_args=(1,), num_args=2)


def predict_logits(predict: Any, params: Any, x: np.ndarray, batch_size: int) -> np.ndarray:
    """Logits for all of x, in fixed-size batches (the last one padded) so it compiles once."""
    out = []
    for start in range(0, len(x), batch_size):
        chunk = x[start : start + batch_size]
        pad = batch_size - len(chunk)
        padded = np.concatenate([chunk, np.zeros((pad, *chunk.shape[1:]), chunk.dtype)]) if pad else chunk
        out.append(np.asarray(predict(params, padded))[: len(chunk)])
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def loss_and_accuracy(logits: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    loss = float(cross_entropy(jnp.asarray(logits), jnp.asarray(labels)))
    return loss, float(np.mean(logits.argmax(axis=-1) == labels))


class Reporter(Protocol):
    """What the training loop tells its caller; the CLI draws it with Rich, tests collect it."""

    def start(self, config: TrainConfig, total: int, first_step: int, run_dir: Path, num_params: int) -> None: ...
    def step(self, step: int, loss: float, accuracy: float, samples_per_s: float) -> None: ...
    def line(self, text: str) -> None: ...
    def stop(self) -> None: ...


class SilentReporter:
    def start(self, config: TrainConfig, total: int, first_step: int, run_dir: Path, num_params: int) -> None:
        pass

    def step(self, step: int, loss: float, accuracy: float, samples_per_s: float) -> None:
        pass

    def line(self, text: str) -> None:
        pass

    def stop(self) -> None:
        pass


@dataclass(frozen=True)
class TrainResult:
    run_dir: Path
    steps: int
    test_accuracy_first_100: float
    test_accuracy: float
    test_loss: float
    wall_s: float
    samples_per_s: float  # training steps only: after the first (compiling) step, without validations and checkpoints
    first_step_s: float  # the first step: trace + compile + run


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


class TrainingInterrupted(Exception):
    """Ctrl-C during training; the checkpoint at `step` was saved before this was raised."""

    def __init__(self, run_dir: Path, step: int):
        super().__init__(f"interrupted at step {step}; checkpoint saved in {run_dir}")
        self.run_dir, self.step = run_dir, step


def _batches(
    data: Data, config: TrainConfig, first: int, last: int, rows: slice = slice(None)
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Batches first..last-1 (0-based), cut ahead in a thread so the device never waits; with
    `rows`, only those rows of each batch (a process's share of a global batch)."""
    q: queue.Queue[Any] = queue.Queue(maxsize=4)
    stop = threading.Event()

    def produce() -> None:
        for step in range(first, last):
            if stop.is_set():
                return
            idx = batch_indices(len(data.train_x), config.batch_size, config.seed, step)[rows]
            q.put((data.train_x[idx], data.train_y[idx]))
        q.put(None)

    thread = threading.Thread(target=produce, daemon=True)
    thread.start()
    try:
        while (item := q.get()) is not None:
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # unblock a producer waiting on a full queue
            try:
                q.get_nowait()
            except queue.Empty:
                thread.join(timeout=0.05)


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
    several = jax.process_count() > 1
    writer = distributed.is_writer()
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

    model = build_model(config, data.train_x.shape[1:], data.num_classes)
    params, static = eqx.partition(model, eqx.is_inexact_array)
    optimizer = make_optimizer(config)
    opt_state = optimizer.init(params)
    step = 0
    if resume:
        model_vars, opt_vars, step = runs.load_checkpoint(run_dir)
        restored = with_checkpoint_weights(model, model_vars, run_dir, config)
        params, _ = eqx.partition(restored, eqx.is_inexact_array)
        opt_state = restore_optimizer_state(opt_state, opt_vars, run_dir)
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

    batches = _batches(data, config, step, total, rows)
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
        _plot_curves(run_dir)
    return TrainResult(run_dir, step, first_100, test_acc, test_loss, wall, speed, first_step_s)


def _plot_curves(run_dir: Path) -> None:
    plt = pyplot()

    records = runs.read_metrics(run_dir)
    train = [r for r in records if "loss" in r]
    valid = [r for r in records if "val_loss" in r]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot([r["step"] for r in train], [r["loss"] for r in train], label="minibatch")
    ax_loss.plot([r["step"] for r in valid], [r["val_loss"] for r in valid], "o-", label="validation")
    ax_acc.plot([r["step"] for r in train], [r["accuracy"] for r in train], label="minibatch")
    ax_acc.plot([r["step"] for r in valid], [r["val_accuracy"] for r in valid], "o-", label="validation")
    for ax, name in ((ax_loss, "cross-entropy loss"), (ax_acc, "accuracy")):
        ax.set_xlabel("step")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(f"rnnkit train: {run_dir.name}")
    fig.tight_layout()
    save_png(fig, run_dir / runs.CURVES)
