"""The exception tree of lsq-sync; the CLI (``cli/commands.py``) maps each branch to an
exit code, and the Python API raises the same classes.

::

    LsqSyncError
    ├── ConfigError ................ bad configuration or usage (exit 2)
    ├── ApiError ................... the LeadSquared API did not give what was asked
    │   ├── FatalError ............. the run cannot go on: it stops at once (exit 3),
    │   │   │                        leaving its leads and edits to the next run
    │   │   ├── AuthError .......... 401: keys or host rejected
    │   │   └── UnreachableError ... connections to [lsq].base_url fail again and again
    │   ├── ThrottledError ......... rate limit hit; waited out, never a failure by itself
    │   ├── TransientError ......... 5xx without an MX body, timeout, dropped connection,
    │   │   │                        malformed body: retried with backoff
    │   │   └── StillThrottled ..... throttled max_throttle_waits times in one call: the
    │   │                            lead or edit waits for the next run
    │   └── RejectedError .......... a logical error (400, 404, MX exception, "Status":
    │       │                        "Error"): that lead or edit fails, no retry
    │       └── BadRecord .......... JSON, but not the shape the endpoint promises: that
    │                                lead (or task) fails alone
    ├── InvalidEdit ................ a queued edit fails its checks: that edit fails alone
    │                                (`lsq-sync edit` turns it into a ConfigError)
    ├── StoreError ................. the database cannot be used (exit 3)
    │   └── SchemaError ............ schema missing or not current (exit 3)
    ├── LockedError ................ another run holds the lock (exit 75)
    └── RunFailed .................. RunResult.raise_for_status(): the run finished, but
                                     leads or edits failed, or a signal stopped it (exit 1)

    Stopped ........................ not an error: the run is stopping (a signal); a wait
    └── CapReached ................. for a slot or a backoff ends at once / the run's
                                     call cap is used up (a planned stop, exit 0)

Messages never contain credentials: they are built from paths and API bodies,
never from request URLs or headers.
"""

from __future__ import annotations

from typing import Any


class LsqSyncError(Exception):
    """Base of every error lsq-sync raises on purpose."""


class ConfigError(LsqSyncError):
    """The configuration or the command line is wrong; the message names the key."""


class ApiError(LsqSyncError):
    """The API answered with an error, or did not answer usably."""

    def __init__(self, message: str, *, exception_type: str | None = None,
                 status_code: int | None = None) -> None:
        super().__init__(message)
        self.exception_type = exception_type
        self.status_code = status_code


class FatalError(ApiError):
    """The run cannot go on; retrying other leads or edits would fail the same way."""


class AuthError(FatalError):
    """The credentials or the host were rejected (HTTP 401)."""


class UnreachableError(FatalError):
    """Several connections in a row to [lsq].base_url failed (refused, DNS, TLS, no
    answer to connect): the host is wrong or down."""


class ThrottledError(ApiError):
    """The account's rate limit was exceeded; carries the limit the API stated."""

    def __init__(self, message: str, *, calls: int | None = None,
                 period_s: float | None = None, status_code: int | None = None) -> None:
        super().__init__(message, exception_type="MXAPIRateLimitExceededException",
                         status_code=status_code)
        self.calls = calls
        self.period_s = period_s


class TransientError(ApiError):
    """A failure worth retrying: the same request may succeed later."""


class RejectedError(ApiError):
    """A logical error: the same request will fail the same way again."""


class StillThrottled(TransientError):
    """Throttled `max_throttle_waits` times in one call: the lead or edit waits for the
    next run (retrying at once would only be throttled again)."""


class BadRecord(RejectedError):
    """The answer is JSON but not the shape RetrieveTaskByLeadId promises."""


class InvalidEdit(LsqSyncError, ValueError):
    """An edit that must not reach the API; the message becomes its last_error."""


class StoreError(LsqSyncError):
    """The database is unreachable or refused an operation."""


class SchemaError(StoreError):
    """The database schema is missing, old, or newer than this version."""


class LockedError(LsqSyncError):
    """Another run of the same kind holds the lock."""


class RunFailed(LsqSyncError):
    """A run finished with failures (or was stopped by a signal); `result` says what."""

    def __init__(self, message: str, *, result: Any) -> None:
        super().__init__(message)
        self.result = result  # the RunResult


class Stopped(Exception):
    """The wait for a slot was interrupted because the run is stopping."""


class CapReached(Stopped):
    """The run's call cap ([lsq].max_calls_per_run or _per_day) is used up."""
