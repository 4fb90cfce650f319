"""`rnnkit eval` and `rnnkit predict`: a trained run (or an exported model) on data."""

from __future__ import annotations

import argparse
from typing import Any

from rnnkit.cli._parser import Command, add_command, console

EVAL_EPILOG = """examples:
  rnnkit eval runs/seed3
  rnnkit eval runs/seed3 --plot confusion.png
  rnnkit eval runs/seed3 --data-dir ~/mnist-idx
"""

PREDICT_EPILOG = """examples:
  rnnkit predict runs/seed3 digit.png
  rnnkit predict runs/seed3 a.png b.png --steps   # how the prediction forms as the rows are read
  rnnkit predict --artifact model.rnnx digit.png  # an exported model: no run directory, no model code
"""


def add_eval_parser(commands: Any) -> None:
    p = add_command(
        commands,
        "eval",
        help="loss, accuracy, per-class accuracy and confusion matrix of a run on the test set",
        epilog=EVAL_EPILOG,
    )
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--data-dir", default=None, help="evaluate on this MNIST-format IDX directory's test split")
    p.add_argument("--plot", default=None, metavar="PNG", help="also draw the confusion matrix to this PNG")
    p.add_argument("--force", action="store_true", help="replace an existing --plot (never a run's own files)")


def handle_eval(args: argparse.Namespace) -> int:
    from rich.table import Table

    from rnnkit._host import enable_compile_cache
    from rnnkit.workflows.evaluate import evaluate_run

    enable_compile_cache()  # a static model compiles once, not in every process
    result = evaluate_run(args.run_dir, args.data_dir, plot=args.plot, force=args.force)
    out = console()
    out.print(
        f"{result.run_dir} (step {result.step}): loss {result.loss:.4f}, "
        f"accuracy {result.accuracy:.4f} on {result.num_examples} test examples"
    )
    table = Table(title="confusion matrix (rows: true class, columns: predicted)")
    table.add_column("class", justify="right")
    for c in range(result.confusion.shape[1]):
        table.add_column(str(c), justify="right")
    table.add_column("accuracy", justify="right")
    for c, row in enumerate(result.confusion):
        table.add_row(str(c), *(str(v) for v in row), f"{result.per_class_accuracy[c]:.4f}")
    out.print(table)
    if args.plot:
        out.print(f"confusion matrix drawn to {args.plot}")
    return 0


def add_predict_parser(commands: Any) -> None:
    p = add_command(
        commands, "predict", help="classify 28x28 grayscale images with a trained run", epilog=PREDICT_EPILOG
    )
    p.add_argument("paths", metavar="RUN_DIR IMAGE", nargs="+", help="a run directory, then images")
    p.add_argument("--steps", action="store_true", help="show the prediction after each step read")
    p.add_argument(
        "--artifact", default=None, metavar="FILE", help="classify with an exported model instead (no RUN_DIR)"
    )


def handle_predict(args: argparse.Namespace) -> int:
    from rnnkit._host import enable_compile_cache
    from rnnkit.errors import ConfigError
    from rnnkit.workflows.evaluate import predict_images, predict_with_artifact

    enable_compile_cache()  # a static model compiles once, not in every process
    if args.artifact is not None:
        if args.steps:
            raise ConfigError("--steps needs a run directory: an exported model gives only the final logits")
        predictions = predict_with_artifact(args.artifact, args.paths)
    else:
        if len(args.paths) < 2:
            raise ConfigError(f"predict needs RUN_DIR and at least one IMAGE (or --artifact FILE); got {args.paths}")
        predictions = predict_images(args.paths[0], args.paths[1:], steps=args.steps)
    for p in predictions:
        probs = " ".join(f"{c}:{v:.3f}" for c, v in enumerate(p.probabilities))
        print(f"{p.path}: class {p.predicted} (p={p.probabilities[p.predicted]:.4f})  [{probs}]")
        if p.step_probabilities is not None:
            for t, step_probs in enumerate(p.step_probabilities, start=1):
                best = int(step_probs.argmax())
                print(f"  after step {t:3d}: class {best} (p={step_probs[best]:.4f})")
    return 0


EVAL = Command("eval", add_eval_parser, handle_eval)
PREDICT = Command("predict", add_predict_parser, handle_predict)
