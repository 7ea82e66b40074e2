"""A model's own image preprocessing (resize, crop or pad, normalise), done in torch on the model's device.

Matches the reference pipelines (HF `CLIPImageProcessor`, open_clip's `image_transform`) up to uint8 rounding:
those resize 8-bit images (PIL or torchvision on uint8), we resize the float image, so values differ by about
one 8-bit step before normalisation. Bicubic uses antialiasing (a = -0.5), the kernel PIL uses.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional, Sequence, Union

import torch
import torch.nn.functional as F

from .base import VerifierError

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
_PIL_MODES = {0: "nearest", 2: "bilinear", 3: "bicubic"}


def _pair(size: Union[int, Sequence[int]]) -> tuple[int, int]:
    return (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[1]))


@dataclass(frozen=True)
class ImagePreprocess:
    """How one model wants its pixels: `resize_mode` is "shortest" (resize the short side to `shortest_edge`,
    centre-crop to `size`), "longest" (fit the long side into `size`, pad with `fill`) or "squash"."""

    size: tuple[int, int]
    mean: tuple[float, ...] = OPENAI_MEAN
    std: tuple[float, ...] = OPENAI_STD
    resize_mode: str = "shortest"
    shortest_edge: Optional[int] = None
    interpolation: str = "bicubic"
    crop_offset: str = "floor"  # HF floors the centre-crop offset, torchvision rounds it
    fill: float = 0.0
    do_resize: bool = True
    do_crop: bool = True

    def __post_init__(self) -> None:
        if self.resize_mode not in ("shortest", "longest", "squash"):
            raise VerifierError(f"unknown resize_mode '{self.resize_mode}': use shortest, longest or squash")
        if self.interpolation not in ("bicubic", "bilinear", "nearest"):
            raise VerifierError(f"unknown interpolation '{self.interpolation}': use bicubic, bilinear or nearest")

    @classmethod
    def from_hf(cls, processor: Any) -> "ImagePreprocess":
        """From a transformers image processor of the CLIP kind (CLIP, Bit/DINOv2, SigLIP; PIL or torchvision
        backend, transformers 4 or 5), or a processor holding one: shortest-edge resize + centre crop, or a
        fixed-size squash."""
        processor = getattr(processor, "image_processor", processor)
        def get(obj, key):
            return obj.get(key) if isinstance(obj, dict) else getattr(obj, key, None)

        do_crop = bool(getattr(processor, "do_center_crop", False))
        crop = processor.crop_size if do_crop else processor.size
        size = (get(crop, "height"), get(crop, "width"))
        shortest = get(processor.size, "shortest_edge")
        if size[0] is None:
            size = (shortest, shortest)
        resample = getattr(processor, "resample", 3)
        interpolation = _PIL_MODES.get(int(getattr(resample, "value", resample)), None)
        if interpolation is None:
            raise VerifierError(f"image processor resample mode {resample} is not supported: use bicubic or bilinear")
        normalize = bool(getattr(processor, "do_normalize", True))
        return cls(size=_pair(size),
                   mean=tuple(processor.image_mean) if normalize else (0.0, 0.0, 0.0),
                   std=tuple(processor.image_std) if normalize else (1.0, 1.0, 1.0),
                   resize_mode="shortest" if shortest else "squash", shortest_edge=shortest,
                   interpolation=interpolation, crop_offset="floor",
                   do_resize=bool(getattr(processor, "do_resize", True)), do_crop=do_crop)

    @classmethod
    def from_open_clip(cls, model: torch.nn.Module, **overrides) -> "ImagePreprocess":
        """From an open_clip model's `preprocess_cfg` (what `open_clip.image_transform(..., is_train=False)` does)."""
        from open_clip.model import get_model_preprocess_cfg

        cfg = {**get_model_preprocess_cfg(model), **overrides}
        size = _pair(cfg.get("size", 224))
        mode = cfg.get("resize_mode", "shortest")
        shortest = size[0] if mode == "shortest" and size[0] == size[1] else None
        if mode == "shortest" and shortest is None:
            raise VerifierError(f"open_clip preprocessing with non-square size {size} is not supported")
        return cls(size=size, mean=tuple(cfg.get("mean", OPENAI_MEAN)), std=tuple(cfg.get("std", OPENAI_STD)),
                   resize_mode=mode, shortest_edge=shortest, interpolation=cfg.get("interpolation", "bicubic"),
                   crop_offset="round", fill=float(cfg.get("fill_color", 0)) / 255.0)

    def __call__(self, images: torch.Tensor, device: Optional[torch.device] = None,
                 dtype: Optional[torch.dtype] = None) -> torch.Tensor:
        """`[B, H, W, C]` floats in 0..1 (ComfyUI IMAGE) -> normalised `[B, 3, h, w]` on `device` in `dtype`."""
        if images.ndim != 4 or images.shape[-1] not in (1, 3):
            raise VerifierError(f"expected images [B, H, W, 3] (ComfyUI IMAGE), got shape {tuple(images.shape)}")
        x = images.to(device=device, dtype=torch.float32).clamp(0, 1).permute(0, 3, 1, 2)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if self.do_resize:
            x = self._resize(x)
        if self.do_crop:
            x = _center_crop_or_pad(x, self.size, self.crop_offset, self.fill)
        mean = torch.tensor(self.mean, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, 3, 1, 1)
        return ((x - mean) / std).to(dtype or torch.float32).contiguous()

    def _resize(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        if self.resize_mode == "squash":
            new = self.size
        elif self.resize_mode == "longest":
            ratio = max(h / self.size[0], w / self.size[1])
            new = (round(h / ratio), round(w / ratio))
        else:
            short, long = (h, w) if h <= w else (w, h)
            edge = self.shortest_edge or min(self.size)
            new_long = int(edge * long / short)
            new = (edge, new_long) if h <= w else (new_long, edge)
        return resize(x, new, self.interpolation)


def resize(x: torch.Tensor, size: tuple[int, int], interpolation: str = "bicubic") -> torch.Tensor:
    """Resize `[B, C, H, W]` in 0..1 like PIL / torchvision antialiased resize, clamped to 0..1 as 8-bit output is."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    if interpolation == "nearest":
        return F.interpolate(x, size=size, mode="nearest")
    return F.interpolate(x, size=size, mode=interpolation, align_corners=False, antialias=True).clamp(0, 1)


def _center_crop_or_pad(x: torch.Tensor, size: tuple[int, int], offset: str, fill: float) -> torch.Tensor:
    h, w = x.shape[-2:]
    ch, cw = size
    if ch > h or cw > w:
        ph, pw = max(ch - h, 0), max(cw - w, 0)
        x = F.pad(x, (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2), value=fill)
        h, w = x.shape[-2:]
    if offset == "round":
        top, left = int(round((h - ch) / 2.0)), int(round((w - cw) / 2.0))
    else:
        top, left = (h - ch) // 2, (w - cw) // 2
    return x[..., top:top + ch, left:left + cw]
