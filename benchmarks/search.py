"""Search throughput on one machine: the same 12-trial grid run by 2 workers x 1 thread and by 1 worker x 2 threads
(`mnist-vae search run`, embedded storage), and the search machinery's overhead per trial.

In a temporary copy of the repository (its own DVC cache, MLflow store and Optuna storage) the data and the
digit classifier are made once (`dvc repro classifier dequantize`, committed), so every trial runs train, sampler,
evaluate, headline, render and track. Each configuration runs a study of its own over the same grid
(train.beta x model.latent_dim, 12 points) with a seed of its own and an empty run cache, so every stage of
every trial really runs. The clock runs from the worker's start to its exit.

The overhead: the search's trial wall time (Optuna's start -> complete: study round-trips, `dvc exp run --temp`'s
copy, hashing, caching and git bookkeeping, the stages) minus the same stages run directly
(`python stages/<stage>.py`, no DVC, no Optuna) with the same params and threads, in the same copy. It is a
fixed cost per trial, nearly independent of the training's length (the data files DVC handles are the full
data set's in both), so it is set against a default-sized trial's stage time too (see --default-stage-s).

Small trainings by default: 1 epoch on 5000 training digits, evaluation on 500 test digits with K = 10, small
quality sets. Prints a Markdown table, writes benchmarks/results/search.json.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).parent))
import provenance  # noqa: E402
from run import machine  # noqa: E402
from sweep import ENV, make_copy  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "search.json"
BIN = Path(sys.executable).parent
GRID = {"train.beta": [0.5, 1.0, 2.0, 4.0], "model.latent_dim": [2, 10, 20]}
TRIAL_STAGES = ("train", "sampler", "evaluate", "headline", "render", "track")


def sh(copy: Path, *cmd: str, env: dict | None = None, timeout: float = 3600) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=copy, env=env or ENV, check=True, capture_output=True, text=True, timeout=timeout)


def set_params(copy: Path, **sections) -> None:
    params = yaml.safe_load((copy / "params.yaml").read_text())
    for section, values in sections.items():
        if isinstance(values, dict) and isinstance(params.get(section), dict):
            params[section].update(values)
        else:
            params[section] = values
    (copy / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def commit(copy: Path, message: str) -> None:
    sh(copy, "git", "add", "-A")
    sh(copy, "git", "-c", "user.name=bench", "-c", "user.email=bench@localhost", "commit", "-qm", message)


def direct_stage_time(copy: Path, threads: int, seed: int) -> dict[str, float]:
    """Seconds of each trial stage run directly (no DVC, no Optuna), with a grid point's params and `threads`."""
    set_params(copy, seed=seed, train={"beta": 1.0}, model={"latent_dim": 10})
    env = {**ENV, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    out = {}
    for stage in TRIAL_STAGES:
        start = time.perf_counter()
        sh(copy, str(BIN / "python"), f"stages/{stage}.py", env=env)
        out[stage] = time.perf_counter() - start
    sh(copy, "git", "checkout", "--", "params.yaml")
    return out


def configuration(copy: Path, workers: int, threads: int, seed: int, n_trials: int) -> dict:
    study = f"bench-{workers}x{threads}"
    set_params(copy, seed=seed, search={"study": study, "sampler": "grid", "n_trials": n_trials, "space": GRID,
                                        "objectives": [{"metric": "eval.test.iw_nll", "direction": "minimize"}]})
    commit(copy, study)
    sh(copy, "rm", "-rf", ".dvc/cache/runs")  # no stage comes from an earlier trial's run
    load_before = os.getloadavg()
    start = time.perf_counter()
    sh(copy, str(BIN / "mnist-vae"), "search", "run", "--workers", str(workers), "--threads", str(threads))
    wall = time.perf_counter() - start
    import optuna

    trials = optuna.load_study(study_name=study, storage=f"sqlite:///{copy / 'optuna.db'}").get_trials()
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    logs = [(copy / "search-logs" / f"{study}-{t.number}.log").read_text() for t in complete]
    ran = sum(all(f"Running stage '{s}'" in log for s in TRIAL_STAGES) for log in logs)
    durations = [(t.datetime_complete - t.datetime_start).total_seconds() for t in complete]
    return {"workers": workers, "threads": threads, "study": study, "complete": len(complete), "all_stages_ran": ran,
            "failed": sum(t.state.name == "FAIL" for t in trials), "wall_s": wall,
            "trials_per_hour": 3600 * len(complete) / wall, "trial_s_median": statistics.median(durations),
            "trial_s": durations, "load_before": load_before, "load_after": os.getloadavg()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--max-examples", type=int, default=5000, help="training digits (0 = all 60000)")
    parser.add_argument("--eval-examples", type=int, default=500, help="test digits evaluated (0 = all 10000)")
    parser.add_argument("--default-stage-s", type=float,
                        help="a default-sized trial's stage seconds (train + sampler + evaluate + headline + render + "
                        "track), to set the overhead against; see docs/search.md for how it is estimated")
    args = parser.parse_args()
    settings = {
        "data": {"source": "pypi"},  # the cached wheel: no network once it has been fetched
        "train": {"epochs": args.epochs, "max_examples": args.max_examples},
        "evaluate": {"iw_samples": 10, "max_examples": args.eval_examples, "train_slice": 1000, "mi_examples": 200},
        "render": {"latent_points": 1000},
        "classifier": {"epochs": 1},
        "quality": {"n_samples": 500, "n_reference": 500, "probe_examples": 2000, "probe_max_iter": 50},
        "tracking": {"experiment": "search-bench"},
    }
    n_trials = 1
    for values in GRID.values():
        n_trials *= len(values)
    with tempfile.TemporaryDirectory(prefix="mnist-vae-search-") as tmp:
        copy = Path(tmp) / "repo"
        make_copy(copy, settings)
        sh(copy, "git", "init", "-q")
        sh(copy, "dvc", "repro", "classifier", "dequantize", env={**ENV, "OMP_NUM_THREADS": "2"})
        commit(copy, "data and classifier")
        direct = direct_stage_time(copy, threads=2, seed=100)
        batches = [configuration(copy, 2, 1, seed=1, n_trials=n_trials),
                   configuration(copy, 1, 2, seed=2, n_trials=n_trials)]
    one = batches[1]
    direct_total = sum(direct.values())
    overhead = one["trial_s_median"] - direct_total
    result = {"machine": machine(), "settings": settings, "grid": GRID, "batches": batches,
              "direct_stage_s": direct, "direct_total_s": direct_total, "overhead_per_trial_s": overhead,
              "default_stage_s": args.default_stage_s,
              "overhead_vs_default": overhead / args.default_stage_s if args.default_stage_s else None}
    provenance.write("search", result)
    print(table(result))


def table(r: dict) -> str:
    s = r["settings"]
    lines = [f"{r['machine']}; grid {r['grid']}; each trial: {s['train']['epochs']} epoch(s) on "
             f"{s['train']['max_examples'] or 60000} training digits, evaluation on {s['evaluate']['max_examples']} "
             f"test digits with K={s['evaluate']['iw_samples']}, figures, MLflow run with the registered model", "",
             "| workers x threads | trials COMPLETE (all stages ran) | wall time | trials per hour | median trial | load average before -> after |",
             "|---|---|---|---|---|---|"]
    for b in r["batches"]:
        lines.append(f"| {b['workers']} x {b['threads']} | {b['complete']} ({b['all_stages_ran']}) | {b['wall_s']:.0f} s | "
                     f"{b['trials_per_hour']:.1f} | {b['trial_s_median']:.1f} s | "
                     f"{b['load_before'][0]:.1f} -> {b['load_after'][0]:.1f} |")
    direct = ", ".join(f"{k} {v:.1f} s" for k, v in r["direct_stage_s"].items())
    lines += ["", f"stages run directly (2 threads): {direct}; total {r['direct_total_s']:.1f} s",
              f"search overhead per trial (1 x 2 median trial - direct stages): {r['overhead_per_trial_s']:.1f} s"]
    if r["default_stage_s"]:
        lines.append(f"against a default-sized trial's {r['default_stage_s']:.0f} s of stages: "
                     f"{100 * r['overhead_vs_default']:.1f} % (target <= 10 %)")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
