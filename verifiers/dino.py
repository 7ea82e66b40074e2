"""DINOv2 linear-head ImageNet classifier as a verifier: log-probability of a target class (Oquab et al., 2023).

Images are preprocessed in torch on the model's device exactly as the checkpoint's `preprocessor_config.json`
says (for DINOv2: resize the shortest edge to 256 bicubic, center crop 224, ImageNet mean/std).
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import torch
import torch.nn.functional as F

from .base import Verifier, VerifierError
from .loading import resolve

DEFAULT_MODEL = "facebook/dinov2-small-imagenet1k-1-layer"
SOURCE = "https://huggingface.co/facebook/dinov2-small-imagenet1k-1-layer"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_RESAMPLE = {0: "nearest", 2: "bilinear", 3: "bicubic"}  # PIL codes used by HF image processors


@dataclass(frozen=True)
class ImageTransform:
    """An HF image processor's resize / center crop / normalise, in torch on `[B, H, W, 3]` floats in 0..1."""

    shortest_edge: Optional[int] = None  # resize so the short side is this (aspect kept), or
    size: Optional[tuple[int, int]] = None  # resize to (height, width)
    crop: Optional[tuple[int, int]] = None  # center crop (height, width) after resizing
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    resample: str = "bicubic"

    @classmethod
    def from_config(cls, cfg: dict, default: "ImageTransform") -> "ImageTransform":
        """Read a `preprocessor_config.json` dict; keys it lacks keep the `default` family values."""
        shortest, size = default.shortest_edge, default.size
        if cfg.get("do_resize", True) is False:
            shortest = size = None
        elif cfg.get("size") is not None:
            shortest, size = _size(cfg["size"], cfg.get("default_to_square", False))
        crop = None
        if cfg.get("do_center_crop", default.crop is not None):
            crop = _size(cfg["crop_size"], True)[1] if cfg.get("crop_size") is not None else default.crop
            if crop is None:
                raise VerifierError("preprocessor_config.json sets do_center_crop but gives no crop_size")
        normalise = cfg.get("do_normalize", True)
        mean = tuple(cfg.get("image_mean", default.mean)) if normalise else (0.0, 0.0, 0.0)
        std = tuple(cfg.get("image_std", default.std)) if normalise else (1.0, 1.0, 1.0)
        code = cfg.get("resample", None)
        if code is not None and code not in _RESAMPLE:
            raise VerifierError(f"preprocessor_config.json asks for resample={code}; supported: {sorted(_RESAMPLE)} (nearest, bilinear, bicubic)")
        return cls(shortest, size, crop, mean, std, _RESAMPLE[code] if code is not None else default.resample)

    @classmethod
    def from_folder(cls, folder: Path, default: "ImageTransform") -> "ImageTransform":
        """The folder's `preprocessor_config.json`, or the model family's `default` when it has none."""
        path = Path(folder) / "preprocessor_config.json"
        return cls.from_config(json.loads(path.read_text()), default) if path.is_file() else default

    def __call__(self, images: torch.Tensor, device=None, dtype=torch.float32) -> torch.Tensor:
        """`[B, H, W, 3]` in 0..1 -> normalised `[B, 3, h, w]` on `device` in `dtype` (computed in float32)."""
        if images.ndim != 4 or images.shape[-1] != 3:
            raise VerifierError(f"images must be [B, H, W, 3] (ComfyUI IMAGE); got shape {tuple(images.shape)}")
        x = images.to(device=device, dtype=torch.float32).permute(0, 3, 1, 2)
        h, w = x.shape[-2:]
        new = self.size
        if self.shortest_edge is not None:
            short, long = (w, h) if w <= h else (h, w)
            s, l = self.shortest_edge, int(self.shortest_edge * long / short)
            new = (l, s) if w <= h else (s, l)
        if new is not None and tuple(new) != (h, w):
            smooth = self.resample != "nearest"
            x = F.interpolate(x, size=tuple(new), mode=self.resample, align_corners=False if smooth else None, antialias=smooth)
        if self.crop is not None:
            x = _center_crop(x, self.crop)
        mean = torch.tensor(self.mean, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, -1, 1, 1)
        return ((x - mean) / std).to(dtype)


def _size(value, square: bool) -> tuple[Optional[int], Optional[tuple[int, int]]]:
    """HF `size` / `crop_size` -> (shortest_edge, (height, width))."""
    if isinstance(value, int):
        return (None, (value, value)) if square else (value, None)
    if "height" in value and "width" in value:
        return None, (int(value["height"]), int(value["width"]))
    if "shortest_edge" in value and "longest_edge" not in value:
        return int(value["shortest_edge"]), None
    raise VerifierError(f"unsupported image processor size {value}: expected shortest_edge or height and width")


def _center_crop(x: torch.Tensor, crop: tuple[int, int]) -> torch.Tensor:
    """HF's center crop: zero-pad when the image is smaller, then take the (floored) centred window."""
    ch, cw = crop
    h, w = x.shape[-2:]
    if ch > h or cw > w:
        pad_w, pad_h = max(cw - w, 0), max(ch - h, 0)
        x = F.pad(x, (pad_w // 2, (pad_w + 1) // 2, pad_h // 2, (pad_h + 1) // 2))
        h, w = x.shape[-2:]
    top, left = int((h - ch) / 2.0), int((w - cw) / 2.0)
    return x[..., top:top + ch, left:left + cw]


BIT_DEFAULT = ImageTransform(shortest_edge=256, crop=(224, 224))


def _synonyms(label: str) -> list[str]:
    return [s.strip().casefold() for s in label.split(",") if s.strip()]


def resolve_target(target: Union[int, str, None], id2label: dict) -> int:
    """An ImageNet class index, or a label text matching any comma-separated synonym of `config.id2label`."""
    labels = {int(k): str(v) for k, v in id2label.items()}
    if target is None or (isinstance(target, str) and not target.strip()):
        raise VerifierError("verifier 'dino_classifier' needs a target class: an ImageNet class index (e.g. 1) or a label (e.g. 'goldfish')")
    if isinstance(target, bool) or not isinstance(target, (int, str)):
        raise VerifierError(f"dino_classifier target must be a class index or a label text; got {target!r}")
    text = str(target).strip()
    if isinstance(target, int) or text.lstrip("-").isdigit():
        index = int(text)
        if index not in labels:
            raise VerifierError(f"dino_classifier target index {index} is out of range: the model has classes 0..{len(labels) - 1}")
        return index
    wanted = text.casefold()
    hits = [i for i, label in sorted(labels.items()) if wanted in _synonyms(label)]
    if len(hits) == 1:
        return hits[0]
    if hits:
        options = "; ".join(f"{i}: '{labels[i]}'" for i in hits)
        raise VerifierError(f"dino_classifier target '{text}' names several classes ({options}); give the class index instead")
    synonyms = {s: i for i, label in sorted(labels.items()) for s in _synonyms(label)}
    close = difflib.get_close_matches(wanted, list(synonyms), n=5, cutoff=0.6)
    hint = ", ".join(f"'{s}' ({synonyms[s]})" for s in close) or "none; give a class index instead"
    raise VerifierError(f"dino_classifier target '{text}' matches no class label of this model; close matches: {hint}")


class DinoClassifier(Verifier):
    """Score = log-softmax of the target class logit of a DINOv2 linear-head classifier."""

    name = "dino_classifier"
    batch_size = 32

    def __init__(self, model: torch.nn.Module, transform: ImageTransform, target: int, batch_size: Optional[int] = None) -> None:
        super().__init__()
        self.model = model.eval()
        self.transform = transform
        self.target = int(target)
        self.label = model.config.id2label.get(self.target, str(self.target))
        if batch_size is not None:
            self.batch_size = _positive_int(batch_size, "batch_size")

    def _score(self, images: torch.Tensor, prompt: Optional[str], references: Optional[torch.Tensor]) -> torch.Tensor:
        logits = self.model(pixel_values=self.transform(images, self.device, self.dtype)).logits
        return logits.float().log_softmax(dim=-1)[:, self.target]


def _positive_int(value, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise VerifierError(f"{what} must be a positive integer; got {value!r}")
    return value


def _folder(path: Path) -> Path:
    return path.parent if path.is_file() else path


def check_architecture(folder: Path, verifier: str, wanted: tuple[str, ...], model_types: tuple[str, ...]) -> dict:
    """Read config.json and make sure it is the kind of checkpoint the verifier loads, before any weights are read."""
    path = folder / "config.json"
    if not path.is_file():
        raise VerifierError(f"verifier '{verifier}': {folder} has no config.json; expected a Hugging Face model folder ({', '.join(wanted)})")
    cfg = json.loads(path.read_text())
    archs = cfg.get("architectures") or []
    if cfg.get("model_type") not in model_types or not set(archs) & set(wanted):
        raise VerifierError(
            f"verifier '{verifier}': {folder} holds a '{cfg.get('model_type')}' model with architectures {archs}; "
            f"expected one of {list(wanted)}")
    return cfg


def load_weights(cls, folder: Path, verifier: str) -> torch.nn.Module:
    """`cls.from_pretrained` in float32, failing if any weight of `cls` is missing from the checkpoint."""
    model, info = cls.from_pretrained(str(folder), dtype=torch.float32, local_files_only=True, output_loading_info=True)
    if info.get("missing_keys"):
        missing = sorted(info["missing_keys"])
        raise VerifierError(f"verifier '{verifier}': the checkpoint in {folder} lacks weights {missing[:5]}{' ...' if len(missing) > 5 else ''} of {cls.__name__}")
    return model.eval()


def load_dino_classifier(model: str = DEFAULT_MODEL, *, allow_download: bool = False, target: Union[int, str, None] = None,
                         batch_size: Optional[int] = None, **options) -> DinoClassifier:
    """Load a `Dinov2ForImageClassification` folder; `target` is an ImageNet class index or label text."""
    if options:
        raise VerifierError(f"dino_classifier does not take options {sorted(options)}; it takes target and batch_size")
    from transformers import Dinov2ForImageClassification

    path = resolve(model, verifier="dino_classifier", source=SOURCE, allow_download=allow_download,
                   expect="a Hugging Face folder (config.json, model.safetensors, preprocessor_config.json) of a Dinov2ForImageClassification model")
    folder = _folder(path)
    cfg = check_architecture(folder, "dino_classifier", ("Dinov2ForImageClassification",), ("dinov2",))
    index = resolve_target(target, cfg.get("id2label") or {})
    net = load_weights(Dinov2ForImageClassification, folder, "dino_classifier")
    return DinoClassifier(net, ImageTransform.from_folder(folder, BIT_DEFAULT), index, batch_size)
