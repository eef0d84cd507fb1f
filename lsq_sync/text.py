"""Text for people: aligned columns, as `runs` and the demo print them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def table(rows: Sequence[Sequence[Any]], headers: Sequence[str],
          widths: Sequence[int] = ()) -> list[str]:
    """`rows` under `headers` in columns as wide as their widest cell (at least `widths`),
    two spaces apart; None shows as an empty cell."""
    cells = [["" if value is None else str(value) for value in row] for row in rows]
    least = [*widths, *[0] * (len(headers) - len(widths))]
    sizes = [max(len(header), least[i], *(len(row[i]) for row in cells))
             for i, header in enumerate(headers)]
    return ["  ".join(cell.ljust(size) for cell, size in zip(row, sizes, strict=True)).rstrip()
            for row in [list(headers), *cells]]
