"""Weights in and out of rnnkit, exactly: TF1 checkpoints, PyTorch state_dicts, Keras 3 weights,
Flax parameter trees.

    import rnnkit.convert as rc

    c = rc.from_tf1_checkpoint("model.ckpt-781")        # cells and head inferred from names/shapes
    c.cells, c.adam.step                                 # 'lstm:128,gru:256', 781 (Adam's state, carried)
    model = c.classifier()                               # a SequenceClassifier with the weights
    rc.write_run_dir(c, "runs/from-tf1")                 # for rnnkit eval / predict / train --resume
    rc.export_tf1_checkpoint("runs/seed3", "ckpt/seed3.ckpt")  # weights and Adam state, for TF1's Saver

    sd = rc.to_torch_state_dict(model)                   # rnn.0.weight_ih_l0, ..., fc.weight
    c = rc.from_torch_state_dict(torch_module.state_dict())
    w = rc.to_keras_weights(model)                       # keras_model.set_weights(w)
    c = rc.from_keras_weights(keras_model.get_weights())
    tree = rc.to_flax_params(model, style="nnx")        # or "linen"; rc.flax_model builds the module
    c = rc.from_flax_params(nnx.state(flax_module, nnx.Param))

TF1 checkpoints are read and written by rnnkit's own code for TensorFlow's checkpoint format
(`_bundle.py`, `_sstable.py`): no TensorFlow needed. Nothing here imports PyTorch or Flax until
a function needs one (reading or writing a `.pt` or `.msgpack` file; `tensors=True`;
`flax_model`), and then a missing one is a ConfigError that says what to install. Each
module's docstring gives its layout and naming.
"""

from rnnkit.convert._flax import flax_model as flax_model
from rnnkit.convert._flax import from_flax_params as from_flax_params
from rnnkit.convert._flax import to_flax_params as to_flax_params
from rnnkit.convert._keras import from_keras_weights as from_keras_weights
from rnnkit.convert._keras import keras_layers as keras_layers
from rnnkit.convert._keras import to_keras_weights as to_keras_weights
from rnnkit.convert._run_dir import export_flax_file as export_flax_file
from rnnkit.convert._run_dir import export_tf1_checkpoint as export_tf1_checkpoint
from rnnkit.convert._run_dir import export_torch_file as export_torch_file
from rnnkit.convert._run_dir import write_run_dir as write_run_dir
from rnnkit.convert._stack import AdamState as AdamState
from rnnkit.convert._stack import Conversion as Conversion
from rnnkit.convert._tf1 import from_tf1_checkpoint as from_tf1_checkpoint
from rnnkit.convert._tf1 import from_tf1_variables as from_tf1_variables
from rnnkit.convert._tf1 import read_tf1_checkpoint as read_tf1_checkpoint
from rnnkit.convert._tf1 import tf1_variables as tf1_variables
from rnnkit.convert._tf1 import write_tf1_checkpoint as write_tf1_checkpoint
from rnnkit.convert._torch import from_torch_file as from_torch_file
from rnnkit.convert._torch import from_torch_state_dict as from_torch_state_dict
from rnnkit.convert._torch import load_torch_file as load_torch_file
from rnnkit.convert._torch import to_torch_state_dict as to_torch_state_dict
from rnnkit.convert._torch import torch_modules as torch_modules

__all__ = [
    "AdamState",
    "Conversion",
    "export_flax_file",
    "export_tf1_checkpoint",
    "export_torch_file",
    "flax_model",
    "from_flax_params",
    "from_keras_weights",
    "from_tf1_checkpoint",
    "from_tf1_variables",
    "from_torch_file",
    "from_torch_state_dict",
    "keras_layers",
    "load_torch_file",
    "read_tf1_checkpoint",
    "tf1_variables",
    "to_flax_params",
    "to_keras_weights",
    "to_torch_state_dict",
    "torch_modules",
    "write_run_dir",
    "write_tf1_checkpoint",
]
