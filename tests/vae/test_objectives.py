"""Likelihoods, KL and the ELBO/IWAE machinery against closed forms."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from helpers.models import LinearGaussianVAE
from mnist_vae.params import ModelParams
from mnist_vae.vae import objectives
from mnist_vae.vae.model import VAE


def test_kl_matches_closed_form_and_torch_distributions():
    torch.manual_seed(0)
    mu, logvar = torch.randn(64, 20, dtype=torch.float64), torch.randn(64, 20, dtype=torch.float64)
    ours = objectives.kl_divergence(mu, logvar)
    q = torch.distributions.Normal(mu, torch.exp(0.5 * logvar))
    p = torch.distributions.Normal(torch.zeros_like(mu), torch.ones_like(mu))
    torch.testing.assert_close(ours, torch.distributions.kl_divergence(q, p).sum(-1))
    # hand values: q = p gives 0; mu = 1, sigma = 1 gives 1/2 per dimension; sigma^2 = e gives (e - 1 - 1)/2
    assert objectives.kl_divergence(torch.zeros(1, 5), torch.zeros(1, 5)).item() == 0.0
    assert objectives.kl_divergence(torch.ones(1, 4), torch.zeros(1, 4)).item() == pytest.approx(2.0)
    assert objectives.kl_divergence(torch.zeros(1, 1), torch.ones(1, 1)).item() == pytest.approx((math.e - 2) / 2)


def test_bernoulli_is_the_notebooks_bce():
    torch.manual_seed(0)
    logits, x = torch.randn(8, 784) * 3, torch.rand(8, 784)
    notebook = F.binary_cross_entropy(torch.sigmoid(logits), x, reduction="none").sum(-1)
    torch.testing.assert_close(-objectives.bernoulli_log_prob(x, logits), notebook, rtol=1e-5, atol=1e-3)


def test_bernoulli_is_minus_binary_cross_entropy_with_logits():
    # the README's description: x.logits - softplus(logits) is exactly -BCE-with-logits, summed over pixels
    torch.manual_seed(0)
    logits, x = torch.randn(8, 784, dtype=torch.float64) * 5, torch.rand(8, 784, dtype=torch.float64)
    bce = F.binary_cross_entropy_with_logits(logits, x, reduction="none").sum(-1)
    torch.testing.assert_close(objectives.bernoulli_log_prob(x, logits), -bce, rtol=1e-12, atol=1e-9)


def test_bernoulli_sums_to_one_over_binary_pixels():
    logits = torch.linspace(-20, 20, 101, dtype=torch.float64)[:, None]
    p0 = objectives.bernoulli_log_prob(torch.zeros_like(logits), logits).exp()
    p1 = objectives.bernoulli_log_prob(torch.ones_like(logits), logits).exp()
    torch.testing.assert_close(p0 + p1, torch.ones(101, dtype=torch.float64))


def _integrate(log_density, lo, hi, n=200_001):
    x = torch.linspace(lo, hi, n, dtype=torch.float64)
    return torch.trapezoid(log_density(x).exp(), x).item()


@pytest.mark.parametrize("logit", [-40.0, -8.0, -1.0, -1e-4, 0.0, 1e-6, 0.3, 5.0, 25.0])
def test_continuous_bernoulli_integrates_to_one(logit):
    lg = torch.tensor([logit], dtype=torch.float64)

    def density(x):
        return objectives.continuous_bernoulli_log_prob(x[:, None], lg.expand(len(x), 1))

    # extreme logits concentrate mass at one end: integrate on a log-spaced grid there
    if abs(logit) > 5:
        edge = torch.logspace(-12, 0, 200_001, dtype=torch.float64)
        x = edge if logit < 0 else 1 - edge
        total = abs(torch.trapezoid(density(x).exp(), x).item())
    else:
        total = _integrate(density, 0.0, 1.0)
    assert total == pytest.approx(1.0, abs=2e-4)


@pytest.mark.parametrize("lam", [0.5, 0.5 + 1e-7, 0.5 - 1e-5, 0.4999, 0.3, 0.9, 1e-6, 1 - 1e-6, 1e-12])
def test_continuous_bernoulli_normaliser_closed_form(lam):
    lam_t = torch.tensor(lam, dtype=torch.float64)
    logits = torch.log(lam_t) - torch.log1p(-lam_t)
    if abs(lam - 0.5) < 1e-9:
        expected = math.log(2.0)
    else:  # C(lambda) = 2 artanh(1 - 2 lambda) / (1 - 2 lambda); 2 artanh(1 - 2 lambda) = log((1 - lambda) / lambda)
        expected = math.log(math.log((1 - lam) / lam) / (1 - 2 * lam))
    assert objectives.cb_log_norm(logits).item() == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_continuous_bernoulli_agrees_with_torch_where_torch_is_accurate():
    torch.manual_seed(0)
    logits, x = torch.randn(4, 784, dtype=torch.float64) * 2, torch.rand(4, 784, dtype=torch.float64)
    ref = torch.distributions.ContinuousBernoulli(logits=logits).log_prob(x).sum(-1)
    torch.testing.assert_close(objectives.continuous_bernoulli_log_prob(x, logits), ref, rtol=1e-6, atol=1e-4)


def test_continuous_bernoulli_mean_matches_numeric_mean():
    for logit in (-6.0, -0.7, 0.0, 1e-5, 2.5):
        lg = torch.tensor([logit], dtype=torch.float64)
        x = torch.linspace(0, 1, 100_001, dtype=torch.float64)
        dens = objectives.continuous_bernoulli_log_prob(x[:, None], lg.expand(len(x), 1)).exp()
        numeric = torch.trapezoid(x * dens, x).item()
        assert objectives.likelihood_mean("continuous_bernoulli", lg).item() == pytest.approx(numeric, abs=1e-5)


def test_continuous_bernoulli_mean_is_accurate_in_float32():
    logits = torch.linspace(-4, 4, 400_001, dtype=torch.float32)
    ld = logits.double()  # exact mean 1 / (1 - e^-l) - 1 / l, in float64 away from 0
    exact = torch.where(ld.abs() > 1e-4, 1 / -torch.expm1(-ld) - 1 / ld, 0.5 + ld / 12)
    got = objectives.likelihood_mean("continuous_bernoulli", logits).double()
    assert (got - exact).abs().max().item() < 1e-6


@pytest.mark.parametrize("sigma", [0.05, 0.3, 1.0])
def test_gaussian_integrates_to_one(sigma):
    logit = torch.tensor([[0.4]], dtype=torch.float64)
    log_sigma = torch.tensor(math.log(sigma), dtype=torch.float64)
    total = _integrate(lambda x: objectives.gaussian_log_prob(x[:, None], logit.expand(len(x), 1), log_sigma),
                       -12 * sigma, 1 + 12 * sigma)
    assert total == pytest.approx(1.0, abs=1e-6)


def test_learned_gaussian_sigma_has_a_floor():
    cfg = ModelParams(likelihood="gaussian", gaussian_sigma="learned", gaussian_sigma_min=0.01)
    x = torch.zeros(1, 784, dtype=torch.float64)  # constant pixels, predicted exactly
    logits = torch.full((1, 784), -40.0, dtype=torch.float64)  # mean sigmoid(-40) ~ 4e-18
    ceiling = -784 * (math.log(0.01) + 0.5 * math.log(2 * math.pi))  # log N(0; 0, 0.01^2) per pixel
    for log_sigma in (-50.0, -1e4):  # a per-pixel parameter driven far below the floor
        value = objectives.log_likelihood(cfg, x, logits, torch.full((784,), log_sigma, dtype=torch.float64))
        assert value.item() == pytest.approx(ceiling, rel=1e-9)
    # sigma = sigma_min + exp(log_sigma): at log_sigma = log(0.04) it is 0.05
    value = objectives.log_likelihood(cfg, x, logits, torch.full((784,), math.log(0.04), dtype=torch.float64))
    assert value.item() == pytest.approx(-784 * (math.log(0.05) + 0.5 * math.log(2 * math.pi)), rel=1e-9)


def test_log_likelihood_dispatches_on_config():
    x, logits = torch.rand(2, 784), torch.randn(2, 784)
    zero = torch.tensor(0.0)
    cfg = ModelParams(likelihood="gaussian", gaussian_sigma=0.2)
    torch.testing.assert_close(objectives.log_likelihood(cfg, x, logits, zero),
                               objectives.gaussian_log_prob(x, logits, torch.tensor(math.log(0.2))))
    cfg = ModelParams(likelihood="continuous_bernoulli")
    torch.testing.assert_close(objectives.log_likelihood(cfg, x, logits, zero),
                               objectives.continuous_bernoulli_log_prob(x, logits))


@pytest.fixture
def linear_gaussian():
    g = torch.Generator().manual_seed(1)
    W = torch.randn(6, 3, generator=g, dtype=torch.float64)
    b = torch.randn(6, generator=g, dtype=torch.float64)
    model = LinearGaussianVAE(W, b, 0.5)
    z = torch.randn(40, 3, generator=g, dtype=torch.float64)
    x = model.decode(z) + 0.5 * torch.randn(40, 6, generator=g, dtype=torch.float64)
    return model, x


def analytic_elbo(model, x):
    """E_q[log p(x|z)] - KL(q || p) in closed form for the linear-Gaussian model."""
    mu, logvar = model.encode(x)
    resid = x - model.decode(mu)
    trace = logvar.exp() @ (model.W**2).T  # diag(W diag(var) W^T)
    d = x.shape[1]
    e_log_px = (-0.5 * (resid**2 + trace).sum(-1) / model.s**2 - d * math.log(model.s)
                - 0.5 * d * math.log(2 * math.pi))
    return e_log_px - objectives.kl_divergence(mu, logvar)


def test_elbo_of_any_encoder_is_below_log_px(linear_gaussian):
    model, x = linear_gaussian
    exact = model.exact_log_px(x)
    assert (analytic_elbo(model, x) < exact).all()  # the best diagonal q still misses the correlations
    model.logvar = model.logvar + 1.0  # a deliberately poor encoder
    model.A = model.A * 0.5
    analytic = analytic_elbo(model, x)
    assert (analytic < exact - 0.1).all()
    # the Monte Carlo estimators agree with the closed form (within 4 standard errors)
    torch.manual_seed(0)
    log_w, _, _ = objectives.log_importance_weights(model, x, 4000)
    se = log_w.std(0) / math.sqrt(4000)
    assert ((log_w.mean(0) - analytic).abs() < 4 * se).all()
    rec, kl = objectives.negative_elbo(model, x.repeat(4000, 1))
    one_sample = -(rec + kl).view(4000, -1)
    assert ((one_sample.mean(0) - analytic).abs() < 4 * one_sample.std(0) / math.sqrt(4000)).all()


def test_iwae_rises_with_k_toward_log_px(linear_gaussian):
    model, x = linear_gaussian
    model.logvar = model.logvar + 1.0  # a mismatched q leaves room for K to help
    torch.manual_seed(0)
    exact = model.exact_log_px(x).mean().item()
    bounds = [objectives.iwae_bound(objectives.log_importance_weights(model, x, k)[0]).mean().item()
              for k in (1, 10, 100, 5000)]
    assert bounds[0] < bounds[1] < bounds[2] < bounds[3] <= exact + 0.01
    assert bounds[3] == pytest.approx(exact, abs=0.03)


def test_elbo_equals_log_px_with_the_exact_posterior():
    # with d_z = 1 the exact posterior is one-dimensional, so a diagonal q can be exact
    g = torch.Generator().manual_seed(2)
    W = torch.randn(5, 1, generator=g, dtype=torch.float64)
    model = LinearGaussianVAE(W, torch.randn(5, generator=g, dtype=torch.float64), 0.7)
    x = torch.randn(30, 5, generator=g, dtype=torch.float64)
    torch.manual_seed(0)
    log_w, _, _ = objectives.log_importance_weights(model, x, 8)
    # every importance weight equals p(x): log w_k = log p(x) exactly, whatever z_k
    torch.testing.assert_close(log_w, model.exact_log_px(x).expand(8, -1), rtol=0, atol=1e-9)


def test_iwae_bound_is_log_mean_exp():
    log_w = torch.tensor([[0.0, -1000.0], [math.log(3.0), -1001.0]])
    expected = torch.tensor([math.log(2.0), -1000.0 + math.log((1 + math.exp(-1)) / 2)])
    torch.testing.assert_close(objectives.iwae_bound(log_w), expected)
    assert np.isfinite(objectives.iwae_bound(log_w).numpy()).all()


# ---------------------------------------------------------------- the VampPrior's mixture


def test_mixture_log_density_equals_the_direct_sum_and_ignores_the_block_size(monkeypatch):
    g = torch.Generator().manual_seed(0)
    mu = torch.randn(3, 2, generator=g, dtype=torch.float64)
    logvar = torch.randn(3, 2, generator=g, dtype=torch.float64)
    z = torch.randn(5, 2, generator=g, dtype=torch.float64)
    # by hand: (1/K) sum_k prod_j N(z_j; mu_kj, sigma_kj^2)
    direct = torch.zeros(5, dtype=torch.float64)
    for k in range(3):
        var = logvar[k].exp()
        direct += torch.prod(torch.exp(-(z - mu[k]) ** 2 / (2 * var)) / torch.sqrt(2 * math.pi * var), dim=-1) / 3
    ours = objectives.mixture_log_density(z, mu, logvar)
    torch.testing.assert_close(ours, direct.log(), rtol=0, atol=1e-12)
    monkeypatch.setattr(objectives, "MIXTURE_BLOCK", 1)  # one row per block
    torch.testing.assert_close(objectives.mixture_log_density(z, mu, logvar), ours, rtol=0, atol=0)
    # one component is that Gaussian itself
    torch.testing.assert_close(objectives.mixture_log_density(z, mu[:1], logvar[:1]),
                               objectives.gaussian_log_density(z, mu[0], logvar[0]))


def test_mixture_log_density_in_float32_at_the_vampprior_size_matches_float64():
    # K = 500 components in 50 dimensions, spread and narrow like a trained VampPrior's, not centred at 0
    g = torch.Generator().manual_seed(3)
    mu = 2.0 + 1.5 * torch.randn(500, 50, generator=g, dtype=torch.float64)
    logvar = -4.0 + torch.randn(500, 50, generator=g, dtype=torch.float64)
    z = mu[torch.randint(500, (300,), generator=g)] + 0.1 * torch.randn(300, 50, generator=g, dtype=torch.float64)
    exact = torch.logsumexp(-0.5 * (((z[:, None] - mu[None]) ** 2 / logvar.exp()[None]).sum(-1)
                                    + logvar.sum(-1) + 50 * math.log(2 * math.pi)), dim=-1) - math.log(500)
    ours = objectives.mixture_log_density(z.float(), mu.float(), logvar.float())
    assert (ours.double() - exact).abs().max() < 0.01  # nats, of log-densities near +26 (measured: 0.006)


@pytest.mark.parametrize("z_type, component_type", [(torch.float64, torch.float32), (torch.float32, torch.float64)])
def test_mixture_log_density_takes_codes_and_components_of_different_precisions(z_type, component_type):
    # the sampler stage's codes are float64 and a VampPrior's components float32 (or the other way round):
    # the density is computed in the wider type, as the float64 reference
    g = torch.Generator().manual_seed(5)
    mu, logvar = torch.randn(7, 4, generator=g, dtype=torch.float64), torch.randn(7, 4, generator=g, dtype=torch.float64)
    z = torch.randn(9, 4, generator=g, dtype=torch.float64)
    exact = objectives.mixture_log_density(z, mu, logvar)
    ours = objectives.mixture_log_density(z.to(z_type), mu.to(component_type), logvar.to(component_type))
    assert ours.dtype == torch.float64
    torch.testing.assert_close(ours, objectives.mixture_log_density(
        z.to(z_type).double(), mu.to(component_type).double(), logvar.to(component_type).double()), rtol=0, atol=0)
    assert (ours - exact).abs().max() < 1e-4  # only the float32 side's rounding


def test_mixture_log_density_is_finite_far_from_every_component():
    mu, logvar = torch.zeros(4, 3), torch.full((4, 3), -6.0)  # narrow components at the origin
    mu[1:, 0] = torch.tensor([1.0, 2.0, 3.0])
    z = torch.tensor([[1e3, -1e3, 1e3], [50.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    log_p = objectives.mixture_log_density(z, mu, logvar)
    assert torch.isfinite(log_p).all()  # each component's density underflows to 0 far away; log-sum-exp does not
    # far away the nearest component dominates: log p = log N(z; nearest) - log K
    nearest = objectives.gaussian_log_density(z[1], mu[3], logvar[3]) - math.log(4)
    torch.testing.assert_close(log_p[1], nearest)
    z.requires_grad_(True)
    objectives.mixture_log_density(z, mu, logvar).sum().backward()
    assert torch.isfinite(z.grad).all()


def test_vamp_objective_with_one_standard_normal_component_is_the_standard_one():
    """K = 1 with q(z | u_1) forced to N(0, I): the Monte Carlo KL log q(z|x) - log p(z) averages to the
    closed-form KL of the standard prior, and the reconstruction term is the same draw for draw."""
    torch.manual_seed(0)
    standard = VAE(ModelParams(hidden_dims=[16], latent_dim=3)).eval()
    torch.manual_seed(0)
    vamp = VAE(ModelParams(hidden_dims=[16], latent_dim=3, prior="vamp", vamp_components=1)).eval()
    vamp.prior_components = lambda: (torch.zeros(1, 3), torch.zeros(1, 3))
    x = torch.rand(4, 784).repeat(20000, 1)
    with torch.no_grad():
        rec_s, kl_s = objectives.negative_elbo(standard, x, torch.Generator().manual_seed(1))
        rec_v, kl_v = objectives.negative_elbo(vamp, x, torch.Generator().manual_seed(1))
    torch.testing.assert_close(rec_v, rec_s)  # same weights, same z
    kl_v, kl_s = kl_v.view(20000, 4), kl_s.view(20000, 4)[0]
    se = kl_v.std(0) / math.sqrt(20000)
    assert ((kl_v.mean(0) - kl_s).abs() < 4 * se).all()
    assert (kl_v.std(0) > 0).all()  # a Monte Carlo estimate, not the closed form again
    # the importance weights too: with p = N(0, I) log w is the standard model's, up to rounding
    eps = torch.randn(5, 4, 3)
    with torch.no_grad():
        w_s, _, _ = objectives.log_importance_weights(standard, x[:4], 5, eps)
        w_v, _, _ = objectives.log_importance_weights(vamp, x[:4], 5, eps)
    torch.testing.assert_close(w_v, w_s, rtol=1e-5, atol=1e-4)
