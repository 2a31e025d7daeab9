"""docs/architecture.md shows the table of what differs by nature; it must be the code's."""

from __future__ import annotations

import re
from pathlib import Path

from .scenarios import BY_NAME
from .table import DIFFERENCES, KNOWN_BUGS, markdown_table
from .transports import VERSIONS

DOC = Path(__file__).resolve().parents[2] / "docs" / "architecture.md"


def test_the_architecture_page_shows_the_differences_table() -> None:
    text = DOC.read_text()
    match = re.search(
        r"<!-- contract-table:start -->\n(.*?)\n<!-- contract-table:end -->", text, re.S
    )
    assert match, "docs/architecture.md lost its contract-table markers"
    assert match.group(1).strip() == markdown_table(), (
        "docs/architecture.md's contract table differs from tests/contract/table.py: "
        "paste markdown_table()'s output between the markers"
    )


def test_the_tables_name_only_real_scenarios_and_versions() -> None:
    names = {v.name for v in VERSIONS}
    for scenario, version in [*DIFFERENCES, *KNOWN_BUGS]:
        assert scenario in BY_NAME, scenario
        assert version in names, version
    for (scenario, _), difference in DIFFERENCES.items():
        fields = BY_NAME[scenario].expect.__dataclass_fields__
        assert set(difference.changes) <= set(fields), difference
        assert difference.reason
