"""The documentation's structure, checked without the documentation tools (CI builds the site
itself with `make docs`): every page in mkdocs.yml's nav exists and every page is in the nav,
every `::: name` in an API page and every member it lists names something that imports, every
command of the CLI has its section, and every file a page includes exists."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

from rnnkit.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"


def nav_pages() -> list[str]:
    """The pages mkdocs.yml's nav names, in order (`- Title: path.md` lines under `nav:`)."""
    text = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    nav = re.search(r"^nav:\n((?:[ \t]+.*\n)+)", text, flags=re.M)
    assert nav, "mkdocs.yml must have a nav: block"
    return re.findall(r":\s*(\S+\.md)\s*$", nav.group(1), flags=re.M)


def resolve(dotted: str) -> object:
    """The object a dotted name stands for: the longest prefix that imports, then attributes."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr)
        return obj
    raise ModuleNotFoundError(dotted)


def api_entries() -> list[tuple[str, str, list[str]]]:
    """(page, dotted name, listed members) for every `::: name` block of the API pages."""
    entries = []
    for page in sorted((DOCS / "api").glob("*.md")):
        blocks = re.split(r"^::: ", page.read_text(encoding="utf-8"), flags=re.M)[1:]
        for block in blocks:
            name, _, options = block.partition("\n")
            members = re.search(r"^\s+members:\n((?:\s+- \S+\n)+)", options, flags=re.M)
            listed = re.findall(r"- (\S+)", members.group(1)) if members else []
            entries.append((page.name, name.strip(), listed))
    return entries


def test_nav_pages_exist_and_every_page_is_in_the_nav() -> None:
    pages = nav_pages()
    assert "index.md" in pages
    assert len(pages) == len(set(pages)), f"a page is in the nav twice: {pages}"
    missing = [p for p in pages if not (DOCS / p).is_file()]
    assert missing == [], f"pages named in mkdocs.yml's nav but not under docs/: {missing}"
    unlisted = sorted(str(p.relative_to(DOCS)) for p in DOCS.rglob("*.md") if str(p.relative_to(DOCS)) not in pages)
    assert unlisted == [], f"pages under docs/ that the nav leaves out: {unlisted}"


def test_the_api_reference_covers_the_public_modules() -> None:
    documented = {name for _, name, _ in api_entries()}
    for module in ("rnnkit", "rnnkit.convert", "rnnkit.export", "rnnkit.runs", "rnnkit.data", "rnnkit.models"):
        assert module in documented, f"no API page renders {module}"
    for module in ("rnnkit.workflows.train", "rnnkit.workflows.distributed"):
        assert module in documented, f"no API page renders {module}"


@pytest.mark.parametrize(("page", "name", "members"), api_entries(), ids=lambda v: v if isinstance(v, str) else None)
def test_api_names_import(page: str, name: str, members: list[str]) -> None:
    assert not name.split(".")[-1].startswith("_"), f"{page} documents the private name {name}"
    obj = resolve(name)
    absent = [m for m in members if not hasattr(obj, m)]
    assert absent == [], f"{page} lists members that {name} does not have: {absent}"


def test_every_command_has_its_section() -> None:
    parser = build_parser()
    (commands,) = [a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction"]
    text = (DOCS / "cli.md").read_text(encoding="utf-8")
    missing = [c for c in commands.choices if f"## `rnnkit {c}`" not in text]
    assert missing == [], f"docs/cli.md has no section for: {missing}"


def test_included_files_exist() -> None:
    for page in DOCS.rglob("*.md"):
        for included in re.findall(r'^--8<-- "([^"]+)"', page.read_text(encoding="utf-8"), flags=re.M):
            assert (ROOT / included).is_file(), f"{page.relative_to(ROOT)} includes {included}, which is missing"
