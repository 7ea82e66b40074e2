"""Decoding and scoring candidates: the VAE (or a TAESD preview decoder) turns latents into images, the verifier
scores them, and NaN is blamed on whichever of the model and the decoder produced it. Memory stays bounded: every
final candidate keeps its latent (RAM up to a budget, then disk) and a thumbnail, full images only the best `keep`."""

from __future__ import annotations

from typing import Optional, Sequence

import torch

from ..report.report import make_thumbs
from ..report.store import TensorStore
from ..search.types import Candidate, SearchResult
from ..verifiers.grading import UnparsedAnswer
from .preview_decode import TAESD_ALL, PreviewDecoder
from .types import LoadedVerifier

LATENT_RAM, THUMB_RAM = 256 << 20, 64 << 20  # host RAM one search keeps latents and thumbnails in; then a file
VAE, TAESD = "vae", "taesd"  # Candidate.decode: what made the image a candidate was scored on


class Scorer:
    """Decodes latents for the verifier and scores them; keeps every final's latent (in `latents`) and thumbnail
    (CPU) and the full images of the `keep` best scored so far."""

    def __init__(self, node: str, vae, handle: LoadedVerifier, prompt: Optional[str], keep: int = 1,
                 preview: Optional[PreviewDecoder] = None, preview_mode: Optional[str] = None,
                 latents: Optional[TensorStore] = None, thumbs: Optional[TensorStore] = None):
        self.node = node
        self.vae = vae
        self.handle = handle
        self.prompt = prompt
        self.keep = max(1, int(keep))
        self.preview = preview
        self.preview_finals = preview is not None and preview_mode == TAESD_ALL
        self.images: dict = {}  # id -> full image, at most `keep` (plus the winners after finish)
        self.ranks: dict = {}  # id -> the batch score its image was kept by
        self.thumbs = TensorStore(THUMB_RAM) if thumbs is None else thumbs
        self.latents = TensorStore(LATENT_RAM) if latents is None else latents

    def decoder_for(self, final: bool) -> str:
        """VAE or TAESD: previews score intermediates (x0 predictions, references), and finals with TAESD for all."""
        return TAESD if self.preview is not None and (self.preview_finals or not final) else VAE

    def decode(self, latents: torch.Tensor, ids: Sequence[int]) -> torch.Tensor:
        """Full VAE decode of candidates `ids`' user-space latents; NaN is blamed on the model or the VAE."""
        self._check_finite(latents, ids)
        images = self.vae.decode(latents)
        if images.ndim == 5 and images.shape[1] == 1:  # a one-frame latent of a video model: an image
            images = images[:, 0]
        images = images.to("cpu", torch.float32)
        bad = [i for i, image in zip(ids, images) if torch.isnan(image).any()]
        if bad:
            raise ValueError(f"{self.node}: the VAE decoded NaN pixels for candidate(s) {bad} from finite latents: "
                             f"the VAE overflows in half precision; start ComfyUI with --fp32-vae (or --cpu-vae), "
                             f"or use a VAE fixed for fp16")
        return images

    def decode_preview(self, model_latents: torch.Tensor, ids: Sequence[int]) -> torch.Tensor:
        """TAESD decode of model-space latents, left on the decoder's device for the verifier."""
        self._check_finite(model_latents, ids)
        images = self.preview(model_latents)
        bad = [i for i, image in zip(ids, images) if torch.isnan(image).any()]
        if bad:
            raise ValueError(f"{self.node}: the preview decoder {self.preview.name} decoded NaN pixels for "
                             f"candidate(s) {bad}: set scoring_decode to 'full VAE'")
        return images

    def _check_finite(self, latents: torch.Tensor, ids: Sequence[int]) -> None:
        bad = [i for i, row in zip(ids, latents) if not torch.isfinite(row).all()]
        if bad:
            raise ValueError(f"{self.node}: the model produced NaN or infinite latents for candidate(s) {bad}: the "
                             f"diffusion model overflows in its dtype; try a different model dtype (e.g. ComfyUI's "
                             f"--force-fp32 or --bf16-unet) or a lower cfg")

    def score(self, images: torch.Tensor, references: Optional[torch.Tensor], batch: Sequence[Candidate]):
        """Verifier scores (and member scores) of `images`; a grader's unparsable answer names the candidate.

        Videos `[B, T, H, W, C]` go to the verifier's `score_video` (image verifiers score the handle's `frames`
        spread over each clip, aggregated by its `frame_aggregate`); each candidate's frame indices and per-frame
        scores go to its `extra["frames"]`."""
        self.handle.load()
        verifier = self.handle.verifier
        video = images.ndim == 5
        try:
            if video:
                scores = verifier.score_video(images, self.prompt, references, self.handle.frames,
                                              self.handle.frame_aggregate)
            else:
                scores = verifier.score(images, self.prompt, references)
        except UnparsedAnswer as e:
            where = f", frame {e.frame}" if getattr(e, "frame", None) is not None else ""
            raise ValueError(f"{self.node}: candidate {batch[e.index].id}{where}: {e}") from e
        if video:
            per_frame = verifier.frame_scores
            for j, c in enumerate(batch):
                c.extra["frames"] = {"indices": list(verifier.frame_indices),
                                     "aggregate": self.handle.frame_aggregate,
                                     "scores": {name: [float(v) for v in t[j]] for name, t in per_frame.items()}}
        members = verifier.member_scores()
        return (scores, members) if members else scores

    def keep_final(self, batch: Sequence[Candidate], latents: torch.Tensor, images: torch.Tensor,
                   scores: torch.Tensor, full: bool) -> None:
        """Store every final's latent and thumbnail; keep full images (`full`: VAE-decoded) of the `keep` best."""
        latents = latents.detach().to("cpu")
        for c, latent, thumb, image, s in zip(batch, latents, make_thumbs(images), images, scores.tolist()):
            self.latents.add(c.id, latent)
            self.thumbs.add(c.id, thumb)
            if full:
                self.images[c.id] = image.detach().to("cpu", copy=True)
                self.ranks[c.id] = s
        while len(self.images) > self.keep:
            worst = min(self.ranks, key=lambda i: (self.ranks[i], -i))
            del self.images[worst], self.ranks[worst]

    def keep_remote(self, batch: Sequence[Candidate], latents: Sequence[torch.Tensor],
                    thumbs: Sequence[torch.Tensor]) -> None:
        """Finals a worker scored: their latents and thumbnails (the winners' full images are decoded in finish)."""
        for c, latent, thumb in zip(batch, latents, thumbs):
            self.latents.add(c.id, latent)
            self.thumbs.add(c.id, thumb)

    def finish(self, result: SearchResult) -> None:
        """Full images for the winner and the top_k exactly: the missing ones decoded by the VAE, the others dropped."""
        wanted = list(dict.fromkeys([result.best_id, *result.topk_ids]))
        missing = [i for i in wanted if i not in self.images]
        if missing:
            self.images.update(zip(missing, self.decode(torch.stack([self.latents[i] for i in missing]), missing)))
        self.images = {i: self.images[i] for i in wanted}
        self.ranks = {}
