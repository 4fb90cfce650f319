"""`rnnkit compare`: the seed's static-vs-dynamic claims measured here, as a table and a report."""

from __future__ import annotations

import argparse
from typing import Any

from rnnkit.cli._parser import (
    Command,
    add_command,
    command_line,
    console,
    default_out_dir,
    int_list,
    non_negative_int,
    plain_log,
    positive_float,
    positive_int,
)

EPILOG = """examples:
  rnnkit compare --quick --out compare-quick           # two short lengths, under a minute
  rnnkit compare --out compare                         # the seed's model, lengths 28 ... 896
  rnnkit compare --cells gru:64 --lengths 16,32,64 --budget-s 30 --out compare-gru
Open DIR/report.html in a browser: each of the seed's claims with its evidence and verdict.
"""


def add_parser(commands: Any) -> None:
    from rnnkit.workflows.compare import CompareConfig

    d = CompareConfig()
    p = add_command(
        commands,
        "compare",
        help="measure the seed's static-vs-dynamic claims on this machine: table, JSON, plots, HTML report",
        description="Build, compile, export and run the model with static_rnn and dynamic_rnn over a sweep of "
        "lengths, in one process, and judge each of the seed's claims by the numbers.",
        epilog=EPILOG,
    )
    p.add_argument("--out", default=None, metavar="DIR", help="report directory (default runs/compare-<time>)")
    p.add_argument("--cells", default=d.cells, help=f"layers, kind:units[:options] (default {d.cells})")
    p.add_argument("--lengths", type=int_list, default=None, help="sequence lengths (default 28,56,...,896)")
    p.add_argument("--quick", action="store_true", help="lengths 6,12, few repeats, a short stream: under a minute")
    p.add_argument("--batch-size", type=positive_int, default=None, help=f"training batch (default {d.batch_size})")
    p.add_argument("--features", type=positive_int, default=d.features, help="input depth per step (default 28)")
    p.add_argument("--repeats", type=positive_int, default=None, help=f"timed calls per figure (default {d.repeats})")
    p.add_argument("--budget-s", type=positive_float, default=d.budget_s, help="compile-time budget per static point")
    p.add_argument("--budget-mb", type=positive_float, default=d.budget_mb, help="memory budget per static point")
    p.add_argument("--stream", type=int_list, default=None, help="lengths of the varying-length stream")
    p.add_argument("--bucket", type=int_list, default=None, help="bucket sizes the stream's lengths round up to")
    p.add_argument("--unroll", type=int_list, default=None, help="dynamic_rnn unroll factors (default 1,2,4,8)")
    p.add_argument("--seed", type=non_negative_int, default=d.seed)


def handle(args: argparse.Namespace) -> int:
    from pathlib import Path

    from rnnkit.workflows.compare import compare_config, run_compare
    from rnnkit.workflows.compare_report import write_report

    config = compare_config(
        quick=args.quick,
        cells=args.cells,
        lengths=args.lengths,
        batch_size=args.batch_size,
        features=args.features,
        repeats=args.repeats,
        budget_s=args.budget_s,
        budget_mb=args.budget_mb,
        stream=args.stream,
        buckets=args.bucket,
        unroll=args.unroll,
        seed=args.seed,
    )
    out_dir = Path(args.out) if args.out else default_out_dir("compare")
    out = console()
    out.print(f"rnnkit compare: {config.cells}, lengths {list(config.lengths)} -> {out_dir}")
    result = run_compare(config, log=plain_log(out))
    render(result, out)
    files = write_report(result, out_dir, command_line("compare"))
    out.print(f"report: {files['html']}  (figures and compare.json beside it)")
    return 0


def render(result: dict[str, Any], out: Any) -> None:
    """The table of every measured point, each claim's verdict, and the recommendation."""
    from rich.table import Table

    from rnnkit.workflows.compare_report import ROW_COLUMNS, recommendation, row_cells

    table = Table(
        title=f"static_rnn vs dynamic_rnn ({result['environment']['device']})",
        caption="~N: projected compile seconds of a static point over the budget, not run",
    )
    for _, label, _ in ROW_COLUMNS:
        table.add_column(label, justify="left" if label == "mode" else "right")
    for row in result["rows"]:
        table.add_row(*row_cells(row))
    out.print(table)
    for claim in result["claims"]:
        out.print(f"{claim['verdict']}: {claim['claim']}", highlight=False, markup=False)
    out.print(recommendation(result), highlight=False, markup=False)


COMMAND = Command("compare", add_parser, handle)
