"""The training loop: KL warm-up, learning on real digits, reproducibility, bf16, IWAE, dynamic
binarization, every architecture and likelihood, divergence."""

import copy
import io
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from mnist_vae.vae import evaluation
from mnist_vae.vae import objectives
from mnist_vae.vae import training
from mnist_vae.errors import UserError
from mnist_vae.vae.model import VAE, load_checkpoint, save_checkpoint
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
    h3 = training.train(m3, digits, TrainParams(epochs=3, batch_size=64), seed=1, device=torch.device("cpu"))
    assert h3[0]["train_total"] != h1[0]["train_total"]
    assert not torch.equal(m3.fc_mu_logvar.weight, m1.fc_mu_logvar.weight)


def test_test_evaluation_does_not_change_the_training_trajectory(digits):
    # evaluating on 1000 test digits or on 10 draws different amounts of randomness; training must not see it
    runs = []
    for n_test in (len(digits.x_test), 10):
        torch.manual_seed(0)
        model = VAE(ModelParams(hidden_dims=[64], latent_dim=4))
        history = training.train(model, training.Data(digits.x_train[:256], digits.x_test[:n_test]),
                                 TrainParams(epochs=3, batch_size=64), seed=0, device=torch.device("cpu"))
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
    training.train(model, data, TrainParams(epochs=epochs, batch_size=64, dynamic_binarization=True), 0,
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
    history = training.train(model, data, TrainParams(epochs=3, batch_size=64, **train_kw), 0, torch.device("cpu"))
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
                       TrainParams(epochs=3, batch_size=64), 0, torch.device("cpu"), on_epoch=rows.append)
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
        training.pick_device("cuda")
    assert training.pick_device("auto").type == "cpu"


# --------------------------------------------------------------------------- through the train stage


def _run_train_stage(tmp_path, repo_root, x_train, train_yaml):
    from mnist_vae.files import save_npz

    n = len(x_train)
    save_npz(tmp_path / "data" / "processed" / "train.npz", {"x": x_train, "y": np.zeros(n, np.uint8)})
    save_npz(tmp_path / "data" / "processed" / "test.npz", {"x": x_train[:50], "y": np.zeros(50, np.uint8)})
    (tmp_path / "params.yaml").write_text(
        "model:\n  hidden_dims: [16]\n  latent_dim: 2\n"
        "train:\n  epochs: 1\n  device: cpu\n" + train_yaml)
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    return subprocess.run([sys.executable, str(repo_root / "stages" / "train.py")], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)


def test_train_stage_counts_the_digits_it_used(digits, tmp_path, repo_root):
    x = digits.x_train[:300].numpy()
    proc = _run_train_stage(tmp_path, repo_root, x, "  max_examples: 5000\n")  # more than there are
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "metrics" / "train.json").read_text())["n_train"] == 300


def test_train_stage_stops_on_a_nan_loss_and_writes_nothing(digits, tmp_path, repo_root):
    x = digits.x_train[:300].numpy().copy()
    x[:, 0] = np.nan  # every batch's loss is NaN from the first step on
    proc = _run_train_stage(tmp_path, repo_root, x, "")
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
    history = training.train(model, digits, TrainParams(epochs=3, batch_size=64, kl_warmup_epochs=1), 0,
                             torch.device("cpu"))
    after = evaluation.importance_sampled(model, digits.x_test, 20, generator=g())
    assert -after["log_px"].mean() < -before["log_px"].mean() - 20
    assert history[-1]["test_total"] < history[0]["test_total"]
    # the K-sample bound is above the K-sample ELBO, example by example (same draws)
    assert (-after["log_px"] <= after["rec"] + after["kl"] + 1e-4).all()
    # the KL to the mixture is an estimate that can be negative for one draw, never on average
    assert history[-1]["test_kl"] > 0 and after["kl"].mean() > 0
    assert not torch.equal(model.pseudo_inputs.detach(), u0)  # the pseudo-inputs learn


# --------------------------------------------------------------------------- resuming


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


def _keep(saved: list):
    """A save_state that keeps each state: a copy, since the state holds the live weights."""
    return lambda state: saved.append(copy.deepcopy(state))


def _model_bytes(model) -> list[bytes]:
    return [t.numpy().tobytes() for t in model.state_dict().values()]


def _numbers(history):
    return [{k: v for k, v in row.items() if k not in ("epoch_time", "time")} for row in history]


RESUMABLE = {  # every setting whose state crosses epochs: a random stream, a step counter, a parameter
    "elbo": (dict(), dict()),
    "dynamic-binarization": (dict(), dict(dynamic_binarization=True)),
    "iwae": (dict(), dict(objective="iwae", iw_samples=3)),
    "kl-warmup": (dict(), dict(kl_warmup_epochs=3, beta=2.0)),
    "learned-sigma": (dict(likelihood="gaussian", gaussian_sigma="learned"), dict()),
    "burda-schedule": (dict(), dict(lr_schedule="burda")),
    "bf16": (dict(), dict(precision="bf16")),
}


@pytest.mark.parametrize("name", list(RESUMABLE))
def test_a_training_resumed_from_any_epoch_gives_the_very_bytes_of_an_uninterrupted_one(digits, name):
    config, train_kw = RESUMABLE[name]
    intensities = digits.x_train[:320]
    data = training.Data(torch.bernoulli(intensities, generator=torch.Generator().manual_seed(1)),
                         digits.x_test[:100], p_train=intensities)
    p = TrainParams(epochs=4, batch_size=64, **train_kw)

    def run(state=None, saved=None):
        torch.manual_seed(0)  # as the stage: the initial weights, then train() seeds its streams
        model = VAE(ModelParams(**{"hidden_dims": [32], "latent_dim": 3, **config}))
        history = training.train(model, data, p, 0, torch.device("cpu"), state=state,
                                 save_state=_keep(saved) if saved is not None else lambda s: None)
        return model, history

    states = []
    model, history = run(saved=states)
    assert [s["epoch"] for s in states] == [1, 2, 3, 4]
    for state in states[:3]:
        resumed, resumed_history = run(state=state)
        assert _numbers(resumed_history) == _numbers(history), state["epoch"]
        assert [r["time"] for r in resumed_history[:state["epoch"]]] == [r["time"] for r in history[:state["epoch"]]]
        assert _model_bytes(resumed) == _model_bytes(model), state["epoch"]


def test_raising_epochs_continues_to_the_bytes_of_a_longer_training_and_checkpoints_are_kept(digits):
    data = training.Data(digits.x_train[:256], digits.x_test[:50])

    def run(epochs, state=None, checkpoint_every=1):
        torch.manual_seed(0)
        model = VAE(ModelParams(hidden_dims=[32], latent_dim=3))
        saved = []
        history = training.train(model, data, TrainParams(epochs=epochs, batch_size=64, checkpoint_every=checkpoint_every),
                                 0, torch.device("cpu"), state=state, save_state=_keep(saved))
        return model, history, saved

    short_model, short, saved = run(3, checkpoint_every=2)
    assert [s["epoch"] for s in saved] == [2, 3]  # every 2nd epoch, and the last
    longer_model, longer, _ = run(5, state=saved[-1])
    scratch_model, scratch, _ = run(5)
    assert _numbers(longer) == _numbers(scratch) and _model_bytes(longer_model) == _model_bytes(scratch_model)
    assert _numbers(longer)[:3] == _numbers(short)
    assert _model_bytes(short_model) != _model_bytes(longer_model)  # the control: it did train on


def test_a_saved_state_loads_without_pickle_and_holds_the_epoch_it_was_taken_at(digits, tmp_path):
    torch.manual_seed(0)
    model = VAE(ModelParams(hidden_dims=[32], latent_dim=3))
    path = tmp_path / "s.pt"
    saved = []

    def save(state):
        saved.append(copy.deepcopy(state))
        if state["epoch"] == 1:
            training.save_state(path, state, {"seed": 0})

    training.train(model, training.Data(digits.x_train[:128], digits.x_test[:20]), TrainParams(epochs=2, batch_size=64),
                   0, torch.device("cpu"), save_state=save)
    raw = torch.load(path, weights_only=True)  # numbers, strings and tensors only; random states as uint8
    assert raw["fingerprint"] == {"seed": 0} and raw["rng"]["shuffle"].dtype == torch.uint8
    loaded = training.load_state(path, {"seed": 0}, epochs=2)
    assert loaded["epoch"] == 1 and loaded["step"] == 2 and len(loaded["history"]) == 1
    assert torch.equal(loaded["model"]["fc_mu_logvar.weight"], saved[0]["model"]["fc_mu_logvar.weight"])
    assert not torch.equal(loaded["model"]["fc_mu_logvar.weight"], model.fc_mu_logvar.weight.detach())  # epoch 2 moved on


@pytest.fixture
def saved_state(digits, tmp_path):
    """A state after 2 of 3 epochs, saved with fingerprint {'seed': 0, 'train.lr': 0.001} at tmp_path/state.pt."""
    torch.manual_seed(0)
    model = VAE(ModelParams(hidden_dims=[16], latent_dim=2))
    saved = []
    training.train(model, training.Data(digits.x_train[:128], digits.x_test[:20]),
                   TrainParams(epochs=2, batch_size=64), 0, torch.device("cpu"), save_state=_keep(saved))
    path = tmp_path / "state.pt"
    training.save_state(path, saved[-1], {"seed": 0, "train.lr": 0.001})
    return path


def _load(path, caplog, fingerprint=None, epochs=3):
    caplog.clear()
    with caplog.at_level("INFO", logger="mnist_vae.vae.training"):
        state = training.load_state(path, fingerprint or {"seed": 0, "train.lr": 0.001}, epochs)
    return state, [r.getMessage() for r in caplog.records]


def test_load_state_resumes_a_match_and_says_so_in_one_line(saved_state, caplog):
    state, lines = _load(saved_state, caplog)
    assert state["epoch"] == 2 and lines == [f"resuming from epoch 3 of 3 ({saved_state})"]
    state, lines = _load(saved_state, caplog, epochs=2)  # finished: the outputs come from it
    assert state["epoch"] == 2 and lines == [f"{saved_state} holds all 2 epochs; writing the outputs from it "
                                             "(delete it to retrain)"]
    state, lines = _load(saved_state.with_name("none.pt"), caplog)
    assert state is None and lines == []  # no state: nothing to say


def test_load_state_names_the_part_of_the_fingerprint_that_changed(saved_state, caplog):
    state, [line] = _load(saved_state, caplog, {"seed": 0, "train.lr": 0.002})
    assert state is None and "from another training (train.lr 0.001 -> 0.002)" in line and "epoch 1" in line
    state, [line] = _load(saved_state, caplog, {"seed": 1, "train.lr": 0.001, "model.latent_dim": 2})
    assert state is None and "seed 0 -> 1" in line and "model.latent_dim (none) -> 2" in line
    state, [line] = _load(saved_state, caplog, epochs=1)  # fewer epochs than it holds: no exact way back
    assert state is None and "holds 2 epochs, more than train.epochs 1; training from epoch 1" in line


@pytest.mark.parametrize("damage", ["truncated", "flipped-byte", "empty", "not-a-zip"])
def test_a_damaged_state_is_one_line_and_a_fresh_start(saved_state, caplog, damage):
    good = saved_state.read_bytes()
    bad = {"truncated": good[: len(good) // 2], "empty": b"", "not-a-zip": b"hello " * 100,
           "flipped-byte": good[: len(good) // 2] + bytes([good[len(good) // 2] ^ 0xFF]) + good[len(good) // 2 + 1:]}[damage]
    saved_state.write_bytes(bad)
    state, lines = _load(saved_state, caplog)
    assert state is None and len(lines) == 1 and "\n" not in lines[0]
    assert lines[0].startswith(f"{saved_state} is unreadable (") and lines[0].endswith("; training from epoch 1")
    if damage == "flipped-byte":
        assert "fails its CRC-32 check" in lines[0]


def test_a_full_disk_keeps_the_previous_state_and_is_one_line(saved_state, caplog, monkeypatch):
    import errno

    before = saved_state.read_bytes()
    state, _ = _load(saved_state, caplog)
    real_save = torch.save

    def fill_the_disk(obj, f, *args, **kwargs):
        real_save(obj, io.BytesIO(), *args, **kwargs)
        f.write(b"x" * 1000)  # part of it, then the disk is full
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(training.torch, "save", fill_the_disk)
    with pytest.raises(UserError) as info:
        training.save_state(saved_state, state, {"seed": 0, "train.lr": 0.001})
    message = str(info.value)
    assert "\n" not in message and "No space left on device" in message and "previous state" in message
    assert saved_state.read_bytes() == before
    assert sorted(p.name for p in saved_state.parent.iterdir()) == ["state.pt"]  # no temporary file left


KILLED_WRITER = """
import os, signal, sys, torch
from mnist_vae.vae import training
state = torch.load(sys.argv[1], weights_only=True)
real_save = torch.save
def killed_halfway(obj, f, *args, **kwargs):  # half of the file, then SIGKILL (no handler, no cleanup runs)
    real_save(obj, f, *args, **kwargs)
    f.flush()
    f.truncate(f.tell() // 2)
    os.kill(os.getpid(), signal.SIGKILL)
torch.save = killed_halfway
training.save_state(sys.argv[2], state, {"seed": 0, "train.lr": 0.001})
"""


def test_a_writer_killed_in_the_middle_of_the_state_leaves_the_previous_one_readable(saved_state, caplog, tmp_path):
    before = saved_state.read_bytes()
    newer = _load(saved_state, caplog)[0]
    newer["epoch"] = 99  # what the killed writer was writing
    torch.save(newer, tmp_path / "newer.pt")
    proc = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(tmp_path / "newer.pt"), str(saved_state)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == -9, proc.stderr
    leftovers = list(tmp_path.glob(".state.pt.*.tmp"))
    assert len(leftovers) == 1 and 0 < leftovers[0].stat().st_size  # killed mid-write, before the rename
    assert saved_state.read_bytes() == before
    state, lines = _load(saved_state, caplog)
    assert state["epoch"] == 2 and lines == [f"resuming from epoch 3 of 3 ({saved_state})"]
    assert list(tmp_path.glob(".state.pt.*.tmp")) == []  # the killed writer's leftover is cleared
