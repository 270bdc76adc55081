"""poincare-parity: the harness that holds the JAX port (`jax_impl`) against the PyTorch + geoopt
reference (`torch_ref`), and compares them on MovieLens."""

__version__ = "0.1.0"
