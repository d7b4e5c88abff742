"""Latent samplers (vae/samplers): a mixture's draws follow its parameters, seeds repeat, fits recover
known densities and report their progress, a diverging fit is one line naming sampler.gmm_reg_covar, the
held-out digits are never fitted, the stored file round-trips without pickle and refuses another
checkpoint or another version's format, bad input is one line, and on real digits the fitted sampler
beats the prior in log-density and FID."""

import math
import pickle
import shutil
from fractions import Fraction
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from helpers.digits import FIXTURE_DIGITS, REPO
from helpers.model_fixtures import SMALL_SAMPLER
from mnist_vae.errors import FileProblem, UserError
from mnist_vae.files import load_npz, sha256_file
from mnist_vae.params import ClassifierParams, ModelParams, QualityParams, SamplerParams
from mnist_vae.pipeline import stage
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
    return {"format": samplers.FORMAT, "latent_dim": 2, "fit_on": "mu", "n_codes": 1, "n_train": 2,
            "held_out_start": 1, "seed": 0, "checkpoint_sha256": "0" * 64,
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


def three_gaussians() -> dict:
    """A 3-component 2-D mixture with unequal weights and correlated covariances, its components apart."""
    cov = torch.tensor([[[0.5, 0.2], [0.2, 0.3]], [[0.2, -0.1], [-0.1, 0.4]], [[0.3, 0.0], [0.0, 0.1]]], dtype=torch.float64)
    state = known_mixture()
    state["samplers"]["gmm"].update(weights=torch.tensor([0.2, 0.5, 0.3], dtype=torch.float64),
                                    means=torch.tensor([[-4.0, 0.0], [0.0, 3.0], [4.0, -1.0]], dtype=torch.float64),
                                    scale_tril=torch.linalg.cholesky(cov))
    return state


def test_the_default_fit_recovers_a_three_component_mixture_within_sampling_error():
    truth = three_gaussians()["samplers"]["gmm"]
    n = 30000
    z = mixture_of(three_gaussians()).draw(n, torch.Generator().manual_seed(1)).double()
    p = SamplerParams()  # the default fit: 10 EM iterations
    fitted = gmm.fit(z, 3, p.gmm_max_iter, p.gmm_reg_covar, seed=0)
    order = torch.argsort(fitted["means"][:, 0])
    for k, j in enumerate(order.tolist()):
        w = float(truth["weights"][k])
        assert abs(float(fitted["weights"][j]) - w) < 4 * math.sqrt(w * (1 - w) / n)
        cov = truth["scale_tril"][k] @ truth["scale_tril"][k].T
        se = torch.sqrt(torch.diagonal(cov) / (w * n))
        assert (fitted["means"][j] - truth["means"][k]).abs().le(4 * se).all()
        got = fitted["scale_tril"][j] @ fitted["scale_tril"][j].T
        assert (got - cov).abs().le(4 * torch.sqrt((cov**2 + torch.outer(torch.diagonal(cov), torch.diagonal(cov))) / (w * n))).all()


def test_the_fit_reports_its_progress_and_gives_the_bytes_of_one_uninterrupted_em():
    from sklearn.mixture import GaussianMixture

    z = mixture_of(three_gaussians()).draw(3000, torch.Generator().manual_seed(2)).double()
    heard = []
    fitted = gmm.fit(z, 6, max_iter=12, seed=0, say=heard.append)
    once = GaussianMixture(6, covariance_type="full", max_iter=12, reg_covar=1e-6, random_state=0).fit(z.numpy())
    assert torch.equal(fitted["means"], torch.from_numpy(once.means_)) and fitted["n_iter"] == once.n_iter_
    assert torch.equal(fitted["weights"], torch.from_numpy(once.weights_))
    lines = [line for line in heard if line.startswith("EM iteration")]
    assert len(lines) == len(heard) == math.ceil(once.n_iter_ / gmm.PROGRESS_EVERY) and "\n" not in "".join(heard)
    assert lines[0].startswith(f"EM iteration {gmm.PROGRESS_EVERY}/12: mean log-likelihood ")


class _Libc:
    """A C library as ctypes sees it: with mallopt and malloc_trim (glibc, calls recorded), with mallopt alone,
    or with neither (macOS)."""

    def __init__(self, has_mallopt: bool, has_trim: bool = True):
        self.calls = []
        if has_mallopt:
            self.mallopt = lambda param, value: self.calls.append((param, value)) or 1
        if has_mallopt and has_trim:
            self.malloc_trim = lambda pad: self.calls.append(("malloc_trim", pad)) or 1


def _no_handle(name):
    raise TypeError("expected str, bytes or os.PathLike object, not NoneType")  # ctypes.CDLL(None) on Windows


@pytest.mark.parametrize("has_mallopt,has_trim", [(True, True), (True, False), (False, False), (None, False)],
                         ids=["glibc", "mallopt-without-malloc_trim", "no-mallopt", "no-handle"])
def test_the_fit_keeps_freed_memory_only_while_it_runs_and_gives_the_same_bytes_without_glibc(
        monkeypatch, has_mallopt, has_trim):
    z = mixture_of(three_gaussians()).draw(1000, torch.Generator().manual_seed(4)).double()
    plain = gmm.fit(z, 3, max_iter=3, seed=0)
    from sklearn.mixture import GaussianMixture

    libc = _Libc(bool(has_mallopt), has_trim)
    cdll = _no_handle if has_mallopt is None else (lambda name: libc)
    monkeypatch.setattr(gmm, "ctypes", SimpleNamespace(CDLL=cdll))  # gmm's C library, not threadpoolctl's
    em = GaussianMixture.fit
    monkeypatch.setattr(GaussianMixture, "fit", lambda self, x: libc.calls.append("EM") or em(self, x))
    again = gmm.fit(z, 3, max_iter=3, seed=0)
    assert all(torch.equal(plain[key], again[key]) for key in ("weights", "means", "scale_tril"))
    # glibc's M_MMAP_MAX is -4 and M_TRIM_THRESHOLD -1 (malloc.h); its defaults 65536 and 128 KiB
    kept, restored = [(-4, 0), (-1, 1 << 30)], [(-4, 65536), (-1, 128 * 1024)] + [("malloc_trim", 0)] * has_trim
    assert libc.calls == (kept + ["EM"] + restored if has_mallopt else ["EM"])
    libc.calls.clear()
    with pytest.raises(UserError, match="diverged"):  # a fit that fails sets glibc's defaults back too
        gmm.fit(torch.full((50, 2), float("nan"), dtype=torch.float64), 3, max_iter=3, seed=0)
    assert libc.calls == (kept + ["EM"] + restored if has_mallopt else ["EM"])


def test_a_diverging_fit_is_one_line_naming_reg_covar_and_returns_nothing(monkeypatch):
    from sklearn.mixture import GaussianMixture

    z = mixture_of(three_gaussians()).draw(500, torch.Generator().manual_seed(3)).double()
    m_step = GaussianMixture._m_step

    def poisoned(self, X, log_resp, **kwargs):  # a NaN in the means, as a covariance gone singular gives
        m_step(self, X, log_resp, **kwargs)
        self.means_[0, 0] = np.nan

    monkeypatch.setattr(GaussianMixture, "_m_step", poisoned)
    with pytest.raises(UserError, match=r"diverged on 500 codes after \d+ EM iterations .*raise sampler.gmm_reg_covar "
                                         r"\(now 1e-06\)") as info:
        gmm.fit(z, 3, seed=0)
    assert "\n" not in str(info.value)


def test_the_log_density_in_blocks_is_the_log_density_at_once(monkeypatch):
    sampler = mixture_of(three_gaussians())
    z = sampler.draw(50, torch.Generator().manual_seed(0)).double()
    whole = sampler.log_density(z)
    monkeypatch.setattr(gmm, "LOG_DENSITY_BLOCK", 7 * 3 * 2)  # 7 rows of 3 components in 2 dimensions per block
    torch.testing.assert_close(sampler.log_density(z), whole, rtol=0, atol=1e-12)


# ---------------------------------------------------------------- what is fitted and what is held out


def test_the_held_out_digits_are_the_last_ones_and_the_fit_never_sees_them():
    p = SamplerParams(held_out=30, fit_examples=0, gmm_components=2)
    assert samplers.split(100, p) == (70, 70)
    assert samplers.split(100, SamplerParams(held_out=30, fit_examples=50)) == (50, 70)
    assert samplers.split(100, SamplerParams(held_out=30, fit_examples=500)) == (70, 70)
    model = tiny(latent_dim=2)
    x = torch.rand(100, 784, generator=torch.Generator().manual_seed(0))
    state, summary = samplers.fit(model, x, p, 0)
    assert (state["n_codes"], state["n_train"], state["held_out_start"]) == (70, 100, 70)
    assert summary["n_codes"] == 70 and summary["held_out"] == 30
    other = x.clone()
    other[70:] = 1 - other[70:]  # other held-out digits: the same fit, to the byte
    again, _ = samplers.fit(model, other, p, 0)
    assert all(torch.equal(again["samplers"]["gmm"][k], state["samplers"]["gmm"][k]) for k in ("weights", "means", "scale_tril"))
    fitted = samplers.Fitted({**state, "checkpoint_sha256": "0" * 64})
    assert torch.equal(samplers.held_out(fitted, x, Path("sampler.pt")), x[70:])
    with pytest.raises(FileProblem, match=r"sampler.pt was fitted to 100 training digits, not these 99; fit it again"):
        samplers.held_out(fitted, x[:99], Path("sampler.pt"))


def test_more_held_out_digits_than_training_digits_is_one_line():
    with pytest.raises(UserError, match=r"sampler.held_out is 100 but there are only 100 training digits; lower "
                                        r"sampler.held_out below 100"):
        samplers.split(100, SamplerParams(held_out=100))


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
    refit = project / "models" / "refit.pt"  # and the same fit again, from the same seed, the same bytes
    x = torch.from_numpy(load_npz(project / "data" / "processed" / "train.npz", ("x",))["x"])
    samplers.save(refit, samplers.fit(load_checkpoint(checkpoint), x, SMALL_SAMPLER, 0)[0], state["checkpoint_sha256"])
    assert refit.read_bytes() == path.read_bytes()
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


def test_an_older_format_is_refused_in_one_line_that_the_stage_runner_completes(project, monkeypatch):
    path = project / "models" / "sampler.pt"
    state = torch.load(path, weights_only=True)
    old = {k: v for k, v in state.items() if k not in ("n_train", "held_out_start")} | {"format": 1}
    torch.save(old, path)  # what the previous version wrote: no held-out digits
    with pytest.raises(FileProblem, match=r"sampler.pt holds samplers in format 1 \(another mnist-vae\); this version "
                                          r"reads format 2: fit them again$") as info:
        samplers.load(path, project / "models" / "vae.pt")
    assert info.value.problem == "stale" and "\n" not in str(info.value)
    monkeypatch.chdir(REPO)  # where dvc.yaml names the stage that writes models/sampler.pt
    assert stage.fix_for(FileProblem(Path("models/sampler.pt"), "stale", str(info.value))) == "; rerun `dvc repro sampler`"


def test_more_components_than_codes_and_a_singular_fit_are_one_line():
    z = torch.randn(10, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    with pytest.raises(UserError, match="gmm_components is 11 but there are only 10 codes"):
        gmm.fit(z, 11)
    collapsed = torch.zeros(50, 3, dtype=torch.float64)  # every code the same point: no covariance to fit
    with pytest.raises(UserError, match="raise sampler.gmm_reg_covar \\(now 0\\) or lower sampler.gmm_components"):
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
    state, summary = samplers.fit(model, x_train, SMALL_SAMPLER, 0)
    fitted = samplers.Fitted(state)
    assert summary["samplers"]["gmm"]["components"] == 5 and summary["n_codes"] == 800
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
