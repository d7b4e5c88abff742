"""Quality metrics: FID against its closed form, k-NN precision/recall on constructed sets, class
coverage, the linear probe, the pixel-scale mapping, the whole `quality` block on fixture digits, the decoder's
floor on the held-out digits and the best sampler."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers.digits import FIXTURE_DIGITS as FIXTURE
from mnist_vae.params import ClassifierParams, ModelParams, QualityParams, SamplerParams
from mnist_vae.scoring import classifier, quality
from mnist_vae.vae import samplers
from mnist_vae.vae.model import VAE


def gaussian(rng, mean, cov, n):
    return rng.multivariate_normal(mean, cov, size=n)


# ---------------------------------------------------------------- FID


def test_fid_of_a_set_with_itself_is_zero():
    f = np.random.default_rng(0).normal(size=(500, 32)) @ np.random.default_rng(1).normal(size=(32, 32))
    assert quality.fid(f, f) == pytest.approx(0.0, abs=1e-6)


def test_frechet_distance_matches_the_closed_form_for_commuting_covariances():
    # diagonal covariances: tr(S1 + S2 - 2 (S1 S2)^½) = sum (sqrt(a) - sqrt(b))²
    a, b = np.array([1.0, 4.0, 9.0, 0.25]), np.array([4.0, 1.0, 9.0, 1.0])
    m1, m2 = np.array([0.0, 1.0, 2.0, 3.0]), np.array([1.0, 1.0, 0.0, 3.0])
    expected = ((m1 - m2) ** 2).sum() + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum()
    assert quality.frechet_distance(m1, np.diag(a), m2, np.diag(b)) == pytest.approx(expected, rel=1e-12)


def test_frechet_distance_matches_a_general_closed_form():
    # S2 = A S1 A with A symmetric PSD commuting with S1? no: use the 1-D-per-axis-rotated case.
    # For S1 = Q diag(a) Q^T and S2 = Q diag(b) Q^T (same eigenvectors, a rotation Q), the trace term is
    # sum (sqrt(a) - sqrt(b))², whatever Q is.
    rng = np.random.default_rng(3)
    q, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    a, b = rng.uniform(0.1, 3, 6), rng.uniform(0.1, 3, 6)
    s1, s2 = q @ np.diag(a) @ q.T, q @ np.diag(b) @ q.T
    assert quality.frechet_distance(np.zeros(6), s1, np.zeros(6), s2) == pytest.approx(
        ((np.sqrt(a) - np.sqrt(b)) ** 2).sum(), rel=1e-9)


def test_fid_between_gaussian_samples_agrees_with_the_closed_form_of_their_parameters():
    rng = np.random.default_rng(0)
    d = 8
    m1, m2 = np.zeros(d), np.full(d, 0.5)
    a, b = np.linspace(0.5, 2.0, d), np.linspace(2.0, 0.5, d)
    closed = ((m1 - m2) ** 2).sum() + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum()
    x, y = gaussian(rng, m1, np.diag(a), 200_000), gaussian(rng, m2, np.diag(b), 200_000)
    assert quality.fid(x, y) == pytest.approx(closed, rel=0.02)


def test_fid_is_symmetric_and_non_negative():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 10)) @ rng.normal(size=(10, 10))
    y = rng.normal(size=(400, 10)) * 2 + 1
    assert quality.fid(x, y) == pytest.approx(quality.fid(y, x), rel=1e-9)
    assert quality.fid(x, y) > 0
    # two samples of one distribution: small, never negative
    z1, z2 = rng.normal(size=(50, 10)), rng.normal(size=(50, 10))
    assert quality.fid(z1, z2) >= 0


def test_the_square_root_stays_real_and_stable_with_fewer_samples_than_features():
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(20, 128)), rng.normal(size=(30, 128))  # rank 19 and 29 in 128 dimensions
    value = quality.fid(x, y)
    assert isinstance(value, float) and math.isfinite(value) and value >= 0
    assert quality.fid(x, x) == pytest.approx(0.0, abs=1e-6)
    # a singular covariance against itself plus a tiny jitter: continuous, no blow-up
    jitter = x + 1e-9 * rng.normal(size=x.shape)
    assert quality.fid(x, jitter) == pytest.approx(0.0, abs=1e-5)
    # agrees with the commuting closed form on exactly singular diagonal covariances
    a, b = np.array([1.0, 0.0, 4.0]), np.array([0.0, 0.0, 1.0])
    assert quality.frechet_distance(np.zeros(3), np.diag(a), np.zeros(3), np.diag(b)) == pytest.approx(2.0)


# ---------------------------------------------------------------- precision and recall


def test_precision_and_recall_of_a_set_against_itself_are_one():
    f = np.random.default_rng(0).normal(size=(400, 16))
    assert quality.precision_recall(f, f, k=3, block=64) == {"precision": 1.0, "recall": 1.0}


def test_a_set_from_fewer_modes_has_high_precision_and_low_recall_against_a_superset():
    # real: 5 well-separated 2-D clusters; fake: fresh points from the first cluster only (mode collapse)
    rng = np.random.default_rng(0)
    centres = 50 * np.stack([np.cos(np.arange(5) * 2 * np.pi / 5), np.sin(np.arange(5) * 2 * np.pi / 5)], 1)
    real = np.concatenate([c + rng.normal(size=(400, 2)) for c in centres])
    fake = centres[0] + rng.normal(size=(400, 2))
    pr = quality.precision_recall(real, fake, k=3, block=100)
    assert pr["precision"] > 0.9
    assert 0.1 < pr["recall"] <= 0.25  # at most the one mode in five it covers
    # and the other way round the roles swap
    swapped = quality.precision_recall(fake, real, k=3, block=100)
    assert swapped["precision"] <= 0.25 and swapped["recall"] > 0.9


def test_knn_radii_are_blocked_without_changing_them():
    f = np.random.default_rng(4).normal(size=(257, 5))
    full = quality.knn_radii(f, 3, block=1000)
    blocked = quality.knn_radii(f, 3, block=7)
    assert torch.allclose(full, blocked, rtol=1e-12, atol=0)  # the matrix product's rounding only
    d = ((f[:, None] - f[None]) ** 2).sum(-1)
    assert np.allclose(full.numpy(), np.sort(d, axis=1)[:, 3])  # k-th neighbour after the point itself


# ---------------------------------------------------------------- class coverage and probe


def test_class_coverage_of_uniform_and_collapsed_predictions():
    uniform = torch.eye(10).repeat(5, 1)  # 50 samples, 5 per class, confidence 1
    c = quality.class_coverage(uniform)
    assert c["histogram"] == [0.1] * 10
    assert c["entropy"] == pytest.approx(math.log(10)) and c["kl_from_uniform"] == pytest.approx(0.0, abs=1e-12)
    assert c["mean_confidence"] == 1.0
    collapsed = torch.full((20, 10), 0.05)
    collapsed[:, 3] = 0.55
    c = quality.class_coverage(collapsed)
    assert c["histogram"][3] == 1.0 and c["entropy"] == 0.0 and str(c["entropy"]) == "0.0"
    assert c["kl_from_uniform"] == pytest.approx(math.log(10)) and c["mean_confidence"] == pytest.approx(0.55)


def test_the_probe_separates_separable_latents_perfectly_and_deterministically():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(10, 6)) * 6
    y_train, y_test = rng.integers(0, 10, 1000), rng.integers(0, 10, 300)
    z_train = centres[y_train] + rng.normal(size=(1000, 6)) * 0.3
    z_test = centres[y_test] + rng.normal(size=(300, 6)) * 0.3
    out = quality.linear_probe(z_train, y_train, z_test, y_test)
    assert out == {"train_accuracy": 1.0, "test_accuracy": 1.0}
    assert quality.linear_probe(z_train, y_train, z_test, y_test) == out
    # labels unrelated to the latents: chance-level on the test set
    shuffled = quality.linear_probe(z_train, rng.permutation(y_train), z_test, y_test)
    assert shuffled["test_accuracy"] < 0.3


# ---------------------------------------------------------------- pixel scale and the whole block


@pytest.fixture(scope="module")
def fixture_digits():
    with np.load(FIXTURE) as f:
        return {k: f[k] for k in f.files}


def test_the_quality_block_on_fixture_digits_is_complete_and_deterministic(fixture_digits):
    raw = fixture_digits
    digits = classifier.train(classifier.scale_pixels(raw["x_train"]), raw["y_train"],
                              ClassifierParams(epochs=2, channels=[8, 16], feature_dim=32, batch_size=64))
    torch.manual_seed(0)
    vae = VAE(ModelParams(hidden_dims=[64], latent_dim=4)).eval()  # untrained: the numbers need not be good
    data = {s: {"x": torch.from_numpy(np.float32(raw[f"x_{s}"]).reshape(-1, 784) / 255),
                "y": torch.from_numpy(raw[f"y_{s}"])} for s in ("train", "test")}
    p = QualityParams(n_samples=300, n_reference=300, block=128, probe_max_iter=50)

    def run():
        return quality.evaluate(vae, None, digits, data["train"], data["test"], raw, "none", p,
                                torch.Generator().manual_seed(0))

    q = run()
    assert q == run()  # same inputs, same numbers
    assert set(q) >= {"samples", "reconstructions", "reference", "class_coverage", "probe"}
    for block in ("samples", "reference"):
        assert q[block]["fid"] >= 0 and 0 <= q[block]["precision"] <= 1 and 0 <= q[block]["recall"] <= 1
    # real training digits are far closer to the test digits than an untrained decoder's blur
    assert q["reference"]["fid"] < q["samples"]["fid"] / 5
    assert q["reference"]["precision"] > 0.5 and q["samples"]["precision"] < q["reference"]["precision"]
    assert sum(q["class_coverage"]["histogram"]) == pytest.approx(1.0)
    assert q["probe"]["n_train"] == len(raw["x_train"]) and 0 <= q["probe"]["test_accuracy"] <= 1


@pytest.fixture(scope="module")
def small_classifier(fixture_digits):
    return classifier.train(classifier.scale_pixels(fixture_digits["x_train"]), fixture_digits["y_train"],
                            ClassifierParams(epochs=1, channels=[8, 16], feature_dim=32, batch_size=64))


def test_the_floor_is_the_held_out_digits_decoded_and_the_best_sampler_the_lowest_fid(fixture_digits, small_classifier):
    raw, digits = fixture_digits, small_classifier
    torch.manual_seed(0)
    vae = VAE(ModelParams(hidden_dims=[32], latent_dim=3)).eval()
    data = {s: {"x": torch.from_numpy(np.float32(raw[f"x_{s}"]).reshape(-1, 784) / 255),
                "y": torch.from_numpy(raw[f"y_{s}"])} for s in ("train", "test")}
    p = QualityParams(n_samples=200, n_reference=200, block=128, probe_max_iter=10)
    x_train = data["train"]["x"]
    fitted = samplers.Fitted(samplers.fit(vae, x_train, SamplerParams(gmm_components=3, held_out=200), 0)[0])
    held = samplers.held_out(fitted, x_train, Path("sampler.pt"))
    q = quality.evaluate(vae, fitted, digits, data["train"], data["test"], raw, "none", p, torch.Generator().manual_seed(0),
                         temperature=0.5, x_held_out=held)
    f_test, _ = classifier.predict(digits, classifier.scale_pixels(raw["x_test"]))
    assert q["floor"] == quality.floor(vae, digits, x_train[800:], f_test, "none", p) and q["floor"]["n"] == 200
    assert q["floor"] != quality.floor(vae, digits, x_train[:200], f_test, "none", p)  # not digits the fit saw
    gmm = q["samplers"]["gmm"]
    drawn = quality.generate(vae, samplers.get(vae, fitted, "gmm"), 200, "none", torch.Generator().manual_seed(0), 0.5)
    assert gmm["temperature"] == 0.5 and gmm["samples"] == quality.sample_quality(digits, drawn, f_test, p)[0]
    assert gmm["floor_gap_fid"] == gmm["samples"]["fid"] - q["floor"]["fid"]
    fids = {"prior": q["samples"]["fid"], "gmm": gmm["samples"]["fid"]}
    assert quality.sampler_fids(q) == (fids, {"prior": 1.0, "gmm": 0.5})
    best = quality.best(q)
    assert best["sampler"] == min(fids, key=fids.get) and best["fid"] == min(fids.values())
    for prior_fid, winner in ((1e9, "gmm"), (0.0, "prior")):  # whichever is lower, whatever its name
        q["samples"] = {**q["samples"], "fid": prior_fid}
        assert quality.best(q)["sampler"] == winner
    assert quality.best(q) == {"sampler": "prior", "temperature": 1.0, "fid": 0.0, "precision": q["samples"]["precision"],
                               "recall": q["samples"]["recall"], "floor_gap_fid": -q["floor"]["fid"]}
