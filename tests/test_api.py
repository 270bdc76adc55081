"""The public parity API from a user's side: a small model of the user's own (a 2-layer Möbius MLP, Flax
NNX against PyTorch + geoopt), a hand-written function and two optimizers, held against their references
through `import parity` only, and the wrong ports each check must catch and name.

Every expected location (layer, element, step) is derived here independently of the checks, from the
reference and the known bug, so a check that names the wrong place fails these tests.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import geoopt
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
from flax import nnx
from geoopt.manifolds.stereographic import math as geoopt_math

import parity
from jax_impl import optim as jax_optim
from jax_impl import poincare
from parity import inputs

README = Path(__file__).resolve().parents[1] / "README.md"
C = 0.5  # the ball's curvature is -C
WRONG_C = C * (1 + 1e-7)  # a constant off in its 7th digit: plain in float64, invisible in float32
DEFAULT_F64 = "rtol=1e-09, atol=1e-12"  # the default float64 rule, as messages print it


# ----------------------------------------------------------------------------- the user's model


class MobiusDense(nnx.Module):
    """The port: y = (W ⊗ x) ⊕ expmap0(b), the kernel in Flax's (in, out) layout."""

    def __init__(self, d_in: int, d_out: int, *, rngs: nnx.Rngs, c: float = C, transposed: bool = False):
        self.kernel = nnx.Param(nnx.initializers.lecun_normal()(rngs.params(), (d_in, d_out)))
        self.bias = nnx.Param(jnp.zeros(d_out))
        self.c, self.transposed = c, transposed  # transposed=True: the bug of forgetting Flax's layout

    def __call__(self, x):
        weight = self.kernel[...] if self.transposed else self.kernel[...].T  # mobius_matvec takes (out, in)
        h = poincare.mobius_matvec(weight, x, c=self.c)
        return poincare.mobius_add(h, poincare.expmap0(self.bias[...], c=self.c), c=self.c)


class MobiusMLP(nnx.Module):
    def __init__(self, *, rngs: nnx.Rngs, c1: float = C, transposed2: bool = False):
        self.layer1 = MobiusDense(8, 6, rngs=rngs, c=c1)
        self.layer2 = MobiusDense(6, 6, rngs=rngs, transposed=transposed2)

    def __call__(self, x):
        h = poincare.expmap0(jnp.tanh(poincare.logmap0(self.layer1(x), c=C)), c=C)  # tanh in the tangent space at 0
        return self.layer2(h)


class TorchMobiusDense(torch.nn.Module):
    """The reference, written on geoopt directly, torch.nn.Linear's (out, in) weight."""

    def __init__(self, d_in: int, d_out: int, generator: torch.Generator, c: float = C):
        super().__init__()
        self.ball = geoopt.PoincareBall(c=torch.tensor(c, dtype=torch.float64))  # c stored in float64
        self.weight = torch.nn.Parameter(torch.randn(d_out, d_in, dtype=torch.float64, generator=generator) / d_in**0.5)
        self.bias = torch.nn.Parameter(torch.randn(d_out, dtype=torch.float64, generator=generator) * 0.1)

    def forward(self, x):
        return self.ball.mobius_add(self.ball.mobius_matvec(self.weight, x), self.ball.expmap0(self.bias))


class TorchMobiusMLP(torch.nn.Module):
    def __init__(self, generator: torch.Generator):
        super().__init__()
        self.layer1, self.layer2 = TorchMobiusDense(8, 6, generator), TorchMobiusDense(6, 6, generator)
        self.ball = geoopt.PoincareBall(c=torch.tensor(C, dtype=torch.float64))

    def hidden(self, x):
        return self.ball.expmap0(torch.tanh(self.ball.logmap0(self.layer1(x))))

    def forward(self, x):
        return self.layer2(self.hidden(x))


@pytest.fixture(scope="module")
def reference() -> TorchMobiusMLP:
    return TorchMobiusMLP(torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def x() -> np.ndarray:
    """5 points on the ball, drawn by the same generator check_function uses."""
    return inputs.ball((5, 8), c=C).draw(np.random.default_rng(0), "bulk", "float64")


def worst_element(got: torch.Tensor, ref: torch.Tensor, rule: parity.Tolerance) -> tuple[int, ...]:
    """Where |got - ref| / max(|ref|, atol / rtol) is largest: the element a check must name."""
    rel = (got - ref).abs() / ref.abs().clamp_min(rule.atol / rule.rtol)
    return tuple(int(i) for i in np.unravel_index(int(rel.argmax()), tuple(ref.shape)))


F64 = parity.Tolerance(1e-9, 1e-12)


@pytest.fixture(scope="module")
def correct(reference, x):
    port = MobiusMLP(rngs=nnx.Rngs(0))
    before = np.asarray(port.layer1.kernel[...]).copy()
    records = parity.check_module(port, reference, x, name="mlp")
    return records, port, before


# ----------------------------------------------------------------------------- check_module


def test_a_correct_port_of_the_mlp_passes_in_float64_and_float32(correct):
    records, port, before = correct
    assert {(r.check, r.dtype) for r in records} == {(f"mlp/{what}", dtype) for what in ("output", "loss", "grad")
                                                     for dtype in ("float64", "float32")}
    assert records.passed, records.table()
    parity.assert_parity(records)
    grads = [r for r in records if r.check == "mlp/grad"]
    assert all(r.extra["n_parameters"] == 4 for r in grads)  # both layers' weight and bias (the balls' c: not trained)
    layers = {(layer.path, layer.dtype) for layer in records.layers}
    assert layers == {(path, dtype) for path in ("layer1", "layer2", "") for dtype in ("float64", "float32")}
    assert all(layer.passed for layer in records.layers) and records.first_divergence is None
    # the check copies the reference's weights into copies of the port: the caller's module is untouched
    np.testing.assert_array_equal(np.asarray(port.layer1.kernel[...]), before)


def test_a_transposed_weight_is_named_at_its_layer_and_element(reference, x):
    records = parity.check_module(MobiusMLP(rngs=nnx.Rngs(0), transposed2=True), reference, x, name="mlp",
                                  dtypes=["float64"])
    with torch.no_grad():  # what the bug computes: layer 2 with its weight transposed (6 x 6, so shapes cannot tell)
        hidden = reference.hidden(torch.as_tensor(x))
        layer2 = reference.layer2
        ball = layer2.ball
        wrong = ball.mobius_add(ball.mobius_matvec(layer2.weight.T, hidden), ball.expmap0(layer2.bias))
        expected = worst_element(wrong, layer2(hidden), F64)

    first = records.first_divergence
    assert (first.path, first.dtype, first.worst_index) == ("layer2", "float64", expected)
    assert [layer.passed for layer in records.layers if layer.path == "layer1"] == [True]
    with pytest.raises(parity.ParityError) as raised:
        parity.assert_parity(records)
    message = str(raised.value)
    head = message.splitlines()[0]  # the first divergence comes first, before what it led to
    assert head.startswith("The ports first part at layer layer2 (float64), output (5, 6)")
    assert f"at index {expected}" in head and DEFAULT_F64 in head
    assert raised.value.failed == records.failed and {r.check for r in records.failed} == {"mlp/output", "mlp/loss",
                                                                                           "mlp/grad"}


def test_a_wrong_constant_is_named_at_its_layer_and_element(reference, x):
    records = parity.check_module(MobiusMLP(rngs=nnx.Rngs(0), c1=WRONG_C), reference, x, name="mlp",
                                  dtypes=["float64"])
    with torch.no_grad():  # what the bug computes: layer 1 on the ball of curvature -WRONG_C
        t = torch.as_tensor(x)
        layer1 = reference.layer1
        ball = geoopt.PoincareBall(c=torch.tensor(WRONG_C, dtype=torch.float64))
        wrong = ball.mobius_add(ball.mobius_matvec(layer1.weight, t), ball.expmap0(layer1.bias))
        expected = worst_element(wrong, layer1(t), F64)

    first = records.first_divergence
    assert (first.path, first.worst_index) == ("layer1", expected)
    assert 1e-9 < first.max_rel_err < 1e-5  # the size of the bug, not of rounding
    assert first.mismatched > 0 and first.n_elements == 30
    with pytest.raises(parity.ParityError) as raised:
        parity.assert_parity(records)
    head = str(raised.value).splitlines()[0]
    assert head.startswith("The ports first part at layer layer1 (float64)")
    assert f"at index {expected}" in head and DEFAULT_F64 in head
    assert "FAIL" in records.layer_table()


# ----------------------------------------------------------------------------- check_function


def mobius_add(x, y, *, c):
    """The user's port of Möbius addition, from the formula (Ganea et al. 2018, eq. 3)."""
    xy = jnp.sum(x * y, axis=-1, keepdims=True)
    x2 = jnp.sum(x * x, axis=-1, keepdims=True)
    y2 = jnp.sum(y * y, axis=-1, keepdims=True)
    numerator = (1 + 2 * c * xy + c * y2) * x + (1 - c * x2) * y
    return numerator / jnp.maximum(1 + 2 * c * xy + c**2 * x2 * y2, 1e-15)


def mobius_add_wrong_c(x, y, *, c):
    return mobius_add(x, y, c=c * (1 + 1e-7))


def geoopt_mobius_add(x, y, *, c):
    return geoopt_math.mobius_add(x, y, k=-c)


ADD_ARGS = {"x": inputs.ball((4, 5), c=C), "y": inputs.same_as("x", -1, otherwise=inputs.ball((4, 5), c=C)),
            "c": inputs.constant(C)}


def test_a_hand_written_mobius_add_matches_geoopt_over_every_regime():
    records = parity.check_function(mobius_add, geoopt_mobius_add, args=ADD_ARGS)
    regimes = ["zero", "origin", "bulk", "boundary", "identical"]  # identical: y is tied to x
    assert [(r.dtype, r.extra["regime"]) for r in records] == [(d, g) for d in ("float64", "float32") for g in regimes]
    assert records.passed, records.table()
    assert all(r.n_arrays == 3 for r in records)  # the value and both gradients, c held constant


def test_the_identical_regime_ties_arguments_as_same_as_says():
    rng = np.random.default_rng(0)
    tied = inputs.draw_arguments(dict(ADD_ARGS), "identical", "float64", rng)
    np.testing.assert_array_equal(tied["y"], -tied["x"])
    free = inputs.draw_arguments(dict(ADD_ARGS), "bulk", "float64", rng)
    assert not np.allclose(free["y"], -free["x"])
    assert np.all(C * np.sum(tied["x"] ** 2, axis=-1) < 1)


def test_a_wrong_constant_fails_in_float64_naming_the_worst_element():
    rng = np.random.default_rng(1)
    x = inputs.ball((4, 5), c=C).draw(rng, "bulk", "float64")
    y = inputs.ball((4, 5), c=C).draw(rng, "bulk", "float64")
    cotangent = rng.standard_normal((4, 5))
    case = parity.Case({"x": x[None], "y": y[None], "c": np.array([C])}, keywords=("c",), differentiable=("x", "y"),
                       cotangents=(cotangent[None],))
    (record,) = parity.check_function(mobius_add_wrong_c, geoopt_mobius_add, cases=lambda regime, dtype: [case],
                                      regimes=["bulk"], dtypes=["float64"])

    # the expectation, computed apart from the check: both sides' values and VJPs, the rule's measure
    value, pullback = jax.vjp(lambda a, b: mobius_add_wrong_c(a, b, c=C), jnp.asarray(x), jnp.asarray(y))
    port = {"value": value, **dict(zip(("grad.x", "grad.y"), pullback(jnp.asarray(cotangent))))}
    tx, ty = torch.tensor(x, requires_grad=True), torch.tensor(y, requires_grad=True)
    out = geoopt_mobius_add(tx, ty, c=torch.tensor(C, dtype=torch.float64))
    out.backward(torch.tensor(cotangent))
    ref = {"value": out.detach(), "grad.x": tx.grad, "grad.y": ty.grad}
    rel = {k: (torch.as_tensor(np.array(port[k])) - ref[k]).abs() / ref[k].abs().clamp_min(1e-3) for k in ref}
    array = max(rel, key=lambda k: float(rel[k].max()))
    index = tuple(int(i) for i in np.unravel_index(int(rel[array].argmax()), (4, 5)))

    assert not record.passed
    assert (record.where, record.worst_index) == (array, index)
    assert record.worst_ref == pytest.approx(float(ref[array][index]), rel=1e-12)
    assert record.worst_jax == pytest.approx(float(np.asarray(port[array])[index]), rel=1e-12)
    assert record.mismatched == sum(int((r > 1e-9).sum()) for r in rel.values()) and record.n_elements == 60
    with pytest.raises(parity.ParityError) as raised:
        parity.assert_parity(record)
    message = str(raised.value)
    share = f"{record.mismatched / 60:.1%}"
    assert f"Mismatched elements: {record.mismatched} / 60 ({share}) over 3 arrays" in message
    assert f"Greatest relative difference: {record.max_rel_err:.3g} at index {index} " in message
    assert f"(jax {record.worst_jax!r}, reference {record.worst_ref!r}) (up to 1e-09 allowed)" in message
    assert re.search(r"Greatest absolute difference: \S+ at (grad\.[xy], index|value, index|index) \(\d, \d\) \(jax ",
                     message)
    assert f"Rule: |jax - ref| <= max(rtol * |ref|, atol), {DEFAULT_F64}" in message


def test_the_wrong_constant_shows_in_float64_only_and_a_float64_oracle_cannot_excuse_it():
    oracle = parity.Float64Oracle(mobius_add_wrong_c)
    records = parity.check_function(mobius_add_wrong_c, geoopt_mobius_add, args=ADD_ARGS, oracle=oracle,
                                    regimes=["bulk", "boundary"])
    by = {(r.dtype, r.extra["regime"]): r for r in records}
    for regime in ("bulk", "boundary"):
        # float64 is the proof: a float64 oracle would be the port against itself, so it abstains
        assert not by["float64", regime].passed and by["float64", regime].extra["oracle"] is False
        # float32 rounding (~6e-8) hides a 1e-7 error: float32 rows pass, the oracle judged them
        assert by["float32", regime].passed and by["float32", regime].extra["oracle"] is True
        assert by["float32", regime].extra["oracle_rel_err_jax"] < 1e-4


def artanh_port(x):
    return jnp.arctanh(x)


def artanh_naive(x):
    return 0.5 * torch.log((1 + x) / (1 - x))  # loses every digit once 1 + x rounds to 1 (|x| < 6e-8 in float32)


def test_the_float64_oracle_decides_a_float32_row_where_the_reference_is_wrong():
    relative = parity.Tolerance(1e-4, 1e-30, "relative everywhere: the values near 0 are the point")
    records = parity.check_function(artanh_port, artanh_naive, args={"x": inputs.ball((16,))},
                                    regimes=["origin", "bulk"], dtypes=["float32"], tolerances=relative,
                                    oracle=parity.Float64Oracle(artanh_port))
    origin, bulk = records
    # near 0 the two sides part completely; the float64 oracle shows the reference is the one that is wrong
    assert origin.max_rel_err > 0.1 and origin.passed and origin.extra["reference_wrong"] is True
    assert origin.extra["closer"] == "jax" and origin.extra["oracle_rel_err_jax"] < 1e-4
    assert origin.note.startswith("the reference deviates from the float64 oracle")
    assert bulk.passed and bulk.extra["oracle"] is True and bulk.extra["reference_wrong"] is False


def add_and_norm(x, y, *, c):
    z = mobius_add(x, y, c=c)
    return z, jnp.linalg.norm(z, axis=-1)  # jnp.linalg.norm: a NaN gradient where z = 0


def add_and_norm_wrong(x, y, *, c):
    z, n = add_and_norm(x, y, c=c)
    return z, n * (1 + 1e-6)


def geoopt_add_and_norm(x, y, *, c):
    z = geoopt_mobius_add(x, y, c=c)
    return z, z.norm(dim=-1)  # torch's norm has the subgradient 0 at 0


def test_a_function_returning_a_tuple_compares_every_output():
    args = {"x": inputs.ball((4, 5), c=C), "y": inputs.ball((4, 5), c=C), "c": inputs.constant(C)}
    zero, bulk = parity.check_function(add_and_norm, geoopt_add_and_norm, args=args, regimes=["zero", "bulk"],
                                       dtypes=["float64"])
    assert bulk.passed and bulk.n_arrays == 4  # value.0, value.1, grad.x, grad.y
    # the zero regime finds the port's NaN gradient of a norm at 0 (rows where x = y = 0)
    assert not zero.passed and zero.nonfinite_jax > 0 and zero.nonfinite_ref == 0
    with pytest.raises(parity.ParityError, match=r"Non-finite values: jax \d+, reference 0"):
        parity.assert_parity(zero)
    # a bug in the second output alone (values only: its gradients would spread it over grad.x and grad.y)
    values_only = {k: dataclasses.replace(a, differentiable=False) for k, a in args.items()}
    (wrong,) = parity.check_function(add_and_norm_wrong, geoopt_add_and_norm, args=values_only, regimes=["bulk"],
                                     dtypes=["float64"])
    assert not wrong.passed and wrong.n_arrays == 2 and wrong.where == "value.1 bulk regime"
    assert wrong.max_rel_err == pytest.approx(1e-6, rel=1e-6)


# ----------------------------------------------------------------------------- check_optimizer


RNG = np.random.default_rng(2)
W0, TARGET = RNG.standard_normal((3, 4)), RNG.standard_normal((3, 4))
SCALE = np.arange(1.0, 5.0)  # a badly scaled quadratic: Adam's per-element steps matter


def quadratic_jax(params, *, target):
    return jnp.sum(SCALE * (params["w"] - target) ** 2)


def quadratic_torch(params, *, target):
    return torch.sum(torch.as_tensor(SCALE, dtype=target.dtype) * (params["w"] - target) ** 2)


def test_optax_adam_matches_torch_adam_step_by_step():
    records = parity.check_optimizer(optax.adam(0.05), lambda ps: torch.optim.Adam(ps, lr=0.05), {"w": W0},
                                     (quadratic_jax, quadratic_torch), steps=20, constants={"target": TARGET})
    assert [r.dtype for r in records] == ["float64", "float32"] and records.passed, records.table()
    assert all(len(r.extra["per_step_max_rel_err"]) == 20 and r.extra["first_failing_step"] is None for r in records)


def test_an_optax_factory_gets_the_constants_its_signature_names():
    def adam(*, lr):  # the learning rate traced: one compilation for every value
        return optax.adam(lr)

    losses = (lambda p, *, target, lr: quadratic_jax(p, target=target),
              lambda p, *, target, lr: quadratic_torch(p, target=target))
    records = parity.check_optimizer(adam, lambda ps: torch.optim.Adam(ps, lr=0.05), {"w": W0}, losses, steps=5,
                                     constants={"target": TARGET, "lr": 0.05}, dtypes=["float64"])
    assert records.passed, records.table()


def test_a_wrong_beta_fails_naming_the_worst_step_and_parameter():
    (record,) = parity.check_optimizer(optax.adam(0.05, b2=0.99), lambda ps: torch.optim.Adam(ps, lr=0.05), {"w": W0},
                                       (quadratic_jax, quadratic_torch), steps=20, constants={"target": TARGET},
                                       dtypes=["float64"])
    # the expectation from torch alone: Adam with b2 = 0.99 against Adam with b2 = 0.999
    trajectories = []
    for betas in ((0.9, 0.99), (0.9, 0.999)):
        w = torch.nn.Parameter(torch.tensor(W0))
        opt = torch.optim.Adam([w], lr=0.05, betas=betas)
        steps = []
        for _ in range(20):
            opt.zero_grad()
            quadratic_torch({"w": w}, target=torch.tensor(TARGET)).backward()
            opt.step()
            steps.append(w.detach().clone())
        trajectories.append(torch.stack(steps))
    step, *index = worst_element(*trajectories, F64)

    assert not record.passed
    assert (record.where, record.worst_index) == (f"w after step {step + 1}", tuple(index))
    # after one step Adam moves by lr * g / |g| whatever b2 is: the ports part at step 2
    assert (record.extra["first_failing_step"], record.extra["first_failing_parameter"]) == (2, "w")
    with pytest.raises(parity.ParityError) as raised:
        parity.assert_parity(record)
    message = str(raised.value)
    assert f"optimizer (float64): w after step {step + 1}: FAILED" in message
    assert f"at index {tuple(index)}" in message and "w first fails its rule after step 2 of 20" in message


POINTS = RNG.standard_normal((4, 3)) * 0.25  # inside the ball of curvature -C (|x| < 1 / sqrt(C))
TARGETS = RNG.standard_normal((4, 3)) * 0.25


def ball_loss_jax(params, *, targets):
    return jnp.sum(poincare.dist(params["points"], targets, c=C) ** 2) + jnp.sum(params["w"] ** 2)


def ball_loss_torch(params, *, targets):
    ball = params["points"].manifold
    return torch.sum(ball.dist(params["points"], targets) ** 2) + torch.sum(params["w"] ** 2)


def on_the_ball(name, tensor):
    if name == "points":
        return geoopt.ManifoldParameter(tensor, manifold=geoopt.PoincareBall(c=torch.tensor(C, dtype=tensor.dtype)))
    return torch.nn.Parameter(tensor)


def test_riemannian_adam_matches_geoopt_on_a_ball_parameter():
    tx = jax_optim.riemannian_adam(0.05, manifolds={"points": jax_optim.PoincareBall(C), "w": None})
    records = parity.check_optimizer(tx, lambda ps: geoopt.optim.RiemannianAdam(ps, lr=0.05),
                                     {"points": POINTS, "w": W0}, (ball_loss_jax, ball_loss_torch), steps=20,
                                     constants={"targets": TARGETS}, torch_params=on_the_ball,
                                     apply_updates=jax_optim.apply_updates)
    assert [r.dtype for r in records] == ["float64", "float32"] and records.passed, records.table()
    assert all(r.n_arrays == 2 for r in records)  # both parameters, every step


# ----------------------------------------------------------------------------- load_torch_state_dict


class TwoLinear(nnx.Module):
    def __init__(self, *, rngs: nnx.Rngs):
        self.encode = nnx.Linear(4, 3, rngs=rngs)
        self.decode = nnx.Linear(3, 2, rngs=rngs)

    def __call__(self, x):
        return self.decode(jnp.tanh(self.encode(x)))


def torch_two_linear() -> torch.nn.Sequential:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Tanh(), torch.nn.Linear(3, 2))


def test_load_torch_state_dict_transposes_kernels_and_renames_prefixes():
    reference, port = torch_two_linear(), TwoLinear(rngs=nnx.Rngs(0))
    mapping = parity.load_torch_state_dict(port, reference.state_dict(), name_map={"0": "encode", "2": "decode"})
    assert mapping.pairs == {"0.weight": ("encode.kernel", True), "0.bias": ("encode.bias", False),
                             "2.weight": ("decode.kernel", True), "2.bias": ("decode.bias", False)}
    np.testing.assert_array_equal(np.asarray(port.encode.kernel[...]), reference[0].weight.detach().numpy().T)
    x = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)
    with torch.no_grad():
        expected = reference(torch.as_tensor(x)).numpy()
    np.testing.assert_allclose(np.asarray(port(jnp.asarray(x))), expected, rtol=1e-5, atol=1e-6)


def test_load_torch_state_dict_strict_lists_every_name_with_its_closest_match():
    reference = torch_two_linear()
    with pytest.raises(ValueError) as raised:
        parity.load_torch_state_dict(TwoLinear(rngs=nnx.Rngs(0)), reference.state_dict(), name_map={"0": "encode"})
    message = str(raised.value)
    assert "JAX parameter decode.kernel receives nothing (closest: 2.weight)" in message
    assert "JAX parameter decode.bias receives nothing (closest: 2.bias)" in message
    assert "reference entry 2.weight has no JAX counterpart (closest: decode.kernel)" in message
    assert "encode" not in message  # the renamed layer matched


def test_load_torch_state_dict_drops_prefixes_mapped_to_none(reference):
    port = MobiusMLP(rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="reference entry layer1.ball.isp_c has no JAX counterpart"):
        parity.load_torch_state_dict(port, reference.state_dict())
    # the geoopt balls store their curvature as a parameter; the port keeps c as a constant
    parity.load_torch_state_dict(port, reference.state_dict(),
                                 name_map={"ball": None, "layer1.ball": None, "layer2.ball": None})
    np.testing.assert_array_equal(np.asarray(port.layer2.kernel[...]), reference.layer2.weight.detach().numpy().T)


class WeightInOut(nnx.Module):
    """A port that keeps torch's name `weight` but Flax's (in, out) layout."""

    def __init__(self):
        self.layer = nnx.Module()
        self.layer.weight = nnx.Param(jnp.zeros((4, 3)))
        self.layer.bias = nnx.Param(jnp.zeros(3))


class KernelOutIn(nnx.Module):
    """A port that calls it `kernel` but keeps torch's (out, in) layout."""

    def __init__(self):
        self.layer = nnx.Module()
        self.layer.kernel = nnx.Param(jnp.zeros((3, 4)))
        self.layer.bias = nnx.Param(jnp.zeros(3))


def test_a_shape_mismatch_says_when_a_transpose_would_fit():
    state = {"layer.weight": np.arange(12.0).reshape(3, 4), "layer.bias": np.zeros(3)}
    with pytest.raises(ValueError, match=r"reference layer.weight \(3, 4\) does not fit JAX layer.weight \(4, 3\); "
                                         r"it fits transposed .*transpose=\{'layer.weight'\}"):
        parity.load_torch_state_dict(WeightInOut(), state)
    port = WeightInOut()
    parity.load_torch_state_dict(port, state, transpose={"layer.weight"})
    np.testing.assert_array_equal(np.asarray(port.layer.weight[...]), state["layer.weight"].T)

    with pytest.raises(ValueError, match=r"layer.weight \(3, 4\) transposed does not fit JAX layer.kernel \(3, 4\); "
                                         r"it fits as it is, untransposed"):
        parity.load_torch_state_dict(KernelOutIn(), state)
    port = KernelOutIn()
    parity.load_torch_state_dict(port, state, transpose=None)
    np.testing.assert_array_equal(np.asarray(port.layer.kernel[...]), state["layer.weight"])


# ----------------------------------------------------------------------------- records and the README


def test_records_save_a_custom_suite_for_the_report(tmp_path):
    records = parity.check_function(mobius_add, geoopt_mobius_add, args=ADD_ARGS, regimes=["bulk"])
    path = records.save(str(tmp_path / "mobius_add.json"), name="my port")
    payload = json.loads(Path(path).read_text())
    assert payload["suite"] == "custom" and payload["name"] == "my port" and len(payload["records"]) == 2
    row = payload["records"][0]
    assert {"check", "dtype", "max_rel_err", "tolerance", "passed", "where", "worst_index", "regime"} <= set(row)


def readme_blocks(tag: str) -> list[str]:
    return re.findall(rf"^```{tag}\n(.*?)^```", README.read_text(), flags=re.S | re.M)


def without_figures(text: str) -> list[str]:
    """The lines of a message with every decimal number replaced: what must not drift is which layer,
    array, index, count and rule it names, not the last digits of a rounding error."""
    return [re.sub(r"-?\d+\.\d+(e[-+]\d+)?|\d+e[-+]\d+", "#", line) for line in text.splitlines()]


def test_the_readme_port_example_runs_and_shows_its_real_failure():
    blocks = readme_blocks("python port-example")
    assert len(blocks) >= 3, "README's 'Check your own port' has lost its examples"
    namespace: dict = {"__name__": "readme_port_example"}
    for block in blocks:
        exec(compile(block, str(README), "exec"), namespace)
    (shown,) = readme_blocks("text port-example-output")
    message, wrong = namespace["message"], namespace["wrong"]  # the example's wrong port and its ParityError
    assert message.startswith("The ports first part at layer decode (float64)")
    assert without_figures(shown) == without_figures(message)
    # what the README says of it: every float64 row fails, every float32 row passes
    assert [(r.dtype, r.passed) for r in wrong] == [("float64", False)] * 3 + [("float32", True)] * 3
