"""The verifier interface: images in ComfyUI's layout in, one float per image out, higher is better."""

from __future__ import annotations

from types import MappingProxyType
from typing import Mapping, Optional, Sequence

import torch

from .frames import aggregate_frames, select_frames


class VerifierError(RuntimeError):
    """A verifier cannot run: missing model files, missing prompt or labels, bad options. The message names the fix."""


class Verifier:
    """Scores a batch of images `[B, H, W, 3]` (floats in 0..1) in input order.

    `needs` lists what `score` requires beyond images: "prompt", "reference" (x0 prediction images at
    `reference_sigma`), "labels". All weights live in `self.model`, one `torch.nn.Module`, so a host
    (ComfyUI's model management) can move it; `score` runs wherever that module currently is.
    """

    name: str = "verifier"
    needs: frozenset = frozenset()
    reference_sigma: Optional[float] = None
    batch_size: int = 16  # images per model call
    video: bool = False  # scores whole clips only (score_video): temporal consistency, motion
    frame_indices: Sequence[int] = ()  # the last score_video's frames, and their scores {name: [B, F]} (none: the
    frame_scores: Mapping[str, torch.Tensor] = MappingProxyType({})  # clip was judged whole)

    def __init__(self) -> None:
        self.model: Optional[torch.nn.Module] = None

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def to(self, device=None, dtype=None) -> "Verifier":
        self.model.to(device=device, dtype=dtype)
        return self

    def release(self) -> None:
        """Drop the weights; the verifier cannot score afterwards."""
        self.model = None

    def check(self, prompt: Optional[str] = None, references: Optional[torch.Tensor] = None) -> None:
        """Raise VerifierError naming what is missing, before any compute is spent."""
        if "prompt" in self.needs and not (prompt and prompt.strip()):
            raise VerifierError(f"verifier '{self.name}' needs a prompt: connect the same text you encode for the "
                                f"sampler to the 'prompt' input")
        if "reference" in self.needs and references is None:
            raise VerifierError(f"verifier '{self.name}' needs reference images (x0 predictions at sigma "
                                f"{self.reference_sigma})")

    @torch.no_grad()
    def score(self, images: torch.Tensor, prompt: Optional[str] = None,
              references: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Return float32 scores `[B]` on the CPU, in input order, scoring `batch_size` images per model call."""
        self.check(prompt, references)
        out = []
        for i in range(0, images.shape[0], self.batch_size):
            ref = None if references is None else references[i:i + self.batch_size]
            out.append(self._score(images[i:i + self.batch_size], prompt, ref).float().cpu())
        return torch.cat(out) if out else torch.zeros(0)

    def _score(self, images: torch.Tensor, prompt: Optional[str], references: Optional[torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    @torch.no_grad()
    def score_video(self, videos: torch.Tensor, prompt: Optional[str] = None,
                    references: Optional[torch.Tensor] = None, frames: int = 4, how: str = "mean") -> torch.Tensor:
        """Scores `[B]` of videos `[B, T, H, W, 3]`: `frames` frames spread over each clip, scored as images and
        aggregated by `how` (mean, min); `frame_indices` and `frame_scores` ({name: [B, F]}) keep them."""
        flat, self.frame_indices = select_frames(videos, frames)
        refs = None if references is None else select_frames(references, frames)[0]
        try:
            per_frame = self.score(flat, prompt, refs)
        except VerifierError as e:  # an error naming an image (a grader's answer) names its video and frame
            if isinstance(getattr(e, "index", None), int):
                e.frame = self.frame_indices[e.index % len(self.frame_indices)]
                e.index //= len(self.frame_indices)
            raise
        self.frame_scores = {self.name: per_frame.reshape(videos.shape[0], -1)}
        return aggregate_frames(per_frame, videos.shape[0], how)

    def member_scores(self) -> dict:
        """Per-member scores of the last `score` call (ensembles); empty for single verifiers."""
        return {}
