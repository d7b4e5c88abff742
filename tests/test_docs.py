"""The documentation: the MkDocs site builds in strict mode (a broken link fails it), and README.md
stays a short page whose relative links all name files that exist."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]  # tests/ is one below the repository's root
README_MAX_LINES = 250
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")  # [text](target "title"), ![alt](target)
FENCE = re.compile(r"^```.*?^```", re.S | re.M)
EXTERNAL_ASSET = re.compile(r"<(?:script|link|img|iframe)\b[^>]*\b(?:src|href)=\"(?:https?:)?//", re.I)


def nav_pages(nav) -> list[str]:
    """The Markdown files of an mkdocs.yml nav, sections included."""
    pages = []
    for item in nav:
        value = next(iter(item.values())) if isinstance(item, dict) else item
        pages += nav_pages(value) if isinstance(value, list) else [value]
    return pages


def build(project: Path, site: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file",
                           str(project / "mkdocs.yml"), "--site-dir", str(site)],
                          capture_output=True, text=True, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"}, timeout=600)


def copy_project(tmp_path: Path) -> Path:
    """mkdocs.yml and docs/ in a folder of their own, to break without touching the repository."""
    project = tmp_path / "project"
    shutil.copytree(ROOT / "docs", project / "docs")
    shutil.copy2(ROOT / "mkdocs.yml", project / "mkdocs.yml")
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


@pytest.mark.process  # mkdocs build
def test_the_site_builds_strictly_with_every_page_of_the_nav(tmp_path):
    site = tmp_path / "site"
    done = build(ROOT, site)
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


def test_the_readme_is_short_and_names_the_two_commands():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= README_MAX_LINES
    assert "make repro" in text and "make test" in text


def test_every_relative_link_in_the_readme_names_an_existing_file():
    text = (ROOT / "README.md").read_text()
    links = relative_links(text)
    assert any(t.startswith("docs/") for t in links)  # the README links into the documentation
    assert broken_links(text, ROOT) == []


def test_the_link_check_finds_a_broken_link(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "here.md").write_text("# here\n")
    text = ("[ok](docs/here.md#a-section) ![img](docs/here.md) [gone](docs/gone.md) [web](https://example.org/x.md)\n"
            "[anchor](#quick-start) [mail](mailto:a@b.c)\n```\n[in code](docs/not-a-link.md)\n```\n")
    assert relative_links(text) == ["docs/here.md#a-section", "docs/here.md", "docs/gone.md"]
    assert broken_links(text, tmp_path) == ["docs/gone.md"]
