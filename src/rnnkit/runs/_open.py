"""A run directory opened to its model: the SequenceClassifier its config describes, with the
checkpoint's weights checked against it."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import jax
import numpy as np

from rnnkit._checks import check_precision
from rnnkit.errors import CheckpointError
from rnnkit.models.classifier import SequenceClassifier, build_classifier, parse_cells
from rnnkit.runs._config import TrainConfig, backend_refusal, read_run_config
from rnnkit.runs._files import CONFIG, MODEL, load_model_variables


def build_model(config: TrainConfig, data_shape: tuple[int, int], num_classes: int) -> SequenceClassifier:
    """The config's model, freshly initialised from its seed, reading [time, features] = `data_shape`."""
    num_steps, input_size = data_shape
    return build_classifier(
        parse_cells(config.cells),
        input_size=input_size,
        num_classes=num_classes,
        num_steps=num_steps,
        mode=config.mode,
        key=jax.random.fold_in(jax.random.key(config.seed), 0),
        dropout=config.dropout,
        precision=config.precision,
    )


def load_model(run_dir: Path, config: TrainConfig) -> tuple[SequenceClassifier, int]:
    """The model of a run directory with its checkpointed weights (checked against the config),
    and the step the checkpoint was saved at. `config` is the run's (`read_run_config`), or a
    copy of it with another `mode`: the weights are the same either way."""
    if config.num_classes is None:
        raise CheckpointError(f"{run_dir}/{CONFIG} has no num_classes; it was not written by rnnkit train")
    try:
        check_precision(config.precision)
    except ValueError as err:
        raise CheckpointError(f"{run_dir}/{CONFIG}: {err}") from None
    if backend_refusal(config.precision) is not None:
        # Trained with an algorithm this backend lacks (a GPU's TF32_TF32_F32_X3, evaluated on a
        # CPU): full float32, which those algorithms approximate, is the nearest this one runs.
        config = dataclasses.replace(config, precision="highest")
    model = build_model(config, config.model_input_shape(), config.num_classes)
    variables, step = load_model_variables(run_dir)
    return with_checkpoint_weights(model, variables, run_dir, config), step


def load_run_model(run_dir: str | os.PathLike[str]) -> SequenceClassifier:
    """The SequenceClassifier of a run directory with its weights."""
    run_dir = Path(run_dir)
    return load_model(run_dir, read_run_config(run_dir))[0]


def with_checkpoint_weights(
    model: SequenceClassifier, variables: dict[str, np.ndarray], run_dir: Path, config: TrainConfig
) -> SequenceClassifier:
    """`model` with `variables` (by TF1 name) in place of its weights; a CheckpointError says
    what does not match the config."""
    try:
        return model.with_variables(variables)
    except ValueError as err:
        raise CheckpointError(f"{run_dir}/{MODEL} does not match config.json ({config.cells}): {err}") from None
