"""Models with known answers, for testing the objectives and the evaluation against closed forms."""

import math

import torch
import torch.nn as nn

from mnist_vae.params import ModelParams
from mnist_vae.vae.model import VAE


class LinearGaussianVAE(nn.Module):
    """p(z) = N(0, I), p(x|z) = N(Wz + b, s^2 I); log p(x) = log N(x; b, W W^T + s^2 I) in closed form.

    The encoder is linear: q(z|x) = N(A (x - b), diag(exp(logvar))). With A and logvar set from the exact
    posterior (which is Gaussian here), q is the true posterior up to its off-diagonal covariance."""

    config = ModelParams()  # the standard prior
    reparameterize = staticmethod(VAE.reparameterize)

    def __init__(self, W, b, s):
        super().__init__()
        self.W, self.b, self.s = W, b, s
        d = self.latent_dim = W.shape[1]
        M = torch.eye(d, dtype=W.dtype) + W.T @ W / s**2
        self.post_cov = torch.linalg.inv(M)
        self.A = self.post_cov @ W.T / s**2
        self.logvar = torch.log(torch.diagonal(self.post_cov))

    def encode(self, x):
        return (x - self.b) @ self.A.T, self.logvar.expand(len(x), -1)

    def decode(self, z):
        return z @ self.W.T + self.b

    def log_px(self, x, mean):
        return (-0.5 * ((x - mean) / self.s) ** 2 - math.log(self.s) - 0.5 * math.log(2 * math.pi)).sum(-1)

    def forward(self, x):
        mu, logvar = self.encode(x)
        return self.decode(mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)), mu, logvar

    def exact_log_px(self, x):
        cov = self.W @ self.W.T + self.s**2 * torch.eye(len(self.b), dtype=x.dtype)
        return torch.distributions.MultivariateNormal(self.b, cov).log_prob(x)
