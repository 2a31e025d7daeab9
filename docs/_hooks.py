"""MkDocs hooks (mkdocs.yml ``hooks:``) for the trioserve site.

The pages are written to be read in the repository too, so they link to repository files
outside docs/ as ``../benchmarks/results/...``. Those files are added to the site here and the
links rewritten to them; a link to a file that does not exist is left alone, and MkDocs'
strict link check then fails the build. The generated configuration reference must match
trioserve/config.py, or the build fails (as tests/test_config.py does).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files, InclusionLevel

REPO = Path(__file__).resolve().parent.parent
LINKED_DIRS = ["benchmarks/results"]  # repository folders whose files the pages link to
SUFFIXES = {".md", ".png", ".svg", ".json", ".txt", ".csv"}  # what pages link to
_OUTSIDE_LINK = re.compile(r"\]\(\.\./([^)#\s]+)")
log = logging.getLogger("mkdocs.plugins.trioserve")


def on_pre_build(config: Any) -> None:
    from trioserve.config_docs import render_configuration_doc

    committed = (REPO / "docs" / "configuration.md").read_text()
    if committed != render_configuration_doc():
        log.warning(
            "docs/configuration.md is stale: run "
            "`python -m trioserve.config_docs > docs/configuration.md`"
        )


def on_files(files: Files, config: Any) -> Files:
    for folder in LINKED_DIRS:
        for path in sorted((REPO / folder).rglob("*")):
            if path.is_file() and path.suffix in SUFFIXES:
                rel = path.relative_to(REPO).as_posix()
                file = File(rel, str(REPO), config["site_dir"], config["use_directory_urls"])
                file.inclusion = InclusionLevel.NOT_IN_NAV  # linked from a page, not in the nav
                files.append(file)
    return files


def on_page_markdown(markdown: str, page: Any, config: Any, files: Files) -> str:
    """``](../benchmarks/results/x.png)`` -> ``](benchmarks/results/x.png)`` when served."""

    def rewrite(match: re.Match[str]) -> str:
        target = match.group(1)
        return f"]({target}" if files.get_file_from_path(target) else match.group(0)

    return _OUTSIDE_LINK.sub(rewrite, markdown)
