"""The loaded data set (`Splits`) and the deterministic validation split.

The validation split is a pure function of (data, validation_size, seed): the same seed gives
the same split on every machine and every run, so a validation score can be compared across
runs and a resumed run validates on the same examples as the run it resumes.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from rnnkit.data._checks import check_images, check_int, check_labels
from rnnkit.data._errors import DataError


@dataclasses.dataclass(frozen=True, eq=False)
class Splits:
    """MNIST-format data as loaded: images uint8 [N, H, W] (raw pixel values 0..255), labels int64 [N].

    Images stay uint8 here (a quarter of the memory of float32); `to_layout` makes the float
    sequences a model reads. Construction checks dtypes, ranks and that every image has a label,
    so code receiving a `Splits` can rely on them. (`eq=False`: arrays have no single truth value.)
    """

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray

    def __post_init__(self) -> None:
        train = check_images(self.train_images, name="Splits.train_images")
        test = check_images(self.test_images, name="Splits.test_images")
        check_labels(self.train_labels, name="Splits.train_labels", count=train.shape[0], count_of="train_images")
        check_labels(self.test_labels, name="Splits.test_labels", count=test.shape[0], count_of="test_images")
        if train.shape[1:] != test.shape[1:]:
            raise DataError(
                f"Splits: train images are {train.shape[1]}x{train.shape[2]} but test images are "
                f"{test.shape[1]}x{test.shape[2]}; both sets must have one image size"
            )


def split_validation(
    images: Any, labels: Any, validation_size: int, seed: int
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Hold out `validation_size` examples chosen by `np.random.default_rng(seed).permutation(N)`.

    Returns ((train_x, train_y), (valid_x, valid_y)). The validation examples are the first
    `validation_size` entries of that permutation, the training examples the rest; both keep the
    data's original order (the indices are sorted), so the split is a pure selection and training
    order is left to `batch_indices`. `validation_size=0` gives an empty validation set.
    """
    images = np.asarray(images)
    labels = np.asarray(labels)
    if images.ndim < 1 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
        raise DataError(
            f"split_validation: images and labels must hold one label per image; got images of shape "
            f"{tuple(images.shape)} and labels of shape {tuple(labels.shape)}"
        )
    n = images.shape[0]
    validation_size = check_int(validation_size, name="validation_size", minimum=0)
    seed = check_int(seed, name="seed", minimum=0)
    if validation_size >= n:
        raise DataError(
            f"validation_size must be smaller than the number of examples ({n}) so that some remain for training; "
            f"got {validation_size}"
        )
    order = np.random.default_rng(seed).permutation(n)
    valid_idx = np.sort(order[:validation_size])
    train_idx = np.sort(order[validation_size:])
    return (images[train_idx], labels[train_idx]), (images[valid_idx], labels[valid_idx])
