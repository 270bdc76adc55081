"""`poincare-parity ops` on a reduced grid, plus the JAX-side guarantees the suite relies on.

- the parity suite (values and VJPs against geoopt, with the mpmath oracle) on dimension 3 with
  leading axes (2, 3) and c in {1e-3, 1, 10}; the full grid is `poincare-parity ops --dtype both`
  (acceptance);
- the suite can fail: a JAX function off by 1e-7 in c, and one with geoopt's float32 artanh (which
  agrees with geoopt but not with the truth), each fail their row;
- finite values and gradients at x = 0, x = y, c = 1e-3 and at the boundary, float64 and float32;
- jit, vmap and leading axes give the same numbers as point-by-point calls;
- `c` as a float, a 0-d array or a per-point array, differentiable;
- float32 use with x64 off (a fresh interpreter: conftest switches x64 on here).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jax_impl import poincare as pm
from parity.suites import ops

TEST_GRID = dict(dims=(3,), lead_shapes={3: (2, 3)}, c_values=(1e-3, 1.0, 10.0), oracle_points=2)
# geoopt rows the oracle must flag on this grid (float32 artanh at the norm clamp; matvec's zero test)
KNOWN_GEOOPT_DEVIATIONS = {
    ("logmap0", "zero", "float32"),
    ("logmap0", "origin", "float32"),
    ("mobius_matvec", "zero", "float64"),
    ("dist", "identical", "float64"),
}


@pytest.fixture(scope="module")
def suite_records():
    rows = {}
    for dtype in ("float64", "float32"):
        for name, spec in ops.SPECS.items():
            for regime in spec.regimes():
                # eager JAX here (no compile per function and shape); the CLI test below runs jitted
                rows[name, regime, dtype] = ops.check_row(spec, regime, dtype, jit=False, **TEST_GRID)
    return rows


def test_every_row_passes_on_the_reduced_grid(suite_records):
    failed = {key: (r.max_rel_err, r.extra["worst"], r.note) for key, r in suite_records.items() if not r.passed}
    assert not failed, failed
    assert len(suite_records) == 2 * sum(len(s.regimes()) for s in ops.SPECS.values())


def test_jax_side_is_never_nonfinite(suite_records):
    assert all(r.nonfinite_jax == 0 for r in suite_records.values())


def test_known_geoopt_deviations_are_flagged_not_hidden(suite_records):
    for key in KNOWN_GEOOPT_DEVIATIONS:
        row = suite_records[key]
        assert row.extra["reference_wrong"], key
        assert row.extra["oracle_rel_err_ref"] > row.tolerance, key
        assert row.extra["oracle_rel_err_jax"] <= row.tolerance, key


def test_float32_rows_carry_the_oracle(suite_records):
    for (name, regime, dtype), row in suite_records.items():
        if dtype == "float32":
            assert row.extra["oracle"] and row.extra["oracle_points"] > 0, (name, regime)
            assert row.extra["closer"] in ("jax", "geoopt", "tie")


def test_a_jax_function_off_by_a_little_fails_its_row(monkeypatch):
    """dist computed with c * (1 + 1e-7): parity fails, the oracle sides with geoopt, the row fails."""
    exact_dist = pm.dist
    monkeypatch.setattr(pm, "dist", lambda x, y, *, c: exact_dist(x, y, c=c * (1 + 1e-7)))
    row = ops.check_row(ops.SPECS["dist"], "bulk", "float64", **TEST_GRID)  # the suite reads pm.dist at check time
    assert not row.passed and not row.extra["reference_wrong"]
    assert row.extra["oracle_rel_err_jax"] > row.tolerance >= row.extra["oracle_rel_err_ref"]


def test_a_jax_function_wrong_like_geoopt_fails_its_row(monkeypatch):
    """logmap0 with geoopt's float32 artanh ((log(1+x) - log(1-x))/2): parity holds, the oracle fails it."""
    def geoopt_like_logmap0(y, *, c):
        y = jnp.asarray(y)
        c = jnp.asarray(c, y.dtype)
        n = jnp.sqrt(jnp.maximum(jnp.sum(y * y, -1, keepdims=True), 1e-30))
        t = jnp.clip(n * jnp.sqrt(c + 1e-15), -1 + 1e-7, 1 - 1e-7)
        return y / n * 0.5 * (jnp.log(1 + t) - jnp.log(1 - t)) / jnp.sqrt(c + 1e-15)

    monkeypatch.setattr(pm, "logmap0", geoopt_like_logmap0)
    row = ops.check_row(ops.SPECS["logmap0"], "origin", "float32", **TEST_GRID)
    assert not row.passed
    assert row.max_rel_err <= row.tolerance  # it does compute what geoopt computes
    assert row.extra["oracle_rel_err_jax"] > row.tolerance


def test_cli_writes_json_and_rejects_unknown_names(tmp_path, capsys):
    from parity.cli import main

    out = tmp_path / "ops.json"
    code = main(["ops", "--quick", "--functions", "dist,transp0", "--regimes", "bulk,identical",
                 "--dtype", "float64", "--json", str(out)])
    assert code == 0
    payload = json.loads(out.read_text())
    rows = {(r["function"], r["regime"]) for r in payload["records"]}
    assert rows == {("dist", "bulk"), ("dist", "identical"), ("transp0", "bulk")}
    for r in payload["records"]:
        assert {"check", "dtype", "max_abs_err", "max_rel_err", "tolerance", "passed", "regime"} <= set(r)
    assert main(["ops", "--functions", "nope"]) == 2
    assert "unknown function" in capsys.readouterr().err


# ----------------------------------------------------------------------------- JAX side


def _inputs(spec: ops.OpSpec, kind_values: dict[str, np.ndarray], dim: int, rng) -> tuple:
    args = []
    for _, kind in spec.args:
        if kind == "scalar":
            args.append(rng.uniform(-2, 2, kind_values["point"].shape[:-1] + (1,)))
        elif kind == "matrix":
            args.append(rng.standard_normal((3, dim)) / np.sqrt(dim))
        else:
            args.append(kind_values["tangent" if kind == "tangent" else "point"])
    return tuple(args)


def _special_batch(spec: ops.OpSpec, dtype: str, c: float) -> tuple:
    """One batch whose rows are the places where naive code produces NaN or Inf: zero vectors, vectors
    of norm 1e-20, x = y (every point argument equal), points at and beyond the projection radius."""
    rng = np.random.default_rng(0)
    dim, n = 5, 4
    direction = rng.standard_normal((n, dim))
    direction /= np.linalg.norm(direction, axis=-1, keepdims=True)
    max_norm = (1 - pm.ball_eps(dtype)) / np.sqrt(c)
    bulk = direction * 0.5 / np.sqrt(c)
    blocks = [  # (points, tangents, tie the point arguments)
        (np.zeros((n, dim)), np.zeros((n, dim)), False),
        (direction * 1e-20, direction * 1e-20, False),
        (bulk, bulk, True),
        (direction * max_norm, bulk, False),
        (direction * max_norm, bulk, True),
        (direction * max_norm * 1.001, bulk * 5, False),
    ]
    per_arg = {arg: [] for arg in spec.arg_names}
    for points_, tangents, tie in blocks:
        other = np.roll(points_, 1, axis=0) * (0 if tie else 1) + points_ * (1 if tie else 0)
        seen_point = False
        for arg, kind in spec.args:
            if kind in ("point", "free"):
                per_arg[arg].append(other if seen_point else points_)
                seen_point = True
            elif kind == "tangent":
                per_arg[arg].append(tangents)
            elif kind == "scalar":
                per_arg[arg].append(rng.uniform(-2, 2, (n, 1)))
    args = []
    for arg, kind in spec.args:
        if kind == "matrix":
            args.append(jnp.asarray(rng.standard_normal((3, dim)) / np.sqrt(dim), dtype=dtype))
        else:
            args.append(jnp.asarray(np.concatenate(per_arg[arg]), dtype=dtype))
    return tuple(args)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_values_and_gradients_are_finite_at_special_points(dtype):
    for c in (1e-3, 1.0, 10.0):
        for name, spec in ops.SPECS.items():
            fn = getattr(pm, name)
            args = _special_batch(spec, dtype, c)
            cc = jnp.asarray(c, dtype=dtype)
            out, pullback = jax.vjp(lambda a, cc, fn=fn: fn(*a, c=cc), args, cc)
            grads = pullback(jax.tree.map(jnp.ones_like, out))
            for leaf in jax.tree.leaves((out, grads)):
                assert leaf.dtype == jnp.dtype(dtype), name
                assert bool(jnp.all(jnp.isfinite(leaf))), (name, dtype, c)


def test_x_equals_y_has_zero_subgradient_and_exact_values():
    x = np.random.default_rng(2).standard_normal((3, 4)) * 0.3
    d, (gx, gy) = jax.value_and_grad(lambda x, y: pm.dist(x, y, c=1.0).sum(), argnums=(0, 1))(x, x)
    assert d == 0.0 and np.all(np.asarray(gx) == 0) and np.all(np.asarray(gy) == 0)
    assert np.all(np.asarray(pm.logmap(x, x, c=1.0)) == 0)
    v = np.ones_like(x)
    assert np.all(np.asarray(pm.transp(x, x, v, c=1.0)) == v)
    # the derivative of transp(x, x, v) in c is exactly 0 (geoopt: rounding noise)
    assert jax.grad(lambda c: pm.transp(x, x, v, c=c).sum())(1.0) == 0.0


@pytest.mark.parametrize("name", sorted(ops.SPECS))
def test_jit_vmap_and_leading_axes_agree_with_pointwise_calls(name):
    spec = ops.SPECS[name]
    rng = np.random.default_rng(3)
    lead, dim, c = (2, 3), 4, 0.7
    values = {"point": rng.standard_normal((*lead, dim)) * 0.2, "tangent": rng.standard_normal((*lead, dim))}
    args = _inputs(spec, values, dim, rng)
    fn = getattr(pm, name)
    batched = fn(*args, c=c)
    jitted = jax.jit(lambda *a: fn(*a, c=c))(*args)
    shared = tuple(k == "matrix" for _, k in spec.args)
    flat = tuple(a if s else a.reshape(-1, a.shape[-1]) for a, s in zip(args, shared))
    mapped = jax.vmap(lambda *a: fn(*a, c=c), in_axes=tuple(None if s else 0 for s in shared))(*flat)
    for i, j in np.ndindex(*lead):
        point = fn(*(a if s else a[i, j] for a, s in zip(args, shared)), c=c)
        for b, p in zip(jax.tree.leaves(batched), jax.tree.leaves(point)):
            np.testing.assert_allclose(np.asarray(b)[i, j], np.asarray(p), rtol=1e-13, atol=1e-15)
    for b, jt, m in zip(jax.tree.leaves(batched), jax.tree.leaves(jitted), jax.tree.leaves(mapped)):
        np.testing.assert_allclose(np.asarray(jt), np.asarray(b), rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(np.asarray(m).reshape(np.shape(b)), np.asarray(b), rtol=1e-12, atol=1e-14)


def test_curvature_as_float_scalar_array_or_per_point_array_and_its_gradient():
    rng = np.random.default_rng(4)
    x, y = rng.standard_normal((2, 5, 3)) * 0.3
    c = 1.3
    ref = pm.dist(x, y, c=c)
    np.testing.assert_allclose(pm.dist(x, y, c=jnp.asarray(c)), ref, rtol=1e-15)
    np.testing.assert_allclose(pm.dist(x, y, c=jnp.full((5, 1), c)), ref, rtol=1e-15)
    grad = jax.grad(lambda c: pm.dist(x, y, c=c).sum())(c)
    h = 1e-6
    fd = (pm.dist(x, y, c=c + h).sum() - pm.dist(x, y, c=c - h).sum()) / (2 * h)
    np.testing.assert_allclose(grad, fd, rtol=1e-7)
    per_point = jax.grad(lambda c: pm.dist(x, y, c=c).sum())(jnp.full((5, 1), c))
    np.testing.assert_allclose(per_point.sum(), grad, rtol=1e-12)


@pytest.mark.slow  # long on 2 cores; `pytest -m slow` and CI run it
def test_float32_with_x64_off_in_a_fresh_interpreter():
    script = textwrap.dedent("""
        import jax, jax.numpy as jnp, numpy as np
        assert not jax.config.jax_enable_x64
        from jax_impl import poincare as pm
        rng = np.random.default_rng(0)
        x = jnp.asarray(rng.standard_normal((4, 6)) * 0.2, jnp.float32)
        y = jnp.asarray(rng.standard_normal((4, 6)) * 0.2, jnp.float32)
        m = jnp.asarray(rng.standard_normal((3, 6)), jnp.float32)
        for c in (1.0, jnp.float32(0.5), np.float64(2.0), jnp.full((4, 1), 0.1, jnp.float32)):
            outs = [pm.mobius_add(x, y, c=c), pm.mobius_scalar_mul(0.5, x, c=c), pm.mobius_matvec(m, x, c=c),
                    pm.expmap(x, y, c=c), pm.expmap0(y, c=c), pm.logmap(x, y, c=c), pm.logmap0(y, c=c),
                    pm.dist(x, y, c=c), pm.dist0(x, c=c), pm.transp(x, y, x, c=c), pm.transp0(y, x, c=c),
                    pm.gyration(x, y, x, c=c), pm.lambda_x(x, c=c), pm.inner(x, y, y, c=c), pm.norm(x, y, c=c),
                    pm.egrad2rgrad(x, y, c=c), pm.project(x * 100, c=c), pm.retr(x, y, c=c),
                    *pm.retr_transp(x, y, x, c=c), *pm.expmap_transp(x, y, x, c=c)]
            for o in outs:
                assert o.dtype == jnp.float32, o.dtype
                assert bool(jnp.all(jnp.isfinite(o)))
        g = jax.jit(jax.grad(lambda x, c: pm.dist(x, jnp.zeros_like(x), c=c).sum(), argnums=(0, 1)))(x * 0, 1.0)
        assert g[0].dtype == jnp.float32 and bool(jnp.all(g[0] == 0)) and bool(jnp.isfinite(g[1]))
        # the float32 projection margin is geoopt's 4e-3
        r = pm.project(jnp.ones((1, 2), jnp.float32) * 10, c=1.0)
        assert abs(float(jnp.linalg.norm(r)) - (1 - 4e-3)) < 1e-6
        print("ok")
    """)
    env = {k: v for k, v in os.environ.items() if k != "JAX_ENABLE_X64"}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith("ok")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_the_projection_margin_stated_once_is_geoopts(dtype):
    """parity.config.PROJECTION_EPS (read by both sides) against the margin geoopt's projection applies."""
    import torch
    from geoopt.manifolds.stereographic import math as gmath

    from parity.config import PROJECTION_EPS

    c = 2.0
    far = torch.full((1, 4), 10.0, dtype=getattr(torch, dtype))
    radius = float(gmath.project(far, k=torch.tensor(-c, dtype=far.dtype)).norm()) * np.sqrt(c)
    assert 1.0 - radius == pytest.approx(PROJECTION_EPS[dtype], rel=1e-3 if dtype == "float32" else 1e-9)
    assert pm.ball_eps(dtype) == PROJECTION_EPS[dtype]
