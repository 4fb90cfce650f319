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


def save_checkpoint(
    run_dir: Path,
    model_vars: dict[str, np.ndarray],
    opt_vars: dict[str, np.ndarray],
    step: int,
    extra_metadata: dict[str, str] | None = None,
) -> None:
    """Optimizer first, model second: the model file is what `eval` reads, and it is replaced
    last. Both carry `{"step": step, "format": "rnnkit"}` and `extra_metadata`."""
    meta = {"step": str(step), "format": "rnnkit", **(extra_metadata or {})}
    atomic_write_bytes(Path(run_dir) / OPTIMIZER, safetensors.numpy.save(_contiguous(opt_vars), metadata=meta))
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


def load_model_variables(run_dir: Path) -> tuple[dict[str, np.ndarray], int]:
    """The checkpointed weights by TF1 name, and the step they were saved at."""
    arrays, metadata = read_safetensors(Path(run_dir) / MODEL)
    return arrays, int(metadata.get("step", "0"))


def load_checkpoint(run_dir: Path) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], int]:
    """(model variables, optimizer variables, step), refusing a pair from different steps."""
    model_vars, step = load_model_variables(run_dir)
    opt_vars, opt_meta = read_safetensors(Path(run_dir) / OPTIMIZER)
    if int(opt_meta.get("step", "-1")) != step:
        raise CheckpointError(
            f"{run_dir}: {MODEL} is from step {step} but {OPTIMIZER} from step {opt_meta.get('step')}; "
            "the last checkpoint was interrupted, so it cannot be resumed (eval still works)"
        )
    return model_vars, opt_vars, step


def read_config(run_dir: Path) -> dict[str, Any]:
    """config.json as a dict (`read_run_config` gives it as a TrainConfig)."""
    path = Path(run_dir) / CONFIG
    if not path.exists():
        raise CheckpointError(f"{run_dir}: not a run directory (no {CONFIG}); train one with rnnkit train --run-dir")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{path}: not valid JSON ({err})") from None


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """metrics.jsonl's records in order; none where the run has logged nothing."""
    path = Path(run_dir) / METRICS
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def truncate_metrics(run_dir: Path, step: int) -> None:
    """On resume: drop records logged after the checkpoint we resume from (they will be redone)."""
    kept = [r for r in read_metrics(run_dir) if r.get("step", 0) <= step]
    atomic_write_text(Path(run_dir) / METRICS, "".join(json.dumps(r) + "\n" for r in kept))


def append_metrics(run_dir: Path, record: dict[str, Any]) -> None:
    """Add one record to metrics.jsonl."""
    with open(Path(run_dir) / METRICS, "a") as f:
        f.write(json.dumps(record) + "\n")
