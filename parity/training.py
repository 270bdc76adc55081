"""`poincare-parity train`: train an autoencoder with JAX, PyTorch or both, from one configuration,
the same start weights, the same batches and the same dropout masks, and evaluate HR@10 / NDCG@10.

What one run does, per framework and seed:
- data: `parity.data.load_split`; the model trains on `split.fit` (training minus the validation
  carve-out), one row per user with at least one entry, in `batch_order(n_rows, batch, seed, epoch)`.
- start: `parity.convert.init_weights(model, seed)`, cast to the run's dtype, loaded into both sides.
- dropout: keep-masks drawn in numpy from (seed, epoch), shared by both frameworks (`epoch_masks`).
- every epoch: mean loss, validation HR@10 / NDCG@10 (input: the `fit` rows), a checkpoint written
  atomically (temporary file, then os.replace), and the best-by-validation weights kept beside it.
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


def _optimizer(framework: str, run: RunConfig):
    if run.model.kind != "ae":
        raise NotImplementedError(f"training for model kind {run.model.kind!r} is not wired into `train` yet")
    if framework == "jax":
        from jax_impl.train import euclidean_optimizer
    else:
        from torch_ref.train import euclidean_optimizer
    return euclidean_optimizer(run.optimizer)


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
            self.trainer = jt.Trainer(convert.jax_model(run.model, weights, self.dtype), _optimizer(framework, run),
                                      dense_refeeding=run.train.dense_refeeding)
        elif framework == "torch":
            import torch_ref.train as tt

            self._masks = tt.StepMasks
            self.trainer = tt.Trainer(convert.torch_model(run.model, weights, self.dtype), _optimizer(framework, run),
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
        row = {"epoch": epoch, "loss": float(losses[:, 0].mean()), "val_hr": val.hr, "val_ndcg": val.ndcg,
               "seconds_train": trained, "seconds_total": time.perf_counter() - started}
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
    return {
        "framework": framework, "seed": seed, "dtype": t.dtype, "epochs_run": state["epoch"] + 1,
        "stopped_early": state["stopped_early"], "best_epoch": state["best_epoch"],
        "validation": {"hr": state["best_hr"], "ndcg": state["best_ndcg"]}, "test": test.to_dict(),
        "history": state["history"], "resumed_from_epoch": resumed_from,
        "checkpoints": {"last": str(last_path), "best": str(best_path)},
    }


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
    try:
        run = resolve_config(args)
        frameworks = ["jax", "torch"] if args.framework == "both" else [args.framework]
        run_name = args.run_name or args.preset or f"{run.model.kind}-{Path(run.data.dataset).name}-{run.data.protocol}"
        out_dir = Path(args.out) if args.out else Path("reports") / run_name
        result = run_training(run, frameworks=frameworks, seeds=_seeds(args, run), out_dir=out_dir,
                              resume=args.resume, progress=not args.no_progress)
    except TrainingDiverged as error:
        print(f"poincare-parity train: {error}", file=sys.stderr)
        return 3
    except (DataError, ValueError, NotImplementedError) as error:
        print(f"poincare-parity train: {error}", file=sys.stderr)
        return 2
    result["run_name"], result["preset"] = run_name, args.preset
    _print_summary(result)
    _write_json(out_dir / "train.json", result)
    print(f"wrote {out_dir / 'train.json'}")
    if args.json:
        _write_json(Path(args.json), result)
        print(f"wrote {args.json}")
    return 0
