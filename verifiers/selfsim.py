"""Self-supervised verifier: cosine similarity between the features of the x0 prediction at sigma 0.4 and of the
final image (the "self-supervised verifiers" of Ma et al., 2025, arXiv 2501.09732).

Backbones: DINOv2 (HF `Dinov2Model`, layer-normed CLS token), SigLIP (HF `SiglipVisionModel`, attention-pooled
output) and CLIP (open_clip or HF, projected image embedding via `clip.load_clip_backbone`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F

from . import hf
from .base import Verifier, VerifierError
from .dino import DINOV2_PREPROCESS
from .loading import model_source, resolve
from .preprocess import ImagePreprocess

BACKBONES = ("clip", "dinov2", "siglip")
DEFAULT_MODEL = "facebook/dinov2-small"
REFERENCE_SIGMA = 0.4
_MODEL_TYPES = {"dinov2": "dinov2", "siglip": "siglip", "siglip_vision_model": "siglip",
                "clip": "clip", "clip_vision_model": "clip"}
SOURCES = ("https://huggingface.co/facebook/dinov2-small (DINOv2), "
           "https://huggingface.co/google/siglip-base-patch16-224 (SigLIP)")
EXPECT = ("a Hugging Face folder (config.json, model.safetensors, preprocessor_config.json or processor_config.json) "
          "of a DINOv2 (Dinov2Model), SigLIP (SiglipModel or SiglipVisionModel) or CLIP model, or an open_clip "
          "checkpoint with the option 'arch'")


class VisionFeatures(torch.nn.Module):
    """An HF vision tower and its preprocessing; `encode_images` gives L2-normalised float32 pooled features."""

    def __init__(self, net: torch.nn.Module, preprocess: ImagePreprocess) -> None:
        super().__init__()
        self.net = net.eval().requires_grad_(False)
        self.preprocess = preprocess

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        p = next(self.net.parameters())
        out = self.net(pixel_values=self.preprocess(images, p.device, p.dtype))
        return F.normalize(out.pooler_output.float(), dim=-1)


class SelfSimilarity(Verifier):
    """cos(features(final image), features(x0 prediction at sigma 0.4)); 1 when the sample kept its early layout."""

    name = "self_similarity"
    needs = frozenset({"reference"})
    reference_sigma = REFERENCE_SIGMA

    def __init__(self, backbone: torch.nn.Module, kind: str, batch_size: int = 16) -> None:
        super().__init__()
        self.model = backbone
        self.backbone = kind
        self.batch_size = batch_size

    @torch.no_grad()
    def score(self, images: torch.Tensor, prompt: Optional[str] = None,
              references: Optional[torch.Tensor] = None) -> torch.Tensor:
        if references is not None and references.shape[0] != images.shape[0]:
            raise VerifierError(f"verifier 'self_similarity' got {images.shape[0]} images but "
                                f"{references.shape[0]} reference images; give one reference per image")
        return super().score(images, prompt, references)

    def _score(self, images: torch.Tensor, prompt: Optional[str], references: Optional[torch.Tensor]) -> torch.Tensor:
        return (self.model.encode_images(images) * self.model.encode_images(references)).sum(dim=-1)


def _config(folder: Path, source: str, verifier: str) -> Optional[dict]:
    path = folder / "config.json"
    return hf.config_dict(path, verifier, source) if path.is_file() else None


def infer_backbone(path: Path, source: str = SOURCES, verifier: str = "self_similarity") -> str:
    """The backbone a checkpoint holds: config.json's model_type for HF folders, CLIP for open_clip files/folders."""
    if path.is_file() or (path / "open_clip_config.json").is_file():
        return "clip"
    cfg = _config(path, source, verifier)
    kind = _MODEL_TYPES.get(cfg.get("model_type")) if cfg else None
    if kind is None:
        found = f"{path / 'config.json'} says model_type '{cfg.get('model_type')}'" if cfg else "no config.json"
        raise VerifierError(f"verifier '{verifier}': cannot tell the backbone of {path} ({found}); "
                            f"expected {EXPECT}, or set the option 'backbone' to one of {', '.join(BACKBONES)}")
    return kind


def _siglip_default(cfg: dict) -> ImagePreprocess:
    """SiglipImageProcessor's defaults at the checkpoint's resolution, for folders without an image processor."""
    size = int((cfg.get("vision_config") or cfg).get("image_size", 224))
    return ImagePreprocess(size=(size, size), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), resize_mode="squash",
                           do_crop=False)


def _load_hf_vision(folder: Path, kind: str, source: str, verifier: str) -> VisionFeatures:
    from transformers import Dinov2Model, SiglipVisionModel

    cfg = hf.read_config(folder, verifier, source, tuple(_MODEL_TYPES), "a DINOv2, SigLIP or CLIP model")
    if _MODEL_TYPES[cfg["model_type"]] != kind:
        raise VerifierError(f"verifier '{verifier}': backbone '{kind}' was asked for, but "
                            f"{folder / 'config.json'} says it holds a '{cfg['model_type']}' model; set 'backbone' "
                            f"to auto or to the model's family")
    weights = hf.weights_file(folder, verifier, source)
    if kind == "dinov2":
        net_class, default = Dinov2Model, DINOV2_PREPROCESS
    else:
        net_class, default = SiglipVisionModel, _siglip_default(cfg)
    preprocess = hf.image_preprocess(folder, verifier, source, default)
    return VisionFeatures(hf.load_model(net_class, folder, weights, verifier, source), preprocess)


def load_self_similarity(model: str = DEFAULT_MODEL, *, allow_download: bool = False, backbone: str = "auto",
                         arch: Optional[str] = None, batch_size: int = 16, **options) -> SelfSimilarity:
    """Options: backbone (auto | clip | dinov2 | siglip; auto reads the checkpoint), arch (open_clip files),
    batch_size."""
    if options:
        raise VerifierError(f"verifier 'self_similarity' has no option {', '.join(map(repr, sorted(options)))}; "
                            f"its options are arch, backbone, batch_size")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise VerifierError(f"verifier 'self_similarity': option 'batch_size' must be a positive integer, "
                            f"got {batch_size!r}")
    net, kind = load_backbone(model, "self_similarity", allow_download=allow_download, backbone=backbone, arch=arch)
    return SelfSimilarity(net, kind, batch_size)


def load_backbone(model: str, verifier: str, *, allow_download: bool = False, backbone: str = "auto",
                  arch: Optional[str] = None) -> tuple[torch.nn.Module, str]:
    """A feature backbone (DINOv2, SigLIP or CLIP; `encode_images` gives L2-normalised features) and its family,
    for the verifiers that compare image features (self-similarity, temporal consistency)."""
    if backbone not in ("auto", *BACKBONES):
        raise VerifierError(f"verifier '{verifier}': unknown backbone '{backbone}'; use auto, {', '.join(BACKBONES)}")
    source = model_source(model, verifier, SOURCES)
    path = resolve(model, verifier=verifier, expect=EXPECT, source=source, allow_download=allow_download)
    if path.is_file() and (path.parent / "config.json").is_file():
        path = path.parent  # a weights file inside an HF folder
    kind = infer_backbone(path, source, verifier) if backbone == "auto" else backbone
    if kind == "clip":
        from .clip import load_clip_backbone

        return load_clip_backbone(str(path), verifier=verifier, arch=arch, allow_download=allow_download,
                                  expect=EXPECT), kind
    if arch is not None:
        raise VerifierError(f"verifier '{verifier}': option 'arch' is for open_clip checkpoints, not the {kind} "
                            f"backbone")
    return _load_hf_vision(path, kind, source, verifier), kind
