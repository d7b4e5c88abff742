"""One typed schema for all of params.yaml.

Every stage loads its parameters through :func:`load_params`, so a typo, a wrong type or an
out-of-range value stops the stage before it does any work, with one line that names the key,
the bad value and what is allowed.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Any, Optional, Union, get_origin

import yaml
from pydantic import BaseModel, Field, ValidationError, model_validator

from mnist_vae.errors import UserError
from mnist_vae.params.base import Count, Section
from mnist_vae.params.search import SearchObjective, SearchParams, SearchRange
from mnist_vae.params.sections import (
    DEQUANTIZE_MODES,
    MAX_IWAE_ROWS,
    MAX_VAMP_COMPONENTS,
    MAX_VAMP_ENTRIES,
    ClassifierParams,
    DataParams,
    DequantizeMode,
    DequantizeParams,
    Digests,
    EvaluateParams,
    ModelParams,
    QualityParams,
    RenderParams,
    SamplerParams,
    TrackingParams,
    TrainParams,
)

__all__ = ["Params", "load_params", "validate", "flatten", "flatten_tree", "RESULT_SECTIONS", "DEQUANTIZE_MODES",
           "DequantizeMode", "Digests", "DataParams", "DequantizeParams", "ModelParams", "TrainParams",
           "EvaluateParams", "RenderParams", "ClassifierParams", "QualityParams", "SamplerParams", "TrackingParams",
           "SearchParams", "SearchRange", "SearchObjective", "MAX_IWAE_ROWS", "MAX_VAMP_COMPONENTS", "MAX_VAMP_ENTRIES"]


class Params(Section):
    seed: Count = 0
    data: DataParams = Field(default_factory=DataParams)
    dequantize: DequantizeParams = Field(default_factory=DequantizeParams)
    model: ModelParams = Field(default_factory=ModelParams)
    train: TrainParams = Field(default_factory=TrainParams)
    evaluate: EvaluateParams = Field(default_factory=EvaluateParams)
    render: RenderParams = Field(default_factory=RenderParams)
    classifier: ClassifierParams = Field(default_factory=ClassifierParams)
    quality: QualityParams = Field(default_factory=QualityParams)
    sampler: SamplerParams = Field(default_factory=SamplerParams)
    tracking: TrackingParams = Field(default_factory=TrackingParams)
    search: SearchParams = Field(default_factory=SearchParams)

    @model_validator(mode="after")
    def _dynamic_binarization_needs_binary_data(self):
        if self.train.dynamic_binarization and self.dequantize.mode != "binarize":
            raise ValueError("train.dynamic_binarization needs dequantize.mode: binarize")
        return self

    @model_validator(mode="after")
    def _vamp_fits_in_memory(self):
        m, t = self.model, self.train
        entries = t.batch_size * t.iw_samples * m.vamp_components * m.latent_dim
        if m.prior == "vamp" and entries > MAX_VAMP_ENTRIES:
            raise ValueError(f"model.prior vamp: train.batch_size x train.iw_samples x model.vamp_components x "
                             f"model.latent_dim = {entries} entries of log p(z) per step is more than "
                             f"{MAX_VAMP_ENTRIES}; lower one of them")
        return self



def _field_path(loc: tuple) -> tuple[list[str], Optional[type[BaseModel]]]:
    """The dotted key an error location points at, and the section model that holds it."""
    model: Any = Params
    keys: list[str] = []
    for part in loc:
        if not (isinstance(part, str) and isinstance(model, type) and part in model.model_fields):
            if not keys or (isinstance(part, str) and isinstance(model, type) and issubclass(model, BaseModel)):
                keys.append(str(part))
            break
        keys.append(part)
        annotation = model.model_fields[part].annotation
        holder = model
        model = annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None
        if model is None:
            rest = loc[len(keys):]
            if get_origin(annotation) is dict and rest and isinstance(rest[0], str):
                keys.append(rest[0])  # an entry of a mapping: search.space.train.lr
            return keys, holder
    return keys, model


# keys that were renamed: the old name is refused with the new one
RENAMED = {"search.sampler": "search.algorithm"}


def _describe(err: dict) -> str:
    keys, holder = _field_path(err["loc"])
    key = ".".join(keys)
    if err["type"] == "extra_forbidden" and key in RENAMED:
        return f"unknown key '{key}'; did you mean '{RENAMED[key]}'? (renamed)"
    if err["type"] == "extra_forbidden":
        valid = list(holder.model_fields) if holder else []
        near = difflib.get_close_matches(keys[-1], valid, n=1, cutoff=0.5)
        where = ".".join(keys[:-1] + near[:1])
        hint = f"did you mean '{where}'?" if near else "allowed keys: " + ", ".join(valid)
        return f"unknown key '{key}'; {hint}"
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "missing" and key:
        return f"'{key}' needs the key '{err['loc'][-1]}'"
    if not key:
        return msg
    if err["type"] == "value_error" and isinstance(err.get("input"), dict):
        # a section's own check (a model validator): its message, and the key unless it names it; not the section
        return msg if msg.startswith(key) else f"bad value for '{key}': {msg}"
    return f"bad value for '{key}': {err.get('input')!r} ({msg})"


def load_params(path: Union[str, os.PathLike] = "params.yaml") -> Params:
    """Read and validate params.yaml; raise UserError with one line on the first problem."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path} not found; run the stage from the repository root, where params.yaml is")
    try:
        raw = yaml.safe_load(path.read_bytes()) or {}
    except yaml.YAMLError as exc:
        raise UserError(f"{path} is not valid YAML: {(str(exc).splitlines() or ['parse error'])[0]}") from None
    if not isinstance(raw, dict):
        raise UserError(f"{path} must be a mapping of sections, got {type(raw).__name__}")
    return validate(raw, str(path))


def validate(raw: dict, source: str) -> Params:
    """Params from a params.yaml-shaped mapping; UserError "<source>: <what is wrong>" on the first problem."""
    try:
        return Params.model_validate(raw)
    except ValidationError as exc:
        errors = exc.errors()
        # Union members (float | "learned") report one error each; keep the first per key.
        first = errors[0]
        raise UserError(f"{source}: {_describe(first)}") from None


def flatten_tree(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': 1}} -> {'a.b': 1}, the dotted keys MLflow shows."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        out.update(flatten_tree(value, name) if isinstance(value, dict) else {name: value})
    return out


# the sections a pipeline result depends on: every one but `search`, which only drives `mnist-vae search`
RESULT_SECTIONS = tuple(name for name in Params.model_fields if name != "search")


def flatten(params: Params, sections: tuple[str, ...] = RESULT_SECTIONS) -> dict[str, Any]:
    """params as {'train.lr': 0.001, ...}, as logged to MLflow: the result's sections, or the given ones."""
    return flatten_tree(params.model_dump(include=set(sections)))
