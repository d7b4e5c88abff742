"""The stage runner (pipeline/stage.py): one-line errors with a non-zero exit, the `dvc repro` that fixes a
missing, unreadable or stale file (the stage dvc.yaml says makes it), Ctrl-C and SIGTERM."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from helpers.digits import REPO
from mnist_vae.errors import FileProblem, UserError
from mnist_vae.pipeline import stage


def run(tmp_path, monkeypatch, capsys, main) -> tuple[int, str]:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "params.yaml").write_text("seed: 0\n")
    (tmp_path / "dvc.yaml").write_text((REPO / "dvc.yaml").read_text())
    with pytest.raises(SystemExit) as exit_:
        stage.run_stage("demo", main)
    return exit_.value.code, capsys.readouterr().err


@pytest.mark.parametrize("exc, says", [
    (FileProblem("models/vae.pt", "missing"), "demo: error: models/vae.pt is missing; run `dvc repro train` to make it"),
    (FileProblem("models/sampler.pt", "stale", "models/sampler.pt was fitted to another checkpoint"),
     "demo: error: models/sampler.pt was fitted to another checkpoint; rerun `dvc repro sampler`"),
    (FileProblem("reports/figures/samples.png", "unreadable", "reports/figures/samples.png is corrupt"),
     "demo: error: reports/figures/samples.png is corrupt; rerun `dvc repro -f render`"),
    (FileProblem("elsewhere/x.npz", "missing"), "demo: error: elsewhere/x.npz is missing"),  # no stage makes it
    (UserError("train.lr is too large"), "demo: error: train.lr is too large"),
])
def test_an_error_is_one_line_with_the_command_that_fixes_its_file(tmp_path, monkeypatch, capsys, exc, says):
    def main(params):
        raise exc

    code, err = run(tmp_path, monkeypatch, capsys, main)
    assert code == 2 and err == says + "\n"


def test_ctrl_c_ends_the_stage_with_130_and_one_line(tmp_path, monkeypatch, capsys):
    def main(params):
        raise KeyboardInterrupt

    assert run(tmp_path, monkeypatch, capsys, main) == (130, "demo: interrupted; no output was written\n")


def test_sigterm_is_taken_as_ctrl_c(tmp_path, monkeypatch, capsys):
    def main(params):
        signal.raise_signal(signal.SIGTERM)

    previous = signal.getsignal(signal.SIGTERM)
    try:
        assert run(tmp_path, monkeypatch, capsys, main)[0] == 130
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_the_producer_of_a_file_or_a_file_in_a_folder_output(tmp_path):
    pipeline = REPO / "dvc.yaml"
    assert stage.producer(Path("models/vae.pt"), pipeline) == "train"
    assert stage.producer(Path("./metrics/headline.json"), pipeline) == "headline"  # a metrics output
    assert stage.producer(Path("reports/figures/samples.png"), pipeline) == "render"  # inside a folder output
    assert stage.producer(Path("models/vae.ptx"), pipeline) is None
    assert stage.producer(Path("x"), tmp_path / "no-dvc.yaml") is None


@pytest.mark.process
def test_a_stage_script_stops_on_bad_params_and_writes_nothing(tmp_path):
    (tmp_path / "params.yaml").write_text("model:\n  lattent_dim: 3\n")
    env = dict(os.environ, KERAS_HOME=str(tmp_path / "keras-home"), PYTHONDONTWRITEBYTECODE="1")
    proc = subprocess.run([sys.executable, str(REPO / "stages" / "download.py")], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "model.lattent_dim" in lines[0] and "model.latent_dim" in lines[0]
    assert proc.stdout == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]
