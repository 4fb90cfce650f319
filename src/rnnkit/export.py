"""Exported models: a trained classifier as a serialized StableHLO program that runs without
rnnkit's model code (the seed's "exported model", made real with `jax.export`).

    rnnkit export RUN_DIR --mode dynamic --out model.rnnx

writes two files:

    model.rnnx        `jax.export`'s serialization of the inference function: StableHLO plus
                      its calling convention, lowered for CPU and CUDA by default
    model.rnnx.json   the sidecar: input layout and shape, classes, mode, the length a static
                      program was built for, versions, parameter count, the artifact's SHA-256

The weights travel inside the artifact, as constants of the program, the way a TF1 frozen graph
carried them: one file to ship and nothing that can fall out of step with it. (The price: new
weights need a new export; the program is ~1.5 MB for the seed's 378 634 parameters.)

A dynamic export takes [batch, time, features] with symbolic batch and time (any time >= 1,
one program); a static export unrolls `static_rnn` and is pinned to the length it was built
for, with a symbolic batch. `load(path)` gives a callable that checks its input against the
sidecar first, so feeding a static artifact another length fails with a message that names
the length it was built for, instead of a shape error from deep inside JAX.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax import export as jax_export

from rnnkit._atomic import atomic_write
from rnnkit._rnn import auto_implementation
from rnnkit._version import __version__
from rnnkit.errors import CheckpointError, ConfigError
from rnnkit.models.classifier import SequenceClassifier
from rnnkit.runs import check_output, load_model, read_run_config

FORMAT = "rnnkit-export"
FORMAT_VERSION = 1
SIDECAR_SUFFIX = ".json"
JAX_PLATFORMS = ("cpu", "cuda", "rocm", "tpu")
DEFAULT_PLATFORMS = ("cpu", "cuda")  # one artifact for both; lowering for CUDA needs no GPU here


def sidecar_path(path: Path) -> Path:
    """`model.rnnx` -> `model.rnnx.json`."""
    path = Path(path)
    return path.with_name(path.name + SIDECAR_SUFFIX)


def _state_names(state: Any) -> dict[str, Any]:
    """The final state as a flat dict with TF1-like names: a stack's `cell_0/c`, `cell_0/h`,
    `cell_1/h` (LSTMStateTuple fields c and h; a GRU's or basic RNN's state is its h)."""
    named: dict[str, Any] = {}
    for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]:
        parts = []
        for key in path:
            if isinstance(key, jax.tree_util.SequenceKey):
                parts.append(f"cell_{key.idx}")
            elif isinstance(key, jax.tree_util.GetAttrKey):
                parts.append(key.name)
            else:
                parts.append(str(key))
        if not parts or parts[-1].startswith("cell_"):
            parts.append("h")
        named["/".join(parts)] = leaf
    return named


def export_model(
    model: SequenceClassifier,
    *,
    with_state: bool = False,
    platforms: Sequence[str] = DEFAULT_PLATFORMS,
) -> jax_export.Exported:
    """`jax.export` of the model's inference function with its weights embedded.

    Input float32 [batch, time, features]; output logits [batch, classes] and, with
    `with_state`, the final state as a dict (see `_state_names`). Dynamic models get a symbolic
    time axis; static ones keep `model.num_steps`. Dropout is switched off."""
    unknown = [p for p in platforms if p not in JAX_PLATFORMS]
    if unknown or not platforms:
        raise ConfigError(
            f"--platforms must name JAX platforms ({', '.join(JAX_PLATFORMS)}); got {','.join(platforms) or 'none'}"
        )
    model = eqx.nn.inference_mode(portable(model))
    features = model.cell.input_size
    if model.mode == "dynamic":
        batch, time = jax_export.symbolic_shape("batch, time", constraints=["time >= 1"])
    else:
        (batch,) = jax_export.symbolic_shape("batch")
        time = model.num_steps
    spec = jax.ShapeDtypeStruct((batch, time, features), jnp.float32)

    def infer(x: jax.Array) -> Any:
        logits, state = model.logits_and_state(x)
        return (logits, _state_names(state)) if with_state else logits

    try:
        return jax_export.export(jax.jit(infer), platforms=tuple(platforms))(spec)
    except (ValueError, NotImplementedError) as err:
        if any(p not in ("cpu", "cuda", "rocm", "tpu") for p in platforms):
            raise ConfigError(
                f"--platforms must name JAX platforms (cpu, cuda, rocm, tpu); got {','.join(platforms)}"
            ) from None
        raise ConfigError(f"could not export for platforms {','.join(platforms)}: {err}") from None


def portable(model: SequenceClassifier) -> SequenceClassifier:
    """The model with its loop in plain XLA operations: the native CPU kernel (rnnkit/_native)
    is a custom call only this process has registered, which jax.export can't serialise, so a
    model that would run natively is exported with the per-step loop (same numbers up to
    float32 rounding)."""
    native = model.implementation == "native" or (model.implementation == "auto" and auto_implementation() == "native")
    return dataclasses.replace(model, implementation="per_step") if model.mode == "dynamic" and native else model


def artifact_bytes(exported: jax_export.Exported) -> bytes:
    return bytes(exported.serialize())


@dataclass(frozen=True)
class ExportInfo:
    path: Path
    sidecar: Path
    metadata: dict[str, Any]


def _versions() -> dict[str, str]:
    import jaxlib

    return {"rnnkit": __version__, "jax": jax.__version__, "jaxlib": jaxlib.__version__}


def save(exported: jax_export.Exported, path: Path | str, metadata: dict[str, Any] | None = None) -> ExportInfo:
    """Write the artifact and its sidecar, each atomically (a failure leaves an older export whole)."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"--out must be a file path for the artifact; got the directory {path}")
    if not path.parent.is_dir():
        raise ConfigError(f"--out: the directory {path.parent} does not exist")
    data = artifact_bytes(exported)
    (in_aval,) = exported.in_avals
    time_steps = in_aval.shape[1]
    static_length = time_steps if isinstance(time_steps, int) else None
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "artifact": path.name,
        "artifact_sha256": hashlib.sha256(data).hexdigest(),
        "artifact_bytes": len(data),
        "mode": "static" if static_length is not None else "dynamic",
        "time_steps": static_length,  # None: any length >= 1
        "input": {
            "shape": ["batch", static_length if static_length is not None else "time", int(in_aval.shape[2])],
            "dtype": str(in_aval.dtype),
        },
        "outputs": ["logits", "state"] if len(exported.out_avals) > 1 else ["logits"],
        "platforms": list(exported.platforms),
        "weights": "embedded in the artifact as constants",
        "versions": _versions(),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        **(metadata or {}),
    }
    with atomic_write(path) as f:
        f.write(data)
    sidecar = sidecar_path(path)
    with atomic_write(sidecar) as f:
        f.write((json.dumps(meta, indent=2) + "\n").encode("utf-8"))
    return ExportInfo(path, sidecar, meta)


def export_run(
    run_dir: Path | str,
    out: Path | str,
    *,
    mode: str | None = None,
    with_state: bool = False,
    platforms: Sequence[str] = DEFAULT_PLATFORMS,
    force: bool = False,
) -> ExportInfo:
    """Export a run directory's checkpoint (`rnnkit train`'s, or `rnnkit convert`'s) in `mode`
    ("static" or "dynamic"; default: the mode it was trained in). Weights are the same either way.
    An existing `out` (or its sidecar) is replaced only with `force`, a run's own file never."""
    run_dir = Path(run_dir)
    check_output(out, force)
    check_output(sidecar_path(Path(out)), force, flag="--out (its .json sidecar)")
    config = read_run_config(run_dir)
    trained_mode = config.mode
    if mode is not None:
        if mode not in ("static", "dynamic"):
            raise ConfigError(f"--mode must be 'static' or 'dynamic'; got {mode!r}")
        config = dataclasses.replace(config, mode=mode)
    model, step = load_model(run_dir, config)
    num_params = sum(int(np.size(v)) for v in model.variables().values())
    exported = export_model(model, with_state=with_state, platforms=platforms)
    assert config.num_classes is not None  # load_model checked it
    return save(
        exported,
        out,
        {
            "layout": config.layout,
            "image_shape": list(config.image_shape) if config.image_shape else None,
            "input_scale": "pixel / 255 (uint8 images to float32 in [0, 1])",
            "classes": [str(c) for c in range(config.num_classes)],
            "cells": config.cells,
            "parameters": num_params,
            "state_names": sorted(_state_names(model.cell.zero_state(1))) if with_state else [],
            "source": {"run_dir": str(run_dir), "step": step, "trained_mode": trained_mode},
        },
    )


class ExportedModel:
    """A loaded artifact: call it with float32 [batch, time, features] to get logits (and the
    final state, if it was exported with it). Needs JAX, not rnnkit's model code."""

    def __init__(self, exported: jax_export.Exported, metadata: dict[str, Any], path: Path):
        self.exported = exported
        self.metadata = metadata
        self.path = path

    @property
    def mode(self) -> str:
        return str(self.metadata["mode"])

    @property
    def time_steps(self) -> int | None:
        """The length a static artifact was built for; None for a dynamic one (any length)."""
        return self.metadata["time_steps"]

    @property
    def features(self) -> int:
        return int(self.metadata["input"]["shape"][2])

    def check_inputs(self, x: Any) -> np.ndarray:
        x = np.asarray(x)
        if x.ndim != 3:
            raise ConfigError(f"inputs must be [batch, time, {self.features}] (rank 3); got shape {x.shape}")
        if not np.issubdtype(x.dtype, np.floating):
            raise ConfigError(f"inputs must be floating point (float32); got {x.dtype}")
        batch, time, features = x.shape
        if features != self.features:
            raise ConfigError(f"inputs must have {self.features} features per step; got shape {x.shape}")
        if self.time_steps is not None and time != self.time_steps:
            raise ConfigError(
                f"{self.path.name} is a static export built for sequences of exactly {self.time_steps} steps "
                f"(static_rnn unrolled {self.time_steps} times); got {time} steps. Export with --mode dynamic "
                "to take any length"
            )
        if time < 1 or batch < 1:
            raise ConfigError(f"inputs need at least one example and one time step; got shape {x.shape}")
        return x.astype(np.float32, copy=False)

    def __call__(self, x: Any) -> Any:
        x = self.check_inputs(x)
        platform = jax.default_backend()
        gpu_lowering = {"cuda", "rocm"} & set(self.exported.platforms)
        if platform not in self.exported.platforms and not (platform == "gpu" and gpu_lowering):
            raise ConfigError(
                f"{self.path.name} was exported for {', '.join(self.exported.platforms)}; this JAX runs on {platform}"
            )
        result = self.exported.call(x)
        return jax.tree_util.tree_map(np.asarray, result)


def load(path: Path | str) -> ExportedModel:
    """Load `rnnkit export`'s artifact and its sidecar (`<path>.json`), checking they belong together."""
    path = Path(path)
    sidecar = sidecar_path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"--artifact: no such file {path}") from None
    except IsADirectoryError:
        raise ConfigError(f"--artifact must be an exported file (model.rnnx); got the directory {path}") from None
    try:
        metadata = json.loads(sidecar.read_text("utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{sidecar} is missing: rnnkit export writes it beside {path.name}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{sidecar} is not valid JSON ({err})") from None
    if not isinstance(metadata, dict) or metadata.get("format") != FORMAT:
        raise CheckpointError(f"{sidecar} is not an rnnkit export sidecar (format {FORMAT!r})")
    if metadata.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{sidecar}: format_version {metadata.get('format_version')!r}; this rnnkit reads {FORMAT_VERSION}"
        )
    digest = hashlib.sha256(data).hexdigest()
    if digest != metadata.get("artifact_sha256"):
        raise CheckpointError(
            f"{path} does not match its sidecar {sidecar.name} (SHA-256 {digest[:12]}..., the sidecar expects "
            f"{str(metadata.get('artifact_sha256'))[:12]}...): re-export, or keep the two files together"
        )
    try:
        exported = jax_export.deserialize(bytearray(data))
    except Exception as err:  # any failure here means the file is not a readable artifact
        raise CheckpointError(f"{path} is not a readable jax.export artifact ({type(err).__name__}: {err})") from None
    _check_sidecar(metadata, sidecar)
    return ExportedModel(exported, metadata, path)


def _check_sidecar(metadata: dict[str, Any], sidecar: Path) -> None:
    """Refuse, as a CheckpointError naming the field, a sidecar whose fields are not what
    `save` writes (an edited file): every field the loaded model and predict read."""

    def positive_int(value: Any) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and value > 0

    def refuse(field: str, expected: str) -> None:
        raise CheckpointError(f"{sidecar}: {field} must be {expected}; got {json.dumps(metadata.get(field))[:60]}")

    if metadata.get("mode") not in ("static", "dynamic"):
        refuse("mode", "'static' or 'dynamic'")
    if metadata.get("time_steps") is not None and not positive_int(metadata.get("time_steps")):
        refuse("time_steps", "null or a positive integer")
    shape = (metadata.get("input") or {}).get("shape") if isinstance(metadata.get("input"), dict) else None
    if not (isinstance(shape, list) and len(shape) == 3 and positive_int(shape[2])):
        refuse("input", 'an object whose "shape" is [batch, time, features] with features a positive integer')
    image_shape = metadata.get("image_shape")
    if image_shape is not None and not (
        isinstance(image_shape, list) and len(image_shape) == 2 and all(positive_int(v) for v in image_shape)
    ):
        refuse("image_shape", "null or [height, width], two positive integers")
    classes = metadata.get("classes")
    if classes is not None and not (isinstance(classes, list) and all(isinstance(c, str) for c in classes)):
        refuse("classes", "a list of class names")
    if metadata.get("layout") is not None and metadata.get("layout") not in ("rows", "pixels", "permuted-pixels"):
        refuse("layout", "rows, pixels or permuted-pixels")
