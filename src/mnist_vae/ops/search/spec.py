"""The search's spec: params.yaml's `search` section, every space key and value checked by the schema before
any trial runs, and the params a trial's overrides give."""

from __future__ import annotations

import copy
import difflib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from mnist_vae.errors import UserError
from mnist_vae.params import SearchParams, SearchRange, flatten, load_params, validate


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
    if search.algorithm == "grid":
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
        raise UserError(f"search.algorithm grid needs choices or whole-number ranges without log; '{key}' is neither")
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


