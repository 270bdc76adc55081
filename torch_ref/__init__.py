"""The reference: the same names as `jax_impl`, computed with PyTorch and geoopt 0.5.1.

Never imports jax or parity (except the plain-Python dataclasses of `parity.config`).
"""
