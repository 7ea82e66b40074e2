"""Decoding and scoring candidates: the VAE turns latents into images, the verifier scores them, and NaN is
blamed on whichever of the model and the VAE produced it."""

from __future__ import annotations

from typing import Optional, Sequence

import torch

from ..search.types import Candidate
from .types import LoadedVerifier

DECODE = "vae"  # the full VAE decode every candidate is scored on


class Scorer:
    """Decodes latents with the VAE and scores them; keeps every final candidate's image and latent."""

    def __init__(self, node: str, vae, handle: LoadedVerifier, prompt: Optional[str]):
        self.node = node
        self.vae = vae
        self.handle = handle
        self.prompt = prompt
        self.images: dict = {}
        self.latents: dict = {}

    def decode(self, latents: torch.Tensor, batch: Sequence[Candidate]) -> torch.Tensor:
        """Decode candidate latents; NaN is blamed on whichever of the model and the VAE produced it."""
        bad = [c.id for c, row in zip(batch, latents) if not torch.isfinite(row).all()]
        if bad:
            raise ValueError(f"{self.node}: the model produced NaN or infinite latents for candidate(s) {bad}: the "
                             f"diffusion model overflows in its dtype; try a different model dtype (e.g. ComfyUI's "
                             f"--force-fp32 or --bf16-unet) or a lower cfg")
        images = self.vae.decode(latents)
        if images.ndim == 5:
            if images.shape[1] != 1:
                raise ValueError(f"{self.node}: the VAE decoded {images.shape[1]} frames per candidate: Noise Search "
                                 f"scores single images, not videos")
            images = images[:, 0]
        images = images.to("cpu", torch.float32)
        bad = [c.id for c, image in zip(batch, images) if torch.isnan(image).any()]
        if bad:
            raise ValueError(f"{self.node}: the VAE decoded NaN pixels for candidate(s) {bad} from finite latents: "
                             f"the VAE overflows in half precision; start ComfyUI with --fp32-vae (or --cpu-vae), "
                             f"or use a VAE fixed for fp16")
        return images

    def score(self, images: torch.Tensor, references: Optional[torch.Tensor]):
        self.handle.load()
        verifier = self.handle.verifier
        scores = verifier.score(images, self.prompt, references)
        members = verifier.member_scores()
        return (scores, members) if members else scores
