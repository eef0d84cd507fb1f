"""The states of runs, staged leads and queued edits, and how edit conflicts settle."""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

# [push].on_conflict: what a field edited here AND changed in the CRM since becomes.
OnConflict = Literal["skip", "local", "remote"]


class RunStatus(StrEnum):
    """lsq_sync_runs.status."""

    RUNNING = "running"
    SUCCEEDED = "succeeded"
    PARTIAL = "partial"
    FAILED = "failed"


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
