"""Shared test set-up.

- float64 is switched on for JAX, as the harness does; every test names its dtypes explicitly.
- `POINCARE_PARITY_DATA` defaults to ../shared/data beside the checkout.
- Tests that need a real dataset use `require_dataset`: they fail when `CI` is set and the data is
  missing (CI must never pass by skipping), and skip elsewhere.
"""

from __future__ import annotations

import os
from pathlib import Path

import jax
import pytest

jax.config.update("jax_enable_x64", True)

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("POINCARE_PARITY_DATA", str(REPO.parent / "shared" / "data"))
DATA_DIR = Path(os.environ["POINCARE_PARITY_DATA"])


def _require(relative: str) -> Path:
    path = DATA_DIR / relative
    if not path.exists():
        message = f"dataset file {path} is missing (set POINCARE_PARITY_DATA to ../shared/data)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture
def require_dataset():
    """`require_dataset("ml-100k")` -> the folder, or fail (CI) / skip (elsewhere)."""
    return _require
