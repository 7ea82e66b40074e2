"""Human-preference reward models built on CLIP: PickScore (Kirstain et al. 2023, arXiv 2305.01569) and
HPSv2 / HPSv2.1 (Wu et al. 2023, arXiv 2306.09341), implemented on transformers / open_clip directly."""

from __future__ import annotations

import torch

from .clip import ClipBackbone, PromptSimilarityVerifier, load_clip_backbone, take_options

PICKSCORE_PROCESSOR = "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"
PICKSCORE_EXPECT = "the PickScore_v1 Hugging Face CLIP folder (config.json and model.safetensors)"
HPS_EXPECT = ("the HPSv2 checkpoint file (HPS_v2.1_compressed.pt or HPS_v2_compressed.pt, an open_clip ViT-H-14 "
              "state dict)")
HPS_PREPROCESS = {"resize_mode": "longest", "fill_color": 0}  # HPSv2 inference: fit the long side, pad black


class PickScoreVerifier(PromptSimilarityVerifier):
    """PickScore = exp(logit_scale) * cos(image, prompt), as the reference implementation reports it (about 18..23)."""

    name = "pickscore"

    def from_cosine(self, cos: torch.Tensor) -> torch.Tensor:
        return self.model.logit_scale() * cos


class HPSv2Verifier(PromptSimilarityVerifier):
    """HPSv2 score = cos(image, prompt) under the HPS-finetuned ViT-H-14 (about 0.2..0.35)."""

    name = "hpsv2"

    def from_cosine(self, cos: torch.Tensor) -> torch.Tensor:
        return cos


def load_pickscore(model: str = "yuvalkirstain/PickScore_v1", *, allow_download: bool = False,
                   **options) -> PickScoreVerifier:
    """Options: processor (the folder or repo with the tokenizer and image processor; PickScore_v1 ships none,
    its authors use laion/CLIP-ViT-H-14-laion2B-s32B-b79K's), batch_size."""
    opts = take_options("pickscore", options, {"processor": PICKSCORE_PROCESSOR, "batch_size": 16})
    backbone = load_clip_backbone(model, verifier="pickscore", processor=opts["processor"] or None,
                                  allow_download=allow_download, expect=PICKSCORE_EXPECT)
    return PickScoreVerifier(backbone, opts["batch_size"])


def load_hpsv2(model: str = "HPS_v2.1_compressed.pt", *, allow_download: bool = False, **options) -> HPSv2Verifier:
    """Options: arch (open_clip architecture of the checkpoint, default ViT-H-14), batch_size.

    The checkpoint holds the whole finetuned CLIP (optionally under 'state_dict'), so no base weights are needed.
    """
    opts = take_options("hpsv2", options, {"arch": "ViT-H-14", "batch_size": 16})
    backbone: ClipBackbone = load_clip_backbone(model, verifier="hpsv2", arch=opts["arch"],
                                                allow_download=allow_download, preprocess=HPS_PREPROCESS,
                                                expect=HPS_EXPECT)
    return HPSv2Verifier(backbone, opts["batch_size"])
