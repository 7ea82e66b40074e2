"""SearchReport: what travels on ComfyUI's SEARCH_REPORT wire (a SearchResult plus what a viewer shows)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

import torch

from .types import SearchResult


@dataclass
class SearchReport:
    """One search per latent batch item. `images`/`latents` hold final candidates by id (CPU tensors):
    images `[H, W, 3]` in 0..1, latents `[*shape]`; intermediate (Paths) candidates have neither."""

    results: list  # list[SearchResult], one per latent batch item
    verifier: str
    members: list = field(default_factory=list)  # ensemble member names, [] for a single verifier
    prompt: Optional[str] = None
    seconds: float = 0.0
    images: list = field(default_factory=list)  # per item: dict[int, Tensor]
    latents: list = field(default_factory=list)  # per item: dict[int, Tensor]

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe summary for the node's `ui` output and saved images."""
        return {
            "version": 1, "verifier": self.verifier, "members": list(self.members), "prompt": self.prompt,
            "seconds": round(float(self.seconds), 3), "items": [r.to_dict() for r in self.results],
        }
