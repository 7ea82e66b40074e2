"""Ranking a set of finished samples that were scored but not sampled here (Score Images): the result a search
would report if these were its finals, judged by the same aggregate over the whole set, costing 0 NFEs."""

from __future__ import annotations

from typing import Optional, Sequence

import torch

from ._common import aggregate_scores
from .budget import check_top_k
from .types import Aggregate, Candidate, SearchResult


def rank_set(algorithm: str, config: dict, cands: Sequence[Candidate], states: torch.Tensor,
             aggregate: Optional[Aggregate], top_k: int, notes: Sequence[str] = ()) -> SearchResult:
    """`cands` (scored with record_scores, one per row of `states` `[K, *shape]`) ranked best first by
    (-score, id), as a search ranks its finals; with an aggregate every score is decided over all K at once, so
    the ranking does not depend on how the rows were chunked for scoring."""
    check_top_k(top_k)
    if not cands or len(cands) != states.shape[0]:
        raise ValueError(f"rank_set needs one state per candidate and at least one: {len(cands)} candidates, "
                         f"{states.shape[0]} states")
    aggregate_scores(aggregate, cands)
    order = sorted(range(len(cands)), key=lambda j: (-cands[j].score, cands[j].id))
    kept = order[:top_k]
    notes = list(notes)
    if len(kept) < top_k:
        notes.append(f"top_k={top_k} is larger than the {len(kept)} scored image(s): top_k holds {len(kept)}")
    best = cands[order[0]]
    return SearchResult(
        algorithm=algorithm, config=dict(config), best=states[order[0]], best_score=best.score, best_id=best.id,
        best_noise=None, topk=states[kept], topk_ids=[cands[j].id for j in kept],
        topk_scores=[cands[j].score for j in kept], candidates=list(cands), nfe=0, nfe_planned=0, curve=[],
        baseline_score=None, notes=notes)


def ranking(result: SearchResult) -> list[int]:
    """Every candidate id of `result`, best first (the order rank_set ranked them in)."""
    return [c.id for c in sorted(result.candidates, key=lambda c: (-c.score, c.id))]
