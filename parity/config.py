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
    # hyperbolic autoencoder only
    c: float = 1.0
    learn_c: bool = False


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
