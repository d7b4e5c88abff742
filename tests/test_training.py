"""The training loop: KL warm-up, learning on real digits, reproducibility, bf16, IWAE."""

from pathlib import Path

import numpy as np
import pytest
import torch

from mnist_vae import training
from mnist_vae.model import VAE
from mnist_vae.params import ModelParams, TrainParams

FIXTURE = Path(__file__).parent / "fixtures" / "mnist_small.npz"


@pytest.fixture(scope="module")
def digits():
    with np.load(FIXTURE) as f:
        x = np.float32(f["x_train"]).reshape(-1, 784) / 255
        xt = np.float32(f["x_test"]).reshape(-1, 784) / 255
    return training.Data(torch.from_numpy(x), torch.from_numpy(xt))


def test_kl_warmup_is_linear_per_step_and_reaches_beta_exactly():
    p = TrainParams(beta=4.0, kl_warmup_epochs=2)
    steps = 10
    weights = [training.kl_weight(s, steps, p) for s in range(0, 31)]
    assert weights[0] == 0.0
    assert weights[5] == pytest.approx(1.0) and weights[10] == pytest.approx(2.0)  # per step, not per epoch
    assert weights[20] == 4.0 and weights[30] == 4.0  # exactly beta from the end of warm-up on
    assert all(b >= a for a, b in zip(weights, weights[1:]))
    assert training.kl_weight(0, steps, TrainParams(beta=0.5)) == 0.5  # no warm-up: beta from the start


def _train(digits, **kw):
    torch.manual_seed(0)
    model = VAE(ModelParams(hidden_dims=[128], latent_dim=8))
    p = TrainParams(epochs=3, batch_size=64, **kw)
    return model, training.train(model, digits, p, seed=0, device=torch.device("cpu"))


def test_training_learns_and_logs_each_epoch(digits):
    _, history = _train(digits)
    assert [row["epoch"] for row in history] == [1, 2, 3]
    for row in history:
        assert row["train_total"] == pytest.approx(row["train_rec"] + row["train_kl"], rel=1e-5)
        assert row["test_total"] == pytest.approx(row["test_rec"] + row["test_kl"], rel=1e-5)
        assert row["epoch_time"] > 0 and row["kl_weight"] == 1.0
    assert history[-1]["train_total"] < history[0]["train_total"] - 20
    assert history[-1]["test_total"] < history[0]["test_total"]


def test_same_seed_same_history_and_weights(digits):
    m1, h1 = _train(digits)
    m2, h2 = _train(digits)
    strip = lambda h: [{k: v for k, v in r.items() if k not in ("epoch_time", "time")} for r in h]  # noqa: E731
    assert strip(h1) == strip(h2)
    for a, b in zip(m1.state_dict().values(), m2.state_dict().values()):
        assert torch.equal(a, b)


def test_warmup_is_logged(digits):
    _, history = _train(digits, kl_warmup_epochs=2, beta=2.0)
    assert history[0]["kl_weight"] == pytest.approx(1.0)  # halfway through warm-up at the end of epoch 1
    assert history[1]["kl_weight"] == history[2]["kl_weight"] == 2.0


def test_bf16_learns_like_fp32(digits):
    _, fp32 = _train(digits)
    _, bf16 = _train(digits, precision="bf16")
    assert bf16[-1]["train_total"] == pytest.approx(fp32[-1]["train_total"], rel=0.03)


def test_iwae_objective_trains(digits):
    _, history = _train(digits, objective="iwae", iw_samples=4)
    assert history[-1]["train_total"] < history[0]["train_total"] - 20


def test_dynamic_binarization_redraws(digits):
    data = training.Data(digits.x_train, digits.x_test, p_train=digits.x_train)
    torch.manual_seed(0)
    model = VAE(ModelParams(hidden_dims=[64], latent_dim=4))
    history = training.train(model, data, TrainParams(epochs=2, dynamic_binarization=True), 0, torch.device("cpu"))
    assert history[-1]["train_total"] < history[0]["train_total"]


def test_cuda_requested_without_cuda_is_a_clear_error():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    from mnist_vae.errors import UserError

    with pytest.raises(UserError, match="no CUDA device"):
        training.pick_device("cuda")
    assert training.pick_device("auto").type == "cpu"
