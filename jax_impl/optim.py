r"""Riemannian SGD and Riemannian Adam as optax transformations, step for step geoopt 0.5.1's.

Parameters live either in Euclidean space or on a Poincaré ball; one optimizer takes both. Which
leaf lives where is said by a *label* per leaf:

- plain pytrees: a label pytree (the params' structure, or a prefix of it) with ``None`` for
  Euclidean leaves and ``PoincareBall(c)`` for ball leaves, passed as ``manifolds=`` (or a callable
  ``params -> labels``);
- Flax NNX: declare ball parameters as ``BallParam(value, c=...)`` (an ``nnx.Param`` subclass) and
  train with ``RiemannianOptimizer``; the labels are read from the variable types.

Both end up as the same internal representation: one label per leaf (``None`` or ``PoincareBall``),
fixed at ``init`` and kept in the optimizer state (``state.manifolds``). A learnable curvature would
pass fresh labels (``c`` an array) as ``update(..., manifolds=labels)``.

A ball parameter is moved by the retraction, not by addition, and its momentum is transported to
the new point, so the transformation computes the new point itself. Its ``updates`` hold, for a
ball leaf, ``BallUpdate(point)`` (the new point) and, for a Euclidean leaf, the usual additive
update; ``apply_updates(params, updates)`` puts them in place. ``optax.apply_updates`` refuses a
``BallUpdate`` (TypeError) rather than add it.

The rules (geoopt's ``RiemannianSGD`` / ``RiemannianAdam``, per leaf, ``x`` the point, ``g`` its
Euclidean gradient, ``t`` the step number from 1, ``η`` the learning rate at step ``t - 1``):

SGD::

    g  <- g + wd x                                    coupled weight decay, before the conversion
    r  <- egrad2rgrad(x, g)                           g / λ_x² on the ball, g in Euclidean space
    m  <- g_raw at t = 1 (geoopt starts the buffer at the raw gradient, before weight decay)
    m  <- μ m + (1 - dampening) r
    d  <- r + μ m (Nesterov) or m
    x, m <- retr_transp(x, -η d, m)                   without momentum: x <- retr(x, -η r)

Adam::

    g  <- g + wd x;  r <- egrad2rgrad(x, g)
    m  <- β1 m + (1 - β1) r
    v  <- β2 v + (1 - β2) <r, r>_x                    per point on the ball (λ_x² |r|²), per element otherwise
    v̂  <- max(v̂, v) (AMSGrad);  denom = sqrt(v̂ / (1 - β2^t)) + eps  (v without AMSGrad)
    x, m <- retr_transp(x, -η (m / (1 - β1^t)) / denom, m)

``retr_transp`` is ``y = project(x + u)`` and the parallel transport of ``m`` to ``y``; with
``exact=True`` (geoopt's ``PoincareBallExact``) it is ``y = expmap(x, u)``. In Euclidean space it is
``x + u`` and ``m`` unchanged. ``v`` is not transported. ``stabilize=N`` projects the ball points
every ``N`` steps (after the step; geoopt also projects the momentum onto the tangent space, the
identity on the ball).
References: Bécigneul & Ganea, "Riemannian Adaptive Optimization Methods", ICLR 2019
(https://arxiv.org/abs/1810.00760); geoopt 0.5.1's ``geoopt.optim.RiemannianSGD`` and
``RiemannianAdam`` (Kochurov, Karimov & Kozlukov, https://arxiv.org/abs/2005.02819).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.typing import ArrayLike

from jax_impl import poincare
from parity.config import OptimizerConfig

__all__ = [
    "PoincareBall",
    "BallParam",
    "BallUpdate",
    "manifolds_of",
    "riemannian_sgd",
    "riemannian_adam",
    "from_config",
    "apply_updates",
    "RiemannianOptimizer",
    "RiemannianSGDState",
    "RiemannianAdamState",
]

ScalarOrSchedule = float | Callable[[jax.Array], jax.Array]


# ----------------------------------------------------------------------------- manifold labels


@dataclasses.dataclass(frozen=True)
class PoincareBall:
    r"""Label of a parameter whose last axis is a point on the Poincaré ball :math:`\{x : c\|x\|^2 < 1\}`.

    The ball has curvature ``-c`` (geoopt's ``PoincareBall(c)``); a parameter of shape (..., d) holds
    one point per leading index. Used in the ``manifolds`` label pytree of ``riemannian_sgd`` and
    ``riemannian_adam`` (``None`` labels a Euclidean leaf).

    Attributes:
      c: curvature parameter, ``c > 0``: a float, or an array for a learnable curvature (a pytree
        child, so labels pass through ``jax.jit``).
    """

    c: ArrayLike = 1.0


jax.tree_util.register_dataclass(PoincareBall, data_fields=["c"], meta_fields=[])


class BallParam(nnx.Param):
    """An ``nnx.Param`` whose last axis is a point on the Poincaré ball of curvature ``-c``.

    ``RiemannianOptimizer`` (or ``manifolds_of``) reads ``PoincareBall(c)`` labels from these
    variables; the optimizers move them by the retraction and transport their momentum.

    Args:
      value: the points, shape (..., d), strictly inside the ball (``c |x|^2 < 1``; checked at ``init``).
      c: curvature parameter, ``c > 0`` (float or array), stored as the variable's metadata.
      **metadata: further ``nnx.Variable`` metadata.
    """

    def __init__(self, value: ArrayLike, *, c: ArrayLike = 1.0, **metadata):
        super().__init__(value, c=c, **metadata)


@dataclasses.dataclass(frozen=True)
class BallUpdate:
    """The new value of a ball parameter (what ``apply_updates`` puts in place of the old one)."""

    point: jax.Array

    def __add__(self, other):
        raise TypeError("a ball parameter's update is its new point, not an increment: use "
                        "jax_impl.optim.apply_updates (or RiemannianOptimizer), not optax.apply_updates")

    __radd__ = __add__


jax.tree_util.register_dataclass(BallUpdate, data_fields=["point"], meta_fields=[])

Label = PoincareBall | None


def _is_label(x: Any) -> bool:
    return x is None or isinstance(x, PoincareBall)


def _is_variable(x: Any) -> bool:
    return isinstance(x, nnx.Variable)


def _strip_variables(tree: Any) -> Any:
    """The tree with every ``nnx.Variable`` node replaced by its value (plain arrays)."""
    return jax.tree.map(lambda x: x.get_value() if _is_variable(x) else x, tree, is_leaf=_is_variable)


def manifolds_of(tree: Any, wrt: Any = nnx.Param) -> Any:
    """Label pytree of an NNX module (its ``wrt`` state) or of a state with Variable leaves.

    Same structure as the variables' values: ``PoincareBall(c)`` for a ``BallParam``, ``None`` otherwise.
    """
    if isinstance(tree, nnx.Module):
        tree = nnx.state(tree, wrt)
    return jax.tree.map(lambda v: PoincareBall(v.get_metadata()["c"]) if isinstance(v, BallParam) else None,
                        tree, is_leaf=_is_variable)


def _leaf_labels(params: Any, manifolds: Any) -> tuple[Label, ...]:
    """One label per leaf of ``params`` (in ``jax.tree.leaves`` order): the internal representation."""
    if manifolds is None:  # read the variable types (NNX); plain arrays are Euclidean
        labels: list[Label] = []
        for node in jax.tree.leaves(params, is_leaf=_is_variable):
            label = PoincareBall(node.get_metadata()["c"]) if isinstance(node, BallParam) else None
            labels += [label] * (len(jax.tree.leaves(node)) if _is_variable(node) else 1)
        return tuple(labels)
    if callable(manifolds) and not _is_label(manifolds):
        manifolds = manifolds(params)
    label_leaves, label_def = jax.tree.flatten(manifolds, is_leaf=_is_label)
    for label in label_leaves:
        if not _is_label(label):
            raise TypeError(f"manifold labels must be None (Euclidean) or PoincareBall(c), got {label!r}")
    try:
        subtrees = label_def.flatten_up_to(_strip_variables(params))
    except (ValueError, TypeError) as err:
        raise ValueError(f"the manifold labels do not match the parameters' structure (they must have "
                         f"the params' structure or a prefix of it): {err}") from None
    return tuple(label for label, sub in zip(label_leaves, subtrees) for _ in jax.tree.leaves(sub))


def _leaf_names(params: Any) -> list[str]:
    return [jax.tree_util.keystr(path) for path, _ in jax.tree_util.tree_flatten_with_path(_strip_variables(params))[0]]


def _check_ball_leaves(params: Any, labels: tuple[Label, ...]) -> None:
    """Refuse ball leaves that are scalars, or (when concrete) have points outside the ball or c <= 0."""
    leaves = jax.tree.leaves(params)
    names = _leaf_names(params)
    for name, x, label in zip(names, leaves, labels):
        if label is None:
            continue
        if jnp.ndim(x) < 1:
            raise ValueError(f"ball parameter {name or '<root>'} is a scalar: "
                             "its last axis must be the point's coordinates")
        if isinstance(x, jax.core.Tracer) or isinstance(label.c, jax.core.Tracer):
            continue  # traced (init under jit): values unknown, nothing to check
        c = np.asarray(label.c, dtype=np.float64)
        if not np.all(c > 0):
            raise ValueError(f"ball parameter {name or '<root>'}: curvature c must be > 0, got {label.c!r}")
        x64 = np.asarray(x, dtype=np.float64)
        scaled = c * np.sum(x64 * x64, axis=-1)  # c |x|^2 < 1 inside the ball
        outside = ~(scaled < 1.0)  # NaN counts as outside
        if outside.any():
            largest = np.where(np.isnan(scaled), np.inf, scaled).max()
            raise ValueError(
                f"ball parameter {name or '<root>'} starts outside the Poincaré ball of curvature c={label.c}: "
                f"{int(outside.sum())} of {outside.size} point(s) have c*|x|^2 >= 1 or are not finite "
                f"(largest c*|x|^2: {largest:.6g}). Start inside the ball, e.g. with jax_impl.poincare.project(x, c=c)."
            )


# ----------------------------------------------------------------------------- geometry per leaf


def _egrad2rgrad(label: Label, x, g):
    """Riemannian gradient: ``g / λ_x²`` on the ball, ``g`` in Euclidean space."""
    return g if label is None else poincare.egrad2rgrad(x, g, c=label.c)


def _component_inner(label: Label, x, g):
    """Adam's second-moment increment: ``<g, g>_x`` per point on the ball (shape (..., 1)), ``g²`` elementwise."""
    return g * g if label is None else poincare.inner(x, g, c=label.c)


def _move(label: Label, x, u, v, exact: bool, stabilize_now):
    """One step along the tangent vector ``u``: (the update for ``apply_updates``, ``v`` at the new point).

    Euclidean: the update is ``u`` itself (``apply_updates`` adds it: ``x + u``, geoopt's retraction)
    and ``v`` is unchanged. Ball: ``y = project(x + u)`` (``expmap(x, u)`` when ``exact``), ``v``
    transported to ``y`` (skipped when ``v`` is None), then geoopt's ``stabilize_group`` when
    ``stabilize_now``: ``y`` projected (the momentum's ``proju`` is the identity on the ball).
    """
    if label is None:
        return u, v
    c = label.c
    if v is None:
        y = poincare.expmap(x, u, c=c) if exact else poincare.retr(x, u, c=c)
    else:
        y, v = (poincare.expmap_transp if exact else poincare.retr_transp)(x, u, v, c=c)
    if stabilize_now is not False:
        y = jax.lax.cond(stabilize_now, lambda p: poincare.project(p, c=c), lambda p: p, y)
    return BallUpdate(y), v


def _as_dtype(value, like):
    return jnp.asarray(value, dtype=jnp.result_type(like))


def _bias_correction(beta: float, count: jax.Array, like) -> jax.Array:
    r""":math:`1 - \beta^t`, as :math:`-\operatorname{expm1}(t \log\beta)` in the widest float available.

    geoopt computes it in Python double; float32 ``1 - 0.999**t`` loses 4 digits to cancellation
    (relative error 1e-5 at t = 1), the expm1 form keeps float32 precision when x64 is off.
    """
    wide = jnp.result_type(float)
    log_beta = -math.inf if beta == 0.0 else math.log(beta)
    return _as_dtype(-jnp.expm1(count.astype(wide) * jnp.asarray(log_beta, wide)), like)


# ----------------------------------------------------------------------------- states


class RiemannianSGDState(NamedTuple):
    """count: steps taken; momentum: buffers (params' structure), () without momentum;
    manifolds: one label per leaf, fixed at init."""

    count: jax.Array
    momentum: Any
    manifolds: tuple


class RiemannianAdamState(NamedTuple):
    """count: steps taken; mu: first moment (transported); nu: second moment ((..., 1) per ball point,
    elementwise for Euclidean leaves; not transported); nu_max: AMSGrad's running max, () without;
    manifolds: one label per leaf, fixed at init."""

    count: jax.Array
    mu: Any
    nu: Any
    nu_max: Any
    manifolds: tuple


def _prepare(grads, state, params, manifolds):
    """Flat leaves of params and grads, the labels, and the treedefs to rebuild updates and state."""
    if params is None:
        raise ValueError("Riemannian optimizers need the current parameters: call update(grads, state, params)")
    params = _strip_variables(params)
    x_leaves, params_def = jax.tree.flatten(params)
    g_leaves, grads_def = jax.tree.flatten(grads)
    if len(g_leaves) != len(x_leaves):
        raise ValueError(f"gradients have {len(g_leaves)} leaves, parameters {len(x_leaves)}")
    labels = state.manifolds if manifolds is None else _leaf_labels(params, manifolds)
    if len(labels) != len(x_leaves):
        raise ValueError(f"the optimizer state has labels for {len(labels)} leaves, "
                         f"the parameters have {len(x_leaves)}")
    return x_leaves, [jnp.asarray(g) for g in g_leaves], labels, params_def, grads_def


def _learning_rate(learning_rate: ScalarOrSchedule, count: jax.Array):
    """The learning rate for the step after ``count`` steps.

    A schedule is called with the count as the default integer (int64 under x64): optax schedules
    compute in the count's precision, and an int32 count gives a float32 learning rate even in a
    float64 run (``exponential_decay(0.02, ...)(int32 0)`` is 0.019999999552965164).
    """
    if not callable(learning_rate):
        return learning_rate
    return learning_rate(jnp.asarray(count, dtype=jnp.result_type(int)))  # int64 under x64, else int32


def _stabilize_now(stabilize: int | None, count: jax.Array):
    return False if stabilize is None else (count % stabilize) == 0


def _check_stabilize(stabilize: int | None) -> None:
    if stabilize is not None and (not isinstance(stabilize, int) or stabilize < 1):
        raise ValueError(f"stabilize must be None or a positive number of steps, got {stabilize!r}")


def _init_labels(params, manifolds) -> tuple[Label, ...]:
    labels = _leaf_labels(params, manifolds)
    _check_ball_leaves(_strip_variables(params), labels)
    return labels


# ----------------------------------------------------------------------------- the optimizers


def riemannian_sgd(learning_rate: ScalarOrSchedule, momentum: float = 0.0, dampening: float = 0.0,
                   weight_decay: float = 0.0, nesterov: bool = False, stabilize: int | None = None, *,
                   exact: bool = False, manifolds: Any = None) -> optax.GradientTransformationExtraArgs:
    r"""Riemannian SGD with momentum, step for step geoopt's ``RiemannianSGD``, as an optax transformation.

    Per leaf, with :math:`x_t` the parameter, :math:`g_t` its Euclidean gradient, :math:`\eta_t`
    the learning rate and :math:`\mu` the momentum:

    .. math::
        r_t &= \operatorname{egrad2rgrad}(x_t, g_t + \mathrm{wd}\, x_t)
              \quad (g / \lambda_x^2 \text{ on the ball, } g \text{ in Euclidean space}) \\
        m_t &= \mu\, m_{t-1} + (1 - \mathrm{dampening})\, r_t, \qquad m_0 = g_1 \\
        d_t &= r_t + \mu\, m_t \ \text{(Nesterov)} \quad \text{or} \quad d_t = m_t \\
        (x_{t+1}, m_t) &\leftarrow \operatorname{retr\_transp}(x_t, -\eta_t d_t, m_t)

    Without momentum :math:`x_{t+1} = \operatorname{retr}(x_t, -\eta_t r_t)`. On the ball
    ``retr_transp`` is ``y = project(x + u)`` with ``m`` parallel-transported to ``y``
    (``expmap_transp`` when ``exact``); in Euclidean space it is ``x + u`` with ``m`` unchanged.
    geoopt starts the buffer at the raw first gradient (:math:`m_0 = g_1`, before weight decay), so
    the first momentum step is :math:`\mu g_1 + (1 - \mathrm{dampening}) r_1`, where
    ``torch.optim.SGD`` takes :math:`r_1`; the rest is ``torch.optim.SGD`` with coupled weight decay.

    Args:
      learning_rate: :math:`\eta`, a float >= 0 or an optax schedule, called with the number of
        steps taken (an int64 under x64, so schedules compute in float64 there).
      momentum: :math:`\mu \ge 0`; 0 keeps no buffer.
      dampening: the buffer takes ``(1 - dampening) r``.
      weight_decay: ``wd >= 0``, coupled: added to the Euclidean gradient before egrad2rgrad.
      nesterov: Nesterov momentum; needs ``momentum > 0`` and ``dampening == 0``.
      stabilize: project the ball points every this many steps, after the step (None: never).
      exact: move along the exponential map instead of the retraction (geoopt's ``PoincareBallExact``).
      manifolds: one label per leaf, ``None`` (Euclidean) or ``PoincareBall(c)``: a pytree with the
        params' structure or a prefix of it, or a callable ``params -> labels``; None reads
        ``BallParam`` variables (NNX).

    Returns:
      An ``optax.GradientTransformationExtraArgs``. ``init(params)`` returns a
      ``RiemannianSGDState`` and checks that ball leaves are inside the ball;
      ``update(grads, state, params, *, manifolds=None)`` needs ``params`` and returns ``(updates,
      state)``, where a ball leaf's update is ``BallUpdate(new_point)`` and a Euclidean leaf's the
      additive step: apply them with ``apply_updates`` (``optax.apply_updates`` refuses them).
      ``manifolds`` given to ``update`` replaces the labels of ``init`` (a learnable curvature).

    Raises:
      ValueError: for the options geoopt / ``torch.optim.SGD`` reject (negative learning rate,
        momentum or weight decay; Nesterov without momentum or with dampening; ``stabilize < 1``).

    References:
      Bécigneul & Ganea, `Riemannian Adaptive Optimization Methods <https://arxiv.org/abs/1810.00760>`_,
      ICLR 2019: Riemannian SGD with a retraction and transported momentum.
      Kochurov, Karimov & Kozlukov, `Geoopt: Riemannian Optimization in PyTorch
      <https://arxiv.org/abs/2005.02819>`_, 2020 (geoopt 0.5.1's ``RiemannianSGD``, followed step for step).
    """
    if not callable(learning_rate) and learning_rate < 0.0:
        raise ValueError(f"Invalid learning rate: {learning_rate}")
    if momentum < 0.0:
        raise ValueError(f"Invalid momentum value: {momentum}")
    if weight_decay < 0.0:
        raise ValueError(f"Invalid weight_decay value: {weight_decay}")
    if nesterov and (momentum <= 0 or dampening != 0):
        raise ValueError("Nesterov momentum requires a momentum and zero dampening")
    _check_stabilize(stabilize)
    use_momentum = momentum > 0

    def init_fn(params):
        labels = _init_labels(params, manifolds)
        plain = _strip_variables(params)
        buffers = jax.tree.map(jnp.zeros_like, plain) if use_momentum else ()
        return RiemannianSGDState(count=jnp.zeros([], jnp.int32), momentum=buffers, manifolds=labels)

    def update_fn(grads, state, params=None, *, manifolds=None, **extra_args):
        del extra_args
        x_leaves, g_leaves, labels, params_def, grads_def = _prepare(grads, state, params, manifolds)
        lr = _learning_rate(learning_rate, state.count)
        count = optax.safe_increment(state.count)
        stabilize_now = _stabilize_now(stabilize, count)
        buffers = params_def.flatten_up_to(state.momentum) if use_momentum else [None] * len(x_leaves)
        first_step = state.count == 0
        new_buffers, updates = [], []
        for label, x, g_raw, buf in zip(labels, x_leaves, g_leaves, buffers):
            g = g_raw + _as_dtype(weight_decay, x) * x if weight_decay else g_raw
            r = _egrad2rgrad(label, x, g)
            step = -_as_dtype(lr, x)
            if use_momentum:
                buf = jnp.where(first_step, g_raw, buf)  # geoopt: buffer = the raw gradient at the first step
                buf = _as_dtype(momentum, x) * buf + _as_dtype(1.0 - dampening, x) * r
                direction = r + _as_dtype(momentum, x) * buf if nesterov else buf
                update, buf = _move(label, x, step * direction, buf, exact, stabilize_now)
            else:
                update, _ = _move(label, x, step * r, None, exact, stabilize_now)
            new_buffers.append(buf)
            updates.append(update)
        new_state = RiemannianSGDState(
            count=count,
            momentum=params_def.unflatten(new_buffers) if use_momentum else (),
            manifolds=state.manifolds,
        )
        return grads_def.unflatten(updates), new_state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def riemannian_adam(learning_rate: ScalarOrSchedule, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8,
                    weight_decay: float = 0.0, amsgrad: bool = False, stabilize: int | None = None, *,
                    exact: bool = False, manifolds: Any = None) -> optax.GradientTransformationExtraArgs:
    r"""Riemannian Adam / AMSGrad, step for step geoopt's ``RiemannianAdam``, as an optax transformation.

    Per leaf, with :math:`x_t` the parameter, :math:`g_t` its Euclidean gradient and :math:`\eta_t`
    the learning rate, from :math:`m_0 = v_0 = \hat v_0 = 0`:

    .. math::
        r_t &= \operatorname{egrad2rgrad}(x_t, g_t + \mathrm{wd}\, x_t) \\
        m_t &= \beta_1 m_{t-1} + (1 - \beta_1)\, r_t \\
        v_t &= \beta_2 v_{t-1} + (1 - \beta_2)\, \langle r_t, r_t\rangle_{x_t} \\
        \hat v_t &= \max(\hat v_{t-1}, v_t) \ \text{(AMSGrad)} \quad \text{or} \quad \hat v_t = v_t \\
        u_t &= -\eta_t \, \frac{m_t / (1 - \beta_1^t)}{\sqrt{\hat v_t / (1 - \beta_2^t)} + \epsilon} \\
        (x_{t+1}, m_t) &\leftarrow \operatorname{retr\_transp}(x_t, u_t, m_t)

    On the ball :math:`\langle r, r\rangle_x = \lambda_x^2 \|r\|^2` is one number per point (the
    adaptivity across the factors of a product of manifolds of Bécigneul & Ganea), so ``v`` has shape
    (..., 1) and is not transported; ``retr_transp`` is ``y = project(x + u)`` with ``m``
    parallel-transported to ``y`` (``expmap_transp`` when ``exact``). In Euclidean space
    :math:`\langle r, r\rangle_x = r^2` elementwise and the step is ``x + u``: ``torch.optim.Adam``
    with coupled weight decay (AMSGrad keeps the max of the raw second moment, before bias
    correction). The bias corrections are computed as ``-expm1(t log beta)`` in the widest float.

    Args:
      learning_rate: :math:`\eta`, a float >= 0 or an optax schedule, called with the number of
        steps taken (an int64 under x64).
      b1: :math:`\beta_1 \in [0, 1)` (``betas[0]``).
      b2: :math:`\beta_2 \in [0, 1)` (``betas[1]``).
      eps: :math:`\epsilon \ge 0`, added to the bias-corrected root of the second moment.
      weight_decay: ``wd >= 0``, coupled: added to the Euclidean gradient before egrad2rgrad.
      amsgrad: keep the running maximum of the second moment (:math:`\hat v`).
      stabilize: project the ball points every this many steps, after the step (None: never).
      exact: move along the exponential map instead of the retraction (geoopt's ``PoincareBallExact``).
      manifolds: labels, as in ``riemannian_sgd``.

    Returns:
      An ``optax.GradientTransformationExtraArgs`` with ``init(params) -> RiemannianAdamState`` and
      ``update(grads, state, params, *, manifolds=None) -> (updates, state)``, applied with
      ``apply_updates`` (see ``riemannian_sgd``).

    Raises:
      ValueError: for the options geoopt / ``torch.optim.Adam`` reject (negative learning rate, eps
        or weight decay; betas outside [0, 1); ``stabilize < 1``).

    References:
      Bécigneul & Ganea, `Riemannian Adaptive Optimization Methods <https://arxiv.org/abs/1810.00760>`_,
      ICLR 2019: Riemannian Adam and AMSGrad.
      Kochurov, Karimov & Kozlukov, `Geoopt: Riemannian Optimization in PyTorch
      <https://arxiv.org/abs/2005.02819>`_, 2020 (geoopt 0.5.1's ``RiemannianAdam``, followed step for step).
      Kingma & Ba, `Adam: A Method for Stochastic Optimization <https://arxiv.org/abs/1412.6980>`_,
      ICLR 2015.
    """
    if not callable(learning_rate) and learning_rate < 0.0:
        raise ValueError(f"Invalid learning rate: {learning_rate}")
    if eps < 0.0:
        raise ValueError(f"Invalid epsilon value: {eps}")
    if not 0.0 <= b1 < 1.0:
        raise ValueError(f"Invalid beta parameter at index 0: {b1}")
    if not 0.0 <= b2 < 1.0:
        raise ValueError(f"Invalid beta parameter at index 1: {b2}")
    if weight_decay < 0.0:
        raise ValueError(f"Invalid weight_decay value: {weight_decay}")
    _check_stabilize(stabilize)

    def init_fn(params):
        labels = _init_labels(params, manifolds)
        plain = _strip_variables(params)
        x_leaves, params_def = jax.tree.flatten(plain)

        def second_moment(label, x):  # one entry per point on the ball, per element otherwise
            return jnp.zeros_like(x) if label is None else jnp.zeros(jnp.shape(x)[:-1] + (1,), jnp.result_type(x))

        nu = params_def.unflatten([second_moment(label, x) for label, x in zip(labels, x_leaves)])
        return RiemannianAdamState(
            count=jnp.zeros([], jnp.int32),
            mu=jax.tree.map(jnp.zeros_like, plain),
            nu=nu,
            nu_max=jax.tree.map(jnp.zeros_like, nu) if amsgrad else (),
            manifolds=labels,
        )

    def update_fn(grads, state, params=None, *, manifolds=None, **extra_args):
        del extra_args
        x_leaves, g_leaves, labels, params_def, grads_def = _prepare(grads, state, params, manifolds)
        lr = _learning_rate(learning_rate, state.count)
        count = optax.safe_increment(state.count)
        stabilize_now = _stabilize_now(stabilize, count)
        mus = params_def.flatten_up_to(state.mu)
        nus = params_def.flatten_up_to(state.nu)
        nu_maxes = params_def.flatten_up_to(state.nu_max) if amsgrad else [None] * len(x_leaves)
        new_mu, new_nu, new_nu_max, updates = [], [], [], []
        for label, x, g, mu, nu, nu_max in zip(labels, x_leaves, g_leaves, mus, nus, nu_maxes):
            if weight_decay:
                g = g + _as_dtype(weight_decay, x) * x
            r = _egrad2rgrad(label, x, g)
            mu = _as_dtype(b1, x) * mu + _as_dtype(1.0 - b1, x) * r
            nu = _as_dtype(b2, x) * nu + _as_dtype(1.0 - b2, x) * _component_inner(label, x, r)
            if amsgrad:
                nu_max = jnp.maximum(nu_max, nu)
                second = nu_max
            else:
                second = nu
            denom = jnp.sqrt(second / _bias_correction(b2, count, x)) + _as_dtype(eps, x)
            direction = (mu / _bias_correction(b1, count, x)) / denom
            update, mu = _move(label, x, -_as_dtype(lr, x) * direction, mu, exact, stabilize_now)
            new_mu.append(mu)
            new_nu.append(nu)
            new_nu_max.append(nu_max)
            updates.append(update)
        new_state = RiemannianAdamState(
            count=count,
            mu=params_def.unflatten(new_mu),
            nu=params_def.unflatten(new_nu),
            nu_max=params_def.unflatten(new_nu_max) if amsgrad else (),
            manifolds=state.manifolds,
        )
        return grads_def.unflatten(updates), new_state

    return optax.GradientTransformationExtraArgs(init_fn, update_fn)


def from_config(config: OptimizerConfig, *, learning_rate: ScalarOrSchedule | None = None,
                manifolds: Any = None) -> optax.GradientTransformationExtraArgs:
    """``riemannian_sgd`` or ``riemannian_adam`` with the options of an ``OptimizerConfig``.

    Args:
      config: ``name`` ("sgd" or "adam") and the options of the two functions above.
      learning_rate: replaces ``config.learning_rate`` when given (e.g. an optax schedule).
      manifolds: labels, as in ``riemannian_sgd`` (None reads ``BallParam`` variables).

    Returns:
      The ``optax.GradientTransformationExtraArgs`` of ``riemannian_sgd`` or ``riemannian_adam``.

    Raises:
      ValueError: for an unknown ``config.name`` or invalid options.
    """
    lr = config.learning_rate if learning_rate is None else learning_rate
    if config.name == "sgd":
        return riemannian_sgd(lr, momentum=config.momentum, dampening=config.dampening,
                              weight_decay=config.weight_decay, nesterov=config.nesterov,
                              stabilize=config.stabilize, exact=config.exact, manifolds=manifolds)
    if config.name == "adam":
        return riemannian_adam(lr, b1=config.b1, b2=config.b2, eps=config.eps, weight_decay=config.weight_decay,
                               amsgrad=config.amsgrad, stabilize=config.stabilize, exact=config.exact,
                               manifolds=manifolds)
    raise ValueError(f"unknown optimizer {config.name!r}: expected 'adam' or 'sgd'")


# ----------------------------------------------------------------------------- applying the updates


def apply_updates(params: optax.Params, updates: optax.Updates) -> optax.Params:
    """``params`` moved by the ``updates`` of ``riemannian_sgd`` / ``riemannian_adam``.

    A ball leaf's update is ``BallUpdate(y)``: the new point ``y`` (already retracted, or moved by
    the exponential map) replaces the parameter. Any other update is added, as in
    ``optax.apply_updates``, which this generalises (it refuses a ``BallUpdate`` rather than add it).

    Args:
      params: the parameters (plain pytree of arrays; None leaves allowed).
      updates: the updates, same structure.

    Returns:
      The new parameters, each in its parameter's dtype; None leaves stay None.
    """

    def apply(p, u):
        if p is None:
            return None
        if isinstance(u, BallUpdate):
            return jnp.asarray(u.point).astype(jnp.result_type(p))
        return jnp.asarray(p + u).astype(jnp.result_type(p))

    return jax.tree.map(apply, params, updates, is_leaf=lambda x: x is None)


class RiemannianOptimizer(nnx.Optimizer):
    """``nnx.Optimizer`` for ``riemannian_sgd`` / ``riemannian_adam``: ball parameters are the model's ``BallParam``s.

    ``init`` reads the labels from the variable types (a ``BallParam`` is on the ball of its ``c``,
    every other ``wrt`` variable Euclidean), and ``update`` applies the updates with
    ``apply_updates``, so a ball parameter is replaced by its new point::

        optimizer = RiemannianOptimizer(model, riemannian_adam(1e-3), wrt=nnx.Param)
        optimizer.update(model, grads)

    Args:
      model: the NNX module whose ``wrt`` variables are optimized.
      tx: a transformation of this module (built with ``manifolds=None``).
      wrt: the variable filter, as in ``nnx.Optimizer``.
      graph: as in ``nnx.Optimizer``.
    """

    def __init__(self, model, tx: optax.GradientTransformation, *, wrt: Any = nnx.Param, graph: bool | None = None):
        super().__init__(model, tx, wrt=wrt, graph=graph)

    def update(self, model, grads, /, **kwargs):
        param_arrays = nnx.as_pure(nnx.state(model, self.wrt, graph=self.graph))
        grad_arrays = nnx.as_pure(nnx.state(grads, self.wrt, graph=self.graph))
        opt_state_arrays = nnx.as_pure(self.opt_state)
        kwargs_arrays = nnx.as_pure(kwargs)
        updates, new_opt_state = self.tx.update(grad_arrays, opt_state_arrays, param_arrays, **kwargs_arrays)
        nnx.update(model, apply_updates(param_arrays, updates))
        nnx.update(self.opt_state, nnx.state(new_opt_state, graph=self.graph))
        self.step[...] += 1
        return updates
