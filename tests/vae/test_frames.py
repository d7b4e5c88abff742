"""vae/frames.py and the training's frames: taking them changes no number of the training, each shows the same
draws decoded by the model of its moment, and a resumed training's frames are an uninterrupted one's."""

import copy

import torch

from mnist_vae.params import ModelParams, TrainParams
from mnist_vae.vae import training
from mnist_vae.vae.frames import RECONSTRUCTIONS, SAMPLES, Frames, stack, to_uint8
from mnist_vae.vae.model import VAE

SEEDS = training.Seeds.from_seed(0)


def trained(data, p, frames=None, state=None, save_state=lambda s: None):
    torch.manual_seed(SEEDS.init)
    model = VAE(ModelParams(hidden_dims=[16], latent_dim=2))
    training.train(model, data, p, SEEDS, torch.device("cpu"), state=state, save_state=save_state, frames=frames)
    return model


def test_frames_change_no_number_of_the_training_and_show_the_model_of_their_moment(digits):
    data = training.Data(digits.x_train[:256], digits.x_test[:50])
    p = TrainParams(epochs=3, batch_size=64)
    frames = Frames(SEEDS.frames, data.x_test[:RECONSTRUCTIONS])
    with_frames, without = trained(data, p, frames), trained(data, p)
    assert all(torch.equal(a, b) for a, b in zip(with_frames.state_dict().values(), without.state_dict().values()))
    assert len(frames.taken) == 4  # before the first epoch, then after each
    last = frames.taken[-1]
    z = with_frames.sample_prior(SAMPLES, torch.Generator().manual_seed(SEEDS.frames))
    with torch.no_grad():
        assert torch.equal(last["samples"], to_uint8(with_frames.mean(with_frames.decode(z))))
    assert not torch.equal(frames.taken[0]["samples"], last["samples"])  # the digits formed
    out = stack(frames.taken, frames.x)
    assert out["samples"].shape == (4, SAMPLES, 784) and out["epochs"].tolist() == [0, 1, 2, 3]


def test_a_resumed_training_takes_the_frames_of_an_uninterrupted_one(digits):
    data = training.Data(digits.x_train[:256], digits.x_test[:50])
    p = TrainParams(epochs=4, batch_size=64)
    whole = Frames(SEEDS.frames, data.x_test[:RECONSTRUCTIONS])
    states = []
    trained(data, p, whole, save_state=lambda s: states.append(copy.deepcopy(s)))
    resumed = Frames(SEEDS.frames, data.x_test[:RECONSTRUCTIONS])
    trained(data, p, resumed, state=states[1])  # the state after epoch 2
    assert len(resumed.taken) == len(whole.taken) == 5
    for a, b in zip(resumed.taken, whole.taken):
        assert torch.equal(a["samples"], b["samples"]) and torch.equal(a["reconstructions"], b["reconstructions"])
