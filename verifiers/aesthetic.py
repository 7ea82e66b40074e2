"""LAION improved aesthetic predictor: an MLP over L2-normalised CLIP ViT-L/14 image embeddings.

Weights `sac+logos+ava1-l14-linearMSE.pth` from github.com/christophschuhmann/improved-aesthetic-predictor
(trained on SAC + LAION-Logos + AVA ratings, 1..10 scale). No prompt needed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch

from .base import Verifier, VerifierError
from .clip import ClipBackbone, load_clip_backbone, model_source, take_options
from .files import read_weights
from .loading import resolve

_LINEARS = (0, 2, 4, 6, 7)  # nn.Sequential indices of the Linear layers; Dropouts sit at 1, 3, 5
_DROPOUTS = {1: 0.2, 3: 0.2, 5: 0.1}
MLP_EXPECT = ("the aesthetic MLP state dict (e.g. sac+logos+ava1-l14-linearMSE.pth, keys layers.0.weight ... "
              "layers.7.bias) as .pth/.pt/.bin or .safetensors")


class AestheticMLP(torch.nn.Module):
    """The predictor's `layers` Sequential; layer widths are read from the state dict (so tiny tests work)."""

    def __init__(self, widths: list[int]) -> None:
        super().__init__()
        mods: list[torch.nn.Module] = []
        for i, (d_in, d_out) in enumerate(zip(widths[:-1], widths[1:])):
            mods.append(torch.nn.Linear(d_in, d_out))
            if i < 3:
                mods.append(torch.nn.Dropout(_DROPOUTS[len(mods)]))
        self.layers = torch.nn.Sequential(*mods)

    @property
    def input_dim(self) -> int:
        return self.layers[0].in_features

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        return self.layers(embeddings)


def load_mlp_state(path: Path, source: str) -> dict:
    """The MLP's state dict from .pth/.pt/.bin or .safetensors; a damaged or foreign file is a VerifierError."""
    state = read_weights(path, "aesthetic", source)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    expected = {f"layers.{i}.{p}" for i in _LINEARS for p in ("weight", "bias")}
    if not isinstance(state, dict) or set(state) != expected:
        got = sorted(state)[:6] if isinstance(state, dict) else type(state).__name__
        raise VerifierError(f"verifier 'aesthetic': {path} is not the LAION aesthetic MLP: expected keys "
                            f"{sorted(expected)}, got {got}")
    return state


def mlp_from_state(state: dict) -> AestheticMLP:
    widths = [state["layers.0.weight"].shape[1]] + [state[f"layers.{i}.weight"].shape[0] for i in _LINEARS]
    mlp = AestheticMLP(widths)
    mlp.load_state_dict({k: v.float() for k, v in state.items()})
    return mlp.eval().requires_grad_(False)


class AestheticModel(torch.nn.Module):
    def __init__(self, clip: ClipBackbone, head: AestheticMLP) -> None:
        super().__init__()
        self.clip = clip
        self.head = head


class AestheticVerifier(Verifier):
    """Predicted aesthetic rating (about 1..10) of each image: MLP(normalise(CLIP image embedding))."""

    name = "aesthetic"

    def __init__(self, model: AestheticModel, batch_size: int = 16) -> None:
        super().__init__()
        self.model = model
        self.batch_size = batch_size

    def _score(self, images: torch.Tensor, prompt: Optional[str], references: Optional[torch.Tensor]) -> torch.Tensor:
        emb = self.model.clip.encode_images(images)
        head = self.model.head
        return head(emb.to(next(head.parameters()).dtype)).squeeze(-1)


def load_aesthetic(model: str = "sac+logos+ava1-l14-linearMSE.pth", *, allow_download: bool = False,
                   **options) -> AestheticVerifier:
    """Options: clip_model (default openai/clip-vit-large-patch14, the embedding the MLP was trained on),
    clip_arch (for an open_clip checkpoint file as clip_model), batch_size."""
    opts = take_options("aesthetic", options,
                        {"clip_model": "openai/clip-vit-large-patch14", "clip_arch": None, "batch_size": 16})
    source = model_source(model, "aesthetic")
    path = resolve(model, verifier="aesthetic", expect=MLP_EXPECT, source=source, allow_download=allow_download)
    if not path.is_file():
        raise VerifierError(f"verifier 'aesthetic': {path} is a folder; expected {MLP_EXPECT}")
    head = mlp_from_state(load_mlp_state(path, source))
    clip = load_clip_backbone(opts["clip_model"], verifier="aesthetic", arch=opts["clip_arch"],
                              allow_download=allow_download)
    dim = clip.embed_dim
    if dim != head.input_dim:
        raise VerifierError(f"verifier 'aesthetic': the MLP takes {head.input_dim}-d embeddings but clip_model "
                            f"'{opts['clip_model']}' gives {dim}-d; use the CLIP the MLP was trained on "
                            f"(openai/clip-vit-large-patch14 for sac+logos+ava1-l14-linearMSE.pth)")
    return AestheticVerifier(AestheticModel(clip, head), opts["batch_size"])
