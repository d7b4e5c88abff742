"""The documentation's measured numbers, read from the committed files that hold them.

A source is a name: `headline` (metrics/headline.json, the committed baseline), `history` (the last epoch
of metrics/history.csv), `params` (params.yaml's defaults) or the name of a results file in
benchmarks/results/ (`baseline`, `bench`, `gallery`, ...), each of which starts with its provenance (date,
machine, command). A key is a dotted path in it (`seconds.train`, `runs.beta20.active_units`, `rows.0.fid`).

The site's pages get their numbers through the macros in tools/docs_macros.py (mkdocs-macros-plugin, run by
`make docs`). README.md, which GitHub shows raw, writes each number followed by a marker naming its source,
`90.7<!--n headline gmm_sample_fid .1f-->`, and tests/test_docs.py checks every marked number against it.
"""

from __future__ import annotations

import csv
import json
import re
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
FILES = {"headline": "metrics/headline.json", "history": "metrics/history.csv", "params": "params.yaml"}
MINUS = "\u2212"  # a negative number is printed with a minus sign, as the prose writes them
# a marked number in README.md: the number, then <!--n SOURCE KEY FORMAT-->
MARKED = re.compile(r"(\u2212?-?[\d,]*\d(?:\.\d+)?)(%?)\s?<!--n (\S+) (\S+) (\S+)-->")


def path_of(source: str) -> Path:
    return ROOT / FILES.get(source, f"benchmarks/results/{source}.json")


@lru_cache(maxsize=None)
def load(source: str) -> Any:
    path = path_of(source)
    if not path.is_file():
        raise KeyError(f"no source {source!r}: {path.relative_to(ROOT)} does not exist")
    if source == "history":
        with path.open() as f:
            rows = [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]
        return {"last": rows[-1], "rows": rows}
    if path.suffix == ".yaml":
        return yaml.safe_load(path.read_text())
    return json.loads(path.read_text())


def lookup(source: str, key: str) -> Any:
    """The value at a dotted key; a name that holds a dot itself ("0.95") is found as one part too."""
    value, parts = load(source), key.split(".")
    while parts:
        part = parts.pop(0)
        while isinstance(value, dict) and part not in value and parts:
            part += "." + parts.pop(0)  # "0" then "95": the name "0.95"
        try:
            value = value[int(part)] if isinstance(value, list) else value[part]
        except (KeyError, IndexError, ValueError):
            raise KeyError(f"{path_of(source).relative_to(ROOT)} has no {key!r} (at {part!r})") from None
    return value


def formatted(value: Any, spec: str = "") -> str:
    """`value` in format `spec` ('.1f', ',d', '.1%', ...; '' = as it is), negative with a minus sign."""
    text = format(value, spec) if spec not in ("", "-") else str(value)
    return MINUS + text[1:] if text.startswith("-") else text


def number(source: str, key: str, spec: str = "") -> str:
    return formatted(lookup(source, key), spec)


def provenance(source: str, key: str = "") -> dict:
    """The provenance block of a results file (or of one of its parts, when that part has its own)."""
    data = load(source)
    found = data.get("provenance", {}) if isinstance(data, dict) else {}
    node = data
    for part in [p for p in key.split(".") if p]:
        node = node[int(part)] if isinstance(node, list) else node[part]
        if isinstance(node, dict) and "provenance" in node:
            found = node["provenance"]
    return found


def marked_numbers(text: str) -> list[tuple[str, str, str, str, str]]:
    """(written, expected, source, key, format) for every marked number of a README-like text."""
    out = []
    for match in MARKED.finditer(text):
        written, percent, source, key, spec = match.groups()
        try:
            expected = number(source, key, spec)
        except KeyError as exc:
            expected = f"<{exc.args[0]}>"
        out.append((written + percent, expected, source, key, spec))
    return out
