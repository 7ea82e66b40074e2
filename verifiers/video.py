"""Video verifiers: whole clips in, one score per clip. Temporal consistency (VBench's subject consistency, Huang et
al. 2024, arXiv 2311.17982: features of each frame against the first and the previous one) and a motion measure,
so that a still clip cannot win on consistency alone; pair them with a per-frame image verifier in an ensemble."""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from .base import Verifier, VerifierError
from .selfsim import load_backbone


class VideoVerifier(Verifier):
    """Scores videos `[B, T, H, W, 3]` through `score_video`; single images have nothing to compare."""

    video = True

    def score(self, images, prompt=None, references=None):
        raise VerifierError(f"verifier '{self.name}' scores videos, not single images: use it in a search of a "
                            f"video model's latent, and an image verifier for images")

    @torch.no_grad()
    def score_video(self, videos: torch.Tensor, prompt: Optional[str] = None,
                    references: Optional[torch.Tensor] = None, frames: int = 4, how: str = "mean") -> torch.Tensor:
        """One score per clip from all its frames (`frames` and `how` are for image verifiers)."""
        if videos.ndim != 5 or videos.shape[1] < 2:
            raise VerifierError(f"verifier '{self.name}' needs videos of at least 2 frames [B, T, H, W, 3], got "
                                f"shape {tuple(videos.shape)}")
        return torch.stack([self._clip(v).float().cpu() for v in videos])

    def _clip(self, frames: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class TemporalConsistency(VideoVerifier):
    """Mean over frames t >= 1 of (cos(f_0, f_t) + cos(f_{t-1}, f_t)) / 2 on backbone features (DINOv2 as VBench's
    subject consistency, CLIP as its background consistency); 1 for a clip whose content never changes."""

    name = "temporal_consistency"

    def __init__(self, backbone: torch.nn.Module, kind: str, batch_size: int = 16) -> None:
        super().__init__()
        self.model = backbone
        self.backbone = kind
        self.batch_size = batch_size

    def _clip(self, frames: torch.Tensor) -> torch.Tensor:
        f = torch.cat([self.model.encode_images(frames[i:i + self.batch_size])
                       for i in range(0, frames.shape[0], self.batch_size)])
        first = (f[:1] * f[1:]).sum(dim=-1)
        previous = (f[:-1] * f[1:]).sum(dim=-1)
        return ((first + previous) / 2).mean()


class _NoWeights(torch.nn.Module):
    """The module a weightless verifier hands to ComfyUI's model management: one buffer gives it a device."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("anchor", torch.zeros(()))


class Motion(VideoVerifier):
    """Mean absolute change between adjacent frames, in pixel values 0..1 (0 = a still clip); frames are resized to
    at most `size` pixels on the longer side first, so the measure ignores fine noise and costs little."""

    name = "motion"

    def __init__(self, size: int = 64) -> None:
        super().__init__()
        self.model = _NoWeights()
        self.size = size

    @property
    def device(self) -> torch.device:
        return self.model.anchor.device

    @property
    def dtype(self) -> torch.dtype:
        return torch.float32

    def _clip(self, frames: torch.Tensor) -> torch.Tensor:
        x = frames[..., :3].movedim(-1, 1).float()
        scale = min(1.0, self.size / max(x.shape[-2:]))
        if scale < 1.0:
            size = (max(1, round(x.shape[-2] * scale)), max(1, round(x.shape[-1] * scale)))
            x = F.interpolate(x, size=size, mode="area")
        return (x[1:] - x[:-1]).abs().mean()


def _positive(verifier: str, option: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise VerifierError(f"verifier '{verifier}': option '{option}' must be a positive integer, got {value!r}")
    return value


def load_temporal_consistency(model: str = "facebook/dinov2-small", *, allow_download: bool = False,
                              backbone: str = "auto", arch: Optional[str] = None, batch_size: int = 16,
                              **options) -> TemporalConsistency:
    """Options: backbone (auto | clip | dinov2 | siglip), arch (open_clip files), batch_size (frames per call)."""
    if options:
        raise VerifierError(f"verifier 'temporal_consistency' has no option {', '.join(map(repr, sorted(options)))}; "
                            f"its options are arch, backbone, batch_size")
    size = _positive("temporal_consistency", "batch_size", batch_size)
    net, kind = load_backbone(model, "temporal_consistency", allow_download=allow_download, backbone=backbone,
                              arch=arch)
    return TemporalConsistency(net, kind, size)


def load_motion(model: str = "", *, allow_download: bool = False, size: int = 64,
                **options) -> Motion:
    """No model; option size (longer side the frames are compared at)."""
    if options:
        raise VerifierError(f"verifier 'motion' has no option {', '.join(map(repr, sorted(options)))}; its option "
                            f"is size")
    return Motion(_positive("motion", "size", size))
