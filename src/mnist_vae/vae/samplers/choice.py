"""The model's best sampler: the one whose samples scored the lowest FID in evaluate, among the prior and
the fitted samplers, each drawn at the temperature evaluate scored it at (the prior at 1, a fitted one at
``sampler.temperature``).

evaluate writes the choice beside the samplers, as models/best_sampler.json (a DVC output, so it is redone
whenever the checkpoint, the samplers or the scoring change); a logged MLflow model carries the same file
among its artifacts. Sampling with no sampler named (the command, the Python API, the served model, the
explorer's draw button) uses it. The file names the SHA-256 of the checkpoint and of the samplers file it
was chosen for, and :func:`load` refuses it beside any other (FileProblem, stale): it is the one home of
the fact, never a copy that could disagree.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from mnist_vae.errors import FileProblem
from mnist_vae.files import load_json, save_json, sha256_file

FILE_NAME = "best_sampler.json"  # beside the checkpoint: models/best_sampler.json
FORMAT = 1
BY = "the lowest FID of its samples against the test digits (metrics/eval.json)"


@dataclass(frozen=True)
class Choice:
    """The best sampler's name, and what evaluate recorded of every sampler: its temperature and FID."""

    sampler: str
    temperatures: dict[str, float]
    fid: dict[str, float]

    @property
    def temperature(self) -> float:
        """The temperature the best sampler was scored at (what default sampling draws with)."""
        return self.temperature_of(self.sampler)

    def temperature_of(self, name: str) -> float:
        """The temperature evaluate scored sampler `name` at (1 for a sampler it did not score)."""
        return self.temperatures.get(name, 1.0)

    def reason(self) -> str:
        """Why it is the best, in a few words: its FID against the others'."""
        others = ", ".join(f"{name} {fid:.1f}" for name, fid in self.fid.items() if name != self.sampler)
        return f"the lowest sample FID evaluate recorded, {self.fid[self.sampler]:.1f}" + (f"; {others}" if others else "")


def best(fid: dict[str, float]) -> str:
    """The name with the lowest FID; on a tie the first listed (the prior comes first)."""
    return min(fid, key=lambda name: fid[name])


def beside(checkpoint: Path) -> Path:
    """Where the pipeline keeps a checkpoint's choice: models/vae.pt -> models/best_sampler.json."""
    return Path(checkpoint).parent / FILE_NAME


def record(path: Path, fid: dict[str, float], temperatures: dict[str, float], checkpoint: Path,
           sampler_file: Path) -> Choice:
    """Choose the best of the samplers scored (name -> FID, name -> temperature) and write the choice to `path`
    with the digests of the checkpoint and the samplers file it is for."""
    choice = Choice(best(fid), dict(temperatures), dict(fid))
    save_json(path, {"format": FORMAT, "sampler": choice.sampler, "temperature": choice.temperature, "by": BY,
                     "fid": choice.fid, "temperatures": choice.temperatures,
                     "checkpoint_sha256": sha256_file(checkpoint), "samplers_sha256": sha256_file(sampler_file)})
    return choice


def load(path: Path, checkpoint: Path, sampler_file: Path, names: list[str]) -> Choice:
    """The choice stored in `path`, checked: made for these bytes of the checkpoint and samplers file, and
    naming one of the samplers `names` the model has (a FileProblem otherwise)."""
    tree = load_json(path)
    try:
        if tree.get("format") != FORMAT:
            raise ValueError(f"format {tree.get('format')}, expected {FORMAT}")
        choice = Choice(str(tree["sampler"]), {str(k): float(v) for k, v in tree["temperatures"].items()},
                        {str(k): float(v) for k, v in tree["fid"].items()})
        if choice.sampler not in choice.fid or not all(math.isfinite(v) for v in choice.fid.values()):
            raise ValueError("its FIDs do not name the sampler it chose")
        digests = str(tree["checkpoint_sha256"]), str(tree["samplers_sha256"])
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise FileProblem(path, "unreadable", f"{path} is not a readable sampler choice ({exc})") from None
    if digests != (sha256_file(checkpoint), sha256_file(sampler_file)):
        raise FileProblem(path, "stale", f"{path} was chosen for another checkpoint or samplers file than "
                                         f"{checkpoint} and {sampler_file}; choose again")
    if choice.sampler not in names:
        raise FileProblem(path, "stale", f"{path} names the sampler {choice.sampler!r}, which this model does not "
                                         f"have ({', '.join(names)}); choose again")
    return choice
