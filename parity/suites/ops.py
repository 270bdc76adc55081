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
import math
import sys
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from parity.backend import enable_float64
from parity.checks import function
from parity.checks.inputs import REGIMES, vectors
from parity.compare import ParityRecord, Tolerance
from parity.config import PROJECTION_EPS
from parity.oracle import Sides, exact_oracle
from parity.stats import largest_finite

C_VALUES = (1e-3, 0.1, 1.0, 2.0, 10.0)
DIMS = (2, 16, 128, 3706)
# leading batch axes per dimension (points per case = product)
LEAD_SHAPES = {2: (8, 8), 16: (4, 8), 128: (16,), 3706: (2, 2)}
# mobius_matvec: m has shape (MATVEC_OUT[d], d)
MATVEC_OUT = {2: 3, 16: 16, 128: 64, 3706: 16}
QUICK_DIMS = (2, 16)
QUICK_LEAD_SHAPES = {2: (3, 4), 16: (5,)}

# ----------------------------------------------------------------------------- tolerances
#
# float64 numbers are the project's acceptance criteria. float32 numbers are measured: the worst
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
            per_side = [largest_finite(*(side[k][ci] for k in values)) * largest_finite(*(t[ci] for t in cot)) / c_value
                        for side in (jax_out, ref_out)]
        else:
            per_side = [largest_finite(side[key][ci]) for side in (jax_out, ref_out)]
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

    @property
    def scalar_output(self) -> bool:
        """Whether the function returns a scalar per point (kept as a trailing axis of 1)."""
        return self.name in SCALAR_OUTPUT

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


def make_cases(spec: OpSpec, regime: str, dtype: str, dims: Sequence[int], lead_shapes: dict[int, tuple[int, ...]],
               c_values: Sequence[float], seed: int) -> list[Case]:
    """Inputs for one (function, regime, dtype): one Case per dimension (two for matvec's zero regime)."""
    np_dtype = np.dtype(dtype)
    eps = PROJECTION_EPS[dtype]
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
                        values[arg] = (np.zeros((out, dim)) if variant == "m=0"
                                       else rng.standard_normal((out, dim)) / math.sqrt(dim))
                    elif regime == "zero" and variant != "m=0":
                        # row pattern: arg i zero on rows i mod (k+1); every vector arg zero on the last pattern
                        bulk = vectors(kind, "bulk", n, dim, c, eps, rng)
                        pattern = np.arange(n) % (len(vec_args) + 1)
                        zero_rows = (pattern == vec_args.index(arg)) | (pattern == len(vec_args))
                        bulk[zero_rows] = 0.0
                        values[arg] = bulk
                    else:
                        sub_regime = "bulk" if variant == "m=0" else regime
                        values[arg] = vectors(kind, sub_regime, n, dim, c, eps, rng)
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
                out_dim = (1 if spec.name in SCALAR_OUTPUT
                           else MATVEC_OUT.get(dim, dim + 1) if spec.name == "mobius_matvec" else dim)
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


# ----------------------------------------------------------------------------- rows


def _engine_case(case: Case) -> function.Case:
    """A suite case as `check_function` takes it: the curvature is the keyword argument c, one per point."""
    return function.Case(args={**case.args, "c": case.c}, label=case.label, cotangents=case.cot, keywords=("c",),
                         group_labels=tuple(f"c={c:g}" for c in case.c_values), info={"case": case})


def _magnitude_floors(row: function.Row) -> Callable[[int, str, int], Tolerance]:
    """Each array's rule: the row's rtol, the absolute floor scaled to the output's natural magnitude at
    that c over every dimension of the row (see "The absolute floor"); the magnitudes are kept in
    row.info["mags"] for the oracle."""
    cases = [case.info["case"] for case in row.cases]
    # magnitudes per (output, c) over every dimension of the row: an array whose true values are all 0
    # (e.g. d/dr where every point gets projected) takes its scale from its siblings
    row_mags: dict[tuple[str, int], tuple[float, float]] = {}
    for case, jax_out, ref_out in zip(cases, row.jax, row.ref):
        for ci, c in enumerate(case.c_values):
            for key, (jax_mag, ref_mag) in _magnitudes(jax_out, ref_out, case.cot, c, ci).items():
                old_jax, old_ref = row_mags.get((key, ci), (0.0, 0.0))
                row_mags[key, ci] = (max(old_jax, jax_mag), max(old_ref, ref_mag))
    tols: dict[tuple[str, int, int], Tolerance] = {}
    mags: dict[tuple[str, int, int], tuple[float, float]] = {}
    for si, (case, jax_out) in enumerate(zip(cases, row.jax)):
        for ci in range(len(case.c_values)):
            for key in jax_out:
                mags[key, si, ci] = row_mags[key, ci]
                tols[key, si, ci] = array_tolerance(row.base, row.dtype, max(row_mags[key, ci]))
    row.info.update(tols=tols, mags=mags)
    return lambda si, key, ci: tols[key, si, ci]


def _exact_oracle(spec: OpSpec, seed: int, oracle_points: int) -> Callable[[function.Row], function.OracleResult]:
    """The mpmath oracle (see the module docstring) as `check_function`'s third arm."""

    def judge(row: function.Row) -> function.OracleResult:
        rng = np.random.default_rng([seed, 7, REGIMES.index(row.regime), sum(map(ord, spec.name))])
        sides = [Sides(case.info["case"], jax_out, ref_out)
                 for case, jax_out, ref_out in zip(row.cases, row.jax, row.ref)]
        o_jax, o_ref, n_points, worst_jax, worst_ref = exact_oracle(
            spec, row.dtype, sides, row.info["tols"], row.info["mags"],
            lambda magnitude: array_tolerance(row.base, row.dtype, magnitude), rng, oracle_points)
        return function.OracleResult(o_jax, o_ref, n_points, worst_jax, worst_ref)

    judge.label = "the exact oracle"  # how the rows' notes name it
    return judge


def check_row(spec: OpSpec, regime: str, dtype: str, *, dims: Sequence[int] = DIMS,
              lead_shapes: dict[int, tuple[int, ...]] = LEAD_SHAPES, c_values: Sequence[float] = C_VALUES,
              seed: int = 0, oracle: str = "auto", oracle_points: int = 4, jit: bool = True) -> ParityRecord:
    """One (function, regime, dtype) row: `check_function`'s row with this suite's inputs, magnitude-scaled
    floors and exact oracle."""
    from jax_impl import poincare as jp
    from torch_ref import poincare as tp

    cases = [_engine_case(case) for case in make_cases(spec, regime, dtype, dims, lead_shapes, c_values, seed)]
    record = function.check_row(
        getattr(jp, spec.name), getattr(tp, spec.name), cases, name=f"ops.{spec.name}", regime=regime, dtype=dtype,
        tolerance=tolerance_for(dtype, regime, spec.name), floors=_magnitude_floors,
        oracle=_exact_oracle(spec, seed, oracle_points), oracle_mode={"auto": "auto", "all": "all"}[oracle],
        reference="geoopt", jit=jit)
    record.extra = {"function": spec.name, **record.extra,
                    "atol_is": ("min(atol, atol x output magnitude)" if dtype == "float64"
                                else "atol x output magnitude") + " (parity.suites.ops: 'The absolute floor')"}
    return record


def run(*, dtypes: Sequence[str] = ("float64", "float32"), functions: Sequence[str] | None = None,
        regimes: Sequence[str] | None = None, quick: bool = False, seed: int = 0, oracle: str = "auto",
        progress: bool = False) -> list[ParityRecord]:
    """Every requested row; `quick` uses dims {2, 16} and small batches (for tests)."""
    enable_float64()  # the harness compares float64; float32 rows stay float32
    names = list(functions or SPECS)
    unknown = [n for n in names if n not in SPECS]
    if unknown:
        raise ValueError(f"unknown function(s): {', '.join(unknown)}; known: {', '.join(SPECS)}")
    todo = [(SPECS[n], r, d) for d in dtypes for n in names for r in SPECS[n].regimes()
            if regimes is None or r in regimes]
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
