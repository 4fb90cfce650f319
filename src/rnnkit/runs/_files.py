"""The files of a run directory: names, checkpoints keyed by TF1 names, config, metrics.

    runs/<name>/
      config.json            everything needed to rebuild the model and resume (TrainConfig)
      model.safetensors      weights by TF1 variable path, metadata {"step": ...}
      optimizer.safetensors  optimizer state by pytree path, metadata {"step": ...}
      metrics.jsonl          one JSON object per display step / validation / test
      curves.png             loss and accuracy against step

Every file is written to a temporary file in the same directory, flushed, fsync'ed and
renamed over the old one, so a crash leaves either the old file or the new one, never half
of one. The two checkpoint files carry the step they belong to; loading refuses a pair
whose steps differ (a crash between the two renames), rather than resuming from a mix.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import safetensors
import safetensors.numpy

from rnnkit._atomic import atomic_write_bytes, atomic_write_text
from rnnkit.errors import CheckpointError

CONFIG, MODEL, OPTIMIZER, METRICS, CURVES = (
    "config.json",
    "model.safetensors",
    "optimizer.safetensors",
    "metrics.jsonl",
    "curves.png",
)


def has_checkpoint(run_dir: Path) -> bool:
    """Whether `run_dir` holds model weights (a run that eval can read and train can resume)."""
    return (Path(run_dir) / MODEL).exists()


def holds_run(run_dir: Path) -> bool:
    """Whether `run_dir` holds a run, even one that has not written its first checkpoint yet."""
    return has_checkpoint(run_dir) or (Path(run_dir) / CONFIG).exists()


MODEL_COPY = "model:"  # prefix of the model's weights kept in the optimizer file too


def save_checkpoint(
    run_dir: Path,
    model_vars: dict[str, np.ndarray],
    opt_vars: dict[str, np.ndarray],
    step: int,
    extra_metadata: dict[str, str] | None = None,
) -> None:
    """Optimizer first, model second: the model file is what `eval` reads, and it is replaced
    last. Both carry `{"step": step, "format": "rnnkit"}` and `extra_metadata`. The optimizer
    file also holds a copy of the model's weights (`model:<name>`), so a process killed
    between the two renames leaves a resumable pair: `load_checkpoint` takes the copy."""
    meta = {"step": str(step), "format": "rnnkit", **(extra_metadata or {})}
    with_copy = {**opt_vars, **{MODEL_COPY + name: value for name, value in model_vars.items()}}
    atomic_write_bytes(Path(run_dir) / OPTIMIZER, safetensors.numpy.save(_contiguous(with_copy), metadata=meta))
    atomic_write_bytes(Path(run_dir) / MODEL, safetensors.numpy.save(_contiguous(model_vars), metadata=meta))


def _contiguous(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    # np.array(order="C"), not np.ascontiguousarray: the latter turns a 0-d array (Adam's step
    # count) into shape (1,), which then broadcasts differently after a resume.
    return {k: np.array(v, order="C") for k, v in arrays.items()}


def read_safetensors(path: Path) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """The arrays of a safetensors file by name, and its metadata; a CheckpointError names a
    missing or unreadable file."""
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint file (train first, or point at a run directory)")
    try:
        with safetensors.safe_open(str(path), framework="np") as f:
            metadata = f.metadata() or {}
            arrays = {name: np.array(f.get_tensor(name)) for name in f.keys()}  # noqa: SIM118 (safe_open has no __iter__)
    except (OSError, ValueError, safetensors.SafetensorError) as err:
        raise CheckpointError(f"{path}: not a readable safetensors checkpoint ({err})") from None
    return arrays, metadata


def checkpoint_step(path: Path, metadata: dict[str, str]) -> int:
    """The step a checkpoint file's metadata names; a CheckpointError where it names none."""
    text = metadata.get("step")
    if text is None:
        raise CheckpointError(f"{path}: its metadata has no step; it was not written by rnnkit")
    if not (text.isascii() and text.isdecimal()):
        raise CheckpointError(f"{path}: its metadata's step must be a non-negative integer; got {text[:40]!r}")
    return int(text)


def saved_step(run_dir: Path) -> int:
    """The step of `run_dir`'s checkpoint, read from its metadata alone; 0 without one."""
    path = Path(run_dir) / MODEL
    if not path.exists():
        return 0
    try:
        with safetensors.safe_open(str(path), framework="np") as f:
            metadata = f.metadata() or {}
    except (OSError, ValueError, safetensors.SafetensorError) as err:
        raise CheckpointError(f"{path}: not a readable safetensors checkpoint ({err})") from None
    return checkpoint_step(path, metadata)


def first_non_finite(arrays: dict[str, np.ndarray]) -> str | None:
    """The name of the first floating-point array holding NaN or infinity, or None."""
    for name, value in arrays.items():
        if np.issubdtype(value.dtype, np.floating) and not np.isfinite(value).all():
            return name
    return None


def load_model_variables(run_dir: Path) -> tuple[dict[str, np.ndarray], int]:
    """The checkpointed weights by TF1 name, and the step they were saved at; weights holding
    NaN or infinity are refused (a diverged run has nothing to evaluate, export or resume)."""
    path = Path(run_dir) / MODEL
    arrays, metadata = read_safetensors(path)
    step = checkpoint_step(path, metadata)
    bad = first_non_finite(arrays)
    if bad is not None:
        raise CheckpointError(f"{path}: weight {bad} holds NaN or infinity (the run diverged); it cannot be used")
    return arrays, step


def load_checkpoint(run_dir: Path) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], int]:
    """(model variables, optimizer variables, step). Where the model file lags the optimizer
    file (the process was killed between their renames), the model's weights come from the
    copy in the optimizer file; a pair from different steps without that copy is refused."""
    model_vars, step = load_model_variables(run_dir)
    opt_path = Path(run_dir) / OPTIMIZER
    saved, opt_meta = read_safetensors(opt_path)
    opt_step = checkpoint_step(opt_path, opt_meta)
    copy = {k[len(MODEL_COPY) :]: v for k, v in saved.items() if k.startswith(MODEL_COPY)}
    opt_vars = {k: v for k, v in saved.items() if not k.startswith(MODEL_COPY)}
    if opt_step != step:
        if opt_step < step or set(copy) != set(model_vars):
            raise CheckpointError(
                f"{run_dir}: {MODEL} is from step {step} but {OPTIMIZER} from step {opt_step}; "
                "the last checkpoint was interrupted, so it cannot be resumed (eval still works)"
            )
        model_vars, step = copy, opt_step
    bad = first_non_finite({**model_vars, **opt_vars})
    if bad is not None:
        raise CheckpointError(f"{opt_path}: {bad} holds NaN or infinity; the run cannot be resumed")
    return model_vars, opt_vars, step


def read_config(run_dir: Path) -> dict[str, Any]:
    """config.json as a dict (`read_run_config` gives it as a TrainConfig)."""
    path = Path(run_dir) / CONFIG
    if not path.exists():
        raise CheckpointError(f"{run_dir}: not a run directory (no {CONFIG}); train one with rnnkit train --run-dir")
    try:
        return json.loads(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as err:
        raise CheckpointError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{path}: not valid JSON ({err})") from None
    except OSError as err:
        raise CheckpointError(f"{path}: cannot be read ({err.strerror or err})") from None


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """metrics.jsonl's records in order; none where the run has logged nothing. A last line
    cut short (the process killed while appending it) is left out; any other line that is not
    a JSON object is a CheckpointError naming it."""
    path = Path(run_dir) / METRICS
    if not path.exists():
        return []
    text = path.read_bytes().decode("utf-8", errors="replace")
    lines = text.split("\n")
    records = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            record = None
        if not isinstance(record, dict):
            if number == len(lines):  # no newline after it: a torn append
                break
            raise CheckpointError(f"{path}: line {number} is not a JSON object of metrics")
        records.append(record)
    return records


def truncate_metrics(run_dir: Path, step: int) -> None:
    """On resume: drop records logged after the checkpoint we resume from, and the test
    record (they will be redone)."""
    kept = [r for r in read_metrics(run_dir) if _step_of(r) <= step and "test_accuracy" not in r]
    atomic_write_text(Path(run_dir) / METRICS, "".join(_json_line(r) for r in kept))


def _step_of(record: dict[str, Any]) -> int:
    step = record.get("step", 0)
    return step if isinstance(step, int) else 0


def _json_line(record: dict[str, Any]) -> str:
    """One line of strict JSON: a NaN or infinity is written as null (JSON has no such numbers)."""
    clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()}
    return json.dumps(clean, allow_nan=False) + "\n"


def append_metrics(run_dir: Path, record: dict[str, Any]) -> None:
    """Add one record to metrics.jsonl (non-finite numbers as null)."""
    with open(Path(run_dir) / METRICS, "a") as f:
        f.write(_json_line(record))
