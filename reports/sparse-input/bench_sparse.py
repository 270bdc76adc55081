"""Dense vs sparse input, JAX vs PyTorch: train epochs of the ae-neumf and hae-neumf presets on an
ML-1M-shaped synthetic dataset (parity.data.synthetic: 6,040 users x 3,706 items, 1,000,209 ratings,
read as implicit 0/1 feedback as the neumf protocol trains), batch 256, float32, on this machine's CPU.

    python reports/sparse-input/bench_sparse.py [--repeats 5] [--json PATH] [--presets ae-neumf hae-neumf]

Arms (the same weights, batch order and input keep-masks; each epoch is one call of the trainer):
    jax-dense   jax_impl.train.Trainer.train_epoch(dense matrix on the device, ...)   one lax.scan
    jax-sparse  jax_impl.train.Trainer.train_epoch(CSR matrix, ...)   layout built in numpy, one lax.scan
    torch-dense torch_ref.train.Trainer.train_epoch(dense tensor, ...)
    torch-sparse torch_ref.train.Trainer.train_epoch(CSR matrix, ...)
Repeats run round-robin over the arms (a change of load hits each alike); medians with min and max,
wall clock and process CPU time (all threads: the work done, less sensitive to other processes).
Besides the timings (noisy on a shared machine) it prints deterministic evidence: the matrix products
left in the compiled JAX train step (their shapes and FLOPs) and XLA's cost analysis of both steps.

`--scan` times the compiled epoch program alone instead (JAX, dense against sparse: the scan over 23
full batches with its inputs already on the device, the sparse layout built beforehand), per step.

`--kernels` times the first layer alone instead (forward and weight gradient of x W^T, one batch of
256 ML-1M users, input dropout 0.5, float32), for each way of computing it in JAX tried here.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp
import torch

import jax_impl.train as jt
import torch_ref.train as tt
from jax_impl import sparse as jsparse
from jax_impl.models import learned_curvature
from parity import convert, data, training
from parity.config import PRESETS, ModelConfig, OptimizerConfig, TrainConfig, from_dict


def implicit_matrix() -> sp.csr_matrix:
    d = data.synthetic()
    matrix = sp.csr_matrix((np.ones(len(d.users), np.float32), (d.users, d.items)),
                           shape=(len(d.user_ids), len(d.item_ids)))
    matrix.sum_duplicates()
    return matrix


def trainers(model: ModelConfig, optimizer: OptimizerConfig, weights):
    hyperbolic = model.kind == "hae"
    j_opt = (jt.riemannian_optimizer(optimizer, curvature=learned_curvature if model.learn_c else None)
             if hyperbolic else jt.euclidean_optimizer(optimizer))
    t_opt = tt.riemannian_optimizer(optimizer) if hyperbolic else tt.euclidean_optimizer(optimizer)
    return {
        "jax-dense": jt.Trainer(convert.jax_model(model, weights, "float32"), j_opt),
        "jax-sparse": jt.Trainer(convert.jax_model(model, weights, "float32"), j_opt),
        "torch-dense": tt.Trainer(convert.torch_model(model, weights, "float32"), t_opt),
        "torch-sparse": tt.Trainer(convert.torch_model(model, weights, "float32"), t_opt),
    }


_DOT = re.compile(r"= (\w+)\[([\d,]*)\]\{[^}]*\} dot\(%[\w.\-]+, %[\w.\-]+\), "
                  r"(.*?contracting_dims=\{[\d,]*\}.*?contracting_dims=\{[\d,]*\})")


def dots(hlo: str, shapes: dict[str, tuple[int, ...]]) -> list[dict]:
    """The dot instructions of an optimized HLO module: result shape, FLOPs (2 x result x contraction)."""
    out = []
    for line in hlo.splitlines():
        if " dot(" not in line:
            continue
        m = re.search(r"= \w+\[([\d,]*)\]\{[^}]*\} dot\((%[\w.\-]+), (%[\w.\-]+)\), lhs_batch_dims=\{([\d,]*)\}.*?"
                      r"lhs_contracting_dims=\{([\d,]*)\}|= \w+\[([\d,]*)\]\{[^}]*\} dot\((%[\w.\-]+), (%[\w.\-]+)\), "
                      r"lhs_contracting_dims=\{([\d,]*)\}", line)
        if not m:
            continue
        if m.group(1) is not None:
            result, lhs, contract = m.group(1), m.group(2), m.group(5)
        else:
            result, lhs, contract = m.group(6), m.group(7), m.group(9)
        result_shape = tuple(int(x) for x in result.split(",") if x)
        lhs_shape = shapes.get(lhs)
        k = int(np.prod([lhs_shape[int(i)] for i in contract.split(",") if i])) if lhs_shape else None
        out.append({"result": result_shape, "lhs": lhs_shape, "contracted": k,
                    "flops": None if k is None else 2 * int(np.prod(result_shape)) * k})
    return out


def hlo_shapes(hlo: str) -> dict[str, tuple[int, ...]]:
    shapes = {}
    for m in re.finditer(r"(%[\w.\-]+) = \w+\[([\d,]*)\]", hlo):
        shapes[m.group(1)] = tuple(int(x) for x in m.group(2).split(",") if x)
    for m in re.finditer(r"(%?[\w.\-]+): \w+\[([\d,]*)\]", hlo):  # parameters of fused computations
        name = m.group(1) if m.group(1).startswith("%") else "%" + m.group(1)
        shapes[name] = tuple(int(x) for x in m.group(2).split(",") if x)
    return shapes


def step_evidence(trainer: jt.Trainer, batch, masks: jt.StepMasks) -> dict:
    compiled = jt._train_step.lower(trainer.params, trainer.opt_state, trainer.rest, batch, masks,
                                    **trainer._static).compile()
    hlo = compiled.as_text()
    found = dots(hlo, hlo_shapes(hlo))
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    return {"dots": found, "dot_flops": sum(d["flops"] or 0 for d in found),
            "xla_flops": cost.get("flops"), "xla_bytes_accessed": cost.get("bytes accessed")}


def first_layer_kernels(matrix: sp.csr_matrix, repeats: int) -> dict:
    """The first layer's forward and weight gradient, one batch, each formulation: CPU / wall time (min and
    median over round-robin repeats)."""
    from jax.experimental import sparse as jsp

    rng = np.random.default_rng(0)
    n_items, hidden, batch_size = matrix.shape[1], 600, 256
    rows = data.batch_order(matrix.shape[0], batch_size, 0, 0)[0]
    keep = rng.random((batch_size, n_items)) >= 0.5
    weight = jnp.asarray(rng.uniform(-0.05, 0.05, (hidden, n_items)).astype(np.float32))
    cotangent = jnp.asarray(rng.normal(size=(batch_size, hidden)).astype(np.float32))
    dense = jnp.asarray(matrix[rows].toarray() * keep * 2.0)
    batch = jsparse.to_device(jsparse.sparse_rows(matrix, rows, input_keep=keep))
    values = batch.values * batch.keep * 2.0
    coo = sp.coo_matrix(np.asarray(dense))
    n = bucket = jsparse.bucket(coo.nnz + 1)
    pad = lambda a, fill=0: np.concatenate([a, np.full(n - len(a), fill, a.dtype)])  # noqa: E731
    flat_rows = jnp.asarray(pad(coo.row.astype(np.int32), batch_size - 1))
    flat_items = jnp.asarray(pad(coo.col.astype(np.int32)))
    flat_values = jnp.asarray(pad(coo.data.astype(np.float32)))
    union = len(np.unique(coo.col))

    def objective(product):
        return lambda w, *args: jnp.sum(product(w, *args) * cotangent)  # forward + weight gradient

    def segment_sum(w, v, r, i):
        return jax.ops.segment_sum(v[:, None] * w.T[i], r, num_segments=batch_size, indices_are_sorted=True)

    def bcoo(w, v, r, i):
        x = jsp.BCOO((v, jnp.stack([r, i], 1)), shape=(batch_size, n_items), indices_sorted=True)
        return x @ w.T

    def chunks_einsum(w, b, v):  # the chunk layout, summed by einsum (a library reduction)
        gathered = w.T[b.items[b.row_chunks]]
        return jax.ops.segment_sum(jnp.einsum("ck,cko->co", v[b.row_chunks], gathered), b.chunk_rows,
                                   num_segments=batch_size, indices_are_sorted=True)

    cases = {
        "dense GEMMs (x W^T, dY^T x)": (objective(lambda w, x: x @ w.T), (weight, dense)),
        "flat gather + segment_sum": (objective(segment_sum), (weight, flat_values, flat_rows, flat_items)),
        "jax.experimental.sparse BCOO": (objective(bcoo), (weight, flat_values, flat_rows, flat_items)),
        "row chunks, einsum reduction": (objective(chunks_einsum), (weight, batch, values)),
        "row/item chunks, unrolled (used)": (objective(lambda w, b, v: jsparse.matmul(b, v, w)),
                                             (weight, batch, values)),
    }
    compiled = {name: (jax.jit(jax.value_and_grad(f)), args) for name, (f, args) in cases.items()}
    reference = compiled["dense GEMMs (x W^T, dY^T x)"][0](*cases["dense GEMMs (x W^T, dY^T x)"][1])
    for name, (f, args) in compiled.items():
        value, grad = f(*args)
        assert abs(float(value) - float(reference[0])) <= 1e-4 * abs(float(reference[0])), name
        assert float(jnp.max(jnp.abs(grad - reference[1]))) <= 1e-4 * float(jnp.max(jnp.abs(reference[1]))), name
    wall = {name: [] for name in compiled}
    cpu = {name: [] for name in compiled}
    for _ in range(repeats):
        for name, (f, args) in compiled.items():
            start, cpu_start = time.perf_counter(), time.process_time()
            jax.block_until_ready(f(*args))
            wall[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - cpu_start)
    out = {"entries_read": int(coo.nnz), "padded_to": bucket, "union_of_items": union, "n_items": n_items,
           "times_ms": {name: {"cpu_min": 1e3 * min(cpu[name]), "cpu_median": 1e3 * statistics.median(cpu[name]),
                               "wall_min": 1e3 * min(wall[name]), "wall_median": 1e3 * statistics.median(wall[name])}
                        for name in compiled}}
    print(f"first layer, one batch of {batch_size}: {coo.nnz} entries read (input dropout 0.5), the batch's "
          f"items: {union} of {n_items} (nothing to compact); forward + weight gradient, ms, {repeats} repeats")
    for name, t in out["times_ms"].items():
        print(f"  {name:34s} cpu min {t['cpu_min']:7.2f} median {t['cpu_median']:7.2f} | "
              f"wall min {t['wall_min']:7.2f} median {t['wall_median']:7.2f}")
    return out


def _scan_epochs(dense, sparse_, dense_matrix, rows, dense_masks, layout) -> dict:
    """{name: () -> losses}: one scanned epoch of each arm, training the arm's weights in place."""

    def run_dense():
        dense.params, dense.opt_state, losses = jt._scan_epoch(dense.params, dense.opt_state, dense.rest,
                                                               dense_matrix, rows, dense_masks, **dense._static)
        return losses

    def run_sparse():
        sparse_.params, sparse_.opt_state, losses = jt._scan_steps(sparse_.params, sparse_.opt_state, sparse_.rest,
                                                                   layout, jt.StepMasks(), **sparse_._static)
        return losses

    return {"jax-dense scan": run_dense, "jax-sparse scan": run_sparse}


def scan_programs(matrix: sp.csr_matrix, presets: list[str], repeats: int) -> dict:
    """The scanned epoch alone, dense vs sparse: ms per step (min and median over round-robin repeats)."""
    out = {}
    n_rows = matrix.shape[0]
    dense_matrix = jnp.asarray(matrix.toarray())
    for name in presets:
        preset = PRESETS[name]
        model = from_dict(ModelConfig, {**preset["model"],
                                        "layer_sizes": (matrix.shape[1], *preset["model"]["layer_sizes"][1:])})
        train = from_dict(TrainConfig, preset["train"])
        weights = {k: v.astype(np.float32) for k, v in convert.init_weights(model, 0).items()}
        arms = trainers(model, from_dict(OptimizerConfig, preset["optimizer"]), weights)
        dense, sparse_ = arms["jax-dense"], arms["jax-sparse"]
        batches = data.batch_order(n_rows, train.batch_size, train.seed, 0)
        batches = [b for b in batches if len(b) == train.batch_size]
        n_steps = len(batches)
        keep = training.epoch_masks(model, train, train.seed, 0, n_rows)[0][: n_steps * train.batch_size]
        rows = jnp.asarray(np.stack(batches))
        dense_masks = jt._stack_masks(jt.StepMasks(jnp.asarray(keep)), n_steps, train.batch_size)
        layout = jsparse.to_device(jsparse.epoch_sparse_rows(matrix, batches, input_keep=keep))
        programs = _scan_epochs(dense, sparse_, dense_matrix, rows, dense_masks, layout)
        for run in programs.values():
            jax.block_until_ready(run())
        wall = {k: [] for k in programs}
        cpu = {k: [] for k in programs}
        for _ in range(repeats):
            for k, run in programs.items():
                start, cpu_start = time.perf_counter(), time.process_time()
                jax.block_until_ready(run())
                wall[k].append((time.perf_counter() - start) / n_steps)
                cpu[k].append((time.process_time() - cpu_start) / n_steps)
        out[name] = {k: {"wall_ms_min": 1e3 * min(wall[k]), "wall_ms_median": 1e3 * statistics.median(wall[k]),
                         "cpu_ms_min": 1e3 * min(cpu[k]), "cpu_ms_median": 1e3 * statistics.median(cpu[k])}
                     for k in programs}
        print(f"{name}: the scanned epoch alone ({n_steps} steps), ms per step, {repeats} repeats")
        for k, t in out[name].items():
            print(f"  {k:16s} wall min {t['wall_ms_min']:6.2f} median {t['wall_ms_median']:6.2f} | "
                  f"cpu min {t['cpu_ms_min']:6.2f} median {t['cpu_ms_median']:6.2f}")
        d, sp_ = out[name]["jax-dense scan"], out[name]["jax-sparse scan"]
        print(f"  sparse speed-up: wall min/min {d['wall_ms_min'] / sp_['wall_ms_min']:.2f}x, median/median "
              f"{d['wall_ms_median'] / sp_['wall_ms_median']:.2f}x, "
              f"cpu min/min {d['cpu_ms_min'] / sp_['cpu_ms_min']:.2f}x")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--presets", nargs="+", default=["ae-neumf", "hae-neumf"])
    parser.add_argument("--arms", nargs="+", default=["jax-dense", "jax-sparse", "torch-dense", "torch-sparse"])
    parser.add_argument("--json", default=None)
    parser.add_argument("--kernels", action="store_true", help="time the first layer's formulations instead")
    parser.add_argument("--scan", action="store_true", help="time the compiled JAX epoch programs alone instead")
    args = parser.parse_args()
    torch.set_num_threads(2)
    matrix = implicit_matrix()
    if args.kernels or args.scan:
        result = (first_layer_kernels(matrix, max(args.repeats, 5)) if args.kernels
                  else scan_programs(matrix, args.presets, max(args.repeats, 3)))
        if args.json:
            with open(args.json, "w") as f:
                json.dump(result, f, indent=1)
        return
    dense_jax = jnp.asarray(matrix.toarray())
    dense_torch = torch.from_numpy(matrix.toarray())
    n_rows, n_items = matrix.shape
    results = {"machine": {"cpus": torch.get_num_threads(), "jax": jax.__version__, "torch": torch.__version__},
               "data": {"n_rows": n_rows, "n_items": n_items, "nnz": int(matrix.nnz)}, "presets": {}}
    for name in args.presets:
        preset = PRESETS[name]
        model = from_dict(ModelConfig, {**preset["model"],
                                        "layer_sizes": (n_items, *preset["model"]["layer_sizes"][1:])})
        optimizer = from_dict(OptimizerConfig, preset["optimizer"])
        train = from_dict(TrainConfig, preset["train"])
        weights = {k: v.astype(np.float32) for k, v in convert.init_weights(model, 0).items()}
        arms = {k: v for k, v in trainers(model, optimizer, weights).items() if k in args.arms}
        times = {arm: [] for arm in arms}
        cpu_times = {arm: [] for arm in arms}
        layout_s = []
        losses = {}
        for repeat in range(args.repeats + 1):  # repeat 0 warms up (compiles)
            batches = data.batch_order(n_rows, train.batch_size, train.seed, repeat)
            masks = training.epoch_masks(model, train, train.seed, repeat, n_rows)
            start = time.perf_counter()
            jsparse.epoch_sparse_rows(matrix, batches[:-1],
                                      input_keep=masks[0][: (len(batches) - 1) * train.batch_size])
            layout_s.append(time.perf_counter() - start)
            for arm, trainer in arms.items():
                source = {"jax-dense": dense_jax, "torch-dense": dense_torch}.get(arm, matrix)
                step_masks = (jt.StepMasks if arm.startswith("jax") else tt.StepMasks)(*masks)
                start, cpu_start = time.perf_counter(), time.process_time()
                out = trainer.train_epoch(source, batches, step_masks)
                elapsed = time.perf_counter() - start  # the losses come back as numpy: the epoch has finished
                if repeat:
                    times[arm].append(elapsed)
                    cpu_times[arm].append(time.process_time() - cpu_start)
                losses.setdefault(arm, []).append(float(np.mean(out)))
            print(f"  {name} repeat {repeat}: " + ", ".join(f"{a} {times[a][-1] if repeat else float('nan'):.2f}s"
                                                            for a in arms), flush=True)
        summary = {arm: {"median_s": statistics.median(t), "min_s": min(t), "max_s": max(t), "n": len(t),
                         "cpu_median_s": statistics.median(cpu_times[arm]), "cpu_min_s": min(cpu_times[arm])}
                   for arm, t in times.items()}
        ratios = {}
        for num, den in [("jax-dense", "jax-sparse"), ("torch-dense", "torch-sparse"), ("torch-sparse", "jax-sparse"),
                         ("jax-dense", "torch-dense")]:
            if num in summary and den in summary:
                ratios[f"{den} speed-up over {num}"] = {
                    "median": summary[num]["median_s"] / summary[den]["median_s"],
                    "min_over_min": summary[num]["min_s"] / summary[den]["min_s"],
                    "range": [summary[num]["min_s"] / summary[den]["max_s"],
                              summary[num]["max_s"] / summary[den]["min_s"]],
                    "cpu_median": summary[num]["cpu_median_s"] / summary[den]["cpu_median_s"]}
        first = data.batch_order(n_rows, train.batch_size, train.seed, 0)[0]
        masks = training.epoch_masks(model, train, train.seed, 0, n_rows)
        evidence = {}
        if "jax-dense" in arms:
            evidence["dense"] = step_evidence(arms["jax-dense"], jnp.asarray(matrix[first].toarray()),
                                              jt.StepMasks(jnp.asarray(masks[0][: len(first)])))
        if "jax-sparse" in arms:
            batch = jsparse.to_device(jsparse.sparse_rows(matrix, first, input_keep=masks[0][: len(first)]))
            evidence["sparse"] = step_evidence(arms["jax-sparse"], batch, jt.StepMasks())
        results["presets"][name] = {"model": convert_config(model), "epoch_s": summary, "ratios": ratios,
                                    "layout_build_s_median": statistics.median(layout_s[1:]),
                                    "mean_loss_per_epoch": losses, "step_hlo": evidence}
        print(f"{name}: epoch seconds (wall median [min, max]; process CPU median), {args.repeats} repeats")
        for arm, row in summary.items():
            print(f"  {arm:13s} {row['median_s']:6.2f} [{row['min_s']:.2f}, {row['max_s']:.2f}]  "
                  f"cpu {row['cpu_median_s']:6.2f}")
        for key, r in ratios.items():
            print(f"  {key}: median {r['median']:.2f}x (min/min {r['min_over_min']:.2f}x, range {r['range'][0]:.2f}"
                  f"..{r['range'][1]:.2f}, cpu {r['cpu_median']:.2f}x)")
        print(f"  sparse layout build (numpy, one epoch): {statistics.median(layout_s[1:]):.3f} s")
        print("  mean loss per epoch (float32; the arms share weights, batches and masks): " + "; ".join(
            f"{arm} " + " ".join(f"{x:.6f}" for x in v) for arm, v in losses.items()))
        for kind, ev in evidence.items():
            print(f"  {kind} step: {len(ev['dots'])} dots, {ev['dot_flops'] / 1e9:.3f} GFLOP in dots, XLA cost "
                  f"analysis {ev['xla_flops'] / 1e9:.3f} GFLOP, {ev['xla_bytes_accessed'] / 1e6:.0f} MB accessed")
            for d in ev["dots"]:
                print(f"    dot -> {d['result']}, lhs {d['lhs']}, contracted {d['contracted']}, "
                      f"{(d['flops'] or 0) / 1e9:.3f} GFLOP")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1, default=str)


def convert_config(model: ModelConfig) -> dict:
    from parity.config import to_dict

    return to_dict(model)


if __name__ == "__main__":
    main()
