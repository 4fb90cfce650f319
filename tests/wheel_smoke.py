"""The installed wheel's smoke test (`make wheel-check`), run by a fresh environment's Python
that has only the wheel and its requirements, away from the source tree and with no C++
compiler on the PATH: rnnkit comes from site-packages, its native CPU kernel loads (nothing
built at run time), `rnnkit env` says which build, and dynamic_rnn through the kernel gives the
per-step path's values and gradients. Not a pytest module: `python tests/wheel_smoke.py`."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path


def main() -> int:
    import equinox as eqx
    import jax
    import jax.numpy as jnp
    import numpy as np

    import rnnkit as rk
    from rnnkit import _native

    package = Path(rk.__file__).parent
    assert package.parent.name == "site-packages", f"rnnkit imported from {package}, not an installed wheel"
    assert not any(shutil.which(c) for c in ("c++", "g++", "cc", "gcc")), "a compiler is on the PATH"
    assert _native.available(), _native.describe()
    isa = _native.isa()
    assert {p.name for p in package.joinpath("_native").glob("*.so")} == {
        f"librnnkit_cpu_{i}.so" for i in _native.ISAS
    }, "the wheel carries one library per instruction set"
    env = subprocess.run([Path(sys.executable).with_name("rnnkit"), "env"], capture_output=True, text=True, check=True)
    kernel = next(line for line in env.stdout.splitlines() if line.startswith("native CPU kernel: "))
    assert kernel.startswith(f"native CPU kernel: {isa} ("), kernel

    k = jax.random.split(jax.random.key(0), 3)
    cell = rk.MultiRNNCell([rk.LSTMCell(16, input_size=8, key=k[0]), rk.GRUCell(12, input_size=16, key=k[1])])
    x = jax.random.normal(k[2], (4, 9, 8))
    lengths = jnp.asarray([9, 3, 0, 6])
    params, static = eqx.partition(cell, eqx.is_inexact_array)

    def loss(p: object, x: jax.Array, how: str) -> jax.Array:
        out, state = rk.dynamic_rnn(eqx.combine(p, static), x, lengths, implementation=how)
        return jnp.sum(jnp.sin(out)) + sum(jnp.sum(jnp.cos(s)) for s in jax.tree_util.tree_leaves(state))

    def run(how: str) -> list[np.ndarray]:
        value, grads = jax.jit(jax.value_and_grad(lambda p, x: loss(p, x, how), (0, 1)))(params, x)
        return [np.asarray(a) for a in [value, *jax.tree_util.tree_leaves(grads)]]

    assert "rnnkit_lstm_bwd" in str(jax.make_jaxpr(jax.grad(lambda p: loss(p, x, "native")))(params))
    for got, want in zip(run("native"), run("per_step"), strict=True):
        np.testing.assert_allclose(got, want, rtol=2e-5, atol=2e-5)
    print(f"wheel smoke test passed: rnnkit from {package}; {kernel}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
