"""One framework behind one interface: the only place in `parity` that chooses JAX or PyTorch.

    get(name) -> Backend                 "jax" (the port, `jax_impl`) or "torch" (the reference, `torch_ref`)
    BACKENDS                             both names, the port first; PORT = "jax", REFERENCE = "torch"
    enable_float64()                     JAX's x64 mode (PyTorch needs none): once, where the harness starts

`base` holds the interface (`Backend`, `Session`); `jax_backend` and `torch_backend` implement it, file for
file as `jax_impl` and `torch_ref` mirror each other. Framework imports happen inside their methods:
importing this package costs nothing.
"""

from __future__ import annotations

from parity.backend.base import Backend, Captured, ModuleRun, Session, enable_float64, float64_enabled
from parity.backend.jax_backend import JaxBackend, JaxSession
from parity.backend.torch_backend import TorchBackend, TorchSession

BACKENDS = ("jax", "torch")
PORT, REFERENCE = "jax", "torch"  # the port under test and the reference it is held against

_BACKENDS: dict[str, Backend] = {"jax": JaxBackend(), "torch": TorchBackend()}


def get(name: str) -> Backend:
    """The backend called `name` ("jax" or "torch")."""
    try:
        return _BACKENDS[name]
    except KeyError:
        raise ValueError(f"unknown framework {name!r}; known: {', '.join(BACKENDS)}") from None


__all__ = ["BACKENDS", "PORT", "REFERENCE", "Backend", "Session", "Captured", "ModuleRun", "JaxBackend",
           "JaxSession", "TorchBackend", "TorchSession", "enable_float64", "float64_enabled", "get"]
