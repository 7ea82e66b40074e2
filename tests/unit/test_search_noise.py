"""Candidate noises, sphere neighbours and the exact forward noising kernels."""

import math

import pytest
import torch

from noise_search.search.noise import RENOISE, renoise_flow, renoise_ve, seeded_noise, sphere_neighbour


def test_seeded_noise_is_the_seed_plus_index_stream_whatever_the_leading_batch_dim():
    source = seeded_noise(2**64 - 2, (4, 8, 8))
    for i in range(4):
        expected = torch.randn((1, 4, 8, 8), generator=torch.Generator("cpu").manual_seed((2**64 - 2 + i) % 2**64))
        assert torch.equal(source(i), expected[0])
    assert torch.equal(source(3), seeded_noise(2**64 - 2, (4, 8, 8))(3))
    assert not torch.equal(source(0), source(1))
    assert seeded_noise(1, (2, 2), dtype=torch.float64)(0).dtype == torch.float64
    with pytest.raises(ValueError, match="index"):
        source(-1)


@pytest.mark.parametrize("cos", [0.95, 0.5, 0.0, -0.3])
def test_sphere_neighbour_keeps_the_norm_and_has_the_requested_cosine(cos):
    gen = torch.Generator().manual_seed(0)
    p, d = torch.randn(4, 16, 16, generator=gen), torch.randn(4, 16, 16, generator=gen)
    q = sphere_neighbour(p, d, cos)
    assert q.shape == p.shape and q.dtype == p.dtype
    assert abs(q.norm().item() / p.norm().item() - 1) < 1e-5
    assert abs(torch.nn.functional.cosine_similarity(q.flatten(), p.flatten(), dim=0).item() - cos) < 1e-5
    # it moves towards the direction: q - cos * p is parallel to d's part orthogonal to p
    ortho = d - (d.flatten() @ p.flatten()) / p.norm() ** 2 * p
    if cos < 1:
        assert torch.nn.functional.cosine_similarity((q - cos * p).flatten(), ortho.flatten(), dim=0) > 0.9999


def test_sphere_neighbour_rejects_degenerate_inputs():
    p = torch.ones(3, 3)
    with pytest.raises(ValueError, match="parallel"):
        sphere_neighbour(p, 2 * p, 0.5)
    with pytest.raises(ValueError, match="zero norm"):
        sphere_neighbour(torch.zeros(3), torch.ones(3), 0.5)
    with pytest.raises(ValueError, match="cos"):
        sphere_neighbour(p, torch.randn(3, 3, generator=torch.Generator().manual_seed(1)), 1.5)
    assert torch.allclose(sphere_neighbour(p, torch.eye(3), 1.0), p)


def _samples(k, gen):
    return torch.randn(k, 6, generator=gen, dtype=torch.float64), torch.randn(k, 6, generator=gen, dtype=torch.float64)


def test_renoise_ve_matches_the_marginal_at_the_higher_sigma():
    gen = torch.Generator().manual_seed(0)
    x0 = torch.linspace(-2, 2, 6, dtype=torch.float64)
    eps, n = _samples(200_000, gen)
    x_to = renoise_ve(x0 + 0.8 * eps, 0.8, 2.5, n)
    assert torch.allclose(x_to.mean(0), x0, atol=0.03)
    assert torch.allclose(x_to.var(0), torch.full((6,), 2.5**2, dtype=torch.float64), rtol=0.02)
    x = x0 + 0.8 * eps[:3]
    assert torch.equal(renoise_ve(x, 0.8, 0.8, n[:3]), x)


def test_renoise_flow_matches_the_rectified_flow_marginal():
    gen = torch.Generator().manual_seed(1)
    x0 = torch.linspace(-2, 2, 6, dtype=torch.float64)
    eps, n = _samples(200_000, gen)
    t_from, t_to = 0.3, 0.7
    x_to = renoise_flow((1 - t_from) * x0 + t_from * eps, t_from, t_to, n)
    assert torch.allclose(x_to.mean(0), (1 - t_to) * x0, atol=0.01)
    assert torch.allclose(x_to.var(0), torch.full((6,), t_to**2, dtype=torch.float64), rtol=0.02)
    # the kernel is the composition of the forward process: x_to and x_from share the old noise with weight r * t_from
    cov = ((x_to - x_to.mean(0)) * (eps - eps.mean(0))).mean(0)
    r = (1 - t_to) / (1 - t_from)
    assert torch.allclose(cov, torch.full((6,), r * t_from, dtype=torch.float64), atol=0.01)
    x = (1 - t_from) * x0 + t_from * eps[:3]
    assert torch.equal(renoise_flow(x, t_from, t_from, n[:3]), x)
    to_one = renoise_flow(x, t_from, 1.0, n[:3])
    assert torch.allclose(to_one, n[:3])


def test_renoise_kernels_refuse_to_go_down_and_are_registered():
    x, n = torch.zeros(2), torch.ones(2)
    for kernel in RENOISE.values():
        with pytest.raises(ValueError, match="sigma_to=0.2 must be >= sigma_from=0.5"):
            kernel(x, 0.5, 0.2, n)
    assert RENOISE == {"ve": renoise_ve, "flow": renoise_flow}
    with pytest.raises(ValueError, match="t_from < 1"):
        renoise_flow(x, 1.0, 1.0, n)
    assert math.isclose(renoise_ve(x, 3.0, 5.0, n)[0].item(), 4.0)
