"""The toy search problem (tests/helpers/toys.py) against its closed forms."""

from __future__ import annotations

import math

import torch

from noise_search.tests.helpers.toys import MU, SHAPE, S, Toy, denoise


def _ids(k):
    return [type("C", (), {"id": i})() for i in range(k)]


def test_toy_euler_last_step_lands_on_the_x0_prediction():
    toy = Toy(steps=6)
    x = toy.noise(0)[None]
    x_end, x0 = toy.integrate(x, toy.sigmas, _ids(1))
    assert torch.allclose(x_end, x0, atol=1e-6)
    assert not torch.allclose(x0, denoise(x, float(toy.sigmas[0])))


def test_toy_euler_converges_to_the_probability_flow_closed_form():
    # (x - MU) / sqrt(S^2 + sigma^2) is constant along the exact probability-flow ODE of this toy
    gen = torch.Generator().manual_seed(0)
    errors = []
    for steps in (15, 60):
        toy = Toy(steps=steps)
        x = torch.randn(200, *SHAPE, generator=gen) * float(toy.sigmas[0])
        x_end, _ = toy.integrate(x, toy.sigmas, _ids(200))
        exact = MU + (x - MU) * S / math.sqrt(S * S + float(toy.sigmas[0]) ** 2)
        errors.append((x_end - exact).abs().max().item())
    assert errors[1] < 0.1 and errors[1] < errors[0] / 2
