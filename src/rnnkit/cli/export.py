"""`rnnkit export`: a trained run as a serialized StableHLO program (jax.export)."""

from __future__ import annotations

import argparse
from typing import Any

from rnnkit.cli._parser import Command, add_command, name_list

EPILOG = """examples:
  rnnkit export runs/seed3 --out model.rnnx                  # the run's mode; writes model.rnnx + model.rnnx.json
  rnnkit export runs/seed3 --mode static --out static.rnnx   # pinned to the training length
  rnnkit export runs/seed3 --mode dynamic --with-state --out model.rnnx   # logits and the final state
"""


def add_parser(commands: Any) -> None:
    p = add_command(
        commands,
        "export",
        help="write a trained run as a serialized StableHLO program (jax.export) that runs without rnnkit's code",
        description="Export a run's inference function with jax.export: FILE holds the program and its weights, "
        "FILE.json the input layout, classes, mode and versions. A dynamic export takes any batch and length; "
        "a static one any batch at the length it was built for.",
        epilog=EPILOG,
    )
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--out", required=True, metavar="FILE", help="the artifact to write (e.g. model.rnnx)")
    p.add_argument("--mode", choices=("static", "dynamic"), default=None, help="default: the mode it was trained in")
    p.add_argument("--force", action="store_true", help="replace an existing --out (never a run's own files)")
    p.add_argument("--with-state", action="store_true", help="also return the cells' final state")
    p.add_argument(
        "--platforms",
        default="cpu,cuda",
        type=name_list,
        help="platforms to lower for, comma-separated (default cpu,cuda)",
    )


def handle(args: argparse.Namespace) -> int:
    from rnnkit.export import export_run

    info = export_run(
        args.run_dir, args.out, mode=args.mode, with_state=args.with_state, platforms=args.platforms, force=args.force
    )
    meta = info.metadata
    length = "any length" if meta["time_steps"] is None else f"exactly {meta['time_steps']} steps"
    print(
        f"{info.path}: {meta['mode']} export of {args.run_dir} (step {meta['source']['step']}), {length}, "
        f"{meta['artifact_bytes']} bytes, platforms {','.join(meta['platforms'])}; metadata in {info.sidecar}"
    )
    return 0


COMMAND = Command("export", add_parser, handle)
