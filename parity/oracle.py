"""The exact oracle of the Poincaré-ball functions: the formulas of the contract, with geoopt's clamps
and projection margin, evaluated in mpmath at 130 digits on the very inputs both sides got (after rounding
to the dtype under check), gradients by central differences with step 1e-40.

`exact_oracle` is the third arm of `poincare-parity ops` (`parity.suites.ops`): on the entries where the
two sides disagree most and on random ones, it says how far each side is from the truth, so that a row
where geoopt itself is wrong (its float32 artanh near 0, its mobius_matvec zero test, cancellation in
Möbius addition) passes only if JAX is right. `spec` is a suite `OpSpec` (name, args, kinds, outputs).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np

from parity.checks.function import value_key
from parity.compare import Comparison, Tolerance, compare, merge
from parity.config import PROJECTION_EPS
from parity.stats import largest_finite

SHARED_KEYS = ("grad.m",)  # gradient of an input shared by the whole batch

# Norms of small differences come from a Gram-matrix expansion (|a - b|^2 = |a|^2 - 2<a, b> + |b|^2),
# which loses the digits it cancels: at 130 digits a norm of 1e-40 (an FD step) is still good to
# 1e-47. The central difference with step 1e-40 has truncation error ~1e-80 relative where the
# function is smooth, and ~1e-40 at a cone (dist at x = y), far below every floor (1e-30).
ORACLE_DPS = 130
FD_STEP = 1e-40


class _Gram:
    """Exact inner products of named base vectors (per vector space), for the oracle."""

    def __init__(self, vectors: dict[str, list], space: dict[str, str]):
        import mpmath as mp

        self.vectors = vectors
        self.space = space
        names = list(vectors)
        self.G: dict[tuple[str, str], Any] = {}
        for i, a in enumerate(names):
            for b in names[i:]:
                if space[a] == space[b]:
                    self.G[(a, b)] = self.G[(b, a)] = mp.fdot(vectors[a], vectors[b])

    def perturbed(self, base: str, delta_vector: dict[str, Any], delta_sq: Any) -> _Gram:
        """Copy with ``base += delta`` where ``<delta, w>`` for each w is given and ``|delta|^2`` too."""
        other = object.__new__(_Gram)
        other.vectors, other.space, other.G = self.vectors, self.space, dict(self.G)
        for w, d_w in delta_vector.items():
            if w == base:
                continue
            other.G[(base, w)] = other.G[(w, base)] = self.G[(base, w)] + d_w
        other.G[(base, base)] = self.G[(base, base)] + 2 * delta_vector[base] + delta_sq
        return other


class _Lin:
    """A vector held as a linear combination of named base vectors (exact, in mpmath)."""

    __slots__ = ("gram", "terms")

    def __init__(self, gram: _Gram, terms: dict[str, Any]):
        self.gram = gram
        self.terms = terms

    def __add__(self, other: _Lin) -> _Lin:
        terms = dict(self.terms)
        for k, v in other.terms.items():
            terms[k] = terms.get(k, 0) + v
        return _Lin(self.gram, terms)

    def __neg__(self) -> _Lin:
        return _Lin(self.gram, {k: -v for k, v in self.terms.items()})

    def __sub__(self, other: _Lin) -> _Lin:
        return self + (-other)

    def __mul__(self, s: Any) -> _Lin:
        return _Lin(self.gram, {k: v * s for k, v in self.terms.items()})

    __rmul__ = __mul__

    def __truediv__(self, s: Any) -> _Lin:
        return _Lin(self.gram, {k: v / s for k, v in self.terms.items()})

    def dot(self, other: _Lin) -> Any:
        import mpmath as mp

        G = self.gram.G
        return mp.fsum(a * b * G[(i, j)] for i, a in self.terms.items() for j, b in other.terms.items())

    def materialize(self) -> list:
        import mpmath as mp

        vecs = self.gram.vectors
        items = list(self.terms.items())
        n = len(vecs[items[0][0]])
        return [mp.fsum(coef * vecs[k][i] for k, coef in items) for i in range(n)]


def mp_formulas(eps: float) -> dict[str, Callable]:
    """The contract's formulas in exact arithmetic with geoopt's clamps and projection margin ``eps``."""
    import mpmath as mp

    min_norm = mp.mpf("1e-15")
    artanh_limit = 1 - mp.mpf("1e-7")

    def sqrt_c(c):
        return mp.sqrt(abs(c) + min_norm)

    def clip(t, lo, hi):
        return min(max(t, lo), hi)

    def tan_c(t, c):
        s = sqrt_c(c)
        return mp.tanh(clip(t * s, -15, 15)) / s

    def artan_c(t, c):
        s = sqrt_c(c)
        return mp.atanh(clip(t * s, -artanh_limit, artanh_limit)) / s

    def sq(v):
        return max(v.dot(v), 0)  # a Gram-matrix expansion of |v|^2 may round to -1e-80 at v = 0

    def clamped_norm(v):
        return max(mp.sqrt(sq(v)), min_norm)

    def plain_norm(v):
        return mp.sqrt(sq(v))

    def lam(x, c):
        return 2 / max(1 - c * sq(x), min_norm)

    def madd(x, y, c):
        x2, y2, xy = sq(x), sq(y), x.dot(y)
        num = x * (1 + 2 * c * xy + c * y2) + y * (1 - c * x2)
        return num / max(1 + 2 * c * xy + c * c * x2 * y2, min_norm)

    def proj(x, c):
        n = clamped_norm(x)
        max_norm = (1 - mp.mpf(eps)) / sqrt_c(c)
        return x * (max_norm / n) if n > max_norm else x

    def expmap_raw(x, u, c):
        un = clamped_norm(u)
        return madd(x, u * (tan_c(lam(x, c) / 2 * un, c) / un), c)

    def gyr(a, b, u, c):
        k = -c
        k2 = k * k
        a2, b2, ab, au, bu = sq(a), sq(b), a.dot(b), a.dot(u), b.dot(u)
        coef_a = -k2 * au * b2 - k * bu + 2 * k2 * ab * bu
        coef_b = -k2 * bu * a2 + k * au
        d = 1 - 2 * k * ab + k2 * a2 * b2
        return u + (a * coef_a + b * coef_b) * (2 / max(d, min_norm))

    def transp(x, y, v, c):
        return gyr(y, -x, v, c) * (lam(x, c) / lam(y, c))

    def smul(r, x, c):
        n = clamped_norm(x)
        return x * (tan_c(r * artan_c(n, c), c) / n)

    def matvec(x, mx, c):
        xn, mxn = clamped_norm(x), clamped_norm(mx)
        return mx * (tan_c(mxn / xn * artan_c(xn, c), c) / mxn)

    def logmap(x, y, c):
        sub = madd(-x, y, c)
        sn = clamped_norm(sub)
        return sub * (2 * artan_c(sn, c) / (lam(x, c) * sn))

    return {
        "mobius_add": lambda x, y, c: proj(madd(x, y, c), c),
        "mobius_scalar_mul": lambda r, x, c: proj(smul(r, x, c), c),
        "mobius_matvec": lambda x, mx, c: proj(matvec(x, mx, c), c),
        "expmap": lambda x, u, c: proj(expmap_raw(x, u, c), c),
        "expmap0": lambda u, c: proj(u * (tan_c(clamped_norm(u), c) / clamped_norm(u)), c),
        "logmap": logmap,
        "logmap0": lambda y, c: y * (artan_c(clamped_norm(y), c) / clamped_norm(y)),
        "dist": lambda x, y, c: 2 * artan_c(plain_norm(madd(-x, y, c)), c),
        "dist0": lambda x, c: 2 * artan_c(plain_norm(x), c),
        "transp": transp,
        "transp0": lambda y, v, c: v * max(1 - c * sq(y), min_norm),
        "gyration": gyr,
        "lambda_x": lambda x, c: lam(x, c),
        "inner": lambda x, u, v, c: lam(x, c) ** 2 * u.dot(v),
        "norm": lambda x, u, c: lam(x, c) * plain_norm(u),
        "egrad2rgrad": lambda x, g, c: g * (1 / lam(x, c) ** 2),
        "project": proj,
        "retr": lambda x, u, c: proj(x + u, c),
        "retr_transp": lambda x, u, v, c: (lambda y: (y, transp(x, y, v, c)))(proj(x + u, c)),
        "expmap_transp": lambda x, u, v, c: (lambda y: (y, transp(x, y, v, c)))(proj(expmap_raw(x, u, c), c)),
    }


class OraclePoint:
    """The oracle at one batch point of one case and one c: value, and <cot, f> for finite differences."""

    def __init__(self, spec: Any, case: Any, ci: int, index: tuple[int, ...], formulas: dict[str, Callable]):
        import mpmath as mp

        self.spec, self.formula = spec, formulas[spec.name]
        self.c = mp.mpf(float(case.c[ci][index][0]))
        self.scalars: dict[str, Any] = {}
        vectors: dict[str, list] = {}
        space: dict[str, str] = {}
        for arg in spec.arg_names:
            kind = spec.kind(arg)
            if kind == "scalar":
                self.scalars[arg] = mp.mpf(float(case.args[arg][ci][index][0]))
            elif kind != "matrix":
                vectors[arg] = [mp.mpf(float(t)) for t in case.args[arg][ci][index]]
                space[arg] = "in"
        if spec.name == "mobius_matvec":
            self.m = case.args["m"][ci].astype(np.float64)
            vectors["mx"] = [mp.fdot([mp.mpf(float(t)) for t in row], vectors["x"]) for row in self.m]
            space["mx"] = "out"
        self.cot_names = []
        for i, cot in enumerate(case.cot):
            name = f"cot{i}"
            vectors[name] = [mp.mpf(float(t)) for t in cot[ci][index]]
            space[name] = "out" if spec.name == "mobius_matvec" else ("scalar" if spec.scalar_output else "in")
            self.cot_names.append(name)
        self.gram = _Gram(vectors, space)

    def _call(self, gram: _Gram, c: Any, scalars: dict[str, Any]):
        args = []
        for arg in self.spec.arg_names:
            kind = self.spec.kind(arg)
            if kind == "scalar":
                args.append(scalars[arg])
            elif kind == "matrix":
                continue
            else:
                args.append(_Lin(gram, {arg: 1}))
        if self.spec.name == "mobius_matvec":
            args.append(_Lin(gram, {"mx": 1}))
        out = self.formula(*args, c)
        return out if isinstance(out, tuple) else (out,)

    def value(self) -> list[np.ndarray]:
        outs = self._call(self.gram, self.c, self.scalars)
        return [np.array([float(o)]) if not isinstance(o, _Lin) else np.array([float(t) for t in o.materialize()])
                for o in outs]

    def _phi(self, gram: _Gram, c: Any, scalars: dict[str, Any]) -> Any:
        """<cotangent, f(args)>: what a VJP differentiates."""
        total = 0
        for out, cot in zip(self._call(gram, c, scalars), self.cot_names):
            if isinstance(out, _Lin):
                total += out.dot(_Lin(gram, {cot: 1}))
            else:
                total += out * gram.vectors[cot][0]
        return total

    def _fd(self, evaluate: Callable[[Any], Any], theta: Any) -> float:
        h = FD_STEP * max(1, abs(theta))
        return float((evaluate(h) - evaluate(-h)) / (2 * h))

    def grad_c(self) -> float:
        return self._fd(lambda h: self._phi(self.gram, self.c + h, self.scalars), self.c)

    def grad_scalar(self, arg: str) -> float:
        return self._fd(lambda h: self._phi(self.gram, self.c, {**self.scalars, arg: self.scalars[arg] + h}),
                        self.scalars[arg])

    def grad_vector(self, arg: str, j: int) -> float:
        """d<cot, f>/d arg[j]: perturb one coordinate; the Gram changes by O(#bases) terms."""
        import mpmath as mp

        vecs = self.gram.vectors

        def evaluate(h):
            delta = {w: h * vecs[w][j] for w in vecs if self.gram.space[w] == self.gram.space[arg]}
            gram = self.gram.perturbed(arg, delta, h * h)
            if self.spec.name == "mobius_matvec" and arg == "x":
                # mx moves by h * m[:, j]
                col = [mp.mpf(float(t)) for t in self.m[:, j]]
                d_mx = {w: h * mp.fdot(col, vecs[w]) for w in vecs if self.gram.space[w] == "out"}
                gram = gram.perturbed("mx", d_mx, h * h * mp.fdot(col, col))
            return self._phi(gram, self.c, self.scalars)

        return self._fd(evaluate, vecs[arg][j])

    def grad_matrix_entry(self, i: int, j: int) -> float:
        """d<cot, f>/d m[i, j]: mx[i] moves by h * x[j]."""
        vecs = self.gram.vectors
        xj = vecs["x"][j]

        def evaluate(h):
            delta = {w: h * xj * vecs[w][i] for w in vecs if self.gram.space[w] == "out"}
            return self._phi(self.gram.perturbed("mx", delta, (h * xj) ** 2), self.c, self.scalars)

        return self._fd(evaluate, float(self.m[i, j]))


def _rel_errors(got: np.ndarray, ref: np.ndarray, tol: Tolerance) -> np.ndarray:
    """Elementwise version of `parity.compare.compare`'s measure (to locate the worst entries); inf where non-finite."""
    got = got.astype(np.float64)
    ref = ref.astype(np.float64)
    rel = np.abs(got - ref) / np.maximum(np.abs(ref), tol.atol / tol.rtol)
    return np.where(np.isfinite(got) & np.isfinite(ref), rel, np.inf)


@dataclasses.dataclass
class Sides:
    case: Any  # the suite's case: args, c, c_values, cot, dim, label
    jax: dict[str, np.ndarray]
    ref: dict[str, np.ndarray]


def exact_oracle(spec: Any, dtype: str, sides: list[Sides], tols: dict[tuple[str, int, int], Tolerance],
                 mags: dict[tuple[str, int, int], tuple[float, float]], floor: Callable[[float], Tolerance],
                 rng: np.random.Generator, max_points: int) -> tuple[Comparison, Comparison, int, str, str]:
    """Oracle errors of (jax, geoopt) on the worst-disagreeing entries and on random ones.

    ``tols[key, case, c]`` (the parity floors) only locate the worst disagreements; ``floor(magnitude)``
    is the row's rule with its absolute floor scaled to a magnitude. The oracle
    comparisons take as magnitude the larger of the oracle's own (on its sample) and the smaller of
    the two sides' (on the whole array): neither side can loosen its own judgement.
    """
    import mpmath as mp

    formulas = mp_formulas(PROJECTION_EPS[dtype])
    keys = list(sides[0].jax)
    # (case, c) combinations: where each output disagrees most, plus one random small one
    combos: list[tuple[int, int]] = []
    worst_at: dict[tuple[int, int], dict[str, tuple]] = {}
    for key in keys:
        best = (-1.0, None)
        for si, s in enumerate(sides):
            for ci in range(len(s.case.c_values)):
                rel = _rel_errors(s.jax[key][ci], s.ref[key][ci], tols[key, si, ci])
                if rel.size and np.nanmax(rel) > best[0]:
                    best = (float(np.nanmax(rel)), (si, ci, np.unravel_index(int(np.argmax(rel)), rel.shape)))
        if best[1] is not None:
            si, ci, where = best[1]
            worst_at.setdefault((si, ci), {})[key] = where
            if (si, ci) not in combos:
                combos.append((si, ci))
    small = [si for si, s in enumerate(sides) if s.case.dim <= 16] or list(range(len(sides)))
    random_combo = (int(rng.choice(small)), int(rng.integers(len(sides[0].case.c_values))))
    if random_combo not in combos:
        combos.append(random_combo)

    entries: dict[tuple[str, int, int], list[tuple[float, float, float]]] = {}
    n_points = 0

    def record(key: str, si: int, ci: int, index: tuple, value: float) -> None:
        s = sides[si]
        group = entries.setdefault((key, si, ci), [])
        group.append((float(s.jax[key][ci][index]), float(s.ref[key][ci][index]), value))

    with mp.workdps(ORACLE_DPS):
        for si, ci in combos:
            s = sides[si]
            case = s.case
            lead = case.args[spec.vector_args[0]].shape[1:-1]
            all_points = list(np.ndindex(*lead))
            worst = worst_at.get((si, ci), {})
            chosen = []
            for key, where in worst.items():
                if key not in SHARED_KEYS:  # per-point outputs: the index starts with the batch point
                    point = tuple(int(t) for t in where[:len(lead)])
                    if point not in chosen:
                        chosen.append(point)
            for point in rng.permutation(len(all_points))[:max_points]:
                if len(chosen) >= max_points:
                    break
                if all_points[point] not in chosen:
                    chosen.append(all_points[point])
            oracles = {p: OraclePoint(spec, case, ci, p, formulas) for p in chosen}
            for p, orc in oracles.items():
                n_points += 1
                for i, value in enumerate(orc.value()):
                    key = value_key(spec.n_out, i)
                    for j, v in enumerate(value):
                        record(key, si, ci, (*p, j), v)
                record("grad.c", si, ci, (*p, 0), orc.grad_c())
                for arg in spec.arg_names:
                    kind = spec.kind(arg)
                    key = f"grad.{arg}"
                    if kind == "scalar":
                        record(key, si, ci, (*p, 0), orc.grad_scalar(arg))
                    elif kind != "matrix":
                        d = case.dim
                        coords = set(range(d)) if d <= 16 else set(int(t) for t in rng.choice(d, 3, replace=False))
                        if key in worst and tuple(int(t) for t in worst[key][:len(lead)]) == p:
                            coords.add(int(worst[key][-1]))
                        for j in sorted(coords):
                            record(key, si, ci, (*p, j), orc.grad_vector(arg, j))
            # the matrix is shared by the batch: its gradient sums over every point
            if spec.name == "mobius_matvec":
                batch = oracles | {p: OraclePoint(spec, case, ci, p, formulas) for p in all_points if p not in oracles}
                m = case.args["m"][ci]
                m_entries = {(int(rng.integers(m.shape[0])), int(rng.integers(m.shape[1]))) for _ in range(3)}
                if "grad.m" in worst:
                    m_entries.add(tuple(int(t) for t in worst["grad.m"]))
                for i, j in sorted(m_entries):
                    total = mp.fsum(mp.mpf(o.grad_matrix_entry(i, j)) for o in batch.values())
                    record("grad.m", si, ci, (i, j), float(total))
    on_jax, on_ref = [], []
    worst_jax, worst_ref = (-1.0, ""), (-1.0, "")
    for (key, si, ci), values in entries.items():
        got_jax, got_ref, truth = np.asarray(values).T
        if key == "grad.c":
            value_truth = [v[2] for k, vs in entries.items()
                           if k[0].startswith("value") and k[1:] == (si, ci) for v in vs]
            value_scale = largest_finite(np.asarray(value_truth))
            cotangent_scale = largest_finite(*(t[ci] for t in sides[si].case.cot))
            magnitude = value_scale * cotangent_scale / sides[si].case.c_values[ci]
        else:
            magnitude = largest_finite(truth)
        group_tol = floor(max(magnitude, min(mags[key, si, ci])))
        on_jax.append(compare(got_jax, truth, group_tol))
        on_ref.append(compare(got_ref, truth, group_tol))
        where = f"{key} c={sides[si].case.c_values[ci]:g} {sides[si].case.label}"
        if on_jax[-1].max_rel_err > worst_jax[0]:
            worst_jax = (on_jax[-1].max_rel_err, where)
        if on_ref[-1].max_rel_err > worst_ref[0]:
            worst_ref = (on_ref[-1].max_rel_err, where)
    return merge(on_jax), merge(on_ref), n_points, worst_jax[1], worst_ref[1]
