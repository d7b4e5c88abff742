"""A trained model as the API holds it: the VAE, how its inputs are dequantized, where it came from, and the
latent samplers fitted to it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from mnist_vae.errors import UserError
from mnist_vae.vae import samplers
from mnist_vae.vae.model import VAE
from mnist_vae.vae.samplers import choice
from mnist_vae.vae.samplers.choice import Choice


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
    beside it is not used (corrupt, fitted to another checkpoint, another version's format), or None.
    choice: its best sampler as evaluate recorded it (models/best_sampler.json beside the samplers, or the
    logged model's copy), or None; choice_problem: why a choice file found is not used, or None.
    """

    vae: VAE
    dequantize: str
    origin: Origin
    samplers: Optional[samplers.Fitted] = None
    sampler_problem: Optional[UserError] = None
    choice: Optional[Choice] = None
    choice_problem: Optional[UserError] = None

    @property
    def latent_dim(self) -> int:
        return self.vae.latent_dim

    @property
    def config(self):
        """The model's params (mnist_vae.params.ModelParams)."""
        return self.vae.config

    @property
    def default_sampler(self) -> str:
        """The sampler `sample` draws from when none is named: the best one evaluate recorded, else the prior."""
        return self.choice.sampler if self.choice else samplers.PRIOR

    def sampler(self, name: str) -> samplers.Sampler:
        """The sampler `name` (samplers.available(self.samplers)) to draw z from."""
        return samplers.get(self.vae, self.samplers, name)


def read_samplers(checkpoint: Path, sampler_file: Path, choice_file: Path) -> dict[str, Any]:
    """The LoadedModel fields of a checkpoint's samplers and best-sampler choice (files that may be absent): a
    file that is there but unusable is kept as its problem, raised only when sampling needs it."""
    out: dict[str, Any] = {}
    if not sampler_file.is_file():
        return out
    try:
        out["samplers"] = samplers.load(sampler_file, checkpoint)
    except UserError as exc:
        out["sampler_problem"] = exc
        return out
    if choice_file.is_file():
        try:
            out["choice"] = choice.load(choice_file, checkpoint, sampler_file, samplers.available(out["samplers"]))
        except UserError as exc:
            out["choice_problem"] = exc
    return out
