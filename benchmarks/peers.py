"""The benchmark rows of `rnnkit bench`, importable, and the sweep as a script.

    from benchmarks.peers import ROWS, Workload, measure_row
    measure_row("torch-eager", Workload("train", 128, 28, 28))   # one row here, in this process

    python benchmarks/peers.py --quick --out bench-quick          # the same as `rnnkit bench ...`

Rows whose framework is not installed report `skipped` with the reason (`row.missing()`).
The rows themselves live in the package (rnnkit/workflows/bench.py for rnnkit's own,
rnnkit/workflows/bench_peers.py for the peers'), so `rnnkit bench` runs without this folder.
"""

from __future__ import annotations

import sys
from typing import Any

from rnnkit.workflows.bench import BenchConfig, all_rows, find_row, run_row
from rnnkit.workflows.bench_rows import Row, Workload

ROWS: tuple[Row, ...] = all_rows()


def measure_row(name: str, *workloads: Workload, **config: Any) -> dict[str, Any]:
    """One row's results on `workloads`, in this process (no subprocess, no compile-cache set-up)."""
    return run_row(find_row(name), BenchConfig(workloads=workloads, **config))


if __name__ == "__main__":
    from rnnkit.cli import main

    sys.exit(main(["bench", *sys.argv[1:]]))
