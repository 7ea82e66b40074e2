"""The miniature world of the scaling benchmark: 8x8 digits, a tiny rectified-flow model, a verifier and an evaluator.

The flow model follows rectified flow (Liu et al., 2022): x_t = (1 - t) x0 + t eps, predicting v = eps - x0, so
the sampler's sigma is t (1 = pure noise, 0 = data) and renoising is ``RENOISE["flow"]``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

WEIGHTS = Path(__file__).resolve().parent / "weights"
NUM_CLASSES = 10
NULL_CLASS = NUM_CLASSES  # the label-dropout token for classifier-free guidance
SHAPE = (1, 8, 8)
SPLIT_SEED = 20250113
SPLIT_FRACTIONS = {"generator": 0.40, "evaluator": 0.35, "heldout": 0.25}


def load_splits(seed: int = SPLIT_SEED) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """scikit-learn's bundled digits in [-1, 1] as [N, 1, 8, 8], split per class into three disjoint parts.

    "generator" trains the flow model and the verifier, "evaluator" the evaluator, "heldout" is the
    Fréchet reference and never trains anything.
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = digits.images.astype(np.float32) / 8.0 - 1.0
    labels = digits.target.astype(np.int64)
    rng = np.random.default_rng(seed)
    parts: dict[str, list[np.ndarray]] = {name: [] for name in SPLIT_FRACTIONS}
    for c in range(NUM_CLASSES):
        idx = rng.permutation(np.flatnonzero(labels == c))
        a = round(len(idx) * SPLIT_FRACTIONS["generator"])
        b = a + round(len(idx) * SPLIT_FRACTIONS["evaluator"])
        parts["generator"].append(idx[:a])
        parts["evaluator"].append(idx[a:b])
        parts["heldout"].append(idx[b:])
    out = {}
    for name, chunks in parts.items():
        idx = np.sort(np.concatenate(chunks))
        out[name] = (torch.from_numpy(images[idx]).unsqueeze(1), torch.from_numpy(labels[idx]))
    return out


def time_features(t: torch.Tensor, dim: int = 32) -> torch.Tensor:
    """Sinusoidal features of t in [0, 1] ([K] -> [K, dim])."""
    freqs = torch.exp(torch.linspace(0.0, math.log(200.0), dim // 2))
    angles = t.float()[:, None] * freqs[None]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


class FlowMLP(nn.Module):
    """Class-conditional velocity predictor v(x_t, t, y) for 8x8 digits; y = NULL_CLASS is unconditional."""

    def __init__(self, hidden: int = 256, time_dim: int = 32, class_dim: int = 32) -> None:
        super().__init__()
        self.time_dim = time_dim
        self.label = nn.Embedding(NUM_CLASSES + 1, class_dim)
        self.net = nn.Sequential(
            nn.Linear(64 + time_dim + class_dim, hidden), nn.SiLU(),
            nn.Linear(hidden, hidden), nn.SiLU(),
            nn.Linear(hidden, hidden), nn.SiLU(),
            nn.Linear(hidden, 64),
        )

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = torch.cat([x.flatten(1), time_features(t, self.time_dim), self.label(y)], dim=1)
        return self.net(h).view_as(x)


class VerifierMLP(nn.Module):
    """The searches' verifier: a pixel MLP classifier (logits over the ten digits)."""

    def __init__(self, hidden: int = 128) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(64, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(),
                                 nn.Linear(hidden, NUM_CLASSES))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.flatten(1))


class EvaluatorCNN(nn.Module):
    """The held-out judge: a small conv net, never seen by a search; `features` feeds the Fréchet distance."""

    feature_dim = 16

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.fc = nn.Linear(32 * 4 * 4, self.feature_dim)
        self.head = nn.Linear(self.feature_dim, NUM_CLASSES)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        h = F.silu(self.conv1(x))
        h = F.avg_pool2d(F.silu(self.conv2(h)), 2)
        return F.silu(self.fc(h.flatten(1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


MODELS = {"flow": FlowMLP, "verifier": VerifierMLP, "evaluator": EvaluatorCNN}


def weight_path(name: str, root: Path = WEIGHTS) -> Path:
    return root / f"digits_{name}.safetensors"


def load_model(name: str, root: Path = WEIGHTS) -> nn.Module:
    """One of MODELS with its committed weights, in eval mode; raises naming the script that makes them."""
    from safetensors.torch import load_file

    path = weight_path(name, root)
    if name not in MODELS:
        raise ValueError(f"unknown model '{name}': expected one of {sorted(MODELS)}")
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: run `python benchmarks/train_digits.py` to train it")
    with torch.device("meta"):
        model = MODELS[name]()
    model.load_state_dict(load_file(str(path)), assign=True)
    return model.eval().requires_grad_(False)


def load_settings(root: Path = WEIGHTS) -> dict:
    return json.loads((root / "digits_training.json").read_text())


def velocity_fn(flow: FlowMLP, label: int, guidance: float) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """v(x, t) for one class with classifier-free guidance; one call is one NFE (a CFG pair counts as one)."""

    def v(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        k = x.shape[0]
        tt = t.expand(k)
        y = torch.full((k,), label, dtype=torch.long)
        if guidance == 1.0:
            return flow(x, tt, y)
        both = flow(torch.cat([x, x]), torch.cat([tt, tt]), torch.cat([y, torch.full_like(y, NULL_CLASS)]))
        cond, uncond = both.chunk(2)
        return uncond + guidance * (cond - uncond)

    return v


def euler(v: Callable, x: torch.Tensor, sigmas: torch.Tensor,
          on_call: Optional[Callable[[int], None]] = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Euler over the decreasing sigma slice; returns (x at sigmas[-1], x0 prediction of the last evaluation)."""
    x0 = x
    for s, s_next in zip(sigmas[:-1], sigmas[1:]):
        vel = v(x, s.reshape(1))
        if on_call is not None:
            on_call(x.shape[0])
        x0 = x - s * vel
        x = x + (s_next - s) * vel
    return x, x0


def flow_sigmas(steps: int) -> torch.Tensor:
    """Uniform rectified-flow schedule 1 -> 0 with `steps` Euler steps."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    return torch.linspace(1.0, 0.0, steps + 1)


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets [N, D] (Heusel et al., 2017)."""
    return frechet_from_stats(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))


def frechet_from_stats(mu_a: np.ndarray, cov_a: np.ndarray, mu_b: np.ndarray, cov_b: np.ndarray) -> float:
    """The same between two Gaussians given by their means and covariances (a reference kept as statistics)."""
    w, q = np.linalg.eigh(cov_a)
    root_a = (q * np.sqrt(np.clip(w, 0, None))) @ q.T
    cross = np.linalg.eigvalsh(root_a @ cov_b @ root_a)
    trace_sqrt = np.sqrt(np.clip(cross, 0, None)).sum()
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * trace_sqrt)
