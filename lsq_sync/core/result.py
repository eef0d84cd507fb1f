"""What a run returns: its id, status and counts, with its own sentence and verdict (as
dlt's LoadInfo carries its own)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lsq_sync.errors import RunFailed
from lsq_sync.states import Command, RunStatus
from lsq_sync.store.runs import RunCounts


def _plural(n: int, word: str) -> str:
    return f"{n:,} {word}" + ("" if n == 1 else "s")


@dataclass(frozen=True)
class RunResult:
    """One run's outcome. `failed`: something in it failed, or a signal stopped it (a stop
    at a call cap is planned, not a failure)."""

    run_id: int
    command: Command
    status: RunStatus
    counts: RunCounts
    stopped: str | None = None      # why it ended before doing everything (cap, signal)
    by_signal: bool = False
    retries: int = 0                # transient failures retried (5xx, timeouts, drops)
    drift: dict[str, Any] | None = None  # verify: what the sample found (Drift.as_dict)

    @property
    def failed(self) -> bool:
        return bool(self.counts.failures) or self.by_signal

    def summary(self) -> str:
        """One line that says what the run did, for people."""
        c = self.counts
        parts = []
        if self.command in (Command.PULL, Command.SYNC):
            parts.append(f"{c.leads_ok:,}/{c.leads_total:,} leads pulled, "
                         f"{_plural(c.tasks_upserted, 'task')} written, "
                         f"{c.tasks_deleted:,} marked deleted")
        if self.command in (Command.PUSH, Command.SYNC):
            parts.append(f"{_plural(c.edits_sent, 'edit')} sent")
        if self.command == Command.VERIFY and self.drift is not None:
            d = self.drift
            parts.append(f"{d['sampled']:,} of {d['population']:,} leads sampled: "
                         f"{d['stale_share']:.2%} of tasks stale (95% interval "
                         f"{d['stale_low']:.2%} to {d['stale_high']:.2%}), "
                         f"{d['lead_share']:.2%} of leads")
        retried = f", {self.retries:,} retried" if self.retries else ""
        parts.append(f"{_plural(c.api_calls, 'API call')} ({c.throttled:,} throttled{retried})")
        return f"{self.command} run {self.run_id} {self.status}: " + ", ".join(parts)

    def what_failed(self) -> str:
        """What made the run partial, e.g. '2 leads failed, 1 edit held as a conflict'."""
        c = self.counts
        parts = [text for n, text in (
            (c.leads_failed, f"{_plural(c.leads_failed, 'lead')} failed"),
            (c.tasks_skipped, f"{_plural(c.tasks_skipped, 'bad task')} skipped"),
            (c.edits_failed, f"{_plural(c.edits_failed, 'edit')} failed"),
            (c.edits_conflict, f"{_plural(c.edits_conflict, 'edit')} held as conflicts"),
        ) if n]
        if self.by_signal:
            parts.append("stopped by a signal")
        return ", ".join(parts)

    def raise_for_status(self) -> RunResult:
        """Raise RunFailed if the run failed (see `failed`); else return the result."""
        if self.failed:
            raise RunFailed(f"{self.command} run {self.run_id} is {self.status}: "
                            f"{self.what_failed()}; `lsq-sync runs show {self.run_id}` says "
                            f"which and why", result=self)
        return self
