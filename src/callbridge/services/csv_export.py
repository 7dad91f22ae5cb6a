"""CSV export, the one writer every export goes through: no cell can run as a spreadsheet formula.

Excel, LibreOffice Calc and Google Sheets read a cell that starts with ``= + - @`` (and, in some
versions, a tab or a carriage return before one of those) as a formula, quoted or not. A caller ID,
a contact name or a note comes from outside, so any of them could plant ``=HYPERLINK(…)`` in an
export an administrator later opens. :func:`spreadsheet_safe` puts an apostrophe before every such
cell (OWASP's rule for CSV injection): spreadsheets take a leading apostrophe as "this is text".

That includes every E.164 number (``+14155550100`` → ``'+14155550100``). It is on purpose: without
the apostrophe a spreadsheet reads the number as an integer, drops the ``+`` and shows
``1.42E+10``; with it the number stays text, as written.

A value that itself starts with an apostrophe gets one more (``'quoted`` → ``''quoted``), so the
rule back is exact: a program that reads the export (not a spreadsheet) drops one leading
apostrophe from any cell that has one — or asks the JSON API, which gives the values as stored.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator, Sequence

FORMULA_STARTS = frozenset("=+-@\t\r\0＝＋－＠")
"""A cell starting with one of these is neutralised: OWASP's ``= + - @``, tab and carriage return;
NUL (ASVS 1.2.10); and the full-width ``＝ ＋ － ＠`` that spreadsheets in East Asian locales take
for their ASCII forms."""


_MARKED = FORMULA_STARTS | {"'"}


def spreadsheet_safe(value: str) -> str:
    """``value`` as a spreadsheet shows it literally: an apostrophe before a formula start (and
    before an apostrophe, so that one leading apostrophe always comes off again)."""
    return "'" + value if value[:1] in _MARKED else value


def csv_chunks(
    header: Sequence[str], rows: Iterable[Sequence[str]], rows_per_chunk: int = 200
) -> Iterator[str]:
    """The CSV text of ``header`` and ``rows`` (every cell made :func:`spreadsheet_safe`), in chunks
    of about ``rows_per_chunk`` rows for a streamed answer."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow([spreadsheet_safe(v) for v in header])
    for i, row in enumerate(rows, 1):
        writer.writerow([spreadsheet_safe(v) for v in row])
        if i % rows_per_chunk == 0:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    tail = buffer.getvalue()
    if tail:
        yield tail
