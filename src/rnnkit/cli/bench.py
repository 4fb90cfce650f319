"""`rnnkit bench`: training and inference speed of the seed's model, rnnkit against its peers."""

from __future__ import annotations

import argparse
from typing import Any

from rnnkit.cli._parser import (
    Command,
    add_command,
    command_line,
    console,
    default_out_dir,
    name_list,
    non_negative_int,
    plain_log,
    positive_float,
    positive_int,
)

EPILOG = """examples:
  rnnkit bench --quick --out bench-quick              # training b128 and inference b1024 at T=28, ~2 minutes
  rnnkit bench --out bench                            # every row, batch 128/1024, T=28 and T=784
  rnnkit bench --rows rnnkit-dynamic,torch-eager,tf1-dynamic --workloads train:128:28:28
  rnnkit bench --quick --rounds 3                     # on a noisy machine: each figure the median of 3 rounds
Rows for peers that are not installed are reported as skipped: make peers installs them into .venv.
Writes DIR/bench.json, DIR/bench.md (the table) and DIR/bench.png.
"""


def workload_list(text: str) -> tuple[Any, ...]:
    """An argparse `type=` for --workloads: comma-separated task:batch:steps:features."""
    from rnnkit.workflows.bench_rows import TASKS, Workload

    workloads = []
    for item in text.split(","):
        parts = item.strip().split(":")
        ok = len(parts) == 4 and parts[0] in TASKS and all(p.isdigit() and int(p) >= 1 for p in parts[1:])
        if not ok:
            raise argparse.ArgumentTypeError(
                f"expected comma-separated task:batch:steps:features with task train or infer, "
                f"e.g. train:128:28:28; got {item!r}"
            )
        workloads.append(Workload(parts[0], int(parts[1]), int(parts[2]), int(parts[3])))
    return tuple(workloads)


def add_parser(commands: Any) -> None:
    p = add_command(
        commands,
        "bench",
        help="training and inference speed of the seed's model: rnnkit against every peer installed",
        description="The seed's LSTM(128) -> GRU(256) -> dense(10), trained (TF1's Adam) and run by rnnkit "
        "(dynamic and static) and by PyTorch, TensorFlow 1, Keras 3 and Flax where installed; each row and "
        "workload in its own process. Time to first step, median samples/s, share of this machine's matmul peak.",
        epilog=EPILOG,
    )
    p.add_argument("--out", default=None, metavar="DIR", help="results directory (default runs/bench-<time>)")
    p.add_argument("--quick", action="store_true", help="training b128 and inference b1024 at T=28, few repeats")
    p.add_argument("--full", action="store_true", help="add training at batch 1024 over 784 steps (slow on CPU)")
    p.add_argument("--rows", type=name_list, default=None, help="only these rows (default: all)")
    p.add_argument("--workloads", type=workload_list, default=None, metavar="TASK:B:T:F,...")
    p.add_argument("--repeats", type=positive_int, default=None, help="at least this many timed steps (default 5)")
    p.add_argument("--min-time", type=positive_float, default=None, help="and at least this many seconds (default 2)")
    p.add_argument(
        "--rounds",
        type=positive_int,
        default=None,
        help="run all rows this many times, alternating their order; report each figure's median round (default 1)",
    )
    p.add_argument("--seed", type=non_negative_int, default=0)


def handle(args: argparse.Namespace) -> int:
    from pathlib import Path

    from rnnkit._host import tune_allocator
    from rnnkit.workflows.bench import bench_config, run_bench, write_results

    tune_allocator()  # before JAX starts its threads; see rnnkit/_host.py
    config = bench_config(
        quick=args.quick,
        full=args.full,
        workloads=args.workloads,
        rows=args.rows,
        repeats=args.repeats,
        min_time_s=args.min_time,
        rounds=args.rounds,
        seed=args.seed,
    )
    out_dir = Path(args.out) if args.out else default_out_dir("bench")
    out = console()
    result = run_bench(config, log=plain_log(out))
    render(result, [w.key for w in config.workloads], out)
    files = write_results(result, out_dir, command_line("bench"))
    out.print(f"results: {files['json']}, {files['markdown']}, {files['png']}")
    return 0


def render(result: dict[str, Any], keys: list[str], out: Any) -> None:
    """Samples/s of every row on every workload, then rnnkit-dynamic's speed against each peer."""
    from rich.table import Table

    from rnnkit.workflows.bench import cell_text

    table = Table(title=f"samples/s, the seed's model ({result['environment']['device']})")
    table.add_column("row")
    for key in keys:
        table.add_column(key, justify="right")
    for row in result["rows"]:
        table.add_row(row["row"], *(cell_text(row["workloads"][key]) for key in keys))
    out.print(table)
    for key, versus in result["ratios"].items():
        if versus:
            said = ", ".join(f"{v:.2f}x {name}" for name, v in versus.items())
            out.print(f"rnnkit-dynamic, {key}: {said}", highlight=False, markup=False)


COMMAND = Command("bench", add_parser, handle)
