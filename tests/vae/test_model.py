"""The VAE's shapes, the reparameterization trick, sampling and the checkpoint format."""

import math

import pytest
import torch

from mnist_vae.errors import UserError
from mnist_vae.params import ModelParams
from mnist_vae.vae.model import VAE, load_checkpoint, save_checkpoint


@pytest.mark.parametrize("config", [
    ModelParams(),
    ModelParams(hidden_dims=[200, 200], activation="tanh", latent_dim=50),
    ModelParams(architecture="conv", hidden_dims=[64], conv_channels=[8, 16], latent_dim=3),
])
def test_shapes(config):
    torch.manual_seed(0)
    model = VAE(config)
    x = torch.rand(5, 784)
    mu, logvar = model.encode(x)
    assert mu.shape == logvar.shape == (5, config.latent_dim)
    logits, mu2, _ = model(x)
    assert logits.shape == (5, 784)
    torch.testing.assert_close(mu, mu2)
    images = model.sample(7)
    assert images.shape == (7, 784) and images.min() >= 0 and images.max() <= 1
    assert torch.isfinite(model.log_px(x, logits)).all() and model.log_px(x, logits).shape == (5,)


def test_reference_architecture_matches_the_notebook():
    model = VAE(ModelParams())
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    shapes = [(m.in_features, m.out_features) for m in linears]
    # encoder 784-400-400, one head for (mu, log sigma^2), decoder 20-400-400-784
    assert shapes == [(784, 400), (400, 400), (20, 400), (400, 400), (400, 784), (400, 40)]
    # the notebook's two heads (2 x (400*20 + 20)) hold as many parameters as our one
    notebook = (784 * 400 + 400) + (400 * 400 + 400) + 2 * (400 * 20 + 20) \
        + (20 * 400 + 400) + (400 * 400 + 400) + (400 * 784 + 784)
    assert sum(p.numel() for p in model.parameters()) == notebook == 973_624


def test_reparameterize_is_differentiable_and_has_the_right_moments():
    torch.manual_seed(0)
    mu = torch.full((200_000, 1), 1.5, requires_grad=True)
    logvar = torch.full((200_000, 1), 2 * torch.log(torch.tensor(0.5)).item(), requires_grad=True)
    z = VAE.reparameterize(mu, logvar)
    assert z.mean().item() == pytest.approx(1.5, abs=0.01)
    assert z.std().item() == pytest.approx(0.5, abs=0.01)
    z.sum().backward()
    assert mu.grad is not None and logvar.grad is not None
    torch.testing.assert_close(mu.grad, torch.ones_like(mu))


def test_learned_gaussian_sigma_is_a_parameter():
    model = VAE(ModelParams(likelihood="gaussian", gaussian_sigma="learned"))
    assert any(p is model.log_sigma for p in model.parameters()) and model.log_sigma.shape == (784,)
    assert not any(p is model.log_sigma for p in VAE(ModelParams(likelihood="gaussian")).parameters())


def test_checkpoint_round_trip_with_weights_only(tmp_path):
    torch.manual_seed(0)
    config = ModelParams(hidden_dims=[64, 32], latent_dim=4, likelihood="gaussian", gaussian_sigma="learned")
    model = VAE(config).eval()
    path = tmp_path / "vae.pt"
    save_checkpoint(path, model)
    raw = torch.load(path, weights_only=True)
    assert raw["config"]["latent_dim"] == 4 and "fc_mu_logvar.weight" in raw["state_dict"]
    loaded = load_checkpoint(path)
    x = torch.rand(3, 784)
    torch.testing.assert_close(loaded.encode(x), model.encode(x))
    torch.testing.assert_close(loaded.log_sigma, model.log_sigma)


def test_bad_checkpoints_are_one_line_errors(tmp_path):
    with pytest.raises(UserError, match="missing"):
        load_checkpoint(tmp_path / "nope.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="not a readable checkpoint") as err:
        load_checkpoint(bad)
    assert "\n" not in str(err.value)
    # the cause is named: here a checkpoint whose weights do not fit its config
    torch.manual_seed(0)
    model = VAE(ModelParams(hidden_dims=[16], latent_dim=2))
    save_checkpoint(tmp_path / "vae.pt", model)
    raw = torch.load(tmp_path / "vae.pt", weights_only=True)
    raw["config"]["latent_dim"] = 3
    torch.save(raw, tmp_path / "vae.pt")
    with pytest.raises(UserError) as err:
        load_checkpoint(tmp_path / "vae.pt")
    message = str(err.value)
    assert "\n" not in message and "RuntimeError" in message and "size mismatch" in message


def test_the_model_owns_its_prior_a_seeded_standard_normal_and_its_log_density():
    torch.manual_seed(0)
    model = VAE(ModelParams(hidden_dims=[16], latent_dim=3))
    z = model.sample_prior(5, torch.Generator().manual_seed(4))
    assert z.shape == (5, 3) and torch.equal(z, torch.randn(5, 3, generator=torch.Generator().manual_seed(4)))
    point = torch.tensor([[0.0, 0.0, 0.0], [1.0, -2.0, 0.5]])
    want = torch.tensor([-1.5 * math.log(2 * math.pi), -1.5 * math.log(2 * math.pi) - 0.5 * 5.25])
    torch.testing.assert_close(model.log_prior(point), want)
    torch.testing.assert_close(model.sample(4, torch.Generator().manual_seed(1)),
                               model.mean(model.decode(model.sample_prior(4, torch.Generator().manual_seed(1)))))


# ---------------------------------------------------------------- the prior: N(0, I) or the VampPrior


def vamp(k=3, latent_dim=2, seed=0) -> VAE:
    torch.manual_seed(seed)
    return VAE(ModelParams(hidden_dims=[16], latent_dim=latent_dim, prior="vamp", vamp_components=k)).eval()


def test_standard_prior_draws_and_density_are_n01():
    torch.manual_seed(0)
    model = VAE(ModelParams(hidden_dims=[16], latent_dim=3))
    # the very draws the model made before it owned its prior: randn(n, d) from the generator
    z = model.sample_prior(5, torch.Generator().manual_seed(4))
    assert torch.equal(z, torch.randn(5, 3, generator=torch.Generator().manual_seed(4)))
    expected = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1)
    torch.testing.assert_close(model.log_prior(z), expected)
    assert not hasattr(model, "pseudo_inputs")


def test_vamp_pseudo_inputs_are_parameters_in_0_1_initialised_as_the_paper():
    model = vamp(k=50, latent_dim=4)
    assert any(p is model.pseudo_inputs for p in model.parameters()) and model.pseudo_inputs.shape == (50, 784)
    u = model.pseudo_input_images()
    # N(0.05, 0.01^2) per pixel, through hardtanh(0, 1)
    assert abs(u.mean().item() - 0.05) < 1e-3 and abs(u.std().item() - 0.01) < 1e-3
    with torch.no_grad():
        model.pseudo_inputs[0] = 5.0
        model.pseudo_inputs[1] = -5.0
    u = model.pseudo_input_images()
    assert u[0].eq(1).all() and u[1].eq(0).all()
    mu, logvar = model.prior_components()
    torch.testing.assert_close((mu, logvar), model.encode(u))
    # the other weights are those of a standard model of the same seed (the pseudo-inputs are drawn last)
    torch.manual_seed(0)
    standard = VAE(ModelParams(hidden_dims=[16], latent_dim=4))
    assert torch.equal(standard.fc_mu_logvar.weight, model.fc_mu_logvar.weight)


def test_vamp_log_prior_is_the_mixture_of_the_components():
    model = vamp(k=3)
    z = torch.randn(7, 2)
    mu, logvar = model.prior_components()
    direct = torch.stack([torch.distributions.Normal(mu[k], torch.exp(0.5 * logvar[k])).log_prob(z).sum(-1)
                          for k in range(3)]).exp().mean(0).log()
    torch.testing.assert_close(model.log_prior(z), direct)
    assert model.log_prior(z.reshape(7, 1, 2)).shape == (7, 1)  # leading dimensions are kept


def test_vamp_draws_each_component_at_its_share_and_a_seed_repeats_them():
    model = vamp(k=4)
    # four components far apart and narrow (sigma = exp(-5)), so each draw's component is plain to see
    mu = torch.tensor([[0.0, 0.0], [100.0, 0.0], [200.0, 0.0], [300.0, 0.0]])
    logvar = torch.full((4, 2), -10.0)
    model.prior_components = lambda: (mu, logvar)
    n = 40000
    with torch.no_grad():
        z = model.sample_prior(n, torch.Generator().manual_seed(0))
    component = (z[:, 0:1] - mu[:, 0]).abs().argmin(1)
    shares = torch.bincount(component, minlength=4) / n
    # each 1/4 within 5 standard errors sqrt(p (1 - p) / n)
    assert ((shares - 0.25).abs() < 5 * (0.25 * 0.75 / n) ** 0.5).all()
    # within a component the draws are N(mu_k, sigma_k^2): here sigma = exp(-5)
    spread = z[component == 2, 0] - mu[2, 0]
    assert abs(spread.std().item() - torch.exp(torch.tensor(-5.0)).item()) < 2e-4
    with torch.no_grad():
        again = model.sample_prior(n, torch.Generator().manual_seed(0))
        other = model.sample_prior(n, torch.Generator().manual_seed(1))
    assert torch.equal(z, again) and not torch.equal(z, other)


def test_vamp_checkpoint_loads_with_its_prior_and_an_old_one_as_standard(tmp_path):
    model = vamp(k=5)
    save_checkpoint(tmp_path / "vae.pt", model)
    loaded = load_checkpoint(tmp_path / "vae.pt")
    assert loaded.config.prior == "vamp" and loaded.config.vamp_components == 5
    assert torch.equal(loaded.pseudo_inputs, model.pseudo_inputs)
    with torch.no_grad():
        g = lambda: torch.Generator().manual_seed(2)  # noqa: E731
        assert torch.equal(loaded.sample_prior(6, g()), model.sample_prior(6, g()))
    # a checkpoint from before the prior existed: no prior fields in its config
    torch.manual_seed(0)
    old = VAE(ModelParams(hidden_dims=[16], latent_dim=2))
    save_checkpoint(tmp_path / "old.pt", old)
    raw = torch.load(tmp_path / "old.pt", weights_only=True)
    del raw["config"]["prior"], raw["config"]["vamp_components"]
    torch.save(raw, tmp_path / "old.pt")
    assert load_checkpoint(tmp_path / "old.pt").config.prior == "standard"


def test_the_model_class_keeps_its_old_import_path():
    import mnist_vae.model as old
    from mnist_vae.vae import model as new

    assert old.VAE is new.VAE and old.load_checkpoint is new.load_checkpoint
