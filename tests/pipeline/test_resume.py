"""Resuming an interrupted training, end to end: the real `dvc repro` on the fixture digits, killed with
SIGKILL, SIGINT or SIGTERM at a random epoch or in the middle of writing the state, then resumed; the
outputs compared byte for byte with an uninterrupted training's. Extending train.epochs, changed params
and data, a damaged state, and the MLflow runs of resumed results.

The stage is stopped at a known point without sleeps or timing: a sitecustomize module (put on the
stage's PYTHONPATH by the test only) wraps os.replace, and at the k-th rename of the training state
either pauses the process after the rename (the test then signals the whole process group) or cuts the
temporary file in half and SIGKILLs the process before the rename."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from helpers.pipeline import (
    client,
    env,
    history_numbers,
    ran_stages,
    runs,
    set_params,
    sh,
    statuses,
    wait_for,
)

pytestmark = pytest.mark.slow

STATE = Path("models/train_state.pt")
EPOCHS = 5  # the pipeline fixture trains 3; these tests train 5
RESUMED = "train: resuming from epoch {} of {} (models/train_state.pt)"

STOP_HOOK = '''
import os, signal, time

_mode = os.environ.get("MNIST_VAE_TEST_STOP")
if _mode:
    _what, _at = _mode.split(":")
    _real_replace, _renames = os.replace, []

    def _replace(src, dst, *args, **kwargs):
        if str(dst).endswith("train_state.pt"):
            _renames.append(dst)
            if len(_renames) == int(_at):
                if _what == "kill-in-write":  # half a file, then dead before the rename
                    with open(src, "r+b") as f:
                        f.truncate(os.path.getsize(src) // 2)
                    os.kill(os.getpid(), signal.SIGKILL)
                _real_replace(src, dst, *args, **kwargs)
                open(os.environ["MNIST_VAE_TEST_MARK"], "w").close()
                while True:  # paused after the k-th state: the test signals the process group now
                    time.sleep(0.5)
        return _real_replace(src, dst, *args, **kwargs)

    os.replace = _replace
'''


@pytest.fixture(scope="module")
def hook(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("stop-hook")
    (folder / "sitecustomize.py").write_text(STOP_HOOK)
    return folder


@pytest.fixture(scope="module")
def reference(repo, tmp_path_factory) -> dict:
    """The outputs of an uninterrupted training of EPOCHS epochs from scratch (no state to start from)."""
    root = tmp_path_factory.mktemp("reference") / "repo"
    shutil.copytree(repo, root, symlinks=True)
    set_params(root, train={"epochs": EPOCHS})
    (root / STATE).unlink()
    out = sh("dvc", "repro", "train", cwd=root)
    assert "resuming" not in out.stdout + out.stderr
    return outputs(root)


def outputs(root: Path) -> dict:
    """What a training leaves: the model's bytes, the history's numbers and the frames' bytes."""
    return {"vae": (root / "models/vae.pt").read_bytes(), "history": history_numbers(root),
            "frames": (root / "reports/frames.npz").read_bytes()}


def stopped_training(root: Path, hook: Path, mode: str, sig=None, cmd=("dvc", "repro", "-s", "-f", "train")):
    """Run cmd with the stop hook in `mode` ('pause:k' or 'kill-in-write:k'); when paused, send `sig` to
    its process group. Returns the exit code and the output."""
    mark = root / "paused"
    log = open(root / "stopped.log", "w+")
    path = os.pathsep.join(filter(None, [str(hook), os.environ.get("PYTHONPATH")]))
    proc = subprocess.Popen(list(cmd), cwd=root, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                            env=env(PYTHONPATH=path, MNIST_VAE_TEST_STOP=mode, MNIST_VAE_TEST_MARK=str(mark)))
    try:
        if sig is not None:
            wait_for(lambda: mark.exists() or proc.poll() is not None, f"the stage to pause ({mode})", timeout=300)
            assert proc.poll() is None, (root / "stopped.log").read_text()
            os.killpg(proc.pid, sig)  # as Ctrl-C in a terminal, a queue worker's kill, or the OOM killer
        proc.wait(timeout=300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    return proc.returncode, (root / "stopped.log").read_text()


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT, signal.SIGTERM], ids=["sigkill", "ctrl-c", "sigterm"])
def test_a_training_stopped_at_a_random_epoch_resumes_to_the_bytes_of_an_uninterrupted_one(fork, hook, reference, sig):
    k = random.randint(1, EPOCHS - 1)  # the state after epoch k is the last one written
    set_params(fork, train={"epochs": EPOCHS})
    (fork / STATE).unlink()
    code, output = stopped_training(fork, hook, f"pause:{k}", sig)
    assert code != 0 and f"epoch {k + 1:3d}" not in output, (k, output)
    if sig != signal.SIGKILL:
        assert "train: interrupted" in output and "Traceback" not in output, output
    assert not (fork / "models/vae.pt").exists()  # no result, only the state
    assert "train:" in sh("dvc", "status", cwd=fork).stdout
    out = sh("dvc", "repro", "train", cwd=fork)
    assert ran_stages(out.stdout) == ["train"]
    assert RESUMED.format(k + 1, EPOCHS) in out.stdout + out.stderr, (k, out.stdout, out.stderr)
    assert f"epoch {k:3d}" not in out.stdout and f"epoch {k + 1:3d}" in out.stdout  # epochs 1..k were not redone
    assert outputs(fork) == reference, k


def test_a_training_killed_while_writing_the_state_resumes_from_the_previous_one(fork, hook, reference):
    k = random.randint(2, EPOCHS - 1)  # killed in the middle of writing the state of epoch k
    set_params(fork, train={"epochs": EPOCHS})
    (fork / STATE).unlink()
    code, output = stopped_training(fork, hook, f"kill-in-write:{k}")
    assert code != 0, output
    assert list((fork / "models").glob(".train_state.pt.*.tmp")), "the killed writer's half file"
    out = sh("dvc", "repro", "train", cwd=fork)
    assert RESUMED.format(k, EPOCHS) in out.stdout + out.stderr, (k, out.stdout, out.stderr)
    assert outputs(fork) == reference, k
    assert not list((fork / "models").glob(".train_state.pt.*.tmp"))


def test_raising_epochs_resumes_and_equals_a_training_from_scratch_with_the_higher_count(fork, reference):
    set_params(fork, train={"epochs": EPOCHS - 2})  # the fixture's state: 3 epochs
    assert ran_stages(sh("dvc", "repro", "train", cwd=fork).stdout) == []  # nothing changed yet
    set_params(fork, train={"epochs": EPOCHS})
    out = sh("dvc", "repro", "train", cwd=fork)
    assert RESUMED.format(EPOCHS - 1, EPOCHS) in out.stdout + out.stderr, out.stdout + out.stderr
    assert "epoch   1" not in out.stdout
    assert outputs(fork) == reference
    # and lowering it again starts afresh (the state holds more epochs than asked for)
    set_params(fork, train={"epochs": 2})
    out = sh("dvc", "repro", "train", cwd=fork)
    assert "holds 5 epochs, more than train.epochs 2; training from epoch 1" in out.stdout + out.stderr
    assert len(history_numbers(fork)) == 2 and history_numbers(fork) == reference["history"][:2]


@pytest.mark.parametrize("change, named", [
    (dict(train={"lr": 0.002}), "train.lr 0.001 -> 0.002"),
    (dict(seed=1), "seed 0 -> 1"),
    (dict(model={"latent_dim": 3}), "model.latent_dim 20 -> 3"),
    (dict(dequantize={"mode": "none"}), "train data "),
], ids=["lr", "seed", "latent-dim", "data"])
def test_a_changed_trajectory_param_or_data_does_not_resume_and_says_what_changed(fork, change, named):
    set_params(fork, **{**change, "train": {**change.get("train", {}), "epochs": 4}})
    out = sh("dvc", "repro", "train", cwd=fork)
    said = [line for line in (out.stdout + out.stderr).splitlines() if "train_state.pt" in line]
    assert len(said) == 1 and "is from another training (" in said[0] and named in said[0], said
    assert said[0].endswith("; training from epoch 1") and "resuming" not in out.stdout + out.stderr
    assert "epoch   1" in out.stdout and len(history_numbers(fork)) == 4


def test_a_truncated_state_is_one_line_and_a_correct_training_from_epoch_1(fork, reference):
    set_params(fork, train={"epochs": EPOCHS})
    state = fork / STATE
    state.write_bytes(state.read_bytes()[: state.stat().st_size // 3])
    out = sh("dvc", "repro", "train", cwd=fork)
    said = [line for line in (out.stdout + out.stderr).splitlines() if "train_state.pt" in line]
    assert len(said) == 1 and said[0].startswith("train: models/train_state.pt is not a readable training state ("), said
    assert "Traceback" not in out.stderr and "epoch   1" in out.stdout
    assert outputs(fork) == reference


def test_the_state_is_neither_tracked_by_git_nor_cached_nor_pushed_by_dvc(fork):
    assert (fork / STATE).is_file()
    assert sh("git", "check-ignore", str(STATE), cwd=fork).returncode == 0
    assert "train_state" not in sh("git", "status", "--porcelain", "--ignored=no", cwd=fork).stdout
    assert "train_state" not in (fork / "dvc.lock").read_text()  # not an output: never in the cache or a push
    assert sh("dvc", "status", cwd=fork).stdout.strip() == "Data and pipelines are up to date."
    (fork / STATE).unlink()  # a fresh clone has no state: nothing to rerun
    assert ran_stages(sh("dvc", "repro", cwd=fork).stdout) == []


def test_a_resumed_and_an_extended_result_are_each_one_complete_mlflow_run(fork, hook):
    [baseline] = runs(fork)
    set_params(fork, train={"epochs": EPOCHS})
    code, output = stopped_training(fork, hook, "pause:1", signal.SIGKILL, cmd=("dvc", "repro"))  # at epoch 4
    assert code != 0 and len(runs(fork)) == 1, output
    out = sh("dvc", "repro", cwd=fork)
    assert RESUMED.format(EPOCHS, EPOCHS) in out.stdout + out.stderr
    assert ran_stages(out.stdout) == ["train", "sampler", "evaluate", "headline", "render", "track"]
    found = runs(fork)
    assert len(found) == 2 and set(statuses(fork).values()) == {"FINISHED"}
    [new] = [r for r in found if r.info.run_id != baseline.info.run_id]
    rows = history_numbers(fork)
    logged = client(fork).get_metric_history(new.info.run_id, "training/train_total")
    assert [(m.step, m.value) for m in logged] == [(int(r["epoch"]), float(r["train_total"])) for r in rows]
    first_times = [m.timestamp for m in client(fork).get_metric_history(baseline.info.run_id, "training/train_total")]
    assert [m.timestamp for m in logged][:3] == first_times  # epochs 1-3 keep their own timestamps
    assert new.data.params["train.epochs"] == str(EPOCHS)
    assert ran_stages(sh("dvc", "repro", "-s", "-f", "track", cwd=fork).stdout) == ["track"]
    assert len(runs(fork)) == 2  # the same result again: no second run
