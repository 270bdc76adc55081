"""`check_function`: a JAX function against its PyTorch reference, values and vector-Jacobian products,
per input regime and dtype.

    records = check_function(jax_fn, torch_fn, args={"x": inputs.ball((8, 16)), "y": inputs.ball((8, 16)),
                                                     "c": inputs.constant(1.0)})
    assert_parity(records)

Both sides get the same inputs (drawn in float64, rounded to the dtype under check) and the same random
cotangent; the check compares every output and the VJP with respect to every differentiable argument.
One record per (regime, dtype), the worst over everything the regime drew. The measure is
`parity.compare.compare`.

Three hooks make it fit a port's numerics (the project's own `poincare-parity ops` suite uses all three):

    tolerances   a Tolerance, {dtype: Tolerance}, {(dtype, regime): Tolerance} or a callable
                 (dtype, regime) -> Tolerance: the row's rule (default: float64 relative 1e-9 with an absolute
                 floor of 1e-12, float32 relative 1e-4 with 1e-5)
    floors       a callable (row) -> ((case index, output key, group index) -> Tolerance): each compared array's
                 own rule (e.g. an absolute floor scaled to the output's magnitude); default: the row's rule
    oracle       a third arm that knows the truth (see `Float64Oracle`, or the exact mpmath oracle of
                 `parity.oracle`): called with the row on float32 rows and wherever the two sides disagree
                 (`oracle_mode="auto"`), or on every row ("all"); it returns an `OracleResult`, or None where it
                 cannot judge (a float64 oracle on a float64 row). A row whose sides disagree passes only if
                 the oracle shows the reference is the side that is wrong and the port is within tolerance of
                 the truth; a port off the truth fails even when the reference agrees with it. The oracle's
                 `label` attribute (default "the oracle") names it in the row's note.

`cases` replaces `args` for full control: a callable (regime, dtype) -> list of `Case` (arrays with a leading
group axis: each slice is one call; cotangents of your own; labels for the table).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from parity import backend
from parity.checks.inputs import REGIMES, Arg, default_regimes, draw_arguments
from parity.compare import Comparison, ParityRecord, Records, Tolerance, compare, merge

DEFAULT_TOLERANCES = {
    "float64": Tolerance(1e-9, 1e-12, "default: float64 relative 1e-9, absolute 1e-12 near zero"),
    "float32": Tolerance(1e-4, 1e-5, "default: float32 relative 1e-4, absolute 1e-5 near zero"),
}


@dataclasses.dataclass
class Case:
    """One batch of inputs: `args` maps each argument to an array whose leading axis is the group axis
    (each slice is one call of the function); `cotangents` (one array per output, stacked the same way) or
    None to draw them; `group_labels` name the slices in the table (e.g. "c=0.1"); `info` is free for hooks."""

    args: dict[str, np.ndarray]
    label: str = ""
    cotangents: tuple[np.ndarray, ...] | None = None
    keywords: tuple[str, ...] = ()
    differentiable: tuple[str, ...] | None = None  # None: every floating-point argument
    group_labels: tuple[str, ...] | None = None
    info: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def groups(self) -> int:
        return len(next(iter(self.args.values())))

    def group_label(self, g: int) -> str:
        return self.group_labels[g] if self.group_labels else (f"#{g}" if self.groups > 1 else "")


@dataclasses.dataclass
class Row:
    """Everything one (regime, dtype) row computed, handed to the `floors` and `oracle` hooks: the cases,
    each side's results per case ({"value" | "value.i" | "grad.<arg>": array with the group axis}), the
    row's rule (`base`), the per-array rule once `floors` has set it, and `info` for the hooks' own notes."""

    name: str
    regime: str
    dtype: str
    base: Tolerance
    cases: list[Case]
    jax: list[dict[str, np.ndarray]]
    ref: list[dict[str, np.ndarray]]
    tolerance: Callable[[int, str, int], Tolerance] | None = None
    info: dict[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class OracleResult:
    """Each side's distance from the truth on the points the oracle evaluated, in the row's measure."""

    jax: Comparison
    ref: Comparison
    points: int
    worst_jax: str = ""
    worst_ref: str = ""


def resolve_tolerance(tolerances: Any, dtype: str, regime: str) -> Tolerance:
    """The row's rule from any of the accepted forms (see the module docstring)."""
    if tolerances is None:
        return DEFAULT_TOLERANCES[dtype]
    if isinstance(tolerances, Tolerance):
        return tolerances
    if callable(tolerances):
        return tolerances(dtype, regime)
    if (dtype, regime) in tolerances:
        return tolerances[(dtype, regime)]
    if dtype in tolerances:
        return tolerances[dtype]
    raise KeyError(f"no tolerance for dtype {dtype!r}, regime {regime!r} in {tolerances!r}")


def value_key(n_out: int, i: int) -> str:
    """The key of output i of a function with n_out outputs: "value", or "value.0", "value.1", ..."""
    return "value" if n_out == 1 else f"value.{i}"


def _run(framework: str, fn: Callable, case: Case, differentiable: tuple[str, ...], jit: bool) -> dict[str, np.ndarray]:
    outputs, grads = backend.get(framework).vjp(fn, case.args, keywords=case.keywords, differentiable=differentiable,
                                                cotangents=case.cotangents, jit=jit)
    result = {value_key(len(outputs), i): o for i, o in enumerate(outputs)}
    result.update({f"grad.{name}": g for name, g in grads.items()})
    return result


def _differentiable(case: Case) -> tuple[str, ...]:
    if case.differentiable is not None:
        return tuple(case.differentiable)
    return tuple(k for k, v in case.args.items() if np.issubdtype(np.asarray(v).dtype, np.floating))


def _draw_cotangents(framework: str, fn: Callable, case: Case, rng: np.random.Generator, jit: bool) -> tuple:
    """Cotangents shaped like the outputs (one forward pass of the reference to learn them)."""
    outputs, _ = backend.get(framework).vjp(fn, case.args, keywords=case.keywords, jit=jit)
    return tuple(rng.standard_normal(o.shape).astype(o.dtype) for o in outputs)


def simple_cases(args: Mapping[str, Arg], seed: int) -> Callable[[str, str], list[Case]]:
    """The `cases` of the simple form: one call (group of 1) per regime, arguments drawn by their `Arg`."""

    def make(regime: str, dtype: str) -> list[Case]:
        rng = np.random.default_rng([seed, REGIMES.index(regime) if regime in REGIMES else 99,
                                     64 if dtype == "float64" else 32])
        values = draw_arguments(dict(args), regime, dtype, rng)
        return [Case({k: v[None] for k, v in values.items()}, label=f"{regime} regime",
                     keywords=tuple(k for k, a in args.items() if a.keyword),
                     differentiable=tuple(k for k, a in args.items() if a.differentiable))]

    return make


def check_function(jax_fn: Callable, torch_fn: Callable, *, args: Mapping[str, Arg] | None = None,
                   cases: Callable[[str, str], list[Case]] | None = None, regimes: Sequence[str] | None = None,
                   dtypes: Sequence[str] = ("float64", "float32"), tolerances: Any = None,
                   floors: Callable[[Row], Callable[[int, str, int], Tolerance]] | None = None,
                   oracle: Callable[[Row], OracleResult | None] | None = None, oracle_mode: str = "auto",
                   name: str | None = None, seed: int = 0, jit: bool = True) -> Records:
    """Values and VJPs of `jax_fn` against `torch_fn` per regime and dtype; -> one record per row.

    Args:
      jax_fn, torch_fn: the port and the reference; called as fn(*positional, **keywords) with the
        arguments of `args` (or of each `Case`); return one array or a tuple of arrays.
      args: name -> `parity.checks.inputs.Arg`, in call order (simple form).
      cases: (regime, dtype) -> list of `Case` (full control; replaces `args`).
      regimes: which regimes (default: every regime for functions of ball points, else "bulk").
      dtypes: "float64" (the proof) and / or "float32" (what users run). float64 switches JAX's 64-bit
        mode on for this process.
      tolerances, floors, oracle, oracle_mode: see the module docstring.
      name: the records' `check` (default: the JAX function's name).
      seed: the seed of the inputs and cotangents.
      jit: compile the JAX side (as users run it); False dispatches eagerly.

    Returns:
      `Records` (a list of `ParityRecord`), one per (regime, dtype); `extra` holds regime, worst (which
      output, which case), the tolerance's reason and the oracle's verdict where it ran.
    """
    if (args is None) == (cases is None):
        raise ValueError("check_function needs exactly one of args= (the simple form) or cases=")
    if oracle_mode not in ("auto", "all", "never"):
        raise ValueError(f"oracle_mode must be auto, all or never, got {oracle_mode!r}")
    name = name or getattr(jax_fn, "__name__", "function")
    make_cases = cases if cases is not None else simple_cases(args, seed)
    regimes = tuple(regimes) if regimes is not None else (default_regimes(dict(args)) if args else ("bulk",))
    if "float64" in dtypes:
        backend.enable_float64()
    records = Records()
    for dtype in dtypes:
        for regime in regimes:
            records.append(check_row(jax_fn, torch_fn, make_cases(regime, dtype), name=name, regime=regime,
                                     dtype=dtype, tolerance=resolve_tolerance(tolerances, dtype, regime),
                                     floors=floors, oracle=oracle, oracle_mode=oracle_mode, seed=seed, jit=jit))
    return records


def check_row(jax_fn: Callable, torch_fn: Callable, cases: list[Case], *, name: str, regime: str, dtype: str,
              tolerance: Tolerance, floors=None, oracle=None, oracle_mode: str = "auto", seed: int = 0,
              jit: bool = True, reference: str = "the reference") -> ParityRecord:
    """One (regime, dtype) row of `check_function` on the given cases (`reference` names the reference
    in the row's note)."""
    if dtype == "float64":
        backend.enable_float64()  # else JAX would silently compute the float64 inputs in float32
    rng = np.random.default_rng([seed, 7, len(name), sum(map(ord, name)), len(regime)])
    jax_out, ref_out = [], []
    for case in cases:
        if case.cotangents is None:
            case.cotangents = _draw_cotangents(backend.REFERENCE, torch_fn, case, rng, jit)
        differentiable = _differentiable(case)
        jax_out.append(_run(backend.PORT, jax_fn, case, differentiable, jit))
        ref_out.append(_run(backend.REFERENCE, torch_fn, case, differentiable, jit))
    row = Row(name, regime, dtype, tolerance, cases, jax_out, ref_out)
    row.tolerance = floors(row) if floors is not None else (lambda ci, key, g: tolerance)
    comparisons, worst = [], (-1.0, "")
    for ci, (case, got, ref) in enumerate(zip(cases, jax_out, ref_out)):
        for g in range(case.groups):
            for key in got:
                label = " ".join(x for x in (key, case.group_label(g), case.label) if x)
                cmp = compare(got[key][g], ref[key][g], row.tolerance(ci, key, g), where=label)
                comparisons.append(cmp)
                badness = math.inf if (cmp.nonfinite_jax or cmp.nonfinite_ref) else cmp.max_rel_err
                if badness > worst[0]:
                    worst = (badness, label)
    parity = merge(comparisons)
    parity_ok = parity.passes(tolerance)
    extra: dict[str, Any] = {
        "regime": regime, "worst": worst[1], "tolerance_reason": tolerance.reason,
        "oracle": False, "oracle_points": 0, "oracle_rel_err_jax": None, "oracle_rel_err_ref": None,
        "closer": None, "reference_wrong": False,
    }
    note, passed = "", parity_ok
    verdict = None
    wants_oracle = oracle_mode == "all" or (oracle_mode == "auto" and (dtype == "float32" or not parity_ok))
    if oracle is not None and wants_oracle:
        verdict = oracle(row)  # None: the oracle cannot judge this row (e.g. a float64 oracle on a float64 row)
    if verdict is not None:
        truth = getattr(oracle, "label", "the oracle")
        extra.update(oracle=True, oracle_points=verdict.points, oracle_rel_err_jax=verdict.jax.max_rel_err,
                     oracle_rel_err_ref=verdict.ref.max_rel_err, oracle_worst_jax=verdict.worst_jax,
                     oracle_worst_ref=verdict.worst_ref)
        if verdict.jax.max_rel_err < verdict.ref.max_rel_err / 2:
            extra["closer"] = "jax"
        elif verdict.ref.max_rel_err < verdict.jax.max_rel_err / 2:
            extra["closer"] = reference.removeprefix("the ")
        else:
            extra["closer"] = "tie"
        jax_right = parity.nonfinite_jax == 0 and verdict.jax.passes(tolerance)
        if not parity_ok:
            reference_wrong = parity.nonfinite_ref > 0 or not verdict.ref.passes(tolerance)
            extra["reference_wrong"] = bool(reference_wrong)
            passed = bool(reference_wrong and jax_right)
            if passed:
                note = (f"{reference} deviates from {truth} (rel {verdict.ref.max_rel_err:.2g}); "
                        f"JAX is within tolerance of it (rel {verdict.jax.max_rel_err:.2g})")
            elif reference_wrong:
                note = f"{reference} wrong, but JAX also off {truth} (rel {verdict.jax.max_rel_err:.2g})"
            else:
                note = f"JAX disagrees with {reference} and {reference} agrees with {truth}"
        elif not jax_right:
            # both sides agree, and both are off the truth: parity holds, the port is still wrong
            passed = False
            note = f"JAX agrees with {reference}, but both are off {truth} (JAX rel {verdict.jax.max_rel_err:.2g})"
    return ParityRecord.from_comparison(name, dtype, parity, tolerance, passed=passed, note=note, **extra)


class Float64Oracle:
    """A third arm for float32 rows: a float64 implementation (by default the JAX function itself, run in
    64-bit mode) evaluated on the very float32 numbers both sides got, with the same cotangents; each side's
    distance from it is measured with the row's per-array rules, at every element.

    Judges float32 rounding, not formulas: on a float64 row it would be the JAX function against itself,
    so there it abstains (returns None) and the row stands as parity says."""

    label = "the float64 oracle"

    def __init__(self, fn: Callable, framework: str = backend.PORT, jit: bool = True):
        self.fn, self.framework, self.jit = fn, framework, jit

    def __call__(self, row: Row) -> OracleResult | None:
        if np.dtype(row.dtype).itemsize >= np.dtype(np.float64).itemsize:
            return None
        on: dict[str, list[Comparison]] = {"jax": [], "ref": []}
        worst = {"jax": (-1.0, ""), "ref": (-1.0, "")}
        for ci, case in enumerate(row.cases):
            wide = dataclasses.replace(
                case, args={k: v.astype(np.float64) if np.issubdtype(v.dtype, np.floating) else v
                            for k, v in case.args.items()},
                cotangents=tuple(c.astype(np.float64) for c in case.cotangents))
            truth = _run(self.framework, self.fn, wide, _differentiable(case), self.jit)
            for g in range(case.groups):
                for key in row.jax[ci]:
                    tol = row.tolerance(ci, key, g)
                    label = " ".join(x for x in (key, case.group_label(g), case.label) if x)
                    for side, results in (("jax", row.jax[ci]), ("ref", row.ref[ci])):
                        cmp = compare(results[key][g], truth[key][g], tol, where=label)
                        on[side].append(cmp)
                        if cmp.max_rel_err > worst[side][0]:
                            worst[side] = (cmp.max_rel_err, label)
        points = sum(case.groups for case in row.cases)
        return OracleResult(merge(on["jax"]), merge(on["ref"]), points, worst["jax"][1], worst["ref"][1])
