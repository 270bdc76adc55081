"""Whole weight sets between frameworks, with numpy in the middle and canonical names.

A weight set is a dict `{canonical name: numpy array}`. Canonical names are the dotted module
paths both sides produce on their own (`encoder.0.weight`, `decoder.1.bias`, ...: torch's
`named_parameters()` and the joined NNX state path agree), and every weight matrix is stored
(out, in), as torch.nn.Linear stores it. So a weight set can be loaded into either framework
and read back from either without renaming or transposing.

    parameter_shapes(config)               {name: shape} in canonical order
    init_weights(config, seed)             a fresh weight set (numpy float64), the one start both sides share
    load_jax(model_or_state, weights)      write a weight set into an NNX module or nnx.State (in place)
    extract_jax(model_or_state)            read one back (also works on a gradient State)
    load_torch(module, weights)            write into a torch module (in place, under no_grad)
    extract_torch(module, grads=False)     read one back, or the .grad of every parameter

A user's own modules (`parity.checks.check_module`, importing trained weights):

    parameter_mapping(reference, jax, name_map=None, transpose="kernel")   which torch name goes where
    load_torch_state_dict(nnx_module, state_dict, name_map=None, transpose="kernel")

Optimizer states, for checkpoints (flat `{key: array}` dicts, so they fit in one .npz):

    jax_tree_to_arrays(tree) / jax_tree_from_arrays(template, arrays)
    torch_optimizer_to_arrays(optimizer) / torch_optimizer_from_arrays(optimizer, arrays)
"""

from __future__ import annotations

import dataclasses
import difflib
import json
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from parity.config import ModelConfig

# ---------------------------------------------------------------------------------------------
# canonical names and the shared start


def _ae_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    sizes = tuple(config.layer_sizes)
    back = sizes[::-1]
    shapes: dict[str, tuple[int, ...]] = {}
    for i in range(len(sizes) - 1):
        shapes[f"encoder.{i}.weight"] = (sizes[i + 1], sizes[i])
        shapes[f"encoder.{i}.bias"] = (sizes[i + 1],)
    for i in range(len(back) - 1):
        if not config.tied:
            shapes[f"decoder.{i}.weight"] = (back[i + 1], back[i])
        shapes[f"decoder.{i}.bias"] = (back[i + 1],)
    return shapes


def _hae_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    """The hyperbolic autoencoder has the Euclidean one's layout: Möbius layers keep `weight` (out, in)
    and `bias` (out,), the bias being a point on the ball (see BALL_PARAMETERS); a learnable
    curvature adds the scalar `ball.isp_c` (c = softplus(isp_c), geoopt's storage), last."""
    shapes = _ae_shapes(config)
    if config.learn_c:
        shapes["ball.isp_c"] = ()
    return shapes


# model kind -> canonical {name: shape}; a new model registers its own here
PARAMETER_SHAPES = {"ae": _ae_shapes, "hae": _hae_shapes}
# model kind -> predicate on canonical names: which parameters are points on the Poincaré ball
BALL_PARAMETERS = {"hae": lambda name: name.endswith(".bias")}
# where init_weights puts a random ball parameter (bias_scale > 0): at most this fraction of the
# ball's radius 1 / sqrt(c) from the origin, well inside, so the parity checks start from honest points
BALL_INIT_RADIUS = 0.5


def ball_parameters(config: ModelConfig) -> list[str]:
    """Canonical names of the parameters that live on the Poincaré ball (none for the Euclidean model)."""
    on_ball = BALL_PARAMETERS.get(config.kind)
    return [name for name in parameter_shapes(config) if on_ball is not None and on_ball(name)]


def parameter_shapes(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    try:
        return PARAMETER_SHAPES[config.kind](config)
    except KeyError:
        raise ValueError(f"no canonical parameter layout for model kind {config.kind!r}") from None


def init_weights(config: ModelConfig, seed: int, *, bias_scale: float = 0.0) -> dict[str, np.ndarray]:
    """Xavier-uniform weights U(-a, a), a = sqrt(6 / (fan_in + fan_out)), biases 0 (DeepRecommender's
    init), drawn in float64 from `np.random.default_rng(seed)` in canonical order.

    `bias_scale` > 0 draws biases from U(-bias_scale, bias_scale) instead: the parity checks use it
    so that a bias mix-up cannot hide behind zeros. A bias on the Poincaré ball (the hyperbolic
    model's) is then shrunk, if needed, to at most BALL_INIT_RADIUS of the ball's radius; at 0 (the
    default) it is the ball's origin. Cast with `astype` for float32 runs: both sides then start from
    the same rounded values. A learnable curvature's `ball.isp_c` starts at config.c.
    """
    rng = np.random.default_rng(seed)
    on_ball = set(ball_parameters(config))
    weights = {}
    for name, shape in parameter_shapes(config).items():
        if name == "ball.isp_c":  # a learnable curvature starts at config.c: isp_c = log(exp(c) - 1)
            weights[name] = np.asarray(np.log(np.expm1(config.c)))
        elif name.endswith("weight"):
            fan_out, fan_in = shape
            limit = np.sqrt(6.0 / (fan_in + fan_out))
            weights[name] = rng.uniform(-limit, limit, size=shape)
        elif bias_scale > 0:
            weights[name] = rng.uniform(-bias_scale, bias_scale, size=shape)
            if name in on_ball:
                largest = BALL_INIT_RADIUS / np.sqrt(config.c)
                norm = np.linalg.norm(weights[name], axis=-1, keepdims=True)
                weights[name] *= np.minimum(1.0, largest / np.maximum(norm, 1e-300))
        else:
            weights[name] = np.zeros(shape)
    return weights


def _check_names(have: Mapping[str, object], want: Mapping[str, object], where: str) -> None:
    if set(have) != set(want):
        missing = sorted(set(want) - set(have))
        extra = sorted(set(have) - set(want))
        raise KeyError(f"{where}: weight names differ; missing {missing}, unexpected {extra}")


# ---------------------------------------------------------------------------------------------
# JAX (flax.nnx)


def _jax_params(model_or_state):
    from flax import nnx

    if isinstance(model_or_state, nnx.State):
        return model_or_state
    return nnx.state(model_or_state, nnx.Param)


def jax_name(path) -> str:
    """The dotted name of an NNX state path, e.g. ('encoder', 0, 'weight') -> 'encoder.0.weight'."""
    return ".".join(str(part) for part in path)


def extract_jax(model_or_state) -> dict[str, np.ndarray]:
    """{canonical name: numpy array} of an NNX module's parameters, or of any parameter State
    (e.g. a gradient)."""
    state = _jax_params(model_or_state)
    return {jax_name(path): np.asarray(variable[...]) for path, variable in state.flat_state()}


def load_jax(model_or_state, weights: Mapping[str, np.ndarray]) -> None:
    """Write `weights` into the module's (or State's) parameters in place, keeping each parameter's
    dtype; shapes must match exactly."""
    import jax.numpy as jnp

    state = _jax_params(model_or_state)
    flat = dict((jax_name(path), variable) for path, variable in state.flat_state())
    _check_names(weights, flat, "load_jax")
    for name, variable in flat.items():
        value = np.asarray(weights[name])
        if value.shape != variable.shape:
            raise ValueError(f"load_jax: {name} has shape {value.shape}, the model wants {variable.shape}")
        variable[...] = jnp.asarray(value, dtype=variable.dtype)  # nnx.state shares the module's Variables


# ---------------------------------------------------------------------------------------------
# PyTorch


def extract_torch(module, *, grads: bool = False) -> dict[str, np.ndarray]:
    """{canonical name: numpy array} of a torch module's parameters (copies), or of their `.grad`
    (a parameter without a gradient gives zeros, as JAX's grad would)."""
    import torch

    out = {}
    for name, parameter in module.named_parameters():
        tensor = parameter.grad if grads else parameter
        if tensor is None:
            tensor = torch.zeros_like(parameter)
        out[name] = tensor.detach().cpu().numpy().copy()
    return out


def load_torch(module, weights: Mapping[str, np.ndarray]) -> None:
    """Write `weights` into the module's parameters in place, keeping each parameter's dtype."""
    import torch

    named = dict(module.named_parameters())
    _check_names(weights, named, "load_torch")
    with torch.no_grad():
        for name, parameter in named.items():
            value = np.asarray(weights[name])
            if value.shape != tuple(parameter.shape):
                raise ValueError(f"load_torch: {name} has shape {value.shape}, "
                                 f"the model wants {tuple(parameter.shape)}")
            parameter.copy_(torch.tensor(value, dtype=parameter.dtype))  # a copy: the array may be read-only


# ---------------------------------------------------------------------------------------------
# optimizer states (checkpoints)


def jax_tree_to_arrays(tree, prefix: str = "opt") -> dict[str, np.ndarray]:
    """Leaves of any pytree (an optax state) as `{prefix/i: array}` in tree order."""
    import jax

    return {f"{prefix}/{i}": np.asarray(leaf) for i, leaf in enumerate(jax.tree.leaves(tree))}


def jax_tree_from_arrays(template, arrays: Mapping[str, np.ndarray], prefix: str = "opt"):
    """Inverse of `jax_tree_to_arrays`, shaped by `template` (e.g. `optimizer.init(params)`)."""
    import jax
    import jax.numpy as jnp

    leaves, treedef = jax.tree.flatten(template)
    keys = [f"{prefix}/{i}" for i in range(len(leaves))]
    stored = sorted(k for k in arrays if k.startswith(prefix + "/"))
    if sorted(keys) != stored:
        raise KeyError(f"optimizer state has {len(stored)} arrays, this optimizer wants {len(leaves)}")
    restored = []
    for key, leaf in zip(keys, leaves):
        value = np.asarray(arrays[key])
        if value.shape != np.shape(leaf):
            raise ValueError(f"optimizer state {key}: shape {value.shape}, wanted {np.shape(leaf)}")
        restored.append(jnp.asarray(value, dtype=jnp.asarray(leaf).dtype))
    return jax.tree.unflatten(treedef, restored)


def torch_optimizer_to_arrays(optimizer, prefix: str = "opt") -> dict[str, np.ndarray]:
    """A torch optimizer's state_dict as flat arrays: tensors under `prefix/state/<index>/<key>`,
    everything else (param_groups, plain numbers) as JSON under `prefix/json`."""
    import torch

    state_dict = optimizer.state_dict()
    arrays: dict[str, np.ndarray] = {}
    plain: dict[str, dict] = {}
    for index, per_param in state_dict["state"].items():
        for key, value in per_param.items():
            if isinstance(value, torch.Tensor):
                arrays[f"{prefix}/state/{index}/{key}"] = value.detach().cpu().numpy().copy()
            else:
                plain.setdefault(str(index), {})[key] = value
    meta = {"param_groups": state_dict["param_groups"], "plain_state": plain}
    arrays[f"{prefix}/json"] = np.array(json.dumps(meta))
    return arrays


def torch_optimizer_from_arrays(optimizer, arrays: Mapping[str, np.ndarray], prefix: str = "opt") -> None:
    """Inverse of `torch_optimizer_to_arrays`: loads the state into `optimizer` (built on the same
    parameters)."""
    import torch

    meta = json.loads(str(arrays[f"{prefix}/json"]))
    state: dict[int, dict] = {}
    for key, value in arrays.items():
        parts = key.split("/")
        if len(parts) == 4 and parts[0] == prefix and parts[1] == "state":
            state.setdefault(int(parts[2]), {})[parts[3]] = torch.from_numpy(np.array(value))
    for index, values in meta["plain_state"].items():
        state.setdefault(int(index), {}).update(values)
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    # torch.optim.Adam.__setstate__ (run by load_state_dict) turns an int `step` into a float32 tensor;
    # geoopt's RiemannianAdam, an Adam subclass, keeps it an int and computes beta ** step in double, so
    # a resumed run would round its bias corrections differently: put the saved plain values back
    params = [p for group in optimizer.param_groups for p in group["params"]]
    for index, values in meta["plain_state"].items():
        optimizer.state[params[int(index)]].update(values)


# ---------------------------------------------------------------------------------------------
# whole models from a weight set


# model kind -> class name, the same in jax_impl.models and torch_ref.models
MODEL_CLASSES = {"ae": "AutoEncoder", "hae": "HyperbolicAutoEncoder"}


def _model_class(models, kind: str):
    """The class of model `kind` in a framework's `models` module."""
    if kind not in MODEL_CLASSES or not hasattr(models, MODEL_CLASSES[kind]):
        raise ValueError(f"no model for kind {kind!r} in {models.__name__}")
    return getattr(models, MODEL_CLASSES[kind])


def jax_model(config: ModelConfig, weights: Mapping[str, np.ndarray], dtype: str = "float32"):
    """The NNX model for `config` in `dtype`, holding `weights` (float64 JAX needs x64 switched on)."""
    import jax
    import jax.numpy as jnp

    if dtype == "float64" and not jax.config.jax_enable_x64:
        raise RuntimeError("float64 JAX needs 64-bit mode: call parity.backend.enable_float64() "
                           "(or jax.config.update('jax_enable_x64', True)) first")
    from jax_impl import models

    model = _model_class(models, config.kind)(config, dtype=jnp.dtype(dtype))
    load_jax(model, weights)
    return model


def torch_model(config: ModelConfig, weights: Mapping[str, np.ndarray], dtype: str = "float32", device=None):
    """The torch model for `config` in `dtype` (on `device`), holding `weights`."""
    import torch

    from torch_ref import models

    model = _model_class(models, config.kind)(config, dtype=getattr(torch, dtype))
    load_torch(model, weights)
    return model.to(device) if device is not None else model


# ---------------------------------------------------------------------------------------------
# a user's own modules: reference (torch) names and layouts to the JAX module's


# where a torch parameter's last name part has another name in Flax NNX (flax.nnx.Linear's `kernel`,
# LayerNorm / BatchNorm `scale`, Embed's `embedding`, BatchNorm's running statistics `mean` / `var`)
FLAX_NAMES = {"weight": ("weight", "kernel", "scale", "embedding"), "running_mean": ("mean",),
              "running_var": ("var",)}
# torch bookkeeping with no counterpart in a JAX module
IGNORED_REFERENCE = ("num_batches_tracked",)


def _kernel_layout(value: np.ndarray) -> np.ndarray:
    """A torch weight in Flax's kernel layout: Linear (out, in) -> (in, out); Conv (out, in, *k) -> (*k, in, out)."""
    if value.ndim < 2:
        return value
    return np.transpose(value, tuple(range(2, value.ndim)) + (1, 0))


def _reference_layout(value: np.ndarray) -> np.ndarray:
    """Inverse of `_kernel_layout`."""
    if value.ndim < 2:
        return value
    k = value.ndim - 2
    return np.transpose(value, (k + 1, k) + tuple(range(k)))


@dataclasses.dataclass
class ParameterMapping:
    """Which JAX parameter each reference parameter (or buffer) goes to, and whether its layout is
    transposed on the way (`parameter_mapping` builds it)."""

    pairs: dict[str, tuple[str, bool]]  # reference name -> (JAX name, transposed)
    renames: tuple[tuple[str, str | None], ...] = ()  # reference prefix -> JAX prefix (None: left out), longest first
    rename: Callable[[str], str | None] | None = None
    missing: tuple[str, ...] = ()  # JAX variables no reference parameter maps to
    unexpected: tuple[str, ...] = ()  # reference parameters with no JAX counterpart

    def module_path(self, path: str) -> str:
        """A reference submodule path in JAX naming (the same renames as its parameters)."""
        return _renamed(path, self.renames, self.rename) if path else path

    def to_jax(self, reference: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Reference arrays as {JAX name: array in the JAX layout}."""
        return {jax: (_kernel_layout(np.asarray(reference[ref])) if transposed else np.asarray(reference[ref]))
                for ref, (jax, transposed) in self.pairs.items() if ref in reference}

    def jax_to_reference(self, values: Mapping[str, np.ndarray], only: Mapping[str, Any] | None = None
                         ) -> dict[str, np.ndarray]:
        """JAX arrays (e.g. gradients) as {reference name: array in the reference layout}."""
        out = {}
        for ref, (jax, transposed) in self.pairs.items():
            if jax in values and (only is None or ref in only):
                out[ref] = _reference_layout(np.asarray(values[jax])) if transposed else np.asarray(values[jax])
        return out


def _renamed(name: str, renames: tuple[tuple[str, str | None], ...], rename: Callable | None) -> str | None:
    """`name` under the renames (longest prefix first; a prefix renamed to None is dropped), or the callable."""
    if rename is not None:
        return rename(name)
    for old, new in renames:
        if name == old or name.startswith(old + "."):
            return None if new is None else new + name[len(old):]
    return name


def parameter_mapping(reference: Mapping[str, np.ndarray], jax: Mapping[str, np.ndarray], *,
                      name_map: Mapping[str, str | None] | Callable[[str], str | None] | None = None,
                      transpose: Any = "kernel") -> ParameterMapping:
    """Match reference names (torch `state_dict` keys) to JAX names (dotted NNX state paths).

    `name_map`: {reference prefix: JAX prefix} renames (e.g. {"fc1": "dense1", "layers": "blocks"}; a prefix
    mapped to None is left out, e.g. {"ball": None} for a geoopt manifold's stored curvature), or a callable
    reference name -> JAX name (None: leave it out). After renaming, a name matches the JAX name that is
    the same, or whose last part is Flax's name for it (weight -> kernel / scale / embedding, running_mean
    -> mean, running_var -> var). `transpose`: "kernel" (a JAX `kernel` holds the reference's weight in
    Flax's layout: Linear (out, in) -> (in, out), Conv (out, in, *k) -> (*k, in, out)); a set of JAX names
    to transpose that way; a callable (JAX name, reference shape, JAX shape) -> bool; or None / False.
    Raises ValueError when a matched pair's shapes disagree (saying whether a transpose would fit)."""
    renames = tuple(sorted(name_map.items(), key=lambda kv: -len(kv[0]))) if isinstance(name_map, Mapping) else ()
    rename = name_map if callable(name_map) else None
    pairs: dict[str, tuple[str, bool]] = {}
    unexpected = []
    for ref_name, ref_value in reference.items():
        if ref_name.rsplit(".", 1)[-1] in IGNORED_REFERENCE:
            continue
        target = _renamed(ref_name, renames, rename)
        if target is None:
            continue
        prefix, _, last = target.rpartition(".")
        candidates = [target] + [f"{prefix}.{alt}" if prefix else alt for alt in FLAX_NAMES.get(last, ())]
        jax_name = next((c for c in candidates if c in jax), None)
        if jax_name is None:
            unexpected.append(ref_name)
            continue
        ref_shape, jax_shape = tuple(np.shape(ref_value)), tuple(np.shape(jax[jax_name]))
        if transpose == "kernel":
            transposed = jax_name.rsplit(".", 1)[-1] == "kernel" and len(ref_shape) >= 2
        elif callable(transpose):
            transposed = bool(transpose(jax_name, ref_shape, jax_shape))
        elif transpose:
            transposed = jax_name in transpose
        else:
            transposed = False
        flax_layout = tuple(np.shape(_kernel_layout(np.empty(ref_shape))))
        if (flax_layout if transposed else ref_shape) != jax_shape:
            hint = ""
            if not transposed and len(ref_shape) >= 2 and flax_layout == jax_shape:
                hint = (f"; it fits transposed (Flax's kernel layout {flax_layout}): pass transpose={{{jax_name!r}}} "
                        "(or a callable)")
            elif transposed and ref_shape == jax_shape:
                hint = ("; it fits as it is, untransposed: pass transpose= a set of the JAX names to transpose, or a "
                        "callable, leaving this one out")
            raise ValueError(f"reference {ref_name} {ref_shape}{' transposed' if transposed else ''} does not fit "
                             f"JAX {jax_name} {jax_shape}{hint}")
        pairs[ref_name] = (jax_name, transposed)
    used = {jax_name for jax_name, _ in pairs.values()}
    missing = tuple(name for name in jax if name not in used)
    return ParameterMapping(pairs, renames, rename, missing, tuple(unexpected))


def _jax_forms(reference_name: str, mapping: ParameterMapping) -> list[str]:
    """The JAX names a reference name could have landed on (renamed; Flax's names for its last part)."""
    target = _renamed(reference_name, mapping.renames, mapping.rename)
    if target is None:
        return [reference_name]
    prefix, _, last = target.rpartition(".")
    return [target] + [f"{prefix}.{alt}" if prefix else alt for alt in FLAX_NAMES.get(last, ())]


def _closest(scores: Mapping[str, float]) -> str:
    """ " (closest: NAME)" for the best-scoring name at similarity 0.5 or more, else ""."""
    if not scores:
        return ""
    best = max(scores, key=scores.get)
    return f" (closest: {best})" if scores[best] >= 0.5 else ""


def _similarity(a: str, b: str) -> float:
    return difflib.SequenceMatcher(None, a, b).ratio()


def load_torch_state_dict(module: Any, state_dict: Mapping[str, Any], *,
                          name_map: Mapping[str, str | None] | Callable[[str], str | None] | None = None,
                          transpose: Any = "kernel", strict: bool = True) -> ParameterMapping:
    """Copy a PyTorch `state_dict` (tensors or numpy arrays) into a Flax NNX module, in place: trained
    weights into a port. Names and layouts map as `parameter_mapping` says; each value keeps the JAX
    variable's dtype. `strict`: every JAX parameter must receive a value and every reference entry must
    land somewhere (torch's `num_batches_tracked` excepted), else ValueError listing the names, each with
    the closest name left over on the other side (compared in JAX naming, after `name_map`).
    -> the mapping used (`.pairs`: reference name -> (JAX name, transposed))."""
    from flax import nnx

    reference = {k: (v.detach().cpu().numpy() if hasattr(v, "detach") else np.asarray(v))
                 for k, v in state_dict.items()}
    variables = {jax_name(path): variable for path, variable in nnx.state(module, nnx.Variable).flat_state()}
    current = {k: np.asarray(v[...]) for k, v in variables.items()}
    mapping = parameter_mapping(reference, current, name_map=name_map, transpose=transpose)
    params = {jax_name(path) for path, _ in nnx.state(module, nnx.Param).flat_state()}
    missing = [m for m in mapping.missing if m in params]
    if strict and (missing or mapping.unexpected):
        forms = {u: _jax_forms(u, mapping) for u in mapping.unexpected}
        lines = [f"JAX parameter {m} receives nothing"
                 + _closest({u: max(_similarity(m, f) for f in forms[u]) for u in mapping.unexpected})
                 for m in missing]
        lines += [f"reference entry {u} has no JAX counterpart"
                  + _closest({m: max(_similarity(m, f) for f in forms[u]) for m in missing})
                  for u in mapping.unexpected]
        raise ValueError("load_torch_state_dict: names do not match (pass name_map= or strict=False):\n  "
                         + "\n  ".join(lines))
    load_jax_variables(module, mapping.to_jax(reference))
    return mapping


def load_jax_variables(module: Any, values: Mapping[str, np.ndarray]) -> None:
    """Write {dotted name: array} into any of an NNX module's variables (parameters, statistics), in
    place, each keeping its dtype; names not given keep their values."""
    import jax.numpy as jnp
    from flax import nnx

    variables = {jax_name(path): variable for path, variable in nnx.state(module, nnx.Variable).flat_state()}
    for name, value in values.items():
        variable = variables[name]
        value = np.asarray(value)
        if value.shape != tuple(variable.shape):
            raise ValueError(f"{name} has shape {value.shape}, the module wants {tuple(variable.shape)}")
        variable[...] = jnp.asarray(value, dtype=variable.dtype)
