"""Errors fit their reader: below the pipeline, the package says what is wrong and never which `dvc repro`
fixes it (wrong advice for someone using the Python API); the stage runner and the command line add that."""

import ast

from helpers.digits import REPO

KNOWS_THE_PIPELINE = ("pipeline", "ops", "command_line")  # the folders whose messages may name DVC's commands


def test_no_message_below_the_pipeline_names_a_dvc_command():
    package = REPO / "src" / "mnist_vae"
    found = []
    for path in sorted(package.rglob("*.py")):
        if path.relative_to(package).parts[0] in KNOWS_THE_PIPELINE:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and "dvc repro" in node.value \
                    and not _is_docstring(node, path):
                found.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert found == [], found


def _is_docstring(node, path) -> bool:
    """A string that is a module's, class's or function's docstring (it explains; it is not a message)."""
    tree = ast.parse(path.read_text())
    for owner in ast.walk(tree):
        if isinstance(owner, (ast.Module, ast.ClassDef, ast.FunctionDef)) and ast.get_docstring(owner, clean=False):
            first = owner.body[0]
            if isinstance(first, ast.Expr) and first.value.lineno == node.lineno:
                return True
    return False
