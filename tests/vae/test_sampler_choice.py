"""The best sampler (vae/samplers/choice.py): the lowest FID wins, the choice names the files it was made for and
is refused beside others, or when unreadable, in one line."""

import json

import pytest

from mnist_vae.errors import FileProblem
from mnist_vae.vae.samplers import choice


def test_the_best_is_the_lowest_fid_and_the_prior_wins_a_tie():
    assert choice.best({"prior": 290.0, "gmm": 85.7}) == "gmm"
    assert choice.best({"prior": 75.3, "gmm": 80.0}) == "prior"
    assert choice.best({"prior": 50.0, "gmm": 50.0}) == "prior"


@pytest.fixture
def files(tmp_path):
    (tmp_path / "vae.pt").write_bytes(b"a checkpoint")
    (tmp_path / "sampler.pt").write_bytes(b"its samplers")
    return tmp_path / "vae.pt", tmp_path / "sampler.pt", tmp_path / choice.FILE_NAME


def test_a_recorded_choice_reads_back_with_each_samplers_temperature(files):
    checkpoint, fitted, path = files
    made = choice.record(path, {"prior": 290.0, "gmm": 85.7}, {"prior": 1.0, "gmm": 0.95}, checkpoint, fitted)
    assert made == choice.load(path, checkpoint, fitted, ["prior", "gmm"])
    assert (made.sampler, made.temperature, made.temperature_of("prior"), made.temperature_of("flow")) == ("gmm", 0.95, 1.0, 1.0)
    assert made.reason() == "the lowest sample FID evaluate recorded, 85.7; prior 290.0"
    tree = json.loads(path.read_text())
    assert tree["sampler"] == "gmm" and tree["temperature"] == 0.95 and tree["format"] == choice.FORMAT
    assert choice.beside(checkpoint) == path


@pytest.mark.parametrize("change, match, problem", [
    (lambda c, f, p: c.write_bytes(b"another checkpoint"), "was chosen for another checkpoint or samplers file", "stale"),
    (lambda c, f, p: f.write_bytes(b"other samplers"), "was chosen for another checkpoint or samplers file", "stale"),
    (lambda c, f, p: p.write_text("{"), "is unreadable", "unreadable"),
    (lambda c, f, p: p.write_text(json.dumps({"format": 9})), r"is not a readable sampler choice \(format 9, expected 1\)", "unreadable"),
    (lambda c, f, p: p.write_text(p.read_text().replace('"sampler": "gmm"', '"sampler": "flow"')),
     "is not a readable sampler choice", "unreadable"),
    (lambda c, f, p: p.unlink(), "is missing", "missing"),
])
def test_a_stale_or_unreadable_choice_is_one_line(files, change, match, problem):
    checkpoint, fitted, path = files
    choice.record(path, {"prior": 290.0, "gmm": 85.7}, {"prior": 1.0, "gmm": 1.0}, checkpoint, fitted)
    change(checkpoint, fitted, path)
    with pytest.raises(FileProblem, match=match) as info:
        choice.load(path, checkpoint, fitted, ["prior", "gmm"])
    assert info.value.problem == problem and info.value.path == path and "\n" not in str(info.value)


def test_a_choice_of_a_sampler_the_model_lacks_is_stale(files):
    checkpoint, fitted, path = files
    choice.record(path, {"prior": 290.0, "gmm": 85.7}, {"prior": 1.0, "gmm": 1.0}, checkpoint, fitted)
    with pytest.raises(FileProblem, match=r"names the sampler 'gmm', which this model does not have \(prior\)"):
        choice.load(path, checkpoint, fitted, ["prior"])
