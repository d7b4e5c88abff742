"""make bench: the pipeline's training and evaluation against the notebook's loop and the machine's floor.

Prints a table and writes it to benchmarks/results/bench.json. Needs data/processed (it runs
`dvc repro dequantize` first). All timings are taken in this one run, on this machine:

  training    the notebook's loop (benchmarks/notebook_loop.py) and the pipeline's (training.train_epoch)
              alternate epoch by epoch on the same data from the same seed; median epoch time of each,
              their ratio, the final loss of each, and the floor: 6 x parameters x examples FLOPs per
              epoch divided by the float32 GEMM rate measured here (2048^3, median of 10);
  breakdown   100 steps of the pipeline's loop under the profiler: time in matrix multiplies (and the
              GFLOP/s they reach at batch 128), in the fused Adam update, and in everything else;
  bf16        the pipeline's loop under train.precision=bf16 (CPU autocast), a few epochs;
  evaluation  the importance-weighted log-likelihood over the test set at K=1000: time, achieved
              GFLOP/s (the decoder's matrix multiplies) and the distance to the same floor;
  pipeline    in a temporary copy of the repository sharing this DVC cache: peak resident memory of the
              train stage, and the wall time of `dvc repro` after changing only a render param.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml

sys.path.insert(0, str(Path(__file__).parent))
import notebook_loop  # noqa: E402
import provenance  # noqa: E402

from mnist_vae.params import ModelParams, TrainParams  # noqa: E402
from mnist_vae.vae import (
    evaluation,
    training,  # noqa: E402
)
from mnist_vae.vae.model import VAE  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
# stage commands run `python`: make it this interpreter's
ENV = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
RESULTS = ROOT / "benchmarks" / "results" / "bench.json"


def gemm_rate(n: int = 2048, reps: int = 10) -> float:
    """Sustained float32 matrix-multiply rate, GFLOP/s (median of reps)."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(3):
        a @ b
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - start)
    return 2 * n**3 / statistics.median(times) / 1e9


def n_params(model) -> int:
    return sum(p.numel() for p in model.parameters())


def bench_training(x: torch.Tensor, epochs: int, rate: float) -> dict:
    n = len(x)
    torch.manual_seed(0)
    nb_model, nb_opt, nb_loader = notebook_loop.setup(x)
    torch.manual_seed(0)
    model, p = VAE(ModelParams()), TrainParams()
    opt, shuffle, step = training.make_optimizer(model, p), torch.Generator().manual_seed(0), 0
    nb_times, our_times, our_losses = [], [], []
    for epoch in range(epochs):
        start = time.perf_counter()
        nb_loss = notebook_loop.train_one_epoch(nb_model, nb_opt, nb_loader, epoch, log=lambda s: None)
        nb_times.append(time.perf_counter() - start)
        start = time.perf_counter()
        sums, step = training.train_epoch(model, opt, x, torch.randperm(n, generator=shuffle), p, step, -(-n // 128))
        our_loss = sums[0].item() / n
        our_losses.append(our_loss)
        our_times.append(time.perf_counter() - start)
        print(f"  epoch {epoch + 1}: notebook {nb_times[-1]:.2f}s loss {nb_loss:.2f} | "
              f"pipeline {our_times[-1]:.2f}s loss {our_loss:.2f}", flush=True)
    flops = 6 * n_params(model) * n
    floor = flops / (rate * 1e9)
    ours = statistics.median(our_times)
    return {
        "epochs": epochs, "examples": n, "gflop_per_epoch": flops / 1e9,
        "notebook_epoch_s": statistics.median(nb_times), "pipeline_epoch_s": ours,
        "speedup": statistics.median(nb_times) / ours,
        "notebook_final_loss": nb_loss, "pipeline_final_loss": our_loss,
        "loss_gap_pct": 100 * (our_loss - nb_loss) / nb_loss,
        "floor_epoch_s": floor, "pipeline_over_floor": ours / floor,
        "notebook_epoch_times": nb_times, "pipeline_epoch_times": our_times, "pipeline_losses": our_losses,
    }


def bench_breakdown(x: torch.Tensor, rate: float, steps: int = 100) -> dict:
    """Where the pipeline's training step spends its time: `steps` steps of training.train_epoch under
    the profiler. Matrix multiplies (mm, addmm: their own time and FLOPs) and the fused Adam update are
    the part no loop overhead can remove at batch 128; their sum per epoch bounds any eager loop."""
    torch.manual_seed(0)
    model, p = VAE(ModelParams()), TrainParams()
    opt, n = training.make_optimizer(model, p), len(x)
    steps_per_epoch = -(-n // p.batch_size)
    order = torch.randperm(n)[: steps * p.batch_size]
    training.train_epoch(model, opt, x, order[: 10 * p.batch_size], p, 0, steps_per_epoch)  # warm-up
    with torch.profiler.profile(with_flops=True) as prof:
        start = time.perf_counter()
        training.train_epoch(model, opt, x, order, p, 0, steps_per_epoch)
        wall = time.perf_counter() - start
    events = prof.key_averages()
    mm = [e for e in events if e.key in ("aten::mm", "aten::addmm")]
    mm_s = sum(e.self_cpu_time_total for e in mm) / 1e6
    adam_s = sum(e.self_cpu_time_total for e in events if e.key == "aten::_fused_adam_") / 1e6
    scale = steps_per_epoch / steps
    return {
        "steps": steps, "profiled_epoch_s": wall * scale,
        "matmul_epoch_s": mm_s * scale, "matmul_gflops": sum(e.flops for e in mm) / mm_s / 1e9,
        "matmul_over_gemm_rate": rate / (sum(e.flops for e in mm) / mm_s / 1e9),
        "adam_epoch_s": adam_s * scale, "other_epoch_s": (wall - mm_s - adam_s) * scale,
        "matmul_plus_adam_epoch_s": (mm_s + adam_s) * scale,
    }


def bench_bf16(x: torch.Tensor, epochs: int, notebook_epoch_s: float, fp32_losses: list[float]) -> dict:
    """The same loop and seed as the fp32 pipeline run, under bf16 autocast; loss compared epoch for epoch."""
    n = len(x)
    torch.manual_seed(0)
    model, p = VAE(ModelParams()), TrainParams(precision="bf16")
    opt, shuffle, step, times = training.make_optimizer(model, p), torch.Generator().manual_seed(0), 0, []
    for _ in range(epochs):
        start = time.perf_counter()
        sums, step = training.train_epoch(model, opt, x, torch.randperm(n, generator=shuffle), p, step, -(-n // 128))
        times.append(time.perf_counter() - start)
        print(f"  bf16 epoch: {times[-1]:.2f}s loss {sums[0].item() / n:.2f}", flush=True)
    loss = sums[0].item() / n
    return {"epochs": epochs, "epoch_s": statistics.median(times), "speedup_vs_notebook": notebook_epoch_s / statistics.median(times),
            "final_loss": loss, "loss_gap_pct_vs_fp32": 100 * (loss - fp32_losses[epochs - 1]) / fp32_losses[epochs - 1],
            "cpu_has_native_bf16": _cpu_flag("avx512_bf16") or _cpu_flag("amx_bf16")}


def bench_eval(x_test: torch.Tensor, k: int, rate: float) -> dict:
    torch.manual_seed(0)
    model = VAE(ModelParams()).eval()
    decoder_macs = sum(m.in_features * m.out_features for m in model.decoder.modules() if isinstance(m, torch.nn.Linear))
    encoder_macs = sum(m.in_features * m.out_features for m in model.encoder.modules() if isinstance(m, torch.nn.Linear))
    flops = 2 * decoder_macs * k * len(x_test) + 2 * (encoder_macs + 400 * 40) * len(x_test)
    start = time.perf_counter()
    out = evaluation.importance_sampled(model, x_test, k)
    seconds = time.perf_counter() - start
    return {"k": k, "examples": len(x_test), "seconds": seconds, "gflop": flops / 1e9,
            "achieved_gflops": flops / seconds / 1e9, "floor_s": flops / (rate * 1e9),
            "over_floor": seconds / (flops / (rate * 1e9)), "iw_nll_untrained": -out["log_px"].mean().item()}


def bench_pipeline() -> dict:
    """A copy of the repository that shares this DVC cache; every stage really runs there (--no-run-cache)."""
    env = {k: v for k, v in ENV.items() if k != "MLFLOW_TRACKING_URI"}  # the copy's own store
    with tempfile.TemporaryDirectory(prefix="mnist-vae-bench-") as tmp:
        copy = Path(tmp) / "repo"
        files = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
        for rel in files:
            (copy / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / rel, copy / rel)
        params = yaml.safe_load((copy / "params.yaml").read_text())
        params["train"]["epochs"] = 1
        params["evaluate"]["iw_samples"] = 10
        (copy / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))

        def run(*cmd):
            return subprocess.run(cmd, cwd=copy, env=env, check=True, capture_output=True, text=True)

        run("git", "init", "-q")
        run("git", "add", "-A")
        run("git", "-c", "user.name=bench", "-c", "user.email=bench@localhost", "commit", "-qm", "bench")
        run("dvc", "cache", "dir", "--local", str(ROOT / ".dvc" / "cache"))
        # --no-run-cache: stages really run (DVC would otherwise restore what an earlier bench computed)
        run("dvc", "repro", "--no-run-cache")
        params["render"]["samples_grid"] = 9
        (copy / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        start = time.perf_counter()
        out = run("dvc", "repro", "--no-run-cache").stdout
        render_only = time.perf_counter() - start
        # peak memory of the train stage alone, in a fresh process over the full data
        peak = run(sys.executable, str(ROOT / "benchmarks" / "peak_rss.py"), "stages/train.py").stdout
    reran = [line.split("'")[1] for line in out.splitlines() if line.startswith("Running stage")]
    return {"train_peak_rss_mb": float(peak.strip().splitlines()[-1]), "render_only_repro_s": render_only,
            "stages_rerun": reran}


def _cpu_flag(flag: str) -> bool:
    try:
        return flag in Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False


def machine() -> str:
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{name}, {os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=3, help="epochs of each training loop")
    parser.add_argument("--bf16-epochs", type=int, default=1)
    parser.add_argument("--k", type=int, default=1000, help="importance samples for the evaluation benchmark")
    parser.add_argument("--skip-pipeline", action="store_true")
    args = parser.parse_args()

    subprocess.run([sys.executable, "-m", "dvc", "repro", "dequantize"], cwd=ROOT, env=ENV, check=True)
    with np.load(ROOT / "data" / "processed" / "train.npz") as f:
        x = torch.from_numpy(f["x"])
    with np.load(ROOT / "data" / "processed" / "test.npz") as f:
        x_test = torch.from_numpy(f["x"])
    results = {"machine": machine(), "device": "cpu"}
    results["gemm_gflops"] = rate = gemm_rate()
    print(f"float32 GEMM (2048^3): {rate:.0f} GFLOP/s", flush=True)
    results["training"] = t = bench_training(x, args.epochs, rate)
    results["breakdown"] = bench_breakdown(x, rate)
    results["bf16"] = bench_bf16(x, min(args.bf16_epochs, args.epochs), t["notebook_epoch_s"], t["pipeline_losses"])
    results["evaluation"] = bench_eval(x_test, args.k, rate)
    results["gemm_gflops_after"] = gemm_rate()
    if not args.skip_pipeline:
        results["pipeline"] = bench_pipeline()
    provenance.write("bench", results)
    print(table(results))
    print(f"\nwritten to {RESULTS.relative_to(ROOT)}")


def table(r: dict) -> str:
    t, b, e, d = r["training"], r["bf16"], r["evaluation"], r["breakdown"]
    rows = [
        f"machine: {r['machine']}",
        f"float32 GEMM rate: {r['gemm_gflops']:.0f} GFLOP/s (after the run: {r['gemm_gflops_after']:.0f})",
        "",
        "| what | result |",
        "|---|---|",
        f"| notebook loop, median epoch ({t['epochs']} epochs) | {t['notebook_epoch_s']:.2f} s, final loss {t['notebook_final_loss']:.2f} |",
        f"| pipeline loop fp32, median epoch | {t['pipeline_epoch_s']:.2f} s, final loss {t['pipeline_final_loss']:.2f} ({t['loss_gap_pct']:+.2f}%) |",
        f"| speed-up over the notebook (fp32) | {t['speedup']:.2f}x |",
        f"| float32 floor ({t['gflop_per_epoch']:.0f} GFLOP per epoch) | {t['floor_epoch_s']:.2f} s; pipeline at {t['pipeline_over_floor']:.2f}x the floor |",
        f"| pipeline step, profiled ({d['steps']} steps): matrix multiplies | {d['matmul_epoch_s']:.2f} s per epoch at {d['matmul_gflops']:.0f} GFLOP/s (the GEMM rate is {d['matmul_over_gemm_rate']:.2f}x that) |",
        f"| pipeline step, profiled: fused Adam; everything else | {d['adam_epoch_s']:.2f} s; {d['other_epoch_s']:.2f} s per epoch |",
        f"| matrix multiplies + Adam alone (no loop overhead at all) | {d['matmul_plus_adam_epoch_s']:.2f} s per epoch: {t['notebook_epoch_s'] / d['matmul_plus_adam_epoch_s']:.2f}x the notebook, {d['matmul_plus_adam_epoch_s'] / t['floor_epoch_s']:.2f}x the floor |",
        f"| pipeline loop bf16, median epoch ({b['epochs']} epochs) | {b['epoch_s']:.2f} s ({b['speedup_vs_notebook']:.2f}x the notebook), loss {b['final_loss']:.2f} ({b['loss_gap_pct_vs_fp32']:+.2f}% vs fp32 after {b['epochs']}); native bf16: {b['cpu_has_native_bf16']} |",
        f"| IWAE log-likelihood, K={e['k']}, {e['examples']} test digits | {e['seconds']:.1f} s, {e['achieved_gflops']:.0f} GFLOP/s, {e['over_floor']:.2f}x the floor ({e['floor_s']:.1f} s) |",
    ]
    if "pipeline" in r:
        p = r["pipeline"]
        rows += [
            f"| `dvc repro` after a render param change | {p['render_only_repro_s']:.1f} s (reran: {', '.join(p['stages_rerun'])}) |",
            f"| train stage peak memory (full data) | {p['train_peak_rss_mb']:.0f} MB |",
        ]
    return "\n".join(rows)


if __name__ == "__main__":
    main()
