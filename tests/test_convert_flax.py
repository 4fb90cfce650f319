"""rnnkit.convert <-> Flax parameter trees (Linen and NNX cells).

Without Flax: the trees rnnkit writes, run through NumPy transcriptions of Flax's documented
formulas (tests/peer_formulas.py), give rnnkit's logits; trees in every Flax cell layout read
back into rnnkit give the formulas' outputs; round trips are bit for bit; what Flax cannot hold
is refused. With Flax installed (`make peers`), the same against Flax's own modules."""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnnkit.convert as rc
from rnnkit.errors import ConfigError

from cases import run_cli
from convert_cases import random_classifier
from peer_formulas import flax_cell

TOL = 1e-5
BATCH, TIME, DEPTH, CLASSES = 3, 6, 5, 4
# Every cell Flax has a counterpart for: SimpleCell, LSTM (forget bias 1.0, folded, and 0.0),
# the reset-after GRU.
EVERY_KIND = "rnn:5,lstm:6,basic_lstm:6:forget_bias=0.0,gru_reset_after:5"
EXACT = "rnn:5,lstm:6:forget_bias=0.0,gru_reset_after:5"  # forget_bias 0: comes back bit for bit


def model_for(cells: str, style: str, seed: int = 0) -> Any:
    """A random classifier; for NNX, whose GRUCell has no hidden bias on its candidate, that
    bias zeroed."""
    model = random_classifier(cells, input_size=DEPTH, num_classes=CLASSES, num_steps=TIME, seed=seed)
    if style == "nnx":
        variables = model.variables()
        zeroed = {k: np.zeros_like(v) if k.endswith("hidden_projection/bias") else v for k, v in variables.items()}
        model = model.with_variables(zeroed)
    return model


def inputs(seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((BATCH, TIME, DEPTH)).astype(np.float32)


def formulas(cells_in_order: list[dict[str, Any]], head: dict[str, Any], x: np.ndarray) -> np.ndarray:
    """Flax's formulas over a stack of cell trees, then the head on the last step (float64)."""
    h = np.asarray(x, np.float64)
    for cell in cells_in_order:
        h, _ = flax_cell(cell, h)
    return h[:, -1] @ np.asarray(head["kernel"], np.float64) + np.asarray(head["bias"], np.float64)


def cells_of(tree: dict[str, Any], style: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    if style == "linen":
        params = tree["params"]
        return [params[f"RNN_{k}"]["cell"] for k in range(len(params) - 1)], params["Dense_0"]
    return [tree["layers"][k]["cell"] for k in range(len(tree["layers"]))], tree["head"]


def assert_close(got: Any, want: Any) -> None:
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape
    assert np.max(np.abs(got - want)) <= TOL * max(1.0, float(np.max(np.abs(want)))), np.max(np.abs(got - want))


def leaves(tree: Any, path: str = "") -> dict[str, np.ndarray]:
    if isinstance(tree, dict):
        out: dict[str, np.ndarray] = {}
        for k, v in tree.items():
            out.update(leaves(v, f"{path}/{k}"))
        return out
    return {path: np.asarray(tree)}


@pytest.mark.parametrize("style", ["linen", "nnx"])
def test_rnnkit_to_flax_computes_flaxs_formulas(style: str) -> None:
    model = model_for(EVERY_KIND, style)
    x = inputs()
    cells, head = cells_of(rc.to_flax_params(model, style=style), style)
    assert len(cells) == 4
    assert_close(formulas(cells, head, x), model(jnp.asarray(x)))


@pytest.mark.parametrize("style", ["linen", "nnx"])
def test_flax_to_rnnkit_to_flax_is_bit_for_bit(style: str) -> None:
    model = model_for(EVERY_KIND, style, seed=3)
    tree = rc.to_flax_params(model, style=style)
    conversion = rc.from_flax_params(tree)
    assert conversion.cells == "rnn:5,lstm:6:forget_bias=0.0,lstm:6:forget_bias=0.0,gru_reset_after:5"
    again = rc.to_flax_params(conversion.classifier(num_steps=TIME), style=style)
    first, second = leaves(tree), leaves(again)
    assert first.keys() == second.keys()
    for name in first:
        assert first[name].dtype == second[name].dtype, name
        assert np.array_equal(first[name], second[name]), name


def test_rnnkit_to_flax_to_rnnkit_is_bit_for_bit() -> None:
    model = model_for(EXACT, "linen", seed=4)
    back = rc.from_flax_params(rc.to_flax_params(model, style="linen")).classifier(num_steps=TIME)
    for name, value in model.variables().items():
        assert np.array_equal(np.asarray(back.variables()[name]), np.asarray(value)), name


def random_dense(rng: np.random.Generator, d_in: int, d_out: int, bias: bool) -> dict[str, np.ndarray]:
    out = {"kernel": (0.5 * rng.standard_normal((d_in, d_out))).astype(np.float32)}
    if bias:
        out["bias"] = (0.5 * rng.standard_normal(d_out)).astype(np.float32)
    return out


def flax_layout(kind: str, d: int, h: int, rng: np.random.Generator) -> dict[str, Any]:
    """A cell's parameters in one of Flax's own layouts, drawn at random."""
    if kind in ("linen_lstm", "nnx_lstm"):
        f = "if" if kind == "linen_lstm" else "if_"
        cell = {name: random_dense(rng, d, h, False) for name in ("ii", f, "ig", "io")}
        return cell | {name: random_dense(rng, h, h, True) for name in ("hi", "hf", "hg", "ho")}
    if kind == "nnx_optimized_lstm":
        return {"dense_i": random_dense(rng, d, 4 * h, False), "dense_h": random_dense(rng, h, 4 * h, True)}
    if kind == "linen_gru":
        cell = {name: random_dense(rng, d, h, True) for name in ("ir", "iz", "in")}
        return (
            cell
            | {"hr": random_dense(rng, h, h, False), "hz": random_dense(rng, h, h, False)}
            | {"hn": random_dense(rng, h, h, True)}
        )
    if kind == "nnx_gru":
        return {"dense_i": random_dense(rng, d, 3 * h, True), "dense_h": random_dense(rng, h, 3 * h, False)}
    if kind == "linen_simple":
        return {"i": random_dense(rng, d, h, True), "h": random_dense(rng, h, h, False)}
    return {"dense_i": random_dense(rng, d, h, True), "dense_h": random_dense(rng, h, h, False)}  # nnx_simple


KINDS = ["linen_lstm", "nnx_lstm", "nnx_optimized_lstm", "linen_gru", "nnx_gru", "linen_simple", "nnx_simple"]


def test_every_flax_layout_reads_as_flaxs_formulas() -> None:
    """A Linen-style tree holding every layout in a row (read in its order), and the same
    cells as an NNX state dict with integer keys."""
    rng = np.random.default_rng(5)
    sizes = [DEPTH, 4, 6, 5, 3, 7, 4, 5]
    cells = [flax_layout(kind, sizes[k], sizes[k + 1], rng) for k, kind in enumerate(KINDS)]
    head = random_dense(rng, sizes[-1], CLASSES, True)
    x = inputs(2)
    want = formulas(cells, head, x)
    linen = {"params": {f"Cell_{k}": cell for k, cell in enumerate(cells)} | {"Dense_0": head}}
    nnx = {"head": head, "layers": {k: {"cell": cell} for k, cell in enumerate(cells)}}
    for tree in (linen, nnx):
        conversion = rc.from_flax_params(tree)
        assert conversion.cells.split(",")[0] == "lstm:4:forget_bias=0.0"
        assert_close(conversion.classifier(num_steps=TIME)(jnp.asarray(x)), want)
    # A bias where Flax's own cells have none (a variant cell) is added in, not dropped.
    extra = [flax_layout("linen_lstm", DEPTH, 4, rng), flax_layout("linen_gru", 4, 5, rng)]
    extra[0]["ii"]["bias"] = np.full(4, 0.7, np.float32)
    extra[1]["hr"]["bias"] = np.full(5, -0.4, np.float32)
    tree = {"LSTMCell_0": extra[0], "GRUCell_0": extra[1], "Dense_0": random_dense(rng, 5, CLASSES, True)}
    got = rc.from_flax_params(tree).classifier(num_steps=TIME)(jnp.asarray(x))
    assert_close(got, formulas(extra, tree["Dense_0"], x))


def test_forward_order_comes_from_the_sizes_not_the_trees_order() -> None:
    """NNX sorts attribute names (an `lstm` then a `gru` come as gru, lstm) and jax.tree.map
    sorts a dict's keys: the order is the one in which the sizes chain. Where several do
    (layers of one size), the paths' natural order, and `modules` says otherwise."""
    rng = np.random.default_rng(6)
    lstm, gru = flax_layout("nnx_lstm", DEPTH, 4, rng), flax_layout("nnx_gru", 4, 6, rng)
    tree = {"gru": {"cell": gru}, "head": random_dense(rng, 6, CLASSES, True), "lstm": {"cell": lstm}}
    conversion = rc.from_flax_params(tree)
    assert conversion.cells == "lstm:4:forget_bias=0.0,gru_reset_after:6"
    x = inputs(3)
    assert_close(conversion.classifier(num_steps=TIME)(jnp.asarray(x)), formulas([lstm, gru], tree["head"], x))

    same = [flax_layout("linen_simple", 4, 4, rng) for _ in range(11)]  # RNN_2 before RNN_10
    deep = {f"RNN_{k}": {"cell": cell} for k, cell in enumerate(same)}
    x4 = np.random.default_rng(4).standard_normal((BATCH, TIME, 4))
    head = random_dense(rng, 4, CLASSES, True)
    got = rc.from_flax_params({**dict(sorted(deep.items())), "Dense_0": head}).classifier(num_steps=TIME)
    assert_close(got(jnp.asarray(x4, jnp.float32)), formulas(same, head, x4))

    a, b = flax_layout("linen_lstm", 4, 4, rng), flax_layout("linen_gru", 4, 4, rng)
    pair = {"GRUCell_0": b, "LSTMCell_0": a, "Dense_0": head}  # both orders chain
    assert rc.from_flax_params(pair).cells == "gru_reset_after:4,lstm:4:forget_bias=0.0"
    forward = rc.from_flax_params(pair, modules=["LSTMCell_0", "GRUCell_0"])
    assert_close(forward.classifier(num_steps=TIME)(jnp.asarray(x4, jnp.float32)), formulas([a, b], head, x4))
    with pytest.raises(ConfigError, match="modules: RNN_0 not among"):
        rc.from_flax_params(pair, modules=["RNN_0", "GRUCell_0"])
    with pytest.raises(ConfigError, match=r"list each of .* once"):
        rc.from_flax_params(pair, modules=["LSTMCell_0", "LSTMCell_0"])


def test_what_flax_cannot_hold_is_refused() -> None:
    tf1_gru = random_classifier("gru:4", input_size=DEPTH, num_classes=CLASSES, num_steps=TIME)
    with pytest.raises(ConfigError, match="reset gate before its candidate"):
        rc.to_flax_params(tf1_gru)
    peephole = random_classifier("lstm:4:peepholes", input_size=DEPTH, num_classes=CLASSES, num_steps=TIME)
    with pytest.raises(ConfigError, match="uses peepholes"):
        rc.to_flax_params(peephole, style="linen")
    with_hidden_bias = model_for("gru_reset_after:4", "linen")
    with pytest.raises(ConfigError, match="nonzero bias on its candidate's hidden product"):
        rc.to_flax_params(with_hidden_bias, style="nnx")
    rc.to_flax_params(with_hidden_bias, style="linen")  # Linen's GRUCell has that bias
    with pytest.raises(ConfigError, match="style must be one of linen, nnx; got 'haiku'"):
        rc.to_flax_params(with_hidden_bias, style="haiku")


def test_ambiguous_or_unknown_parameters_are_named() -> None:
    rng = np.random.default_rng(7)
    cell = flax_layout("linen_lstm", DEPTH, 4, rng)
    head, other = random_dense(rng, 4, CLASSES, True), random_dense(rng, 4, 2, True)
    with pytest.raises(ConfigError, match=r"several kernel/bias pairs besides the cells .*pass head"):
        rc.from_flax_params({"cell": cell, "Dense_0": head, "Dense_1": other})
    conversion = rc.from_flax_params(
        {"cell": cell, "Dense_0": head, "Dense_1": other}, head="Dense_0", allow_unused=True
    )
    assert conversion.num_classes == CLASSES
    assert conversion.skipped == ("Dense_1",)
    with pytest.raises(ConfigError, match="step is neither a recurrent cell's nor the head's; pass allow_unused"):
        rc.from_flax_params({"cell": cell, "Dense_0": head, "step": np.int32(3)})
    rngs = {"cell": cell, "Dense_0": head, "rngs": {"count": np.uint32(1), "key": np.zeros(2, np.uint32)}}
    assert rc.from_flax_params(rngs).skipped == ("rngs/count", "rngs/key")  # nnx.state(model) without a filter
    with pytest.raises(ConfigError, match="found no recurrent layer"):
        rc.from_flax_params({"Dense_0": head})
    with pytest.raises(ConfigError, match=r"--cells: layer 0 of .* reset gate before"):
        rc.from_flax_params({"c": flax_layout("linen_gru", DEPTH, 4, rng)}, cells="gru:4")


# --- against Flax itself ---------------------------------------------------------------------------


@pytest.fixture
def flax() -> Iterator[Any]:
    module = pytest.importorskip("flax")
    with jax.numpy_dtype_promotion("standard"):
        yield module


@pytest.mark.flax
@pytest.mark.parametrize("style", ["linen", "nnx"])
def test_flax_model_computes_rnnkits_logits(flax: Any, style: str) -> None:
    model = model_for(EVERY_KIND, style, seed=8)
    x = jnp.asarray(inputs(4))
    built = rc.flax_model(model, style=style)
    got = built[0].apply(built[1], x) if style == "linen" else built(x)
    assert_close(got, model(x))


@pytest.mark.flax
def test_flax_modules_initialised_by_flax_convert_to_their_outputs(flax: Any) -> None:
    """Every Flax cell class, built and initialised by Flax (biases drawn at random, since Flax
    starts them at zero), run by Flax; converted, rnnkit gives the same outputs."""
    from flax import linen as nn
    from flax import nnx

    x = jnp.asarray(inputs(5))
    sizes = [DEPTH, 4, 6, 5, 3, 7, 4, 5]
    linen_cells = [nn.LSTMCell, nn.OptimizedLSTMCell, nn.GRUCell, nn.SimpleCell]
    nnx_cells = [nnx.LSTMCell, nnx.OptimizedLSTMCell, nnx.GRUCell, nnx.SimpleCell]

    class LinenStack(nn.Module):
        @nn.compact
        def __call__(self, h: Any) -> Any:
            for k, cls in enumerate(linen_cells):
                h = nn.RNN(cls(sizes[k + 1]))(h)
            return nn.Dense(CLASSES)(h[:, -1])

    class NnxStack(nnx.Module):
        def __init__(self, rngs: Any) -> None:
            self.layers = nnx.List([nnx.RNN(cls(sizes[k], sizes[k + 1], rngs=rngs)) for k, cls in enumerate(nnx_cells)])
            self.head = nnx.Linear(sizes[4], CLASSES, rngs=rngs)

        def __call__(self, h: Any) -> Any:
            for layer in self.layers:
                h = layer(h)
            return self.head(h[:, -1])

    def perturb(tree: Any, key: Any) -> Any:
        flat, treedef = jax.tree_util.tree_flatten(tree)
        keys = jax.random.split(key, len(flat))
        return jax.tree_util.tree_unflatten(
            treedef, [a + 0.3 * jax.random.normal(k, a.shape) for a, k in zip(flat, keys, strict=True)]
        )

    linen = LinenStack()
    variables = perturb(linen.init(jax.random.key(0), x), jax.random.key(1))
    conversion = rc.from_flax_params(variables)
    assert conversion.cells == "lstm:4:forget_bias=0.0,lstm:6:forget_bias=0.0,gru_reset_after:5,rnn:3"
    assert_close(conversion.classifier(num_steps=TIME)(x), linen.apply(variables, x))

    module = NnxStack(nnx.Rngs(2))
    state = nnx.state(module, nnx.Param)
    nnx.update(module, perturb(state, jax.random.key(3)))
    conversion = rc.from_flax_params(nnx.state(module, nnx.Param))
    assert_close(conversion.classifier(num_steps=TIME)(x), module(x))


# --- rnnkit convert flax -------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".safetensors", ".msgpack"])
def test_cli_flax_both_ways_is_bit_for_bit(tmp_path: Any, capsys: pytest.CaptureFixture[str], suffix: str) -> None:
    from rnnkit.convert._flax import flax_file_bytes, load_flax_file

    if suffix == ".msgpack":
        pytest.importorskip("flax")
    model = random_classifier(EXACT, input_size=28, num_classes=10, num_steps=28, seed=9)
    tree = rc.to_flax_params(model, style="linen")
    source = tmp_path / f"params{suffix}"
    source.write_bytes(flax_file_bytes(tree, source))
    code, out, err = run_cli(["convert", "flax", str(source), "--out", str(tmp_path / "run")], capsys)
    assert (code, err) == (0, "")
    assert "cells rnn:5,lstm:6:forget_bias=0.0,gru_reset_after:5, reading 28 features, 10 classes" in out
    back = tmp_path / f"back{suffix}"
    code, out, err = run_cli(["convert", "flax", str(tmp_path / "run"), "--style", "linen", "--out", str(back)], capsys)
    assert (code, err) == (0, "")
    first, second = leaves(tree), leaves(load_flax_file(back))
    assert first.keys() == second.keys()
    for name in first:
        assert np.array_equal(first[name], second[name]), name


def test_cli_flax_mistakes_exit_2_with_one_line_and_touch_nothing(
    tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    from rnnkit.convert._flax import flax_file_bytes

    tf1_gru = rc.from_tf1_variables(random_classifier("gru:6", input_size=28, num_classes=3, num_steps=28).variables())
    run = rc.write_run_dir(tf1_gru, tmp_path / "gru")
    rng = np.random.default_rng(10)
    extra = tmp_path / "extra.safetensors"
    tree = {"cell": flax_layout("linen_lstm", 28, 4, rng), "Dense_0": random_dense(rng, 4, 3, True)}
    extra.write_bytes(flax_file_bytes({**tree, "opt": {"count": np.zeros(1, np.int32)}}, extra))
    mistakes = [
        (["convert", "flax", str(run), "--out", str(tmp_path / "x.msgpack")], "reset gate before its candidate"),
        (["convert", "flax", str(run), "--out", str(tmp_path / "x.npz")], r"must end in \.msgpack or \.safetensors"),
        (
            ["convert", "flax", str(tmp_path / "nope.msgpack"), "--out", str(tmp_path / "r")],
            "nope.msgpack: no such file",
        ),
        (["convert", "flax", str(extra), "--out", str(tmp_path / "r")], "opt/count is neither .*--allow-unused"),
        (["convert", "flax", str(extra), "--out", str(run)], "exists and is not empty"),
        (["convert", "flax", str(run), "--style", "haiku", "--out", str(tmp_path / "x.msgpack")], "--style: invalid"),
    ]
    if importlib.util.find_spec("flax") is None:
        msgpack = tmp_path / "params.msgpack"
        msgpack.write_bytes(b"\x80")
        mistakes.append(
            (
                ["convert", "flax", str(msgpack), "--out", str(tmp_path / "r")],
                r"needs flax, .* pip install 'rnnkit\[flax\]'",
            )
        )
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    for argv, message in mistakes:
        code, out, err = run_cli(argv, capsys)
        assert code == 2, argv
        assert out == ""
        assert len(err.strip().splitlines()) == 1, err
        assert re.search(message, err), (message, err)
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix != ".msgpack") == ["extra.safetensors", "gru"]
    code, out, err = run_cli(["convert", "flax", str(extra), "--out", str(tmp_path / "r"), "--allow-unused"], capsys)
    assert (code, err) == (0, "")
    assert "not converted (1): opt/count" in out
