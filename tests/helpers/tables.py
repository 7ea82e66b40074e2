"""Table verifiers: members with hand-set scores, for checking ensembles and the search decisions built on them."""

import torch

from noise_search.verifiers.base import Verifier


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
