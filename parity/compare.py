"""Parity suites. Each returns a list of `ParityRecord`; `compare` is the one error measure they share.

Error measure (one definition for every suite, so tables are comparable):
    abs_err = |jax - ref|
    rel_err = abs_err / max(|ref|, atol / rtol)
A row passes when max rel_err <= rtol, i.e. every element has abs_err <= max(rtol * |ref|, atol):
relative where the reference is large, absolute where it is near zero.
Any NaN or Inf on either side fails the row unless the suite marks the reference as known-wrong.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np


@dataclasses.dataclass(frozen=True)
class Tolerance:
    rtol: float
    atol: float
    reason: str = ""


@dataclasses.dataclass
class ParityRecord:
    """One row of a parity table; `extra` carries suite-specific columns (regime, oracle errors, ...)."""

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

    def to_dict(self) -> dict[str, Any]:
        row = dataclasses.asdict(self)
        row.update(row.pop("extra"))
        return row


@dataclasses.dataclass(frozen=True)
class Comparison:
    max_abs_err: float
    max_rel_err: float
    nonfinite_jax: int
    nonfinite_ref: int

    def passes(self, tol: Tolerance) -> bool:
        return self.nonfinite_jax == 0 and self.nonfinite_ref == 0 and self.max_rel_err <= tol.rtol


def compare(jax_value, ref_value, tol: Tolerance) -> Comparison:
    """Error of `jax_value` against `ref_value` (numpy-convertible, same shape), measured in float64."""
    got = np.asarray(jax_value, dtype=np.float64)
    ref = np.asarray(ref_value, dtype=np.float64)
    if got.shape != ref.shape:
        raise ValueError(f"shape mismatch: jax {got.shape} vs reference {ref.shape}")
    nonfinite_jax = int(np.count_nonzero(~np.isfinite(got)))
    nonfinite_ref = int(np.count_nonzero(~np.isfinite(ref)))
    both = np.isfinite(got) & np.isfinite(ref)
    if not both.any():
        return Comparison(0.0, 0.0, nonfinite_jax, nonfinite_ref)
    abs_err = np.abs(got[both] - ref[both])
    scale = np.maximum(np.abs(ref[both]), tol.atol / tol.rtol)
    return Comparison(float(abs_err.max()), float((abs_err / scale).max()), nonfinite_jax, nonfinite_ref)


def merge(comparisons: list[Comparison]) -> Comparison:
    """Worst case over several comparisons (e.g. over curvatures and shapes of one table row)."""
    return Comparison(
        max((c.max_abs_err for c in comparisons), default=0.0),
        max((c.max_rel_err for c in comparisons), default=0.0),
        sum(c.nonfinite_jax for c in comparisons),
        sum(c.nonfinite_ref for c in comparisons),
    )
