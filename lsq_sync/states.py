"""The states a queued edit can be in (lsq_task_edits.status), and how conflicts settle."""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

# [push].on_conflict: what a field edited here AND changed in the CRM since becomes.
OnConflict = Literal["skip", "local", "remote"]


class EditStatus(StrEnum):
    PENDING = "pending"
    SENT = "sent"
    FAILED = "failed"
    CONFLICT = "conflict"
    CANCELLED = "cancelled"

    @classmethod
    def parse(cls, value: str | None) -> EditStatus | None:
        """What another system's value means: NULL is pending, case and spaces do not
        matter; None for a value that is no status at all."""
        if value is None:
            return cls.PENDING
        try:
            return cls(value.strip().lower())
        except ValueError:
            return None
