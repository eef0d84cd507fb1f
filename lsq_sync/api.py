"""The Python API (what `import lsq_sync` gives): load a config, run a pull, push or sync,
get a RunResult. The CLI is a thin layer over the same core; this installs no signal
handlers unless asked, and leaves logging to the application (see logs.configure)."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from os import PathLike

from lsq_sync import config as config_mod
from lsq_sync.config import Config
from lsq_sync.control import Stop, StopReason
from lsq_sync.core import app
from lsq_sync.core.pull import PullOptions
from lsq_sync.core.result import RunResult
from lsq_sync.errors import ConfigError
from lsq_sync.store.leads import check_lead_id


def load_config(path: str | PathLike[str] | None = None, *,
                env: Mapping[str, str] | None = None) -> Config:
    """The configuration from `path` (else $LSQ_SYNC_CONFIG, else ./lsq_sync.toml), with
    the environment's overrides (`env`, default os.environ); ConfigError names what is
    wrong."""
    return config_mod.load(None if path is None else str(path), env=env)


def pull(config: Config, *, lead_ids: Sequence[str] | None = None, limit: int | None = None,
         calls: int | None = None, restart: bool = False, full: bool = False,
         hints: bool = False, stop: threading.Event | None = None,
         handle_signals: bool = False) -> RunResult:
    """One pull run over [leads].query (or just `lead_ids`, or its first `limit` leads);
    `full`: a new pass with :last_success bound to NULL (a full refresh); `calls`: at most
    that many API calls in this run (a pass stopped there is continued by the next pull);
    `hints`: the leads with pending webhook hints instead, oldest hint first.

    `stop`: set it (from another thread) to end the run gracefully. `handle_signals`:
    SIGINT/SIGTERM set the stop for the run's duration (main thread only)."""
    options = _pull_options(lead_ids, limit, restart, full, calls, hints)
    with _context(stop, handle_signals) as ctx:
        return app.pull(config, options, ctx)


def push(config: Config, *, stop: threading.Event | None = None,
         handle_signals: bool = False) -> RunResult:
    """One push run: every pending edit of lsq_task_edits, read, merged and sent."""
    with _context(stop, handle_signals) as ctx:
        return app.push(config, ctx)


def sync(config: Config, *, lead_ids: Sequence[str] | None = None, limit: int | None = None,
         calls: int | None = None, restart: bool = False, full: bool = False,
         stop: threading.Event | None = None, handle_signals: bool = False) -> RunResult:
    """One run that pushes, then pulls (the README says why in that order)."""
    options = _pull_options(lead_ids, limit, restart, full, calls)
    with _context(stop, handle_signals) as ctx:
        return app.sync(config, options, ctx)


def verify(config: Config, *, sample: int = 100, seed: int | None = None,
           stop: threading.Event | None = None, handle_signals: bool = False) -> RunResult:
    """A drift audit: `sample` leads drawn uniformly at random from [leads].query, each
    fetched and compared field by field with lsq_tasks before it is written. The result's
    `drift` holds the share of stale tasks with its 95% interval (a ratio estimator over
    the sampled leads, with the finite-population correction) and the share of stale
    leads (Wilson); `seed` makes the draw repeatable."""
    if isinstance(sample, bool) or not isinstance(sample, int) or sample < 1:
        raise ConfigError(f"sample must be a whole number from 1, not {sample!r}")
    with _context(stop, handle_signals) as ctx:
        return app.verify(config, sample=sample, seed=seed, ctx=ctx)


def _pull_options(lead_ids: Sequence[str] | None, limit: int | None, restart: bool,
                  full: bool, calls: int | None = None, hints: bool = False) -> PullOptions:
    checked = None
    if lead_ids is not None:
        if isinstance(lead_ids, str):
            raise ConfigError("lead_ids must be a list of lead ids, not one string")
        checked = []
        for value in lead_ids:
            lead_id, why = check_lead_id(value)
            if lead_id is None:
                raise ConfigError(f"lead id {str(value)[:60]!r} is not a GUID ({why})")
            checked.append(lead_id)
    for name, count in (("limit", limit), ("calls", calls)):
        if count is not None and (isinstance(count, bool) or not isinstance(count, int)
                                  or count < 1):
            raise ConfigError(f"{name} must be a whole number from 1, not {count!r}")
    return PullOptions(lead_ids=checked, limit=limit, restart=restart, full=full, calls=calls,
                       hints=hints)


@contextmanager
def _context(stop: threading.Event | None, handle_signals: bool) -> Iterator[app.Context]:
    ctx = app.Context()
    if stop is not None:
        # The run's own Stop (with its reason) follows the caller's event.
        ctx.stop = _Linked(stop)
    if not handle_signals:
        yield ctx
        return
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

    def handler(_signum: int, _frame: object) -> None:
        ctx.stop.set(StopReason.SIGNAL)

    for sig in previous:
        signal.signal(sig, handler)
    try:
        yield ctx
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


class _Linked(Stop):
    """A run's Stop that is also set when the caller's event is (checked at every wait)."""

    def __init__(self, outer: threading.Event) -> None:
        super().__init__()
        self._outer = outer

    def is_set(self) -> bool:
        if not super().is_set() and self._outer.is_set():
            self.set(StopReason.SIGNAL)
        return super().is_set()

    def wait(self, timeout: float | None = None) -> bool:
        # Short slices: the caller's event has no link to this one's condition.
        step = 0.05
        remaining = timeout
        while not self.is_set():
            slice_ = step if remaining is None else min(step, remaining)
            if slice_ <= 0:
                return False
            super().wait(slice_)
            if remaining is not None:
                remaining -= slice_
        return True
