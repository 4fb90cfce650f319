"""What a traced program is made of, read from its structure rather than its printed text.

`eqns(fn, *args)` traces `fn` with `jax.make_jaxpr` and returns every equation of the program,
depth first, including those inside sub-jaxprs held in an equation's params: scan and while
bodies, cond branches, pjit (jit) calls, custom_jvp / custom_vjp calls. A test then asks about
primitives and their params (`eqn.primitive.name`, `eqn.params["precision"]`, an FFI call's
`target_name`), which neither breaks when JAX changes how it prints a jaxpr nor matches a
string that happens to appear elsewhere in the text. For example, the precision of every
matmul a cell asks for, and the native kernel's calls in a gradient:

    [dot["precision"] for dot in params_of("dot_general", cell, x, state)]
    ffi_targets(jax.grad(loss), params, x)  # ["rnnkit_gru_fwd", "rnnkit_gru_bwd"]

A custom_vjp's backward function is not a jaxpr until it is differentiated: to see what the
backward pass runs, trace the gradient (`eqns(jax.grad(loss), ...)`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import jax
from jax.extend.core import ClosedJaxpr, Jaxpr, JaxprEqn, jaxprs_in_params


def walk(jaxpr: Jaxpr | ClosedJaxpr) -> Iterator[JaxprEqn]:
    """Every equation of `jaxpr`, depth first: an equation, then those of its sub-jaxprs."""
    if isinstance(jaxpr, ClosedJaxpr):
        jaxpr = jaxpr.jaxpr
    for eqn in jaxpr.eqns:
        yield eqn
        for sub in jaxprs_in_params(eqn.params):
            yield from walk(sub)


def eqns(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> list[JaxprEqn]:
    """Every equation of `jax.make_jaxpr(fn)(*args, **kwargs)`, sub-jaxprs included (`walk`)."""
    return list(walk(jax.make_jaxpr(fn)(*args, **kwargs)))


def primitives(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> list[str]:
    """The name of every primitive `fn` runs, once per equation, sub-jaxprs included."""
    return [eqn.primitive.name for eqn in eqns(fn, *args, **kwargs)]


def params_of(primitive: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> list[dict[str, Any]]:
    """The params of every equation of `primitive` (e.g. "dot_general", "scan") in `fn`."""
    return [dict(eqn.params) for eqn in eqns(fn, *args, **kwargs) if eqn.primitive.name == primitive]


def ffi_targets(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> list[str]:
    """The target name of every foreign-function call (`jax.ffi.ffi_call`) in `fn`, once per
    call, e.g. the native CPU kernel's "rnnkit_lstm_fwd"."""
    return ffi_targets_in(jax.make_jaxpr(fn)(*args, **kwargs))


def ffi_targets_in(jaxpr: Jaxpr | ClosedJaxpr) -> list[str]:
    """`ffi_targets` of a program already traced, in program order."""
    return [str(eqn.params["target_name"]) for eqn in walk(jaxpr) if eqn.primitive.name == "ffi_call"]
