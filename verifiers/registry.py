"""Verifier kinds by name: what each needs, its default model, and one entry point that loads any of them.

Loader modules are imported on demand, so a kind whose dependencies are missing fails only when it is loaded.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Optional

import torch

from .base import Verifier, VerifierError


@dataclass(frozen=True)
class KindInfo:
    """What the UI needs to know about a kind; `needs` uses the `Verifier.needs` vocabulary."""

    kind: str
    module: str
    loader: str
    default_model: str
    summary: str
    needs: frozenset = frozenset()
    required_options: tuple = ()
    options: dict = field(default_factory=dict)
    reference_sigma: Optional[float] = None
    remote: bool = False  # `model` names what a server serves, not a file or folder
    model_free: bool = False  # reads no model at all
    video: bool = False  # scores whole videos only

    def to_dict(self) -> dict:
        return {"kind": self.kind, "needs": sorted(self.needs), "required_options": list(self.required_options),
                "options": dict(self.options), "default_model": self.default_model, "summary": self.summary,
                "reference_sigma": self.reference_sigma, "remote": self.remote, "model_free": self.model_free,
                "video": self.video}


_BATCH = {"batch_size": "images per model call"}
_INFO = (
    KindInfo("clip_score", "clip", "load_clip_score", "openai/clip-vit-large-patch14",
             "CLIPScore: 100 x cosine of image and prompt CLIP embeddings", frozenset({"prompt"}),
             options={"arch": "open_clip architecture of a checkpoint file", **_BATCH}),
    KindInfo("aesthetic", "aesthetic", "load_aesthetic", "sac+logos+ava1-l14-linearMSE.pth",
             "LAION aesthetic predictor: an MLP on CLIP ViT-L/14 image embeddings (about 1..10)",
             options={"clip_model": "the CLIP the MLP was trained on", "clip_arch": "open_clip architecture",
                      **_BATCH}),
    KindInfo("pickscore", "preference", "load_pickscore", "yuvalkirstain/PickScore_v1",
             "PickScore: human-preference CLIP, cosine of image and prompt", frozenset({"prompt"}),
             options={"processor": "folder or repo with the tokenizer and image processor", **_BATCH}),
    KindInfo("hpsv2", "preference", "load_hpsv2", "HPS_v2.1_compressed.pt",
             "HPSv2: human-preference open_clip ViT-H-14, cosine of image and prompt", frozenset({"prompt"}),
             options={"arch": "open_clip architecture (default ViT-H-14)", **_BATCH}),
    KindInfo("clip_zero_shot", "clip", "load_clip_zero_shot", "openai/clip-vit-large-patch14",
             "CLIP zero-shot classifier: log-probability of the target among the given labels", frozenset({"labels"}),
             ("labels",), {"labels": "comma- or newline-separated class names", "target": "label text or index",
                           "templates": "prompt templates with {}", "arch": "open_clip architecture", **_BATCH}),
    KindInfo("dino_classifier", "dino", "load_dino_classifier", "facebook/dinov2-small-imagenet1k-1-layer",
             "DINOv2 linear-head ImageNet classifier: log-probability of the target class",
             required_options=("target",), options={"target": "ImageNet class index or label text", **_BATCH}),
    KindInfo("self_similarity", "selfsim", "load_self_similarity", "facebook/dinov2-small",
             "Self-supervised: cosine of DINOv2 / SigLIP / CLIP features of the final image and the x0 prediction "
             "at sigma 0.4",
             frozenset({"reference"}),
             options={"backbone": "auto, clip, dinov2 or siglip", "arch": "open_clip architecture", **_BATCH},
             reference_sigma=0.4),
    KindInfo("image_reward", "image_reward", "load_image_reward", "THUDM/ImageReward",
             "ImageReward: BLIP reward model of human preference, prompt cross-attending to the image (about -2..2)",
             frozenset({"prompt"}),
             options={"tokenizer": "folder or repo with the bert-base-uncased tokenizer (vocab.txt)", **_BATCH}),
    KindInfo("vlm_grader", "vlm", "load_vlm_grader", "Qwen/Qwen2.5-VL-3B-Instruct",
             "Vision-language grader (any transformers image-text-to-text chat model): VQAScore, P(\"Yes\") to "
             "\"Does this figure show the prompt?\" (0..1), or the paper's 0-10 ratings of named aspects, averaged",
             frozenset({"prompt"}),
             options={"mode": "vqascore (Lin et al. 2024) or aspects (the paper's grader)",
                      "aspects": "aspects mode: comma- or newline-separated aspect names (empty: the paper's five)",
                      "max_new_tokens": "aspects mode: longest answer, in tokens (default 128)",
                      "processor": "folder with the tokenizer, image processor and chat template, if not the "
                                   "model's own", **_BATCH}),
    KindInfo("api_grader", "api_grader", "load_api_grader", "",
             "Remote vision-language grader over an OpenAI-compatible chat API (Ollama, LM Studio, vLLM, llama.cpp): "
             "VQAScore P(Yes) from logprobs, or the mean 0-10 rating of named aspects; model = the server's model name",
             frozenset({"prompt"}), ("base_url",),
             {"base_url": "the server's OpenAI-compatible URL, e.g. http://localhost:11434/v1; images go nowhere else",
              "api_key_env": "NAME of the environment variable holding the key (empty: no key)",
              "mode": "vqascore (needs logprobs) or aspects", "aspects": "aspects mode: comma-separated names",
              "concurrency": "requests in flight at once", "timeout": "seconds per request",
              "retries": "retries after a timeout, 429 or 5xx, with exponential backoff"}, remote=True),
    KindInfo("temporal_consistency", "video", "load_temporal_consistency", "facebook/dinov2-small",
             "Videos only: how alike the frames are, cosine of DINOv2 / SigLIP / CLIP features of each frame with the "
             "first and the previous (VBench subject consistency; 1 = unchanging); pair it with motion",
             options={"backbone": "auto, clip, dinov2 or siglip", "arch": "open_clip architecture",
                      "batch_size": "frames per model call"}, video=True),
    KindInfo("motion", "video", "load_motion", "",
             "Videos only: mean absolute change between adjacent frames (0 = a still clip, pixel values 0..1); no "
             "model", options={"size": "longer side the frames are compared at (default 64)"}, model_free=True,
             video=True),
)
KINDS: tuple = tuple(info.kind for info in _INFO)
_BY_KIND = {info.kind: info for info in _INFO}


def kind_info(kind: str) -> KindInfo:
    if kind not in _BY_KIND:
        raise VerifierError(f"unknown verifier kind '{kind}': use one of {', '.join(KINDS)}")
    return _BY_KIND[kind]


def describe(kind: str) -> dict:
    """What `kind` needs (prompt / labels / reference, required options) and its default model, for the UI."""
    return kind_info(kind).to_dict()


def load_verifier(kind: str, model: Optional[str] = None, *, device="cpu", dtype: torch.dtype = torch.float32,
                  allow_download: bool = False, **options) -> Verifier:
    """Load verifier `kind` from `model` (None: the kind's default) and move it to `device` / `dtype`."""
    info = kind_info(kind)
    try:
        module = importlib.import_module(f".{info.module}", __package__)
    except ImportError as e:
        raise VerifierError(f"verifier '{kind}' cannot be loaded: importing verifiers.{info.module} failed ({e}); "
                            f"install the missing package") from e
    loader = getattr(module, info.loader)
    verifier = loader(info.default_model if model is None else model, allow_download=allow_download, **options)
    return verifier.to(device=device, dtype=dtype)
