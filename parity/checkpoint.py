"""Training checkpoints: one .npz per checkpoint (parameters, optimizer state, JSON metadata), written
atomically, so that a crash or a kill at any moment leaves the previous checkpoint whole.

    save_checkpoint(path, weights, meta, optimizer=None)
    load_checkpoint(path) -> (weights, optimizer arrays, meta)
    checkpoint_paths(out_dir, framework, seed) -> (last, best)
    config_key(run) -> what a checkpoint must agree on to be resumed
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from parity.config import RunConfig

CHECKPOINT_VERSION = 1


def save_checkpoint(path: Path, weights: dict[str, np.ndarray], meta: dict[str, Any],
                    optimizer: dict[str, np.ndarray] | None = None) -> None:
    """One .npz (parameters under param/, optimizer state under opt/, JSON metadata), written to a
    temporary file in the same folder and renamed over `path`: a crash leaves the old file whole."""
    arrays = {f"param/{k}": v for k, v in weights.items()}
    arrays.update(optimizer or {})
    arrays["meta"] = np.array(json.dumps(meta))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as handle:
        np.savez(handle, **arrays)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def load_checkpoint(path: Path) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, Any]]:
    """-> (weights, optimizer arrays, meta)."""
    with np.load(path, allow_pickle=False) as stored:
        arrays = {k: stored[k] for k in stored.files}
    meta = json.loads(str(arrays.pop("meta")))
    weights = {k[len("param/"):]: v for k, v in arrays.items() if k.startswith("param/")}
    optimizer = {k: v for k, v in arrays.items() if k.startswith("opt/")}
    return weights, optimizer, meta


def checkpoint_paths(out_dir: Path, framework: str, seed: int) -> tuple[Path, Path]:
    folder = out_dir / "checkpoints"
    return folder / f"{framework}-seed{seed}-last.npz", folder / f"{framework}-seed{seed}-best.npz"




def config_key(run: RunConfig) -> dict[str, Any]:
    """What a checkpoint must agree on to be resumed (the epoch budget may grow)."""
    values = run.to_dict()
    values["train"] = {k: v for k, v in values["train"].items() if k != "epochs"}
    return json.loads(json.dumps(values))  # as a checkpoint stores it (tuples become lists)
