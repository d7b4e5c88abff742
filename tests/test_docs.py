"""The documentation: the MkDocs site builds in strict mode (a broken link or anchor fails it), its pages and
README.md stay within their lengths, README's links and anchors into the site resolve, and every measured
number comes from its committed source: generated into the pages by tools/docs_macros.py, and checked
against its file for README.md (which GitHub shows raw)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import doc_numbers
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]  # tests/ is one below the repository's root
README_MAX_LINES = 200
PAGE_MAX_LINES = 250
DOCS_MAX_LINES = 1500
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")  # [text](target "title"), ![alt](target)
FENCE = re.compile(r"^```.*?^```", re.S | re.M)
EXTERNAL_ASSET = re.compile(r"<(?:script|link|img|iframe)\b[^>]*\b(?:src|href)=\"(?:https?:)?//", re.I)
DECIMAL = re.compile(r"(?<![\w.])\d+\.\d+(?![\w.])")
# decimals the pages may write by hand: none of them is a measurement (page -> number -> what it is)
NOT_MEASURED = {
    "index.md": {"3.11": "the Python version"},
    "compare.md": {"4.0": "a value of train.beta", "1.0": "train.beta's default"},
    "use.md": {"1.0": "the temperature's default"},
    "models.md": {"0.5": "a value of train.beta"},
    "pipeline.md": {"0.5": "half a grey level, in the dequantization's formulas"},
    "paper.md": {"0.001": "the paper's learning rate"},
    "evaluation.md": {"2.303": "ln 10"}, "figures.md": {"2.303": "ln 10"},
    "samplers.md": {"2.303": "ln 10", "0.95": "a value of sampler.temperature", "0.3": "a kernel bandwidth's factor"},
}


def nav_pages(nav) -> list[str]:
    """The Markdown files of an mkdocs.yml nav, sections included."""
    pages = []
    for item in nav:
        value = next(iter(item.values())) if isinstance(item, dict) else item
        pages += nav_pages(value) if isinstance(value, list) else [value]
    return pages


def build(project: Path, site: Path, lines: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    if lines:
        env["MNIST_VAE_DOCS_LINES"] = str(lines)  # tools/docs_macros.py writes each page's rendered length there
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file",
                           str(project / "mkdocs.yml"), "--site-dir", str(site)],
                          capture_output=True, text=True, env=env, timeout=600)


def copy_project(tmp_path: Path) -> Path:
    """What the site is built from, in a folder of its own, to break without touching the repository."""
    project = tmp_path / "project"
    for folder in ("docs", "tools", "metrics", "benchmarks/results"):
        shutil.copytree(ROOT / folder, project / folder)
    for name in ("mkdocs.yml", "params.yaml", "dvc.yaml", "Makefile", "pyproject.toml"):
        shutil.copy2(ROOT / name, project / name)
    return project


def relative_links(markdown: str) -> list[str]:
    """The link and image targets of a Markdown text that point into the repository (code blocks skipped)."""
    targets = LINK.findall(FENCE.sub("", markdown))
    return [t for t in targets if not re.match(r"^(?:[a-z][a-z0-9+.-]*:|//|#)", t, re.I)]


def warning_messages(log: str) -> list[str]:
    """MkDocs' WARNING messages, each with its indented continuation lines."""
    messages: list[list[str]] = []
    for line in log.splitlines():
        if not line[:1].isspace() and line.strip():  # a new message: WARNING, INFO, ...
            messages.append([line])
        elif messages and line.strip():
            messages[-1].append(line)
    return ["\n".join(m) for m in messages if m[0].startswith("WARNING")]


def broken_links(markdown: str, base: Path) -> list[str]:
    return [t for t in relative_links(markdown) if not (base / t.split("#", 1)[0]).exists()]


def dead_anchors(markdown: str, site: Path) -> list[str]:
    """The links into docs/ whose page or anchor the built site lacks (docs/x.md#a -> an id="a" in site/x.html)."""
    dead = []
    for target in relative_links(markdown):
        page, _, anchor = target.partition("#")
        if not page.startswith("docs/") or not page.endswith(".md"):
            continue
        html = site / (page[len("docs/"):-3] + ".html")
        if not html.is_file() or (anchor and f'id="{anchor}"' not in html.read_text()):
            dead.append(target)
    return dead


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading: lower case, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"`|\*\*|\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def dead_own_anchors(markdown: str) -> list[str]:
    """The links of a Markdown text to its own headings (#a-heading) that name no heading of it."""
    body = FENCE.sub("", markdown)
    anchors = {github_anchor(h) for h in re.findall(r"^#{1,6}\s+(.+?)\s*#*$", body, re.M)}
    return [t for t in LINK.findall(body) if t.startswith("#") and t[1:] not in anchors]


def prose(markdown: str) -> str:
    """The text a reader reads as written: no code, no macros, no comments, no link targets."""
    text = FENCE.sub("", markdown)
    text = re.sub(r"\{\{.*?\}\}|\{%.*?%\}|\{#.*?#\}", "", text, flags=re.S)
    text = re.sub(r"`[^`\n]*`|<!--.*?-->|<https?://[^>]*>", "", text, flags=re.S)
    return re.sub(r"\]\([^)]*\)", "]", text)


def hand_typed_numbers(page: str, markdown: str) -> list[str]:
    """Decimals written by hand in a page (not generated from a source), other than NOT_MEASURED's."""
    return [d for d in DECIMAL.findall(prose(markdown)) if d not in NOT_MEASURED.get(page, {})]


def unmarked_readme_numbers(markdown: str) -> list[str]:
    """Decimals in README.md's prose that no <!--n ...--> marker names a source for (the Python version aside)."""
    unmarked = re.sub(doc_numbers.MARKED, "", FENCE.sub("", markdown))
    unmarked = re.sub(r"`[^`\n]*`", "", unmarked)
    return [d for d in DECIMAL.findall(unmarked) if d != "3.11"]


def wrong_numbers(markdown: str) -> list[str]:
    """One line per marked number that differs from its source."""
    return [f"{written} != {expected}: the number marked <!--n {source} {key} {spec}--> differs from "
            f"{doc_numbers.path_of(source).relative_to(ROOT)}"
            for written, expected, source, key, spec in doc_numbers.marked_numbers(markdown) if written != expected]


# --------------------------------------------------------------------------- the site


@pytest.mark.process  # mkdocs build
def test_the_site_builds_strictly_with_every_page_of_the_nav_and_each_page_within_its_length(tmp_path):
    site, lines = tmp_path / "site", tmp_path / "lines.json"
    done = build(ROOT, site, lines)
    assert done.returncode == 0, done.stdout + done.stderr
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    assert config["strict"] is True and config["theme"]["font"] is False
    pages = nav_pages(config["nav"])
    assert sorted(pages) == sorted(p.relative_to(ROOT / "docs").as_posix() for p in (ROOT / "docs").rglob("*.md"))
    for page in pages:
        html = site / f"{page[:-3]}.html"
        assert html.is_file(), page
        # offline: no script, stylesheet, font or image is fetched from another host
        assert not EXTERNAL_ASSET.search(html.read_text()), page
    rendered = json.loads(lines.read_text())  # each page's Markdown after the macros: generated tables included
    assert sorted(rendered) == sorted(pages)
    too_long = {page: n for page, n in rendered.items() if n > PAGE_MAX_LINES}
    assert not too_long, f"pages over {PAGE_MAX_LINES} lines: {too_long}"
    assert sum(rendered.values()) <= DOCS_MAX_LINES, f"docs/ renders to {sum(rendered.values())} lines: {rendered}"
    # README's links into the site name pages and anchors that exist
    assert dead_anchors((ROOT / "README.md").read_text(), site) == []


@pytest.mark.process  # mkdocs build
def test_a_broken_link_a_missing_anchor_or_a_page_left_out_of_the_nav_fails_the_build(tmp_path):
    project = copy_project(tmp_path)
    with (project / "docs" / "pipeline.md").open("a") as f:
        f.write("\nSee [the missing page](no-such-page.md) and [a missing section](models.md#no-such-section).\n")
    (project / "docs" / "orphan.md").write_text("# Not in the nav\n")
    done = build(project, tmp_path / "site")
    assert done.returncode != 0
    warnings = warning_messages(done.stdout + done.stderr)
    for culprit in ("no-such-page.md", "no-such-section", "orphan.md"):  # each one is a warning, so fails
        assert any(culprit in line for line in warnings), warnings


@pytest.mark.process  # mkdocs build
def test_a_number_whose_source_lacks_it_fails_the_build(tmp_path):
    project = copy_project(tmp_path)
    headline = project / "metrics" / "headline.json"
    numbers = json.loads(headline.read_text())
    del numbers["sample_fid"]
    headline.write_text(json.dumps(numbers))
    done = build(project, tmp_path / "site")
    assert done.returncode != 0
    assert "sample_fid" in done.stdout + done.stderr


def test_each_page_and_all_of_docs_stay_within_their_lengths_as_written():
    lengths = {p.name: len(p.read_text().splitlines()) for p in (ROOT / "docs").rglob("*.md")}
    assert max(lengths.values()) <= PAGE_MAX_LINES, lengths
    assert sum(lengths.values()) <= DOCS_MAX_LINES, lengths


def test_no_page_types_a_measured_number_by_hand():
    found = {p.name: hand_typed_numbers(p.name, p.read_text()) for p in (ROOT / "docs").rglob("*.md")}
    assert {page: numbers for page, numbers in found.items() if numbers} == {}


def test_the_hand_typed_number_check_finds_one():
    page = "The FID is 290.0 here, {{ n('headline', 'sample_fid', '.1f') }} there, `0.25` in code, and ln 10 = 2.303.\n"
    assert hand_typed_numbers("samplers.md", page) == ["290.0"]


def test_every_gallery_image_is_shown_and_small():
    shown = set(re.findall(r"\(gallery/([^)]+)\)", (ROOT / "docs" / "figures.md").read_text()))
    images = {p.name: p.stat().st_size for p in (ROOT / "docs" / "gallery").glob("*.png")}
    assert sorted(images) == sorted(shown)
    assert {name: size for name, size in images.items() if size > 150_000} == {}


def test_every_results_file_says_when_where_and_how_it_was_measured():
    for path in sorted((ROOT / "benchmarks" / "results").glob("*.json")):
        provenance = json.loads(path.read_text()).get("provenance", {})
        missing = [k for k in ("date", "machine", "command") if not provenance.get(k)]
        assert not missing, f"{path.name}: provenance lacks {missing}"


# --------------------------------------------------------------------------- README.md


def test_the_readme_is_short_and_names_the_two_commands():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= README_MAX_LINES
    assert "make repro" in text and "make test" in text


def test_every_relative_link_in_the_readme_names_an_existing_file():
    text = (ROOT / "README.md").read_text()
    links = relative_links(text)
    assert any(t.startswith("docs/") for t in links)  # the README links into the documentation
    assert broken_links(text, ROOT) == []
    assert dead_own_anchors(text) == []  # and its links to its own sections name a heading


def test_every_number_in_the_readme_equals_its_source():
    text = (ROOT / "README.md").read_text()
    assert len(doc_numbers.marked_numbers(text)) >= 5
    assert wrong_numbers(text) == []


def test_every_measured_number_in_the_readme_names_its_source():
    assert unmarked_readme_numbers((ROOT / "README.md").read_text()) == []


def test_the_number_check_finds_a_number_that_differs_from_its_source():
    right = doc_numbers.number("headline", "sample_fid", ".1f")
    assert wrong_numbers(f"FID {right}<!--n headline sample_fid .1f-->") == []
    [problem] = wrong_numbers("FID 1.0<!--n headline sample_fid .1f-->")
    assert problem.startswith(f"1.0 != {right}") and "metrics/headline.json" in problem
    assert unmarked_readme_numbers("FID 290.0, Python 3.11") == ["290.0"]


def test_a_key_may_name_a_field_that_holds_a_dot(monkeypatch, tmp_path):
    (tmp_path / "temps.json").write_text('{"gmm": {"0.95": {"fid": 13.1}, "1": {"fid": 14.6}}, "rows": [{"a": 2}]}')
    monkeypatch.setattr(doc_numbers, "ROOT", tmp_path)
    monkeypatch.setattr(doc_numbers, "path_of", lambda source: tmp_path / f"{source}.json")
    doc_numbers.load.cache_clear()
    try:
        assert doc_numbers.number("temps", "gmm.0.95.fid", ".1f") == "13.1"
        assert doc_numbers.number("temps", "gmm.1.fid", ".1f") == "14.6"
        assert doc_numbers.number("temps", "rows.0.a") == "2"
        with pytest.raises(KeyError, match="gmm.0.9.fid"):
            doc_numbers.lookup("temps", "gmm.0.9.fid")
    finally:
        doc_numbers.load.cache_clear()


def test_the_link_check_finds_a_broken_link(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "here.md").write_text("# here\n")
    text = ("[ok](docs/here.md#a-section) ![img](docs/here.md) [gone](docs/gone.md) [web](https://example.org/x.md)\n"
            "[anchor](#quick-start) [mail](mailto:a@b.c)\n```\n[in code](docs/not-a-link.md)\n```\n")
    assert relative_links(text) == ["docs/here.md#a-section", "docs/here.md", "docs/gone.md"]
    assert broken_links(text, tmp_path) == ["docs/gone.md"]


def test_the_own_anchor_check_finds_a_link_to_a_missing_heading():
    text = "# mnist-vae\n\n## Change a param, and `compare`\n\n[ok](#change-a-param-and-compare) [gone](#quick-start)\n"
    assert dead_own_anchors(text) == ["#quick-start"]


def test_the_anchor_check_finds_a_dead_anchor_and_a_missing_page(tmp_path):
    (tmp_path / "here.html").write_text('<h2 id="a-section">A section</h2>')
    text = "[ok](docs/here.md#a-section) [top](docs/here.md) [dead](docs/here.md#gone) [no page](docs/gone.md)"
    assert dead_anchors(text, tmp_path) == ["docs/here.md#gone", "docs/gone.md"]
