"""Riemannian SGD / Adam: jax_impl.optim (optax) against geoopt (torch_ref.optim), and the API.

Fast by default: a subset of the parity rows (every rule at least once), the API (labels, NNX,
schedules, save/restore, errors), and a convergence test per optimizer; `-m slow` runs the whole
parity table and the convergence tests for every variant and curvature.
"""

from __future__ import annotations

import io
import json
import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
from flax import nnx

from jax_impl import optim, poincare
from parity.config import OptimizerConfig
from parity.suites import optim as check
from torch_ref import optim as topt
from torch_ref import poincare as tpoincare

BY_NAME = {case.name: case for case in check.CASES}


# ----------------------------------------------------------------------------- parity (step by step)

# (configuration, exact): every rule at least once in float64, 300 steps, c = 1 and 2
# (sgd-momentum is inside the dampening, weight-decay and schedule rows; stabilize is a no-op on
# the ball up to an ulp, see test_stabilize_projects_after_every_nth_step; both run under -m slow)
FAST_FLOAT64 = [
    ("sgd", False), ("sgd-nesterov", False), ("sgd-dampening", True), ("sgd-weight-decay", False),
    ("sgd-schedule", True), ("adam", True), ("adam-amsgrad", False), ("adam-weight-decay", True),
    ("adam-schedule", False),
]
FAST_FLOAT32 = [("sgd-nesterov", True), ("adam-amsgrad", False)]


@pytest.mark.parametrize("name,exact", FAST_FLOAT64)
def test_parity_float64(name, exact):
    record = check.check_row(BY_NAME[name], exact, "float64", c_values=(1.0, 2.0))
    assert record.passed, record.to_dict()
    assert record.max_rel_err <= 1e-9
    assert record.extra["max_c_norm2"] < 0.95  # the problem stays off the projection radius


@pytest.mark.parametrize("name,exact", FAST_FLOAT32)
def test_parity_float32_first_100_steps(name, exact):
    record = check.check_row(BY_NAME[name], exact, "float32", c_values=(0.1,), steps=check.F32_WINDOW)
    assert record.passed, record.to_dict()
    assert record.max_rel_err <= 1e-4


@pytest.mark.slow
def test_parity_full_table():
    records = check.run()
    failed = [r.to_dict() for r in records if not r.passed]
    assert not failed, failed
    assert len(records) == 2 * 2 * len(check.CASES)


def test_schedule_reaches_both_sides():
    """The schedule rows are not constant-rate rows in disguise: the learning rate changes per step."""
    for case in (BY_NAME["sgd-schedule"], BY_NAME["adam-schedule"]):
        schedule = check.make_schedule(case.schedule, case.config.learning_rate)
        values = [float(schedule(i)) for i in (0, 10, 100, 299)]
        assert len(set(values)) == 4


# ----------------------------------------------------------------------------- the rules, directly


def _ball(rng, n, d, c, hi=0.7):
    v = rng.normal(size=(n, d))
    v /= np.linalg.norm(v, axis=-1, keepdims=True)
    return v * rng.uniform(0.05, hi, size=(n, 1)) / np.sqrt(c)


def test_first_momentum_step_is_geoopts():
    """geoopt starts the buffer at the raw Euclidean gradient: m1 = mu g + (1 - damp) g / lambda^2."""
    rng = np.random.default_rng(1)
    c, lr, mu, damp = 1.0, 0.01, 0.9, 0.1
    x = jnp.asarray(_ball(rng, 4, 3, c))
    g = jnp.asarray(rng.normal(size=(4, 3)))
    tx = optim.riemannian_sgd(lr, momentum=mu, dampening=damp, manifolds=optim.PoincareBall(c))
    updates, state = jax.jit(tx.update)(g, tx.init(x), x)
    rgrad = g / poincare.lambda_x(x, c=c) ** 2
    buffer = mu * g + (1 - damp) * rgrad
    expected_point, expected_buffer = poincare.retr_transp(x, -lr * buffer, buffer, c=c)
    np.testing.assert_allclose(updates.point, expected_point, rtol=1e-15, atol=1e-16)
    np.testing.assert_allclose(state.momentum, expected_buffer, rtol=1e-15, atol=1e-16)


def test_adam_second_moment_is_per_point_on_the_ball():
    rng = np.random.default_rng(2)
    params = {"ball": jnp.asarray(_ball(rng, 5, 3, 2.0)), "w": jnp.asarray(rng.normal(size=(5, 3)))}
    tx = optim.riemannian_adam(1e-2, manifolds={"ball": optim.PoincareBall(2.0), "w": None})
    state = tx.init(params)
    assert state.nu["ball"].shape == (5, 1) and state.nu["w"].shape == (5, 3)
    grads = jax.tree.map(lambda p: jnp.ones_like(p), params)
    _, state = jax.jit(tx.update)(grads, state, params)
    rgrad = 1.0 / poincare.lambda_x(params["ball"], c=2.0) ** 2
    expected = (1 - 0.999) * poincare.inner(params["ball"], rgrad * jnp.ones((5, 3)), c=2.0)
    np.testing.assert_allclose(state.nu["ball"], expected, rtol=1e-14)
    np.testing.assert_allclose(state.nu["w"], (1 - 0.999) * np.ones((5, 3)), rtol=1e-14)


def test_stabilize_projects_after_every_nth_step(monkeypatch):
    """stabilize=N projects the ball points after steps N, 2N, ... (counted from 1), never Euclidean leaves.

    On the ball the projection after a retraction changes a point by an ulp at most, so a marked
    stand-in for `project` shows when it runs.
    """
    monkeypatch.setattr(optim.poincare, "project", lambda x, *, c: x + 1.0)
    rng = np.random.default_rng(3)
    params = {"x": jnp.asarray(_ball(rng, 3, 2, 1.0)), "w": jnp.zeros((2,))}
    for make in (optim.riemannian_sgd, optim.riemannian_adam):
        tx = make(0.0, stabilize=2, manifolds={"x": optim.PoincareBall(1.0), "w": None})
        state = tx.init(params)
        update = jax.jit(tx.update)
        shifts = []
        for _ in range(4):
            updates, state = update(jax.tree.map(jnp.zeros_like, params), state, params)
            new = optim.apply_updates(params, updates)
            shifts.append(float(jnp.max(new["x"] - params["x"])))
            np.testing.assert_array_equal(new["w"], params["w"])
        assert shifts == [0.0, 1.0, 0.0, 1.0]


# ----------------------------------------------------------------------------- API: labels, NNX, apply


class Mixed(nnx.Module):
    """Ball embeddings and a Euclidean matrix in one model."""

    def __init__(self, points, weight, c):
        self.points = optim.BallParam(jnp.asarray(points), c=c)
        self.weight = nnx.Param(jnp.asarray(weight))

    def loss(self, targets, weight_target, c):
        return jnp.sum(poincare.dist(self.points[...], targets, c=c) ** 2) + 0.5 * jnp.sum(
            (self.weight[...] - weight_target) ** 2)


MIXED_OPTIONS = [  # (options, JAX factory, geoopt factory)
    (dict(learning_rate=0.02, momentum=0.9, nesterov=True, stabilize=3), optim.riemannian_sgd, topt.riemannian_sgd),
    (dict(learning_rate=0.02, amsgrad=True, weight_decay=1e-2), optim.riemannian_adam, topt.riemannian_adam),
]


@pytest.mark.parametrize("options,make,make_reference", MIXED_OPTIONS)
def test_mixed_manifolds_nnx_equals_pytree_and_geoopt(options, make, make_reference):
    """One optimizer, a ball parameter and a Euclidean one: NNX (BallParam) = label pytree = geoopt."""
    rng = np.random.default_rng(4)
    c = 2.0
    points, targets = _ball(rng, 6, 3, c), _ball(rng, 6, 3, c)
    weight, weight_target = rng.normal(size=(2, 3)), rng.normal(size=(2, 3))
    steps = 25

    # Flax NNX: the labels come from the variable types
    model = Mixed(points, weight, c)
    optimizer = optim.RiemannianOptimizer(model, make(**options), wrt=nnx.Param)
    assert [m is not None for m in optimizer.opt_state.manifolds] == [True, False]  # points, weight

    @nnx.jit
    def nnx_step(model, optimizer):
        grads = nnx.grad(lambda m: m.loss(targets, weight_target, c))(model)
        optimizer.update(model, grads)

    for _ in range(steps):
        nnx_step(model, optimizer)

    # plain pytree: the labels are a pytree
    tx = make(**options, manifolds={"points": optim.PoincareBall(c), "weight": None})
    params = {"points": jnp.asarray(points), "weight": jnp.asarray(weight)}
    state = tx.init(params)

    def loss(p):
        return (jnp.sum(poincare.dist(p["points"], targets, c=c) ** 2)
                + 0.5 * jnp.sum((p["weight"] - weight_target) ** 2))

    @jax.jit
    def step(params, state):
        updates, state = tx.update(jax.grad(loss)(params), state, params)
        return optim.apply_updates(params, updates), state

    for _ in range(steps):
        params, state = step(params, state)
    np.testing.assert_allclose(model.points[...], params["points"], rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(model.weight[...], params["weight"], rtol=1e-14, atol=1e-15)

    # geoopt, the ball and the Euclidean parameter in one optimizer
    x = topt.BallParam(torch.tensor(points), c=c)
    w = torch.nn.Parameter(torch.tensor(weight))
    reference = make_reference(**options)([x, w])
    tt, twt = torch.tensor(targets), torch.tensor(weight_target)
    for _ in range(steps):
        reference.zero_grad()
        ((tpoincare.dist(x, tt, c=c) ** 2).sum() + 0.5 * ((w - twt) ** 2).sum()).backward()
        reference.step()
    np.testing.assert_allclose(params["points"], x.detach().numpy(), rtol=1e-11, atol=1e-13)
    np.testing.assert_allclose(params["weight"], w.detach().numpy(), rtol=1e-11, atol=1e-13)


def test_labels_may_be_a_prefix_or_a_callable():
    params = {"emb": {"user": jnp.zeros((3, 2)), "item": jnp.zeros((4, 2))}, "w": jnp.zeros((2, 2))}
    prefix = {"emb": optim.PoincareBall(1.0), "w": None}
    tx = optim.riemannian_adam(1e-3, manifolds=prefix)
    state = tx.init(params)
    assert [m is not None for m in state.manifolds] == [True, True, False]  # leaves: emb/item, emb/user, w
    tx2 = optim.riemannian_adam(1e-3, manifolds=lambda p: prefix)
    assert [m is not None for m in tx2.init(params).manifolds] == [True, True, False]
    with pytest.raises(ValueError, match="do not match"):
        optim.riemannian_adam(1e-3, manifolds={"other": None}).init(params)
    with pytest.raises(TypeError, match="None .Euclidean. or PoincareBall"):
        optim.riemannian_adam(1e-3, manifolds={"emb": "ball", "w": None}).init(params)


def test_labels_passed_to_update_may_carry_a_traced_curvature():
    """The path a learnable curvature needs: fresh labels with c an array, through jit, override the state's."""
    rng = np.random.default_rng(8)
    x = jnp.asarray(_ball(rng, 4, 3, 2.0))
    g = jnp.asarray(rng.normal(size=(4, 3)))
    tx = optim.riemannian_adam(1e-2, manifolds=optim.PoincareBall(2.0))
    state = tx.init(x)
    from_state, _ = tx.update(g, state, x)
    passed, _ = jax.jit(lambda g, s, x, c: tx.update(g, s, x, manifolds=optim.PoincareBall(c)))(
        g, state, x, jnp.asarray(2.0))
    np.testing.assert_allclose(passed.point, from_state.point, rtol=1e-15)
    other, _ = tx.update(g, state, x, manifolds=optim.PoincareBall(jnp.asarray(1.0)))
    assert not np.allclose(other.point, from_state.point)


def test_manifolds_of_nnx_module():
    model = Mixed(np.zeros((2, 3)), np.zeros((2, 2)), 0.5)
    labels = optim.manifolds_of(model)
    assert labels["points"] == optim.PoincareBall(0.5) and labels["weight"] is None
    tx = optim.riemannian_sgd(0.1, manifolds=labels)  # the same labels drive a pure-array run
    assert tx.init(nnx.as_pure(nnx.state(model, nnx.Param))).manifolds == (optim.PoincareBall(0.5), None)


def test_optax_apply_updates_refuses_ball_updates():
    x = jnp.zeros((2, 3))
    tx = optim.riemannian_sgd(0.1, manifolds=optim.PoincareBall(1.0))
    updates, _ = tx.update(jnp.ones_like(x), tx.init(x), x)
    assert isinstance(updates, optim.BallUpdate)
    with pytest.raises(TypeError):
        optax.apply_updates(x, updates)
    np.testing.assert_array_equal(optim.apply_updates(x, updates), updates.point)


def test_plain_optax_step_on_euclidean_leaves():
    """Euclidean leaves get ordinary additive updates (optax.apply_updates works on them)."""
    w = jnp.asarray([[1.0, -2.0]])
    tx = optim.riemannian_sgd(0.5)
    updates, _ = tx.update(jnp.asarray([[2.0, 2.0]]), tx.init(w), w)
    np.testing.assert_array_equal(optax.apply_updates(w, updates), [[0.0, -3.0]])


# ----------------------------------------------------------------------------- schedules


def test_schedule_is_called_with_the_steps_taken():
    """optax's convention: the k-th update (from 0) uses schedule(k); here a zero rate freezes step 2."""
    rng = np.random.default_rng(5)
    x0 = jnp.asarray(_ball(rng, 3, 2, 1.0))
    w0 = jnp.asarray(rng.normal(size=(3,)))
    schedule = lambda count: jnp.where(count == 1, 0.0, 0.1)  # noqa: E731
    tx = optim.riemannian_sgd(schedule, manifolds={"x": optim.PoincareBall(1.0), "w": None})
    params = {"x": x0, "w": w0}
    state = tx.init(params)
    history = []
    for _ in range(3):
        updates, state = tx.update({"x": jnp.ones_like(x0), "w": jnp.ones_like(w0)}, state, params)
        params = optim.apply_updates(params, updates)
        history.append(params)
    np.testing.assert_array_equal(history[0]["x"], history[1]["x"])
    np.testing.assert_array_equal(history[0]["w"], history[1]["w"])
    assert not np.array_equal(history[1]["w"], history[2]["w"])


def test_schedule_is_evaluated_in_float64_under_x64():
    """An int32 step count would make optax schedules compute in float32 (0.02 -> 0.019999999552965164)."""
    tx = optim.riemannian_sgd(optax.exponential_decay(0.02, 50, 0.5))
    w = jnp.zeros((1,), jnp.float64)
    updates, _ = jax.jit(tx.update)(jnp.ones_like(w), tx.init(w), w)
    assert float(updates[0]) == -0.02


# ----------------------------------------------------------------------------- save / restore


def _to_numpy(tree):
    buffer = io.BytesIO()
    leaves, treedef = jax.tree.flatten(tree)
    np.savez(buffer, *[np.asarray(leaf) for leaf in leaves])
    return buffer.getvalue(), treedef


def _from_numpy(blob, treedef):
    with np.load(io.BytesIO(blob)) as data:
        leaves = [jnp.asarray(data[f"arr_{i}"]) for i in range(len(data.files))]
    return jax.tree.unflatten(treedef, leaves)


@pytest.mark.parametrize("make", [
    lambda labels: optim.riemannian_sgd(0.02, momentum=0.9, dampening=0.1, stabilize=4, manifolds=labels),
    lambda labels: optim.riemannian_adam(optax.warmup_cosine_decay_schedule(0.0, 0.05, 5, 40), amsgrad=True,
                                         weight_decay=1e-2, exact=True, manifolds=labels),
])
def test_resumed_run_equals_uninterrupted(make):
    rng = np.random.default_rng(6)
    c = 1.0
    targets, weight_target = _ball(rng, 5, 4, c), rng.normal(size=(3, 3))
    start = {"x": jnp.asarray(_ball(rng, 5, 4, c)), "w": jnp.asarray(rng.normal(size=(3, 3)))}
    tx = make({"x": optim.PoincareBall(c), "w": None})

    def loss(p):
        return jnp.sum(poincare.dist(p["x"], targets, c=c) ** 2) + 0.5 * jnp.sum((p["w"] - weight_target) ** 2)

    @jax.jit
    def step(params, state):
        updates, state = tx.update(jax.grad(loss)(params), state, params)
        return optim.apply_updates(params, updates), state

    params, state = start, tx.init(start)
    straight = []
    for _ in range(40):
        params, state = step(params, state)
        straight.append(params)

    params, state = start, tx.init(start)
    for _ in range(17):
        params, state = step(params, state)
    blob, treedef = _to_numpy((params, state))
    del params, state
    params, state = _from_numpy(blob, treedef)
    for i in range(17, 40):
        params, state = step(params, state)
        np.testing.assert_array_equal(params["x"], straight[i]["x"])
        np.testing.assert_array_equal(params["w"], straight[i]["w"])


# ----------------------------------------------------------------------------- errors


def test_ball_parameter_outside_the_ball_is_refused():
    x = jnp.asarray([[0.1, 0.2], [0.8, 0.7]])  # |x|^2 = 1.13 for the second point
    with pytest.raises(ValueError, match=r"\['points'\] starts outside the Poincaré ball.*1 of 2 point"):
        optim.riemannian_adam(1e-3, manifolds={"points": optim.PoincareBall(1.0)}).init({"points": x})
    optim.riemannian_adam(1e-3, manifolds={"points": optim.PoincareBall(0.5)}).init({"points": x})  # inside at c = 0.5
    with pytest.raises(ValueError, match="outside the Poincaré ball"):
        optim.RiemannianOptimizer(Mixed(np.asarray(x), np.zeros((1, 1)), 1.0), optim.riemannian_sgd(0.1),
                                  wrt=nnx.Param)
    with pytest.raises(ValueError, match="outside the Poincaré ball"):
        optim.riemannian_sgd(0.1, manifolds=optim.PoincareBall(1.0)).init(jnp.asarray([[jnp.nan, 0.0]]))
    with pytest.raises(ValueError, match="outside the Poincaré ball"):
        topt.BallParam(torch.tensor(np.asarray(x)), c=1.0)
    with pytest.raises(ValueError, match="curvature c must be > 0"):
        optim.riemannian_sgd(0.1, manifolds=optim.PoincareBall(-1.0)).init(jnp.zeros((1, 2)))
    with pytest.raises(ValueError, match="scalar"):
        optim.riemannian_sgd(0.1, manifolds=optim.PoincareBall(1.0)).init(jnp.zeros(()))


def test_invalid_options_are_refused_like_geoopt():
    with pytest.raises(ValueError, match="Nesterov"):
        optim.riemannian_sgd(0.1, nesterov=True)
    with pytest.raises(ValueError, match="Nesterov"):
        topt.riemannian_sgd(0.1, nesterov=True)([torch.nn.Parameter(torch.zeros(1))])
    with pytest.raises(ValueError, match="learning rate"):
        optim.riemannian_adam(-1.0)
    with pytest.raises(ValueError, match="beta"):
        optim.riemannian_adam(1e-3, b1=1.0)
    with pytest.raises(ValueError, match="stabilize"):
        optim.riemannian_sgd(0.1, stabilize=0)
    with pytest.raises(ValueError, match="exact=True"):
        topt.riemannian_sgd(0.1, exact=True)([topt.BallParam(torch.zeros(1, 2), c=1.0)])
    with pytest.raises(ValueError, match="parameters"):
        tx = optim.riemannian_sgd(0.1)
        tx.update(jnp.zeros(2), tx.init(jnp.zeros(2)))


def test_from_config_mirrors():
    config = OptimizerConfig(name="adam", learning_rate=1e-2, amsgrad=True, exact=True, stabilize=5)
    assert isinstance(optim.from_config(config), optax.GradientTransformationExtraArgs)
    reference = topt.from_config(config)([topt.BallParam(torch.zeros(2, 2, dtype=torch.float64), c=1.0, exact=True)])
    assert reference.param_groups[0]["amsgrad"] and reference.param_groups[0]["stabilize"] == 5
    with pytest.raises(ValueError, match="optimizer.name='lion': expected one of sgd, adam"):
        OptimizerConfig(name="lion")  # refused before either side is asked


# ----------------------------------------------------------------------------- float32 without x64


def test_float32_with_x64_off_stays_float32():
    """jax_impl never relies on x64: with it off (users' default) a float32 run stays float32 (state too,
    bias corrections and schedule included) and follows geoopt."""
    rng = np.random.default_rng(7)
    x0, target = (_ball(rng, 8, 3, 1.0, hi=0.6).astype(np.float32) for _ in range(2))
    schedule = optax.warmup_cosine_decay_schedule(0.0, 0.05, 10, 50)
    table = [float(schedule(i)) for i in range(50)]  # the same rates for geoopt, in double as torch holds them
    with jax.enable_x64(False):
        tx = optim.riemannian_adam(schedule, amsgrad=True, manifolds=optim.PoincareBall(1.0))

        @jax.jit
        def step(x, state):
            grads = jax.grad(lambda x: jnp.sum(poincare.dist(x, target, c=1.0) ** 2))(x)
            updates, state = tx.update(grads, state, x)
            return optim.apply_updates(x, updates), state

        x, state = jnp.asarray(x0), tx.init(jnp.asarray(x0))
        trajectory = []
        for _ in range(50):
            x, state = step(x, state)
            trajectory.append(np.asarray(x))
        float_dtypes = {jnp.asarray(leaf).dtype for leaf in jax.tree.leaves(state)} - {jnp.dtype("int32")}
    assert x.dtype == jnp.float32 and float_dtypes == {jnp.dtype("float32")}
    reference = topt.BallParam(torch.tensor(x0), c=1.0)
    optimizer = topt.riemannian_adam(table.__getitem__, amsgrad=True)([reference])
    worst = 0.0
    for expected in trajectory:
        optimizer.zero_grad()
        (tpoincare.dist(reference, torch.tensor(target), c=1.0) ** 2).sum().backward()
        optimizer.step()
        worst = max(worst, float(np.abs(expected - reference.detach().numpy()).max()))
    assert worst < 1e-6  # measured 8.9e-8 over 50 steps (points of norm <= 0.6: 1.5 float32 ulps)


# ----------------------------------------------------------------------------- convergence (like geoopt's tests)


def _converge(name: str, exact: bool, c: float, seed: int, steps: int = 2000):
    """10 random (start, target) pairs on the 2-d ball, float32, loss sum d^2; both sides, `steps` steps.

    Each point is updated independently by both optimizers (Adam's second moment is per point), so
    one parameter of 10 points is 10 runs. Adam as geoopt's own test: lr 0.1, stabilize 1.
    """
    rng = np.random.default_rng(seed)
    start, target = (_ball(rng, 10, 2, c, hi=0.999).astype(np.float32) for _ in range(2))
    options = dict(learning_rate=0.1) if name == "sgd" else dict(learning_rate=0.1, stabilize=1)
    tx = getattr(optim, f"riemannian_{name}")(**options, exact=exact, manifolds=optim.PoincareBall(c))

    @jax.jit
    def run(x):
        def step(carry, _):
            x, state = carry
            grads = jax.grad(lambda x: jnp.sum(poincare.dist(x, target, c=c) ** 2))(x)
            updates, state = tx.update(grads, state, x)
            return (optim.apply_updates(x, updates), state), None

        (x, _), _ = jax.lax.scan(step, (x, tx.init(x)), None, length=steps)
        return x

    jax_end = np.asarray(run(jnp.asarray(start)))
    x = topt.BallParam(torch.tensor(start), c=c, exact=exact)
    reference = getattr(topt, f"riemannian_{name}")(**options, exact=exact)([x])
    t = torch.tensor(target)
    for _ in range(steps):
        reference.zero_grad()
        (tpoincare.dist(x, t, c=c) ** 2).sum().backward()
        reference.step()
    return jax_end, x.detach().numpy(), target


@pytest.mark.parametrize("name,exact", [("sgd", False), ("adam", True)])
def test_convergence(name, exact):
    jax_end, torch_end, target = _converge(name, exact, 1.0, seed=30)
    np.testing.assert_allclose(jax_end, target, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(torch_end, target, atol=1e-5, rtol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("c", [0.1, 0.5, 2.0])
@pytest.mark.parametrize("name,exact", [("sgd", False), ("sgd", True), ("adam", False), ("adam", True)])
def test_convergence_all(name, exact, c):
    jax_end, torch_end, target = _converge(name, exact, c, seed=31)
    np.testing.assert_allclose(jax_end, target, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(torch_end, target, atol=1e-5, rtol=1e-5)


# ----------------------------------------------------------------------------- CLI and timing helper


def test_cli_quick_json(tmp_path):
    from parity.cli import main

    path = tmp_path / "optim.json"
    code = main(["optim", "--quick", "--dtype", "float64", "--configs", "sgd-nesterov", "--variant", "retraction",
                 "--no-progress", "--json", str(path)])
    assert code == 0
    payload = json.loads(path.read_text())
    (row,) = payload["records"]
    for key in ("check", "dtype", "max_abs_err", "max_rel_err", "tolerance", "passed", "trajectory_max_rel_err"):
        assert key in row
    assert row["passed"] and row["steps"] == 100


def test_cli_unknown_config_is_a_clean_error(capsys):
    from parity.cli import main

    assert main(["optim", "--configs", "sgd,lion", "--no-progress"]) == 2
    assert "unknown configuration(s) lion" in capsys.readouterr().err


def test_time_optimizer_step_runs():
    result = check.time_optimizer_step("sgd", n_points=50, dim=4, repeats=2, number=2)
    assert result["jax_ms"] > 0 and result["torch_ms"] > 0 and result["ratio_jax_over_torch"] > 0


# ----------------------------------------------------------------------------- compiled passes

WEIGHT_SHAPE = (37, 23)  # odd sizes, so no other array of the update has this shape
NOT_A_PASS = {"parameter", "get-tuple-element", "tuple", "bitcast", "constant"}


def _passes_over(shape, hlo_text):
    """Instructions of the compiled entry computation that read or write a float32 array of ``shape``."""
    entry = hlo_text[hlo_text.index("\nENTRY"):]
    entry = entry[:entry.index("\n}")]
    wanted = "f32[" + ",".join(map(str, shape)) + "]"
    shapes, passes = {}, []
    for line in entry.splitlines()[1:]:
        match = re.match(r"\s*(?:ROOT\s+)?(%\S+)\s*=\s*(\([^)]*\)|\S+)\s+([\w-]+)\(([^)]*)\)", line)
        if not match:
            continue
        name, result, opcode, operands = match.groups()
        shapes[name] = result
        touched = [result] + [shapes.get(operand, "") for operand in re.findall(r"%[\w.-]+", operands)]
        if opcode not in NOT_A_PASS and any(wanted in t for t in touched):
            passes.append(f"{opcode} {name} -> {result}")
    return passes


@pytest.mark.parametrize("make,outputs", [
    (lambda: optim.riemannian_adam(1e-3), 3),  # new weight, first and second moment
    (lambda: optim.riemannian_adam(1e-3, weight_decay=1e-4, amsgrad=True), 4),  # + the running max
    (lambda: optim.riemannian_sgd(1e-2), 1),
    (lambda: optim.riemannian_sgd(1e-2, momentum=0.9, nesterov=True), 2),  # new weight, momentum
])
def test_euclidean_update_is_one_pass_per_output(make, outputs):
    """XLA:CPU writes one array per loop (its multi-output fusion is off by default), so updating a
    Euclidean weight takes at least one elementwise pass per array the update returns. The jitted
    update, weight and state donated as in training, compiles to exactly that: egrad2rgrad, weight
    decay, bias corrections and the step fuse into those loops, and nothing else reads, writes or
    copies an array of the weight's shape."""
    if jax.default_backend() != "cpu":
        pytest.skip("counts XLA:CPU's loops")
    tx = make()
    params = {"w": jnp.zeros(WEIGHT_SHAPE, jnp.float32)}
    state = tx.init(params)

    def step(params, grads, state):
        updates, state = tx.update(grads, state, params)
        return optim.apply_updates(params, updates), state

    text = jax.jit(step, donate_argnums=(0, 2)).lower(params, params, state).compile().as_text()
    passes = _passes_over(WEIGHT_SHAPE, text)
    assert len(passes) <= outputs, passes
