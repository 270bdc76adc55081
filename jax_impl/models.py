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

`HyperbolicAutoEncoder` is the same autoencoder on the Poincaré ball of curvature -c, built from the
Möbius layers of `jax_impl.layers` (see its docstring for the equations and the design choices).

Activations and losses are small module-level functions, shared by every model of this file.
Everything here is dtype-explicit: it runs in float32 and, when the caller switched x64 on, float64.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
from flax import nnx

from jax_impl import poincare, sparse
from jax_impl.layers import Curvature, MobiusLinear, hyperbolic_activation, to_ball, to_tangent
from jax_impl.sparse import SparseRows
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


# the same losses with the target a `SparseRows` (its entries are the target's nonzeros)


def sparse_masked_mse(output: Array, target: SparseRows) -> Array:
    """`masked_mse`: the rated entries are the target's entries, so only they are read."""
    rated = (target.values != 0).astype(output.dtype)  # padding entries hold 0: not rated
    count = jnp.maximum(jnp.sum(rated), 1.0)
    return jnp.sum(jnp.square((sparse.at_entries(target, output) - target.values) * rated)) / count


def sparse_multinomial_nll(output: Array, target: SparseRows) -> Array:
    """`multinomial_nll`: -(1/B) sum over the target's entries (u, i) of t_ui * log_softmax(output_u)_i."""
    log_p = sparse.at_entries(target, jax.nn.log_softmax(output, axis=-1))
    return -jnp.sum(log_p * target.values) / target.n_rows


def _on_dense_target(loss: Callable[[Array, Array], Array]) -> Callable[[Array, SparseRows], Array]:
    # dense_mse and bce read every entry of the target: rewritten over the nonzeros they would subtract
    # nearly equal sums (sum softplus(z) - sum_nz t z), so the target is scattered into a dense block instead
    return lambda output, target: loss(output, sparse.to_dense(target, output.shape[-1]))


SPARSE_LOSSES: dict[str, Callable[[Array, SparseRows], Array]] = {
    "masked_mse": sparse_masked_mse,
    "dense_mse": _on_dense_target(dense_mse),
    "multinomial": sparse_multinomial_nll,
    "bce": _on_dense_target(binary_cross_entropy),
}


def model_loss(name: str, output: Array, target: Array | SparseRows) -> Array:
    """The loss `name` of (output, target), the target dense (batch, n_items) or a `SparseRows`."""
    if isinstance(target, SparseRows):
        loss_function(name)  # the same error for an unknown name
        return SPARSE_LOSSES[name](output, target)
    return loss_function(name)(output, target)


NORM_EPS = 1e-12  # torch.nn.functional.normalize's default: an all-zero row stays zero


def normalize_rows(x: Array) -> Array:
    """x / max(||x||_2, 1e-12), row by row (last axis)."""
    return x / jnp.maximum(jnp.sqrt(jnp.sum(jnp.square(x), axis=-1, keepdims=True)), NORM_EPS)


def dropout(x: Array, keep: Array | None, rate: float) -> Array:
    """Inverted dropout: x * keep / (1 - rate); `keep` None means no dropout (evaluation)."""
    if keep is None or rate == 0.0:
        return x
    return x * keep.astype(x.dtype) / (1.0 - rate)


def sparse_input(batch: SparseRows, config: ModelConfig, input_keep: None = None) -> Array:
    r"""The first layer's input :math:`h = \operatorname{drop}(n(x))` at the batch's entries, (n_entries,),
    as `normalize_rows` and `dropout` compute it densely: each row over the norm of all its entries,
    then times keep / (1 - rate) with the batch's own keep-mask (`SparseRows.keep`, read from the same
    dense mask when the batch was built; None: no dropout)."""
    if input_keep is not None:
        raise ValueError("a sparse batch carries its input keep-mask: build it with "
                         "sparse_rows(..., input_keep=mask) instead of passing input_keep")
    values = batch.values
    if config.input_normalization == "l2":
        norms = jnp.sqrt(sparse.row_sums(batch, values * values))
        values = values / jnp.maximum(norms, NORM_EPS)[batch.rows]
    if batch.keep is not None:
        if config.input_dropout == 0.0:  # its chunks leave the dropped entries out: no way to read it undropped
            raise ValueError("this sparse batch was built with an input keep-mask, but the model has no input dropout")
        values = values * batch.keep.astype(values.dtype) / (1.0 - config.input_dropout)
    return values


def encoder_input(x: Array | SparseRows, config: ModelConfig, input_keep: Array | None = None) -> Array:
    r"""The first layer's input :math:`h = \operatorname{drop}(n(x))`: dense rows normalized and dropped
    out, or, for a `SparseRows`, the same at its entries only (`sparse_input`)."""
    if isinstance(x, SparseRows):
        return sparse_input(x, config, input_keep)
    h = normalize_rows(x) if config.input_normalization == "l2" else x
    return dropout(h, input_keep, config.input_dropout)


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

    def of_sparse(self, batch: SparseRows, values: Array) -> Array:
        """The layer on the sparse rows whose nonzeros are `values` at the batch's entries (`sparse.matmul`)."""
        return sparse.matmul(batch, values, self.weight[...]) + self.bias[...]


def check_config(config: ModelConfig, kind: str, model_name: str) -> None:
    """A model refuses a configuration of another kind, or without its input width (every field's type
    and range was checked when the ModelConfig was built; see `parity.config`)."""
    if config.kind != kind:
        raise ValueError(f"{model_name} needs ModelConfig(kind={kind!r}), got kind={config.kind!r}")
    if config.layer_sizes[0] < 1:
        raise ValueError(f"layer_sizes[0] is the input width (the number of items), got {config.layer_sizes}")


class AutoEncoder(nnx.Module):
    """DeepRecommender autoencoder; see the module docstring for the equations."""

    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs | None = None, dtype=jnp.float32):
        check_config(config, "ae", "AutoEncoder")
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

    def encode(self, x: Array | SparseRows, *, input_keep: Array | None = None,
               code_keep: Array | None = None) -> Array:
        """The code (batch, code_size); `x` dense (batch, n_items) or a `SparseRows` (then its first layer
        reads the nonzeros only, and the batch carries its input keep-mask)."""
        f = activation(self.config.activation)
        on_sparse = isinstance(x, SparseRows)
        h = encoder_input(x, self.config, input_keep)
        for index, layer in enumerate(self.encoder):
            h = f(layer.of_sparse(x, h) if on_sparse and index == 0 else layer(h))
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

    def __call__(self, x: Array | SparseRows, *, input_keep: Array | None = None,
                 code_keep: Array | None = None) -> Array:
        return self.decode(self.encode(x, input_keep=input_keep, code_keep=code_keep))

    def loss(self, output: Array, target: Array | SparseRows) -> Array:
        return model_loss(self.config.loss, output, target)


# ---------------------------------------------------------------------------------------------
# the hyperbolic autoencoder

def learned_curvature(params) -> Array:
    """The current c = softplus(isp_c) of a `HyperbolicAutoEncoder` with `learn_c`, from its parameter
    State (what `jax_impl.train.riemannian_optimizer(..., curvature=learned_curvature)` reads)."""
    isp_c = params["ball"]["isp_c"]
    return jax.nn.softplus(isp_c[...] if isinstance(isp_c, nnx.Variable) else isp_c)


class HyperbolicAutoEncoder(nnx.Module):
    r"""The autoencoder on the Poincaré ball of curvature -c, Möbius layers throughout.

        encoder  h_0 = drop(n(x))                                     a tangent vector at the origin
                 y_1 = exp_0(W_1 h_0) ⊕ b_1       (input_map "tangent"; = (W_1 ⊗ exp_0(h_0)) ⊕ b_1)
                 y_l = (W_l ⊗ h_{l-1}) ⊕ b_l                          l = 2..L
                 h_l = exp_0(f(log_0(y_l)))                           the hyperbolic activation
                 z   = h_L, with code dropout applied to f(log_0(y_L)) in the tangent space
        decoder  d_0 = z,   e_l = (V_l ⊗ d_{l-1}) ⊕ c_l,   d_l = exp_0(f(log_0(e_l)))
                 (no activation on the last layer unless `last_layer_activation`; V_l = W_{L+1-l}^T when tied)
        scores   s = output_scale * log_0(d_L)                       logits of the multinomial likelihood

    Weights W, V are Euclidean (out, in); biases b, c are points on the ball (`BallParam`). With
    `learn_c` the curvature is a parameter too, c = softplus(ball.isp_c) (geoopt's learnable ball),
    starting at config.c; the Riemannian optimizer then moves the ball biases with its current value.
    `input_map` "expmap0" forms exp_0(h_0) and projects it (a literal port: the same function,
    saturated when c |h_0|^2 is large); "point" takes h_0's coordinates as a point, projected (the
    published "hyplinear": with raw 0/1 rows every user with c * n_items_rated >= 1 sits on the radius).
    """

    def __init__(self, config: ModelConfig, *, rngs: nnx.Rngs | None = None, dtype=jnp.float32):
        check_config(config, "hae", "HyperbolicAutoEncoder")
        rngs = rngs if rngs is not None else nnx.Rngs(0)
        config = dataclasses.replace(config, layer_sizes=tuple(config.layer_sizes))  # hashable: a static of jit
        self.config = config
        sizes = config.layer_sizes
        back = sizes[::-1]
        c = config.c
        self.encoder = nnx.List(
            [MobiusLinear(sizes[i], sizes[i + 1], c=c, rngs=rngs, dtype=dtype) for i in range(len(sizes) - 1)]
        )
        self.decoder = nnx.List(
            [MobiusLinear(back[i], back[i + 1], c=c, tied=config.tied, rngs=rngs, dtype=dtype)
             for i in range(len(back) - 1)]
        )
        if config.learn_c:  # c = softplus(ball.isp_c), trained with the rest; config.c is its start
            self.ball = Curvature(c, dtype=dtype)

    def curvature(self) -> Array | float:
        """The curvature the layers use: the learnable one's current value, else config.c."""
        return self.ball() if self.config.learn_c else self.config.c

    def _enter(self, layer: MobiusLinear, h: Array, c) -> Array:
        """The first layer on the normalised, dropped-out row `h`, per `input_map`."""
        how = self.config.input_map
        if how == "tangent":
            return layer.from_tangent(h, c=c)
        if how == "expmap0":
            return layer(to_ball(h, c=c), c=c)
        return layer(poincare.project(h, c=c), c=c)  # "point"

    def _enter_sparse(self, layer: MobiusLinear, batch: SparseRows, values: Array, c) -> Array:
        r"""`_enter` on the sparse row h whose nonzeros are `values`: :math:`W h` from the nonzeros;
        :math:`\exp_0` and the projection act on h through its norm only, x = (|x| / |h|) h, so
        :math:`W x = (|x| / |h|)\, W h` and |x| is the map of the (batch, 1) column of norms |h|."""
        wh = layer.sparse_product(batch, values)
        how = self.config.input_map
        if how == "tangent":
            return layer.from_tangent_product(wh, c=c)
        # clamped as the dense maps clamp |h|: exp_0 / the projection of 0 is 0, with a finite gradient
        h_norm = jnp.sqrt(jnp.maximum(sparse.row_sums(batch, values * values), poincare.MIN_NORM ** 2))[:, None]
        x_norm = to_ball(h_norm, c=c) if how == "expmap0" else poincare.project(h_norm, c=c)
        return layer.of_product((x_norm / h_norm) * wh, x_norm, c=c)

    def encode(self, x: Array | SparseRows, *, input_keep: Array | None = None,
               code_keep: Array | None = None) -> Array:
        """The code: a point on the ball, (batch, code_size); `x` dense (batch, n_items) or a `SparseRows`."""
        f = activation(self.config.activation)
        c = self.curvature()
        on_sparse = isinstance(x, SparseRows)
        h = encoder_input(x, self.config, input_keep)
        last = len(self.encoder) - 1
        for index, layer in enumerate(self.encoder):
            if index:
                y = layer(h, c=c)
            else:
                y = self._enter_sparse(layer, x, h, c) if on_sparse else self._enter(layer, h, c)
            code_dropout = (lambda v: dropout(v, code_keep, self.config.code_dropout)) if index == last else None
            h = hyperbolic_activation(y, f, c=c, tangent=code_dropout)
        return h

    def _decoder_body(self, z: Array, c) -> tuple[Array, MobiusLinear, Array | None]:
        """Every decoder layer but the last, each followed by the activation; -> (their output, the last
        layer, the weight it borrows when tied)."""
        f = activation(self.config.activation)
        last = len(self.decoder) - 1
        tied_weights = [self.encoder[last - index].weight[...].T if self.config.tied else None
                        for index in range(last + 1)]
        d = z
        for index in range(last):
            d = hyperbolic_activation(self.decoder[index](d, tied_weights[index], c=c), f, c=c)
        return d, self.decoder[last], tied_weights[last]

    def decode_point(self, z: Array) -> Array:
        """The decoder's last point d_L on the ball, (batch, n_items)."""
        c = self.curvature()
        d, last_layer, tied_weight = self._decoder_body(z, c)
        d = last_layer(d, tied_weight, c=c)
        if self.config.last_layer_activation:
            d = hyperbolic_activation(d, activation(self.config.activation), c=c)
        return d

    def scores(self, point: Array) -> Array:
        """Item scores (logits) from the decoder's last point: output_scale * log_0(point)."""
        return self._scaled(to_tangent(point, c=self.curvature()))

    def _scaled(self, s: Array) -> Array:
        return s if self.config.output_scale == 1.0 else s * self.config.output_scale

    def decode(self, z: Array) -> Array:
        """Item scores for the code z: `scores(decode_point(z))`, with the last layer and the log map
        as one `logmap0_of` when no activation follows the last layer."""
        if self.config.last_layer_activation:
            return self.scores(self.decode_point(z))
        c = self.curvature()
        d, last_layer, tied_weight = self._decoder_body(z, c)
        return self._scaled(last_layer.logmap0_of(d, tied_weight, c=c))

    def __call__(self, x: Array | SparseRows, *, input_keep: Array | None = None,
                 code_keep: Array | None = None) -> Array:
        return self.decode(self.encode(x, input_keep=input_keep, code_keep=code_keep))

    def loss(self, output: Array, target: Array | SparseRows) -> Array:
        return model_loss(self.config.loss, output, target)
