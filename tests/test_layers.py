"""Möbius layers: JAX (jax_impl.layers) against PyTorch + geoopt (torch_ref.layers), and their identities."""

from __future__ import annotations

import geoopt
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

import jax_impl.layers as jl
import jax_impl.poincare as jp
import torch_ref.layers as tl
from jax_impl.optim import BallParam

IN, OUT, BATCH = 7, 5, 6


def _points(rng, shape, c, radius=0.7):
    """Random points of the ball with sqrt(c)|x| spread over (0, radius)."""
    x = rng.normal(size=shape)
    r = radius * rng.random(shape[:-1] + (1,))
    return x / np.linalg.norm(x, axis=-1, keepdims=True) * r / np.sqrt(c)


def _pair(c, tied=False, seed=0):
    """A JAX and a torch MobiusLinear holding the same float64 weight and ball bias."""
    rng = np.random.default_rng(seed)
    weight = rng.normal(size=(OUT, IN)) / np.sqrt(IN)
    bias = _points(rng, (OUT,), c, radius=0.5)
    j = jl.MobiusLinear(IN, OUT, c=c, tied=tied, rngs=nnx.Rngs(0), dtype=jnp.float64)
    j.bias[...] = jnp.asarray(bias)
    t = tl.MobiusLinear(IN, OUT, c=c, tied=tied, dtype=torch.float64)
    with torch.no_grad():
        t.bias.copy_(torch.from_numpy(bias))
    if not tied:
        j.weight[...] = jnp.asarray(weight)
        with torch.no_grad():
            t.weight.copy_(torch.from_numpy(weight))
    return j, t, weight


def test_parameters_are_a_euclidean_weight_and_a_ball_bias():
    j, t, _ = _pair(0.5)
    assert isinstance(j.weight, nnx.Param) and not isinstance(j.weight, BallParam)
    assert isinstance(j.bias, BallParam) and j.bias.get_metadata()["c"] == 0.5
    assert isinstance(t.bias, geoopt.ManifoldParameter) and isinstance(t.bias.manifold, geoopt.PoincareBall)
    assert not isinstance(t.weight, geoopt.ManifoldParameter)
    assert [name for name, _ in t.named_parameters()] == ["weight", "bias"]
    tied_j, tied_t, _ = _pair(0.5, tied=True)
    assert tied_j.weight is None and [name for name, _ in tied_t.named_parameters()] == ["bias"]


@pytest.mark.parametrize("c", [1e-3, 0.1, 1.0, 4.0])
def test_mobius_linear_matches_geoopt_values_and_gradients(c):
    j, t, _ = _pair(c)
    x = _points(np.random.default_rng(1), (BATCH, IN), c)
    cot = np.random.default_rng(2).normal(size=(BATCH, OUT))
    graphdef, params = nnx.split(j, nnx.Param)

    def f(p, x):
        return jnp.sum(nnx.merge(graphdef, p)(x) * cot)

    value, (g_params, g_x) = jax.value_and_grad(f, argnums=(0, 1))(params, jnp.asarray(x))
    xt = torch.tensor(x, requires_grad=True)
    out = t(xt)
    (out * torch.from_numpy(cot)).sum().backward()
    np.testing.assert_allclose(np.asarray(nnx.merge(graphdef, params)(jnp.asarray(x))), out.detach().numpy(),
                               rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(np.asarray(g_x), xt.grad.numpy(), rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(np.asarray(g_params["weight"][...]), t.weight.grad.numpy(), rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(np.asarray(g_params["bias"][...]), t.bias.grad.numpy(), rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("c", [0.1, 1.0])
def test_from_tangent_is_the_layer_on_expmap0_without_the_round_trip(c):
    j, t, weight = _pair(c)
    u = np.random.default_rng(3).normal(size=(BATCH, IN)) * 0.3
    via_point = np.asarray(j(jp.expmap0(jnp.asarray(u), c=c)))
    np.testing.assert_allclose(np.asarray(j.from_tangent(jnp.asarray(u))), via_point, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(t.from_tangent(torch.from_numpy(u)).detach().numpy(), via_point, rtol=1e-12, atol=1e-15)
    # a long tangent vector: exp0(u) is projected onto the radius (the direction survives, the length
    # does not), while from_tangent keeps W's action on the whole vector
    long = u * 50.0
    via_projected_point = np.asarray(j(jp.expmap0(jnp.asarray(long), c=c)))
    assert np.abs(np.asarray(j.from_tangent(jnp.asarray(long))) - via_projected_point).max() > 1e-3


def test_tied_layer_uses_the_weight_it_is_given():
    c = 0.3
    j, t, weight = _pair(c, tied=True)
    untied_j, _, _ = _pair(c)
    untied_j.weight[...] = jnp.asarray(weight)
    x = _points(np.random.default_rng(4), (BATCH, IN), c)
    expected = np.asarray(untied_j(jnp.asarray(x)))
    np.testing.assert_allclose(np.asarray(j(jnp.asarray(x), jnp.asarray(weight))), expected, rtol=1e-13)
    np.testing.assert_allclose(t(torch.from_numpy(x), torch.from_numpy(weight)).detach().numpy(), expected, rtol=1e-12)


def test_small_curvature_recovers_the_affine_layer():
    """c -> 0: (W ⊗ x) ⊕ b -> W x + b, and the hyperbolic activation -> f."""
    c = 1e-7
    j, t, weight = _pair(c)
    rng = np.random.default_rng(5)
    x, bias = rng.normal(size=(BATCH, IN)), rng.normal(size=OUT)
    j.bias[...] = jnp.asarray(bias)
    with torch.no_grad():
        t.bias.copy_(torch.from_numpy(bias))
    np.testing.assert_allclose(np.asarray(j(jnp.asarray(x))), x @ weight.T + bias, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(t(torch.from_numpy(x)).detach().numpy(), x @ weight.T + bias, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(jl.hyperbolic_activation(jnp.asarray(x), jnp.tanh, c=c)), np.tanh(x),
                               rtol=1e-5)


@pytest.mark.parametrize("c", [0.1, 1.0])
def test_hyperbolic_activation_matches_and_identity_is_a_no_op(c):
    x = _points(np.random.default_rng(6), (BATCH, IN), c, radius=0.9)
    j = np.asarray(jl.hyperbolic_activation(jnp.asarray(x), jnp.tanh, c=c))
    t = tl.hyperbolic_activation(torch.from_numpy(x), torch.tanh, c=c).numpy()
    np.testing.assert_allclose(j, t, rtol=1e-12)
    np.testing.assert_allclose(j, np.asarray(jp.expmap0(jnp.tanh(jp.logmap0(jnp.asarray(x), c=c)), c=c)), rtol=1e-15)
    np.testing.assert_allclose(np.asarray(jl.hyperbolic_activation(jnp.asarray(x), lambda v: v, c=c)), x, rtol=1e-12)
    halved = np.asarray(jl.hyperbolic_activation(jnp.asarray(x), jnp.tanh, c=c, tangent=lambda v: 0.0 * v))
    assert np.all(halved == 0.0)  # the tangent hook acts before exp0 (the code dropout)


def test_float32_layer_runs_in_float32_with_x64_on():
    layer = jl.MobiusLinear(IN, OUT, c=1.0, rngs=nnx.Rngs(0))
    out = layer(jnp.zeros((2, IN), jnp.float32) + 0.1)
    assert out.dtype == jnp.float32 and layer.bias[...].dtype == jnp.float32 and np.isfinite(np.asarray(out)).all()
