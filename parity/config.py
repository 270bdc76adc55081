"""Plain-Python configuration shared by both frameworks (no numpy, jax or torch here).

`jax_impl` and `torch_ref` may import this module and nothing else of `parity`.
Every dataclass round-trips through `to_dict` / `from_dict`, so a run's JSON says exactly what ran.
"""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """An autoencoder: `kind` "ae" (Euclidean, DeepRec style) or "hae" (Poincaré ball, Möbius layers).

    `layer_sizes` runs from the input (n_items) to the code layer; the decoder mirrors it back.
    """

    kind: str = "ae"
    layer_sizes: tuple[int, ...] = (3706, 512, 512, 1024)
    activation: str = "selu"
    tied: bool = False
    input_dropout: float = 0.0
    code_dropout: float = 0.0
    last_layer_activation: bool = False
    loss: str = "masked_mse"
    # "l2": each input row divided by its Euclidean norm before input dropout (Liang et al. 2018's
    # Mult-DAE); "none": the row as it is (DeepRecommender). The target is never normalised.
    input_normalization: str = "none"
    # hyperbolic autoencoder only (see jax_impl.models.HyperbolicAutoEncoder for the equations)
    c: float = 1.0  # the ball's curvature is -c
    learn_c: bool = False  # a learnable curvature c = softplus(isp_c), starting at c (geoopt's learnable ball)
    # how the normalised, dropped-out user row h enters the ball: "tangent" (h is a tangent vector at
    # the origin, the first layer computes exp0(W h) ⊕ b), "expmap0" (the point exp0(h) is formed and
    # projected first: the same function, literally), "point" (h's coordinates taken as a point and
    # projected: the published "hyplinear" variant)
    input_map: str = "tangent"
    # how the decoder's last point y becomes item scores: "logmap0" (output_scale * log0(y))
    output_map: str = "logmap0"
    output_scale: float = 1.0


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
    """Optimizer options, read the same way by `jax_impl.optim` (optax) and `torch_ref.optim` (geoopt)."""

    name: str = "adam"  # "sgd" | "adam"
    learning_rate: float = 1e-3
    momentum: float = 0.0
    dampening: float = 0.0
    nesterov: bool = False
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8
    weight_decay: float = 0.0
    amsgrad: bool = False
    stabilize: int | None = None
    exact: bool = False  # expmap instead of the retraction (geoopt's PoincareBallExact)


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Which data and which evaluation protocol ("seed" or "neumf", see DESIGN.md)."""

    dataset: str = "ml-1m-neumf"
    protocol: str = "neumf"
    quantile: float = 0.98  # seed protocol: global time split
    validation_seed: int = 0


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    epochs: int = 40
    batch_size: int = 256
    seed: int = 0
    dtype: str = "float32"
    dense_refeeding: bool = False
    early_stopping_patience: int | None = None  # epochs without a better validation HR@10


def to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)


def from_dict(cls: type[T], values: dict[str, Any]) -> T:
    """Build `cls` from a dict, refusing unknown keys (a typo in a preset must not pass silently)."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(values) - names
    if unknown:
        raise ValueError(f"unknown {cls.__name__} field(s): {sorted(unknown)}; known: {sorted(names)}")
    values = dict(values)
    if "layer_sizes" in values:
        values["layer_sizes"] = tuple(values["layer_sizes"])
    return cls(**values)


# Named configurations for `poincare-parity train --preset NAME`: sections model / optimizer / data /
# train, each a partial dict over the dataclass above (the rest keeps its default). The first entry
# of layer_sizes is always replaced by the dataset's item count.
PRESETS: dict[str, dict[str, Any]] = {
    "ae-neumf": {
        # chosen on the validation split (seed 0) among 8 variants of the probe; see the issue-5 report
        "description": "Euclidean AE chosen on the ml-1m-neumf validation split: L2-normalised input, "
                       "input dropout 0.5, one tanh layer of 600, multinomial likelihood, Adam 1e-3, batch 256",
        "model": {"kind": "ae", "layer_sizes": (3706, 600), "activation": "tanh", "input_dropout": 0.5,
                  "input_normalization": "l2", "loss": "multinomial"},
        "optimizer": {"name": "adam", "learning_rate": 1e-3},
        "data": {"dataset": "ml-1m-neumf", "protocol": "neumf"},
        "train": {"epochs": 40, "batch_size": 256, "early_stopping_patience": 10},
    },
    "hae-neumf": {
        # chosen on the ml-1m-neumf validation split (seed 0); see reports/hae-neumf/tuning.md
        "description": "hyperbolic AE chosen on the ml-1m-neumf validation split: the ae-neumf network on the "
                       "Poincaré ball (c = 0.01): L2-normalised input as a tangent vector at the origin, input "
                       "dropout 0.5, one Möbius layer of 600 with tanh in the tangent space, Möbius decoder, "
                       "scores log0(y), multinomial likelihood, Riemannian Adam 1e-3, batch 256",
        "model": {"kind": "hae", "layer_sizes": (3706, 600), "activation": "tanh", "input_dropout": 0.5,
                  "input_normalization": "l2", "loss": "multinomial", "c": 0.01, "input_map": "tangent",
                  "output_map": "logmap0"},
        "optimizer": {"name": "adam", "learning_rate": 1e-3},
        "data": {"dataset": "ml-1m-neumf", "protocol": "neumf"},
        "train": {"epochs": 40, "batch_size": 256, "early_stopping_patience": 10},
    },
    "deeprec": {
        "description": "the seed's DeepRecommender configuration (Kuchaiev & Ginsburg 2017): "
                       "[n_items, 512, 512, 1024], SELU, masked MSE, code dropout 0.8, dense re-feeding, "
                       "SGD momentum 0.9 lr 0.005, batch 128 (DeepRecommender's Netflix settings)",
        "model": {"kind": "ae", "layer_sizes": (3706, 512, 512, 1024), "activation": "selu", "code_dropout": 0.8,
                  "last_layer_activation": True, "loss": "masked_mse"},
        "optimizer": {"name": "sgd", "learning_rate": 0.005, "momentum": 0.9},
        "data": {"dataset": "ml-1m-neumf", "protocol": "neumf"},
        "train": {"epochs": 20, "batch_size": 128, "dense_refeeding": True, "early_stopping_patience": 5},
    },
}
