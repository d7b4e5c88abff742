"""A search worker: asks the study for trials and runs each as a DVC experiment, stopping the hopeless ones
when a pruner says so; and the stopping of an experiment that runs."""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Optional

from mnist_vae.errors import UserError
from mnist_vae.ops.search.spec import Spec, lookup, with_overrides
from mnist_vae.params import SearchRange, validate
from mnist_vae.pipeline import progress
from mnist_vae.pipeline.tracking import SEARCH_ENV, search_run

LOGS = "search-logs"  # per trial: the `dvc exp run` output, and with a pruner its progress (gitignored)
FINISHED = ("COMPLETE", "PRUNED")  # the trial states that count towards search.n_trials
PROGRESS_POLL = 1.0  # seconds between looks at a running trial's progress (with a pruner)


class TrialFailed(Exception):
    """This trial cannot give a result (refused params, a failed experiment); the worker goes on."""


def suggest(trial, space: dict) -> dict[str, Any]:
    out = {}
    for key, values in space.items():
        if not isinstance(values, SearchRange):
            out[key] = trial.suggest_categorical(key, list(values))
        elif values.is_int:
            out[key] = trial.suggest_int(key, values.low, values.high, step=values.step or 1, log=values.log)
        else:
            out[key] = trial.suggest_float(key, values.low, values.high, step=values.step, log=values.log)
    return out


def set_param(key: str, value) -> str:
    """One `-S` override: Hydra's grammar (++ adds a key params.yaml lacks, or sets it)."""
    if isinstance(value, bool) or value is None:
        text = {True: "true", False: "false", None: "null"}[value]
    elif isinstance(value, (int, float)):
        text = repr(value)
    else:
        text = "'" + str(value).replace("\\", "\\\\").replace("'", "\\'") + "'"
    return f"++{key}={text}"


def git_commit(root: Path) -> str:
    proc = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True)
    return proc.stdout.strip() or "unknown"


class Worker:
    """One worker in one clone: runs the study's trials until it holds n_trials finished ones."""

    def __init__(self, root: Path, spec: Spec, study, threads: int, poll: float, say: Callable[[str], None]):
        self.root, self.spec, self.study, self.threads, self.poll, self.say = root, spec, study, threads, poll, say
        self.bin = Path(sys.executable).parent
        self.name = f"{socket.gethostname()}:{os.getpid()}"
        self.commit = git_commit(root)

    def counts(self) -> dict[str, int]:
        from optuna.trial import TrialState

        trials = self.study.get_trials(deepcopy=False)
        return {state.name: sum(t.state == state for t in trials) for state in TrialState}

    def run(self) -> int:
        """Trials until the study is done; the number this worker completed."""
        import optuna

        n = self.spec.search.n_trials
        done_here = 0
        while True:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                optuna.storages.fail_stale_trials(self.study)  # a dead worker's trial: FAIL, and queued again
            counts = self.counts()
            finished = self.finished(counts)
            if finished >= n:
                which = (f"{n} finished trials ({counts['COMPLETE']} COMPLETE, {counts['PRUNED']} PRUNED)"
                         if counts["PRUNED"] else f"{n} COMPLETE trials")
                self.say(f"study '{self.study.study_name}' has its {which}; this worker ran {done_here}")
                return done_here
            if counts["FAIL"] >= n:
                raise UserError(f"{counts['FAIL']} trials of study '{self.study.study_name}' failed (as many as "
                                "search.n_trials); see `mnist-vae search status` and search-logs/")
            if finished + counts["RUNNING"] >= n:  # the running ones may finish it: wait, then look again
                time.sleep(self.poll)
                continue
            before = self.finished()
            try:
                self.study.optimize(self.objective, n_trials=1, catch=(TrialFailed,), gc_after_trial=False)
            except UnboundLocalError as exc:  # Optuna 5.0's _run_trial when telling the result fails: the cause
                if exc.__context__ is None:
                    raise
                raise exc.__context__ from None
            done_here += self.finished() > before

    def finished(self, counts: dict[str, int] | None = None) -> int:
        """Trials that count towards n_trials (COMPLETE or PRUNED), in `counts` or in the study now."""
        counts = counts or self.counts()
        return sum(counts[state] for state in FINISHED)

    def objective(self, trial):
        s = self.spec.search
        overrides = suggest(trial, s.space)
        exp = f"{s.study}-{trial.number}"
        for key, value in (("worker", self.name), ("git_commit", self.commit), ("dvc_experiment", exp)):
            trial.set_user_attr(key, value)
        self.stand_down_if_done(trial)
        try:
            params = validate(with_overrides(self.spec.base, overrides), f"trial {trial.number}")
        except UserError as exc:
            self.fail(trial, str(exc))
        self.say(f"trial {trial.number}: {' '.join(f'{k}={v}' for k, v in overrides.items())} -> "
                 f"dvc exp run --temp --name {exp}")
        try:
            self.experiment(trial, exp, overrides, params.train.epochs)
            values = [self.objective_value(exp, name) for name in self.spec.names]
        except TrialFailed as exc:
            self.fail(trial, str(exc))
        except KeyboardInterrupt:  # the trial ends FAIL (Optuna), saying why; the worker stops
            trial.set_user_attr("fail_reason", "its worker was interrupted (Ctrl-C or SIGTERM)")
            raise
        run_id = search_run(s.study, trial.number)  # the run track tagged with this trial, if it made one
        if run_id:
            trial.set_user_attr("mlflow_run_id", run_id)
        self.say(f"trial {trial.number}: COMPLETE " + ", ".join(f"{n} = {v:.6g}" for n, v in zip(self.spec.names, values))
                 + (f" (MLflow run {run_id})" if run_id else ""))
        return values

    def stand_down_if_done(self, trial) -> None:
        """Two workers may start the study's last trial at the same moment: the later number stands down."""
        from optuna.trial import TrialState

        states = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING)
        ahead = [t for t in self.study.get_trials(deepcopy=False, states=states)
                 if t.state != TrialState.RUNNING or t.number < trial.number]
        if len(ahead) >= self.spec.search.n_trials:
            self.fail(trial, f"not run: {len(ahead)} trials were already finished or running")

    def fail(self, trial, reason: str):
        trial.set_user_attr("fail_reason", reason)
        self.say(f"trial {trial.number}: FAIL {reason}")
        raise TrialFailed(reason)

    def experiment(self, trial, exp: str, overrides: dict[str, Any], epochs: int) -> None:
        """`dvc exp run --temp` of the trial, its output in search-logs/<exp>.log. With a pruner, each epoch's
        test -ELBO is reported as the train stage records it (pipeline/progress.py), and a trial the pruner
        stops raises TrialPruned."""
        import optuna

        log, watched = self.root / LOGS / f"{exp}.log", self.root / LOGS / f"{exp}.progress.jsonl"
        log.parent.mkdir(exist_ok=True)
        cmd = self.command(exp, overrides)
        with open(log, "w") as out:
            out.write("$ " + " ".join(cmd) + "\n")
            out.flush()
            proc = subprocess.Popen(cmd, cwd=self.root, env=self.environment(trial.number, watched), stdout=out,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            try:
                code, pruned_at = self.watch(proc, trial, watched, epochs)
            except BaseException:  # Ctrl-C or SIGTERM: the experiment stops too (its stages end cleanly)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=5)  # a Ctrl-C in the terminal reached the stage too: let it end alone
                interrupt_experiment(proc)  # (SIGTERM to the worker reached only the worker)
                raise
        if pruned_at is not None and code != 0:  # (one that finished first anyway is a result like any other)
            trial.set_user_attr("pruned_at_epoch", pruned_at[0])
            self.say(f"trial {trial.number}: PRUNED after epoch {pruned_at[0]} of {epochs} "
                     f"(test -ELBO {pruned_at[1]:.2f})")
            raise optuna.TrialPruned(f"pruned after epoch {pruned_at[0]}")
        if code != 0:
            errors = [line for line in log.read_text(errors="replace").splitlines() if "error:" in line.lower()]
            last = (errors or [f"dvc exp run exited {code}"])[-1].strip()
            raise TrialFailed(f"{last} (log: {log.relative_to(self.root)})")

    def command(self, exp: str, overrides: dict[str, Any]) -> list[str]:
        dvc = str(self.bin / "dvc") if (self.bin / "dvc").exists() else "dvc"
        return [dvc, "exp", "run", "--temp", "--name", exp, *(a for k, v in overrides.items() for a in ("-S", set_param(k, v)))]

    def environment(self, number: int, watched: Path) -> dict[str, str]:
        """The experiment's: this worker's threads, the trial's tags for track, the progress file for the pruner."""
        env = {**os.environ, "PATH": f"{self.bin}{os.pathsep}{os.environ.get('PATH', '')}",
               "OMP_NUM_THREADS": str(self.threads), "MKL_NUM_THREADS": str(self.threads), "PYTHONUNBUFFERED": "1"}
        env.update(dict(zip(SEARCH_ENV, (self.spec.search.study, str(number)))))
        if self.spec.search.pruner != "none":
            env[progress.ENV] = str(watched)
        return env

    def watch(self, proc: subprocess.Popen, trial, watched: Path, epochs: int) -> tuple[int, Optional[tuple[int, float]]]:
        """Wait for the experiment, reporting each epoch's test -ELBO to the pruner (with one) and stopping the
        experiment when it says so: (exit code, (epoch, value) it was pruned at or None)."""
        pruned_at, reported = None, 0
        while True:
            try:
                return proc.wait(timeout=PROGRESS_POLL if self.spec.search.pruner != "none" else None), pruned_at
            except subprocess.TimeoutExpired:
                pass
            for epoch, value in progress.epoch_losses(watched)[reported:]:
                if pruned_at is not None:
                    break
                reported += 1
                trial.report(value, epoch)
                if epoch < epochs and trial.should_prune():
                    pruned_at = (epoch, value)
                    interrupt_experiment(proc)  # the loop then reads its exit code

    def objective_value(self, exp: str, name: str) -> float:
        import dvc.api

        stem, _, key = name.partition(".")
        path = self.spec.metrics[stem]
        try:
            value = lookup(json.loads(dvc.api.read(str(path), repo=str(self.root), rev=exp)), key)
        except Exception as exc:  # noqa: BLE001 (DVC raises many kinds; the trial fails with its message)
            raise TrialFailed(f"{path} of experiment {exp} is unreadable: {exc}") from None
        if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
            raise TrialFailed(f"{path} of experiment {exp} has no finite number at '{key}' (got {value!r})")
        return float(value)


def interrupt_experiment(proc: subprocess.Popen, timeout: float = 120) -> None:
    """Stop a running `dvc exp run`: SIGTERM to its stage (and any process between), which ends as on
    Ctrl-C and writes nothing; DVC then fails the experiment and removes its temporary copy. Not SIGINT:
    DVC ignores it while a stage runs, and so does a stage started in the background by a script (`nohup
    make search &`), which inherits SIGINT ignored."""
    import psutil

    if proc.poll() is not None:
        return
    try:
        family = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        family = []
    for p in family:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        for p in [*family, psutil.Process(proc.pid)]:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.kill()
        proc.wait()


