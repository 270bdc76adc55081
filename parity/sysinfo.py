"""What a result was measured on: library versions, CPU, GPU, load, and this process's memory.

    versions() -> {package: version or None}
    device_info(device="cpu") -> CPU model and threads, GPU and driver, frameworks' devices, load
    environment(device="cpu") -> the short form every JSON file carries (versions, device, load)
    rss_bytes(), peak_rss_bytes(), reset_peak_rss()     resident memory of this process (Linux /proc)
    memory_available_bytes()                            what the kernel could hand out now (MemAvailable)
    CpuMeter(), background_busy(seconds)                other processes' share of the usable CPUs' time

Framework details (JAX backend, torch threads) are read only from frameworks this process has already
imported: asking for them never pays a framework's import.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
import sys
import time
from typing import Any

from parity import allocator

PACKAGES = ("poincare-parity", "numpy", "scipy", "jax", "jaxlib", "flax", "optax", "torch", "geoopt")


def version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str | None]:
    return {name: version(name) for name in names}


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def usable_cpus() -> int | None:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def load_average() -> list[float] | None:
    return list(os.getloadavg()) if hasattr(os, "getloadavg") else None


def nvidia_smi() -> list[dict[str, str]] | None:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    rows = []
    for line in out.strip().splitlines():
        name, driver, memory = (part.strip() for part in line.split(",", 2))
        rows.append({"name": name, "driver": driver, "memory": memory})
    return rows


def framework_info() -> dict[str, Any]:
    """Backends and devices of the frameworks already imported by this process (none is imported here)."""
    return _frameworks()


def _frameworks() -> dict[str, Any]:
    """Backends and devices of the frameworks already imported by this process."""
    out: dict[str, Any] = {}
    if "jax" in sys.modules:
        import jax

        out.update(jax_backend=jax.default_backend(),
                   jax_devices=[f"{d.platform}:{d.device_kind}" for d in jax.devices()],
                   jax_x64=bool(jax.config.jax_enable_x64))
    if "torch" in sys.modules:
        import torch

        out.update(torch_threads=torch.get_num_threads(), torch_interop_threads=torch.get_num_interop_threads(),
                   torch_cuda=torch.cuda.is_available())
    return out


def device_info(device: str = "cpu") -> dict[str, Any]:
    """What the numbers were measured on: CPU model and threads, GPU and driver, framework versions."""
    info: dict[str, Any] = {
        "device": device,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_model": cpu_model(),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": usable_cpus(),
        "env": {k: os.environ[k] for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "XLA_FLAGS", "JAX_PLATFORMS",
                                             "XLA_PYTHON_CLIENT_PREALLOCATE", "CUDA_VISIBLE_DEVICES",
                                             allocator.ENVIRONMENT_SWITCH)
                if k in os.environ},
        "versions": versions(),
        "load_average": load_average(),
        "allocator": allocator.policy(),
        **_frameworks(),
    }
    if device == "gpu":
        import jax
        import torch

        info["gpu"] = {
            "torch_name": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "torch_cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version() if torch.cuda.is_available() else None,
            "jax_device_kind": next((d.device_kind for d in jax.devices() if d.platform == "gpu"), None),
            "nvidia_smi": nvidia_smi(),
        }
    return info


def environment(device: str = "cpu") -> dict[str, Any]:
    """The short description every JSON file carries: versions, device, CPU, load."""
    return {"versions": versions(), "device": {"kind": device, "cpu_model": cpu_model(), "usable_cpus": usable_cpus(),
                                               "python": platform.python_version(), **_frameworks()},
            "load_average": load_average(), "allocator": allocator.policy()}


# ---------------------------------------------------------------------------------------------
# this process's memory


def _proc_status_bytes(field: str) -> int | None:
    """A memory field of /proc/self/status ("VmRSS", "VmHWM") in bytes; None where /proc is missing."""
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def rss_bytes() -> int | None:
    return _proc_status_bytes("VmRSS")


def peak_rss_bytes() -> int | None:
    """VmHWM (peak resident set) since the last `reset_peak_rss`; ru_maxrss where /proc is missing."""
    peak = _proc_status_bytes("VmHWM")
    if peak is not None:
        return peak
    try:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # never reset: an upper bound
    except (ImportError, OSError):
        return None


def reset_peak_rss() -> bool:
    """Linux >= 4.0: writing 5 to /proc/self/clear_refs resets VmHWM to the current RSS."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def memory_available_bytes() -> int | None:
    """MemAvailable of /proc/meminfo: what can be allocated now without swapping; None without /proc."""
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        return None
    return None


# ---------------------------------------------------------------------------------------------
# the CPU time of the machine and of this process: who else is using the cores


def cpu_ticks(cpus: set[int] | None = None) -> tuple[int, int] | None:
    """(busy, total) clock ticks since boot summed over `cpus` (default: this process's usable CPUs),
    from /proc/stat's per-CPU lines: busy = user + nice + system + irq + softirq + steal (time the
    hypervisor gave to another guest counts as taken), total adds idle and iowait. None without /proc."""
    cpus = cpus if cpus is not None else (os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None)
    busy = total = 0
    found = False
    try:
        with open("/proc/stat") as handle:
            for line in handle:
                name, _, rest = line.partition(" ")
                if not name.startswith("cpu") or name == "cpu":
                    continue
                if cpus is not None and int(name[3:]) not in cpus:
                    continue
                user, nice, system, idle, iowait, irq, softirq, steal = (int(v) for v in rest.split()[:8])
                busy += user + nice + system + irq + softirq + steal
                total += user + nice + system + idle + iowait + irq + softirq + steal
                found = True
    except (OSError, ValueError):
        return None
    return (busy, total) if found and total > 0 else None


def _stat_fields(pid: str) -> list[str] | None:
    """/proc/PID/stat from field 3 (state) on: the command name before it may hold spaces."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().rpartition(")")[2].split()
    except OSError:
        return None


def own_cpu_ticks() -> int | None:
    """Clock ticks of CPU time used by this process (every thread), by its children it has waited for,
    and by its live descendants (torch.compile's workers, data-parallel rank processes, subprocesses):
    the work this run did itself. None without /proc."""
    me = str(os.getpid())
    fields = _stat_fields(me)
    if fields is None:
        return None
    # fields[k - 3] is field k of proc(5): utime 14, stime 15, cutime 16, cstime 17; ppid 4
    total = sum(int(v) for v in fields[11:15])
    children: dict[str, list[tuple[str, list[str]]]] = {}
    try:
        pids = [name for name in os.listdir("/proc") if name.isdigit()]
    except OSError:
        return total
    for pid in pids:
        other = _stat_fields(pid)
        if other is not None and pid != me:
            children.setdefault(other[1], []).append((pid, other))
    todo = [me]
    while todo:
        for pid, other in children.get(todo.pop(), []):
            total += sum(int(v) for v in other[11:15])
            todo.append(pid)
    return total


class CpuMeter:
    """Other processes' share of the usable CPUs' time from the meter's start to `share()`:
    (busy ticks of those CPUs - this process's own ticks, descendants included) / all their ticks.

    0 on a machine where only this run works; 0.5 on 2 cores where another process kept one core busy.
    None without /proc (not Linux)."""

    def __init__(self):
        self.started = time.monotonic()
        self._start = (cpu_ticks(), own_cpu_ticks())

    def share(self) -> float | None:
        machine, own = cpu_ticks(), own_cpu_ticks()
        (machine0, own0) = self._start
        if machine is None or machine0 is None or own is None or own0 is None:
            return None
        total = machine[1] - machine0[1]
        if total <= 0:
            return None
        others = (machine[0] - machine0[0]) - (own - own0)
        return min(1.0, max(0.0, others / total))

    def seconds(self) -> float:
        return time.monotonic() - self.started


def background_busy(seconds: float = 2.0) -> float | None:
    """Other processes' share of the usable CPUs' time over `seconds` while this process sleeps."""
    meter = CpuMeter()
    time.sleep(seconds)
    return meter.share()
