"""Candidate noise exactly as a stock KSampler draws it: candidate i of latent batch item b is row b of what
KSampler draws for the whole batch with seed + i (initial noise, ancestral/SDE noise and inpainting noise)."""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch

import comfy.sample
from comfy.k_diffusion import sampling as k_sampling

from ..search.noise import SEED_MODULUS, candidate_seed
from .denoise import BROWNIAN, function_name


def _keep_global_rng():
    """ComfyUI's prepare_noise seeds the global RNG (torch.manual_seed); the search must leave it as it was."""
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
    return torch.random.fork_rng(devices=devices)


class ItemNoise:
    """The noises of latent batch item `item` in a search from `seed` over the batch latent `samples` (on the CPU).

    Calling it with a candidate index gives that candidate's initial noise row (a `SearchProblem.noise`).
    """

    def __init__(self, samples: torch.Tensor, item: int, seed: int, batch_index: Optional[Sequence[int]] = None):
        self.samples = samples
        self.item = int(item)
        self.seed = int(seed)
        self.batch_index = batch_index

    @property
    def shape(self) -> tuple:
        return tuple(self.samples.shape[1:])

    @property
    def batch(self) -> int:
        return int(self.samples.shape[0])

    def __call__(self, index: int) -> torch.Tensor:
        if index < 0:
            raise ValueError(f"noise index must be >= 0, got {index}")
        with _keep_global_rng():
            noise = comfy.sample.prepare_noise(self.samples, candidate_seed(self.seed, index), self.batch_index)
        return noise[self.item]

    def _full(self, row: torch.Tensor) -> torch.Tensor:
        """A batch-shaped view of one row: what a stock sampler's noise sampler is built on (only its size,
        dtype and device are read)."""
        return row.unsqueeze(0).expand(self.batch, *row.shape)

    def noise_sampler(self, fn: Callable, x: torch.Tensor, sigmas: torch.Tensor, ids: Sequence[int]) -> Callable:
        """For rows `x` of candidates `ids`: the noise `fn` would draw in a stock run, each row its own seed."""
        cpu_tree = BROWNIAN.get(function_name(fn))
        if cpu_tree is None:
            samplers = [k_sampling.default_noise_sampler(self._full(row), seed=candidate_seed(self.seed, i))
                        for row, i in zip(x, ids)]
        else:
            low, high = sigmas[sigmas > 0].min(), sigmas.max()
            samplers = [k_sampling.BrownianTreeNoiseSampler(self._full(row), low, high,
                                                            seed=candidate_seed(self.seed, i), cpu=cpu_tree)
                        for row, i in zip(x, ids)]
        item = self.item

        def sample(sigma, sigma_next):
            return torch.cat([s(sigma, sigma_next)[item:item + 1] for s in samplers])

        return sample

    def inpaint_noise(self, ids: Sequence[int], like: torch.Tensor) -> torch.Tensor:
        """KSAMPLER's fresh inpainting noise for samplers with inpaint_options random (ddim): the batch draw
        seeded seed + 1, row `item`, for each candidate."""
        full = (self.batch,) + tuple(like.shape[1:])
        rows = []
        for i in ids:
            generator = torch.Generator("cpu").manual_seed((candidate_seed(self.seed, i) + 1) % SEED_MODULUS)
            rows.append(torch.randn(full, generator=generator, device="cpu")[self.item])
        return torch.stack(rows).to(like.dtype).to(like.device)
