"""The docs stay a front door plus pages: a short README, links that resolve, no machine paths."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[2]
README = PROJECT / "README.md"
DOCS = sorted([README, PROJECT / "architecture.md", *(PROJECT / "docs").rglob("*.md")])
SOURCE_FOLDERS = ("fakescan", "scheduler", "worker", "migrations", "docker", "helm", "tests")
EVERY_DOC = sorted({*DOCS, *(doc for folder in SOURCE_FOLDERS for doc in (PROJECT / folder).rglob("*.md"))})
LINK = re.compile(r"\]\(([^)\s]+)\)")
MACHINE_PATHS = ("/work/", "/tmp/fresh")


def relative_links(page: Path) -> list[str]:
    """Link targets that point into the project (no scheme, no pure anchor), without the anchor."""
    targets = (match.group(1) for match in LINK.finditer(page.read_text()))
    return [t.split("#", 1)[0] for t in targets if not re.match(r"[a-z]+:|#", t)]


def test_readme_is_a_front_door_of_at_most_200_lines() -> None:
    assert len(README.read_text().splitlines()) <= 200


@pytest.mark.parametrize("page", DOCS, ids=lambda p: str(p.relative_to(PROJECT)))
def test_relative_links_resolve(page: Path) -> None:
    missing = [t for t in relative_links(page) if not (page.parent / t).exists()]
    assert missing == []


@pytest.mark.parametrize("page", EVERY_DOC, ids=lambda p: str(p.relative_to(PROJECT)))
def test_no_path_of_a_development_machine(page: Path) -> None:
    text = page.read_text()
    assert [p for p in MACHINE_PATHS if p in text] == []
