"""The roofline: FLOPs of a training step's matrix products, and each framework's measured matmul rate
at those shapes (each distinct product timed alone)."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from parity import backend
from parity.config import ModelConfig
from parity.stats import summarize


@dataclasses.dataclass(frozen=True)
class Gemm:
    """One matrix product of a training step: (m x k) @ (k x n), 2 m k n FLOPs.

    `op` says which operands, as the step forms them: "x W^T" (forward; x (B, in), W (out, in)),
    "dY^T x" (weight gradient), "dY W" (input gradient)."""

    role: str
    op: str
    m: int
    k: int
    n: int

    @property
    def flops(self) -> int:
        return 2 * self.m * self.k * self.n

    def operand_shapes(self) -> tuple[tuple[int, int], tuple[int, int]]:
        if self.op == "x W^T":
            return (self.m, self.k), (self.n, self.k)
        if self.op == "dY^T x":
            return (self.k, self.m), (self.k, self.n)
        return (self.m, self.k), (self.k, self.n)  # dY W


def model_layers(model: ModelConfig) -> list[tuple[int, int]]:
    """(in, out) of every weight product, encoder then decoder (the decoder mirrors the encoder; a tied
    decoder multiplies by the encoder's transposed weight, the same shapes)."""
    sizes = tuple(model.layer_sizes)
    back = sizes[::-1]
    return [(sizes[i], sizes[i + 1]) for i in range(len(sizes) - 1)] + [
        (back[i], back[i + 1]) for i in range(len(back) - 1)]


def step_gemms(model: ModelConfig, batch: int) -> list[Gemm]:
    """The matrix products of one optimizer step at batch size `batch`: forward, weight gradients and
    input gradients (none for the first layer: the model's input needs no gradient).

    The same list for the Euclidean and the hyperbolic autoencoder: a Möbius layer's product
    mobius_matvec(W, x) is one x W^T, its norms and artanh/tanh are elementwise."""
    gemms = []
    for index, (n_in, n_out) in enumerate(model_layers(model)):
        gemms.append(Gemm("forward", "x W^T", batch, n_in, n_out))
        gemms.append(Gemm("weight grad", "dY^T x", n_out, batch, n_in))
        if index > 0:
            gemms.append(Gemm("input grad", "dY W", batch, n_out, n_in))
    return gemms


def train_flops_per_user(model: ModelConfig, dense_refeeding: bool = False) -> float:
    """Matmul FLOPs of training on one user's row (all are linear in the batch size); dense re-feeding
    makes a second full step on the re-fed output."""
    per_user = sum(g.flops for g in step_gemms(model, 1))
    return per_user * (2 if dense_refeeding else 1)


def first_layer_flops_per_user(model: ModelConfig) -> float:
    """The part of `train_flops_per_user` in the first layer's two products (forward and weight gradient):
    what sparse input replaces (with dense re-feeding, in the first of the two steps only: the second one's
    input is the dense output)."""
    return sum(g.flops for g in step_gemms(model, 1)[:2])


def inference_flops_per_user(model: ModelConfig) -> float:
    return sum(2 * n_in * n_out for n_in, n_out in model_layers(model))


def _calibrate(call: Callable[[], None], target_s: float) -> int:
    """How many calls make one timing sample of about `target_s` seconds."""
    start = time.perf_counter()
    call()
    once = max(time.perf_counter() - start, 1e-6)
    return max(1, min(1000, int(target_s / once)))


def _time_calls(call: Callable[[], None], repeats: int, target_s: float) -> list[float]:
    call()  # warm: compile, allocate
    number = _calibrate(call, target_s)
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(number):
            call()
        samples.append((time.perf_counter() - start) / number)
    return samples


def _gemm_callable(framework: str, gemm: Gemm, dtype: str, device: str, rng: np.random.Generator):
    a_shape, b_shape = gemm.operand_shapes()
    a = rng.standard_normal(a_shape).astype(dtype)
    b = rng.standard_normal(b_shape).astype(dtype)
    return backend.get(framework).matmul(gemm.op, a, b, device)


def matmul_rate(framework: str, gemms: Sequence[Gemm], *, dtype: str = "float32", device: str = "cpu",
                repeats: int = 5, target_s: float = 0.05, seed: int = 0) -> dict[str, Any]:
    """Each distinct product of `gemms` timed alone (median of `repeats`); the rate of the whole list is
    its FLOPs over the sum of its products' median times."""
    rng = np.random.default_rng(seed)
    per_shape: dict[Gemm, dict[str, Any]] = {}
    for gemm in gemms:
        if gemm in per_shape:
            continue
        samples = _time_calls(_gemm_callable(framework, gemm, dtype, device, rng), repeats, target_s)
        seconds = summarize(samples)
        per_shape[gemm] = {"role": gemm.role, "op": gemm.op, "m": gemm.m, "k": gemm.k, "n": gemm.n,
                           "flops": gemm.flops, "seconds": seconds, "gflops": gemm.flops / seconds["median"] / 1e9}
    total_flops = sum(g.flops for g in gemms)
    total_s = sum(per_shape[g]["seconds"]["median"] for g in gemms)
    return {"framework": framework, "gflops": total_flops / total_s / 1e9, "step_flops": total_flops,
            "step_matmul_s": total_s, "per_shape": list(per_shape.values())}
