"""ComfyUI model and latent facts the search needs: noising kernels, free memory, latents as stock fixes them."""

from __future__ import annotations

import inspect
from typing import Callable, Optional, Sequence

import torch

import comfy.model_management
import comfy.model_sampling
import comfy.sample

from ..search.noise import RENOISE

CPU_ROWS = 4  # auto batch size on the CPU
RATIO_KEYS = ("downscale_ratio_spacial", "downscale_ratio_temporal")  # newer ComfyUI's empty-latent size hints


def noising_kernel(model_sampling) -> str:
    """Search over Paths' forward kernel: rectified flow for CONST models (SD3, Flux), VE otherwise."""
    return "flow" if isinstance(model_sampling, comfy.model_sampling.CONST) else "ve"


def renoise_for(model_sampling) -> Callable:
    """The exact forward kernel of this model; flow noise is scaled by the model's `noise_scale` where it has one,
    as its own noise_scaling does (newer ComfyUI)."""
    kernel = RENOISE[noising_kernel(model_sampling)]
    scale = float(getattr(model_sampling, "noise_scale", 1.0))
    if kernel is RENOISE["ve"] or scale == 1.0:
        return kernel
    return lambda x, s_from, s_to, noise: kernel(x, s_from, s_to, scale * noise)


def noise_ignored(model_sampling, sigma: torch.Tensor, shape: Sequence[int]) -> bool:
    """Whether the model's noise_scaling discards the noise (image-to-image flow types): every candidate would
    be the same image. Probed by behaviour, so custom model samplings are covered too."""
    latent = torch.zeros((1,) + tuple(shape), dtype=torch.float32)
    ones = model_sampling.noise_scaling(sigma, torch.ones_like(latent), latent.clone())
    twos = model_sampling.noise_scaling(sigma, torch.full_like(latent, 2.0), latent.clone())
    return torch.equal(ones, twos)


def reference_target(model_sampling, reference_sigma: float) -> float:
    """The model sigma whose signal-to-noise ratio equals flow time `reference_sigma` (t/(1-t) for VE models)."""
    if isinstance(model_sampling, comfy.model_sampling.CONST):
        return float(reference_sigma)
    return float(reference_sigma) / max(1e-6, 1.0 - float(reference_sigma))


def free_memory(model_wrap, device) -> int:
    """Free memory on `device` as the model sees it: newer ComfyUI's patcher counts evictable dynamic-VRAM weights."""
    patcher = getattr(model_wrap.inner_model, "current_patcher", None) or model_wrap.model_patcher
    own = getattr(patcher, "get_free_memory", None)
    return int(own(device)) if callable(own) else int(comfy.model_management.get_free_memory(device))


def auto_rows(model_wrap, shape: Sequence[int]) -> int:
    """Rows per model call that fit in free memory (a CFG pair per row), or CPU_ROWS on the CPU."""
    device = model_wrap.model_patcher.load_device
    if comfy.model_management.is_device_cpu(device):
        return CPU_ROWS
    per_row = model_wrap.inner_model.memory_required([2] + list(shape[1:]))
    return int(max(1, min(64, (free_memory(model_wrap, device) * 0.8) // max(per_row, 1))))


def fix_empty_latent(patcher, latent: dict) -> torch.Tensor:
    """The latent samples exactly as the stock KSampler fixes them; newer ComfyUI also takes the latent's
    downscale ratios (feature-detected, so 0.3.64 keeps working)."""
    fix = comfy.sample.fix_empty_latent_channels
    params = inspect.signature(fix).parameters
    return fix(patcher, latent["samples"], **{k: latent.get(k) for k in RATIO_KEYS if k in params})


def stock_latent_out(latent: dict, samples: torch.Tensor) -> dict:
    """A LATENT output built from the input latent as the stock samplers build theirs (size hints dropped)."""
    out = {k: v for k, v in latent.items() if k not in RATIO_KEYS}
    out["samples"] = samples
    return out


def item_mask(mask: Optional[torch.Tensor], samples: torch.Tensor, b: int) -> Optional[torch.Tensor]:
    """Item b's noise mask, as ComfyUI's repeat_to_batch_size would have paired it with the batch."""
    if mask is None or samples.ndim != 4:
        return mask
    m = mask.reshape(-1, mask.shape[-2], mask.shape[-1])
    return m[b % m.shape[0]: b % m.shape[0] + 1]
