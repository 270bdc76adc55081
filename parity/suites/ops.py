"""Poincaré-ball ops: values and gradients, `jax_impl.poincare` vs `torch_ref.poincare` (geoopt).

For every function of the contract (plus the optimizer helpers `retr_transp`, `expmap_transp`)
and every input regime, both sides get the same inputs (drawn in numpy float64, then rounded to
the dtype under test) and the same random cotangent; the suite compares the values and the VJPs
with respect to every array input and to the curvature ``c``. One row per (function, regime,
dtype), the worst case over c in {1e-3, 0.1, 1, 2, 10} and dimensions {2, 16, 128, 3706} (with
leading batch axes).

Regimes: ``zero`` (exact zero vectors: each vector input in turn, then all of them), ``origin``
(norms in [1e-10, 1e-6] of the radius 1/sqrt(c)), ``bulk``, ``boundary`` (points within 1e-3,
relative, inside the projection radius (1 - eps)/sqrt(c); `project` also gets points just outside
it) and ``identical`` (x = y, for functions of two points; for `mobius_add` and `gyration` also
y = -x; for `inner` and the *_transp helpers u = v).

The third arm is an exact oracle: the same formulas (geoopt's clamps and projection included)
evaluated in mpmath at 130 digits on the very inputs (after rounding to the dtype), gradients by
central differences with step 1e-40. It runs on every float32 row and on every float64 row where
the two sides disagree, at the worst-disagreeing points and at random ones, and says which side is
closer to the truth. A row whose parity fails passes only if the oracle shows that geoopt is the
side that is wrong (`reference_wrong`) and that the JAX side is within the row's tolerance of the
truth; both oracle errors are recorded. Wherever the oracle runs, a JAX side off the truth fails
its row even if geoopt agrees with it.

Errors use `parity.compare.compare` (relative, with an absolute floor); the floor is scaled to the
natural magnitude of each output (see "The absolute floor" below), and ``grad.c`` is compared point
by point (each point gets its own copy of c, so no cancellation across the batch hides or fakes an
error).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import sys
from typing import Any, Callable, Sequence

import numpy as np

from parity.backend import enable_float64
from parity.compare import Comparison, ParityRecord, Tolerance, compare, merge

C_VALUES = (1e-3, 0.1, 1.0, 2.0, 10.0)
DIMS = (2, 16, 128, 3706)
# leading batch axes per dimension (points per case = product)
LEAD_SHAPES = {2: (8, 8), 16: (4, 8), 128: (16,), 3706: (2, 2)}
# mobius_matvec: m has shape (MATVEC_OUT[d], d)
MATVEC_OUT = {2: 3, 16: 16, 128: 64, 3706: 16}
REGIMES = ("zero", "origin", "bulk", "boundary", "identical")
QUICK_DIMS = (2, 16)
QUICK_LEAD_SHAPES = {2: (3, 4), 16: (5,)}
# projection margin per dtype, as geoopt's `_project` chooses it
BALL_EPS = {"float32": 4e-3, "float64": 1e-5}

# ----------------------------------------------------------------------------- tolerances
#
# float64 numbers are the acceptance criteria of issue 2. float32 numbers are measured: the worst
# rows of `poincare-parity ops --dtype float32` (seed 0, CPU, jax 0.10.2, torch 2.13, geoopt 0.5.1)
# are quoted with each; rows where geoopt is wrong are judged against the oracle, not against geoopt.
# Each atol is per unit of the output's natural magnitude (float64: capped at the fixed
# floor); see "The absolute floor" below.

F64 = Tolerance(1e-9, 1e-12, "acceptance: float64 relative 1e-9, absolute 1e-12 where |ref| < 1e-3 (tighter "
                "for outputs of magnitude below 1)")
F64_BOUNDARY = Tolerance(1e-6, 1e-9, "acceptance: float64 relative 1e-6 within 1e-3 of the projection radius")
F32_BULK = Tolerance(1e-4, 1e-5, "acceptance: float32 relative 1e-4 in the bulk; measured worst 5.2e-5 "
                     "(expmap d/dx, c = 1e-3), JAX-vs-oracle worst 8.5e-6")
F32 = {
    "zero": Tolerance(1e-4, 1e-5, "as the bulk; measured worst 1.5e-5 (retr_transp d/dc), JAX-vs-oracle 3.8e-6 "
                      "(geoopt's float32 artanh and matvec zero test are judged by the oracle)"),
    "origin": Tolerance(1e-4, 1e-5, "as the bulk; measured worst 3.1e-6 (gyration d/da), JAX-vs-oracle 3.1e-6 "
                        "(geoopt's float32 artanh near 0 is judged by the oracle)"),
    "bulk": F32_BULK,
    "identical": Tolerance(1e-4, 1e-5, "as the bulk; measured worst 3.0e-5 (gyration d/da), JAX-vs-oracle 2.1e-5"),
    "boundary": Tolerance(5e-3, 5e-4, "measured: within 1e-3 of the float32 projection radius 1 - c|x|^2 ~ 8e-3 "
                          "keeps 7 fewer bits and lambda_x^2 ~ 1e4 multiplies them; JAX-vs-oracle worst 9.0e-4 "
                          "(gyration d/db, c = 10), parity worst where geoopt is right 1.0e-3 (mobius_add); "
                          "geoopt's own boundary errors (up to 1e-1: gyration, transp, dist, logmap) are "
                          "judged by the oracle"),
}


def tolerance_for(dtype: str, regime: str, function: str) -> Tolerance:
    if dtype == "float64":
        return F64_BOUNDARY if regime == "boundary" else F64
    return F32[regime]


# The absolute floor. Each Tolerance's atol above is per unit of the output's natural magnitude:
# an entry is judged relatively, against max(|ref|, magnitude * atol / rtol), so entries below
# atol / rtol of the magnitude are held to atol * magnitude absolutely. The magnitude is the largest
# entry of that output at that c over the row's dimensions (the larger of the two sides' for parity;
# for the oracle, the larger of the oracle's own and the smaller side's, so that neither side can
# loosen its own judgement), except for d/dc: a c-derivative is a sum of terms of size |f| / c (f
# depends on c through c|x|^2) which cancel (near the origin d/dc tanh(sqrt(c) n)/sqrt(c) ~ n^3 comes
# from terms ~ n/c), so its magnitude is max|f| * max|cotangent| / c.
# float64 takes the stricter of this and the fixed floor (1e-12 where |ref| < 1e-3): a fixed
# floor alone would let the origin regime (values ~ 1e-10 R) pass unexamined. Meeting the fixed
# floor at c = 1e-3 (R = 31.6, d/dc terms ~ R^3 = 3e4, so an entry that is 0 in exact arithmetic
# carries 3e-12 of rounding unless the formula makes it structurally 0) is why jax_impl.poincare
# writes Möbius addition, gyration and lambda_x / lambda_y so that special inputs give products
# with exact zero factors: XLA fuses a*b - c*d into fused multiply-adds (openxla/xla#41579), which
# do not cancel equal products.
# float32 uses atol / rtol = 1e-1, measured: at 1e-3 the floor is one float32 ulp of the magnitude,
# and c-derivatives near the origin (terms n/c cancelling to n^3) come out 2 ulps off in both
# implementations (expmap, expmap0, matvec); at 1e-2, a bulk gradient entry at 5% of the largest
# carries 10 ulps of the largest from each side (expmap d/dx at c = 1e-3: geoopt 7e-5 and JAX 2.5e-5
# off the oracle, 1.07e-4 apart). So float32 entries below a tenth of the magnitude are held to
# rtol / 10 of it.
TINY = 1e-30  # floor when an output is exactly 0 on both sides (below every float32/float64 noise)


def _largest(*arrays: np.ndarray) -> float:
    values = [np.abs(np.asarray(a, dtype=np.float64)) for a in arrays]
    values = [v[np.isfinite(v)] for v in values]
    return max((float(v.max()) for v in values if v.size), default=0.0)


def array_tolerance(tol: Tolerance, dtype: str, magnitude: float) -> Tolerance:
    """``tol`` with its per-unit absolute floor scaled to ``magnitude`` (float64: never above ``tol.atol``)."""
    atol = tol.atol * magnitude
    if dtype == "float64":
        atol = min(atol, tol.atol)
    return Tolerance(tol.rtol, max(atol, TINY), tol.reason)


def _magnitudes(jax_out: dict[str, np.ndarray], ref_out: dict[str, np.ndarray], cot: tuple, c_value: float,
                ci: int) -> dict[str, tuple[float, float]]:
    """Natural magnitude of every compared array at one c, as (JAX's estimate, geoopt's estimate).

    Parity takes the larger: a side that is wildly wrong somewhere loosens the floor, but then fails
    at that very entry (its error there is the magnitude itself). The oracle takes the larger of the
    smaller and its own, so that neither side can loosen its own judgement.
    """
    values = [k for k in jax_out if k.startswith("value")]
    out = {}
    for key in jax_out:
        if key == "grad.c":
            per_side = [_largest(*(side[k][ci] for k in values)) * _largest(*(t[ci] for t in cot)) / c_value
                        for side in (jax_out, ref_out)]
        else:
            per_side = [_largest(side[key][ci]) for side in (jax_out, ref_out)]
        out[key] = (per_side[0], per_side[1])
    return out


# ----------------------------------------------------------------------------- the functions


@dataclasses.dataclass(frozen=True)
class OpSpec:
    """A contract function: argument names and kinds, and how the identical regime ties arguments.

    kinds: "point" (in the ball), "tangent" (a tangent or Euclidean vector), "free" (any vector:
    the input of `project`), "scalar" (shape (..., 1)), "matrix" (shape (out, in), shared).
    ties: (source, target, mode) for the identical regime; mode "same" copies, "alternate" copies on
    even rows and negates on odd rows.
    """

    name: str
    args: tuple[tuple[str, str], ...]
    ties: tuple[tuple[str, str, str], ...] = ()
    n_out: int = 1

    @property
    def arg_names(self) -> tuple[str, ...]:
        return tuple(a for a, _ in self.args)

    def kind(self, arg: str) -> str:
        return dict(self.args)[arg]

    @property
    def vector_args(self) -> tuple[str, ...]:
        return tuple(a for a, k in self.args if k in ("point", "tangent", "free"))

    def regimes(self) -> tuple[str, ...]:
        return REGIMES if self.ties else tuple(r for r in REGIMES if r != "identical")


P, T = "point", "tangent"
SPECS: dict[str, OpSpec] = {
    s.name: s
    for s in (
        OpSpec("mobius_add", (("x", P), ("y", P)), (("x", "y", "alternate"),)),
        OpSpec("mobius_scalar_mul", (("r", "scalar"), ("x", P))),
        OpSpec("mobius_matvec", (("m", "matrix"), ("x", P))),
        OpSpec("expmap", (("x", P), ("u", T))),
        OpSpec("expmap0", (("u", T),)),
        OpSpec("logmap", (("x", P), ("y", P)), (("x", "y", "same"),)),
        OpSpec("logmap0", (("y", P),)),
        OpSpec("dist", (("x", P), ("y", P)), (("x", "y", "same"),)),
        OpSpec("dist0", (("x", P),)),
        OpSpec("transp", (("x", P), ("y", P), ("v", T)), (("x", "y", "same"),)),
        OpSpec("transp0", (("y", P), ("v", T))),
        OpSpec("gyration", (("a", P), ("b", P), ("u", T)), (("a", "b", "alternate"),)),
        OpSpec("lambda_x", (("x", P),)),
        OpSpec("inner", (("x", P), ("u", T), ("v", T)), (("u", "v", "same"),)),
        OpSpec("norm", (("x", P), ("u", T))),
        OpSpec("egrad2rgrad", (("x", P), ("g", T))),
        OpSpec("project", (("x", "free"),)),
        OpSpec("retr", (("x", P), ("u", T))),
        OpSpec("retr_transp", (("x", P), ("u", T), ("v", T)), (("u", "v", "same"),), n_out=2),
        OpSpec("expmap_transp", (("x", P), ("u", T), ("v", T)), (("u", "v", "same"),), n_out=2),
    )
}
SCALAR_OUTPUT = {"dist", "dist0", "lambda_x", "inner", "norm"}
SHARED_KEYS = ("grad.m",)  # gradient of an input shared by the whole batch


# ----------------------------------------------------------------------------- inputs


@dataclasses.dataclass
class Case:
    """One batch of inputs for every c: arrays stacked on a leading axis of len(C_VALUES)."""

    dim: int
    label: str
    args: dict[str, np.ndarray]  # (n_c, ...) in the dtype under test
    c: np.ndarray  # (n_c, *lead, 1): one curvature per point, so grad.c is compared point by point
    c_values: tuple[float, ...]
    cot: tuple[np.ndarray, ...]  # cotangent per output, (n_c, ..., out_dim)


def _directions(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    v = rng.standard_normal((n, d))
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def _log_uniform(rng: np.random.Generator, lo: float, hi: float, n: int) -> np.ndarray:
    return np.exp(rng.uniform(np.log(lo), np.log(hi), n))


def _vector(kind: str, regime: str, n: int, d: int, c: float, eps: float, rng: np.random.Generator) -> np.ndarray:
    """n vectors of dimension d for one argument, in float64."""
    radius = 1.0 / math.sqrt(c)
    max_norm = (1.0 - eps) / math.sqrt(c + 1e-15)
    if regime == "zero":
        return np.zeros((n, d))
    if regime == "origin":
        norms = _log_uniform(rng, 1e-10, 1e-6, n) * radius
    elif kind == "point" and regime == "boundary":
        norms = max_norm * (1.0 - _log_uniform(rng, 1e-5, 1e-3, n))
    elif kind == "free" and regime == "boundary":
        sign = np.where(np.arange(n) % 2 == 0, -1.0, 1.0)  # half inside, half outside the projection radius
        norms = max_norm * (1.0 + sign * _log_uniform(rng, 1e-5, 1e-3, n))
    elif kind == "free":
        inside = np.arange(n) % 2 == 0
        norms = np.where(inside, rng.uniform(0.02, 0.9, n), rng.uniform(1.0, 3.0, n)) * max_norm
    elif kind == "point":
        norms = rng.uniform(0.02, 0.9, n) * max_norm
    else:  # tangent in bulk, boundary, identical
        norms = _log_uniform(rng, 1e-3, 1.0, n) * radius
    return _directions(rng, n, d) * norms[:, None]


def make_cases(spec: OpSpec, regime: str, dtype: str, dims: Sequence[int], lead_shapes: dict[int, tuple[int, ...]],
               c_values: Sequence[float], seed: int) -> list[Case]:
    """Inputs for one (function, regime, dtype): one Case per dimension (two for matvec's zero regime)."""
    np_dtype = np.dtype(dtype)
    eps = BALL_EPS[dtype]
    cases = []
    for dim in dims:
        lead = lead_shapes[dim]
        n = int(np.prod(lead))
        # matvec's zero regime: x = 0 (every row), and m = 0 with x in the bulk
        variants = ["x=0", "m=0"] if (regime == "zero" and spec.name == "mobius_matvec") else [regime]
        for variant in variants:
            rng = np.random.default_rng([seed, dim, REGIMES.index(regime), len(spec.name), sum(map(ord, spec.name)),
                                         variants.index(variant)])
            per_c: dict[str, list[np.ndarray]] = {a: [] for a in spec.arg_names}
            cots: list[list[np.ndarray]] = [[] for _ in range(spec.n_out)]
            for c in c_values:
                values: dict[str, np.ndarray] = {}
                vec_args = spec.vector_args
                for arg, kind in spec.args:
                    if kind == "scalar":
                        r = rng.uniform(-3.0, 3.0, (n, 1))
                        if regime == "zero":
                            r[np.arange(n) % (len(vec_args) + 1) == len(vec_args)] = 0.0
                        values[arg] = r
                    elif kind == "matrix":
                        out = MATVEC_OUT.get(dim, dim + 1)
                        values[arg] = np.zeros((out, dim)) if variant == "m=0" else rng.standard_normal((out, dim)) / math.sqrt(dim)
                    elif regime == "zero" and variant != "m=0":
                        # row pattern: arg i zero on rows i mod (k+1); every vector arg zero on the last pattern
                        bulk = _vector(kind, "bulk", n, dim, c, eps, rng)
                        pattern = np.arange(n) % (len(vec_args) + 1)
                        zero_rows = (pattern == vec_args.index(arg)) | (pattern == len(vec_args))
                        bulk[zero_rows] = 0.0
                        values[arg] = bulk
                    else:
                        sub_regime = "bulk" if variant == "m=0" else regime
                        values[arg] = _vector(kind, sub_regime, n, dim, c, eps, rng)
                if regime == "identical":
                    for source, target, mode in spec.ties:
                        sign = np.ones((n, 1))
                        if mode == "alternate":
                            sign[1::2] = -1.0
                        values[target] = values[source] * sign
                for arg in spec.arg_names:
                    a = values[arg]
                    if spec.kind(arg) != "matrix":
                        a = a.reshape(*lead, a.shape[-1])
                    per_c[arg].append(a.astype(np_dtype))
                out_dim = 1 if spec.name in SCALAR_OUTPUT else (MATVEC_OUT.get(dim, dim + 1) if spec.name == "mobius_matvec" else dim)
                for i in range(spec.n_out):
                    cots[i].append(rng.standard_normal((*lead, out_dim)).astype(np_dtype))
            cases.append(Case(
                dim=dim,
                label=f"d={dim}" + (f" {variant}" if len(variants) > 1 else ""),
                args={a: np.stack(v) for a, v in per_c.items()},
                c=np.stack([np.full((*lead, 1), c, dtype=np_dtype) for c in c_values]),
                c_values=tuple(float(np_dtype.type(c)) for c in c_values),
                cot=tuple(np.stack(v) for v in cots),
            ))
    return cases


# ----------------------------------------------------------------------------- the two sides


@functools.cache
def _jax_vjp(name: str, jit: bool = True) -> Callable:
    """Values and VJPs of one function, vmapped over the c axis; jitted unless ``jit`` is False
    (eager dispatch: no compile per shape, for the tests' small grid; the CLI always jits)."""
    import jax

    from jax_impl import poincare as jp

    fn = getattr(jp, name)

    def single(args, c, cot):
        out, pullback = jax.vjp(lambda a, cc: fn(*a, c=cc), args, c)
        grad_args, grad_c = pullback(cot)
        return out, grad_args, grad_c

    return jax.jit(jax.vmap(single)) if jit else jax.vmap(single)


def run_jax(spec: OpSpec, case: Case, jit: bool = True) -> dict[str, np.ndarray]:
    import jax.numpy as jnp

    dtype = case.c.dtype
    args = tuple(jnp.asarray(case.args[a], dtype=dtype) for a in spec.arg_names)
    cot = tuple(jnp.asarray(t, dtype=dtype) for t in case.cot)
    vjp = _jax_vjp(spec.name, jit)
    out, grad_args, grad_c = vjp(args, jnp.asarray(case.c, dtype=dtype), cot if spec.n_out > 1 else cot[0])
    outs = out if spec.n_out > 1 else (out,)
    result = {_value_key(spec, i): np.asarray(o) for i, o in enumerate(outs)}
    for a, g in zip(spec.arg_names, grad_args):
        result[f"grad.{a}"] = np.asarray(g)
    result["grad.c"] = np.asarray(grad_c)
    return result


def run_torch(spec: OpSpec, case: Case) -> dict[str, np.ndarray]:
    import torch

    from torch_ref import poincare as tp

    fn = getattr(tp, spec.name)
    collected: dict[str, list[np.ndarray]] = {}
    for i in range(len(case.c)):
        args = [torch.tensor(case.args[a][i], requires_grad=True) for a in spec.arg_names]
        c = torch.tensor(case.c[i], requires_grad=True)  # per point, shape (*lead, 1): geoopt broadcasts k
        out = fn(*args, c=c)
        outs = out if spec.n_out > 1 else (out,)
        grads = torch.autograd.grad(outs, [*args, c], grad_outputs=[torch.tensor(t[i]) for t in case.cot],
                                    allow_unused=True)
        row = {_value_key(spec, j): o.detach().numpy() for j, o in enumerate(outs)}
        for a, arg, g in zip(spec.arg_names, args, grads):
            row[f"grad.{a}"] = (torch.zeros_like(arg) if g is None else g).numpy()
        row["grad.c"] = (torch.zeros_like(c) if grads[-1] is None else grads[-1]).detach().numpy()
        for key, value in row.items():
            collected.setdefault(key, []).append(value)
    return {key: np.stack(values) for key, values in collected.items()}


def _value_key(spec: OpSpec, i: int) -> str:
    return "value" if spec.n_out == 1 else f"value.{i}"


# ----------------------------------------------------------------------------- the oracle (mpmath)

# Norms of small differences come from a Gram-matrix expansion (|a - b|^2 = |a|^2 - 2<a, b> + |b|^2),
# which loses the digits it cancels: at 130 digits a norm of 1e-40 (an FD step) is still good to
# 1e-47. The central difference with step 1e-40 has truncation error ~1e-80 relative where the
# function is smooth, and ~1e-40 at a cone (dist at x = y), far below every floor (1e-30).
ORACLE_DPS = 130
FD_STEP = 1e-40


class _Gram:
    """Exact inner products of named base vectors (per vector space), for the oracle."""

    def __init__(self, vectors: dict[str, list], space: dict[str, str]):
        import mpmath as mp

        self.vectors = vectors
        self.space = space
        names = list(vectors)
        self.G: dict[tuple[str, str], Any] = {}
        for i, a in enumerate(names):
            for b in names[i:]:
                if space[a] == space[b]:
                    self.G[(a, b)] = self.G[(b, a)] = mp.fdot(vectors[a], vectors[b])

    def perturbed(self, base: str, delta_vector: dict[str, Any], delta_sq: Any) -> "_Gram":
        """Copy with ``base += delta`` where ``<delta, w>`` for each w is given and ``|delta|^2`` too."""
        other = object.__new__(_Gram)
        other.vectors, other.space, other.G = self.vectors, self.space, dict(self.G)
        for w, d_w in delta_vector.items():
            if w == base:
                continue
            other.G[(base, w)] = other.G[(w, base)] = self.G[(base, w)] + d_w
        other.G[(base, base)] = self.G[(base, base)] + 2 * delta_vector[base] + delta_sq
        return other


class _Lin:
    """A vector held as a linear combination of named base vectors (exact, in mpmath)."""

    __slots__ = ("gram", "terms")

    def __init__(self, gram: _Gram, terms: dict[str, Any]):
        self.gram = gram
        self.terms = terms

    def __add__(self, other: "_Lin") -> "_Lin":
        terms = dict(self.terms)
        for k, v in other.terms.items():
            terms[k] = terms.get(k, 0) + v
        return _Lin(self.gram, terms)

    def __neg__(self) -> "_Lin":
        return _Lin(self.gram, {k: -v for k, v in self.terms.items()})

    def __sub__(self, other: "_Lin") -> "_Lin":
        return self + (-other)

    def __mul__(self, s: Any) -> "_Lin":
        return _Lin(self.gram, {k: v * s for k, v in self.terms.items()})

    __rmul__ = __mul__

    def __truediv__(self, s: Any) -> "_Lin":
        return _Lin(self.gram, {k: v / s for k, v in self.terms.items()})

    def dot(self, other: "_Lin") -> Any:
        import mpmath as mp

        G = self.gram.G
        return mp.fsum(a * b * G[(i, j)] for i, a in self.terms.items() for j, b in other.terms.items())

    def materialize(self) -> list:
        import mpmath as mp

        vecs = self.gram.vectors
        items = list(self.terms.items())
        n = len(vecs[items[0][0]])
        return [mp.fsum(coef * vecs[k][i] for k, coef in items) for i in range(n)]


def _mp_formulas(eps: float) -> dict[str, Callable]:
    """The contract's formulas in exact arithmetic with geoopt's clamps and projection margin ``eps``."""
    import mpmath as mp

    min_norm = mp.mpf("1e-15")
    artanh_limit = 1 - mp.mpf("1e-7")

    def sqrt_c(c):
        return mp.sqrt(abs(c) + min_norm)

    def clip(t, lo, hi):
        return min(max(t, lo), hi)

    def tan_c(t, c):
        s = sqrt_c(c)
        return mp.tanh(clip(t * s, -15, 15)) / s

    def artan_c(t, c):
        s = sqrt_c(c)
        return mp.atanh(clip(t * s, -artanh_limit, artanh_limit)) / s

    def sq(v):
        return max(v.dot(v), 0)  # a Gram-matrix expansion of |v|^2 may round to -1e-80 at v = 0

    def clamped_norm(v):
        return max(mp.sqrt(sq(v)), min_norm)

    def plain_norm(v):
        return mp.sqrt(sq(v))

    def lam(x, c):
        return 2 / max(1 - c * sq(x), min_norm)

    def madd(x, y, c):
        x2, y2, xy = sq(x), sq(y), x.dot(y)
        num = x * (1 + 2 * c * xy + c * y2) + y * (1 - c * x2)
        return num / max(1 + 2 * c * xy + c * c * x2 * y2, min_norm)

    def proj(x, c):
        n = clamped_norm(x)
        max_norm = (1 - mp.mpf(eps)) / sqrt_c(c)
        return x * (max_norm / n) if n > max_norm else x

    def expmap_raw(x, u, c):
        un = clamped_norm(u)
        return madd(x, u * (tan_c(lam(x, c) / 2 * un, c) / un), c)

    def gyr(a, b, u, c):
        k = -c
        k2 = k * k
        a2, b2, ab, au, bu = sq(a), sq(b), a.dot(b), a.dot(u), b.dot(u)
        coef_a = -k2 * au * b2 - k * bu + 2 * k2 * ab * bu
        coef_b = -k2 * bu * a2 + k * au
        d = 1 - 2 * k * ab + k2 * a2 * b2
        return u + (a * coef_a + b * coef_b) * (2 / max(d, min_norm))

    def transp(x, y, v, c):
        return gyr(y, -x, v, c) * (lam(x, c) / lam(y, c))

    def smul(r, x, c):
        n = clamped_norm(x)
        return x * (tan_c(r * artan_c(n, c), c) / n)

    def matvec(x, mx, c):
        xn, mxn = clamped_norm(x), clamped_norm(mx)
        return mx * (tan_c(mxn / xn * artan_c(xn, c), c) / mxn)

    def logmap(x, y, c):
        sub = madd(-x, y, c)
        sn = clamped_norm(sub)
        return sub * (2 * artan_c(sn, c) / (lam(x, c) * sn))

    return {
        "mobius_add": lambda x, y, c: proj(madd(x, y, c), c),
        "mobius_scalar_mul": lambda r, x, c: proj(smul(r, x, c), c),
        "mobius_matvec": lambda x, mx, c: proj(matvec(x, mx, c), c),
        "expmap": lambda x, u, c: proj(expmap_raw(x, u, c), c),
        "expmap0": lambda u, c: proj(u * (tan_c(clamped_norm(u), c) / clamped_norm(u)), c),
        "logmap": logmap,
        "logmap0": lambda y, c: y * (artan_c(clamped_norm(y), c) / clamped_norm(y)),
        "dist": lambda x, y, c: 2 * artan_c(plain_norm(madd(-x, y, c)), c),
        "dist0": lambda x, c: 2 * artan_c(plain_norm(x), c),
        "transp": transp,
        "transp0": lambda y, v, c: v * max(1 - c * sq(y), min_norm),
        "gyration": gyr,
        "lambda_x": lambda x, c: lam(x, c),
        "inner": lambda x, u, v, c: lam(x, c) ** 2 * u.dot(v),
        "norm": lambda x, u, c: lam(x, c) * plain_norm(u),
        "egrad2rgrad": lambda x, g, c: g * (1 / lam(x, c) ** 2),
        "project": proj,
        "retr": lambda x, u, c: proj(x + u, c),
        "retr_transp": lambda x, u, v, c: (lambda y: (y, transp(x, y, v, c)))(proj(x + u, c)),
        "expmap_transp": lambda x, u, v, c: (lambda y: (y, transp(x, y, v, c)))(proj(expmap_raw(x, u, c), c)),
    }


class _OraclePoint:
    """The oracle at one batch point of one case and one c: value, and <cot, f> for finite differences."""

    def __init__(self, spec: OpSpec, case: Case, ci: int, index: tuple[int, ...], formulas: dict[str, Callable]):
        import mpmath as mp

        self.spec, self.formula = spec, formulas[spec.name]
        self.c = mp.mpf(float(case.c[ci][index][0]))
        self.scalars: dict[str, Any] = {}
        vectors: dict[str, list] = {}
        space: dict[str, str] = {}
        for arg in spec.arg_names:
            kind = spec.kind(arg)
            if kind == "scalar":
                self.scalars[arg] = mp.mpf(float(case.args[arg][ci][index][0]))
            elif kind != "matrix":
                vectors[arg] = [mp.mpf(float(t)) for t in case.args[arg][ci][index]]
                space[arg] = "in"
        if spec.name == "mobius_matvec":
            self.m = case.args["m"][ci].astype(np.float64)
            vectors["mx"] = [mp.fdot([mp.mpf(float(t)) for t in row], vectors["x"]) for row in self.m]
            space["mx"] = "out"
        self.cot_names = []
        for i, cot in enumerate(case.cot):
            name = f"cot{i}"
            vectors[name] = [mp.mpf(float(t)) for t in cot[ci][index]]
            space[name] = "out" if spec.name == "mobius_matvec" else ("scalar" if spec.name in SCALAR_OUTPUT else "in")
            self.cot_names.append(name)
        self.gram = _Gram(vectors, space)

    def _call(self, gram: _Gram, c: Any, scalars: dict[str, Any]):
        args = []
        for arg in self.spec.arg_names:
            kind = self.spec.kind(arg)
            if kind == "scalar":
                args.append(scalars[arg])
            elif kind == "matrix":
                continue
            else:
                args.append(_Lin(gram, {arg: 1}))
        if self.spec.name == "mobius_matvec":
            args.append(_Lin(gram, {"mx": 1}))
        out = self.formula(*args, c)
        return out if isinstance(out, tuple) else (out,)

    def value(self) -> list[np.ndarray]:
        outs = self._call(self.gram, self.c, self.scalars)
        return [np.array([float(o)]) if not isinstance(o, _Lin) else np.array([float(t) for t in o.materialize()])
                for o in outs]

    def _phi(self, gram: _Gram, c: Any, scalars: dict[str, Any]) -> Any:
        """<cotangent, f(args)>: what a VJP differentiates."""
        total = 0
        for out, cot in zip(self._call(gram, c, scalars), self.cot_names):
            if isinstance(out, _Lin):
                total += out.dot(_Lin(gram, {cot: 1}))
            else:
                total += out * gram.vectors[cot][0]
        return total

    def _fd(self, evaluate: Callable[[Any], Any], theta: Any) -> float:
        h = FD_STEP * max(1, abs(theta))
        return float((evaluate(h) - evaluate(-h)) / (2 * h))

    def grad_c(self) -> float:
        return self._fd(lambda h: self._phi(self.gram, self.c + h, self.scalars), self.c)

    def grad_scalar(self, arg: str) -> float:
        return self._fd(lambda h: self._phi(self.gram, self.c, {**self.scalars, arg: self.scalars[arg] + h}),
                        self.scalars[arg])

    def grad_vector(self, arg: str, j: int) -> float:
        """d<cot, f>/d arg[j]: perturb one coordinate; the Gram changes by O(#bases) terms."""
        import mpmath as mp

        vecs = self.gram.vectors

        def evaluate(h):
            delta = {w: h * vecs[w][j] for w in vecs if self.gram.space[w] == self.gram.space[arg]}
            gram = self.gram.perturbed(arg, delta, h * h)
            if self.spec.name == "mobius_matvec" and arg == "x":
                # mx moves by h * m[:, j]
                col = [mp.mpf(float(t)) for t in self.m[:, j]]
                d_mx = {w: h * mp.fdot(col, vecs[w]) for w in vecs if self.gram.space[w] == "out"}
                gram = gram.perturbed("mx", d_mx, h * h * mp.fdot(col, col))
            return self._phi(gram, self.c, self.scalars)

        return self._fd(evaluate, vecs[arg][j])

    def grad_matrix_entry(self, i: int, j: int) -> float:
        """d<cot, f>/d m[i, j]: mx[i] moves by h * x[j]."""
        vecs = self.gram.vectors
        xj = vecs["x"][j]

        def evaluate(h):
            delta = {w: h * xj * vecs[w][i] for w in vecs if self.gram.space[w] == "out"}
            return self._phi(self.gram.perturbed("mx", delta, (h * xj) ** 2), self.c, self.scalars)

        return self._fd(evaluate, float(self.m[i, j]))


def _rel_errors(got: np.ndarray, ref: np.ndarray, tol: Tolerance) -> np.ndarray:
    """Elementwise version of `parity.compare.compare`'s measure (to locate the worst entries); inf where non-finite."""
    got = got.astype(np.float64)
    ref = ref.astype(np.float64)
    rel = np.abs(got - ref) / np.maximum(np.abs(ref), tol.atol / tol.rtol)
    return np.where(np.isfinite(got) & np.isfinite(ref), rel, np.inf)


@dataclasses.dataclass
class _Sides:
    case: Case
    jax: dict[str, np.ndarray]
    ref: dict[str, np.ndarray]


def _oracle(spec: OpSpec, dtype: str, sides: list[_Sides], tol: Tolerance, tols: dict[tuple[str, int, int], Tolerance],
            mags: dict[tuple[str, int, int], tuple[float, float]], rng: np.random.Generator,
            max_points: int) -> tuple[Comparison, Comparison, int, str, str]:
    """Oracle errors of (jax, geoopt) on the worst-disagreeing entries and on random ones.

    ``tols[key, case, c]`` (the parity floors) only locate the worst disagreements. The oracle
    comparisons take as magnitude the larger of the oracle's own (on its sample) and the smaller of
    the two sides' (on the whole array): neither side can loosen its own judgement.
    """
    import mpmath as mp

    formulas = _mp_formulas(BALL_EPS[dtype])
    keys = list(sides[0].jax)
    # (case, c) combinations: where each output disagrees most, plus one random small one
    combos: list[tuple[int, int]] = []
    worst_at: dict[tuple[int, int], dict[str, tuple]] = {}
    for key in keys:
        best = (-1.0, None)
        for si, s in enumerate(sides):
            for ci in range(len(s.case.c_values)):
                rel = _rel_errors(s.jax[key][ci], s.ref[key][ci], tols[key, si, ci])
                if rel.size and np.nanmax(rel) > best[0]:
                    best = (float(np.nanmax(rel)), (si, ci, np.unravel_index(int(np.argmax(rel)), rel.shape)))
        if best[1] is not None:
            si, ci, where = best[1]
            worst_at.setdefault((si, ci), {})[key] = where
            if (si, ci) not in combos:
                combos.append((si, ci))
    small = [si for si, s in enumerate(sides) if s.case.dim <= 16] or list(range(len(sides)))
    random_combo = (int(rng.choice(small)), int(rng.integers(len(sides[0].case.c_values))))
    if random_combo not in combos:
        combos.append(random_combo)

    entries: dict[tuple[str, int, int], list[tuple[float, float, float]]] = {}
    n_points = 0

    def record(key: str, si: int, ci: int, index: tuple, value: float) -> None:
        s = sides[si]
        group = entries.setdefault((key, si, ci), [])
        group.append((float(s.jax[key][ci][index]), float(s.ref[key][ci][index]), value))

    with mp.workdps(ORACLE_DPS):
        for si, ci in combos:
            s = sides[si]
            case = s.case
            lead = case.args[spec.vector_args[0]].shape[1:-1]
            all_points = list(np.ndindex(*lead))
            worst = worst_at.get((si, ci), {})
            chosen = []
            for key, where in worst.items():
                if key not in SHARED_KEYS:  # per-point outputs: the index starts with the batch point
                    point = tuple(int(t) for t in where[:len(lead)])
                    if point not in chosen:
                        chosen.append(point)
            for point in rng.permutation(len(all_points))[:max_points]:
                if len(chosen) >= max_points:
                    break
                if all_points[point] not in chosen:
                    chosen.append(all_points[point])
            oracles = {p: _OraclePoint(spec, case, ci, p, formulas) for p in chosen}
            for p, orc in oracles.items():
                n_points += 1
                for i, value in enumerate(orc.value()):
                    key = _value_key(spec, i)
                    for j, v in enumerate(value):
                        record(key, si, ci, (*p, j), v)
                record("grad.c", si, ci, (*p, 0), orc.grad_c())
                for arg in spec.arg_names:
                    kind = spec.kind(arg)
                    key = f"grad.{arg}"
                    if kind == "scalar":
                        record(key, si, ci, (*p, 0), orc.grad_scalar(arg))
                    elif kind != "matrix":
                        d = case.dim
                        coords = set(range(d)) if d <= 16 else set(int(t) for t in rng.choice(d, 3, replace=False))
                        if key in worst and tuple(int(t) for t in worst[key][:len(lead)]) == p:
                            coords.add(int(worst[key][-1]))
                        for j in sorted(coords):
                            record(key, si, ci, (*p, j), orc.grad_vector(arg, j))
            # the matrix is shared by the batch: its gradient sums over every point
            if spec.name == "mobius_matvec":
                batch = oracles | {p: _OraclePoint(spec, case, ci, p, formulas) for p in all_points if p not in oracles}
                m = case.args["m"][ci]
                m_entries = {(int(rng.integers(m.shape[0])), int(rng.integers(m.shape[1]))) for _ in range(3)}
                if "grad.m" in worst:
                    m_entries.add(tuple(int(t) for t in worst["grad.m"]))
                for i, j in sorted(m_entries):
                    total = mp.fsum(mp.mpf(o.grad_matrix_entry(i, j)) for o in batch.values())
                    record("grad.m", si, ci, (i, j), float(total))
    on_jax, on_ref = [], []
    worst_jax, worst_ref = (-1.0, ""), (-1.0, "")
    for (key, si, ci), values in entries.items():
        got_jax, got_ref, truth = np.asarray(values).T
        if key == "grad.c":
            value_truth = [v[2] for k, vs in entries.items() if k[0].startswith("value") and k[1:] == (si, ci) for v in vs]
            magnitude = _largest(np.asarray(value_truth)) * _largest(*(t[ci] for t in sides[si].case.cot)) / sides[si].case.c_values[ci]
        else:
            magnitude = _largest(truth)
        group_tol = array_tolerance(tol, dtype, max(magnitude, min(mags[key, si, ci])))
        on_jax.append(compare(got_jax, truth, group_tol))
        on_ref.append(compare(got_ref, truth, group_tol))
        where = f"{key} c={sides[si].case.c_values[ci]:g} {sides[si].case.label}"
        if on_jax[-1].max_rel_err > worst_jax[0]:
            worst_jax = (on_jax[-1].max_rel_err, where)
        if on_ref[-1].max_rel_err > worst_ref[0]:
            worst_ref = (on_ref[-1].max_rel_err, where)
    return merge(on_jax), merge(on_ref), n_points, worst_jax[1], worst_ref[1]


# ----------------------------------------------------------------------------- rows


def check_row(spec: OpSpec, regime: str, dtype: str, *, dims: Sequence[int] = DIMS,
              lead_shapes: dict[int, tuple[int, ...]] = LEAD_SHAPES, c_values: Sequence[float] = C_VALUES,
              seed: int = 0, oracle: str = "auto", oracle_points: int = 4, jit: bool = True) -> ParityRecord:
    """One (function, regime, dtype) row: parity of values and VJPs, and the oracle where it is needed."""
    tol = tolerance_for(dtype, regime, spec.name)
    cases = make_cases(spec, regime, dtype, dims, lead_shapes, c_values, seed)
    sides = [_Sides(case, run_jax(spec, case, jit), run_torch(spec, case)) for case in cases]
    comparisons = []
    tols: dict[tuple[str, int, int], Tolerance] = {}
    mags: dict[tuple[str, int, int], tuple[float, float]] = {}
    worst = (-1.0, "")
    # magnitudes per (output, c) over every dimension of the row: an array whose true values are
    # all 0 (e.g. d/dr where every point gets projected) takes its scale from its siblings
    row_mags: dict[tuple[str, int], tuple[float, float]] = {}
    for s in sides:
        for ci, c in enumerate(s.case.c_values):
            for key, (jax_mag, ref_mag) in _magnitudes(s.jax, s.ref, s.case.cot, c, ci).items():
                old_jax, old_ref = row_mags.get((key, ci), (0.0, 0.0))
                row_mags[key, ci] = (max(old_jax, jax_mag), max(old_ref, ref_mag))
    for si, s in enumerate(sides):
        for ci, c in enumerate(s.case.c_values):
            for key in s.jax:
                mags[key, si, ci] = row_mags[key, ci]
                tols[key, si, ci] = array_tolerance(tol, dtype, max(row_mags[key, ci]))
            for key in s.jax:
                cmp = compare(s.jax[key][ci], s.ref[key][ci], tols[key, si, ci])
                comparisons.append(cmp)
                badness = math.inf if (cmp.nonfinite_jax or cmp.nonfinite_ref) else cmp.max_rel_err
                if badness > worst[0]:
                    worst = (badness, f"{key} c={float(c):g} {s.case.label}")
    parity = merge(comparisons)
    parity_ok = parity.passes(tol)
    extra: dict[str, Any] = {
        "function": spec.name, "regime": regime, "worst": worst[1], "tolerance_reason": tol.reason,
        "atol_is": ("min(atol, atol x output magnitude)" if dtype == "float64" else "atol x output magnitude")
                   + " (parity.suites.ops: 'The absolute floor')",
        "oracle": False, "oracle_points": 0, "oracle_rel_err_jax": None, "oracle_rel_err_ref": None,
        "closer": None, "reference_wrong": False,
    }
    note = ""
    passed = parity_ok
    if oracle == "all" or (oracle == "auto" and (dtype == "float32" or not parity_ok)):
        rng = np.random.default_rng([seed, 7, REGIMES.index(regime), sum(map(ord, spec.name))])
        o_jax, o_ref, n_points, o_worst_jax, o_worst_ref = _oracle(spec, dtype, sides, tol, tols, mags, rng,
                                                                   oracle_points)
        extra.update(oracle=True, oracle_points=n_points, oracle_rel_err_jax=o_jax.max_rel_err,
                     oracle_rel_err_ref=o_ref.max_rel_err, oracle_worst_jax=o_worst_jax,
                     oracle_worst_ref=o_worst_ref)
        if o_jax.max_rel_err < o_ref.max_rel_err / 2:
            extra["closer"] = "jax"
        elif o_ref.max_rel_err < o_jax.max_rel_err / 2:
            extra["closer"] = "geoopt"
        else:
            extra["closer"] = "tie"
        jax_right = parity.nonfinite_jax == 0 and o_jax.passes(tol)
        if not parity_ok:
            reference_wrong = parity.nonfinite_ref > 0 or not o_ref.passes(tol)
            extra["reference_wrong"] = bool(reference_wrong)
            passed = bool(reference_wrong and jax_right)
            if passed:
                note = (f"geoopt deviates from the exact oracle (rel {o_ref.max_rel_err:.2g}); "
                        f"JAX is within tolerance of it (rel {o_jax.max_rel_err:.2g})")
            elif reference_wrong:
                note = f"geoopt wrong, but JAX also off the oracle (rel {o_jax.max_rel_err:.2g})"
            else:
                note = "JAX disagrees with geoopt and geoopt agrees with the oracle"
        elif not jax_right:
            # both sides agree, and both are off the truth: parity holds, the port is still wrong
            passed = False
            note = f"JAX agrees with geoopt, but both are off the exact oracle (JAX rel {o_jax.max_rel_err:.2g})"
    return ParityRecord(
        check=f"ops.{spec.name}", dtype=dtype, max_abs_err=parity.max_abs_err, max_rel_err=parity.max_rel_err,
        tolerance=tol.rtol, passed=bool(passed), atol=tol.atol, nonfinite_jax=parity.nonfinite_jax,
        nonfinite_ref=parity.nonfinite_ref, note=note, extra=extra,
    )


def run(*, dtypes: Sequence[str] = ("float64", "float32"), functions: Sequence[str] | None = None,
        regimes: Sequence[str] | None = None, quick: bool = False, seed: int = 0, oracle: str = "auto",
        progress: bool = False) -> list[ParityRecord]:
    """Every requested row; `quick` uses dims {2, 16} and small batches (for tests)."""
    enable_float64()  # the harness compares float64; float32 rows stay float32
    names = list(functions or SPECS)
    unknown = [n for n in names if n not in SPECS]
    if unknown:
        raise ValueError(f"unknown function(s): {', '.join(unknown)}; known: {', '.join(SPECS)}")
    todo = [(SPECS[n], r, d) for d in dtypes for n in names for r in SPECS[n].regimes() if regimes is None or r in regimes]
    kwargs: dict[str, Any] = {"seed": seed, "oracle": oracle}
    if quick:
        kwargs.update(dims=QUICK_DIMS, lead_shapes=QUICK_LEAD_SHAPES, oracle_points=2)
    records = []
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(todo), desc="ops parity", unit="row", file=sys.stderr)
    for spec, regime, dtype in todo:
        if bar is not None:
            bar.set_postfix_str(f"{spec.name}/{regime}/{dtype}")
        records.append(check_row(spec, regime, dtype, **kwargs))
        if bar is not None:
            bar.update()
    if bar is not None:
        bar.close()
    return records
