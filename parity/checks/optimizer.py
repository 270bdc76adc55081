"""`check_optimizer`: an optax optimizer against its PyTorch reference, step by step.

    records = check_optimizer(
        optax_tx,                                  # or (**constants) -> GradientTransformation
        lambda params: torch.optim.Adam(params, lr=1e-2),
        params={"w": w0},                          # numpy start values (float64; rounded per dtype)
        loss_fn=(jax_loss, torch_loss),            # loss(params dict, **constants) -> scalar, per framework
        steps=100)
    assert_parity(records)

Both sides start from the same parameters and minimise the same loss; every parameter is compared after
every step. One record per dtype: the worst error over the judged steps (`judge_steps`, default all),
named by parameter and step (`where` = "w after step 7", `worst_index` the element within w), the worst
over the whole trajectory and its step, the first step where a parameter fails its rule
(`first_failing_step`, `first_failing_parameter`), and the error after every step
(`per_step_max_rel_err`, for a plot). A float32 row can carry a third arm (`oracle=True`): the JAX side
run in float64 from the float32-rounded start, and each side's distance from it.

Parameters on a manifold: `torch_params(name, tensor)` builds each torch parameter (e.g. a geoopt
ManifoldParameter on the ball), `apply_updates` applies the JAX updates (e.g. `jax_impl.optim.apply_updates`
for Riemannian updates; default `optax.apply_updates`). `constants` (arrays or numbers) go to the loss on
both sides as keywords, traced on the JAX side; an optax factory gets those its signature names (all of
them if it takes **kwargs), a ready GradientTransformation none.

The building blocks `run_trajectories` and `compare_trajectories` are public too: the project's own
`poincare-parity optim` suite assembles its rows (the worst over three curvatures) from them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from parity import backend
from parity.compare import Comparison, ParityRecord, Records, Tolerance, compare, merge

DEFAULT_TOLERANCES = {
    "float64": Tolerance(1e-9, 1e-12, "default: float64 relative 1e-9, absolute 1e-12 near zero"),
    "float32": Tolerance(1e-4, 1e-6, "default: float32 relative 1e-4, absolute 1e-6 near zero"),
}


@dataclasses.dataclass(frozen=True)
class TrajectoryComparison:
    """Two trajectories compared: over the judged steps, over all steps, and step by step."""

    judged: Comparison
    whole: Comparison
    per_step: np.ndarray  # (steps,) worst relative error after each step, over every parameter
    worst_step: int  # 0-based step of the worst error over the whole trajectory
    first_failure: tuple[int, str] | None = None  # (0-based step, parameter) where a parameter first fails its rule


def run_trajectories(optax_tx: Any, make_torch_optimizer: Callable, params: Mapping[str, np.ndarray],
                     loss_fn: tuple[Callable, Callable], steps: int, *, dtype: str,
                     constants: Mapping[str, Any] | None = None, torch_params: Callable | None = None,
                     apply_updates: Callable | None = None,
                     framework: tuple[str, ...] = (backend.PORT, backend.REFERENCE),
                     ) -> tuple[dict[str, np.ndarray], ...]:
    """Every parameter after every step, {name: (steps, *shape)}, for each framework in `framework`
    (JAX first, then the reference; a single framework gives a one-element tuple)."""
    if dtype == "float64":
        backend.enable_float64()
    start = {k: np.asarray(v, np.float64).astype(dtype) for k, v in params.items()}
    fixed = {k: np.asarray(v, np.float64).astype(dtype) for k, v in (constants or {}).items()}
    out = []
    for name in framework:
        if name == backend.PORT:
            out.append(backend.get(name).optimizer_trajectory(optax_tx, start, loss_fn[0], steps, dtype=dtype,
                                                              constants=fixed, apply_updates=apply_updates))
        else:
            out.append(backend.get(name).optimizer_trajectory(make_torch_optimizer, start, loss_fn[1], steps,
                                                              dtype=dtype, constants=fixed, make_params=torch_params))
    return tuple(out)


def step_errors(got: np.ndarray, ref: np.ndarray, tol: Tolerance) -> np.ndarray:
    """The worst relative error (the measure of `compare`) after each step, (steps,); NaN where a side is
    not finite."""
    got, ref = got.astype(np.float64), ref.astype(np.float64)
    rel = np.abs(got - ref) / np.maximum(np.abs(ref), tol.atol / tol.rtol)
    return rel.reshape(len(rel), -1).max(axis=1)


def compare_trajectories(jax_traj: Mapping[str, np.ndarray], ref_traj: Mapping[str, np.ndarray],
                         tolerance: Callable[[str], Tolerance], judge_steps: int | None = None) -> TrajectoryComparison:
    """Every parameter's trajectory under its own rule (`tolerance(name)`); judged over the first
    `judge_steps` steps (default: all)."""
    steps = len(next(iter(ref_traj.values())))
    window = steps if judge_steps is None else min(judge_steps, steps)
    judged, whole, per_step, worst, worst_step = [], [], np.zeros(steps), -1.0, 0
    first_failure: tuple[int, str] | None = None
    for name, ref in ref_traj.items():
        tol = tolerance(name)
        judged.append(compare(jax_traj[name][:window], ref[:window], tol, where=name))
        whole.append(compare(jax_traj[name], ref, tol, where=name))
        errors = step_errors(jax_traj[name], ref, tol)
        per_step = np.fmax(per_step, errors)
        if whole[-1].max_rel_err > worst:
            worst, worst_step = whole[-1].max_rel_err, int(np.nanargmax(errors))
        failing = np.flatnonzero(~(errors <= tol.rtol))  # NaN (a side not finite) fails too
        if failing.size and (first_failure is None or failing[0] < first_failure[0]):
            first_failure = (int(failing[0]), name)
    return TrajectoryComparison(merge(judged), merge(whole), per_step, worst_step, first_failure)


def _by_step(comparison: Comparison) -> Comparison:
    """A comparison of trajectories (step, *shape) told by step: the arrays named "<parameter> after step
    N" (1-based), the indices within the parameter."""

    def split(where: str, index: tuple[int, ...] | None) -> tuple[str, tuple[int, ...] | None]:
        if not index:
            return where, index
        return f"{where} after step {index[0] + 1}", tuple(index[1:])

    where, worst_index = split(comparison.where, comparison.worst_index)
    abs_where, abs_index = split(comparison.abs_where, comparison.abs_index)
    return dataclasses.replace(comparison, where=where, worst_index=worst_index, abs_where=abs_where,
                               abs_index=abs_index)


def resolve_tolerance(tolerances: Any, dtype: str, name: str, start: np.ndarray) -> Tolerance:
    """A Tolerance, {dtype: Tolerance}, {(dtype, name): Tolerance} or a callable
    (dtype, name, start value) -> Tolerance."""
    if tolerances is None:
        return DEFAULT_TOLERANCES[dtype]
    if isinstance(tolerances, Tolerance):
        return tolerances
    if callable(tolerances):
        return tolerances(dtype, name, start)
    for key in ((dtype, name), dtype):
        if key in tolerances:
            return tolerances[key]
    raise KeyError(f"no tolerance for {name!r} in {dtype} in {tolerances!r}")


def check_optimizer(optax_tx: Any, make_torch_optimizer: Callable, params: Mapping[str, np.ndarray],
                    loss_fn: tuple[Callable, Callable], steps: int = 100, *,
                    dtypes: Sequence[str] = ("float64", "float32"), tolerances: Any = None,
                    judge_steps: int | Mapping[str, int] | None = None, constants: Mapping[str, Any] | None = None,
                    torch_params: Callable | None = None, apply_updates: Callable | None = None,
                    oracle: bool = False, name: str = "optimizer") -> Records:
    """`steps` steps of `optax_tx` against `make_torch_optimizer` from the same `params`; -> one record per
    dtype, the worst relative error over the judged steps (see the module docstring for every argument).

    Args:
      optax_tx: an optax GradientTransformation, or (**constants) -> one.
      make_torch_optimizer: list of torch parameters -> torch.optim optimizer (geoopt's included).
      params: name -> numpy start value (float64; each dtype gets it rounded).
      loss_fn: (jax_loss, torch_loss), each (params dict, **constants) -> scalar.
      steps: optimizer steps.
      dtypes: "float64" (switches JAX's 64-bit mode on) and / or "float32".
      tolerances: a Tolerance, {dtype: ...}, {(dtype, param name): ...} or (dtype, name, start) -> Tolerance.
      judge_steps: pass or fail on the first N steps (an int, or {dtype: N}); the whole trajectory is reported.
      constants, torch_params, apply_updates: see the module docstring.
      oracle: float32 rows also run JAX in float64 from the float32-rounded start (`oracle_rel_err_*`).
      name: the records' `check`.
    """
    records = Records()
    for dtype in dtypes:
        window = judge_steps.get(dtype) if isinstance(judge_steps, Mapping) else judge_steps
        window = steps if window is None else min(window, steps)
        jax_traj, ref_traj = run_trajectories(optax_tx, make_torch_optimizer, params, loss_fn, steps, dtype=dtype,
                                              constants=constants, torch_params=torch_params,
                                              apply_updates=apply_updates)
        rule = lambda key, dtype=dtype: resolve_tolerance(tolerances, dtype, key, np.asarray(params[key]))
        result = compare_trajectories(jax_traj, ref_traj, rule, window)
        tol = rule(result.judged.where)
        failure = result.first_failure
        extra: dict[str, Any] = {
            "steps": steps, "judged_steps": window, "trajectory_max_rel_err": result.whole.max_rel_err,
            "trajectory_max_abs_err": result.whole.max_abs_err, "worst_step": result.worst_step + 1,
            "first_failing_step": None if failure is None else failure[0] + 1,
            "first_failing_parameter": None if failure is None else failure[1],
            "per_step_max_rel_err": [float(f"{e:.3g}") for e in result.per_step],
        }
        if oracle and dtype == "float32":
            rounded = {k: np.asarray(v, np.float64).astype(np.float32).astype(np.float64) for k, v in params.items()}
            wide = {k: np.asarray(v, np.float64).astype(np.float32).astype(np.float64)
                    for k, v in (constants or {}).items()}
            (truth,) = run_trajectories(optax_tx, make_torch_optimizer, rounded, loss_fn, window, dtype="float64",
                                        constants=wide, apply_updates=apply_updates, framework=(backend.PORT,))
            for side, key in ((jax_traj, "oracle_rel_err_jax"), (ref_traj, "oracle_rel_err_ref")):
                extra[key] = merge([compare(side[k][:window], truth[k], rule(k)) for k in truth]).max_rel_err
        notes = []
        if window < steps:
            notes.append(f"judged on steps 1-{window}; whole trajectory {result.whole.max_rel_err:.2e}")
        if failure is not None:
            notes.append(f"{failure[1]} first fails its rule after step {failure[0] + 1} of {steps}")
        passed = all(compare(jax_traj[k][:window], ref_traj[k][:window], rule(k)).passes(rule(k)) for k in ref_traj)
        records.append(ParityRecord.from_comparison(name, dtype, _by_step(result.judged), tol, passed=passed,
                                                    note="; ".join(notes), **extra))
    return records
