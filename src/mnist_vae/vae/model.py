"""The VAE: an encoder to q(z|x) = N(mu, diag(sigma^2)), the reparameterization trick, a decoder to p(x|z),
and its prior p(z).

The default is the reference notebook's MLP (784 -> 400 -> 400 -> 20, mirrored decoder). The decoder
returns logits; the likelihood (objectives.py) turns them into log p(x|z) and into images.

The prior is N(0, I) (model.prior standard), or the VampPrior (Tomczak & Welling 2018, model.prior vamp):
p(z) = (1/K) sum_k q(z | u_k), the encoder's own posteriors at K learned pseudo-inputs u_k. Every draw
of z ~ p(z) and every log p(z) goes through :meth:`VAE.sample_prior` and :meth:`VAE.log_prior`.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn

from mnist_vae.data.geometry import PIXELS, SIDE
from mnist_vae.files import load_tensors, save_tensors
from mnist_vae.params import ModelParams
from mnist_vae.vae import objectives

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh}


def mlp(sizes: list[int], activation: str) -> nn.Sequential:
    layers: list[nn.Module] = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(n_in, n_out), ACTIVATIONS[activation]()]
    return nn.Sequential(*layers)


def conv_encoder(channels: list[int], hidden: int, activation: str) -> nn.Sequential:
    c1, c2 = channels
    act = ACTIVATIONS[activation]
    return nn.Sequential(
        nn.Unflatten(1, (1, SIDE, SIDE)),
        nn.Conv2d(1, c1, 4, stride=2, padding=1), act(),   # 14x14
        nn.Conv2d(c1, c2, 4, stride=2, padding=1), act(),  # 7x7
        nn.Flatten(), nn.Linear(c2 * 7 * 7, hidden), act(),
    )


def conv_decoder(channels: list[int], hidden: int, latent_dim: int, activation: str) -> nn.Sequential:
    c1, c2 = channels
    act = ACTIVATIONS[activation]
    return nn.Sequential(
        nn.Linear(latent_dim, hidden), act(),
        nn.Linear(hidden, c2 * 7 * 7), act(), nn.Unflatten(1, (c2, 7, 7)),
        nn.ConvTranspose2d(c2, c1, 4, stride=2, padding=1), act(),  # 14x14
        nn.ConvTranspose2d(c1, 1, 4, stride=2, padding=1),  # 28x28 logits
        nn.Flatten(),
    )


class VAE(nn.Module):
    def __init__(self, config: ModelParams):
        super().__init__()
        self.config = config
        self.latent_dim = config.latent_dim
        hidden = config.hidden_dims
        if config.architecture == "mlp":
            self.encoder = mlp([PIXELS, *hidden], config.activation)
            self.decoder = nn.Sequential(
                mlp([config.latent_dim, *hidden[::-1]], config.activation), nn.Linear(hidden[0], PIXELS)
            )
        else:
            self.encoder = conv_encoder(config.conv_channels, hidden[-1], config.activation)
            self.decoder = conv_decoder(config.conv_channels, hidden[-1], config.latent_dim, config.activation)
        # One head for mu and log sigma^2: a single matrix multiply instead of two.
        self.fc_mu_logvar = nn.Linear(hidden[-1], 2 * config.latent_dim)
        if config.likelihood == "gaussian" and config.gaussian_sigma == "learned":
            self.log_sigma = nn.Parameter(torch.full((PIXELS,), -2.0))
        else:
            self.register_buffer("log_sigma", torch.tensor(0.0), persistent=False)
        if config.prior == "vamp":
            # the pseudo-inputs before the input non-linearity, hardtanh to [0, 1] (as the paper's code),
            # initialised as the paper does for MNIST: N(0.05, 0.01^2) per pixel (drawn last, so the other
            # weights are those of a standard-prior model of the same seed)
            self.pseudo_inputs = nn.Parameter(torch.randn(config.vamp_components, PIXELS) * 0.01 + 0.05)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x -> (mu, log sigma^2) of q(z|x)."""
        return self.fc_mu_logvar(self.encoder(x)).chunk(2, dim=-1)

    @staticmethod
    def reparameterize(mu: torch.Tensor, logvar: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """z = mu + sigma * eps, eps ~ N(0, I): a sample of q(z|x) that gradients flow through.
        eps comes from `generator`, or the global generator when None."""
        eps = torch.randn_like(mu) if generator is None else \
            torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
        return mu + eps * torch.exp(0.5 * logvar)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """z -> logits of p(x|z) (for the Gaussian likelihood, the logit of its mean)."""
        return self.decoder(z)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mu, logvar = self.encode(x)
        return self.decode(self.reparameterize(mu, logvar, generator)), mu, logvar

    def log_px(self, x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """log p(x|z) per example, under this model's likelihood."""
        return objectives.log_likelihood(self.config, x, logits, self.log_sigma)

    def mean(self, logits: torch.Tensor) -> torch.Tensor:
        """The image a decoder output stands for: E[x|z]."""
        return objectives.likelihood_mean(self.config.likelihood, logits)

    def pseudo_input_images(self) -> torch.Tensor:
        """The VampPrior's K pseudo-inputs u_k as the encoder sees them: (K, 784) in [0, 1]."""
        return nn.functional.hardtanh(self.pseudo_inputs, 0.0, 1.0)

    def prior_components(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The VampPrior's K components q(z | u_k): (mu, log sigma^2), each (K, latent_dim), in full precision."""
        mu, logvar = self.encode(self.pseudo_input_images())
        return objectives.full(mu), objectives.full(logvar)

    def sample_prior(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n draws z ~ p(z), (n, latent_dim) on the model's device, from `generator` (a CPU generator, or
        the global one when None). Under vamp: a component k uniformly, then z ~ q(z | u_k); the draws,
        in order: the n components, then n x latent_dim normals."""
        device = self.fc_mu_logvar.weight.device
        if self.config.prior == "standard":
            return torch.randn(n, self.latent_dim, generator=generator, device="cpu").to(device)
        k = torch.randint(self.config.vamp_components, (n,), generator=generator, device="cpu").to(device)
        eps = torch.randn(n, self.latent_dim, generator=generator, device="cpu").to(device)
        mu, logvar = self.prior_components()
        return mu[k] + eps * torch.exp(0.5 * logvar[k])

    def log_prior(self, z: torch.Tensor) -> torch.Tensor:
        """log p(z) per row of z (..., latent_dim) -> (...). Under vamp:
        logsumexp_k log N(z; mu_k, sigma_k^2) - log K, by blocks of rows (no -inf far from every component)."""
        if self.config.prior == "standard":
            return objectives.standard_normal_log_density(z)
        mu, logvar = self.prior_components()
        return objectives.mixture_log_density(z, mu, logvar)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n images decoded from z ~ p(z), as (n, 784) means in [0, 1]."""
        return self.mean(self.decode(self.sample_prior(n, generator)))


def save_checkpoint(path: Path, model: VAE, provenance: dict | None = None) -> None:
    """State dict, the model's hyperparameters and where it came from (strings and numbers);
    loadable with torch.load(weights_only=True)."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    save_tensors(path, {"config": model.config.model_dump(), "state_dict": state, "provenance": provenance or {}})


def checkpoint_provenance(path: Path) -> dict:
    """What save_checkpoint recorded about the model's training (data digest, torch version, device)."""
    return load_tensors(path, "checkpoint").get("provenance", {})


def load_checkpoint(path: Path, device: str | torch.device = "cpu") -> VAE:
    """The VAE saved at `path`, in eval mode on `device`; a FileProblem if it is missing or unreadable."""
    built: list[VAE] = []

    def build(ckpt: dict) -> None:
        model = VAE(ModelParams.model_validate(ckpt["config"]))
        model.load_state_dict(ckpt["state_dict"])
        built.append(model)

    load_tensors(path, "checkpoint", check=build, device=device)
    return built[0].to(device).eval()
