"""rnnkit: TensorFlow 1's recurrent-network API on JAX, with TF1's numerics and variable names.

import rnnkit as rk
cell = rk.MultiRNNCell([rk.LSTMCell(128, input_size=28, key=k1), rk.GRUCell(256, input_size=128, key=k2)])
outputs, state = rk.dynamic_rnn(cell, x, dtype=jnp.float32)      # x: [batch, time, 28]
outputs, state = rk.static_rnn(cell, x, dtype=jnp.float32)       # same numbers, unrolled
"""

from rnnkit._cells import BasicLSTMCell as BasicLSTMCell
from rnnkit._cells import BasicRNNCell as BasicRNNCell
from rnnkit._cells import GRUCell as GRUCell
from rnnkit._cells import LSTMCell as LSTMCell
from rnnkit._cells import LSTMStateTuple as LSTMStateTuple
from rnnkit._cells import RNNCell as RNNCell
from rnnkit._rnn import bidirectional_dynamic_rnn as bidirectional_dynamic_rnn
from rnnkit._rnn import dynamic_rnn as dynamic_rnn
from rnnkit._rnn import last_relevant as last_relevant
from rnnkit._rnn import static_bidirectional_rnn as static_bidirectional_rnn
from rnnkit._rnn import static_rnn as static_rnn
from rnnkit._variables import get_variables as get_variables
from rnnkit._variables import set_variables as set_variables
from rnnkit._version import __version__ as __version__
from rnnkit._wrappers import DropoutWrapper as DropoutWrapper
from rnnkit._wrappers import MultiRNNCell as MultiRNNCell
from rnnkit._wrappers import ResidualWrapper as ResidualWrapper

_SUBMODULES = ("convert", "export")  # loaded on first use: `import rnnkit` stays light


def __getattr__(name: str) -> object:
    if name in _SUBMODULES:
        import importlib

        return importlib.import_module(f"rnnkit.{name}")
    raise AttributeError(f"module 'rnnkit' has no attribute {name!r}")
