"""The `mnist-vae` console script, run as a user runs it (a subprocess in a project folder), checked
against the Python API on the same small trained model."""

import json
import os
import shutil
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch

from helpers.digits import REPO as REPO_ROOT
from mnist_vae import command_line as command
from mnist_vae import load, preprocess
from mnist_vae.api import tasks as inference
from mnist_vae.api.images import read_digit
from mnist_vae.vae.samplers import choice

SUBCOMMANDS = ("sample", "reconstruct", "encode", "decode", "interpolate", "traverse", "info")


def console_script() -> str:
    beside = Path(sys.executable).with_name("mnist-vae")
    found = str(beside) if beside.is_file() else shutil.which("mnist-vae")
    if not found:
        pytest.fail("the mnist-vae console script is not installed; run `make setup` (pip install -e .)")
    return found


def run(*args, cwd, env=None, ok=True) -> subprocess.CompletedProcess:
    env = dict(env or os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT / "src"), env.get("PYTHONPATH")]))
    proc = subprocess.run([console_script(), *map(str, args)], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    if ok:
        assert proc.returncode == 0, proc.stderr
    return proc


@pytest.fixture
def project(small_vae_project, tmp_path):
    root = tmp_path / "project"
    shutil.copytree(small_vae_project, root)
    return root


@pytest.fixture
def shell(project, monkeypatch, capsys):
    """The command in this process (the console script's own function, without the ~3 s start-up of a new
    Python), in the project's folder: shell(*args) -> its exit code, stdout and stderr, as `run` gives them."""
    monkeypatch.chdir(project)

    def call(*args, ok: bool = True):
        code = command.main([str(a) for a in args])
        out, err = capsys.readouterr()
        if ok:
            assert code == 0, err
        return types.SimpleNamespace(returncode=code, stdout=out, stderr=err)

    return call


@pytest.fixture
def cli(shell):
    """shell(*args), asserting success: its stdout."""
    return lambda *args: shell(*args).stdout


@pytest.fixture
def vae(small_vae_project):
    return load(small_vae_project / "models" / "vae.pt")


@pytest.fixture
def test_x(small_vae_project, vae):
    """The test digits as the command reads them: data/raw/mnist.npz's pixels, preprocessed."""
    with np.load(small_vae_project / "data" / "raw" / "mnist.npz") as f:
        return preprocess(f["x_test"], vae.dequantize)


def a_digit_file(project) -> Path:
    """A 3x-size, dark-on-light PNG of raw test digit 5 (which the command must invert and renormalise)."""
    digit = np.load(project / "data" / "raw" / "mnist.npz")["x_test"][5]
    path = project / "mine.png"
    PIL.Image.fromarray(255 - digit).resize((84, 84), PIL.Image.Resampling.BICUBIC).save(path)
    return path


def test_every_subcommand_has_help(capsys):
    for name in (None, *SUBCOMMANDS):
        with pytest.raises(SystemExit) as exit_:
            command.main([name, "--help"] if name else ["--help"])
        assert exit_.value.code == 0
        out = capsys.readouterr().out
        assert out.startswith("usage: mnist-vae") and "--model" in out or name is None


def test_sample_writes_the_api_samples_as_npy_and_a_png_grid(project, vae, cli, shell):
    cli("sample", "-n", 6, "--seed", 3, "--temperature", 0.5, "-o", "s.npy")
    assert np.array_equal(np.load(project / "s.npy"), inference.sample(vae, 6, seed=3, temperature=0.5).numpy())
    proc = shell("sample", "-n", 6, "--seed", 3, "-o", "out/s.png")
    assert "wrote out/s.png" in proc.stderr
    image = PIL.Image.open(project / "out" / "s.png")
    assert image.format == "PNG" and image.size == (3 * (3 * 28 + 4), 3 * (2 * 28 + 2))  # 3 columns, 2 rows, 3x


def test_sample_draws_from_the_recorded_best_sampler_and_says_so(project, vae, cli, shell):
    proc = shell("sample", "-n", 5, "--seed", 2, "-o", "best.npy")
    assert "mnist-vae: sampler gmm: the model's best, the lowest sample FID evaluate recorded, 54.0; prior 85.0" in proc.stderr
    assert "5 samples from the sampler gmm, seed 2, temperature 1" in proc.stderr
    best = np.load(project / "best.npy")
    assert np.array_equal(best, inference.sample(vae, 5, seed=2, sampler="gmm").numpy())
    prior = shell("sample", "-n", 5, "--seed", 2, "--sampler", "prior", "-o", "prior.npy")
    assert "from the sampler prior" in prior.stderr and "the model's best" not in prior.stderr
    assert np.array_equal(np.load(project / "prior.npy"), inference.sample(vae, 5, seed=2, sampler="prior").numpy())
    assert not np.array_equal(np.load(project / "prior.npy"), best)
    info = json.loads(shell("info").stdout)["samplers"]
    assert info["available"] == ["prior", "gmm"] and info["default"] == "gmm" and info["held_out"] == 200


def test_the_default_temperature_is_the_one_evaluate_scored_the_sampler_at(project, vae, cli, shell):
    fitted = project / "models" / "sampler.pt"
    choice.record(project / "models" / "best_sampler.json", {"prior": 85.0, "gmm": 50.0}, {"prior": 1.0, "gmm": 0.8},
                  project / "models" / "vae.pt", fitted)
    proc = shell("sample", "-n", 5, "--seed", 2, "-o", "cold.npy")
    assert "5 samples from the sampler gmm, seed 2, temperature 0.8" in proc.stderr
    assert np.array_equal(np.load(project / "cold.npy"), inference.sample(vae, 5, seed=2, temperature=0.8, sampler="gmm").numpy())
    proc = shell("sample", "-n", 5, "--seed", 2, "--temperature", 1, "-o", "warm.npy")
    assert np.array_equal(np.load(project / "warm.npy"), inference.sample(vae, 5, seed=2, temperature=1.0, sampler="gmm").numpy())
    proc = shell("sample", "-n", 5, "--seed", 2, "--sampler", "prior", "-o", "prior.npy")
    assert "from the sampler prior, seed 2, temperature 1" in proc.stderr


def test_sample_takes_the_fitted_sampler_and_says_when_the_model_has_none(project, vae, cli, shell):
    proc = shell("sample", "-n", 5, "--seed", 2, "--sampler", "gmm", "-o", "g.npy")
    assert "from the sampler gmm" in proc.stderr
    gmm = np.load(project / "g.npy")
    assert np.array_equal(gmm, inference.sample(vae, 5, seed=2, sampler="gmm").numpy())
    assert not np.array_equal(gmm, inference.sample(vae, 5, seed=2, sampler="prior").numpy())
    (project / "models" / "sampler.pt").unlink()
    proc = shell("sample", "-n", 5, "--seed", 2, "--sampler", "gmm", "-o", "p.npy")
    assert "no fitted sampler 'gmm'" in proc.stderr and "sampling from the prior" in proc.stderr
    assert np.array_equal(np.load(project / "p.npy"), inference.sample(vae, 5, seed=2, sampler="prior").numpy())
    proc = shell("sample", "-n", 5, "--seed", 2, "-o", "d.npy")  # no samplers: the prior is the only one
    assert np.array_equal(np.load(project / "d.npy"), np.load(project / "p.npy"))
    assert "from the sampler prior" in proc.stderr


def test_a_vampprior_checkpoint_samples_from_its_prior_and_info_names_it(project, cli, capsys):
    from mnist_vae.params import ModelParams
    from mnist_vae.vae.model import VAE, save_checkpoint

    torch.manual_seed(0)
    vamp = VAE(ModelParams(hidden_dims=[16], latent_dim=4, prior="vamp", vamp_components=6)).eval()
    save_checkpoint(project / "models" / "vae.pt", vamp)
    for name in ("sampler.pt", "best_sampler.json"):  # a checkpoint alone: its prior is its one sampler
        (project / "models" / name).unlink()
    cli("sample", "-n", 5, "--seed", 2, "-o", "s.npy")
    with torch.no_grad():
        expected = vamp.mean(vamp.decode(vamp.sample_prior(5, torch.Generator().manual_seed(2))))
    assert np.array_equal(np.load(project / "s.npy"), expected.numpy())
    info = json.loads(cli("info"))
    assert info["prior"] == "vamp (6 pseudo-inputs)" and info["config"]["vamp_components"] == 6
    code = command.main(["sample", "-n", "2", "--temperature", "0.7", "-o", "t.npy"])
    assert code != 0 and "prior is vamp" in capsys.readouterr().err and not (project / "t.npy").exists()


def test_reconstruct_and_encode_take_test_indices_and_image_files(project, vae, test_x, cli, shell):
    mine = a_digit_file(project)
    pixels, _ = read_digit(mine)
    x = torch.cat([test_x[[0, 7]], preprocess(pixels, vae.dequantize)])
    proc = shell("reconstruct", 0, 7, mine, "-o", "r.npy")
    assert "mine.png: 84x84 L, inverted" in proc.stderr
    assert np.array_equal(np.load(project / "r.npy"), inference.reconstruct(vae, x).numpy())
    cli("reconstruct", 0, 7, mine, "-o", "r.png")
    assert PIL.Image.open(project / "r.png").format == "PNG"

    encoded = json.loads(shell("encode", 0, 7, mine).stdout)
    mu, logvar = inference.encode(vae, x)
    assert encoded["inputs"] == ["0", "7", str(mine)] and encoded["dequantize"] == "uniform"
    assert np.array_equal(np.float32(encoded["mu"]), mu.numpy()) and np.array_equal(np.float32(encoded["logvar"]), logvar.numpy())
    cli("encode", 0, 7, mine, "-o", "z.npy")
    assert np.array_equal(np.load(project / "z.npy"), torch.stack([mu, logvar], 1).numpy())


def test_decode_takes_a_json_list_dims_or_an_encode_output(project, vae, test_x, cli, shell):
    shell("decode", "[0.5, -1, 0, 2]", "-o", "a.npy")
    assert np.array_equal(np.load(project / "a.npy"), inference.decode(vae, [0.5, -1, 0, 2]).numpy())
    cli("decode", "--dims", "3=1.5", "0=-2", "-o", "b.npy")
    assert np.array_equal(np.load(project / "b.npy"), inference.decode(vae, [-2, 0, 0, 1.5]).numpy())
    cli("encode", 1, 2, "-o", "z.json")
    cli("decode", "z.json", "-o", "c.npy")
    assert np.array_equal(np.load(project / "c.npy"), inference.reconstruct(vae, test_x[[1, 2]]).numpy())


def test_interpolate_linear_and_spherical_between_digits_and_vectors(project, vae, test_x, cli, shell):
    mu = inference.encode(vae, test_x[[3, 4]])[0]
    shell("interpolate", 3, 4, "--steps", 5, "-o", "lin.npy")
    cli("interpolate", 3, 4, "--steps", 5, "--slerp", "-o", "slerp.npy")
    lin, slerp = np.load(project / "lin.npy"), np.load(project / "slerp.npy")
    assert lin.shape == (5, 784)
    # the path ends at both digits (equal up to the float rounding of a matrix product of another batch size)
    np.testing.assert_allclose(lin[[0, -1]], inference.decode(vae, mu).numpy(), rtol=0, atol=1e-6)
    np.testing.assert_allclose(slerp, inference.decode(vae, inference.interpolate(mu[0], mu[1], 5, slerp=True)), atol=1e-6)
    assert not np.allclose(lin[2], slerp[2])
    cli("interpolate", "[0, 0, 0, 0]", "[1, 1, 1, 1]", "--steps", 3, "-o", "vec.npy")
    assert np.allclose(np.load(project / "vec.npy")[1], inference.decode(vae, [0.5] * 4).numpy()[0])


def test_traverse_orders_the_units_by_kl_on_test_digits(project, vae, test_x, cli, shell):
    proc = shell("traverse", "--units", 3, "--steps", 4, "--range", -2, 2, "-o", "t.json")
    result = json.loads((project / "t.json").read_text())
    order, kl = inference.kl_order(vae, test_x[:1000])
    assert result["units"] == order[:3] and np.allclose(result["kl"], [kl[j] for j in order[:3]])
    assert np.allclose(result["images"], inference.traverse(vae, order[:3], [-2, -2 / 3, 2 / 3, 2]).numpy(), atol=1e-6)
    assert f"z{order[0]} {kl[order[0]]:.2f}" in proc.stderr
    cli("traverse", "--dim", 2, "-o", "t.png")
    assert PIL.Image.open(project / "t.png").format == "PNG"


def test_without_raw_mnist_test_digits_come_from_data_processed(project, vae, cli):
    (project / "data" / "raw" / "mnist.npz").unlink()
    cli("encode", 5, "-o", "z.npy")
    with np.load(project / "data" / "processed" / "test.npz") as f:
        x = torch.from_numpy(f["x"][[5]])  # the dequantized digit, noise and all
    assert np.array_equal(np.load(project / "z.npy")[:, 0], inference.encode(vae, x)[0].numpy())


def test_info_names_the_model_its_mode_and_numbers(project, shell):
    (project / "metrics").mkdir()
    (project / "metrics" / "eval.json").write_text('{"test": {"iw_nll": 99.5}}')
    info = json.loads(shell("info").stdout)
    assert info["config"]["latent_dim"] == 4 and info["dequantize"]["mode"] == "uniform"
    assert info["evaluation"] == {"test": {"iw_nll": 99.5}} and info["kind"] == "checkpoint"


# ---------------------------------------------------------------- bad input


def write_garbage(project):
    (project / "models" / "vae.pt").write_bytes(b"\x00not a checkpoint")


def write_text_png(project):
    (project / "notes.png").write_text("not an image")


BAD = {
    "missing model": (["sample", "--model", "nowhere/vae.pt", "-o", "out.png"], None, "nowhere/vae.pt is missing"),
    "unreadable model": (["sample", "-o", "out.png"], write_garbage, "not a readable checkpoint"),
    "not an image": (["reconstruct", "notes.png", "-o", "out.png"], write_text_png, "notes.png is not an image"),
    "latent length": (["decode", "[1, 2, 3]", "-o", "out.png"], None, "must have length 4"),
    "index out of range": (["encode", "200", "-o", "out.json"], None, "test digit 200 is out of range: the test set has 200 digits"),
    "no samples": (["sample", "-n", "0", "-o", "out.png"], None, "argument -n: must be at least 1, got 0"),
    "unknown output": (["sample", "-o", "out.gif"], None, "-o out.gif: write .png or .npy"),
    "unknown sampler": (["sample", "--sampler", "flow", "-o", "out.png"], None,
                        "unknown sampler 'flow'; this model has: prior, gmm"),
    "stale sampler": (["sample", "--sampler", "gmm", "-o", "out.png"], lambda project: _refit_elsewhere(project),
                      "was fitted to another checkpoint"),
    "stale sampler, default": (["sample", "-o", "out.png"], lambda project: _refit_elsewhere(project),
                               "was fitted to another checkpoint"),
    "older sampler format": (["sample", "-o", "out.png"], lambda project: _old_format(project),
                             "holds samplers in format 1 (another mnist-vae); this version reads format 2: fit them "
                             "again; rerun `dvc repro sampler`"),
    "stale choice": (["sample", "-o", "out.png"], lambda project: _choose_elsewhere(project),
                     "best_sampler.json was chosen for another checkpoint or samplers file"),
}


def _old_format(project):
    """models/sampler.pt as the previous version wrote it, and the dvc.yaml that names its stage."""
    state = torch.load(project / "models" / "sampler.pt", weights_only=True)
    torch.save({k: v for k, v in state.items() if k not in ("n_train", "held_out_start")} | {"format": 1},
               project / "models" / "sampler.pt")
    shutil.copy(REPO_ROOT / "dvc.yaml", project / "dvc.yaml")


def _choose_elsewhere(project):
    """models/best_sampler.json as if chosen for another samplers file."""
    tree = json.loads((project / "models" / "best_sampler.json").read_text())
    (project / "models" / "best_sampler.json").write_text(json.dumps({**tree, "samplers_sha256": "f" * 64}))


def _refit_elsewhere(project):
    """models/sampler.pt as if fitted to another checkpoint (its stored digest changed)."""
    state = torch.load(project / "models" / "sampler.pt", weights_only=True)
    state["checkpoint_sha256"] = "f" * 64
    torch.save(state, project / "models" / "sampler.pt")


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_one_line_a_nonzero_exit_and_no_output(project, case, capsys, monkeypatch):
    args, prepare, message = BAD[case]
    if prepare:
        prepare(project)
    monkeypatch.chdir(project)
    try:
        code = command.main(args)
    except SystemExit as exc:  # argparse's own errors
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("mnist-vae: error: ") and message in err and err.count("\n") == 1, err
    assert not list(project.glob("out.*")) and not list(project.glob(".out.*"))


@pytest.mark.process
def test_the_console_script_fails_the_same_way(project):
    proc = run("decode", "[1, 2]", "-o", "d.png", cwd=project, ok=False)
    assert proc.returncode == 2 and proc.stderr == (
        "mnist-vae: error: latent vectors must have length 4 (this model's latent_dim), got shape (1, 2)\n")
    assert not (project / "d.png").exists()


# ---------------------------------------------------------------- models from MLflow


@pytest.mark.process
def test_models_from_an_mlflow_run_and_the_registry(project, registered_vae, vae):
    env = registered_vae.env
    proc = run("sample", "-n", 4, "--seed", 1, "--model", f"runs:/{registered_vae.run_id}/vae-mlp-bernoulli-z4", "-o", "m.npy",
               cwd=project, env=env)  # the best sampler travels with the logged model too
    assert np.array_equal(np.load(project / "m.npy"), inference.sample(vae, 4, seed=1, sampler="gmm").numpy())
    assert "sampler gmm: the model's best" in proc.stderr
    run("sample", "-n", 4, "--seed", 1, "--sampler", "gmm", "--model", f"models:/mnist-vae/{registered_vae.version}",
        "-o", "g.npy", cwd=project, env=env)  # the samplers travel with the logged model
    assert np.array_equal(np.load(project / "g.npy"), inference.sample(vae, 4, seed=1, sampler="gmm").numpy())
    info = json.loads(run("info", "--model", f"models:/mnist-vae/{registered_vae.version}", cwd=project, env=env).stdout)
    assert info["run_id"] == registered_vae.run_id and info["dequantize"]["mode"] == "uniform"
    assert info["metrics"] == {"test": {"iw_nll": 140.25}, "training": {"test_total": 150.5}}
    proc = run("info", "--model", "models:/mnist-vae/99", cwd=project, env=env, ok=False)
    assert proc.returncode == 2 and proc.stderr.startswith("mnist-vae: error: model models:/mnist-vae/99 is not in the MLflow store")
    assert proc.stderr.count("\n") == 1
