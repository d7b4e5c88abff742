"""A hyperparameter search over the pipeline with Optuna: every trial is one DVC experiment and one MLflow run.

`params.yaml`'s `search` section names the study, its objective(s) (numbers in `metrics/*.json`), the
sampler, the number of trials and the space. A *worker* (`mnist-vae search run`) loads or creates the
study in the storage that ``MNIST_VAE_SEARCH_STORAGE`` names (default: ``sqlite:///<repo>/optuna.db``;
a ``postgresql://`` URL shares one study between any number of workers on any hosts), then repeatedly:
asks the study for a trial, validates its params with the schema, runs it as

    dvc exp run --temp --name <study>-<trial> -S ++key=value ...

(outside the workspace, so several workers share a clone), reads the objective from that experiment's
metrics and tells the study. `track` tags the trial's MLflow run with the study and trial number
(``MNIST_VAE_SEARCH_STUDY`` / ``MNIST_VAE_SEARCH_TRIAL``; not part of the run's fingerprint).

Pruning (`search.pruner: median`): while a trial trains, the worker reads each finished epoch's test
-ELBO from the train stage's output (its `epoch N ... test -ELBO X` line), reports it to the study, and
when Optuna's median pruner says so stops the experiment (SIGTERM to its stage, which ends as on Ctrl-C),
which leaves no outputs, no DVC experiment and no MLflow run; the trial is PRUNED.

Faults: each worker sends Optuna heartbeats while its trial runs; a worker that dies (SIGKILL, a lost
host) stops beating, and the next worker to look marks its trial FAIL and queues its params again
(RetryHeartbeatStaleTrialCallback). Workers stop when the study holds `n_trials` finished trials (COMPLETE
or PRUNED); while the running trials could finish it they wait rather than start more, so the study ends
with exactly that many. Params the schema refuses make that trial FAIL with the schema's line as its `fail_reason`.
"""

from __future__ import annotations

import contextlib
import copy
import difflib
import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import yaml

from mnist_vae.cli import _interrupt as interrupt
from mnist_vae.errors import UserError
from mnist_vae.params import SearchParams, SearchRange, flatten, load_params, validate
from mnist_vae.tracking import RUN_LINE, SEARCH_ENV, error_cause, repo_root, shown_uri

STORAGE_ENV = "MNIST_VAE_SEARCH_STORAGE"
LOGS = "search-logs"  # one log per trial: the `dvc exp run` output (gitignored)
MAX_RETRY = 3  # a dead worker's trial is queued again at most this often
# the line training.train prints after each epoch (its test -ELBO is the pruner's intermediate value)
EPOCH_LINE = re.compile(r"^epoch\s+(\d+)\s.*?\btest -ELBO\s+(\S+)", re.MULTILINE)
FINISHED = ("COMPLETE", "PRUNED")  # the trial states that count towards search.n_trials
PROGRESS_POLL = 1.0  # seconds between looks at a running trial's log (with a pruner)


class TrialFailed(Exception):
    """This trial cannot give a result (refused params, a failed experiment); the worker goes on."""


# --------------------------------------------------------------------------- the spec


@dataclass
class Spec:
    """params.yaml's `search` section, checked against the rest of the schema, and the raw base params."""

    search: SearchParams
    base: dict                       # params.yaml as written (the trials' starting point)
    metrics: dict[str, Path]         # metric file stem -> metrics/<stem>.json, for the objectives

    @property
    def names(self) -> list[str]:
        return [o.metric for o in self.search.objectives]

    @property
    def directions(self) -> list[str]:
        return [o.direction for o in self.search.objectives]


def pipeline_metrics(root: Path) -> dict[str, Path]:
    """The JSON files the pipeline writes under metrics/ (dvc.yaml's `metrics:` and `outs:`), by stem."""
    try:
        stages = yaml.safe_load((root / "dvc.yaml").read_text())["stages"]
    except (OSError, yaml.YAMLError, KeyError, TypeError):
        raise UserError(f"{root / 'dvc.yaml'} is missing or unreadable; run the search in a clone of the project") from None
    paths = [Path(next(iter(m)) if isinstance(m, dict) else m)
             for s in stages.values() for kind in ("metrics", "outs") for m in s.get(kind, [])]
    return {p.stem: p for p in paths if p.suffix == ".json" and p.parent == Path("metrics")}


def load_spec(root: Path) -> Spec:
    """The search spec, with every space key and value checked by the schema before any trial runs."""
    path = root / "params.yaml"
    params = load_params(path)
    base = yaml.safe_load(path.read_text()) or {}
    search = params.search
    known = set(flatten(params))
    for key, values in search.space.items():
        where = f"{path}: search.space '{key}'"
        if key not in known:
            near = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.6)
            raise UserError(f"{where} is not a param" + (f"; did you mean '{near[0]}'?" if near else ""))
        for value in candidates(values):
            validate(with_overrides(base, {key: value}), f"{where} value {value!r}")
    metrics = pipeline_metrics(root)
    for name in (o.metric for o in search.objectives):
        stem, _, key = name.partition(".")
        if stem not in metrics:
            raise UserError(f"{path}: search.objectives '{name}' names metrics/{stem}.json, which no stage writes "
                            f"(the pipeline's: {', '.join(str(p) for p in metrics.values())})")
        current = root / metrics[stem]  # the workspace's result, if any, shows a misspelt key at once
        if current.is_file() and not isinstance(lookup(json.loads(current.read_text()), key), (int, float)):
            raise UserError(f"{path}: search.objectives '{name}': {metrics[stem]} has no number at '{key}'")
    if search.sampler == "grid":
        size = math.prod(len(grid_values(k, v)) for k, v in search.space.items())
        if search.n_trials > size:
            raise UserError(f"{path}: search.n_trials {search.n_trials} is more than the grid's {size} points")
    return Spec(search, base, metrics)


def candidates(values) -> list:
    """The values of a space entry the schema must accept: every choice, or a range's ends."""
    if isinstance(values, SearchRange):
        return [values.low, values.high]
    return list(values)


def grid_values(key: str, values) -> list:
    if not isinstance(values, SearchRange):
        return list(values)
    if not values.is_int or values.log:
        raise UserError(f"search.sampler grid needs choices or whole-number ranges without log; '{key}' is neither")
    return list(range(values.low, values.high + 1, values.step or 1))


def with_overrides(base: dict, overrides: dict[str, Any]) -> dict:
    """params.yaml's mapping with dotted keys set (as `dvc exp run -S` sets them)."""
    raw = copy.deepcopy(base)
    for key, value in overrides.items():
        *parents, leaf = key.split(".")
        node = raw
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return raw


def lookup(tree, dotted: str):
    for part in dotted.split("."):
        if not isinstance(tree, dict) or part not in tree:
            return None
        tree = tree[part]
    return tree


# --------------------------------------------------------------------------- storage and study


def storage_url(root: Path) -> str:
    return os.environ.get(STORAGE_ENV) or f"sqlite:///{root / 'optuna.db'}"


@contextlib.contextmanager
def storage_errors(url: str) -> Iterator[None]:
    """What an unreachable or unusable storage raises -> one line naming it (password masked)."""
    from optuna.exceptions import StorageInternalError
    from sqlalchemy.exc import SQLAlchemyError

    try:
        yield
    except (SQLAlchemyError, StorageInternalError, OSError) as exc:
        exc = exc.__cause__ if isinstance(exc, StorageInternalError) and exc.__cause__ else exc
        raise UserError(f"search storage {shown_uri(url)} failed: {error_cause(exc, url)}. Check {STORAGE_ENV} "
                        "(and that the database server is up and reachable)") from None


def open_storage(url: str, heartbeat: int = 10):
    """Optuna's RDB storage with heartbeats: a trial silent for 3 heartbeats is FAIL and queued again."""
    import optuna
    from sqlalchemy.exc import IntegrityError, ProgrammingError

    if not url.startswith(("sqlite:", "postgresql:", "postgresql+", "mysql")):
        raise UserError(f"{STORAGE_ENV}={shown_uri(url)} is not a database URL; use postgresql://user@host:port/db "
                        "(or unset it for the embedded sqlite:///optuna.db)")
    engine = {"connect_args": {"connect_timeout": 10}} if url.startswith("postgresql") else {}
    # SQLAlchemy 2.1 reads a plain postgresql:// as psycopg 3; the project ships psycopg2
    driver_url = "postgresql+psycopg2://" + url.removeprefix("postgresql://") if url.startswith("postgresql://") else url
    with warnings.catch_warnings(), storage_errors(url):
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        for attempt in range(3):
            try:
                return optuna.storages.RDBStorage(
                    driver_url, engine_kwargs=engine, heartbeat_interval=heartbeat, grace_period=3 * heartbeat,
                    heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(MAX_RETRY))
            except (IntegrityError, ProgrammingError):  # another worker is creating the tables right now
                if attempt == 2:
                    raise
                time.sleep(1 + attempt)


def make_pruner(spec: Spec):
    import optuna

    s = spec.search
    if s.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=s.prune_startup_trials, n_warmup_steps=s.prune_warmup_epochs)
    return optuna.pruners.NopPruner()


def make_sampler(spec: Spec):
    import optuna

    s = spec.search
    if s.sampler == "grid":
        return optuna.samplers.GridSampler({k: grid_values(k, v) for k, v in s.space.items()})
    return optuna.samplers.RandomSampler() if s.sampler == "random" else optuna.samplers.TPESampler()


def open_study(spec: Spec, storage, url: str):
    """Load the study, or create it; a study of that name with other objectives or another space is refused."""
    import optuna

    s = spec.search
    described = {"objectives": [o.model_dump() for o in s.objectives], "sampler": s.sampler, "n_trials": s.n_trials,
                 "space": {k: (v.model_dump() if isinstance(v, SearchRange) else v) for k, v in s.space.items()}}
    if s.pruner != "none":  # (a study from before pruning existed records no pruner)
        described["pruner"] = {"name": s.pruner, "startup_trials": s.prune_startup_trials,
                               "warmup_epochs": s.prune_warmup_epochs}
    with warnings.catch_warnings(), storage_errors(url):
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # set_metric_names
        study = optuna.create_study(storage=storage, study_name=s.study, sampler=make_sampler(spec),
                                    pruner=make_pruner(spec), directions=spec.directions, load_if_exists=True)
        recorded = study.user_attrs.get("spec")
        if recorded is None:
            study.set_user_attr("spec", described)
            study.set_metric_names(spec.names)
        elif recorded != described:
            raise UserError(f"study '{s.study}' in {shown_uri(url)} was started with another search spec "
                            f"({json.dumps(recorded, sort_keys=True)}); name a new search.study for this one")
    return study


def load_existing(name: str, url: str):
    import optuna

    storage = open_storage(url)
    with storage_errors(url):
        try:
            return optuna.load_study(study_name=name, storage=storage)
        except KeyError:
            raise UserError(f"no study '{name}' in {shown_uri(url)}; start it with `mnist-vae search run`") from None


# --------------------------------------------------------------------------- one trial


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
        from optuna.trial import TrialState

        s = self.spec.search
        overrides = suggest(trial, s.space)
        exp = f"{s.study}-{trial.number}"
        for key, value in (("worker", self.name), ("git_commit", self.commit), ("dvc_experiment", exp)):
            trial.set_user_attr(key, value)
        shown = " ".join(f"{k}={v}" for k, v in overrides.items())
        # two workers may start the study's last trial at the same moment: the later number stands down
        ahead = [t for t in self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED,
                                                                          TrialState.RUNNING))
                 if t.state != TrialState.RUNNING or t.number < trial.number]
        if len(ahead) >= s.n_trials:
            self.fail(trial, f"not run: {len(ahead)} trials were already finished or running")
        try:
            params = validate(with_overrides(self.spec.base, overrides), f"trial {trial.number}")
        except UserError as exc:
            self.fail(trial, str(exc))
        self.say(f"trial {trial.number}: {shown} -> dvc exp run --temp --name {exp}")
        try:
            output = self.experiment(trial, exp, overrides, params.train.epochs)
            found = RUN_LINE.findall(output)
            if found:
                trial.set_user_attr("mlflow_run_id", found[-1])
            values = [self.objective_value(exp, name) for name in self.spec.names]
        except TrialFailed as exc:
            self.fail(trial, str(exc))
        except KeyboardInterrupt:  # the trial ends FAIL (Optuna), saying why; the worker stops
            trial.set_user_attr("fail_reason", "its worker was interrupted (Ctrl-C or SIGTERM)")
            raise
        self.say(f"trial {trial.number}: COMPLETE " + ", ".join(f"{n} = {v:.6g}" for n, v in zip(self.spec.names, values))
                 + (f" (MLflow run {found[-1]})" if found else ""))
        return values

    def fail(self, trial, reason: str):
        trial.set_user_attr("fail_reason", reason)
        self.say(f"trial {trial.number}: FAIL {reason}")
        raise TrialFailed(reason)

    def experiment(self, trial, exp: str, overrides: dict[str, Any], epochs: int) -> str:
        """`dvc exp run --temp` of the trial; its output (also in search-logs/<exp>.log). With a pruner, each
        epoch's test -ELBO is reported as it is printed, and a trial the pruner stops raises TrialPruned."""
        import optuna

        number = trial.number
        cmd = [str(self.bin / "dvc") if (self.bin / "dvc").exists() else "dvc", "exp", "run", "--temp",
               "--name", exp]
        for key, value in overrides.items():
            cmd += ["-S", set_param(key, value)]
        env = {**os.environ, "PATH": f"{self.bin}{os.pathsep}{os.environ.get('PATH', '')}",
               "OMP_NUM_THREADS": str(self.threads), "MKL_NUM_THREADS": str(self.threads),
               "PYTHONUNBUFFERED": "1"}  # each epoch's line reaches the log (and the pruner) as it is printed
        env.update(dict(zip(SEARCH_ENV, (self.spec.search.study, str(number)))))
        log = self.root / LOGS / f"{exp}.log"
        log.parent.mkdir(exist_ok=True)
        with open(log, "w") as out:
            out.write("$ " + " ".join(cmd) + "\n")
            out.flush()
            proc = subprocess.Popen(cmd, cwd=self.root, env=env, stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL)
            pruned_at, reported = None, 0
            try:
                while True:
                    try:
                        code = proc.wait(timeout=PROGRESS_POLL if self.spec.search.pruner != "none" else None)
                        break
                    except subprocess.TimeoutExpired:
                        pass
                    for epoch, value in epoch_losses(log.read_text(errors="replace"))[reported:]:
                        if pruned_at is not None:
                            break
                        reported += 1
                        trial.report(value, epoch)
                        if epoch < epochs and trial.should_prune():
                            pruned_at = (epoch, value)
                            interrupt_experiment(proc)  # the loop then reads its exit code
            except BaseException:  # Ctrl-C or SIGTERM: the experiment stops too (its stages end cleanly)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=5)  # a Ctrl-C in the terminal reached the stage too: let it end alone
                interrupt_experiment(proc)  # (SIGTERM to the worker reached only the worker)
                raise
        output = log.read_text(errors="replace")
        if pruned_at is not None and code != 0:  # (one that finished first anyway is a result like any other)
            trial.set_user_attr("pruned_at_epoch", pruned_at[0])
            self.say(f"trial {number}: PRUNED after epoch {pruned_at[0]} of {epochs} (test -ELBO {pruned_at[1]:.2f})")
            raise optuna.TrialPruned(f"pruned after epoch {pruned_at[0]}")
        if code != 0:
            errors = [line for line in output.splitlines() if "error:" in line.lower()]
            last = (errors or [f"dvc exp run exited {code}"])[-1].strip()
            raise TrialFailed(f"{last} (log: {log.relative_to(self.root)})")
        return output

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


def epoch_losses(output: str) -> list[tuple[int, float]]:
    """(epoch, test -ELBO) of every epoch line the train stage has printed so far, in order."""
    return [(int(epoch), float(value)) for epoch, value in EPOCH_LINE.findall(output)]


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


# --------------------------------------------------------------------------- commands


def threads_per_worker(workers: int, cores: int | None = None) -> int:
    """The rule of the README's sweeps: N workers on a host get cores // N threads each (at least 1)."""
    return max(1, (cores or os.cpu_count() or 1) // workers)


def run(workers: int = 1, threads: int | None = None, heartbeat: int = 10, say=print) -> int:
    """`mnist-vae search run`: one worker here, or `workers` of them as child processes."""
    signal.signal(signal.SIGTERM, interrupt)  # as Ctrl-C: the running experiment is stopped, not orphaned
    root = repo_root()
    spec = load_spec(root)  # the space is checked before any worker starts
    threads = threads or threads_per_worker(workers)
    if workers > 1:
        return run_children(workers, threads, heartbeat, say)
    quiet_optuna()
    url = storage_url(root)
    study = open_study(spec, open_storage(url, heartbeat), url)
    say(f"worker {socket.gethostname()}:{os.getpid()} on study '{spec.search.study}' at {shown_uri(url)}: "
        f"{spec.search.n_trials} trials wanted, {threads} thread(s) per trial")
    with storage_errors(url):
        Worker(root, spec, study, threads, poll=heartbeat, say=say).run()
    return 0


def run_children(workers: int, threads: int, heartbeat: int, say) -> int:
    cmd = [sys.executable, "-m", "mnist_vae", "search", "run", "--threads", str(threads), "--heartbeat", str(heartbeat)]
    procs = [subprocess.Popen(cmd) for _ in range(workers)]
    say(f"{workers} workers started, {threads} thread(s) each")
    try:
        codes = [p.wait() for p in procs]
    except BaseException:  # SIGTERM, not SIGINT: workers started in the background ignore SIGINT
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            p.wait()
        raise
    return max(codes)


def quiet_optuna() -> None:
    """Optuna logs a traceback for every failed trial; the worker says one line per trial instead."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)


def status(say=print) -> int:
    """`mnist-vae search status`: the study's trials by state, and the best so far."""
    from optuna.trial import TrialState

    root = repo_root()
    name = load_params(root / "params.yaml").search.study
    url = storage_url(root)
    study = load_existing(name, url)
    with storage_errors(url):
        trials = study.get_trials(deepcopy=False)
        names = study.metric_names or [f"value {i}" for i in range(len(study.directions))]
        spec = study.user_attrs.get("spec") or {}
        finished = "finished (COMPLETE or PRUNED)" if spec.get("pruner") else "COMPLETE"
        say(f"study '{name}' at {shown_uri(url)}: {len(trials)} trials, {spec.get('n_trials', '?')} wanted {finished}")
        say("  " + ", ".join(f"{state.name} {sum(t.state == state for t in trials)}" for state in TrialState))
        for t in trials:
            if t.state == TrialState.FAIL:
                retried = t.system_attrs.get("failed_trial")
                why = t.user_attrs.get("fail_reason") or "worker lost (no heartbeat); its params were queued again"
                say(f"  trial {t.number} FAIL: {why}" + (f" (a retry of trial {retried})" if retried is not None else ""))
            elif t.state == TrialState.PRUNED:
                say(f"  trial {t.number} PRUNED after epoch {t.user_attrs.get('pruned_at_epoch', t.last_step)}")
        best = study.best_trials if any(t.state == TrialState.COMPLETE for t in trials) else []
        if not best:
            say("no COMPLETE trial yet")
        for t in best:
            directions = [d.name.lower() for d in study.directions]
            values = ", ".join(f"{n} = {v:.6g} ({d})" for n, v, d in zip(names, t.values, directions))
            params = " ".join(f"{k}={v}" for k, v in t.params.items())
            say(f"{'best' if len(best) == 1 else 'Pareto-optimal'} trial {t.number}: {values}; {params}")
            say(f"  DVC experiment {t.user_attrs.get('dvc_experiment', '?')}, "
                f"MLflow run {t.user_attrs.get('mlflow_run_id', '? (no track line in its log)')}")
    return 0


def dashboard(host: str = "127.0.0.1", port: int = 8080, say=print) -> int:
    """optuna-dashboard over the same storage (the URL stays off the command line, as it may hold a password)."""
    from optuna_dashboard import run_server

    url = storage_url(repo_root())
    storage = open_storage(url)
    say(f"optuna-dashboard on http://{host}:{port}/ over {shown_uri(url)} (Ctrl-C stops it)")
    run_server(storage, host=host, port=port)
    return 0
