"""`poincare-parity run`: the whole job, end to end, into one report.

Stages, in order, each the ordinary subcommand run as its own process (`python -m parity.cli ...`),
so a crash, a NaN or an out-of-memory in one stage is recorded and the next stage still runs:

    data        the dataset (and ML-100K for the models training suite) present, else downloaded
    ops         Poincaré-ball ops parity                            -> ops.json
    optim       Riemannian optimizer parity                         -> optim.json
    models      autoencoder parity (forward; training on ML-100K)   -> models.json
    baselines   popularity and EASE on the dataset                  -> baselines.json
    train-ae    the Euclidean AE preset, JAX and PyTorch            -> train-ae.json
    train-hae   the hyperbolic AE preset, JAX and PyTorch           -> train-hae.json
    bench       throughput of both presets and the optimizer step   -> bench.json
    report      report.md, report.json and plots/ from all of the above

Everything lands in reports/<name>/ (run.json: each stage's command, status, time and the tail of its
output; logs/<stage>.log: the whole output; checkpoints/: training checkpoints, not committed). A
stage that fails is shown in the report, with its last lines of output; the exit status is 0 only
when every stage ran and every check passed.

Running again into the same folder runs every stage afresh: a stage's JSON from before is removed
before the stage starts (an old result is never passed off as new), and the training stages replace
their own run folders under checkpoints/ (`train --overwrite`, which removes only the train.json and
checkpoints `train` wrote there). Nothing else in the folder is removed.

--quick: the parity suites in their quick forms, 12 training epochs per model (test HR@10 measured
0.67 Euclidean, 0.70 hyperbolic, against 0.45 for popularity and 0.72-0.73 for the full presets), EASE
over three lambdas, the bench on 1,536 users per epoch (six arms): measured 10.2 minutes on 2 quiet CPU
cores.
--dataset synthetic needs no network: the models suite then skips its ML-100K training part.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from parity import config as cfg
from parity.errors import UsageError
from parity.files import check_writable, write_json

AE_PRESET = "ae-neumf"
QUICK_EPOCHS = 12
QUICK_LAMBDAS = ("200", "500", "1000")
NEUMF_EASE_LAMBDA = "500"  # the lambda of the published EASE number on ml-1m-neumf
MODELS_TRAINING_DATASET = "ml-100k"  # what `poincare-parity models` trains on
STAGES = ("data", "ops", "optim", "models", "baselines", "train-ae", "train-hae", "bench", "report")
TAIL_CHARS = 3000


@dataclasses.dataclass
class Stage:
    name: str
    argv: list[str] | None = None  # a `poincare-parity` command line; None: done in this process
    json: Path | None = None  # what the stage writes
    skip: str | None = None  # why it does not run
    note: str = ""  # said in the report next to the stage


def hae_preset() -> str | None:
    """The first preset of a hyperbolic autoencoder in `parity.config.PRESETS`, if there is one yet."""
    return next((name for name, p in cfg.PRESETS.items() if p.get("model", {}).get("kind") == "hae"), None)


def _accepts(command: list[str], flag: str) -> bool:
    """Whether the `poincare-parity` subcommand `command` takes `flag` (the CLI is the contract)."""
    from parity.cli import build_parser

    with contextlib.redirect_stderr(io.StringIO()):
        try:
            build_parser().parse_args([*command, flag])
        except SystemExit:
            return False
    return True


def plan(*, out: Path, dataset: str, quick: bool, device: str = "cpu", seeds: str | None = None,
         progress: bool = True) -> list[Stage]:
    """The stages of one run and their command lines (see the module docstring); `progress` False passes
    --no-progress to every stage that draws progress bars (the models suite never draws them here)."""
    synthetic = dataset == "synthetic"
    stages = [Stage("data", note="dataset present locally, else downloaded")]

    def quick_flag(command: list[str]) -> list[str]:
        return ["--quick"] if quick and _accepts(command, "--quick") else []

    for suite in ("ops", "optim"):
        argv = [suite, "--json", str(out / f"{suite}.json")]
        stages.append(Stage(suite, argv + quick_flag([suite]), out / f"{suite}.json"))

    models = ["models", "--json", str(out / "models.json")] + quick_flag(["models"]) + ["--no-progress"]
    if synthetic:
        stages.append(Stage("models", models + ["--no-training"], out / "models.json",
                            note=f"training suite skipped: it needs {MODELS_TRAINING_DATASET} (network)"))
    else:
        stages.append(Stage("models", models + ["--dataset", MODELS_TRAINING_DATASET], out / "models.json"))

    # one protocol for baselines and training, said explicitly (`train` and `data baselines` default differently
    # on synthetic data, which is explicit ratings but stands in for ml-1m-neumf)
    protocol = "neumf" if dataset in ("ml-1m-neumf", "synthetic") else "seed"
    baselines = ["data", "baselines", "--dataset", dataset, "--protocol", protocol,
                 "--json", str(out / "baselines.json")]
    if quick:
        baselines += ["--lambdas", *QUICK_LAMBDAS]
    if dataset == "ml-1m-neumf":
        baselines += ["--ease-lambda", NEUMF_EASE_LAMBDA]
    stages.append(Stage("baselines", baselines, out / "baselines.json"))

    presets = []
    for stage_name, preset in (("train-ae", AE_PRESET), ("train-hae", hae_preset())):
        if preset is None:
            stages.append(Stage(stage_name, skip="no hyperbolic autoencoder preset in parity.config.PRESETS yet"))
            continue
        presets.append(preset)
        argv = ["train", "--preset", preset, "--framework", "both", "--dataset", dataset, "--protocol", protocol,
                "--out", str(out / "checkpoints" / stage_name), "--run-name", preset,
                "--json", str(out / f"{stage_name}.json"), "--overwrite"]  # a rerun replaces this stage's own run
        if quick:
            argv += ["--epochs", str(QUICK_EPOCHS)]
        if seeds:
            argv += ["--seeds", seeds]
        stages.append(Stage(stage_name, argv, out / f"{stage_name}.json"))

    bench = ["bench", "--json", str(out / "bench.json"), "--dataset", dataset, "--device", device]
    if presets:
        bench += ["--presets", ",".join(presets)]
    if quick:
        bench.append("--quick")
    stages.append(Stage("bench", bench, out / "bench.json"))
    stages.append(Stage("report", note="report.md, report.json, plots/"))
    if not progress:  # every command takes --no-progress (parity.cli declares it once for all)
        for stage in stages:
            if stage.argv and "--no-progress" not in stage.argv:
                stage.argv.append("--no-progress")
    return stages


# ---------------------------------------------------------------------------------------------
# running one stage


def _pump(stream, sinks: list, tail: bytearray) -> None:
    """Copy a child's output to the console and its log as it comes (tqdm's carriage returns included),
    keeping its last bytes in `tail`."""
    while True:
        chunk = os.read(stream.fileno(), 65536)
        if not chunk:
            return
        for sink in sinks:
            sink.write(chunk)
            sink.flush()
        tail.extend(chunk)
        if len(tail) > 8 * TAIL_CHARS:
            del tail[: -4 * TAIL_CHARS]


def _summary_line(text: str) -> str:
    """The line that says how a stage went: a suite's "N/M rows pass", a training's test HR@10, else the last."""
    lines = [line.strip() for line in text.replace("\r", "\n").splitlines() if line.strip()]
    for line in reversed(lines):
        if "rows pass" in line or "test HR@10" in line:
            return line[:200]
    return lines[-1][:200] if lines else ""


def run_command(stage: Stage, *, log_path: Path, env: dict[str, str], timeout: float | None,
                echo: bool = True) -> dict[str, Any]:
    """Run `python -m parity.cli <stage.argv>`; -> its record (status, returncode, seconds, tail, summary)."""
    command = [sys.executable, "-m", "parity.cli", *stage.argv]
    log_path.parent.mkdir(parents=True, exist_ok=True)
    if stage.json is not None and stage.json.exists():
        stage.json.unlink()  # a rerun into the same folder must not pass off an old result as new
    started = time.perf_counter()
    tail = bytearray()
    with open(log_path, "wb") as log:
        log.write(("$ poincare-parity " + " ".join(stage.argv) + "\n").encode())
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
        sinks = [log] + ([sys.stdout.buffer] if echo and hasattr(sys.stdout, "buffer") else [])
        reader = threading.Thread(target=_pump, args=(process.stdout, sinks, tail), daemon=True)
        reader.start()
        timed_out = False
        try:
            returncode = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            process.kill()  # our own child, by its handle
            returncode = process.wait()
        reader.join(timeout=10)
    text = bytes(tail).decode("utf-8", "replace")
    text = "\n".join(line.rsplit("\r", 1)[-1] for line in text.split("\n"))[-TAIL_CHARS:]  # progress bars: last state
    wrote = stage.json is not None and stage.json.exists()
    if timed_out:
        status = "timeout"
    elif returncode == 0:
        status = "ok" if (stage.json is None or wrote) else "error"
    else:
        status = "failed-checks" if wrote else "error"
    summary = _summary_line(text)
    if timed_out:
        summary = f"stopped after {timeout:.0f} s"
    elif status == "error" and returncode == 0:
        summary = f"exited 0 but wrote no {stage.json.name}"
    elif status == "error":
        summary = f"exit status {returncode}: {summary}"
    return {"name": stage.name, "argv": ["poincare-parity", *stage.argv], "status": status, "returncode": returncode,
            "seconds": time.perf_counter() - started, "log": str(log_path),
            "json": str(stage.json) if stage.json else None,
            "summary": summary, "tail": text, "note": stage.note}


def ensure_data(names: list[str], env: dict[str, str], log_path: Path, echo: bool = True) -> dict[str, Any]:
    """Each named dataset present under the data directory, else `poincare-parity download` for it."""
    from parity import data

    started = time.perf_counter()
    found, fetched, failed = [], [], []
    for name in names:
        if name == "synthetic" or Path(name).exists():
            found.append(name)
            continue
        try:
            data.load_dataset(name, env.get("POINCARE_PARITY_DATA"))
            found.append(name)
            continue
        except data.DatasetNotFoundError:
            pass
        except data.DataError as error:
            failed.append(f"{name}: {error}")
            continue
        if name not in ("ml-1m", "ml-100k", "ml-latest-small", "ml-1m-neumf"):
            failed.append(f"{name}: not a dataset name or an existing path")
            continue
        record = run_command(Stage("data", ["download", "--dataset", name]), log_path=log_path, env=env, timeout=None,
                             echo=echo)
        (fetched if record["returncode"] == 0 else failed).append(name if record["returncode"] == 0
                                                                  else f"{name}: {record['summary']}")
    parts = [f"found {', '.join(found)}"] if found else []
    parts += [f"downloaded {', '.join(fetched)}"] if fetched else []
    parts += [f"FAILED {'; '.join(failed)}"] if failed else []
    return {"name": "data", "argv": ["poincare-parity", "download"], "status": "error" if failed else "ok",
            "returncode": 1 if failed else 0, "seconds": time.perf_counter() - started, "log": str(log_path),
            "json": None, "summary": "; ".join(parts), "tail": "\n".join(failed), "note": ""}


# ---------------------------------------------------------------------------------------------
# the whole run


def execute(stages: list[Stage], *, out: Path, name: str, dataset: str, quick: bool, env: dict[str, str] | None = None,
            timeout: float | None = None, echo: bool = True, data_names: list[str] | None = None) -> dict[str, Any]:
    """Run the stages in order, recording each in out/run.json as it finishes; the report stage reads
    everything written so far. -> the run manifest."""
    from parity import report

    env = dict(os.environ if env is None else env)
    out.mkdir(parents=True, exist_ok=True)
    started = time.time()
    manifest: dict[str, Any] = {"command": "run", "name": name, "dataset": dataset, "quick": quick,
                                "started": time.strftime("%Y-%m-%dT%H:%M:%S"), "python": sys.executable, "stages": []}

    def save() -> None:
        manifest["seconds"] = time.time() - started
        write_json(out / "run.json", manifest, command="run")

    for index, stage in enumerate(stages, 1):
        header = f"[{index}/{len(stages)}] {stage.name}"
        if stage.skip:
            print(f"== {header}: skipped ({stage.skip})", flush=True)
            manifest["stages"].append({"name": stage.name, "status": "skipped", "summary": stage.skip, "seconds": 0.0,
                                       "argv": [], "note": stage.note})
            save()
            continue
        log_path = out / "logs" / f"{stage.name}.log"
        if stage.name == "report":
            print(f"== {header}", flush=True)
            save()
            record = {"name": "report", "argv": ["poincare-parity", "report", str(out)], "seconds": 0.0,
                      "log": None, "json": str(out / "report.json"), "note": stage.note}
            t0 = time.perf_counter()
            try:
                report.write_report([out], out, name)
                record.update(status="ok", summary=f"wrote {out / 'report.md'}")
            except Exception as error:  # noqa: BLE001 - the run must end with a manifest either way
                record.update(status="error", summary=f"{type(error).__name__}: {error}")
            record["seconds"] = time.perf_counter() - t0
        elif stage.argv is None:  # data
            print(f"== {header}", flush=True)
            record = ensure_data(data_names or [dataset], env, log_path, echo)
        else:
            print(f"== {header}: poincare-parity {' '.join(stage.argv)}", flush=True)
            record = run_command(stage, log_path=log_path, env=env, timeout=timeout, echo=echo)
        manifest["stages"].append(record)
        print(f"-- {stage.name}: {record['status']} ({record['seconds']:.0f} s) {record.get('summary', '')}",
              flush=True)
        save()
    save()
    if stages and stages[-1].name == "report" and manifest["stages"][-1]["status"] == "ok":
        try:  # once more, so that the report's stage table has the report's own line too
            report.write_report([out], out, name)
        except Exception:  # noqa: BLE001 - the first write succeeded; keep it
            pass
    return manifest


def _select(stages: list[Stage], only: list[str] | None, skip: list[str] | None) -> list[Stage]:
    names = [s.name for s in stages]
    for chosen in (only or []) + (skip or []):
        if chosen not in names:
            raise ValueError(f"unknown stage {chosen!r}; stages: {', '.join(names)}")
    for stage in stages:
        if only and stage.name not in only and stage.name not in ("data", "report"):  # both cheap, both needed
            stage.skip = stage.skip or "not selected (--only)"
        if skip and stage.name in skip:
            stage.skip = "skipped (--skip)"
    return stages


def _names(text: str | None) -> list[str] | None:
    return [t.strip() for t in text.split(",") if t.strip()] if text else None


def main(args) -> int:
    quick = bool(args.quick)
    name = args.name or f"run-{Path(args.dataset).name}{'-quick' if quick else ''}"
    out = Path(args.out) if args.out else Path("reports") / name
    out = out.resolve()
    env = dict(os.environ)
    if args.data_dir:
        env["POINCARE_PARITY_DATA"] = str(Path(args.data_dir).expanduser().resolve())
    try:
        stages = _select(plan(out=out, dataset=args.dataset, quick=quick, device=args.device, seeds=args.seeds,
                              progress=not args.no_progress), _names(args.only), _names(args.skip))
    except ValueError as error:
        raise UsageError(str(error)) from None
    check_writable(folders=(out, out / "logs"))  # after the options are checked: a typo creates no folder
    data_names = [args.dataset]
    models_stage = next(s for s in stages if s.name == "models")
    if not models_stage.skip and "--no-training" not in (models_stage.argv or []):
        data_names.append(MODELS_TRAINING_DATASET)
    print(f"poincare-parity run{' --quick' if quick else ''}: {len(stages)} stages into {out}", flush=True)
    manifest = execute(stages, out=out, name=name, dataset=args.dataset, quick=quick, env=env,
                       timeout=args.stage_timeout, echo=not args.quiet, data_names=data_names)
    print("")
    width = max(len(s["name"]) for s in manifest["stages"])
    for s in manifest["stages"]:
        print(f"  {s['name']:<{width}}  {s['status']:<13} {s.get('seconds', 0):>6.0f} s  {s.get('summary', '')}")
    print(f"total {manifest['seconds']:.0f} s; report: {out / 'report.md'}")
    bad = [s for s in manifest["stages"] if s["status"] not in ("ok", "skipped")]
    return 1 if bad else 0
