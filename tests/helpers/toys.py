"""Toy search problems with closed forms, shared by the search tests (checked in tests/unit/test_search_toys.py).

Data x0 ~ N(MU, S^2 I) elementwise; the exact denoiser is E[x0 | x_sigma] = MU + S^2 / (S^2 + sigma^2) (x - MU),
sampled with Euler in ComfyUI's variance-exploding convention (x = x0 + sigma * eps).
"""

from __future__ import annotations

from collections import Counter

import torch

from noise_search.search.noise import renoise_ve, seeded_noise
from noise_search.search.types import SearchProblem

MU, S = 0.5, 0.7
SHAPE = (2, 3, 3)


def karras(steps: int, sigma_max: float = 10.0, sigma_min: float = 0.05, rho: float = 7.0) -> torch.Tensor:
    ramp = torch.linspace(0, 1, steps, dtype=torch.float64)
    s = (sigma_max ** (1 / rho) + ramp * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho
    return torch.cat([s, s.new_zeros(1)]).to(torch.float32)


def denoise(x: torch.Tensor, sigma: float) -> torch.Tensor:
    return MU + S * S / (S * S + sigma * sigma) * (x - MU)


class Toy:
    """An Euler sampler over the Gaussian toy with call logs; scores -||x0 - target||^2."""

    def __init__(self, steps: int = 10, seed: int = 123, target: float = 1.0, cost=None, max_batch: int = 8,
                 start_scale: bool = True):
        self.sigmas = karras(steps)
        self.seed = seed
        self.target = torch.full(SHAPE, target)
        self.cost = cost
        self.max_batch = max_batch
        self.integrate_calls: list = []  # (ids, sigma_from, sigma_to)
        self.score_calls: Counter = Counter()
        self.scored_sigmas: list = []
        self.progress_log: list = []
        self.start_scale = start_scale

    def integrate(self, x, sigmas, batch):
        assert x.shape[0] == len(batch)
        self.integrate_calls.append(([c.id for c in batch], float(sigmas[0]), float(sigmas[-1])))
        x0 = x
        for s, s_next in zip(sigmas[:-1].tolist(), sigmas[1:].tolist()):
            x0 = denoise(x, s)
            x = x + (x - x0) / s * (s_next - s)
        return x, x0

    def score(self, x0, sigma, batch):
        for c in batch:
            self.score_calls[c.id] += 1
        self.scored_sigmas.append(sigma)
        d = ((x0 - self.target) ** 2).flatten(1).sum(1)
        return -d, {"neg_dist": -d, "mean": x0.flatten(1).mean(1)}

    def noise(self, i):
        n = seeded_noise(self.seed, SHAPE)(i)
        return n * float(self.sigmas[0]) if self.start_scale else n

    def progress(self, *args):
        self.progress_log.append(args)

    def problem(self, **overrides) -> SearchProblem:
        kw = dict(integrate=self.integrate, score=self.score, sigmas=self.sigmas, noise=self.noise,
                  renoise=renoise_ve, cost=self.cost, max_batch=self.max_batch, progress=self.progress)
        kw.update(overrides)
        return SearchProblem(**kw)


class Recording(Toy):
    """The toy keeping each candidate's starting rows (`inputs`) and each re-noising (`renoise_calls`: rows,
    sigma from, sigma to); a `table` (candidate id -> score) replaces the distance score."""

    def __init__(self, table=None, **kw):
        super().__init__(**kw)
        self.table, self.inputs, self.renoise_calls = table, {}, []

    def table_key(self, c):
        return c.id

    def integrate(self, x, sigmas, batch):
        for c, row in zip(batch, x):
            self.inputs[c.id] = row.clone()
        return super().integrate(x, sigmas, batch)

    def score(self, x0, sigma, batch):
        out = super().score(x0, sigma, batch)
        return out if self.table is None else torch.tensor([float(self.table(self.table_key(c))) for c in batch])

    def renoise(self, x, s_from, s_to, noise):
        self.renoise_calls.append((x.shape[0], s_from, s_to))
        return renoise_ve(x, s_from, s_to, noise)

    def problem(self, **kw) -> SearchProblem:
        return super().problem(**{"renoise": self.renoise, **kw})


def heun_cost(sigmas) -> int:
    return 2 * (len(sigmas) - 1)


def assert_bit_identical(results: list) -> None:
    """Every SearchResult equals the first bit for bit: states, noises, rankings, notes and the candidate log."""
    first = results[0]
    for r in results[1:]:
        assert torch.equal(r.best, first.best) and torch.equal(r.topk, first.topk)
        assert torch.equal(r.best_noise, first.best_noise)
        assert (r.topk_ids, r.topk_scores, r.notes, r.nfe) == \
            (first.topk_ids, first.topk_scores, first.notes, first.nfe)
        assert [(c.id, c.parent, c.score, c.members) for c in r.candidates] == \
            [(c.id, c.parent, c.score, c.members) for c in first.candidates]
