"""The fast scoring decode: ComfyUI's TAESD preview decoders (models/vae_approx), found as its latent previewer finds
them, decoding model-space latents in chunks sized to free memory."""

from __future__ import annotations

import os

import torch

import comfy.model_management
import folder_paths
import latent_preview
from comfy.taesd.taesd import TAESD

FULL = "full VAE"
TAESD_X0 = "TAESD for x0 previews"
TAESD_ALL = "TAESD for all"
SCORING_DECODES = (FULL, TAESD_X0, TAESD_ALL)
TAESD_SOURCE = "https://github.com/madebyollin/taesd"
_BYTES_PER_PIXEL = 64 * 4 * 3  # TAESD's widest activation: 64 float32 channels, a few alive at once


def find_preview_decoder(node: str, latent_format, mode: str) -> str:
    """Full path of the TAESD decoder ComfyUI's previewer would use for `latent_format`; an error naming the file
    and the folder it goes in when there is none."""
    name = getattr(latent_format, "taesd_decoder_name", None)
    fix = f"or set scoring_decode to '{FULL}'"
    if name is None:
        raise ValueError(f"{node}: scoring_decode '{mode}' needs a TAESD preview decoder, but ComfyUI has none for "
                         f"this model's latent format ({type(latent_format).__name__}): set scoring_decode to "
                         f"'{FULL}'")
    if name in getattr(latent_preview, "VIDEO_TAES", ()):  # newer ComfyUI: video TAEs load through its VAE class
        raise ValueError(f"{node}: scoring_decode '{mode}': this model's preview decoder {name} is a video decoder, "
                         f"which the TAESD scoring decode does not run: set scoring_decode to '{FULL}'")
    found = next((f for f in folder_paths.get_filename_list("vae_approx") if f.startswith(name)), None)
    if found is None:
        folder = (folder_paths.get_folder_paths("vae_approx") or ["ComfyUI/models/vae_approx"])[0]
        raise ValueError(f"{node}: scoring_decode '{mode}' needs ComfyUI's preview decoder {name}.safetensors (or "
                         f"{name}.pth) in {folder}, the file ComfyUI's TAESD previews use: get it from {TAESD_SOURCE} "
                         f"and put it there, {fix}")
    return folder_paths.get_full_path("vae_approx", found)


class PreviewDecoder:
    """A TAESD decoder on the model's device: model-space latents `[K, C, h, w]` -> images `[K, H, W, 3]` in 0..1."""

    def __init__(self, path: str, latent_format, device: torch.device) -> None:
        self.name = os.path.basename(path)
        self.module = TAESD(None, path, latent_channels=latent_format.latent_channels).eval()
        self.device = device

    @torch.no_grad()
    def __call__(self, latents: torch.Tensor) -> torch.Tensor:
        module = self.module.to(self.device)
        pixels = latents.shape[-2] * latents.shape[-1] * 64  # 8x upscale in each direction
        free = comfy.model_management.get_free_memory(self.device)
        rows = max(1, int(free * 0.5) // (pixels * _BYTES_PER_PIXEL))
        out = []
        for i in range(0, latents.shape[0], rows):
            x = latents[i:i + rows].to(self.device, torch.float32)
            out.append(((module.decode(x)[:, :3] + 1) / 2).clamp(0, 1).movedim(1, -1))
        return torch.cat(out)
