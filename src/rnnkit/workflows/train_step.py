"""The jitted programs of training and evaluation: the train step (forward, backward, optimizer
update; on one device or over a mesh), inference with dropout off, and the loss they share."""

from __future__ import annotations

from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from rnnkit.workflows.distributed import DataParallel


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Mean softmax cross-entropy of `logits` [batch, classes] against integer `labels` [batch]
    (the seed's `tf.nn.softmax_cross_entropy_with_logits` on one-hot labels, averaged)."""
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def make_train_step(static: Any, optimizer: optax.GradientTransformation) -> Any:
    """One jitted step: loss, gradients, the optimizer update. Params and optimizer state are
    donated: their buffers are reused for the new values."""
    return jax.jit(_train_step_fn(static, optimizer), donate_argnums=(0, 1))


def _train_step_fn(static: Any, optimizer: optax.GradientTransformation) -> Any:
    def step(params: Any, opt_state: Any, x: jax.Array, y: jax.Array, key: jax.Array) -> tuple[Any, ...]:
        def loss_fn(p: Any) -> tuple[jax.Array, jax.Array]:
            model = eqx.combine(p, static).with_dropout_key(key)
            logits = model(x)
            return cross_entropy(logits, y), logits

        (loss, logits), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        accuracy = jnp.mean(jnp.argmax(logits, axis=-1) == y)
        return params, opt_state, loss, accuracy

    return step


def make_parallel_train_step(
    static: Any, optimizer: optax.GradientTransformation, parallel: DataParallel, dropout_key: jax.Array
) -> Any:
    """The train step over a device mesh: x and y sharded over the batch, the rest replicated;
    takes the step number (the dropout key is derived inside, as the single-device loop does
    outside, so both draw the same masks)."""
    step_fn = _train_step_fn(static, optimizer)

    def step(params: Any, opt_state: Any, x: jax.Array, y: jax.Array, at: jax.Array) -> tuple[Any, ...]:
        return step_fn(params, opt_state, x, y, jax.random.fold_in(dropout_key, at))

    return parallel.jit(step, batch_args=(2, 3), num_args=5, donate_argnums=(0, 1))


def make_predict(static: Any, parallel: DataParallel | None = None) -> Any:
    """Jitted inference: dropout off. Over `parallel`'s mesh, x is sharded over the batch and
    the logits gathered on every device."""

    def predict(params: Any, x: jax.Array) -> jax.Array:
        return eqx.nn.inference_mode(eqx.combine(params, static))(x)

    return jax.jit(predict) if parallel is None else parallel.jit(predict, batch_args=(1,), num_args=2)


def predict_logits(predict: Any, params: Any, x: np.ndarray, batch_size: int) -> np.ndarray:
    """Logits for all of x, in fixed-size batches (the last one padded) so it compiles once."""
    out = []
    for start in range(0, len(x), batch_size):
        chunk = x[start : start + batch_size]
        pad = batch_size - len(chunk)
        padded = np.concatenate([chunk, np.zeros((pad, *chunk.shape[1:]), chunk.dtype)]) if pad else chunk
        out.append(np.asarray(predict(params, padded))[: len(chunk)])
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def loss_and_accuracy(logits: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """Mean cross-entropy and the fraction of argmax predictions equal to `labels`."""
    loss = float(cross_entropy(jnp.asarray(logits), jnp.asarray(labels)))
    return loss, float(np.mean(logits.argmax(axis=-1) == labels))
