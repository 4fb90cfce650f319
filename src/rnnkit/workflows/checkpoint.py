"""Run directory files, kept importable here for code written against this path; they live in
`rnnkit.runs` (what a run directory is) and the atomic writes in `rnnkit._atomic`."""

from rnnkit._atomic import atomic_write_bytes as atomic_write_bytes
from rnnkit._atomic import atomic_write_text as atomic_write_text
from rnnkit.errors import CheckpointError as CheckpointError
from rnnkit.runs._files import CONFIG as CONFIG
from rnnkit.runs._files import CURVES as CURVES
from rnnkit.runs._files import METRICS as METRICS
from rnnkit.runs._files import MODEL as MODEL
from rnnkit.runs._files import OPTIMIZER as OPTIMIZER
from rnnkit.runs._files import append_metrics as append_metrics
from rnnkit.runs._files import has_checkpoint as has_checkpoint
from rnnkit.runs._files import load_checkpoint as load_checkpoint
from rnnkit.runs._files import load_model_variables as load_model_variables
from rnnkit.runs._files import read_config as read_config
from rnnkit.runs._files import read_metrics as read_metrics
from rnnkit.runs._files import read_safetensors as read_safetensors
from rnnkit.runs._files import save_checkpoint as save_checkpoint
from rnnkit.runs._files import truncate_metrics as truncate_metrics
