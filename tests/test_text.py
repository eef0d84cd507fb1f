"""Aligned columns for people."""

from __future__ import annotations

from lsq_sync.text import table


def test_columns_are_as_wide_as_their_widest_cell_or_the_width_given() -> None:
    lines = table([(1, "pull", None), (12345, "push", "boom")], ["id", "command", "error"],
                  [3])
    assert lines == ["id     command  error",
                     "1      pull",
                     "12345  push     boom"]


def test_a_table_without_rows_is_its_header() -> None:
    assert table([], ["owner", "tasks"]) == ["owner  tasks"]
