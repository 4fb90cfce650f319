"""`rnnkit train`: train a sequence classifier (the seed's program), with a Rich progress bar."""

from __future__ import annotations

import argparse
import signal
import sys
from typing import Any

from rnnkit.cli._parser import (
    Command,
    add_command,
    add_distributed_flags,
    console,
    dropout_rate,
    join_processes,
    lost,
    non_negative_int,
    positive_float,
    positive_int,
)

EPILOG = """examples:
  rnnkit train                                   # the seed's program: LSTM(128)+GRU(256), 100 000 samples
  rnnkit train --mode static                     # the same, unrolled like the seed's static_rnn variant
  rnnkit train --epochs 3 --run-dir runs/seed3   # longer, into a named run directory
  rnnkit train --run-dir runs/seed3 --resume     # continue an interrupted run (Ctrl-C, SIGTERM save a checkpoint)
  rnnkit train --run-dir runs/seed3 --resume --epochs 5   # extend a run
  rnnkit train --cells lstm:64:peepholes:proj=32,gru_reset_after:128 --layout pixels --dropout 0.2
  rnnkit train --data-dir ~/fashion-mnist        # any MNIST-format IDX directory
  rnnkit train --devices all --batch-size 512    # data parallel over every local device
  rnnkit train --run-dir /shared/r1 --coordinator 10.0.0.1:1234 --num-processes 2 --process-id 0   # and 1
"""


def add_parser(commands: Any) -> None:
    from rnnkit.runs import TrainConfig

    d = TrainConfig()
    p = add_command(
        commands,
        "train",
        help="train a sequence classifier on MNIST (the seed's program)",
        description="Train cells read over MNIST rows (or pixels) with a dense head, the seed's program. "
        "Defaults are the seed's: LSTM(128)+GRU(256), Adam 0.001, batch 128, 100 000 training samples.",
        epilog=EPILOG,
    )
    # Defaults are None here, TrainConfig's in the help: a flag left out is then told apart from
    # one given, which --resume needs (given flags are applied or refused, left-out ones keep the run's).
    p.add_argument("--mode", choices=("static", "dynamic"), help=f"static_rnn or dynamic_rnn (default {d.mode})")
    p.add_argument("--cells", help=f"layers, kind:units[:options] (default {d.cells})")
    p.add_argument("--data-dir", help="MNIST-format IDX directory (default: the installed MNIST)")
    p.add_argument("--layout", choices=("rows", "pixels", "permuted-pixels"), help=f"(default {d.layout})")
    p.add_argument("--run-dir", default=None, help="where config, checkpoints and metrics go (default runs/...)")
    length = p.add_mutually_exclusive_group()
    length.add_argument("--train-samples", type=positive_int, help=f"the seed's {d.train_samples} (the default)")
    length.add_argument("--epochs", type=positive_int, help="passes over the training split")
    p.add_argument("--batch-size", type=positive_int, help=f"(default {d.batch_size})")
    p.add_argument("--learning-rate", type=positive_float, help=f"(default {d.learning_rate})")
    p.add_argument("--clip-norm", type=positive_float, help="clip gradients to this global norm")
    p.add_argument("--dropout", type=dropout_rate, help="fraction of layer outputs dropped (default 0)")
    p.add_argument("--display-step", type=positive_int, help=f"(default {d.display_step})")
    every = f"steps between checkpoints (default {d.checkpoint_every})"
    p.add_argument("--checkpoint-every", type=positive_int, help=every)
    p.add_argument(
        "--checkpoint-minutes",
        type=positive_float,
        help="and at least this often in minutes, so a killed run loses at most this much "
        f"(default {d.checkpoint_minutes:g})",
    )
    p.add_argument("--validation-size", type=non_negative_int, help=f"(default {d.validation_size})")
    p.add_argument("--seed", type=non_negative_int, help=f"(default {d.seed})")
    p.add_argument(
        "--num-classes",
        type=positive_int,
        help="the data set's class count (default 10, the MNIST family's); a label outside it is refused",
    )
    p.add_argument(
        "--precision",
        help="matmul precision: highest (full float32, TF1's numbers; the default), default (TF32 on NVIDIA "
        "GPUs: faster at large batches) or a jax.lax.DotAlgorithmPreset name such as TF32_TF32_F32_X3",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --run-dir from its checkpoint; --epochs/--train-samples (to extend it), "
        "--data-dir, --precision and the display and checkpoint cadence may change, the rest must match",
    )
    add_distributed_flags(p)


def handle(args: argparse.Namespace) -> int:
    from rnnkit._host import enable_compile_cache, tune_allocator
    from rnnkit.runs import TrainConfig
    from rnnkit.workflows import distributed
    from rnnkit.workflows.train import SilentReporter, TrainingDiverged, TrainingInterrupted, train

    tune_allocator()  # before JAX starts its threads; see rnnkit/_host.py
    enable_compile_cache()  # a static model compiles once, not in every process
    join_processes(args)
    given = {name: getattr(args, name) for name in SETTINGS if getattr(args, name) is not None}
    if args.resume:
        config, changes = TrainConfig(run_dir=args.run_dir), given
    else:
        config, changes = TrainConfig(run_dir=args.run_dir, **given), None
    writer = distributed.is_writer()  # only process 0 reports; the others train quietly
    try:
        result = train(
            config,
            resume=args.resume,
            reporter=RichReporter() if writer else SilentReporter(),
            devices=args.devices,
            changes=changes,
        )
    except distributed.PeerLost as peer_lost:
        lost(peer_lost)
    except TrainingInterrupted as stop:
        how = "interrupted" if stop.signal == signal.SIGINT else f"stopped by {signal.Signals(stop.signal).name}"
        print(
            f"rnnkit: {how} at step {stop.step}; checkpoint saved. Continue with: "
            f"rnnkit train --run-dir {stop.run_dir} --resume",
            file=sys.stderr,
        )
        code = 128 + int(stop.signal)  # the shell's status for the signal: 130 for Ctrl-C, 143 for SIGTERM
        if distributed.several_processes():  # the others may be gone: skip JAX's shutdown barrier
            distributed.abandon(code)
        return code
    except TrainingDiverged as diverged:
        print(f"rnnkit: error: {diverged}", file=sys.stderr)
        return 1
    if not writer:
        return 0
    print(f"Testing Accuracy (first 100 images): {result.test_accuracy_first_100:.4f}")
    print(f"Testing Accuracy ({result.test_examples} images): {result.test_accuracy:.4f}")
    print(
        f"Wall time {result.wall_s:.1f} s (first step, with compilation, {result.first_step_s:.1f} s), "
        f"{result.samples_per_s:.0f} samples/s; run saved in {result.run_dir}"
    )
    return 0


# The TrainConfig fields that are flags of `rnnkit train`.
SETTINGS = (
    "mode",
    "cells",
    "data_dir",
    "layout",
    "train_samples",
    "epochs",
    "batch_size",
    "learning_rate",
    "clip_norm",
    "dropout",
    "display_step",
    "checkpoint_every",
    "checkpoint_minutes",
    "validation_size",
    "seed",
    "precision",
    "num_classes",
)


class RichReporter:
    """Progress bar with loss / accuracy / throughput, and the seed's lines above it."""

    def __init__(self) -> None:
        self.console = console()
        self.progress: Any = None
        self.task: Any = None

    def start(self, config: Any, total: int, first_step: int, run_dir: Any, num_params: int) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self.console.print(
            f"rnnkit train: {config.mode} {config.cells} ({num_params:,} parameters), layout {config.layout}, "
            f"batch {config.batch_size}, {total} steps, run dir {run_dir}"
            + (f", resuming at step {first_step}" if first_step else ""),
            soft_wrap=True,
        )
        self.progress = Progress(
            TextColumn("train"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]:.4f} acc {task.fields[acc]:.3f} {task.fields[speed]:.0f} samples/s"),
            TimeRemainingColumn(),
            console=self.console,
            transient=True,
        )
        self.progress.start()
        self.task = self.progress.add_task("train", total=total, completed=first_step, loss=0.0, acc=0.0, speed=0.0)

    def step(self, step: int, loss: float, accuracy: float, samples_per_s: float) -> None:
        self.progress.update(self.task, completed=step, loss=loss, acc=accuracy, speed=samples_per_s)

    def line(self, text: str) -> None:
        self.console.print(text, highlight=False, soft_wrap=True)

    def stop(self) -> None:
        if self.progress is not None:
            self.progress.stop()


COMMAND = Command("train", add_parser, handle)
