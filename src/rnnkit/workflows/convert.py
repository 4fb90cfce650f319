"""`rnnkit convert`: converted weights into a run directory, and a run directory out to a TF1
checkpoint, PyTorch, Keras or Flax. The functions live in `rnnkit.convert` (the conversion
layer, below the workflows); they stay importable from here."""

from rnnkit.convert._run_dir import check_target as check_target
from rnnkit.convert._run_dir import export_flax_file as export_flax_file
from rnnkit.convert._run_dir import export_keras_file as export_keras_file
from rnnkit.convert._run_dir import export_tf1_checkpoint as export_tf1_checkpoint
from rnnkit.convert._run_dir import export_torch_file as export_torch_file
from rnnkit.convert._run_dir import load_keras_file as load_keras_file
from rnnkit.convert._run_dir import optimizer_state as optimizer_state
from rnnkit.convert._run_dir import run_adam_state as run_adam_state
from rnnkit.convert._run_dir import run_config as run_config
from rnnkit.convert._run_dir import write_run_dir as write_run_dir
from rnnkit.runs import load_run_model as load_run_model
