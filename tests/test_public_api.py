"""The public surface, pinned: names and call signatures later tools and users rely on."""

from __future__ import annotations

import inspect
import subprocess
import sys

import pytest

import rnnkit as rk

from cases import CELL_CASES

PUBLIC = {
    "BasicLSTMCell",
    "BasicRNNCell",
    "DropoutWrapper",
    "GRUCell",
    "LSTMCell",
    "LSTMStateTuple",
    "MultiRNNCell",
    "RNNCell",
    "ResidualWrapper",
    "__version__",
    "bidirectional_dynamic_rnn",
    "dynamic_rnn",
    "get_variables",
    "last_relevant",
    "set_variables",
    "static_bidirectional_rnn",
    "static_rnn",
}


def test_public_names() -> None:
    assert {name for name in vars(rk) if not name.startswith("_") or name == "__version__"} - {
        "annotations"
    } == PUBLIC | _submodules()


def _submodules() -> set[str]:
    return {name for name, value in vars(rk).items() if inspect.ismodule(value) and not name.startswith("_")}


def params(fn: object) -> list[str]:
    return [
        f"{p.name}={p.default!r}" if p.default is not inspect.Parameter.empty else p.name
        for p in inspect.signature(fn).parameters.values()
        if p.name != "self"
    ]


def test_driver_signatures() -> None:
    assert params(rk.static_rnn) == [
        "cell",
        "inputs",
        "initial_state=None",
        "dtype=None",
        "sequence_length=None",
        "num_steps=None",
    ]
    assert params(rk.dynamic_rnn)[:7] == [
        "cell",
        "inputs",
        "sequence_length=None",
        "initial_state=None",
        "dtype=None",
        "time_major=False",
        "unroll=None",
    ]
    assert "return_all_states=False" in params(rk.dynamic_rnn)
    assert params(rk.bidirectional_dynamic_rnn)[:4] == ["cell_fw", "cell_bw", "inputs", "sequence_length=None"]
    assert params(rk.static_bidirectional_rnn)[:7] == [
        "cell_fw",
        "cell_bw",
        "inputs",
        "initial_state_fw=None",
        "initial_state_bw=None",
        "dtype=None",
        "sequence_length=None",
    ]
    assert params(rk.get_variables) == ["cell", "scope='rnn'"]
    assert params(rk.set_variables) == ["cell", "variables", "scope='rnn'"]
    assert params(rk.last_relevant) == ["outputs", "sequence_length", "time_major=False"]


def test_cell_constructors_take_sizes_and_a_keyword_only_key() -> None:
    for cls in (rk.BasicRNNCell, rk.BasicLSTMCell, rk.LSTMCell, rk.GRUCell):
        sig = inspect.signature(cls.__init__).parameters
        assert list(sig)[:2] == ["self", "num_units"]
        for name in ("input_size", "key"):
            assert sig[name].kind is inspect.Parameter.KEYWORD_ONLY, (cls.__name__, name)
        assert "activation" in sig
        assert "dtype" in sig
        assert sig["precision"].default == "highest"
    lstm = inspect.signature(rk.LSTMCell.__init__).parameters
    for name in ("use_peepholes", "cell_clip", "num_proj", "proj_clip", "forget_bias"):
        assert name in lstm
    assert inspect.signature(rk.GRUCell.__init__).parameters["reset_after"].default is False
    assert inspect.signature(rk.BasicLSTMCell.__init__).parameters["forget_bias"].default == 1.0
    dropout = list(inspect.signature(rk.DropoutWrapper.__init__).parameters)
    assert dropout[1:6] == ["cell", "input_keep_prob", "output_keep_prob", "state_keep_prob", "variational_recurrent"]


def test_registry_covers_every_public_cell() -> None:
    """Every public cell class must appear in tests/cases.py's registry, so the generic tests
    (reference, static == dynamic, masking, round trip) run on it."""
    import jax
    import jax.numpy as jnp

    public_cells = {
        value for value in vars(rk).values() if isinstance(value, type) and issubclass(value, rk.RNNCell)
    } - {rk.RNNCell}
    seen: set[type] = set()
    for case in CELL_CASES.values():
        stack = [case.make(jax.random.key(0), 5, jnp.float32)]
        while stack:
            cell = stack.pop()
            seen.add(type(cell))
            stack.extend(getattr(cell, "cells", ()))
            if hasattr(cell, "cell"):
                stack.append(cell.cell)
    assert public_cells - seen == set()


@pytest.mark.parametrize("module", ["rnnkit.workflows.convert", "rnnkit.convert"])
def test_modules_import_first_in_a_new_interpreter(module: str) -> None:
    """rnnkit.convert defines the run-directory conversions that rnnkit.workflows.convert
    re-exports (they once lived there, importing rnnkit.convert's modules: imported first,
    either was a circular import); both still import first in a fresh interpreter."""
    code = f"import {module}; import rnnkit.convert as rc; print(rc.write_run_dir.__module__, rc.export_torch_file.__name__)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["rnnkit.convert._run_dir", "export_torch_file"]
    import rnnkit.convert as rc

    assert all(getattr(rc, name) is not None for name in rc.__all__)
