"""Training runs: train an autoencoder with JAX, PyTorch or both, from one configuration,
the same start weights, the same batches and the same dropout masks, and evaluate HR@10 / NDCG@10.

What one run does, per framework and seed:
- data: `parity.data.load_split`; the model trains on `split.fit` (training minus the validation
  carve-out), one row per user with at least one entry, in `batch_order(n_rows, batch, seed, epoch)`.
- start: `parity.convert.init_weights(model, seed)`, cast to the run's dtype, loaded into both sides.
- dropout: keep-masks drawn in numpy from (seed, epoch), shared by both frameworks (`epoch_masks`).
- every epoch: mean loss, validation HR@10 / NDCG@10 (input: the `fit` rows), a checkpoint written
  atomically (temporary file, then os.replace), and the best-by-validation weights kept beside it;
  for the hyperbolic model also the saturation of its code layer and of its decoder's last point
  (`saturation_stats`: norms relative to the ball's radius, share of users on the boundary).
- a NaN or Inf loss stops the run at once, naming the epoch and step; the last good checkpoint stays.
- early stopping: after `early_stopping_patience` epochs without a better validation HR@10.
- test: the best-by-validation weights, input the full `train` rows, HR@10 / NDCG@10 with 95% CIs
  (the test never chooses anything; for `seed` the items rated in training are not ranked).
- `--resume` continues from the last checkpoint to the same result as an uninterrupted run:
  batches and masks are functions of (seed, epoch), and parameters, optimizer state, history and
  early-stopping counters are restored exactly.
- `devices` > 1: data-parallel on that many devices (`parity.backend` sessions; each device trains its
  contiguous block of every batch), the same batches and masks, the same result as one device up to
  the order of the sums. The device count is no part of the configuration: a checkpoint written on N
  devices resumes on M (the run continues from the same state; every history row records the device
  count of its epoch).
- a run folder that already holds a run (train.json, checkpoints) is refused unless `existing` says
  "resume" (continue it; no checkpoint yet: start fresh) or "overwrite" (its train.json, checkpoints
  and sweep files are removed first, nothing else); every checkpoint carries its configuration's
  hash (`parity.checkpoint.config_hash`) and one of another configuration is refused, naming its run.

Output: `reports/<run-name>/train.json` (configuration, per-epoch history, test metrics, and for
several seeds / both frameworks the mean, std and the JAX-minus-PyTorch differences), checkpoints
under `reports/<run-name>/checkpoints/` (git-ignored).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from parity import backend, convert, metrics
from parity.backend import DevicesUnavailable, Session
from parity.baselines import score_heldout
from parity.checkpoint import (
    CHECKPOINT_NAME,
    CHECKPOINT_VERSION,
    checkpoint_paths,
    config_hash,
    config_key,
    load_checkpoint,
    save_checkpoint,
)
from parity.config import PROJECTION_EPS, DataConfig, ModelConfig, RunConfig
from parity.data import batch_order, dense_rows, epoch_masks, load_split
from parity.errors import ConfigError, TrainingDiverged, UsageError
from parity.files import check_writable
from parity.stats import mean_std

K = 10


def current_curvature(model: ModelConfig, weights: dict[str, np.ndarray]) -> float:
    """The curvature a hyperbolic model computes with: softplus(ball.isp_c) when it is learned, else model.c."""
    if not model.learn_c:
        return float(model.c)
    return float(np.logaddexp(0.0, np.float64(weights["ball.isp_c"])))


# ---------------------------------------------------------------------------------------------
# saturation of the hyperbolic code layer

# a code point this close (relative to the ball's radius) to the largest norm the projection allows
# counts as on the boundary
BOUNDARY_MARGIN = 1e-3


def saturation_stats(codes: np.ndarray, c: float, dtype: str) -> dict[str, float]:
    """How close the code points are to the ball's boundary.

    r = sqrt(c) |z| is a point's norm relative to the ball's radius 1 / sqrt(c) (0 at the origin, 1 on
    the boundary); `limit` = 1 - eps is the largest r the projection allows in `dtype` (0.996 in
    float32). Returns the mean and max of r and the fraction of points with r >= limit - 1e-3 (on the
    boundary, where the Möbius layers' gradients vanish and distances stop meaning much).
    """
    r = np.sqrt(c) * np.linalg.norm(np.asarray(codes, np.float64), axis=-1)
    limit = 1.0 - PROJECTION_EPS[dtype]
    return {"norm_mean": float(r.mean()), "norm_max": float(r.max()),
            "boundary_fraction": float(np.mean(r >= limit - BOUNDARY_MARGIN)), "limit": limit}


def layer_saturation(side: Session, model: ModelConfig, inputs, users: np.ndarray, *,
                     batch: int = 1024) -> tuple[dict[str, float], dict[str, float]]:
    """`saturation_stats` of the code layer and of the decoder's last point y for `users`' rows of
    `inputs` (dropout off). y is read back from the scores s = output_scale * log0(y): sqrt(c) |y| =
    tanh(sqrt(c) |s| / output_scale), so no second pass through the decoder is needed."""

    c = current_curvature(model, side.weights())
    codes, radii = [], []
    for start in range(0, len(users), batch):
        rows = dense_rows(inputs, users[start:start + batch], side.dtype)
        codes.append(side.code(rows))
        tangent_norm = np.linalg.norm(np.asarray(side.score(rows), np.float64), axis=-1) / model.output_scale
        radii.append(np.tanh(np.sqrt(c) * tangent_norm))
    radii = np.concatenate(radii)[:, None] / np.sqrt(c)  # points with those norms
    stats = saturation_stats(np.concatenate(codes), c, side.dtype), saturation_stats(radii, c, side.dtype)
    if model.learn_c:
        for entry in stats:
            entry["c"] = c
    return stats


# ---------------------------------------------------------------------------------------------
# evaluation


def evaluate(side: Session, heldout, inputs, *, n_bootstrap: int = 1000, batch: int = 1024):
    """HR@10 / NDCG@10 of `side`'s model on `heldout`, each user's input row taken from `inputs`."""

    scores = score_heldout(lambda users: side.score(dense_rows(inputs, users, side.dtype)), heldout, batch)
    return metrics.evaluate(scores, heldout, K, n_bootstrap=n_bootstrap, candidate_scores=heldout.protocol == "neumf")


# ---------------------------------------------------------------------------------------------
# the run folder: what a previous run left there, and what to do with it

# what to do with a run folder that already holds a run
EXISTING = ("refuse", "resume", "overwrite")
# the files a training run or sweep writes at the top of its folder (besides checkpoints/ and sweep points)
RUN_FILES = ("train.json", "sweep.json", "sweep.png")
# temporary files of parity.files.atomic_write_text left by a kill mid-write
_JSON_TMP = re.compile(r"^\.(?:train|sweep)\.json\.\d+\.tmp$")


class RunFolderInUse(UsageError):
    """The run folder already holds a run, and neither resuming nor overwriting it was asked for."""


def sweep_folder(out_dir: Path, name: str, value: Any) -> Path:
    """Where one value of a sweep over field `name` trains: OUT/<name>=<value>/."""
    return out_dir / f"{name}={value}"


def previous_run_files(out_dir: Path, *, temporaries: bool = True) -> list[Path]:
    """The files a previous training run or sweep of this tool left in `out_dir`, and nothing else:
    train.json, sweep.json, sweep.png, checkpoints/<framework>-seed<N>-{last,best}.npz, the same in each
    sweep point folder <field>=<value>/, and (with `temporaries`) what a kill mid-write left of them."""
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        return []
    found = [out_dir / name for name in RUN_FILES if (out_dir / name).is_file()]
    if (out_dir / "checkpoints").is_dir():
        found += sorted(p for p in (out_dir / "checkpoints").iterdir() if p.is_file() and CHECKPOINT_NAME.match(p.name))
    if temporaries:
        found += sorted(p for p in out_dir.iterdir() if p.is_file() and _JSON_TMP.match(p.name))
    for point in sorted(p for p in out_dir.iterdir() if p.is_dir() and "=" in p.name):
        found += previous_run_files(point, temporaries=temporaries)
    if not temporaries:
        found = [p for p in found if not p.name.endswith(".tmp")]
    return found


def check_run_folder(out_dir: Path, existing: str) -> None:
    """Before any work: `existing` is one of EXISTING; "refuse" raises `RunFolderInUse` if `out_dir` holds a
    previous run; the folder (and its checkpoints/, if there is one) can be written (`parity.files.check_writable`)."""
    if existing not in EXISTING:
        raise ValueError(f"existing={existing!r}: expected one of {', '.join(EXISTING)}")
    out_dir = Path(out_dir)
    if existing == "refuse":
        found = previous_run_files(out_dir, temporaries=False)
        if found:
            shown = ", ".join(str(p.relative_to(out_dir)) for p in found[:4]) + (", ..." if len(found) > 4 else "")
            raise RunFolderInUse(f"{out_dir} already holds a training run ({len(found)} file(s): {shown}); continue it "
                                 "with --resume, replace it with --overwrite (removes only those files), or choose "
                                 "another --run-name / --out")
    checkpoints = out_dir / "checkpoints"
    check_writable(folders=(out_dir, checkpoints) if checkpoints.exists() else (out_dir,))


def clear_run_folder(out_dir: Path) -> list[Path]:
    """Remove what `previous_run_files` finds (and the checkpoints/ and sweep point folders this leaves
    empty); -> the files removed. Anything else in the folder stays."""
    out_dir = Path(out_dir)
    removed = previous_run_files(out_dir)
    for path in removed:
        path.unlink()
    for folder in sorted({p.parent for p in removed} - {out_dir}, key=lambda p: len(p.parts), reverse=True):
        for candidate in (folder, folder.parent):
            if candidate != out_dir and candidate.is_dir() and not any(candidate.iterdir()):
                candidate.rmdir()
    return removed


def resume_points(out_dir: Path, frameworks: list[str], seeds: list[int]) -> dict[tuple[str, int], Path | None]:
    """For each (framework, seed): the last checkpoint `--resume` would continue from, or None (starts fresh)."""
    points = {}
    for seed in seeds:
        for framework in frameworks:
            last = checkpoint_paths(Path(out_dir), framework, seed)[0]
            points[(framework, seed)] = last if last.is_file() else None
    return points


# ---------------------------------------------------------------------------------------------
# the loop


def train_one(framework: str, run: RunConfig, split, *, out_dir: Path, resume: bool = False,
              progress: bool = True, devices: int = 1, device: str = "cpu") -> dict[str, Any]:
    """Train and evaluate one framework at `run.train.seed`; -> the JSON-able result. With `resume`, continue
    from `out_dir`'s last checkpoint of this framework and seed if there is one (it must be this
    configuration's; it may come from another device count), else start fresh. `devices` > 1: data-parallel
    on that many devices of kind `device` ("cpu" or "gpu")."""

    weights = {k: v.astype(run.train.dtype) for k, v in convert.init_weights(run.model, run.train.seed).items()}
    with backend.get(framework).session(run, weights, device=device, devices=devices) as side:
        return _train_session(side, framework, run, split, out_dir=out_dir, resume=resume, progress=progress)


def _train_session(side: Session, framework: str, run: RunConfig, split, *, out_dir: Path, resume: bool,
                   progress: bool) -> dict[str, Any]:
    """`train_one` on an open session (its weights are the start weights)."""
    t = run.train
    seed = t.seed
    last_path, best_path = checkpoint_paths(out_dir, framework, seed)
    users = split.fit_users()
    matrix = side.put_matrix(split.fit[users])

    state = {"epoch": -1, "history": [], "best_epoch": None, "best_hr": -math.inf, "best_ndcg": -math.inf,
             "since_best": 0, "finished": False, "stopped_early": False}
    resumed_from = None
    good_checkpoint = None  # the last checkpoint of this run known whole (a NaN stop points at it)
    if resume and last_path.exists():
        weights, optimizer, meta = load_checkpoint(last_path, run, framework)
        good_checkpoint = last_path
        side.load_weights(weights)
        side.load_optimizer_arrays(optimizer)
        state.update(meta["state"])
        if state["finished"] and not state["stopped_early"] and state["epoch"] + 1 < t.epochs:
            state["finished"] = False  # a larger epoch budget: carry on
        resumed_from = state["epoch"]

    run_hash, run_dir = config_hash(run), str(Path(out_dir).resolve())

    def meta() -> dict[str, Any]:
        return {"version": CHECKPOINT_VERSION, "framework": framework, "config": config_key(run),
                "config_sha256": run_hash, "run_dir": run_dir, "devices": side.devices, "state": state}

    bar = tqdm(range(state["epoch"] + 1, t.epochs if not state["finished"] else state["epoch"] + 1),
               desc=f"{framework} seed {seed}", disable=not progress, file=sys.stderr, unit="epoch")
    for epoch in bar:
        started = time.perf_counter()
        batches = batch_order(len(users), t.batch_size, seed, epoch)
        losses = side.train_epoch(matrix, batches, epoch_masks(run.model, t, seed, epoch, len(users)))
        bad = np.flatnonzero(~np.isfinite(losses).all(axis=1))
        if bad.size:
            raise TrainingDiverged(framework, seed, epoch, int(bad[0]), good_checkpoint)
        trained = time.perf_counter() - started
        val = evaluate(side, split.validation, split.fit, n_bootstrap=200)
        row = {"epoch": epoch, "loss": float(losses[:, 0].mean()), "val_hr": val.hr, "val_ndcg": val.ndcg}
        if run.model.kind == "hae":
            row["code_saturation"], row["output_saturation"] = layer_saturation(side, run.model, split.fit, users)
        row.update(devices=side.devices, seconds_train=trained, seconds_total=time.perf_counter() - started)
        if losses.shape[1] > 1:
            row["refeed_loss"] = float(losses[:, 1].mean())
        state["history"].append(row)
        state["epoch"] = epoch
        if (val.hr, val.ndcg) > (state["best_hr"], state["best_ndcg"]):
            state.update(best_epoch=epoch, best_hr=val.hr, best_ndcg=val.ndcg, since_best=0)
            save_checkpoint(best_path, side.weights(), meta())
        else:
            state["since_best"] += 1
        patience = t.early_stopping_patience
        if patience is not None and state["since_best"] >= patience:
            state.update(finished=True, stopped_early=True)
        elif epoch == t.epochs - 1:
            state["finished"] = True
        save_checkpoint(last_path, side.weights(), meta(), side.optimizer_arrays())
        good_checkpoint = last_path
        bar.set_postfix(loss=f"{row['loss']:.4g}", val_hr=f"{val.hr:.4f}", best=f"{state['best_hr']:.4f}")
        if state["stopped_early"]:
            break
    bar.close()

    if state["best_epoch"] is None:
        raise ValueError("no epoch was trained (epochs = 0?)")
    side.load_weights(load_checkpoint(best_path, run, framework)[0])
    test = evaluate(side, split.test, split.train)
    result = {
        "framework": framework, "seed": seed, "dtype": t.dtype, "devices": side.devices,
        "epochs_run": state["epoch"] + 1,
        "stopped_early": state["stopped_early"], "best_epoch": state["best_epoch"],
        "validation": {"hr": state["best_hr"], "ndcg": state["best_ndcg"]}, "test": test.to_dict(),
        "history": state["history"], "resumed_from_epoch": resumed_from, "config_sha256": run_hash,
        "checkpoints": {"last": str(last_path), "best": str(best_path)},
    }
    best_row = next(h for h in state["history"] if h["epoch"] == state["best_epoch"])
    if "code_saturation" in best_row:  # the hyperbolic model: the code layer of the weights tested
        result["code_saturation"] = best_row["code_saturation"]
        result["output_saturation"] = best_row["output_saturation"]
    return result


def summarize(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Per framework: mean / std over seeds of test and validation HR, NDCG; and per seed the
    JAX-minus-PyTorch differences when both ran."""
    summary: dict[str, Any] = {}
    for fw in sorted({r["framework"] for r in results}):
        rows = [r for r in results if r["framework"] == fw]
        summary[fw] = {
            "test_hr": mean_std([r["test"]["hr"] for r in rows]),
            "test_ndcg": mean_std([r["test"]["ndcg"] for r in rows]),
            "val_hr": mean_std([r["validation"]["hr"] for r in rows]),
            "seeds": [r["seed"] for r in rows],
        }
    by_seed = {}
    for r in results:
        by_seed.setdefault(r["seed"], {})[r["framework"]] = r
    diffs = []
    for seed, pair in sorted(by_seed.items()):
        if {"jax", "torch"} <= set(pair):
            j, t = pair["jax"], pair["torch"]
            n = min(len(j["history"]), len(t["history"]))
            gaps = [abs(a["loss"] - b["loss"]) / abs(b["loss"]) for a, b in zip(j["history"][:n], t["history"][:n])]
            diffs.append({"seed": seed, "test_hr": j["test"]["hr"] - t["test"]["hr"],
                          "test_ndcg": j["test"]["ndcg"] - t["test"]["ndcg"],
                          "max_epoch_loss_rel_gap": max(gaps, default=0.0)})
    if diffs:
        summary["jax_minus_torch"] = diffs
        summary["max_abs_test_hr_diff"] = max(abs(d["test_hr"]) for d in diffs)
    return summary


def run_training(run: RunConfig, *, frameworks: list[str], seeds: list[int], out_dir: Path,
                 existing: str = "refuse", progress: bool = True, data_dir=None, split=None, devices: int = 1,
                 device: str = "cpu") -> dict[str, Any]:
    """Train every framework at every seed into `out_dir`; -> the train.json payload.

    `existing` says what to do with a run already in `out_dir` (train.json or checkpoints): "refuse"
    (`RunFolderInUse`, before any data is read), "resume" (each framework and seed continues from its
    last checkpoint, or starts fresh without one) or "overwrite" (that run's files are removed once
    the data has loaded; nothing else in the folder is touched). `devices` > 1: each run data-parallel
    on that many devices of kind `device` (`DevicesUnavailable`, a usage error, before any data is read
    if they are not there)."""

    _distinct("seeds", seeds)
    _distinct("frameworks", frameworks)
    check_devices(frameworks, devices, device)
    out_dir = Path(out_dir)
    check_run_folder(out_dir, existing)
    if split is None:
        split = load_split(run.data, data_dir)
    if existing == "overwrite":
        clear_run_folder(out_dir)
    if run.model.layer_sizes[0] != split.n_items:  # the input width is always the dataset's item count
        run = dataclasses.replace(run, model=dataclasses.replace(
            run.model, layer_sizes=(split.n_items, *run.model.layer_sizes[1:])))
    results = []
    with contextlib.ExitStack() as groups:
        for framework in frameworks:  # PyTorch's rank processes start once for every seed
            groups.enter_context(backend.get(framework).device_group(devices, device=device))
        for seed in seeds:
            seeded = dataclasses.replace(run, train=dataclasses.replace(run.train, seed=seed))
            for framework in frameworks:
                results.append(train_one(framework, seeded, split, out_dir=out_dir, resume=existing == "resume",
                                         progress=progress, devices=devices, device=device))
    return {"command": "train", "config": run.to_dict(), "split": split.info, "frameworks": frameworks,
            "seeds": seeds, "devices": devices, "runs": results, "summary": summarize(results)}


def check_devices(frameworks: list[str], devices: int, device: str = "cpu") -> None:
    """`devices` is a count >= 1 that every framework of `frameworks` can train on (devices of kind
    `device`), else `DevicesUnavailable` (a usage error) saying what is missing."""
    if not isinstance(devices, int) or devices < 1:
        raise UsageError(f"devices must be an integer >= 1, got {devices!r}")
    for framework in frameworks:
        problem = backend.get(framework).check_devices(devices, device)
        if problem:
            raise DevicesUnavailable(problem)


def _distinct(what: str, values: list) -> None:
    repeated = sorted({str(v) for v in values if list(values).count(v) > 1})
    if repeated:
        raise UsageError(f"{what} repeat ({', '.join(repeated)}): each would overwrite the other's checkpoints")


# ---------------------------------------------------------------------------------------------
# a sweep over one configuration field (e.g. the curvature)


def sweep_runs(run: RunConfig, section: str, name: str, values: list[Any]) -> list[RunConfig]:
    """`run` with `section.name` set to each value, every one checked (`ConfigError` naming the field and
    value), and no two landing in the same folder."""
    runs, folders = [], set()
    for value in values:
        values_of = run.to_dict()
        if section not in values_of:
            raise ConfigError(f"sweep over {section}.{name}: unknown section {section!r}")
        values_of[section][name] = value
        runs.append(RunConfig.from_dict(values_of))  # refuses an unknown field or a value out of range
        folder = sweep_folder(Path(), name, value)
        if folder in folders:
            raise ConfigError(f"sweep over {section}.{name}: the value {value!r} is given twice")
        folders.add(folder)
    return runs


def _sweep_point(value: Any, result: dict[str, Any]) -> dict[str, Any]:
    """One value of a sweep: per framework, the means over seeds of validation and test HR@10 /
    NDCG@10 and of the code layer's saturation at the best validation epoch (hyperbolic model)."""
    point: dict[str, Any] = {"value": value, "frameworks": {}}
    for fw in result["frameworks"]:
        runs = [r for r in result["runs"] if r["framework"] == fw]
        mean = lambda values: float(np.mean(values))
        entry = {"val_hr": mean([r["validation"]["hr"] for r in runs]),
                 "val_ndcg": mean([r["validation"]["ndcg"] for r in runs]),
                 "test_hr": mean([r["test"]["hr"] for r in runs]), "test_ndcg": mean([r["test"]["ndcg"] for r in runs]),
                 "best_epoch": [r["best_epoch"] + 1 for r in runs], "epochs_run": [r["epochs_run"] for r in runs],
                 "seeds": [r["seed"] for r in runs]}
        if len(runs) == 1:
            entry.update({f"test_{k}": runs[0]["test"][k] for k in ("hr_low", "hr_high", "ndcg_low", "ndcg_high")})
        for layer in ("code_saturation", "output_saturation"):
            saturations = [r[layer] for r in runs if layer in r]
            if saturations:
                entry[layer] = {k: mean([s[k] for s in saturations]) for k in saturations[0]}
                entry[f"{layer}_last_epoch"] = {
                    k: mean([r["history"][-1][layer][k] for r in runs]) for k in saturations[0]}
        finite = all(np.isfinite(h["loss"]) for r in runs for h in r["history"])
        entry["all_losses_finite"] = bool(finite)
        point["frameworks"][fw] = entry
    return point


def run_sweep(run: RunConfig, section: str, name: str, values: list[Any], *, frameworks: list[str],
              seeds: list[int], out_dir: Path, existing: str = "refuse", progress: bool = True, data_dir=None,
              split=None, on_point: Callable[[Path, dict[str, Any]], None] | None = None, devices: int = 1,
              device: str = "cpu") -> dict[str, Any]:
    """`run_training` once per value of `section.name`, each into `out_dir/<name>=<value>/`;
    -> the sweep JSON (`"command": "sweep"`): per value and framework, validation and test HR@10 /
    NDCG@10 and the code layer's saturation; `chosen_by_validation` is the value with the best
    validation HR@10 (then NDCG@10) of the first framework. The test never chooses.

    `on_point(folder, result)` is called with each value's training result as soon as it is done (the
    command layer writes it to folder/train.json there, so a long sweep keeps what it finished).
    `existing` as in `run_training`, for the whole sweep folder: "refuse" if any part of a previous run is
    there, "resume" each value's run, or "overwrite" (all of the previous sweep's files, once the data
    has loaded). `devices`, `device` as in `run_training`."""

    out_dir = Path(out_dir)
    point_runs = sweep_runs(run, section, name, values)  # every value checked before any work
    check_devices(frameworks, devices, device)
    check_run_folder(out_dir, existing)
    for value in values:
        check_run_folder(sweep_folder(out_dir, name, value), existing)
    if split is None:
        split = load_split(run.data, data_dir)
    if existing == "overwrite":
        clear_run_folder(out_dir)
    points, runs = [], []
    with contextlib.ExitStack() as groups:
        for framework in frameworks:  # PyTorch's rank processes start once for the whole sweep
            groups.enter_context(backend.get(framework).device_group(devices, device=device))
        for value, point_run in zip(values, point_runs):
            folder = sweep_folder(out_dir, name, value)
            result = run_training(point_run, frameworks=frameworks, seeds=seeds, out_dir=folder,
                                  existing="resume" if existing == "resume" else "refuse", progress=progress,
                                  split=split, devices=devices, device=device)
            result["run_name"] = f"{out_dir.name}/{folder.name}"
            if on_point is not None:
                on_point(folder, result)
            runs.append(str(folder / "train.json"))
            points.append(_sweep_point(value, result))
    first = frameworks[0]
    best = max(points, key=lambda p: (p["frameworks"][first]["val_hr"], p["frameworks"][first]["val_ndcg"]))
    return {"command": "sweep", "field": f"{section}.{name}", "values": values, "config": run.to_dict(),
            "split": split.info, "frameworks": frameworks, "seeds": seeds, "devices": devices, "points": points,
            "train_json": runs,
            "chosen_by_validation": best["value"],
            "saturation_definition": "r = sqrt(c) |z| for each user's code point z (code_saturation) or decoder "
                                     "output point y (output_saturation), no dropout, validation inputs; norm_mean / "
                                     "norm_max: mean / max of r; boundary_fraction: share of users with r >= limit - "
                                     "1e-3, limit = 1 - eps the largest r the projection allows"}


# ---------------------------------------------------------------------------------------------
# two trained configurations, compared on the same test users


def _test_per_user(payload: dict[str, Any], framework: str, seed: int, split) -> tuple[np.ndarray, np.ndarray, float]:
    """Per test user hit@10 and NDCG@10 of one run's best-validation checkpoint (and the run's recorded
    test HR@10, to check the re-scoring against)."""

    run = RunConfig.from_dict(payload["config"])
    record = next((r for r in payload["runs"] if r["framework"] == framework and r["seed"] == seed), None)
    if record is None:
        raise ValueError(f"no {framework} run with seed {seed} in {payload.get('run_name')}")
    seeded = dataclasses.replace(run, train=dataclasses.replace(run.train, seed=seed, dtype=record["dtype"]))
    weights = load_checkpoint(Path(record["checkpoints"]["best"]), seeded, framework)[0]  # this run's, or refused
    side = backend.get(framework).session(seeded, weights)
    scores = score_heldout(lambda users: side.score(dense_rows(split.train, users, side.dtype)), split.test)
    hit, ndcg = metrics.per_user(scores, split.test, K, candidate_scores=split.test.protocol == "neumf")
    return hit.astype(np.float64), ndcg, record["test"]["hr"]


def paired_comparison(payload_a: dict[str, Any], payload_b: dict[str, Any], *, framework: str = "jax",
                      n_bootstrap: int = 2000, data_dir=None, split=None) -> dict[str, Any]:
    """Test HR@10 / NDCG@10 of run A minus run B (two `train` results on the same data and protocol),
    from their best-validation checkpoints, paired by seed and by test user.

    Per seed s and user u the difference d_su = hit_A(s, u) - hit_B(s, u); the estimate is the mean
    over seeds and users, and its 95% interval a percentile bootstrap over users of the per-user mean
    over seeds (the users are resampled once for all seeds, so the interval carries the test set's
    sampling and the seeds' spread together). Also the seed-level means and a t interval over seeds.
    """

    data_a, data_b = payload_a["config"]["data"], payload_b["config"]["data"]
    if (data_a["dataset"], data_a["protocol"]) != (data_b["dataset"], data_b["protocol"]):
        raise ValueError(f"the runs were evaluated on different data: {data_a} vs {data_b}")
    seeds = sorted({r["seed"] for r in payload_a["runs"] if r["framework"] == framework}
                   & {r["seed"] for r in payload_b["runs"] if r["framework"] == framework})
    if not seeds:
        raise ValueError(f"the two runs share no {framework} seed")
    if split is None:
        split = load_split(DataConfig(**data_a), data_dir)
    hr_diff, ndcg_diff, per_seed = [], [], []
    for seed in seeds:
        hit_a, ndcg_a, recorded_a = _test_per_user(payload_a, framework, seed, split)
        hit_b, ndcg_b, recorded_b = _test_per_user(payload_b, framework, seed, split)
        for got, recorded, name in ((hit_a.mean(), recorded_a, "A"), (hit_b.mean(), recorded_b, "B")):
            if abs(got - recorded) > 1e-9:
                raise ValueError(f"run {name}, seed {seed}: re-scored test HR@10 {got:.6f} differs from the recorded "
                                 f"{recorded:.6f} (checkpoint changed since?)")
        hr_diff.append(hit_a - hit_b)
        ndcg_diff.append(ndcg_a - ndcg_b)
        per_seed.append({"seed": seed, "hr_a": float(hit_a.mean()), "hr_b": float(hit_b.mean()),
                         "ndcg_a": float(ndcg_a.mean()), "ndcg_b": float(ndcg_b.mean())})

    def summary(diffs: list[np.ndarray], key: str) -> dict[str, Any]:
        per_user_mean = np.mean(diffs, axis=0)
        low, high = metrics.bootstrap_interval(per_user_mean, n_resamples=n_bootstrap)
        seed_diffs = np.array([p[f"{key}_a"] - p[f"{key}_b"] for p in per_seed])
        out = {"diff": float(per_user_mean.mean()), "low": low, "high": high,
               "a_mean": float(np.mean([p[f"{key}_a"] for p in per_seed])),
               "b_mean": float(np.mean([p[f"{key}_b"] for p in per_seed])), "seed_diffs": seed_diffs.tolist()}
        if len(seeds) > 1:
            from scipy import stats

            half = stats.t.ppf(0.975, len(seeds) - 1) * seed_diffs.std(ddof=1) / np.sqrt(len(seeds))
            out.update(seed_t_low=float(seed_diffs.mean() - half), seed_t_high=float(seed_diffs.mean() + half))
        return out

    return {"command": "compare", "a": payload_a.get("run_name"), "b": payload_b.get("run_name"),
            "framework": framework, "seeds": seeds, "n_users": int(len(split.test.users)),
            "dataset": data_a["dataset"], "protocol": data_a["protocol"],
            "hr": summary(hr_diff, "hr"), "ndcg": summary(ndcg_diff, "ndcg"), "per_seed": per_seed,
            "method": "paired by seed and test user; 95% percentile bootstrap over users of the per-user mean "
                      "difference over seeds; seed_t_*: t interval over the seed-level differences"}


