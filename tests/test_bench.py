"""The bench harness on toy sizes: FLOP counting, statistics and paired ratios with their intervals, the
trust verdict (other processes' load, spreads, interval widths), well-formed records from real (tiny) runs
of the arms, of the cost curve over item counts and of the device counts, an arm failure that does not
stop the others, the optimizer row, CLI errors, and the report reading what the bench writes.
Timings themselves are never asserted (speed is checked by running the bench, not by tests)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from parity import bench, report, stats, sysinfo
from parity.bench import runner, trust
from parity.cli import main
from parity.commands.bench import format_results
from parity.config import ModelConfig
from parity.report.summary import ratio_interval

N_USERS = 1000  # users per epoch of the synthetic records below


def test_step_gemms_count_forward_weight_and_input_gradients():
    model = ModelConfig(layer_sizes=(10, 4, 3))  # layers 10->4, 4->3, then the decoder 3->4, 4->10
    gemms = bench.step_gemms(model, batch=5)
    assert [g.role for g in gemms].count("forward") == 4
    assert [g.role for g in gemms].count("weight grad") == 4
    assert [g.role for g in gemms].count("input grad") == 3  # none for the first layer: its input needs no gradient
    assert gemms[0] == bench.Gemm("forward", "x W^T", 5, 10, 4)
    assert gemms[1] == bench.Gemm("weight grad", "dY^T x", 4, 5, 10)
    assert bench.Gemm("input grad", "dY W", 5, 3, 4) in gemms
    # per user: 2 * (40 + 12 + 12 + 40) for the forward, the same for weight grads, 2 * (12 + 12 + 40) for input grads
    assert bench.train_flops_per_user(model) == 2 * 104 * 2 + 2 * 64
    assert bench.train_flops_per_user(model, dense_refeeding=True) == 2 * (2 * 104 * 2 + 2 * 64)
    assert bench.inference_flops_per_user(model) == 2 * 104
    assert sum(g.flops for g in gemms) == 5 * bench.train_flops_per_user(model)
    for g in gemms:  # operand shapes multiply to (m, n) with inner size k
        (a0, a1), (b0, b1) = g.operand_shapes()
        m, k = (a1, a0) if g.op == "dY^T x" else (a0, a1)
        kb, n = (b1, b0) if g.op == "x W^T" else (b0, b1)
        assert (m, k, n) == (g.m, g.k, g.n) and kb == k


def test_summarize_and_ratio():
    s = stats.summarize([3.0, 1.0, 2.0])
    assert (s["median"], s["min"], s["max"], s["n"]) == (2.0, 1.0, 3.0, 3)
    r = stats.ratio(stats.summarize([4.0, 6.0, 5.0]), s)
    assert r == {"median": 2.5, "low": 4.0 / 3.0, "high": 6.0}
    assert stats.ratio(stats.summarize([]), s) is None


# ---------------------------------------------------------------------------------------------
# paired ratios and their intervals


def test_paired_ratio_of_identical_samples_is_exact_and_tight():
    a = [2.0, 4.0, 3.0, 2.5, 5.0, 3.5, 2.0, 4.5]
    r = stats.paired_ratio(a, a)
    assert r["median"] == 1.0 and r["best"] == 1.0 and (r["low"], r["high"]) == (1.0, 1.0)
    assert r["interval"]["low"] == r["interval"]["high"] == 1.0 and r["interval"]["level"] == 0.95
    assert r["n"] == 8 and r["paired"] == [1.0] * 8


def test_paired_ratio_cancels_a_load_that_moves_both_arms():
    # repeat i ran under load factor L_i for both arms: arm A always twice B's throughput
    load = np.array([1.0, 3.0, 1.5, 2.0, 1.0, 4.0, 1.2, 2.5, 1.0, 1.8])
    a, b = 2000.0 / load, 1000.0 / load
    paired = stats.paired_ratio(a, b)
    assert paired["median"] == pytest.approx(2.0) and paired["interval"]["low"] == pytest.approx(2.0)
    assert paired["interval"]["high"] == pytest.approx(2.0) and paired["best"] == pytest.approx(2.0)
    unpaired = stats.ratio(stats.summarize(a), stats.summarize(b))  # min/max .. max/min: the old range
    assert unpaired["low"] == pytest.approx(0.5) and unpaired["high"] == pytest.approx(8.0)


def test_paired_ratio_interval_covers_the_median_and_widens_with_the_spread():
    rng = np.random.default_rng(0)
    b = np.full(10, 100.0)
    narrow = stats.paired_ratio(b * np.exp(rng.normal(0, 0.01, 10)), b)
    wide = stats.paired_ratio(b * np.exp(rng.normal(0, 0.5, 10)), b)
    for r in (narrow, wide):
        assert r["low"] <= r["interval"]["low"] <= r["median"] <= r["interval"]["high"] <= r["high"]
    width = lambda r: r["interval"]["high"] / r["interval"]["low"]
    assert width(narrow) < 1.05 < trust.RATIO_INTERVAL_WIDTH_MAX < width(wide)
    # a seeded bootstrap: the same samples, the same interval
    assert stats.paired_ratio(b * 1.1, b, seed=3)["interval"] == stats.paired_ratio(b * 1.1, b, seed=3)["interval"]


def test_paired_ratio_gives_no_interval_below_the_minimum_of_pairs_and_best_follows_the_direction():
    few = stats.paired_ratio([2.0, 3.0, 4.0, 2.0, 3.0], [1.0, 1.0, 2.0, 1.0, 1.0])
    assert few["interval"] is None and "5 paired repeats" in few["interval_why"]
    assert few["median"] == 2.0 and few["best"] == 4.0 / 2.0  # throughput: best = the largest
    seconds = stats.paired_ratio([2.0, 3.0, 4.0], [1.0, 1.0, 2.0], better="lower")
    assert seconds["best"] == 2.0 / 1.0  # seconds: best = the smallest
    assert stats.paired_ratio([1.0, 2.0], [0.0, 0.0]) is None
    with pytest.raises(ValueError, match="better"):
        stats.paired_ratio([1.0], [1.0], better="faster")


# ---------------------------------------------------------------------------------------------
# the trust verdict


def _record(epochs: dict[str, list[float]], background: float | None = 0.01) -> dict:
    """A model workload as bench_model writes it, from each arm's epoch seconds."""
    arms = [{"arm": arm, "framework": bench.ARM_FRAMEWORK[arm], "status": "ok", "epoch_s": stats.summarize(s),
             "train_users_per_s": stats.summarize([N_USERS / x for x in s])} for arm, s in epochs.items()]
    return {"name": "w", "kind": "model", "arms": arms, "ratios": runner.pair_ratios(arms),
            "background_busy": background}


def test_a_quiet_workload_is_trustworthy_and_says_what_was_measured():
    rng = np.random.default_rng(1)
    load = 1 + 0.02 * rng.random(10)  # 2% load moving both arms alike
    verdict = trust.assess_workload(_record({"torch-eager": list(2.0 * load), "jax-scan": list(1.0 * load)}))
    assert verdict["trustworthy"], verdict["why"]
    assert verdict["background_busy"] == 0.01 and verdict["spread"] < 1.03 and verdict["repeats"] == 10
    assert verdict["ratio_interval_width"] < 1.01 and "other processes used 1% of the CPUs" in verdict["why"]


def test_a_known_wide_spread_is_untrustworthy():
    rng = np.random.default_rng(2)
    noisy = list(1.0 + rng.exponential(0.6, 10))  # load spikes on one arm only
    verdict = trust.assess_workload(_record({"torch-eager": [2.0] * 10, "jax-scan": noisy}))
    assert not verdict["trustworthy"]
    assert "jax-scan's repeats vary" in verdict["why"]
    assert "95% interval of jax-scan / torch-eager spans" in verdict["why"]
    assert verdict["spread_of"] == "jax-scan" and verdict["ratio_interval_width"] > trust.RATIO_INTERVAL_WIDTH_MAX


def test_background_load_or_too_few_repeats_make_a_workload_untrustworthy():
    busy = trust.assess_workload(_record({"torch-eager": [2.0] * 10, "jax-scan": [1.0] * 10}, background=0.4))
    assert not busy["trustworthy"] and "other processes used 40% of the CPUs during the timed epochs" in busy["why"]
    few = trust.assess_workload(_record({"torch-eager": [2.0] * 3, "jax-scan": [1.0] * 3}))
    assert not few["trustworthy"] and "no 95% interval" in few["why"] and "3 paired repeats" in few["why"]
    assert trust.assess_workload(_record({"torch-eager": [2.0] * 3, "jax-scan": [1.0] * 3}),
                                 judge_ratios=False)["trustworthy"]  # the cost curve judges no ratios
    run = trust.assess_run([("a", busy), ("b", few), ("c", None)], background_before=0.02)
    assert not run["trustworthy"] and run["untrustworthy"] == ["a", "b"]


def test_the_cpu_meter_counts_this_process_and_its_children_as_its_own():
    import subprocess
    import sys

    if sysinfo.cpu_ticks() is None:
        pytest.skip("no /proc/stat here")
    ticks = sysinfo.own_cpu_ticks()
    child = subprocess.run([sys.executable, "-c", "sum(i * i for i in range(3_000_000))"], check=True)
    assert child.returncode == 0 and sysinfo.own_cpu_ticks() > ticks  # the waited-for child's time is ours
    share = sysinfo.CpuMeter().share()
    assert share is None or 0.0 <= share <= 1.0


# ---------------------------------------------------------------------------------------------
# a real tiny run of the arms


@pytest.fixture(scope="module")
def tiny_payload(tmp_path_factory):
    path = tmp_path_factory.mktemp("bench") / "bench.json"
    code = main(["bench", "--tiny", "--presets", "ae-neumf", "--arms", "torch-eager,jax-jit,jax-scan",
                 "--repeats", str(stats.MIN_PAIRS_FOR_INTERVAL), "--optimizers", "adam", "--no-progress",
                 "--json", str(path)])
    assert code == 0
    return json.loads(path.read_text())


def test_tiny_bench_writes_well_formed_records(tiny_payload):
    p = tiny_payload
    repeats = stats.MIN_PAIRS_FOR_INTERVAL
    assert p["command"] == "bench" and p["settings"]["tiny"] and p["settings"]["repeats"] == repeats
    assert p["data"]["n_items"] == bench.TINY["n_items"]
    for key in ("cpu_model", "usable_cpus", "torch_threads", "versions", "jax_backend", "load_average"):
        assert key in p["device"]
    assert p["device"]["versions"]["jax"] and p["device"]["versions"]["torch"]
    model = next(w for w in p["workloads"] if w["kind"] == "model")
    assert model["name"] == "ae-neumf" and model["model_kind"] == "ae"
    assert model["config"]["model"]["layer_sizes"][0] == p["data"]["n_items"]
    assert model["flops"]["train_epoch"] == pytest.approx(model["flops"]["train_per_user"] * model["n_users"])
    assert set(model["matmul_rate"]) == {"torch", "jax"}
    for rate in model["matmul_rate"].values():
        assert rate["gflops"] > 0 and rate["per_shape"]
    assert [a["arm"] for a in model["arms"]] == ["torch-eager", "jax-jit", "jax-scan"]
    for arm in model["arms"]:
        assert arm["status"] == "ok", arm.get("error")
        for key in ("train_users_per_s", "epoch_s", "feed_s", "run_s", "step_s", "infer_users_per_s"):
            stat = arm[key]
            assert stat["n"] == repeats
            assert stat["min"] <= stat["median"] <= stat["max"]
        for a, f, r in zip(arm["epoch_s"]["samples"], arm["feed_s"]["samples"], arm["run_s"]["samples"]):
            assert a == pytest.approx(f + r)
        assert arm["warmup_s"] > 0 and arm["compile_s"] >= 0
        assert arm["matmul_fraction"] > 0 and arm["matmul_fraction_step"] > 0
        assert "resident_mb" in arm["memory"] and arm["epoch_spread"] >= 1.0
    # every pair, both metrics, later arm over earlier: the median of the paired ratios of the repeats
    assert len(model["ratios"]) == 3 * 2
    by_arm = {a["arm"]: a for a in model["arms"]}
    for r in model["ratios"]:
        num, den = by_arm[r["numerator"]][r["metric"]], by_arm[r["denominator"]][r["metric"]]
        paired = [x / y for x, y in zip(num["samples"], den["samples"])]
        assert r["paired"] == pytest.approx(paired) and r["median"] == pytest.approx(float(np.median(paired)))
        assert r["best"] == pytest.approx(num["max"] / den["max"]) and r["low"] <= r["median"] <= r["high"]
        assert r["interval"]["low"] <= r["median"] <= r["interval"]["high"] and r["interval"]["level"] == 0.95
    assert "paired" in p["ratio_method"]
    # trust: per workload and for the run, with the fields the report reads
    for verdict in (model["trust"], p["trust"]):
        assert isinstance(verdict["trustworthy"], bool) and verdict["why"]
        assert "background_busy" in verdict and "spread" in verdict
    assert model["trust"]["spread"] == pytest.approx(max(a["epoch_spread"] for a in model["arms"]))
    assert set(p["trust_thresholds"]) >= {"background_busy_max", "epoch_spread_max", "ratio_interval_width_max"}
    assert all(t["why"] for t in p["trust_thresholds"].values())
    optimizer = next(w for w in p["workloads"] if w["kind"] == "optimizer")
    assert optimizer["name"] == "optimizer-adam" and {a["arm"] for a in optimizer["arms"]} == {"torch-eager", "jax-jit"}
    assert isinstance(optimizer["trust"]["trustworthy"], bool)
    assert p["targets"] == []  # not judged on toy shapes
    targets = bench.check_targets(p["workloads"])  # ... but computable from the records
    assert {t["threshold"] for t in targets} == {1.3, bench.MATMUL_FRACTION_TARGET}
    assert all(isinstance(t["met"], bool) for t in targets)
    text = format_results(p)
    assert "jax-scan" in text and "matmul rate" in text and "run trustworthy: " in text
    assert "timings trustworthy: " in text and "of the CPUs before the run" in text


def test_the_report_reads_the_ratio_intervals_and_the_trust_flags(tiny_payload, tmp_path):
    model = next(w for w in tiny_payload["workloads"] if w["kind"] == "model")
    # the report's best JAX arm is the faster of jax-jit and jax-scan in this run (either can be, on toy shapes)
    best = max((a for a in model["arms"] if a["framework"] == "jax"), key=lambda a: a["train_users_per_s"]["median"])
    scan_over_eager = next(r for r in model["ratios"] if r["numerator"] == best["arm"]
                           and r["denominator"] == "torch-eager" and r["metric"] == "train_users_per_s")
    assert ratio_interval(scan_over_eager) == {**{k: scan_over_eager["interval"][k] for k in ("low", "high", "level")},
                                               "method": scan_over_eager["interval"]["method"]}
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(tiny_payload))
    summary = report.write_report([path], tmp_path / "r")
    row = next(t for t in summary["throughput"] if t["workload"] == "ae-neumf")
    assert row["torch-eager"]["interval"]["low"] == scan_over_eager["interval"]["low"]
    assert row["trust"] == model["trust"] and summary["bench_trust"] == tiny_payload["trust"]
    text = (tmp_path / "r" / "report.md").read_text()
    assert "95% CI" in text and "Run timings trustworthy? " in text and "best / best" in text


def test_the_trust_flag_reports_a_busy_machine_before_the_run(monkeypatch, tmp_path):
    monkeypatch.setattr(sysinfo, "background_busy", lambda seconds=2.0: 0.5)
    path = tmp_path / "bench.json"
    assert main(["bench", "--tiny", "--presets", "ae-neumf", "--arms", "jax-scan", "--repeats", "1",
                 "--no-optimizer", "--no-progress", "--json", str(path)]) == 0
    verdict = json.loads(path.read_text())["trust"]
    assert verdict["trustworthy"] is False and verdict["background_busy"] == 0.5
    assert "other processes used 50% of the CPUs in the 0.25 s before the run" in verdict["why"]
    monkeypatch.setattr(sysinfo, "background_busy", lambda seconds=2.0: 0.0)
    assert main(["bench", "--tiny", "--presets", "ae-neumf", "--arms", "jax-scan", "--repeats", "1",
                 "--no-optimizer", "--no-progress", "--json", str(path)]) == 0
    assert "before the run (more than" not in json.loads(path.read_text())["trust"]["why"]


def test_a_failing_arm_is_recorded_and_the_others_still_run(monkeypatch):
    real = bench.make_arm

    def make_arm(name, *args, **kwargs):
        if name == "jax-jit":
            raise RuntimeError("no such luck")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(runner, "make_arm", make_arm)
    data = bench.load_bench_data(tiny=True)
    record = bench.bench_model("ae-neumf", data, arms=("torch-eager", "jax-jit"), repeats=1, steps=1, hidden_cap=8,
                               matmul_target_s=0.001)
    arms = {a["arm"]: a for a in record["arms"]}
    assert arms["jax-jit"]["status"] == "failed" and "no such luck" in arms["jax-jit"]["error"]
    assert arms["torch-eager"]["status"] == "ok"
    assert record["ratios"] == [] and set(record["matmul_rate"]) == {"torch"}


def test_an_arm_the_memory_guard_refuses_is_skipped_with_its_reason():
    data = bench.load_bench_data(tiny=True)
    record = bench.bench_model("ae-neumf", data, arms=("torch-eager", "jax-scan"), repeats=1, steps=1, hidden_cap=8,
                               detail=False, admit=lambda arm: "too big" if arm == "torch-eager" else None)
    arms = {a["arm"]: a for a in record["arms"]}
    assert arms["torch-eager"] == {"arm": "torch-eager", "framework": "torch",
                                   "description": bench.ARM_DESCRIPTION["torch-eager"], "status": "skipped",
                                   "reason": "too big"}
    assert arms["jax-scan"]["status"] == "ok" and "step_s" not in arms["jax-scan"]  # detail off: epochs only
    assert "matmul_rate" not in record and record["trust"]["spread"] is None


# ---------------------------------------------------------------------------------------------
# the cost curve


def test_the_memory_guard_predicts_from_the_measured_width_and_refuses_what_does_not_fit():
    run = bench.preset_run("ae-neumf", 1000)
    resident, transient = bench.estimate_arm_bytes(run, 500)
    assert resident >= 500 * 1000 * 4 and transient > 0  # at least the dense training matrix
    guard = bench.MemoryGuard(margin=0, available=lambda: 6 * 2**30)  # the measured arm scales to ~7.8 GiB
    first = guard.predict("ae-neumf", "jax-scan", run, 500)
    assert first[2] == "a count of the model's arrays" and first[0] == pytest.approx(1.5 * resident)
    memory = {"resident_mb": 4000.0, "epoch_peak_above_mb": 1.0}
    guard.record("ae-neumf", {"n_items": 500, "arms": [{"arm": "jax-scan", "status": "ok", "memory": memory}]})
    measured = guard.predict("ae-neumf", "jax-scan", run, 500)
    assert measured[0] == pytest.approx(4000.0 * 2**20 * 1000 / 500) and "measured at 500 items" in measured[2]
    reason = guard.admit("ae-neumf", run, 500, ["jax-scan"])("jax-scan")
    assert reason and "GiB available" in reason and "measured at 500 items" in reason
    assert guard.admit("ae-neumf", run, 500, ["torch-eager"])("torch-eager") is None


def test_tiny_cost_curve_keeps_the_ratings_and_reports_time_and_memory_per_arm(tmp_path):
    path = tmp_path / "curve.json"
    assert main(["bench", "--tiny", "--items", "120,60", "--presets", "ae-neumf", "--arms", "torch-eager,jax-scan",
                 "--no-progress", "--json", str(path)]) == 0
    p = json.loads(path.read_text())
    assert p["workloads"] == [] and p["settings"]["items"] == [120, 60]
    curve = p["cost_curve"]
    assert curve["items"] == [60, 120] and curve["n_users"] == bench.TINY["n_users"] and curve["why"]
    # the same users and ratings at every width: only the item count grows
    assert [(q["n_items"], q["n_users"], q["nnz"]) for q in curve["points"]] == [
        (60, bench.TINY["n_users"], bench.TINY["n_ratings"]), (120, bench.TINY["n_users"], bench.TINY["n_ratings"])]
    assert [(r["n_items"], r["arm"]) for r in curve["rows"]] == [(60, "torch-eager"), (60, "jax-scan"),
                                                                 (120, "torch-eager"), (120, "jax-scan")]
    for r in curve["rows"]:
        assert r["status"] == "ok" and r["epoch_s"]["n"] == bench.TINY["repeats"] and r["process_peak_mb"] > 0
        assert r["memory_mb"] is not None
    assert isinstance(curve["trust"]["trustworthy"], bool)
    assert ("cost curve" in p["trust"]["why"]) == (not curve["trust"]["trustworthy"])  # the run names it
    summary = report.write_report([path], tmp_path / "r")
    assert len(summary["cost_curve"]) == 4 and (tmp_path / "r" / "plots" / "cost_curve.png").exists()
    assert "## Cost against the item count" in (tmp_path / "r" / "report.md").read_text()


def test_a_cost_curve_point_that_does_not_fit_is_skipped_not_failed():
    curve = bench.run_cost_curve(["ae-neumf"], [40], arms=("jax-scan",), repeats=1, hidden_cap=8, n_users=50,
                                 n_ratings=500, guard=bench.MemoryGuard(available=lambda: 2**20))
    (row,) = curve["rows"]
    assert row["status"] == "skipped" and "does not fit" in row["reason"]


# ---------------------------------------------------------------------------------------------
# throughput per device count


def test_tiny_devices_run_jax_on_one_and_two_host_devices(tmp_path):
    path = tmp_path / "devices.json"
    assert main(["bench", "--tiny", "--devices", "2", "--presets", "ae-neumf", "--arms", "jax-scan",
                 "--no-progress", "--json", str(path)]) == 0
    p = json.loads(path.read_text())
    section = p["devices"]
    assert p["workloads"] == [] and section["counts"] == [1, 2] and section["frameworks"] == ["jax"]
    rows = {r["devices"]: r for r in section["rows"]}
    for n, row in rows.items():
        assert row["status"] == "ok", row.get("error")
        assert len(row["jax_devices"]) == n  # the new process really had n host devices
        assert row["epoch_s"]["n"] == bench.TINY["repeats"] and row["warmup_s"] > 0
        assert row["scaling_efficiency"] == pytest.approx(row["speedup"] / n)
    assert rows[1]["speedup"] == 1.0
    assert "same 2 usable cores" in section["why_efficiency_is_low"] or sysinfo.usable_cpus() != 2
    assert isinstance(section["trust"]["trustworthy"], bool)
    summary = report.write_report([path], tmp_path / "r")
    assert [(d["framework"], d["devices"]) for d in summary["devices"]] == [("jax", 1), ("jax", 2)]
    assert "## Throughput per device count" in (tmp_path / "r" / "report.md").read_text()


@pytest.mark.slow
def test_tiny_devices_run_pytorch_rank_processes():
    data = bench.load_bench_data(tiny=True)
    section = bench.run_devices(["ae-neumf"], [2], data, frameworks=("torch",), repeats=1, hidden_cap=8,
                                timeout=600)
    assert [(r["devices"], r["status"]) for r in section["rows"]] == [(1, "ok"), (2, "ok")], section["rows"]


def test_a_device_count_that_fails_is_recorded_and_the_command_fails(monkeypatch, tmp_path):
    def fail(*args, **kwargs):
        raise RuntimeError("exit status 1: no devices today")

    monkeypatch.setattr(bench.devices, "time_devices", fail)
    assert main(["bench", "--tiny", "--devices", "2", "--presets", "ae-neumf", "--arms", "jax-scan",
                 "--no-progress", "--json", str(tmp_path / "d.json")]) == 1
    rows = json.loads((tmp_path / "d.json").read_text())["devices"]["rows"]
    assert [r["status"] for r in rows] == ["failed", "failed"] and "no devices today" in rows[0]["error"]


def test_bench_cli_refuses_unknown_names(capsys):
    assert main(["bench", "--tiny", "--presets", "no-such-preset"]) == 2
    assert "unknown preset 'no-such-preset'" in capsys.readouterr().err
    assert main(["bench", "--tiny", "--arms", "torch-eager,warp-drive"]) == 2
    assert "unknown arm(s) warp-drive" in capsys.readouterr().err
    assert main(["bench", "--tiny", "--items", "3706,lots"]) == 2
    assert "--items: whole numbers separated by commas" in capsys.readouterr().err
    assert main(["bench", "--tiny", "--devices", "0"]) == 2
    assert "--devices: every count must be at least 1" in capsys.readouterr().err


def test_arms_the_report_has_no_colour_for_get_one_of_their_framework():
    from parity.report.plots import ARM_COLOR, arm_colors

    colors = arm_colors([("torch-eager", "torch"), ("jax-sparse", "jax"), ("torch-sparse", "torch"),
                         ("jax-other", "jax")])
    assert colors["torch-eager"] == ARM_COLOR["torch-eager"]
    assert len({colors["jax-sparse"], colors["torch-sparse"], colors["jax-other"]}) == 3


@pytest.mark.slow
def test_torch_compile_arm_on_a_tiny_model():
    data = bench.load_bench_data(tiny=True)
    record = bench.bench_model("ae-neumf", data, arms=("torch-eager", "torch-compile"), repeats=1, steps=1,
                               hidden_cap=8, matmul_target_s=0.001)
    assert [a["status"] for a in record["arms"]] == ["ok", "ok"], [a.get("error") for a in record["arms"]]


def test_profile_summarises_where_a_jax_epoch_spends_its_time(tmp_path, capsys):
    path = tmp_path / "bench.json"
    code = main(["bench", "--tiny", "--presets", "hae-neumf", "--arms", "torch-eager,jax-scan", "--no-optimizer",
                 "--no-progress", "--profile", str(tmp_path / "prof"), "--json", str(path)])
    assert code == 0
    arms = {a["arm"]: a for a in json.loads(path.read_text())["workloads"][0]["arms"]}
    ops = arms["jax-scan"]["profile"]["xla_ops"]
    assert ops["matmul_s"] > 0 and ops["other_s"] > 0  # the Möbius maps and the optimizer are not matmuls
    assert len(ops["top"]) == 12 and [o["seconds"] for o in ops["top"]] == sorted(
        (o["seconds"] for o in ops["top"]), reverse=True)
    every = bench.summarize_jax_trace(arms["jax-scan"]["profile"]["trace_dir"], top=10_000)["top"]
    assert any(o["matmul"] for o in every) and any(not o["matmul"] for o in every)
    assert not any(o["op"].startswith("while") for o in every)  # the scan encloses the rest: not counted
    assert (tmp_path / "prof" / "hae-neumf" / "torch-eager-ops.txt").exists()
    assert "profile jax-scan: XLA ops" in capsys.readouterr().out


def test_tiny_bench_sparse_arms_train_and_are_judged_against_dense(tmp_path):
    """The sparse arms run (input keep-mask in the batch, isolated step, inference), their ratios are
    later-over-earlier (JAX sparse over JAX dense), and the sparse target is computed from them."""
    path = tmp_path / "bench.json"
    code = main(["bench", "--tiny", "--presets", "hae-neumf", "--arms", "torch-eager,torch-sparse,jax-scan,jax-sparse",
                 "--repeats", "2", "--no-optimizer", "--no-progress", "--json", str(path)])
    assert code == 0
    model = json.loads(path.read_text())["workloads"][0]
    assert model["config"]["model"]["input_dropout"] > 0
    assert [a["arm"] for a in model["arms"]] == ["torch-eager", "torch-sparse", "jax-scan", "jax-sparse"]
    for arm in model["arms"]:
        assert arm["status"] == "ok", arm.get("error")
        assert arm["train_users_per_s"]["median"] > 0 and arm["infer_users_per_s"]["median"] > 0
    pairs = {(r["numerator"], r["denominator"]) for r in model["ratios"] if r["metric"] == "train_users_per_s"}
    assert {("jax-sparse", "jax-scan"), ("jax-sparse", "torch-sparse"), ("torch-sparse", "torch-eager")} <= pairs
    targets = {t["target"]: t for t in bench.check_targets([model])}
    sparse = targets["jax-sparse / best JAX dense arm training users/s >= 1.4"]
    assert sparse["arm"] == "jax-sparse" and sparse["baseline"] == "jax-scan" and sparse["value"] > 0
    scan = next(a for a in model["arms"] if a["arm"] == "jax-scan")
    assert sparse["ceiling"] == scan["sparse_input_ceiling"]["ratio"] > 1
    # a ceiling belongs to sparse over its own framework's dense arm, never to JAX over PyTorch
    assert not any("ceiling" in t for t in targets.values() if t.get("baseline", "").startswith("torch"))
    assert "sparse_input_ceiling" not in next(a for a in model["arms"] if a["arm"] == "jax-sparse")
    best_torch = targets["best JAX arm / best PyTorch arm training users/s >= 1.5"]["baseline"]
    assert best_torch == max((a for a in model["arms"] if a["framework"] == "torch"),
                             key=lambda a: a["train_users_per_s"]["median"])["arm"]


def test_the_sparse_input_ceiling_takes_the_first_layers_two_products_out_of_the_dense_epoch():
    from parity.bench.roofline import first_layer_flops_per_user, step_gemms
    from parity.bench.runner import preset_run

    model = preset_run("hae-neumf", 3706).model
    # hae-neumf: x W1^T and dY1^T x of the (3706 -> 600) layer, 2 * 3706 * 600 FLOPs each per user
    assert first_layer_flops_per_user(model) == 2 * (2 * 3706 * 600)
    assert first_layer_flops_per_user(model) == sum(g.flops for g in step_gemms(model, 1)) * 2 / 5
    workload = {"flops": {"first_layer_epoch": 3e9}}
    # 3 GFLOP at 10 GFLOP/s is 0.3 s of a 1.0 s epoch: without it 0.7 s, at most 1/0.7 faster
    ceiling = bench.sparse_input_ceiling(1.0, workload, 10.0)
    assert ceiling["first_layer_s"] == pytest.approx(0.3) and ceiling["ratio"] == pytest.approx(1 / 0.7)
    assert bench.sparse_input_ceiling(0.2, workload, 10.0)["ratio"] is None  # the rate says more than the epoch


def test_only_sparse_over_its_own_frameworks_dense_arm_carries_the_ceiling():
    def arm(name, framework, users_per_s, ceiling=None):
        row = {"arm": name, "framework": framework, "status": "ok", "train_users_per_s": {"median": users_per_s}}
        return row | ({"sparse_input_ceiling": {"ratio": ceiling}} if ceiling else {})

    arms = [arm("torch-eager", "torch", 100.0, 1.2), arm("jax-scan", "jax", 250.0, 1.3),
            arm("jax-sparse", "jax", 260.0)]
    ratios = [{"metric": "train_users_per_s", "numerator": top, "denominator": bottom, "median": value}
              for top, bottom, value in (("jax-sparse", "torch-eager", 2.6), ("jax-sparse", "jax-scan", 1.04))]
    targets = bench.check_targets([{"kind": "model", "name": "w", "model_kind": "hae", "arms": arms,
                                    "ratios": ratios}])
    by_baseline = {t.get("baseline"): t for t in targets if "baseline" in t}
    assert by_baseline["jax-scan"]["ceiling"] == 1.3  # jax-sparse, the best JAX arm here, over JAX dense
    assert "ceiling" not in by_baseline["torch-eager"]  # the same arm over PyTorch: no ceiling of torch-eager's


def _sparse_ceiling_script():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "reports" / "bench-profile-cpu" / "sparse_ceiling.py"
    spec = importlib.util.spec_from_file_location("sparse_ceiling", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_measured_sparse_ceiling_times_a_free_first_layer_without_touching_the_real_sparse_arm(tmp_path):
    from jax_impl import sparse

    script = _sparse_ceiling_script()
    real = sparse.matmul
    out = tmp_path / "ceiling.json"
    assert script.main(["--tiny", "--presets", "hae-neumf,ae-neumf", "--epochs", "1", "--json", str(out)]) == 0
    assert sparse.matmul is real  # the stand-in was put back
    record = json.loads(out.read_text())
    for preset in ("hae-neumf", "ae-neumf"):
        result = record["presets"][preset]
        assert set(result["median_epoch_seconds"]) == set(script.ARMS)
        assert all(len(s) == 1 and s[0] > 0 for s in result["epoch_seconds"].values())
        assert set(result["speedup_over_jax_scan"]) == {"jax-sparse", "jax-sparse-free"}
        loss = result["last_epoch_mean_loss"]
        # jax-sparse traced the real first layer (its own compiled program), the free arm the stand-in: after
        # these tiny runs' two epochs the free arm's loss is off by 1.1e-3 (relative), the real one by 7e-8
        assert loss["jax-sparse"] == pytest.approx(loss["jax-scan"], rel=1e-5)
        assert abs(loss["jax-sparse-free"] - loss["jax-scan"]) > 1e-4 * abs(loss["jax-scan"])
