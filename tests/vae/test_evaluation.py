"""Evaluation: active units, mutual information, the importance-weighted estimate, bits per dimension."""

import math

import pytest
import torch

from helpers.models import LinearGaussianVAE
from mnist_vae.params import EvaluateParams, ModelParams
from mnist_vae.vae import evaluation
from mnist_vae.vae.model import VAE


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


def direct_mutual_information(mu, logvar, z):
    """I(x; z) with every (z_i, x_j) pair at once, in float64, written from the definition."""
    q = torch.distributions.Normal(mu.double()[None], torch.exp(0.5 * logvar.double())[None])
    log_q_zi_xj = q.log_prob(z.double()[:, None]).sum(-1)  # (i, j)
    log_qz = torch.logsumexp(log_q_zi_xj, dim=1) - math.log(len(mu))
    # the estimator's first term is the exact negative entropy E_q[log q(z|x)], its second uses the draw
    neg_entropy = (-0.5 * mu.shape[1] * math.log(2 * math.pi) - 0.5 * (1 + logvar.double()).sum(-1)).mean()
    return float(neg_entropy - log_qz.mean())


def test_mutual_information_in_blocks_equals_the_direct_computation():
    g = torch.Generator().manual_seed(4)
    n, d = 300, 5
    mu, logvar = torch.randn(n, d, generator=g) * 2, torch.randn(n, d, generator=g) * 0.5 - 1
    torch.manual_seed(0)  # the one z per x the estimate draws, repeated here
    z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
    direct = direct_mutual_information(mu, logvar, z)
    # blocks of 1, 7 and 299 rows of z, and all 300 at once
    results = []
    for max_elements in (1, 7 * n * d, 299 * n * d, n * n * d):
        torch.manual_seed(0)
        results.append(evaluation.mutual_information(mu, logvar, max_elements=max_elements))
    assert results[0] == results[1] == results[2] == results[3]
    assert results[0] == pytest.approx(direct, abs=1e-4)
    assert 0.5 < direct < math.log(n)  # a case in between the limits


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
    # blocks of 7 samples (max_rows=70 over batches of 10) combined by log-sum-exp, and one block of all K
    chunked = evaluation.importance_sampled(model, x, k=2000, batch_size=10, max_rows=70)
    whole = evaluation.importance_sampled(model, x, k=2000, batch_size=50, max_rows=10**6)
    for est in (chunked, whole):
        assert (est["log_px"] - exact).mean().abs() < 0.01
        assert (est["log_px"] - exact).abs().max() < 0.1
        elbo = -(est["rec"] + est["kl"])
        assert (elbo < est["log_px"]).all() and (exact - elbo).mean() > 0.3  # the ELBO is well below


@pytest.mark.parametrize("batch_size", [10, 7])  # 7 x 3 latent draws per sample: not a multiple of 16
def test_importance_sampled_numbers_do_not_depend_on_the_block_size(batch_size):
    g = torch.Generator().manual_seed(3)
    model = LinearGaussianVAE(torch.randn(6, 3, generator=g, dtype=torch.float64),
                              torch.randn(6, generator=g, dtype=torch.float64), 0.5)
    model.eval = lambda: model
    x = torch.randn(20, 6, generator=g, dtype=torch.float64)
    runs = []
    for max_rows in (1, 3 * batch_size, 64, 10**6):  # 1 sample per block, 3, several, all K at once
        runs.append(evaluation.importance_sampled(model, x, k=50, batch_size=batch_size, max_rows=max_rows,
                                                  generator=torch.Generator().manual_seed(9)))
    for run in runs[1:]:
        for name in ("log_px", "rec", "kl"):
            torch.testing.assert_close(run[name], runs[0][name], rtol=0, atol=1e-12)
    other_seed = evaluation.importance_sampled(model, x, k=50, batch_size=batch_size,
                                               generator=torch.Generator().manual_seed(10))
    assert not torch.equal(other_seed["log_px"], runs[0]["log_px"])  # the draws do come from the generator


def test_bits_per_dim_formula():
    # hand values: NLL 0 nats on [0,1]^784 is 8 bits per pixel on the 0..255 scale; 784 ln 2 nats more is 9
    assert evaluation.bits_per_dim(0.0) == pytest.approx(8.0)
    assert evaluation.bits_per_dim(784 * math.log(2)) == pytest.approx(9.0)
    assert evaluation.bits_per_dim(-784 * 8 * math.log(2)) == pytest.approx(0.0)


def test_a_uniform_model_scores_exactly_8_bits_per_dim():
    # decoder logits 0: the continuous Bernoulli with lambda = 1/2 is the uniform density on [0, 1];
    # encoder 0: q(z|x) = p(z), so every importance weight is 1 and log p(x) = 0 exactly
    model = VAE(ModelParams(hidden_dims=[16], latent_dim=3, likelihood="continuous_bernoulli"))
    with torch.no_grad():
        model.fc_mu_logvar.weight.zero_(), model.fc_mu_logvar.bias.zero_()
        model.decoder[-1].weight.zero_(), model.decoder[-1].bias.zero_()
    torch.manual_seed(0)
    x = torch.rand(30, 784)
    out = evaluation.evaluate(model, x, x[:0], EvaluateParams(iw_samples=4, batch_size=10, mi_examples=30),
                              "continuous_bernoulli", "uniform")
    assert out["test"]["iw_nll"] == pytest.approx(0.0, abs=1e-4)
    assert out["test"]["bpd"] == pytest.approx(8.0, abs=1e-6)
    assert out["test"]["bpd_elbo"] == pytest.approx(8.0, abs=1e-6)


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
    assert cb["likelihood"]["normalised"] and "bpd" in cb["test"]
    binary = evaluation.evaluate(model, torch.bernoulli(x), x[:0], p, "bernoulli", "binarize")
    assert binary["likelihood"]["normalised"] and "bpd" not in binary["test"]


def test_components_used_counts_the_components_nearest_to_some_code():
    torch.manual_seed(0)
    model = VAE(ModelParams(hidden_dims=[16], latent_dim=2, prior="vamp", vamp_components=4)).eval()
    centres = torch.tensor([[0.0, 0.0], [5.0, 0.0], [0.0, 5.0], [5.0, 5.0]])
    # a wide component at the origin and three narrow ones: "most likely" weighs the variances too
    logvar = torch.tensor([[4.0, 4.0], [-2.0, -2.0], [-2.0, -2.0], [-2.0, -2.0]])
    model.prior_components = lambda: (centres, logvar)
    codes = torch.tensor([[5.1, 0.1], [4.9, -0.1], [0.1, 5.0], [2.0, 2.0]])
    # (2, 2) is nearer the narrow components' centres than most of the wide one's mass, yet the wide one
    # is the likelier
    assert evaluation.most_likely_components(model, codes).tolist() == [1, 1, 2, 0]
    assert evaluation.components_used(model, codes) == 3
    assert evaluation.components_used(model, codes[:2]) == 1


def test_evaluate_under_the_vampprior_reports_the_mixture_kl_and_the_components_used():
    torch.manual_seed(0)
    model = VAE(ModelParams(hidden_dims=[32], latent_dim=4, prior="vamp", vamp_components=7)).eval()
    x = torch.rand(60, 784)
    p = EvaluateParams(iw_samples=5, batch_size=25, mi_examples=30)
    out = evaluation.evaluate(model, x, x[:20], p, "bernoulli", "notebook")
    assert out["prior"] == "vamp"
    vamp = out["vamp"]
    assert vamp["components"] == 7 and 1 <= vamp["components_used"] <= 7
    assert vamp["kl_to_mixture"] == out["test"]["kl"]
    assert vamp["kl_to_standard_normal"] == pytest.approx(sum(out["posterior"]["kl_per_dim"]), abs=1e-3)
    assert out["test"]["iw_nll"] <= out["test"]["nelbo"]
    assert "vamp" not in evaluation.evaluate(VAE(ModelParams(hidden_dims=[32], latent_dim=4)).eval(), x, x[:0], p,
                                             "bernoulli", "notebook")
