"""The training loop: KL warm-up, learning on real digits, reproducibility, bf16, IWAE, dynamic
binarization, every architecture and likelihood, divergence."""

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from helpers.digits import REPO
from mnist_vae.errors import UserError
from mnist_vae.params import ModelParams, TrainParams
from mnist_vae.vae import evaluation, objectives, training
from mnist_vae.vae.device import pick_device
from mnist_vae.vae.model import VAE, load_checkpoint, save_checkpoint

SEEDS = training.Seeds.from_seed(0)

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
    return model, training.train(model, digits, p, SEEDS, torch.device("cpu"))


def test_training_learns_and_logs_each_epoch(digits):
    _, history = _train(digits)
    assert [row["epoch"] for row in history] == [1, 2, 3]
    for row in history:
        assert row["train_total"] == pytest.approx(row["train_rec"] + row["train_kl"], rel=1e-5)
        assert row["test_total"] == pytest.approx(row["test_rec"] + row["test_kl"], rel=1e-5)
        assert row["epoch_time"] > 0 and row["kl_weight"] == 1.0
    assert history[-1]["train_total"] < history[0]["train_total"] - 20
    assert history[-1]["test_total"] < history[0]["test_total"]


def _weights(model):
    return [t.clone() for t in model.state_dict().values()]


def test_same_seed_same_history_and_weights_and_another_seed_differs(digits):
    m1, h1 = _train(digits)
    m2, h2 = _train(digits)
    strip = lambda h: [{k: v for k, v in r.items() if k not in ("epoch_time", "time")} for r in h]  # noqa: E731
    assert strip(h1) == strip(h2)
    for a, b in zip(m1.state_dict().values(), m2.state_dict().values()):
        assert torch.equal(a, b)
    # the control: the same initial weights, only train()'s own seed changed
    torch.manual_seed(0)
    m3 = VAE(ModelParams(hidden_dims=[128], latent_dim=8))
    h3 = training.train(m3, digits, TrainParams(epochs=3, batch_size=64), training.Seeds.from_seed(1), torch.device("cpu"))
    assert h3[0]["train_total"] != h1[0]["train_total"]
    assert not torch.equal(m3.fc_mu_logvar.weight, m1.fc_mu_logvar.weight)


def test_test_evaluation_does_not_change_the_training_trajectory(digits):
    # evaluating on 1000 test digits or on 10 draws different amounts of randomness; training must not see it
    runs = []
    for n_test in (len(digits.x_test), 10):
        torch.manual_seed(0)
        model = VAE(ModelParams(hidden_dims=[64], latent_dim=4))
        history = training.train(model, training.Data(digits.x_train[:256], digits.x_test[:n_test]),
                                 TrainParams(epochs=3, batch_size=64), SEEDS, torch.device("cpu"))
        runs.append((model, history))
    (m1, h1), (m2, h2) = runs
    assert [r["train_total"] for r in h1] == [r["train_total"] for r in h2]
    for a, b in zip(m1.state_dict().values(), m2.state_dict().values()):
        assert torch.equal(a, b)


def test_warmup_is_logged(digits):
    _, history = _train(digits, kl_warmup_epochs=2, beta=2.0)
    assert history[0]["kl_weight"] == pytest.approx(1.0)  # halfway through warm-up at the end of epoch 1
    assert history[1]["kl_weight"] == history[2]["kl_weight"] == 2.0


def test_bf16_runs_the_matrix_multiplies_in_bfloat16_and_the_loss_in_float32(digits, monkeypatch):
    torch.manual_seed(0)
    model = VAE(ModelParams(hidden_dims=[64], latent_dim=4))
    linear_out = []
    linears = [module for module in model.modules() if isinstance(module, torch.nn.Linear)]
    for module in linears:
        module.register_forward_hook(lambda m, i, out: linear_out.append(out.dtype))
    terms = []

    def recording_loss_terms(*args):
        out = real_loss_terms(*args)
        terms.append([t.dtype for t in out if t is not None])
        return out

    real_loss_terms = training.loss_terms
    monkeypatch.setattr(training, "loss_terms", recording_loss_terms)
    p = TrainParams(epochs=1, batch_size=64, precision="bf16")
    x = digits.x_train[:128]
    training.train_epoch(model, training.make_optimizer(model, p), x, torch.arange(128), p, 0, 2)
    assert len(linear_out) == 2 * len(linears) == 8  # two steps through encoder 784-64, head, decoder 4-64-784
    assert set(linear_out) == {torch.bfloat16}
    assert terms == [[torch.float32, torch.float32]] * 2  # reconstruction and KL, so the loss too
    # and under fp32 nothing is reduced
    linear_out.clear()
    p32 = TrainParams(epochs=1, batch_size=64)
    training.train_epoch(model, training.make_optimizer(model, p32), x, torch.arange(128), p32, 0, 2)
    assert set(linear_out) == {torch.float32}


def test_bf16_learns_like_fp32(digits):
    _, fp32 = _train(digits)
    _, bf16 = _train(digits, precision="bf16")
    assert bf16[-1]["train_total"] == pytest.approx(fp32[-1]["train_total"], rel=0.03)


def _step_gradients(model, x, p, seed):
    """The gradients of one train_epoch step on x (SGD with lr 0, so the model does not move)."""
    torch.manual_seed(seed)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    training.train_epoch(model, optimizer, x, torch.arange(len(x)), p, 0, 1)
    return [q.grad.clone() for q in model.parameters()]


def _gradients(model, loss):
    model.zero_grad(set_to_none=True)
    loss.backward()
    return [q.grad.clone() for q in model.parameters()]


def test_iwae_training_follows_the_gradient_of_the_k_sample_bound(digits):
    torch.manual_seed(0)
    model = VAE(ModelParams(hidden_dims=[64], latent_dim=4))
    x, k = digits.x_train[:32], 5
    step = _step_gradients(model, x, TrainParams(objective="iwae", iw_samples=k, batch_size=32), seed=7)
    torch.manual_seed(7)  # the same K x 32 draws
    log_w, _, _ = objectives.log_importance_weights(model, x, k)
    bound = _gradients(model, -objectives.iwae_bound(log_w).sum())
    torch.manual_seed(7)
    log_w, _, _ = objectives.log_importance_weights(model, x, k)
    elbo = _gradients(model, -log_w.mean(0).sum())  # the K-sample ELBO on the very same draws
    for g_step, g_bound in zip(step, bound):
        torch.testing.assert_close(g_step, g_bound, rtol=1e-4, atol=1e-4)
    gap = max(float((a - b).abs().max()) for a, b in zip(bound, elbo))
    scale = max(float(a.abs().max()) for a in bound)
    assert gap > 0.05 * scale  # with K = 5 the two objectives pull differently


def test_iwae_logs_the_bound_under_its_own_name(digits):
    _, history = _train(digits, objective="iwae", iw_samples=4)
    for row in history:
        # the ELBO columns hold the ELBO (rec: mean over the K samples of -log p(x|z_k)) ...
        assert row["train_total"] == pytest.approx(row["train_rec"] + row["train_kl"], rel=1e-5)
        assert row["test_total"] == pytest.approx(row["test_rec"] + row["test_kl"], rel=1e-5)
        # ... and the K-sample bound, the tighter one, has columns of its own
        assert row["train_neg_iwae_bound"] < row["train_total"]
        assert row["test_neg_iwae_bound"] < row["test_total"]
    assert history[-1]["train_neg_iwae_bound"] < history[0]["train_neg_iwae_bound"] - 20
    _, elbo_history = _train(digits)
    assert "train_neg_iwae_bound" not in elbo_history[0]


def test_dynamic_binarization_redraws_each_epoch_from_the_intensities(digits, monkeypatch):
    seen = []

    def recording_train_epoch(model, optimizer, x, *args, **kwargs):
        seen.append(x.clone())
        return real_train_epoch(model, optimizer, x, *args, **kwargs)

    real_train_epoch = training.train_epoch
    monkeypatch.setattr(training, "train_epoch", recording_train_epoch)
    intensities = digits.x_train[:64]
    data = training.Data(torch.bernoulli(intensities), digits.x_test[:10], p_train=intensities)
    torch.manual_seed(0)
    model = VAE(ModelParams(hidden_dims=[8], latent_dim=2))
    epochs = 200
    training.train(model, data, TrainParams(epochs=epochs, batch_size=64, dynamic_binarization=True), SEEDS,
                   torch.device("cpu"))
    draws = torch.stack(seen)
    assert len(draws) == epochs and set(draws.unique().tolist()) == {0.0, 1.0}
    assert not torch.equal(draws[0], draws[1])  # each epoch sees other binary images
    # their mean approaches the intensities: within 5 standard errors sqrt(p (1 - p) / epochs) everywhere
    se = (intensities * (1 - intensities) / epochs).sqrt()
    assert ((draws.mean(0) - intensities).abs() <= 5 * se + 1e-6).all()
    assert (draws.mean(0) - intensities).abs().mean() < 0.02


@pytest.mark.parametrize("config, train_kw", [
    (dict(architecture="conv", hidden_dims=[32], conv_channels=[4, 8]), {}),
    (dict(likelihood="continuous_bernoulli"), {}),
    (dict(likelihood="gaussian", gaussian_sigma=0.2), {}),
    (dict(likelihood="gaussian", gaussian_sigma="learned"), {}),
    (dict(architecture="conv", hidden_dims=[32], conv_channels=[4, 8]), dict(objective="iwae", iw_samples=3)),
    (dict(prior="vamp", vamp_components=20), {}),
    (dict(prior="vamp", vamp_components=20), dict(objective="iwae", iw_samples=3)),
], ids=["conv", "continuous-bernoulli", "gaussian-fixed", "gaussian-learned", "iwae-conv", "vamp", "iwae-vamp"])
def test_other_settings_train_and_their_checkpoints_round_trip(digits, config, train_kw, tmp_path):
    torch.manual_seed(0)
    model = VAE(ModelParams(**{"hidden_dims": [64], "latent_dim": 4, **config}))
    data = training.Data(digits.x_train[:384], digits.x_test[:100])
    history = training.train(model, data, TrainParams(epochs=3, batch_size=64, **train_kw), SEEDS, torch.device("cpu"))
    loss = "train_neg_iwae_bound" if train_kw else "train_total"
    values = [row[loss] for row in history] + [row["test_total"] for row in history]
    assert all(math.isfinite(v) for v in values)
    assert history[-1][loss] < history[1][loss] < history[0][loss]
    save_checkpoint(tmp_path / "vae.pt", model)
    loaded = load_checkpoint(tmp_path / "vae.pt")
    assert loaded.config == model.config
    for a, b in zip(model.state_dict().values(), loaded.state_dict().values()):
        assert torch.equal(a, b)
    g = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    assert evaluation.evaluate_elbo(loaded, data.x_test, generator=g()) == \
        evaluation.evaluate_elbo(model, data.x_test, generator=g())


def _train_until_nan(digits, bad_call):
    """Train 3 epochs of 4 steps with the encoder's output turned NaN at its `bad_call`-th training call."""
    torch.manual_seed(0)
    model = VAE(ModelParams(hidden_dims=[32], latent_dim=4))
    calls, rows = [], []

    def poison(module, inputs, out):
        if module.training:
            calls.append(1)
            if len(calls) == bad_call:
                return out * float("nan")

    model.encoder.register_forward_hook(poison)
    with pytest.raises(UserError) as info:
        training.train(model, training.Data(digits.x_train[:256], digits.x_test[:10]),
                       TrainParams(epochs=3, batch_size=64), SEEDS, torch.device("cpu"), on_epoch=rows.append)
    return model, str(info.value), len(calls), rows


def test_a_non_finite_loss_stops_training_at_once_naming_epoch_and_step(digits):
    model, message, calls, rows = _train_until_nan(digits, 4 + 3)  # the 3rd step of epoch 2
    assert "\n" not in message and "epoch 2, step 3 of 4" in message and "nan" in message
    assert calls == 7 and len(rows) == 1  # no step after the bad one, no epoch 2 row
    assert all(torch.isfinite(t).all() for t in model.state_dict().values())  # the bad step made no update


def test_the_deferred_check_of_cuda_names_the_first_bad_step(digits, monkeypatch):
    # CUDA reads the flag back every CHECK_EVERY_DEFAULT steps; the same code path on the CPU, every 3
    monkeypatch.setattr(training, "CHECK_EVERY", {})
    monkeypatch.setattr(training, "CHECK_EVERY_DEFAULT", 3)
    _, message, calls, rows = _train_until_nan(digits, 4 + 1)  # the 1st step of epoch 2, read back at its 3rd
    assert "epoch 2, step 1 of 4" in message and calls == 4 + 3 and len(rows) == 1
    _, message, calls, _ = _train_until_nan(digits, 4 + 4)  # the last step of epoch 2: read back at once
    assert "epoch 2, step 4 of 4" in message and calls == 8


def test_cuda_requested_without_cuda_is_a_clear_error():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")

    with pytest.raises(UserError, match="no CUDA device"):
        pick_device("cuda")
    assert pick_device("auto").type == "cpu"


# --------------------------------------------------------------------------- through the train stage


def _run_train_stage(tmp_path, x_train, train_yaml):
    from mnist_vae.files import save_npz

    n = len(x_train)
    save_npz(tmp_path / "data" / "processed" / "train.npz", {"x": x_train, "y": np.zeros(n, np.uint8)})
    save_npz(tmp_path / "data" / "processed" / "test.npz", {"x": x_train[:50], "y": np.zeros(50, np.uint8)})
    (tmp_path / "params.yaml").write_text(
        "model:\n  hidden_dims: [16]\n  latent_dim: 2\n"
        "train:\n  epochs: 1\n  device: cpu\n" + train_yaml)
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    return subprocess.run([sys.executable, str(REPO / "stages" / "train.py")], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.process
def test_train_stage_counts_the_digits_it_used(digits, tmp_path):
    x = digits.x_train[:300].numpy()
    proc = _run_train_stage(tmp_path, x, "  max_examples: 5000\n")  # more than there are
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "metrics" / "train.json").read_text())["n_train"] == 300


@pytest.mark.process
def test_train_stage_stops_on_a_nan_loss_and_writes_nothing(digits, tmp_path):
    x = digits.x_train[:300].numpy().copy()
    x[:, 0] = np.nan  # every batch's loss is NaN from the first step on
    proc = _run_train_stage(tmp_path, x, "")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("train: error: training diverged") and \
        "epoch 1, step 1 of 3" in lines[0], proc.stderr
    assert not (tmp_path / "models" / "vae.pt").exists() and not (tmp_path / "metrics").exists()


def test_vamp_training_lowers_the_test_bound_and_iwae_stays_below_the_elbo(digits):
    torch.manual_seed(0)
    model = VAE(ModelParams(hidden_dims=[128], latent_dim=8, prior="vamp", vamp_components=50))
    u0 = model.pseudo_inputs.detach().clone()
    g = lambda: torch.Generator().manual_seed(5)  # noqa: E731
    before = evaluation.importance_sampled(model, digits.x_test, 20, generator=g())
    history = training.train(model, digits, TrainParams(epochs=3, batch_size=64, kl_warmup_epochs=1), SEEDS,
                             torch.device("cpu"))
    after = evaluation.importance_sampled(model, digits.x_test, 20, generator=g())
    assert -after["log_px"].mean() < -before["log_px"].mean() - 20
    assert history[-1]["test_total"] < history[0]["test_total"]
    # the K-sample bound is above the K-sample ELBO, example by example (same draws)
    assert (-after["log_px"] <= after["rec"] + after["kl"] + 1e-4).all()
    # the KL to the mixture is an estimate that can be negative for one draw, never on average
    assert history[-1]["test_kl"] > 0 and after["kl"].mean() > 0
    assert not torch.equal(model.pseudo_inputs.detach(), u0)  # the pseudo-inputs learn


def test_the_burda_schedule_is_3_to_the_i_epochs_at_lr_times_10_to_the_minus_i_over_7():
    p = TrainParams(lr_schedule="burda", lr=1e-3)
    rates = [training.learning_rate(e, p) for e in range(1, 3281)]
    stages = sorted(set(rates), reverse=True)
    assert [rates.count(r) for r in stages] == [1, 3, 9, 27, 81, 243, 729, 2187]  # 3280 epochs in all
    assert stages == [pytest.approx(1e-3 * 10 ** (-i / 7), rel=1e-12) for i in range(8)]
    assert stages[0] == 1e-3 and stages[7] == pytest.approx(1e-4)  # one decade over the seven steps
    ends = [e for e in range(1, 3280) if rates[e] != rates[e - 1]]  # the last epoch of each stage
    assert ends == [1, 4, 13, 40, 121, 364, 1093]
    assert training.learning_rate(3281, p) == pytest.approx(1e-3 * 10 ** (-8 / 7))  # and on, past the paper
    assert {training.learning_rate(e, TrainParams(lr=3e-4)) for e in (1, 2, 5000)} == {3e-4}




@pytest.mark.parametrize("use", ["init", "noise", "order", "test"])
def test_each_use_of_the_seed_changes_its_own_part_alone(digits, use):
    """The training's seeded sources apart: another seed for one of them changes what it feeds (the initial
    weights, the reparameterization noise, the data order: the trained weights; the test evaluation's draws:
    the test columns only) and nothing else."""
    import dataclasses

    data = training.Data(digits.x_train[:256], digits.x_test[:50])
    p = TrainParams(epochs=2, batch_size=64)

    def run(seeds):
        torch.manual_seed(seeds.init)
        model = VAE(ModelParams(hidden_dims=[16], latent_dim=2))
        history = training.train(model, data, p, seeds, torch.device("cpu"))
        return model.state_dict()["fc_mu_logvar.weight"], history

    weights, history = run(SEEDS)
    other_weights, other_history = run(dataclasses.replace(SEEDS, **{use: getattr(SEEDS, use) + 1}))
    same_weights = torch.equal(weights, other_weights)
    same_test = [r["test_total"] for r in history] == [r["test_total"] for r in other_history]
    if use == "test":
        assert same_weights and not same_test  # the evaluation's own stream: training untouched
    else:
        assert not same_weights


def test_the_seeds_of_the_pipeline_are_its_seed_but_the_test_evaluations_own_stream():
    seeds = training.Seeds.from_seed(7)
    assert (seeds.init, seeds.noise, seeds.order) == (7, 7, 7)  # as the notebook seeds its one generator
    assert seeds.test == training.evaluation_seed(7) != training.evaluation_seed(8)
