r"""Poincaré-ball math in JAX with the semantics of geoopt 0.5.1's ``PoincareBall(c)``.

The ball of curvature :math:`-c` (geoopt's ``k = -c``) is
:math:`\mathbb{D}_c = \{x : c\|x\|^2 < 1\}`. Every function here

- works on the last axis and broadcasts over leading axes;
- takes the curvature ``c > 0`` as a keyword (a Python float or a JAX array; it is differentiable);
- computes in the dtype of its array arguments (``c`` is cast to it), so it runs the same with
  ``jax_enable_x64`` on or off;
- is jit-, vmap- and grad-compatible, and returns finite gradients at ``x = 0``, at ``x = y`` and at
  the boundary.

geoopt semantics kept exactly:

- results of ``mobius_add``, ``mobius_scalar_mul``, ``mobius_matvec``, ``expmap``, ``expmap0`` and
  ``retr`` are projected back into the ball; nothing else is;
- the projection radius is ``(1 - eps) / sqrt(c)`` with ``eps`` 4e-3 in float32 and 1e-5 otherwise
  (``BALL_EPS``);
- the retraction is the first-order ``project(x + u)``;
- the clamps: norms and denominators ``clamp_min(1e-15)``, ``artanh`` argument clipped to
  ``±(1 - 1e-7)``, ``tanh`` argument clipped to ``±15``, ``sqrt(|k| + 1e-15)``;
- scalar results (``dist``, ``dist0``, ``lambda_x``, ``inner``, ``norm``) keep a trailing axis of
  size 1 (geoopt's ``keepdim=True``).

Where geoopt's arithmetic is poor, this module computes the same function more accurately (the
parity suite shows each deviation against an exact oracle):

- ``artanh`` is ``jnp.arctanh`` (log1p-based); geoopt's ``(log(1 + x) - log(1 - x)) / 2`` loses all
  digits for tiny ``x`` in float32 (it is 0 at ``x = 1e-15``, where the norm clamps sit);
- ``mobius_matvec`` has no ``mx == 0`` test: with clamped norms the general formula already gives
  exactly 0 there, and the test in geoopt cuts the gradient (0 instead of ``M^T g`` at ``x = 0``);
- Möbius addition and gyration (hence ``transp``) are computed around ``s = x + y`` (equal
  polynomials, see ``_mobius_add``, ``_gyration``, ``_gyro_denominator``): accurate for nearby
  points, where geoopt's forms cancel (its float32 ``(-x) ⊕ y`` has relative error up to 0.4 for
  ``|x - y|`` ~ 1e-6 of the radius, this one 2e-7; its float64 ``expmap_transp`` is off by 1e-5 at
  the boundary, this one by 2e-9), and exact at the special
  inputs ``0``, ``y = x``, ``y = -x``, with exact zero derivatives there, so ``dist(x, x)`` gets the
  zero subgradient and ``transp(x, x, v) = v`` (``lambda_x / lambda_y`` likewise, see
  ``_lambda_ratio``), even under XLA's fused multiply-adds, which do not cancel equal products;
- ``dist`` and ``logmap`` take ``artanh(sqrt(c)|(-x) ⊕ y|)`` near 1 from the identity
  ``1 - c|x ⊕ y|^2 = (1 - c|x|^2)(1 - c|y|^2) / D``, not from the norm of the result: near the
  boundary geoopt's float64 d/dc of ``logmap`` is off by 2.5e-5, this one by 7e-9, and in float32
  geoopt's ``dist`` and ``logmap`` gradients by 1e-2, these by 1e-5;
- geoopt switches to a Taylor branch for ``|k| <= 1e-8``; here the exact formula is used for every
  ``c > 0``.

References: Ganea, Bécigneul & Hofmann, "Hyperbolic Neural Networks", NeurIPS 2018
(https://arxiv.org/abs/1805.09112) for the Möbius operations, Möbius matrix-vector product,
exponential and logarithmic maps, distance and parallel transport; Ungar, "A Gyrovector Space Approach
to Hyperbolic Geometry", Morgan & Claypool 2008, for gyrations; Bécigneul & Ganea, "Riemannian
Adaptive Optimization Methods", ICLR 2019 (https://arxiv.org/abs/1810.00760) for the retraction and
transport the optimizers use.

JAX-vs-PyTorch gradient traps handled next to the line that needs them: ``sqrt`` at 0 (``jnp.linalg.norm``
has a NaN gradient at the zero vector, torch's has 0), and ``jnp.where`` (a NaN or Inf in the branch
not taken still poisons the gradient, so inputs are guarded, not outputs).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike, DTypeLike

from parity.config import PROJECTION_EPS

__all__ = [
    "BALL_EPS",
    "MIN_NORM",
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

# geoopt's projection margin, per dtype (``_project``: 4e-3 for float32, 1e-5 for anything else), as the
# configuration states it once for both sides (tests hold it against geoopt's own table)
BALL_EPS = {jnp.dtype(name): eps for name, eps in PROJECTION_EPS.items()}
# geoopt's clamp_min for norms and denominators.
MIN_NORM = 1e-15
# geoopt's artanh clamp and tanh clamp.
ARTANH_LIMIT = 1.0 - 1e-7
TANH_LIMIT = 15.0
# geoopt's sabs: |k| + 1e-15 before every sqrt of the curvature.
CURVATURE_EPS = 1e-15


# ----------------------------------------------------------------------------- helpers


def _float_dtype(*arrays: ArrayLike) -> jnp.dtype:
    """Common floating dtype of the array arguments (integers promote to the default float)."""
    dtype = jnp.result_type(*arrays)
    if not jnp.issubdtype(dtype, jnp.floating):
        dtype = jnp.result_type(float)
    return jnp.dtype(dtype)


def _as(dtype: jnp.dtype, *arrays: ArrayLike) -> list[jnp.ndarray]:
    return [jnp.asarray(a, dtype=dtype) for a in arrays]


def ball_eps(dtype: DTypeLike) -> float:
    r"""Projection margin :math:`\epsilon` of ``project`` for points of ``dtype`` (geoopt's ``_project`` rule).

    At the radius :math:`(1 - \epsilon)/\sqrt{c}`, :math:`1 - c\|x\|^2` is 8.0e-3 (float32) or 2.0e-5
    (float64), so the conformal factor ``lambda_x`` stays below 251 or 1.0e5.

    Args:
      dtype: the points' dtype (anything ``jnp.dtype`` accepts).

    Returns:
      4e-3 for float32, 1e-5 for float64 and any other dtype.
    """
    return BALL_EPS.get(jnp.dtype(dtype), 1e-5)


def _sqrt_c(c: jnp.ndarray) -> jnp.ndarray:
    r""":math:`\sqrt{|k| + 10^{-15}}` with :math:`k = -c` (geoopt's ``sabs(k) ** 0.5``)."""
    return jnp.sqrt(jnp.abs(c) + CURVATURE_EPS)


def _sq_norm(x: jnp.ndarray) -> jnp.ndarray:
    r""":math:`\|x\|_2^2` over the last axis, kept as a size-1 axis."""
    return jnp.sum(x * x, axis=-1, keepdims=True)


def _dot(x: jnp.ndarray, y: jnp.ndarray) -> jnp.ndarray:
    r""":math:`\langle x, y\rangle` over the last axis, kept as a size-1 axis."""
    return jnp.sum(x * y, axis=-1, keepdims=True)


def _clamped_norm(x: jnp.ndarray) -> jnp.ndarray:
    r""":math:`\max(\|x\|_2, 10^{-15})`, geoopt's ``x.norm().clamp_min(1e-15)``.

    Clamping the squared norm before the sqrt gives the same value and keeps the gradient finite
    (0) at ``x = 0``: ``jnp.linalg.norm`` would give NaN there, and clamping after it would not help.
    """
    return jnp.sqrt(jnp.maximum(_sq_norm(x), MIN_NORM * MIN_NORM))


def _norm(x: jnp.ndarray) -> jnp.ndarray:
    r""":math:`\|x\|_2` with torch's gradient convention: the zero subgradient at ``x = 0``.

    geoopt uses the unclamped norm here (dist, dist0, norm); torch's norm backward returns 0 at the
    zero vector, JAX's sqrt returns NaN. Guard the input of the sqrt, then select the output.
    """
    sq = _sq_norm(x)
    positive = sq > 0
    safe_sq = jnp.where(positive, sq, 1.0)  # guard: sqrt'(0) = inf would reach the gradient
    return jnp.where(positive, jnp.sqrt(safe_sq), 0.0)


def _tanh(x: jnp.ndarray) -> jnp.ndarray:
    r""":math:`\tanh(\operatorname{clip}(x, -15, 15))` (geoopt's ``tanh``)."""
    return jnp.tanh(jnp.clip(x, -TANH_LIMIT, TANH_LIMIT))


def _artanh(x: jnp.ndarray) -> jnp.ndarray:
    r""":math:`\operatorname{artanh}(\operatorname{clip}(x, -1 + 10^{-7}, 1 - 10^{-7}))`.

    Same clip as geoopt; ``jnp.arctanh`` is accurate near 0, where geoopt's
    ``(log(1 + x) - log(1 - x)) / 2`` cancels (float32: relative error 1 at x = 1e-8).
    """
    return jnp.arctanh(jnp.clip(x, -ARTANH_LIMIT, ARTANH_LIMIT))


def _tan_c(x: jnp.ndarray, c: jnp.ndarray) -> jnp.ndarray:
    r""":math:`\tan_\kappa(x) = \tanh(\sqrt{c}\,x) / \sqrt{c}` for :math:`\kappa = -c < 0`."""
    sqrt_c = _sqrt_c(c)
    return _tanh(x * sqrt_c) / sqrt_c


def _artan_c(x: jnp.ndarray, c: jnp.ndarray) -> jnp.ndarray:
    r""":math:`\tan_\kappa^{-1}(x) = \operatorname{artanh}(\sqrt{c}\,x) / \sqrt{c}`."""
    sqrt_c = _sqrt_c(c)
    return _artanh(x * sqrt_c) / sqrt_c


def _artan_c_with_defect(n: jnp.ndarray, defect: jnp.ndarray, c: jnp.ndarray) -> jnp.ndarray:
    r""":math:`\tan_c^{-1}(n)` for ``n >= 0`` given :math:`1 - c n^2` (``defect``) computed independently.

    With :math:`t = \sqrt{c}\,n` (geoopt's ``sqrt(c + 1e-15)``), :math:`\operatorname{artanh}(t)
    = \log(1 + t) - \tfrac12 \log(1 - t^2)` for t >= 1/2, where ``1 - t^2`` comes from the defect
    instead of from t; ``jnp.arctanh`` below 1/2. The clip at 1 - 1e-7 is geoopt's.
    """
    sqrt_c = _sqrt_c(c)
    t = jnp.minimum(n * sqrt_c, ARTANH_LIMIT)
    one_minus_t2 = jnp.maximum(defect - CURVATURE_EPS * n * n, 1.0 - ARTANH_LIMIT * ARTANH_LIMIT)
    near_one = t > 0.5
    safe = jnp.where(near_one, one_minus_t2, 1.0)  # guard: log of a small or clipped defect in the other branch
    return jnp.where(near_one, jnp.log1p(t) - 0.5 * jnp.log(safe), jnp.arctanh(jnp.where(near_one, 0.0, t))) / sqrt_c


# ----------------------------------------------------------------------------- formulas (unprojected)


def _lambda_x(x: jnp.ndarray, c: jnp.ndarray) -> jnp.ndarray:
    r""":math:`\lambda_x = 2 / \max(1 - c\|x\|^2, 10^{-15})`."""
    return 2.0 / jnp.maximum(1.0 - c * _sq_norm(x), MIN_NORM)


def _gyro_denominator(a: jnp.ndarray, b: jnp.ndarray, s: jnp.ndarray, c: jnp.ndarray) -> jnp.ndarray:
    r""":math:`D = 1 + 2c\langle a, b\rangle + c^2\|a\|^2\|b\|^2`, shared by Möbius addition and gyration.

    Computed as the equal :math:`(1 + c\langle a, b\rangle)^2 + c^2(\|a\|^2\langle b, s\rangle
    - \langle a, b\rangle\langle a, s\rangle)` with :math:`s = a + b` (the bracket is
    :math:`\|a\|^2\|b\|^2 - \langle a, b\rangle^2`). For nearby points near the boundary (``b``
    close to ``-a``) D is ~(1 - c|a|^2)^2, e.g. 1e-10 in float64, and geoopt's sum of O(1) terms
    keeps six of its digits; here the first term is a square and the bracket's terms are O(|s|).
    Every product in the bracket has a factor that is exactly 0 at ``a = 0``, ``b = 0`` or ``s = 0``.
    """
    a_dot_b = _dot(a, b)
    cross = _sq_norm(a) * _dot(b, s) - a_dot_b * _dot(a, s)  # |a|^2|b|^2 - <a,b>^2
    return (1.0 + c * a_dot_b) ** 2 + c * c * cross


def _mobius_add(x: jnp.ndarray, y: jnp.ndarray, c: jnp.ndarray) -> jnp.ndarray:
    r"""Möbius addition, unprojected.

    .. math::
        x \oplus_c y = \frac{(1 + 2c\langle x, y\rangle + c\|y\|^2)\,x + (1 - c\|x\|^2)\,y}
                            {\max(1 + 2c\langle x, y\rangle + c^2\|x\|^2\|y\|^2,\ 10^{-15})}

    With :math:`s = x + y` the numerator is computed as the equal :math:`s + cT`,
    :math:`T = \langle y, s\rangle x - \langle x, s\rangle y + \langle x, y\rangle s`, and the
    denominator by ``_gyro_denominator``. geoopt's term-by-term form cancels when ``y`` is close to
    ``-x`` (``(-x) ⊕ y`` in ``dist``, ``logmap``, ``transp`` of nearby points): float32 relative error
    up to 0.4 at ``|x - y|`` ~ 1e-6 of the radius, against 2e-7 here. Every product in T has a
    factor that is exactly 0 at ``x = 0``, ``y = 0`` and ``y = -x``, so the special values are exact
    and so are their derivatives in ``c`` (0), even under XLA's fused multiply-adds, which break
    cancellations of equal products (``x ⊕ 0`` through geoopt's form keeps exact zeros only because
    torch does not fuse).
    """
    return _mobius_add_with_defect(x, y, c)[0]


def _mobius_add_with_defect(x: jnp.ndarray, y: jnp.ndarray, c: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
    r""":math:`x \oplus_c y` (see ``_mobius_add``) and its defect :math:`1 - c\|x \oplus_c y\|^2`,

    computed from the identity :math:`1 - c\|x \oplus_c y\|^2 = (1 - c\|x\|^2)(1 - c\|y\|^2) / D`
    rather than from the result's norm, which near the boundary has lost the digits the defect
    is made of (1e-10 in float64 for two points 1e-5 inside the projection radius).
    """
    s = x + y
    x2 = _sq_norm(x)
    x_dot_y = _dot(x, y)
    t = _dot(y, s) * x - _dot(x, s) * y + x_dot_y * s  # = |s|^2 x - |x|^2 s
    num = s + c * t
    denom = jnp.maximum(_gyro_denominator(x, y, s, c), MIN_NORM)  # D vanishes only at y = -x/(c|x|^2), outside the ball
    defect = (1.0 - c * x2) * (1.0 - c * _sq_norm(y)) / denom
    return num / denom, defect


def _mobius_scalar_mul(r: jnp.ndarray, x: jnp.ndarray, c: jnp.ndarray) -> jnp.ndarray:
    r""":math:`r \otimes_c x = \tan_c(r \tan_c^{-1}(\|x\|))\, x / \|x\|`, unprojected."""
    x_norm = _clamped_norm(x)
    return _tan_c(r * _artan_c(x_norm, c), c) * (x / x_norm)


def _mobius_matvec(m: jnp.ndarray, x: jnp.ndarray, c: jnp.ndarray) -> jnp.ndarray:
    r""":math:`M \otimes_c x = \tan_c\big(\tfrac{\|Mx\|}{\|x\|} \tan_c^{-1}(\|x\|)\big)\, Mx / \|Mx\|`, unprojected.

    ``m`` has shape (out, in); ``x`` (..., in). With both norms clamped at 1e-15 the formula is exactly
    0 where ``Mx = 0`` and its gradient there is the true one, so geoopt's ``where(Mx == 0, 0, ...)``
    (which zeroes the gradient at ``x = 0`` and at ``M = 0``) is not reproduced.
    """
    x_norm = _clamped_norm(x)
    mx = jnp.einsum("...i,oi->...o", x, m)
    mx_norm = _clamped_norm(mx)
    return _tan_c(mx_norm / x_norm * _artan_c(x_norm, c), c) * (mx / mx_norm)


def _expmap(x: jnp.ndarray, u: jnp.ndarray, c: jnp.ndarray) -> jnp.ndarray:
    r""":math:`\exp_x(u) = x \oplus_c \tan_c(\lambda_x \|u\| / 2)\, u / \|u\|`, unprojected."""
    u_norm = _clamped_norm(u)
    second_term = _tan_c(_lambda_x(x, c) / 2.0 * u_norm, c) * (u / u_norm)
    return _mobius_add(x, second_term, c)


def _expmap0(u: jnp.ndarray, c: jnp.ndarray) -> jnp.ndarray:
    r""":math:`\exp_0(u) = \tan_c(\|u\|)\, u / \|u\|`, unprojected."""
    u_norm = _clamped_norm(u)
    return _tan_c(u_norm, c) * (u / u_norm)


def _gyration(a: jnp.ndarray, b: jnp.ndarray, u: jnp.ndarray, c: jnp.ndarray) -> jnp.ndarray:
    r"""Gyration :math:`\operatorname{gyr}[a, b]u = u + 2 (A a + B b) / \max(D, 10^{-15})` with :math:`\kappa = -c`,

    .. math::
        A = -\kappa^2 \langle a, u\rangle \|b\|^2 - \kappa \langle b, u\rangle
            + 2\kappa^2 \langle a, b\rangle \langle b, u\rangle, \quad
        B = -\kappa^2 \langle b, u\rangle \|a\|^2 + \kappa \langle a, u\rangle, \quad
        D = 1 - 2\kappa \langle a, b\rangle + \kappa^2 \|a\|^2 \|b\|^2.

    With :math:`s = a + b` and the equal :math:`E = A - B = \kappa^2(\langle b, u\rangle \|s\|^2
    - \langle s, u\rangle \|b\|^2) - \kappa \langle s, u\rangle`, the vector :math:`A a + B b`
    equals :math:`E a + B s` and :math:`A s - E b`. ``transp(x, y, v)`` is ``gyr[y, -x]``: for nearby
    ``x, y`` (an optimizer step) geoopt's form subtracts nearly equal O(1) terms, these multiply
    small ones. ``E a + B s`` is exact (every product has a zero factor) at ``a = 0`` and at
    ``s = 0`` (``transp(x, x, v) = v`` with zero derivative in ``c``, where geoopt returns rounding
    noise); ``A s - E b`` is exact at ``b = 0``, and is used there.
    """
    k = -c
    k2 = k * k
    s = a + b
    a2 = _sq_norm(a)
    b2 = _sq_norm(b)
    ab = _dot(a, b)
    au = _dot(a, u)
    bu = _dot(b, u)
    su = _dot(s, u)
    coef_a = -k2 * au * b2 - k * bu + 2.0 * k2 * ab * bu  # A: every term has a factor of b
    coef_b = -k2 * bu * a2 + k * au  # B: every term has a factor of a
    coef_a_minus_b = k2 * (bu * _sq_norm(s) - su * b2) - k * su  # E: every term has a factor of s
    # exact evaluation order per special input (XLA's fused multiply-adds break p - p = 0)
    combination = jnp.where(b2 == 0.0, coef_a * s - coef_a_minus_b * b, coef_a_minus_b * a + coef_b * s)
    d = _gyro_denominator(a, b, s, c)  # D above, accurate for b close to -a
    return u + 2.0 * combination / jnp.maximum(d, MIN_NORM)


def _lambda_ratio(x: jnp.ndarray, y: jnp.ndarray, c: jnp.ndarray) -> jnp.ndarray:
    r""":math:`\lambda_x / \lambda_y = \max(1 - c\|y\|^2, 10^{-15}) / \max(1 - c\|x\|^2, 10^{-15})`.

    Inside the ball computed as the equal :math:`1 + c(\|x\|^2 - \|y\|^2) / (1 - c\|x\|^2)`:
    exactly 1 with zero derivative in ``c`` at ``y = x`` (the quotient of two equal products is not,
    under fused multiply-adds) and accurate for the nearby points of an optimizer step.
    """
    x2 = _sq_norm(x)
    y2 = _sq_norm(y)
    qx = 1.0 - c * x2
    qy = 1.0 - c * y2
    inside = (qx > MIN_NORM) & (qy > MIN_NORM)
    safe_qx = jnp.where(inside, qx, 1.0)  # guard: the clamped branch below handles the rest
    clamped = jnp.maximum(qy, MIN_NORM) / jnp.maximum(qx, MIN_NORM)
    return jnp.where(inside, 1.0 + c * (x2 - y2) / safe_qx, clamped)


def _transp(x: jnp.ndarray, y: jnp.ndarray, v: jnp.ndarray, c: jnp.ndarray) -> jnp.ndarray:
    r""":math:`P_{x \to y}(v) = \operatorname{gyr}[y, -x]\, v \; \lambda_x / \lambda_y`."""
    return _gyration(y, -x, v, c) * _lambda_ratio(x, y, c)


def _project(x: jnp.ndarray, c: jnp.ndarray) -> jnp.ndarray:
    r"""Rescale ``x`` onto the sphere of radius :math:`(1 - \epsilon)/\sqrt{c}` where it lies beyond it.

    :math:`\epsilon` = ``ball_eps(x.dtype)``; the branch not taken is finite (clamped norm), so the
    ``where`` passes clean gradients.
    """
    max_norm = (1.0 - ball_eps(x.dtype)) / _sqrt_c(c)
    x_norm = _clamped_norm(x)
    return jnp.where(x_norm > max_norm, x / x_norm * max_norm, x)


# ----------------------------------------------------------------------------- the contract
#
# Shapes, for every function below: a point or tangent vector is the last axis of an array and the
# leading (batch) axes broadcast against each other; ``c`` broadcasts against (..., 1). Scalar
# results keep a trailing axis of size 1.


def project(x: ArrayLike, *, c: ArrayLike) -> jax.Array:
    r"""Projection into the ball: points beyond radius :math:`(1 - \epsilon)/\sqrt{c}` are pulled back onto it.

    .. math::
        \operatorname{project}(x) = \begin{cases}
            x \, r_\epsilon / \|x\| & \text{if } \|x\| > r_\epsilon \\ x & \text{otherwise}
        \end{cases}, \qquad r_\epsilon = \frac{1 - \epsilon}{\sqrt{c}},

    :math:`\epsilon` = ``ball_eps(dtype)`` (4e-3 in float32, 1e-5 otherwise), geoopt's ``_project``.

    Args:
      x: points, shape (..., d); need not be inside the ball.
      c: curvature parameter (the ball's curvature is ``-c``), ``c > 0``: a float or an array.

    Returns:
      Shape of ``x``; every row has norm at most :math:`r_\epsilon`. Norms are clamped at 1e-15 and
      ``c`` enters as ``sqrt(c + 1e-15)``, as in geoopt.
    """
    dtype = _float_dtype(x)
    x, c = _as(dtype, x, c)
    return _project(x, c)


def lambda_x(x: ArrayLike, *, c: ArrayLike) -> jax.Array:
    r"""Conformal factor of the metric at ``x``: :math:`\lambda_x = 2 / (1 - c\|x\|^2)`.

    The Riemannian metric of the ball is :math:`\lambda_x^2` times the Euclidean one.

    Args:
      x: points in the ball, shape (..., d).
      c: curvature parameter, ``c > 0`` (float or array).

    Returns:
      Shape (..., 1). The denominator is clamped at 1e-15 (geoopt), so the factor stays finite (at
      most 2e15) on and beyond the boundary.

    References:
      Ganea, Bécigneul & Hofmann, `Hyperbolic Neural Networks <https://arxiv.org/abs/1805.09112>`_,
      NeurIPS 2018: the conformal factor of the Poincaré ball.
    """
    dtype = _float_dtype(x)
    x, c = _as(dtype, x, c)
    return _lambda_x(x, c)


def mobius_add(x: ArrayLike, y: ArrayLike, *, c: ArrayLike) -> jax.Array:
    r"""Möbius addition :math:`x \oplus_c y`, projected into the ball.

    .. math::
        x \oplus_c y = \frac{(1 + 2c\langle x, y\rangle + c\|y\|^2)\,x + (1 - c\|x\|^2)\,y}
                            {1 + 2c\langle x, y\rangle + c^2\|x\|^2\|y\|^2}

    Neither commutative nor associative; ``0`` is its identity and :math:`(-x) \oplus_c (x \oplus_c
    y) = y` (left cancellation).

    Args:
      x: points in the ball, shape (..., d).
      y: points in the ball, shape (..., d) (leading axes broadcast against ``x``'s).
      c: curvature parameter, ``c > 0`` (float or array).

    Returns:
      The broadcast shape of ``x`` and ``y``, passed through ``project``. The denominator is clamped
      at 1e-15; the sum is computed around ``s = x + y`` (see ``_mobius_add``): exact at ``x = 0``,
      ``y = 0`` and ``y = -x``, and accurate for nearby points where geoopt's form cancels.

    References:
      Ganea, Bécigneul & Hofmann, `Hyperbolic Neural Networks <https://arxiv.org/abs/1805.09112>`_,
      NeurIPS 2018: Möbius addition.
      Ungar, A Gyrovector Space Approach to Hyperbolic Geometry, Morgan & Claypool, 2008.
    """
    dtype = _float_dtype(x, y)
    x, y, c = _as(dtype, x, y, c)
    return _project(_mobius_add(x, y, c), c)


def mobius_scalar_mul(r: ArrayLike, x: ArrayLike, *, c: ArrayLike) -> jax.Array:
    r"""Möbius scalar multiplication :math:`r \otimes_c x`, projected into the ball.

    .. math::
        r \otimes_c x = \frac{1}{\sqrt{c}} \tanh\!\big(r \operatorname{artanh}(\sqrt{c}\,\|x\|)\big)
                        \frac{x}{\|x\|}

    Args:
      r: scalars, broadcasting against (..., 1) (e.g. shape (..., 1), or a float).
      x: points in the ball, shape (..., d).
      c: curvature parameter, ``c > 0`` (float or array).

    Returns:
      Shape of ``x`` (broadcast), passed through ``project``. Guards (geoopt's): ``|x|`` clamped at
      1e-15 (so ``r ⊗ 0 = 0``), ``artanh`` argument clipped to ``±(1 - 1e-7)``, ``tanh`` argument to
      ``±15``.

    References:
      Ganea, Bécigneul & Hofmann, `Hyperbolic Neural Networks <https://arxiv.org/abs/1805.09112>`_,
      NeurIPS 2018: Möbius scalar multiplication.
      Ungar, A Gyrovector Space Approach to Hyperbolic Geometry, Morgan & Claypool, 2008.
    """
    dtype = _float_dtype(x)
    r, x, c = _as(dtype, r, x, c)
    return _project(_mobius_scalar_mul(r, x, c), c)


def mobius_matvec(m: ArrayLike, x: ArrayLike, *, c: ArrayLike) -> jax.Array:
    r"""Möbius matrix-vector product :math:`M \otimes_c x`, projected into the ball.

    .. math::
        M \otimes_c x = \frac{1}{\sqrt{c}} \tanh\!\Big(\frac{\|Mx\|}{\|x\|}
                        \operatorname{artanh}(\sqrt{c}\,\|x\|)\Big) \frac{Mx}{\|Mx\|}
                      = \exp_0(M \log_0(x))

    Args:
      m: matrix of shape (out, in) (no batch axes).
      x: points in the ball of dimension ``in``, shape (..., in).
      c: curvature parameter, ``c > 0`` (float or array).

    Returns:
      Shape (..., out), passed through ``project``. ``|x|`` and ``|Mx|`` are clamped at 1e-15, which
      makes the result exactly 0 where ``Mx = 0`` with the true gradient there; geoopt's extra
      ``where(Mx == 0, 0, ...)`` (which zeroes that gradient) is not reproduced. ``artanh`` and
      ``tanh`` arguments are clipped as in ``mobius_scalar_mul``.

    References:
      Ganea, Bécigneul & Hofmann, `Hyperbolic Neural Networks <https://arxiv.org/abs/1805.09112>`_,
      NeurIPS 2018: Möbius matrix-vector multiplication.
    """
    dtype = _float_dtype(m, x)
    m, x, c = _as(dtype, m, x, c)
    return _project(_mobius_matvec(m, x, c), c)


def expmap(x: ArrayLike, u: ArrayLike, *, c: ArrayLike) -> jax.Array:
    r"""Exponential map at ``x``: the point reached from ``x`` along the geodesic with initial velocity ``u``.

    .. math::
        \exp_x(u) = x \oplus_c \Big(\frac{1}{\sqrt{c}} \tanh\!\Big(\sqrt{c}\,\frac{\lambda_x \|u\|}{2}\Big)
                    \frac{u}{\|u\|}\Big)

    Args:
      x: points in the ball, shape (..., d).
      u: tangent vectors at ``x``, shape (..., d) (leading axes broadcast).
      c: curvature parameter, ``c > 0`` (float or array).

    Returns:
      The broadcast shape, passed through ``project`` (the inner Möbius addition is not projected, as
      in geoopt). ``|u|`` clamped at 1e-15 (``expmap(x, 0) = x``), ``tanh`` argument clipped to ``±15``,
      ``lambda_x`` as in ``lambda_x``.

    References:
      Ganea, Bécigneul & Hofmann, `Hyperbolic Neural Networks <https://arxiv.org/abs/1805.09112>`_,
      NeurIPS 2018: closed-form exponential map of the Poincaré ball.
    """
    dtype = _float_dtype(x, u)
    x, u, c = _as(dtype, x, u, c)
    return _project(_expmap(x, u, c), c)


def expmap0(u: ArrayLike, *, c: ArrayLike) -> jax.Array:
    r"""Exponential map at the origin: :math:`\exp_0(u) = \tanh(\sqrt{c}\,\|u\|)\, u / (\sqrt{c}\,\|u\|)`.

    Args:
      u: tangent vectors at 0, shape (..., d).
      c: curvature parameter, ``c > 0`` (float or array).

    Returns:
      Shape of ``u``, passed through ``project``. ``|u|`` clamped at 1e-15, ``tanh`` argument clipped
      to ``±15``.

    References:
      Ganea, Bécigneul & Hofmann, `Hyperbolic Neural Networks <https://arxiv.org/abs/1805.09112>`_,
      NeurIPS 2018: exponential map at 0.
    """
    dtype = _float_dtype(u)
    u, c = _as(dtype, u, c)
    return _project(_expmap0(u, c), c)


def logmap(x: ArrayLike, y: ArrayLike, *, c: ArrayLike) -> jax.Array:
    r"""Logarithmic map at ``x`` (inverse of ``expmap``): the tangent vector at ``x`` pointing to ``y``.

    .. math::
        \log_x(y) = \frac{2}{\sqrt{c}\,\lambda_x} \operatorname{artanh}(\sqrt{c}\,\|w\|) \frac{w}{\|w\|},
        \qquad w = (-x) \oplus_c y

    Args:
      x: points in the ball, shape (..., d).
      y: points in the ball, shape (..., d) (leading axes broadcast).
      c: curvature parameter, ``c > 0`` (float or array).

    Returns:
      The broadcast shape; not projected (a tangent vector). ``w`` is not projected (geoopt), ``|w|``
      is clamped at 1e-15 (``logmap(x, x) = 0``), the ``artanh`` argument clipped to ``1 - 1e-7``;
      near 1 the ``artanh`` takes :math:`1 - c\|w\|^2` from the identity :math:`(1 - c\|x\|^2)(1 -
      c\|y\|^2)/D` rather than from ``|w|`` (see the module docstring).

    References:
      Ganea, Bécigneul & Hofmann, `Hyperbolic Neural Networks <https://arxiv.org/abs/1805.09112>`_,
      NeurIPS 2018: closed-form logarithmic map of the Poincaré ball.
    """
    dtype = _float_dtype(x, y)
    x, y, c = _as(dtype, x, y, c)
    sub, defect = _mobius_add_with_defect(-x, y, c)
    sub_norm = _clamped_norm(sub)
    return 2.0 * _artan_c_with_defect(sub_norm, defect, c) * (sub / (_lambda_x(x, c) * sub_norm))


def logmap0(y: ArrayLike, *, c: ArrayLike) -> jax.Array:
    r"""Logarithmic map at the origin (inverse of ``expmap0``).

    .. math::
        \log_0(y) = \frac{1}{\sqrt{c}} \operatorname{artanh}(\sqrt{c}\,\|y\|) \frac{y}{\|y\|}

    Args:
      y: points in the ball, shape (..., d).
      c: curvature parameter, ``c > 0`` (float or array).

    Returns:
      Shape of ``y``; not projected. ``|y|`` clamped at 1e-15, ``artanh`` argument clipped to
      ``±(1 - 1e-7)`` and computed with ``jnp.arctanh`` (accurate near 0, unlike geoopt's float32
      ``artanh``).

    References:
      Ganea, Bécigneul & Hofmann, `Hyperbolic Neural Networks <https://arxiv.org/abs/1805.09112>`_,
      NeurIPS 2018: logarithmic map at 0.
    """
    dtype = _float_dtype(y)
    y, c = _as(dtype, y, c)
    y_norm = _clamped_norm(y)
    return (y / y_norm) * _artan_c(y_norm, c)


def dist(x: ArrayLike, y: ArrayLike, *, c: ArrayLike) -> jax.Array:
    r"""Geodesic distance :math:`d_c(x, y) = \frac{2}{\sqrt{c}} \operatorname{artanh}(\sqrt{c}\,\|(-x) \oplus_c y\|)`.

    Args:
      x: points in the ball, shape (..., d).
      y: points in the ball, shape (..., d) (leading axes broadcast).
      c: curvature parameter, ``c > 0`` (float or array).

    Returns:
      Shape (..., 1) (geoopt's ``keepdim=True``). The norm is unclamped, as in geoopt; the ``artanh``
      argument is clipped to ``1 - 1e-7`` and taken from the defect near 1 (as in ``logmap``). At
      ``x = y`` the distance is a cone's tip: ``(-x) ⊕ x`` is exactly 0 here and the gradient is the
      zero subgradient (torch's norm convention at 0). geoopt differentiates the rounding residual of
      its ``(-x) ⊕ x`` instead, which is nonzero for some points and then gives an O(1) gradient in an
      arbitrary direction.

    References:
      Ganea, Bécigneul & Hofmann, `Hyperbolic Neural Networks <https://arxiv.org/abs/1805.09112>`_,
      NeurIPS 2018: distance in the Poincaré ball.
    """
    dtype = _float_dtype(x, y)
    x, y, c = _as(dtype, x, y, c)
    sub, defect = _mobius_add_with_defect(-x, y, c)
    return 2.0 * _artan_c_with_defect(_norm(sub), defect, c)


def dist0(x: ArrayLike, *, c: ArrayLike) -> jax.Array:
    r"""Distance to the origin: :math:`d_c(0, x) = \frac{2}{\sqrt{c}} \operatorname{artanh}(\sqrt{c}\,\|x\|)`.

    Args:
      x: points in the ball, shape (..., d).
      c: curvature parameter, ``c > 0`` (float or array).

    Returns:
      Shape (..., 1). Unclamped norm with the zero subgradient at ``x = 0``; ``artanh`` argument
      clipped to ``1 - 1e-7``.

    References:
      Ganea, Bécigneul & Hofmann, `Hyperbolic Neural Networks <https://arxiv.org/abs/1805.09112>`_,
      NeurIPS 2018: distance in the Poincaré ball.
    """
    dtype = _float_dtype(x)
    x, c = _as(dtype, x, c)
    return 2.0 * _artan_c(_norm(x), c)


def gyration(a: ArrayLike, b: ArrayLike, u: ArrayLike, *, c: ArrayLike) -> jax.Array:
    r"""Gyration :math:`\operatorname{gyr}[a, b]u = \ominus(a \oplus_c b) \oplus_c (a \oplus_c (b \oplus_c u))`.

    Computed in closed form. It is the rotation that makes Möbius addition gyroassociative,
    :math:`a \oplus (b \oplus u) = (a \oplus b) \oplus \operatorname{gyr}[a, b]u`. With
    :math:`\kappa = -c`,

    .. math::
        \operatorname{gyr}[a, b]u = u + 2\,\frac{A a + B b}{D},\quad
        A = -\kappa^2 \langle a, u\rangle \|b\|^2 - \kappa \langle b, u\rangle
            + 2\kappa^2 \langle a, b\rangle \langle b, u\rangle,\quad
        B = -\kappa^2 \langle b, u\rangle \|a\|^2 + \kappa \langle a, u\rangle,\quad
        D = 1 - 2\kappa \langle a, b\rangle + \kappa^2 \|a\|^2 \|b\|^2.

    Args:
      a: points in the ball, shape (..., d).
      b: points in the ball, shape (..., d).
      u: vectors, shape (..., d) (leading axes of all three broadcast).
      c: curvature parameter, ``c > 0`` (float or array).

    Returns:
      The broadcast shape; not projected (a gyration is a rotation: it keeps ``|u|``). ``D`` is
      clamped at 1e-15; ``A a + B b`` is evaluated around ``s = a + b`` (see ``_gyration``), exact at
      ``a = 0``, ``b = 0`` and ``b = -a`` and accurate for nearby points.

    References:
      Ungar, A Gyrovector Space Approach to Hyperbolic Geometry, Morgan & Claypool, 2008: gyrations of Möbius addition.
      Ganea, Bécigneul & Hofmann, `Hyperbolic Neural Networks <https://arxiv.org/abs/1805.09112>`_,
      NeurIPS 2018.
    """
    dtype = _float_dtype(a, b, u)
    a, b, u, c = _as(dtype, a, b, u, c)
    return _gyration(a, b, u, c)


def transp(x: ArrayLike, y: ArrayLike, v: ArrayLike, *, c: ArrayLike) -> jax.Array:
    r"""Parallel transport of the tangent vector ``v`` from ``x`` to ``y`` (along the geodesic).

    .. math::
        P_{x \to y}(v) = \operatorname{gyr}[y, -x]\, v \; \frac{\lambda_x}{\lambda_y}

    Args:
      x: start points in the ball, shape (..., d).
      y: end points in the ball, shape (..., d).
      v: tangent vectors at ``x``, shape (..., d) (leading axes of all three broadcast).
      c: curvature parameter, ``c > 0`` (float or array).

    Returns:
      The broadcast shape: tangent vectors at ``y`` with the same Riemannian norm. Denominators
      clamped at 1e-15 as in ``gyration`` and ``lambda_x``; ``transp(x, x, v) = v`` exactly, with zero
      derivative in ``c``, and ``lambda_x / lambda_y`` is computed from ``|x|^2 - |y|^2`` (see
      ``_lambda_ratio``), accurate for the nearby points of an optimizer step.

    References:
      Ganea, Bécigneul & Hofmann, `Hyperbolic Neural Networks <https://arxiv.org/abs/1805.09112>`_,
      NeurIPS 2018: parallel transport in the Poincaré ball.
      Ungar, A Gyrovector Space Approach to Hyperbolic Geometry, Morgan & Claypool, 2008.
      Bécigneul & Ganea, `Riemannian Adaptive Optimization Methods <https://arxiv.org/abs/1810.00760>`_,
      ICLR 2019: its use by the optimizers.
    """
    dtype = _float_dtype(x, y, v)
    x, y, v, c = _as(dtype, x, y, v, c)
    return _transp(x, y, v, c)


def transp0(y: ArrayLike, v: ArrayLike, *, c: ArrayLike) -> jax.Array:
    r"""Parallel transport of ``v`` from the origin to ``y``.

    .. math::
        P_{0 \to y}(v) = v \, \frac{\lambda_0}{\lambda_y} = v\,(1 - c\|y\|^2)

    Args:
      y: end points in the ball, shape (..., d).
      v: tangent vectors at 0, shape (..., d) (leading axes broadcast).
      c: curvature parameter, ``c > 0`` (float or array).

    Returns:
      The broadcast shape. The factor :math:`1 - c\|y\|^2` is clamped at 1e-15 (geoopt).

    References:
      Ganea, Bécigneul & Hofmann, `Hyperbolic Neural Networks <https://arxiv.org/abs/1805.09112>`_,
      NeurIPS 2018: parallel transport from 0.
    """
    dtype = _float_dtype(y, v)
    y, v, c = _as(dtype, y, v, c)
    return v * jnp.maximum(1.0 - c * _sq_norm(y), MIN_NORM)


def inner(x: ArrayLike, u: ArrayLike, v: ArrayLike | None = None, *, c: ArrayLike) -> jax.Array:
    r"""Riemannian inner product at ``x``: :math:`\langle u, v\rangle_x = \lambda_x^2 \langle u, v\rangle`.

    Args:
      x: points in the ball, shape (..., d).
      u: tangent vectors at ``x``, shape (..., d).
      v: tangent vectors at ``x``, shape (..., d); defaults to ``u`` (then the result is
        :math:`\|u\|_x^2`). Leading axes of all three broadcast.
      c: curvature parameter, ``c > 0`` (float or array).

    Returns:
      Shape (..., 1). ``lambda_x`` as in ``lambda_x`` (clamped denominator).

    References:
      Ganea, Bécigneul & Hofmann, `Hyperbolic Neural Networks <https://arxiv.org/abs/1805.09112>`_,
      NeurIPS 2018: the Poincaré metric.
    """
    if v is None:
        v = u
    dtype = _float_dtype(x, u, v)
    x, u, v, c = _as(dtype, x, u, v, c)
    return _lambda_x(x, c) ** 2 * _dot(u, v)


def norm(x: ArrayLike, u: ArrayLike, *, c: ArrayLike) -> jax.Array:
    r"""Riemannian norm of a tangent vector at ``x``: :math:`\|u\|_x = \lambda_x \|u\|`.

    Args:
      x: points in the ball, shape (..., d).
      u: tangent vectors at ``x``, shape (..., d) (leading axes broadcast).
      c: curvature parameter, ``c > 0`` (float or array).

    Returns:
      Shape (..., 1). Unclamped Euclidean norm with the zero subgradient at ``u = 0`` (torch's
      convention, where JAX's would be NaN).

    References:
      Ganea, Bécigneul & Hofmann, `Hyperbolic Neural Networks <https://arxiv.org/abs/1805.09112>`_,
      NeurIPS 2018: the Poincaré metric.
    """
    dtype = _float_dtype(x, u)
    x, u, c = _as(dtype, x, u, c)
    return _lambda_x(x, c) * _norm(u)


def egrad2rgrad(x: ArrayLike, g: ArrayLike, *, c: ArrayLike) -> jax.Array:
    r"""Riemannian gradient from the Euclidean gradient ``g`` at ``x``: :math:`\nabla_x = g / \lambda_x^2`.

    The metric is conformal, so the Riemannian gradient is the Euclidean one rescaled.

    Args:
      x: points in the ball, shape (..., d).
      g: Euclidean gradients at ``x``, shape (..., d) (leading axes broadcast).
      c: curvature parameter, ``c > 0`` (float or array).

    Returns:
      The broadcast shape: tangent vectors at ``x``. ``lambda_x`` as in ``lambda_x``.

    References:
      Ganea, Bécigneul & Hofmann, `Hyperbolic Neural Networks <https://arxiv.org/abs/1805.09112>`_,
      NeurIPS 2018.
      Bécigneul & Ganea, `Riemannian Adaptive Optimization Methods <https://arxiv.org/abs/1810.00760>`_,
      ICLR 2019: the Riemannian gradient the optimizers follow.
    """
    dtype = _float_dtype(x, g)
    x, g, c = _as(dtype, x, g, c)
    return g / _lambda_x(x, c) ** 2


def proju(x: ArrayLike, u: ArrayLike, *, c: ArrayLike) -> jax.Array:
    """Projection of ``u`` onto the tangent space at ``x``: the identity, as in geoopt.

    The ball is an open subset of :math:`\\mathbb{R}^d`, so every vector is tangent.

    Args:
      x: points in the ball, shape (..., d).
      u: vectors, shape (..., d).
      c: curvature parameter (unused; kept for a uniform signature).

    Returns:
      ``u`` broadcast to the common shape of ``x`` and ``u``.
    """
    dtype = _float_dtype(x, u)
    x, u = _as(dtype, x, u)
    return jnp.broadcast_to(u, jnp.broadcast_shapes(x.shape, u.shape))


def retr(x: ArrayLike, u: ArrayLike, *, c: ArrayLike) -> jax.Array:
    r"""First-order retraction :math:`R_x(u) = \operatorname{project}(x + u)` (geoopt's ``PoincareBall.retr``).

    Agrees with ``expmap(x, u)`` to first order in ``u``; what geoopt's optimizers use on
    ``PoincareBall`` (``expmap`` on ``PoincareBallExact``).

    Args:
      x: points in the ball, shape (..., d).
      u: tangent vectors at ``x``, shape (..., d) (leading axes broadcast).
      c: curvature parameter, ``c > 0`` (float or array).

    Returns:
      The broadcast shape, passed through ``project``.

    References:
      Bécigneul & Ganea, `Riemannian Adaptive Optimization Methods <https://arxiv.org/abs/1810.00760>`_,
      ICLR 2019: retraction-based Riemannian SGD and Adam.
    """
    dtype = _float_dtype(x, u)
    x, u, c = _as(dtype, x, u, c)
    return _project(x + u, c)


def retr_transp(x: ArrayLike, u: ArrayLike, v: ArrayLike, *, c: ArrayLike) -> tuple[jax.Array, jax.Array]:
    r"""One optimizer move: :math:`y = R_x(u) = \operatorname{project}(x + u)` and :math:`P_{x \to y}(v)`.

    geoopt's ``PoincareBall.retr_transp``: its Riemannian SGD and Adam move a point with it and carry
    the momentum ``v`` along.

    Args:
      x: points in the ball, shape (..., d).
      u: tangent vectors at ``x`` (the step), shape (..., d).
      v: tangent vectors at ``x`` to transport (the momentum), shape (..., d). Leading axes of all
        three broadcast.
      c: curvature parameter, ``c > 0`` (float or array).

    Returns:
      ``(y, transp(x, y, v))``, both of the broadcast shape; ``y`` is projected (see ``retr``,
      ``transp`` for the guards).

    References:
      Bécigneul & Ganea, `Riemannian Adaptive Optimization Methods <https://arxiv.org/abs/1810.00760>`_,
      ICLR 2019: retraction and parallel transport in Riemannian adaptive methods.
      Ganea, Bécigneul & Hofmann, `Hyperbolic Neural Networks <https://arxiv.org/abs/1805.09112>`_,
      NeurIPS 2018.
    """
    dtype = _float_dtype(x, u, v)
    x, u, v, c = _as(dtype, x, u, v, c)
    y = _project(x + u, c)
    return y, _transp(x, y, v, c)


def expmap_transp(x: ArrayLike, u: ArrayLike, v: ArrayLike, *, c: ArrayLike) -> tuple[jax.Array, jax.Array]:
    r"""The exact optimizer move: :math:`y = \exp_x(u)` and :math:`P_{x \to y}(v)`.

    geoopt's ``PoincareBallExact.retr_transp`` (``Stereographic.expmap_transp``): the move of its
    optimizers on a ball built with ``exact``.

    Args:
      x: points in the ball, shape (..., d).
      u: tangent vectors at ``x`` (the step), shape (..., d).
      v: tangent vectors at ``x`` to transport, shape (..., d). Leading axes of all three broadcast.
      c: curvature parameter, ``c > 0`` (float or array).

    Returns:
      ``(y, transp(x, y, v))``, both of the broadcast shape; ``y`` is projected (see ``expmap``).

    References:
      Bécigneul & Ganea, `Riemannian Adaptive Optimization Methods <https://arxiv.org/abs/1810.00760>`_,
      ICLR 2019: exponential map and parallel transport in Riemannian adaptive methods.
      Ganea, Bécigneul & Hofmann, `Hyperbolic Neural Networks <https://arxiv.org/abs/1805.09112>`_,
      NeurIPS 2018.
    """
    dtype = _float_dtype(x, u, v)
    x, u, v, c = _as(dtype, x, u, v, c)
    y = _project(_expmap(x, u, c), c)
    return y, _transp(x, y, v, c)
