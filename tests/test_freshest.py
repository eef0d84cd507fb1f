"""The freshest strategy's estimator, allocation and order."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

from lsq_sync.core.freshest import History, allocate, cho_rate, estimate, order

NOW = datetime(2026, 6, 1, tzinfo=UTC)


def history(fetches: int, changes: int, interval: float, *, ago: float = 0.0,
            tasks: int = 1) -> History:
    gaps = [interval] * min(changes, 32)
    quiet = interval * (fetches - 1 - changes)
    return History(NOW - timedelta(seconds=ago), fetches, changes, quiet, gaps, tasks)


def test_cho_estimate_follows_the_changes_and_never_reaches_zero() -> None:
    always = cho_rate(10, 0, 10 * 60.0)
    never = cho_rate(10, 10, 10 * 60.0)
    half = cho_rate(10, 5, 10 * 60.0)
    assert always is not None and never is not None and half is not None
    assert always > half > never > 0
    assert abs(half - math.log(11 / 5.5) / 60) < 1e-12
    assert cho_rate(0, 0, 0.0) is None


def test_estimates_scale_with_time_no_prior_in_hours() -> None:
    """Leads watched in seconds (tests) or weeks (real accounts) rank alike."""
    leads = {"a": history(10, 8, 1.0), "b": history(10, 1, 1.0), "c": history(1, 0, 0.0)}
    fast = estimate(leads)
    slow = estimate({k: history(h.fetches, h.changes, 604_800.0) if k != "c" else h
                     for k, h in leads.items()})
    assert fast["a"] > fast["b"] > 0
    for lead in ("a", "b"):
        assert abs(fast[lead] / slow[lead] - 604_800.0) < 1e-6 * 604_800.0
    assert fast["c"] > 0  # no interval yet: the pooled rate of the others


def test_allocation_spends_the_budget_and_gives_up_on_leads_too_fast_to_follow() -> None:
    rates = {"slow": 0.001, "mid": 0.01, "fast": 0.1, "wild": 100.0}
    fetch = allocate(rates, {}, budget=0.05)
    assert abs(sum(fetch.values()) - 0.05) < 0.05 * 1e-3
    assert fetch["mid"] > fetch["slow"]
    assert fetch["wild"] < fetch["mid"]  # rises with the change rate, then falls
    same = allocate({"x": 0.01, "y": 0.01}, {}, budget=0.02)
    assert abs(same["x"] - same["y"]) < 1e-12
    heavy = allocate({"x": 0.01, "y": 0.01}, {"x": 5.0}, budget=0.01)
    assert heavy["x"] > heavy["y"]  # more tasks, more weight


def test_order_never_fetched_then_overdue_then_due_by_how_far() -> None:
    histories = {
        "old": history(5, 0, 100.0, ago=8 * 86400),         # past max_interval
        "hot": history(10, 9, 60.0, ago=600),               # changes often, 10 min ago
        "cold": history(10, 0, 60.0, ago=600),              # never changes
        "fresh": history(10, 9, 60.0, ago=1),               # just fetched
    }
    chosen = order(["hot", "new", "cold", "fresh", "old"], histories, NOW,
                   budget=0.5, max_interval=timedelta(days=7), limit=None)
    assert chosen[:3] == ["new", "old", "hot"]
    assert "fresh" not in chosen
    limited = order(["hot", "new", "cold", "fresh", "old"], histories, NOW, budget=0.5,
                    max_interval=timedelta(days=7), limit=4)
    assert limited[:3] == ["new", "old", "hot"] and len(limited) == 4
    # A budget far below the hot lead's rate: it would be stale again at once, so the
    # calls go where they keep a lead fresh.
    poor = order(["hot", "cold"], histories, NOW, budget=0.002,
                 max_interval=timedelta(days=7), limit=1)
    assert poor == ["cold"]
