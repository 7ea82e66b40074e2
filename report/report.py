"""SearchReport: what travels on ComfyUI's SEARCH_REPORT wire (a SearchResult plus what a viewer shows)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import torch

from ..verifiers.frames import frame_indices

THUMB_SIZE = 192  # longer side of the thumbnail kept for every final candidate


STRIP_FRAMES = 4  # frames side by side in a video candidate's thumbnail


def video_strip(videos: torch.Tensor, frames: int = STRIP_FRAMES) -> torch.Tensor:
    """Videos `[B, T, H, W, C]` -> `[B, H, F * W, C]`: F frames spread over each clip, side by side."""
    picked = videos[:, frame_indices(videos.shape[1], frames)]
    return torch.cat(picked.unbind(1), dim=2)


def make_thumbs(images: torch.Tensor) -> torch.Tensor:
    """Images `[B, H, W, 3]` in 0..1 (any device) -> uint8 `[B, h, w, 3]` on the CPU, at most THUMB_SIZE on the longer
    side (bilinear, antialiased): one resize and one host copy for the whole batch. Videos `[B, T, H, W, 3]` become
    a strip of frames (video_strip)."""
    if images.ndim == 5:
        images = video_strip(images)
    h, w = images.shape[1:3]
    scale = min(1.0, THUMB_SIZE / max(h, w))
    x = images[..., :3].movedim(-1, 1).float()
    if scale < 1.0:
        size = (max(1, round(h * scale)), max(1, round(w * scale)))
        x = torch.nn.functional.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
    return (x.movedim(1, -1).clamp(0, 1) * 255).round().to(torch.uint8).cpu()


def make_thumb(image: torch.Tensor) -> torch.Tensor:
    """One `[H, W, 3]` image -> its uint8 thumbnail (see make_thumbs)."""
    return make_thumbs(image.unsqueeze(0))[0]


@dataclass
class SearchReport:
    """One search per latent batch item; per item, by final candidate id (CPU tensors): every latent `[*shape]`,
    every thumbnail (uint8 `[h, w, 3]`, see make_thumb; both in TensorStores, RAM then a temporary file) and the
    full images `[H, W, 3]` in 0..1 of the best and the top_k only. `decode(latents, ids)` turns candidates `ids`'
    latents `[K, *shape]` into full images, so any other candidate is decoded when picked. Intermediate (Paths)
    candidates have none of these."""

    results: list  # list[SearchResult], one per latent batch item
    verifier: str
    members: list = field(default_factory=list)  # ensemble member names, [] for a single verifier
    prompt: Optional[str] = None
    seconds: float = 0.0
    images: list = field(default_factory=list)  # per item: dict[int, Tensor]
    latents: list = field(default_factory=list)  # per item: Mapping[int, Tensor] (TensorStore)
    notes: list = field(default_factory=list)  # facts about the whole run (each item's own are in its result)
    thumbs: list = field(default_factory=list)  # per item: Mapping[int, uint8 Tensor] (TensorStore)
    decode: Optional[Callable[[torch.Tensor, list], torch.Tensor]] = None  # (latents, their candidate ids)

    def image(self, item: int, cid: int) -> torch.Tensor:
        """Candidate `cid`'s full image (a video's frames `[T, H, W, 3]`): the stored one, else its latent decoded
        now."""
        stored = self.images[item].get(cid) if item < len(self.images) else None
        if stored is not None:
            return stored
        if item >= len(self.latents) or cid not in self.latents[item]:
            stored_ids = sorted(self.latents[item]) if item < len(self.latents) else []
            raise ValueError(f"the report stores no latent for candidate {cid} of batch item {item}; stored ids: "
                             f"{stored_ids}")
        if self.decode is None:
            raise ValueError(f"candidate {cid} of batch item {item} has no stored image and the report has no decoder")
        return self.decode(self.latents[item][cid].unsqueeze(0), [cid])[0]

    def thumb(self, item: int, cid: int) -> Optional[torch.Tensor]:
        """Candidate `cid`'s thumbnail (uint8), made from its full image when only that is stored."""
        thumbs = self.thumbs[item] if item < len(self.thumbs) else {}
        if cid in thumbs:
            return thumbs[cid]
        images = self.images[item] if item < len(self.images) else {}
        return make_thumb(images[cid]) if cid in images else None

    def all_notes(self) -> list[str]:
        """Every note of the run, the run's first, then each item's (labelled when there are several items)."""
        many = len(self.results) > 1
        return list(self.notes) + [f"item {i}: {n}" if many else n for i, r in enumerate(self.results) for n in r.notes]

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe summary for the node's `ui` output and saved images."""
        return {
            "version": 1, "verifier": self.verifier, "members": list(self.members), "prompt": self.prompt,
            "seconds": round(float(self.seconds), 3), "notes": list(self.notes),
            "items": [r.to_dict() for r in self.results],
        }


def image_batch(images) -> torch.Tensor:
    """Per-item images `[H, W, 3]` -> an IMAGE batch; per-item videos `[T, H, W, 3]` -> their frames one after
    another, as the stock VAE Decode outputs a video batch."""
    images = list(images)
    return torch.cat(images) if images[0].ndim == 4 else torch.stack(images)
