"""The run layer (`rnnkit.runs`): a run directory written through it opens to the same model,
its checks refuse what does not match and say what, the import paths that existed before it
give the very same objects. (That every import runs downward is tests/test_layers.py.)"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import equinox as eqx
import jax
import numpy as np
import optax
import pytest

import rnnkit.convert as rc
from rnnkit import runs
from rnnkit._atomic import atomic_write_text
from rnnkit.errors import CheckpointError


def test_old_import_paths_give_the_same_objects() -> None:
    import rnnkit.workflows.checkpoint as ckpt
    import rnnkit.workflows.convert as workflows_convert
    import rnnkit.workflows.train as train_module
    from rnnkit.workflows import train_data, train_report, train_step

    for name in ("TrainConfig", "build_model", "load_model", "make_optimizer", "tf1_adam", "check_backend_precision"):
        assert getattr(train_module, name) is getattr(runs, name), name
    for module in (train_data, train_report, train_step):
        for name in set(train_module.__all__) & set(vars(module)):
            assert getattr(train_module, name) is getattr(module, name), name
    assert all(hasattr(train_module, name) for name in train_module.__all__)
    for name in ("CONFIG", "MODEL", "OPTIMIZER", "METRICS", "CURVES"):
        assert getattr(ckpt, name) == getattr(runs, name)
    for name in ("save_checkpoint", "load_checkpoint", "load_model_variables", "read_config", "read_metrics"):
        assert getattr(ckpt, name) is getattr(runs, name), name
    assert ckpt.CheckpointError is CheckpointError
    assert workflows_convert.load_run_model is runs.load_run_model
    for name in ("write_run_dir", "export_torch_file", "export_tf1_checkpoint", "export_flax_file"):
        assert getattr(workflows_convert, name) is getattr(rc, name), name


CONFIG = runs.TrainConfig(cells="lstm:5,gru:4", image_shape=(6, 3), num_classes=3, seed=3)


def write_run(run: Path, config: runs.TrainConfig, weights_seed: int, step: int) -> eqx.Module:
    """A run directory written by hand through rnnkit.runs, holding the weights of a model built
    with `weights_seed` (not the config's seed, so opening it must read the file); returns that model."""
    source = runs.build_model(dataclasses.replace(config, seed=weights_seed), config.model_input_shape(), 3)
    params, _ = eqx.partition(source, eqx.is_inexact_array)
    opt_state = runs.make_optimizer(config).init(params)
    run.mkdir(parents=True)
    atomic_write_text(run / runs.CONFIG, config.to_json())
    runs.save_checkpoint(run, source.variables(), runs.optimizer_variables(opt_state), step, {"note": "by hand"})
    return source


def test_a_run_written_through_runs_opens_to_the_same_model(tmp_path: Path) -> None:
    run = tmp_path / "run"
    source = write_run(run, CONFIG, weights_seed=11, step=7)
    assert runs.read_run_config(run) == CONFIG
    model, step = runs.load_model(run, runs.read_run_config(run))
    assert step == 7
    fresh = runs.build_model(CONFIG, CONFIG.model_input_shape(), 3).variables()
    for name, value in source.variables().items():
        np.testing.assert_array_equal(model.variables()[name], value)
    kernels = {name for name in fresh if name.endswith(("kernel", "weights"))}
    assert len(kernels) == 4  # lstm, gru gates, gru candidate, dense head
    assert all(not np.array_equal(fresh[name], source.variables()[name]) for name in kernels)  # read from the file
    x = np.random.default_rng(0).random((4, 6, 3), np.float32)  # [batch, time, features]
    np.testing.assert_array_equal(runs.load_run_model(run)(x), eqx.nn.inference_mode(source)(x))
    for name in (runs.MODEL, runs.OPTIMIZER):
        assert runs.read_safetensors(run / name)[1] == {"step": "7", "format": "rnnkit", "note": "by hand"}


def test_a_static_copy_of_the_config_opens_the_same_weights(tmp_path: Path) -> None:
    run = tmp_path / "run"
    write_run(run, CONFIG, weights_seed=11, step=1)
    dynamic, _ = runs.load_model(run, CONFIG)
    static, _ = runs.load_model(run, dataclasses.replace(CONFIG, mode="static"))
    x = np.random.default_rng(1).random((2, 6, 3), np.float32)
    np.testing.assert_allclose(static(x), dynamic(x), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("clip_norm", [None, 1.0])
def test_optimizer_state_round_trips_through_its_file(tmp_path: Path, clip_norm: float | None) -> None:
    config = dataclasses.replace(CONFIG, clip_norm=clip_norm)
    params, _ = eqx.partition(runs.build_model(config, (6, 3), 3), eqx.is_inexact_array)
    template = runs.make_optimizer(config).init(params)
    moved = jax.tree_util.tree_map(lambda a: np.asarray(a) + 1, template)  # differs from the template everywhere
    run = tmp_path / "run"
    run.mkdir()
    runs.save_checkpoint(run, {}, runs.optimizer_variables(moved), 0)
    _, saved, _ = runs.load_checkpoint(run)
    restored = runs.restore_optimizer_state(template, saved, run)
    assert jax.tree_util.tree_structure(restored) == jax.tree_util.tree_structure(template)
    for got, want in zip(jax.tree_util.tree_leaves(restored), jax.tree_util.tree_leaves(moved), strict=True):
        np.testing.assert_array_equal(got, want)
    assert isinstance(template, optax.ScaleByAdamState) == (clip_norm is None)


def test_optimizer_state_of_another_model_is_refused_by_name(tmp_path: Path) -> None:
    params, _ = eqx.partition(runs.build_model(CONFIG, (6, 3), 3), eqx.is_inexact_array)
    template = runs.make_optimizer(CONFIG).init(params)
    saved = runs.optimizer_variables(template)
    name = next(n for n, value in saved.items() if value.ndim == 2)  # a kernel's moment
    with pytest.raises(CheckpointError, match=r"optimizer\.safetensors does not match this model's optimizer: missing"):
        runs.restore_optimizer_state(template, {k: v for k, v in saved.items() if k != name}, tmp_path)
    wrong = {**saved, name: np.zeros((1, 1), np.float32)}
    with pytest.raises(CheckpointError, match=r"must be float32\[.*\]; got float32\[1, 1\]"):
        runs.restore_optimizer_state(template, wrong, tmp_path)


def test_weights_of_another_stack_are_refused_naming_the_config(tmp_path: Path) -> None:
    run = tmp_path / "run"
    write_run(run, dataclasses.replace(CONFIG, cells="gru:4"), weights_seed=0, step=0)
    with pytest.raises(CheckpointError, match=r"model\.safetensors does not match config\.json \(lstm:5,gru:4\)"):
        runs.load_model(run, CONFIG)


def test_what_holds_a_run(tmp_path: Path) -> None:
    assert not runs.holds_run(tmp_path)
    assert not runs.has_checkpoint(tmp_path)
    atomic_write_text(tmp_path / runs.CONFIG, CONFIG.to_json())
    assert runs.holds_run(tmp_path)  # started, nothing saved yet
    assert not runs.has_checkpoint(tmp_path)


def test_config_files_that_are_refused(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"not a run directory \(no config\.json\)"):
        runs.read_run_config(tmp_path)
    (tmp_path / runs.CONFIG).write_text("{")
    with pytest.raises(CheckpointError, match=r"config\.json: not valid JSON"):
        runs.read_run_config(tmp_path)
    (tmp_path / runs.CONFIG).write_text(json.dumps({**json.loads(CONFIG.to_json()), "bogus": 1}))
    with pytest.raises(CheckpointError, match=r"settings this rnnkit does not know: \['bogus'\]"):
        runs.read_run_config(tmp_path)


def test_a_converted_run_records_its_source(tmp_path: Path) -> None:
    source = runs.build_model(CONFIG, (6, 3), 3)
    conversion = rc.from_tf1_variables(source.variables(), source="hand-made")
    run = rc.write_run_dir(conversion, tmp_path / "run", image_shape=(6, 3))
    expected = {"step": "0", "format": "rnnkit", "converted_from": "hand-made"}
    assert runs.read_safetensors(run / runs.MODEL)[1] == expected
    assert runs.read_safetensors(run / runs.OPTIMIZER)[1] == expected
    for name, value in source.variables().items():
        np.testing.assert_array_equal(runs.load_run_model(run).variables()[name], value)
