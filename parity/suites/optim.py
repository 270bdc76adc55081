"""Riemannian optimizer trajectories, `jax_impl.optim` (optax) vs geoopt 0.5.1: `poincare-parity optim`.

Both sides start from the same parameters, a batch of points on the Poincaré ball (16 points of
dimension 5) and a Euclidean matrix (4 x 6), and minimise the same deterministic loss

    L = sum_i d_c(x_i, t_i)^2 + 1/2 sum_jk a_jk (W_jk - T_jk)^2

with one optimizer holding both parameters, for 300 steps; every parameter is recorded after every
step. One row per (configuration, retraction or exact expmap, dtype), the worst error over the
whole trajectory and over c in {0.1, 1, 2}. Configurations: plain SGD, momentum 0.9, Nesterov,
dampening 0.1, weight decay 1e-2, stabilize 10, a learning-rate schedule; Adam, AMSGrad, weight
decay 1e-2, stabilize 10, a schedule.

Learning rates are chosen so that the trajectories stay inside c|x|^2 <= 0.9 (reported per row as
`max_c_norm2`): at the projection radius (1 - 1e-5 of the boundary in float64) lambda_x is 2e5,
gradients of d^2 differ between the two implementations' formulas at the 1e-8 relative level there
(see `poincare-parity ops`, regime boundary), and the dynamics amplify it; that regime belongs to
the ops suite, not to a test of the update rules.

float32 rows carry a third arm: the float64 run (JAX, which the float64 rows prove equal to
geoopt) of the float32-rounded problem, over the judged steps; `oracle_rel_err_jax` and
`oracle_rel_err_ref` say how far each float32 side is from it, in the row's error measure.

The curvature both sides use is the one geoopt's `PoincareBall` actually holds (it stores c as
softplus(log(expm1(c))): float64 c = 0.1 comes back 5.6e-16 off, float32 4.5e-7 off); JAX gets that
value, so the two sides run the same problem.

Also here: `time_optimizer_step`, one optimizer step on a large batch of ball points, JAX (jitted)
vs geoopt, for `poincare-parity bench` and `poincare-parity optim --timing`.
"""

from __future__ import annotations

import dataclasses
import functools
import statistics
import sys
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from parity.backend import PORT, enable_float64
from parity.checks.optimizer import compare_trajectories, run_trajectories
from parity.compare import ParityRecord, Tolerance, compare, merge
from parity.config import OptimizerConfig

STEPS = 300
F32_WINDOW = 100  # float32 rows pass or fail on the first 100 steps; the whole trajectory is reported
C_VALUES = (0.1, 1.0, 2.0)
N_POINTS, DIM = 16, 5
WEIGHT_SHAPE = (4, 6)
SEED = 0

# float64: the acceptance criterion (relative 1e-9). Coordinates smaller than 1e-3 of the scale
# (the ball radius 1/sqrt(c) for points, max|W| for the matrix) are compared absolutely against
# 1e-9 * 1e-3 * scale: a coordinate that is near 0 by accident carries the vector's absolute error.
# float32: acceptance relative 1e-4 over the first 100 steps, floor at 1e-2 of the scale: float32
# rounding of a point is ~6e-8 of its norm, not of its smallest coordinate.
TOLERANCES = {
    "float64": (Tolerance(1e-9, 0.0, "acceptance: float64, every step of 300, relative 1e-9"), 1e-3),
    "float32": (Tolerance(1e-4, 0.0, "acceptance: float32, first 100 steps, relative 1e-4"), 1e-2),
}


@dataclasses.dataclass(frozen=True)
class Case:
    """One optimizer configuration; `schedule` names a learning-rate schedule (None: constant)."""

    name: str
    config: OptimizerConfig
    schedule: str | None = None


def _sgd(lr: float, **kw) -> OptimizerConfig:
    return OptimizerConfig(name="sgd", learning_rate=lr, **kw)


def _adam(lr: float, **kw) -> OptimizerConfig:
    return OptimizerConfig(name="adam", learning_rate=lr, **kw)


CASES = (
    Case("sgd", _sgd(0.05)),
    Case("sgd-momentum", _sgd(0.01, momentum=0.9)),
    Case("sgd-nesterov", _sgd(0.01, momentum=0.9, nesterov=True)),
    Case("sgd-dampening", _sgd(0.01, momentum=0.9, dampening=0.1)),
    Case("sgd-weight-decay", _sgd(0.01, momentum=0.9, weight_decay=1e-2)),
    Case("sgd-stabilize", _sgd(0.01, momentum=0.9, stabilize=10)),
    Case("sgd-schedule", _sgd(0.01, momentum=0.9), schedule="exponential"),
    Case("adam", _adam(0.02)),
    Case("adam-amsgrad", _adam(0.02, amsgrad=True)),
    Case("adam-weight-decay", _adam(0.02, weight_decay=1e-2)),
    Case("adam-stabilize", _adam(0.02, stabilize=10)),
    Case("adam-schedule", _adam(0.05), schedule="warmup-cosine"),
)
CASE_NAMES = tuple(c.name for c in CASES)


def make_schedule(name: str | None, peak: float):
    """The optax schedule called `name` (evaluated on the JAX side; torch gets its values per step).

    Its horizon is STEPS whatever the run length, so a shorter run (the float32 oracle, --quick)
    follows the same rates.
    """
    import optax

    if name is None:
        return peak
    if name == "exponential":
        return optax.exponential_decay(peak, transition_steps=50, decay_rate=0.5)
    if name == "warmup-cosine":
        return optax.warmup_cosine_decay_schedule(0.0, peak, warmup_steps=30, decay_steps=STEPS, end_value=1e-3)
    raise ValueError(f"unknown schedule {name!r}")


# ----------------------------------------------------------------------------- the problem


@dataclasses.dataclass(frozen=True)
class Problem:
    """Start and target of one run, float64 numpy (rounded to the run's dtype by each side)."""

    c: float
    points: np.ndarray
    targets: np.ndarray
    weight: np.ndarray
    weight_target: np.ndarray
    curvature_weights: np.ndarray  # a_jk of the quadratic


def _ball_points(rng: np.random.Generator, n: int, d: int, c: float, lo: float, hi: float) -> np.ndarray:
    direction = rng.normal(size=(n, d))
    direction /= np.linalg.norm(direction, axis=-1, keepdims=True)
    return direction * rng.uniform(lo, hi, size=(n, 1)) / np.sqrt(c)


def make_problem(c: float, seed: int = SEED) -> Problem:
    rng = np.random.default_rng([seed, int(round(c * 1000))])
    return Problem(
        c=c,
        points=_ball_points(rng, N_POINTS, DIM, c, 0.05, 0.6),
        targets=_ball_points(rng, N_POINTS, DIM, c, 0.05, 0.6),
        weight=rng.normal(size=WEIGHT_SHAPE),
        weight_target=rng.normal(size=WEIGHT_SHAPE),
        curvature_weights=rng.uniform(0.5, 2.0, size=WEIGHT_SHAPE),
    )


def geoopt_curvature(c: float, dtype: str) -> float:
    """The curvature geoopt's PoincareBall(c) holds in `dtype` (see the module docstring)."""
    import torch

    from torch_ref.optim import PoincareBall

    return float(PoincareBall(c, dtype=getattr(torch, dtype)).c)


# ----------------------------------------------------------------------------- the two sides


def _jax_loss(params, *, targets, weight_target, a, c):
    """L = sum_i d_c(x_i, t_i)^2 + 1/2 sum_jk a_jk (W_jk - T_jk)^2 (see the module docstring)."""
    import jax.numpy as jnp

    from jax_impl import poincare

    return (jnp.sum(poincare.dist(params["points"], targets, c=c) ** 2)
            + 0.5 * jnp.sum(a * (params["weight"] - weight_target) ** 2))


def _torch_loss(params, *, targets, weight_target, a, c):
    from torch_ref import poincare

    points = params["points"]  # the curvature geoopt's ball holds (c is the same number: geoopt_curvature)
    return ((poincare.dist(points, targets, c=points.manifold.c) ** 2).sum()
            + 0.5 * (a * (params["weight"] - weight_target) ** 2).sum())


@functools.cache
def _optax_factory(case: Case, exact: bool):
    """(c) -> the optax transformation of `case` on the ball of curvature c (c traced: one compilation
    serves every c)."""
    from jax_impl import optim

    def build(*, targets, weight_target, a, c):
        learning_rate = make_schedule(case.schedule, case.config.learning_rate)
        return optim.from_config(dataclasses.replace(case.config, exact=exact), learning_rate=learning_rate,
                                 manifolds={"points": optim.PoincareBall(c), "weight": None})

    return build


def _torch_side(case: Case, exact: bool, problem: Problem, steps: int):
    """(make_torch_optimizer, torch_params) of `case`: geoopt's optimizer, the points a BallParam."""
    from torch_ref import optim

    learning_rate = case.config.learning_rate
    if case.schedule is not None:  # the same optax schedule, evaluated once per step in float64
        schedule = make_schedule(case.schedule, case.config.learning_rate)
        learning_rate = [float(schedule(i)) for i in range(steps)].__getitem__

    def make_optimizer(params):
        return optim.from_config(dataclasses.replace(case.config, exact=exact), learning_rate=learning_rate)(params)

    def make_params(name, tensor):
        import torch

        return optim.BallParam(tensor, c=problem.c, exact=exact) if name == "points" else torch.nn.Parameter(tensor)

    return make_optimizer, make_params


def trajectories(case: Case, exact: bool, dtype: str, problem: Problem, c_used: float, steps: int = STEPS,
                 framework: tuple[str, ...] | None = None) -> tuple[dict[str, np.ndarray], ...]:
    """The JAX and geoopt trajectories of one run (`parity.checks.optimizer.run_trajectories`)."""
    from jax_impl import optim

    make_optimizer, make_params = _torch_side(case, exact, problem, steps)
    constants = {"targets": problem.targets, "weight_target": problem.weight_target, "a": problem.curvature_weights,
                 "c": c_used}
    kwargs = {} if framework is None else {"framework": framework}
    return run_trajectories(_optax_factory(case, exact), make_optimizer,
                            {"points": problem.points, "weight": problem.weight}, (_jax_loss, _torch_loss), steps,
                            dtype=dtype, constants=constants, torch_params=make_params,
                            apply_updates=optim.apply_updates, **kwargs)


# ----------------------------------------------------------------------------- one row


def _tolerance(dtype: str, scale: float) -> Tolerance:
    tol, floor = TOLERANCES[dtype]
    return Tolerance(tol.rtol, tol.rtol * floor * scale, tol.reason)


def check_row(case: Case, exact: bool, dtype: str, *, c_values: Sequence[float] = C_VALUES, steps: int = STEPS,
              seed: int = SEED) -> ParityRecord:
    """Worst error over the trajectory and over c of one (configuration, variant, dtype)."""
    window = min(F32_WINDOW, steps) if dtype == "float32" else steps
    judged, whole, per_c = [], [], {}
    oracle_jax, oracle_ref = [], []
    worst_step, worst = 0, -1.0
    per_step = np.zeros(steps)  # worst over c and over points / weight, step by step (the report's plot)
    max_c_norm2 = 0.0
    for c in c_values:
        problem = make_problem(c, seed)
        c_used = geoopt_curvature(c, dtype)
        jax_out, ref_out = trajectories(case, exact, dtype, problem, c_used, steps)
        scales = {"points": 1.0 / np.sqrt(c), "weight": float(np.abs(problem.weight).max())}
        result = compare_trajectories(jax_out, ref_out, lambda key, scales=scales: _tolerance(dtype, scales[key]),
                                      window)
        per_step = np.fmax(per_step, result.per_step)
        if result.whole.max_rel_err > worst:
            worst, worst_step = result.whole.max_rel_err, result.worst_step
        judged.append(result.judged)
        whole.append(result.whole)
        if dtype == "float32":  # third arm: the float64 run of the float32-rounded problem
            rounded = dataclasses.replace(problem, **{
                f.name: getattr(problem, f.name).astype(np.float32).astype(np.float64)
                for f in dataclasses.fields(problem) if f.name != "c"})
            (oracle,) = trajectories(case, exact, "float64", rounded, c_used, window, framework=(PORT,))
            for side, sink in ((jax_out, oracle_jax), (ref_out, oracle_ref)):
                sink.append(merge([compare(side[k][:window], oracle[k], _tolerance(dtype, scale))
                                   for k, scale in scales.items()]))
        per_c[f"rel_err_c{c:g}"] = whole[-1].max_rel_err
        for side in (jax_out, ref_out):
            max_c_norm2 = max(max_c_norm2, float(c * np.max(np.sum(side["points"].astype(np.float64) ** 2, axis=-1))))
    result, overall = merge(judged), merge(whole)
    tol = TOLERANCES[dtype][0]
    passed = result.passes(tol)
    extra = {
        "config": case.name,
        "variant": "exact" if exact else "retraction",
        "optimizer": dataclasses.asdict(case.config) | {"exact": exact},
        "schedule": case.schedule,
        "steps": steps,
        "judged_steps": window,
        "c_values": list(c_values),
        "trajectory_max_rel_err": overall.max_rel_err,
        "trajectory_max_abs_err": overall.max_abs_err,
        "worst_step": worst_step + 1,
        "per_step_max_rel_err": [float(f"{e:.3g}") for e in per_step],
        "max_c_norm2": max_c_norm2,
        "floor_fraction": TOLERANCES[dtype][1],
        **per_c,
    }
    if dtype == "float32":
        extra["oracle_rel_err_jax"] = merge(oracle_jax).max_rel_err
        extra["oracle_rel_err_ref"] = merge(oracle_ref).max_rel_err
    note = "" if dtype == "float64" else f"judged on steps 1-{window}; whole trajectory {overall.max_rel_err:.2e}"
    return ParityRecord(
        check=f"optim.{case.name}.{'exact' if exact else 'retr'}", dtype=dtype, max_abs_err=result.max_abs_err,
        max_rel_err=result.max_rel_err, tolerance=tol.rtol, passed=bool(passed), atol=TOLERANCES[dtype][1],
        nonfinite_jax=result.nonfinite_jax, nonfinite_ref=result.nonfinite_ref, note=note, extra=extra,
    )


def run(*, dtypes: Sequence[str] = ("float64", "float32"), cases: Sequence[str] | None = None,
        variants: Sequence[bool] = (False, True), c_values: Sequence[float] = C_VALUES, steps: int = STEPS,
        seed: int = SEED, progress: bool = False) -> list[ParityRecord]:
    """Every requested row (cases by name; variants: False = retraction, True = exact expmap)."""
    enable_float64()  # the harness compares float64; float32 rows stay float32
    by_name = {c.name: c for c in CASES}
    names = list(cases or CASE_NAMES)
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise ValueError(f"unknown configuration(s): {', '.join(unknown)}; known: {', '.join(CASE_NAMES)}")
    todo = [(by_name[n], e, d) for d in dtypes for n in names for e in variants]
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(todo), desc="optim parity", unit="row", file=sys.stderr)
    records = []
    for case, exact, dtype in todo:
        if bar is not None:
            bar.set_postfix_str(f"{case.name}/{'exact' if exact else 'retr'}/{dtype}")
        records.append(check_row(case, exact, dtype, c_values=c_values, steps=steps, seed=seed))
        if bar is not None:
            bar.update()
    if bar is not None:
        bar.close()
    return records


# ----------------------------------------------------------------------------- timing


def time_optimizer_step(name: str = "adam", *, n_points: int = 10_000, dim: int = 64, c: float = 1.0,
                        dtype: str = "float32", exact: bool = False, momentum: float = 0.9, repeats: int = 15,
                        number: int = 10, seed: int = SEED) -> dict[str, Any]:
    """Median wall time of one optimizer step on `n_points` ball points of dimension `dim`.

    The step only (gradients fixed and precomputed): JAX runs update + apply_updates as one jitted
    function with the parameters and state donated, timed with block_until_ready; geoopt runs
    `optimizer.step()`. Each of `repeats` samples times `number` consecutive steps; the result is
    the median per step (ms) and its ratio (JAX / geoopt, below 1: JAX faster). `momentum` applies
    to SGD. Uses the caller's JAX precision settings (float64 needs jax_enable_x64).
    """
    import jax
    import jax.numpy as jnp
    import torch

    from jax_impl import optim as jopt
    from torch_ref import optim as topt

    if dtype == "float64" and not jax.config.jax_enable_x64:
        raise ValueError("float64 timing needs jax.config.update('jax_enable_x64', True)")
    rng = np.random.default_rng(seed)
    points = _ball_points(rng, n_points, dim, c, 0.05, 0.9).astype(dtype)
    grads = (rng.normal(size=(n_points, dim)) * 0.1).astype(dtype)
    config = (OptimizerConfig(name="adam", learning_rate=1e-3, exact=exact) if name == "adam"
              else OptimizerConfig(name="sgd", learning_rate=1e-3, momentum=momentum, exact=exact))

    # JAX
    tx = jopt.from_config(config, manifolds=jopt.PoincareBall(c))
    params = jnp.asarray(points)
    state = tx.init(params)
    g = jnp.asarray(grads)

    @functools.partial(jax.jit, donate_argnums=(0, 1))
    def step(params, state, grads):
        updates, state = tx.update(grads, state, params)
        return jopt.apply_updates(params, updates), state

    params, state = step(params, state, g)  # compile
    jax.block_until_ready(params)
    jax_samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(number):
            params, state = step(params, state, g)
        jax.block_until_ready((params, state))
        jax_samples.append((time.perf_counter() - start) / number)

    # geoopt
    x = topt.BallParam(torch.tensor(points), c=c, exact=exact)
    optimizer = topt.from_config(config)([x])
    x.grad = torch.tensor(grads)
    optimizer.step()  # state initialisation out of the timing
    torch_samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(number):
            optimizer.step()
        torch_samples.append((time.perf_counter() - start) / number)

    jax_ms = 1e3 * statistics.median(jax_samples)
    torch_ms = 1e3 * statistics.median(torch_samples)
    return {
        "optimizer": name, "variant": "exact" if exact else "retraction", "n_points": n_points, "dim": dim,
        "c": c, "dtype": dtype, "repeats": repeats, "number": number,
        "jax_ms": jax_ms, "torch_ms": torch_ms, "ratio_jax_over_torch": jax_ms / torch_ms,
        "jax_ms_min": 1e3 * min(jax_samples), "torch_ms_min": 1e3 * min(torch_samples),
        "torch_threads": torch.get_num_threads(), "jax_backend": jax.default_backend(),
    }
