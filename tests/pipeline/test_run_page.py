"""pipeline/run_page.py: a run's name and description against the committed baseline, its metrics' sections,
its images' keys."""

import json
import subprocess

import pytest
import yaml

from mnist_vae.pipeline import run_page
from mnist_vae.pipeline.run_page import Baseline


def test_every_number_of_evaluate_gets_a_name_in_a_section_a_user_knows():
    names = {
        ("eval", "test.iw_nll"): "test/iw_nll", ("eval", "likelihood.iw_samples"): "test/iw_samples",
        ("eval", "posterior.active_units"): "representation/active_units",
        ("eval", "quality.probe.test_accuracy"): "representation/probe_test_accuracy",
        ("eval", "quality.samples.fid"): "samples/prior/fid", ("eval", "quality.class_coverage.entropy"): "samples/prior/entropy",
        ("eval", "quality.samplers.gmm.samples.fid"): "samples/gmm/fid",
        ("eval", "quality.samplers.gmm.class_coverage.entropy"): "samples/gmm/entropy",
        ("eval", "quality.code_log_density.gmm"): "samples/gmm/test_code_log_density",
        ("eval", "quality.code_log_density.n"): "samples/test_codes",
        ("eval", "quality.samplers.gmm.floor_gap_fid"): "samples/gmm/floor_gap_fid",
        ("eval", "quality.samplers.gmm.temperature"): "samples/gmm/temperature",
        ("eval", "quality.best.fid"): "samples/best/fid", ("eval", "quality.best.floor_gap_fid"): "samples/best/floor_gap_fid",
        ("eval", "quality.floor.fid"): "floor/fid", ("eval", "quality.floor.recall"): "floor/recall",
        ("sampler", "stage_cpu_time"): "time/sampler_stage_cpu", ("sampler", "held_out"): "samplers/held_out",
        ("eval", "quality.reconstructions.fid"): "reconstructions/fid", ("eval", "quality.reference.fid"): "reference/fid",
        ("eval", "test.train_slice_nelbo"): "train_slice/nelbo",
        ("eval", "eval_time"): "time/eval", ("train", "total_time"): "time/train", ("train", "n_train"): "training/n_train",
        ("classifier", "test_accuracy"): "classifier/test_accuracy",
        ("sampler", "samplers.gmm.fit_time"): "samplers/gmm/fit_time", ("sampler", "stage_time"): "time/sampler_stage",
        ("eval", "something.new"): "eval/something/new",  # anything else keeps its file and path
    }
    assert {key: run_page.metric_name(*key) for key in names} == names


def test_figures_and_frames_get_stable_image_keys(tmp_path):
    assert run_page.image_key(tmp_path / "samples.png") == ("samples/prior", None)
    assert run_page.image_key(tmp_path / "samples_gmm.png") == ("samples/gmm", None)
    assert run_page.image_key(tmp_path / "samples_prior_vs_gmm.png") == ("samples/prior_vs_gmm", None)
    assert run_page.image_key(tmp_path / "reconstructions.png") == ("reconstructions", None)
    assert run_page.image_key(tmp_path / "samples_epoch_012.png") == ("progress/samples", 12)
    assert run_page.image_key(tmp_path / "reconstructions_epoch_000.png") == ("progress/reconstructions", 0)


def test_a_run_is_named_by_its_experiment_else_by_branch_commit_and_changed_params():
    base = Baseline("1a2b3c4", "main", {"train.beta": (1.0, 4.0), "model.latent_dim": (20, 2)})
    assert run_page.run_name("k5", base) == "k5"
    assert run_page.run_name(None, base) == "main@1a2b3c4 train.beta=4.0 model.latent_dim=2"
    assert run_page.run_name(None, Baseline("1a2b3c4", "main")) == "main@1a2b3c4"
    assert run_page.run_name(None, Baseline()) == "workspace"
    many = Baseline("1a2b3c4", "main", {f"train.param_{i}": (0, i) for i in range(20)})
    name = run_page.run_name(None, many)
    assert len(name) <= run_page.NAME_LENGTH + 10 and name.endswith("more") and name.startswith("main@1a2b3c4 train.")


def test_the_description_lists_the_changed_params_and_the_headline_beside_the_commit():
    base = Baseline("1a2b3c4", "main", {"train.beta": (1.0, 4.0)}, {"sample_fid": (90.5, 80.25), "new_number": (None, 3)})
    note = run_page.description("beta4-vae-mlp-bernoulli-z20", base)
    assert note.startswith("**Changed from main at 1a2b3c4:** `train.beta` 1.0 → 4.0. Model **beta4-vae-mlp-bernoulli-z20**.")
    assert "| train.beta | 1.0 | 4.0 |" in note
    assert "| sample_fid | 90.5 | 80.25 | -10.25 |" in note and "| new_number | - | 3 |  |" in note
    assert "no committed baseline" in run_page.description("m", Baseline())
    assert "no change" in run_page.description("m", Baseline("1a2b3c4", "main"))
    assert "| 0.333333 |" in run_page.description("m", Baseline("1a2b3c4", "main", {"train.lr": (0.001, 1 / 3)}))


@pytest.mark.process  # git
def test_the_baseline_is_the_last_commits_params_and_headline(tmp_path):
    def git(*args):
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tmp_path, check=True,
                       capture_output=True)

    params = {"seed": 0, "train": {"beta": 1.0, "lr": 0.001}, "search": {"study": "a"}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics/headline.json").write_text(json.dumps({"sample_fid": 90.5, "test_nelbo": 100.0}))
    git("init", "-q", "-b", "main")
    git("add", "-A")
    git("commit", "-qm", "baseline")
    now = {"seed": 0, "train": {"beta": 4.0, "lr": 0.001}, "search": {"study": "b"}}  # search is no result's param
    base = run_page.baseline(tmp_path, now, {"sample_fid": 80.0, "test_nelbo": 100.0})
    assert base.branch == "main" and len(base.commit) >= 7
    assert base.params == {"train.beta": (1.0, 4.0)} and base.headline == {"sample_fid": (90.5, 80.0)}
    assert run_page.baseline(tmp_path / "metrics", now, {}).commit == base.commit  # any folder of the checkout
    assert run_page.baseline(tmp_path.parent, now, {}) == Baseline()  # outside a checkout: nothing to compare
