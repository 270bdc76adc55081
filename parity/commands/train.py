"""`poincare-parity train`: train (or sweep, or compare) autoencoders and write train.json."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from parity import backend, training
from parity import config as cfg
from parity.config import RunConfig
from parity.data import default_protocol
from parity.errors import EXIT_OK, ConfigError, UsageError
from parity.files import check_writable, write_json

SECTIONS = tuple(cfg.SECTIONS)


def parse_value(text: str) -> Any:
    """A command-line value as JSON (numbers, true / false, null, lists), else the bare word itself."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text  # a bare word, e.g. model.activation=tanh


def parse_sweep(text: str) -> tuple[str, str, list[Any]]:
    """'model.c=0.001,0.01,0.1,1' -> ("model", "c", [0.001, 0.01, 0.1, 1])."""
    key, sep, values = text.partition("=")
    section, dot, name = key.partition(".")
    if not sep or not dot or section not in SECTIONS or not values.strip():
        raise UsageError(f"--sweep {text!r}: expected SECTION.FIELD=V1,V2,... (e.g. model.c=0.001,0.01,0.1,1)")
    parsed = [parse_value(v.strip()) for v in values.split(",") if v.strip()]
    if len(parsed) < 2:
        raise UsageError(f"--sweep {text!r}: give at least two values")
    return section, name, parsed


def resolve_config(args) -> RunConfig:
    """The preset (or the defaults), then the explicit flags, then each --set SECTION.FIELD=VALUE; every
    field is checked here, before any data is read (`parity.config`)."""
    values: dict[str, dict[str, Any]] = {section: {} for section in SECTIONS}
    if args.preset:
        if args.preset not in cfg.PRESETS:
            raise UsageError(f"unknown preset {args.preset!r}; known: {', '.join(sorted(cfg.PRESETS))}")
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
            raise UsageError(f"--set {item!r}: expected SECTION.FIELD=VALUE with SECTION one of {', '.join(SECTIONS)}")
        values[section][name] = parse_value(text)
    if "dataset" in values["data"] and "protocol" not in values["data"]:
        values["data"]["protocol"] = default_protocol(values["data"]["dataset"])
    return RunConfig.from_dict(values)


def parse_seeds(text: str | None, run: RunConfig) -> list[int]:
    if not text:
        return [run.train.seed]
    try:
        seeds = [int(s) for s in str(text).replace(",", " ").split()]
    except ValueError:
        raise UsageError(f"--seeds {text!r}: expected integers >= 0, e.g. 0,1,2") from None
    if not seeds or min(seeds) < 0:
        raise UsageError(f"--seeds {text!r}: expected integers >= 0, e.g. 0,1,2")
    if len(set(seeds)) != len(seeds):
        raise UsageError(f"--seeds {text!r}: a seed is given twice")
    return seeds


def select_devices(frameworks: list[str], device: str, devices: int) -> None:
    """--device / --devices, before any data is read: `device` "gpu" points every framework at its GPUs
    (UsageError if one has none); `devices` of that kind must be there for each framework."""
    if device == "gpu":
        # JAX grabs 75% of GPU memory at start by default, which would starve torch (in this process or its ranks)
        os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
        for name in frameworks:
            problem = backend.get(name).select_device(device)
            if problem:
                raise UsageError(f"--device gpu: {problem}")
    try:
        training.check_devices(frameworks, devices, device)
    except UsageError as error:
        raise UsageError(f"--devices {devices}: {error}") from None


def print_summary(result: dict[str, Any]) -> None:
    if result.get("devices", 1) > 1:
        print(f"data-parallel on {result['devices']} devices")
    for r in result["runs"]:
        t = r["test"]
        print(f"{r['framework']:<6} seed {r['seed']}: best epoch {r['best_epoch'] + 1}/{r['epochs_run']}  "
              f"val HR@10 {r['validation']['hr']:.4f}  test HR@10 {t['hr']:.4f} [{t['hr_low']:.4f}, {t['hr_high']:.4f}]"
              f"  NDCG@10 {t['ndcg']:.4f}  (n={t['n_users']})")
    for fw in result["frameworks"]:
        s = result["summary"].get(fw)
        if s:
            print(f"{fw:<6} test HR@10 {s['test_hr']['mean']:.4f} +- {s['test_hr']['std']:.4f}  "
                  f"NDCG@10 {s['test_ndcg']['mean']:.4f} +- {s['test_ndcg']['std']:.4f}  "
                  f"over {s['test_hr']['n']} seed(s)")
    if "max_abs_test_hr_diff" in result["summary"]:
        print(f"max |JAX - PyTorch| test HR@10 at the same seed: {result['summary']['max_abs_test_hr_diff']:.4f}")


def print_sweep(payload: dict[str, Any]) -> None:
    print(f"sweep over {payload['field']} (validation chooses: {payload['chosen_by_validation']})")
    for p in payload["points"]:
        for fw, e in p["frameworks"].items():
            sat, out = e.get("code_saturation"), e.get("output_saturation")
            sat_text = (f"  code |z|/R mean {sat['norm_mean']:.3f} max {sat['norm_max']:.4f} on boundary "
                        f"{sat['boundary_fraction']:.3f}; output |y|/R mean {out['norm_mean']:.3f} on boundary "
                        f"{out['boundary_fraction']:.3f}") if sat else ""
            print(f"  {payload['field']}={p['value']!s:<8} {fw:<6} val HR@10 {e['val_hr']:.4f} "
                  f"NDCG@10 {e['val_ndcg']:.4f}  test HR@10 {e['test_hr']:.4f} NDCG@10 {e['test_ndcg']:.4f}{sat_text}")


def print_comparison(c: dict[str, Any]) -> None:
    print(f"{c['a']} minus {c['b']} ({c['framework']}, seeds {c['seeds']}, {c['n_users']} test users, {c['dataset']})")
    for key, label in (("hr", "HR@10"), ("ndcg", "NDCG@10")):
        e = c[key]
        t_text = f"; over seeds t [{e['seed_t_low']:+.4f}, {e['seed_t_high']:+.4f}]" if "seed_t_low" in e else ""
        print(f"  test {label}: {e['a_mean']:.4f} vs {e['b_mean']:.4f}: difference {e['diff']:+.4f} "
              f"[{e['low']:+.4f}, {e['high']:+.4f}] (95%, bootstrap over users){t_text}")


def _frameworks(args) -> list[str]:
    return ["jax", "torch"] if args.framework == "both" else [args.framework]


def _existing(args) -> str:
    """What to do with a run already in the output folder (`training.EXISTING`), from --resume / --overwrite."""
    if args.resume and args.overwrite:
        raise UsageError("--resume and --overwrite exclude each other: continue the run, or replace it")
    return "resume" if args.resume else "overwrite" if args.overwrite else "refuse"


def say_resume(folders: list[Path], frameworks: list[str], seeds: list[int]) -> None:
    """--resume: say where each framework and seed continues from, or that it starts fresh."""
    for folder in folders:
        points = training.resume_points(folder, frameworks, seeds)
        if not any(points.values()):
            print(f"--resume: no checkpoint in {folder / 'checkpoints'} yet; starting fresh")
            continue
        for (framework, seed), last in points.items():
            print(f"--resume: {framework} seed {seed} " + (f"continues from {last}" if last else
                                                           "has no checkpoint yet; starts fresh"))


def compare(args) -> int:
    check_writable(args.json)
    payloads = []
    for path in args.compare:
        try:
            payloads.append(json.loads(Path(path).read_text()))
        except (OSError, json.JSONDecodeError) as error:
            raise UsageError(f"--compare: cannot read {path}: {error}") from None
    try:
        comparisons = [training.paired_comparison(*payloads, framework=fw) for fw in _frameworks(args)]
    except (KeyError, ValueError) as error:
        raise UsageError(f"--compare: {error}") from None
    for c in comparisons:
        print_comparison(c)
    if args.json:
        print(f"wrote {write_json(args.json, {'command': 'compare', 'comparisons': comparisons}, command='train')}")
    return EXIT_OK


def main(args) -> int:
    if args.list_presets:
        for name, preset in cfg.PRESETS.items():
            print(f"{name}: {preset.get('description', '')}")
        return EXIT_OK
    if args.compare:
        return compare(args)
    existing = _existing(args)
    run = resolve_config(args)
    seeds = parse_seeds(args.seeds, run)
    frameworks = _frameworks(args)
    if run.train.dtype == "float64" and "jax" in frameworks:
        backend.enable_float64()
    run_name = args.run_name or args.preset or f"{run.model.kind}-{Path(run.data.dataset).name}-{run.data.protocol}"
    sweep = parse_sweep(args.sweep) if args.sweep else None
    if sweep and not args.run_name and not args.out:
        run_name = f"{run_name}-sweep-{sweep[1]}"
    out_dir = Path(args.out) if args.out else Path("reports") / run_name
    if sweep:
        try:
            training.sweep_runs(run, *sweep)  # every value checked before any data is read
        except ConfigError as error:
            raise UsageError(f"--sweep {args.sweep!r}: {error}") from None
    folders = [training.sweep_folder(out_dir, sweep[1], v) for v in sweep[2]] if sweep else [out_dir]
    check_writable(args.json, folders=(out_dir,))
    for folder in ([out_dir] if sweep else []) + folders:  # a previous run there: refused unless --resume / --overwrite
        training.check_run_folder(folder, existing)
    select_devices(frameworks, args.device, args.devices)
    if existing == "resume":
        say_resume(folders, frameworks, seeds)
    if sweep:
        def write_point(folder: Path, result: dict[str, Any]) -> None:
            result["run_name"] = f"{out_dir.name}/{folder.name}"
            write_json(folder / "train.json", result, command="train", device=args.device)

        payload = training.run_sweep(run, *sweep, frameworks=frameworks, seeds=seeds, out_dir=out_dir,
                                     existing=existing, progress=not args.no_progress, data_dir=args.data_dir,
                                     on_point=write_point, devices=args.devices, device=args.device)
        payload["run_name"], payload["preset"] = run_name, args.preset
        print_sweep(payload)
        write_json(out_dir / "sweep.json", payload, command="train", device=args.device)
        from parity.report import plot_sweep

        plot = plot_sweep(payload, out_dir / "sweep.png")
        print(f"wrote {out_dir / 'sweep.json'}" + (f" and {plot}" if plot else ""))
        if args.json:
            print(f"wrote {write_json(args.json, payload, command='train', device=args.device)}")
        return EXIT_OK
    result = training.run_training(run, frameworks=frameworks, seeds=seeds, out_dir=out_dir, existing=existing,
                                   progress=not args.no_progress, data_dir=args.data_dir, devices=args.devices,
                                   device=args.device)
    result["run_name"], result["preset"] = run_name, args.preset
    print_summary(result)
    print(f"wrote {write_json(out_dir / 'train.json', result, command='train', device=args.device)}")
    if args.json:
        print(f"wrote {write_json(args.json, result, command='train', device=args.device)}")
    return EXIT_OK
