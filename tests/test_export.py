"""rnnkit export / rnnkit.export.load / rnnkit predict --artifact: round trips equal in-process
inference exactly; a static artifact refuses other lengths by name; a dynamic one takes any."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from rnnkit.cli import main
from rnnkit.errors import CheckpointError, ConfigError
from rnnkit.export import export_run, load, portable, sidecar_path
from rnnkit.workflows import checkpoint as ckpt
from rnnkit.workflows.train import TrainConfig, load_model, train

from small_runs import SIDE, config, make_idx_dir

pytestmark = pytest.mark.usefixtures("standard_promotion")  # optax mixes Python floats and int32 counts


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = make_idx_dir(tmp_path_factory.mktemp("idx"))
    run = tmp_path_factory.mktemp("runs") / "run"
    with jax.numpy_dtype_promotion("standard"):
        train(config(data, run, train_samples=6 * 16 + 1))
    return run


def in_process(run: Path, mode: str) -> Any:
    """The run's model as an export writes it: dynamic models with the per-step loop (the
    native kernel's custom calls can't be serialised; test_native_model_equals_its_export
    checks the native path against the artifact)."""
    saved = TrainConfig.from_dict(ckpt.read_config(run))
    model, _ = load_model(run, dataclasses.replace(saved, mode=mode))
    return portable(model)


def test_native_model_equals_its_export_to_float32_rounding(run_dir: Path, tmp_path: Path, native_kernel: None) -> None:
    export_run(run_dir, tmp_path / "model.rnnx", mode="dynamic")
    saved = TrainConfig.from_dict(ckpt.read_config(run_dir))
    model, _ = load_model(run_dir, saved)
    native = dataclasses.replace(model, implementation="native")
    assert portable(native).implementation == "per_step"
    x = inputs(13)
    want = load(tmp_path / "model.rnnx")(x)
    np.testing.assert_allclose(np.asarray(jax.jit(lambda v: native(v))(jnp.asarray(x))), want, rtol=1e-5, atol=1e-5)


def inputs(length: int, batch: int = 3, seed: int = 0) -> np.ndarray:
    return np.random.default_rng([seed, length]).random((batch, length, SIDE), dtype=np.float32)


def test_dynamic_artifact_takes_every_length_and_equals_in_process_inference(run_dir: Path, tmp_path: Path) -> None:
    info = export_run(run_dir, tmp_path / "model.rnnx", mode="dynamic")
    model = in_process(run_dir, "dynamic")
    reference = jax.jit(lambda x: model(x))
    loaded = load(tmp_path / "model.rnnx")
    assert loaded.mode == "dynamic"
    assert loaded.time_steps is None
    for length in (8, 10, 12, 28, 56, 1000):  # successive calls, one artifact
        x = inputs(length, batch=2 if length == 1000 else 3)
        np.testing.assert_array_equal(loaded(x), np.asarray(reference(jnp.asarray(x))))
    meta = json.loads(sidecar_path(tmp_path / "model.rnnx").read_text())
    assert meta == info.metadata
    assert meta["artifact_sha256"] == hashlib.sha256((tmp_path / "model.rnnx").read_bytes()).hexdigest()
    assert meta["input"] == {"shape": ["batch", "time", SIDE], "dtype": "float32"}
    assert meta["parameters"] == sum(int(np.size(v)) for v in model.variables().values())
    assert meta["classes"] == ["0", "1", "2"]
    assert meta["layout"] == "rows"
    assert meta["image_shape"] == [SIDE, SIDE]
    assert meta["source"]["step"] == 6
    assert meta["platforms"] == ["cpu", "cuda"]


def test_static_artifact_refuses_other_lengths_naming_its_own(run_dir: Path, tmp_path: Path) -> None:
    export_run(run_dir, tmp_path / "static.rnnx", mode="static")
    loaded = load(tmp_path / "static.rnnx")
    assert loaded.time_steps == SIDE
    x = inputs(SIDE)
    model = in_process(run_dir, "static")
    np.testing.assert_array_equal(loaded(x), np.asarray(jax.jit(lambda v: model(v))(jnp.asarray(x))))
    for length in (SIDE - 1, SIDE + 1, 2 * SIDE):
        with pytest.raises(ConfigError, match=rf"built for sequences of exactly {SIDE} steps.*got {length} steps"):
            loaded(inputs(length))


def test_state_export_returns_the_final_state_by_name(run_dir: Path, tmp_path: Path) -> None:
    export_run(run_dir, tmp_path / "state.rnnx", mode="dynamic", with_state=True)
    loaded = load(tmp_path / "state.rnnx")
    x = inputs(11)
    logits, state = loaded(x)
    model = in_process(run_dir, "dynamic")
    want_logits, (lstm, gru) = jax.jit(lambda v: model.logits_and_state(v))(jnp.asarray(x))
    np.testing.assert_array_equal(logits, want_logits)
    assert sorted(state) == ["cell_0/c", "cell_0/h", "cell_1/h"] == loaded.metadata["state_names"]
    np.testing.assert_array_equal(state["cell_0/c"], lstm.c)
    np.testing.assert_array_equal(state["cell_0/h"], lstm.h)
    np.testing.assert_array_equal(state["cell_1/h"], gru)


def test_artifact_runs_in_a_process_without_rnnkit(run_dir: Path, tmp_path: Path) -> None:
    export_run(run_dir, tmp_path / "model.rnnx")
    x = inputs(13, batch=2)
    np.save(tmp_path / "x.npy", x)
    script = (
        "import sys, numpy as np\n"
        "from jax import export\n"
        f"e = export.deserialize(bytearray(open({str(tmp_path / 'model.rnnx')!r}, 'rb').read()))\n"
        f"np.save({str(tmp_path / 'y.npy')!r}, np.asarray(e.call(np.load({str(tmp_path / 'x.npy')!r}))))\n"
        "assert not any(m.startswith('rnnkit') for m in sys.modules), 'rnnkit was imported'\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=120)
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), load(tmp_path / "model.rnnx")(x))


def write_png(path: Path, image: np.ndarray) -> Path:
    Image.fromarray(image).save(path)
    return path


def test_cli_predict_with_artifact_matches_predict_with_run(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    image = np.zeros((SIDE, SIDE), np.uint8)
    image[:, 1::3] = 250  # class 1 of the synthetic data
    png = write_png(tmp_path / "one.png", image)
    assert main(["export", str(run_dir), "--mode", "static", "--out", str(tmp_path / "m.rnnx")]) == 0
    assert "exactly 8 steps" in capsys.readouterr().out
    assert main(["predict", str(run_dir), str(png)]) == 0
    from_run = capsys.readouterr().out
    assert main(["predict", "--artifact", str(tmp_path / "m.rnnx"), str(png)]) == 0
    from_artifact = capsys.readouterr().out
    assert from_artifact == from_run
    assert f"{png}: class 1 " in from_artifact


def one_line_error(code: int, err: str) -> str:
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err, err
    return lines[0]


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as stop:
        main(argv)
    return one_line_error(int(stop.value.code or 0), capsys.readouterr().err)


def test_user_mistakes_exit_2_and_leave_saved_exports_alone(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = tmp_path / "good.rnnx"
    export_run(run_dir, good)
    saved = good.read_bytes(), sidecar_path(good).read_bytes()
    png = write_png(tmp_path / "digit.png", np.zeros((SIDE, SIDE), np.uint8))
    assert "no such file" in run_cli(["predict", "--artifact", str(tmp_path / "missing.rnnx"), str(png)], capsys)
    assert "--steps needs a run directory" in run_cli(["predict", "--artifact", str(good), str(png), "--steps"], capsys)
    assert "does not exist" in run_cli(["export", str(run_dir), "--out", str(tmp_path / "no" / "m.rnnx")], capsys)
    # an existing artifact is replaced only with --force, and a failed export leaves it as it was
    assert "exists; choose another name or pass --force" in run_cli(
        ["export", str(run_dir), "--out", str(good)], capsys
    )
    assert "config.json" in run_cli(["export", str(tmp_path / "not-a-run"), "--out", str(good), "--force"], capsys)
    assert run_cli(["export", str(run_dir), "--mode", "sideways", "--out", str(good)], capsys).startswith(
        "rnnkit export: error: argument --mode"
    )
    assert (good.read_bytes(), sidecar_path(good).read_bytes()) == saved
    # an image of the wrong size for the artifact
    big = write_png(tmp_path / "big.png", np.zeros((SIDE + 2, SIDE + 2), np.uint8))
    assert "expected a 8x8 grayscale image" in run_cli(["predict", "--artifact", str(good), str(big)], capsys)


def test_load_refuses_mismatched_or_damaged_files(run_dir: Path, tmp_path: Path) -> None:
    path = tmp_path / "m.rnnx"
    export_run(run_dir, path)
    loaded = load(path)
    with pytest.raises(ConfigError, match=r"inputs must be \[batch, time, 8\] \(rank 3\); got shape \(8, 8\)"):
        loaded(np.zeros((SIDE, SIDE), np.float32))
    with pytest.raises(ConfigError, match=r"inputs must have 8 features per step; got shape \(1, 4, 5\)"):
        loaded(np.zeros((1, 4, 5), np.float32))
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="does not match its sidecar"):
        load(path)
    sidecar_path(path).unlink()
    with pytest.raises(CheckpointError, match=r"m\.rnnx\.json is missing"):
        load(path)
    meta = {"format": "rnnkit-export", "format_version": 1, "artifact_sha256": hashlib.sha256(b"junk").hexdigest()}
    path.write_bytes(b"junk")
    sidecar_path(path).write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match=r"not a readable jax\.export artifact"):
        load(path)


def test_export_module_is_reachable_from_the_package() -> None:
    import rnnkit

    assert rnnkit.export.load is load
