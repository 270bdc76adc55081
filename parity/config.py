"""Plain-Python configuration shared by both frameworks (no numpy, jax or torch here).

`jax_impl` and `torch_ref` may import this module and nothing else of `parity`.

Every dataclass checks its fields when it is built (types and ranges, `ConfigError` naming the field,
the value and what is allowed), so a configuration that exists is a valid one: a typo in a preset, a
`--set model.c=abc` or a negative learning rate stops before any data is read. The names the models
understand (activations, losses, input maps) are listed here once; each framework maps them to its
functions. Every dataclass round-trips through `to_dict` / `from_dict`, so a run's JSON says exactly
what ran.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, TypeVar

from parity.errors import ConfigError

T = TypeVar("T")

MODEL_KINDS = ("ae", "hae")
ACTIVATIONS = ("selu", "elu", "relu", "lrelu", "tanh", "sigmoid", "swish", "identity")
LOSSES = ("masked_mse", "dense_mse", "multinomial", "bce")
INPUT_NORMALIZATIONS = ("none", "l2")
INPUT_MAPS = ("tangent", "expmap0", "point")
OUTPUT_MAPS = ("logmap0",)
OPTIMIZERS = ("sgd", "adam")
PROTOCOLS = ("seed", "neumf")
DTYPES = ("float32", "float64")
INPUT_FORMATS = ("dense", "sparse")

# geoopt's projection margin per dtype (`PoincareBall._project`): no point of the ball of curvature -c
# lies further than (1 - eps) / sqrt(c) from the origin
PROJECTION_EPS = {"float32": 4e-3, "float64": 1e-5}


# ---------------------------------------------------------------------------------------------
# field rules: each returns the (normalised) value or raises ConfigError


def _fail(where: str, value: Any, expected: str) -> None:
    raise ConfigError(f"{where}={value!r}: expected {expected}")


def _number(where: str, value: Any, *, low: float | None = None, high: float | None = None,
            low_open: bool = False, high_open: bool = False) -> float:
    bounds = []
    if low is not None:
        bounds.append(f"{'>' if low_open else '>='} {low:g}")
    if high is not None:
        bounds.append(f"{'<' if high_open else '<='} {high:g}")
    expected = "a number" + (" " + " and ".join(bounds) if bounds else "")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        _fail(where, value, expected)
    if low is not None and (value < low or (low_open and value == low)):
        _fail(where, value, expected)
    if high is not None and (value > high or (high_open and value == high)):
        _fail(where, value, expected)
    return value


def _integer(where: str, value: Any, *, low: int, optional: bool = False) -> int | None:
    if optional and value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        _fail(where, value, f"an integer >= {low}" + (" or null" if optional else ""))
    return value


def _boolean(where: str, value: Any) -> bool:
    if not isinstance(value, bool):
        _fail(where, value, "true or false")
    return value


def _choice(where: str, value: Any, choices: tuple[str, ...]) -> str:
    if value not in choices:
        _fail(where, value, "one of " + ", ".join(choices))
    return value


def _text(where: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        _fail(where, value, "a non-empty string")
    return value


def _layer_sizes(where: str, value: Any) -> tuple[int, ...]:
    expected = ("a list of at least two integers, the input width first (0 stands for the dataset's item "
                "count) then each layer's width >= 1, e.g. [0, 600]")
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)) or len(value) < 2:
        _fail(where, value, expected)
    if any(isinstance(v, bool) or not isinstance(v, int) for v in value):
        _fail(where, value, expected)
    if value[0] < 0 or any(v < 1 for v in value[1:]):
        _fail(where, value, expected)
    return tuple(value)


def _set(instance: Any, name: str, value: Any) -> None:
    object.__setattr__(instance, name, value)  # frozen dataclasses: normalise in __post_init__


# ---------------------------------------------------------------------------------------------
# the configuration


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

    def __post_init__(self):
        w = "model."
        _choice(w + "kind", self.kind, MODEL_KINDS)
        _set(self, "layer_sizes", _layer_sizes(w + "layer_sizes", self.layer_sizes))
        _choice(w + "activation", self.activation, ACTIVATIONS)
        _choice(w + "loss", self.loss, LOSSES)
        _choice(w + "input_normalization", self.input_normalization, INPUT_NORMALIZATIONS)
        for name in ("tied", "last_layer_activation", "learn_c"):
            _boolean(w + name, getattr(self, name))
        for name in ("input_dropout", "code_dropout"):  # a keep-probability of 0 would divide by 0
            _number(w + name, getattr(self, name), low=0.0, high=1.0, high_open=True)
        _number(w + "c", self.c, low=0.0, low_open=True)
        _choice(w + "input_map", self.input_map, INPUT_MAPS)
        _choice(w + "output_map", self.output_map, OUTPUT_MAPS)
        _number(w + "output_scale", self.output_scale, low=0.0, low_open=True)


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

    def __post_init__(self):
        w = "optimizer."
        _choice(w + "name", self.name, OPTIMIZERS)
        _number(w + "learning_rate", self.learning_rate, low=0.0)  # 0 freezes the model: allowed
        _number(w + "momentum", self.momentum, low=0.0, high=1.0)
        _number(w + "dampening", self.dampening, low=0.0, high=1.0)
        for name in ("b1", "b2"):
            _number(w + name, getattr(self, name), low=0.0, high=1.0, high_open=True)
        _number(w + "eps", self.eps, low=0.0)
        _number(w + "weight_decay", self.weight_decay, low=0.0)
        for name in ("nesterov", "amsgrad", "exact"):
            _boolean(w + name, getattr(self, name))
        _integer(w + "stabilize", self.stabilize, low=1, optional=True)
        if self.nesterov and self.momentum <= 0:
            raise ConfigError("optimizer.nesterov=true needs optimizer.momentum > 0 (as torch.optim.SGD requires)")


def euclidean_optimizer_problems(config: OptimizerConfig) -> list[str]:
    """Options that optax's and torch.optim's Euclidean Adam / SGD cannot both honour the same way
    (the Riemannian optimizers of `jax_impl.optim` / geoopt can); empty when there are none."""
    problems = []
    if config.exact:
        problems.append("exact (the exponential map) applies to Riemannian optimizers only")
    if config.name == "adam" and config.amsgrad:
        problems.append("amsgrad: optax and torch.optim differ (max before / after bias correction)")
    if config.name == "sgd" and config.dampening:
        problems.append("dampening: optax.sgd has none")
    return problems


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Which data and which evaluation protocol ("seed" or "neumf", see DESIGN.md)."""

    dataset: str = "ml-1m-neumf"
    protocol: str = "neumf"
    quantile: float = 0.98  # seed protocol: global time split
    validation_seed: int = 0

    def __post_init__(self):
        _text("data.dataset", self.dataset)
        _choice("data.protocol", self.protocol, PROTOCOLS)
        _number("data.quantile", self.quantile, low=0.0, high=1.0, low_open=True, high_open=True)
        _integer("data.validation_seed", self.validation_seed, low=0)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    epochs: int = 40
    batch_size: int = 256
    seed: int = 0
    dtype: str = "float32"
    dense_refeeding: bool = False
    early_stopping_patience: int | None = None  # epochs without a better validation HR@10
    # how a user's row enters the first layer: "dense" (the (batch, n_items) rows, a matrix product) or
    # "sparse" (its nonzeros only: the same function, `jax_impl.sparse` / `torch_ref.sparse`; one device)
    input_format: str = "dense"

    def __post_init__(self):
        _integer("train.epochs", self.epochs, low=1)
        _integer("train.batch_size", self.batch_size, low=1)
        _integer("train.seed", self.seed, low=0)
        _choice("train.dtype", self.dtype, DTYPES)
        _boolean("train.dense_refeeding", self.dense_refeeding)
        _integer("train.early_stopping_patience", self.early_stopping_patience, low=1, optional=True)
        _choice("train.input_format", self.input_format, INPUT_FORMATS)


SECTIONS = {"model": ModelConfig, "optimizer": OptimizerConfig, "data": DataConfig, "train": TrainConfig}


def to_dict(config: Any) -> dict[str, Any]:
    return dataclasses.asdict(config)


def from_dict(cls: type[T], values: dict[str, Any]) -> T:
    """Build `cls` from a dict, refusing unknown keys (a typo in a preset must not pass silently)."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(values) - names
    if unknown:
        section = next((k for k, v in SECTIONS.items() if v is cls), cls.__name__)
        raise ConfigError(f"unknown {section} field(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(names))}")
    return cls(**values)


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Everything one training run reads: model, optimizer, data, training."""

    model: ModelConfig
    optimizer: OptimizerConfig
    data: DataConfig
    train: TrainConfig

    def __post_init__(self):
        if self.model.kind == "ae":  # the Euclidean model trains with optax / torch.optim
            problems = euclidean_optimizer_problems(self.optimizer)
            if problems:
                raise ConfigError("the Euclidean autoencoder's optimizer (optax / torch.optim) cannot take "
                                  + "; ".join(problems) + " (use the hyperbolic model, model.kind=hae)")

    def to_dict(self) -> dict[str, Any]:
        return {name: to_dict(getattr(self, name)) for name in SECTIONS}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> RunConfig:
        unknown = set(values) - set(SECTIONS)
        if unknown:
            raise ConfigError(f"unknown configuration section(s) {', '.join(sorted(unknown))}; "
                              f"known: {', '.join(SECTIONS)}")
        return cls(**{name: from_dict(section, values.get(name, {})) for name, section in SECTIONS.items()})


# Named configurations for `poincare-parity train --preset NAME`: sections model / optimizer / data /
# train, each a partial dict over the dataclasses above (the rest keeps its default). The first entry
# of layer_sizes is always replaced by the dataset's item count.
PRESETS: dict[str, dict[str, Any]] = {
    "ae-neumf": {
        # chosen on the validation split (seed 0) among 8 variants; see reports/ae-neumf/tuning.md
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
