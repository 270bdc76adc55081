"""The JAX port: Poincaré-ball math, Riemannian optimizers (optax), Flax NNX autoencoders.

Never imports torch or parity (except the plain-Python dataclasses of `parity.config`).
float64 is not switched on here: callers that want it call
`jax.config.update("jax_enable_x64", True)` themselves (the parity harness does).
"""
