"""The report's inputs: which command wrote each JSON file, and what it says about where it ran.

    classify(payload) -> kind or None       ops / optim / models / any other parity suite, train, sweep,
                                            compare, bench, run, baselines
    expand_inputs(paths) -> [Path]          files as given; a folder gives its *.json and */train.json
    load_inputs(paths) -> Inputs            the payloads by kind, and the files left out (with why)
    environment_of(payload) -> (versions or None, device or None)

Parity files are told apart by content: `{"suite": NAME, "records": [...]}` (any NAME: the project's
own ops, optim and models, or a user's suite saved from the public check API, with `"name"`).
Every file written through `parity.files.write_json` carries `versions` and `device`; older files
may carry neither (they are shown as "not recorded"), a bench file keeps its detailed `device`.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from parity.errors import UsageError

COMMANDS = ("train", "sweep", "compare", "bench", "run", "baselines")
PARITY_SUITES = ("ops", "optim", "models")  # the project's own suites, always listed (missing or not)


class ReportError(UsageError):
    """A user mistake (no inputs, unreadable file): reported without a traceback."""


@dataclasses.dataclass
class Inputs:
    """The payloads read, in the order given: `by_kind[kind] = [(path, payload), ...]`."""

    by_kind: dict[str, list[tuple[Path, dict[str, Any]]]]
    ignored: list[dict[str, str]]

    def last(self, kind: str) -> dict[str, Any] | None:
        """The last file of `kind` (a later file of the same kind replaces an earlier one)."""
        items = self.by_kind.get(kind)
        return items[-1][1] if items else None

    def all(self, kind: str) -> list[tuple[Path, dict[str, Any]]]:
        return self.by_kind.get(kind, [])

    def suites(self) -> list[str]:
        """Every parity suite among the inputs: ops, optim, models first, then the others as found."""
        others = [k for k in self.by_kind if k not in COMMANDS and k not in PARITY_SUITES]
        return [k for k in PARITY_SUITES if k in self.by_kind] + others

    def files(self) -> list[tuple[str, Path, dict[str, Any]]]:
        return [(kind, path, payload) for kind, items in self.by_kind.items() for path, payload in items]


def classify(payload: Any) -> str | None:
    """Which command wrote `payload`: a parity suite's name, train, sweep, compare, bench, run,
    baselines; None if none of them (a report's own summary included)."""
    if not isinstance(payload, dict):
        return None
    if payload.get("command") in COMMANDS:
        return payload["command"]
    if isinstance(payload.get("suite"), str) and payload["suite"] and isinstance(payload.get("records"), list):
        return payload["suite"]
    if "popularity" in payload and "protocol" in payload:
        return "baselines"
    return None


def expand_inputs(paths: list[str | Path]) -> list[Path]:
    """Files as given; a folder gives its *.json (not report.json) and */train.json."""
    out: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = sorted(p for p in path.glob("*.json") if p.name != "report.json")
            found += sorted(path.glob("*/train.json"))
            out.extend(found)
        elif path.exists():
            out.append(path)
        else:
            raise ReportError(f"no such file or folder: {path}")
    seen, unique = set(), []
    for p in out:
        key = p.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(p)
    return unique


def load_inputs(paths: list[Path]) -> Inputs:
    found: dict[str, list[tuple[Path, dict[str, Any]]]] = {}
    ignored = []
    for path in paths:
        try:
            payload = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as error:
            ignored.append({"path": str(path), "why": f"unreadable: {error}"})
            continue
        kind = classify(payload)
        if kind is None:
            why = ("a report's own summary" if isinstance(payload, dict) and payload.get("command") == "report"
                   else "not written by a poincare-parity command")
            ignored.append({"path": str(path), "why": why})
            continue
        found.setdefault(kind, []).append((path, payload))
    return Inputs(found, ignored)


# ---------------------------------------------------------------------------------------------
# where a file's numbers were measured


def environment_of(payload: dict[str, Any]) -> tuple[dict[str, str] | None, dict[str, Any] | None]:
    """(versions, device) as the file records them; None for what it does not record.

    Three shapes are read: the envelope's `device` ({kind, cpu_model, usable_cpus, ...}), the bench's
    detailed `device` ({device, cpu_model, usable_cpus, gpu, versions, ...}) and older files'
    `"device": "cpu"` next to a `versions` object."""
    device = payload.get("device")
    versions = payload.get("versions")
    if not isinstance(versions, dict) and isinstance(device, dict) and isinstance(device.get("versions"), dict):
        versions = device["versions"]
    if isinstance(device, str):
        device = {"kind": device}
    elif isinstance(device, dict):
        device = {**device, "kind": device.get("kind") or device.get("device")}
    else:
        device = None
    versions = {k: str(v) for k, v in versions.items() if v is not None} if isinstance(versions, dict) else None
    return versions or None, device


def describe_device(device: dict[str, Any]) -> str:
    """'cpu: AMD EPYC, 2 usable CPUs' / 'gpu: NVIDIA H200 (driver 570.1); host AMD EPYC, 16 usable CPUs'."""
    parts = []
    gpu = device.get("gpu") if isinstance(device.get("gpu"), dict) else {}
    gpu_name = gpu.get("torch_name") or gpu.get("jax_device_kind")
    if not gpu_name:
        gpu_name = next((d.split(":", 1)[1] for d in device.get("jax_devices") or []
                         if isinstance(d, str) and d.startswith(("gpu:", "cuda:"))), None)
    if gpu_name:
        smi = (gpu.get("nvidia_smi") or [{}])[0] or {}
        parts.append(gpu_name + (f" (driver {smi['driver']})" if smi.get("driver") else ""))
    cpu = device.get("cpu_model")
    if cpu:
        cpus = device.get("usable_cpus")
        text = cpu + (f", {cpus} usable CPUs" if cpus else "")
        parts.append(f"host {text}" if gpu_name else text)
    kind = device.get("kind") or ("gpu" if gpu_name else None)
    body = "; ".join(parts)
    if kind and body:
        return f"{kind}: {body}"
    return kind or body or "not recorded"
