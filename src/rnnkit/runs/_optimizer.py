"""A run's optimizer: TF1's Adam (clipped where the config says), and its state as the flat,
named arrays of optimizer.safetensors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from rnnkit.errors import CheckpointError
from rnnkit.runs._config import TrainConfig
from rnnkit.runs._files import OPTIMIZER


def _zeros_like(p: Any) -> Any:
    """Zeros like `p`, copied from host memory where `p` is a concrete array: `jnp.zeros_like`
    compiles a program per distinct shape, 0.24-0.33 s of the seed model's first training
    step here, for buffers a host copy fills at once. Placed as `p` is, committed to its
    devices only where `p` is (a committed argument is a different program to jit)."""
    if isinstance(p, jax.core.Tracer) or not isinstance(p, jax.Array):
        return jnp.zeros_like(p)
    return jax.device_put(np.zeros(p.shape, p.dtype), p.sharding if p.committed else None)


def tf1_adam(
    learning_rate: float, beta1: float = 0.9, beta2: float = 0.999, epsilon: float = 1e-8
) -> optax.GradientTransformation:
    """TF1's `AdamOptimizer`, update for update: at step t,

        lr_t = learning_rate * sqrt(1 - beta2^t) / (1 - beta1^t)
        var -= lr_t * m_t / (sqrt(v_t) + epsilon)

    `optax.adam` divides by sqrt(v_hat) + epsilon instead, i.e. uses epsilon * sqrt(1 - beta2^t)
    in TF1's terms; the two differ where gradients are tiny (the first steps' losses moved
    by ~1e-4 against TF1 with optax.adam on the seed's model)."""

    def init(params: Any) -> optax.ScaleByAdamState:
        def zeros() -> Any:  # separate buffers for mu and nu: both are donated to the train step
            return jax.tree_util.tree_map(_zeros_like, params)

        return optax.ScaleByAdamState(count=jnp.zeros([], jnp.int32), mu=zeros(), nu=zeros())

    def update(grads: Any, state: optax.ScaleByAdamState, params: Any = None) -> tuple[Any, optax.ScaleByAdamState]:
        del params
        mu = jax.tree_util.tree_map(lambda m, g: beta1 * m + (1 - beta1) * g, state.mu, grads)
        nu = jax.tree_util.tree_map(lambda v, g: beta2 * v + (1 - beta2) * g * g, state.nu, grads)
        count = state.count + 1
        t = count.astype(jnp.float32)
        lr_t = learning_rate * jnp.sqrt(1 - beta2**t) / (1 - beta1**t)
        updates = jax.tree_util.tree_map(lambda m, v: -lr_t * m / (jnp.sqrt(v) + epsilon), mu, nu)
        return updates, optax.ScaleByAdamState(count=count, mu=mu, nu=nu)

    return optax.GradientTransformation(init, update)


def make_optimizer(config: TrainConfig) -> optax.GradientTransformation:
    """The run's optimizer: TF1's Adam at the config's learning rate, after global-norm
    clipping where the config sets `clip_norm`."""
    adam = tf1_adam(config.learning_rate)  # the seed's tf.train.AdamOptimizer, its defaults
    return adam if config.clip_norm is None else optax.chain(optax.clip_by_global_norm(config.clip_norm), adam)


def optimizer_variables(opt_state: Any) -> dict[str, np.ndarray]:
    """The optimizer state as host arrays named by their pytree path, as optimizer.safetensors keeps it."""
    leaves = jax.tree_util.tree_flatten_with_path(opt_state)[0]
    return {jax.tree_util.keystr(path): np.asarray(leaf) for path, leaf in leaves}


def restore_optimizer_state(template: Any, saved: dict[str, np.ndarray], run_dir: Path) -> Any:
    """`saved` (from `optimizer_variables`) put back into the shape of `template` (the state a
    fresh optimizer starts from), refusing names, shapes or dtypes that differ."""
    leaves, treedef = jax.tree_util.tree_flatten_with_path(template)
    names = [jax.tree_util.keystr(path) for path, _ in leaves]
    if set(names) != set(saved):
        raise CheckpointError(
            f"{run_dir}/{OPTIMIZER} does not match this model's optimizer: "
            f"missing {sorted(set(names) - set(saved))}, unexpected {sorted(set(saved) - set(names))}"
        )
    for (_, leaf), name in zip(leaves, names, strict=True):
        if saved[name].shape != leaf.shape or saved[name].dtype != leaf.dtype:
            raise CheckpointError(
                f"{run_dir}/{OPTIMIZER}: {name} must be {leaf.dtype}{list(leaf.shape)}; "
                f"got {saved[name].dtype}{list(saved[name].shape)}"
            )
    return jax.tree_util.tree_unflatten(treedef, [jnp.asarray(saved[name]) for name in names])
