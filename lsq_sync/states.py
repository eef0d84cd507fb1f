"""The states of runs, their leads and queued edits, and the words enumerated config keys take."""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

# [push].on_conflict: what a field edited here AND changed in the CRM since becomes.
OnConflict = Literal["skip", "local", "remote"]
# The other config keys that take one of a few words (config.py checks them by these).
Auth = Literal["header", "query"]                         # [lsq].auth
NotifyBy = Literal["1100", "1000"]                        # [push].notify_by
LogFormat = Literal["auto", "json", "console"]            # [log].format, --log-format
LogLevel = Literal["debug", "info", "warning", "error"]   # [log].level, --log-level
Strategy = Literal["pass", "freshest"]                    # [refresh].strategy


class Command(StrEnum):
    """What a run does (lsq_sync_runs.command)."""

    PULL = "pull"
    PUSH = "push"
    SYNC = "sync"
    LISTEN = "listen"  # one run for as long as `listen` serves: its pulls of hinted leads
    VERIFY = "verify"  # a drift audit of a random sample of leads

    @property
    def pulls(self) -> bool:
        return self in (Command.PULL, Command.SYNC)

    @property
    def pushes(self) -> bool:
        return self in (Command.PUSH, Command.SYNC)


class RunStatus(StrEnum):
    """lsq_sync_runs.status."""

    RUNNING = "running"
    SUCCEEDED = "succeeded"
    PARTIAL = "partial"
    FAILED = "failed"


class LeadState(StrEnum):
    """lsq_run_leads.state: where a lead of a run's worklist stands."""

    TODO = "todo"        # still to fetch (by this run, or by the next if it stops)
    DONE = "done"        # done by an earlier run of the same pass (carried over)
    OK = "ok"            # fetched and written
    FAILED = "failed"    # the fetch or the write failed; kept for `runs show`
    PARTIAL = "partial"  # written, with bad tasks skipped; kept for `runs show`


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
