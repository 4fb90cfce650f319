"""TF1 checkpoints in and out without TensorFlow (rnnkit/convert/_bundle.py, _sstable.py).

Every test runs with `import tensorflow` made to fail. The references are TensorFlow's own files
(tests/fixtures/tf1/, written by tests/fixtures/make_tf1_checkpoints.py with tf.compat.v1's
Saver and Checkpoint) and the logits TensorFlow computed beside them: what rnnkit reads must
give TF's logits, and what it writes must be the bytes TF wrote. tests/test_convert_tf1.py
checks the other direction against a live TensorFlow where one is installed.
"""

from __future__ import annotations

import shutil
import struct
import sys
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

import rnnkit.convert as rc
from rnnkit.convert import _bundle, _sstable
from rnnkit.errors import CheckpointError, ConfigError
from rnnkit.workflows.convert import load_run_model, run_adam_state

from cases import run_cli

FIXTURES = Path(__file__).parent / "fixtures" / "tf1"
TIME = 7  # the fixtures' graph reads 7 steps of 28 features
TOL = 1e-5  # float32 logits of the same weights on two frameworks, as in test_convert_tf1.py
MODELS = ("seed", "sharded", "object")


@pytest.fixture(autouse=True)
def no_tensorflow(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorflow", None)  # import tensorflow -> ImportError
    with pytest.raises(ImportError):
        import tensorflow  # noqa: F401


def copy_of(name: str, tmp_path: Path) -> Path:
    """A fixture's directory copied under tmp_path (corruption tests change files)."""
    return Path(shutil.copytree(FIXTURES / name, tmp_path / name))


def prefix_of(directory: Path) -> Path:
    return Path(str(next(directory.glob("*.index"))).removesuffix(".index"))


# --- TensorFlow's checkpoints read ----------------------------------------------------------------


@pytest.mark.parametrize("name", MODELS)
def test_tensorflows_checkpoint_gives_tensorflows_logits(name: str) -> None:
    expected = np.load(FIXTURES / name / "expected.npz")
    conversion = rc.from_tf1_checkpoint(FIXTURES / name)  # the directory: its latest checkpoint
    assert (conversion.cells, conversion.input_size, conversion.num_classes) == ("lstm:8,gru:12", 28, 10)
    assert conversion.adam is not None
    assert conversion.adam.step == 1  # Adam's slots and beta powers came through the object graph too
    skipped = {"seed": ("global_step",), "sharded": ("global_step",)}
    assert conversion.skipped == skipped.get(name, ("_CHECKPOINTABLE_OBJECT_GRAPH", "global_step", "save_counter"))
    got = np.asarray(conversion.classifier(num_steps=TIME)(jnp.asarray(expected["x"])))
    np.testing.assert_allclose(got, expected["logits"], rtol=TOL, atol=TOL)


def test_the_sharded_checkpoint_spans_three_shards() -> None:
    num_shards, entries = _bundle.read_index(FIXTURES / "sharded" / "model.ckpt-1")
    assert num_shards == 3
    assert {entry.shard for entry in entries.values() if entry.size} == {0, 1, 2}
    single = rc.read_tf1_checkpoint(FIXTURES / "seed" / "model.ckpt-1")
    sharded = rc.read_tf1_checkpoint(FIXTURES / "sharded" / "model.ckpt-1.data-00002-of-00003")  # any file names it
    assert list(sharded) == list(single)
    for name, value in single.items():
        np.testing.assert_array_equal(sharded[name], value, err_msg=name)


@pytest.mark.parametrize("name", ["seed", "sharded"])
def test_cli_converts_tensorflows_checkpoint_into_a_run(
    name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    expected = np.load(FIXTURES / name / "expected.npz")
    prefix = FIXTURES / name / "model.ckpt-1"
    code, out, err = run_cli(
        ["convert", "tf1", str(prefix), "--out", str(tmp_path / "run"), "--image-shape", "7x28"], capsys
    )
    assert (code, err) == (0, "")
    assert "cells lstm:8,gru:12, reading 28 features, 10 classes" in out
    model = load_run_model(tmp_path / "run")
    np.testing.assert_allclose(np.asarray(model(jnp.asarray(expected["x"]))), expected["logits"], rtol=TOL, atol=TOL)


def test_every_dtype_reads_as_stored() -> None:
    expected = np.load(FIXTURES / "dtypes" / "expected.npz")
    got = rc.read_tf1_checkpoint(FIXTURES / "dtypes" / "model.ckpt.index")
    assert sorted(got) == sorted(expected.files)
    for name in expected.files:
        value = got[name]
        if name == "bf16":  # NumPy has no bfloat16: TF's bits, held as uint16 in the .npz
            assert value.dtype.name == "bfloat16"
            value = value.view(np.uint16)
        assert (value.dtype, value.shape) == (expected[name].dtype, expected[name].shape), name
        np.testing.assert_array_equal(value, expected[name], err_msg=name)
        assert value.flags.writeable


def test_object_graph_maps_keys_to_variable_names() -> None:
    raw = _bundle.read_bundle(FIXTURES / "object" / "ckpt-1")
    key = "model/cell-0/kernel/.ATTRIBUTES/VARIABLE_VALUE"
    slot = "model/cell-0/kernel/.OPTIMIZER_SLOT/optimizer/m/.ATTRIBUTES/VARIABLE_VALUE"
    assert {key, slot, "save_counter/.ATTRIBUTES/VARIABLE_VALUE"} <= set(raw)
    named = rc.read_tf1_checkpoint(FIXTURES / "object")
    np.testing.assert_array_equal(named["rnn/multi_rnn_cell/cell_0/lstm_cell/kernel"], raw[key])
    np.testing.assert_array_equal(named["rnn/multi_rnn_cell/cell_0/lstm_cell/kernel/Adam"], raw[slot])
    seed = rc.read_tf1_checkpoint(FIXTURES / "seed")
    assert set(named) - set(seed) == {"_CHECKPOINTABLE_OBJECT_GRAPH", "save_counter"}
    # no recorded name: the object path less the suffix
    graph = raw["_CHECKPOINTABLE_OBJECT_GRAPH"]
    bare = {"_CHECKPOINTABLE_OBJECT_GRAPH": graph, "a/b/.ATTRIBUTES/VARIABLE_VALUE": np.ones(2)}
    assert set(_bundle.by_variable_name(bare, "x")) == {"_CHECKPOINTABLE_OBJECT_GRAPH", "a/b"}
    clash = {**raw, "rnn/multi_rnn_cell/cell_0/lstm_cell/kernel": np.ones(1)}
    with pytest.raises(CheckpointError, match=rf"x: {key} and rnn/multi_rnn_cell/cell_0/lstm_cell/kernel are both"):
        _bundle.by_variable_name(dict(sorted(clash.items())), "x")


# --- written as TensorFlow writes -----------------------------------------------------------------


@pytest.mark.parametrize("name", ["seed", "dtypes"])
def test_written_checkpoint_is_tensorflows_bytes(name: str, tmp_path: Path) -> None:
    """Tensors read from TF's checkpoint and written back give TF's .index, .data and state file."""
    source = prefix_of(FIXTURES / name)
    out = tmp_path / source.name
    assert rc.write_tf1_checkpoint(rc.read_tf1_checkpoint(source), out) == out
    for suffix in (".index", ".data-00000-of-00001"):
        assert Path(f"{out}{suffix}").read_bytes() == Path(f"{source}{suffix}").read_bytes(), suffix
    assert (tmp_path / "checkpoint").read_bytes() == (source.parent / "checkpoint").read_bytes()
    written = sorted(p.name for p in tmp_path.iterdir())
    assert written == sorted(p.name for p in source.parent.iterdir() if p.name != "expected.npz")


def test_a_run_goes_out_and_back_bit_for_bit(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    conversion = rc.from_tf1_checkpoint(FIXTURES / "seed")
    run = rc.write_run_dir(conversion, tmp_path / "run", image_shape=(TIME, 28))
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "checkpoint").write_text('model_checkpoint_path: "old"\nall_model_checkpoint_paths: "old"\n')
    prefix = tmp_path / "ckpt" / "model.ckpt"
    code, out, err = run_cli(["convert", "tf1", str(run), "--out", str(prefix)], capsys)
    assert (code, out.strip(), err) == (0, f"{run} -> {prefix}", "")
    back = rc.read_tf1_checkpoint(tmp_path / "ckpt")  # found through the state file
    model = load_run_model(run)
    held = rc.tf1_variables(model, run_adam_state(run, model))  # weights, Adam's moments, beta powers, step
    assert set(back) == set(held) == set(rc.read_tf1_checkpoint(FIXTURES / "seed"))
    for name, value in held.items():
        assert back[name].dtype == value.dtype, name
        np.testing.assert_array_equal(back[name], value, err_msg=name)
    assert _bundle.read_checkpoint_state(tmp_path / "ckpt") == ("model.ckpt", ["old", "model.ckpt"])


def test_checkpoint_state_quotes_as_text_format() -> None:
    for name in ['we"ird\\name', "tab\there", "naïve", "plain.ckpt-10"]:
        quoted = _bundle._quote(name)
        assert _bundle._unquote(quoted.encode().decode("latin-1")) == name
    assert _bundle._quote("naïve") == r'"na\303\257ve"'  # as protobuf's TextFormat prints bytes
    assert _bundle._unquote(r'"a\x41\101\n"') == "aAA\n"


def test_checkpoint_state_with_an_absolute_path(tmp_path: Path) -> None:
    source = copy_of("seed", tmp_path)
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "checkpoint").write_text(
        f"model_checkpoint_path: '{source}/model.ckpt-1'\nall_model_checkpoint_timestamps: 1.5e9\n"
    )
    assert _bundle.latest_prefix(tmp_path / "elsewhere") == source / "model.ckpt-1"
    assert "fully_connected/weights" in rc.read_tf1_checkpoint(tmp_path / "elsewhere")


def test_a_failed_write_leaves_nothing(tmp_path: Path) -> None:
    tensors = {"a": np.ones(3, np.float32), "b": np.array(["text"])}
    with pytest.raises(ConfigError, match=r"b: dtype <U4 has no TensorFlow checkpoint type; expected one of"):
        rc.write_tf1_checkpoint(tensors, tmp_path / "model.ckpt")
    assert list(tmp_path.iterdir()) == []


def test_string_tensors_round_trip(tmp_path: Path) -> None:
    strings = np.empty((2, 2), dtype=object)
    strings[:] = [[b"", b"a"], [b"\x00\xff" * 300, b"xyz"]]
    _bundle.write_bundle({"s": strings, "n": np.arange(3)}, tmp_path / "p")
    got = _bundle.read_bundle(tmp_path / "p")
    assert got["s"].shape == (2, 2)
    assert got["s"].tolist() == strings.tolist()
    np.testing.assert_array_equal(got["n"], np.arange(3))


# --- the table format ---------------------------------------------------------------------------


def test_tables_of_many_blocks_round_trip(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_sstable, "BLOCK_SIZE", 200)  # many data blocks, each past several restart points
    rng = np.random.default_rng(0)
    keys = sorted({bytes(rng.integers(97, 100, rng.integers(1, 12)).astype(np.uint8)) for _ in range(400)})
    keys += [b"\xff\xff", b"\xff\xff\xff"]
    entries = [(key, bytes(rng.integers(0, 256, rng.integers(0, 40)).astype(np.uint8))) for key in keys]
    table = _sstable.write_table(entries)
    assert _sstable.read_table(table, "t") == entries
    footer = table[-_sstable.FOOTER_SIZE :]
    _, _, pos = _sstable._handle(footer, 0, "t")
    index_offset, index_size, _ = _sstable._handle(footer, pos, "t")
    bounds = _sstable._block_entries(_sstable._block(table, index_offset, index_size, "t"), "t")
    assert len(bounds) > 20
    with pytest.raises(ValueError, match="table keys must increase"):
        _sstable.write_table([(b"b", b""), (b"a", b"")])


def test_index_keys_are_leveldbs_separators() -> None:
    assert _sstable._shortest_separator(b"abcd", b"abzz") == b"abd"
    assert _sstable._shortest_separator(b"abc", b"abd") == b"abc"  # no shorter key fits between
    assert _sstable._shortest_separator(b"ab", b"abc") == b"ab"  # a prefix stays
    assert _sstable._short_successor(b"\xff\xffa") == b"\xff\xffb"
    assert _sstable._short_successor(b"\xff") == b"\xff"


def test_records_round_trip_and_skip_unknown_fields() -> None:
    entry = _bundle.Entry(dtype=19, shape=(0, 3, 1), shard=2, offset=1 << 40, size=0, crc32c=0xA282EAD8)
    assert _bundle.Entry.decode(entry.encode(), "e") == entry
    future = entry.encode() + _bundle._bytes_field(99, b"later") + _bundle._varint_field(98, 5)
    assert _bundle.Entry.decode(future, "e") == entry
    with pytest.raises(CheckpointError, match="e: protobuf wire type 3"):
        _bundle.parse_message(b"\x0b", "e")
    with pytest.raises(CheckpointError, match="e: a varint longer than 64 bits"):
        _bundle.parse_message(b"\x08" + b"\xff" * 10 + b"\x01", "e")


# --- bad input: one line naming the file and the problem, exit 2, nothing written -----------------


def rewrite_index(prefix: Path, change: dict[str, bytes] | None = None, header: bytes | None = None) -> None:
    """Re-encode `prefix.index` with some records replaced (checksums valid, so the reader must
    notice what the records say)."""
    index = Path(f"{prefix}.index")
    records = dict(_sstable.read_table(index.read_bytes(), "x"))
    if header is not None:
        records[b""] = header
    for name, record in (change or {}).items():
        records[name.encode()] = record
    index.write_bytes(_sstable.write_table(sorted(records.items())))


def entry_of(prefix: Path, name: str) -> _bundle.Entry:
    return _bundle.read_index(prefix)[1][name]


KERNEL = "rnn/multi_rnn_cell/cell_0/lstm_cell/kernel"


def corrupt(case: str, tmp_path: Path) -> tuple[Path, str]:
    """Damage a copy of a fixture as `case` says; returns (the path to convert, the message expected)."""
    directory = copy_of("sharded" if case == "missing shard" else "v1" if case == "V1" else "seed", tmp_path)
    prefix = directory / ("model.ckpt" if case == "V1" else "model.ckpt-1")
    index, data = Path(f"{prefix}.index"), Path(f"{prefix}.data-00000-of-00001")
    kernel = entry_of(prefix, KERNEL) if case != "V1" else None
    if case == "truncated index":
        index.write_bytes(index.read_bytes()[:-20])
        return prefix, rf"{index}: no table magic number at its end"
    if case == "truncated shard":
        data.write_bytes(data.read_bytes()[:-100])
        return prefix, rf"{data}: \S+: bytes \d+\.\.\d+ lie past the shard's end \(\d+ bytes\)"
    if case == "tensor CRC":
        raw = bytearray(data.read_bytes())
        raw[kernel.offset + 7] ^= 0x10
        data.write_bytes(bytes(raw))
        return prefix, rf"{data}: {KERNEL}: its bytes fail their checksum \(CRC32C 0x[0-9a-f]{{8}}, the index says"
    if case == "block CRC":
        raw = bytearray(index.read_bytes())
        raw[40] ^= 0x01
        index.write_bytes(bytes(raw))
        return prefix, rf"{index}: the block at byte 0 fails its checksum"
    if case == "past the end":
        moved = _bundle.Entry(kernel.dtype, kernel.shape, 0, data.stat().st_size - 8, kernel.size, kernel.crc32c)
        rewrite_index(prefix, {KERNEL: moved.encode()})
        return prefix, rf"{data}: {KERNEL}: bytes \d+\.\.\d+ lie past the shard's end \({data.stat().st_size} bytes\)"
    if case == "wrong size":
        rewrite_index(prefix, {KERNEL: _bundle.Entry(1, (36, 32), 0, kernel.offset, 40, kernel.crc32c).encode()})
        return prefix, rf"{data}: {KERNEL}: 40 bytes for a float32 tensor of shape \[36, 32\]; expected 4608"
    if case == "wrapping shape":  # 2^64 elements: a product in int64 would wrap to 0 and fit 0 bytes
        huge = _bundle.Entry(1, (2**32, 2**32), 0, 0, 0, _sstable.mask_crc(0))
        rewrite_index(prefix, {KERNEL: huge.encode()})
        return prefix, rf"{data}: {KERNEL}: 0 bytes for a float32 tensor of shape \[4294967296, 4294967296\]; expected"
    if case == "unknown dtype":
        rewrite_index(prefix, {KERNEL: _bundle.Entry(21, kernel.shape, 0, kernel.offset, kernel.size, 1).encode()})
        return (
            prefix,
            rf"{index}: {KERNEL} has dtype enum 21, which rnnkit does not read; expected one of float32 \(1\)",
        )
    if case == "missing shard":
        Path(f"{prefix}.data-00001-of-00003").unlink()
        return prefix, rf"{prefix}\.data-00001-of-00003: no such file; {prefix}\.index says the checkpoint has 3 shard"
    if case == "V1":
        return directory, rf"{prefix}: a V1 checkpoint \(TensorFlow's single-file format from before 1\.0\)"
    if case == "snappy":
        raw = bytearray(index.read_bytes())
        end = _sstable._handle(raw[-48:], 0, "x")[0] - 5  # the one data block ends where the metaindex starts
        raw[end] = 1  # its trailer's compression type, and the trailer's checksum to match
        raw[end + 1 : end + 5] = struct.pack("<I", _sstable.mask_crc(_sstable.crc32c(bytes(raw[: end + 1]))))
        index.write_bytes(bytes(raw))
        return prefix, rf"{index}: the block at byte 0 is Snappy-compressed, which rnnkit does not read"
    if case == "sliced":
        rewrite_index(prefix, {KERNEL: kernel.encode() + _bundle._bytes_field(7, b"")})
        return prefix, rf"{index}: {KERNEL}: a partitioned variable \(stored in slices\)"
    if case == "big-endian":
        rewrite_index(prefix, header=_bundle._encode_header(1) + _bundle._varint_field(2, 1))
        return prefix, rf"{index}: header: a big-endian checkpoint"
    if case == "newer version":
        rewrite_index(prefix, header=_bundle._varint_field(1, 1) + _bundle._bytes_field(3, b"\x08\x05\x10\x03"))
        return prefix, rf"{index}: header: checkpoint format version 5 needs a reader of version >= 3"
    if case == "bad consumer":  # bad_consumers [3, 1], packed as proto3 writes repeated integers
        rewrite_index(prefix, header=_bundle._varint_field(1, 1) + _bundle._bytes_field(3, b"\x08\x02\x1a\x02\x03\x01"))
        return (
            prefix,
            rf"{index}: header: checkpoint format version 2 needs a reader of version >= 0 \(excluding \[3, 1\]\)",
        )
    if case == "no header":
        index.write_bytes(_sstable.write_table(_sstable.read_table(index.read_bytes(), "x")[1:]))
        return prefix, rf"{index}: its first key is not the header's"
    if case == "no checkpoint file":
        (directory / "checkpoint").unlink()
        return directory, rf"{directory}: a directory without a TF1 checkpoint"
    raise AssertionError(case)


CORRUPTIONS = [
    "truncated index",
    "truncated shard",
    "tensor CRC",
    "block CRC",
    "past the end",
    "wrong size",
    "unknown dtype",
    "wrapping shape",
    "missing shard",
    "V1",
    "snappy",
    "sliced",
    "big-endian",
    "newer version",
    "bad consumer",
    "no header",
    "no checkpoint file",
]


@pytest.mark.parametrize("case", CORRUPTIONS)
def test_bad_checkpoint_is_refused_in_one_line(case: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source, message = corrupt(case, tmp_path)
    with pytest.raises(CheckpointError, match=message):
        rc.read_tf1_checkpoint(source)
    out = tmp_path / "run"
    code, stdout, err = run_cli(["convert", "tf1", str(source), "--out", str(out), "--image-shape", "7x28"], capsys)
    assert (code, stdout) == (2, "")
    assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err
    assert not out.exists()


def test_an_unreadable_file_is_one_line_too(tmp_path: Path) -> None:
    prefix = copy_of("seed", tmp_path) / "model.ckpt-1"
    shard = Path(f"{prefix}.data-00000-of-00001")
    shard.unlink()
    shard.mkdir()  # a directory where the shard belongs
    with pytest.raises(CheckpointError, match=rf"{shard}: cannot be read \("):
        rc.read_tf1_checkpoint(prefix)


def test_fuzzed_checkpoints_are_refused_or_read_exactly(tmp_path: Path) -> None:
    """Seeded byte flips and truncations of TF's checkpoints (one shard, three shards, object-based
    with a string tensor): each read either raises CheckpointError or returns exactly the original
    tensors (a flip in the footer's padding changes nothing that is read)."""
    rng = np.random.default_rng(2026)
    originals = {name: rc.read_tf1_checkpoint(FIXTURES / name) for name in MODELS}
    sources = {name: {p.name: p.read_bytes() for p in (FIXTURES / name).iterdir()} for name in MODELS}
    outcomes = {"refused": 0, "same": 0}
    for case in range(400):
        name = MODELS[case % len(MODELS)]
        directory = tmp_path / f"{case}"
        directory.mkdir()
        files = sources[name]
        targets = sorted(f for f in files if f.endswith(".index") or ".data-" in f)
        target = targets[rng.integers(0, len(targets))]
        for file, raw in files.items():
            if file == target:
                raw = bytearray(raw)
                if rng.random() < 0.3 or not raw:
                    raw = raw[: rng.integers(0, len(raw))]
                else:
                    for _ in range(rng.integers(1, 4)):
                        raw[rng.integers(0, len(raw))] ^= int(rng.integers(1, 256))
            (directory / file).write_bytes(bytes(raw))
        try:
            got = rc.read_tf1_checkpoint(directory)
        except CheckpointError as err:
            message = str(err)
            outcomes["refused"] += 1
            assert message.startswith(str(directory)), message  # names the file
        else:
            assert list(got) == list(originals[name]), target
            for key, value in originals[name].items():
                if value.dtype == object:
                    assert got[key].tolist() == value.tolist()
                else:
                    assert got[key].dtype == value.dtype
                    np.testing.assert_array_equal(got[key], value, err_msg=f"case {case}: {target}: {key}")
            outcomes["same"] += 1
        shutil.rmtree(directory)
    assert outcomes["refused"] > 350, outcomes


def test_fuzzed_index_records_are_refused_or_read_never_crash(tmp_path: Path) -> None:
    """Flips inside the index's protobuf records with the table's checksums made valid again, so
    the records themselves reach the decoder: each read raises CheckpointError or returns tensors
    (a flip can make a record that is valid and different, e.g. another shape of the same size,
    which no checksum covers in TensorFlow's format either), never another exception."""
    rng = np.random.default_rng(7)
    source = copy_of("object", tmp_path)  # string tensors and nested object-graph messages too
    prefix = source / "ckpt-1"
    index = Path(f"{prefix}.index")
    records = _sstable.read_table(index.read_bytes(), "x")
    refused = 0
    for _ in range(300):
        mutated = list(records)
        k = int(rng.integers(0, len(mutated)))
        record = bytearray(mutated[k][1])
        for _ in range(rng.integers(1, 3)):
            record[rng.integers(0, len(record))] ^= int(rng.integers(1, 256))
        if rng.random() < 0.2:
            record = record[: rng.integers(0, len(record) + 1)]
        mutated[k] = (mutated[k][0], bytes(record))
        index.write_bytes(_sstable.write_table(mutated))
        try:
            rc.read_tf1_checkpoint(prefix)
        except CheckpointError:
            refused += 1
    assert refused > 200, refused
