"""Ensembles of verifiers: rank or z-score aggregation (the "verifier ensemble" of Ma et al., 2025, arXiv 2501.09732).

Ranks use mid-ranks (rank 1 = worst, ties share their mean rank) normalised to a percentile
``p = (r - 1) / (N - 1)`` in [0, 1] over a pool of N scores (``p = 0.5`` when N == 1). Z-scores use the
pool's mean and population standard deviation (0 where the pool is constant). An aggregate is relative to the
set it is taken over, so an :class:`Ensemble` keeps no state between calls: ``score`` aggregates over its own
batch, ``member_scores`` gives that call's raw member scores, and a search calls ``aggregate`` on the raw member
scores of every set it compares (all final candidates; one Search over Paths round), whatever its batch size.
"""

from __future__ import annotations

import math
from typing import Mapping, Optional, Sequence, Union

import torch

from .base import Verifier, VerifierError

MODES = ("rank", "zscore")
Weights = Optional[Union[Mapping[str, float], Sequence[float]]]


def ranks(values: torch.Tensor, pool: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Mid-rank of each value within `pool` (default: `values` itself): 1 = worst, ties share the mean rank."""
    pool = values if pool is None else pool
    ordered = torch.sort(pool.double().flatten()).values
    x = values.double()
    below = torch.searchsorted(ordered, x, side="left")
    at_or_below = torch.searchsorted(ordered, x, side="right")
    return below.double() + (at_or_below - below + 1).double() / 2


def percentiles(values: torch.Tensor, pool: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Mid-ranks within `pool` mapped to [0, 1] by (r - 1) / (N - 1); 0.5 for a pool of one."""
    n = values.numel() if pool is None else pool.numel()
    r = ranks(values, pool)
    return torch.full_like(r, 0.5) if n <= 1 else (r - 1) / (n - 1)


def zscores(values: torch.Tensor, pool: Optional[torch.Tensor] = None) -> torch.Tensor:
    """(x - mean) / std over `pool` (default: `values`), population std; 0 where the pool is constant."""
    p = (values if pool is None else pool).double().flatten()
    mean, std = p.mean(), p.std(correction=0)
    x = values.double()
    return torch.zeros_like(x) if not std > 0 else (x - mean) / std


def _normalise(values: torch.Tensor, mode: str) -> torch.Tensor:
    return percentiles(values) if mode == "rank" else zscores(values)


def _check_mode(mode: str) -> str:
    if mode not in MODES:
        raise VerifierError(f"unknown ensemble mode '{mode}': use one of {', '.join(MODES)}")
    return mode


def _weights(names: Sequence[str], weights: Weights) -> list[float]:
    """Validate weights (None, a sequence aligned with `names`, or a name -> weight mapping)."""
    if weights is None:
        return [1.0] * len(names)
    if isinstance(weights, Mapping):
        unknown = sorted(set(weights) - set(names))
        if unknown:
            raise VerifierError(f"ensemble weights name unknown members {unknown}; members are {list(names)}")
        out = [float(weights.get(n, 1.0)) for n in names]
    else:
        out = [float(w) for w in weights]
        if len(out) != len(names):
            raise VerifierError(f"ensemble has {len(names)} members {list(names)} but {len(out)} weights were given")
    if any(not math.isfinite(w) or w < 0 for w in out) or sum(out) <= 0:
        raise VerifierError(f"ensemble weights must be finite, >= 0 and not all 0; got {out}")
    return out


def combine(member_scores: Mapping[str, torch.Tensor], weights: Weights = None, mode: str = "rank") -> torch.Tensor:
    """Weighted average of per-member percentiles ("rank") or z-scores ("zscore") over these scores alone."""
    _check_mode(mode)
    if not member_scores:
        raise VerifierError("combine needs at least one member's scores")
    names = list(member_scores)
    w = _weights(names, weights)
    scores = {n: torch.as_tensor(member_scores[n]).detach().cpu() for n in names}
    shapes = {n: tuple(s.shape) for n, s in scores.items()}
    if len(set(shapes.values())) != 1 or len(shapes[names[0]]) != 1:
        raise VerifierError(f"member scores must be 1-D tensors of one length; got shapes {shapes}")
    total = sum(wi * _normalise(scores[n], mode) for n, wi in zip(names, w))
    return (total / sum(w)).float()


def unique_names(names: Sequence[str]) -> list[str]:
    """Suffix repeated names: [clip_score, clip_score] -> [clip_score, clip_score_2]."""
    out: list[str] = []
    for name in names:
        candidate, k = name, 1
        while candidate in out:
            k += 1
            candidate = f"{name}_{k}"
        out.append(candidate)
    return out


class Ensemble(Verifier):
    """Several verifiers scored together; their raw scores are aggregated by rank or z-score over a set."""

    name = "ensemble"

    def __init__(self, verifiers: Sequence[Verifier], weights: Weights = None, mode: str = "rank") -> None:
        super().__init__()
        self.mode = _check_mode(mode)
        self.members = list(verifiers)
        if not self.members:
            raise VerifierError("an ensemble needs at least one verifier")
        self.names = unique_names([v.name for v in self.members])
        self.weights = _weights(self.names, weights)
        self.needs = frozenset().union(*(v.needs for v in self.members))
        sigmas = {v.reference_sigma for v in self.members if "reference" in v.needs}
        if len(sigmas) > 1:
            raise VerifierError(f"ensemble members need references at different sigmas {sorted(sigmas)}; "
                                f"use one reference sigma")
        self.reference_sigma = sigmas.pop() if sigmas else None
        self.video = any(v.video for v in self.members)
        self.model = torch.nn.ModuleList([v.model for v in self.members])
        self._last: dict[str, torch.Tensor] = {}

    def aggregate(self, member_scores: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """`combine` with this ensemble's weights and mode: the scores of one comparable set of candidates."""
        if sorted(member_scores) != sorted(self.names):
            raise VerifierError(f"ensemble aggregate needs the raw scores of exactly its members {self.names}, "
                                f"got {list(member_scores)}")
        return combine({n: member_scores[n] for n in self.names}, weights=self.weights, mode=self.mode)

    def check(self, prompt: Optional[str] = None, references: Optional[torch.Tensor] = None) -> None:
        for member in self.members:
            member.check(prompt, references)

    @torch.no_grad()
    def score(self, images: torch.Tensor, prompt: Optional[str] = None,
              references: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Score every member once on these images and aggregate over them alone (see `member_scores`)."""
        self.check(prompt, references)
        raw = {}
        for name, member in zip(self.names, self.members):
            s = member.score(images, prompt, references).float().cpu()
            if s.shape != (images.shape[0],):
                raise VerifierError(f"ensemble member '{name}' returned scores of shape {tuple(s.shape)} "
                                    f"for {images.shape[0]} images")
            raw[name] = s
        self._last = raw
        return self.aggregate(raw)

    @torch.no_grad()
    def score_video(self, videos: torch.Tensor, prompt: Optional[str] = None,
                    references: Optional[torch.Tensor] = None, frames: int = 4, how: str = "mean") -> torch.Tensor:
        """Every member scores the videos its own way (image members on frames, video members on whole clips);
        aggregated over these videos alone. `frame_scores` holds the image members' per-frame scores."""
        self.check(prompt, references)
        raw, self.frame_scores, self.frame_indices = {}, {}, []
        for name, member in zip(self.names, self.members):
            raw[name] = member.score_video(videos, prompt, references, frames, how).float().cpu()
            if not member.video:
                self.frame_indices = member.frame_indices
                self.frame_scores.update({f"{name}.{k}" if k != member.name else name: v
                                          for k, v in member.frame_scores.items()})
        self._last = raw
        return self.aggregate(raw)

    def member_scores(self) -> dict:
        """Raw member scores of the last `score` call, by unique member name."""
        return dict(self._last)

    def to(self, device=None, dtype=None) -> "Ensemble":
        for member in self.members:
            member.to(device=device, dtype=dtype)
        return self

    def release(self) -> None:
        for member in self.members:
            member.release()
        self.model = None
