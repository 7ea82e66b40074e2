"""Table verifiers: members with hand-set scores, for checking ensembles and the search decisions built on them."""

import torch

from noise_search.search import run_search
from noise_search.tests.helpers.toys import Toy
from noise_search.verifiers.base import Verifier
from noise_search.verifiers.ensemble import Ensemble, combine


class Table(Verifier):
    """A member whose score for image i is table[i]; image i carries i in its first pixel (i / 100)."""

    def __init__(self, name, table, needs=frozenset(), sigma=None, batch_size=16):
        super().__init__()
        self.name, self.needs, self.reference_sigma, self.batch_size = name, frozenset(needs), sigma, batch_size
        self.table = torch.tensor(table, dtype=torch.float32)
        self.model = torch.nn.Linear(1, 1)
        self.score_calls = 0

    def score(self, images, prompt=None, references=None):
        self.score_calls += 1
        return super().score(images, prompt, references)

    def _score(self, images, prompt, references):
        return self.table[(images[:, 0, 0, 0] * 100).round().long()]


def images(ids):
    """A batch whose image i carries ids[i] in its first pixel, as Table reads it."""
    x = torch.zeros(len(ids), 4, 4, 3)
    x[:, 0, 0, 0] = torch.tensor(ids, dtype=torch.float32) / 100
    return x


def ensemble_problem(ens: Ensemble, max_batch: int, score_images, steps: int = 20, prompt=None):
    """The toy scored by `ens` as the search node scores: (the batch's own aggregate, raw members), ens.aggregate."""
    def score(x0, sigma, batch):
        return ens.score(score_images(x0, batch), prompt), ens.member_scores()

    return Toy(steps=steps, max_batch=max_batch).problem(score=score, aggregate=ens.aggregate)


def table_search(algorithm, tables, max_batch, weights=None, mode="rank", **config):
    """Search with Table members: candidate i's raw member scores are tables[name][i]."""
    ens = Ensemble([Table(name, values) for name, values in tables.items()], weights=weights, mode=mode)
    by_id = lambda x0, batch: images([c.id for c in batch])  # noqa: E731
    return run_search(algorithm, ensemble_problem(ens, max_batch, by_id), **config)


BATCHES = (1, 3, 64)  # one row per call, a few, every row of the largest set in one call


def aggregate_table(tables, ids, weights, mode):
    values = combine({n: torch.tensor([float(v[i]) for i in ids]) for n, v in tables.items()}, weights, mode)
    return dict(zip(ids, values.tolist()))


def top_ids(scores, ids, k):
    return sorted(ids, key=lambda i: (-scores[i], i))[:k]
