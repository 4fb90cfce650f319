"""`python -m rnnkit.cli`: the same as the installed `rnnkit` script."""

from rnnkit.cli import run

run()
