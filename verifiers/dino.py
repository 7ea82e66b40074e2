"""DINOv2 linear-head ImageNet classifier as a verifier: log-probability of a target class (Oquab et al., 2023).

Images are preprocessed in torch on the model's device as the checkpoint's image processor says (for
DINOv2: resize the shortest edge to 256 bicubic, center crop 224, ImageNet mean/std), see `preprocess.py`.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Optional, Union

import torch

from . import hf
from .base import Verifier, VerifierError
from .loading import model_source, resolve
from .preprocess import ImagePreprocess

DEFAULT_MODEL = "facebook/dinov2-small-imagenet1k-1-layer"
SOURCE = "https://huggingface.co/facebook/dinov2-small-imagenet1k-1-layer"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# BitImageProcessor as DINOv2 checkpoints configure it, for folders without an image processor
DINOV2_PREPROCESS = ImagePreprocess(size=(224, 224), mean=IMAGENET_MEAN, std=IMAGENET_STD, shortest_edge=256)


def _synonyms(label: str) -> list[str]:
    return [s.strip().casefold() for s in label.split(",") if s.strip()]


def resolve_target(target: Union[int, str, None], id2label: dict) -> int:
    """An ImageNet class index, or a label text matching any comma-separated synonym of `config.id2label`."""
    labels = {int(k): str(v) for k, v in id2label.items()}
    if target is None or (isinstance(target, str) and not target.strip()):
        raise VerifierError("verifier 'dino_classifier' needs a target class: an ImageNet class index (e.g. 1) "
                            "or a label (e.g. 'goldfish')")
    if isinstance(target, bool) or not isinstance(target, (int, str)):
        raise VerifierError(f"dino_classifier target must be a class index or a label text; got {target!r}")
    text = str(target).strip()
    if isinstance(target, int) or text.lstrip("-").isdigit():
        index = int(text)
        if index not in labels:
            raise VerifierError(f"dino_classifier target index {index} is out of range: the model has classes "
                                f"0..{len(labels) - 1}")
        return index
    wanted = text.casefold()
    hits = [i for i, label in sorted(labels.items()) if wanted in _synonyms(label)]
    if len(hits) == 1:
        return hits[0]
    if hits:
        options = "; ".join(f"{i}: '{labels[i]}'" for i in hits)
        raise VerifierError(f"dino_classifier target '{text}' names several classes ({options}); "
                            f"give the class index instead")
    synonyms = {s: i for i, label in sorted(labels.items()) for s in _synonyms(label)}
    close = difflib.get_close_matches(wanted, list(synonyms), n=5, cutoff=0.6)
    hint = ", ".join(f"'{s}' ({synonyms[s]})" for s in close) or "none; give a class index instead"
    raise VerifierError(f"dino_classifier target '{text}' matches no class label of this model; close matches: {hint}")


class DinoClassifier(Verifier):
    """Score = log-softmax of the target class logit of a DINOv2 linear-head classifier."""

    name = "dino_classifier"
    batch_size = 32

    def __init__(self, model: torch.nn.Module, preprocess: ImagePreprocess, target: int,
                 batch_size: Optional[int] = None) -> None:
        super().__init__()
        self.model = model.eval()
        self.preprocess = preprocess
        self.target = int(target)
        self.label = model.config.id2label.get(self.target, str(self.target))
        if batch_size is not None:
            self.batch_size = _positive_int(batch_size, "batch_size")

    def _score(self, images: torch.Tensor, prompt: Optional[str], references: Optional[torch.Tensor]) -> torch.Tensor:
        logits = self.model(pixel_values=self.preprocess(images, self.device, self.dtype)).logits
        return logits.float().log_softmax(dim=-1)[:, self.target]


def _positive_int(value, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise VerifierError(f"verifier 'dino_classifier': option '{what}' must be a positive integer, got {value!r}")
    return value


def _folder(path: Path) -> Path:
    return path.parent if path.is_file() else path


def check_architecture(folder: Path, verifier: str, wanted: tuple[str, ...], model_types: tuple[str, ...],
                       source: str) -> dict:
    """Read config.json and make sure it is the kind of checkpoint the verifier loads, before any weights are read."""
    cfg = hf.read_config(folder, verifier, source, model_types, f"a {' or '.join(wanted)} model")
    archs = cfg.get("architectures") or []
    if not set(archs) & set(wanted):
        raise VerifierError(f"verifier '{verifier}': {folder / 'config.json'} describes a '{cfg.get('model_type')}' "
                            f"model with architectures {archs}; expected one of {list(wanted)}. Put such a model's "
                            f"folder there, e.g. from {source}")
    return cfg


def load_dino_classifier(model: str = DEFAULT_MODEL, *, allow_download: bool = False,
                         target: Union[int, str, None] = None, batch_size: Optional[int] = None,
                         **options) -> DinoClassifier:
    """Load a `Dinov2ForImageClassification` folder; `target` is an ImageNet class index or label text."""
    if options:
        raise VerifierError(f"verifier 'dino_classifier' has no option {', '.join(map(repr, sorted(options)))}; "
                            f"its options are batch_size, target")
    from transformers import Dinov2ForImageClassification

    source = model_source(model, "dino_classifier", SOURCE)
    path = resolve(model, verifier="dino_classifier", source=source, allow_download=allow_download,
                   expect="a Hugging Face folder (config.json, model.safetensors or pytorch_model.bin, "
                          "preprocessor_config.json or processor_config.json) of a Dinov2ForImageClassification model")
    folder = _folder(path)
    cfg = check_architecture(folder, "dino_classifier", ("Dinov2ForImageClassification",), ("dinov2",), source)
    index = resolve_target(target, cfg.get("id2label") or {})
    weights = hf.weights_file(folder, "dino_classifier", source)
    preprocess = hf.image_preprocess(folder, "dino_classifier", source, DINOV2_PREPROCESS)
    net = hf.load_model(Dinov2ForImageClassification, folder, weights, "dino_classifier", source)
    return DinoClassifier(net, preprocess, index, batch_size)
