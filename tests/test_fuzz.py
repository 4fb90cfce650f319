"""Property-based fuzzing of the files rnnkit reads: config.json, checkpoint metadata,
safetensors headers, export sidecars and IDX headers are corrupted at random, and the CLI (in
process) must either work or refuse with exit status 2 and one line on stderr: never a
traceback, never another status, and never a change to the run directory it read.

Bounded for the default run (`max_examples` per property, no deadline)."""

from __future__ import annotations

import json
import os
import shutil
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
import safetensors.numpy  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from rnnkit import runs  # noqa: E402
from rnnkit.workflows.train import train  # noqa: E402

from cases import run_cli  # noqa: E402
from small_runs import config, make_idx_dir  # noqa: E402

FUZZ = settings(
    max_examples=int(os.environ.get("RNNKIT_FUZZ_EXAMPLES", "15")),  # more for a longer hunt
    deadline=None,
    derandomize=False,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=8,
)


pytestmark = pytest.mark.usefixtures("standard_promotion")  # optax mixes Python floats and int32 counts


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_idx_dir(tmp_path_factory.mktemp("idx"), n_train=120, n_test=20)


@pytest.fixture(scope="module")
def pristine(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("pristine") / "run"
    train(config(data_dir, run, cells="gru:4", train_samples=2 * 16 + 1, validation_size=0))
    return run


def snapshot(run: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(run.iterdir()) if p.is_file()}


def works_or_one_line(argv: list[str], capsys: Any, watched: Path) -> int:
    """The CLI's status after checking the contract; a refusal leaves `watched` as it was."""
    before = snapshot(watched)
    code, _, err = run_cli(argv, capsys)
    assert "Traceback" not in err, err
    assert code in (0, 2), (code, err)
    if code == 2:
        assert len(err.strip().splitlines()) == 1, err
        assert snapshot(watched) == before
    return code


def fresh_copy(pristine: Path, tmp_path: Path) -> Path:
    run = tmp_path / "run"
    if run.exists():
        shutil.rmtree(run)
    shutil.copytree(pristine, run)
    return run


@FUZZ
@given(data=st.data())
def test_fuzzed_config_json(pristine: Path, tmp_path: Path, capsys: Any, data: Any) -> None:
    run = fresh_copy(pristine, tmp_path)
    saved = json.loads((run / runs.CONFIG).read_text())
    how = data.draw(st.sampled_from(["value", "drop", "bytes", "document"]))
    if how == "value":
        key = data.draw(st.sampled_from(sorted(saved)))
        text = json.dumps({**saved, key: data.draw(JSON)})
    elif how == "drop":
        key = data.draw(st.sampled_from(sorted(saved)))
        text = json.dumps({k: v for k, v in saved.items() if k != key})
    elif how == "document":
        text = json.dumps(data.draw(JSON))
    else:
        text = None
        (run / runs.CONFIG).write_bytes(data.draw(st.binary(max_size=64)))
    if text is not None:
        (run / runs.CONFIG).write_text(text)
    works_or_one_line(["eval", str(run)], capsys, run)


@FUZZ
@given(metadata=st.dictionaries(st.sampled_from(["step", "format", "x"]) | st.text(max_size=6), st.text(max_size=8)))
def test_fuzzed_checkpoint_metadata(pristine: Path, tmp_path: Path, capsys: Any, metadata: dict[str, str]) -> None:
    run = fresh_copy(pristine, tmp_path)
    name = runs.MODEL if len(metadata) % 2 else runs.OPTIMIZER
    arrays, _ = runs.read_safetensors(run / name)
    (run / name).write_bytes(safetensors.numpy.save(arrays, metadata=metadata))
    works_or_one_line(["eval", str(run)], capsys, run)
    works_or_one_line(["train", "--run-dir", str(run), "--resume", "--train-samples", "33"], capsys, run)


@FUZZ
@given(edits=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1, max_size=4))
def test_fuzzed_safetensors_header(pristine: Path, tmp_path: Path, capsys: Any, edits: list[tuple[int, int]]) -> None:
    run = fresh_copy(pristine, tmp_path)
    raw = bytearray((run / runs.MODEL).read_bytes())
    header_end = 8 + struct.unpack("<Q", raw[:8])[0]
    for at, value in edits:  # bytes of the length prefix and the JSON header
        raw[at % header_end] = value
    (run / runs.MODEL).write_bytes(bytes(raw))
    works_or_one_line(["eval", str(run)], capsys, run)


@pytest.fixture(scope="module")
def artifact(pristine: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from rnnkit.export import export_run

    path = tmp_path_factory.mktemp("export") / "m.rnnx"
    export_run(pristine, path)
    return path


@FUZZ
@given(data=st.data())
def test_fuzzed_export_sidecar(artifact: Path, tmp_path: Path, capsys: Any, data: Any) -> None:
    from PIL import Image

    from rnnkit.export import sidecar_path

    folder = tmp_path / "export"
    if folder.exists():
        shutil.rmtree(folder)
    shutil.copytree(artifact.parent, folder)
    path = folder / artifact.name
    meta = json.loads(sidecar_path(path).read_text())
    key = data.draw(st.sampled_from(["mode", "time_steps", "input", "image_shape", "classes", "layout"]))
    shape = {"shape": data.draw(st.lists(JSON, max_size=4)), "dtype": "float32"}
    value = shape if key == "input" else data.draw(JSON)
    sidecar_path(path).write_text(json.dumps({**meta, key: value}))
    image = tmp_path / "d.png"
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(image)
    works_or_one_line(["predict", "--artifact", str(path), str(image)], capsys, folder)


IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


@FUZZ
@given(
    name=st.sampled_from(IDX_FILES),
    edits=st.lists(st.tuples(st.integers(0, 15), st.integers(0, 255)), min_size=1, max_size=3),
)
def test_fuzzed_idx_headers(
    data_dir: Path, pristine: Path, tmp_path: Path, capsys: Any, name: str, edits: list[tuple[int, int]]
) -> None:
    import gzip

    folder = tmp_path / "idx"
    if folder.exists():
        shutil.rmtree(folder)
    shutil.copytree(data_dir, folder)
    raw = bytearray(gzip.decompress((folder / f"{name}.gz").read_bytes()))
    for at, value in edits:  # the magic number and the dimensions
        raw[at % min(len(raw), 16)] = value
    (folder / f"{name}.gz").unlink()
    (folder / name).write_bytes(bytes(raw))
    works_or_one_line(["eval", str(pristine), "--data-dir", str(folder)], capsys, pristine)
