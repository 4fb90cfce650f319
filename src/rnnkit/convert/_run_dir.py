"""Conversions and run directories: converted weights written as a run directory, and a run
directory's model out to a TF1 checkpoint, PyTorch, Keras or Flax file.

A converted run directory is an ordinary one that `rnnkit eval`, `predict` and
`train --resume` accept:

    config.json            TrainConfig: the converted --cells, layout, image_shape, num_classes
    model.safetensors      the weights by TF1 name, metadata {"step": "0", "converted_from": ...}
    optimizer.safetensors  TF1's Adam state when the checkpoint has it (moments of every
                           variable, update count from beta1_power), else a fresh one at step 0

so `rnnkit train --run-dir DIR --resume` continues a TF1 training run where its checkpoint
left it (same Adam update, moments and step count), or fine-tunes converted weights with a
fresh Adam, for the config's schedule.

The directory appears whole or not at all: it is written under a temporary name beside the
target and renamed into place. An existing non-empty target is refused unless `force`; with
`force` the old directory is moved aside, the new one renamed in, and only then the old one
removed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import secrets
import shutil
import zipfile
from pathlib import Path
from typing import Any

import equinox as eqx
import jax.numpy as jnp
import numpy as np
import optax

from rnnkit import runs
from rnnkit._atomic import atomic_write_bytes, atomic_write_text, fsync_dir
from rnnkit.convert._flax import FILE_SUFFIXES, flax_file_bytes, to_flax_params
from rnnkit.convert._keras import to_keras_weights
from rnnkit.convert._stack import AdamState, Conversion
from rnnkit.convert._tf1 import tf1_variables, write_tf1_checkpoint
from rnnkit.convert._torch import to_torch_state_dict, torch_file_bytes
from rnnkit.data import to_layout
from rnnkit.errors import CheckpointError, ConfigError
from rnnkit.models.classifier import SequenceClassifier
from rnnkit.runs import TrainConfig, load_run_model, make_optimizer, read_run_config, restore_optimizer_state


def check_target(run_dir: Path, force: bool, flag: str = "--out") -> None:
    """Refuse a target that is a file, or a non-empty directory unless `force`."""
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"{flag}: {run_dir} exists and is not a directory")
    if run_dir.is_dir() and any(run_dir.iterdir()) and not force:
        raise ConfigError(f"{flag}: {run_dir} exists and is not empty; choose another directory or pass --force")


def run_config(
    conversion: Conversion,
    *,
    layout: str = "rows",
    image_shape: tuple[int, int] = (28, 28),
    mode: str = "dynamic",
    settings: TrainConfig | None = None,
) -> TrainConfig:
    """The TrainConfig of a converted run, checked against the weights: `settings` (default
    TrainConfig()) with the converted cells, the layout, image shape, mode and class count."""
    if conversion.num_classes is None:
        raise ConfigError(
            f"{conversion.source or 'the source'} has no dense head; a run directory needs one "
            "(a classifier's final layer): convert the cells with the Python API instead"
        )
    config = dataclasses.replace(
        settings or TrainConfig(),
        mode=mode,
        run_dir=None,
        cells=conversion.cells,
        layout=layout,
        image_shape=tuple(image_shape),
        num_classes=conversion.num_classes,
    )
    config.validate()
    if layout not in ("rows", "pixels", "permuted-pixels"):
        raise ConfigError(f"--layout must be rows, pixels or permuted-pixels; got {layout!r}")
    height, width = image_shape
    _, features = to_layout(np.zeros((1, height, width), np.uint8), layout).shape[1:]
    if features != conversion.input_size:
        raise ConfigError(
            f"--layout {layout} on {height}x{width} images gives {features} features per step, but the first layer "
            f"reads {conversion.input_size}; pass the --layout / --image-shape it was trained with"
        )
    return config


def write_run_dir(
    conversion: Conversion,
    run_dir: str | os.PathLike[str],
    *,
    layout: str = "rows",
    image_shape: tuple[int, int] = (28, 28),
    mode: str = "dynamic",
    force: bool = False,
    settings: TrainConfig | None = None,
) -> Path:
    """Write `conversion` as a run directory for `rnnkit eval / predict / train --resume`.
    `settings` are the training settings `train --resume` will use (data_dir, batch_size,
    train_samples, ...; default the seed's); cells, layout, image shape and classes are the
    conversion's."""
    run_dir = Path(run_dir)
    check_target(run_dir, force)
    config = run_config(conversion, layout=layout, image_shape=image_shape, mode=mode, settings=settings)
    model = conversion.classifier(num_steps=config.model_input_shape()[0], mode=mode)
    opt_state, step = optimizer_state(conversion, model, config)

    run_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = run_dir.with_name(f".{run_dir.name}.{secrets.token_hex(6)}.tmp")
    tmp.mkdir()
    try:
        atomic_write_text(tmp / runs.CONFIG, config.to_json())
        opt_vars = runs.optimizer_variables(opt_state)
        runs.save_checkpoint(tmp, model.variables(), opt_vars, step, {"converted_from": conversion.source})
        _publish(tmp, run_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return run_dir


def optimizer_state(conversion: Conversion, model: SequenceClassifier, config: TrainConfig) -> tuple[Any, int]:
    """The optimizer state a converted run starts from, and its step: TF1's Adam moments and
    update count when the conversion carries them (rnnkit's optimizer is TF1's Adam unless
    gradients are clipped), else a fresh state at step 0."""
    params, _ = eqx.partition(model, eqx.is_inexact_array)
    fresh = make_optimizer(config).init(params)
    if conversion.adam is None or not isinstance(fresh, optax.ScaleByAdamState):
        return fresh, 0
    # Each moment dict, put where its variable sits in the model, is a pytree shaped like params.
    mu, _ = eqx.partition(model.with_variables(conversion.adam.m), eqx.is_inexact_array)
    nu, _ = eqx.partition(model.with_variables(conversion.adam.v), eqx.is_inexact_array)
    count = jnp.asarray(conversion.adam.step, fresh.count.dtype)
    return optax.ScaleByAdamState(count=count, mu=mu, nu=nu), conversion.adam.step


def _publish(tmp: Path, run_dir: Path) -> None:
    """Rename the finished `tmp` to `run_dir`; an old `run_dir` is moved aside first and removed last."""
    old = None
    if run_dir.exists():
        if not any(run_dir.iterdir()):
            run_dir.rmdir()
        else:
            old = run_dir.with_name(f".{run_dir.name}.{secrets.token_hex(6)}.old")
            os.replace(run_dir, old)
    try:
        os.replace(tmp, run_dir)
    except BaseException:
        if old is not None:
            os.replace(old, run_dir)
        raise
    fsync_dir(run_dir.parent)
    if old is not None:
        with contextlib.suppress(OSError):
            shutil.rmtree(old)


def export_torch_file(run_dir: str | os.PathLike[str], out: str | os.PathLike[str], *, force: bool = False) -> Path:
    """A run directory's model as a PyTorch state_dict file (.pt needs torch; .safetensors does not)."""
    out = Path(out)
    if out.suffix not in (".pt", ".pth", ".safetensors"):
        raise ConfigError(f"--out: {out} must end in .pt, .pth or .safetensors")
    if out.exists() and not force:
        raise ConfigError(f"--out: {out} exists; choose another file or pass --force")
    if out.is_dir():
        raise ConfigError(f"--out: {out} is a directory; expected a .pt or .safetensors file")
    data = torch_file_bytes(to_torch_state_dict(load_run_model(run_dir)), out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out, data)
    return out


def export_keras_file(run_dir: str | os.PathLike[str], out: str | os.PathLike[str], *, force: bool = False) -> Path:
    """A run directory's model as an .npz of Keras `get_weights()` arrays (arr_0, arr_1, ...)."""
    out = Path(out)
    if out.suffix != ".npz":
        raise ConfigError(f"--out: {out} must end in .npz (np.savez of the get_weights() list)")
    if out.exists() and not force:
        raise ConfigError(f"--out: {out} exists; choose another file or pass --force")
    buffer = io.BytesIO()
    np.savez(buffer, *to_keras_weights(load_run_model(run_dir)))
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out, buffer.getvalue())
    return out


def run_adam_state(run_dir: str | os.PathLike[str], model: SequenceClassifier) -> AdamState | None:
    """The run's Adam state (TF1's AdamOptimizer: moments by TF1 name and update count), or
    None where the run's optimizer holds none."""

    run_dir = Path(run_dir)
    config = read_run_config(run_dir)
    params, static = eqx.partition(model, eqx.is_inexact_array)
    template = make_optimizer(config).init(params)
    _, opt_vars, _ = runs.load_checkpoint(run_dir)  # refuses a model and optimizer from different steps
    state = restore_optimizer_state(template, opt_vars, run_dir)
    parts = state if isinstance(state, tuple) and not isinstance(state, optax.ScaleByAdamState) else (state,)
    adam = next((part for part in parts if isinstance(part, optax.ScaleByAdamState)), None)  # after a clip, say
    if adam is None:
        return None
    m = eqx.combine(adam.mu, static).variables()
    v = eqx.combine(adam.nu, static).variables()
    return AdamState(
        {k: np.asarray(a) for k, a in m.items()}, {k: np.asarray(a) for k, a in v.items()}, int(adam.count)
    )


def export_tf1_checkpoint(run_dir: str | os.PathLike[str], out: str | os.PathLike[str], *, force: bool = False) -> Path:
    """A run directory as a TF1 checkpoint at the prefix `out` (no TensorFlow needed): the weights
    under their TF1 names and the run's Adam state as TF1's AdamOptimizer keeps it, so a TF1
    program building the same graph restores it with Saver and trains on."""
    out = Path(out)
    if out.is_dir():
        raise ConfigError(f"--out: {out} is a directory; expected a checkpoint prefix such as {out}/model.ckpt")
    if Path(f"{out}.index").exists() and not force:
        raise ConfigError(f"--out: {out}.index exists; choose another prefix or pass --force")
    model = load_run_model(run_dir)
    variables = tf1_variables(model, run_adam_state(run_dir, model))
    return write_tf1_checkpoint(variables, out)


def export_flax_file(
    run_dir: str | os.PathLike[str], out: str | os.PathLike[str], *, style: str = "nnx", force: bool = False
) -> Path:
    """A run directory's model as a Flax parameter tree file (.msgpack needs flax;
    .safetensors, paths joined by '/', does not), in `style` (linen or nnx)."""
    out = Path(out)
    if out.suffix not in FILE_SUFFIXES:
        raise ConfigError(f"--out: {out} must end in .msgpack or .safetensors")
    if out.is_dir():
        raise ConfigError(f"--out: {out} is a directory; expected a .msgpack or .safetensors file")
    if out.exists() and not force:
        raise ConfigError(f"--out: {out} exists; choose another file or pass --force")
    data = flax_file_bytes(to_flax_params(load_run_model(run_dir), style=style), out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out, data)
    return out


def load_keras_file(path: str | os.PathLike[str]) -> list[np.ndarray]:
    """The get_weights() list saved as `np.savez(path, *weights)`, in order (never unpickled)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    try:
        # the file opened here, not by np.load: numpy leaves its own handle open on a bad zip
        with open(path, "rb") as f, np.load(f, allow_pickle=False) as data:
            names = list(data.files)
            if sorted(names) != sorted(f"arr_{k}" for k in range(len(names))):
                raise ConfigError(f"{path}: expected arrays arr_0, arr_1, ... (np.savez(path, *weights)); got {names}")
            return [data[f"arr_{k}"] for k in range(len(names))]
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:  # a truncated file: any of these
        if isinstance(err, ConfigError):
            raise
        raise CheckpointError(f"{path}: not a readable .npz file ({err})") from None
