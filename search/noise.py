"""Candidate noises, sphere neighbours (Zero-Order Search) and forward noising kernels (Search over Paths)."""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch

from .types import NoiseSource

Tensor = torch.Tensor


SEED_MODULUS = 2**64  # ComfyUI's seed widgets hold unsigned 64-bit seeds


def candidate_seed(seed: int, index: int) -> int:
    """The stock seed that reproduces candidate `index` of a search from `seed`: the one place seeds are derived."""
    return (int(seed) + int(index)) % SEED_MODULUS


def seeded_noise(seed: int, shape: Sequence[int], dtype: torch.dtype = torch.float32) -> NoiseSource:
    """Noise source whose index i draws N(0, I) from a CPU generator seeded with seed + i (mod 2**64).

    For a batch-of-1 latent of this shape, index i equals ComfyUI's ``comfy.sample.prepare_noise(latent, seed + i)``
    (CPU ``randn`` fills in element order, so ``[C, H, W]`` and ``[1, C, H, W]`` give the same values): candidate i
    is reproduced by a stock KSampler run with seed ``seed + i``.
    """
    shape = tuple(int(s) for s in shape)
    seed = int(seed)

    def noise(index: int) -> Tensor:
        if index < 0:
            raise ValueError(f"noise index must be >= 0, got {index}")
        generator = torch.Generator("cpu").manual_seed(candidate_seed(seed, index))
        return torch.randn(shape, dtype=dtype, generator=generator, device="cpu")

    return noise


def sphere_neighbour(pivot: Tensor, direction: Tensor, cos: float) -> Tensor:
    """The point at cosine ``cos`` to ``pivot`` with the pivot's norm, moved towards ``direction``.

    ``cos * p + sin * ||p|| * u`` with u the unit part of ``direction`` orthogonal to p (Ma et al. 2025, §3.2:
    neighbours on the sphere around the pivot noise keep the Gaussian shell's radius). Computed in float64.
    """
    if not -1.0 <= cos <= 1.0:
        raise ValueError(f"cos must be in [-1, 1], got {cos}")
    if pivot.shape != direction.shape:
        raise ValueError(f"pivot {tuple(pivot.shape)} and direction {tuple(direction.shape)} must have the same shape")
    p = pivot.detach().to(torch.float64).flatten()
    d = direction.detach().to(device=p.device, dtype=torch.float64).flatten()
    p_norm = p.norm()
    if p_norm == 0:
        raise ValueError("pivot has zero norm: a sphere neighbour is undefined")
    p_unit = p / p_norm
    ortho = d - (d @ p_unit) * p_unit
    o_norm = ortho.norm()
    if o_norm == 0:
        raise ValueError("direction is parallel to the pivot: no orthogonal component to move along")
    sin = math.sqrt(max(0.0, 1.0 - cos * cos))
    out = cos * p + sin * p_norm * (ortho / o_norm)
    return out.reshape(pivot.shape).to(dtype=pivot.dtype)


def _check_up(s_from: float, s_to: float) -> None:
    if s_to < s_from:
        raise ValueError(f"renoise goes to a higher noise level: sigma_to={s_to} must be >= sigma_from={s_from}")


def renoise_ve(x: Tensor, s_from: float, s_to: float, noise: Tensor) -> Tensor:
    """Exact forward kernel of the variance-exploding state x = x0 + sigma * eps (how ComfyUI keeps EPS/V models)."""
    s_from, s_to = float(s_from), float(s_to)
    _check_up(s_from, s_to)
    return x + math.sqrt(s_to * s_to - s_from * s_from) * noise


def renoise_flow(x: Tensor, t_from: float, t_to: float, noise: Tensor) -> Tensor:
    """Exact forward kernel of the rectified-flow state x_t = (1 - t) x0 + t eps, from t_from up to t_to <= 1."""
    t_from, t_to = float(t_from), float(t_to)
    _check_up(t_from, t_to)
    if not 0.0 <= t_from < 1.0 or t_to > 1.0:
        raise ValueError(f"flow times must satisfy 0 <= t_from < 1 and t_to <= 1, got t_from={t_from}, t_to={t_to}")
    r = (1.0 - t_to) / (1.0 - t_from)
    return r * x + math.sqrt(max(0.0, t_to * t_to - r * r * t_from * t_from)) * noise


RENOISE: dict[str, Callable[[Tensor, float, float, Tensor], Tensor]] = {"ve": renoise_ve, "flow": renoise_flow}
