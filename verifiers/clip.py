"""CLIP backbones (open_clip or HF transformers) and the CLIPScore and CLIP zero-shot verifiers.

CLIPScore (Hessel et al. 2021, arXiv 2104.08718) is w * max(cos(image, text), 0) with w = 2.5; we report the
common 100 * cos form (torchmetrics, the paper's Table 1 uses it), so a score of 30 is a cosine of 0.3.
Zero-shot classification with prompt ensembling follows Radford et al. 2021 (arXiv 2103.00020).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional, Sequence, Union

import torch
import torch.nn.functional as F

from . import hf, loading
from .base import Verifier, VerifierError
from .files import check_json_files, check_weights, damaged, read_json
from .loading import resolve
from .preprocess import ImagePreprocess

HF = "hf"
OPEN_CLIP = "open_clip"
CLIP_EXPECT = ("a CLIP model: a Hugging Face CLIP folder (config.json, model.safetensors or pytorch_model.bin, "
               "tokenizer files, preprocessor_config.json or processor_config.json), an open_clip folder "
               "(open_clip_config.json and weights), or an open_clip checkpoint file (.safetensors/.pt/.pth/.bin) "
               "together with the option 'arch'")
PROCESSOR_EXPECT = "a CLIP processor folder (preprocessor_config.json or processor_config.json, and tokenizer files)"
DEFAULT_TEMPLATES = ("a photo of a {}.", "a good photo of a {}.", "a photo of the {}.", "an image of a {}.")
_CHECKPOINT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin")


def _features(out: Any) -> torch.Tensor:
    """transformers 4 returns the projected features, transformers 5 an output whose pooler_output holds them."""
    return out if isinstance(out, torch.Tensor) else out.pooler_output


def _place(model: torch.nn.Module) -> tuple[torch.device, torch.dtype]:
    p = next(model.parameters())
    return p.device, p.dtype


def encode_images(kind: str, model: torch.nn.Module, images: torch.Tensor,
                  preprocess: Optional[ImagePreprocess] = None) -> torch.Tensor:
    """L2-normalised float32 image features `[B, D]` of a CLIP model, in one model call.

    `kind` is "open_clip" (`model.encode_image`; `preprocess` defaults to the model's own preprocess_cfg) or
    "hf" (`CLIPModel.get_image_features`; pass `ImagePreprocess.from_hf(processor)`). `images` are ComfyUI
    IMAGE `[B, H, W, 3]` in 0..1; preprocessing runs on the model's device in its dtype.
    """
    device, dtype = _place(model)
    if kind == OPEN_CLIP:
        pixels = (preprocess or ImagePreprocess.from_open_clip(model))(images, device, dtype)
        feats = model.encode_image(pixels)
    elif kind == HF:
        if preprocess is None:
            raise VerifierError("encode_images(kind='hf') needs the model's ImagePreprocess (ImagePreprocess.from_hf)")
        feats = _features(model.get_image_features(pixel_values=preprocess(images, device, dtype)))
    else:
        raise VerifierError(f"unknown CLIP model kind '{kind}': use '{OPEN_CLIP}' or '{HF}'")
    return F.normalize(feats.float(), dim=-1)


def encode_texts(kind: str, model: torch.nn.Module, tokenizer: Any, texts: Sequence[str]) -> torch.Tensor:
    """L2-normalised float32 text features `[N, D]`; CLIP sees at most its context length (77) tokens."""
    device, _ = _place(model)
    if kind == OPEN_CLIP:
        feats = model.encode_text(tokenizer(list(texts)).to(device))
    elif kind == HF:
        max_len = model.config.text_config.max_position_embeddings
        tokens = tokenizer(list(texts), padding=True, truncation=True, max_length=max_len, return_tensors="pt")
        feats = _features(model.get_text_features(input_ids=tokens["input_ids"].to(device),
                                                  attention_mask=tokens["attention_mask"].to(device)))
    else:
        raise VerifierError(f"unknown CLIP model kind '{kind}': use '{OPEN_CLIP}' or '{HF}'")
    return F.normalize(feats.float(), dim=-1)


class ClipBackbone(torch.nn.Module):
    """One CLIP model behind `encode_images` / `encode_texts`, with its tokenizer and image preprocessing."""

    def __init__(self, net: torch.nn.Module, kind: str, tokenizer: Any, preprocess: ImagePreprocess) -> None:
        super().__init__()
        self.net = net.eval().requires_grad_(False)
        self.kind = kind
        self.tokenizer = tokenizer
        self.preprocess = preprocess

    @property
    def embed_dim(self) -> int:
        return self.net.visual_projection.out_features if self.kind == HF else self.net.visual.output_dim

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        return encode_images(self.kind, self.net, images, self.preprocess)

    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        return encode_texts(self.kind, self.net, self.tokenizer, texts)

    def logit_scale(self) -> torch.Tensor:
        """exp(logit_scale): the learned inverse temperature, as a float32 scalar."""
        return self.net.logit_scale.float().exp()


class _TextCache:
    """Text embeddings for one tuple of texts, recomputed when the texts or the model's device/dtype change."""

    def __init__(self) -> None:
        self._key = None
        self._value = None

    def get(self, backbone: ClipBackbone, texts: tuple) -> torch.Tensor:
        key = (texts, *_place(backbone))
        if key != self._key:
            self._value, self._key = backbone.encode_texts(texts), key
        return self._value


def _load_hf(folder: Path, processor_folder: Path, verifier: str, source: str, processor_source: str) -> ClipBackbone:
    """A transformers CLIPModel; its tokenizer and image processor come from `processor_folder` (often `folder`)."""
    from transformers import CLIPModel

    hf.read_config(folder, verifier, source, ("clip",), "a CLIP model (CLIPModel)")
    if processor_folder != folder:
        check_json_files(processor_folder, verifier, processor_source)
    weights = hf.weights_file(folder, verifier, source)
    preprocess = hf.image_preprocess(processor_folder, verifier, processor_source)
    net = hf.load_model(CLIPModel, folder, weights, verifier, source)
    tokenizer = hf.tokenizer(processor_folder, verifier, processor_source, net.config.text_config.vocab_size)
    return ClipBackbone(net, HF, tokenizer, preprocess)


def _open_clip_folder(folder: Path, verifier: str, source: str) -> None:
    """An open_clip folder needs open_clip_config.json with 'model_cfg' and readable weights (open_clip would
    otherwise build the model with random weights)."""
    path = folder / "open_clip_config.json"
    cfg = read_json(path, verifier, source)
    if not isinstance(cfg, dict) or "model_cfg" not in cfg:
        raise damaged(verifier, path, "lacks the key 'model_cfg' (the open_clip architecture)", source)
    weights = sorted(p for p in folder.iterdir() if p.suffix in _CHECKPOINT_SUFFIXES and p.is_file())
    if not weights:
        raise VerifierError(f"verifier '{verifier}': the open_clip folder {folder} has no weights "
                            f"(open_clip_model.safetensors or open_clip_pytorch_model.bin); get them from {source}")
    for w in weights:
        check_weights(w, verifier, source)


def _load_open_clip(name: str, checkpoint: Optional[Path], verifier: str, preprocess: dict,
                    source: str) -> ClipBackbone:
    import open_clip

    if checkpoint is not None:
        check_weights(checkpoint, verifier, source)
    try:
        net = open_clip.create_model(name, pretrained=str(checkpoint) if checkpoint else None,
                                     force_preprocess_cfg=preprocess or None)
    except RuntimeError as e:
        if checkpoint is None:
            folder = name[len("local-dir:"):]
            raise VerifierError(f"verifier '{verifier}': the weights of the open_clip folder {folder} do not fit its "
                                f"open_clip_config.json: {e}. Re-download the folder from {source}") from e
        raise VerifierError(f"verifier '{verifier}': cannot load checkpoint {checkpoint} as open_clip '{name}': {e}. "
                            f"Set the option 'arch' to the checkpoint's architecture") from e
    return ClipBackbone(net, OPEN_CLIP, open_clip.get_tokenizer(name), ImagePreprocess.from_open_clip(net))


def model_source(model: str, verifier: str) -> str:
    """Where a CLIP-family `model` comes from, for error messages."""
    return loading.model_source(model, verifier,
                                "the model's publisher (a Hugging Face repo or an open_clip checkpoint)")


def load_clip_backbone(model: str, *, verifier: str = "clip", arch: Optional[str] = None,
                       processor: Optional[str] = None, allow_download: bool = False,
                       preprocess: Optional[dict] = None, expect: str = CLIP_EXPECT) -> ClipBackbone:
    """Load a CLIP model found by `loading.resolve`: an HF CLIP folder (optionally its tokenizer and image
    processor from another `processor` folder), an open_clip folder, or an open_clip checkpoint file + `arch`.

    `preprocess` overrides open_clip's preprocess_cfg (e.g. {"resize_mode": "longest"}); `expect` describes the
    wanted files in the not-found error.
    """
    source = model_source(model, verifier)
    path = resolve(model, verifier=verifier, expect=expect, source=source, allow_download=allow_download)
    if arch is not None:
        import open_clip
        if arch not in open_clip.list_models():
            raise VerifierError(f"verifier '{verifier}': option 'arch' = '{arch}' is not an open_clip architecture; "
                                f"use one of open_clip.list_models(), e.g. ViT-L-14, ViT-H-14")
    if path.is_file():
        if path.suffix not in _CHECKPOINT_SUFFIXES:
            raise VerifierError(f"verifier '{verifier}': {path} is not a checkpoint "
                                f"({', '.join(_CHECKPOINT_SUFFIXES)})")
        if arch is None:
            raise VerifierError(f"verifier '{verifier}': {path.name} is an open_clip checkpoint file; set the option "
                                f"'arch' to its architecture (e.g. ViT-L-14, ViT-H-14)")
        return _load_open_clip(arch, path, verifier, preprocess or {}, source)
    if (path / "open_clip_config.json").is_file() and not (path / "config.json").is_file():
        _open_clip_folder(path, verifier, source)
        return _load_open_clip(f"local-dir:{path}", None, verifier, preprocess or {}, source)
    if arch is not None:
        raise VerifierError(f"verifier '{verifier}': option 'arch' applies to open_clip checkpoint files, but {path} "
                            f"is a folder; leave 'arch' empty for Hugging Face CLIP folders")
    if processor is None:
        return _load_hf(path, path, verifier, source, source)
    processor_source = model_source(processor, f"{verifier}_processor")
    proc = resolve(processor, verifier=f"{verifier}_processor", expect=PROCESSOR_EXPECT, source=processor_source,
                   allow_download=allow_download)
    return _load_hf(path, proc, verifier, source, processor_source)


def take_options(verifier: str, options: dict, defaults: dict) -> dict:
    """`defaults` updated with `options`; an unknown option or a bad batch_size raises VerifierError."""
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        raise VerifierError(f"verifier '{verifier}' has no option {', '.join(map(repr, unknown))}; "
                            f"its options are {', '.join(sorted(defaults))}")
    merged = {**defaults, **options}
    bs = merged.get("batch_size", 1)
    if isinstance(bs, bool) or not isinstance(bs, int) or bs < 1:
        raise VerifierError(f"verifier '{verifier}': option 'batch_size' must be a positive integer, got {bs!r}")
    return merged


class PromptSimilarityVerifier(Verifier):
    """Scores by the cosine between each image's and the prompt's CLIP embeddings; subclasses map the cosine."""

    needs = frozenset({"prompt"})

    def __init__(self, backbone: ClipBackbone, batch_size: int = 16) -> None:
        super().__init__()
        self.model = backbone
        self.batch_size = batch_size
        self._text = _TextCache()

    def _score(self, images: torch.Tensor, prompt: Optional[str], references: Optional[torch.Tensor]) -> torch.Tensor:
        cos = self.model.encode_images(images) @ self._text.get(self.model, (prompt,))[0]
        return self.from_cosine(cos)

    def from_cosine(self, cos: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class ClipScoreVerifier(PromptSimilarityVerifier):
    """CLIPScore = max(100 * cos(image, prompt), 0)."""

    name = "clip_score"

    def from_cosine(self, cos: torch.Tensor) -> torch.Tensor:
        return (100.0 * cos).clamp(min=0.0)


def load_clip_score(model: str = "openai/clip-vit-large-patch14", *, allow_download: bool = False,
                    **options) -> ClipScoreVerifier:
    """CLIPScore with an HF CLIP folder/repo, or an open_clip checkpoint file plus `arch`."""
    opts = take_options("clip_score", options, {"arch": None, "batch_size": 16})
    backbone = load_clip_backbone(model, verifier="clip_score", arch=opts["arch"], allow_download=allow_download)
    return ClipScoreVerifier(backbone, opts["batch_size"])


def parse_labels(labels: Union[str, Sequence[str], None]) -> list[str]:
    """A list, or a comma- or newline-separated string, of at least two distinct non-empty labels."""
    if isinstance(labels, str):
        labels = labels.replace("\n", ",").split(",")
    parsed = [str(label).strip() for label in (labels or [])]
    parsed = [label for label in parsed if label]
    if len(parsed) < 2:
        raise VerifierError("verifier 'clip_zero_shot': option 'labels' needs at least two labels, "
                            "comma- or newline-separated, e.g. 'cat, dog, bird'")
    dupes = sorted({label for label in parsed if parsed.count(label) > 1})
    if dupes:
        raise VerifierError(f"verifier 'clip_zero_shot': option 'labels' repeats {', '.join(dupes)}; list each once")
    return parsed


def parse_target(target: Union[str, int, None], labels: Sequence[str]) -> int:
    """The target's index: a label's text (exact match wins) or its 0-based index."""
    if isinstance(target, str) and target.strip() in labels:
        return list(labels).index(target.strip())
    index = target if isinstance(target, int) and not isinstance(target, bool) else None
    if isinstance(target, str) and target.strip().isdigit():
        index = int(target.strip())
    if index is None or not 0 <= index < len(labels):
        raise VerifierError(f"verifier 'clip_zero_shot': option 'target' = {target!r} is neither one of the labels "
                            f"({', '.join(labels)}) nor an index 0..{len(labels) - 1}")
    return index


def parse_templates(templates: Union[str, Sequence[str], None]) -> list[str]:
    """Prompt templates with one '{}' for the label; a string is split on newlines."""
    if templates is None:
        return list(DEFAULT_TEMPLATES)
    if isinstance(templates, str):
        templates = templates.split("\n")
    parsed = [t.strip() for t in templates if t.strip()]
    bad = [t for t in parsed if t.count("{}") != 1]
    if not parsed or bad:
        raise VerifierError(f"verifier 'clip_zero_shot': option 'templates' needs one '{{}}' per template "
                            f"(e.g. 'a photo of a {{}}.'), got {bad or templates!r}")
    return parsed


class ClipZeroShotVerifier(Verifier):
    """log p(target | image) over the user's labels: log-softmax of logit_scale * cos(image, class embedding).

    A class embedding is the renormalised mean of the label's normalised template embeddings.
    """

    name = "clip_zero_shot"
    needs = frozenset({"labels"})

    def __init__(self, backbone: ClipBackbone, labels: Sequence[str], target: int,
                 templates: Sequence[str], batch_size: int = 16) -> None:
        super().__init__()
        self.model = backbone
        self.labels = list(labels)
        self.target = target
        self.templates = list(templates)
        self.batch_size = batch_size
        self._text = _TextCache()

    def class_embeddings(self) -> torch.Tensor:
        """`[num_labels, D]`, computed once per device/dtype."""
        texts = tuple(t.format(label) for label in self.labels for t in self.templates)
        per_text = self._text.get(self.model, texts).view(len(self.labels), len(self.templates), -1)
        return F.normalize(per_text.mean(dim=1), dim=-1)

    def log_probs(self, images: torch.Tensor) -> torch.Tensor:
        logits = self.model.logit_scale() * self.model.encode_images(images) @ self.class_embeddings().T
        return torch.log_softmax(logits, dim=-1)

    def _score(self, images: torch.Tensor, prompt: Optional[str], references: Optional[torch.Tensor]) -> torch.Tensor:
        return self.log_probs(images)[:, self.target]


def load_clip_zero_shot(model: str = "openai/clip-vit-large-patch14", *, allow_download: bool = False,
                        **options) -> ClipZeroShotVerifier:
    """Options: labels (required), target (label text or index, default 0), templates, arch, batch_size."""
    opts = take_options("clip_zero_shot", options,
                        {"labels": None, "target": 0, "templates": None, "arch": None, "batch_size": 16})
    labels = parse_labels(opts["labels"])
    target = parse_target(opts["target"], labels)
    templates = parse_templates(opts["templates"])
    backbone = load_clip_backbone(model, verifier="clip_zero_shot", arch=opts["arch"], allow_download=allow_download)
    return ClipZeroShotVerifier(backbone, labels, target, templates, opts["batch_size"])
