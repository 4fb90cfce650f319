"""Helpers the conversion tests share."""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax
import numpy as np

from rnnkit.models.classifier import SequenceClassifier, build_classifier, parse_cells


def random_classifier(
    cells: str, *, input_size: int, num_classes: int, num_steps: int, seed: int = 0, scale: float = 0.5
) -> SequenceClassifier:
    """A classifier for `cells` whose every weight is N(0, scale^2), biases included, so every
    bias path of every formula counts. Built from shapes only (no initialiser runs), which
    keeps these tests fast."""
    skeleton = eqx.filter_eval_shape(
        build_classifier,
        parse_cells(cells),
        input_size=input_size,
        num_classes=num_classes,
        num_steps=num_steps,
        mode="dynamic",
        key=jax.random.key(seed),
    )
    rng = np.random.default_rng(seed)
    return skeleton.with_variables(
        {k: (scale * rng.standard_normal(v.shape)).astype(v.dtype) for k, v in skeleton_variables(skeleton).items()}
    )


def skeleton_variables(model: SequenceClassifier) -> dict[str, Any]:
    """A shape-only model's variables (ShapeDtypeStructs) by TF1 name."""
    head = {"fully_connected/weights": model.weights, "fully_connected/biases": model.biases}
    return {**{path: get(model.cell) for path, get in model.cell._tf1_leaves("rnn")}, **head}
