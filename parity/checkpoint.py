"""Training checkpoints: one .npz per checkpoint (parameters, optimizer state, JSON metadata), written
atomically, so that a crash or a kill at any moment leaves the previous checkpoint whole.

    save_checkpoint(path, weights, meta, optimizer=None)
    load_checkpoint(path, run=None, framework=None) -> (weights, optimizer arrays, meta)
    checkpoint_paths(out_dir, framework, seed) -> (last, best)
    config_key(run) -> what a checkpoint must agree on to be resumed
    config_hash(run) -> sha256 of config_key(run) as canonical JSON; every checkpoint carries it

A checkpoint that cannot be read (truncated, corrupt, not a checkpoint) or that another run wrote (its
configuration hash is not this run's) raises `CheckpointError`, a usage error naming the file, the run
that wrote it and what to do.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from parity.config import RunConfig
from parity.errors import UsageError

CHECKPOINT_VERSION = 2  # 2: meta carries config_sha256 and run_dir

# the checkpoint files a training run writes in its folder's checkpoints/ (and their temporary files)
CHECKPOINT_NAME = re.compile(r"^(?:jax|torch)-seed\d+-(?:last|best)\.npz(?:\.tmp)?$")

WHAT_TO_DO = "delete it, or start this run afresh with --overwrite (or train into another --run-name / --out)"


class CheckpointError(UsageError, ValueError):
    """A checkpoint that cannot be read, or that another run (another configuration) wrote."""


def config_key(run: RunConfig) -> dict[str, Any]:
    """What a checkpoint must agree on to be resumed (the epoch budget may grow)."""
    values = run.to_dict()
    values["train"] = {k: v for k, v in values["train"].items() if k != "epochs"}
    return json.loads(json.dumps(values))  # as a checkpoint stores it (tuples become lists)


def config_hash(run: RunConfig) -> str:
    """sha256 of `config_key(run)` as canonical JSON (keys sorted, no spaces)."""
    text = json.dumps(config_key(run), sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode()).hexdigest()


def save_checkpoint(path: Path, weights: dict[str, np.ndarray], meta: dict[str, Any],
                    optimizer: dict[str, np.ndarray] | None = None) -> None:
    """One .npz (parameters under param/, optimizer state under opt/, JSON metadata), written to a
    temporary file in the same folder and renamed over `path`: a crash leaves the old file whole."""
    arrays = {f"param/{k}": v for k, v in weights.items()}
    arrays.update(optimizer or {})
    arrays["meta"] = np.array(json.dumps(meta))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as handle:
            np.savez(handle, **arrays)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:  # an error or Ctrl-C mid-write: drop the half-written temporary file, the old checkpoint stays
        if tmp.exists():
            tmp.unlink()


def load_checkpoint(path: Path, run: RunConfig | None = None, framework: str | None = None
                    ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, Any]]:
    """-> (weights, optimizer arrays, meta). With `run` (and `framework`), the checkpoint must have been
    written for that configuration (its `config_hash`) and framework, else `CheckpointError`."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"the checkpoint {path} does not exist")
    try:
        with np.load(path, allow_pickle=False) as stored:
            arrays = {k: stored[k] for k in stored.files}
        meta = json.loads(str(arrays.pop("meta")))
        if not isinstance(meta, dict):
            raise ValueError("its metadata is not a JSON object")
    except (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile, pickle.UnpicklingError) as error:
        reason = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
        raise CheckpointError(f"cannot read the checkpoint {path}: it is truncated, corrupt or not a checkpoint "
                              f"({reason}); {WHAT_TO_DO}") from None
    if run is not None:
        check_written_for(path, meta, run, framework)
    weights = {k[len("param/"):]: v for k, v in arrays.items() if k.startswith("param/")}
    optimizer = {k: v for k, v in arrays.items() if k.startswith("opt/")}
    return weights, optimizer, meta


def _differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    """'section.field: old -> new' for every leaf where two configuration dicts differ."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(old) | set(new)):
            out += _differences(old.get(key, "(absent)"), new.get(key, "(absent)"), f"{prefix}{key}.")
        return out
    return [] if old == new else [f"{prefix.rstrip('.')}: {json.dumps(old)} -> {json.dumps(new)}"]


def check_written_for(path: Path, meta: dict[str, Any], run: RunConfig, framework: str | None = None) -> None:
    """Refuse (`CheckpointError`) a checkpoint whose metadata says another configuration or framework wrote it."""
    expected = config_hash(run)
    stored = meta.get("config_sha256")
    writer = f"the run in {meta['run_dir']}" if meta.get("run_dir") else "an unknown run"
    if stored is None:
        reason = (f"carries no configuration hash (written by an older poincare-parity, checkpoint version "
                  f"{meta.get('version', '?')})")
    elif stored != expected:
        changed = _differences(meta.get("config"), config_key(run))
        reason = (f"was written by {writer} with another configuration (sha256 {stored[:12]}, this run's is "
                  f"{expected[:12]}" + (f"; differs in {', '.join(changed)}" if changed else "") + ")")
    elif framework is not None and meta.get("framework") != framework:
        reason = f"was written by {writer} for {meta.get('framework')}, not {framework}"
    else:
        return
    raise CheckpointError(f"the checkpoint {path} {reason}; {WHAT_TO_DO}")


def checkpoint_paths(out_dir: Path, framework: str, seed: int) -> tuple[Path, Path]:
    folder = out_dir / "checkpoints"
    return folder / f"{framework}-seed{seed}-last.npz", folder / f"{framework}-seed{seed}-best.npz"
