"""The headline (headline.py): the numbers it copies, the one-line errors, and dvc.yaml's stage agreeing with it."""

import json
from pathlib import Path

import pytest
import yaml

from helpers.digits import REPO
from mnist_vae.errors import FileProblem, UserError
from mnist_vae.pipeline import headline


def write_metrics(root: Path, bpd: bool = False) -> None:
    test = {"nelbo": 101.5, "iw_nll": 99.25, **({"bpd": 1.25} if bpd else {})}
    files = {
        "metrics/eval.json": {"test": test, "posterior": {"active_units": 17, "mutual_info": 4.0},
                              "quality": {"samples": {"fid": 12.5, "precision": 0.75, "recall": 0.5},
                                          "best": {"sampler": "gmm", "fid": 8.5, "precision": 0.8, "recall": 0.625},
                                          "floor": {"fid": 6.25, "precision": 0.9, "recall": 0.7},
                                          "reconstructions": {"fid": 3.5, "accuracy": 0.875},
                                          "probe": {"test_accuracy": 0.9375}}},
        "metrics/train.json": {"total_time": 61.0, "train_total": 100.0},
        "metrics/classifier.json": {"test_accuracy": 0.99},
    }
    for name, tree in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(json.dumps(tree))


def test_the_headline_copies_each_number_from_where_it_was_written(tmp_path):
    write_metrics(tmp_path)
    assert headline.collect(tmp_path) == {
        "test_nelbo": 101.5, "test_nll_iwae": 99.25, "active_units": 17, "sample_fid": 12.5,
        "best_sample_fid": 8.5, "best_sample_precision": 0.8, "best_sample_recall": 0.625, "decoder_floor_fid": 6.25,
        "reconstruction_fid": 3.5, "reconstruction_accuracy": 0.875, "probe_accuracy": 0.9375, "train_time": 61.0,
        "classifier_accuracy": 0.99}
    write_metrics(tmp_path, bpd=True)
    assert headline.collect(tmp_path)["test_bpd"] == 1.25  # present only where evaluate writes it


def test_a_missing_file_or_number_is_one_line(tmp_path):
    write_metrics(tmp_path)
    (tmp_path / "metrics/classifier.json").unlink()
    with pytest.raises(FileProblem, match=r"metrics/classifier.json is missing$") as info:
        headline.collect(tmp_path)
    assert info.value.path == tmp_path / "metrics/classifier.json"
    write_metrics(tmp_path)
    (tmp_path / "metrics/train.json").write_text(json.dumps({"train_total": 100.0}))
    with pytest.raises(UserError, match=r"metrics/train.json has no number at total_time \(for train_time\)"):
        headline.collect(tmp_path)
    (tmp_path / "metrics/train.json").write_text('{"total_time": ')
    with pytest.raises(UserError, match="metrics/train.json is unreadable"):
        headline.collect(tmp_path)


def test_the_stage_reads_exactly_the_files_the_headline_names_and_is_the_only_metric():
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    deps = stages["headline"]["deps"]
    assert sorted(d for d in deps if d.startswith("metrics/")) == headline.files()
    assert stages["headline"]["metrics"] == [{"metrics/headline.json": {"cache": False}}]
    assert [name for name, stage in stages.items() if "metrics" in stage] == ["headline"]
    assert len(headline.HEADLINE) <= 15  # `dvc exp show` stays readable
