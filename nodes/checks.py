"""Everything refused before sampling, each error naming the node, the input and the fix."""

from __future__ import annotations

from typing import Optional

import torch

from ..verifiers.base import VerifierError
from .comfy_model import fix_empty_latent, noise_ignored
from .denoise import ADAPTIVE, function_name
from .types import LoadedVerifier


def check_sampler(node: str, sampler, input_name: str) -> None:
    """Only k-diffusion samplers (a sampler_function run by KSAMPLER) can be run on arbitrary candidate rows."""
    fn = getattr(sampler, "sampler_function", None)
    if not callable(fn) or not isinstance(getattr(sampler, "extra_options", None), dict):
        raise ValueError(f"{node}: the {input_name} input must be a k-diffusion sampler (KSamplerSelect or one of the "
                         f"Sampler* nodes); {type(sampler).__name__} runs its own loop, which cannot be searched")
    if function_name(fn) in ADAPTIVE:
        raise ValueError(f"{node}: {input_name} dpm_adaptive picks its steps from the model's outputs, so the NFEs of "
                         f"a candidate cannot be known before running it: choose another sampler")


def check_verifier(node: str, handle, prompt: Optional[str]) -> None:
    if not isinstance(handle, LoadedVerifier):
        raise ValueError(f"{node}: the verifier input must come from Load Verifier or Verifier Ensemble, "
                         f"got {type(handle).__name__}")
    needs_ref = "reference" in handle.verifier.needs
    try:
        handle.verifier.check(prompt, torch.zeros(0) if needs_ref else None)
    except VerifierError as e:
        raise ValueError(f"{node}: {e}") from e


def check_latent(node: str, latent: dict, patcher, vae) -> torch.Tensor:
    """The latent batch as the stock samplers fix it, refused up front where the search cannot run on it."""
    samples = latent.get("samples") if isinstance(latent, dict) else None
    if not isinstance(samples, torch.Tensor) or samples.is_nested:
        raise ValueError(f"{node}: latent_image is not a single image latent ({type(samples).__name__}): nested "
                         f"(audio + video) latents cannot be searched; connect an image latent")
    if samples.shape[0] == 0:
        raise ValueError(f"{node}: latent_image has 0 items: connect a latent with at least one image "
                         f"(e.g. Empty Latent Image with batch_size 1)")
    samples = fix_empty_latent(patcher, latent)
    latent_format = patcher.get_model_object("latent_format")
    video_model = getattr(latent_format, "latent_dimensions", 2) == 3
    if samples.ndim == 5 and samples.shape[2] != 1 and not video_model:
        raise ValueError(f"{node}: latent_image is a video latent with {samples.shape[2]} frames "
                         f"{tuple(samples.shape)} but the model makes images: connect an image latent (e.g. Empty "
                         f"Latent Image), or a video model (Wan, HunyuanVideo, LTX-Video) for this latent")
    if samples.ndim not in (4, 5):
        raise ValueError(f"{node}: latent_image has shape {tuple(samples.shape)}; Noise Search needs an image latent "
                         f"[batch, channels, height, width] or a video latent [batch, channels, frames, height, "
                         f"width]")
    model_channels = latent_format.latent_channels
    vae_channels = getattr(vae, "latent_channels", None)
    if vae_channels is not None and vae_channels != model_channels:
        raise ValueError(f"{node}: the vae input decodes {vae_channels}-channel latents but the model makes "
                         f"{model_channels}-channel ones: connect the VAE that belongs to the model (e.g. the "
                         f"checkpoint's own VAE output)")
    return samples


def check_video_verifier(node: str, handle: LoadedVerifier, samples: torch.Tensor) -> None:
    """A verifier that scores whole clips (temporal consistency, motion) has nothing to compare in an image."""
    video = samples.ndim == 5 and samples.shape[2] > 1
    if handle.verifier.video and not video:
        names = [m.name for m in getattr(handle.verifier, "members", [handle.verifier]) if m.video]
        raise ValueError(f"{node}: verifier {', '.join(names)} scores videos, but latent_image {tuple(samples.shape)} "
                         f"is an image latent: use an image verifier here, or search a video model's latent")


def check_model(node: str, model_sampling, sigmas: torch.Tensor, samples: torch.Tensor) -> None:
    """Refuse models whose sampling discards the initial noise: every candidate would be the same image."""
    if noise_ignored(model_sampling, sigmas[0], samples.shape[1:]):
        raise ValueError(f"{node}: this model's sampling ({type(model_sampling).__name__}) ignores the initial noise, "
                         f"so every candidate would be the same image and there is nothing to search: use a plain "
                         f"sampler for this model")


def check_images(node: str, images, input_name: str = "images") -> None:
    """An IMAGE batch `[B, H, W, 3 or 4]` with at least one image; a MASK `[B, H, W]` is named as such."""
    if not isinstance(images, torch.Tensor):
        raise ValueError(f"{node}: the {input_name} input must be an IMAGE batch, got {type(images).__name__}")
    if images.ndim == 3:
        raise ValueError(f"{node}: the {input_name} input got a MASK {tuple(images.shape)} (no colour channels): "
                         f"connect an IMAGE, not a MASK (e.g. a VAE Decode or Load Image image output)")
    if images.ndim != 4 or images.shape[-1] not in (3, 4):
        raise ValueError(f"{node}: the {input_name} input has shape {tuple(images.shape)}; an IMAGE batch is "
                         f"[batch, height, width, 3 or 4 channels]: connect an IMAGE")
    if images.shape[0] == 0:
        raise ValueError(f"{node}: the {input_name} input is an empty batch (0 images): connect at least one image")


def check_scorable(node: str, handle: LoadedVerifier) -> None:
    """Finished images alone: a verifier that compares with a mid-sampling x0 prediction cannot score them."""
    if handle.verifier.video:
        raise ValueError(f"{node}: verifier '{handle.name}' scores videos, and this node scores single images: use an "
                         f"image verifier")
    if "reference" in handle.verifier.needs:
        raise ValueError(f"{node}: verifier '{handle.name}' compares each image with its x0 prediction at sigma "
                         f"{handle.verifier.reference_sigma}, which only a sampling run has: use a verifier that "
                         f"scores finished images (any kind but self_similarity)")
