"""The package's import graph (grimp, import-linter's library): which package files a script runs, and so
which code each stage of dvc.yaml depends on. tests/pipeline/test_stage_dependencies.py checks dvc.yaml
against it; after adding or removing an import, rewrite dvc.yaml's code deps with

    python tools/stage_deps.py --write
"""

from __future__ import annotations

import argparse
import ast
import re
import sys
from functools import lru_cache
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = "mnist_vae"
SRC = REPO / "src"
# package files that a module reads as data, not as code
PACKAGE_DATA = {"mnist_vae.report.explorer": ["src/mnist_vae/report/explorer.html"],
                "mnist_vae.api.serving": ["src/mnist_vae/api/served_model.py"]}


@lru_cache(maxsize=1)
def graph():
    import grimp

    return grimp.build_graph(PACKAGE, cache_dir=None)


def module_file(module: str) -> str:
    """'mnist_vae.vae.model' -> 'src/mnist_vae/vae/model.py' (or .../__init__.py for a package)."""
    base = SRC.joinpath(*module.split("."))
    path = base / "__init__.py" if base.is_dir() else base.with_suffix(".py")
    return str(path.relative_to(REPO))


def imported_by_script(script: Path) -> set[str]:
    """The package modules a script imports itself (any import statement, at any depth)."""
    found = set()
    modules = graph().modules
    for node in ast.walk(ast.parse(script.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == PACKAGE)
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == PACKAGE:
            for alias in node.names:
                child = f"{node.module}.{alias.name}"
                found.add(child if child in modules else node.module)
    return found


def closure(modules: set[str]) -> set[str]:
    """The modules, every module they import (transitively, lazy imports too), and the packages above each
    (Python runs a package's __init__ before any of its modules)."""
    g = graph()
    out = set(modules)
    for module in modules:
        out |= g.find_upstream_modules(module)
    for module in list(out):
        parts = module.split(".")
        out.update(".".join(parts[:i]) for i in range(1, len(parts)))
    return out


def package_files(script: Path) -> list[str]:
    """The package's files (code and data) that running `script` may read, sorted."""
    modules = closure(imported_by_script(script))
    files = {module_file(m) for m in modules}
    for module, data in PACKAGE_DATA.items():
        if module in modules:
            files.update(data)
    return sorted(files)


def rewrite(dvc_yaml: Path) -> bool:
    """Set each stage's `src/mnist_vae/...` deps in dvc.yaml to package_files(stages/<stage>.py), keeping every
    other line as it is; whether the file changed."""
    lines = dvc_yaml.read_text().splitlines(keepends=True)
    out, stage, i = [], None, 0
    while i < len(lines):
        found = re.match(r"^  (\w+):\s*$", lines[i])
        stage = found.group(1) if found else stage
        if lines[i].startswith("      - src/mnist_vae/"):
            while i < len(lines) and lines[i].startswith("      - src/mnist_vae/"):
                i += 1
            out += [f"      - {f}\n" for f in package_files(REPO / "stages" / f"{stage}.py")]
            continue
        out.append(lines[i])
        i += 1
    changed = "".join(out) != "".join(lines)
    dvc_yaml.write_text("".join(out))
    return changed


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="dvc.yaml's code deps from the stage scripts' imports")
    parser.add_argument("--write", action="store_true", help="rewrite dvc.yaml's src/mnist_vae deps")
    args = parser.parse_args()
    sys.path.insert(0, str(SRC))
    if args.write:
        print("dvc.yaml: code deps rewritten" if rewrite(REPO / "dvc.yaml") else "dvc.yaml: code deps already exact")
    else:
        for script in sorted((REPO / "stages").glob("*.py")):
            print(script.stem, *package_files(script), sep="\n  ")
