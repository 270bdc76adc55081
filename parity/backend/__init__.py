"""One framework behind one interface: the only place in `parity` that chooses JAX or PyTorch.

    get(name) -> Backend                 "jax" (the port, `jax_impl`) or "torch" (the reference, `torch_ref`)
    get(name).session(run, weights, device="cpu", devices=1) -> Session    devices > 1: data-parallel
    BACKENDS                             both names, the port first; PORT = "jax", REFERENCE = "torch"
    enable_float64()                     JAX's x64 mode (PyTorch needs none): once, where the harness starts
    request_host_devices(n)              JAX on the CPU: n host devices (XLA_FLAGS), before JAX starts

`base` holds the interface (`Backend`, `Session`); `jax_backend` and `torch_backend` implement it, file for
file as `jax_impl` and `torch_ref` mirror each other. Framework imports happen inside their methods:
importing this package costs nothing.
"""

from __future__ import annotations

from parity.backend.base import (
    Backend,
    Captured,
    DevicesUnavailable,
    ModuleRun,
    Session,
    enable_float64,
    float64_enabled,
)
from parity.backend.jax_backend import (
    HOST_DEVICES_FLAG,
    JaxBackend,
    JaxDataParallelSession,
    JaxSession,
    request_host_devices,
)
from parity.backend.torch_backend import TorchBackend, TorchDataParallelSession, TorchSession

BACKENDS = ("jax", "torch")
PORT, REFERENCE = "jax", "torch"  # the port under test and the reference it is held against

_BACKENDS: dict[str, Backend] = {"jax": JaxBackend(), "torch": TorchBackend()}


def get(name: str) -> Backend:
    """The backend called `name` ("jax" or "torch")."""
    try:
        return _BACKENDS[name]
    except KeyError:
        raise ValueError(f"unknown framework {name!r}; known: {', '.join(BACKENDS)}") from None


__all__ = ["BACKENDS", "PORT", "REFERENCE", "Backend", "Session", "Captured", "ModuleRun", "DevicesUnavailable",
           "HOST_DEVICES_FLAG", "JaxBackend", "JaxSession", "JaxDataParallelSession", "TorchBackend", "TorchSession",
           "TorchDataParallelSession", "enable_float64", "float64_enabled", "get", "request_host_devices"]
