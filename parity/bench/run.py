"""The whole bench run: the workloads at the dataset's width, the optimizer rows, the cost curve over
item counts and the throughput per device count, with the machine's load and a trust verdict.

    run_bench(presets, data, ...) -> the bench JSON (see `parity.bench`)
    warm_runtimes(device)
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from parity import backend, sysinfo
from parity.bench import trust
from parity.bench.arms import ARM_FRAMEWORK, ARMS
from parity.bench.curve import CURVE_RATINGS, CURVE_REPEATS, CURVE_USERS, run_cost_curve
from parity.bench.devices import DEVICES_REPEATS, run_devices
from parity.bench.runner import (
    DEFAULT_REPEATS,
    OPTIMIZERS,
    SCHEMA_VERSION,
    BenchData,
    BenchError,
    bench_model,
    bench_optimizer,
    check_targets,
    error_text,
    validate,
)
from parity.stats import PAIRED_RATIO_METHOD


def warm_runtimes(device: str = "cpu") -> None:
    """Start both frameworks' runtimes (backend, thread pools) before any arm, so that no arm's memory
    and warm-up time carry a framework's one-off start-up."""
    for name in backend.BACKENDS:
        backend.get(name).warm(device)


def run_bench(presets: Sequence[str], data: BenchData, *, arms: Sequence[str] = ARMS,
              optimizers: Sequence[str] = OPTIMIZERS, workloads: bool = True,
              items: Sequence[int] | None = None, devices: Sequence[int] | None = None,
              repeats: int = DEFAULT_REPEATS, curve_repeats: int = CURVE_REPEATS,
              devices_repeats: int = DEVICES_REPEATS, steps: int = 3, dtype: str = "float32", device: str = "cpu",
              gpu_matmul: str = "float32", compile_mode: str | None = None, hidden_cap: int | None = None,
              seed: int = 0, matmul_target_s: float = 0.05, progress: bool = False, profile_dir: Path | None = None,
              optimizer_points: int = 10_000, optimizer_dim: int = 64, optimizer_number: int = 10,
              curve_users: int = CURVE_USERS, curve_ratings: int = CURVE_RATINGS,
              background_probe_s: float = trust.BACKGROUND_PROBE_S,
              settings: dict[str, Any] | None = None) -> dict[str, Any]:
    """The bench JSON: with `workloads`, every preset at the dataset's width in every arm; the optimizer
    rows; with `items`, the cost curve; with `devices`, the throughput per device count. Before anything
    runs, other processes' share of the CPUs is measured for `background_probe_s` seconds."""
    from tqdm import tqdm

    validate(presets, arms, optimizers, repeats, steps)
    if dtype == "float64":
        backend.enable_float64()

    started = time.time()
    load_before = sysinfo.load_average()
    background_before = sysinfo.background_busy(background_probe_s)  # before the frameworks start their threads
    warm_runtimes(device)
    info = sysinfo.device_info(device)
    info["load_average_before_start"] = load_before
    frameworks = {ARM_FRAMEWORK[a] for a in arms}
    total = (len(presets) * (len(arms) * (1 + repeats) + len(frameworks)) if workloads else 0) + len(optimizers)
    total += len(items or ()) * (1 + len(presets) * len(arms) * (1 + curve_repeats))
    total += len(presets) * len(frameworks) * len(set(devices or ()) | ({1} if devices else set()))
    bar = tqdm(total=total, desc="bench", disable=not progress, file=sys.stderr, unit="task")

    def say(text: str) -> None:
        bar.set_postfix_str(text[:70])
        bar.update()

    results = []
    for preset in presets if workloads else ():
        try:
            results.append(bench_model(preset, data, arms=arms, repeats=repeats, steps=steps, dtype=dtype,
                                       device=device, compile_mode=compile_mode, hidden_cap=hidden_cap, seed=seed,
                                       matmul_target_s=matmul_target_s, progress=say, profile_dir=profile_dir))
        except BenchError:
            raise
        except Exception as error:  # noqa: BLE001 - e.g. a preset whose model kind is not wired yet
            results.append({"name": preset, "kind": "model", "status": "failed", "error": error_text(error),
                            "arms": [], "ratios": []})
    for name in optimizers:
        say(f"optimizer {name}")
        try:
            results.append(bench_optimizer(name, dtype=dtype, repeats=repeats, n_points=optimizer_points,
                                           dim=optimizer_dim, number=optimizer_number))
        except Exception as error:  # noqa: BLE001
            results.append({"name": f"optimizer-{name}", "kind": "optimizer", "status": "failed",
                            "error": error_text(error), "arms": [], "ratios": []})
    payload: dict[str, Any] = {}
    if items:
        payload["cost_curve"] = run_cost_curve(presets, items, arms=arms, repeats=curve_repeats, dtype=dtype,
                                               device=device, compile_mode=compile_mode, hidden_cap=hidden_cap,
                                               seed=seed, n_users=curve_users, n_ratings=curve_ratings, progress=say)
    if devices:
        timed = [name for name in backend.BACKENDS if name in frameworks]  # the frameworks of the arms asked for
        payload["devices"] = run_devices(presets, devices, data, frameworks=timed, repeats=devices_repeats, dtype=dtype,
                                         device=device, gpu_matmul=gpu_matmul, seed=seed, hidden_cap=hidden_cap,
                                         progress=say)
    bar.close()
    info["load_average_end"] = sysinfo.load_average()
    parts = [(w["name"], w.get("trust")) for w in results]
    parts += [(name, payload[key]["trust"]) for key, name in (("cost_curve", "cost curve"), ("devices", "devices"))
              if key in payload]
    return {
        "command": "bench", "version": SCHEMA_VERSION,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started)),
        "seconds": time.time() - started,
        "settings": {"presets": list(presets), "arms": list(arms), "optimizers": list(optimizers), "repeats": repeats,
                     "steps": steps, "dtype": dtype, "device": device, "compile_mode": compile_mode,
                     "hidden_cap": hidden_cap, "seed": seed, "workloads": workloads,
                     "items": list(items) if items else None, "devices": list(devices) if devices else None,
                     **(settings or {})},
        "data": {"dataset": data.name, "n_users": data.n_users, "n_items": data.n_items, "nnz": int(data.matrix.nnz)},
        "device": info,
        "ratio_method": PAIRED_RATIO_METHOD,
        "trust": trust.assess_run(parts, background_before, load_before, sysinfo.usable_cpus(), background_probe_s),
        "trust_thresholds": trust.THRESHOLDS,
        "workloads": results,
        **payload,
        # toy shapes say nothing about the acceptance figures (dispatch overhead dominates)
        "targets": [] if (settings or {}).get("tiny") else check_targets(results),
    }


__all__ = ["run_bench", "warm_runtimes"]
