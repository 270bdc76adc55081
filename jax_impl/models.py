"""Autoencoders for collaborative filtering, in Flax NNX.

`AutoEncoder` is the Euclidean model of Kuchaiev & Ginsburg 2017 ("Training deep autoencoders for
collaborative filtering", NVIDIA DeepRecommender): a user's row of the rating matrix goes in,
the same row comes out.

    encoder  h_0 = drop(n(x)),  h_l = f(W_l h_{l-1} + b_l)       l = 1..L,  z = drop(h_L)
    decoder  d_0 = z,        d_l = f(V_l d_{l-1} + c_l)          V_l = W_{L+1-l}^T when tied
    output   d_L, with f on the last layer only if `last_layer_activation`
    n(x)     x / ||x||_2 with `input_normalization="l2"` (Mult-DAE, Liang et al. 2018), else x

`torch_ref.models` mirrors this file name for name. The parameter layout is the canonical one of
`parity.convert`: every weight is stored (out, in), as torch.nn.Linear stores it, under the names
`encoder.{l}.weight`, `encoder.{l}.bias`, `decoder.{l}.weight` (untied only), `decoder.{l}.bias`.

Dropout takes its keep-masks from the caller (`input_keep`, `code_keep`: boolean arrays shaped like
the tensors they mask, or None for no dropout). That keeps the modules deterministic and lets both
frameworks drop exactly the same units when fed the same masks.

Activations and losses are small module-level functions, shared by every model of this file.
Everything here is dtype-explicit: it runs in float32 and, when the caller switched x64 on, float64.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import nnx

from parity.config import ModelConfig

Array = jax.Array

# Both frameworks must use one definition of every constant: torch's F.leaky_relu default slope.
LEAKY_RELU_SLOPE = 0.01
# SELU's fixed point constants (Klambauer et al. 2017), as jax.nn.selu and torch's F.selu use them.
SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946


# ---------------------------------------------------------------------------------------------
# activations


def selu(x: Array) -> Array:
    """selu(x) = scale * (x if x > 0 else alpha * (exp(x) - 1))."""
    return jax.nn.selu(x)  # guards expm1 of the untaken branch, so large x gives no inf * 0 gradient


def elu(x: Array) -> Array:
    """elu(x) = x if x > 0 else exp(x) - 1."""
    return jax.nn.elu(x)


def relu(x: Array) -> Array:
    """relu(x) = max(x, 0); derivative 0 at 0, as torch."""
    return jax.nn.relu(x)


def lrelu(x: Array) -> Array:
    """lrelu(x) = x if x > 0 else 0.01 x; derivative 0.01 at 0, as torch."""
    return jnp.where(x > 0, x, LEAKY_RELU_SLOPE * x)  # jax.nn.leaky_relu tests x >= 0: derivative 1 at 0


def tanh(x: Array) -> Array:
    """tanh(x)."""
    return jnp.tanh(x)


def sigmoid(x: Array) -> Array:
    """sigmoid(x) = 1 / (1 + exp(-x))."""
    return jax.nn.sigmoid(x)


def swish(x: Array) -> Array:
    """swish(x) = x * sigmoid(x) (DeepRecommender's definition; SiLU)."""
    return x * jax.nn.sigmoid(x)


def identity(x: Array) -> Array:
    """identity(x) = x."""
    return x


ACTIVATIONS: dict[str, Callable[[Array], Array]] = {
    "selu": selu,
    "elu": elu,
    "relu": relu,
    "lrelu": lrelu,
    "tanh": tanh,
    "sigmoid": sigmoid,
    "swish": swish,
    "identity": identity,
}


def activation(name: str) -> Callable[[Array], Array]:
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; known: {sorted(ACTIVATIONS)}") from None


# ---------------------------------------------------------------------------------------------
# losses: (output, target) of shape (batch, n_items) -> scalar


def masked_mse(output: Array, target: Array) -> Array:
    """sum over rated entries (target != 0) of (output - target)^2, divided by their count.

    The DeepRecommender loss (the seed's equation 1). An all-zero batch counts as one rating,
    so the loss is 0, not 0/0.
    """
    mask = (target != 0).astype(output.dtype)
    count = jnp.maximum(jnp.sum(mask), 1.0)
    return jnp.sum(jnp.square((output - target) * mask)) / count


def dense_mse(output: Array, target: Array) -> Array:
    """mean over every entry of (output - target)^2."""
    return jnp.mean(jnp.square(output - target))


def multinomial_nll(output: Array, target: Array) -> Array:
    """-(1/B) sum_u sum_i target_ui * log_softmax(output_u)_i: the multinomial likelihood of
    Liang et al. 2018, `output` read as logits."""
    return -jnp.mean(jnp.sum(jax.nn.log_softmax(output, axis=-1) * target, axis=-1))


def binary_cross_entropy(output: Array, target: Array) -> Array:
    """(1/B) sum_u sum_i [(1 - t) z - log sigmoid(z)]: Bernoulli likelihood per user, z = `output`
    read as logits, t in [0, 1].

    Written as torch's binary_cross_entropy_with_logits writes it; log_sigmoid never forms
    log(0), so large |z| stays finite.
    """
    return jnp.mean(jnp.sum((1.0 - target) * output - jax.nn.log_sigmoid(output), axis=-1))


LOSSES: dict[str, Callable[[Array, Array], Array]] = {
    "masked_mse": masked_mse,
    "dense_mse": dense_mse,
    "multinomial": multinomial_nll,
    "bce": binary_cross_entropy,
}


def loss_function(name: str) -> Callable[[Array, Array], Array]:
    try:
        return LOSSES[name]
    except KeyError:
        raise ValueError(f"unknown loss {name!r}; known: {sorted(LOSSES)}") from None


NORM_EPS = 1e-12  # torch.nn.functional.normalize's default: an all-zero row stays zero


def normalize_rows(x: Array) -> Array:
    """x / max(||x||_2, 1e-12), row by row (last axis)."""
    return x / jnp.maximum(jnp.sqrt(jnp.sum(jnp.square(x), axis=-1, keepdims=True)), NORM_EPS)


def dropout(x: Array, keep: Array | None, rate: float) -> Array:
    """Inverted dropout: x * keep / (1 - rate); `keep` None means no dropout (evaluation)."""
    if keep is None or rate == 0.0:
        return x
    return x * keep.astype(x.dtype) / (1.0 - rate)


# ---------------------------------------------------------------------------------------------
# layers and the model


def _xavier_uniform(key: Array, out_features: int, in_features: int, dtype) -> Array:
    """U(-a, a) with a = sqrt(6 / (fan_in + fan_out)) (Glorot & Bengio 2010), DeepRecommender's init."""
    limit = (6.0 / (in_features + out_features)) ** 0.5
    return jax.random.uniform(key, (out_features, in_features), dtype, -limit, limit)


class Affine(nnx.Module):
    """y = x W^T + b with W of shape (out, in); a tied layer has no W and borrows one, transposed."""

    def __init__(self, in_features: int, out_features: int, *, tied: bool = False, rngs: nnx.Rngs, dtype=jnp.float32):
        self.weight = None if tied else nnx.Param(_xavier_uniform(rngs.params(), out_features, in_features, dtype))
        self.bias = nnx.Param(jnp.zeros((out_features,), dtype))

    def __call__(self, x: Array, tied_weight: Array | None = None) -> Array:
        if self.weight is not None:
            return x @ self.weight[...].T + self.bias[...]
        return x @ tied_weight + self.bias[...]  # tied_weight is the encoder's (in, out) = our W^T


class AutoEncoder(nnx.Module):
    """DeepRecommender autoencoder; see the module docstring for the equations."""

    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs | None = None, dtype=jnp.float32):
        if config.kind != "ae":
            raise ValueError(f"AutoEncoder needs ModelConfig(kind='ae'), got kind={config.kind!r}")
        if len(config.layer_sizes) < 2:
            raise ValueError(f"layer_sizes needs at least (n_items, code_size), got {config.layer_sizes}")
        activation(config.activation), loss_function(config.loss)  # fail early on a typo
        if config.input_normalization not in ("none", "l2"):
            raise ValueError(f"input_normalization must be 'none' or 'l2', got {config.input_normalization!r}")
        rngs = rngs if rngs is not None else nnx.Rngs(0)
        config = dataclasses.replace(config, layer_sizes=tuple(config.layer_sizes))  # hashable: a static of jit
        self.config = config
        sizes = config.layer_sizes
        back = sizes[::-1]
        self.encoder = nnx.List(
            [Affine(sizes[i], sizes[i + 1], rngs=rngs, dtype=dtype) for i in range(len(sizes) - 1)]
        )
        self.decoder = nnx.List(
            [Affine(back[i], back[i + 1], tied=config.tied, rngs=rngs, dtype=dtype) for i in range(len(back) - 1)]
        )

    def encode(self, x: Array, *, input_keep: Array | None = None, code_keep: Array | None = None) -> Array:
        f = activation(self.config.activation)
        h = normalize_rows(x) if self.config.input_normalization == "l2" else x
        h = dropout(h, input_keep, self.config.input_dropout)
        for layer in self.encoder:
            h = f(layer(h))
        return dropout(h, code_keep, self.config.code_dropout)

    def decode(self, z: Array) -> Array:
        f = activation(self.config.activation)
        last = len(self.decoder) - 1
        d = z
        for index, layer in enumerate(self.decoder):
            tied_weight = self.encoder[last - index].weight[...] if self.config.tied else None
            d = layer(d, tied_weight)
            if index != last or self.config.last_layer_activation:
                d = f(d)
        return d

    def __call__(self, x: Array, *, input_keep: Array | None = None, code_keep: Array | None = None) -> Array:
        return self.decode(self.encode(x, input_keep=input_keep, code_keep=code_keep))

    def loss(self, output: Array, target: Array) -> Array:
        return loss_function(self.config.loss)(output, target)
