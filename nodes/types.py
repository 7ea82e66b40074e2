"""The pack's wire types: VERIFIER (a loaded verifier plus the patchers ComfyUI moves) and SEARCH_REPORT,
and the NOISE object the samplers output."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import torch

import comfy.model_management
from comfy_api.latest import io

from ..verifiers.base import Verifier

VerifierType = io.Custom("VERIFIER")
SearchReportType = io.Custom("SEARCH_REPORT")


@dataclass
class LoadedVerifier:
    """What travels on a VERIFIER wire: the Verifier and one ModelPatcher per weight-holding member.

    ComfyUI's model management loads `patchers` next to the diffusion model before scoring, so a verifier
    never pushes the diffusion model off the GPU by moving itself.
    """

    verifier: Verifier
    patchers: list = field(default_factory=list)  # comfy.model_patcher.ModelPatcher, one per member
    label: str = ""
    frames: int = 4  # a video is scored on this many frames spread over it (verifiers/frames.py)
    frame_aggregate: str = "mean"  # and its score is their mean or their min

    @property
    def name(self) -> str:
        return self.label or self.verifier.name

    @property
    def members(self) -> list:
        """Ensemble member names, [] for a single verifier."""
        return list(getattr(self.verifier, "names", []))

    def load(self) -> None:
        """Put the verifier weights on their device through ComfyUI's model management, in full.

        Verifiers are plain torch modules that cannot run split between devices (ComfyUI's lowvram mode works
        only for its own layers), so they load with force_full_load; ComfyUI frees only the memory that takes,
        and the search re-loads the diffusion model before its next model call.
        """
        if self.patchers:
            comfy.model_management.load_models_gpu(self.patchers, force_full_load=True)


class VerifierWeights(torch.nn.Module):
    """The module a verifier's ModelPatcher manages: a container, so the attributes ModelPatcher sets
    (`device`, memory counters) never land on the verifier's own (possibly Hugging Face) module."""

    def __init__(self, module: torch.nn.Module) -> None:
        super().__init__()
        self.module = module


class SearchNoise:
    """NOISE output of a search: the winning initial noise of every latent batch item.

    `seed` is item 0's seed + winner id, so SamplerCustomAdvanced fed this noise, the same guider, sampler and
    sigmas and a batch-1 latent reproduces the best latent, ancestral noise included (Random and Zero-Order).
    """

    def __init__(self, noises: torch.Tensor, seed: int, note: Optional[str] = None) -> None:
        self.noises = noises.detach().to("cpu")
        self.seed = int(seed)
        self.note = note

    def generate_noise(self, input_latent: dict) -> torch.Tensor:
        samples = input_latent["samples"]
        if tuple(samples.shape[1:]) != tuple(self.noises.shape[1:]) or samples.shape[0] != self.noises.shape[0]:
            raise ValueError(
                f"this NOISE holds the winning noise of a search over a latent of shape {tuple(self.noises.shape)} "
                f"but the sampler got a latent of shape {tuple(samples.shape)}: use the same latent image "
                f"as the Noise Search sampler (same size and batch)")
        return self.noises.to(dtype=samples.dtype).clone()
