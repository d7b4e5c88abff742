"""A hyperparameter search over the pipeline with Optuna: every trial is one DVC experiment and one MLflow run.

`params.yaml`'s `search` section names the study, its objective(s) (numbers in `metrics/*.json`), the
algorithm, the number of trials and the space. A *worker* (`mnist-vae search run`) loads or creates the
study in the storage that ``MNIST_VAE_SEARCH_STORAGE`` names (default: ``sqlite:///<repo>/optuna.db``;
a ``postgresql://`` URL shares one study between any number of workers on any hosts), then repeatedly:
asks the study for a trial, validates its params with the schema, runs it as

    dvc exp run --temp --name <study>-<trial> -S ++key=value ...

(outside the workspace, so several workers share a clone), reads the objective from that experiment's
metrics and tells the study. `track` tags the trial's MLflow run with the study and trial number
(``MNIST_VAE_SEARCH_STUDY`` / ``MNIST_VAE_SEARCH_TRIAL``; not part of the run's fingerprint), and the
worker finds the run by those tags.

Pruning (`search.pruner: median`): while a trial trains, the worker reads each finished epoch's test
-ELBO from the progress file the train stage writes for it (pipeline/progress.py), reports it to the study, and
when Optuna's median pruner says so stops the experiment (SIGTERM to its stage, which ends as on Ctrl-C),
which leaves no outputs, no DVC experiment and no MLflow run; the trial is PRUNED.

Faults: each worker sends Optuna heartbeats while its trial runs; a worker that dies (SIGKILL, a lost
host) stops beating, and the next worker to look marks its trial FAIL and queues its params again
(RetryHeartbeatStaleTrialCallback). Workers stop when the study holds `n_trials` finished trials (COMPLETE
or PRUNED); while the running trials could finish it they wait rather than start more, so the study ends
with exactly that many. Params the schema refuses make that trial FAIL with the schema's line as its `fail_reason`.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys

from mnist_vae.ops.search.spec import load_spec
from mnist_vae.ops.search.study import load_existing, open_storage, open_study, storage_errors, storage_url
from mnist_vae.ops.search.worker import Worker
from mnist_vae.params import load_params
from mnist_vae.pipeline.mlflow_store import repo_root, shown_uri
from mnist_vae.pipeline.stage import interrupt_as_ctrl_c


def threads_per_worker(workers: int, cores: int | None = None) -> int:
    """The rule of the README's sweeps: N workers on a host get cores // N threads each (at least 1)."""
    return max(1, (cores or os.cpu_count() or 1) // workers)


def run(workers: int = 1, threads: int | None = None, heartbeat: int = 10, say=print) -> int:
    """`mnist-vae search run`: one worker here, or `workers` of them as child processes."""
    signal.signal(signal.SIGTERM, interrupt_as_ctrl_c)  # as Ctrl-C: the running experiment is stopped, not orphaned
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
