"""`rnnkit convert`: converted weights into a run directory, and a run directory out to a TF1
checkpoint, PyTorch, Keras or Flax.

`convert` is the command as one call: it tells the two directions apart and runs the matching
function of `rnnkit.convert` (the conversion layer, below the workflows). Those functions stay
importable from here under their old names.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import rnnkit.convert as rc
from rnnkit.convert import Conversion
from rnnkit.convert._flax import load_flax_file
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

FORMATS = ("tf1", "torch", "keras", "flax")


@dataclass(frozen=True)
class Converted:
    """What `convert` did: `out` is the run directory or the weights file it wrote; `conversion`
    is the converted model where weights came into rnnkit, None where a run went out."""

    source: Path
    out: Path
    conversion: Conversion | None


def is_run_out(fmt: str, source: Path) -> bool:
    """A run directory goes out; anything else comes in. A TF1 checkpoint may be a directory
    too, so for tf1 only a directory holding a run's config.json counts as a run."""
    return source.is_dir() and (fmt != "tf1" or (source / "config.json").is_file())


def convert(
    fmt: str,
    source: str | Path,
    out: str | Path,
    *,
    cells: str | None = None,
    scope: str = "rnn",
    head: str | None = None,
    modules: Sequence[str] | None = None,
    forget_bias: float = 0.0,
    allow_unused: bool = False,
    style: str = "nnx",
    layout: str = "rows",
    image_shape: tuple[int, int] = (28, 28),
    mode: str = "dynamic",
    force: bool = False,
) -> Converted:
    """Convert `source` in format `fmt` (one of FORMATS) to `out`: a run directory out to that
    format's file, or that format's weights into a new run directory. `scope` is TF1's only,
    `modules` PyTorch's and Flax's, `style` Flax's when writing; the rest as `rnnkit convert`."""
    source, out = Path(source), Path(out)
    if is_run_out(fmt, source):
        if fmt == "tf1":
            return Converted(source, export_tf1_checkpoint(source, out, force=force), None)
        if fmt == "flax":
            return Converted(source, export_flax_file(source, out, style=style, force=force), None)
        export = export_torch_file if fmt == "torch" else export_keras_file
        return Converted(source, export(source, out, force=force), None)
    check_target(out, force)  # before reading a source that may be large
    names = None if modules is None else list(modules)
    if fmt == "tf1":
        conversion = rc.from_tf1_checkpoint(source, cells=cells, scope=scope, head=head, allow_unused=allow_unused)
    elif fmt == "torch":
        conversion = rc.from_torch_file(
            source, cells=cells, modules=names, head=head, forget_bias=forget_bias, allow_unused=allow_unused
        )
    elif fmt == "flax":
        conversion = rc.from_flax_params(
            load_flax_file(source),
            cells=cells,
            modules=names,
            head=head,
            forget_bias=forget_bias,
            allow_unused=allow_unused,
            source=str(source),
        )
    else:
        conversion = rc.from_keras_weights(
            load_keras_file(source), cells=cells, forget_bias=forget_bias, source=str(source)
        )
    run_dir = rc.write_run_dir(conversion, out, layout=layout, image_shape=image_shape, mode=mode, force=force)
    return Converted(source, Path(run_dir), conversion)
