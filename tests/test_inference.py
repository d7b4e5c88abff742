"""The Python API: preprocess/postprocess against the training dequantization, loading, and the tasks."""

import hashlib
import math
import shutil

import numpy as np
import pytest
import torch

from mnist_vae import load, postprocess, preprocess
from mnist_vae.api import tasks as inference
from mnist_vae.vae import samplers
from mnist_vae.data.sources import dequantize
from mnist_vae.errors import UserError
from mnist_vae.vae.model import VAE, save_checkpoint
from mnist_vae.params import ModelParams

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


# ---------------------------------------------------------------- loading


@pytest.fixture
def project(small_vae_project, tmp_path):
    """A writable copy of the small trained project."""
    root = tmp_path / "project"
    shutil.copytree(small_vae_project, root)
    return root


def test_load_reads_the_mode_from_params_yaml_and_an_explicit_mode_wins(project):
    vae = load(project / "models" / "vae.pt")
    assert isinstance(vae, VAE) and not vae.training
    assert vae.dequantize == "uniform" and "params.yaml" in vae.origin.dequantize_from
    assert load(project / "models" / "vae.pt", dequantize="binarize").dequantize == "binarize"


def test_dvc_lock_names_the_mode_only_for_the_checkpoint_it_wrote(project):
    ckpt = project / "models" / "vae.pt"
    md5 = hashlib.md5(ckpt.read_bytes()).hexdigest()
    lock = ("schema: '2.0'\nstages:\n  train:\n    cmd: python stages/train.py\n    params:\n      params.yaml:\n"
            "        dequantize.mode: {mode}\n    outs:\n    - path: models/vae.pt\n      md5: {md5}\n")
    (project / "dvc.lock").write_text(lock.format(mode="binarize", md5=md5))
    vae = load(ckpt)
    assert vae.dequantize == "binarize" and "dvc.lock" in vae.origin.dequantize_from
    (project / "dvc.lock").write_text(lock.format(mode="binarize", md5="0" * 32))  # another checkpoint's entry
    assert load(ckpt).dequantize == "uniform"
    (project / "params.yaml").unlink()
    vae = load(ckpt)
    assert vae.dequantize == "notebook" and vae.origin.dequantize_from.startswith("default")


@pytest.mark.parametrize("name,content,match", [
    ("missing.pt", None, "does not exist"),
    ("garbage.pt", b"not a checkpoint", "not a readable checkpoint"),
])
def test_bad_checkpoints_are_one_line_errors(tmp_path, name, content, match):
    if content is not None:
        (tmp_path / name).write_bytes(content)
    with pytest.raises(UserError, match=match):
        load(tmp_path / name)
    with pytest.raises(UserError, match="neither a checkpoint"):
        load("s3://bucket/vae.pt")


# ---------------------------------------------------------------- tasks


def constant_posterior(mu, logvar) -> VAE:
    """A VAE whose q(z|x) is N(mu, exp(logvar)) for every x (encoder head: zero weights, these biases)."""
    torch.manual_seed(0)
    model = VAE(ModelParams(hidden_dims=[8], latent_dim=len(mu))).eval()
    with torch.no_grad():
        model.fc_mu_logvar.weight.zero_()
        model.fc_mu_logvar.bias.copy_(torch.tensor([*mu, *logvar]))
    return model


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
    z = samplers.draw(model, "prior", 4000, torch.Generator().manual_seed(0), temperature=0.5)
    assert abs(z.std().item() - 0.5) < 0.02
    # the prior is the model's own: its draws, seeded on a CPU generator, decoded
    assert torch.equal(inference.sample(model, 4, seed=5, temperature=0.5),
                       inference.decode(model, 0.5 * model.sample_prior(4, torch.Generator().manual_seed(5))))
    for n in (0, -1):
        with pytest.raises(UserError, match="at least 1"):
            inference.sample(model, n)


def test_sample_draws_from_the_models_own_prior():
    torch.manual_seed(0)
    model = VAE(ModelParams(hidden_dims=[8], latent_dim=3, prior="vamp", vamp_components=4)).eval()
    with torch.no_grad():
        z = model.sample_prior(6, torch.Generator().manual_seed(3))
    assert torch.equal(samplers.draw(model, "prior", 6, torch.Generator().manual_seed(3)), z)
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


def test_a_saved_random_model_round_trips(tmp_path):
    torch.manual_seed(3)
    model = VAE(ModelParams(hidden_dims=[8], latent_dim=2))
    save_checkpoint(tmp_path / "vae.pt", model)
    vae = load(tmp_path / "vae.pt", dequantize="none")
    z = torch.randn(4, 2)
    assert torch.equal(inference.decode(vae, z), model.eval().mean(model.decode(z)).detach())


def test_sample_draws_from_the_checkpoints_fitted_sampler_and_falls_back_with_a_warning(small_vae_project, tmp_path):
    model = inference.load(small_vae_project / "models" / "vae.pt")
    assert samplers.available(model) == ["prior", "gmm"]
    gmm = inference.sample(model, 6, seed=3, sampler="gmm")
    z = samplers.draw(model, "gmm", 6, torch.Generator().manual_seed(3))
    assert torch.equal(gmm, inference.decode(model, z)) and torch.equal(gmm, inference.sample(model, 6, seed=3, sampler="gmm"))
    assert not torch.equal(gmm, inference.sample(model, 6, seed=3))
    assert inference.describe(model)["samplers"] == {"available": ["prior", "gmm"], "fit_on": "mu", "n_codes": 1000,
                                                     "components": {"gmm": 5}}
    with pytest.raises(UserError, match="unknown sampler 'flow'; this model has: prior, gmm"):
        inference.sample(model, 2, sampler="flow")
    bare = tmp_path / "bare"
    (bare / "models").mkdir(parents=True)
    shutil.copy(small_vae_project / "models" / "vae.pt", bare / "models" / "vae.pt")
    model = inference.load(bare / "models" / "vae.pt", dequantize="none")
    with pytest.warns(UserWarning, match="no fitted sampler 'gmm'.*sampling from the prior"):
        fallback = inference.sample(model, 3, seed=1, sampler="gmm")
    assert torch.equal(fallback, inference.sample(model, 3, seed=1))
    (bare / "models" / "sampler.pt").write_bytes(b"garbage")  # corrupt: no fallback, one line
    model = inference.load(bare / "models" / "vae.pt", dequantize="none")
    assert torch.equal(inference.sample(model, 3, seed=1), fallback)  # the prior still samples
    with pytest.raises(UserError, match="not a readable sampler file"):
        inference.sample(model, 3, seed=1, sampler="gmm")
