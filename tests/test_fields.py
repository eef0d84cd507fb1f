"""The table of task fields agrees with the tables, the parser, the Update and the CLI."""

from __future__ import annotations

from click.testing import CliRunner

from lsq_sync.cli import cli
from lsq_sync.core.merge import body, check
from lsq_sync.leadsquared.fields import EDITABLE, FIELDS, OWNER, READ
from lsq_sync.leadsquared.tasks import parse_task
from lsq_sync.store.edit_queue import EDIT_FIELDS, SNAPSHOT_FIELDS
from lsq_sync.store.models import task_edits, tasks

GUID = "1fc6bc8f-39da-11e6-b61b-22000aa8e760"
VALUES = {"text": "x", "date": "2027-01-02 03:04:05", "minutes": 15, "guid": GUID,
          "email": "a@b.co", "notify": "1100"}


def test_every_field_has_its_columns() -> None:
    assert [f.column for f in EDITABLE] == list(EDIT_FIELDS)  # lsq_task_edits, in order
    assert all(f.column in tasks.c for f in READ)
    assert all(f.column in task_edits.c for f in EDITABLE)
    assert set(SNAPSHOT_FIELDS) == {f.column for f in EDITABLE if f.column in tasks.c} | {
        "lead_id"}
    assert len({f.column for f in FIELDS}) == len(FIELDS)


def test_every_read_field_is_parsed_into_its_column() -> None:
    item = {"TaskID": "t-1", **{f.api: VALUES[f.kind] if f.kind != "minutes" else "15"
                                for f in READ if f.api}}
    row = parse_task(item, "l-1")
    for f in READ:
        assert row[f.column] is not None, f.column


def test_every_editable_field_reaches_the_update_under_its_key() -> None:
    for f in EDITABLE:
        clean = check({f.column: VALUES[f.kind]})
        assert clean == {f.column: VALUES[f.kind]}
        payload = body({"task_id": "t-1", "lead_id": "l-1"}, clean, "1000")
        assert payload[f.update] == VALUES[f.kind], f.column
        if f.column in OWNER:  # the owner goes one way: the other key is absent
            others = {o.update for o in EDITABLE if o.column in OWNER} - {f.update}
            assert not others & set(payload)


def test_every_editable_field_is_an_option_of_edit() -> None:
    shown = " ".join(CliRunner().invoke(cli, ["edit", "--help"]).output.split())
    for f in EDITABLE:
        assert f.option is not None
        assert f.option.split("/")[0] in shown and " ".join(f.help.split()[:4]) in shown
