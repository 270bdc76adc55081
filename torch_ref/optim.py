"""geoopt 0.5.1's RiemannianSGD / RiemannianAdam built from the options `jax_impl.optim` reads.

Same names as `jax_impl.optim`:

    PoincareBall(c, *, exact=False, dtype=None) -> geoopt.PoincareBall / PoincareBallExact
    BallParam(value, *, c=1.0, exact=False)     -> geoopt.ManifoldParameter on that ball
    riemannian_sgd(learning_rate, momentum, dampening, weight_decay, nesterov, stabilize, *, exact)
    riemannian_adam(learning_rate, b1, b2, eps, weight_decay, amsgrad, stabilize, *, exact)
    from_config(config, *, learning_rate=None)
        -> factory(params) -> geoopt.optim.RiemannianSGD / RiemannianAdam

geoopt keeps the choice retraction / exponential map on the manifold (PoincareBall vs
PoincareBallExact); the factories take `exact` as `jax_impl.optim` does and check that every ball
parameter was built with the same choice. Plain tensors are Euclidean (geoopt's default manifold).
`learning_rate` may be a schedule, a callable `step -> float` (step = number of steps taken), set
on every parameter group before each step. Nothing of geoopt's update rule is re-implemented here.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from typing import Any

import geoopt
import torch

from parity.config import OptimizerConfig

__all__ = ["PoincareBall", "BallParam", "riemannian_sgd", "riemannian_adam", "from_config"]

ScalarOrSchedule = float | Callable[[int], float]
OptimizerFactory = Callable[[Iterable[torch.nn.Parameter]], torch.optim.Optimizer]


def PoincareBall(c: Any = 1.0, *, exact: bool = False, dtype: torch.dtype | None = None) -> geoopt.PoincareBall:
    """geoopt's ball of curvature ``-c`` in ``dtype`` (default: torch's default dtype).

    geoopt stores ``c`` as ``softplus(log(expm1(c)))``, built in the dtype of the tensor it is given:
    a Python float would give a float32 curvature (relative error ~1e-7) even for float64 points.
    The stored value is ``manifold.c``; it differs from ``c`` by at most a few ulps (float64 c = 0.1:
    5.6e-16 relative; float32 c = 0.1: 4.5e-7), and the parity harness hands that value to JAX.
    """
    dtype = dtype or torch.get_default_dtype()
    cls = geoopt.PoincareBallExact if exact else geoopt.PoincareBall
    return cls(c=torch.as_tensor(c, dtype=dtype))


def BallParam(value: torch.Tensor, *, c: Any = 1.0, exact: bool = False) -> geoopt.ManifoldParameter:
    """A parameter whose last axis is a point on the ball (a ``geoopt.ManifoldParameter``).

    Raises ValueError if a point is not strictly inside the ball (c |x|^2 >= 1, or not finite).
    """
    value = torch.as_tensor(value)
    if value.dim() < 1:
        raise ValueError("a ball parameter must have a last axis (the point's coordinates)")
    manifold = PoincareBall(c, exact=exact, dtype=value.dtype)
    with torch.no_grad():
        scaled = manifold.c.to(torch.float64) * value.to(torch.float64).pow(2).sum(-1)
        outside = ~(scaled < 1.0)
        if outside.any():
            raise ValueError(
                f"ball parameter starts outside the Poincaré ball of curvature c={float(manifold.c)}: "
                f"{int(outside.sum())} of {outside.numel()} point(s) have c*|x|^2 >= 1 or are not finite"
            )
    return geoopt.ManifoldParameter(value, manifold=manifold)


def _check_exactness(params: list, exact: bool) -> None:
    for p in params:
        tensors = p["params"] if isinstance(p, dict) else [p]
        for t in tensors:
            manifold = getattr(t, "manifold", None)
            if isinstance(manifold, geoopt.PoincareBall) and isinstance(manifold, geoopt.PoincareBallExact) != exact:
                raise ValueError(
                    f"optimizer built with exact={exact} but a ball parameter lives on {type(manifold).__name__}: "
                    f"build it with BallParam(..., exact={exact})"
                )


def _with_schedule(optimizer: torch.optim.Optimizer, learning_rate: ScalarOrSchedule) -> torch.optim.Optimizer:
    """Set ``lr = learning_rate(steps taken)`` on every group before each step (optax's convention)."""
    if not callable(learning_rate):
        return optimizer
    steps_taken = [0]

    def set_lr(opt, args, kwargs):
        lr = float(learning_rate(steps_taken[0]))
        for group in opt.param_groups:
            group["lr"] = lr
        steps_taken[0] += 1

    optimizer.register_step_pre_hook(set_lr)
    return optimizer


def _initial_lr(learning_rate: ScalarOrSchedule) -> float:
    return float(learning_rate(0)) if callable(learning_rate) else float(learning_rate)


def riemannian_sgd(learning_rate: ScalarOrSchedule, momentum: float = 0.0, dampening: float = 0.0,
                   weight_decay: float = 0.0, nesterov: bool = False, stabilize: int | None = None, *,
                   exact: bool = False) -> OptimizerFactory:
    """factory(params) -> ``geoopt.optim.RiemannianSGD`` with these options (picklable when the learning
    rate is: a spawned process can build it).

    The update rule is ``jax_impl.optim.riemannian_sgd``'s (which follows this optimizer): coupled
    weight decay, ``egrad2rgrad``, momentum buffer started at the raw first gradient, then
    ``retr_transp`` of the point and the buffer (``expmap_transp`` on a ``PoincareBallExact``).

    Args:
      learning_rate: a float, or a schedule ``steps taken -> float`` set on every parameter group
        before each step.
      momentum, dampening, weight_decay, nesterov, stabilize: geoopt's options of the same names.
      exact: the ball parameters must live on ``PoincareBallExact`` (checked by the factory).

    Returns:
      ``factory(params)``: builds the optimizer for an iterable of parameters or parameter groups;
      raises ValueError if a ball parameter's ``exact`` differs.

    References:
      Bécigneul & Ganea, `Riemannian Adaptive Optimization Methods <https://arxiv.org/abs/1810.00760>`_,
      ICLR 2019.
    """
    return functools.partial(_build_riemannian_sgd, learning_rate=learning_rate, momentum=momentum,
                             dampening=dampening, weight_decay=weight_decay, nesterov=nesterov, stabilize=stabilize,
                             exact=exact)


def _build_riemannian_sgd(params, *, learning_rate, momentum, dampening, weight_decay, nesterov, stabilize, exact):
    params = list(params)
    _check_exactness(params, exact)
    optimizer = geoopt.optim.RiemannianSGD(params, lr=_initial_lr(learning_rate), momentum=momentum,
                                           dampening=dampening, weight_decay=weight_decay, nesterov=nesterov,
                                           stabilize=stabilize)
    return _with_schedule(optimizer, learning_rate)


def riemannian_adam(learning_rate: ScalarOrSchedule, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8,
                    weight_decay: float = 0.0, amsgrad: bool = False, stabilize: int | None = None, *,
                    exact: bool = False) -> OptimizerFactory:
    """factory(params) -> ``geoopt.optim.RiemannianAdam`` with these options (``betas = (b1, b2)``;
    picklable when the learning rate is).

    The update rule is ``jax_impl.optim.riemannian_adam``'s (which follows this optimizer): coupled
    weight decay, ``egrad2rgrad``, first moment transported, second moment the Riemannian
    ``component_inner`` (one value per ball point), bias corrections in Python double.

    Args:
      learning_rate: a float, or a schedule ``steps taken -> float`` set on every parameter group
        before each step.
      b1, b2, eps, weight_decay, amsgrad, stabilize: geoopt's options (``betas = (b1, b2)``).
      exact: the ball parameters must live on ``PoincareBallExact`` (checked by the factory).

    Returns:
      ``factory(params)``: builds the optimizer; raises ValueError if a ball parameter's ``exact``
      differs.

    References:
      Bécigneul & Ganea, `Riemannian Adaptive Optimization Methods <https://arxiv.org/abs/1810.00760>`_,
      ICLR 2019.
    """
    return functools.partial(_build_riemannian_adam, learning_rate=learning_rate, b1=b1, b2=b2, eps=eps,
                             weight_decay=weight_decay, amsgrad=amsgrad, stabilize=stabilize, exact=exact)


def _build_riemannian_adam(params, *, learning_rate, b1, b2, eps, weight_decay, amsgrad, stabilize, exact):
    params = list(params)
    _check_exactness(params, exact)
    optimizer = geoopt.optim.RiemannianAdam(params, lr=_initial_lr(learning_rate), betas=(b1, b2), eps=eps,
                                            weight_decay=weight_decay, amsgrad=amsgrad, stabilize=stabilize)
    return _with_schedule(optimizer, learning_rate)


def from_config(config: OptimizerConfig, *, learning_rate: ScalarOrSchedule | None = None) -> OptimizerFactory:
    """``riemannian_sgd`` or ``riemannian_adam`` from an ``OptimizerConfig``.

    Args:
      config: ``name`` ("sgd" or "adam") and the options.
      learning_rate: replaces ``config.learning_rate`` when given (e.g. a schedule).

    Returns:
      The factory of ``riemannian_sgd`` or ``riemannian_adam``.

    Raises:
      ValueError: for an unknown ``config.name``.
    """
    lr = config.learning_rate if learning_rate is None else learning_rate
    if config.name == "sgd":
        return riemannian_sgd(lr, momentum=config.momentum, dampening=config.dampening,
                              weight_decay=config.weight_decay, nesterov=config.nesterov,
                              stabilize=config.stabilize, exact=config.exact)
    if config.name == "adam":
        return riemannian_adam(lr, b1=config.b1, b2=config.b2, eps=config.eps, weight_decay=config.weight_decay,
                               amsgrad=config.amsgrad, stabilize=config.stabilize, exact=config.exact)
    raise ValueError(f"unknown optimizer {config.name!r}: expected 'adam' or 'sgd'")
