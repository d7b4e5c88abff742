"""The tasks of a loaded model (api/tasks.py), and preprocess/postprocess against the training dequantization."""

import math

import numpy as np
import pytest
import torch

from mnist_vae import load, postprocess, preprocess
from mnist_vae.api import tasks as inference
from mnist_vae.api.loaded import LoadedModel, Origin
from mnist_vae.data.dequantize import dequantize
from mnist_vae.errors import UserError
from mnist_vae.params import ModelParams
from mnist_vae.vae.model import VAE

PIXELS = np.arange(256, dtype=np.uint8)


def test_preprocess_has_the_closed_form_of_each_mode():
    p = PIXELS.astype(np.float64)
    expected = {"notebook": np.minimum((p + 0.5) / 255, 1), "uniform": (p + 0.5) / 256, "none": p / 255, "binarize": p / 255}
    for mode, want in expected.items():
        got = preprocess(np.resize(PIXELS, 784), mode)
        assert got.shape == (1, 784) and got.dtype == torch.float32
        np.testing.assert_allclose(got[0, :256].numpy(), want, rtol=0, atol=1e-7, err_msg=mode)


@pytest.mark.parametrize("mode,atol", [("notebook", 2e-4), ("uniform", 2e-4), ("none", 0), ("binarize", 0.06)])
def test_preprocess_is_the_mean_of_the_training_dequantization(mode, atol):
    """What the model saw in training, averaged over the noise, is what preprocess gives."""
    images = np.tile(PIXELS, (2000, 1)).reshape(2000, 16, 16)
    draws = dequantize(images, mode, torch.Generator().manual_seed(0))  # (2000, 256)
    np.testing.assert_allclose(draws.astype(np.float64).mean(0), preprocess(np.resize(PIXELS, 784), mode)[0, :256].numpy(), rtol=0, atol=atol + 1e-7)


def test_preprocess_reads_floats_as_pixel_over_255_and_takes_every_layout():
    digits = np.random.default_rng(0).integers(0, 256, (3, 28, 28), dtype=np.uint8)
    want = preprocess(digits, "notebook")
    assert want.shape == (3, 784)
    np.testing.assert_allclose(preprocess(digits.astype(np.float32) / 255, "notebook"), want, atol=1e-6)
    assert torch.equal(preprocess(digits.reshape(3, 784), "notebook"), want)
    assert torch.equal(preprocess(torch.from_numpy(digits), "notebook"), want)
    assert torch.equal(preprocess(digits[0], "notebook"), want[:1])
    for bad, match in [(np.zeros((3, 27, 28), np.uint8), "shaped"), (np.full((28, 28), 1.5), r"\[0, 1\]"),
                       (np.full((28, 28), 300), "0..255"), (digits, None)]:
        with pytest.raises(UserError, match=match or "unknown dequantize mode"):
            preprocess(bad, "notebook" if match else "gaussian")


def test_postprocess_inverts_preprocess_of_mode_none():
    digits = np.random.default_rng(1).integers(0, 256, (5, 28, 28), dtype=np.uint8)
    out = postprocess(preprocess(digits, "none"))
    assert out.dtype == np.uint8 and out.shape == (5, 28, 28)
    assert np.array_equal(out, digits)
    assert postprocess(np.full(784, 2.0)).max() == 255  # clipped, not wrapped


# ---------------------------------------------------------------- tasks


def loaded(vae: VAE, fitted=None) -> LoadedModel:
    return LoadedModel(vae, "none", Origin(uri="test", kind="checkpoint", dequantize_from="given"), fitted)


def constant_posterior(mu, logvar) -> LoadedModel:
    """A VAE whose q(z|x) is N(mu, exp(logvar)) for every x (encoder head: zero weights, these biases)."""
    torch.manual_seed(0)
    model = VAE(ModelParams(hidden_dims=[8], latent_dim=len(mu))).eval()
    with torch.no_grad():
        model.fc_mu_logvar.weight.zero_()
        model.fc_mu_logvar.bias.copy_(torch.tensor([*mu, *logvar]))
    return loaded(model)


def test_kl_order_ranks_units_by_their_closed_form_kl():
    model = constant_posterior([0.0, 2.0, 1.0, 0.0], [0.0, 0.0, 0.0, math.log(4)])
    order, kl = inference.kl_order(model, torch.rand(7, 784))
    # KL_j = (mu^2 + sigma^2 - log sigma^2 - 1) / 2
    np.testing.assert_allclose(kl, [0.0, 2.0, 0.5, (4 - math.log(4) - 1) / 2], atol=1e-6)
    assert order == [1, 3, 2, 0]


def test_traverse_sets_one_unit_at_a_time():
    model = constant_posterior([0.0] * 3, [0.0] * 3)
    values = [-2.0, 0.0, 2.0]
    images = inference.traverse(model, [2, 0], values, base=[0.5, 0.5, 0.5])
    assert images.shape == (2, 3, 784)
    z = torch.tensor([[0.5, 0.5, v] for v in values])
    assert torch.equal(images[0], inference.decode(model, z))
    with pytest.raises(UserError, match="out of range"):
        inference.traverse(model, [3], values)


def test_sample_is_seeded_and_temperature_scales_the_prior():
    model = constant_posterior([0.0] * 3, [0.0] * 3)
    a, b = inference.sample(model, 5, seed=1), inference.sample(model, 5, seed=1)
    assert torch.equal(a, b) and not torch.equal(a, inference.sample(model, 5, seed=2))
    assert torch.equal(inference.sample(model, 2, temperature=0.0), inference.decode(model, torch.zeros(2, 3)))
    z = model.sampler("prior").draw(4000, torch.Generator().manual_seed(0), temperature=0.5)
    assert abs(z.std().item() - 0.5) < 0.02
    # the prior is the model's own: its draws, seeded on a CPU generator, decoded
    assert torch.equal(inference.sample(model, 4, seed=5, temperature=0.5),
                       inference.decode(model, 0.5 * model.vae.sample_prior(4, torch.Generator().manual_seed(5))))
    for n in (0, -1):
        with pytest.raises(UserError, match="at least 1"):
            inference.sample(model, n)


def test_sample_draws_from_the_models_own_prior():
    torch.manual_seed(0)
    model = loaded(VAE(ModelParams(hidden_dims=[8], latent_dim=3, prior="vamp", vamp_components=4)).eval())
    with torch.no_grad():
        z = model.vae.sample_prior(6, torch.Generator().manual_seed(3))
    assert torch.equal(model.sampler("prior").draw(6, torch.Generator().manual_seed(3)), z)
    assert torch.equal(inference.sample(model, 6, seed=3), inference.decode(model, z))
    with pytest.raises(UserError, match="prior is vamp"):
        inference.sample(model, 2, temperature=0.5)


def test_decode_checks_the_latent_length():
    model = constant_posterior([0.0] * 3, [0.0] * 3)
    assert inference.decode(model, [0.0, 1.0, 2.0]).shape == (1, 784)
    with pytest.raises(UserError, match="length 3"):
        inference.decode(model, [0.0, 1.0])


def test_slerp_follows_the_great_circle_and_linear_the_chord():
    u, v = torch.tensor([2.0, 0.0, 0.0]), torch.tensor([0.0, 2.0, 0.0])
    path = inference.interpolate(u, v, 5, slerp=True)
    a = torch.linspace(0, 1, 5).unsqueeze(1)
    # orthogonal ends of equal norm r: z(a) = cos(a pi/2) u + sin(a pi/2) v, norm r all the way
    np.testing.assert_allclose(path, torch.cos(a * math.pi / 2) * u + torch.sin(a * math.pi / 2) * v, atol=1e-6)
    np.testing.assert_allclose(path.norm(dim=1), 2.0, atol=1e-6)
    linear = inference.interpolate(u, v, 5)
    assert torch.equal(linear[0], u) and torch.equal(linear[-1], v)
    assert abs(linear[2].norm().item() - 2 / math.sqrt(2)) < 1e-6  # the chord's midpoint sags
    assert torch.allclose(inference.interpolate(u, 3 * u, 3, slerp=True), inference.interpolate(u, 3 * u, 3))
    with pytest.raises(UserError, match="steps"):
        inference.interpolate(u, v, 1)


def test_reconstruct_decodes_the_encoder_mean(small_vae_project):
    vae = load(small_vae_project / "models" / "vae.pt")
    x = preprocess(np.load(small_vae_project / "data" / "raw" / "mnist.npz")["x_test"][:3], vae.dequantize)
    mu, logvar = inference.encode(vae, x)
    assert mu.shape == logvar.shape == (3, 4)
    assert torch.equal(inference.reconstruct(vae, x), inference.decode(vae, mu))


