"""lsq-sync: sync LeadSquared tasks into SQL and push local edits back.

The Python API, for schedulers (Airflow, Dagster, a Kubernetes job of your own)::

    import lsq_sync

    config = lsq_sync.load_config("lsq_sync.toml")
    result = lsq_sync.pull(config)          # or push(config), sync(config), verify(config)
    print(result.summary())
    result.raise_for_status()               # lsq_sync.RunFailed if leads or edits failed

Every error it raises on purpose is an `lsq_sync.LsqSyncError` (see `lsq_sync.errors`).
Names are loaded on first use, so that `lsq-sync --help` stays fast.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from lsq_sync.version import __version__

_EXPORTS = {
    "load_config": "lsq_sync.api", "pull": "lsq_sync.api", "push": "lsq_sync.api",
    "sync": "lsq_sync.api", "verify": "lsq_sync.api", "Config": "lsq_sync.config",
    "RunResult": "lsq_sync.core.result",
    "RunCounts": "lsq_sync.store.runs", "RunStatus": "lsq_sync.states",
    "Command": "lsq_sync.states",
    **{name: "lsq_sync.errors" for name in (
        "LsqSyncError", "ConfigError", "ApiError", "FatalError", "AuthError",
        "UnreachableError", "ThrottledError", "TransientError", "StillThrottled",
        "RejectedError", "BadRecord", "InvalidEdit", "StoreError", "SchemaError",
        "LockedError", "RunFailed")},
}
__all__ = [
    "ApiError", "AuthError", "BadRecord", "Command", "Config", "ConfigError", "FatalError",
    "InvalidEdit", "LockedError", "LsqSyncError", "RejectedError", "RunCounts", "RunFailed",
    "RunResult", "RunStatus", "SchemaError", "StillThrottled", "StoreError", "ThrottledError",
    "TransientError", "UnreachableError", "__version__", "load_config", "pull", "push", "sync",
    "verify",
]

if TYPE_CHECKING:
    from lsq_sync.api import load_config, pull, push, sync, verify
    from lsq_sync.config import Config
    from lsq_sync.core.result import RunResult
    from lsq_sync.errors import (
        ApiError,
        AuthError,
        BadRecord,
        ConfigError,
        FatalError,
        InvalidEdit,
        LockedError,
        LsqSyncError,
        RejectedError,
        RunFailed,
        SchemaError,
        StillThrottled,
        StoreError,
        ThrottledError,
        TransientError,
        UnreachableError,
    )
    from lsq_sync.states import Command, RunStatus
    from lsq_sync.store.runs import RunCounts


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'lsq_sync' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value
