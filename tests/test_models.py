"""AutoEncoder: JAX (jax_impl.models) against PyTorch (torch_ref.models), piece by piece and whole."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import jax_impl.models as jm
import torch_ref.models as tm
from parity import convert
from parity.config import ACTIVATIONS, LOSSES, ModelConfig
from parity.errors import ConfigError
from parity.suites import models as checks

GRID = np.concatenate([-np.logspace(-8, 2.5, 400), [0.0], np.logspace(-8, 2.5, 400)])


def test_both_sides_offer_the_same_activations_and_losses():
    assert tuple(jm.ACTIVATIONS) == tuple(tm.ACTIVATIONS) == ACTIVATIONS  # the configuration's names, once
    assert tuple(jm.LOSSES) == tuple(tm.LOSSES) == LOSSES
    assert jm.LEAKY_RELU_SLOPE == tm.LEAKY_RELU_SLOPE == 0.01
    assert (jm.SELU_ALPHA, jm.SELU_SCALE) == (tm.SELU_ALPHA, tm.SELU_SCALE)


@pytest.mark.parametrize("name", list(jm.ACTIVATIONS))
def test_activation_values_and_derivatives_agree_in_float64(name):
    """On a grid through 0 (the one-sided derivative taken at 0 must be the same: jax.nn.leaky_relu
    takes the right one, torch the left one, so jax_impl defines its own)."""
    x = jnp.asarray(GRID)
    value, grad = jax.vmap(jax.value_and_grad(jm.ACTIVATIONS[name]))(x)
    t = torch.tensor(GRID, requires_grad=True)
    t_value = tm.ACTIVATIONS[name](t)
    t_value.sum().backward()
    # entries below 1e-300 (exp(-316) tails) are compared absolutely
    np.testing.assert_allclose(np.asarray(value), t_value.detach().numpy(), rtol=1e-14, atol=1e-300)
    # derivatives: 1 - tanh(x)^2 for |x| > 17 is below the rounding of 1 and each library rounds it
    # its own way (measured 1.6e-15 apart); elsewhere they agree to 1e-13
    np.testing.assert_allclose(np.asarray(grad), t.grad.numpy(), rtol=1e-13, atol=4e-15)


def test_selu_gradient_stays_finite_where_the_untaken_branch_overflows():
    # expm1(1000) = inf in the branch jnp.where does not take; an unguarded where gives inf * 0 = NaN
    for name in ("selu", "elu"):
        grad = jax.grad(jm.ACTIVATIONS[name])(jnp.float64(1000.0))
        assert np.isfinite(grad)
    assert float(jax.grad(jm.lrelu)(jnp.float64(-3.0))) == pytest.approx(0.01)


@pytest.mark.parametrize("name", list(jm.LOSSES))
def test_losses_agree_with_their_gradients(name):
    rng = np.random.default_rng(1)
    out = rng.normal(size=(6, 30)) * 5
    target = (rng.random((6, 30)) < 0.3) * (rng.integers(1, 6, (6, 30)) if "mse" in name else 1.0)
    j_loss, j_grad = jax.value_and_grad(jm.LOSSES[name])(jnp.asarray(out), jnp.asarray(target))
    t_out = torch.tensor(out, requires_grad=True)
    t_loss = tm.LOSSES[name](t_out, torch.tensor(target))
    t_loss.backward()
    assert float(j_loss) == pytest.approx(float(t_loss), rel=1e-14)
    np.testing.assert_allclose(np.asarray(j_grad), t_out.grad.numpy(), rtol=1e-12, atol=1e-15)


def test_loss_definitions():
    out = np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    target = np.array([[1.0, 0.0, 5.0], [0.0, 0.0, 2.0]])
    # masked MSE: rated entries (1,1), (1,3), (2,3): errors 0, 2, 2 -> (0 + 4 + 4) / 3
    assert float(jm.masked_mse(jnp.asarray(out), jnp.asarray(target))) == pytest.approx(8 / 3)
    assert float(jm.dense_mse(jnp.asarray(out), jnp.asarray(target))) == pytest.approx((0 + 4 + 4 + 0 + 0 + 4) / 6)
    # an all-zero batch is loss 0, not 0/0
    assert float(jm.masked_mse(jnp.ones((2, 3)), jnp.zeros((2, 3)))) == 0.0
    assert float(tm.masked_mse(torch.ones(2, 3), torch.zeros(2, 3))) == 0.0
    # multinomial: -(1/B) sum_u t_u . log_softmax(z_u)
    logits, clicks = np.array([[0.0, np.log(3.0)]]), np.array([[1.0, 1.0]])
    expected = -(np.log(1 / 4) + np.log(3 / 4))
    assert float(jm.multinomial_nll(jnp.asarray(logits), jnp.asarray(clicks))) == pytest.approx(expected)
    # bce with logits stays finite at |z| = 1000
    big = jnp.asarray([[1000.0, -1000.0]])
    assert np.isfinite(float(jm.binary_cross_entropy(big, jnp.asarray([[0.0, 1.0]]))))
    assert float(jm.binary_cross_entropy(big, jnp.asarray([[1.0, 0.0]]))) == pytest.approx(0.0, abs=1e-12)


def test_dropout_scales_kept_units_and_none_means_off():
    x = jnp.ones((2, 4))
    keep = np.array([[True, False, True, False], [True, True, True, True]])
    np.testing.assert_array_equal(np.asarray(jm.dropout(x, jnp.asarray(keep), 0.5)), keep * 2.0)
    np.testing.assert_array_equal(tm.dropout(torch.ones(2, 4), torch.from_numpy(keep), 0.5).numpy(), keep * 2.0)
    assert jm.dropout(x, None, 0.5) is x


def test_l2_input_normalization_matches_and_keeps_zero_rows():
    x = np.array([[3.0, 4.0, 0.0], [0.0, 0.0, 0.0]])
    expected = np.array([[0.6, 0.8, 0.0], [0.0, 0.0, 0.0]])
    np.testing.assert_allclose(np.asarray(jm.normalize_rows(jnp.asarray(x))), expected, rtol=1e-15)
    np.testing.assert_allclose(tm.normalize_rows(torch.tensor(x)).numpy(), expected, rtol=1e-15)


@pytest.mark.parametrize("tied", [False, True])
def test_parameter_names_and_shapes_match_the_canonical_layout(tied):
    config = ModelConfig(layer_sizes=(20, 8, 4), tied=tied)
    shapes = convert.parameter_shapes(config)
    j = {k: v.shape for k, v in convert.extract_jax(jm.AutoEncoder(config)).items()}
    t = {k: v.shape for k, v in convert.extract_torch(tm.AutoEncoder(config)).items()}
    assert j == t == shapes
    assert any(k.startswith("decoder") and k.endswith("weight") for k in shapes) is not tied


def test_tied_decoder_uses_the_encoder_weights_transposed():
    config = ModelConfig(layer_sizes=(5, 3), tied=True, activation="identity")
    weights = {"encoder.0.weight": np.arange(15.0).reshape(3, 5) / 10, "encoder.0.bias": np.zeros(3),
               "decoder.0.bias": np.zeros(5)}
    x = np.eye(5)
    expected = x @ weights["encoder.0.weight"].T @ weights["encoder.0.weight"]
    np.testing.assert_allclose(np.asarray(convert.jax_model(config, weights, "float64")(jnp.asarray(x))), expected)
    np.testing.assert_allclose(convert.torch_model(config, weights, "float64")(torch.tensor(x)).detach().numpy(),
                               expected)


def test_last_layer_activation_switch():
    config = ModelConfig(layer_sizes=(4, 3), activation="relu")
    weights = convert.init_weights(config, 0, bias_scale=1.0)
    x = jnp.asarray(np.random.default_rng(0).normal(size=(50, 4)))
    linear_out = np.asarray(convert.jax_model(config, weights, "float64")(x))
    assert (linear_out < 0).any()  # no activation on the last layer by default (DeepRecommender's switch)
    with_act = ModelConfig(layer_sizes=(4, 3), activation="relu", last_layer_activation=True)
    np.testing.assert_allclose(np.asarray(convert.jax_model(with_act, weights, "float64")(x)),
                               np.maximum(linear_out, 0.0))


@pytest.mark.parametrize("bad", [{"activation": "gelu"}, {"loss": "hinge"}, {"layer_sizes": (10,)},
                                 {"input_normalization": "l1"}, {"input_dropout": 1.0}])
def test_bad_configurations_are_refused_when_built(bad):
    with pytest.raises(ConfigError, match=f"model.{next(iter(bad))}="):
        ModelConfig(**{"layer_sizes": (10, 4), **bad})


@pytest.mark.parametrize("config", [ModelConfig(kind="hae", layer_sizes=(10, 4)), ModelConfig(layer_sizes=(0, 4))])
def test_a_model_refuses_another_kind_or_a_missing_input_width_on_both_sides(config):
    with pytest.raises(ValueError):
        jm.AutoEncoder(config)
    with pytest.raises(ValueError):
        tm.AutoEncoder(config)



@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_forward_loss_and_gradient_parity_small_models(dtype):
    """The `models` forward suite on its small cases: every activation, loss, tied/untied, dropout."""
    records = checks.forward_records(dtype, large=False)
    assert len(records) == 3 * len(checks.forward_cases(large=False))
    failed = [(r.check, r.max_rel_err, r.tolerance) for r in records if not r.passed]
    assert not failed
    if dtype == "float64":  # the acceptance bound, with room to spare
        assert max(r.max_rel_err for r in records) < 1e-11
    else:  # float32 rows carry the oracle arm, and neither side is far from it
        assert all(r.extra["jax_vs_oracle"] <= r.tolerance and r.extra["ref_vs_oracle"] <= r.tolerance
                   for r in records)


@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_forward_parity_ml1m_sized_models(dtype):
    records = [r for r in checks.forward_records(dtype, large=True) if "3706" in r.check]
    assert len(records) == 6 and all(r.passed for r in records)


def test_the_check_notices_a_wrong_port(monkeypatch):
    """A mutation (JAX's lrelu with torch's slope times 2) must fail the forward suite, and the failed
    rows name the first layer that parts: the one after the first activation."""
    monkeypatch.setitem(jm.ACTIVATIONS, "lrelu", lambda x: jnp.where(x > 0, x, 0.02 * x))
    records = checks.forward_records("float64", large=False, only=["lrelu-untied-bce-lastact", "elu-untied-dense_mse"])
    failed = [r for r in records if not r.passed]
    assert {r.extra["case"] for r in records} == {"lrelu-untied-bce-lastact", "elu-untied-dense_mse"}
    assert {r.check for r in failed} == {f"forward/lrelu-untied-bce-lastact/{what}"
                                         for what in ("output", "loss", "grad")}
    assert all(r.extra["first_divergent_layer"].startswith("layer encoder.1 (float64)") for r in failed)
    assert not any("first_divergent_layer" in r.extra for r in records if r.passed)


def test_the_kink_guard_reads_every_pre_activation_of_the_reference():
    """`_pre_activations` (through the reference backend's layer outputs) returns each Affine layer's
    x W^T + b, encoder then decoder, and refuses a model whose layers are not Affine."""
    config = ModelConfig(layer_sizes=(48, 24, 12), activation="relu", loss="masked_mse")
    weights = convert.init_weights(config, 0, bias_scale=0.1)
    inputs = checks._random_batch(config, np.random.default_rng(0), 8)
    pre = checks._pre_activations(config, weights, inputs)
    assert [p.shape for p in pre] == [(8, 24), (8, 12), (8, 24), (8, 48)]
    np.testing.assert_allclose(pre[0], inputs["x"] @ weights["encoder.0.weight"].T + weights["encoder.0.bias"],
                               rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="kink guard"):
        checks._pre_activations(dataclasses.replace(config, kind="hae", c=1.0), weights, inputs)


def test_both_backends_capture_the_same_layers():
    """`layer_outputs` of the two backends: the same submodule paths, in the same order, with the same
    values (float64, the same weights), no gradient taken."""
    from parity import backend

    config = ModelConfig(layer_sizes=(48, 24, 12), activation="elu", tied=True, loss="multinomial", input_dropout=0.5)
    weights = convert.init_weights(config, 1, bias_scale=0.1)
    inputs = checks._random_batch(config, np.random.default_rng(1), 8)
    kwargs = {"input_keep": inputs["input_keep"], "code_keep": inputs["code_keep"]}
    calls = {name: backend.get(name).layer_outputs(backend.get(name).model(config, weights, "float64"), (inputs["x"],),
                                                   kwargs) for name in backend.BACKENDS}
    port, reference = calls[backend.PORT], calls[backend.REFERENCE]
    assert [c.path for c in port] == [c.path for c in reference] == [
        "encoder.0", "encoder.1", "decoder.0", "decoder.1", ""]
    for mine, theirs in zip(port, reference):
        np.testing.assert_allclose(mine.outputs[0], theirs.outputs[0], rtol=1e-12, atol=1e-14)
