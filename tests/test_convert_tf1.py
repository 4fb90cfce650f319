"""TF1 checkpoints into rnnkit, against TensorFlow 1 itself: a graph built with tf.compat.v1
(the seed's MultiRNNCell([LSTMCell, GRUCell]) with Adam, and other cells), every variable
set from a seeded generator, saved with tf.compat.v1.train.Saver, converted by name, and the
logits compared with the TF1 graph's on random inputs (float32, 1e-5).

Needs tensorflow and tf-keras, imported as `tf1.py` says; skipped without them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np
import pytest

import rnnkit.convert as rc
from rnnkit.cli import main
from rnnkit.errors import CheckpointError
from rnnkit.workflows.convert import load_run_model

import tf1
from tf1 import rnn_cell, tf, v1

pytestmark = [*tf1.MARKS, pytest.mark.filterwarnings(r"ignore:`tf\.layers\.dense` is deprecated:UserWarning")]

TOL = 1e-5
BATCH, TIME, DEPTH, CLASSES = 4, 7, 28, 10


def seed_cells() -> Any:
    return rnn_cell.MultiRNNCell([rnn_cell.LSTMCell(16), rnn_cell.GRUCell(32)])


def save_tf1(make_cell: Any, path: Path, *, head: str = "fully_connected", static: bool = False) -> tuple[str, Any]:
    """Build the seed's graph around `make_cell()`, train it one Adam step (so slots exist), set
    every variable from a seeded generator, save; returns (prefix, logits on random inputs)."""
    rng = np.random.default_rng(0)
    x_val = rng.standard_normal((BATCH, TIME, DEPTH)).astype(np.float32)
    g = tf.Graph()
    with g.as_default(), v1.Session(graph=g) as sess:
        v1.set_random_seed(0)
        x = v1.placeholder(tf.float32, [None, TIME, DEPTH])
        y = v1.placeholder(tf.int32, [None])
        if static:
            outputs, _ = v1.nn.static_rnn(make_cell(), tf.unstack(x, TIME, 1), dtype=tf.float32)
            last = outputs[-1]
        else:
            outputs, _ = v1.nn.dynamic_rnn(make_cell(), x, dtype=tf.float32)
            last = outputs[:, -1]
        if head == "dense":
            logits = v1.layers.dense(last, CLASSES)
        else:
            with v1.variable_scope("fully_connected"):
                w = v1.get_variable("weights", [last.shape[-1], CLASSES])
                b = v1.get_variable("biases", [CLASSES], initializer=v1.zeros_initializer())
            logits = tf.matmul(last, w) + b
        loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits))
        train_op = v1.train.AdamOptimizer(0.001).minimize(loss, global_step=v1.train.get_or_create_global_step())
        sess.run(v1.global_variables_initializer())
        for var in v1.trainable_variables():
            var.load(rng.uniform(-0.5, 0.5, var.shape.as_list()).astype(np.float32), sess)
        sess.run(train_op, {x: x_val, y: rng.integers(0, CLASSES, BATCH)})
        want = sess.run(logits, {x: x_val})
        prefix = v1.train.Saver().save(sess, str(path / "model.ckpt"), global_step=1)
    return prefix, (x_val, want)


@pytest.mark.parametrize("static", [False, True], ids=["dynamic_rnn", "static_rnn"])
def test_the_seeds_checkpoint_converts_by_name_alone(tmp_path: Path, static: bool) -> None:
    prefix, (x, want) = save_tf1(seed_cells, tmp_path, static=static)
    conversion = rc.from_tf1_checkpoint(prefix)
    assert (conversion.cells, conversion.input_size, conversion.num_classes) == ("lstm:16,gru:32", DEPTH, CLASSES)
    assert conversion.skipped == ("global_step",)  # Adam's slots and beta powers are carried
    got = conversion.classifier(num_steps=TIME)(jnp.asarray(x))
    np.testing.assert_allclose(np.asarray(got), want, rtol=TOL, atol=TOL)
    reader = tf.train.load_checkpoint(prefix)
    assert conversion.adam is not None
    assert conversion.adam.step == 1
    for name, value in conversion.variables.items():
        np.testing.assert_array_equal(value, reader.get_tensor(name), err_msg=name)
        np.testing.assert_array_equal(conversion.adam.m[name], reader.get_tensor(f"{name}/Adam"), err_msg=name)
        np.testing.assert_array_equal(conversion.adam.v[name], reader.get_tensor(f"{name}/Adam_1"), err_msg=name)


def test_cli_converts_a_checkpoint_into_a_run_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    prefix, (x, want) = save_tf1(seed_cells, tmp_path, head="dense")
    image_shape = f"{TIME}x{DEPTH}"
    assert main(["convert", "tf1", prefix, "--out", str(tmp_path / "run"), "--image-shape", image_shape]) == 0
    out = capsys.readouterr().out
    assert "cells lstm:16,gru:32, reading 28 features, 10 classes" in out
    assert "optimizer: TF1's Adam state after 1 updates" in out
    assert "not converted (1): global_step" in out
    model = load_run_model(tmp_path / "run")
    np.testing.assert_allclose(np.asarray(model(jnp.asarray(x))), want, rtol=TOL, atol=TOL)
    # the directory and the .index file name the same checkpoint
    for source in (str(tmp_path), prefix + ".index"):
        assert rc.from_tf1_checkpoint(source).cells == "lstm:16,gru:32"


def every_kind() -> Any:
    return rnn_cell.MultiRNNCell(
        [
            rnn_cell.BasicRNNCell(8),
            rnn_cell.BasicLSTMCell(8),
            rnn_cell.LSTMCell(8, use_peepholes=True, num_proj=5),
            rnn_cell.GRUCell(6),
        ]
    )


def test_every_cell_kind_is_inferred(tmp_path: Path) -> None:
    prefix, (x, want) = save_tf1(every_kind, tmp_path)
    conversion = rc.from_tf1_checkpoint(prefix)
    assert conversion.cells == "rnn:8,basic_lstm:8,lstm:8:peepholes:proj=5,gru:6"
    np.testing.assert_allclose(
        np.asarray(conversion.classifier(num_steps=TIME)(jnp.asarray(x))), want, rtol=TOL, atol=TOL
    )


def clipped() -> Any:
    return rnn_cell.LSTMCell(8, cell_clip=0.2, forget_bias=0.3, num_proj=4, proj_clip=0.1)


def test_what_a_checkpoint_does_not_store_comes_from_cells(tmp_path: Path) -> None:
    prefix, (x, want) = save_tf1(clipped, tmp_path)
    inferred = rc.from_tf1_checkpoint(prefix)
    assert inferred.cells == "lstm:8:proj=4"  # TF1's defaults for what names cannot show
    assert not np.allclose(np.asarray(inferred.classifier(num_steps=TIME)(jnp.asarray(x))), want, atol=1e-3)
    told = rc.from_tf1_checkpoint(prefix, cells="lstm:8:proj=4:cell_clip=0.2:forget_bias=0.3:proj_clip=0.1")
    np.testing.assert_allclose(np.asarray(told.classifier(num_steps=TIME)(jnp.asarray(x))), want, rtol=TOL, atol=TOL)


def test_a_path_that_is_not_a_checkpoint_is_named(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not a TF1 checkpoint prefix"):
        rc.read_tf1_checkpoint(tmp_path / "model.ckpt")
    (tmp_path / "bad.index").write_bytes(b"junk")
    with pytest.raises(CheckpointError, match=r"bad\.index: 4 bytes, shorter than a table's 48-byte footer"):
        rc.read_tf1_checkpoint(tmp_path / "bad")


def tiny_mnist(tmp_path: Path, steps: int) -> tuple[Any, list[tuple[np.ndarray, np.ndarray]]]:
    """MNIST-format files of random 28x28 images, settings that train `steps` steps of 16 on
    them, and those steps' batches as rnnkit train draws them."""
    from rnnkit.data import batch_indices, load_mnist, split_validation, to_layout, write_idx
    from rnnkit.workflows.train import TrainConfig

    rng = np.random.default_rng(3)
    data = tmp_path / "idx"
    data.mkdir()
    for split, n in (("train", 64), ("t10k", 16)):
        write_idx(data / f"{split}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, TIME, DEPTH)).astype(np.uint8))
        write_idx(data / f"{split}-labels-idx1-ubyte.gz", (np.arange(n) % CLASSES).astype(np.uint8))
    settings = TrainConfig(
        data_dir=str(data), batch_size=16, validation_size=16, train_samples=steps * 16 + 1, cells="lstm:16,gru:32"
    )
    splits = load_mnist(str(data))
    (train_x, train_y), _ = split_validation(splits.train_images, splits.train_labels, 16, settings.seed)
    batches = []
    for step in range(3):
        idx = batch_indices(len(train_x), 16, settings.seed, step)
        batches.append((to_layout(train_x[idx], "rows"), train_y[idx].astype(np.int32)))
    return settings, batches


def seed_graph() -> tuple[Any, Any, Any, Any]:
    """The seed's graph at test size in the current TF1 graph: (x, y, logits, Adam's train op)."""
    x = v1.placeholder(tf.float32, [None, TIME, DEPTH])
    y = v1.placeholder(tf.int32, [None])
    outputs, _ = v1.nn.dynamic_rnn(seed_cells(), x, dtype=tf.float32)
    with v1.variable_scope("fully_connected"):
        w = v1.get_variable("weights", [32, CLASSES])
        b = v1.get_variable("biases", [CLASSES], initializer=v1.zeros_initializer())
    logits = tf.matmul(outputs[:, -1], w) + b
    loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits))
    return x, y, logits, v1.train.AdamOptimizer(0.001).minimize(loss)


def test_resume_continues_tf1s_training(tmp_path: Path) -> None:
    """TF1 trains two Adam steps and saves; rnnkit converts and resumes for a third on the same
    batch TF1 then trains on: the weights after it must agree with TF1's."""
    import jax

    from rnnkit.workflows import checkpoint as ckpt
    from rnnkit.workflows.train import TrainConfig, train

    settings, batches = tiny_mnist(tmp_path, 3)
    g = tf.Graph()
    with g.as_default(), v1.Session(graph=g) as sess:
        v1.set_random_seed(0)
        x, y, _, train_op = seed_graph()
        sess.run(v1.global_variables_initializer())
        for bx, by in batches[:2]:
            sess.run(train_op, {x: bx, y: by})
        prefix = v1.train.Saver().save(sess, str(tmp_path / "model.ckpt"), global_step=2)
        sess.run(train_op, {x: batches[2][0], y: batches[2][1]})
        trainables = v1.trainable_variables()
        want = {v.name.removesuffix(":0"): value for v, value in zip(trainables, sess.run(trainables), strict=True)}

    conversion = rc.from_tf1_checkpoint(prefix)
    assert conversion.adam is not None
    assert conversion.adam.step == 2
    run = rc.write_run_dir(conversion, tmp_path / "run", image_shape=(TIME, DEPTH), settings=settings)
    with jax.numpy_dtype_promotion("standard"):
        train(TrainConfig(run_dir=str(run)), resume=True)
    got, step = ckpt.load_model_variables(run)
    assert step == 3
    for name, value in want.items():
        assert np.abs(value - conversion.variables[name]).max() > 1e-4, f"{name}: TF1's third step barely moved it"
        np.testing.assert_allclose(got[name], value, rtol=1e-5, atol=2e-6, err_msg=name)


def test_a_run_goes_out_as_a_checkpoint_tf1_restores_and_trains_on(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The other way: rnnkit trains two steps; `rnnkit convert tf1 RUN --out PREFIX` writes a
    checkpoint; TF1's own Saver restores the seed's graph from it (weights, Adam's slots and
    beta powers) and gives rnnkit's logits; its third Adam step on a batch equals rnnkit's third
    step on it, resumed from the same checkpoint read back."""
    import dataclasses

    import jax

    from rnnkit.workflows import checkpoint as ckpt
    from rnnkit.workflows.convert import run_adam_state
    from rnnkit.workflows.train import TrainConfig, train

    settings, batches = tiny_mnist(tmp_path, 2)
    run = tmp_path / "run"
    with jax.numpy_dtype_promotion("standard"):
        train(dataclasses.replace(settings, run_dir=str(run)))
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "other.ckpt.index").write_bytes(b"kept")
    prefix = tmp_path / "ckpt" / "model.ckpt"
    assert main(["convert", "tf1", str(run), "--out", str(prefix)]) == 0
    assert capsys.readouterr().out.strip() == f"{run} -> {prefix}"
    assert (tmp_path / "ckpt" / "other.ckpt.index").read_bytes() == b"kept"
    assert tf.train.latest_checkpoint(str(tmp_path / "ckpt")) == str(prefix)
    model = load_run_model(run)

    g = tf.Graph()
    with g.as_default(), v1.Session(graph=g) as sess:
        x, y, logits, train_op = seed_graph()
        v1.train.Saver().restore(sess, str(prefix))  # every variable of the graph, Adam's included
        restored = sess.run({v.name.removesuffix(":0"): v for v in v1.global_variables()})
        want_logits = sess.run(logits, {x: batches[2][0]})
        sess.run(train_op, {x: batches[2][0], y: batches[2][1]})
        trainables = v1.trainable_variables()
        want = {v.name.removesuffix(":0"): value for v, value in zip(trainables, sess.run(trainables), strict=True)}
    np.testing.assert_allclose(np.asarray(model(jnp.asarray(batches[2][0]))), want_logits, rtol=TOL, atol=TOL)
    held = rc.tf1_variables(model, run_adam_state(run, model))  # what the run holds, under TF1's names
    assert sorted(restored) == sorted(set(held) - {"global_step"})  # this graph keeps no global step
    for name, value in restored.items():  # restored by TF's Saver bit for bit
        assert (value.dtype, value.tobytes()) == (held[name].dtype, held[name].tobytes()), name

    more = dataclasses.replace(settings, train_samples=3 * 16 + 1)
    rc.write_run_dir(rc.from_tf1_checkpoint(prefix), tmp_path / "back", image_shape=(TIME, DEPTH), settings=more)
    with jax.numpy_dtype_promotion("standard"):
        train(TrainConfig(run_dir=str(tmp_path / "back")), resume=True)
    got, step = ckpt.load_model_variables(tmp_path / "back")
    assert step == 3
    for name, value in want.items():
        np.testing.assert_allclose(got[name], value, rtol=1e-5, atol=2e-6, err_msg=name)
    with pytest.raises(SystemExit) as stop:
        main(["convert", "tf1", str(run), "--out", str(prefix)])
    assert stop.value.code == 2
    assert f"{prefix}.index exists; choose another prefix or pass --force" in capsys.readouterr().err


# --- rnnkit's own reader and writer of the format (convert/_bundle.py), against TensorFlow's ------


def random_variables(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Variables of every dtype rnnkit reads, TF1-style names, more than a block's 16 restarts."""
    dtypes = [np.float32, np.float64, np.float16, np.int32, np.int64, np.int8, np.uint8, np.bool_]
    variables = {}
    for k in range(40):
        dtype = dtypes[k % len(dtypes)]
        shape = tuple(rng.integers(0, 5, rng.integers(0, 3)))
        value = rng.standard_normal(shape) * 100
        variables[f"scope_{k % 3}/layer{k}/{'kernel' if k % 2 else 'bias'}"] = value.astype(dtype)
    variables["rnn/bf16"] = rng.standard_normal((3, 2)).astype(np.float32)  # saved as bfloat16 below
    return variables


def tf_saved(variables: dict[str, np.ndarray], prefix: Path) -> None:
    """`variables` saved by tf.compat.v1.train.Saver (`rnn/bf16` cast to bfloat16)."""
    g = tf.Graph()
    with g.as_default(), v1.Session(graph=g) as sess:
        held = {}
        for name, value in variables.items():
            initial = tf.cast(value, tf.bfloat16) if name == "rnn/bf16" else value
            held[name] = v1.Variable(initial, name=name.replace("/", "_"))
        sess.run(v1.global_variables_initializer())
        v1.train.Saver(held).save(sess, str(prefix), write_meta_graph=False, write_state=False)


def test_rnnkit_reads_what_tensorflow_reads(tmp_path: Path) -> None:
    from rnnkit.convert._bundle import read_bundle

    variables = random_variables(np.random.default_rng(5))
    tf_saved(variables, tmp_path / "model.ckpt")
    mine = read_bundle(tmp_path / "model.ckpt")
    reader = tf.train.load_checkpoint(str(tmp_path / "model.ckpt"))
    assert sorted(reader.get_variable_to_shape_map()) == list(mine) == sorted(variables)
    for name, value in mine.items():
        theirs = reader.get_tensor(name)
        assert (value.dtype, value.shape) == (theirs.dtype, theirs.shape), name
        np.testing.assert_array_equal(value, theirs, err_msg=name)


def test_tensorflow_restores_what_rnnkit_writes_bit_for_bit(tmp_path: Path) -> None:
    """rnnkit's files are TF's bytes for the same variables, and TF's Saver restores them."""
    import ml_dtypes

    variables = random_variables(np.random.default_rng(6))
    tf_saved(variables, tmp_path / "tf" / "model.ckpt")
    ours = {**variables, "rnn/bf16": variables["rnn/bf16"].astype(ml_dtypes.bfloat16)}
    rc.write_tf1_checkpoint(ours, tmp_path / "rnnkit" / "model.ckpt")
    for suffix in (".index", ".data-00000-of-00001"):
        mine = (tmp_path / "rnnkit" / f"model.ckpt{suffix}").read_bytes()
        assert mine == (tmp_path / "tf" / f"model.ckpt{suffix}").read_bytes(), suffix
    assert tf.train.latest_checkpoint(str(tmp_path / "rnnkit")) == str(tmp_path / "rnnkit" / "model.ckpt")
    g = tf.Graph()
    with g.as_default(), v1.Session(graph=g) as sess:
        held = {
            name: v1.Variable(tf.zeros_like(tf.constant(value)), name=f"v{k}")
            for k, (name, value) in enumerate(ours.items())
        }
        v1.train.Saver(held).restore(sess, str(tmp_path / "rnnkit" / "model.ckpt"))
        restored = sess.run(held)
    for name, value in ours.items():
        assert (restored[name].dtype, restored[name].shape) == (value.dtype, value.shape), name
        assert restored[name].tobytes() == value.tobytes(), name  # bit for bit, NaN payloads and -0.0 included


def test_records_decode_as_tensorflows_protobuf_classes(tmp_path: Path) -> None:
    """rnnkit's small protobuf decoder against TensorFlow's generated classes, on TF's own index."""
    from tensorflow.core.protobuf import tensor_bundle_pb2

    from rnnkit.convert._bundle import Entry
    from rnnkit.convert._sstable import read_table

    prefix, _ = save_tf1(seed_cells, tmp_path)
    records = read_table(Path(f"{prefix}.index").read_bytes(), "index")
    header = tensor_bundle_pb2.BundleHeaderProto.FromString(records[0][1])
    assert (records[0][0], header.num_shards, header.version.producer) == (b"", 1, 1)
    for key, record in records[1:]:
        theirs = tensor_bundle_pb2.BundleEntryProto.FromString(record)
        mine = Entry.decode(record, key.decode())
        want = (theirs.dtype, tuple(d.size for d in theirs.shape.dim), theirs.shard_id, theirs.offset, theirs.size)
        assert (mine.dtype, mine.shape, mine.shard, mine.offset, mine.size) == want, key
        assert mine.crc32c == theirs.crc32c
        assert mine.encode() == theirs.SerializeToString(deterministic=True) == record


def test_object_based_checkpoint_reads_by_variable_name(tmp_path: Path) -> None:
    """tf.train.Checkpoint of a TF1 graph: rnnkit names its tensors as TF1's Saver would, and
    the conversion gives the graph's logits."""
    rng = np.random.default_rng(0)
    x_val = rng.standard_normal((BATCH, TIME, DEPTH)).astype(np.float32)
    g = tf.Graph()
    with g.as_default(), v1.Session(graph=g) as sess:
        x = v1.placeholder(tf.float32, [None, TIME, DEPTH])
        cell = seed_cells()
        outputs, _ = v1.nn.dynamic_rnn(cell, x, dtype=tf.float32)
        logits = v1.layers.dense(outputs[:, -1], CLASSES)
        sess.run(v1.global_variables_initializer())
        want = sess.run(logits, {x: x_val})
        dense = [v for v in v1.global_variables() if v.name.startswith("dense/")]
        saved = v1.train.Checkpoint(model=cell, head=dense).save(str(tmp_path / "ckpt"), session=sess)
        names = {
            v.name.removesuffix(":0"): value
            for v, value in zip(v1.global_variables(), sess.run(v1.global_variables()), strict=True)
        }
    read = rc.read_tf1_checkpoint(saved)
    assert set(read) == {*names, "save_counter", "_CHECKPOINTABLE_OBJECT_GRAPH"}
    for name, value in names.items():
        np.testing.assert_array_equal(read[name], value, err_msg=name)
    conversion = rc.from_tf1_checkpoint(tmp_path)
    got = conversion.classifier(num_steps=TIME)(jnp.asarray(x_val))
    np.testing.assert_allclose(np.asarray(got), want, rtol=TOL, atol=TOL)


def test_a_sharded_save_of_many_variables_reads_as_tensorflow_reads_it(tmp_path: Path) -> None:
    """Saver(sharded=True) over two devices merges the shards' indexes into one (MergeBundles,
    TF's default table options): its blocks come uncompressed too, and rnnkit reads what TF reads."""
    from rnnkit.convert._bundle import read_bundle, read_index

    rng = np.random.default_rng(7)
    g = tf.Graph()
    with g.as_default(), v1.Session(graph=g, config=v1.ConfigProto(device_count={"CPU": 2})) as sess:
        for k in range(300):  # names as repetitive as a deep stack's, where compression would pay
            with tf.device(f"/cpu:{k % 2}"):
                v1.Variable(rng.standard_normal((3, 2)).astype(np.float32), name=f"rnn/multi_rnn_cell/cell_{k}/kernel")
        sess.run(v1.global_variables_initializer())
        prefix = v1.train.Saver(sharded=True).save(sess, str(tmp_path / "model.ckpt"), write_meta_graph=False)
    assert read_index(Path(prefix))[0] == 2
    mine = read_bundle(prefix)
    reader = tf.train.load_checkpoint(prefix)
    assert list(mine) == sorted(reader.get_variable_to_shape_map())
    for name, value in mine.items():
        np.testing.assert_array_equal(value, reader.get_tensor(name), err_msg=name)
