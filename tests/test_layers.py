"""The package's layers (pyproject.toml's [tool.importlinter] contract), checked by import-linter: a module
imports only from its own layer (where allowed) and the layers below it."""

from importlinter import configuration
from importlinter.application.use_cases import lint_imports

from helpers.digits import REPO


def test_the_layer_contract_is_kept(monkeypatch, capsys):
    monkeypatch.chdir(REPO)
    configuration.configure()  # what the lint-imports command does first
    kept = lint_imports(config_filename=str(REPO / "pyproject.toml"), cache_dir=None, no_logo=True)
    assert kept, capsys.readouterr().out
