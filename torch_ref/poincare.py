"""Poincaré-ball math computed by geoopt 0.5.1 itself: the reference for `jax_impl.poincare`.

Same names and signatures as `jax_impl.poincare`. Every function calls geoopt's
`geoopt.manifolds.stereographic.math` with ``k = -c`` and applies the projections that the
corresponding `geoopt.PoincareBall` method applies (mobius_add, mobius_scalar_mul, mobius_matvec,
expmap, expmap0, retr). Nothing is re-derived here.

``c`` may be a float or a tensor; as a tensor (``requires_grad=True``) gradients flow to it. It is
cast to the dtype of the array arguments, as `PoincareBall` built in that dtype would hold it.
The math functions are used instead of a `PoincareBall(c)` instance because the instance stores
``c`` as ``softplus(log(expm1(c)))``, which is not ``c`` in floating point (float32: relative error
2.3e-5 at c = 1e-3; float64: 4e-14) and would cut the gradient to ``c`` off from the caller.
"""

from __future__ import annotations

from typing import Any

import torch
from geoopt.manifolds.stereographic import math as gmath

Tensor = torch.Tensor

__all__ = [
    "BALL_EPS",
    "ball_eps",
    "mobius_add",
    "mobius_scalar_mul",
    "mobius_matvec",
    "expmap",
    "expmap0",
    "logmap",
    "logmap0",
    "dist",
    "dist0",
    "transp",
    "transp0",
    "gyration",
    "lambda_x",
    "inner",
    "norm",
    "egrad2rgrad",
    "project",
    "proju",
    "retr",
    "retr_transp",
    "expmap_transp",
]

# What geoopt's `_project` uses when eps is not given (stated here for the harness; geoopt decides).
BALL_EPS = {torch.float32: 4e-3, torch.float64: 1e-5}


def ball_eps(dtype: torch.dtype) -> float:
    return BALL_EPS.get(dtype, 1e-5)


def _k(c: Any, like: Tensor) -> Tensor:
    """geoopt's curvature ``k = -c`` as a tensor of ``like``'s dtype and device (differentiable in ``c``)."""
    return -torch.as_tensor(c, dtype=like.dtype, device=like.device)


def project(x: Tensor, *, c: Any) -> Tensor:
    return gmath.project(x, k=_k(c, x))


def lambda_x(x: Tensor, *, c: Any) -> Tensor:
    return gmath.lambda_x(x, k=_k(c, x), keepdim=True)


def mobius_add(x: Tensor, y: Tensor, *, c: Any) -> Tensor:
    k = _k(c, x)
    return gmath.project(gmath.mobius_add(x, y, k=k), k=k)


def mobius_scalar_mul(r: Any, x: Tensor, *, c: Any) -> Tensor:
    k = _k(c, x)
    r = torch.as_tensor(r, dtype=x.dtype, device=x.device)
    return gmath.project(gmath.mobius_scalar_mul(r, x, k=k), k=k)


def mobius_matvec(m: Tensor, x: Tensor, *, c: Any) -> Tensor:
    k = _k(c, x)
    return gmath.project(gmath.mobius_matvec(m, x, k=k), k=k)


def expmap(x: Tensor, u: Tensor, *, c: Any) -> Tensor:
    k = _k(c, x)
    return gmath.project(gmath.expmap(x, u, k=k), k=k)


def expmap0(u: Tensor, *, c: Any) -> Tensor:
    k = _k(c, u)
    return gmath.project(gmath.expmap0(u, k=k), k=k)


def logmap(x: Tensor, y: Tensor, *, c: Any) -> Tensor:
    return gmath.logmap(x, y, k=_k(c, x))


def logmap0(y: Tensor, *, c: Any) -> Tensor:
    return gmath.logmap0(y, k=_k(c, y))


def dist(x: Tensor, y: Tensor, *, c: Any) -> Tensor:
    return gmath.dist(x, y, k=_k(c, x), keepdim=True)


def dist0(x: Tensor, *, c: Any) -> Tensor:
    return gmath.dist0(x, k=_k(c, x), keepdim=True)


def gyration(a: Tensor, b: Tensor, u: Tensor, *, c: Any) -> Tensor:
    return gmath.gyration(a, b, u, k=_k(c, a))


def transp(x: Tensor, y: Tensor, v: Tensor, *, c: Any) -> Tensor:
    return gmath.parallel_transport(x, y, v, k=_k(c, x))


def transp0(y: Tensor, v: Tensor, *, c: Any) -> Tensor:
    return gmath.parallel_transport0(y, v, k=_k(c, y))


def inner(x: Tensor, u: Tensor, v: Tensor | None = None, *, c: Any) -> Tensor:
    if v is None:
        v = u
    return gmath.inner(x, u, v, k=_k(c, x), keepdim=True)


def norm(x: Tensor, u: Tensor, *, c: Any) -> Tensor:
    return gmath.norm(x, u, k=_k(c, x), keepdim=True)


def egrad2rgrad(x: Tensor, g: Tensor, *, c: Any) -> Tensor:
    return gmath.egrad2rgrad(x, g, k=_k(c, x))


def proju(x: Tensor, u: Tensor, *, c: Any) -> Tensor:
    """geoopt's `Stereographic.proju`: the identity, broadcast to the common shape."""
    return u.expand(torch.broadcast_shapes(x.shape, u.shape))


def retr(x: Tensor, u: Tensor, *, c: Any) -> Tensor:
    """geoopt's `Stereographic.retr`: ``project(x + u)``."""
    return gmath.project(x + u, k=_k(c, x))


def retr_transp(x: Tensor, u: Tensor, v: Tensor, *, c: Any) -> tuple[Tensor, Tensor]:
    """geoopt's `Stereographic.retr_transp`: ``y = retr(x, u)``, ``transp(x, y, v)``."""
    y = retr(x, u, c=c)
    return y, transp(x, y, v, c=c)


def expmap_transp(x: Tensor, u: Tensor, v: Tensor, *, c: Any) -> tuple[Tensor, Tensor]:
    """geoopt's `Stereographic.expmap_transp` (``PoincareBallExact.retr_transp``): projected expmap, then transp."""
    y = expmap(x, u, c=c)
    return y, transp(x, y, v, c=c)
