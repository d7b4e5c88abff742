"""params.yaml schema: load_params raises one-line UserErrors naming the key and the bad value."""

from __future__ import annotations

import pytest
import yaml
from pydantic import BaseModel

from helpers.digits import REPO
from mnist_vae.errors import UserError
from mnist_vae.params import Params, flatten, load_params


def one_line(message: str) -> bool:
    return bool(message) and "\n" not in message and "\r" not in message


def write_params(tmp_path, text: str, name: str = "params.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def load_error(tmp_path, text: str) -> str:
    path = write_params(tmp_path, text)
    with pytest.raises(UserError) as info:
        load_params(path)
    message = str(info.value)
    assert one_line(message), f"not one line: {message!r}"
    assert str(path) in message, "the message should name the file"
    return message


# --------------------------------------------------------------------------- bad values


@pytest.mark.parametrize(
    "text, key, shown_value",
    [
        # wrong types
        ("train:\n  epochs: ten\n", "train.epochs", "'ten'"),
        ("train:\n  epochs: 2.5\n", "train.epochs", "2.5"),
        ("train:\n  lr: fast\n", "train.lr", "'fast'"),
        ("render:\n  curves: 2\n", "render.curves", "2"),
        ("tracking:\n  experiment: {a: 1}\n", "tracking.experiment", "{'a': 1}"),
        ("model:\n  hidden_dims: 400\n", "model.hidden_dims", "400"),
        ("model:\n  gaussian_sigma: big\n", "model.gaussian_sigma", "'big'"),
        ("seed: true\n", "seed", "True"),
        ("model: 5\n", "model", "5"),
        # out of range
        ("train:\n  lr: 5\n", "train.lr", "5"),
        ("train:\n  lr: 0\n", "train.lr", "0"),
        ("train:\n  beta: -0.5\n", "train.beta", "-0.5"),
        ("model:\n  latent_dim: -3\n", "model.latent_dim", "-3"),
        ("model:\n  latent_dim: 0\n", "model.latent_dim", "0"),
        ("model:\n  hidden_dims: [400, -1]\n", "model.hidden_dims", "-1"),
        ("model:\n  gaussian_sigma: 0\n", "model.gaussian_sigma", "0"),
        ("seed: -1\n", "seed", "-1"),
        ("render:\n  samples_grid: 31\n", "render.samples_grid", "31"),
        ("render:\n  interpolation_steps: 1\n", "render.interpolation_steps", "1"),
        ("tracking:\n  experiment: ''\n", "tracking.experiment", "''"),
        ("data:\n  keras_file_hash: abc123\n", "data.keras_file_hash", "'abc123'"),
        ("data:\n  sha256:\n    x_train: ABC\n", "data.sha256.x_train", "'ABC'"),
        ("classifier:\n  channels: [32]\n", "classifier.channels", "[32]"),
        ("classifier:\n  epochs: 0\n", "classifier.epochs", "0"),
        ("quality:\n  n_samples: 1\n", "quality.n_samples", "1"),
        ("quality:\n  k: 0\n", "quality.k", "0"),
        ("quality:\n  probe_l2: -1\n", "quality.probe_l2", "-1"),
        ("render:\n  class_sheet: 31\n", "render.class_sheet", "31"),
        ("sampler:\n  gmm_components: 0\n", "sampler.gmm_components", "0"),
        ("sampler:\n  gmm_reg_covar: -1\n", "sampler.gmm_reg_covar", "-1"),
        ("sampler:\n  names: [flow]\n", "sampler.names", "'flow'"),
        ("sampler:\n  held_out: 0\n", "sampler.held_out", "0"),
        ("sampler:\n  held_out: 60000\n", "sampler.held_out", "60000"),
        ("sampler:\n  held_out: true\n", "sampler.held_out", "True"),
        ("sampler:\n  temperature: 0\n", "sampler.temperature", "0"),
        ("sampler:\n  temperature: 2.5\n", "sampler.temperature", "2.5"),
        ("sampler:\n  temperature: .nan\n", "sampler.temperature", "nan"),
        ("sampler:\n  gmm_max_iter: 0\n", "sampler.gmm_max_iter", "0"),
        ("train:\n  checkpoint_every: 0\n", "train.checkpoint_every", "0"),
        ("train:\n  checkpoint_every: -2\n", "train.checkpoint_every", "-2"),
    ],
)
def test_bad_value_names_key_and_value(tmp_path, text, key, shown_value):
    message = load_error(tmp_path, text)
    assert f"'{key}'" in message
    assert shown_value in message


@pytest.mark.parametrize(
    "text, key, allowed",
    [
        ("model:\n  activation: sigmoid\n", "model.activation", ["'relu'", "'tanh'"]),
        ("data:\n  source: http\n", "data.source", ["'auto'", "'keras'", "'pypi'", "'file'"]),
        ("dequantize:\n  mode: gaussian\n", "dequantize.mode", ["'notebook'", "'uniform'", "'none'", "'binarize'"]),
        ("train:\n  precision: fp16\n", "train.precision", ["'fp32'", "'bf16'"]),
        ("sampler:\n  fit_on: samples\n", "sampler.fit_on", ["'mu'", "'draws'"]),
        ("train:\n  lr_schedule: cosine\n", "train.lr_schedule", ["'constant'", "'burda'"]),
        ("model:\n  likelihood: poisson\n", "model.likelihood",
         ["'bernoulli'", "'continuous_bernoulli'", "'gaussian'"]),
    ],
)
def test_bad_enum_lists_allowed_values(tmp_path, text, key, allowed):
    bad = yaml.safe_load(text)
    section, field = key.split(".")
    message = load_error(tmp_path, text)
    assert f"'{key}'" in message
    assert repr(bad[section][field]) in message
    for value in allowed:
        assert value in message


def test_cross_field_rules(tmp_path):
    message = load_error(tmp_path, "data:\n  source: file\n  cache_dir: /somewhere\n")
    assert "data.path" in message and "'file'" in message
    assert "/somewhere" not in message, message  # the section's own message, not a dump of the section
    message = load_error(tmp_path, "train:\n  iw_samples: 5\n")
    assert "train.iw_samples" in message and "iwae" in message
    # the same iw_samples is fine with the iwae objective
    assert load_params(write_params(tmp_path, "train:\n  objective: iwae\n  iw_samples: 5\n")).train.iw_samples == 5


def test_vamp_components_are_bounded_and_checked_against_memory(tmp_path):
    message = load_error(tmp_path, "model:\n  prior: vamp\n  vamp_components: 0\n")
    assert "model.vamp_components" in message and "greater than 0" in message
    message = load_error(tmp_path, "model:\n  prior: vamp\n  vamp_components: 20000\n")
    assert "model.vamp_components" in message and "10000" in message
    # K x batch x iw_samples x latent_dim: 1000 x 128 x 20 x 20 = 51.2 M entries of log p(z) per step
    message = load_error(tmp_path, "model:\n  prior: vamp\n  vamp_components: 1000\n"
                                   "train:\n  objective: iwae\n  iw_samples: 20\n")
    assert "vamp_components" in message and "51200000" in message and "lower one" in message
    assert load_params(write_params(tmp_path, "model:\n  prior: vamp\n")).model.vamp_components == 500
    message = load_error(tmp_path, "model:\n  prior: vampprior\n")
    assert "model.prior" in message and "'standard'" in message and "'vamp'" in message
    # the standard prior ignores the component count
    assert load_params(write_params(tmp_path, "model:\n  vamp_components: 1000\n"
                                              "train:\n  objective: iwae\n  iw_samples: 20\n")).model.prior == "standard"


# --------------------------------------------------------------------------- unknown keys


@pytest.mark.parametrize(
    "text, bad_key, suggestion",
    [
        ("model:\n  lattent_dim: 3\n", "model.lattent_dim", "model.latent_dim"),
        ("train:\n  batchsize: 64\n", "train.batchsize", "train.batch_size"),
        ("data:\n  sha256:\n    x_trian: abc\n", "data.sha256.x_trian", "data.sha256.x_train"),
        ("modle:\n  latent_dim: 3\n", "modle", "model"),
        ("trian:\n  lr: 0.1\n", "trian", "train"),
    ],
)
def test_unknown_key_suggests_nearest(tmp_path, text, bad_key, suggestion):
    message = load_error(tmp_path, text)
    assert f"unknown key '{bad_key}'" in message
    assert f"'{suggestion}'" in message


def test_unknown_key_without_near_match_lists_the_section_keys(tmp_path):
    message = load_error(tmp_path, "train:\n  warp_drive: 9\n")
    assert "unknown key 'train.warp_drive'" in message
    assert "allowed keys" in message
    for key in ("epochs", "batch_size", "lr", "objective"):
        assert key in message


def test_unknown_top_level_section_lists_sections(tmp_path):
    message = load_error(tmp_path, "zzzzzz:\n  a: 1\n")
    assert "'zzzzzz'" in message
    for section in ("seed", "data", "dequantize", "model", "train", "evaluate", "render", "classifier", "quality",
                    "tracking"):
        assert section in message


# --------------------------------------------------------------------------- not a params file


@pytest.mark.parametrize("text, kind", [("- 1\n- 2\n", "list"), ("hello\n", "str"), ("42\n", "int")])
def test_non_mapping_file(tmp_path, text, kind):
    message = load_error(tmp_path, text)
    assert "mapping" in message and kind in message


@pytest.mark.parametrize("text", ["train: [1, 2\n", "train:\n\tlr: 1\n", "a: b: c\n", "model: {latent_dim: 3\n"])
def test_invalid_yaml(tmp_path, text):
    message = load_error(tmp_path, text)
    assert "not valid YAML" in message


def test_missing_file(tmp_path):
    missing = tmp_path / "nowhere" / "params.yaml"
    with pytest.raises(UserError) as info:
        load_params(missing)
    message = str(info.value)
    assert one_line(message)
    assert str(missing) in message and "not found" in message
    assert "--" not in message  # no option the stages do not have


def test_a_folder_is_not_a_params_file(tmp_path):
    folder = tmp_path / "params.yaml"
    folder.mkdir()
    with pytest.raises(UserError) as info:
        load_params(folder)
    assert one_line(str(info.value)) and "not found" in str(info.value)


def test_non_utf8_file_is_a_user_error(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_bytes(b"seed: 0\n# caf\xe9\n")
    with pytest.raises(UserError):
        load_params(path)


@pytest.mark.parametrize("text", ["train:\n  epochs: true\n", "model:\n  latent_dim: yes\n"])
def test_boolean_is_not_a_whole_number(tmp_path, text):
    load_error(tmp_path, text)


# --------------------------------------------------------------------------- good files


def test_empty_file_gives_defaults(tmp_path):
    assert load_params(write_params(tmp_path, "")) == Params()
    assert load_params(write_params(tmp_path, "# only a comment\n")) == Params()


def test_partial_file_keeps_other_defaults(tmp_path):
    p = load_params(write_params(tmp_path, "train:\n  lr: 0.01\nmodel:\n  hidden_dims: [8]\n"))
    assert p.train.lr == 0.01
    assert p.model.hidden_dims == [8]
    assert p.train.epochs == Params().train.epochs


def test_repo_params_yaml_validates():
    path = REPO / "params.yaml"
    p = load_params(path)
    flat = flatten(p, tuple(Params.model_fields))  # every section, the search spec too
    raw = yaml.safe_load(path.read_text())

    # every key the repo file sets is a dotted key of flatten(), with the file's value
    def walk(prefix, value):
        if isinstance(value, dict):
            for k, v in value.items():
                yield from walk(f"{prefix}.{k}" if prefix else k, v)
        else:
            yield prefix, value

    for key, value in walk("", raw):
        assert key in flat, key
        assert flat[key] == value, key


def test_flatten_gives_dotted_keys(tmp_path):
    p = load_params(write_params(tmp_path, "seed: 7\ntrain:\n  lr: 0.02\n"))
    flat = flatten(p)
    assert flat["train.lr"] == 0.02
    assert flat["seed"] == 7
    assert flat["model.hidden_dims"] == [400, 400]
    assert flat["data.sha256.x_train"] == p.data.sha256.x_train
    assert "train" not in flat and "data.sha256" not in flat
    assert not any(isinstance(v, dict) for v in flat.values())
    # exactly one entry per leaf field of the schema's result sections (the search spec is no result's param)
    assert set(flat) == {k for k in leaf_keys(Params) if not k.startswith("search.")}


def leaf_keys(model, prefix=""):
    for name, field in model.model_fields.items():
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            yield from leaf_keys(field.annotation, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}"


# --------------------------------------------------------------------------- through a stage


def test_iwae_is_the_plain_bound(tmp_path):
    with pytest.raises(UserError, match="plain IWAE bound"):
        load_params(write_params(tmp_path, "train:\n  objective: iwae\n  iw_samples: 5\n  beta: 4.0\n"))
    with pytest.raises(UserError, match="plain IWAE bound"):
        load_params(write_params(tmp_path, "train:\n  objective: iwae\n  iw_samples: 5\n  kl_warmup_epochs: 3\n"))


def test_dynamic_binarization_needs_binarized_data(tmp_path):
    with pytest.raises(UserError, match="dynamic_binarization needs dequantize.mode: binarize"):
        load_params(write_params(tmp_path, "train:\n  dynamic_binarization: true\n"))
    ok = "dequantize:\n  mode: binarize\ntrain:\n  dynamic_binarization: true\n"
    assert load_params(write_params(tmp_path, ok)).train.dynamic_binarization


def test_iwae_rows_per_step_are_bounded(tmp_path):
    # K x batch_size rows are decoded per step and all kept for the backward pass
    with pytest.raises(UserError) as info:
        load_params(write_params(tmp_path, "train:\n  objective: iwae\n  iw_samples: 257\n  batch_size: 128\n"))
    assert one_line(str(info.value)) and "32896" in str(info.value) and "32768" in str(info.value)
    assert load_params(write_params(tmp_path, "train:\n  objective: iwae\n  iw_samples: 256\n")).train.iw_samples == 256


def test_gaussian_sigma_floor_is_positive(tmp_path):
    assert load_params(write_params(tmp_path, "")).model.gaussian_sigma_min == 1e-3
    with pytest.raises(UserError, match="model.gaussian_sigma_min"):
        load_params(write_params(tmp_path, "model:\n  gaussian_sigma_min: 0\n"))


def test_the_search_section_is_validated_like_the_rest(tmp_path):
    p = load_params(write_params(tmp_path, "search:\n  study: s1\n  space:\n    train.lr: {low: 1.0e-4, high: 0.01, log: true}\n"
                                           "    model.latent_dim: [2, 8]\n"))
    assert p.search.space["model.latent_dim"] == [2, 8] and p.search.space["train.lr"].log
    assert "search" not in {k.split(".")[0] for k in flatten(p)}
    for text, says in (("search:\n  algorithm: cmaes\n", "search.algorithm"),
                       ("search:\n  sampler: tpe\n", "unknown key 'search.sampler'; did you mean 'search.algorithm'? (renamed)"),
                       ("search:\n  study: bad/name\n", "search.study"),
                       ("search:\n  n_trials: 0\n", "search.n_trials"),
                       ("search:\n  objectives: [{metric: iw_nll}]\n", "search.objectives"),
                       ("search:\n  space: {train.lr: {low: 0.0, high: 0.1, log: true}}\n", "log range needs low > 0"),
                       ("search:\n  space: {train.lr: {low: 0.1, high: 0.01}}\n", "'search.space.train.lr': a range needs low < high"),
                       ("search:\n  space: {train.lr: {low: 0.1}}\n", "'search.space.train.lr' needs the key 'high'"),
                       ("search:\n  space: {}\n", "search.space is empty")):
        assert says in load_error(tmp_path, text), text
