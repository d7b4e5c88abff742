"""The digit classifier: it learns real digits from a small sample, is reproducible, round-trips through its
checkpoint with weights_only=True, and its stage writes both outputs (or one clear error)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from helpers.digits import REPO
from mnist_vae.errors import FileProblem, UserError
from mnist_vae.files import save_npz
from mnist_vae.params import ClassifierParams
from mnist_vae.scoring import classifier

FIXTURE = REPO / "tests" / "fixtures" / "mnist_small.npz"
# small and quick: 1000 training digits, 6 epochs of batch 32 (about 190 steps); one thread, because two
# threads on a crowded 2-core machine spend most of their time waiting for each other
FAST = ClassifierParams(epochs=6, batch_size=32, lr=0.005, threads=1)


@pytest.fixture(scope="module")
def digits():
    with np.load(FIXTURE) as f:
        return {k: f[k] for k in f.files}


@pytest.fixture(scope="module")
def trained(digits):
    x, xt = classifier.scale_pixels(digits["x_train"]), classifier.scale_pixels(digits["x_test"])
    return classifier.fit(x, digits["y_train"], xt, digits["y_test"], FAST)


def test_it_reaches_high_accuracy_on_the_fixture_digits(trained):
    _, metrics = trained
    assert metrics["test_accuracy"] >= 0.9, metrics  # 200 held-out real digits, from 1000 training digits
    assert metrics["train_time"] > 0  # recorded, in seconds; how fast is the benchmarks' business, not a test's
    assert metrics["n_train"] == 1000 and metrics["n_test"] == 200 and metrics["epochs"] == 6
    assert metrics["threads"] == 1


def test_threads_are_restored_after_training(digits):
    before = torch.get_num_threads()
    classifier.train(classifier.scale_pixels(digits["x_train"][:64]), digits["y_train"][:64],
                     ClassifierParams(epochs=1, batch_size=64, channels=[2, 2], feature_dim=4,
                                      threads=before + 1))
    assert torch.get_num_threads() == before


def test_features_are_the_penultimate_layer(trained, digits):
    model, _ = trained
    x = classifier.scale_pixels(digits["x_test"][:50])
    features, probs = classifier.predict(model, x, batch_size=16)
    assert features.shape == (50, FAST.feature_dim) and features.dtype == torch.float64
    assert (features >= 0).all()  # after the ReLU
    with torch.no_grad():
        logits = model.head(features.float())
    assert torch.allclose(probs, torch.softmax(logits.double(), 1), atol=1e-6)
    assert torch.allclose(probs.sum(1), torch.ones(50, dtype=torch.float64))
    # (N, 784) and (N, 28, 28) are the same input
    assert torch.equal(classifier.predict(model, x.reshape(50, 784), batch_size=16)[0], features)


def test_same_params_and_data_give_the_same_weights_and_another_seed_does_not(digits):
    x, y = classifier.scale_pixels(digits["x_train"][:200]), digits["y_train"][:200]
    p = ClassifierParams(epochs=1, batch_size=50, channels=[4, 8], feature_dim=16, threads=1)
    a, b = classifier.train(x, y, p), classifier.train(x, y, p)
    c = classifier.train(x, y, p.model_copy(update={"seed": 1}))
    for (name, ta), tb, tc in zip(a.state_dict().items(), b.state_dict().values(), c.state_dict().values()):
        assert torch.equal(ta, tb), name
    assert not torch.equal(a.head.weight, c.head.weight)


def test_the_checkpoint_loads_with_weights_only_and_predicts_the_same(trained, digits, tmp_path):
    model, _ = trained
    path = tmp_path / "classifier.pt"
    classifier.save(path, model)
    raw = torch.load(path, weights_only=True)
    assert set(raw) == {"config", "state_dict"} and raw["config"]["feature_dim"] == FAST.feature_dim
    again = classifier.load(path)
    x = classifier.scale_pixels(digits["x_test"])
    assert torch.equal(classifier.predict(again, x)[1], classifier.predict(model, x)[1])
    classifier.save(tmp_path / "copy.pt", again)
    assert (tmp_path / "copy.pt").read_bytes() == path.read_bytes()  # equal models give equal bytes


def test_a_missing_or_corrupt_checkpoint_is_a_user_error(tmp_path):
    with pytest.raises(FileProblem, match="none.pt is missing"):
        classifier.load(tmp_path / "none.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="not a readable classifier"):
        classifier.load(bad)


def test_mismatched_images_and_labels_are_a_user_error():
    with pytest.raises(UserError, match="as many"):
        classifier.train(torch.zeros(5, 784), np.zeros(4), FAST)


def _stage_dir(tmp_path: Path, digits, classifier_params: dict) -> Path:
    (tmp_path / "data" / "raw").mkdir(parents=True)
    save_npz(tmp_path / "data" / "raw" / "mnist.npz", digits)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"classifier": classifier_params}))
    return tmp_path


def _run_stage(cwd: Path) -> subprocess.CompletedProcess:
    env = {"PYTHONPATH": str(REPO / "src"), "PATH": str(Path(sys.executable).parent)}
    return subprocess.run([sys.executable, str(REPO / "stages" / "classifier.py")], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.process
def test_the_stage_writes_the_model_and_its_metrics(tmp_path, digits):
    small = {k: v[:300] if k.endswith("train") else v[:100] for k, v in digits.items()}
    root = _stage_dir(tmp_path, small, {"epochs": 1, "batch_size": 64, "channels": [4, 8], "feature_dim": 16,
                                              "threads": 1})
    proc = _run_stage(root)
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads((root / "metrics" / "classifier.json").read_text())
    assert metrics["n_train"] == 300 and metrics["n_test"] == 100 and 0 <= metrics["test_accuracy"] <= 1
    assert metrics["train_time"] > 0
    assert classifier.load(root / "models" / "classifier.pt").config.feature_dim == 16


@pytest.mark.process
def test_the_stage_stops_with_one_line_on_bad_params(tmp_path, digits):
    root = _stage_dir(tmp_path, digits, {"epocs": 1})
    proc = _run_stage(root)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "classifier: error: params.yaml: unknown key 'classifier.epocs'; did you mean 'classifier.epochs'?"]
    assert not (root / "models").exists()
