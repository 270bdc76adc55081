"""The cost curve (`bench --items`): each arm's epoch time and memory against the number of items.

    curve_data(n_items, n_users=CURVE_USERS, n_ratings=CURVE_RATINGS, seed=0) -> BenchData
    estimate_arm_bytes(run, n_users) -> (resident, transient)     before any measurement
    MemoryGuard                                                   admits an arm only if it fits now
    run_cost_curve(presets, items, ...) -> the "cost_curve" section of the bench JSON

Every point trains on synthetic data (`parity.data.synthetic`, as implicit feedback) with the same
users per epoch (ML-1M's 6,040) and the same ratings per user (ML-1M's ~165): only the width
grows. The nonzeros per epoch stay fixed, so a first layer that reads only the nonzeros costs the same
at every width, while the dense arms' first layer (and every arm's decoder and softmax over all items)
grow in proportion to the items. ML-1M has 3,706 items, ML-20M ~27,000.

Memory: before an arm is built, its need (resident after warm-up, plus the peak above that during one
epoch) is predicted, and the arm is skipped, with the reason recorded, if that need and the largest
transient of the point's arms do not fit in the memory the machine has available now (MemAvailable,
less MEMORY_MARGIN_BYTES). The prediction scales the arm's measured memory at the largest smaller
width in proportion to the items, an upper bound when memory is affine in the width (the fixed part is
scaled too), and never below a count of the model's arrays (`estimate_arm_bytes`); at the first width
it is that count, padded.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Sequence
from typing import Any

from parity import sysinfo
from parity.bench import trust
from parity.bench.arms import ARM_FRAMEWORK, ARMS
from parity.bench.runner import BenchData, BenchError, bench_model, preset_run
from parity.config import RunConfig

CURVE_USERS = 6040  # ML-1M's users: every width trains epochs of as many rows
CURVE_RATINGS = 1_000_209  # ML-1M's ratings (~165.6 per user): the nonzeros per epoch stay the same
CURVE_ITEMS = (3706, 10_000, 27_000)  # ML-1M's width, between, ML-20M's (~27k)
CURVE_REPEATS = 3  # the curve compares widths (7x apart), not arms: 3 epochs per point bound its noise
MEMORY_MARGIN_BYTES = 1 << 30  # left to the rest of the process, the next epoch's feeding and the machine
ESTIMATE_PAD = 1.5  # an arm not measured at any width yet: its array count times this, for what the count omits
WHY = ("users per epoch and ratings per user held fixed (ML-1M's by default), only the item count grows: the "
       "nonzeros per epoch stay the same, so a first layer that reads only the nonzeros would cost the same at "
       "every width, while the dense arms' first layer, and every arm's decoder and softmax over all items, grow "
       "in proportion to the items")


def curve_data(n_items: int, *, n_users: int = CURVE_USERS, n_ratings: int = CURVE_RATINGS,
               seed: int = 0) -> BenchData:
    """Synthetic data, `n_users` x `n_items` with `n_ratings` ratings, as implicit feedback (1.0 where
    a user rated an item, as the neumf split the presets use gives it): every rating is a training entry."""
    from parity import data

    if n_items < 2:
        raise BenchError(f"--items: every item count must be at least 2, got {n_items}")
    ratings = min(n_ratings, n_users * (n_items // 2))  # synthetic() draws at most half of a user's row
    dataset = data.synthetic(n_users=n_users, n_items=n_items, n_ratings=ratings, seed=seed,
                             min_per_user=min(20, ratings // n_users))
    return BenchData(f"synthetic-{n_items}-items", dataset.matrix(binary=True))


def estimate_arm_bytes(run: RunConfig, n_users: int) -> tuple[int, int]:
    """A count of one arm's memory at `run`'s shapes: (resident: the training matrix on the device and
    the weights, their gradients and two optimizer moments; transient: one epoch's keep-masks and a
    step's activations, about a dozen batch x items arrays). What it leaves out (framework buffers,
    compiled programs, copies) makes it a floor, not a bound."""
    model, train = run.model, run.train
    item_bytes = 8 if train.dtype == "float64" else 4
    sizes = list(model.layer_sizes)
    weights = sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:]))
    weights += weights if not model.tied else sum(sizes[:-1])  # the decoder mirrors the encoder
    n_items = sizes[0]
    resident = n_users * n_items * item_bytes + 4 * weights * item_bytes
    masks = n_users * n_items * (2 if train.dense_refeeding else 1) if model.input_dropout else 0
    transient = masks + 12 * train.batch_size * n_items * item_bytes
    return resident, transient


class MemoryGuard:
    """Admits an arm only if its predicted memory fits in what the machine has available now."""

    def __init__(self, margin: int = MEMORY_MARGIN_BYTES,
                 available: Callable[[], int | None] = sysinfo.memory_available_bytes):
        self.margin, self.available = margin, available
        self.measured: dict[tuple[str, str], list[tuple[int, float, float]]] = {}  # (n_items, resident, transient)

    def predict(self, preset: str, arm: str, run: RunConfig, n_users: int) -> tuple[float, float, str]:
        """(resident bytes, transient bytes, how predicted) of `arm` at `run`'s width: its measured memory
        at the largest width not above this one, scaled in proportion to the items, never below the count
        of its arrays (the allocator may have served a measured arm from memory freed before); with
        nothing measured, the count times ESTIMATE_PAD."""
        n_items = run.model.layer_sizes[0]
        floor_resident, floor_transient = estimate_arm_bytes(run, n_users)
        smaller = [m for m in self.measured.get((preset, arm), []) if m[0] <= n_items]
        if smaller:
            width, resident, transient = max(smaller)
            scale = n_items / width
            return (max(resident * scale, floor_resident), max(transient * scale, floor_transient),
                    f"its memory measured at {width:,} items, scaled")
        return ESTIMATE_PAD * floor_resident, ESTIMATE_PAD * floor_transient, "a count of the model's arrays"

    def admit(self, preset: str, run: RunConfig, n_users: int, arms: Sequence[str]) -> Callable[[str], str | None]:
        """The `admit` callback of `bench_model` for one point."""
        transients = [self.predict(preset, arm, run, n_users)[1] for arm in arms]
        largest_transient = max(transients, default=0.0)

        def admit(arm: str) -> str | None:
            available = self.available()
            if available is None:
                return None  # not Linux: nothing to judge by
            resident, transient, how = self.predict(preset, arm, run, n_users)
            transient = max(transient, largest_transient)  # any arm's epoch may run while this one is resident
            if resident + transient + self.margin > available:
                return (f"needs about {resident / 2**30:.1f} GiB resident + {transient / 2**30:.1f}"
                        f" GiB during an epoch (from {how}) + {self.margin / 2**30:.0f} GiB margin; "
                        f"{available / 2**30:.1f} GiB available")
            return None

        return admit

    def record(self, preset: str, workload: dict[str, Any]) -> None:
        for row in workload.get("arms", []):
            memory = row.get("memory") or {}
            if row.get("status") == "ok" and memory.get("resident_mb") is not None:
                self.measured.setdefault((preset, row["arm"]), []).append(
                    (workload["n_items"], max(memory["resident_mb"], 0.0) * 2**20,
                     max(memory.get("epoch_peak_above_mb") or 0.0, 0.0) * 2**20))


def _rows(point: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per arm of a point: what the plot and the tables read."""
    rows = []
    peak = max((a.get("memory", {}).get("process_peak_mb") or 0.0 for a in point.get("arms", [])), default=0.0)
    for a in point.get("arms", []):
        row = {"preset": point["name"], "n_items": point["n_items"], "nnz": point.get("nnz"), "arm": a["arm"],
               "framework": a.get("framework"), "status": a.get("status")}
        if a.get("status") == "ok":
            row.update(epoch_s=a["epoch_s"], train_users_per_s=a["train_users_per_s"]["median"],
                       memory_mb=a.get("memory_mb"), warmup_s=a.get("warmup_s"), process_peak_mb=peak or None)
        else:
            row["reason"] = a.get("reason") or a.get("error")
        rows.append(row)
    return rows


def run_cost_curve(presets: Sequence[str], items: Sequence[int], *, arms: Sequence[str] = ARMS,
                   repeats: int = CURVE_REPEATS, dtype: str = "float32", device: str = "cpu",
                   compile_mode: str | None = None, hidden_cap: int | None = None, seed: int = 0,
                   n_users: int = CURVE_USERS, n_ratings: int = CURVE_RATINGS,
                   progress: Callable[[str], None] | None = None,
                   guard: MemoryGuard | None = None) -> dict[str, Any]:
    """Every preset in every arm at each item count (smallest first); -> the "cost_curve" section."""
    say = progress or (lambda _text: None)
    guard = guard or MemoryGuard()
    items = sorted(set(items))
    points, rows = [], []
    available_start = guard.available()
    for n_items in items:
        say(f"cost curve: data with {n_items:,} items")
        data = curve_data(n_items, n_users=n_users, n_ratings=n_ratings, seed=seed)
        host_bytes = data.n_users * data.n_items * (8 if dtype == "float64" else 4)
        for preset in presets:
            run = preset_run(preset, data.n_items, dtype=dtype, hidden_cap=hidden_cap)
            available = guard.available()
            if available is not None and 2 * host_bytes + guard.margin > available:  # the dense copy and its cast
                reason = (f"the dense {data.n_users:,} x {data.n_items:,} training matrix "
                          f"({host_bytes / 2**30:.1f} GiB) does not fit in the {available / 2**30:.1f} GiB available")
                point = {"name": preset, "kind": "model", "n_items": data.n_items, "nnz": int(data.matrix.nnz),
                         "n_users": data.n_users, "ratios": [], "trust": None,
                         "arms": [{"arm": a, "framework": ARM_FRAMEWORK[a], "status": "skipped", "reason": reason}
                                  for a in arms]}
            else:
                point = bench_model(preset, data, arms=arms, repeats=repeats, dtype=dtype, device=device,
                                    compile_mode=compile_mode, hidden_cap=hidden_cap, seed=seed, progress=say,
                                    detail=False, admit=guard.admit(preset, run, data.n_users, arms))
                guard.record(preset, point)
            points.append(point)
            rows += _rows(point)
            gc.collect()  # the point's arrays go before the next width's
        del data
        gc.collect()
    return {
        "items": items, "n_users": n_users, "n_ratings": n_ratings, "ratings_per_user": n_ratings / n_users,
        "presets": list(presets), "arms": list(arms), "repeats": repeats, "why": WHY,
        "memory": {"available_mb_at_start": None if available_start is None else available_start / 2**20,
                   "margin_mb": guard.margin / 2**20,
                   "arm_memory": "resident growth of building and warming the arm + its peak above that during "
                                 "one epoch (GPU: the device peak)",
                   "process_peak_mb": "the process's peak resident memory during the point's epochs (every arm "
                                      "of the point alive)"},
        "points": points, "rows": rows,
        "trust": trust.assess_parts([(f"{p['name']} at {p['n_items']:,} items", p.get("trust")) for p in points]),
    }


__all__ = ["CURVE_USERS", "CURVE_RATINGS", "CURVE_ITEMS", "CURVE_REPEATS", "MEMORY_MARGIN_BYTES", "MemoryGuard",
           "curve_data", "estimate_arm_bytes", "run_cost_curve"]
