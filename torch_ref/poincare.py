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

Shapes and arguments are those of `jax_impl.poincare` (last axis the vector, leading axes broadcast,
scalar results with a trailing axis of 1); each docstring names the geoopt function that computes
the value and, where `jax_impl.poincare` computes the same function differently, the difference.

References: Ganea, Bécigneul & Hofmann, "Hyperbolic Neural Networks", NeurIPS 2018; Ungar, "A
Gyrovector Space Approach to Hyperbolic Geometry", 2008; Bécigneul & Ganea, "Riemannian Adaptive
Optimization Methods", ICLR 2019.
"""

from __future__ import annotations

import torch
from geoopt.manifolds.stereographic import math as gmath

from parity.config import PROJECTION_EPS

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
# geoopt's projection margin (hard-coded in its `_project`), as the configuration states it once for both
# sides; tests/test_ops_parity.py measures it on geoopt's projection
BALL_EPS = {getattr(torch, name): eps for name, eps in PROJECTION_EPS.items()}


def ball_eps(dtype: torch.dtype) -> float:
    """geoopt's projection margin for ``dtype`` (``gmath.project``'s default): 4e-3 for float32, 1e-5 otherwise."""
    return BALL_EPS.get(dtype, 1e-5)


def _k(c: float | Tensor, like: Tensor) -> Tensor:
    """geoopt's curvature ``k = -c`` as a tensor of ``like``'s dtype and device (differentiable in ``c``)."""
    return -torch.as_tensor(c, dtype=like.dtype, device=like.device)


def project(x: Tensor, *, c: float | Tensor) -> Tensor:
    r"""Projection into the ball, ``gmath.project``: rows beyond :math:`(1 - \epsilon)/\sqrt{c}` rescaled onto it.

    Args:
      x: points, shape (..., d).
      c: curvature parameter, ``c > 0``: a float or a tensor (gradients flow to a tensor).

    Returns:
      Shape of ``x``; :math:`\epsilon` is geoopt's default for the dtype (``ball_eps``).
    """
    return gmath.project(x, k=_k(c, x))


def lambda_x(x: Tensor, *, c: float | Tensor) -> Tensor:
    r"""Conformal factor :math:`\lambda_x = 2 / (1 - c\|x\|^2)`, ``gmath.lambda_x(keepdim=True)``.

    Args:
      x: points in the ball, shape (..., d).
      c: curvature parameter, ``c > 0``: a float or a tensor (gradients flow to a tensor).

    Returns:
      Shape (..., 1).

    References:
      Ganea, Bécigneul & Hofmann, `Hyperbolic Neural Networks <https://arxiv.org/abs/1805.09112>`_,
      NeurIPS 2018.
    """
    return gmath.lambda_x(x, k=_k(c, x), keepdim=True)


def mobius_add(x: Tensor, y: Tensor, *, c: float | Tensor) -> Tensor:
    r"""Möbius addition :math:`x \oplus_c y`, projected: ``gmath.mobius_add`` then ``gmath.project``.

    geoopt's term-by-term formula cancels for nearby points (``y`` close to ``-x``, as in ``(-x) ⊕ y``);
    ``jax_impl.poincare`` computes the same function around ``s = x + y``.

    Args:
      x: points in the ball, shape (..., d).
      y: points in the ball, shape (..., d) (leading axes broadcast).
      c: curvature parameter, ``c > 0``: a float or a tensor (gradients flow to a tensor).

    Returns:
      The broadcast shape, projected.

    References:
      Ganea, Bécigneul & Hofmann, `Hyperbolic Neural Networks <https://arxiv.org/abs/1805.09112>`_,
      NeurIPS 2018.
      Ungar, A Gyrovector Space Approach to Hyperbolic Geometry, Morgan & Claypool, 2008.
    """
    k = _k(c, x)
    return gmath.project(gmath.mobius_add(x, y, k=k), k=k)


def mobius_scalar_mul(r: float | Tensor, x: Tensor, *, c: float | Tensor) -> Tensor:
    r"""Möbius scalar multiplication :math:`r \otimes_c x`, projected (``gmath.mobius_scalar_mul``, ``gmath.project``).

    Args:
      r: scalars broadcasting against (..., 1) (converted to a tensor of ``x``'s dtype).
      x: points in the ball, shape (..., d).
      c: curvature parameter, ``c > 0``: a float or a tensor (gradients flow to a tensor).

    Returns:
      Shape of ``x``, projected.

    References:
      Ganea, Bécigneul & Hofmann, `Hyperbolic Neural Networks <https://arxiv.org/abs/1805.09112>`_,
      NeurIPS 2018.
    """
    k = _k(c, x)
    r = torch.as_tensor(r, dtype=x.dtype, device=x.device)
    return gmath.project(gmath.mobius_scalar_mul(r, x, k=k), k=k)


def mobius_matvec(m: Tensor, x: Tensor, *, c: float | Tensor) -> Tensor:
    r"""Möbius matrix-vector product :math:`M \otimes_c x`, projected (``gmath.mobius_matvec``, ``gmath.project``).

    geoopt returns 0 through ``where(Mx == 0, ...)``, which also zeroes the gradient at ``x = 0``;
    ``jax_impl.poincare`` gets 0 from its clamped norms and keeps the gradient there.

    Args:
      m: matrix (out, in).
      x: points in the ball, shape (..., in).
      c: curvature parameter, ``c > 0``: a float or a tensor (gradients flow to a tensor).

    Returns:
      Shape (..., out), projected.

    References:
      Ganea, Bécigneul & Hofmann, `Hyperbolic Neural Networks <https://arxiv.org/abs/1805.09112>`_,
      NeurIPS 2018.
    """
    k = _k(c, x)
    return gmath.project(gmath.mobius_matvec(m, x, k=k), k=k)


def expmap(x: Tensor, u: Tensor, *, c: float | Tensor) -> Tensor:
    r"""Exponential map :math:`\exp_x(u)`, projected: ``gmath.expmap``, ``gmath.project`` (``PoincareBall.expmap``).

    Args:
      x: points in the ball, shape (..., d).
      u: tangent vectors at ``x``, shape (..., d) (leading axes broadcast).
      c: curvature parameter, ``c > 0``: a float or a tensor (gradients flow to a tensor).

    Returns:
      The broadcast shape, projected.

    References:
      Ganea, Bécigneul & Hofmann, `Hyperbolic Neural Networks <https://arxiv.org/abs/1805.09112>`_,
      NeurIPS 2018.
    """
    k = _k(c, x)
    return gmath.project(gmath.expmap(x, u, k=k), k=k)


def expmap0(u: Tensor, *, c: float | Tensor) -> Tensor:
    r"""Exponential map at the origin :math:`\exp_0(u)`, projected: ``gmath.expmap0`` then ``gmath.project``.

    Args:
      u: tangent vectors at 0, shape (..., d).
      c: curvature parameter, ``c > 0``: a float or a tensor (gradients flow to a tensor).

    Returns:
      Shape of ``u``, projected.

    References:
      Ganea, Bécigneul & Hofmann, `Hyperbolic Neural Networks <https://arxiv.org/abs/1805.09112>`_,
      NeurIPS 2018.
    """
    k = _k(c, u)
    return gmath.project(gmath.expmap0(u, k=k), k=k)


def logmap(x: Tensor, y: Tensor, *, c: float | Tensor) -> Tensor:
    r"""Logarithmic map :math:`\log_x(y)`, ``gmath.logmap`` (not projected).

    geoopt takes the ``artanh`` of the norm of ``(-x) ⊕ y``; near the boundary its derivatives lose
    digits (float64 d/dc off by 2.5e-5), where ``jax_impl.poincare`` uses the identity for
    :math:`1 - c\|(-x) \oplus y\|^2`.

    Args:
      x: points in the ball, shape (..., d).
      y: points in the ball, shape (..., d) (leading axes broadcast).
      c: curvature parameter, ``c > 0``: a float or a tensor (gradients flow to a tensor).

    Returns:
      The broadcast shape.

    References:
      Ganea, Bécigneul & Hofmann, `Hyperbolic Neural Networks <https://arxiv.org/abs/1805.09112>`_,
      NeurIPS 2018.
    """
    return gmath.logmap(x, y, k=_k(c, x))


def logmap0(y: Tensor, *, c: float | Tensor) -> Tensor:
    r"""Logarithmic map at the origin :math:`\log_0(y)`, ``gmath.logmap0``.

    geoopt's ``artanh`` is ``(log(1 + x) - log(1 - x)) / 2``: in float32 it loses all digits for tiny
    arguments (0 at 1e-15, where the norm clamp sits); ``jax_impl.poincare`` uses ``arctanh``.

    Args:
      y: points in the ball, shape (..., d).
      c: curvature parameter, ``c > 0``: a float or a tensor (gradients flow to a tensor).

    Returns:
      Shape of ``y``.

    References:
      Ganea, Bécigneul & Hofmann, `Hyperbolic Neural Networks <https://arxiv.org/abs/1805.09112>`_,
      NeurIPS 2018.
    """
    return gmath.logmap0(y, k=_k(c, y))


def dist(x: Tensor, y: Tensor, *, c: float | Tensor) -> Tensor:
    r"""Geodesic distance :math:`d_c(x, y)`, ``gmath.dist(keepdim=True)``.

    At ``x = y`` geoopt differentiates the rounding residual of its ``(-x) ⊕ x`` (an O(1) gradient in
    an arbitrary direction for some points); ``jax_impl.poincare`` gives the zero subgradient.

    Args:
      x: points in the ball, shape (..., d).
      y: points in the ball, shape (..., d) (leading axes broadcast).
      c: curvature parameter, ``c > 0``: a float or a tensor (gradients flow to a tensor).

    Returns:
      Shape (..., 1).

    References:
      Ganea, Bécigneul & Hofmann, `Hyperbolic Neural Networks <https://arxiv.org/abs/1805.09112>`_,
      NeurIPS 2018.
    """
    return gmath.dist(x, y, k=_k(c, x), keepdim=True)


def dist0(x: Tensor, *, c: float | Tensor) -> Tensor:
    r"""Distance to the origin :math:`d_c(0, x)`, ``gmath.dist0(keepdim=True)``.

    Args:
      x: points in the ball, shape (..., d).
      c: curvature parameter, ``c > 0``: a float or a tensor (gradients flow to a tensor).

    Returns:
      Shape (..., 1).

    References:
      Ganea, Bécigneul & Hofmann, `Hyperbolic Neural Networks <https://arxiv.org/abs/1805.09112>`_,
      NeurIPS 2018.
    """
    return gmath.dist0(x, k=_k(c, x), keepdim=True)


def gyration(a: Tensor, b: Tensor, u: Tensor, *, c: float | Tensor) -> Tensor:
    r"""Gyration :math:`\operatorname{gyr}[a, b]u`, ``gmath.gyration`` (closed form).

    geoopt's form subtracts nearly equal terms for nearby ``a, -b``; ``jax_impl.poincare`` evaluates
    the same polynomial around ``s = a + b``.

    Args:
      a: points in the ball, shape (..., d).
      b: points in the ball, shape (..., d).
      u: vectors, shape (..., d) (leading axes of all three broadcast).
      c: curvature parameter, ``c > 0``: a float or a tensor (gradients flow to a tensor).

    Returns:
      The broadcast shape.

    References:
      Ungar, A Gyrovector Space Approach to Hyperbolic Geometry, Morgan & Claypool, 2008.
    """
    return gmath.gyration(a, b, u, k=_k(c, a))


def transp(x: Tensor, y: Tensor, v: Tensor, *, c: float | Tensor) -> Tensor:
    r"""Parallel transport :math:`\operatorname{gyr}[y, -x] v \, \lambda_x / \lambda_y`, ``gmath.parallel_transport``.

    For nearby points geoopt's gyration subtracts nearly equal terms (near the boundary its float64
    ``expmap_transp`` is off by 1e-5), and at ``y = x`` its derivative in ``c`` is rounding noise;
    ``jax_impl.poincare`` computes around ``s = y - x`` and is exact there.

    Args:
      x: start points in the ball, shape (..., d).
      y: end points in the ball, shape (..., d).
      v: tangent vectors at ``x``, shape (..., d) (leading axes of all three broadcast).
      c: curvature parameter, ``c > 0``: a float or a tensor (gradients flow to a tensor).

    Returns:
      The broadcast shape.

    References:
      Ganea, Bécigneul & Hofmann, `Hyperbolic Neural Networks <https://arxiv.org/abs/1805.09112>`_,
      NeurIPS 2018.
    """
    return gmath.parallel_transport(x, y, v, k=_k(c, x))


def transp0(y: Tensor, v: Tensor, *, c: float | Tensor) -> Tensor:
    r"""Parallel transport from the origin :math:`v\,(1 - c\|y\|^2)`, ``gmath.parallel_transport0``.

    Args:
      y: end points in the ball, shape (..., d).
      v: tangent vectors at 0, shape (..., d) (leading axes broadcast).
      c: curvature parameter, ``c > 0``: a float or a tensor (gradients flow to a tensor).

    Returns:
      The broadcast shape.

    References:
      Ganea, Bécigneul & Hofmann, `Hyperbolic Neural Networks <https://arxiv.org/abs/1805.09112>`_,
      NeurIPS 2018.
    """
    return gmath.parallel_transport0(y, v, k=_k(c, y))


def inner(x: Tensor, u: Tensor, v: Tensor | None = None, *, c: float | Tensor) -> Tensor:
    r"""Riemannian inner product :math:`\lambda_x^2 \langle u, v\rangle`, ``gmath.inner(keepdim=True)``.

    Args:
      x: points in the ball, shape (..., d).
      u: tangent vectors at ``x``, shape (..., d).
      v: tangent vectors at ``x``, shape (..., d); defaults to ``u``.
      c: curvature parameter, ``c > 0``: a float or a tensor (gradients flow to a tensor).

    Returns:
      Shape (..., 1).

    References:
      Ganea, Bécigneul & Hofmann, `Hyperbolic Neural Networks <https://arxiv.org/abs/1805.09112>`_,
      NeurIPS 2018.
    """
    if v is None:
        v = u
    return gmath.inner(x, u, v, k=_k(c, x), keepdim=True)


def norm(x: Tensor, u: Tensor, *, c: float | Tensor) -> Tensor:
    r"""Riemannian norm :math:`\lambda_x \|u\|`, ``gmath.norm(keepdim=True)``.

    Args:
      x: points in the ball, shape (..., d).
      u: tangent vectors at ``x``, shape (..., d) (leading axes broadcast).
      c: curvature parameter, ``c > 0``: a float or a tensor (gradients flow to a tensor).

    Returns:
      Shape (..., 1).

    References:
      Ganea, Bécigneul & Hofmann, `Hyperbolic Neural Networks <https://arxiv.org/abs/1805.09112>`_,
      NeurIPS 2018.
    """
    return gmath.norm(x, u, k=_k(c, x), keepdim=True)


def egrad2rgrad(x: Tensor, g: Tensor, *, c: float | Tensor) -> Tensor:
    r"""Riemannian gradient :math:`g / \lambda_x^2`, ``gmath.egrad2rgrad``.

    Args:
      x: points in the ball, shape (..., d).
      g: Euclidean gradients at ``x``, shape (..., d) (leading axes broadcast).
      c: curvature parameter, ``c > 0``: a float or a tensor (gradients flow to a tensor).

    Returns:
      The broadcast shape.

    References:
      Bécigneul & Ganea, `Riemannian Adaptive Optimization Methods <https://arxiv.org/abs/1810.00760>`_,
      ICLR 2019.
    """
    return gmath.egrad2rgrad(x, g, k=_k(c, x))


def proju(x: Tensor, u: Tensor, *, c: float | Tensor) -> Tensor:
    r"""Projection onto the tangent space at ``x``: the identity (geoopt's ``Stereographic.proju``).

    Args:
      x: points in the ball, shape (..., d).
      u: vectors, shape (..., d).
      c: unused (a uniform signature).

    Returns:
      ``u`` expanded to the broadcast shape.
    """
    return u.expand(torch.broadcast_shapes(x.shape, u.shape))


def retr(x: Tensor, u: Tensor, *, c: float | Tensor) -> Tensor:
    r"""First-order retraction ``project(x + u)``, geoopt's ``Stereographic.retr``.

    Args:
      x: points in the ball, shape (..., d).
      u: tangent vectors at ``x``, shape (..., d) (leading axes broadcast).
      c: curvature parameter, ``c > 0``: a float or a tensor (gradients flow to a tensor).

    Returns:
      The broadcast shape, projected.

    References:
      Bécigneul & Ganea, `Riemannian Adaptive Optimization Methods <https://arxiv.org/abs/1810.00760>`_,
      ICLR 2019.
    """
    return gmath.project(x + u, k=_k(c, x))


def retr_transp(x: Tensor, u: Tensor, v: Tensor, *, c: float | Tensor) -> tuple[Tensor, Tensor]:
    r"""``y = retr(x, u)`` and ``transp(x, y, v)``: geoopt's ``Stereographic.retr_transp`` (its optimizers' move).

    Args:
      x: points in the ball, shape (..., d).
      u: tangent vectors at ``x`` (the step), shape (..., d).
      v: tangent vectors at ``x`` to transport, shape (..., d).
      c: curvature parameter, ``c > 0``: a float or a tensor (gradients flow to a tensor).

    Returns:
      ``(y, transp(x, y, v))``.

    References:
      Bécigneul & Ganea, `Riemannian Adaptive Optimization Methods <https://arxiv.org/abs/1810.00760>`_,
      ICLR 2019.
    """
    y = retr(x, u, c=c)
    return y, transp(x, y, v, c=c)


def expmap_transp(x: Tensor, u: Tensor, v: Tensor, *, c: float | Tensor) -> tuple[Tensor, Tensor]:
    r"""``y = expmap(x, u)`` (projected) and ``transp(x, y, v)``: geoopt's ``Stereographic.expmap_transp``.

    ``PoincareBallExact.retr_transp``, the move of geoopt's optimizers on an exact ball.

    Args:
      x: points in the ball, shape (..., d).
      u: tangent vectors at ``x`` (the step), shape (..., d).
      v: tangent vectors at ``x`` to transport, shape (..., d).
      c: curvature parameter, ``c > 0``: a float or a tensor (gradients flow to a tensor).

    Returns:
      ``(y, transp(x, y, v))``.

    References:
      Bécigneul & Ganea, `Riemannian Adaptive Optimization Methods <https://arxiv.org/abs/1810.00760>`_,
      ICLR 2019.
    """
    y = expmap(x, u, c=c)
    return y, transp(x, y, v, c=c)
