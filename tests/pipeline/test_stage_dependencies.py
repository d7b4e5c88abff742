"""dvc.yaml lists, as each stage's code dependencies, exactly the package files its script runs (its imports,
transitively, lazy ones too, and the package data they read), so that editing a module reruns exactly the
stages that use it."""

from pathlib import Path

import yaml
from stage_deps import REPO, package_files


def declared_code(stage: dict) -> list[str]:
    return sorted(d for d in stage["deps"] if d.startswith("src/"))


def test_each_stage_lists_exactly_the_package_files_its_script_runs():
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    wrong = {}
    for name, stage in stages.items():
        script = REPO / "stages" / f"{name}.py"
        assert f"stages/{name}.py" in stage["deps"], f"{name} does not list its own script"
        want = package_files(script)
        if declared_code(stage) != want:
            wrong[name] = {"missing": sorted(set(want) - set(declared_code(stage))),
                           "extra": sorted(set(declared_code(stage)) - set(want))}
    assert not wrong, (f"dvc.yaml's code deps differ from what the stage scripts import: {wrong}; "
                       "run `python tools/stage_deps.py --write`")


def test_a_module_the_training_does_not_import_is_not_a_dependency_of_train():
    # the example the layout exists for: the samplers and scoring are not the training's code
    train = package_files(REPO / "stages" / "train.py")
    assert "src/mnist_vae/vae/training.py" in train
    assert not [f for f in train if "/samplers/" in f or "/scoring/" in f or "/report/" in f]
    sampler = package_files(REPO / "stages" / "sampler.py")
    assert "src/mnist_vae/vae/training.py" not in sampler and "src/mnist_vae/vae/state.py" not in sampler


def test_the_graph_sees_a_lazy_import(tmp_path):
    # an import inside a function counts: the track stage imports the serving module only when it logs a model
    assert "src/mnist_vae/api/serving.py" in package_files(REPO / "stages" / "track.py")
    assert Path(REPO / "src/mnist_vae/api/served_model.py").is_file()
