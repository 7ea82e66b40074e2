"""The contract between search algorithms and whoever runs the model (ComfyUI nodes, benchmarks, tests)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional, Sequence, Union

import torch

Tensor = torch.Tensor

# integrate(x, sigmas, batch) -> (x_end, x0): run the sampler over the sigma slice `sigmas` (decreasing,
# len >= 2) from state `x` ([K, *shape], at sigmas[0]); return the state at sigmas[-1] and the x0
# prediction made at its last denoiser evaluation. `batch` are the candidates the K rows belong to, all of one
# kind: the same `from_noise` and `plain` (the search splits a mixed round; a runner may rely on it).
Integrate = Callable[[Tensor, Tensor, Sequence["Candidate"]], "tuple[Tensor, Tensor]"]
# score(x0, sigma, batch) -> scores [K] (higher is better), or (scores, {member_name: scores [K]}).
# With an Aggregate the members are the facts and the scores are ignored.
Score = Callable[[Tensor, float, Sequence["Candidate"]], Union[Tensor, "tuple[Tensor, dict[str, Tensor]]"]]
# aggregate({member_name: raw scores [K]}) -> combined scores [K] of those K candidates judged as one set
# (e.g. an ensemble's average rank): a candidate's score then depends on which others it is compared with.
Aggregate = Callable[[dict], Tensor]
# cost(sigmas) -> NFEs one candidate spends integrating over that slice.
Cost = Callable[[Tensor], int]
# renoise(x, sigma_from, sigma_to, noise) -> x at the higher noise level sigma_to.
Renoise = Callable[[Tensor, float, float, Tensor], Tensor]
# noise(index) -> initial-noise-shaped tensor; depends only on (seed, index). See search.noise.seeded_noise.
# One row [*shape] (no batch dim); the search stacks rows into the [K, *shape] batches integrate receives.
NoiseSource = Callable[[int], Tensor]
# progress(nfe_spent, nfe_planned, best_score_or_None, best_candidate_or_None) after every scored chunk.
Progress = Callable[[int, int, Optional[float], Optional["Candidate"]], None]


@dataclass
class SearchProblem:
    """Everything an algorithm needs; the algorithms never see a model, a VAE or a verifier directly."""

    integrate: Integrate
    score: Score
    sigmas: Tensor  # full schedule, decreasing, ending at 0 (or the img2img tail of it)
    noise: NoiseSource
    renoise: Renoise
    cost: Optional[Cost] = None  # default: (len(sigmas) - 1) NFEs, one per step
    max_batch: int = 8  # rows per integrate/score call
    progress: Optional[Progress] = None
    device: Optional[torch.device] = None  # where noise is moved before integrate; None: stay on CPU
    aggregate: Optional[Aggregate] = None  # None: scores are absolute; set: see Aggregate and _common.Tracker

    def nfe(self, sigmas: Tensor) -> int:
        return int(self.cost(sigmas)) if self.cost is not None else len(sigmas) - 1


@dataclass
class Candidate:
    """One scored point of the search; each fact about it is recorded here once, by whoever decides it.

    `root` is the candidate whose initial noise its trajectory started from (itself unless re-noised from a
    parent, as Search over Paths' branches are); `from_noise` says its rows start as that noise at the schedule
    start rather than as a partial trajectory; `final` that it was scored on a finished sample; `decode` names
    the decode that made the image it was scored on (set by the scorer). `nfe` is the search's cumulative NFEs
    when it was scored. `plain` says its trajectory is one uninterrupted stock run from noise(id), so a stock
    sampler with seed + id reproduces it; an algorithm that integrates a plain candidate in slices (racing) asks
    the runner to continue that run exactly, sampler state included, rather than to restart from the slice's state.
    """

    id: int
    parent: Optional[int]
    round: int
    kind: str  # "initial" | "neighbour" | "path"
    root: Optional[int] = None  # None at creation means itself
    from_noise: bool = True
    final: bool = False
    decode: Optional[str] = None
    plain: bool = False
    sigma: float = 0.0  # noise level its score was taken at
    nfe: int = 0
    score: Optional[float] = None  # with an aggregate: over all finals (finals) or its round (Paths intermediates)
    members: dict = field(default_factory=dict)  # verifier member name -> raw score
    extra: dict = field(default_factory=dict)  # algorithm facts, JSON-safe (e.g. Zero-Order "cos", Paths "segment")

    def __post_init__(self) -> None:
        if self.root is None:
            self.root = self.id

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "parent": self.parent, "round": self.round, "kind": self.kind, "root": self.root,
            "from_noise": self.from_noise, "final": self.final, "decode": self.decode, "plain": self.plain,
            "sigma": self.sigma, "nfe": self.nfe, "score": self.score, "members": dict(self.members),
            "extra": dict(self.extra),
        }


@dataclass
class SearchResult:
    """What a search returns: the winner, the top-k, the full candidate log and the scaling curve."""

    algorithm: str
    config: dict
    best: Tensor  # [*shape] final state of the best candidate
    best_score: float
    best_id: int
    best_noise: Optional[Tensor]  # [*shape] initial noise of the best candidate's lineage (its root for paths);
    # None when nothing was sampled (a scored set, see search.score_set)
    topk: Tensor  # [k, *shape] final states, best first
    topk_ids: list
    topk_scores: list
    candidates: list  # list[Candidate], in the order they were scored
    nfe: int  # NFEs actually spent
    nfe_planned: int  # estimate_nfe(...) before the run
    curve: list  # [(nfe, best final score so far)] after every chunk; with an aggregate, the best aggregate over
    # all finals scored by that NFE (so a point can fall when a later final outranks the earlier ones)
    baseline_score: Optional[float] = None  # score of candidate 0 = the seed's own noise, no search
    notes: list = field(default_factory=list)  # human-readable facts (e.g. what best_noise means)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe report (no tensors)."""
        return {
            "version": 1, "algorithm": self.algorithm, "config": dict(self.config),
            "best_id": self.best_id, "best_score": self.best_score, "baseline_score": self.baseline_score,
            "topk_ids": list(self.topk_ids), "topk_scores": list(self.topk_scores),
            "nfe": self.nfe, "nfe_planned": self.nfe_planned,
            "curve": [[int(n), float(s)] for n, s in self.curve],
            "candidates": [c.to_dict() for c in self.candidates], "notes": list(self.notes),
        }
