"""Sweep throughput: experiments per hour for one grid run by DVC's queue with -j 1 and with -j 2, in one run.

In a temporary copy of the repository (its own DVC cache and MLflow store) the data are prepared once
(`dvc repro dequantize`, committed), then for each worker count N the grid is queued with
`dvc exp run --queue -S train.beta=0.5,1,4` and run with `dvc queue start -j N` under the thread rule
OMP_NUM_THREADS = cores // N (every stage's torch reads it). The clock runs from `dvc queue start` until
the queue holds no queued or running task. DVC's run cache is emptied before each batch and each batch
has a seed of its own, so every stage of every experiment really runs (the queue's logs are checked). Prints a Markdown table, writes benchmarks/results/sweep.json.

The full notebook setting would take hours on a shared 2-core machine, so by default each experiment
trains 2 epochs on 10000 training digits and evaluates on 1000 test digits with K = 10 (options below);
the table states the setting.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).parent))
import provenance  # noqa: E402
from run import machine  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "sweep.json"
ENV = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_TRACKING", "OMP_NUM_THREADS"))}
ENV["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"


def threads_per_worker(workers: int, cores: int | None = None) -> int:
    """The sweep rule: N queue workers share the cores, one torch thread pool each, never oversubscribed."""
    return max(1, (cores or os.cpu_count() or 1) // workers)


def make_copy(dest: Path, settings: dict) -> None:
    files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    for rel in files:
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, dest / rel)
    params = yaml.safe_load((dest / "params.yaml").read_text())
    for section, values in settings.items():
        params[section].update(values)
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def queue_counts(copy: Path) -> dict[str, int]:
    out = run(copy, "dvc", "queue", "status").stdout
    counts = {"Queued": 0, "Running": 0, "Success": 0, "Failed": 0}
    for line in out.splitlines():
        words = line.split()
        for state in counts:
            if state in words:
                counts[state] += 1
    return counts


def run(copy: Path, *cmd: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=copy, env=env or ENV, check=True, capture_output=True, text=True, timeout=600)


def task_names(copy: Path) -> list[str]:
    out = run(copy, "dvc", "queue", "status").stdout.splitlines()
    return [line.split()[0] for line in out[1:] if len(line.split()) >= 4 and line.split()[-1] in ("Success", "Failed")]


def batch(copy: Path, grid: str, workers: int, seed: int, timeout_s: float) -> dict:
    # every stage of every experiment really runs: no run cache, and a seed of its own per batch (the
    # same cost, but no experiment equals one of another batch)
    shutil.rmtree(copy / ".dvc" / "cache" / "runs", ignore_errors=True)
    before = queue_counts(copy)
    seen = set(task_names(copy))
    run(copy, "dvc", "exp", "run", "--queue", "-S", f"train.beta={grid}", "-S", f"seed={seed}")
    queued = queue_counts(copy)["Queued"]
    threads = threads_per_worker(workers)
    load_before = os.getloadavg()
    start = time.perf_counter()
    run(copy, "dvc", "queue", "start", "-j", str(workers), env={**ENV, "OMP_NUM_THREADS": str(threads)})
    while True:
        counts = queue_counts(copy)
        if counts["Queued"] == 0 and counts["Running"] == 0:
            break
        if time.perf_counter() - start > timeout_s:
            raise SystemExit(f"sweep: the -j {workers} batch did not finish within {timeout_s:.0f} s")
        time.sleep(2)
    wall = time.perf_counter() - start
    done = counts["Success"] - before["Success"]
    failed = counts["Failed"] - before["Failed"]
    run(copy, "dvc", "queue", "stop")
    trained = 0
    for task in set(task_names(copy)) - seen:  # check that each experiment trained, evaluated and tracked
        log = subprocess.run(["dvc", "queue", "logs", task], cwd=copy, env=ENV, capture_output=True, text=True).stdout
        trained += all(f"Running stage '{stage}'" in log for stage in ("train", "evaluate", "render", "track"))
    return {"workers": workers, "really_ran": trained, "threads_per_worker": threads, "experiments": queued, "succeeded": done,
            "failed": failed, "wall_s": wall, "experiments_per_hour": 3600 * done / wall,
            "load_before": load_before, "load_after": os.getloadavg()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--grid", default="0.5,1,4", help="train.beta values (default 0.5,1,4)")
    parser.add_argument("--jobs", default="1,2", help="worker counts, one batch each (default 1,2)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--max-examples", type=int, default=10000, help="training digits (0 = all 60000)")
    parser.add_argument("--eval-examples", type=int, default=1000, help="test digits evaluated (0 = all 10000)")
    parser.add_argument("--iw-samples", type=int, default=10)
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per batch")
    args = parser.parse_args()
    settings = {
        "data": {"source": "pypi"},  # the cached wheel: no network once it has been fetched
        "train": {"epochs": args.epochs, "max_examples": args.max_examples},
        "evaluate": {"iw_samples": args.iw_samples, "max_examples": args.eval_examples,
                     "train_slice": min(args.eval_examples or 10000, 10000), "mi_examples": 200},
        "render": {"latent_points": 1000},
        "tracking": {"experiment": "sweep-bench"},
    }
    with tempfile.TemporaryDirectory(prefix="mnist-vae-sweep-") as tmp:
        copy = Path(tmp) / "repo"
        make_copy(copy, settings)
        run(copy, "git", "init", "-q")
        run(copy, "dvc", "repro", "dequantize")  # the data once; every experiment starts from it
        run(copy, "git", "add", "-A")
        run(copy, "git", "-c", "user.name=bench", "-c", "user.email=bench@localhost", "commit", "-qm", "sweep")
        batches = [batch(copy, args.grid, int(j), seed, args.timeout)
                   for seed, j in enumerate(args.jobs.split(","), start=1)]
    result = {"machine": machine(), "grid": f"train.beta={args.grid}", "settings": settings, "batches": batches}
    provenance.write("sweep", result)
    print(table(result))


def table(r: dict) -> str:
    s = r["settings"]
    lines = [f"{r['machine']}; grid {r['grid']}; each experiment: {s['train']['epochs']} epochs on "
             f"{s['train']['max_examples'] or 60000} training digits, evaluation on "
             f"{s['evaluate']['max_examples'] or 10000} test digits with K={s['evaluate']['iw_samples']}, "
             "figures, MLflow run with the registered model", "",
             "| workers (`-j`) | threads each | experiments (all stages ran) | wall time | experiments per hour | load average before -> after |",
             "|---|---|---|---|---|---|"]
    for b in r["batches"]:
        lines.append(f"| {b['workers']} | {b['threads_per_worker']} | {b['succeeded']} of {b['experiments']} ({b['really_ran']}) | "
                     f"{b['wall_s']:.0f} s | {b['experiments_per_hour']:.1f} | "
                     f"{b['load_before'][0]:.1f} -> {b['load_after'][0]:.1f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
