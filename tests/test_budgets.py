"""The code's size budgets (tools/budgets.py): no module over 400 lines, no function over 50 (an argparse builder
aside), in src/ and stages/."""

import importlib.util

from helpers.digits import REPO


def budgets():
    spec = importlib.util.spec_from_file_location("budgets", REPO / "tools" / "budgets.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_no_module_or_function_is_over_its_budget():
    assert budgets().breaches() == []


def test_the_check_finds_a_long_function(tmp_path, monkeypatch):
    module = budgets()
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "long.py").write_text("def f():\n" + "    x = 1\n" * 60)
    monkeypatch.setattr(module, "ROOT", tmp_path)
    monkeypatch.setattr(module, "FOLDERS", ("src",))
    assert module.breaches() == ["src/long.py:1: function f is 61 lines (budget 50)"]
