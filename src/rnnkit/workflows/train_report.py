"""What a training run tells its caller: progress as it goes (a `Reporter`), the result at the
end, the interruption that ends it early, and the loss and accuracy curves it leaves."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from rnnkit import runs
from rnnkit.runs import TrainConfig
from rnnkit.workflows.plots import pyplot, save_png


class Reporter(Protocol):
    """What the training loop tells its caller; the CLI draws it with Rich, tests collect it."""

    def start(self, config: TrainConfig, total: int, first_step: int, run_dir: Path, num_params: int) -> None: ...
    def step(self, step: int, loss: float, accuracy: float, samples_per_s: float) -> None: ...
    def line(self, text: str) -> None: ...
    def stop(self) -> None: ...


class SilentReporter:
    """A Reporter that shows nothing (the default of `train`)."""

    def start(self, config: TrainConfig, total: int, first_step: int, run_dir: Path, num_params: int) -> None:
        pass

    def step(self, step: int, loss: float, accuracy: float, samples_per_s: float) -> None:
        pass

    def line(self, text: str) -> None:
        pass

    def stop(self) -> None:
        pass


@dataclass(frozen=True)
class TrainResult:
    """The figures of a finished run; its metrics.jsonl holds them too."""

    run_dir: Path
    steps: int
    test_accuracy_first_100: float
    test_accuracy: float
    test_loss: float
    wall_s: float
    samples_per_s: float  # training steps only: after the first (compiling) step, without validations and checkpoints
    first_step_s: float  # the first step: trace + compile + run
    test_examples: int = 0  # the size of the test split the accuracy is over


class TrainingInterrupted(Exception):
    """Ctrl-C (SIGINT) or SIGTERM during training; the checkpoint at `step` was saved before
    this was raised. `signal` is the signal's number."""

    def __init__(self, run_dir: Path, step: int, signal: int = 2):
        super().__init__(f"interrupted at step {step}; checkpoint saved in {run_dir}")
        self.run_dir, self.step, self.signal = run_dir, step, signal


class TrainingDiverged(Exception):
    """The loss or a weight became NaN or infinite at `step`; nothing after the last finite
    checkpoint (`saved`, None if the run has none) was written."""

    def __init__(self, run_dir: Path, step: int, what: str, saved: int | None):
        kept = f"the last finite checkpoint (step {saved}) is kept" if saved is not None else "no checkpoint was saved"
        super().__init__(
            f"training diverged at step {step}: {what} is NaN or infinite; {kept} in {run_dir}. "
            "Try a lower --learning-rate or --clip-norm"
        )
        self.run_dir, self.step, self.what, self.saved = run_dir, step, what, saved


def plot_curves(run_dir: Path) -> None:
    plt = pyplot()

    records = runs.read_metrics(run_dir)
    train = [r for r in records if "loss" in r]
    valid = [r for r in records if "val_loss" in r]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot([r["step"] for r in train], [r["loss"] for r in train], label="minibatch")
    ax_loss.plot([r["step"] for r in valid], [r["val_loss"] for r in valid], "o-", label="validation")
    ax_acc.plot([r["step"] for r in train], [r["accuracy"] for r in train], label="minibatch")
    ax_acc.plot([r["step"] for r in valid], [r["val_accuracy"] for r in valid], "o-", label="validation")
    for ax, name in ((ax_loss, "cross-entropy loss"), (ax_acc, "accuracy")):
        ax.set_xlabel("step")
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(f"rnnkit train: {run_dir.name}")
    fig.tight_layout()
    save_png(fig, run_dir / runs.CURVES)
