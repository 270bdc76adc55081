"""Where a profiled epoch spent its time: the XLA operations of a JAX trace, matrix products against the rest."""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path
from typing import Any

# XLA:CPU names its compiled operations after the HLO instructions ("dot.3", "ynn_fusion.1" for a
# YNNPACK matmul with its fused epilogue, "multiply_add_fusion.2"); control flow ("while": the scan)
# encloses the others, and runtime bookkeeping has "::" or spaces in its name, Python frames a "$"
_MATMUL_OP = re.compile(r"dot|ynn|gemm|matmul|convolution")
_ENCLOSING_OP = re.compile(r"^(while|conditional|call)(\.\d+)?$")
_HLO_NAME = re.compile(r"^[A-Za-z_][\w.\-]*$")


def summarize_jax_trace(folder: Path, top: int = 12) -> dict[str, Any]:
    """Where a traced JAX epoch spent its time, from the XLA operations in the trace: total seconds
    in matrix products (their fused epilogues included) and in everything else, and the `top`
    operations by time. Durations are summed over threads, so they can exceed the wall time."""

    files = sorted(Path(folder).rglob("*.trace.json.gz"))
    if not files:
        return {"error": f"no *.trace.json.gz under {folder}"}
    events = json.loads(gzip.open(files[-1]).read())["traceEvents"]
    seconds: dict[str, float] = {}
    counts: dict[str, int] = {}
    for event in events:
        name = event.get("name", "")
        if event.get("ph") != "X" or not _HLO_NAME.match(name) or _ENCLOSING_OP.match(name):
            continue
        seconds[name] = seconds.get(name, 0.0) + event.get("dur", 0.0) * 1e-6
        counts[name] = counts.get(name, 0) + 1
    matmul = sum(v for k, v in seconds.items() if _MATMUL_OP.search(k))
    ranked = sorted(seconds, key=seconds.get, reverse=True)[:top]
    return {"matmul_s": matmul, "other_s": sum(seconds.values()) - matmul,
            "top": [{"op": k, "seconds": seconds[k], "calls": counts[k], "matmul": bool(_MATMUL_OP.search(k))}
                    for k in ranked]}
