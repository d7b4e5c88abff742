"""A trained model as the API holds it: the VAE, how its inputs are dequantized, where it came from, and the
latent samplers fitted to it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from mnist_vae.vae import samplers
from mnist_vae.vae.model import VAE


@dataclass
class Origin:
    """Where a loaded model came from, and how its dequantization mode was found."""

    uri: str
    kind: str  # "checkpoint" | "mlflow"
    dequantize_from: str
    run_id: Optional[str] = None
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class LoadedModel:
    """A trained VAE (in eval mode, on the CPU) and what using it needs besides its weights.

    dequantize: the ``dequantize.mode`` it was trained with (preprocess's `mode`).
    samplers: the latent samplers fitted to it, or None; sampler_problem: why a samplers file found
    beside it is not used (corrupt, fitted to another checkpoint), or None.
    """

    vae: VAE
    dequantize: str
    origin: Origin
    samplers: Optional[samplers.Fitted] = None
    sampler_problem: Optional[str] = None

    @property
    def latent_dim(self) -> int:
        return self.vae.latent_dim

    @property
    def config(self):
        """The model's params (mnist_vae.params.ModelParams)."""
        return self.vae.config

    def sampler(self, name: str) -> samplers.Sampler:
        """The sampler `name` (samplers.available(self.samplers)) to draw z from."""
        return samplers.get(self.vae, self.samplers, name)
