"""`poincare-parity train`: train an autoencoder with JAX, PyTorch or both, from one configuration,
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

Output: `reports/<run-name>/train.json` (configuration, per-epoch history, test metrics, and for
several seeds / both frameworks the mean, std and the JAX-minus-PyTorch differences), checkpoints
under `reports/<run-name>/checkpoints/` (git-ignored).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from parity import config as cfg
from parity.config import DataConfig, ModelConfig, OptimizerConfig, TrainConfig

K = 10
CHECKPOINT_VERSION = 1


class TrainingDiverged(RuntimeError):
    """The loss became NaN or Inf; the message names where, and the last good checkpoint."""

    def __init__(self, framework: str, seed: int, epoch: int, step: int, checkpoint: Path | None):
        self.framework, self.seed, self.epoch, self.step, self.checkpoint = framework, seed, epoch, step, checkpoint
        kept = f"last good checkpoint kept: {checkpoint}" if checkpoint else "no checkpoint was written before it"
        super().__init__(f"{framework} (seed {seed}): the loss became NaN or Inf at epoch {epoch}, step {step}; "
                         f"training stopped ({kept})")


@dataclasses.dataclass(frozen=True)
class RunConfig:
    model: ModelConfig
    optimizer: OptimizerConfig
    data: DataConfig
    train: TrainConfig

    def to_dict(self) -> dict[str, Any]:
        return {name: cfg.to_dict(getattr(self, name)) for name in ("model", "optimizer", "data", "train")}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> RunConfig:
        unknown = set(values) - {"model", "optimizer", "data", "train"}
        if unknown:
            raise ValueError(f"unknown configuration section(s) {sorted(unknown)}")
        return cls(cfg.from_dict(ModelConfig, values.get("model", {})),
                   cfg.from_dict(OptimizerConfig, values.get("optimizer", {})),
                   cfg.from_dict(DataConfig, values.get("data", {})),
                   cfg.from_dict(TrainConfig, values.get("train", {})))


# ---------------------------------------------------------------------------------------------
# shared inputs: masks


def epoch_masks(model: ModelConfig, train: TrainConfig, seed: int, epoch: int, n_rows: int):
    """Dropout keep-masks for one epoch (numpy bool, rows in the order the batches consume them),
    as a `StepMasks`-shaped tuple (input, code, refeed_input, refeed_code); None where off."""
    n_items, code = model.layer_sizes[0], model.layer_sizes[-1]
    rng = np.random.default_rng(np.random.SeedSequence([seed, epoch, 0x6D61736B]))  # "mask": apart from batch_order's

    def draw(rate: float, width: int):
        return None if rate == 0.0 else rng.random((n_rows, width), dtype=np.float32) >= rate

    masks = [draw(model.input_dropout, n_items), draw(model.code_dropout, code)]
    if train.dense_refeeding:
        masks += [draw(model.input_dropout, n_items), draw(model.code_dropout, code)]
    else:
        masks += [None, None]
    return tuple(masks)


# ---------------------------------------------------------------------------------------------
# one framework behind one interface


def optimizer_for(framework: str, model: ModelConfig, optimizer: OptimizerConfig):
    """The Euclidean model trains with torch.optim / optax; the hyperbolic one with the Riemannian
    optimizers (geoopt's on the PyTorch side, `jax_impl.optim` on the JAX side), which move the ball
    parameters along the ball and the Euclidean weights as the Euclidean optimizer would."""
    if model.kind not in ("ae", "hae"):
        raise NotImplementedError(f"training for model kind {model.kind!r} is not wired into `train` yet")
    if framework == "jax":
        import jax_impl.train as side
    else:
        import torch_ref.train as side
    if model.kind == "hae":
        curvature = None
        if model.learn_c and framework == "jax":  # geoopt reads its learnable ball's c itself
            from jax_impl.models import learned_curvature as curvature
        return side.riemannian_optimizer(optimizer, curvature=curvature)
    return side.euclidean_optimizer(optimizer)


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
# geoopt's projection margin per dtype: no point gets further than (1 - eps) / sqrt(c) from the origin
BALL_EPS = {"float32": 4e-3, "float64": 1e-5}


def saturation_stats(codes: np.ndarray, c: float, dtype: str) -> dict[str, float]:
    """How close the code points are to the ball's boundary.

    r = sqrt(c) |z| is a point's norm relative to the ball's radius 1 / sqrt(c) (0 at the origin, 1 on
    the boundary); `limit` = 1 - eps is the largest r the projection allows in `dtype` (0.996 in
    float32). Returns the mean and max of r and the fraction of points with r >= limit - 1e-3 (on the
    boundary, where the Möbius layers' gradients vanish and distances stop meaning much).
    """
    r = np.sqrt(c) * np.linalg.norm(np.asarray(codes, np.float64), axis=-1)
    limit = 1.0 - BALL_EPS.get(dtype, 1e-5)
    return {"norm_mean": float(r.mean()), "norm_max": float(r.max()),
            "boundary_fraction": float(np.mean(r >= limit - BOUNDARY_MARGIN)), "limit": limit}


def layer_saturation(side: Side, model: ModelConfig, inputs, users: np.ndarray, *,
                     batch: int = 1024) -> tuple[dict[str, float], dict[str, float]]:
    """`saturation_stats` of the code layer and of the decoder's last point y for `users`' rows of
    `inputs` (dropout off). y is read back from the scores s = output_scale * log0(y): sqrt(c) |y| =
    tanh(sqrt(c) |s| / output_scale), so no second pass through the decoder is needed."""
    from parity.data import dense_rows

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


class Side:
    """A framework's trainer behind the few calls the loop needs (numpy in, numpy out)."""

    def __init__(self, framework: str, run: RunConfig, weights: dict[str, np.ndarray]):
        from parity import convert

        self.framework, self.dtype = framework, run.train.dtype
        if framework == "jax":
            import jax

            if self.dtype == "float64":
                jax.config.update("jax_enable_x64", True)
            import jax_impl.train as jt

            self._masks = jt.StepMasks
            self.trainer = jt.Trainer(convert.jax_model(run.model, weights, self.dtype), optimizer_for(framework, run.model, run.optimizer),
                                      dense_refeeding=run.train.dense_refeeding)
        elif framework == "torch":
            import torch_ref.train as tt

            self._masks = tt.StepMasks
            self.trainer = tt.Trainer(convert.torch_model(run.model, weights, self.dtype), optimizer_for(framework, run.model, run.optimizer),
                                      dense_refeeding=run.train.dense_refeeding)
        else:
            raise ValueError(f"unknown framework {framework!r}")

    def put(self, array: np.ndarray):
        if self.framework == "jax":
            import jax.numpy as jnp

            return jnp.asarray(array)
        import torch

        return torch.from_numpy(array)

    def train_epoch(self, matrix, batches, masks) -> np.ndarray:
        return self.trainer.train_epoch(matrix, batches, self._masks(*masks))

    def score(self, batch: np.ndarray) -> np.ndarray:
        return self.trainer.score(batch)

    def code(self, batch: np.ndarray) -> np.ndarray:
        return self.trainer.code(batch)

    def weights(self) -> dict[str, np.ndarray]:
        from parity import convert

        if self.framework == "jax":
            return convert.extract_jax(self.trainer.params)
        return convert.extract_torch(self.trainer.model)

    def load_weights(self, weights: dict[str, np.ndarray]) -> None:
        from parity import convert

        if self.framework == "jax":
            convert.load_jax(self.trainer.params, weights)
        else:
            convert.load_torch(self.trainer.model, weights)

    def optimizer_arrays(self) -> dict[str, np.ndarray]:
        from parity import convert

        if self.framework == "jax":
            return convert.jax_tree_to_arrays(self.trainer.opt_state)
        return convert.torch_optimizer_to_arrays(self.trainer.optimizer)

    def load_optimizer_arrays(self, arrays: dict[str, np.ndarray]) -> None:
        from parity import convert

        if self.framework == "jax":
            template = self.trainer.optimizer.init(self.trainer.params)
            self.trainer.opt_state = convert.jax_tree_from_arrays(template, arrays)
        else:
            convert.torch_optimizer_from_arrays(self.trainer.optimizer, arrays)


# ---------------------------------------------------------------------------------------------
# checkpoints


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


# ---------------------------------------------------------------------------------------------
# evaluation


def evaluate(side: Side, heldout, inputs, *, n_bootstrap: int = 1000, batch: int = 1024):
    """HR@10 / NDCG@10 of `side`'s model on `heldout`, each user's input row taken from `inputs`."""
    from parity import metrics
    from parity.baselines import score_heldout
    from parity.data import dense_rows

    scores = score_heldout(lambda users: side.score(dense_rows(inputs, users, side.dtype)), heldout, batch)
    return metrics.evaluate(scores, heldout, K, n_bootstrap=n_bootstrap, candidate_scores=heldout.protocol == "neumf")


# ---------------------------------------------------------------------------------------------
# the loop


def _config_key(run: RunConfig) -> dict[str, Any]:
    """What a checkpoint must agree on to be resumed (the epoch budget may grow)."""
    values = run.to_dict()
    values["train"] = {k: v for k, v in values["train"].items() if k != "epochs"}
    return json.loads(json.dumps(values))  # as a checkpoint stores it (tuples become lists)


def train_one(framework: str, run: RunConfig, split, *, out_dir: Path, resume: bool = False,
              progress: bool = True) -> dict[str, Any]:
    """Train and evaluate one framework at `run.train.seed`; -> the JSON-able result."""
    from tqdm import tqdm

    from parity import convert
    from parity.data import batch_order, dense_rows

    t = run.train
    seed = t.seed
    last_path, best_path = checkpoint_paths(out_dir, framework, seed)
    side = Side(framework, run, {k: v.astype(t.dtype) for k, v in convert.init_weights(run.model, seed).items()})
    users = split.fit_users()
    matrix = side.put(dense_rows(split.fit, users, t.dtype))

    state = {"epoch": -1, "history": [], "best_epoch": None, "best_hr": -math.inf, "best_ndcg": -math.inf,
             "since_best": 0, "finished": False, "stopped_early": False}
    resumed_from = None
    if resume and last_path.exists():
        weights, optimizer, meta = load_checkpoint(last_path)
        if meta.get("config") != _config_key(run) or meta.get("framework") != framework:
            raise ValueError(f"{last_path} was written by another configuration; drop --resume or use another --run-name")
        side.load_weights(weights)
        side.load_optimizer_arrays(optimizer)
        state.update(meta["state"])
        if state["finished"] and not state["stopped_early"] and state["epoch"] + 1 < t.epochs:
            state["finished"] = False  # a larger epoch budget: carry on
        resumed_from = state["epoch"]

    def meta() -> dict[str, Any]:
        return {"version": CHECKPOINT_VERSION, "framework": framework, "config": _config_key(run), "state": state}

    bar = tqdm(range(state["epoch"] + 1, t.epochs if not state["finished"] else state["epoch"] + 1),
               desc=f"{framework} seed {seed}", disable=not progress, file=sys.stderr, unit="epoch")
    for epoch in bar:
        started = time.perf_counter()
        batches = batch_order(len(users), t.batch_size, seed, epoch)
        losses = side.train_epoch(matrix, batches, epoch_masks(run.model, t, seed, epoch, len(users)))
        bad = np.flatnonzero(~np.isfinite(losses).all(axis=1))
        if bad.size:
            raise TrainingDiverged(framework, seed, epoch, int(bad[0]), last_path if last_path.exists() else None)
        trained = time.perf_counter() - started
        val = evaluate(side, split.validation, split.fit, n_bootstrap=200)
        row = {"epoch": epoch, "loss": float(losses[:, 0].mean()), "val_hr": val.hr, "val_ndcg": val.ndcg}
        if run.model.kind == "hae":
            row["code_saturation"], row["output_saturation"] = layer_saturation(side, run.model, split.fit, users)
        row.update(seconds_train=trained, seconds_total=time.perf_counter() - started)
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
        bar.set_postfix(loss=f"{row['loss']:.4g}", val_hr=f"{val.hr:.4f}", best=f"{state['best_hr']:.4f}")
        if state["stopped_early"]:
            break
    bar.close()

    if state["best_epoch"] is None:
        raise ValueError("no epoch was trained (epochs = 0?)")
    side.load_weights(load_checkpoint(best_path)[0])
    test = evaluate(side, split.test, split.train)
    result = {
        "framework": framework, "seed": seed, "dtype": t.dtype, "epochs_run": state["epoch"] + 1,
        "stopped_early": state["stopped_early"], "best_epoch": state["best_epoch"],
        "validation": {"hr": state["best_hr"], "ndcg": state["best_ndcg"]}, "test": test.to_dict(),
        "history": state["history"], "resumed_from_epoch": resumed_from,
        "checkpoints": {"last": str(last_path), "best": str(best_path)},
    }
    best_row = next(h for h in state["history"] if h["epoch"] == state["best_epoch"])
    if "code_saturation" in best_row:  # the hyperbolic model: the code layer of the weights tested
        result["code_saturation"] = best_row["code_saturation"]
        result["output_saturation"] = best_row["output_saturation"]
    return result


def _mean_std(values: list[float]) -> dict[str, float]:
    array = np.asarray(values, np.float64)
    return {"mean": float(array.mean()), "std": float(array.std(ddof=1)) if array.size > 1 else 0.0, "n": int(array.size)}


def summarize(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Per framework: mean / std over seeds of test and validation HR, NDCG; and per seed the
    JAX-minus-PyTorch differences when both ran."""
    summary: dict[str, Any] = {}
    for fw in sorted({r["framework"] for r in results}):
        rows = [r for r in results if r["framework"] == fw]
        summary[fw] = {
            "test_hr": _mean_std([r["test"]["hr"] for r in rows]),
            "test_ndcg": _mean_std([r["test"]["ndcg"] for r in rows]),
            "val_hr": _mean_std([r["validation"]["hr"] for r in rows]),
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


def run_training(run: RunConfig, *, frameworks: list[str], seeds: list[int], out_dir: Path, resume: bool = False,
                 progress: bool = True, data_dir=None, split=None) -> dict[str, Any]:
    from parity.data import load_split

    if split is None:
        split = load_split(run.data, data_dir)
    if run.model.layer_sizes[0] != split.n_items:  # the input width is always the dataset's item count
        run = dataclasses.replace(run, model=dataclasses.replace(
            run.model, layer_sizes=(split.n_items, *run.model.layer_sizes[1:])))
    results = []
    for seed in seeds:
        seeded = dataclasses.replace(run, train=dataclasses.replace(run.train, seed=seed))
        for framework in frameworks:
            results.append(train_one(framework, seeded, split, out_dir=out_dir, resume=resume, progress=progress))
    return {"command": "train", "config": run.to_dict(), "split": split.info, "frameworks": frameworks,
            "seeds": seeds, "runs": results, "summary": summarize(results)}


# ---------------------------------------------------------------------------------------------
# a sweep over one configuration field (e.g. the curvature)


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


def parse_sweep(text: str) -> tuple[str, str, list[Any]]:
    """'model.c=0.001,0.01,0.1,1' -> ("model", "c", [0.001, 0.01, 0.1, 1])."""
    key, sep, values = text.partition("=")
    section, dot, name = key.partition(".")
    if not sep or not dot or section not in ("model", "optimizer", "data", "train") or not values.strip():
        raise ValueError(f"--sweep {text!r}: expected SECTION.FIELD=V1,V2,... (e.g. model.c=0.001,0.01,0.1,1)")
    parsed = [_parse_value(v.strip()) for v in values.split(",") if v.strip()]
    if len(parsed) < 2:
        raise ValueError(f"--sweep {text!r}: give at least two values")
    return section, name, parsed


def run_sweep(run: RunConfig, section: str, name: str, values: list[Any], *, frameworks: list[str],
              seeds: list[int], out_dir: Path, resume: bool = False, progress: bool = True, data_dir=None,
              split=None) -> dict[str, Any]:
    """`run_training` once per value of `section.name`, each into `out_dir/<name>=<value>/`;
    -> the sweep JSON (`"command": "sweep"`): per value and framework, validation and test HR@10 /
    NDCG@10 and the code layer's saturation; `chosen_by_validation` is the value with the best
    validation HR@10 (then NDCG@10) of the first framework. The test never chooses."""
    from parity.data import load_split

    if split is None:
        split = load_split(run.data, data_dir)
    points, runs = [], []
    for value in values:
        values_of = run.to_dict()
        values_of[section][name] = value
        point_run = RunConfig.from_dict(values_of)  # refuses an unknown field
        folder = out_dir / f"{name}={value}"
        result = run_training(point_run, frameworks=frameworks, seeds=seeds, out_dir=folder, resume=resume,
                              progress=progress, split=split)
        result["run_name"] = f"{out_dir.name}/{folder.name}"
        _write_json(folder / "train.json", result)
        runs.append(str(folder / "train.json"))
        points.append(_sweep_point(value, result))
    first = frameworks[0]
    best = max(points, key=lambda p: (p["frameworks"][first]["val_hr"], p["frameworks"][first]["val_ndcg"]))
    return {"command": "sweep", "field": f"{section}.{name}", "values": values, "config": run.to_dict(),
            "split": split.info, "frameworks": frameworks, "seeds": seeds, "points": points, "train_json": runs,
            "chosen_by_validation": best["value"],
            "saturation_definition": "r = sqrt(c) |z| for each user's code point z (code_saturation) or decoder "
                                     "output point y (output_saturation), no dropout, validation inputs; norm_mean / "
                                     "norm_max: mean / max of r; boundary_fraction: share of users with r >= limit - "
                                     "1e-3, limit = 1 - eps the largest r the projection allows"}


def _print_sweep(payload: dict[str, Any]) -> None:
    print(f"sweep over {payload['field']} (validation chooses: {payload['chosen_by_validation']})")
    for p in payload["points"]:
        for fw, e in p["frameworks"].items():
            sat, out = e.get("code_saturation"), e.get("output_saturation")
            sat_text = (f"  code |z|/R mean {sat['norm_mean']:.3f} max {sat['norm_max']:.4f} on boundary "
                        f"{sat['boundary_fraction']:.3f}; output |y|/R mean {out['norm_mean']:.3f} on boundary "
                        f"{out['boundary_fraction']:.3f}") if sat else ""
            print(f"  {payload['field']}={p['value']!s:<8} {fw:<6} val HR@10 {e['val_hr']:.4f} "
                  f"NDCG@10 {e['val_ndcg']:.4f}  test HR@10 {e['test_hr']:.4f} NDCG@10 {e['test_ndcg']:.4f}{sat_text}")


# ---------------------------------------------------------------------------------------------
# two trained configurations, compared on the same test users


def _test_per_user(payload: dict[str, Any], framework: str, seed: int, split) -> tuple[np.ndarray, np.ndarray, float]:
    """Per test user hit@10 and NDCG@10 of one run's best-validation checkpoint (and the run's recorded
    test HR@10, to check the re-scoring against)."""
    from parity import metrics
    from parity.baselines import score_heldout
    from parity.data import dense_rows

    run = RunConfig.from_dict(payload["config"])
    record = next((r for r in payload["runs"] if r["framework"] == framework and r["seed"] == seed), None)
    if record is None:
        raise ValueError(f"no {framework} run with seed {seed} in {payload.get('run_name')}")
    weights = load_checkpoint(Path(record["checkpoints"]["best"]))[0]
    side = Side(framework, dataclasses.replace(run, train=dataclasses.replace(run.train, dtype=record["dtype"])),
                weights)
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
    from parity import metrics
    from parity.data import load_split

    data_a, data_b = payload_a["config"]["data"], payload_b["config"]["data"]
    if (data_a["dataset"], data_a["protocol"]) != (data_b["dataset"], data_b["protocol"]):
        raise ValueError(f"the runs were evaluated on different data: {data_a} vs {data_b}")
    seeds = sorted({r["seed"] for r in payload_a["runs"] if r["framework"] == framework}
                   & {r["seed"] for r in payload_b["runs"] if r["framework"] == framework})
    if not seeds:
        raise ValueError(f"the two runs share no {framework} seed")
    if split is None:
        split = load_split(cfg.from_dict(DataConfig, data_a), data_dir)
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


def _print_comparison(c: dict[str, Any]) -> None:
    print(f"{c['a']} minus {c['b']} ({c['framework']}, seeds {c['seeds']}, {c['n_users']} test users, {c['dataset']})")
    for key, label in (("hr", "HR@10"), ("ndcg", "NDCG@10")):
        e = c[key]
        t_text = f"; over seeds t [{e['seed_t_low']:+.4f}, {e['seed_t_high']:+.4f}]" if "seed_t_low" in e else ""
        print(f"  test {label}: {e['a_mean']:.4f} vs {e['b_mean']:.4f}: difference {e['diff']:+.4f} "
              f"[{e['low']:+.4f}, {e['high']:+.4f}] (95%, bootstrap over users){t_text}")


# ---------------------------------------------------------------------------------------------
# command line


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text  # a bare word, e.g. model.activation=tanh


def resolve_config(args) -> RunConfig:
    """The preset (or the defaults), then the explicit flags, then each --set SECTION.FIELD=VALUE."""
    values: dict[str, dict[str, Any]] = {"model": {}, "optimizer": {}, "data": {}, "train": {}}
    if args.preset:
        if args.preset not in cfg.PRESETS:
            raise ValueError(f"unknown preset {args.preset!r}; known: {', '.join(sorted(cfg.PRESETS))}")
        for section, fields in cfg.PRESETS[args.preset].items():
            if section != "description":
                values[section].update(fields)
    if args.model:
        values["model"]["kind"] = args.model
    flags = {("data", "dataset"): args.dataset, ("data", "protocol"): args.protocol,
             ("train", "epochs"): args.epochs, ("train", "batch_size"): args.batch_size,
             ("train", "dtype"): args.dtype, ("optimizer", "learning_rate"): args.lr,
             ("train", "early_stopping_patience"): args.patience}
    for (section, name), value in flags.items():
        if value is not None:
            values[section][name] = value
    for item in args.set or []:
        key, sep, text = item.partition("=")
        section, dot, name = key.partition(".")
        if not sep or not dot or section not in values:
            raise ValueError(f"--set {item!r}: expected SECTION.FIELD=VALUE with SECTION one of {', '.join(values)}")
        values[section][name] = _parse_value(text)
    if "dataset" in values["data"] and "protocol" not in values["data"]:
        values["data"]["protocol"] = "neumf" if values["data"]["dataset"] in ("ml-1m-neumf", "synthetic") else "seed"
    return RunConfig.from_dict(values)


def _seeds(args, run: RunConfig) -> list[int]:
    if not args.seeds:
        return [run.train.seed]
    return [int(s) for s in str(args.seeds).replace(",", " ").split()]


def _print_summary(result: dict[str, Any]) -> None:
    for r in result["runs"]:
        t = r["test"]
        print(f"{r['framework']:<6} seed {r['seed']}: best epoch {r['best_epoch'] + 1}/{r['epochs_run']}  "
              f"val HR@10 {r['validation']['hr']:.4f}  test HR@10 {t['hr']:.4f} [{t['hr_low']:.4f}, {t['hr_high']:.4f}]"
              f"  NDCG@10 {t['ndcg']:.4f}  (n={t['n_users']})")
    for fw, s in result["summary"].items():
        if fw in ("jax", "torch"):
            print(f"{fw:<6} test HR@10 {s['test_hr']['mean']:.4f} +- {s['test_hr']['std']:.4f}  "
                  f"NDCG@10 {s['test_ndcg']['mean']:.4f} +- {s['test_ndcg']['std']:.4f}  over {s['test_hr']['n']} seed(s)")
    if "max_abs_test_hr_diff" in result["summary"]:
        print(f"max |JAX - PyTorch| test HR@10 at the same seed: {result['summary']['max_abs_test_hr_diff']:.4f}")


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=1) + "\n")
    os.replace(tmp, path)


def cli(args) -> int:
    from parity.data import DataError

    if args.list_presets:
        for name, preset in cfg.PRESETS.items():
            print(f"{name}: {preset.get('description', '')}")
        return 0
    if getattr(args, "compare", None):
        try:
            payload_a, payload_b = (json.loads(Path(p).read_text()) for p in args.compare)
            frameworks = ["jax", "torch"] if args.framework == "both" else [args.framework]
            comparisons = [paired_comparison(payload_a, payload_b, framework=fw) for fw in frameworks]
        except (OSError, json.JSONDecodeError, KeyError, DataError, ValueError) as error:
            print(f"poincare-parity train --compare: {error}", file=sys.stderr)
            return 2
        for c in comparisons:
            _print_comparison(c)
        if args.json:
            _write_json(Path(args.json), {"command": "compare", "comparisons": comparisons})
            print(f"wrote {args.json}")
        return 0
    try:
        run = resolve_config(args)
        frameworks = ["jax", "torch"] if args.framework == "both" else [args.framework]
        run_name = args.run_name or args.preset or f"{run.model.kind}-{Path(run.data.dataset).name}-{run.data.protocol}"
        sweep = parse_sweep(args.sweep) if getattr(args, "sweep", None) else None
        if sweep and not args.run_name and not args.out:
            run_name = f"{run_name}-sweep-{sweep[1]}"
        out_dir = Path(args.out) if args.out else Path("reports") / run_name
        if sweep:
            payload = run_sweep(run, *sweep, frameworks=frameworks, seeds=_seeds(args, run), out_dir=out_dir,
                                resume=args.resume, progress=not args.no_progress)
        else:
            result = run_training(run, frameworks=frameworks, seeds=_seeds(args, run), out_dir=out_dir,
                                  resume=args.resume, progress=not args.no_progress)
    except TrainingDiverged as error:
        print(f"poincare-parity train: {error}", file=sys.stderr)
        return 3
    except (DataError, ValueError, NotImplementedError) as error:
        print(f"poincare-parity train: {error}", file=sys.stderr)
        return 2
    if sweep:
        payload["run_name"], payload["preset"] = run_name, args.preset
        _print_sweep(payload)
        _write_json(out_dir / "sweep.json", payload)
        from parity.report import plot_sweep

        plot = plot_sweep(payload, out_dir / "sweep.png")
        print(f"wrote {out_dir / 'sweep.json'}" + (f" and {plot}" if plot else ""))
        if args.json:
            _write_json(Path(args.json), payload)
            print(f"wrote {args.json}")
        return 0
    result["run_name"], result["preset"] = run_name, args.preset
    _print_summary(result)
    _write_json(out_dir / "train.json", result)
    print(f"wrote {out_dir / 'train.json'}")
    if args.json:
        _write_json(Path(args.json), result)
        print(f"wrote {args.json}")
    return 0
