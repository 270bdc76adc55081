"""The report writer on fixture JSON written here and on the committed reference JSON: the first screen
(one verdict sentence, device and versions, parity per suite with its worst errors, quality with
intervals and published figures only beside their counterparts, throughput with intervals and the
bench's trust flag, stages), rows judged by the exact oracle, user parity suites, the plots,
report.json, inputs told apart by content, and the CLI's errors."""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path

import pytest

from parity import report, stats
from parity.cli import main
from parity.files import write_json
from parity.report import plots

PNG = b"\x89PNG\r\n\x1a\n"
REPO = Path(__file__).resolve().parents[1]
REFERENCE = REPO / "reports" / "reference-cpu"
# the inputs of the committed reference report (README, "Results")
REFERENCE_INPUTS = [REFERENCE, REPO / "reports/ae-neumf/train.json", REPO / "reports/hae-neumf/train.json",
                    REPO / "reports/hae-neumf-sweep-c/sweep.json"]
INTERNAL_WORDING = re.compile(r"\bissues?\b|#\d|\btargets?\b|NOT MET", re.IGNORECASE)
ARMS = ("torch-eager", "torch-compile", "jax-jit", "jax-scan")


def _first_screen(text: str) -> str:
    return "\n".join(text.splitlines()[:40])


def _record(check: str, dtype: str, rel: float, passed: bool, **extra) -> dict:
    return {"check": check, "dtype": dtype, "max_abs_err": rel / 10, "max_rel_err": rel,
            "tolerance": 1e-9 if dtype == "float64" else 1e-4, "passed": passed, "atol": 0.0,
            "nonfinite_jax": 0, "nonfinite_ref": 0, "note": "", **extra}


def _train(kind: str, preset: str, hr: dict[str, float]) -> dict:
    runs = []
    for framework, value in hr.items():
        history = [{"epoch": e, "loss": 10.0 - e, "val_hr": value - 0.1 + 0.02 * e, "val_ndcg": 0.3} for e in range(5)]
        runs.append({"framework": framework, "seed": 0, "dtype": "float32", "epochs_run": 5, "stopped_early": False,
                     "best_epoch": 4, "validation": {"hr": value - 0.02, "ndcg": 0.4},
                     "test": {"k": 10, "hr": value, "hr_low": value - 0.01, "hr_high": value + 0.01, "ndcg": value / 2,
                              "ndcg_low": value / 2 - 0.01, "ndcg_high": value / 2 + 0.01, "n_users": 6040,
                              "protocol": "neumf"},
                     "history": history})
    summary = {fw: {"test_hr": {"mean": v, "std": 0.0, "n": 1}, "test_ndcg": {"mean": v / 2, "std": 0.0, "n": 1},
                    "val_hr": {"mean": v, "std": 0.0, "n": 1}, "seeds": [0]} for fw, v in hr.items()}
    return {"command": "train", "preset": preset, "run_name": preset, "frameworks": list(hr), "seeds": [0],
            "config": {"model": {"kind": kind, "c": 1.0}, "data": {"dataset": "ml-1m-neumf", "protocol": "neumf"}},
            "split": {"dataset": "ml-1m-neumf", "validation_users": 6040}, "runs": runs, "summary": summary}


def _arm(name: str, users_per_s: list[float]) -> dict:
    epoch = [6000 / u for u in users_per_s]
    return {"arm": name, "framework": name.split("-")[0], "status": "ok", "warmup_s": 9.0, "compile_s": 1.0,
            "train_users_per_s": stats.summarize(users_per_s), "epoch_s": stats.summarize(epoch),
            "feed_s": stats.summarize([0.1] * len(epoch)), "run_s": stats.summarize([e - 0.1 for e in epoch]),
            "step_s": stats.summarize([0.05] * len(epoch)), "epoch_step_s": 0.05, "loop_overhead_s": 0.1,
            "infer_users_per_s": stats.summarize([10 * u for u in users_per_s]),
            "infer_s": stats.summarize([0.1] * len(epoch)), "matmul_gflops": 40.0, "matmul_fraction": 0.85,
            "matmul_fraction_run": 0.9, "matmul_fraction_step": 0.95, "memory": {"resident_mb": 100.0,
                                                                              "epoch_peak_above_mb": 50.0}}


def _ratios(arms: list[dict]) -> list[dict]:
    """Every pair of arms, later over earlier, as the bench writes them (median and the repeats' range)."""
    ordered = sorted(arms, key=lambda a: ARMS.index(a["arm"]))
    return [{"metric": metric, "numerator": later["arm"], "denominator": earlier["arm"],
             **stats.ratio(later[metric], earlier[metric])}
            for earlier, later in itertools.combinations(ordered, 2) for metric in ("train_users_per_s",
                                                                                   "infer_users_per_s")]


def _bench() -> dict:
    workloads = []
    presets = (("ae-neumf", "ae", {"torch-eager": [1000, 1100, 900], "torch-compile": [1200, 1300, 1100],
                                   "jax-jit": [1500, 1600, 1400], "jax-scan": [2000, 2100, 1900]}),
               ("hae-neumf", "hae", {"torch-eager": [300, 310, 290], "torch-compile": [500, 520, 480],
                                     "jax-scan": [450, 460, 440]}))
    for name, kind, speeds in presets:
        arms = [_arm(arm, values) for arm, values in speeds.items()]
        workloads.append({"name": name, "kind": "model", "model_kind": kind,
                          "config": {"model": {"layer_sizes": [3706, 600]}},
                          "batch_size": 256, "steps_per_epoch": 24, "n_users": 6000,
                          "flops": {"train_epoch": 1.3e11, "train_per_user": 2.2e7, "inference_per_user": 8.9e6},
                          "matmul_rate": {"jax": {"gflops": 48.0}, "torch": {"gflops": 21.0}},
                          "arms": arms, "ratios": _ratios(arms)})
    workloads.append({"name": "optimizer-adam", "kind": "optimizer", "n_points": 10000, "dim": 64, "dtype": "float32",
                      "arms": [], "ratios": [], "result": {"jax_ms": 9.0, "torch_ms": 60.0, "jax_ms_min": 8.0,
                                                           "torch_ms_min": 55.0}})
    return {"command": "bench", "settings": {"device": "cpu", "dtype": "float32", "repeats": 3},
            "data": {"dataset": "synthetic", "n_users": 6000, "n_items": 3706},
            "device": {"device": "cpu", "cpu_model": "Test CPU", "usable_cpus": 2, "load_average": [1.0, 1.0, 1.0],
                       "versions": {"jax": "0.10.2", "torch": "2.13.0+cpu"}},
            "workloads": workloads,
            "targets": [{"workload": "hae-neumf", "target": "best JAX training users/s / torch-eager >= 2",
                         "threshold": 2.0, "value": 1.5, "met": False}]}


@pytest.fixture
def fixture_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "inputs"
    folder.mkdir()
    ops = []
    for dtype in ("float64", "float32"):
        for fn in ("dist", "expmap"):
            boundary_passes = dtype == "float64" or fn != "expmap"
            for regime, rel, passed in (("zero", 1e-12, True), ("boundary", 3e-3, boundary_passes)):
                extra = {"function": fn, "regime": regime, "reference_wrong": False, "oracle": False}
                if fn == "dist" and regime == "zero":  # geoopt off the oracle; JAX on it
                    extra.update(reference_wrong=True, oracle=True, oracle_rel_err_jax=2.5e-16, oracle_rel_err_ref=1.0)
                    rel = 7.3e3
                ops.append(_record(f"ops.{fn}", dtype, rel, passed, **extra))
    (folder / "ops.json").write_text(json.dumps({"suite": "ops", "records": ops}))
    optim = [_record(f"optim.{name}.retr", "float64", 1e-12, True, config=name, variant="retraction", worst_step=7,
                     trajectory_max_rel_err=1e-12, per_step_max_rel_err=[1e-15 * (s + 1) for s in range(20)],
                     steps=20, judged_steps=20)
             for name in ("sgd", "adam")]
    (folder / "optim.json").write_text(json.dumps({"suite": "optim", "records": optim}))
    models = [_record("forward/selu/output", "float64", 1e-14, True),
              _record("training/adam/weights", "float32", 1e-6, True)]
    (folder / "models.json").write_text(json.dumps({"suite": "models", "records": models}))
    (folder / "train-ae.json").write_text(json.dumps(_train("ae", "ae-neumf", {"jax": 0.6612, "torch": 0.6598})))
    (folder / "train-hae.json").write_text(json.dumps(_train("hae", "hae-neumf", {"jax": 0.7012})))
    baseline = {"k": 10, "hr": 0.4531, "hr_low": 0.44, "hr_high": 0.46, "ndcg": 0.2541, "ndcg_low": 0.25,
                "ndcg_high": 0.26, "n_users": 6040}
    (folder / "baselines.json").write_text(json.dumps({
        "protocol": "neumf", "dataset": "ml-1m-neumf", "k": 10, "popularity": baseline,
        "ease_fixed": {**baseline, "lambda": 500.0, "hr": 0.7096, "hr_low": 0.70, "hr_high": 0.72},
        "ease_tuned": {**baseline, "lambda": 1000.0, "hr": 0.7182, "hr_low": 0.707, "hr_high": 0.729}}))
    (folder / "bench.json").write_text(json.dumps(_bench()))
    (folder / "run.json").write_text(json.dumps({"command": "run", "name": "t", "dataset": "ml-1m-neumf", "quick": True,
                                                 "seconds": 100.0, "stages": [
        {"name": "ops", "status": "failed-checks", "seconds": 10.0, "argv": ["poincare-parity", "ops"],
         "summary": "7/8 rows pass"},
        {"name": "optim", "status": "error", "seconds": 1.0, "argv": ["poincare-parity", "optim"],
         "summary": "exit status 2: boom", "tail": "Traceback ...\nboom"},
        {"name": "train-hae", "status": "skipped", "seconds": 0.0, "argv": [], "summary": "not selected"},
        {"name": "bench", "status": "skipped", "seconds": 0.0, "argv": [], "summary": "not selected"}]}))
    (folder / "compare.json").write_text(json.dumps({"command": "compare", "comparisons": [
        {"a": "hae-neumf", "b": "ae-neumf", "framework": "jax", "seeds": [0], "n_users": 6040,
         "dataset": "ml-1m-neumf", "hr": {"diff": 0.04, "low": 0.03, "high": 0.05},
         "ndcg": {"diff": 0.02, "low": 0.01, "high": 0.03}}]}))
    (folder / "unrelated.json").write_text(json.dumps({"hello": "world"}))
    return folder


def test_first_screen_holds_the_verdict_parity_quality_and_throughput(fixture_dir: Path, tmp_path: Path):
    out = tmp_path / "report"
    summary = report.write_report([fixture_dir], out, "fixture")
    text = (out / "report.md").read_text()
    screen = _first_screen(text)
    assert text.startswith("# poincare-parity report: fixture")
    verdict = next(line for line in screen.splitlines() if line.startswith("**Verdict:**"))
    assert "FAILS parity in ops (7/8 rows pass); optim 2/2, models 2/2 rows pass" in verdict
    assert "1.50x (hyperbolic AE)" in verdict and "(interval not measured)" in verdict
    assert "FAILED: optim" in verdict or "stages that FAILED: optim" in verdict
    # parity per suite: rows passing and the largest error per dtype, the oracle-judged rows left out of it
    assert "| ops | **FAIL** | 7/8 | 3.0e-03 (tolerance 1e-09; dist / boundary) |" in screen
    assert "in 2 rows geoopt itself is off the exact oracle" in screen and "JAX matches the oracle in all" in screen
    # HR@10 per model and framework, with intervals; a published figure only beside its counterpart
    assert "| Hyperbolic AE (hae-neumf) | JAX | 0.7012 [0.691, 0.711] | 0.3506 [0.341, 0.361] | 0.7051 / 0.4360 ¹ |" \
        in screen
    assert "| Euclidean AE (ae-neumf) | PyTorch | 0.6598 [0.650, 0.670] | 0.3299 [0.320, 0.340] | none ² |" in screen
    assert "| EASE, lambda 500 | numpy (no framework) | 0.7096 [0.700, 0.720]" in screen
    assert "0.7098 / 0.4374 ³" in screen
    assert re.search(r"\| EASE, lambda 1000 \(tuned on validation\) \| numpy \(no framework\) "
                     r"\| [^|]+ \| [^|]+ \| - \|", screen)
    assert "0.4685" not in screen.split("- ² ")[0]  # the paper's Euclidean AE: only in its footnote
    for mark, words in (("¹", "HAE(M, c=0.0016)"), ("²", "has no published counterpart"), ("³", "lambda = 500")):
        note = next(line for line in screen.splitlines() if line.startswith(f"- {mark} "))
        assert "Mirvakhabova et al. 2020" in note and "Table 4" in note and words in note
    # throughput: best JAX arm over PyTorch eager, torch.compile and sparse (not run here: "-"), the repeats'
    # range, no interval measured
    assert ("| Euclidean AE (ae-neumf) | jax-scan, 2000/s | 2.00x (interval not measured; repeats' range 1.73-2.33) "
            "| 1.67x (interval not measured; repeats' range 1.46-1.91) | - | not assessed |") in screen
    assert "| Hyperbolic AE (hae-neumf) | jax-scan, 450/s | 1.50x" in screen
    assert "**Device:** cpu: Test CPU, 2 usable CPUs" in screen and "jax 0.10.2" in screen
    assert "not recorded in 8 of 9 inputs" in screen
    assert "FAILED: optim (exit status 2: boom)" in screen
    assert "not run there but read from other files: train-hae (`" in screen and "bench (`" in screen
    assert not INTERNAL_WORDING.search(text)  # the bench's developer targets are never shown

    assert [p["verdict"] for p in summary["parity"]] == ["fail", "pass", "pass"]
    assert summary["parity"][0]["worst"]["float64"]["max_rel_err"] == 3e-3  # the 7.3e3 of the oracle row is geoopt's
    assert {(q["kind"], q["framework"]) for q in summary["quality"]} == {("ae", "jax"), ("ae", "torch"), ("hae", "jax")}
    assert summary["ignored"] and summary["ignored"][0]["path"].endswith("unrelated.json")
    assert "targets" not in summary

    stored = json.loads((out / "report.json").read_text())
    assert stored["parity"] == summary["parity"] and stored["verdict"] == summary["verdict"]
    assert len(stored["plots"]) == 6
    for plot in stored["plots"]:
        assert (out / plot).read_bytes()[:8] == PNG
        assert f"]({plot})" in text  # every plot is shown in the Markdown
    assert "Traceback ...\nboom" in text  # the failed stage's last lines
    assert "| hae-neumf − ae-neumf | JAX | 1 | 6040 | +0.0400 [+0.0300, +0.0500] | +0.0200 [+0.0100, +0.0300] |" in text


def test_rows_judged_by_the_oracle_show_both_sides_errors_and_say_why_they_pass(tmp_path: Path):
    rows = [_record("ops.logmap0", "float64", 4.96e3, True, function="logmap0", regime="zero", oracle=True,
                    reference_wrong=True, oracle_rel_err_jax=2.05e-16, oracle_rel_err_ref=1.0),
            _record("ops.dist", "float32", 12.0, False, function="dist", regime="identical", oracle=True,
                    reference_wrong=True, oracle_rel_err_jax=3e-2, oracle_rel_err_ref=5.0),
            _record("ops.dist", "float64", 1e-12, True, function="dist", regime="bulk", oracle=False)]
    (tmp_path / "ops.json").write_text(json.dumps({"suite": "ops", "records": rows}))
    report.write_report([tmp_path / "ops.json"], tmp_path / "r")
    text = (tmp_path / "r" / "report.md").read_text()
    assert ("| logmap0 / zero | float64 | 4.96e+03 | 2.05e-16 | 1.00e+00 | 1e-09 | passes because JAX matches the "
            "exact oracle (2.1e-16 <= 1e-09) where geoopt does not (1.0e+00) |") in text
    assert ("| dist / identical | float32 | 1.20e+01 | 3.00e-02 | 5.00e+00 | 1e-04 | "
            "FAILS: geoopt is off the oracle") in text
    # in the table of all rows: the oracle's errors of both sides beside the parity error, and why it passes
    assert ("| logmap0 / zero | float64 | 4.96e+02 | 4.96e+03 | 1e-09 | 2.05e-16 | 1.00e+00 | "
            "ok, by the oracle |") in text
    assert "| dist / bulk | float64 | 1.00e-13 | 1.00e-12 | 1e-09 | - | - | ok |" in text
    assert "JAX matches the oracle in 1; 1 fail because JAX is off the oracle too" in _first_screen(text)
    # the heat map colours an oracle-judged row by JAX's error against the oracle, not by geoopt's error
    assert plots.ops_cell_value(rows[0]) == pytest.approx(2.05e-16 / 1e-9)
    assert plots.ops_cell_value(rows[2]) == pytest.approx(1e-12 / 1e-9)


def test_a_user_suite_gets_its_own_section_and_a_place_in_the_verdict(tmp_path: Path):
    records = [
        {"check": "layer.forward", "dtype": "float32", "max_abs_err": 2e-7, "max_rel_err": 3e-7, "tolerance": 1e-5,
         "passed": True, "atol": 1e-6, "nonfinite_jax": 0, "nonfinite_ref": 0, "note": "", "where": "output",
         "worst_index": [3, 7], "worst_jax": 0.5000001, "worst_ref": 0.5, "mismatched": 0, "n_elements": 4096},
        {"check": "layer.grad", "dtype": "float32", "max_abs_err": 0.2, "max_rel_err": 0.1, "tolerance": 1e-5,
         "passed": False, "atol": 1e-6, "nonfinite_jax": 2, "nonfinite_ref": 0, "note": "weight gradient",
         "where": "grad.weight", "worst_index": [0, 1], "worst_jax": 1.2, "worst_ref": 1.0, "mismatched": 17,
         "n_elements": 1024, "rtol_reason": "a check-specific extra"}]
    write_json(tmp_path / "mine.json", {"suite": "custom", "name": "my-layer", "records": records}, command="check")
    (tmp_path / "other.json").write_text(json.dumps({"suite": "attention", "records": records[:1]}))
    summary = report.write_report([tmp_path / "mine.json", tmp_path / "other.json"], tmp_path / "r")
    text = (tmp_path / "r" / "report.md").read_text()
    screen = _first_screen(text)
    assert "| custom: my-layer | **FAIL** | 1/2 | 1.0e-01 (tolerance 1e-05; layer.grad) |" in screen
    assert "| attention | **PASS** | 1/1 |" in screen
    assert "FAILS parity in custom: my-layer (1/2 rows pass)" in screen and "attention 1/1" in screen
    assert "not run: ops (missing), optim (missing), models (missing)" in screen
    assert "### custom: my-layer" in text and "### attention" in text
    assert ("| layer.grad | float32 | grad.weight[0, 1] | 1.2 / 1 | 17 of 1,024 | 2.00e-01 | 1.00e-01 | 1e-05 / 1e-06 "
            "| FAIL | weight gradient; 2 non-finite on the JAX side |") in text
    assert "| layer.forward | float32 | output[3, 7] | 0.5000001 / 0.5 | 0 of 4,096 |" in text
    assert [p["label"] for p in summary["parity"]] == ["ops", "optim", "models", "custom: my-layer", "attention"]
    # the envelope write_json added is read: versions and device of this process
    assert "**Versions:** " in screen and "not recorded in 1 of 2 inputs" in screen


def test_bench_intervals_and_trust_are_shown_when_the_bench_measured_them(tmp_path: Path):
    bench = _bench()
    hae = bench["workloads"][1]
    hae["trust"] = {"trustworthy": False, "why": "load average 3.1 on 2 CPUs", "load_average": 3.1}
    bench["workloads"][0]["trust"] = {"trustworthy": True, "why": "quiet machine"}
    for r in hae["ratios"]:
        if r["numerator"] == "jax-scan" and r["denominator"] == "torch-eager" and r["metric"] == "train_users_per_s":
            r["interval"] = {"low": 1.41, "high": 1.58, "level": 0.95, "method": "bootstrap"}
    (tmp_path / "bench.json").write_text(json.dumps(bench))
    summary = report.write_report([tmp_path / "bench.json"], tmp_path / "r")
    screen = _first_screen((tmp_path / "r" / "report.md").read_text())
    assert "| Hyperbolic AE (hae-neumf) | jax-scan, 450/s | 1.50x [1.41, 1.58] 95% CI |" in screen
    assert "| **no**: load average 3.1 on 2 CPUs |" in screen and "| yes: quiet machine |" in screen
    assert "not trustworthy (hae-neumf: load average 3.1 on 2 CPUs)" in summary["verdict"]
    assert "95% CI 1.41-1.58" in summary["verdict"]


def test_inputs_without_versions_or_device_say_not_recorded(tmp_path: Path, fixture_dir: Path):
    only = tmp_path / "only"
    only.mkdir()
    (only / "models.json").write_text((fixture_dir / "models.json").read_text())
    summary = report.write_report([only], only)
    assert [p["verdict"] for p in summary["parity"]] == ["missing", "missing", "pass"]
    text = (only / "report.md").read_text()
    screen = _first_screen(text)
    assert "**Device:** not recorded. **Versions:** not recorded." in screen
    assert "| ops | not run | no ops JSON among the inputs |" in screen
    assert "No bench JSON among the inputs" in text and "no train or baselines JSON" in screen


def test_reference_report_first_screen(tmp_path: Path):
    """The committed reference JSON (which predates the envelope in most files) renders a first screen
    with the verdict, the device and the versions, and no internal wording anywhere."""
    missing = [str(p) for p in REFERENCE_INPUTS if not p.exists()]
    assert not missing, f"committed inputs missing: {missing}"
    out = tmp_path / "reference"
    summary = report.write_report(REFERENCE_INPUTS, out, "reference-cpu")
    text = (out / "report.md").read_text()
    screen = _first_screen(text)
    assert screen.splitlines()[2].startswith("**Verdict:** The JAX port matches PyTorch/geoopt in every parity suite")
    assert "ops 176/176, optim 48/48, models 274/274 rows pass" in summary["verdict"]
    assert "**Device:** cpu: AMD EPYC, 2 usable CPUs" in screen
    assert re.search(r"\*\*Versions:\*\* (poincare-parity [\d.]+, )?jax 0\.10\.2, jaxlib 0\.10\.2, "
                     r"flax [\d.]+, optax [\d.]+, torch 2\.13\.0\+cpu, geoopt 0\.5\.1", screen)
    assert "| ops | **PASS** | 176/176 |" in screen and "| models | **PASS** | 274/274 |" in screen
    assert "| Hyperbolic AE (hae-neumf) | JAX | 0.7321 ± 0.0016 (±0.011) |" in screen
    assert "| Euclidean AE (ae-neumf) | JAX | 0.7172 ± 0.0014 (±0.011) | 0.4433 ± 0.0020 (±0.009) | none ² |" in screen
    assert "timings trustworthy?" in screen and "**Stages**" in screen
    assert "train-ae (`" in screen and "skipped: train-ae" not in screen  # its results come from another file
    assert not INTERNAL_WORDING.search(text)
    assert not INTERNAL_WORDING.search((out / "report.json").read_text())  # the stages' logs say "targets"
    assert len(summary["plots"]) == 8 and "plots/cost_curve.png" in summary["plots"]  # and the cost curve


def test_optim_plot_falls_back_to_the_worst_error_without_per_step_errors(tmp_path: Path):
    records = [_record("optim.sgd.retr", "float64", 1e-12, True, config="sgd", variant="retraction",
                       trajectory_max_rel_err=1e-12, worst_step=3)]
    path, per_step = report.plot_optim({"suite": "optim", "records": records}, tmp_path / "o.png")
    assert per_step is False and path.read_bytes()[:8] == PNG


def test_report_cli(fixture_dir: Path, tmp_path: Path, capsys):
    assert main(["report", str(fixture_dir)]) == 0
    assert (fixture_dir / "report.md").exists()
    out = capsys.readouterr().out
    assert out.startswith("Verdict: The JAX port FAILS parity in ops") and "ops     fail (7/8)" in out
    assert main(["report", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x")]) == 2
    assert "no such file or folder" in capsys.readouterr().err
    assert main(["report", str(fixture_dir / "ops.json")]) == 2  # where to write it?
    assert "--name" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["report", str(empty)]) == 2
    assert "no JSON files" in capsys.readouterr().err
