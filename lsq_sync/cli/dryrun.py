"""`push --dry-run`'s findings in words (loaded only by that command: it needs the core)."""

from __future__ import annotations

import json

from lsq_sync.core.merge import Plan
from lsq_sync.core.push import Preview, Unreadable, WouldFail
from lsq_sync.leadsquared.fields import BY_COLUMN


def preview(found: Preview) -> list[str]:
    """`push --dry-run`'s lines for one finding (made safe by the caller)."""
    if isinstance(found, WouldFail):
        return [f"edit {found.edit_id} of task {found.task_id} would fail: {found.why}"]
    if isinstance(found, Unreadable):
        if found.lead_id is not None:
            return [f"lead {found.lead_id}: cannot read its tasks ({found.why}); the edits "
                    f"of {', '.join(found.task_ids)} would wait"]
        return [f"task {found.task_ids[0]}: cannot read its current state ({found.why}); "
                f"its edits would wait"]
    return _plan(found)


def _plan(decided: Plan) -> list[str]:
    head = f"task {decided.task_id} (edits {', '.join(map(str, decided.ids))})"
    if decided.outcome == "send":
        lines = [f"{head}: POST /v2/Task.svc/Update "
                 f"{json.dumps(decided.payload, sort_keys=True)}"]
        for name, value in decided.values.items():
            column = BY_COLUMN[name].compared
            lines.append(f"  {name}: LeadSquared has {decided.remote.get(column)!r}, "
                         f"sends {value!r}")
        lines += [f"  overwrites a change made in LeadSquared: {c}" for c in decided.overwritten]
        lines += [f"  keeps LeadSquared's value: {c}" for c in decided.dropped]
        return lines
    if decided.outcome == "applied":
        return [f"{head}: nothing to send, LeadSquared already holds the edited values"]
    return [f"{head}: held, nothing sent: {decided.describe()}"]
