"""The error measure every parity check uses, the record a check returns, and `assert_parity`.

Error measure (one definition for every check, so tables are comparable):

    abs_err = |jax - ref|
    rel_err = abs_err / max(|ref|, atol / rtol)

An array passes when max rel_err <= rtol, i.e. every element has abs_err <= max(rtol * |ref|, atol):
relative where the reference is large, absolute where it is near zero. Any NaN or Inf on either side
fails the array (a check may still pass the row when an oracle shows the reference is the side that is
wrong). "jax" is the port under test and "ref" the reference it is held against (PyTorch / geoopt).

    Tolerance(rtol, atol, reason)                  the rule, and why it is what it is
    compare(jax, ref, tol) -> Comparison           worst errors, where, and how many elements fail
    merge(comparisons) -> Comparison               the worst over several arrays
    ParityRecord                                   one row of a parity table (what the checks return)
    Records                                        a list of records with .failed, .passed and .table()
    assert_parity(records)                         raise ParityError naming every failed row
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np


@dataclasses.dataclass(frozen=True)
class Tolerance:
    """Elements pass when |jax - ref| <= max(rtol * |ref|, atol); `reason` says where the numbers come from."""

    rtol: float
    atol: float = 0.0
    reason: str = ""

    def __post_init__(self):
        if not (self.rtol > 0 and math.isfinite(self.rtol)) or not (self.atol >= 0 and math.isfinite(self.atol)):
            raise ValueError(f"a Tolerance needs rtol > 0 and atol >= 0, got rtol={self.rtol}, atol={self.atol}")

    @property
    def rule(self) -> str:
        return f"|jax - ref| <= max(rtol * |ref|, atol) with rtol={self.rtol:.3g}, atol={self.atol:.3g}"


@dataclasses.dataclass(frozen=True)
class Comparison:
    """The result of comparing one array (or, merged, several) under one Tolerance.

    `worst_index` is the index (in the array's own shape) of the largest relative error, `worst_jax` and
    `worst_ref` the two values there; `abs_index`, `abs_jax`, `abs_ref` the same for the largest
    absolute error (in the array `abs_where`, which after a merge may be another one than `where`);
    `mismatched` counts the elements that fail (non-finite ones included) out of `n_elements`, over
    `n_arrays` arrays; `passed` applies the Tolerance the comparison was made with."""

    max_abs_err: float
    max_rel_err: float
    nonfinite_jax: int
    nonfinite_ref: int
    worst_index: tuple[int, ...] | None = None
    worst_jax: float | None = None
    worst_ref: float | None = None
    mismatched: int = 0
    n_elements: int = 0
    where: str = ""  # which array (set by merge: the one with the worst relative error)
    tolerance: Tolerance | None = None
    abs_index: tuple[int, ...] | None = None
    abs_jax: float | None = None
    abs_ref: float | None = None
    abs_where: str = ""  # which array holds the largest absolute error
    n_arrays: int = 1

    def passes(self, tol: Tolerance) -> bool:
        return self.nonfinite_jax == 0 and self.nonfinite_ref == 0 and self.max_rel_err <= tol.rtol

    @property
    def passed(self) -> bool:
        return self.tolerance is not None and self.passes(self.tolerance)


def compare(jax_value: Any, ref_value: Any, tol: Tolerance, where: str = "") -> Comparison:
    """Error of `jax_value` against `ref_value` (numpy-convertible, same shape), measured in float64."""
    got = np.asarray(jax_value, dtype=np.float64)
    ref = np.asarray(ref_value, dtype=np.float64)
    if got.shape != ref.shape:
        raise ValueError(f"shape mismatch{' in ' + where if where else ''}: jax {got.shape} vs reference {ref.shape}")
    finite_got, finite_ref = np.isfinite(got), np.isfinite(ref)
    nonfinite_jax = int(np.count_nonzero(~finite_got))
    nonfinite_ref = int(np.count_nonzero(~finite_ref))
    both = finite_got & finite_ref
    if not both.any():
        return Comparison(0.0, 0.0, nonfinite_jax, nonfinite_ref, mismatched=int(got.size - both.sum()),
                          n_elements=int(got.size), where=where, tolerance=tol, abs_where=where)
    abs_err = np.where(both, np.abs(np.where(both, got, 0.0) - np.where(both, ref, 0.0)), 0.0)
    scale = np.maximum(np.abs(np.where(both, ref, 0.0)), tol.atol / tol.rtol)
    # an exact zero difference is no error even where the scale is 0 (rtol > 0, atol = 0, ref = 0)
    rel_err = np.divide(abs_err, scale, out=np.where(abs_err > 0, np.inf, 0.0), where=scale > 0)
    index = tuple(int(i) for i in np.unravel_index(int(np.argmax(rel_err)), got.shape))
    at_abs = tuple(int(i) for i in np.unravel_index(int(np.argmax(abs_err)), got.shape))
    return Comparison(
        max_abs_err=float(abs_err[at_abs]), max_rel_err=float(rel_err[index]),
        nonfinite_jax=nonfinite_jax, nonfinite_ref=nonfinite_ref, worst_index=index,
        worst_jax=float(got[index]), worst_ref=float(ref[index]),
        mismatched=int(np.count_nonzero(rel_err > tol.rtol) + np.count_nonzero(~both)), n_elements=int(got.size),
        where=where, tolerance=tol, abs_index=at_abs, abs_jax=float(got[at_abs]), abs_ref=float(ref[at_abs]),
        abs_where=where)


def merge(comparisons: Sequence[Comparison]) -> Comparison:
    """Worst case over several comparisons (e.g. over curvatures and shapes of one table row); the
    worst element's index and values are those of the comparison with the largest relative error."""
    if not comparisons:
        return Comparison(0.0, 0.0, 0, 0, n_arrays=0)
    worst = max(comparisons, key=lambda c: c.max_rel_err)
    largest = max(comparisons, key=lambda c: c.max_abs_err)
    return Comparison(
        max_abs_err=largest.max_abs_err,
        max_rel_err=worst.max_rel_err,
        nonfinite_jax=sum(c.nonfinite_jax for c in comparisons),
        nonfinite_ref=sum(c.nonfinite_ref for c in comparisons),
        worst_index=worst.worst_index, worst_jax=worst.worst_jax, worst_ref=worst.worst_ref,
        mismatched=sum(c.mismatched for c in comparisons), n_elements=sum(c.n_elements for c in comparisons),
        where=worst.where, tolerance=worst.tolerance, abs_index=largest.abs_index, abs_jax=largest.abs_jax,
        abs_ref=largest.abs_ref, abs_where=largest.abs_where, n_arrays=sum(c.n_arrays for c in comparisons),
    )


def format_value(value: float, dtype: str) -> str:
    """`value` with the digits that tell it apart from its neighbours in `dtype`: the shortest repr
    that round-trips (at most 9 significant digits in float32, 17 in float64)."""
    try:
        return str(np.dtype(dtype).type(value))
    except TypeError:  # not a numpy dtype name
        return repr(float(value))


@dataclasses.dataclass
class ParityRecord:
    """One row of a parity table; `extra` carries check-specific columns (regime, oracle errors, ...).

    `where` names the array with the worst relative error (an output, a parameter, a layer), `worst_index`
    the element; `abs_where` / `abs_index` the same for the largest absolute error; `mismatched` /
    `n_elements` how many elements fail, over `n_arrays` arrays."""

    check: str
    dtype: str
    max_abs_err: float
    max_rel_err: float
    tolerance: float
    passed: bool
    atol: float = 0.0
    nonfinite_jax: int = 0
    nonfinite_ref: int = 0
    note: str = ""
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)
    where: str = ""
    worst_index: tuple[int, ...] | None = None
    worst_jax: float | None = None
    worst_ref: float | None = None
    mismatched: int = 0
    n_elements: int = 0
    abs_where: str = ""
    abs_index: tuple[int, ...] | None = None
    abs_jax: float | None = None
    abs_ref: float | None = None
    n_arrays: int = 1

    @classmethod
    def from_comparison(cls, check: str, dtype: str, comparison: Comparison, tol: Tolerance, *,
                        passed: bool | None = None, note: str = "", **extra: Any) -> ParityRecord:
        return cls(check=check, dtype=dtype, max_abs_err=comparison.max_abs_err,
                   max_rel_err=comparison.max_rel_err, tolerance=tol.rtol,
                   passed=comparison.passes(tol) if passed is None else bool(passed), atol=tol.atol,
                   nonfinite_jax=comparison.nonfinite_jax, nonfinite_ref=comparison.nonfinite_ref, note=note,
                   extra=extra, where=comparison.where, worst_index=comparison.worst_index,
                   worst_jax=comparison.worst_jax, worst_ref=comparison.worst_ref, mismatched=comparison.mismatched,
                   n_elements=comparison.n_elements, abs_where=comparison.abs_where, abs_index=comparison.abs_index,
                   abs_jax=comparison.abs_jax, abs_ref=comparison.abs_ref, n_arrays=comparison.n_arrays)

    def to_dict(self) -> dict[str, Any]:
        row = dataclasses.asdict(self)
        row.update(row.pop("extra"))
        for key in ("worst_index", "abs_index"):
            if row[key] is not None:
                row[key] = list(row[key])
        return row

    def _at(self, where: str, index: tuple[int, ...] | None, jax: float | None, ref: float | None) -> str:
        """ " at <array> index (i, j) (jax <value>, reference <value>)", the array named only when it is
        not the one in the row's heading."""
        text = f" at {where}," if where and where != self.where else ""
        if index:  # a scalar's index () says nothing
            text += f" at index {tuple(index)}" if not text else f" index {tuple(index)}"
        text = text.rstrip(",")
        if jax is not None and ref is not None:
            text += f" (jax {format_value(jax, self.dtype)}, reference {format_value(ref, self.dtype)})"
        return text

    def explain(self) -> str:
        """A torch.testing.assert_close-style account of this row: how many elements fail and what share,
        the greatest absolute and relative differences with their index and both values, the rule."""
        lines = [f"{self.check} ({self.dtype}){': ' + self.where if self.where else ''}: "
                 f"{'passed' if self.passed else 'FAILED'}"]
        if self.n_elements:
            share = self.mismatched / self.n_elements
            over = f" over {self.n_arrays} arrays" if self.n_arrays > 1 else ""
            lines.append(f"  Mismatched elements: {self.mismatched} / {self.n_elements} ({share:.1%}){over}")
        abs_at = self._at(self.abs_where, self.abs_index, self.abs_jax, self.abs_ref)
        rel_at = self._at(self.where, self.worst_index, self.worst_jax, self.worst_ref)
        lines.append(f"  Greatest absolute difference: {self.max_abs_err:.3g}{abs_at}")
        lines.append(f"  Greatest relative difference: {self.max_rel_err:.3g}{rel_at} "
                     f"(up to {self.tolerance:.3g} allowed)")
        if self.nonfinite_jax or self.nonfinite_ref:
            lines.append(f"  Non-finite values: jax {self.nonfinite_jax}, reference {self.nonfinite_ref}")
        lines.append(f"  Rule: |jax - ref| <= max(rtol * |ref|, atol), rtol={self.tolerance:.3g}, atol={self.atol:.3g}")
        if self.note:
            lines.append(f"  Note: {self.note}")
        return "\n".join(lines)


class Records(list):
    """The records of one or more checks: a list, with the failed rows and a plain-text table."""

    @property
    def failed(self) -> list[ParityRecord]:
        return [r for r in self if not r.passed]

    @property
    def passed(self) -> bool:
        return not self.failed

    def save(self, path: str, name: str = "custom") -> str:
        """Write the records as a `custom` parity suite JSON (through the harness's one writer), for
        `poincare-parity report`; -> the path."""
        from parity.files import write_json

        return str(write_json(path, {"suite": "custom", "name": name, "records": [r.to_dict() for r in self]},
                              command="custom"))

    def table(self) -> str:
        header = ("check", "dtype", "worst at", "max abs err", "max rel err", "tolerance", "pass")
        rows = [(r.check, r.dtype, r.where + (f" {tuple(r.worst_index)}" if r.worst_index else ""),
                 f"{r.max_abs_err:.2e}", f"{r.max_rel_err:.2e}", f"{r.tolerance:.0e}", "ok" if r.passed else "FAIL")
                for r in self]
        widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
        lines = ["  ".join(str(x).ljust(w) for x, w in zip(header, widths)).rstrip(),
                 "  ".join("-" * w for w in widths)]
        lines += ["  ".join(str(x).ljust(w) for x, w in zip(row, widths)).rstrip() for row in rows]
        return "\n".join(lines)


class ParityError(AssertionError):
    """Raised by `assert_parity`: the message names every failed row, its worst element and the rule."""

    def __init__(self, message: str, failed: list[ParityRecord]):
        super().__init__(message)
        self.failed = failed


def assert_parity(records: ParityRecord | Iterable[ParityRecord], msg: str | None = None) -> None:
    """Raise `ParityError` if any record failed; the message explains each failed row (mismatched
    elements and their share, the worst element's index and values, absolute and relative error, the
    rule), and, for a module check, the first layer where the two ports part."""
    rows = [records] if isinstance(records, ParityRecord) else list(records)
    failed = [r for r in rows if not r.passed]
    if not failed:
        return
    parts = [msg] if msg else []
    divergence = getattr(records, "first_divergence", None)
    if divergence is not None:  # a module: where the two ports first part, before what it led to
        parts.append(f"The ports first part at {divergence.explain()}")
    parts.append(f"Parity failed in {len(failed)} of {len(rows)} check(s).")
    parts += [r.explain() for r in failed]
    raise ParityError("\n".join(parts), failed)
