"""The training's state (vae/state.py): a training resumed from any epoch gives the very bytes of an
uninterrupted one; the state loads without pickle; a changed fingerprint, a damaged file, a full disk or a
writer killed mid-write each mean one line and a safe start."""

import copy
import errno
import io
import os
import subprocess
import sys

import pytest
import torch

from mnist_vae.errors import UserError
from mnist_vae.params import ModelParams, TrainParams
from mnist_vae.vae import state as train_state
from mnist_vae.vae import training
from mnist_vae.vae.model import VAE

SEEDS = training.Seeds.from_seed(0)


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
        history = training.train(model, data, p, SEEDS, torch.device("cpu"), state=state,
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
                                 SEEDS, torch.device("cpu"), state=state, save_state=_keep(saved))
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
            train_state.save_state(path, state, {"seed": 0})

    training.train(model, training.Data(digits.x_train[:128], digits.x_test[:20]), TrainParams(epochs=2, batch_size=64),
                   SEEDS, torch.device("cpu"), save_state=save)
    raw = torch.load(path, weights_only=True)  # numbers, strings and tensors only; random states as uint8
    assert raw["fingerprint"] == {"seed": 0} and raw["rng"]["shuffle"].dtype == torch.uint8
    loaded = train_state.load_state(path, {"seed": 0}, epochs=2)
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
                   TrainParams(epochs=2, batch_size=64), SEEDS, torch.device("cpu"), save_state=_keep(saved))
    path = tmp_path / "state.pt"
    train_state.save_state(path, saved[-1], {"seed": 0, "train.lr": 0.001})
    return path


def _load(path, caplog, fingerprint=None, epochs=3):
    caplog.clear()
    with caplog.at_level("INFO", logger="mnist_vae.vae.state"):
        state = train_state.load_state(path, fingerprint or {"seed": 0, "train.lr": 0.001}, epochs)
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
    assert lines[0].startswith(f"{saved_state} is not a readable training state (") and lines[0].endswith("; training from epoch 1")
    if damage == "flipped-byte":
        assert "fails its CRC-32 check" in lines[0]


def test_a_full_disk_keeps_the_previous_state_and_is_one_line(saved_state, caplog, monkeypatch):

    before = saved_state.read_bytes()
    state, _ = _load(saved_state, caplog)
    real_save = torch.save

    def fill_the_disk(obj, f, *args, **kwargs):
        real_save(obj, io.BytesIO(), *args, **kwargs)
        f.write(b"x" * 1000)  # part of it, then the disk is full
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch, "save", fill_the_disk)
    with pytest.raises(UserError) as info:
        train_state.save_state(saved_state, state, {"seed": 0, "train.lr": 0.001})
    message = str(info.value)
    assert "\n" not in message and "No space left on device" in message and "previous state" in message
    assert saved_state.read_bytes() == before
    assert sorted(p.name for p in saved_state.parent.iterdir()) == ["state.pt"]  # no temporary file left


KILLED_WRITER = """
import os, signal, sys, torch
from mnist_vae.vae import state as train_state
state = torch.load(sys.argv[1], weights_only=True)
real_save = torch.save
def killed_halfway(obj, f, *args, **kwargs):  # half of the file, then SIGKILL (no handler, no cleanup runs)
    real_save(obj, f, *args, **kwargs)
    f.flush()
    f.truncate(f.tell() // 2)
    os.kill(os.getpid(), signal.SIGKILL)
torch.save = killed_halfway
train_state.save_state(sys.argv[2], state, {"seed": 0, "train.lr": 0.001})
"""


@pytest.mark.process
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
