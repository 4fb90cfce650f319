"""Models built from rnnkit's cells."""

from rnnkit.models.classifier import CELL_KINDS as CELL_KINDS
from rnnkit.models.classifier import CellSpec as CellSpec
from rnnkit.models.classifier import SequenceClassifier as SequenceClassifier
from rnnkit.models.classifier import build_classifier as build_classifier
from rnnkit.models.classifier import format_cells as format_cells
from rnnkit.models.classifier import parse_cells as parse_cells
