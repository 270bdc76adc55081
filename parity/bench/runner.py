"""Running the bench: every preset's workload in every arm, round robin, and the optimizer rows."""

from __future__ import annotations

import dataclasses
import itertools
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from parity import allocator, backend, convert, sysinfo
from parity import config as cfg
from parity.bench import trust
from parity.bench.arms import ARM_DESCRIPTION, ARM_FRAMEWORK, ARM_SPECS, ARMS, make_arm
from parity.bench.roofline import (
    first_layer_flops_per_user,
    inference_flops_per_user,
    matmul_rate,
    step_gemms,
    train_flops_per_user,
)
from parity.config import DataConfig, RunConfig
from parity.data import batch_order, dense_rows, epoch_masks
from parity.errors import UsageError
from parity.stats import paired_ratio, summarize

OPTIMIZERS = ("sgd", "adam")
SCHEMA_VERSION = 1

# --quick: ML-1M shapes, an epoch of this many users; --tiny: a toy dataset and model (tests)
QUICK_USERS = 1536
TINY = {"n_users": 96, "n_items": 120, "n_ratings": 96 * 24, "hidden_cap": 16, "repeats": 2, "steps": 2,
        "optimizer_points": 500, "optimizer_number": 2, "background_probe_s": 0.25}

# the project's throughput goals on the CPU, checked on every run and reported as met / not met:
# (model kind, numerator, denominator, threshold) on training users/s; "best X" is the fastest arm of X
TARGETS = (
    ("hae", "best JAX arm", "torch-eager", 2.5),
    ("hae", "best JAX arm", "best PyTorch arm", 1.5),  # PyTorch's sparse arm included
    ("hae", "jax-sparse", "best JAX dense arm", 1.4),
    ("ae", "best JAX arm", "best PyTorch arm", 1.3),
)
MATMUL_FRACTION_TARGET = 0.8  # every JAX arm, of the JAX matmul rate at the model's shapes
DEFAULT_REPEATS = 10  # timed epochs per arm; see the module docstring of parity.bench for why 10


class BenchError(UsageError):
    """A user mistake (unknown preset or arm, no GPU for --device gpu): reported without a traceback."""


# ---------------------------------------------------------------------------------------------
# data and workloads


@dataclasses.dataclass
class BenchData:
    """The training matrix the bench trains on: one row per user with at least one entry."""

    name: str
    matrix: Any  # scipy.sparse.csr_matrix (n_users, n_items)
    dense: np.ndarray | None = None  # filled per dtype

    @property
    def n_users(self) -> int:
        return self.matrix.shape[0]

    @property
    def n_items(self) -> int:
        return self.matrix.shape[1]


def load_bench_data(dataset: str = "synthetic", *, data_dir=None, users: int | None = None,
                    tiny: bool = False) -> BenchData:
    """The rows `poincare-parity train` trains on (`split.fit`, users with an entry), neumf protocol
    (binary) for implicit data, seed protocol otherwise; the first `users` of them when given."""
    from parity import data

    if tiny:
        dataset_obj = data.synthetic(n_users=TINY["n_users"], n_items=TINY["n_items"], n_ratings=TINY["n_ratings"])
        split = data.split_neumf(dataset_obj)
        name = "synthetic-tiny"
    else:
        dataset_obj = data.load_dataset(dataset, data_dir)
        split = data.make_split(dataset_obj, DataConfig(dataset=dataset, protocol=data.default_protocol(dataset_obj)))
        name = dataset
    rows = split.fit_users()
    if users is not None:
        if users < 1:
            raise BenchError(f"--users must be >= 1, got {users}")
        rows = rows[:users]
    return BenchData(name, split.fit[rows])


def preset_run(preset: str, n_items: int, *, dtype: str = "float32", hidden_cap: int | None = None):
    """The `RunConfig` of a preset at the dataset's width (and, for --tiny, hidden layers capped)."""
    if preset not in cfg.PRESETS:
        raise BenchError(f"unknown preset {preset!r}; known: {', '.join(sorted(cfg.PRESETS))}")
    run = RunConfig.from_dict({k: v for k, v in cfg.PRESETS[preset].items() if k != "description"})
    hidden = tuple(run.model.layer_sizes[1:])
    if hidden_cap is not None:
        hidden = tuple(min(size, hidden_cap) for size in hidden)
    model = dataclasses.replace(run.model, layer_sizes=(n_items, *hidden))
    return dataclasses.replace(run, model=model, train=dataclasses.replace(run.train, dtype=dtype))


# ---------------------------------------------------------------------------------------------
# one model workload


@dataclasses.dataclass
class _ArmState:
    name: str
    arm: Any = None
    matrix: Any = None
    error: str | None = None
    skipped: str | None = None  # why the arm was not built (admit said no)
    result: dict[str, Any] = dataclasses.field(default_factory=dict)
    epoch_s: list[float] = dataclasses.field(default_factory=list)
    feed_s: list[float] = dataclasses.field(default_factory=list)
    run_s: list[float] = dataclasses.field(default_factory=list)
    step_s: list[float] = dataclasses.field(default_factory=list)
    infer_s: list[float] = dataclasses.field(default_factory=list)
    step_inputs: Any = None  # (batch, masks) on the device, for the isolated-step timing


def error_text(error: BaseException) -> str:
    text = f"{type(error).__name__}: {error}"
    return text if len(text) < 2000 else text[:2000] + " ..."


def bench_model(preset: str, data: BenchData, *, arms: Sequence[str] = ARMS, repeats: int = DEFAULT_REPEATS,
                steps: int = 3, dtype: str = "float32", device: str = "cpu", compile_mode: str | None = None,
                hidden_cap: int | None = None, seed: int = 0, matmul_target_s: float = 0.05,
                progress: Callable[[str], None] | None = None, profile_dir: Path | None = None,
                detail: bool = True, admit: Callable[[str], str | None] | None = None) -> dict[str, Any]:
    """Time every arm on one preset; -> the workload's JSON-able record.

    `detail`: also the isolated step, inference and the roofline (the cost curve times epochs and memory
    only). `admit(arm)`, asked before an arm is built, returns None or why the arm is skipped (memory)."""
    say = progress or (lambda _text: None)
    run = preset_run(preset, data.n_items, dtype=dtype, hidden_cap=hidden_cap)
    model, train = run.model, run.train
    n_users, batch_size = data.n_users, train.batch_size
    n_steps = -(-n_users // batch_size)
    weights = {k: v.astype(dtype) for k, v in convert.init_weights(model, seed).items()}
    dense = dense_rows(data.matrix, np.arange(n_users), dtype)
    per_user = train_flops_per_user(model, train.dense_refeeding)
    record: dict[str, Any] = {
        "name": preset, "kind": "model", "model_kind": model.kind,
        "description": cfg.PRESETS[preset].get("description"),
        "config": run.to_dict(), "dtype": dtype, "n_users": n_users, "n_items": data.n_items,
        "nnz": int(data.matrix.nnz), "batch_size": batch_size, "steps_per_epoch": n_steps,
        "dense_refeeding": train.dense_refeeding,
        "flops": {"train_per_user": per_user, "train_epoch": per_user * n_users,
                  "first_layer_epoch": first_layer_flops_per_user(model) * n_users,
                  "inference_per_user": inference_flops_per_user(model),
                  "gemms_per_step": [dataclasses.asdict(g) | {"flops": g.flops}
                                     for g in step_gemms(model, batch_size)]},
        "arms": [], "ratios": [],
    }

    def feed(epoch: int):
        started = time.perf_counter()
        batches = batch_order(n_users, batch_size, seed, epoch)
        masks = epoch_masks(model, train, seed, epoch, n_users)
        return batches, masks, time.perf_counter() - started

    # phase 1, arm by arm: build, put the data on the device, warm up (compilation), memory (one more
    # epoch, untimed)
    states = [_ArmState(name) for name in arms]
    for state in states:
        skip = admit(state.name) if admit else None
        if skip:
            state.skipped = skip
            say(f"{preset}: {state.name} skipped: {skip}")
            continue
        say(f"{preset}: {state.name} warm-up")
        try:
            allocator.release_free_memory()  # what earlier arms freed is not this arm's
            rss0 = sysinfo.rss_bytes()
            state.arm = make_arm(state.name, run, weights, device, compile_mode)
            state.matrix = state.arm.put_matrix(data.matrix, dense)
            state.arm.sync()
            batches, masks, _ = feed(0)
            started = time.perf_counter()
            state.arm.epoch(state.matrix, batches, masks)
            state.result["warmup_s"] = time.perf_counter() - started
            if detail:
                state.step_inputs = state.arm.step_inputs(
                    state.matrix, dense, batches[0], tuple(None if m is None else m[: len(batches[0])] for m in masks))
                state.arm.step(*state.step_inputs)
                started = time.perf_counter()
                state.arm.score(state.matrix, n_users)
                state.arm.sync()
                state.result["infer_warmup_s"] = time.perf_counter() - started
            allocator.release_free_memory()  # what compiling freed is not resident for this arm
            rss1 = sysinfo.rss_bytes()
            state.result["memory"] = {"resident_mb": _mb(rss1 - rss0) if rss0 and rss1 else None,
                                      **_epoch_memory(state.arm, state.matrix, batches, masks)}
        except Exception as error:  # noqa: BLE001 - one arm failing must not stop the others
            state.error = error_text(error)
            state.arm = state.matrix = state.step_inputs = None
            say(f"{preset}: {state.name} failed: {state.error}")

    # phase 2, round robin: epochs (with feeding), isolated steps, inference; other processes' CPU time
    # is counted over this phase alone (compilation and its workers are done by now)
    live = [s for s in states if s.error is None and s.skipped is None]
    meter = sysinfo.CpuMeter()
    for repeat in range(repeats):
        for state in live:
            if state.error is not None:
                continue
            say(f"{preset}: repeat {repeat + 1}/{repeats} {state.name}")
            try:
                _timed_repeat(state, repeat, feed, steps, n_users, detail)
            except Exception as error:  # noqa: BLE001
                state.error = error_text(error)
                say(f"{preset}: {state.name} failed: {state.error}")
    record["background_busy"] = meter.share()
    record["timed_s"] = meter.seconds()

    if profile_dir is not None:
        for state in live:
            if state.error is None:
                state.result["profile"] = _profile_epoch(state, feed(repeats + 1), profile_dir / preset)

    # roofline: each framework's matmul rate at this model's shapes
    rates: dict[str, dict[str, Any]] = {}
    if detail:
        for framework in sorted({ARM_FRAMEWORK[s.name] for s in live if s.error is None}):
            say(f"{preset}: {framework} matmul rate")
            rates[framework] = matmul_rate(framework, step_gemms(model, batch_size), dtype=dtype, device=device,
                                           repeats=repeats, target_s=matmul_target_s, seed=seed)
        record["matmul_rate"] = rates

    for state in states:
        record["arms"].append(_arm_record(state, record, rates, n_users, n_steps))
    record["ratios"] = pair_ratios(record["arms"])
    record["trust"] = trust.assess_workload(record, judge_ratios=detail)
    for state in states:  # free the device memory before the next workload
        state.arm = state.matrix = state.step_inputs = None
    return record


def _epoch_memory(arm, matrix, batches, masks) -> dict[str, Any]:
    """The memory of one more epoch, untimed: its resident peak above where it starts (the heap's free
    memory handed back first, so the pages it touches count; no timed epoch pays for faulting them in
    again), the process's peak, and the device's peak where the framework reports one."""
    allocator.release_free_memory()
    before = sysinfo.rss_bytes()
    reset = sysinfo.reset_peak_rss()
    arm.reset_device_peak()
    arm.epoch(matrix, batches, masks)
    peak = sysinfo.peak_rss_bytes()
    memory = {"epoch_peak_above_mb": _mb(peak - before) if reset and peak and before else None,
              "process_peak_mb": _mb(peak), "peak_reset": reset}
    device_peak = arm.device_peak_bytes()
    if device_peak is not None:
        memory["device_peak_mb"] = _mb(device_peak)
    return memory


def _timed_repeat(state: _ArmState, repeat: int, feed: Callable, steps: int, n_users: int, detail: bool) -> None:
    """One repeat of one arm: an epoch with its feeding, and with `detail` `steps` isolated steps and the
    inference pass."""
    arm = state.arm
    batches, masks, feed_s = feed(repeat + 1)
    started = time.perf_counter()
    arm.epoch(state.matrix, batches, masks)
    run_s = time.perf_counter() - started
    state.feed_s.append(feed_s)
    state.run_s.append(run_s)
    state.epoch_s.append(feed_s + run_s)
    if not detail:
        return
    batch, step_masks = state.step_inputs
    started = time.perf_counter()
    for _ in range(steps):
        arm.step(batch, step_masks)
    arm.sync()
    state.step_s.append((time.perf_counter() - started) / steps)
    started = time.perf_counter()
    arm.score(state.matrix, n_users)
    arm.sync()
    state.infer_s.append(time.perf_counter() - started)


def arm_memory_mb(row: dict[str, Any]) -> float | None:
    """An arm's memory: on a GPU its device peak; on the CPU the resident growth of building and warming
    it plus the peak above that during one epoch."""
    memory = row.get("memory") or {}
    if memory.get("device_peak_mb") is not None:
        return memory["device_peak_mb"]
    if memory.get("resident_mb") is not None and memory.get("epoch_peak_above_mb") is not None:
        return memory["resident_mb"] + memory["epoch_peak_above_mb"]
    return None


def _arm_record(state: _ArmState, workload: dict[str, Any], rates: dict[str, Any], n_users: int,
                n_steps: int) -> dict[str, Any]:
    framework = ARM_FRAMEWORK[state.name]
    row: dict[str, Any] = {"arm": state.name, "framework": framework, "description": ARM_DESCRIPTION[state.name]}
    if state.skipped is not None:
        row.update(status="skipped", reason=state.skipped)
        return row
    if state.error is not None or not state.epoch_s:
        row.update(status="failed", error=state.error or "no repeat completed")
        row.update(state.result)
        return row
    epoch = summarize(state.epoch_s)
    run = summarize(state.run_s)
    row.update(state.result)
    row.update(
        status="ok",
        train_users_per_s=summarize([n_users / s for s in state.epoch_s]),
        epoch_s=epoch, feed_s=summarize(state.feed_s), run_s=run,
        epoch_spread=epoch["max"] / epoch["min"] if epoch["min"] else None,
        compile_s=max(0.0, row["warmup_s"] - epoch["median"]),
    )
    row["memory_mb"] = arm_memory_mb(row)
    flops_epoch = workload["flops"]["train_epoch"]
    achieved = flops_epoch / epoch["median"]
    row["matmul_gflops"] = achieved / 1e9
    if state.step_s and state.infer_s:
        step = summarize(state.step_s)
        row.update(step_s=step, epoch_step_s=run["median"] / n_steps,
                   loop_overhead_s=run["median"] - n_steps * step["median"],
                   infer_users_per_s=summarize([n_users / s for s in state.infer_s]),
                   infer_s=summarize(state.infer_s))
        row["infer_matmul_gflops"] = workload["flops"]["inference_per_user"] * n_users / row["infer_s"]["median"] / 1e9
    rate = rates.get(framework)
    if rate:
        row["matmul_fraction"] = achieved / (rate["gflops"] * 1e9)
        row["matmul_fraction_run"] = flops_epoch / run["median"] / (rate["gflops"] * 1e9)
        if not ARM_SPECS[state.name].sparse:
            row["sparse_input_ceiling"] = sparse_input_ceiling(epoch["median"], workload, rate["gflops"])
        if "step_s" in row:
            step_flops = workload["flops"]["train_per_user"] * workload["batch_size"]
            row["matmul_fraction_step"] = step_flops / row["step_s"]["median"] / (rate["gflops"] * 1e9)
    return row


def sparse_input_ceiling(epoch_s: float, workload: dict[str, Any], gflops: float) -> dict[str, Any]:
    """How much faster a dense arm's epoch could get from sparse input at most: the epoch without its
    first layer's two products (forward and weight gradient, timed at the framework's matmul rate).
    The rest (the decoder's products over every item, the optimizer, the elementwise work) sparse
    input leaves as it is. An upper bound: a sparse arm also pays for its layout of the nonzeros and
    its own first layer (reports/bench-profile-cpu/sparse_ceiling.py measures what remains)."""
    first_layer_s = workload["flops"]["first_layer_epoch"] / (gflops * 1e9)
    rest_s = epoch_s - first_layer_s
    return {"first_layer_s": first_layer_s, "epoch_s": epoch_s,
            "ratio": epoch_s / rest_s if rest_s > 0 else None}


def pair_ratios(arm_rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every pair of arms that ran, later arm (in ARMS order) over earlier (JAX over PyTorch first), for
    each throughput both measured: the paired ratio of the repeats (`parity.stats.paired_ratio`)."""
    ok = sorted((row for row in arm_rows if row.get("status") == "ok"), key=lambda row: ARMS.index(row["arm"]))
    out = []
    for earlier, later in itertools.combinations(ok, 2):
        for metric in ("train_users_per_s", "infer_users_per_s"):
            if metric not in later or metric not in earlier:
                continue
            value = paired_ratio(later[metric]["samples"], earlier[metric]["samples"], better="higher")
            if value is not None:
                out.append({"metric": metric, "numerator": later["arm"], "denominator": earlier["arm"], **value})
    return out


def _profile_epoch(state: _ArmState, fed, folder: Path) -> dict[str, Any]:
    """One more epoch under the framework's profiler: torch's op table (text) or a JAX trace folder."""
    batches, masks, _ = fed
    try:
        return state.arm.profile_epoch(state.matrix, batches, masks, folder)
    except Exception as error:  # noqa: BLE001 - a profiler problem must not lose the timings
        return {"error": error_text(error)}


# ---------------------------------------------------------------------------------------------
# the optimizer rows


def bench_optimizer(name: str, *, dtype: str = "float32", repeats: int = DEFAULT_REPEATS, n_points: int = 10_000,
                    dim: int = 64, number: int = 10) -> dict[str, Any]:
    """One Riemannian optimizer step on `n_points` ball points of dimension `dim`, JAX jitted vs geoopt,
    timed by `parity.suites.optim.time_optimizer_step` (its torch side runs on the CPU)."""
    from parity.suites.optim import time_optimizer_step

    meter = sysinfo.CpuMeter()
    result = time_optimizer_step(name, n_points=n_points, dim=dim, dtype=dtype, repeats=repeats, number=number)
    background = meter.share()
    arms = []
    for arm, prefix in (("torch-eager", "torch"), ("jax-jit", "jax")):
        median_s, min_s = result[f"{prefix}_ms"] / 1e3, result[f"{prefix}_ms_min"] / 1e3
        max_ms = result.get(f"{prefix}_ms_max")
        step = {"median": median_s, "min": min_s, "max": None if max_ms is None else max_ms / 1e3,
                "n": result.get("repeats")}
        arms.append({"arm": arm, "framework": prefix, "status": "ok", "step_s": step,
                     "points_per_s": n_points / median_s})
    return {"name": f"optimizer-{name}", "kind": "optimizer", "optimizer": name, "dtype": dtype,
            "n_points": n_points, "dim": dim, "arms": arms, "result": result, "background_busy": background,
            # the two frameworks run one after the other (not interleaved) and only medians and minima come
            # back: other processes' load is all there is to judge
            "trust": trust.assess_timings({}, background),
            "ratios": [{"metric": "step_speedup", "numerator": "jax-jit", "denominator": "torch-eager",
                        "median": result["torch_ms"] / result["jax_ms"], "low": None, "high": None}]}


# ---------------------------------------------------------------------------------------------
# targets


def _resolve_arm(workload: dict[str, Any], who: str) -> dict[str, Any] | None:
    """The arm row a target names: an arm by name, or "best JAX arm" / "best PyTorch arm" / "best JAX
    dense arm" (the fastest such arm that ran, by median training users/s)."""
    rows = [r for r in workload["arms"] if r.get("status") == "ok" and "train_users_per_s" in r]
    if not who.startswith("best "):
        return next((r for r in rows if r["arm"] == who), None)
    framework = backend.PORT if who.startswith("best JAX") else backend.REFERENCE
    rows = [r for r in rows if r["framework"] == framework and not (who.endswith("dense arm")
                                                                      and ARM_SPECS[r["arm"]].sparse)]
    return max(rows, key=lambda r: r["train_users_per_s"]["median"], default=None)


def check_targets(workloads: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The throughput goals (TARGETS), as measured in this run: met, not met, or None (not measurable)."""
    out = []
    for w in workloads:
        if w.get("kind") != "model":
            continue
        for kind, numerator, denominator, threshold in TARGETS:
            if w["model_kind"] != kind:
                continue
            entry = {"workload": w["name"], "target": f"{numerator} / {denominator} training users/s >= {threshold:g}",
                     "threshold": threshold, "value": None, "met": None}
            top, bottom = _resolve_arm(w, numerator), _resolve_arm(w, denominator)
            ratio = None if top is None or bottom is None else next(
                (r for r in w.get("ratios", []) if r["metric"] == "train_users_per_s"
                 and r["numerator"] == top["arm"] and r["denominator"] == bottom["arm"]), None)
            if ratio is not None:
                entry.update(value=ratio["median"], met=ratio["median"] >= threshold, arm=top["arm"],
                             baseline=bottom["arm"], interval=ratio.get("interval"))
                ceiling = (bottom.get("sparse_input_ceiling") or {}).get("ratio")
                if ceiling is not None and ARM_SPECS[top["arm"]].sparse and top["framework"] == bottom["framework"]:
                    entry["ceiling"] = ceiling  # sparse over the same framework's dense: at most this
            else:
                entry["why_not_measured"] = f"needs {numerator} and {denominator} to have run"
            out.append(entry)
        for row in w["arms"]:
            if row["framework"] == backend.PORT and row.get("status") == "ok" and "matmul_fraction" in row:
                out.append({"workload": w["name"], "arm": row["arm"],
                            "target": f"{row['arm']} matmul FLOP rate per epoch (feeding included) / JAX matmul rate "
                                      f">= {MATMUL_FRACTION_TARGET:g}",
                            "threshold": MATMUL_FRACTION_TARGET, "value": row["matmul_fraction"],
                            "met": row["matmul_fraction"] >= MATMUL_FRACTION_TARGET})
    return out


# ---------------------------------------------------------------------------------------------
# the whole run


def validate(presets: Sequence[str], arms: Sequence[str], optimizers: Sequence[str],
             repeats: int = DEFAULT_REPEATS, steps: int = 3) -> None:
    """Raise BenchError for an unknown preset, arm or optimizer, or a count below 1."""
    unknown_arms = [a for a in arms if a not in ARMS]
    if unknown_arms:
        raise BenchError(f"unknown arm(s) {', '.join(unknown_arms)}; known: {', '.join(ARMS)}")
    for preset in presets:
        if preset not in cfg.PRESETS:
            raise BenchError(f"unknown preset {preset!r}; known: {', '.join(sorted(cfg.PRESETS))}")
    unknown_opt = [o for o in optimizers if o not in OPTIMIZERS]
    if unknown_opt:
        raise BenchError(f"unknown optimizer(s) {', '.join(unknown_opt)}; known: {', '.join(OPTIMIZERS)}")
    if repeats < 1 or steps < 1:
        raise BenchError("--repeats and --steps must be at least 1")


def select_device(device: str, gpu_matmul: str = "float32") -> None:
    """Point both frameworks at `device` ("cpu" or "gpu"); raise BenchError if it is not there."""
    if device not in ("cpu", "gpu"):
        raise BenchError(f"--device must be cpu or gpu, got {device!r}")
    if device == "gpu":
        # JAX grabs 75% of GPU memory at start by default, which would starve torch in the same process
        os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    for name in backend.BACKENDS:
        problem = backend.get(name).select_device(device, gpu_matmul)
        if problem:
            raise BenchError(f"--device {device}: {problem}")


def _mb(n_bytes: float | None) -> float | None:
    return None if n_bytes is None else n_bytes / 2**20
