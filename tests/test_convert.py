"""parity.convert: canonical names, the shared start, weight sets and optimizer states both ways."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

import jax_impl.train as jt
import torch_ref.train as tt
from parity import convert
from parity.config import ModelConfig, OptimizerConfig

CONFIG = ModelConfig(layer_sizes=(30, 12, 6))


def test_init_weights_is_deterministic_xavier_with_zero_biases():
    a, b = convert.init_weights(CONFIG, 3), convert.init_weights(CONFIG, 3)
    assert list(a) == list(convert.parameter_shapes(CONFIG))
    for name, value in a.items():
        np.testing.assert_array_equal(value, b[name])
        assert value.dtype == np.float64 and value.shape == convert.parameter_shapes(CONFIG)[name]
        if name.endswith("bias"):
            assert not value.any()
        else:
            fan_out, fan_in = value.shape
            assert np.abs(value).max() <= np.sqrt(6 / (fan_in + fan_out))
    assert not np.array_equal(a["encoder.0.weight"], convert.init_weights(CONFIG, 4)["encoder.0.weight"])
    assert convert.init_weights(CONFIG, 3, bias_scale=0.1)["encoder.0.bias"].any()


def test_unknown_model_kind_is_refused_before_any_layout_is_asked_for():
    with pytest.raises(ValueError, match="model.kind='mystery': expected one of ae, hae"):
        ModelConfig(kind="mystery")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_weights_round_trip_through_both_frameworks(dtype):
    weights = {k: v.astype(dtype) for k, v in convert.init_weights(CONFIG, 0, bias_scale=0.5).items()}
    jax_model = convert.jax_model(CONFIG, weights, dtype)
    from_jax = convert.extract_jax(jax_model)
    torch_model = convert.torch_model(CONFIG, from_jax, dtype)
    from_torch = convert.extract_torch(torch_model)
    for name, value in weights.items():
        np.testing.assert_array_equal(from_jax[name], value)
        np.testing.assert_array_equal(from_torch[name], value)
        assert from_jax[name].dtype == from_torch[name].dtype == np.dtype(dtype)


def test_load_rejects_wrong_names_and_shapes():
    weights = convert.init_weights(CONFIG, 0)
    missing = {k: v for k, v in weights.items() if k != "decoder.0.bias"}
    for load, model in [(convert.load_jax, convert.jax_model(CONFIG, weights)),
                        (convert.load_torch, convert.torch_model(CONFIG, weights))]:
        with pytest.raises(KeyError, match="decoder.0.bias"):
            load(model, missing)
        with pytest.raises(ValueError, match="shape"):
            load(model, {**weights, "encoder.0.weight": weights["encoder.0.weight"].T})


def test_torch_gradients_of_unused_parameters_read_as_zero():
    model = convert.torch_model(CONFIG, convert.init_weights(CONFIG, 0))
    grads = convert.extract_torch(model, grads=True)
    assert set(grads) == set(convert.parameter_shapes(CONFIG)) and not any(g.any() for g in grads.values())


@pytest.mark.parametrize("opt", [OptimizerConfig(name="adam", learning_rate=1e-2),
                                 OptimizerConfig(name="sgd", learning_rate=1e-2, momentum=0.9)])
def test_optimizer_states_round_trip_and_continue_identically(opt):
    """Save after 2 steps, restore into fresh trainers, take a 3rd step: same as never stopping."""
    rng = np.random.default_rng(0)
    batches = [(rng.random((8, 30)) < 0.3) * rng.integers(1, 6, (8, 30)).astype(np.float64) for _ in range(3)]
    weights = convert.init_weights(CONFIG, 1)

    jax_opt, torch_opt = jt.euclidean_optimizer(opt), tt.euclidean_optimizer(opt)

    def trainers():
        return (jt.Trainer(convert.jax_model(CONFIG, weights, "float64"), jax_opt),
                tt.Trainer(convert.torch_model(CONFIG, weights, "float64"), torch_opt))

    j, t = trainers()
    for b in batches[:2]:
        j.train_step(b), t.train_step(b)
    j_saved = (convert.extract_jax(j.params), convert.jax_tree_to_arrays(j.opt_state))
    t_saved = (convert.extract_torch(t.model), convert.torch_optimizer_to_arrays(t.optimizer))
    j_loss, t_loss = j.train_step(batches[2]), t.train_step(batches[2])

    j2, t2 = trainers()
    convert.load_jax(j2.params, j_saved[0])
    j2.opt_state = convert.jax_tree_from_arrays(j2.optimizer.init(j2.params), j_saved[1])
    convert.load_torch(t2.model, t_saved[0])
    convert.torch_optimizer_from_arrays(t2.optimizer, t_saved[1])
    np.testing.assert_array_equal(j2.train_step(batches[2]), j_loss)
    np.testing.assert_array_equal(t2.train_step(batches[2]), t_loss)
    for name, value in convert.extract_jax(j.params).items():
        np.testing.assert_array_equal(convert.extract_jax(j2.params)[name], value)
    for name, value in convert.extract_torch(t.model).items():
        np.testing.assert_array_equal(convert.extract_torch(t2.model)[name], value)


def test_jax_tree_from_arrays_refuses_another_optimizer():
    params = convert.jax_model(CONFIG, convert.init_weights(CONFIG, 0), "float64")
    trainer = jt.Trainer(params, jt.euclidean_optimizer(OptimizerConfig(name="adam")))
    arrays = convert.jax_tree_to_arrays(trainer.opt_state)
    sgd = jt.euclidean_optimizer(OptimizerConfig(name="sgd", momentum=0.9))
    with pytest.raises(KeyError, match="optimizer state"):
        convert.jax_tree_from_arrays(sgd.init(trainer.params), arrays)
    assert jnp.asarray(arrays["opt/0"]).dtype == jnp.int32  # Adam's step count survives as an integer
