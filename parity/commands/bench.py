"""`poincare-parity bench`: throughput of the model presets in every arm, and of the optimizer step."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from parity import bench
from parity import config as cfg
from parity.commands.output import split_names, table
from parity.errors import EXIT_FAILED, EXIT_OK
from parity.files import check_writable, write_json
from parity.stats import format_stat


def format_results(payload: dict[str, Any]) -> str:
    d = payload["device"]
    out = [f"bench on {d['cpu_model']} ({d['usable_cpus']} usable CPUs, torch threads {d['torch_threads']}), "
           f"device {payload['settings']['device']}, JAX backend {d['jax_backend']}; data {payload['data']['dataset']} "
           f"({payload['data']['n_users']} users x {payload['data']['n_items']} items); {payload['settings']['dtype']}; "
           f"medians of {payload['settings']['repeats']} repeats [min, max]; load average "
           f"{d.get('load_average')} -> {d.get('load_average_end')}"]
    for w in payload["workloads"]:
        out.append("")
        if w.get("status") == "failed":
            out.append(f"{w['name']}: FAILED: {w['error']}")
            continue
        if w["kind"] == "optimizer":
            r = w["result"]
            out.append(f"{w['name']} ({w['n_points']} x {w['dim']} ball points, {w['dtype']}): JAX {r['jax_ms']:.3f} ms, "
                       f"geoopt {r['torch_ms']:.3f} ms per step; geoopt / JAX = {r['torch_ms'] / r['jax_ms']:.2f}x")
            continue
        out.append(f"{w['name']} ({w['model_kind']}, layers {w['config']['model']['layer_sizes']}, batch "
                   f"{w['batch_size']}, {w['steps_per_epoch']} steps/epoch, "
                   f"{w['flops']['train_epoch'] / 1e9:.1f} matmul GFLOP/epoch)")
        rows = []
        for r in w["arms"]:
            if r.get("status") != "ok":
                rows.append((r["arm"], f"FAILED: {r.get('error', '')[:60]}", "", "", "", "", "", "", "", ""))
                continue
            memory = r.get("memory", {})
            peak = memory.get("device_peak_mb")
            if peak is None and memory.get("resident_mb") is not None and memory.get("epoch_peak_above_mb") is not None:
                peak = memory["resident_mb"] + memory["epoch_peak_above_mb"]
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
            out.append("training throughput ratios: " + "; ".join(
                f"{x['numerator']} / {x['denominator']} {x['median']:.2f}x [{x['low']:.2f}, {x['high']:.2f}]"
                for x in train_ratios))
    if payload["targets"]:
        out.append("")
        out.append("goals:")
        for t in payload["targets"]:
            verdict = "not measured" if t["met"] is None else ("met" if t["met"] else "NOT MET")
            value = "-" if t["value"] is None else f"{t['value']:.2f}"
            out.append(f"  {t['workload']}: {t['target']}: {value} ({verdict})")
    return "\n".join(out)


def main(args) -> int:
    tiny, quick = args.tiny, args.quick
    presets = split_names(args.presets) or list(cfg.PRESETS)
    arms = split_names(args.arms) or list(bench.ARMS)
    optimizers = [] if args.no_optimizer else (split_names(args.optimizers) or list(bench.OPTIMIZERS))
    repeats = args.repeats if args.repeats is not None else (bench.TINY["repeats"] if tiny else 5)
    steps = args.steps if args.steps is not None else (bench.TINY["steps"] if tiny else 3)
    users = args.users if args.users is not None else (bench.QUICK_USERS if quick else None)
    bench.validate(presets, arms, optimizers, repeats, steps)
    check_writable(args.json, folders=(Path(args.profile),) if args.profile else ())
    bench.select_device(args.device, args.gpu_matmul)
    data = bench.load_bench_data(args.dataset, data_dir=args.data_dir, users=users, tiny=tiny)
    payload = bench.run_bench(presets, data, arms=arms, optimizers=optimizers, repeats=repeats, steps=steps,
                              dtype=args.dtype, device=args.device, compile_mode=args.compile_mode,
                              hidden_cap=bench.TINY["hidden_cap"] if tiny else None, seed=args.seed,
                              matmul_target_s=0.005 if tiny else 0.05, progress=not args.no_progress,
                              profile_dir=Path(args.profile) if args.profile else None,
                              optimizer_points=bench.TINY["optimizer_points"] if tiny else 10_000,
                              optimizer_number=bench.TINY["optimizer_number"] if tiny else 10,
                              settings={"quick": quick, "tiny": tiny, "users": users})
    print(format_results(payload))
    if args.json:
        print(f"wrote {write_json(args.json, payload, command='bench', device=args.device)}")
    failed = [w["name"] for w in payload["workloads"] if w.get("status") == "failed"] + [
        f"{w['name']}/{r['arm']}" for w in payload["workloads"] for r in w["arms"] if r.get("status") == "failed"]
    if failed:
        print(f"failed: {', '.join(failed)}")
        return EXIT_FAILED
    return EXIT_OK
