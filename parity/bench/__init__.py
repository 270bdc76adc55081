"""Training and inference throughput, PyTorch against JAX, with a roofline (`poincare-parity bench`).

Modules: `runner` (workloads, round robin, optimizer rows), `arms` (how each arm runs its session),
`roofline` (FLOPs and matmul rates), `profile` (where a traced epoch went), `trust` (the machine's load
and whether the timings hold), `curve` (cost against the item count), `devices` (throughput per device
count), `run` (the whole run); `parity.sysinfo` says what it ran on. This package re-exports their
public names.

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
    torch-sparse    torch-eager on sparse input (`train.input_format=sparse`): each batch's nonzeros laid out
                    on the host (`torch_ref.sparse`), the first layer and its weight gradient from them alone
    jax-sparse      jax-scan on sparse input: the epoch's batches laid out from their nonzeros on the host
                    (`jax_impl.sparse`), moved to the device once, the epoch one compiled program

Every arm starts from the same weights (`parity.convert.init_weights`), trains on the same batch order
(`parity.data.batch_order`) with the same dropout keep-masks (`parity.data.epoch_masks`), as
`poincare-parity train` does, and each epoch's time includes that data feeding:

    epoch_s   = feed_s (batch order + keep-masks, numpy) + run_s (the framework's epoch: transfers, gathers, steps)
    train users/s = users per epoch / epoch_s
    step_s    one train step on a batch already on the device (median of `--repeats` samples of `--steps` steps)
    loop_overhead_s = run_s - n_steps * step_s: what the epoch spends outside the steps themselves
    infer users/s   scoring every training row (input on the device, scores back on the host, batches of 1,024)
    warmup_s  the first epoch (compilation included); compile_s = warmup_s - median epoch_s
    memory    CPU: resident growth of building and warming the arm plus the peak above that during one more,
              untimed epoch (/proc/self VmHWM, reset for that epoch; the heap's free memory handed back to
              the kernel before each reading); GPU: torch's max_memory_allocated, JAX's peak_bytes_in_use

Repeats run round-robin over the arms (arm A epoch, arm B epoch, ..., then again), so a change of the
machine's load hits every arm alike; medians over `--repeats` (default 10) with min and max.

Ratios, pair by pair (later arm over earlier in the arms table), are paired: repeat i of arm A and repeat
i of arm B ran close in time, so r_i = users/s of A in repeat i / users/s of B in repeat i carries little
of the load that moved both (`parity.stats.paired_ratio`). Each ratio has its median over the repeats,
a 95% percentile-bootstrap interval of that median (from 6 repeats on: with fewer it would be the whole
range of the r_i, its ends set by single repeats; simulated coverage 92-96% for 6 to 15 repeats), the
range of the r_i (`low`, `high`), and `best`: the fastest epoch of A over the fastest of B, which a load
spike cannot move. The default of 10 repeats keeps one disturbed repeat off the interval's ends and
costs ~5 more epochs per arm than the former 5.

Trust (`trust`, per workload and for the run): other processes' share of the CPUs' time, measured from
the kernel's CPU counters in a 2 s probe before anything starts and over each workload's timed epochs;
each arm's slowest / fastest epoch; the width of each ratio's interval. Each threshold and its reason is
in `parity.bench.trust.THRESHOLDS` and in the JSON (`trust_thresholds`); a run that crosses one says
which and is marked not trustworthy, its numbers kept.

`--items 3706,10000,27000` (the cost curve, `curve`): every preset in every arm on synthetic data at each
item count, the users per epoch (6,040) and ratings per user (~165) of ML-1M kept, so the nonzeros per
epoch stay fixed: a first layer that reads only the nonzeros would cost the same at every width, while
the dense first layer, the decoder and the softmax over all items grow with it. Epoch time and memory
per arm and width; an arm whose predicted memory does not fit in what the machine has available is
skipped, with the reason recorded.

`--devices 1,2` (`devices`): data-parallel training (`jax_impl.distributed`, `torch_ref.distributed`) of
every preset in each framework on each device count, each in a new process; throughput and scaling
efficiency = throughput(N) / (N * throughput(1)). On the CPU the "devices" share the same cores, and the
JSON says so beside the (low) efficiency.

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
    ARM_SPECS,
    ARMS,
    INFER_BATCH,
    Arm,
    ArmSpec,
    make_arm,
)
from parity.bench.curve import (
    CURVE_ITEMS,
    CURVE_RATINGS,
    CURVE_REPEATS,
    CURVE_USERS,
    MemoryGuard,
    curve_data,
    estimate_arm_bytes,
    run_cost_curve,
)
from parity.bench.devices import DEVICES_REPEATS, run_devices, time_devices
from parity.bench.profile import summarize_jax_trace
from parity.bench.roofline import (
    Gemm,
    first_layer_flops_per_user,
    inference_flops_per_user,
    matmul_rate,
    model_layers,
    step_gemms,
    train_flops_per_user,
)
from parity.bench.run import run_bench, warm_runtimes
from parity.bench.runner import (
    DEFAULT_REPEATS,
    MATMUL_FRACTION_TARGET,
    OPTIMIZERS,
    QUICK_USERS,
    TARGETS,
    TINY,
    BenchData,
    BenchError,
    arm_memory_mb,
    bench_model,
    bench_optimizer,
    check_targets,
    load_bench_data,
    preset_run,
    select_device,
    sparse_input_ceiling,
    validate,
)

__all__ = [
    "ARMS", "ARM_FRAMEWORK", "ARM_DESCRIPTION", "INFER_BATCH", "Arm", "make_arm", "summarize_jax_trace", "Gemm",
    "model_layers", "step_gemms", "train_flops_per_user", "inference_flops_per_user", "matmul_rate",
    "MATMUL_FRACTION_TARGET", "TARGETS", "OPTIMIZERS",
    "QUICK_USERS", "TINY", "BenchData", "BenchError", "bench_model", "bench_optimizer", "check_targets",
    "load_bench_data", "preset_run", "run_bench", "select_device", "validate", "warm_runtimes", "DEFAULT_REPEATS",
    "arm_memory_mb", "ARM_SPECS", "ArmSpec", "CURVE_ITEMS", "CURVE_RATINGS", "CURVE_REPEATS", "CURVE_USERS",
    "MemoryGuard", "curve_data", "estimate_arm_bytes", "run_cost_curve", "DEVICES_REPEATS", "run_devices",
    "time_devices", "first_layer_flops_per_user", "sparse_input_ceiling",
]
