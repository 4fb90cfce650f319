"""What rnnkit guarantees about run directories, outputs, interruption and bad input: one
writer per run, no output over an existing file without --force (a run's own files never),
a run resumable from its first moment, --resume's flags applied or refused, non-finite
training stopped, and one line (no traceback) for every anticipated failure."""

from __future__ import annotations

import dataclasses
import fcntl
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import safetensors.numpy

from rnnkit import runs
from rnnkit.errors import CheckpointError
from rnnkit.workflows.train import train

from cases import run_cli
from small_runs import config, make_idx_dir

pytestmark = pytest.mark.usefixtures("standard_promotion")  # optax mixes Python floats and int32 counts


@pytest.fixture(scope="module")
def trained(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished run of 6 steps; tests copy it before changing it."""
    run = tmp_path_factory.mktemp("trained") / "run"
    train(config(data_dir, run, cells="gru:8", train_samples=6 * 16 + 1))
    return run


def one_line(code: int, err: str, status: int = 2) -> str:
    assert code == status, err
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


def snapshot(run: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(run.iterdir()) if p.is_file()}


def small_train(data_dir: Path, run: Path, *more: str) -> list[str]:
    argv = ["train", "--cells", "gru:8", "--data-dir", str(data_dir), "--run-dir", str(run), "--batch-size", "16"]
    return [*argv, "--validation-size", "40", "--train-samples", str(4 * 16 + 1), *more]


# --- one writer per run directory ------------------------------------------------------------


def test_a_locked_run_directory_is_refused_naming_the_holder(
    data_dir: Path, trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    before = snapshot(run)
    with open(run / runs.LOCK, "a+") as holder:  # another writer: flock locks are per open file
        fcntl.flock(holder.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        holder.seek(0)
        holder.truncate()
        holder.write("4242\n")
        holder.flush()
        line = one_line(*run_cli(["train", "--run-dir", str(run), "--resume"], capsys)[::2])
        assert "is in use by another rnnkit process (PID 4242)" in line
        new = tmp_path / "new"
        new.mkdir()
        (new / runs.LOCK).write_text("77\n")
        with open(new / runs.LOCK) as other:
            fcntl.flock(other.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            line = one_line(*run_cli(small_train(data_dir, new), capsys)[::2])
            assert "(PID 77)" in line
    assert snapshot(run) == {**before, runs.LOCK: b"4242\n"}
    # the holder gone (its lock released by the kernel), the run resumes
    code, _, err = run_cli(["train", "--run-dir", str(run), "--resume"], capsys)
    assert code == 0, err


def test_default_run_directories_are_unique_within_a_second(tmp_path: Path) -> None:
    names = [runs.new_run_dir(tmp_path, "dynamic-20260101-000000").name for _ in range(3)]
    assert names == ["dynamic-20260101-000000", "dynamic-20260101-000000-2", "dynamic-20260101-000000-3"]


def test_a_refused_start_leaves_no_directory(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    line = one_line(*run_cli([*small_train(data_dir, run), "--batch-size", "99999"], capsys)[::2])
    assert "--batch-size must be at most the 200 training examples" in line
    assert not run.exists()
    line = one_line(*run_cli([*small_train(data_dir, run), "--train-samples", "16"], capsys)[::2])
    assert "--train-samples 16 gives no training step at --batch-size 16" in line
    assert not run.exists()


# --- outputs ---------------------------------------------------------------------------------


def test_outputs_never_replace_a_runs_files_and_others_only_with_force(
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = snapshot(trained)
    for name in (runs.MODEL, runs.CONFIG, runs.METRICS):
        line = one_line(*run_cli(["export", str(trained), "--out", str(trained / name), "--force"], capsys)[::2])
        assert f"--out: {trained / name} belongs to the run in {trained}" in line
        line = one_line(*run_cli(["eval", str(trained), "--plot", str(trained / name), "--force"], capsys)[::2])
        assert f"--plot: {trained / name} belongs to the run" in line
    line = one_line(*run_cli(["export", str(trained), "--out", str(trained / "config")], capsys)[::2])
    assert "--out (its .json sidecar)" in line
    assert "belongs to the run" in line
    assert snapshot(trained) == before

    plot = tmp_path / "c.png"
    plot.write_bytes(b"mine")
    line = one_line(*run_cli(["eval", str(trained), "--plot", str(plot)], capsys)[::2])
    assert line.endswith(f"--plot: {plot} exists; choose another name or pass --force to replace it")
    assert plot.read_bytes() == b"mine"
    code, _, err = run_cli(["eval", str(trained), "--plot", str(plot), "--force"], capsys)
    assert code == 0, err
    assert plot.read_bytes().startswith(b"\x89PNG")
    line = one_line(*run_cli(["eval", str(trained), "--plot", str(tmp_path / "nodir" / "c.png")], capsys)[::2])
    assert f"--plot: directory {tmp_path / 'nodir'} does not exist" in line
    line = one_line(
        *run_cli(["export", str(trained), "--out", str(tmp_path / "m"), "--platforms", "bogus"], capsys)[::2]
    )
    assert "--platforms must name JAX platforms (cpu, cuda, rocm, tpu); got bogus" in line
    assert not (tmp_path / "m").exists()


def test_a_failing_atomic_write_keeps_its_first_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from rnnkit import _atomic

    def no_space(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_space)
    monkeypatch.setattr(Path, "unlink", lambda self, missing_ok=False: (_ for _ in ()).throw(PermissionError(13, "x")))
    with pytest.raises(OSError, match="No space left on device"):
        _atomic.atomic_write_bytes(tmp_path / "f", b"data")


def test_os_errors_are_one_line(trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from rnnkit.cli._parser import os_error_line

    assert os_error_line(OSError(28, "No space left on device", "/x/model.safetensors")) == (
        "/x/model.safetensors: No space left on device (the disk is full; the previous files were left as they were)"
    )
    a_file = tmp_path / "file"
    a_file.write_text("x")
    line = one_line(*run_cli(["train", "--run-dir", str(a_file / "run")], capsys)[::2])
    assert str(a_file) in line
    line = one_line(*run_cli(["train", "--run-dir", str(a_file)], capsys)[::2])
    assert f"--run-dir: {a_file} exists and is not a directory" in line


# --- a run resumable from its first moment ---------------------------------------------------


class FailAtStart:
    """A reporter whose start fails: the process dies after config.json, before any checkpoint."""

    def start(self, *args: Any) -> None:
        raise MemoryError("killed before the first checkpoint")

    def step(self, *args: Any) -> None:
        pass

    def line(self, text: str) -> None:
        pass

    def stop(self) -> None:
        pass


def test_a_run_without_a_checkpoint_resumes_from_step_0_to_the_same_weights(
    data_dir: Path, trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    with pytest.raises(MemoryError):
        train(config(data_dir, run, cells="gru:8", train_samples=6 * 16 + 1), reporter=FailAtStart())
    assert sorted(p.name for p in run.iterdir()) == [runs.LOCK, runs.CONFIG]
    (run / runs.METRICS).write_text('{"step": 1, "loss": 1.0}\n{"step": 2, "lo')  # torn by the kill
    code, _, err = run_cli(["train", "--run-dir", str(run), "--resume"], capsys)
    assert code == 0, err
    a, _ = runs.load_model_variables(trained)
    b, step = runs.load_model_variables(run)
    assert step == 6
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    assert runs.read_metrics(run) == runs.read_metrics(trained)
    # resuming the finished run again redoes the test pass, without a second test record
    assert run_cli(["train", "--run-dir", str(run), "--resume"], capsys)[0] == 0
    assert [r for r in runs.read_metrics(run) if "test_accuracy" in r] == [
        r for r in runs.read_metrics(trained) if "test_accuracy" in r
    ]


def test_a_run_without_a_checkpoint_can_be_started_again(data_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    with pytest.raises(MemoryError):
        train(config(data_dir, run, cells="gru:8"), reporter=FailAtStart())
    result = train(config(data_dir, run, cells="gru:8", train_samples=2 * 16 + 1))
    assert result.steps == 2


# --- --resume with flags ---------------------------------------------------------------------


def test_resume_refuses_settings_that_define_the_run_and_applies_the_others(
    data_dir: Path, trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: Any
) -> None:
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    before = snapshot(run)
    argv = ["train", "--run-dir", str(run), "--resume", "--cells", "gru:64", "--learning-rate", "0.5"]
    line = one_line(*run_cli([*argv, "--batch-size", "16"], capsys)[::2])  # 16 is the run's: not a difference
    assert line.endswith(
        "--resume: --cells gru:64 (the run has gru:8); --learning-rate 0.5 (the run has 0.01): these define the "
        "run and cannot change; start a new --run-dir to train with them"
    )
    assert snapshot(run) == before

    moved = tmp_path / "moved-data"
    shutil.copytree(data_dir, moved)
    monkeypatch.chdir(tmp_path)
    argv = ["train", "--run-dir", str(run), "--resume", "--train-samples", str(9 * 16 + 1), "--data-dir", "moved-data"]
    code, _, err = run_cli([*argv, "--display-step", "3"], capsys)
    assert code == 0, err
    saved = runs.read_run_config(run)
    assert (saved.train_samples, saved.data_dir, saved.display_step) == (9 * 16 + 1, str(moved), 3)
    assert saved.history == (
        {
            "step": 6,
            "changed": {
                "train_samples": [6 * 16 + 1, 9 * 16 + 1],
                "data_dir": [str(data_dir), str(moved)],
                "display_step": [1, 3],
            },
        },
    )
    assert runs.load_model_variables(run)[1] == 9
    line = one_line(*run_cli(["train", "--run-dir", str(run), "--resume", "--train-samples", "33"], capsys)[::2])
    assert "--resume: the run is at step 9, but its settings now give 2 steps" in line


def test_new_runs_store_their_data_directory_absolute(data_dir: Path, tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.chdir(data_dir.parent)
    result = train(config(Path(data_dir.name), tmp_path / "run", cells="gru:8", train_samples=2 * 16 + 1))
    assert runs.read_run_config(result.run_dir).data_dir == str(data_dir)


# --- non-finite training ---------------------------------------------------------------------


def strict_json(line: str) -> Any:
    def refuse(constant: str) -> Any:
        raise ValueError(f"not JSON: {constant}")

    return json.loads(line, parse_constant=refuse)


def test_a_diverging_run_stops_with_one_line_and_keeps_its_last_finite_checkpoint(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    argv = small_train(data_dir, run, "--learning-rate", "1e38", "--train-samples", str(40 * 16 + 1))
    code, _, err = run_cli([*argv, "--checkpoint-every", "1", "--display-step", "1"], capsys)
    line = one_line(code, err, status=1)
    assert line.startswith("rnnkit: error: training diverged at step ")
    match = re.search(
        r"diverged at step (\d+): (the loss|weight \S+) is NaN or infinite; the last finite "
        r"checkpoint \(step (\d+)\) is kept",
        line,
    )
    assert match is not None, line
    _, step = runs.load_model_variables(run)  # refuses non-finite weights: these are finite
    assert step == int(match.group(3)) < int(match.group(1))
    for text in (run / runs.METRICS).read_text().splitlines():
        strict_json(text)


def test_non_finite_weights_are_refused_by_eval_predict_export_and_resume(
    trained: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    variables, metadata = runs.read_safetensors(run / runs.MODEL)
    name = sorted(variables)[0]
    variables[name] = np.full_like(variables[name], np.nan)
    (run / runs.MODEL).write_bytes(safetensors.numpy.save(variables, metadata=metadata))
    expected = f"weight {name} holds NaN or infinity (the run diverged)"
    assert expected in one_line(*run_cli(["eval", str(run)], capsys)[::2])
    assert expected in one_line(*run_cli(["export", str(run), "--out", str(tmp_path / "m.rnnx")], capsys)[::2])
    assert expected in one_line(*run_cli(["train", "--run-dir", str(run), "--resume"], capsys)[::2])
    from PIL import Image

    Image.new("L", (8, 8)).save(tmp_path / "d.png")
    assert expected in one_line(*run_cli(["predict", str(run), str(tmp_path / "d.png")], capsys)[::2])


def test_metrics_are_strict_json(tmp_path: Path) -> None:
    runs.append_metrics(tmp_path, {"step": 1, "loss": float("nan"), "accuracy": float("inf")})
    assert strict_json((tmp_path / runs.METRICS).read_text()) == {"step": 1, "loss": None, "accuracy": None}


# --- checkpoint metadata ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("metadata", "message"),
    [
        ({"format": "rnnkit"}, "its metadata has no step; it was not written by rnnkit"),
        ({"step": "abc"}, "its metadata's step must be a non-negative integer; got 'abc'"),
        ({"step": "-3"}, "its metadata's step must be a non-negative integer; got '-3'"),
    ],
)
def test_bad_checkpoint_step_metadata_is_one_line(
    trained: Path, tmp_path: Path, metadata: dict[str, str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    variables, _ = runs.read_safetensors(run / runs.MODEL)
    (run / runs.MODEL).write_bytes(safetensors.numpy.save(variables, metadata=metadata))
    before = snapshot(run)
    assert message in one_line(*run_cli(["eval", str(run)], capsys)[::2])
    assert message in one_line(*run_cli(["train", "--run-dir", str(run), "--resume"], capsys)[::2])
    assert snapshot(run) == before


def test_config_fields_are_type_checked(trained: Path) -> None:
    saved = json.loads((trained / runs.CONFIG).read_text())
    with pytest.raises(CheckpointError, match=r"config\.json: 'cells' must be a string; got 5"):
        runs.TrainConfig.from_dict({**saved, "cells": 5})
    assert dataclasses.asdict(runs.TrainConfig.from_dict(saved)) == dataclasses.asdict(runs.read_run_config(trained))


# --- data ------------------------------------------------------------------------------------


def test_a_corrupt_label_is_refused_with_its_file_and_index(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The class count is declared (10 for MNIST-format data) or given, never inferred from the
    largest label: one corrupt byte is refused, however small the data set."""
    from rnnkit.data import read_idx, write_idx

    data = make_idx_dir(tmp_path / "idx", n_train=240, n_test=60)
    labels_path = data / "train-labels-idx1-ubyte.gz"
    labels = read_idx(labels_path).copy()
    for bad in (10, 255):  # one corrupt byte: an eleventh class, or 246 more
        labels[17] = bad
        write_idx(labels_path, labels)
        line = one_line(*run_cli(small_train(data, tmp_path / "run"), capsys)[::2])
        assert f"{labels_path}: label {bad} at index 17 is outside the 10 classes (labels 0..9)" in line
        assert not (tmp_path / "run").exists()
    line = one_line(*run_cli([*small_train(data, tmp_path / "run"), "--num-classes", "3"], capsys)[::2])
    assert f"{labels_path}: label 255 at index 17 is outside the 3 classes (labels 0..2)" in line
    labels[17] = 0
    write_idx(labels_path, labels)
    line = one_line(*run_cli([*small_train(data, tmp_path / "run"), "--num-classes", "2"], capsys)[::2])
    assert f"{labels_path}: label 2 at index " in line
    write_idx(data / "t10k-images-idx3-ubyte.gz", np.zeros((0, 8, 8), np.uint8))
    write_idx(data / "t10k-labels-idx1-ubyte.gz", np.zeros((0,), np.uint8))
    line = one_line(*run_cli(small_train(data, tmp_path / "run"), capsys)[::2])
    assert "t10k-images-idx3-ubyte.gz: holds no images; the split must not be empty" in line


def test_a_seed_too_large_for_jax_is_refused(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    line = one_line(*run_cli([*small_train(data_dir, tmp_path / "run"), "--seed", str(10**20)], capsys)[::2])
    assert "--seed must be an integer in [0, 2**63); got 100000000000000000000" in line
    assert not (tmp_path / "run").exists()


# --- images ----------------------------------------------------------------------------------


def test_images_are_decoded_by_mode(tmp_path: Path) -> None:
    from PIL import Image

    from rnnkit.errors import ConfigError
    from rnnkit.workflows.evaluate import read_image

    digit = np.zeros((8, 8), np.uint8)
    digit[2:6, 3] = 255
    digit[1, 1] = 128
    expected = digit

    Image.fromarray(digit.astype(np.uint16) * 257).save(tmp_path / "16bit.png")  # 16-bit grayscale
    Image.fromarray(digit.astype(np.float32) / 255).save(tmp_path / "float.tiff")  # float in [0, 1]
    ink = np.zeros((8, 8, 4), np.uint8)
    ink[..., 3] = digit  # black ink, drawn only in the alpha channel
    Image.fromarray(ink, "RGBA").save(tmp_path / "alpha.png")
    white = np.zeros((8, 8, 4), np.uint8)
    white[..., :3] = digit[..., None]
    white[..., 3] = 255
    Image.fromarray(white, "RGBA").save(tmp_path / "opaque.png")
    for name in ("16bit.png", "float.tiff", "alpha.png", "opaque.png"):
        np.testing.assert_array_equal(read_image(tmp_path / name, (8, 8)), expected, err_msg=name)

    Image.new("L", (5000, 5000)).save(tmp_path / "huge.png")
    with pytest.raises(ConfigError, match=r"5000x5000 is too large an image \(at most 16777216 pixels\)"):
        read_image(tmp_path / "huge.png", (8, 8))
    Image.fromarray(np.full((8, 8), 300.0, np.float32)).save(tmp_path / "range.tiff")
    with pytest.raises(ConfigError, match=r"must hold values in \[0, 1\] \(or \[0, 255\]\)"):
        read_image(tmp_path / "range.tiff", (8, 8))


def test_download_refuses_a_mirror_that_is_no_url_and_leaves_no_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    line = one_line(
        *run_cli(["data", "download", "--mirror", "notaurl", "--data-dir", str(tmp_path / "d")], capsys)[::2]
    )
    assert "--mirror must be a URL such as https://host/path/; got 'notaurl'" in line
    assert not (tmp_path / "d").exists()
    mirror = (tmp_path / "empty").as_uri()  # a mirror without the files: the directory made for them goes again
    (tmp_path / "empty").mkdir()
    line = one_line(*run_cli(["data", "download", "--mirror", mirror, "--data-dir", str(tmp_path / "d")], capsys)[::2])
    assert "no mirror gave the expected file" in line
    assert not (tmp_path / "d").exists()


def test_a_truncated_npz_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import io

    buffer = io.BytesIO()
    np.savez(buffer, np.zeros(100))
    (tmp_path / "w.npz").write_bytes(buffer.getvalue()[:150])
    argv = ["convert", "keras", str(tmp_path / "w.npz"), "--out", str(tmp_path / "k"), "--cells", "lstm:8"]
    assert "not a readable .npz file" in one_line(*run_cli(argv, capsys)[::2])


# --- the error boundary ----------------------------------------------------------------------


def test_disk_full_out_of_memory_and_interrupts_are_one_line(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from rnnkit.workflows import train as train_module

    def disk_full(*args: Any) -> None:
        raise OSError(28, "No space left on device", str(tmp_path / "run" / runs.OPTIMIZER))

    monkeypatch.setattr(runs, "save_checkpoint", disk_full)
    line = one_line(*run_cli(small_train(data_dir, tmp_path / "run"), capsys)[::2])
    assert line.endswith(
        "optimizer.safetensors: No space left on device (the disk is full; the previous files were left as they were)"
    )
    monkeypatch.undo()

    def exhausted(*args: Any) -> None:
        raise RuntimeError("RESOURCE_EXHAUSTED: Out of memory allocating 160012800000 bytes.")

    monkeypatch.setattr(train_module, "build_model", exhausted)
    line = one_line(*run_cli(small_train(data_dir, tmp_path / "oom"), capsys)[::2])
    assert "out of memory (RESOURCE_EXHAUSTED: Out of memory allocating 160012800000 bytes.)" in line

    def ctrl_c(*args: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(train_module, "load_data", ctrl_c)
    line = one_line(*run_cli(small_train(data_dir, tmp_path / "int"), capsys)[::2], status=130)
    assert line == "rnnkit: interrupted; nothing was left half-written"
    monkeypatch.setattr(train_module, "load_data", lambda *a: 1 / 0)  # a bug keeps its traceback
    with pytest.raises(ZeroDivisionError):
        run_cli(small_train(data_dir, tmp_path / "bug"), capsys)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("null", "config.json must hold a JSON object of settings; got NoneType"),
        (b"\xff\xfe{}", "not UTF-8 text"),
        ({"cells": 5}, "'cells' must be a string; got 5"),
        ({"image_shape": "28x28"}, "'image_shape' must be [height, width], two positive integers; got \"28x28\""),
        ({"num_classes": "ten"}, "'num_classes' must be an integer; got \"ten\""),
        ({"batch_size": "16"}, "'batch_size' must be an integer; got \"16\""),
        ({"learning_rate": "0.01"}, "'learning_rate' must be a finite number; got \"0.01\""),
        ({"num_classes": 1}, "--num-classes must be at least 2; got 1"),
        ({"mode": None}, "'mode' must be a string; got null"),
        ({"cells": "lstm:\u00b2"}, "--cells: cannot read"),
        ({"history": 3}, "'history' must be a list of objects; got 3"),
        ({"seed": True}, "'seed' must be an integer; got true"),
    ],
)
def test_malformed_config_values_are_one_line(
    trained: Path, tmp_path: Path, text: Any, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    if isinstance(text, dict):
        text = json.dumps({**json.loads((run / runs.CONFIG).read_text()), **text})
    (run / runs.CONFIG).write_bytes(text if isinstance(text, bytes) else text.encode())
    before = snapshot(run)
    for argv in (["eval", str(run)], ["train", "--run-dir", str(run), "--resume"]):
        assert message in one_line(*run_cli(argv, capsys)[::2])
    assert snapshot(run) == before


def test_a_read_only_run_directory_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def read_only(self: Path, *args: Any, **kwargs: Any) -> None:
        raise OSError(30, "Read-only file system", str(self))

    monkeypatch.setattr(Path, "mkdir", read_only)
    line = one_line(*run_cli(["train", "--run-dir", str(tmp_path / "ro" / "run")], capsys)[::2])
    assert "Read-only file system (a read-only file system; choose another directory)" in line


class SavedSteps:
    """A reporter noting, at each display step, the step of the checkpoint on disk."""

    def __init__(self, run: Path):
        self.run, self.seen = run, []

    def start(self, *args: Any) -> None:
        pass

    def step(self, step: int, *args: Any) -> None:
        self.seen.append((step, runs.saved_step(self.run)))

    def line(self, text: str) -> None:
        pass

    def stop(self) -> None:
        pass


def test_checkpoints_also_come_by_the_clock(data_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    reporter = SavedSteps(run)
    cfg = config(data_dir, run, cells="gru:8", train_samples=6 * 16 + 1, display_step=2, checkpoint_every=1000)
    train(dataclasses.replace(cfg, checkpoint_minutes=1e-9), reporter=reporter)  # due at every display step
    assert reporter.seen == [(2, 0), (4, 2), (6, 4)]
    reporter = SavedSteps(tmp_path / "hourly")
    train(dataclasses.replace(cfg, run_dir=str(tmp_path / "hourly"), checkpoint_minutes=60), reporter=reporter)
    assert reporter.seen == [(2, 0), (4, 0), (6, 0)]  # only the final one, after the loop
