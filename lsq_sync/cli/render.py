"""Text for people: aligned columns, as `runs` and the demo print them; every value made
safe for a terminal. (dryrun.py words `push --dry-run`'s findings.)"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def table(rows: Sequence[Sequence[Any]], headers: Sequence[str],
          widths: Sequence[int] = ()) -> list[str]:
    """`rows` under `headers` in columns as wide as their widest cell (at least `widths`),
    two spaces apart; None shows as an empty cell."""
    cells = [[safe(value) for value in row] for row in rows]
    least = [*widths, *[0] * (len(headers) - len(widths))]
    sizes = [max(len(header), least[i], *(len(row[i]) for row in cells))
             for i, header in enumerate(headers)]
    return ["  ".join(cell.ljust(size) for cell, size in zip(row, sizes, strict=True)).rstrip()
            for row in [list(headers), *cells]]


def safe(value: Any) -> str:
    """`value` as text a terminal shows as it is: every character that is not printable
    (ESC and the other controls, DEL, C1, bidi overrides) as its escape, so that an id or a
    message from the database or the API cannot move the cursor, retitle the window or
    reorder what follows."""
    text = "" if value is None else str(value)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)

