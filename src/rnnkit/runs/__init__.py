"""What a run directory is: its config, its checkpoint files, and opening it to a model.

Everything that reads or writes a run (training, eval and predict, export, conversion) goes
through here, so the layout of a run directory is stated once:

    import rnnkit.runs as runs

    config = runs.read_run_config("runs/seed")        # TrainConfig from config.json
    model, step = runs.load_model("runs/seed", config)  # its SequenceClassifier, weights checked
    model = runs.load_run_model("runs/seed")           # the same, in one call
    runs.read_metrics("runs/seed")                     # metrics.jsonl's records

`_files` holds the file names and their reading and writing (atomic, steps checked), `_lock`
the one-writer lock, `_outputs` the rule for files a command writes,
`_config` the TrainConfig, `_optimizer` the run's optimizer and its saved state, `_open` the
model a config describes. This layer sits above the models and below every workflow.
"""

from rnnkit.runs._config import TrainConfig as TrainConfig
from rnnkit.runs._config import backend_refusal as backend_refusal
from rnnkit.runs._config import check_backend_precision as check_backend_precision
from rnnkit.runs._config import parse_run_cells as parse_run_cells
from rnnkit.runs._config import read_run_config as read_run_config
from rnnkit.runs._config import resume_config as resume_config
from rnnkit.runs._files import CONFIG as CONFIG
from rnnkit.runs._files import CURVES as CURVES
from rnnkit.runs._files import METRICS as METRICS
from rnnkit.runs._files import MODEL as MODEL
from rnnkit.runs._files import OPTIMIZER as OPTIMIZER
from rnnkit.runs._files import append_metrics as append_metrics
from rnnkit.runs._files import checkpoint_step as checkpoint_step
from rnnkit.runs._files import first_non_finite as first_non_finite
from rnnkit.runs._files import has_checkpoint as has_checkpoint
from rnnkit.runs._files import holds_run as holds_run
from rnnkit.runs._files import load_checkpoint as load_checkpoint
from rnnkit.runs._files import load_model_variables as load_model_variables
from rnnkit.runs._files import read_config as read_config
from rnnkit.runs._files import read_metrics as read_metrics
from rnnkit.runs._files import read_safetensors as read_safetensors
from rnnkit.runs._files import save_checkpoint as save_checkpoint
from rnnkit.runs._files import saved_step as saved_step
from rnnkit.runs._files import truncate_metrics as truncate_metrics
from rnnkit.runs._lock import LOCK as LOCK
from rnnkit.runs._lock import RunInUse as RunInUse
from rnnkit.runs._lock import lock_run_dir as lock_run_dir
from rnnkit.runs._lock import locked_run_dir as locked_run_dir
from rnnkit.runs._lock import new_run_dir as new_run_dir
from rnnkit.runs._lock import release_run_dir as release_run_dir
from rnnkit.runs._open import build_model as build_model
from rnnkit.runs._open import load_model as load_model
from rnnkit.runs._open import load_run_model as load_run_model
from rnnkit.runs._open import with_checkpoint_weights as with_checkpoint_weights
from rnnkit.runs._optimizer import make_optimizer as make_optimizer
from rnnkit.runs._optimizer import optimizer_variables as optimizer_variables
from rnnkit.runs._optimizer import restore_optimizer_state as restore_optimizer_state
from rnnkit.runs._optimizer import tf1_adam as tf1_adam
from rnnkit.runs._outputs import RUN_FILES as RUN_FILES
from rnnkit.runs._outputs import check_output as check_output
