"""Where a measurement comes from, written once beside its numbers in benchmarks/results/<name>.json.

Every benchmark script that writes a results file puts this block first: the date, the machine, the
command (with the thread setting it ran under) and the commit. The documentation reads its numbers from
these files (docs/macros.py) and shows this block with them, so a number's date, machine and command are
stated once, here.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def cpu() -> str:
    """The processor's name and the instruction sets that change float32 sums, e.g. 'AMD EPYC (avx512_bf16)'."""
    name, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    isa = next((f for f in ("amx_bf16", "avx512_bf16", "avx512f", "avx2") if f in flags), "")
    return f"{name} ({isa})" if isa else name


def commit(checkout: Path = ROOT) -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=checkout, capture_output=True, text=True)
        return out.stdout.strip()
    except OSError:
        return ""


def block(command: str | None = None) -> dict:
    """The provenance of a measurement taken now by this process."""
    import torch

    threads = os.environ.get("OMP_NUM_THREADS")
    argv = " ".join(["python", *sys.argv]) if command is None else command
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{cpu()}, {os.cpu_count()} cores, no GPU" if not torch.cuda.is_available() else cpu(),
        "command": f"OMP_NUM_THREADS={threads} {argv}" if threads else argv,
        "commit": commit(),
        "torch": torch.__version__,
        "load_average": [round(x, 1) for x in os.getloadavg()],
    }


def write(name: str, data: dict, provenance: dict | None = None) -> Path:
    """benchmarks/results/<name>.json: the provenance block, then the numbers."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"provenance": provenance or block(), **data}, indent=2) + "\n")
    return path
