"""The data a training run reads: MNIST-format splits in the model's layout, and the batches of
each step, cut ahead in a thread.

Batch k is a pure function of (seed, k) (`rnnkit.data.batch_indices`), so a resumed run sees
exactly the batches an uninterrupted one would.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from rnnkit.data import batch_indices, load_mnist, split_validation, to_layout
from rnnkit.data._mnist import MNIST_CLASSES
from rnnkit.runs import TrainConfig


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
    # Given (--num-classes, or the run's own on resume), else the MNIST family's 10: declared,
    # never inferred from the largest label (one corrupt byte would add classes).
    num_classes = MNIST_CLASSES if config.num_classes is None else config.num_classes
    splits = load_mnist(config.data_dir, num_classes=num_classes)
    (train_images, train_labels), (valid_images, valid_labels) = split_validation(
        splits.train_images, splits.train_labels, config.validation_size, config.seed
    )

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
    """The steps a run takes: `epochs` passes over `num_train` examples where set, else the seed's schedule."""
    if config.epochs is not None:
        return config.epochs * (num_train // config.batch_size)
    return (config.train_samples - 1) // config.batch_size  # the seed's `while step * batch < iters`, step from 1


def prefetch_batches(
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
