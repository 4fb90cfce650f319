"""How an image becomes a sequence for a recurrent network: the three standard sequential-MNIST tasks.

    rows             H steps of W features: each step reads one pixel row (28 x 28 for MNIST)
    pixels           H*W steps of 1 feature: one pixel per step in row-major order ("sequential MNIST")
    permuted-pixels  H*W steps of 1 feature, the pixels in one fixed random order ("permuted MNIST",
                     Le, Jaitly & Hinton 2015): step t reads flat pixel PERMUTATION[t]

The permutation is `np.random.default_rng(PERMUTATION_SEED).permutation(H * W)` with the constant
PERMUTATION_SEED below. It is part of the task's definition, not of a run: it must be the same in
every run, on every machine and for every training seed, or a model trained with one permutation
would be evaluated on another. Pixel values become float32 k/255, so 0 -> 0.0 and 255 -> 1.0.
"""

from __future__ import annotations

import numpy as np

from rnnkit.data._checks import check_images
from rnnkit.data._errors import DataError

LAYOUTS: tuple[str, ...] = ("rows", "pixels", "permuted-pixels")

# Fixed forever: changing it changes the permuted-pixels task itself. (2015: the year the task was introduced.)
PERMUTATION_SEED = 2015


def pixel_permutation(num_pixels: int) -> np.ndarray:
    """The fixed pixel order of the permuted-pixels layout for images of `num_pixels` pixels."""
    return np.random.default_rng(PERMUTATION_SEED).permutation(num_pixels)


def to_layout(images: np.ndarray, layout: str) -> np.ndarray:
    """Turn uint8 images [N, H, W] into float32 sequences [N, T, F] for `layout` (one of LAYOUTS)."""
    if layout not in LAYOUTS:
        raise DataError(f"unknown layout {layout!r}; expected one of {', '.join(LAYOUTS)}")
    images = check_images(images, name="images")
    n, h, w = images.shape
    x = images.astype(np.float32) / np.float32(255)
    if layout == "rows":
        return x
    x = x.reshape(n, h * w, 1)
    if layout == "permuted-pixels":
        x = x[:, pixel_permutation(h * w), :]
    return x
