"""Frames of a training as it goes: the digits decoded from one fixed set of draws of the prior, and the
reconstructions of one fixed set of test digits, taken before the first epoch and after each, so a viewer
can step through the digits forming.

The draws come from a generator of their own, seeded apart from the training's streams (Seeds.frames), and
nothing here touches the global generator: taking frames changes no number of the training.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

SAMPLES = 64  # digits decoded from the fixed draws (an 8 x 8 grid)
RECONSTRUCTIONS = 10  # test digits, reconstructed (under their originals)


@dataclass
class Frames:
    """What each frame shows: `seed` for the prior's draws (the same draws every frame), `x` the test digits."""

    seed: int
    x: torch.Tensor  # (RECONSTRUCTIONS, 784) model inputs
    taken: list = field(default_factory=list)  # the frames so far, in order (train fills it)

    @torch.no_grad()
    def take(self, model) -> dict[str, torch.Tensor]:
        """This moment's frame: {"samples": (SAMPLES, 784), "reconstructions": (RECONSTRUCTIONS, 784)}, uint8."""
        z = model.sample_prior(SAMPLES, torch.Generator().manual_seed(self.seed))
        samples = model.mean(model.decode(z))
        reconstructions = model.mean(model.decode(model.encode(self.x)[0]))
        return {"samples": to_uint8(samples), "reconstructions": to_uint8(reconstructions)}


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Images in [0, 1] -> uint8 0..255 on the CPU (round to nearest)."""
    return torch.round(images.detach().float().cpu().clamp(0, 1) * 255).to(torch.uint8)


def stack(frames: list[dict[str, torch.Tensor]], x: torch.Tensor) -> dict[str, np.ndarray]:
    """The frames as the train stage writes them: samples (F, SAMPLES, 784), reconstructions (F, RECONSTRUCTIONS,
    784), originals (RECONSTRUCTIONS, 784), uint8; epochs (F,), the epoch each frame was taken after (0: before
    the first)."""
    return {"epochs": np.arange(len(frames), dtype=np.int64),
            "samples": torch.stack([f["samples"] for f in frames]).numpy(),
            "reconstructions": torch.stack([f["reconstructions"] for f in frames]).numpy(),
            "originals": to_uint8(x).numpy()}
