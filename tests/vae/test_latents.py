"""vae/latents.py: straight and spherical paths through the latent space."""

import math

import pytest
import torch

from mnist_vae.vae.latents import linear_path, spherical_path


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_the_straight_path_is_exact_at_the_ends_and_linear():
    z1, z2 = torch.randn(3, 5, generator=gen(1)), torch.randn(3, 5, generator=gen(2))
    path = linear_path(z1, z2, 7)
    assert path.shape == (3, 7, 5)
    assert torch.equal(path[:, 0], z1) and torch.equal(path[:, -1], z2)
    torch.testing.assert_close(path[:, 3], (z1 + z2) / 2)
    torch.testing.assert_close(path.diff(dim=1), ((z2 - z1) / 6).unsqueeze(1).expand(3, 6, 5))
    assert torch.equal(linear_path(z1[0], z2[0], 2), torch.stack([z1[0], z2[0]]))
    with pytest.raises(ValueError):
        linear_path(z1, z2, 1)


def test_the_spherical_path_keeps_the_norm_and_falls_back_to_straight_for_parallel_ends():
    z1, z2 = torch.tensor([3.0, 0.0]), torch.tensor([0.0, 3.0])
    path = spherical_path(z1, z2, 5)
    assert torch.allclose(path.norm(dim=1), torch.full((5,), 3.0))  # on the circle: no sag midway
    assert torch.allclose(path[0], z1) and torch.allclose(path[-1], z2)
    angle = math.pi / 8  # a quarter turn in four equal steps
    assert torch.allclose(path[1], 3.0 * torch.tensor([math.cos(angle), math.sin(angle)]))
    assert torch.equal(spherical_path(z1, 2 * z1, 3), linear_path(z1, 2 * z1, 3))
    assert torch.equal(spherical_path(torch.zeros(2), z2, 3), linear_path(torch.zeros(2), z2, 3))
