"""to_layout, split_validation and batch_indices against expectations computed independently (loops, literals)."""

from __future__ import annotations

import re

import numpy as np
import pytest

from rnnkit.data import LAYOUTS, DataError, batch_indices, split_validation, to_layout
from rnnkit.data._batches import _epoch_order

# --- layouts -----------------------------------------------------------------------------------


def random_images(n=3, h=4, w=5, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, h, w), dtype=np.uint8)


def test_layout_names():
    assert LAYOUTS == ("rows", "pixels", "permuted-pixels")


def test_rows_layout():
    images = random_images()  # 4x5: rows and columns cannot be confused
    out = to_layout(images, "rows")
    assert out.dtype == np.float32
    expected = [[[np.float32(images[n, r, c] / 255) for c in range(5)] for r in range(4)] for n in range(3)]
    np.testing.assert_array_equal(out, np.array(expected, dtype=np.float32))


def test_pixels_layout_is_row_major():
    images = random_images()
    out = to_layout(images, "pixels")
    assert out.dtype == np.float32
    expected = [[[np.float32(images[n, t // 5, t % 5] / 255)] for t in range(20)] for n in range(3)]
    np.testing.assert_array_equal(out, np.array(expected, dtype=np.float32))


def test_permuted_pixels_layout():
    images = random_images(n=2, h=28, w=28)
    out = to_layout(images, "permuted-pixels")
    assert out.shape == (2, 784, 1)
    assert out.dtype == np.float32
    perm = np.random.default_rng(2015).permutation(784)  # the documented fixed seed
    # Pinned literally: if NumPy ever changed this stream, the permuted-pixels task would silently change.
    assert perm[:12].tolist() == [365, 602, 20, 768, 671, 273, 716, 394, 661, 61, 441, 772]
    for n in range(2):
        for t in (0, 1, 2, 100, 783):
            p = perm[t]
            assert out[n, t, 0] == np.float32(images[n, p // 28, p % 28] / 255)
    flat = to_layout(images, "pixels")
    np.testing.assert_array_equal(out, flat[:, perm, :])


def test_permutation_is_the_same_for_any_batch():
    images = random_images(n=5, h=28, w=28, seed=1)
    whole = to_layout(images, "permuted-pixels")
    np.testing.assert_array_equal(to_layout(images[3:], "permuted-pixels"), whole[3:])
    assert not np.array_equal(whole, to_layout(images, "pixels"))


def test_scaling_is_k_over_255_for_every_value():
    images = np.arange(256, dtype=np.uint8).reshape(1, 16, 16)
    out = to_layout(images, "pixels")[0, :, 0]
    assert out.tolist() == [float(np.float32(k / 255)) for k in range(256)]
    assert out[0] == 0.0
    assert out[255] == 1.0


def test_unknown_layout():
    with pytest.raises(
        DataError, match=re.escape("unknown layout 'columns'; expected one of rows, pixels, permuted-pixels")
    ):
        to_layout(random_images(), "columns")


@pytest.mark.parametrize(
    ("images", "found"),
    [
        (np.zeros((2, 4, 4), np.float32), "got float32 with shape (2, 4, 4)"),
        (np.zeros((2, 16), np.uint8), "got uint8 with shape (2, 16)"),
        ([[[1]]], "got list"),
    ],
)
def test_layout_input_must_be_uint8_images(images, found):
    with pytest.raises(DataError, match=re.escape("images must be a") + ".*" + re.escape(found)):
        to_layout(images, "rows")


# --- split_validation ----------------------------------------------------------------------------


def ids_dataset(n=20):
    """Images whose every pixel is the example's id, labels equal to the id: alignment is checkable."""
    ids = np.arange(n)
    images = np.broadcast_to(ids[:, None, None], (n, 2, 3)).astype(np.uint8)
    return images, ids.astype(np.int64)


def test_split_is_the_documented_permutation():
    images, labels = ids_dataset(20)
    (tx, ty), (vx, vy) = split_validation(images, labels, 6, seed=3)
    perm = np.random.default_rng(3).permutation(20)
    assert vy.tolist() == sorted(perm[:6].tolist())
    assert ty.tolist() == sorted(perm[6:].tolist())
    np.testing.assert_array_equal(vx[:, 0, 0], vy)  # images stay with their labels
    np.testing.assert_array_equal(tx[:, 1, 2], ty)
    assert tx.dtype == np.uint8
    assert vy.dtype == np.int64


def test_split_is_disjoint_and_complete():
    images, labels = ids_dataset(50)
    (_, ty), (_, vy) = split_validation(images, labels, 12, seed=0)
    assert len(vy) == 12
    assert len(ty) == 38
    assert set(ty.tolist()).isdisjoint(vy.tolist())
    assert sorted(ty.tolist() + vy.tolist()) == list(range(50))


def test_split_is_deterministic_and_depends_on_seed():
    images, labels = ids_dataset(50)
    first = split_validation(images, labels, 10, seed=7)
    again = split_validation(images, labels, 10, seed=7)
    other = split_validation(images, labels, 10, seed=8)
    np.testing.assert_array_equal(first[1][1], again[1][1])
    np.testing.assert_array_equal(first[0][0], again[0][0])
    assert first[1][1].tolist() != other[1][1].tolist()


def test_empty_validation():
    images, labels = ids_dataset(5)
    (tx, ty), (vx, vy) = split_validation(images, labels, 0, seed=0)
    np.testing.assert_array_equal(tx, images)
    np.testing.assert_array_equal(ty, labels)
    assert vx.shape == (0, 2, 3)
    assert vy.shape == (0,)


@pytest.mark.parametrize(
    ("size", "seed", "message"),
    [
        (
            5,
            0,
            "validation_size must be smaller than the number of examples (5) so that some remain for training; got 5",
        ),
        (
            9,
            0,
            "validation_size must be smaller than the number of examples (5) so that some remain for training; got 9",
        ),
        (-1, 0, "validation_size must be an integer >= 0; got -1"),
        (2.0, 0, "validation_size must be an integer >= 0; got 2.0 (float)"),
        (True, 0, "validation_size must be an integer >= 0; got True (bool)"),
        (2, -3, "seed must be an integer >= 0; got -3"),
    ],
)
def test_split_refuses_bad_arguments(size, seed, message):
    images, labels = ids_dataset(5)
    with pytest.raises(DataError, match=re.escape(message)):
        split_validation(images, labels, size, seed)


def test_split_refuses_mismatched_labels():
    images, labels = ids_dataset(5)
    with pytest.raises(DataError, match=re.escape("got images of shape (5, 2, 3) and labels of shape (4,)")):
        split_validation(images, labels[:4], 1, 0)


def test_split_accepts_numpy_integers():
    images, labels = ids_dataset(5)
    (_, ty), _ = split_validation(images, labels, np.int64(2), np.uint32(1))
    assert len(ty) == 3


# --- batch_indices -------------------------------------------------------------------------------


def test_batches_follow_the_documented_formula():
    # 10 examples, batches of 3: 3 steps per epoch, example order of epoch e = default_rng([seed, e]).permutation(10)
    assert np.random.default_rng([7, 0]).permutation(10).tolist() == [8, 0, 7, 1, 3, 6, 2, 4, 5, 9]
    assert batch_indices(10, 3, seed=7, step=0).tolist() == [8, 0, 7]
    assert batch_indices(10, 3, seed=7, step=1).tolist() == [1, 3, 6]
    assert batch_indices(10, 3, seed=7, step=2).tolist() == [2, 4, 5]  # 9 is left out this epoch
    epoch1 = np.random.default_rng([7, 1]).permutation(10)
    assert batch_indices(10, 3, seed=7, step=3).tolist() == epoch1[:3].tolist()
    assert batch_indices(10, 3, seed=7, step=5).tolist() == epoch1[6:9].tolist()


@pytest.mark.parametrize(("n", "bs"), [(10, 3), (60, 7), (64, 8), (5, 5), (9, 1)])
def test_each_epoch_is_distinct_examples(n, bs):
    spe = n // bs
    for epoch in range(3):
        batches = [batch_indices(n, bs, seed=1, step=epoch * spe + k) for k in range(spe)]
        assert all(b.shape == (bs,) and b.dtype == np.int64 for b in batches)
        seen = np.concatenate(batches)
        assert len(set(seen.tolist())) == spe * bs
        assert seen.min() >= 0
        assert seen.max() < n


def test_epochs_and_seeds_shuffle_differently():
    assert batch_indices(1000, 100, 0, 0).tolist() != batch_indices(1000, 100, 0, 10).tolist()
    assert batch_indices(1000, 100, 0, 0).tolist() != batch_indices(1000, 100, 1, 0).tolist()


def test_resumed_run_sees_the_same_batches():
    n, bs, seed = 103, 10, 42
    uninterrupted = [batch_indices(n, bs, seed, step).tolist() for step in range(35)]
    _epoch_order.cache_clear()
    first_part = [batch_indices(n, bs, seed, step).tolist() for step in range(13)]
    _epoch_order.cache_clear()  # a new process: nothing carried over
    resumed = [batch_indices(n, bs, seed, step).tolist() for step in range(13, 35)]
    assert first_part + resumed == uninterrupted
    # and out of order, as a pure function must allow
    assert [batch_indices(n, bs, seed, step).tolist() for step in (30, 2, 17)] == [
        uninterrupted[s] for s in (30, 2, 17)
    ]


def test_returned_batch_is_a_private_copy():
    b = batch_indices(10, 3, seed=7, step=0)
    b[:] = -1
    assert batch_indices(10, 3, seed=7, step=0).tolist() == [8, 0, 7]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((10, 11, 0, 0), "batch_size must be at most the number of training examples (10); got 11"),
        ((10, 0, 0, 0), "batch_size must be an integer >= 1; got 0"),
        ((0, 1, 0, 0), "num_examples must be an integer >= 1; got 0"),
        ((10, 2, -1, 0), "seed must be an integer >= 0; got -1"),
        ((10, 2, 0, -1), "step must be an integer >= 0; got -1"),
        ((10, 2.5, 0, 0), "batch_size must be an integer >= 1; got 2.5 (float)"),
    ],
)
def test_batch_indices_refuses_bad_arguments(args, message):
    with pytest.raises(DataError, match=re.escape(message)):
        batch_indices(*args)
