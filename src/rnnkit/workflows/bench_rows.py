"""What `rnnkit bench` measures: workloads, and rows (one framework's way of running the seed's
model) that build a runner for a workload.

Every row runs the same model, the seed's: LSTM(128) -> GRU(256) -> dense(10) on the last
step's output, float32, softmax cross-entropy, Adam(1e-3). A training step is forward,
backward and the Adam update; an inference step is the forward pass to logits. Inputs are one
fixed random batch (uniform [0, 1)) with fixed random labels, made from the seed.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

TASKS = ("train", "infer")
LSTM_UNITS, GRU_UNITS, NUM_CLASSES = 128, 256, 10
LEARNING_RATE = 1e-3
# Unrolled programs (static_rnn, TF1's static graph, torch.compile's unrolled loop) are built
# up to this many steps: their build or compile time grows with the length, to many minutes
# at 784 steps on two cores.
UNROLLED_MAX_STEPS = 56


@dataclass(frozen=True)
class Workload:
    """One measured configuration: training or inference, batch size, time steps, features."""

    task: str
    batch: int
    steps: int
    features: int

    @property
    def key(self) -> str:
        return f"{self.task} b{self.batch} T{self.steps} F{self.features}"

    def batch_arrays(self, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """The fixed batch every row is fed: x [batch, steps, features] float32, labels [batch] int32."""
        rng = np.random.default_rng(seed)
        x = rng.random((self.batch, self.steps, self.features), dtype=np.float32)
        y = rng.integers(0, NUM_CLASSES, size=self.batch).astype(np.int32)
        return x, y


class Runner(Protocol):
    def step(self) -> None:
        """One training step (forward, backward, Adam update) or one inference forward pass on
        the row's fixed batch; returns when the result is computed (synchronised)."""


@dataclass(frozen=True)
class Row:
    """One framework's implementation of the seed's model.

    `build(workload, seed)` makes the model, optimizer and (for graph frameworks) the graph, and
    returns a runner; compilation may happen at the runner's first step, and the harness
    counts build plus first step as "time to first step". `skip(workload)` gives a reason not
    to run a workload (None to run it). `versions()` names the framework versions used.
    """

    name: str
    label: str
    requires: tuple[str, ...]
    build: Callable[[Workload, int], Runner]
    versions: Callable[[], dict[str, str]]
    skip: Callable[[Workload], str | None] = field(default=lambda w: None)
    note: str = ""
    # For rows with an on-disk compilation cache: forget everything compiled in this process,
    # so a second build + first step shows what a new process would pay with a warm cache.
    forget_compiled: Callable[[], None] | None = None

    def missing(self) -> str | None:
        """Why this row can't run here (a required module is not installed), or None."""
        for module in self.requires:
            if importlib.util.find_spec(module) is None:
                return f"{module} is not installed"
        return None
