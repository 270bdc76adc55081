"""The C heap's policy for large blocks (glibc on Linux): keep freed memory for the next step.

A training step allocates and frees the same large buffers every time: XLA's temporaries for the
whole program, PyTorch's activations and gradients ((256, 3706) and (3706, 600) float32 blocks on
ML-1M). glibc serves a block above its mmap threshold (128 KiB at start, raised by itself up to
32 MiB) with fresh pages from the kernel and returns them on free, and trims the top of the heap
above 128 KiB; so a step whose buffers outgrow that pays a page fault, and the kernel's zeroing,
for each 4 KiB of them again. Measured on ML-1M (hae-neumf, 2-core CPU, one process per policy, three
alternating pairs, medians of 5 epochs): JAX with a jitted step per batch 1.16-1.38 s -> 0.61-0.69 s
an epoch, JAX with the epoch as one program 0.78-0.85 s -> 0.58-0.69 s, PyTorch eager 2.20-2.49 s ->
1.77-1.93 s. The bench's memory figures stay each arm's own: see `release_free_memory`.

    keep_freed_memory() -> bool     serve blocks below 1 GiB from the heap and keep freed ones there
    release_free_memory() -> bool   hand the heap's free memory back to the kernel now (malloc_trim)
    policy() -> dict                what this process runs with, for the JSON a result carries

The command layer calls `keep_freed_memory` once at start (POINCARE_PARITY_KEEP_FREED_MEMORY=0 leaves
glibc's defaults); the bench calls `release_free_memory` before it reads resident memory, so that a
peak is the arm's own and not memory an earlier arm freed. Elsewhere (macOS, musl) both do nothing.
"""

from __future__ import annotations

import ctypes
import os
import sys
from typing import Any

# mallopt's parameters (<malloc.h>)
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
# Blocks up to 1 GiB come from the heap (an ML-1M program's temporaries are tens of MB; past 32 MiB
# glibc would always mmap them), and up to 1 GiB of free memory at the heap's top stays there.
KEEP_BYTES = 1 << 30
ENVIRONMENT_SWITCH = "POINCARE_PARITY_KEEP_FREED_MEMORY"

_kept = False


def _libc() -> Any | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)
    except OSError:
        return None
    # glibc has both; musl has neither mallopt's parameters nor malloc_trim
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None


def keep_freed_memory() -> bool:
    """Set the policy (once per process); True when glibc took it. Skipped, False, when the
    environment's POINCARE_PARITY_KEEP_FREED_MEMORY is 0."""
    global _kept
    if os.environ.get(ENVIRONMENT_SWITCH, "1").strip() == "0":
        return False
    libc = _libc()
    if libc is None:
        return False
    # mallopt returns 1 on success; a fixed mmap threshold also stops glibc moving it by itself
    _kept = bool(libc.mallopt(M_MMAP_THRESHOLD, KEEP_BYTES)) and bool(libc.mallopt(M_TRIM_THRESHOLD, KEEP_BYTES))
    return _kept


def release_free_memory() -> bool:
    """Return the heap's free memory to the kernel (glibc's malloc_trim(0)); True if glibc did."""
    libc = _libc()
    if libc is None:
        return False
    libc.malloc_trim(0)
    return True


def policy() -> dict[str, Any]:
    """{"keeps_freed_memory": bool, "threshold_bytes": int or None}: the policy in force here."""
    return {"keeps_freed_memory": _kept, "threshold_bytes": KEEP_BYTES if _kept else None}
