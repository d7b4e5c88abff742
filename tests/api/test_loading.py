"""Loading a trained model (api/loading.py): its dequantization mode from dvc.lock or params.yaml, its fitted
samplers and its best sampler from beside it, one-line errors; and what `info` says of it (api/info.py)."""

import hashlib
import json
import shutil

import pytest
import torch

from mnist_vae import load
from mnist_vae.api import tasks as inference
from mnist_vae.api.info import describe
from mnist_vae.api.loaded import LoadedModel
from mnist_vae.errors import FileProblem, UserError
from mnist_vae.params import ModelParams
from mnist_vae.vae import samplers
from mnist_vae.vae.model import VAE, save_checkpoint
from mnist_vae.vae.samplers import choice


@pytest.fixture
def project(small_vae_project, tmp_path):
    """A writable copy of the small trained project."""
    root = tmp_path / "project"
    shutil.copytree(small_vae_project, root)
    return root


def test_load_reads_the_mode_from_params_yaml_and_an_explicit_mode_wins(project):
    vae = load(project / "models" / "vae.pt")
    assert isinstance(vae, LoadedModel) and isinstance(vae.vae, VAE) and not vae.vae.training
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
    ("missing.pt", None, "missing.pt is missing"),
    ("garbage.pt", b"not a checkpoint", "not a readable checkpoint"),
])
def test_bad_checkpoints_are_one_line_errors(tmp_path, name, content, match):
    if content is not None:
        (tmp_path / name).write_bytes(content)
    with pytest.raises(UserError, match=match):
        load(tmp_path / name)
    with pytest.raises(UserError, match="neither a checkpoint"):
        load("s3://bucket/vae.pt")


def test_a_saved_random_model_round_trips(tmp_path):
    torch.manual_seed(3)
    model = VAE(ModelParams(hidden_dims=[8], latent_dim=2))
    save_checkpoint(tmp_path / "vae.pt", model)
    vae = load(tmp_path / "vae.pt", dequantize="none")
    z = torch.randn(4, 2)
    assert torch.equal(inference.decode(vae, z), model.eval().mean(model.decode(z)).detach())
    assert torch.equal(vae.vae.state_dict()["fc_mu_logvar.weight"], model.state_dict()["fc_mu_logvar.weight"])


def test_sample_draws_from_the_checkpoints_fitted_sampler_and_falls_back_with_a_warning(small_vae_project, tmp_path):
    model = load(small_vae_project / "models" / "vae.pt")
    assert samplers.available(model.samplers) == ["prior", "gmm"]
    gmm = inference.sample(model, 6, seed=3, sampler="gmm")
    z = model.sampler("gmm").draw(6, torch.Generator().manual_seed(3))
    assert torch.equal(gmm, inference.decode(model, z)) and torch.equal(gmm, inference.sample(model, 6, seed=3, sampler="gmm"))
    assert not torch.equal(gmm, inference.sample(model, 6, seed=3, sampler="prior"))
    assert describe(model)["samplers"] == {
        "available": ["prior", "gmm"], "default": "gmm", "default_temperature": 1.0,
        "why": "the lowest sample FID evaluate recorded, 54.0; prior 85.0", "fid": {"prior": 85.0, "gmm": 54.0},
        "temperatures": {"prior": 1.0, "gmm": 1.0}, "fit_on": "mu", "n_codes": 800, "held_out": 200,
        "components": {"gmm": 5}}
    with pytest.raises(UserError, match="unknown sampler 'flow'; this model has: prior, gmm"):
        inference.sample(model, 2, sampler="flow")
    bare = tmp_path / "bare"
    (bare / "models").mkdir(parents=True)
    shutil.copy(small_vae_project / "models" / "vae.pt", bare / "models" / "vae.pt")
    model = load(bare / "models" / "vae.pt", dequantize="none")
    assert model.default_sampler == "prior"
    with pytest.warns(UserWarning, match="no fitted sampler 'gmm'.*sampling from the prior"):
        fallback = inference.sample(model, 3, seed=1, sampler="gmm")
    assert torch.equal(fallback, inference.sample(model, 3, seed=1))
    (bare / "models" / "sampler.pt").write_bytes(b"garbage")  # corrupt: no fallback, one line
    model = load(bare / "models" / "vae.pt", dequantize="none")
    assert torch.equal(inference.sample(model, 3, seed=1, sampler="prior"), fallback)  # the prior still samples
    for asked in ("gmm", None):
        with pytest.raises(UserError, match="not a readable sampler file"):
            inference.sample(model, 3, seed=1, sampler=asked)


def test_the_default_sampler_is_the_recorded_best_and_the_prior_stays_one_name_away(small_vae_project, tmp_path):
    model = load(small_vae_project / "models" / "vae.pt")
    assert model.default_sampler == "gmm" and model.choice.sampler == "gmm"
    assert torch.equal(inference.sample(model, 6, seed=3), inference.sample(model, 6, seed=3, sampler="gmm"))
    prior = inference.sample(model, 6, seed=3, sampler="prior")
    assert torch.equal(prior, inference.decode(model, model.vae.sample_prior(6, torch.Generator().manual_seed(3))))
    # another choice, the prior's: the default follows the file
    root = tmp_path / "project"
    shutil.copytree(small_vae_project, root)
    choice.record(root / "models" / "best_sampler.json", {"prior": 40.0, "gmm": 54.0}, {"prior": 1.0, "gmm": 1.0},
                  root / "models" / "vae.pt", root / "models" / "sampler.pt")
    model = load(root / "models" / "vae.pt")
    assert model.default_sampler == "prior" and torch.equal(inference.sample(model, 6, seed=3), prior)
    assert inference.resolve_sampler(model) == ("prior", 1.0, "sampler prior: the model's best, the lowest sample FID "
                                                               "evaluate recorded, 40.0; gmm 54.0")
    # a choice made for other samplers is refused when the default needs it, and only then
    tree = json.loads((root / "models" / "best_sampler.json").read_text())
    (root / "models" / "best_sampler.json").write_text(json.dumps({**tree, "samplers_sha256": "0" * 64}))
    model = load(root / "models" / "vae.pt")
    assert model.choice is None and torch.equal(inference.sample(model, 6, seed=3, sampler="prior"), prior)
    with pytest.raises(FileProblem, match="best_sampler.json was chosen for another checkpoint or samplers file") as info:
        inference.sample(model, 6, seed=3)
    assert info.value.problem == "stale" and info.value.path == root / "models" / "best_sampler.json"
    (root / "models" / "best_sampler.json").write_text("{not json")
    with pytest.raises(FileProblem, match="best_sampler.json is unreadable"):
        inference.sample(load(root / "models" / "vae.pt"), 6, seed=3)
    (root / "models" / "best_sampler.json").unlink()  # none recorded: the prior, and the command says why
    model = load(root / "models" / "vae.pt")
    assert inference.resolve_sampler(model) == ("prior", 1.0, "sampler prior: no best sampler recorded beside the model")
