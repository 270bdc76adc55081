"""`check_module`: a Flax NNX module against its PyTorch reference, layer by layer.

    records = check_module(jax_model, torch_model, inputs=(x,))
    assert_parity(records)          # names the first layer where the two ports part
    print(records.table())          # every compared array; records.layers: the per-layer table

What it compares, per dtype, from the same weights (the reference's, copied into the JAX module unless
`copy_weights=False`) and the same inputs:

    output      every output array of the forward pass
    loss        `loss(output, *inputs)` on each side (`loss=(jax_loss, torch_loss)`), or, without a loss,
                the sum of the outputs times one fixed random cotangent (a VJP of the forward pass)
    grad        every parameter's gradient of that loss (one row, the worst parameter named)
    layers      every submodule's output, in the order the calls finished (torch forward hooks; NNX
                submodules' __call__): the first layer that fails is where the ports part, and
                `records.first_divergence` names it with its worst element

Names: the JAX module's parameters and submodules are matched to the reference's by dotted path
(`encoder.0.weight` on both sides when the layouts agree). `name_map` renames reference paths to JAX
paths ({"fc1": "dense1"} renames that prefix; or a callable); `transpose` says which JAX parameters hold
the reference's weight transposed (default: a JAX `kernel` receives the reference's `weight` transposed,
the flax.nnx.Linear convention; or a set of JAX names, or a callable (jax_name, torch_shape, jax_shape) ->
bool). `parity.convert.load_torch_state_dict` uses the same rules to import trained weights.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from parity import backend, convert
from parity.compare import ParityRecord, Records, Tolerance, compare, format_value, merge

DEFAULT_TOLERANCES = {
    "float64": Tolerance(1e-9, 1e-12, "default: float64 relative 1e-9, absolute 1e-12 near zero"),
    "float32": Tolerance(1e-4, 1e-6, "default: float32 relative 1e-4, absolute 1e-6 near zero"),
}
WHATS = ("output", "loss", "grad", "layer")


@dataclasses.dataclass
class LayerRow:
    """One submodule call compared: its path (JAX naming), which call it was, and the comparison."""

    path: str
    call: int
    dtype: str
    shape: tuple[int, ...]
    max_abs_err: float
    max_rel_err: float
    worst_index: tuple[int, ...] | None
    worst_jax: float | None
    worst_ref: float | None
    passed: bool
    tolerance: float
    atol: float = 0.0
    mismatched: int = 0
    n_elements: int = 0

    @property
    def name(self) -> str:
        return (self.path or "(module)") + (f" (call {self.call + 1})" if self.call else "")

    def explain(self) -> str:
        at = f" at index {self.worst_index}" if self.worst_index is not None else ""
        values = ""
        if self.worst_jax is not None:
            got, ref = format_value(self.worst_jax, self.dtype), format_value(self.worst_ref, self.dtype)
            values = f" (jax {got}, reference {ref})"
        failing = f"; {self.mismatched} of {self.n_elements} elements fail" if self.n_elements else ""
        return (f"layer {self.name} ({self.dtype}), output {self.shape}: relative error {self.max_rel_err:.3g}"
                f"{at}{values}{failing}; rule |jax - ref| <= max(rtol * |ref|, atol), rtol={self.tolerance:.3g}, "
                f"atol={self.atol:.3g}")


class ModuleRecords(Records):
    """The records of `check_module`, with the per-layer comparison and the first layer that fails."""

    def __init__(self, records=(), layers: Sequence[LayerRow] = (), unmatched: Sequence[str] = ()):
        super().__init__(records)
        self.layers = list(layers)
        self.unmatched = list(unmatched)

    @property
    def first_divergence(self) -> LayerRow | None:
        """The first submodule call (in the order the calls finished) whose output fails."""
        return next((layer for layer in self.layers if not layer.passed), None)

    def layer_table(self) -> str:
        header = ("layer", "dtype", "shape", "max abs err", "max rel err", "worst index", "tolerance", "pass")
        rows = [(layer.name, layer.dtype, "x".join(map(str, layer.shape)) or "scalar", f"{layer.max_abs_err:.2e}",
                 f"{layer.max_rel_err:.2e}", "" if layer.worst_index is None else str(layer.worst_index),
                 f"{layer.tolerance:.0e}", "ok" if layer.passed else "FAIL") for layer in self.layers]
        widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
        lines = ["  ".join(str(x).ljust(w) for x, w in zip(header, widths)).rstrip(),
                 "  ".join("-" * w for w in widths)]
        lines += ["  ".join(str(x).ljust(w) for x, w in zip(row, widths)).rstrip() for row in rows]
        if self.unmatched:
            lines.append("not compared (no counterpart on the other side): " + ", ".join(self.unmatched))
        return "\n".join(lines)


def resolve_tolerance(tolerances: Any, what: str, dtype: str, reference: np.ndarray) -> Tolerance:
    """The rule for one compared array: `tolerances` is a Tolerance, {dtype: Tolerance}, {(what, dtype):
    Tolerance} or a callable (what, dtype, reference array) -> Tolerance, `what` one of output, loss, grad,
    layer."""
    if tolerances is None:
        return DEFAULT_TOLERANCES[dtype]
    if isinstance(tolerances, Tolerance):
        return tolerances
    if callable(tolerances):
        return tolerances(what, dtype, reference)
    for key in ((what, dtype), dtype):
        if key in tolerances:
            return tolerances[key]
    raise KeyError(f"no tolerance for {what!r} in {dtype} in {tolerances!r}")


def _as_tuple(inputs: Any) -> tuple:
    return tuple(inputs) if isinstance(inputs, (tuple, list)) else (inputs,)


def _cast(value: Any, dtype: str | None) -> Any:
    if dtype is None or not isinstance(value, np.ndarray) or not np.issubdtype(value.dtype, np.floating):
        return value
    return value.astype(dtype)


def check_module(jax_module: Any, torch_module: Any, inputs: Any, *, kwargs: Mapping[str, Any] | None = None,
                 loss: tuple[Callable, Callable] | None = None, dtypes: Sequence[str] | None = ("float64", "float32"),
                 tolerances: Any = None, name: str = "module", name_map: Mapping[str, str] | Callable | None = None,
                 transpose: Any = "kernel", copy_weights: bool = True, capture: bool = True, train: bool = False,
                 oracle: bool = False, seed: int = 0) -> ModuleRecords:
    """Outputs, loss, every parameter's gradient and every layer's output of `jax_module` against
    `torch_module`; -> `ModuleRecords` (rows output, loss, grad per dtype; `.layers`, `.first_divergence`).

    Args:
      jax_module, torch_module: the port (flax.nnx.Module) and the reference (torch.nn.Module); neither is
        changed (each dtype runs on copies).
      inputs: the positional inputs (numpy arrays; one array or a tuple), drawn in float64 and rounded to
        each dtype for both sides; kwargs: keyword inputs passed to both modules as they are (arrays converted).
      loss: (jax_loss, torch_loss), each `loss(output, *inputs) -> scalar`; None: a fixed random cotangent.
      dtypes: the dtypes to check in (float64 switches JAX's 64-bit mode on); None: as the modules are.
      tolerances: see `resolve_tolerance`.
      name_map, transpose, copy_weights: how reference weights and names map to the JAX module (module doc).
      capture: compare every submodule's output (runs one extra eager forward pass on each side).
      train: run the modules in training mode (dropout and the like; keep it off unless both sides draw
        the same randomness).
      oracle: for float32 rows, also run the reference in float64 on the same float32-rounded numbers and
        report each side's distance from it (`jax_vs_oracle`, `ref_vs_oracle`; the tolerance of each of
        those comparisons is resolved on the oracle's array, the reference there).
      seed: the seed of the cotangent.
    """
    jax_side, ref_side = backend.get(backend.PORT), backend.get(backend.REFERENCE)
    kwargs = dict(kwargs or {})
    inputs = tuple(np.asarray(a) for a in _as_tuple(inputs))
    records = ModuleRecords()
    for dtype in (dtypes or [None]):
        if dtype == "float64":
            backend.enable_float64()
        j_module = jax_side.cast_module(jax_module, dtype or _dtype_of(jax_side, jax_module))
        t_module = ref_side.cast_module(torch_module, dtype or _dtype_of(ref_side, torch_module))
        dtype = dtype or _dtype_of(ref_side, torch_module)
        mapping = convert.parameter_mapping(ref_side.parameters(t_module), jax_side.parameters(j_module),
                                            name_map=name_map, transpose=transpose)
        if copy_weights:
            params = jax_side.parameters(j_module, trainable=True)
            missing = [m for m in mapping.missing if m in params]
            if missing:
                raise ValueError(f"{name}: JAX parameter(s) {', '.join(missing)} have no counterpart in the reference "
                                 f"(reference entries left over: {', '.join(mapping.unexpected) or 'none'}); pass "
                                 "name_map= (see parity.convert.parameter_mapping)")
            convert.load_jax_variables(j_module, mapping.to_jax(ref_side.parameters(t_module)))
        args = tuple(_cast(a, dtype) for a in inputs)
        kw = {k: _cast(v, dtype) for k, v in kwargs.items()}
        cotangents = _cotangents(ref_side, t_module, args, kw, loss, seed)
        ref_run = ref_side.run_module(t_module, args, kw, loss=loss[1] if loss else None, cotangents=cotangents,
                                      capture=capture, train=train)
        jax_run = jax_side.run_module(j_module, args, kw, loss=loss[0] if loss else None, cotangents=cotangents,
                                      capture=capture, train=train)
        truth = None
        if oracle and dtype == "float32":
            wide = ref_side.cast_module(t_module, "float64")
            truth = ref_side.run_module(wide, tuple(_cast(a, "float64") for a in args),
                                        {k: _cast(v, "float64") for k, v in kw.items()},
                                        loss=loss[1] if loss else None,
                                        cotangents=[c.astype(np.float64) for c in cotangents], capture=False,
                                        train=train)
        records.extend(_rows(name, dtype, jax_run, ref_run, truth, mapping, tolerances))
        if capture:
            layers, unmatched = _layers(dtype, jax_run, ref_run, mapping, tolerances)
            records.layers += layers
            records.unmatched += [u for u in unmatched if u not in records.unmatched]
    return records


def _dtype_of(side, module) -> str:
    floating = [v.dtype for v in side.parameters(module).values() if np.issubdtype(v.dtype, np.floating)]
    return str(floating[0]) if floating else "float32"


def _cotangents(ref_side, module, args, kwargs, loss, seed: int) -> list[np.ndarray]:
    """One fixed random cotangent per output (unused when a loss is given): the backward pass then is
    the VJP of the forward pass with it."""
    if loss is not None:
        return []
    rng = np.random.default_rng([seed, 0xC07])
    return [rng.standard_normal(o.shape).astype(o.dtype) for o in ref_side.forward(module, args, kwargs)]


def _oracle_extra(pairs, truths, tolerances, what: str, dtype: str) -> dict[str, float]:
    """Each side's worst distance from the float64 oracle over the arrays `pairs` ((jax, ref) each) and
    `truths`, in the same measure as the rows: in a comparison with the oracle the oracle is the reference,
    so its own array sets the tolerance (the absolute floor of a rule relative to max|ref|, for one)."""
    if truths is None:
        return {}
    judged = [(got, ref, truth, resolve_tolerance(tolerances, what, dtype, np.asarray(truth)))
              for (got, ref), truth in zip(pairs, truths)]
    return {"jax_vs_oracle": max(compare(got, truth, tol).max_rel_err for got, _, truth, tol in judged),
            "ref_vs_oracle": max(compare(ref, truth, tol).max_rel_err for _, ref, truth, tol in judged)}


def _rows(name: str, dtype: str, jax_run, ref_run, truth, mapping, tolerances) -> list[ParityRecord]:
    rows = []
    if len(jax_run.outputs) != len(ref_run.outputs):
        raise ValueError(f"{name}: the JAX module returns {len(jax_run.outputs)} arrays, the reference "
                         f"{len(ref_run.outputs)}")
    outputs = []
    for i, (got, ref) in enumerate(zip(jax_run.outputs, ref_run.outputs)):
        tol = resolve_tolerance(tolerances, "output", dtype, ref)
        outputs.append((compare(got, ref, tol, where=f"output[{i}]" if len(ref_run.outputs) > 1 else "output"), tol))
    worst_tol = max(outputs, key=lambda item: item[0].max_rel_err)[1]
    extra = _oracle_extra(list(zip(jax_run.outputs, ref_run.outputs)), truth and truth.outputs, tolerances, "output",
                          dtype)
    rows.append(ParityRecord.from_comparison(f"{name}/output", dtype, merge([c for c, _ in outputs]), worst_tol,
                                             passed=all(c.passes(t) for c, t in outputs), note=worst_tol.reason,
                                             **extra))
    tol = resolve_tolerance(tolerances, "loss", dtype, np.asarray(ref_run.loss))
    extra = _oracle_extra([(jax_run.loss, ref_run.loss)], truth and [truth.loss], tolerances, "loss", dtype)
    rows.append(ParityRecord.from_comparison(f"{name}/loss", dtype, compare(jax_run.loss, ref_run.loss, tol, "loss"),
                                             tol, note=tol.reason, **extra))
    grads = mapping.jax_to_reference(jax_run.grads, only=ref_run.grads)
    comparisons, tols = {}, {}
    for param, ref in ref_run.grads.items():
        if param not in grads:
            continue
        tols[param] = resolve_tolerance(tolerances, "grad", dtype, ref)
        comparisons[param] = compare(grads[param], ref, tols[param], where=param)
    if comparisons:
        worst = max(comparisons, key=lambda k: comparisons[k].max_rel_err)
        extra = {"worst_parameter": worst, "n_parameters": len(comparisons),
                 **_oracle_extra([(grads[k], ref_run.grads[k]) for k in comparisons],
                                 truth and [truth.grads[k] for k in comparisons], tolerances, "grad", dtype)}
        # each parameter passes against its own rule; the row passes only if all do
        rows.append(ParityRecord.from_comparison(f"{name}/grad", dtype, merge(list(comparisons.values())),
                                                 tols[worst],
                                                 passed=all(c.passes(tols[k]) for k, c in comparisons.items()),
                                                 note=tols[worst].reason, **extra))
    return rows


def _layers(dtype: str, jax_run, ref_run, mapping, tolerances) -> tuple[list[LayerRow], list[str]]:
    """Each reference submodule call against the JAX call of the same (mapped) path and call number."""
    jax_calls = {(c.path, c.call): c for c in jax_run.captured}
    layers, unmatched = [], []
    for call in ref_run.captured:
        path = mapping.module_path(call.path)
        mine = jax_calls.get((path, call.call))
        if mine is None or len(mine.outputs) != len(call.outputs) or any(
                a.shape != b.shape for a, b in zip(mine.outputs, call.outputs)):
            unmatched.append(call.path or "(module)")
            continue
        comparisons = []
        for got, ref in zip(mine.outputs, call.outputs):
            tol = resolve_tolerance(tolerances, "layer", dtype, ref)
            comparisons.append((compare(got, ref, tol), tol))
        cmp, tol = max(comparisons, key=lambda item: item[0].max_rel_err)
        layers.append(LayerRow(path, call.call, dtype, tuple(call.outputs[0].shape), cmp.max_abs_err, cmp.max_rel_err,
                               cmp.worst_index, cmp.worst_jax, cmp.worst_ref,
                               all(c.passes(t) for c, t in comparisons), tol.rtol, tol.atol,
                               sum(c.mismatched for c, _ in comparisons), sum(c.n_elements for c, _ in comparisons)))
    return layers, unmatched
