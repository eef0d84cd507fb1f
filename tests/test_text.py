"""Aligned columns for people."""

from __future__ import annotations

from lsq_sync.cli.render import safe, table


def test_columns_are_as_wide_as_their_widest_cell_or_the_width_given() -> None:
    lines = table([(1, "pull", None), (12345, "push", "boom")], ["id", "command", "error"],
                  [3])
    assert lines == ["id     command  error",
                     "1      pull",
                     "12345  push     boom"]


def test_a_table_without_rows_is_its_header() -> None:
    assert table([], ["owner", "tasks"]) == ["owner  tasks"]


def test_safe_escapes_what_a_terminal_would_act_on() -> None:
    assert safe("task-1 \u00e9\u4e2d") == "task-1 \u00e9\u4e2d"
    assert safe(None) == "" and safe(42) == "42"
    assert safe("a\x1b[2Jb") == "a\\x1b[2Jb"
    assert safe("\x1b]0;owned\x07") == "\\x1b]0;owned\\x07"
    assert safe("x\u202ey\x7f\x9b\n") == "x\\u202ey\\x7f\\x9b\\n"
    assert all(c.isprintable() for c in safe("".join(map(chr, range(0, 0x250)))))


def test_a_table_makes_its_cells_safe() -> None:
    assert table([("t\x1b[2J",)], ["id"]) == ["id", "t\\x1b[2J"]
