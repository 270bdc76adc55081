"""Training and inference throughput, PyTorch against JAX, with a roofline (`poincare-parity bench`).

Modules: `runner` (workloads, round robin, optimizer rows), `arms` (how each arm runs its session),
`roofline` (FLOPs and matmul rates), `profile` (where a traced epoch went); `parity.sysinfo` says what
it ran on. This package re-exports their public names.

What one run measures, for every model workload (a named preset of `parity.config.PRESETS` at the
dataset's width, ML-1M: 3,706 items) and every arm:

    arm             what runs                                                     from
    torch-eager     `torch_ref.train.Trainer.train_epoch`, batches gathered on the device, one sync per epoch
    torch-compile   the same with `torch.compile(model, dynamic=False)` (forward and its backward;
                    loss and optimizer step stay eager)
    jax-jit         `jax_impl.train.Trainer.train_epoch_stepwise`: one jitted step per batch, dispatched
                    without waiting, rows gathered on the device; the loop mirrors torch-eager's
    jax-scan        `jax_impl.train.Trainer.train_epoch`: the whole epoch as one compiled program, the dense
                    training matrix on the device and rows gathered inside a `lax.scan` in the same batch order

Every arm starts from the same weights (`parity.convert.init_weights`), trains on the same batch order
(`parity.data.batch_order`) with the same dropout keep-masks (`parity.data.epoch_masks`), as
`poincare-parity train` does, and each epoch's time includes that data feeding:

    epoch_s   = feed_s (batch order + keep-masks, numpy) + run_s (the framework's epoch: transfers, gathers, steps)
    train users/s = users per epoch / epoch_s
    step_s    one train step on a batch already on the device (median of `--repeats` samples of `--steps` steps)
    loop_overhead_s = run_s - n_steps * step_s: what the epoch spends outside the steps themselves
    infer users/s   scoring every training row (input on the device, scores back on the host, batches of 1,024)
    warmup_s  the first epoch (compilation included); compile_s = warmup_s - median epoch_s
    memory    CPU: resident growth of building and warming the arm plus the peak above that during one epoch
              (/proc/self VmHWM, reset per epoch); GPU: torch's max_memory_allocated, JAX's peak_bytes_in_use

Repeats run round-robin over the arms (arm A epoch, arm B epoch, ..., then again), so a change of the
machine's load hits every arm alike; medians over `--repeats` (default 5) with min and max. Ratios are
computed pair by pair: median / median, with the range min / max .. max / min.

Roofline: the matrix products of one training step at the model's shapes (forward x W^T, weight
gradient dY^T x, input gradient dY W; no input gradient for the first layer, whose input needs none)
are timed one by one in each framework; their FLOPs over their summed median times is that framework's
matmul rate at the model's shapes. Each arm's fraction is the model's matmul FLOPs per epoch over its
epoch time, divided by its framework's rate (per epoch with feeding: `matmul_fraction`; per isolated step:
`matmul_fraction_step`). Elementwise work (activations, loss, optimizer) is not counted as FLOPs.

The optimizer rows call `parity.suites.optim.time_optimizer_step` (one Riemannian SGD / Adam step on
10,000 ball points of dimension 64, JAX jitted against geoopt).

`--device gpu` runs both frameworks on CUDA (JAX with its CUDA plugin, torch with a CUDA build), float32
matrix products in true float32 on both sides unless `--gpu-matmul tf32`.
"""

from parity.bench.arms import (
    ARM_DESCRIPTION,
    ARM_FRAMEWORK,
    ARMS,
    INFER_BATCH,
    Arm,
    make_arm,
)
from parity.bench.profile import summarize_jax_trace
from parity.bench.roofline import (
    Gemm,
    inference_flops_per_user,
    matmul_rate,
    model_layers,
    step_gemms,
    train_flops_per_user,
)
from parity.bench.runner import (
    MATMUL_FRACTION_TARGET,
    OPTIMIZERS,
    QUICK_USERS,
    TARGETS,
    TINY,
    BenchData,
    BenchError,
    bench_model,
    bench_optimizer,
    check_targets,
    load_bench_data,
    preset_run,
    run_bench,
    select_device,
    validate,
)

__all__ = [
    "ARMS", "ARM_FRAMEWORK", "ARM_DESCRIPTION", "INFER_BATCH", "Arm", "make_arm", "summarize_jax_trace", "Gemm",
    "model_layers", "step_gemms", "train_flops_per_user", "inference_flops_per_user", "matmul_rate", "MATMUL_FRACTION_TARGET", "TARGETS", "OPTIMIZERS",
    "QUICK_USERS", "TINY", "BenchData", "BenchError", "bench_model", "bench_optimizer", "check_targets",
    "load_bench_data", "preset_run", "run_bench", "select_device", "validate",
]
