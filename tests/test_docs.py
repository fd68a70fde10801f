"""
The documentation holds together: a short README that links into the site, a site whose
every page is in its navigation, figures drawn by code from saved data, none stale.
(Its examples run in tests/test_readme.py; `mkdocs build --strict` runs in .ci/run.)
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from benchmarks import _results, plots

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"


def nav_pages(nav: list[Any]) -> Iterator[str]:
    """Every file named in mkdocs.yml's nav, depth first."""
    for entry in nav:
        for value in entry.values() if isinstance(entry, dict) else [entry]:
            if isinstance(value, list):
                yield from nav_pages(value)
            else:
                yield value


def test_readme_is_short_and_links_into_the_docs() -> None:
    """Under 200 lines; every docs link resolves; every guide is linked from it."""
    text = README.read_text()
    assert len(text.splitlines()) < 200
    linked = set(re.findall(r"\]\((docs/[\w./-]+\.md)(?:#[\w-]+)?\)", text))
    for link in linked:
        assert (ROOT / link).is_file(), link
    guides = [
        "getting-started",
        "ranges",
        "living-data",
        "backfill",
        "watch",
        "warehouses",
        "testing",
        "security",
        "guarantees",
        "performance",
        "cli",
        "reference",
        "api",
    ]
    assert {f"docs/{g}.md" for g in guides} <= linked


def test_ci_runs_the_readme_test_command_verbatim() -> None:
    """.ci/run and the README's test command are the same line."""
    command = re.search(r"^python3 -m venv .*pytest$", README.read_text(), re.MULTILINE)
    assert command is not None
    assert command.group(0) in (ROOT / ".ci/run").read_text().splitlines()


def test_every_page_is_in_the_nav() -> None:
    """A page on disk that the navigation does not show is a page nobody finds."""
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    pages = list(nav_pages(config["nav"]))
    assert len(pages) == len(set(pages)), "a page twice in the nav"
    assert sorted(pages) == sorted(p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md"))


def test_every_image_is_shown_and_exists() -> None:
    """Each image a page shows exists; each file under docs/images is shown (none stale)."""
    shown = {
        (page.parent / src).resolve()
        for page in DOCS.rglob("*.md")
        for src in re.findall(r"!\[[^\]]*\]\(([^)\s]+)\)", page.read_text())
    }
    on_disk = {p.resolve() for p in (DOCS / "images").iterdir()}
    assert shown == on_disk


def test_benchmark_plots_are_drawn_from_the_saved_results(tmp_path: Path) -> None:
    """``--plots-only``'s drawing: one figure per measured section, from benchmarks/results.json."""
    said = plots.draw(_results.load(), tmp_path)
    assert said == [f"wrote {tmp_path / name}" for name, _ in plots.FIGURES.values()]
    fanout = (tmp_path / "perf-fanout.svg").read_text()
    assert "5 years: 261 windows, 73,007 labs" in fanout and "hand-written gather" in fanout
    storm = (tmp_path / "perf-storm.svg").read_text()
    assert "lodresults, rate_limit=10: done in" in storm and "storm: every answer 429" in storm
    memory = (tmp_path / "perf-memory.svg").read_text()
    assert re.search(r"10 y: [\d,]+ labs, peak [\d.]+ MB", memory)
    # The same figures the pages show (the drawing is deterministic for one matplotlib).
    assert {p.name for p in tmp_path.iterdir()} <= {p.name for p in (DOCS / "images").iterdir()}


def test_plots_skip_sections_never_measured(tmp_path: Path) -> None:
    """A section without data is named, not drawn; nothing else is written."""
    said = plots.draw({"fanout": _results.load()["fanout"]}, tmp_path)
    assert said[1:] == [
        "no storm measurements yet: perf-storm.svg not drawn",
        "no memory measurements yet: perf-memory.svg not drawn",
    ]
    assert [p.name for p in tmp_path.iterdir()] == ["perf-fanout.svg"]


def test_kept_results_merge_section_by_section(tmp_path: Path) -> None:
    """A run that measured one section replaces that section only."""
    path = tmp_path / "results.json"
    first = _results.Kept()
    first.keep("a", [1])
    first.keep("b", {"x": 2})
    _results.merge(first, path)
    again = _results.Kept()
    again.keep("b", {"x": 3})
    assert _results.merge(again, path) == {"a": [1], "b": {"x": 3}}
    assert _results.load(path) == {"a": [1], "b": {"x": 3}}


def test_windows_diagram_follows_the_planner(tmp_path: Path) -> None:
    """docs/diagrams.py draws the windows the client would ask for: 7 days, a day beyond."""
    spec = importlib.util.spec_from_file_location("docs_diagrams", DOCS / "diagrams.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("docs_diagrams", module)
    spec.loader.exec_module(module)
    spans = module.windows(0, module.RANGE_DAYS * 86400)
    assert spans[0][0] == -1 and spans[-1][1] == module.RANGE_DAYS + 1
    assert all(b - a <= 7 for a, b in spans)
    assert all(x[1] == y[0] for x, y in itertools.pairwise(spans))
    svg = module.draw(tmp_path / "w.svg").read_text()
    assert f"window {len(spans)}" in svg and "last 3 days: unsettled" in svg


def test_plots_only_redraws_without_measuring(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """``python -m benchmarks --plots-only`` reads results.json beside the tables, measures
    nothing and leaves the tables alone."""
    import benchmarks.__main__ as cli

    (tmp_path / "results.json").write_text(json.dumps({"memory": _results.load()["memory"]}))
    (tmp_path / "README.md").write_text("the tables\n")
    monkeypatch.setattr(cli, "SECTIONS", {})  # any measurement would fail: there is none
    monkeypatch.setattr(
        sys, "argv", ["benchmarks", "--plots-only", "--out", str(tmp_path / "README.md")]
    )
    cli.main()
    assert [p.name for p in (tmp_path / "images").iterdir()] == ["perf-memory.svg"]
    assert (tmp_path / "README.md").read_text() == "the tables\n"
    assert "not drawn" in capsys.readouterr().err
