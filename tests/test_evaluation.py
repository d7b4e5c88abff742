"""Evaluation: active units, mutual information, the importance-weighted estimate, bits per dimension."""

import math

import pytest
import torch

from mnist_vae import evaluation
from mnist_vae.model import VAE
from mnist_vae.params import EvaluateParams, ModelParams

from test_objectives import LinearGaussianVAE


def test_active_units_on_an_encoder_built_to_have_three():
    torch.manual_seed(0)
    model = VAE(ModelParams(hidden_dims=[32], latent_dim=6))
    with torch.no_grad():  # mu rows 3..5: zero weights, so those means never vary with x
        model.fc_mu_logvar.weight[3:6] = 0
        model.fc_mu_logvar.weight[0:3] *= 20
    mu, _ = evaluation.encode_all(model, torch.rand(500, 784))
    assert evaluation.active_units(mu) == 3
    assert evaluation.active_units(mu, threshold=1e9) == 0


def test_mutual_information_limits():
    torch.manual_seed(0)
    # posterior = prior for every x: z carries no information about x (Monte Carlo noise ~ 1/sqrt(n) = 0.02)
    zero = evaluation.mutual_information(torch.zeros(2000, 2), torch.zeros(2000, 2))
    assert abs(zero) < 0.08
    n, d = 2000, 2
    # well-separated, narrow posteriors: the estimate reaches its ceiling log n
    far = evaluation.mutual_information(torch.randn(n, d) * 10, torch.full((n, d), -12.0))
    assert far == pytest.approx(math.log(n), abs=0.08)


def test_importance_sampled_estimate_reaches_the_exact_log_likelihood():
    g = torch.Generator().manual_seed(3)
    W = torch.randn(6, 3, generator=g, dtype=torch.float64)
    model = LinearGaussianVAE(W, torch.randn(6, generator=g, dtype=torch.float64), 0.5)
    model.logvar = model.logvar + 0.5  # an imperfect q
    x = model.decode(torch.randn(50, 3, generator=g, dtype=torch.float64)) + 0.5 * torch.randn(
        50, 6, generator=g, dtype=torch.float64)
    model.eval = lambda: model
    exact = model.exact_log_px(x)
    torch.manual_seed(0)
    # chunks of 7 samples (max_rows=70 over batches of 10) combined by log-sum-exp, and one chunk of all K
    chunked = evaluation.importance_sampled(model, x, k=2000, batch_size=10, max_rows=70)
    whole = evaluation.importance_sampled(model, x, k=2000, batch_size=50, max_rows=10**6)
    torch.manual_seed(1)
    chunked_seed1 = evaluation.importance_sampled(model, x, k=2000, batch_size=10, max_rows=70)
    for est in (chunked, whole):
        assert (est["log_px"] - exact).mean().abs() < 0.01
        assert (est["log_px"] - exact).abs().max() < 0.1
        elbo = -(est["rec"] + est["kl"])
        assert (elbo < est["log_px"]).all() and (exact - elbo).mean() > 0.3  # the ELBO is well below
    # the chunk size is a speed knob only: the same draws, so the same numbers
    torch.manual_seed(1)
    one_chunk = evaluation.importance_sampled(model, x, k=2000, batch_size=10, max_rows=10**6)
    for name in ("log_px", "rec", "kl"):
        torch.testing.assert_close(one_chunk[name], chunked_seed1[name], rtol=0, atol=1e-9)


def test_bits_per_dim_formula():
    # a uniform density on [0,1]^784 has NLL 0 nats: on the 0..255 scale that is 8 bits per pixel
    assert evaluation.bits_per_dim(0.0) == pytest.approx(8.0)
    assert evaluation.bits_per_dim(784 * math.log(2)) == pytest.approx(9.0)


def test_evaluate_reports_everything_and_flags_unnormalised_bernoulli():
    torch.manual_seed(0)
    model = VAE(ModelParams(hidden_dims=[32], latent_dim=4)).eval()
    x = torch.rand(60, 784)
    p = EvaluateParams(iw_samples=5, batch_size=25, mi_examples=30)
    out = evaluation.evaluate(model, x, x[:20], p, "bernoulli", "notebook")
    assert out["test"]["iw_nll"] <= out["test"]["nelbo"] + 1.0
    assert out["test"]["nelbo"] == pytest.approx(out["test"]["rec"] + out["test"]["kl"])
    assert not out["likelihood"]["normalised"] and "bpd" not in out["test"]
    assert len(out["posterior"]["kl_per_dim"]) == 4
    assert set(out["latent"]) >= {"mu_mean", "mu_std", "logvar_mean", "logvar_std", "generated_mean"}
    cb = evaluation.evaluate(VAE(ModelParams(hidden_dims=[32], latent_dim=4, likelihood="continuous_bernoulli")),
                             x, x[:0], p, "continuous_bernoulli", "uniform")
    assert cb["likelihood"]["normalised"] and cb["test"]["bpd"] == pytest.approx(
        evaluation.bits_per_dim(cb["test"]["iw_nll"]))
    binary = evaluation.evaluate(model, torch.bernoulli(x), x[:0], p, "bernoulli", "binarize")
    assert binary["likelihood"]["normalised"] and "bpd" not in binary["test"]
