"""poincare-parity: hold a JAX port of a PyTorch (+ geoopt) model against its reference, number by number.

The public API (see README, "Check your own port"):

    check_function(jax_fn, torch_fn, args=..., ...)           values and VJPs per input regime and dtype
    check_module(jax_module, torch_module, inputs, ...)       outputs, loss, gradients, every layer's output
    check_optimizer(optax_tx, make_torch_optimizer, params, loss_fn, steps)   parameters after every step
    load_torch_state_dict(nnx_module, state_dict, ...)        trained torch weights into a Flax NNX module
    assert_parity(records)                                    raise ParityError naming what failed and where
    inputs                                                    argument generators (ball points, tangents, ...)
    Float64Oracle, OracleResult, Case                         check_function's oracle hook and full-control cases
    Tolerance, ParityRecord, Records, ParityError

Every check returns `Records` (a list of `ParityRecord`); `records.table()` prints them, `records.save(path)`
writes them for `poincare-parity report`. Importing `parity` imports neither JAX nor PyTorch.

The rest of the package is the project's own harness: the Poincaré-ball autoencoders of `jax_impl` and
`torch_ref` compared on MovieLens (`poincare-parity --help`).
"""

from parity.checks import Case, Float64Oracle, OracleResult, check_function, check_module, check_optimizer, inputs
from parity.compare import ParityError, ParityRecord, Records, Tolerance, assert_parity, compare
from parity.convert import load_torch_state_dict

__version__ = "0.2.0"

__all__ = ["check_function", "check_module", "check_optimizer", "load_torch_state_dict", "assert_parity", "inputs",
           "Float64Oracle", "OracleResult", "Case", "Tolerance", "ParityRecord", "Records", "ParityError", "compare",
           "__version__"]
