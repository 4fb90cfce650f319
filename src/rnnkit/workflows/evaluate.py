"""`rnnkit eval` and `rnnkit predict`: a trained run directory applied to the test set or to images."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import equinox as eqx
import numpy as np

from rnnkit.data import load_mnist, to_layout
from rnnkit.errors import ConfigError
from rnnkit.runs import check_output, load_model, read_run_config
from rnnkit.workflows.plots import pyplot, save_png
from rnnkit.workflows.train_step import loss_and_accuracy, make_predict, predict_logits


@dataclass(frozen=True)
class EvalResult:
    run_dir: Path
    step: int
    loss: float
    accuracy: float
    per_class_accuracy: np.ndarray  # [classes]
    confusion: np.ndarray  # [true class, predicted class] counts
    num_examples: int


def evaluate_run(
    run_dir: Path, data_dir: str | None = None, plot: Path | None = None, force: bool = False
) -> EvalResult:
    """Loss, accuracy, per-class accuracy and the confusion matrix on the test split of the
    run's data (or of `data_dir`); with `plot`, the matrix drawn there (an existing file is
    replaced only with `force`, checked before the evaluation)."""
    run_dir = Path(run_dir)
    if plot is not None:
        check_output(plot, force, flag="--plot")
    config = read_run_config(run_dir)
    splits = load_mnist(data_dir if data_dir is not None else config.data_dir)
    if not len(splits.test_labels):
        raise ConfigError("--data-dir: the test split is empty; there is nothing to evaluate")
    x = to_layout(splits.test_images, config.layout)
    y = splits.test_labels.astype(np.int32)
    model, step = load_model(run_dir, config)
    if tuple(x.shape[1:]) != config.model_input_shape():
        raise ConfigError(
            f"--data-dir: the test images give inputs {tuple(x.shape[1:])}, the run was trained on "
            f"{config.model_input_shape()}"
        )
    num_classes = int(config.num_classes or 0)
    if len(y) and y.max() >= num_classes:
        raise ConfigError(f"--data-dir: the test labels go up to {y.max()}, the run knows {num_classes} classes")

    params, static = eqx.partition(model, eqx.is_inexact_array)
    logits = predict_logits(make_predict(static), params, x, config.eval_batch_size)
    loss, accuracy = loss_and_accuracy(logits, y)
    predicted = logits.argmax(-1)
    confusion = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(confusion, (y, predicted), 1)
    per_class = np.diag(confusion) / np.maximum(confusion.sum(axis=1), 1)
    result = EvalResult(run_dir, step, loss, accuracy, per_class, confusion, len(y))
    if plot is not None:
        _plot_confusion(result, Path(plot))
    return result


def _plot_confusion(result: EvalResult, path: Path) -> None:
    plt = pyplot()

    fig, ax = plt.subplots(figsize=(6, 5))
    image = ax.imshow(result.confusion, cmap="Blues")
    fig.colorbar(image, ax=ax)
    n = result.confusion.shape[0]
    ax.set_xticks(range(n))
    ax.set_yticks(range(n))
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(f"{result.run_dir.name}: accuracy {result.accuracy:.4f} on {result.num_examples}")
    for i in range(n):
        for j in range(n):
            ax.text(j, i, str(result.confusion[i, j]), ha="center", va="center", fontsize=7)
    fig.tight_layout()
    save_png(fig, path)


@dataclass(frozen=True)
class Prediction:
    path: Path
    predicted: int
    probabilities: np.ndarray  # [classes]
    step_probabilities: np.ndarray | None  # [time, classes]: after reading each step


MAX_IMAGE_PIXELS = 4096 * 4096  # larger files are refused before they are decoded


def read_image(path: Path, size: tuple[int, int]) -> np.ndarray:
    """A grayscale image as uint8 [height, width], MNIST's convention (white digit on black).

    Decoded by mode, not clipped: 16-bit grayscale is scaled from [0, 65535], floating point
    from [0, 1] (or taken as [0, 255] where its values go beyond 1); an image whose ink is only
    in its alpha channel (one colour, varying transparency) is read from the alpha channel, and
    other transparent images are composited over black. Images over MAX_IMAGE_PIXELS pixels are
    refused before decoding."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            width, height = image.size
            if width * height > MAX_IMAGE_PIXELS:
                raise ConfigError(f"{path}: {width}x{height} is too large an image (at most {MAX_IMAGE_PIXELS} pixels)")
            if image.size != (size[1], size[0]):
                raise ConfigError(f"{path}: expected a {size[1]}x{size[0]} grayscale image; got {width}x{height}")
            return _grayscale(image, path)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such image file") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise ConfigError(f"{path}: too large an image ({err})") from None
    except (UnidentifiedImageError, OSError, ValueError) as err:
        if isinstance(err, ConfigError):
            raise
        raise ConfigError(f"{path}: not a readable image ({err})") from None


def _grayscale(image: Any, path: Path) -> np.ndarray:
    """`image` as uint8 luminance in [0, 255], by its mode (see read_image)."""
    mode = image.mode
    if mode.startswith("I;16") or mode == "I":
        values = np.asarray(image, dtype=np.float64) * (255.0 / 65535.0)
    elif mode == "F":
        values = np.asarray(image, dtype=np.float64)
        if not np.isfinite(values).all() or values.min() < 0 or values.max() > 255:
            raise ConfigError(f"{path}: a floating-point image must hold values in [0, 1] (or [0, 255])")
        values = values * 255.0 if values.max() <= 1.0 else values
    elif "A" in image.getbands() or "transparency" in image.info:
        rgba = image.convert("RGBA")
        alpha = np.asarray(rgba, dtype=np.float64)[..., 3]
        luminance = np.asarray(rgba.convert("L"), dtype=np.float64)
        visible = luminance[alpha > 0]
        one_colour = visible.size == 0 or np.ptp(visible) == 0
        # one colour: the drawing is its transparency; else composited over black, MNIST's background
        values = alpha if one_colour else luminance * alpha / 255.0
    else:
        return np.asarray(image.convert("L"), dtype=np.uint8)
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


def predict_images(run_dir: Path, paths: list[Path], steps: bool = False) -> list[Prediction]:
    import jax

    run_dir = Path(run_dir)
    config = read_run_config(run_dir)
    model, _ = load_model(run_dir, config)
    model = eqx.nn.inference_mode(model)
    assert config.image_shape is not None  # load_model checked it
    images = np.stack([read_image(Path(p), config.image_shape) for p in paths])  # [n, height, width]
    x = to_layout(images, config.layout)
    probabilities = np.asarray(jax.nn.softmax(model(x), axis=-1))
    per_step = np.asarray(jax.nn.softmax(model.step_logits(x), axis=-1)) if steps else None
    return [
        Prediction(Path(p), int(probabilities[i].argmax()), probabilities[i], None if per_step is None else per_step[i])
        for i, p in enumerate(paths)
    ]


def predict_with_artifact(artifact: Path | str, paths: list[Path]) -> list[Prediction]:
    """Classify images with an exported model (`rnnkit export`): its sidecar gives the image
    size and layout; the program itself needs no rnnkit model code."""
    from rnnkit.export import load

    model = load(artifact)
    meta = model.metadata
    if not meta.get("image_shape") or not meta.get("layout"):
        raise ConfigError(f"{artifact}: its sidecar has no image_shape/layout; it was not exported from a run")
    images = np.stack([read_image(Path(p), tuple(meta["image_shape"])) for p in paths])
    outputs = model(to_layout(images, meta["layout"]))
    logits = outputs[0] if isinstance(outputs, tuple) else outputs
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    probabilities = shifted / shifted.sum(axis=-1, keepdims=True)
    return [Prediction(Path(p), int(probabilities[i].argmax()), probabilities[i], None) for i, p in enumerate(paths)]
