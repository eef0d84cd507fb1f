"""The Python API: what `import lsq_sync` gives schedulers, against the simulator."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

import lsq_sync
from lsq_sync.testing import Faults, Simulator

from .helpers import fill_leads_table, write_config


def test_every_public_name_resolves_and_importing_is_light() -> None:
    for name in lsq_sync.__all__:
        assert getattr(lsq_sync, name) is not None, name
    assert issubclass(lsq_sync.RunFailed, lsq_sync.LsqSyncError)
    with pytest.raises(AttributeError):
        lsq_sync.nothing_here  # noqa: B018
    # `import lsq_sync` loads no database or HTTP library until a name needs it.
    out = subprocess.run([sys.executable, "-c", "import sys, lsq_sync; print(sorted("
                          "m for m in ('sqlalchemy', 'httpx', 'alembic') if m in sys.modules))"],
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.fixture
def configured(tmp_path: Path, make_sim: Callable[..., Simulator], sqlite_url: str
               ) -> tuple[Path, Simulator]:
    sim = make_sim(leads=12, faults=Faults(mx_error_every=5))
    path = write_config(tmp_path / "lsq_sync.toml", sim, sqlite_url)
    from lsq_sync.store import db, schema
    schema.upgrade(db.make_engine(sqlite_url))
    fill_leads_table(sqlite_url, sim.state.lead_ids())
    return path, sim


def test_a_pull_from_python_returns_its_result_and_verdict(
        configured: tuple[Path, Simulator]) -> None:
    path, sim = configured
    config = lsq_sync.load_config(path, env={})
    good = [x for i, x in enumerate(sim.state.lead_ids()) if i % 5 != 1][:3]
    result = lsq_sync.pull(config, lead_ids=good)
    assert isinstance(result, lsq_sync.RunResult)
    assert result.command == lsq_sync.Command.PULL and result.status == "succeeded"
    assert not result.failed and result.raise_for_status() is result
    assert result.summary().startswith(f"pull run {result.run_id} succeeded: 3/3 leads pulled")
    whole = lsq_sync.pull(config)  # every fifth lead answers with an MX error
    assert whole.failed and whole.counts.leads_failed == 3
    with pytest.raises(lsq_sync.RunFailed) as caught:
        whole.raise_for_status()
    assert caught.value.result is whole
    assert str(caught.value) == (f"pull run {whole.run_id} is partial: 3 leads failed; "
                                 f"`lsq-sync runs show {whole.run_id}` says which and why")
    pushed = lsq_sync.push(config)
    assert pushed.command == "push" and not pushed.failed
    assert lsq_sync.sync(config, limit=2).counts.leads_total == 2


def test_bad_arguments_are_config_errors(configured: tuple[Path, Simulator]) -> None:
    path, _ = configured
    config = lsq_sync.load_config(path, env={})
    with pytest.raises(lsq_sync.ConfigError, match="is not a GUID"):
        lsq_sync.pull(config, lead_ids=["nope"])
    with pytest.raises(lsq_sync.ConfigError, match="not one string"):
        lsq_sync.pull(config, lead_ids="5a1b2c3d-0000-4000-8000-00000000abcd")
    with pytest.raises(lsq_sync.ConfigError, match="limit must be"):
        lsq_sync.pull(config, limit=0)
    with pytest.raises(lsq_sync.ConfigError, match="pass over the whole leads query"):
        lsq_sync.sync(config, full=True, limit=2)
    with pytest.raises(lsq_sync.ConfigError, match="does not exist"):
        lsq_sync.load_config(path.parent / "missing.toml", env={})


def test_a_stop_event_ends_the_run_gracefully_and_no_handler_is_left(
        configured: tuple[Path, Simulator]) -> None:
    path, _ = configured
    config = lsq_sync.load_config(path, env={})
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    stop = threading.Event()
    stop.set()  # the scheduler cancelled the task as it started
    result = lsq_sync.pull(config, stop=stop)
    assert result.by_signal and result.status == "partial" and result.counts.leads_ok == 0
    assert {sig: signal.getsignal(sig) for sig in before} == before
    again = lsq_sync.pull(config, handle_signals=True)  # resumes; handlers put back after
    assert again.counts.leads_total == 12
    assert {sig: signal.getsignal(sig) for sig in before} == before


def test_a_result_says_what_it_did_and_what_failed() -> None:
    counts = lsq_sync.RunCounts(leads_total=3, leads_ok=2, leads_failed=1, tasks_upserted=1,
                                edits_sent=1, edits_conflict=2, api_calls=4, throttled=1)
    result = lsq_sync.RunResult(7, lsq_sync.Command.SYNC, lsq_sync.RunStatus.PARTIAL, counts,
                                retries=2)
    assert result.summary() == ("sync run 7 partial: 2/3 leads pulled, 1 task written, "
                                "0 marked deleted, 1 edit sent, 4 API calls (1 throttled, "
                                "2 retried)")
    assert result.what_failed() == "1 lead failed, 2 edits held as conflicts"
    assert result.failed
    stopped = lsq_sync.RunResult(8, lsq_sync.Command.PUSH, lsq_sync.RunStatus.PARTIAL,
                                 lsq_sync.RunCounts(), by_signal=True)
    assert stopped.failed and stopped.what_failed() == "stopped by a signal"
    assert stopped.summary() == "push run 8 partial: 0 edits sent, 0 API calls (0 throttled)"
