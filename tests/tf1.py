"""TensorFlow 1 (tf.compat.v1) for the tests that check rnnkit against it, imported the one way
that gives TF1's RNN cells.

tf.compat.v1's cells (`v1.nn.rnn_cell`) come from tf-keras, and tensorflow only uses tf-keras
when TF_USE_LEGACY_KERAS=1 is set before tensorflow is first imported; under Keras 3 the
cells are gone. Importing this module sets that (unless the environment already says
otherwise), imports tensorflow and checks the cells are there. Where tensorflow is not
installed, or tf-keras is missing, or tensorflow was imported earlier without the setting,
the import skips: a test module that starts with `from tf1 import tf, v1, rnn_cell` is
skipped as a whole, with the reason, instead of failing to collect.

    pytestmark = [*tf1.MARKS, ...]  # the `tf` marker and TF1's deprecation warnings
"""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
tf = pytest.importorskip("tensorflow")

v1 = tf.compat.v1
try:
    rnn_cell = v1.nn.rnn_cell
    rnn_cell.MultiRNNCell  # noqa: B018  (raises under Keras 3)
except AttributeError as err:  # tf-keras missing, or tensorflow imported before TF_USE_LEGACY_KERAS=1
    pytest.skip(
        f"tf.compat.v1 RNN cells unavailable ({err}); install tf-keras and set TF_USE_LEGACY_KERAS=1 "
        "before tensorflow is imported",
        allow_module_level=True,
    )

MARKS = [
    pytest.mark.tf,
    # TF1's cell classes warn on construction; the warning is attributed to the test module.
    pytest.mark.filterwarnings(r"ignore:`tf\.nn\.rnn_cell\.\w+` is deprecated:UserWarning"),
]
