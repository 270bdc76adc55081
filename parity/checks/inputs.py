"""Inputs for `check_function`: how each argument is drawn in each input regime.

A regime is a kind of input where ports tend to part:

    zero       exact zero vectors (the 0/0 of a norm, the sqrt at 0: where JAX gives NaN gradients and
               PyTorch 0)
    origin     norms in [1e-10, 1e-6] of the ball's radius 1/sqrt(c) (series expansions, artanh near 0)
    bulk       ordinary inputs: points at 2% to 90% of the projection radius, tangents of norm 1e-3 to 1 radius
    boundary   points within 1e-3 (relative) inside the projection radius (1 - eps)/sqrt(c), eps = 4e-3 in
               float32 and 1e-5 in float64 (geoopt's margin): conditioning 1/(1 - c|x|^2) is at its worst
    identical  two arguments equal (x = y: dist, logmap, transp) or opposite (x = -y: mobius_add), as `same_as`
               says; the other arguments as in the bulk

Each argument is an `Arg`: a `draw(rng, regime, dtype) -> float64 numpy array`, drawn in float64 and then
rounded to the dtype under check, so that both sides see the very same numbers.

    ball(shape, c=1.0)      points on the Poincaré ball of curvature -c
    tangent(shape, c=1.0)   tangent (or Euclidean) vectors, scaled to the ball's radius
    free(shape, c=1.0)      vectors inside and outside the ball (the input of a projection)
    normal(shape, scale)    plain Gaussian arrays (weights, biases, anything without a regime)
    constant(value)         one fixed value (e.g. the curvature), passed as a keyword by default
    same_as(name, sign)     the identical regime's tie: a copy of `name` (sign -1: its negative; "alternate":
                            every other row negated); in other regimes drawn as `otherwise`
    custom(draw)            your own draw(rng, regime, dtype)
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from parity.config import PROJECTION_EPS

REGIMES = ("zero", "origin", "bulk", "boundary", "identical")

Draw = Callable[[np.random.Generator, str, str], np.ndarray]


@dataclasses.dataclass(frozen=True)
class Arg:
    """One argument of a checked function: how it is drawn, and how it is passed.

    `keyword`: passed as `name=value` (else positionally, in the order of `args`). `differentiable`:
    its vector-Jacobian product is compared. `kind`: "point" (on the ball), "tangent" or "free" for the
    vectors the regimes place (None: drawn the same in every regime). `tie`: for the identical regime,
    (source name, sign) of a tied argument."""

    draw: Draw
    keyword: bool = False
    differentiable: bool = True
    kind: str | None = None
    tie: tuple[str, Any] | None = None

    @property
    def ball(self) -> bool:
        return self.kind == "point"


def directions(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    """n random unit vectors of dimension d."""
    v = rng.standard_normal((n, d))
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def log_uniform(rng: np.random.Generator, lo: float, hi: float, n: int) -> np.ndarray:
    return np.exp(rng.uniform(np.log(lo), np.log(hi), n))


def vectors(kind: str, regime: str, n: int, d: int, c: float, eps: float, rng: np.random.Generator) -> np.ndarray:
    """n vectors of dimension d in `regime`, float64: kind "point" (on the ball of curvature -c, projection
    margin eps), "tangent" (norms on the scale of the radius 1/sqrt(c)) or "free" (inside and outside)."""
    radius = 1.0 / math.sqrt(c)
    max_norm = (1.0 - eps) / math.sqrt(c + 1e-15)
    if regime == "zero":
        return np.zeros((n, d))
    if regime == "origin":
        norms = log_uniform(rng, 1e-10, 1e-6, n) * radius
    elif kind == "point" and regime == "boundary":
        norms = max_norm * (1.0 - log_uniform(rng, 1e-5, 1e-3, n))
    elif kind == "free" and regime == "boundary":
        sign = np.where(np.arange(n) % 2 == 0, -1.0, 1.0)  # half inside, half outside the projection radius
        norms = max_norm * (1.0 + sign * log_uniform(rng, 1e-5, 1e-3, n))
    elif kind == "free":
        inside = np.arange(n) % 2 == 0
        norms = np.where(inside, rng.uniform(0.02, 0.9, n), rng.uniform(1.0, 3.0, n)) * max_norm
    elif kind == "point":
        norms = rng.uniform(0.02, 0.9, n) * max_norm
    else:  # tangent in bulk, boundary, identical
        norms = log_uniform(rng, 1e-3, 1.0, n) * radius
    return directions(rng, n, d) * norms[:, None]


def _vector_arg(kind: str, shape: Sequence[int], c: float, **options: Any) -> Arg:
    *lead, d = tuple(shape)
    n = int(np.prod(lead)) if lead else 1

    def draw(rng: np.random.Generator, regime: str, dtype: str) -> np.ndarray:
        return vectors(kind, regime, n, d, c, PROJECTION_EPS[dtype], rng).reshape(*lead, d)

    return Arg(draw, kind=kind, **options)


def ball(shape: Sequence[int], *, c: float = 1.0, **options: Any) -> Arg:
    """Points on the Poincaré ball of curvature -c, shape (..., d), placed by the regime."""
    return _vector_arg("point", shape, c, **options)


def tangent(shape: Sequence[int], *, c: float = 1.0, **options: Any) -> Arg:
    """Tangent (or Euclidean) vectors of shape (..., d), norms on the scale of the ball's radius 1/sqrt(c);
    zero in the zero regime, tiny in the origin regime."""
    return _vector_arg("tangent", shape, c, **options)


def free(shape: Sequence[int], *, c: float = 1.0, **options: Any) -> Arg:
    """Vectors half inside, half outside the projection radius (what `project` gets)."""
    return _vector_arg("free", shape, c, **options)


def normal(shape: Sequence[int], *, scale: float = 1.0, **options: Any) -> Arg:
    """Gaussian arrays (weights, biases, anything without a regime of its own), the same in every regime."""
    shape = tuple(shape)
    return Arg(lambda rng, regime, dtype: rng.standard_normal(shape) * scale, **options)


def constant(value: Any, *, keyword: bool = True, differentiable: bool = False, **options: Any) -> Arg:
    """One fixed value (a curvature, a scale), a keyword by default and not differentiated."""
    array = np.asarray(value, np.float64)
    return Arg(lambda rng, regime, dtype: array.copy(), keyword=keyword, differentiable=differentiable, **options)


def same_as(name: str, sign: float | str = 1.0, *, otherwise: Arg) -> Arg:
    """In the identical regime a copy of argument `name` (sign -1: negated; "alternate": rows alternately
    negated); in every other regime drawn as `otherwise`."""
    return dataclasses.replace(otherwise, tie=(name, sign))


def custom(draw: Draw, **options: Any) -> Arg:
    """An argument drawn by your own `draw(rng, regime, dtype) -> float64 array`."""
    return Arg(draw, **options)


def tie(source: np.ndarray, sign: float | str) -> np.ndarray:
    """The identical regime's copy of `source` (see `same_as`)."""
    if sign == "alternate":
        factor = np.ones(source.shape[:-1] + (1,))
        factor.reshape(-1)[1::2] = -1.0
        return source * factor
    return source * float(sign)


def default_regimes(args: dict[str, Arg]) -> tuple[str, ...]:
    """Every regime for a function of ball points (identical only when two arguments are tied), else the bulk."""
    if not any(a.ball for a in args.values()):
        return ("bulk",)
    regimes = [r for r in REGIMES if r != "identical"]
    if any(a.tie for a in args.values()):
        regimes.append("identical")
    return tuple(regimes)


def draw_arguments(args: dict[str, Arg], regime: str, dtype: str, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """One draw of every argument for `regime`, rounded to `dtype`.

    The zero regime zeroes each vector argument alone on its own rows (row i mod (k + 1) for the i-th of k
    vector arguments) and all of them together on the last pattern, the rest drawn as in the bulk; the
    identical regime copies each tied argument from its source."""
    vector_names = [k for k, a in args.items() if a.kind]
    values = {}
    for name, arg in args.items():
        if regime == "zero" and arg.kind:
            bulk = arg.draw(rng, "bulk", dtype)
            rows = bulk.reshape(-1, bulk.shape[-1])
            pattern = np.arange(len(rows)) % (len(vector_names) + 1)
            rows[(pattern == vector_names.index(name)) | (pattern == len(vector_names))] = 0.0
            values[name] = rows.reshape(bulk.shape)
        else:
            values[name] = arg.draw(rng, regime, dtype)
    if regime == "identical":
        for name, arg in args.items():
            if arg.tie is not None:
                values[name] = tie(values[arg.tie[0]], arg.tie[1])
    return {k: np.asarray(v).astype(dtype) for k, v in values.items()}
