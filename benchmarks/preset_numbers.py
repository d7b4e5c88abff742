"""The preset for the best digits: its overrides, and the numbers its experiment scored, for the documentation.

The preset is PRESET's `-S` overrides of the committed params.yaml. Run it as the samplers page says, then,
in that project (the experiment applied to its workspace, as `dvc exp run` leaves it):

    python benchmarks/preset_numbers.py [--project DIR]

It checks that the project's params are its commit's params.yaml with exactly those overrides and that its
models are the bytes its own dvc.lock records, then writes the overrides, the command and the numbers (as
benchmarks/baseline_numbers.py reads them) to benchmarks/results/preset.json.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import yaml

from mnist_vae.ops.search.spec import with_overrides

sys.path.insert(0, str(Path(__file__).parent))
import baseline_numbers  # noqa: E402
import provenance  # noqa: E402

NAME = "best-digits"
PRESET = {"model.architecture": "conv", "model.likelihood": "continuous_bernoulli", "sampler.temperature": 0.95}


def command() -> str:
    return f"dvc exp run -n {NAME} " + " ".join(f"-S {key}={value}" for key, value in PRESET.items())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project", type=Path, default=Path("."))
    project = parser.parse_args().project
    committed = subprocess.run(["git", "show", "HEAD:params.yaml"], cwd=project, capture_output=True, text=True)
    if committed.returncode != 0:
        sys.exit(f"preset_numbers: cannot read {project}'s committed params.yaml: {committed.stderr.strip()}")
    if yaml.safe_load((project / "params.yaml").read_text()) != with_overrides(yaml.safe_load(committed.stdout), PRESET):
        sys.exit(f"preset_numbers: {project / 'params.yaml'} is not its commit's params with the preset alone; "
                 f"run `{command()}` there first")
    if problem := baseline_numbers.mismatched_model(project, project / "dvc.lock"):
        sys.exit(f"preset_numbers: the workspace is not its experiment's result: {problem}; run `dvc exp apply {NAME}`")
    out, when = baseline_numbers.numbers(project)
    measured = baseline_numbers.measured_by(f"{command()}, then python benchmarks/preset_numbers.py", project, when)
    print(f"written to {provenance.write('preset', {'overrides': PRESET, 'command': command(), **out}, measured)}")


if __name__ == "__main__":
    main()
