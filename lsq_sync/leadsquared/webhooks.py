"""LeadSquared's webhook bodies (the one owner of their format): which leads and tasks a
task-create, task-update or tasks-complete webhook names."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import parse_qsl

import orjson

from lsq_sync.store.hints import Hint
from lsq_sync.store.leads import check_lead_id

LEAD_KEYS = ("relatedentityid", "leadid", "prospectid")  # matched without regard to case
TASK_KEYS = ("usertaskid", "taskid")
EVENT_KEYS = ("webhookevent", "eventtype", "event")
MAX_ITEMS = 1000  # records in one body; more is not a webhook
NESTED = 2        # how deep a record may sit (e.g. {"Current": {...}, "Before": {...}})


class BadWebhook(ValueError):
    """A body that names no lead or task: why, in words safe to log and answer."""


def parse(body: bytes, content_type: str, *, event: str | None = None) -> list[Hint]:
    """The hints a webhook body carries, duplicates folded: JSON (one object or a list),
    a form, or text holding JSON. `event`: the event number from the URL, if any."""
    kind = content_type.split(";", 1)[0].strip().lower()
    records: list[Mapping[str, Any]]
    if kind == "application/x-www-form-urlencoded":
        records = [_form(body)]
    else:
        try:
            records = _json_records(body)
        except BadWebhook:
            if kind in ("application/json", "text/json"):
                raise
            records = [_form(body)]  # text/plain or none: JSON, else a form
    seen: dict[tuple[str | None, str | None], Hint] = {}
    for record in records:
        hint = _hint(record, event)
        if hint is not None:
            seen.setdefault((hint.lead_id, hint.task_id), hint)
    if not seen:
        raise BadWebhook("the body names no lead (RelatedEntityId, LeadId, ProspectId) or "
                         "task (UserTaskId, TaskId) as a GUID")
    return list(seen.values())


def _json_records(body: bytes) -> list[Mapping[str, Any]]:
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise BadWebhook("the body is not valid JSON") from None
    items = value if isinstance(value, list) else [value]
    if len(items) > MAX_ITEMS:
        raise BadWebhook(f"more than {MAX_ITEMS} records in one body")
    records = [item for item in items if isinstance(item, Mapping)]
    if not records:
        raise BadWebhook("the JSON holds no object")
    return records


def _form(body: bytes) -> Mapping[str, Any]:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise BadWebhook("the body is neither JSON nor a UTF-8 form") from None
    try:
        pairs = parse_qsl(text, keep_blank_values=True, max_num_fields=MAX_ITEMS)
    except ValueError:
        raise BadWebhook(f"more than {MAX_ITEMS} fields in one form") from None
    if not pairs:
        raise BadWebhook("the body is neither JSON nor a form")
    return dict(pairs)


def _hint(record: Mapping[str, Any], event: str | None) -> Hint | None:
    lead = task = None
    for found in _scopes(record, NESTED):
        keys = {str(k).lower(): v for k, v in found.items()}
        lead = lead or _first_guid(keys, LEAD_KEYS)
        task = task or _first_guid(keys, TASK_KEYS)
        event = event or _event(keys)
    if lead is None and task is None:
        return None
    return Hint(lead, task, event)


def _scopes(record: Mapping[str, Any], depth: int) -> Iterator[Mapping[str, Any]]:
    """The record, then the objects nested in it (breadth first, `depth` levels)."""
    level = [record]
    for _ in range(depth + 1):
        yield from level
        level = [v for m in level for v in m.values() if isinstance(v, Mapping)][:MAX_ITEMS]


def _first_guid(keys: Mapping[str, Any], names: tuple[str, ...]) -> str | None:
    for name in names:
        value, _why = check_lead_id(keys.get(name))
        if value is not None:
            return value
    return None


def _event(keys: Mapping[str, Any]) -> str | None:
    for name in EVENT_KEYS:
        value = keys.get(name)
        if isinstance(value, int | str) and str(value).strip().isdigit():
            return str(value).strip()[:32]
    return None
