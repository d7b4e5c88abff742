"""The documentation's macros (mkdocs-macros-plugin, `make docs`): numbers from their committed sources,
the params from params.yaml, the make targets from the Makefile, MLflow's metric names from the code.

    {{ n("headline", "sample_fid", ".1f") }}        290.0, from metrics/headline.json
    {{ source("bench") }}                           where and how benchmarks/results/bench.json was measured
    {{ data("gallery").runs.beta20.active_units }}  any value, for tables built with Jinja loops
    {{ param("train.beta") }}                       a default of params.yaml, as code
    {{ params_table("train") }}                     sections of params.yaml: key, default, its comment
    {{ make_targets() }}                            every make target with its ## comment
    {{ metric_name("eval", "quality.samples.fid") }} the number's name in an MLflow run
    {{ headline_table() }}                          metrics/headline.json's columns and their sources
    {{ stages_table({"train": "...", ...}) }}       dvc.yaml's stages, their params and outputs
    {{ markers_table() }}                           the test tiers' markers from pyproject.toml

A missing source or key fails the build (on_error_fail), so a page cannot show a number its file lacks.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
import doc_numbers  # noqa: E402

ROOT = doc_numbers.ROOT
LINES_FILE = "MNIST_VAE_DOCS_LINES"  # if set, a JSON file to write each page's rendered line count to
_lines: dict[str, int] = {}


def fmt(value, spec: str = "") -> str:
    return doc_numbers.formatted(value, spec)


def n(source: str, key: str, spec: str = "") -> str:
    return doc_numbers.number(source, key, spec)


def data(source: str):
    return doc_numbers.load(source)


def source(name: str, key: str = "") -> str:
    """One line: the results file, its date, machine and command (or, where its provenance is not a plain date,
    machine and command, a pointer to it)."""
    p = doc_numbers.provenance(name, key)
    where = doc_numbers.path_of(name).relative_to(ROOT).as_posix()
    if not all(isinstance(p.get(k), str) for k in ("date", "machine", "command")) or len(p["date"]) > 40:
        return f"*Source: `{where}`; its `provenance` says when, where and how it was measured.*"
    average = p.get("load_average") or []  # [low, high] as recorded by hand, or uptime's 1-, 5- and 15-minute values
    load = f", load average {average[0]}–{average[1]}" if len(average) == 2 else (
        f", load average {average[0]}" if average else "")
    return (f"*Source: `{where}`, measured {p['date']} on {p['machine']}{load}, "
            f"with `{p['command']}`.*")


def param(key: str) -> str:
    return f"`{_value(doc_numbers.lookup('params', key))}`"


def _value(value) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str) and len(value) > 40:
        return value[:24] + "…"
    if value == "":
        return '""'
    return json.dumps(value) if isinstance(value, (list, dict)) else str(value)


def _comments() -> dict[str, str]:
    """params.yaml's end-of-line comments by dotted key (two levels)."""
    out, section = {}, None
    for line in (ROOT / "params.yaml").read_text().splitlines():
        found = re.match(r"^(\s*)([A-Za-z0-9_.]+):(?:[^#]*?)(?:\s+#\s*(.*))?$", line)
        if not found:
            continue
        indent, key, comment = found.groups()
        if not indent:
            section = key
            dotted = key
        elif len(indent) == 2 and section:
            dotted = f"{section}.{key}"
        else:
            continue
        out[dotted] = comment or ""
    return out


def params_table(*sections: str) -> str:
    """One table of params.yaml's keys in `sections`: key, default, its comment."""
    params, comments = doc_numbers.load("params"), _comments()
    rows = ["| key | default | what it does |", "|---|---|---|"]
    for section in sections:
        values = params[section] if isinstance(params[section], dict) else {None: params[section]}
        for key, value in values.items():
            dotted = f"{section}.{key}" if key else section
            text = comments.get(dotted, "").replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")
            rows.append(f"| `{dotted}` | `{_value(value)}` | {text} |")
    return "\n".join(rows)


def make_targets() -> str:
    rows = ["| target | what it does |", "|---|---|"]
    for line in (ROOT / "Makefile").read_text().splitlines():
        found = re.match(r"^([a-z][a-z-]*):.*?##\s*(.*)$", line)
        if found:
            text = found.group(2).replace("|", "\\|")
            rows.append(f"| `make {found.group(1)}` | {text} |")
    return "\n".join(rows)


def _shown(value) -> str:
    if isinstance(value, int):
        return str(value)
    return fmt(value, ".2f" if abs(value) >= 1 else ".4f")


def headline_table() -> str:
    """metrics/headline.json's columns: where each is copied from (pipeline/headline.py), the baseline's value."""
    from mnist_vae.pipeline.headline import HEADLINE

    values = doc_numbers.load("headline")
    rows = ["| column | copied from | committed baseline |", "|---|---|---|"]
    for name, number in HEADLINE.items():
        shown = _shown(values[name]) if name in values else "(absent under the default params)"
        rows.append(f"| `{name}` | `{number.file}`: `{number.key}` | {shown} |")
    return "\n".join(rows)


def stages_table(what: dict) -> str:
    """dvc.yaml's stages: what each does (`what`, by stage), the params it reads, the outputs it writes."""
    import yaml

    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    if set(what) != set(stages):
        raise ValueError(f"stages_table: describe exactly dvc.yaml's stages {sorted(stages)}, got {sorted(what)}")
    rows = ["| stage | what it does | params it reads | writes |", "|---|---|---|---|"]
    for name, stage in stages.items():
        params = ", ".join(f"`{p}`" for p in stage.get("params", [])) or "none"
        outs = [next(iter(o)) if isinstance(o, dict) else o for o in stage.get("outs", []) + stage.get("metrics", [])]
        rows.append(f"| `{name}` | {what[name]} | {params} | {', '.join(f'`{o}`' for o in outs) or 'the MLflow store'} |")
    return "\n".join(rows)


def markers_table() -> str:
    """The test tiers' markers, as pyproject.toml declares them."""
    import tomllib

    markers = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]["markers"]
    rows = ["| marker | what its tests need |", "|---|---|"]
    for line in markers:
        name, text = line.split(":", 1)
        rows.append(f"| `{name}` | {text.strip()} |")
    return "\n".join(rows)


def metric_name(prefix: str, key: str) -> str:
    from mnist_vae.pipeline.run_page import metric_name as name

    return f"`{name(prefix, key)}`"


def define_env(env):
    for macro in (fmt, n, data, source, param, params_table, make_targets, metric_name, headline_table, stages_table, markers_table):
        env.macro(macro)


def on_pre_page_macros(env):
    """A line holding only a {% block tag %} renders as no line at all (Jinja's trim_blocks, lstrip_blocks)."""
    env.env.trim_blocks = env.env.lstrip_blocks = True


def on_post_page_macros(env):
    """Each page's rendered Markdown line count, for the length test (tests/test_docs.py)."""
    target = os.environ.get(LINES_FILE)
    if target:
        _lines[env.page.file.src_path] = len(env.markdown.splitlines())
        Path(target).write_text(json.dumps(_lines, indent=1, sort_keys=True))
