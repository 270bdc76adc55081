"""The public parity checks: hold your own JAX port against its PyTorch reference.

    check_function(jax_fn, torch_fn, args=..., ...)          values and VJPs per input regime and dtype
    check_module(jax_module, torch_module, inputs, ...)      outputs, loss, gradients, every layer's output
    check_optimizer(optax_tx, make_torch_optimizer, ...)     parameters after every step

Each returns `parity.compare.Records` (a list of `ParityRecord`); `parity.compare.assert_parity` raises
with a torch.testing-style message naming the worst element, and for a module, the first layer where the
ports part. `inputs` holds the argument generators of `check_function`.
"""

from parity.checks import inputs
from parity.checks.function import Case, Float64Oracle, OracleResult, Row, check_function
from parity.checks.module import LayerRow, ModuleRecords, check_module
from parity.checks.optimizer import check_optimizer, compare_trajectories, run_trajectories

__all__ = ["inputs", "check_function", "Case", "Row", "OracleResult", "Float64Oracle", "check_module", "ModuleRecords",
           "LayerRow", "check_optimizer", "run_trajectories", "compare_trajectories"]
