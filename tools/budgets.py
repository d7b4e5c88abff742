"""The code's size budgets: no module over MAX_MODULE lines and no function over MAX_FUNCTION lines (an
argparse builder aside) in src/ and stages/, and no block written twice there (the `duplicates` tool, where
it is installed). Prints each breach and exits 1 if there is one.

    python tools/budgets.py
"""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = ("src", "stages")
MAX_MODULE, MAX_FUNCTION = 400, 50
EXEMPT = {"build_parser"}  # an argparse builder is a list of options, not logic


def python_files() -> list[Path]:
    return sorted(p for folder in FOLDERS for p in (ROOT / folder).rglob("*.py"))


def breaches() -> list[str]:
    """'path: what' for each module or function over its budget."""
    out = []
    for path in python_files():
        text = path.read_text()
        rel = path.relative_to(ROOT)
        lines = len(text.splitlines())
        if lines > MAX_MODULE:
            out.append(f"{rel}: {lines} lines (budget {MAX_MODULE})")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name not in EXEMPT:
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION:
                    out.append(f"{rel}:{node.lineno}: function {node.name} is {length} lines (budget {MAX_FUNCTION})")
    return out


def duplicates() -> str:
    """What the `duplicates` tool finds in src/ and stages/ ('' when none, or when it is not installed)."""
    if shutil.which("duplicates") is None:
        return ""
    found = []
    for folder in FOLDERS:
        out = subprocess.run(["duplicates", "--repo", str(ROOT / folder)], capture_output=True, text=True).stdout.strip()
        if out and not out.startswith("no duplicates"):
            found.append(out)
    return "\n".join(found)


def main() -> int:
    problems = breaches()
    for line in problems:
        print(line)
    twice = duplicates()
    if twice:
        print(twice)
    largest = max((len(p.read_text().splitlines()), p.relative_to(ROOT)) for p in python_files())
    print(f"{len(python_files())} modules; the largest {largest[1]} ({largest[0]} lines); "
          f"{len(problems)} over budget; duplicates: {'found' if twice else 'none' if shutil.which('duplicates') else 'not checked (tool not installed)'}")
    return 1 if problems or twice else 0


if __name__ == "__main__":
    sys.exit(main())
