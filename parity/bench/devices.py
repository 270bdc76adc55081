"""Throughput per device count (`bench --devices 1,2`): data-parallel training in each framework.

    run_devices(presets, counts, data, ...) -> the "devices" section of the bench JSON
    time_devices(framework, preset, data, devices, ...) -> {"seconds": [...], ...}   one fresh process
    parity.bench.devices_worker     what that process runs (`python -m parity.bench.devices_worker SPEC OUT`)

Each (preset, framework, device count) runs in a new Python process, so that JAX can be given N host
devices before it starts (`Backend.device_count_environment`) and no run inherits another's memory or
threads. The process trains with the framework's own data-parallel trainer
(`Backend.data_parallel_epoch_seconds`: `jax_impl.distributed.epoch_seconds`, one process over a device
mesh; `torch_ref.distributed.epoch_seconds`, one rank process per device under DDP), from the same start
weights, batches and keep-masks as the other arms, one warm-up epoch and `repeats` timed ones. One
device runs through the same data-parallel trainer, so both counts carry its overhead alike.

    throughput(N)         = users per epoch / median epoch seconds
    scaling efficiency(N) = throughput(N) / (N * throughput(1))     1.0: N devices, N times the work done
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from parity import backend, sysinfo
from parity.bench import trust
from parity.bench.runner import BenchData, BenchError
from parity.stats import summarize

DEVICES_REPEATS = 5  # timed epochs per device count (after one warm-up): efficiency is a ratio of medians
WORKER_TIMEOUT_S = 1800.0  # one (preset, framework, count) process: imports, start-up, 1 + repeats epochs
METHOD = ("each (preset, framework, device count) in a new process: one warm-up epoch, then the timed ones "
          "(the framework's data-parallel epoch_seconds); throughput = users per epoch / median epoch seconds; "
          "scaling efficiency = throughput(N) / (N * throughput(1)), both through the same data-parallel trainer")
CPU_WHY = ("on the CPU the N devices are the same {cpus} usable cores divided, not N more: JAX's host devices "
           "(--xla_force_host_platform_device_count) share one process's cores and PyTorch's N rank processes "
           "get cores // N threads each. Splitting each batch adds the all-reduce of the gradients every step "
           "and adds no hardware, so throughput(N) stays near throughput(1) at best and the efficiency near 1/N: "
           "here it measures the data-parallel overhead, not scaling on N real devices")
_REPO = Path(__file__).resolve().parents[2]


def _save_matrix(data: BenchData, folder: Path) -> Path:
    path = folder / "matrix.npz"
    m = data.matrix.tocsr()
    np.savez(path, data=m.data, indices=m.indices, indptr=m.indptr, shape=np.asarray(m.shape))
    return path


def time_devices(framework: str, preset: str, matrix_path: Path, devices: int, *, repeats: int = DEVICES_REPEATS,
                 dtype: str = "float32", device: str = "cpu", gpu_matmul: str = "float32", seed: int = 0,
                 hidden_cap: int | None = None, timeout: float = WORKER_TIMEOUT_S) -> dict[str, Any]:
    """Run `parity.bench.devices_worker` in a new process for one (framework, preset, device count); -> its result
    ({"seconds": per epoch, the warm-up first, "framework_info": ...}). Raises RuntimeError with the end
    of the process's output if it fails or runs past `timeout` seconds."""
    with tempfile.TemporaryDirectory(prefix="parity-devices-") as folder:
        spec_path, out_path = Path(folder) / "spec.json", Path(folder) / "out.json"
        spec_path.write_text(json.dumps({
            "framework": framework, "preset": preset, "matrix": str(matrix_path), "devices": devices,
            "repeats": repeats, "dtype": dtype, "device": device, "gpu_matmul": gpu_matmul, "seed": seed,
            "hidden_cap": hidden_cap}))
        env = {**os.environ, **backend.get(framework).device_count_environment(devices, device)}
        env["PYTHONPATH"] = os.pathsep.join([str(_REPO)] + [p for p in [os.environ.get("PYTHONPATH")] if p])
        try:
            done = subprocess.run([sys.executable, "-m", "parity.bench.devices_worker", str(spec_path), str(out_path)],
                                  env=env, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"no result within {timeout:g} s") from None
        if done.returncode != 0 or not out_path.exists():
            tail = (done.stderr or done.stdout or "").strip().splitlines()[-12:]
            raise RuntimeError(f"exit status {done.returncode}: " + " | ".join(tail))
        return json.loads(out_path.read_text())


def _row(preset: str, framework: str, devices: int, n_users: int, result: dict[str, Any] | None,
         error: str | None, background: float | None) -> dict[str, Any]:
    row: dict[str, Any] = {"preset": preset, "framework": framework, "devices": devices, "background_busy": background}
    if error is not None:
        return {**row, "status": "failed", "error": error}
    seconds = result["seconds"]
    timed = seconds[1:] or seconds
    return {**row, "status": "ok", "warmup_s": seconds[0], "epoch_s": summarize(timed),
            "users_per_s": summarize([n_users / s for s in timed]),
            "jax_devices": result.get("framework_info", {}).get("jax_devices")}


def run_devices(presets: Sequence[str], counts: Sequence[int], data: BenchData, *,
                frameworks: Sequence[str] = backend.BACKENDS, repeats: int = DEVICES_REPEATS, dtype: str = "float32",
                device: str = "cpu", gpu_matmul: str = "float32", seed: int = 0, hidden_cap: int | None = None,
                timeout: float = WORKER_TIMEOUT_S, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Every preset in every framework on each device count; -> the "devices" section."""
    say = progress or (lambda _text: None)
    if any(n < 1 for n in counts):
        raise BenchError(f"--devices: device counts must be at least 1, got {', '.join(map(str, counts))}")
    counts = sorted(set(counts) | {1})  # one device: what the efficiency is measured against
    rows = []
    with tempfile.TemporaryDirectory(prefix="parity-devices-") as folder:
        matrix_path = _save_matrix(data, Path(folder))
        for preset in presets:
            for framework in frameworks:
                for n in counts:
                    say(f"devices: {preset} {framework} on {n}")
                    meter = sysinfo.CpuMeter()
                    try:
                        result, error = time_devices(framework, preset, matrix_path, n, repeats=repeats, dtype=dtype,
                                                     device=device, gpu_matmul=gpu_matmul, seed=seed,
                                                     hidden_cap=hidden_cap, timeout=timeout), None
                    except Exception as exc:  # noqa: BLE001 - one count failing must not stop the others
                        result, error = None, f"{type(exc).__name__}: {exc}"[:2000]
                    rows.append(_row(preset, framework, n, data.n_users, result, error, meter.share()))
    for row in rows:  # throughput against the same preset and framework on the fewest devices
        one = next((r for r in rows if r["preset"] == row["preset"] and r["framework"] == row["framework"]
                    and r["devices"] == 1 and r["status"] == "ok"), None)
        if row["status"] == "ok" and one is not None:
            row["speedup"] = row["users_per_s"]["median"] / one["users_per_s"]["median"]
            row["scaling_efficiency"] = row["speedup"] / row["devices"]
    ok = [r for r in rows if r["status"] == "ok"]
    backgrounds = [r["background_busy"] for r in ok if r["background_busy"] is not None]
    section = {
        "counts": counts, "device": device, "presets": list(presets), "frameworks": list(frameworks),
        "repeats": repeats, "n_users": data.n_users, "n_items": data.n_items, "usable_cpus": sysinfo.usable_cpus(),
        "method": METHOD,
        "rows": rows,
        "trust": trust.assess_timings({f"{r['preset']} {r['framework']} on {r['devices']}": r["epoch_s"]["samples"]
                                       for r in ok}, max(backgrounds, default=None)),
    }
    if device == "cpu":
        section["why_efficiency_is_low"] = CPU_WHY.format(cpus=sysinfo.usable_cpus())
    return section
