r"""Möbius layers on the Poincaré ball, in Flax NNX (Ganea, Bécigneul & Hofmann 2018, "Hyperbolic
neural networks"; the layers of Mirvakhabova et al. 2020's hyperbolic autoencoder).

    MobiusLinear       y = (W \otimes_c x) \oplus_c b        W Euclidean (out, in), b a point on the ball
      .from_tangent    y = (W \otimes_c \exp_0(u)) \oplus_c b = \exp_0(W u) \oplus_c b    for u tangent at 0
      .logmap0_of      \log_0(y): the layer and the log map, fused (the decoder's scores)
      .sparse_product  W h for sparse rows h (`jax_impl.sparse.matmul`); .of_product, .from_tangent_product
                       finish the layer from W x and |x| (the first layer on sparse input)
    mobius_matvec_from_product(Wx, |x|)  W \otimes_c x from the product and the norm
    hyperbolic_activation(x, f)          \exp_0(f(\log_0(x)))       f applied in the tangent space at 0
    to_tangent(x) / to_ball(u)           \log_0 / \exp_0: the maps between the ball and the tangent space at 0
    Curvature(c)                         a learnable curvature, c = softplus(isp_c) (geoopt's learnable ball)

`torch_ref.layers` mirrors this file name for name, computed with geoopt. Parameter names are the
canonical ones of `parity.convert`: `weight` (out, in), as torch.nn.Linear stores it, and `bias`, a
`jax_impl.optim.BallParam` (the Riemannian optimizers move it along the ball; everything else is
Euclidean).

``from_tangent`` is the first layer of the hyperbolic autoencoder: it equals ``MobiusLinear(expmap0(u))``
exactly (:math:`M \otimes_c \exp_0(u) = \exp_0(Mu)`, from :math:`\tan_c^{-1}(\|\exp_0 u\|) = \|u\|`),
but forms no point on the ball from the raw input, so nothing is projected and no artanh of a norm
near 1 is taken before the weights have acted (the seed's failure: every input on the clipping radius,
where the gradient vanishes), and it costs one matmul and the norms of the result.

Everything is dtype-explicit: float32 by default, float64 when the caller switched x64 on.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from jax_impl import poincare, sparse
from jax_impl.optim import BallParam
from jax_impl.sparse import SparseRows

Array = jax.Array

__all__ = ["MobiusLinear", "Curvature", "hyperbolic_activation", "to_ball", "to_tangent", "glorot_uniform",
           "inverse_softplus", "mobius_linear_logmap0", "mobius_matvec_from_product"]


def glorot_uniform(key: Array, out_features: int, in_features: int, dtype) -> Array:
    """U(-a, a), a = sqrt(6 / (fan_in + fan_out)) (Glorot & Bengio 2010), shape (out, in)."""
    limit = (6.0 / (in_features + out_features)) ** 0.5
    return jax.random.uniform(key, (out_features, in_features), dtype, -limit, limit)


def to_ball(u: Array, *, c: Any) -> Array:
    r""":math:`\exp_0(u)`: a tangent vector at the origin to its point on the ball (projected)."""
    return poincare.expmap0(u, c=c)


def to_tangent(x: Array, *, c: Any) -> Array:
    r""":math:`\log_0(x)`: a point on the ball to its tangent vector at the origin."""
    return poincare.logmap0(x, c=c)


def hyperbolic_activation(x: Array, f: Callable[[Array], Array], *, c: Any,
                          tangent: Callable[[Array], Array] | None = None) -> Array:
    r""":math:`\exp_0(f(\log_0(x)))`; ``tangent``, if given, acts on :math:`f(\log_0 x)` before
    :math:`\exp_0` (the autoencoder's code dropout, applied in the tangent space)."""
    v = f(poincare.logmap0(x, c=c))
    if tangent is not None:
        v = tangent(v)
    return poincare.expmap0(v, c=c)


def mobius_linear_logmap0(x: Array, weight: Array, bias: Array, *, c: Any) -> Array:
    r""":math:`\log_0(P((P(W \otimes_c x)) \oplus_c b))`, P the projection: a Möbius layer read in the
    tangent space at the origin, with one pass over the (..., out) output.

    Every step of the composition is a per-row scalar times :math:`m = W x` or :math:`b`: with
    :math:`t = \tan_c(\frac{\|m\|}{\|x\|}\tan_c^{-1}\|x\|)` (clipped at the projection radius),
    :math:`W \otimes_c x = \alpha m`, :math:`\alpha = t / \|m\|`; Möbius addition (geoopt's formula)
    gives :math:`y = p\, m + q\, b` with

    .. math::
        p = \alpha (1 + 2c\alpha\langle m, b\rangle + c\|b\|^2) / D, \quad
        q = (1 - c\alpha^2\|m\|^2) / D, \quad
        D = 1 + 2c\alpha\langle m, b\rangle + c^2\alpha^2\|m\|^2\|b\|^2,

    :math:`\|y\|^2 = p^2\|m\|^2 + 2pq\langle m, b\rangle + q^2\|b\|^2`, and the projection and
    :math:`\log_0` scale both. So the output costs the matmul, one reduction (:math:`\|m\|^2`) and
    one fused multiply-add; :math:`\langle m, b\rangle = x \cdot (W^T b)` needs no pass over the output.
    The clamps are geoopt's (norms and D at 1e-15, tanh at 15, artanh at 1 - 1e-7). The same function as
    ``to_tangent(MobiusLinear(x))``, which computes each map on its own (the parity suite compares
    this with geoopt's composition).
    """
    dtype = jnp.result_type(x, weight, bias)
    c = jnp.asarray(c, dtype)
    max_norm = (1.0 - poincare.ball_eps(dtype)) / poincare._sqrt_c(c)
    tiny = poincare.MIN_NORM
    x_norm = poincare._clamped_norm(x)
    m = x @ weight.T
    m2 = jnp.sum(m * m, axis=-1, keepdims=True)
    m_norm = jnp.sqrt(jnp.maximum(m2, tiny * tiny))  # clamped before the sqrt: finite gradient at m = 0
    t = poincare._tan_c(m_norm / x_norm * poincare._artan_c(x_norm, c), c)  # |W ⊗ x|
    t = jnp.where(t > max_norm, max_norm, t)  # its projection
    alpha = t / m_norm
    mb = (x @ (bias @ weight))[..., None]  # <m, b> = x . (W^T b)
    b2 = jnp.sum(bias * bias)
    xb, x2 = alpha * mb, alpha * alpha * m2  # <W ⊗ x, b>, |W ⊗ x|^2
    denom = jnp.maximum(1.0 + 2.0 * c * xb + c * c * x2 * b2, tiny)
    p = alpha * (1.0 + 2.0 * c * xb + c * b2) / denom
    q = (1.0 - c * x2) / denom
    y_norm = jnp.sqrt(jnp.maximum(p * p * m2 + 2.0 * p * q * mb + q * q * b2, tiny * tiny))
    shrink = jnp.where(y_norm > max_norm, max_norm / y_norm, 1.0)  # the projection of y
    projected_norm = jnp.maximum(shrink * y_norm, tiny)
    scale = shrink * poincare._artan_c(projected_norm, c) / projected_norm  # log_0 of the projected point
    return (scale * p) * m + (scale * q) * bias


def mobius_matvec_from_product(mx: Array, x_norm: Array, *, c: Any) -> Array:
    r""":math:`M \otimes_c x = \tan_c\big(\tfrac{\|Mx\|}{\|x\|} \tan_c^{-1}(\|x\|)\big)\, Mx / \|Mx\|`, projected,
    from :math:`Mx` (..., out) and :math:`\|x\|` (..., 1): `poincare.mobius_matvec` after its matmul, with
    the same clamps (both norms at 1e-15), for an x whose product with M is formed another way (sparse)."""
    dtype = jnp.result_type(mx, x_norm)
    c = jnp.asarray(c, dtype)
    x_norm = jnp.maximum(x_norm, poincare.MIN_NORM)
    mx_norm = poincare._clamped_norm(mx)
    return poincare._project(poincare._tan_c(mx_norm / x_norm * poincare._artan_c(x_norm, c), c) * (mx / mx_norm), c)


def inverse_softplus(c: float) -> float:
    r""":math:`\log(e^c - 1)`, the ``isp_c`` whose softplus is ``c`` (geoopt's ``PoincareBall(c)`` storage)."""
    import math

    return math.log(math.expm1(c))


class Curvature(nnx.Module):
    r"""A learnable curvature :math:`c = \operatorname{softplus}(\text{isp\_c}) > 0`, stored as geoopt's
    ``PoincareBall(c, learnable=True)`` stores it (a Euclidean parameter ``isp_c``)."""

    def __init__(self, c: float, *, dtype=jnp.float32):
        self.isp_c = nnx.Param(jnp.asarray(inverse_softplus(c), dtype))

    def __call__(self) -> Array:
        return jax.nn.softplus(self.isp_c[...])


class MobiusLinear(nnx.Module):
    r""":math:`y = (W \otimes_c x) \oplus_c b`: Möbius matrix-vector product, then Möbius addition of a
    bias on the ball. ``tied``: no weight of its own; the caller passes the one it borrows, (out, in).
    ``c`` is the construction's curvature; a call may pass another (a learnable curvature's current value)."""

    def __init__(self, in_features: int, out_features: int, *, c: float, tied: bool = False,
                 rngs: nnx.Rngs, dtype=jnp.float32):
        self.c = c
        self.weight = None if tied else nnx.Param(glorot_uniform(rngs.params(), out_features, in_features, dtype))
        self.bias = BallParam(jnp.zeros((out_features,), dtype), c=c)

    def _weight(self, tied_weight: Array | None) -> Array:
        return self.weight[...] if self.weight is not None else tied_weight

    def __call__(self, x: Array, tied_weight: Array | None = None, *, c: Any = None) -> Array:
        """``x`` a point on the ball (..., in) -> a point on the ball (..., out)."""
        c = self.c if c is None else c
        return poincare.mobius_add(poincare.mobius_matvec(self._weight(tied_weight), x, c=c), self.bias[...], c=c)

    def logmap0_of(self, x: Array, tied_weight: Array | None = None, *, c: Any = None) -> Array:
        r""":math:`\log_0` of the layer's output, ``to_tangent(self(x))``, fused (`mobius_linear_logmap0`)."""
        c = self.c if c is None else c
        return mobius_linear_logmap0(x, self._weight(tied_weight), self.bias[...], c=c)

    def from_tangent(self, u: Array, tied_weight: Array | None = None, *, c: Any = None) -> Array:
        r"""``u`` a tangent vector at the origin (..., in): :math:`\exp_0(W u) \oplus_c b`, which is
        ``self(expmap0(u))`` without forming (and projecting) :math:`\exp_0(u)`."""
        return self.from_tangent_product(u @ self._weight(tied_weight).T, c=c)

    def sparse_product(self, batch: SparseRows, values: Array, tied_weight: Array | None = None) -> Array:
        r""":math:`W h` (batch, out) for the sparse rows h whose nonzeros are `values` at the batch's entries."""
        return sparse.matmul(batch, values, self._weight(tied_weight))

    def from_tangent_product(self, wu: Array, *, c: Any = None) -> Array:
        r"""`from_tangent` given :math:`W u`: :math:`\exp_0(W u) \oplus_c b`."""
        c = self.c if c is None else c
        return poincare.mobius_add(poincare.expmap0(wu, c=c), self.bias[...], c=c)

    def of_product(self, mx: Array, x_norm: Array, *, c: Any = None) -> Array:
        r"""The layer given :math:`W x` and :math:`\|x\|` (batch, 1): :math:`(W \otimes_c x) \oplus_c b`."""
        c = self.c if c is None else c
        return poincare.mobius_add(mobius_matvec_from_product(mx, x_norm, c=c), self.bias[...], c=c)
