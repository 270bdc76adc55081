r"""Möbius layers on the Poincaré ball, in PyTorch + geoopt: the reference for `jax_impl.layers`.

    MobiusLinear       y = (W \otimes_c x) \oplus_c b        W Euclidean (out, in), b a point on the ball
      .from_tangent    y = (W \otimes_c \exp_0(u)) \oplus_c b = \exp_0(W u) \oplus_c b    for u tangent at 0
      .logmap0_of      \log_0(y) (here each of geoopt's maps in turn; the JAX side fuses them)
      .sparse_product  W h for sparse rows h (`torch_ref.sparse.matmul`); .of_product, .from_tangent_product
                       finish the layer from W x and |x| (the first layer on sparse input)
    mobius_matvec_from_product(Wx, |x|)  W \otimes_c x from the product and the norm (geoopt's lines)
    hyperbolic_activation(x, f)          \exp_0(f(\log_0(x)))
    to_tangent(x) / to_ball(u)           \log_0 / \exp_0
    Curvature(c)                         geoopt's PoincareBall(c, learnable=True): c = softplus(isp_c)

Same names and parameter layout as the JAX side; every Poincaré-ball formula is geoopt's own (through
`torch_ref.poincare`), the bias is a `geoopt.ManifoldParameter` on `geoopt.PoincareBall(c)` (through
`torch_ref.optim.BallParam`), so geoopt's Riemannian optimizers move it along the ball.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import geoopt
import torch
from geoopt.manifolds.stereographic import math as gmath
from torch import Tensor, nn

from torch_ref import poincare, sparse
from torch_ref.optim import BallParam
from torch_ref.sparse import SparseRows

__all__ = ["MobiusLinear", "Curvature", "hyperbolic_activation", "to_ball", "to_tangent", "mobius_matvec_from_product"]


def to_ball(u: Tensor, *, c: Any) -> Tensor:
    r""":math:`\exp_0(u)`: a tangent vector at the origin to its point on the ball (projected)."""
    return poincare.expmap0(u, c=c)


def to_tangent(x: Tensor, *, c: Any) -> Tensor:
    r""":math:`\log_0(x)`: a point on the ball to its tangent vector at the origin."""
    return poincare.logmap0(x, c=c)


def hyperbolic_activation(x: Tensor, f: Callable[[Tensor], Tensor], *, c: Any,
                          tangent: Callable[[Tensor], Tensor] | None = None) -> Tensor:
    r""":math:`\exp_0(f(\log_0(x)))`; ``tangent``, if given, acts on :math:`f(\log_0 x)` before :math:`\exp_0`."""
    v = f(poincare.logmap0(x, c=c))
    if tangent is not None:
        v = tangent(v)
    return poincare.expmap0(v, c=c)


def mobius_matvec_from_product(mx: Tensor, x_norm: Tensor, *, c: Any) -> Tensor:
    r""":math:`M \otimes_c x`, projected, from :math:`Mx` (..., out) and :math:`\|x\|` (..., 1): geoopt's
    ``_mobius_matvec`` after its matmul, line for line (its clamps and its ``Mx == 0`` test), then its
    projection, for an x whose product with M is formed another way (sparse)."""
    k = -torch.as_tensor(c, dtype=mx.dtype, device=mx.device)
    x_norm = x_norm.clamp_min(1e-15)
    mx_norm = mx.norm(dim=-1, keepdim=True, p=2).clamp_min(1e-15)
    res_c = gmath.tan_k(mx_norm / x_norm * gmath.artan_k(x_norm, k), k) * (mx / mx_norm)
    cond = (mx == 0).prod(dim=-1, keepdim=True, dtype=torch.bool)
    res = torch.where(cond, torch.zeros(1, dtype=res_c.dtype, device=res_c.device), res_c)
    return gmath.project(res, k=k)


def Curvature(c: float, *, dtype=torch.float32) -> geoopt.PoincareBall:
    """geoopt's learnable ball: its parameter ``isp_c`` (c = softplus(isp_c)) and its ``c`` property.

    The ball parameters of a model with a learnable curvature live on this one manifold, so geoopt's
    optimizers move them with its current c."""
    return geoopt.PoincareBall(c=torch.as_tensor(c, dtype=dtype), learnable=True)


class MobiusLinear(nn.Module):
    r""":math:`y = (W \otimes_c x) \oplus_c b`; ``tied``: no weight of its own, the caller passes one (out, in).

    ``manifold``: a shared (learnable) `Curvature` ball for the bias; it is not registered here, so its
    ``isp_c`` stays the owner's parameter. A call may pass the curvature's current value as ``c``."""

    def __init__(self, in_features: int, out_features: int, *, c: float, tied: bool = False, dtype=torch.float32,
                 manifold: geoopt.PoincareBall | None = None):
        super().__init__()
        self.c = c
        if tied:
            self.register_parameter("weight", None)
        else:
            self.weight = nn.Parameter(torch.empty(out_features, in_features, dtype=dtype))
            nn.init.xavier_uniform_(self.weight)
        if manifold is None:
            self.bias = BallParam(torch.zeros(out_features, dtype=dtype), c=c)
        else:
            self.bias = geoopt.ManifoldParameter(torch.zeros(out_features, dtype=dtype), manifold=manifold)

    def _weight(self, tied_weight: Tensor | None) -> Tensor:
        return self.weight if self.weight is not None else tied_weight

    def forward(self, x: Tensor, tied_weight: Tensor | None = None, *, c: Any = None) -> Tensor:
        """``x`` a point on the ball (..., in) -> a point on the ball (..., out)."""
        c = self.c if c is None else c
        return poincare.mobius_add(poincare.mobius_matvec(self._weight(tied_weight), x, c=c), self.bias, c=c)

    def logmap0_of(self, x: Tensor, tied_weight: Tensor | None = None, *, c: Any = None) -> Tensor:
        r""":math:`\log_0` of the layer's output: geoopt's mobius_matvec, project, mobius_add, project, logmap0."""
        c = self.c if c is None else c
        return poincare.logmap0(self(x, tied_weight, c=c), c=c)

    def from_tangent(self, u: Tensor, tied_weight: Tensor | None = None, *, c: Any = None) -> Tensor:
        r"""``u`` tangent at the origin: :math:`\exp_0(W u) \oplus_c b` (= ``self(expmap0(u))``, unprojected input)."""
        return self.from_tangent_product(torch.nn.functional.linear(u, self._weight(tied_weight)), c=c)

    def sparse_product(self, batch: SparseRows, values: Tensor, tied_weight: Tensor | None = None) -> Tensor:
        r""":math:`W h` (batch, out) for the sparse rows h whose nonzeros are `values` at the batch's entries."""
        return sparse.matmul(batch, values, self._weight(tied_weight))

    def from_tangent_product(self, wu: Tensor, *, c: Any = None) -> Tensor:
        r"""`from_tangent` given :math:`W u`: :math:`\exp_0(W u) \oplus_c b`."""
        c = self.c if c is None else c
        return poincare.mobius_add(poincare.expmap0(wu, c=c), self.bias, c=c)

    def of_product(self, mx: Tensor, x_norm: Tensor, *, c: Any = None) -> Tensor:
        r"""The layer given :math:`W x` and :math:`\|x\|` (batch, 1): :math:`(W \otimes_c x) \oplus_c b`."""
        c = self.c if c is None else c
        return poincare.mobius_add(mobius_matvec_from_product(mx, x_norm, c=c), self.bias, c=c)
