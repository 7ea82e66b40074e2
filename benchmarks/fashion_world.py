"""The trained miniature world: Fashion-MNIST garments at 32 x 32 in ComfyUI's own formats (issue 21).

An SD3-layout checkpoint (MMDiT under `model.diffusion_model.`, a TAESD-layout VAE under `first_stage_model.`, a
full-shape CLIP-L under `text_encoders.clip_l.`), a TAESD preview decoder for `models/vae_approx`, a CLIP in Hugging
Face format for `clip_score`, and an evaluator classifier that never scores a search. `train_fashion.py` trains them;
this module holds what they share: the data, its splits, the captions, the evaluator and the checkpoint's assembly.

The CLIP-L text encoder keeps seeded random weights: it is 123 M parameters, the diffusion model learns to read its
(fixed, distinct) features of the ten captions, and it is rebuilt from its seed instead of being committed.
"""

from __future__ import annotations

import gzip
import math
from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from _pack import load_pack  # beside this script

load_pack()

from noise_search.tests.helpers.tiny_sd3 import clip_l_spec  # noqa: E402

DATA = Path("/usr/share/datasets/fashion-mnist")  # Debian's dataset-fashion-mnist
WEIGHTS = Path(__file__).resolve().parent / "weights"
SIZE = 32  # pixels; the 28 x 28 images padded by 2, so the VAE's latent is 4 x 4
CLASSES = ("t-shirt", "pair of trousers", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag",
           "ankle boot")
CLIP_L_SEED = 21
CHECKPOINT = "fashion_sd3.safetensors"
PREVIEW = "taesd3_decoder.safetensors"  # the name ComfyUI's previewer looks for with SD3 latents
FILES = {"mmdit": "fashion_mmdit.safetensors", "vae": "fashion_vae.safetensors",
         "preview": "fashion_taesd3_decoder.safetensors", "evaluator": "fashion_evaluator.safetensors",
         "clip": "fashion_clip", "training": "fashion_training.json"}


def caption(label: int) -> str:
    return f"a photo of a {CLASSES[label]}"


def _idx(path: Path) -> np.ndarray:
    """An IDX file (gzip) as an array: the format Fashion-MNIST ships in."""
    data = gzip.decompress(path.read_bytes())
    dims = data[3]
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(dims))
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def load_data(root: Path = DATA) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Three disjoint parts as ([N, 3, 32, 32] in [0, 1], labels): "generator" (the first 50,000 training images)
    trains the VAE, the diffusion model, the preview decoder and the scoring CLIP; "evaluator" (the last 10,000)
    trains the evaluator; "heldout" (the 10,000 test images) trains nothing and is the Frechet reference."""
    if not (root / "train-images-idx3-ubyte.gz").is_file():
        raise SystemExit(f"no Fashion-MNIST at {root}: apt-get install dataset-fashion-mnist")

    def part(images: np.ndarray, labels: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.from_numpy(images.astype(np.float32) / 255.0).unsqueeze(1)
        x = F.pad(x, (2, 2, 2, 2)).expand(-1, 3, -1, -1).contiguous()
        return x, torch.from_numpy(labels.astype(np.int64))

    train_x, train_y = _idx(root / "train-images-idx3-ubyte.gz"), _idx(root / "train-labels-idx1-ubyte.gz")
    test_x, test_y = _idx(root / "t10k-images-idx3-ubyte.gz"), _idx(root / "t10k-labels-idx1-ubyte.gz")
    return {"generator": part(train_x[:50000], train_y[:50000]), "evaluator": part(train_x[50000:], train_y[50000:]),
            "heldout": part(test_x, test_y)}


class Evaluator(nn.Module):
    """A small CNN classifier of 32 x 32 RGB images in [0, 1]; `features` feed the Frechet distance."""

    def __init__(self, width: int = 32, features: int = 64):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(2 * width, 2 * width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(2 * width * 16, features), nn.ReLU())
        self.head = nn.Linear(features, len(CLASSES))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x.mean(1, keepdim=True).expand(-1, 3, -1, -1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def load_evaluator(weights: Path = WEIGHTS) -> tuple[Evaluator, dict[str, torch.Tensor]]:
    """The evaluator (eval mode) and the held-out feature statistics ("mu", "sigma") it was saved with."""
    sd = load_file(str(weights / FILES["evaluator"]))
    stats = {k.split(".", 1)[1]: sd.pop(k) for k in list(sd) if k.startswith("heldout.")}
    model = Evaluator()
    model.load_state_dict(sd)
    return model.eval(), stats


def mcnemar_one_sided(better: int, worse: int) -> float:
    """P(at least `better` of the discordant pairs favour one side | both equally good): exact binomial."""
    n = better + worse
    return sum(math.comb(n, k) for k in range(better, n + 1)) / 2 ** n if n else 1.0


def feature_stats(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and covariance of features [N, D], in float64: a Frechet distance's Gaussian."""
    f = features.double()
    return f.mean(0), torch.cov(f.T)


def clip_l_state_dict(seed: int = CLIP_L_SEED) -> dict[str, torch.Tensor]:
    """The checkpoint's CLIP-L (fp16, ComfyUI's key layout) from its own generator: the same tensors on every
    machine and thread count, so the committed diffusion model always reads the features it was trained on."""
    gen = torch.Generator().manual_seed(seed)
    sd = {}
    for key, shape in clip_l_spec():
        if "layer_norm" in key:
            value = torch.ones(shape) if key.endswith("weight") else torch.zeros(shape)
        else:
            value = torch.randn(shape, generator=gen) * 0.02
        sd[f"text_encoders.clip_l.{key}"] = value.half()
    sd["text_encoders.clip_l.logit_scale"] = torch.tensor(math.log(100.0)).half()
    return sd


def checkpoint_state_dict(mmdit: dict, vae: dict) -> dict[str, torch.Tensor]:
    """The single-file SD3 checkpoint: the diffusion model and VAE given (ComfyUI's keys, no prefix) and the CLIP-L."""
    sd = {f"model.diffusion_model.{k}": v for k, v in mmdit.items()}
    sd.update({f"first_stage_model.{k}": v for k, v in vae.items()})
    sd.update(clip_l_state_dict())
    return sd


def save(sd: dict, path: Union[str, Path], metadata: Optional[dict] = None) -> Path:
    """safetensors, atomically (a half-written file never has the final name)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".part")
    save_file({k: v.detach().contiguous() for k, v in sd.items()}, str(tmp), metadata=metadata or {"format": "pt"})
    tmp.replace(path)
    return path


def install(models: Union[str, Path], weights: Path = WEIGHTS, preview: bool = True) -> dict[str, Path]:
    """Lay the world out in a ComfyUI models folder: checkpoints/, vae_approx/ (unless not `preview`) and the CLIP
    folder under verifiers/; returns where each went."""
    import shutil

    models = Path(models)
    mmdit, vae = load_file(str(weights / FILES["mmdit"])), load_file(str(weights / FILES["vae"]))
    out = {"checkpoint": save(checkpoint_state_dict(mmdit, vae), models / "checkpoints" / CHECKPOINT)}
    if preview:
        out["preview"] = models / "vae_approx" / PREVIEW
        out["preview"].parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(weights / FILES["preview"], out["preview"])
    out["clip"] = models / "verifiers" / FILES["clip"]
    shutil.copytree(weights / FILES["clip"], out["clip"], dirs_exist_ok=True)
    return out


if __name__ == "__main__":
    import sys

    if len(sys.argv) != 2:
        raise SystemExit("usage: python benchmarks/fashion_world.py /path/to/ComfyUI/models")
    for what, where in install(sys.argv[1]).items():
        print(f"{what}: {where}")
