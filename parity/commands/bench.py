"""`poincare-parity bench`: throughput of the model presets in every arm, and of the optimizer step."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from parity import bench
from parity import config as cfg
from parity.bench.trust import BACKGROUND_PROBE_S
from parity.commands.output import split_names, table
from parity.errors import EXIT_FAILED, EXIT_OK
from parity.files import check_writable, write_json
from parity.stats import format_stat


def _pct(share: float | None) -> str:
    return "not measured" if share is None else f"{100 * share:.0f}%"


def _mib(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def _trust_line(trust: dict[str, Any] | None, what: str = "timings trustworthy") -> str:
    if not trust:
        return f"{what}: not assessed"
    return f"{what}: {'yes' if trust['trustworthy'] else 'NO'} ({trust['why']})"


def _ratio_text(x: dict[str, Any]) -> str:
    interval = x.get("interval")
    text = f"{x['numerator']} / {x['denominator']} {x['median']:.2f}x"
    text += f" [{interval['low']:.2f}, {interval['high']:.2f}]" if interval else " [no interval]"
    return text + f" best {x['best']:.2f}x" if x.get("best") is not None else text


def format_workload(w: dict[str, Any]) -> list[str]:
    out = [f"{w['name']} ({w['model_kind']}, layers {w['config']['model']['layer_sizes']}, batch "
           f"{w['batch_size']}, {w['steps_per_epoch']} steps/epoch, "
           f"{w['flops']['train_epoch'] / 1e9:.1f} matmul GFLOP/epoch)"]
    rows = []
    for r in w["arms"]:
        if r.get("status") != "ok":
            why = (r.get("error") or r.get("reason") or "")[:60]
            rows.append((r["arm"], f"{r.get('status', 'failed').upper()}: {why}", "", "", "", "", "", "", "", ""))
            continue
        peak = bench.arm_memory_mb(r)
        rows.append((r["arm"], format_stat(r["train_users_per_s"]), f"{r['epoch_s']['median']:.2f}",
                     f"{r['feed_s']['median']:.2f}", f"{r['loop_overhead_s']:.2f}",
                     format_stat(r["step_s"], 1e3, 1), format_stat(r["infer_users_per_s"]), f"{r['compile_s']:.1f}",
                     "-" if peak is None else f"{peak:.0f}",
                     f"{100 * r['matmul_fraction']:.0f}% / {100 * r['matmul_fraction_step']:.0f}%"
                     if "matmul_fraction" in r else "-"))
    out.append(table(("arm", "train users/s", "epoch s", "feed s", "loop s", "step ms", "infer users/s",
                      "compile s", "peak MB", "matmul epoch/step"), rows))
    rates = ", ".join(f"{fw} {rate['gflops']:.1f} GFLOP/s" for fw, rate in w.get("matmul_rate", {}).items())
    out.append(f"matmul rate at the model's shapes: {rates}")
    for r in w["arms"]:
        ops = r.get("profile", {}).get("xla_ops")
        if ops and "matmul_s" in ops:
            top = ", ".join(f"{o['op']} {o['seconds']:.3f}" for o in ops["top"] if not o["matmul"])
            out.append(f"profile {r['arm']}: XLA ops {ops['matmul_s']:.3f} s in matrix products, "
                       f"{ops['other_s']:.3f} s elsewhere (traced epoch {r['profile']['epoch_s_traced']:.2f} s); "
                       f"largest others: {top}")
        elif r.get("profile", {}).get("ops_table"):
            out.append(f"profile {r['arm']}: op table in {r['profile']['ops_table']}")
    train_ratios = [x for x in w["ratios"] if x["metric"] == "train_users_per_s"]
    if train_ratios:
        out.append("training throughput ratios, median of the paired repeats [95% interval], best epoch / best "
                   "epoch: " + "; ".join(_ratio_text(x) for x in train_ratios))
    out.append(_trust_line(w.get("trust")))
    return out


def format_cost_curve(curve: dict[str, Any]) -> list[str]:
    out = [f"cost curve: {curve['n_users']:,} users per epoch, {curve['ratings_per_user']:.0f} ratings per user, "
           f"items {', '.join(f'{n:,}' for n in curve['items'])}; medians of {curve['repeats']} epochs [min, max]; "
           f"{curve['why']}"]
    rows = []
    for r in curve["rows"]:
        if r["status"] == "ok":
            rows.append((r["preset"], f"{r['n_items']:,}", r["arm"], format_stat(r["epoch_s"], 1, 2),
                         f"{r['train_users_per_s']:.0f}", _mib(r.get("memory_mb")), _mib(r.get("process_peak_mb"))))
        else:
            rows.append((r["preset"], f"{r['n_items']:,}", r["arm"], f"{r['status'].upper()}: {r.get('reason') or ''}",
                         "", "", ""))
    out.append(table(("preset", "items", "arm", "epoch s", "users/s", "arm MB", "process peak MB"), rows))
    out.append(_trust_line(curve.get("trust"), "cost curve timings trustworthy"))
    return out


def format_devices(section: dict[str, Any]) -> list[str]:
    out = [f"throughput per device count ({section['device']}, {section['n_users']:,} users per epoch, medians of "
           f"{section['repeats']} epochs after a warm-up [min, max]); scaling efficiency = throughput(N) / "
           f"(N * throughput(1))"]
    rows = []
    for r in section["rows"]:
        if r["status"] == "ok":
            rows.append((r["preset"], r["framework"], r["devices"], format_stat(r["users_per_s"]),
                         "-" if r.get("speedup") is None else f"{r['speedup']:.2f}x",
                         "-" if r.get("scaling_efficiency") is None else f"{r['scaling_efficiency']:.2f}"))
        else:
            rows.append((r["preset"], r["framework"], r["devices"], f"FAILED: {r['error'][:80]}", "", ""))
    out.append(table(("preset", "framework", "devices", "users/s", "speed-up", "efficiency"), rows))
    if section.get("why_efficiency_is_low"):
        out.append(f"why the efficiency is low here: {section['why_efficiency_is_low']}")
    out.append(_trust_line(section.get("trust"), "device timings trustworthy"))
    return out


def format_results(payload: dict[str, Any]) -> str:
    d = payload["device"]
    run_trust = payload.get("trust") or {}
    settings, data = payload["settings"], payload["data"]
    timed = ([f"data {data['dataset']} ({data['n_users']} users x {data['n_items']} items)"]
             if settings.get("workloads", True) or payload.get("devices") else [])
    if settings.get("workloads", True):
        timed.append(f"medians of {settings['repeats']} repeats [min, max]")
    out = [f"bench on {d['cpu_model']} ({d['usable_cpus']} usable CPUs, torch threads {d['torch_threads']}), "
           f"device {settings['device']}, JAX backend {d['jax_backend']}; {settings['dtype']}; "
           + "".join(f"{part}; " for part in timed) + f"other processes used "
           f"{_pct(run_trust.get('background_busy'))} of the CPUs before the run; load average "
           f"{d.get('load_average')} -> {d.get('load_average_end')}"]
    for w in payload["workloads"]:
        out.append("")
        if w.get("status") == "failed":
            out.append(f"{w['name']}: FAILED: {w['error']}")
            continue
        if w["kind"] == "optimizer":
            r = w["result"]
            out.append(f"{w['name']} ({w['n_points']} x {w['dim']} ball points, {w['dtype']}): "
                       f"JAX {r['jax_ms']:.3f} ms, geoopt {r['torch_ms']:.3f} ms per step; "
                       f"geoopt / JAX = {r['torch_ms'] / r['jax_ms']:.2f}x; " + _trust_line(w.get("trust")))
            continue
        out += format_workload(w)
    if payload.get("cost_curve"):
        out += [""] + format_cost_curve(payload["cost_curve"])
    if payload.get("devices"):
        out += [""] + format_devices(payload["devices"])
    if payload["targets"]:
        out.append("")
        out.append("goals:")
        for t in payload["targets"]:
            verdict = "not measured" if t["met"] is None else ("met" if t["met"] else "NOT MET")
            value = "-" if t["value"] is None else f"{t['value']:.2f}"
            ceiling = "" if t.get("ceiling") is None else (
                f"; at most {t['ceiling']:.2f}: {t['baseline']} without its first layer's two products")
            out.append(f"  {t['workload']}: {t['target']}: {value} ({verdict}{ceiling})")
    out += ["", _trust_line(run_trust, "run trustworthy")]
    return "\n".join(out)


def _counts(text: str | None, option: str) -> list[int] | None:
    """'3706,10000' -> [3706, 10000]; None stays None."""
    names = split_names(text)
    if names is None:
        return None
    try:
        counts = [int(n.replace("_", "")) for n in names]
    except ValueError:
        raise bench.BenchError(f"{option}: whole numbers separated by commas, got {text!r}") from None
    if not counts or min(counts) < 1:
        raise bench.BenchError(f"{option}: every count must be at least 1, got {text!r}")
    return counts


def main(args) -> int:
    tiny, quick = args.tiny, args.quick
    presets = split_names(args.presets) or list(cfg.PRESETS)
    arms = split_names(args.arms) or list(bench.ARMS)
    items, devices = _counts(args.items, "--items"), _counts(args.devices, "--devices")
    sections = bool(items or devices)  # the curve and the device counts replace the workloads at the dataset's width
    optimizers = [] if args.no_optimizer or (sections and args.optimizers is None) else (
        split_names(args.optimizers) or list(bench.OPTIMIZERS))
    repeats = args.repeats if args.repeats is not None else (bench.TINY["repeats"] if tiny else bench.DEFAULT_REPEATS)
    curve_repeats = args.repeats if args.repeats is not None else (
        bench.TINY["repeats"] if tiny else bench.CURVE_REPEATS)
    devices_repeats = args.repeats if args.repeats is not None else (
        bench.TINY["repeats"] if tiny else bench.DEVICES_REPEATS)
    steps = args.steps if args.steps is not None else (bench.TINY["steps"] if tiny else 3)
    users = args.users if args.users is not None else (bench.QUICK_USERS if quick else None)
    bench.validate(presets, arms, optimizers, repeats, steps)
    check_writable(args.json, folders=(Path(args.profile),) if args.profile else ())
    bench.select_device(args.device, args.gpu_matmul)
    data = bench.load_bench_data(args.dataset, data_dir=args.data_dir, users=users, tiny=tiny)
    payload = bench.run_bench(presets, data, arms=arms, optimizers=optimizers, workloads=not sections, items=items,
                              devices=devices, repeats=repeats, curve_repeats=curve_repeats,
                              devices_repeats=devices_repeats, steps=steps, dtype=args.dtype, device=args.device,
                              gpu_matmul=args.gpu_matmul, compile_mode=args.compile_mode,
                              hidden_cap=bench.TINY["hidden_cap"] if tiny else None, seed=args.seed,
                              matmul_target_s=0.005 if tiny else 0.05, progress=not args.no_progress,
                              profile_dir=Path(args.profile) if args.profile else None,
                              optimizer_points=bench.TINY["optimizer_points"] if tiny else 10_000,
                              optimizer_number=bench.TINY["optimizer_number"] if tiny else 10,
                              curve_users=bench.TINY["n_users"] if tiny else bench.CURVE_USERS,
                              curve_ratings=bench.TINY["n_ratings"] if tiny else bench.CURVE_RATINGS,
                              background_probe_s=bench.TINY["background_probe_s"] if tiny else BACKGROUND_PROBE_S,
                              settings={"quick": quick, "tiny": tiny, "users": users})
    print(format_results(payload))
    if args.json:
        print(f"wrote {write_json(args.json, payload, command='bench', device=args.device)}")
    failed = [w["name"] for w in payload["workloads"] if w.get("status") == "failed"] + [
        f"{w['name']}/{r['arm']}" for w in payload["workloads"] for r in w["arms"] if r.get("status") == "failed"]
    failed += [f"cost curve {r['preset']}/{r['n_items']}/{r['arm']}"
               for r in (payload.get("cost_curve") or {}).get("rows", []) if r["status"] == "failed"]
    failed += [f"devices {r['preset']}/{r['framework']}/{r['devices']}"
               for r in (payload.get("devices") or {}).get("rows", []) if r["status"] == "failed"]
    if failed:
        print(f"failed: {', '.join(failed)}")
        return EXIT_FAILED
    return EXIT_OK
