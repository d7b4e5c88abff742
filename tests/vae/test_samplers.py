"""Latent samplers (vae/samplers): a mixture's draws follow its parameters, seeds repeat, fits recover
known densities, the stored file round-trips without pickle and refuses another checkpoint, bad input
is one line, and on real digits the fitted sampler beats the prior in log-density and FID."""

import math
import pickle
import shutil
from fractions import Fraction

import numpy as np
import pytest
import torch

from helpers.digits import FIXTURE_DIGITS
from mnist_vae.errors import FileProblem, UserError
from mnist_vae.files import sha256_file
from mnist_vae.params import ClassifierParams, ModelParams, QualityParams, SamplerParams
from mnist_vae.scoring import classifier, quality
from mnist_vae.vae import samplers
from mnist_vae.vae.model import VAE, load_checkpoint
from mnist_vae.vae.samplers import gmm

torch.set_num_threads(1)


def tiny(latent_dim: int = 2) -> VAE:
    torch.manual_seed(0)
    return VAE(ModelParams(hidden_dims=[8], latent_dim=latent_dim)).eval()


def mixture_of(state: dict, name: str = "gmm") -> samplers.Sampler:
    return samplers.get(tiny(state["latent_dim"]), samplers.Fitted(state), name)


def known_mixture() -> dict:
    """Two well-separated 2-D Gaussians with correlated covariances, weights 0.3 / 0.7."""
    cov = torch.tensor([[[1.0, 0.6], [0.6, 0.5]], [[0.2, -0.1], [-0.1, 0.3]]], dtype=torch.float64)
    return {"format": samplers.FORMAT, "latent_dim": 2, "fit_on": "mu", "n_codes": 0, "seed": 0,
            "checkpoint_sha256": "0" * 64,
            "samplers": {"gmm": {"kind": "gmm", "weights": torch.tensor([0.3, 0.7], dtype=torch.float64),
                                 "means": torch.tensor([[-4.0, 1.0], [3.0, -2.0]], dtype=torch.float64),
                                 "scale_tril": torch.linalg.cholesky(cov), "converged": True, "n_iter": 1}}}


def test_draws_of_a_set_mixture_recover_its_weights_means_and_covariances():
    state = known_mixture()
    s = state["samplers"]["gmm"]
    n = 40000
    z = mixture_of(state).draw(n, torch.Generator().manual_seed(0)).double()
    assert z.shape == (n, 2)
    first = z[:, 0] < -0.5  # the components do not overlap: the sign of z_0 tells them apart
    for k, part in enumerate((z[first], z[~first])):
        m = len(part)
        assert abs(m / n - float(s["weights"][k])) < 4 * math.sqrt(0.25 / n)
        cov = s["scale_tril"][k] @ s["scale_tril"][k].T
        se = torch.sqrt(torch.diagonal(cov) / m)
        assert (part.mean(0) - s["means"][k]).abs().le(5 * se).all()
        assert torch.allclose(torch.cov(part.T), cov, atol=0.05)


def test_the_same_seed_gives_the_same_draws_and_another_seed_others():
    gmm = mixture_of(known_mixture())
    a, b = (gmm.draw(100, torch.Generator().manual_seed(3)) for _ in range(2))
    assert torch.equal(a, b)
    assert not torch.equal(a, gmm.draw(100, torch.Generator().manual_seed(4)))
    assert a.dtype == torch.float32 and a.device == torch.device("cpu")


def test_the_temperature_scales_each_component_about_its_mean():
    s = known_mixture()["samplers"]["gmm"]
    cold = mixture_of(known_mixture()).draw(50, torch.Generator().manual_seed(1), temperature=0.0).double()
    assert all(any(torch.allclose(row, m, atol=1e-6) for m in s["means"]) for row in cold)


def test_the_prior_sampler_is_the_models_own_prior():
    model = tiny(latent_dim=3)
    prior = samplers.get(model, None, "prior")
    z = prior.draw(5, torch.Generator().manual_seed(2))
    assert torch.equal(z, model.sample_prior(5, torch.Generator().manual_seed(2)))
    assert torch.equal(prior.log_density(z.double()), model.log_prior(z.double()))
    assert torch.equal(prior.draw(5, torch.Generator().manual_seed(2), temperature=0.5), 0.5 * z)


def test_the_mixtures_log_density_is_the_closed_form():
    state = known_mixture()
    s = state["samplers"]["gmm"]
    z = torch.tensor([[0.5, -1.0], [-4.0, 1.0]], dtype=torch.float64)
    want = []
    for row in z:
        terms = []
        for w, m, L in zip(s["weights"], s["means"], s["scale_tril"]):
            cov = L @ L.T
            d = row - m
            terms.append(math.log(w) - 0.5 * (d @ torch.linalg.solve(cov, d) + torch.logdet(cov) + 2 * math.log(2 * math.pi)))
        want.append(torch.logsumexp(torch.stack([torch.as_tensor(t) for t in terms]), 0))
    assert torch.allclose(mixture_of(state).log_density(z), torch.stack(want), atol=1e-10)


def test_a_one_component_fit_to_a_gaussian_recovers_it():
    g = torch.Generator().manual_seed(0)
    cov = torch.tensor([[2.0, 0.8, 0.0], [0.8, 1.0, 0.3], [0.0, 0.3, 0.5]], dtype=torch.float64)
    mean = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    z = mean + torch.randn(20000, 3, generator=g, dtype=torch.float64) @ torch.linalg.cholesky(cov).T
    fitted = gmm.fit(z, 1, seed=0)
    assert fitted["converged"] and torch.equal(fitted["weights"], torch.ones(1, dtype=torch.float64))
    assert torch.allclose(fitted["means"][0], mean, atol=0.03)
    assert torch.allclose(fitted["scale_tril"][0] @ fitted["scale_tril"][0].T, cov, atol=0.05)


def test_a_fit_recovers_a_known_mixture_from_its_draws():
    z = mixture_of(known_mixture()).draw(20000, torch.Generator().manual_seed(5)).double()
    fitted = gmm.fit(z, 2, seed=0)
    order = torch.argsort(fitted["means"][:, 0])
    assert torch.allclose(fitted["weights"][order], torch.tensor([0.3, 0.7], dtype=torch.float64), atol=0.02)
    assert torch.allclose(fitted["means"][order], known_mixture()["samplers"]["gmm"]["means"], atol=0.05)


# ---------------------------------------------------------------- the stored file


@pytest.fixture
def project(small_vae_project, tmp_path):
    root = tmp_path / "project"
    shutil.copytree(small_vae_project, root)
    return root


def test_the_stored_samplers_round_trip_without_pickle_and_give_the_same_draws(project, monkeypatch):
    path, checkpoint = project / "models" / "sampler.pt", project / "models" / "vae.pt"
    monkeypatch.setattr(pickle, "loads", lambda *a, **k: pytest.fail("unpickled"))
    fitted = samplers.load(path, checkpoint)  # weights_only=True underneath: no pickle.loads of objects
    state = fitted.state
    assert state["checkpoint_sha256"] == sha256_file(checkpoint) and fitted.names == ["gmm"]
    copy = project / "models" / "copy.pt"
    samplers.save(copy, {k: v for k, v in state.items() if k != "checkpoint_sha256"}, state["checkpoint_sha256"])
    assert copy.read_bytes() == path.read_bytes()  # equal states give equal bytes
    model = load_checkpoint(checkpoint)
    g = lambda: torch.Generator().manual_seed(9)  # noqa: E731
    assert torch.equal(samplers.get(model, samplers.load(copy, checkpoint), "gmm").draw(20, g()),
                       samplers.get(model, fitted, "gmm").draw(20, g()))


def test_a_changed_checkpoint_makes_the_stored_sampler_stale(project):
    checkpoint = project / "models" / "vae.pt"
    model = load_checkpoint(checkpoint)
    with torch.no_grad():
        model.fc_mu_logvar.bias.add_(0.01)
    from mnist_vae.vae.model import save_checkpoint

    save_checkpoint(checkpoint, model)
    with pytest.raises(FileProblem, match=r"sampler.pt was fitted to another checkpoint .*fit it again") as info:
        samplers.load(project / "models" / "sampler.pt", checkpoint)
    assert info.value.problem == "stale"


@pytest.mark.parametrize("content, match", [
    (None, "sampler.pt is missing"),
    (b"not a zip", "not a torch.save zip archive"),
    ("truncated", "not a readable sampler file"),
    ("pickled object", "not a readable sampler file"),
    ("wrong shapes", "do not fit latent_dim"),
])
def test_a_missing_or_corrupt_sampler_file_is_one_line(project, content, match):
    path = project / "models" / "sampler.pt"
    good = path.read_bytes()
    if content is None:
        path.unlink()
    elif content == "truncated":
        path.write_bytes(good[: len(good) // 2])
    elif content == "pickled object":
        torch.save({"format": 1, "samplers": {"gmm": Fraction(1, 3)}}, path)  # an object weights_only refuses
    elif content == "wrong shapes":
        state = torch.load(path, weights_only=True)
        state["samplers"]["gmm"]["means"] = state["samplers"]["gmm"]["means"][:, :2]
        torch.save(state, path)
    else:
        path.write_bytes(content)
    with pytest.raises(UserError, match=match) as exc:
        samplers.load(path, project / "models" / "vae.pt")
    assert "\n" not in str(exc.value)


def test_more_components_than_codes_and_a_singular_fit_are_one_line():
    z = torch.randn(10, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    with pytest.raises(UserError, match="gmm_components is 11 but there are only 10 codes"):
        gmm.fit(z, 11)
    collapsed = torch.zeros(50, 3, dtype=torch.float64)  # every code the same point: no covariance to fit
    with pytest.raises(UserError, match="lower sampler.gmm_components or raise sampler.gmm_reg_covar"):
        gmm.fit(collapsed, 2, reg_covar=0.0)


def test_get_names_the_samplers_a_model_has():
    fitted = samplers.Fitted(known_mixture())
    assert samplers.available(fitted) == ["prior", "gmm"] and samplers.available(None) == ["prior"]
    with pytest.raises(UserError, match=r"unknown sampler 'flow'; this model has: prior, gmm"):
        samplers.get(tiny(), fitted, "flow")
    with pytest.raises(UserError, match=r"unknown sampler 'gmm'; this model has: prior"):
        samplers.get(tiny(), None, "gmm")


def test_the_vampprior_scores_the_float64_codes_of_the_sampler_stage():
    # codes() gives float64 on the CPU, the VampPrior's components are float32: the prior's log-density
    # must be that of the float64 computation (evaluate's code_log_density crashed on it before)
    torch.manual_seed(0)
    model = VAE(ModelParams(hidden_dims=[8], latent_dim=3, prior="vamp", vamp_components=4)).eval()
    z = samplers.codes(model, torch.rand(6, 784), "mu", torch.Generator().manual_seed(0))
    assert z.dtype == torch.float64
    ours = samplers.get(model, None, samplers.PRIOR).log_density(z)
    with torch.no_grad():
        mu, logvar = (t.double() for t in model.prior_components())
    exact = torch.logsumexp(-0.5 * (((z[:, None] - mu[None]) ** 2 / logvar.exp()[None]).sum(-1)
                                    + logvar.sum(-1) + 3 * math.log(2 * math.pi)), dim=-1) - math.log(4)
    torch.testing.assert_close(ours, exact, rtol=0, atol=1e-9)


# ---------------------------------------------------------------- on real digits


@pytest.mark.slow  # trains a model and a classifier for real (about 10 s)
def test_on_the_fixture_digits_the_fitted_sampler_beats_the_prior():
    """A VAE trained for 20 epochs on the fixture's 1000 digits (latent_dim 8, about 7 s): its fitted
    mixture must give the test digits' codes a higher log-density and its samples a lower FID than the
    prior (measured: -7.0 vs -16.7 nats, FID 54 vs 85). A sampler that silently fell back to the prior
    would tie it on both counts."""
    from mnist_vae.data.dequantize import dequantize_splits
    from mnist_vae.params import TrainParams
    from mnist_vae.vae import training

    with np.load(FIXTURE_DIGITS) as f:
        raw = {k: f[k] for k in f.files}
    splits = dequantize_splits(raw, "uniform", 0)
    x_train, x_test = (torch.from_numpy(splits[s]["x"]) for s in ("train", "test"))
    torch.manual_seed(0)
    model = VAE(ModelParams(hidden_dims=[128], latent_dim=8))
    training.train(model, training.Data(x_train, x_test), TrainParams(epochs=20, batch_size=100),
                   training.Seeds.from_seed(0), torch.device("cpu"))
    model.eval()
    state, summary = samplers.fit(model, x_train, SamplerParams(gmm_components=5), 0)
    fitted = samplers.Fitted(state)
    assert summary["samplers"]["gmm"]["components"] == 5 and summary["n_codes"] == 1000
    density = samplers.code_log_density(model, fitted, x_test, "mu", torch.Generator().manual_seed(0))
    assert density["gmm"] > density["prior"] + 3.0, density
    digits = classifier.train(classifier.scale_pixels(raw["x_train"]), raw["y_train"],
                              ClassifierParams(epochs=2, channels=[8, 16], feature_dim=32, batch_size=64))
    f_test, _ = classifier.predict(digits, classifier.scale_pixels(raw["x_test"]))
    p = QualityParams(n_samples=1000)
    fid = {name: quality.sample_quality(digits, quality.generate(model, samplers.get(model, fitted, name), 1000, "uniform",
                                                                 torch.Generator().manual_seed(0)), f_test, p)[0]["fid"]
           for name in ("prior", "gmm")}
    assert fid["gmm"] < 0.8 * fid["prior"], fid


def test_the_seed_of_the_fit_changes_the_fitted_mixture_and_nothing_else():
    z = torch.randn(400, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)  # no clear clusters
    a, again, other = gmm.fit(z, 6, seed=0), gmm.fit(z, 6, seed=0), gmm.fit(z, 6, seed=1)
    assert torch.equal(a["means"], again["means"]) and torch.equal(a["scale_tril"], again["scale_tril"])
    assert not torch.equal(a["means"], other["means"])  # k-means' start: another local optimum of EM


def test_codes_drawn_from_q_use_the_generator_and_means_do_not():
    model = tiny(latent_dim=3)
    x = torch.rand(5, 784)
    g = lambda seed: torch.Generator().manual_seed(seed)  # noqa: E731
    assert torch.equal(samplers.codes(model, x, "mu", g(0)), samplers.codes(model, x, "mu", g(1)))
    assert torch.equal(samplers.codes(model, x, "draws", g(0)), samplers.codes(model, x, "draws", g(0)))
    assert not torch.equal(samplers.codes(model, x, "draws", g(0)), samplers.codes(model, x, "draws", g(1)))
