"""The reference: the same names as `jax_impl`, computed with PyTorch and geoopt 0.5.1.

Never imports jax or parity (except the plain-Python dataclasses of `parity.config`).

Importing it switches TorchScript's profiling mode off for the process, so that geoopt's
`torch.jit.script` functions run as written on every call (values and gradients as geoopt's Python
computes them): a run's numbers then depend only on its inputs, not on what ran before it.
"""

import torch

# geoopt's jit-scripted math gets autodiff gradients that round differently after its first call in a process:
# unprofiled, every call computes alike
torch._C._jit_set_profiling_mode(False)
