"""Writing files: the one JSON writer, atomic text files, and a check that an output folder is writable.

Every JSON file the harness writes goes through `write_json`: atomically (a temporary file in the same
folder, flushed to disk, renamed over the target, so a crash or a Ctrl-C never leaves half a file), and
with the same envelope in every file:

    schema_version   this layout's version (SCHEMA_VERSION)
    command          what the file holds (ops, optim, models, train, sweep, compare, bench, report, run, ...)
    argv             the command line that wrote it
    created          when (UTC, ISO 8601)
    versions         poincare-parity, numpy, scipy, jax, jaxlib, flax, optax, torch, geoopt
    device           where it ran (CPU model, usable CPUs, the frameworks' devices)

A command states its output paths before it starts working (`check_writable`), so an unwritable folder
fails in a second, not after an hour of training.
"""

from __future__ import annotations

import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from parity import sysinfo
from parity.errors import UsageError

SCHEMA_VERSION = 2


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "to_dict"):
        return value.to_dict()
    raise TypeError(f"not JSON-able: {type(value).__name__}")


def _finite(value: Any) -> Any:
    """NaN and infinities become null: JSON has no such numbers, and strict readers refuse them."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def envelope(command: str, device: str = "cpu") -> dict[str, Any]:
    env = sysinfo.environment(device)
    return {"schema_version": SCHEMA_VERSION, "command": command, "argv": ["poincare-parity", *sys.argv[1:]],
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "versions": env["versions"],
            "device": env["device"]}


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write `text` to `path` through a temporary file in the same folder and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def write_json(path: str | Path, payload: dict[str, Any], *, command: str, device: str = "cpu") -> Path:
    """`payload` with the envelope (see the module docstring) as JSON at `path`, atomically.

    The payload's own keys win over the envelope's (a bench file keeps its detailed `device`, a sweep
    says `"command": "sweep"`), except `schema_version`."""
    document = {**envelope(command, device), **payload, "schema_version": SCHEMA_VERSION}
    text = json.dumps(_finite(json.loads(json.dumps(document, default=_jsonable))), indent=1, allow_nan=False)
    return atomic_write_text(path, text + "\n")


def check_writable(*paths: str | Path | None, folders: tuple[str | Path, ...] = ()) -> None:
    """Make sure every file path can be created (its folder exists or can be made and takes a new file,
    and the path is not a folder) and every folder in `folders` too; raise UsageError naming the first
    that cannot. Each folder is probed by creating and removing an empty file of ours (permission bits
    alone say nothing to root, nor about read-only file systems)."""
    files = [Path(p) for p in paths if p is not None]
    for path in files:
        if path.is_dir():
            raise UsageError(f"cannot write {path}: it is a folder (give a file name)")
    for folder in [p.parent for p in files] + [Path(f) for f in folders]:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            in_the_way = next((p for p in (folder, *folder.parents) if p.exists() and not p.is_dir()), None)
            why = f"{in_the_way} is a file, not a folder" if in_the_way else (error.strerror or str(error))
            raise UsageError(f"cannot create the output folder {folder}: {why}") from None
        try:
            handle, probe = tempfile.mkstemp(prefix=".write-test-", dir=folder)
        except OSError as error:
            raise UsageError(f"cannot write to the output folder {folder}: {error.strerror or error}") from None
        os.close(handle)
        os.unlink(probe)
