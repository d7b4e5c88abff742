"""pipeline/progress.py: the training's progress for a program watching it, as JSON lines the train stage
writes and the search's pruner reads (not the lines printed for a person)."""

import torch

from mnist_vae.params import ModelParams, TrainParams
from mnist_vae.pipeline import progress
from mnist_vae.vae import training
from mnist_vae.vae.model import VAE


def test_the_reporter_writes_each_epoch_and_the_reader_gets_the_rows_back(tmp_path):
    path = tmp_path / "logs" / "trial.progress.jsonl"
    torch.manual_seed(0)
    data = training.Data(x_train=torch.rand(64, 784), x_test=torch.rand(32, 784))
    history = training.train(VAE(ModelParams(hidden_dims=[16], latent_dim=2)), data, TrainParams(epochs=3, batch_size=32),
                             training.Seeds.from_seed(0), torch.device("cpu"),
                             on_epoch=progress.reporter({progress.ENV: str(path)}))
    assert progress.read(path) == history  # every number, as the history has it
    assert progress.epoch_losses(path) == [(row["epoch"], row["test_total"]) for row in history]


def test_a_line_still_being_written_waits_for_the_next_read_and_no_file_means_no_rows(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text('{"epoch": 1, "test_total": 200.5}\n{"epoch": 2, "test_')
    assert progress.epoch_losses(path) == [(1, 200.5)]
    assert progress.read(tmp_path / "none.jsonl") == []


def test_without_the_variable_the_reporter_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    report = progress.reporter({})
    report({"epoch": 1, "test_total": 1.0})
    assert list(tmp_path.iterdir()) == []
