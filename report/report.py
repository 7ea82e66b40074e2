"""SearchReport: what travels on ComfyUI's SEARCH_REPORT wire (a SearchResult plus what a viewer shows)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional


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
    notes: list = field(default_factory=list)  # facts about the whole run (each item's own are in its result)

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
