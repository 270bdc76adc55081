"""Autoencoders for collaborative filtering, in PyTorch: the reference for `jax_impl.models`.

`AutoEncoder` is the Euclidean model of Kuchaiev & Ginsburg 2017 ("Training deep autoencoders for
collaborative filtering", NVIDIA DeepRecommender): a user's row of the rating matrix goes in,
the same row comes out.

    encoder  h_0 = drop(n(x)),  h_l = f(W_l h_{l-1} + b_l)       l = 1..L,  z = drop(h_L)
    decoder  d_0 = z,        d_l = f(V_l d_{l-1} + c_l)          V_l = W_{L+1-l}^T when tied
    output   d_L, with f on the last layer only if `last_layer_activation`
    n(x)     x / ||x||_2 with `input_normalization="l2"` (Mult-DAE, Liang et al. 2018), else x

Same names, same parameter layout (`encoder.{l}.weight` of shape (out, in), ...), same explicit
dropout keep-masks as the JAX side; torch's own functional ops compute everything.

`HyperbolicAutoEncoder` is the same autoencoder on the Poincaré ball, built from `torch_ref.layers`
(geoopt's formulas, biases as geoopt ManifoldParameters).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from parity.config import ModelConfig
from torch_ref import poincare, sparse
from torch_ref.layers import Curvature, MobiusLinear, hyperbolic_activation, to_ball, to_tangent
from torch_ref.sparse import SparseRows

# Both frameworks must use one definition of every constant: torch's F.leaky_relu default slope.
LEAKY_RELU_SLOPE = 0.01
# SELU's fixed point constants (Klambauer et al. 2017), as jax.nn.selu and torch's F.selu use them.
SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946


# ---------------------------------------------------------------------------------------------
# activations


def selu(x: Tensor) -> Tensor:
    """selu(x) = scale * (x if x > 0 else alpha * (exp(x) - 1))."""
    return F.selu(x)


def elu(x: Tensor) -> Tensor:
    """elu(x) = x if x > 0 else exp(x) - 1."""
    return F.elu(x)


def relu(x: Tensor) -> Tensor:
    """relu(x) = max(x, 0); derivative 0 at 0."""
    return F.relu(x)


def lrelu(x: Tensor) -> Tensor:
    """lrelu(x) = x if x > 0 else 0.01 x; derivative 0.01 at 0."""
    return F.leaky_relu(x, negative_slope=LEAKY_RELU_SLOPE)


def tanh(x: Tensor) -> Tensor:
    """tanh(x)."""
    return torch.tanh(x)


def sigmoid(x: Tensor) -> Tensor:
    """sigmoid(x) = 1 / (1 + exp(-x))."""
    return torch.sigmoid(x)


def swish(x: Tensor) -> Tensor:
    """swish(x) = x * sigmoid(x) (DeepRecommender's definition; SiLU)."""
    return x * torch.sigmoid(x)


def identity(x: Tensor) -> Tensor:
    """identity(x) = x."""
    return x


ACTIVATIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "selu": selu,
    "elu": elu,
    "relu": relu,
    "lrelu": lrelu,
    "tanh": tanh,
    "sigmoid": sigmoid,
    "swish": swish,
    "identity": identity,
}


def activation(name: str) -> Callable[[Tensor], Tensor]:
    try:
        return ACTIVATIONS[name]
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; known: {sorted(ACTIVATIONS)}") from None


# ---------------------------------------------------------------------------------------------
# losses: (output, target) of shape (batch, n_items) -> scalar


def masked_mse(output: Tensor, target: Tensor) -> Tensor:
    """sum over rated entries (target != 0) of (output - target)^2, divided by their count.

    The DeepRecommender loss (the seed's equation 1). An all-zero batch counts as one rating,
    so the loss is 0, not 0/0.
    """
    mask = (target != 0).to(output.dtype)
    count = torch.clamp(torch.sum(mask), min=1.0)
    return torch.sum(torch.square((output - target) * mask)) / count


def dense_mse(output: Tensor, target: Tensor) -> Tensor:
    """mean over every entry of (output - target)^2."""
    return torch.mean(torch.square(output - target))


def multinomial_nll(output: Tensor, target: Tensor) -> Tensor:
    """-(1/B) sum_u sum_i target_ui * log_softmax(output_u)_i: the multinomial likelihood of
    Liang et al. 2018, `output` read as logits."""
    return -torch.mean(torch.sum(F.log_softmax(output, dim=-1) * target, dim=-1))


def binary_cross_entropy(output: Tensor, target: Tensor) -> Tensor:
    """(1/B) sum_u sum_i [(1 - t) z - log sigmoid(z)]: Bernoulli likelihood per user, z = `output`
    read as logits, t in [0, 1]; torch's binary_cross_entropy_with_logits, summed over items."""
    return F.binary_cross_entropy_with_logits(output, target, reduction="sum") / output.shape[0]


LOSSES: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "masked_mse": masked_mse,
    "dense_mse": dense_mse,
    "multinomial": multinomial_nll,
    "bce": binary_cross_entropy,
}


def loss_function(name: str) -> Callable[[Tensor, Tensor], Tensor]:
    try:
        return LOSSES[name]
    except KeyError:
        raise ValueError(f"unknown loss {name!r}; known: {sorted(LOSSES)}") from None


# the same losses with the target a `SparseRows` (its entries are the target's nonzeros)


def sparse_masked_mse(output: Tensor, target: SparseRows) -> Tensor:
    """`masked_mse`: the rated entries are the target's entries, so only they are read."""
    rated = (target.values != 0).to(output.dtype)  # padding entries hold 0: not rated
    count = torch.clamp(torch.sum(rated), min=1.0)
    return torch.sum(torch.square((sparse.at_entries(target, output) - target.values) * rated)) / count


def sparse_multinomial_nll(output: Tensor, target: SparseRows) -> Tensor:
    """`multinomial_nll`: -(1/B) sum over the target's entries (u, i) of t_ui * log_softmax(output_u)_i."""
    log_p = sparse.at_entries(target, F.log_softmax(output, dim=-1))
    return -torch.sum(log_p * target.values) / target.n_rows


def _on_dense_target(loss: Callable[[Tensor, Tensor], Tensor]) -> Callable[[Tensor, SparseRows], Tensor]:
    # dense_mse and bce read every entry of the target: rewritten over the nonzeros they would subtract
    # nearly equal sums (sum softplus(z) - sum_nz t z), so the target is scattered into a dense block instead
    return lambda output, target: loss(output, sparse.to_dense(target, output.shape[-1]))


SPARSE_LOSSES: dict[str, Callable[[Tensor, SparseRows], Tensor]] = {
    "masked_mse": sparse_masked_mse,
    "dense_mse": _on_dense_target(dense_mse),
    "multinomial": sparse_multinomial_nll,
    "bce": _on_dense_target(binary_cross_entropy),
}


def model_loss(name: str, output: Tensor, target: Tensor | SparseRows) -> Tensor:
    """The loss `name` of (output, target), the target dense (batch, n_items) or a `SparseRows`."""
    if isinstance(target, SparseRows):
        loss_function(name)  # the same error for an unknown name
        return SPARSE_LOSSES[name](output, target)
    return loss_function(name)(output, target)


NORM_EPS = 1e-12  # torch.nn.functional.normalize's default: an all-zero row stays zero


def normalize_rows(x: Tensor) -> Tensor:
    """x / max(||x||_2, 1e-12), row by row (last axis)."""
    return F.normalize(x, p=2.0, dim=-1, eps=NORM_EPS)


def dropout(x: Tensor, keep: Tensor | None, rate: float) -> Tensor:
    """Inverted dropout: x * keep / (1 - rate); `keep` None means no dropout (evaluation)."""
    if keep is None or rate == 0.0:
        return x
    return x * keep.to(x.dtype) / (1.0 - rate)


def sparse_input(batch: SparseRows, config: ModelConfig, input_keep: None = None) -> Tensor:
    r"""The first layer's input :math:`h = \operatorname{drop}(n(x))` at the batch's entries, (n_entries,),
    as `normalize_rows` and `dropout` compute it densely, with the batch's own keep-mask."""
    if input_keep is not None:
        raise ValueError("a sparse batch carries its input keep-mask: build it with "
                         "sparse_rows(..., input_keep=mask) instead of passing input_keep")
    values = batch.values
    if config.input_normalization == "l2":
        norms = torch.sqrt(sparse.row_sums(batch, values * values))
        values = values / torch.clamp(norms, min=NORM_EPS)[batch.rows]
    if batch.keep is not None:
        if config.input_dropout == 0.0:  # the JAX side's chunks leave the dropped entries out: refused alike
            raise ValueError("this sparse batch was built with an input keep-mask, but the model has no input dropout")
        values = values * batch.keep.to(values.dtype) / (1.0 - config.input_dropout)
    return values


def encoder_input(x: Tensor | SparseRows, config: ModelConfig, input_keep: Tensor | None = None) -> Tensor:
    r"""The first layer's input :math:`h = \operatorname{drop}(n(x))`: dense rows normalized and dropped
    out, or, for a `SparseRows`, the same at its entries only (`sparse_input`)."""
    if isinstance(x, SparseRows):
        return sparse_input(x, config, input_keep)
    h = normalize_rows(x) if config.input_normalization == "l2" else x
    return dropout(h, input_keep, config.input_dropout)


# ---------------------------------------------------------------------------------------------
# layers and the model


class Affine(nn.Module):
    """y = x W^T + b with W of shape (out, in); a tied layer has no W and borrows one, transposed."""

    def __init__(self, in_features: int, out_features: int, *, tied: bool = False, dtype=torch.float32):
        super().__init__()
        if tied:
            self.register_parameter("weight", None)
        else:
            self.weight = nn.Parameter(torch.empty(out_features, in_features, dtype=dtype))
            nn.init.xavier_uniform_(self.weight)
        self.bias = nn.Parameter(torch.zeros(out_features, dtype=dtype))

    def forward(self, x: Tensor, tied_weight: Tensor | None = None) -> Tensor:
        if self.weight is not None:
            return F.linear(x, self.weight, self.bias)
        return F.linear(x, tied_weight.T, self.bias)  # tied_weight is the encoder's (in, out) = our W^T

    def of_sparse(self, batch: SparseRows, values: Tensor) -> Tensor:
        """The layer on the sparse rows whose nonzeros are `values` at the batch's entries (`sparse.matmul`)."""
        return sparse.matmul(batch, values, self.weight) + self.bias


def check_config(config: ModelConfig, kind: str, model_name: str) -> None:
    """A model refuses a configuration of another kind, or without its input width (every field's type
    and range was checked when the ModelConfig was built; see `parity.config`)."""
    if config.kind != kind:
        raise ValueError(f"{model_name} needs ModelConfig(kind={kind!r}), got kind={config.kind!r}")
    if config.layer_sizes[0] < 1:
        raise ValueError(f"layer_sizes[0] is the input width (the number of items), got {config.layer_sizes}")


class AutoEncoder(nn.Module):
    """DeepRecommender autoencoder; see the module docstring for the equations."""

    def __init__(self, config: ModelConfig, *, dtype=torch.float32):
        super().__init__()
        check_config(config, "ae", "AutoEncoder")
        config = dataclasses.replace(config, layer_sizes=tuple(config.layer_sizes))  # hashable: a static of jit
        self.config = config
        sizes = config.layer_sizes
        back = sizes[::-1]
        self.encoder = nn.ModuleList([Affine(sizes[i], sizes[i + 1], dtype=dtype) for i in range(len(sizes) - 1)])
        self.decoder = nn.ModuleList(
            [Affine(back[i], back[i + 1], tied=config.tied, dtype=dtype) for i in range(len(back) - 1)]
        )

    def encode(self, x: Tensor | SparseRows, *, input_keep: Tensor | None = None,
               code_keep: Tensor | None = None) -> Tensor:
        """The code (batch, code_size); `x` dense (batch, n_items) or a `SparseRows` (then its first layer
        reads the nonzeros only, and the batch carries its input keep-mask)."""
        f = activation(self.config.activation)
        on_sparse = isinstance(x, SparseRows)
        h = encoder_input(x, self.config, input_keep)
        for index, layer in enumerate(self.encoder):
            h = f(layer.of_sparse(x, h) if on_sparse and index == 0 else layer(h))
        return dropout(h, code_keep, self.config.code_dropout)

    def decode(self, z: Tensor) -> Tensor:
        f = activation(self.config.activation)
        last = len(self.decoder) - 1
        d = z
        for index, layer in enumerate(self.decoder):
            tied_weight = self.encoder[last - index].weight if self.config.tied else None
            d = layer(d, tied_weight)
            if index != last or self.config.last_layer_activation:
                d = f(d)
        return d

    def forward(self, x: Tensor | SparseRows, *, input_keep: Tensor | None = None,
                code_keep: Tensor | None = None) -> Tensor:
        return self.decode(self.encode(x, input_keep=input_keep, code_keep=code_keep))

    def loss(self, output: Tensor, target: Tensor | SparseRows) -> Tensor:
        return model_loss(self.config.loss, output, target)


# ---------------------------------------------------------------------------------------------
# the hyperbolic autoencoder

def learned_curvature(model: nn.Module) -> Tensor:
    """The current c = softplus(isp_c) of a `HyperbolicAutoEncoder` with `learn_c` (its geoopt ball's c)."""
    return model.ball.c


class HyperbolicAutoEncoder(nn.Module):
    """The autoencoder on the Poincaré ball of curvature -c; see `jax_impl.models.HyperbolicAutoEncoder`."""

    def __init__(self, config: ModelConfig, *, dtype=torch.float32):
        super().__init__()
        check_config(config, "hae", "HyperbolicAutoEncoder")
        config = dataclasses.replace(config, layer_sizes=tuple(config.layer_sizes))
        self.config = config
        sizes = config.layer_sizes
        back = sizes[::-1]
        c = config.c
        ball = Curvature(c, dtype=dtype) if config.learn_c else None  # the biases' shared, learnable manifold
        self.encoder = nn.ModuleList(
            [MobiusLinear(sizes[i], sizes[i + 1], c=c, dtype=dtype, manifold=ball) for i in range(len(sizes) - 1)]
        )
        self.decoder = nn.ModuleList(
            [MobiusLinear(back[i], back[i + 1], c=c, tied=config.tied, dtype=dtype, manifold=ball)
             for i in range(len(back) - 1)]
        )
        if ball is not None:
            # registered last: geoopt steps the parameters in this order and reads the ball's c live, so the
            # ball biases move with the curvature of before the step, as all of jax_impl.optim's leaves do
            self.ball = ball

    def curvature(self) -> Tensor | float:
        """The curvature the layers use: the learnable one's current value, else config.c."""
        return self.ball.c if self.config.learn_c else self.config.c

    def _enter(self, layer: MobiusLinear, h: Tensor, c) -> Tensor:
        """The first layer on the normalised, dropped-out row `h`, per `input_map`."""
        how = self.config.input_map
        if how == "tangent":
            return layer.from_tangent(h, c=c)
        if how == "expmap0":
            return layer(to_ball(h, c=c), c=c)
        return layer(poincare.project(h, c=c), c=c)  # "point"

    def _enter_sparse(self, layer: MobiusLinear, batch: SparseRows, values: Tensor, c) -> Tensor:
        r"""`_enter` on the sparse row h whose nonzeros are `values`: :math:`W h` from the nonzeros;
        :math:`\exp_0` and the projection act on h through its norm only, x = (|x| / |h|) h, so
        :math:`W x = (|x| / |h|)\, W h` and |x| is geoopt's map of the (batch, 1) column of norms |h|."""
        wh = layer.sparse_product(batch, values)
        how = self.config.input_map
        if how == "tangent":
            return layer.from_tangent_product(wh, c=c)
        h_norm = torch.sqrt(sparse.row_sums(batch, values * values)).clamp_min(1e-15)[:, None]  # geoopt's clamp
        x_norm = to_ball(h_norm, c=c) if how == "expmap0" else poincare.project(h_norm, c=c)
        return layer.of_product((x_norm / h_norm) * wh, x_norm, c=c)

    def encode(self, x: Tensor | SparseRows, *, input_keep: Tensor | None = None,
               code_keep: Tensor | None = None) -> Tensor:
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

    def _decoder_body(self, z: Tensor, c) -> tuple[Tensor, MobiusLinear, Tensor | None]:
        """Every decoder layer but the last, each followed by the activation; -> (their output, the last
        layer, the weight it borrows when tied)."""
        f = activation(self.config.activation)
        last = len(self.decoder) - 1
        tied_weights = [self.encoder[last - index].weight.T if self.config.tied else None for index in range(last + 1)]
        d = z
        for index in range(last):
            d = hyperbolic_activation(self.decoder[index](d, tied_weights[index], c=c), f, c=c)
        return d, self.decoder[last], tied_weights[last]

    def decode_point(self, z: Tensor) -> Tensor:
        """The decoder's last point d_L on the ball, (batch, n_items)."""
        c = self.curvature()
        d, last_layer, tied_weight = self._decoder_body(z, c)
        d = last_layer(d, tied_weight, c=c)
        if self.config.last_layer_activation:
            d = hyperbolic_activation(d, activation(self.config.activation), c=c)
        return d

    def scores(self, point: Tensor) -> Tensor:
        """Item scores (logits) from the decoder's last point: output_scale * log_0(point)."""
        return self._scaled(to_tangent(point, c=self.curvature()))

    def _scaled(self, s: Tensor) -> Tensor:
        return s if self.config.output_scale == 1.0 else s * self.config.output_scale

    def decode(self, z: Tensor) -> Tensor:
        """Item scores for the code z: `scores(decode_point(z))`, with the last layer and the log map
        as one `logmap0_of` when no activation follows the last layer."""
        if self.config.last_layer_activation:
            return self.scores(self.decode_point(z))
        c = self.curvature()
        d, last_layer, tied_weight = self._decoder_body(z, c)
        return self._scaled(last_layer.logmap0_of(d, tied_weight, c=c))

    def forward(self, x: Tensor | SparseRows, *, input_keep: Tensor | None = None,
                code_keep: Tensor | None = None) -> Tensor:
        return self.decode(self.encode(x, input_keep=input_keep, code_keep=code_keep))

    def loss(self, output: Tensor, target: Tensor | SparseRows) -> Tensor:
        return model_loss(self.config.loss, output, target)
