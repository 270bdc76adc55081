"""Gyrovector-space identities of `jax_impl.poincare`, float64, checked with hypothesis.

Each example draws a curvature c in [1e-3, 10], a dimension and a batch of points well inside the
ball (so that the projection, a numerical safeguard, is not what is being tested), then checks one
identity of the Poincaré ball on the whole batch.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jax_impl import poincare as pm

SETTINGS = settings(max_examples=40, deadline=None)
BATCH = 6


@st.composite
def balls(draw, *, max_fraction: float = 0.7):
    """(c, rng, dim): a curvature, a numpy generator seeded by hypothesis, and a dimension."""
    c = 10.0 ** draw(st.floats(-3.0, 1.0))
    dim = draw(st.sampled_from([2, 3, 5, 16]))
    seed = draw(st.integers(0, 2**32 - 1))
    return c, np.random.default_rng(seed), dim


def points(rng, c, dim, max_fraction=0.7, min_fraction=0.0):
    """BATCH points with norms uniform in [min_fraction, max_fraction] of the radius 1/sqrt(c)."""
    direction = rng.standard_normal((BATCH, dim))
    direction /= np.linalg.norm(direction, axis=-1, keepdims=True)
    fraction = rng.uniform(min_fraction, max_fraction, (BATCH, 1))
    return direction * fraction / np.sqrt(c)


def close(actual, desired, c, rtol=1e-9):
    """Equal up to rtol relative, with an absolute floor at rtol times the radius (for near-zero entries)."""
    np.testing.assert_allclose(np.asarray(actual), np.asarray(desired), rtol=rtol, atol=rtol / np.sqrt(c))


@SETTINGS
@given(balls())
def test_left_cancellation(ball):
    c, rng, dim = ball
    a, b = points(rng, c, dim), points(rng, c, dim)
    close(pm.mobius_add(-a, pm.mobius_add(a, b, c=c), c=c), b, c)


@SETTINGS
@given(balls())
def test_zero_is_the_identity(ball):
    c, rng, dim = ball
    a = points(rng, c, dim)
    zero = np.zeros_like(a)
    close(pm.mobius_add(a, zero, c=c), a, c, rtol=1e-15)
    close(pm.mobius_add(zero, a, c=c), a, c, rtol=1e-15)


@SETTINGS
@given(balls())
def test_inverse(ball):
    c, rng, dim = ball
    a = points(rng, c, dim)
    assert np.all(np.asarray(pm.mobius_add(a, -a, c=c)) == 0.0)
    assert np.all(np.asarray(pm.mobius_add(-a, a, c=c)) == 0.0)


@SETTINGS
@given(balls())
def test_gyrocommutativity(ball):
    c, rng, dim = ball
    a, b = points(rng, c, dim), points(rng, c, dim)
    close(pm.mobius_add(a, b, c=c), pm.gyration(a, b, pm.mobius_add(b, a, c=c), c=c), c)


@SETTINGS
@given(balls())
def test_expmap_logmap_inverse(ball):
    c, rng, dim = ball
    x, y = points(rng, c, dim), points(rng, c, dim)
    close(pm.expmap(x, pm.logmap(x, y, c=c), c=c), y, c, rtol=1e-8)
    # a tangent vector whose geodesic stays well inside: Riemannian length <= 2
    v = points(rng, c, dim, max_fraction=1.0) / pm.lambda_x(x, c=c)
    close(pm.logmap(x, pm.expmap(x, v, c=c), c=c), v, c, rtol=1e-8)


@SETTINGS
@given(balls())
def test_expmap0_logmap0_inverse(ball):
    c, rng, dim = ball
    y = points(rng, c, dim)
    close(pm.expmap0(pm.logmap0(y, c=c), c=c), y, c)
    u = points(rng, c, dim, max_fraction=2.0)
    close(pm.logmap0(pm.expmap0(u, c=c), c=c), u, c, rtol=1e-8)


@SETTINGS
@given(balls())
def test_dist_symmetric_and_triangle(ball):
    c, rng, dim = ball
    x, y, z = points(rng, c, dim), points(rng, c, dim), points(rng, c, dim)
    dxy, dyx = pm.dist(x, y, c=c), pm.dist(y, x, c=c)
    close(dxy, dyx, c)
    slack = 1e-9 / np.sqrt(c)
    assert np.all(np.asarray(dxy) <= np.asarray(pm.dist(x, z, c=c) + pm.dist(z, y, c=c)) + slack)
    assert np.all(np.asarray(pm.dist(x, x, c=c)) == 0.0)


@SETTINGS
@given(balls())
def test_dist_along_expmap_is_the_riemannian_norm(ball):
    c, rng, dim = ball
    x = points(rng, c, dim)
    v = points(rng, c, dim, max_fraction=1.0) / pm.lambda_x(x, c=c)
    close(pm.dist(x, pm.expmap(x, v, c=c), c=c), pm.norm(x, v, c=c), c, rtol=1e-8)


@SETTINGS
@given(balls())
def test_transp_preserves_the_riemannian_norm(ball):
    c, rng, dim = ball
    x, y = points(rng, c, dim), points(rng, c, dim)
    v = points(rng, c, dim, max_fraction=3.0)
    close(pm.norm(y, pm.transp(x, y, v, c=c), c=c), pm.norm(x, v, c=c), c)
    close(pm.inner(y, pm.transp(x, y, v, c=c), pm.transp(x, y, x, c=c), c=c), pm.inner(x, v, x, c=c), c, rtol=1e-8)
    close(pm.transp(x, x, v, c=c), v, c, rtol=1e-15)


@SETTINGS
@given(balls(), st.integers(1, 6), st.integers(1, 6))
def test_matvec_composition(ball, mid, out):
    c, rng, dim = ball
    x = points(rng, c, dim, max_fraction=0.5, min_fraction=0.05)
    # spectral norms <= 1: the images stay inside the ball
    a = rng.standard_normal((out, mid))
    b = rng.standard_normal((mid, dim))
    a /= max(np.linalg.norm(a, 2), 1.0)
    b /= max(np.linalg.norm(b, 2), 1.0)
    bx = pm.mobius_matvec(b, x, c=c)
    if np.any(np.linalg.norm(x @ b.T, axis=-1) < 1e-6 / np.sqrt(c)):
        return  # M x ~ 0: the direction of M x is undefined
    close(pm.mobius_matvec(a, bx, c=c), pm.mobius_matvec(a @ b, x, c=c), c, rtol=1e-8)


@SETTINGS
@given(balls(), st.floats(-2.0, 2.0), st.floats(-2.0, 2.0))
def test_scalar_associativity(ball, r, s):
    c, rng, dim = ball
    x = points(rng, c, dim, max_fraction=0.5)
    close(pm.mobius_scalar_mul(r * s, x, c=c), pm.mobius_scalar_mul(r, pm.mobius_scalar_mul(s, x, c=c), c=c), c,
          rtol=1e-8)


@pytest.mark.parametrize("c", [1e-3, 1.0, 10.0])
def test_scalar_multiplication_by_integers_is_repeated_addition(c):
    rng = np.random.default_rng(0)
    x = points(rng, c, 7, max_fraction=0.3)
    close(pm.mobius_scalar_mul(3.0, x, c=c), pm.mobius_add(x, pm.mobius_add(x, x, c=c), c=c), c)
