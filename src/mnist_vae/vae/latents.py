"""Paths through the latent space: straight, and spherical (slerp)."""

from __future__ import annotations

import math

import torch


def linear_path(z1: torch.Tensor, z2: torch.Tensor, steps: int) -> torch.Tensor:
    """The straight path (1 - a) z1 + a z2 for a = 0, 1/(steps-1), ..., 1, as (..., steps, d); steps >= 2.

    The path starts at z1 and ends at z2 exactly.
    """
    if steps < 2:
        raise ValueError(f"a path needs at least 2 steps, got {steps}")
    alpha = (torch.arange(steps, dtype=z1.dtype, device=z1.device) / (steps - 1)).unsqueeze(-1)
    return (1 - alpha) * z1.unsqueeze(-2) + alpha * z2.unsqueeze(-2)


def spherical_path(z1: torch.Tensor, z2: torch.Tensor, steps: int) -> torch.Tensor:
    """`steps` points from z1 to z2 (vectors (d,)) along the great circle, as float32 (steps, d):
    sin((1 - a) w) / sin(w) z1 + sin(a w) / sin(w) z2 with w the angle between them (slerp, the usual
    choice for Gaussian latents, whose mass lies near a sphere: the norm does not sag midway). It is the
    straight path when z1 and z2 are (anti)parallel or one of them is 0."""
    a = torch.linspace(0, 1, steps, dtype=torch.float64).unsqueeze(-1)
    u, v = z1.double(), z2.double()
    cos = torch.dot(u, v) / (u.norm() * v.norm()).clamp_min(1e-300)
    omega = torch.arccos(cos.clamp(-1, 1))
    if omega.abs() < 1e-6 or (math.pi - omega).abs() < 1e-6 or u.norm() == 0 or v.norm() == 0:
        return linear_path(z1, z2, steps)
    return ((torch.sin((1 - a) * omega) * u + torch.sin(a * omega) * v) / torch.sin(omega)).float()
