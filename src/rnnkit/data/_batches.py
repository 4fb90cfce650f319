"""Which examples make up training batch number `step`: a pure function, so training can resume exactly.

A run that stops at step k and resumes must see the very batches an uninterrupted run would
have seen from step k on; any state kept in an iterator would be lost at the interruption. So
the batch is computed from (num_examples, batch_size, seed, step) alone:

    steps_per_epoch = num_examples // batch_size
    epoch, k        = divmod(step, steps_per_epoch)
    order           = np.random.default_rng([seed, epoch]).permutation(num_examples)
    batch           = order[k * batch_size : (k + 1) * batch_size]

The last incomplete batch of each epoch is dropped, so every batch has the same shape (one jit
compilation) and each epoch draws `steps_per_epoch * batch_size` distinct examples. Seeding with
[seed, epoch] gives each epoch an independent, reproducible shuffle.
"""

from __future__ import annotations

import functools

import numpy as np

from rnnkit.data._checks import check_int
from rnnkit.data._errors import DataError


@functools.lru_cache(maxsize=4)
def _epoch_order(num_examples: int, seed: int, epoch: int) -> np.ndarray:
    """One epoch's shuffle, cached because consecutive steps almost always share an epoch."""
    order = np.random.default_rng([seed, epoch]).permutation(num_examples)
    order.setflags(write=False)
    return order


def batch_indices(num_examples: int, batch_size: int, seed: int, step: int) -> np.ndarray:
    """The example indices (int64 [batch_size]) of training batch `step` (0-based); see the module doc."""
    num_examples = check_int(num_examples, name="num_examples", minimum=1)
    batch_size = check_int(batch_size, name="batch_size", minimum=1)
    seed = check_int(seed, name="seed", minimum=0)
    step = check_int(step, name="step", minimum=0)
    if batch_size > num_examples:
        raise DataError(
            f"batch_size must be at most the number of training examples ({num_examples}); got {batch_size}"
        )
    steps_per_epoch = num_examples // batch_size
    epoch, k = divmod(step, steps_per_epoch)
    return _epoch_order(num_examples, seed, epoch)[k * batch_size : (k + 1) * batch_size].copy()
