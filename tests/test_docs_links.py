"""Every relative link in the docs resolves, so a moved file or a renamed heading fails here.

mkdocs' strict build checks the same for the site, but only where mkdocs is installed and only
for what its hooks copy; this test needs nothing but the repository, and also covers README.md
and the links GitHub renders from docs/ to repository files (``../benchmarks/...``).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md")])
# [text](target) and [text](target "title"), but not images of remote badges or code spans.
_LINK = re.compile(r"(?<!`)\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
_FENCE = re.compile(r"^(```|~~~).*?^\1", re.M | re.S)
_INLINE_CODE = re.compile(r"`[^`\n]*`")
_HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*\s*$", re.M)


def slug(heading: str) -> str:
    """The anchor mkdocs' toc extension (and GitHub) make of a heading, for plain headings."""
    text = re.sub(r"[`*_]|\[([^\]]*)\]\([^)]*\)", r"\1", heading).strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return re.sub(r"[\s]+", "-", text)


def anchors(page: Path) -> set[str]:
    text = _FENCE.sub("", page.read_text())
    return {slug(h) for h in _HEADING.findall(text)}


def links(page: Path) -> list[str]:
    text = _INLINE_CODE.sub("", _FENCE.sub("", page.read_text()))
    return [m.group(1) for m in _LINK.finditer(text)]


def broken_links(page: Path) -> list[str]:
    out = []
    for target in links(page):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        path, _, fragment = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            out.append(f"{target}: no such file")
        elif fragment and dest.suffix == ".md" and fragment not in anchors(dest):
            out.append(f"{target}: no heading #{fragment} in {dest.name}")
    return out


@pytest.mark.parametrize("page", PAGES, ids=[p.relative_to(ROOT).as_posix() for p in PAGES])
def test_every_relative_link_resolves(page: Path) -> None:
    assert broken_links(page) == []


def test_the_check_fails_on_a_broken_link(tmp_path: Path) -> None:
    """So the test above can fail: a missing file and a missing heading are both caught."""
    (tmp_path / "other.md").write_text("# A heading\n")
    page = tmp_path / "page.md"
    page.write_text(
        "[ok](other.md) [ok](other.md#a-heading) [web](https://example.org/x)\n"
        "`[code](nowhere.md)`\n[gone](missing.txt) [bad anchor](other.md#nope)\n"
    )
    assert broken_links(page) == [
        "missing.txt: no such file",
        "other.md#nope: no heading #nope in other.md",
    ]
