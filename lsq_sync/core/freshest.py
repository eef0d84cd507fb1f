"""The "freshest" strategy: which leads a pull fetches, so that as few tasks as possible
are stale under a call budget (the formulas and their sources: docs/freshness.md)."""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

PRIOR = 0.5  # Cho's half-observation of "no change"
LEVELS_PER_DECADE = 50  # rates are grouped on this grid to allocate 10^5+ leads quickly
_G_GRID = [10 ** (k / 200) for k in range(-1600, 801)]  # x = rate / fetch rate, 1e-8..1e4


@dataclass(frozen=True)
class History:
    """What lsq_lead_state knows of one lead (see store.leadstate)."""

    fetched_at: datetime | None
    fetches: int
    changes: int
    quiet_s: float
    change_gaps: Sequence[float]
    tasks: int


def _observed(h: History) -> tuple[int, int, float]:
    """(fetches with a previous one, those that found no change, seconds they covered)."""
    n = max(0, h.fetches - 1)
    unchanged = max(0, n - h.changes)
    gaps = list(h.change_gaps)
    changed_s = (sum(gaps) / len(gaps)) * h.changes if gaps else 0.0
    return n, unchanged, h.quiet_s + changed_s


def cho_rate(n: int, unchanged: int, seconds: float) -> float | None:
    """Cho and Garcia-Molina's estimator (TOIT 2003) for n fetches at a mean interval I of
    which X found no change, r = -(1/I) ln((X + 0.5) / (n + 0.5)), with n + 1 below so that
    a lead that never changed (X = n) keeps a small rate that falls as evidence grows:
    r = -(1/I) ln((X + 0.5) / (n + 1)), per second. None without an interval observed."""
    if n <= 0 or seconds <= 0:
        return None
    interval = seconds / n
    return -math.log((unchanged + PRIOR) / (n + 1)) / interval


def estimate(histories: Mapping[str, History]) -> dict[str, float]:
    """Each lead's change rate (per second), from its own fetches; a lead with no interval
    observed yet gets the pooled estimate of all leads (scale-free: no prior in hours)."""
    pooled_n = pooled_x = 0
    pooled_s = 0.0
    own: dict[str, float | None] = {}
    for lead, h in histories.items():
        n, x, s = _observed(h)
        pooled_n, pooled_x, pooled_s = pooled_n + n, pooled_x + x, pooled_s + s
        own[lead] = cho_rate(n, x, s)
    pooled = cho_rate(pooled_n, pooled_x, pooled_s) or 0.0
    return {lead: pooled if rate is None else rate for lead, rate in own.items()}


def observed_budget(histories: Mapping[str, History]) -> float | None:
    """The fetch rate (per second) the pulls so far have kept up: the sum over leads of
    fetches per second of each lead's own observed span (leads without an interval yet
    count at the mean of the others). None before any lead was fetched twice."""
    rates = []
    for h in histories.values():
        n, _x, seconds = _observed(h)
        if n > 0 and seconds > 0:
            rates.append(n / seconds)
    if not rates:
        return None
    return sum(rates) * len(histories) / len(rates)


def _g(x: float) -> float:
    """The marginal freshness of fetching more often, times the change rate:
    1 - (1 + x) e^-x, with x = change rate / fetch rate (increasing from 0 to 1)."""
    return -math.expm1(-x) - x * math.exp(-x)


_G_VALUES = [_g(x) for x in _G_GRID]


def _g_inverse(y: float) -> float:
    i = bisect.bisect_left(_G_VALUES, y)
    if i <= 0:
        return _G_GRID[0]
    if i >= len(_G_GRID):
        return _G_GRID[-1]
    lo, hi = _G_VALUES[i - 1], _G_VALUES[i]
    t = (y - lo) / (hi - lo) if hi > lo else 0.0
    return _G_GRID[i - 1] + t * (_G_GRID[i] - _G_GRID[i - 1])


def allocate(rates: Mapping[str, float], weights: Mapping[str, float],
             budget: float) -> dict[str, float]:
    """Fetch rates (per second) that maximise the weighted time-averaged freshness
    sum w_i F(r_i, f_i), F = (f/r)(1 - e^(-r/f)), under sum f_i = budget (Cho and
    Garcia-Molina, SIGMOD 2000 / TODS 2003). The Lagrange condition gives
    g(r_i/f_i) = mu r_i / w_i with g(x) = 1 - (1 + x) e^-x: a lead with mu r_i / w_i >= 1
    changes too fast to be worth a fetch (f_i = 0); mu is found by bisection."""
    groups: dict[tuple[int, float], list[str]] = {}
    for lead, rate in rates.items():
        if rate <= 0:
            continue
        level = round(math.log10(rate) * LEVELS_PER_DECADE)
        groups.setdefault((level, max(1.0, weights.get(lead, 1.0))), []).append(lead)
    if not groups or budget <= 0:
        return {}
    keys = [(10 ** (level / LEVELS_PER_DECADE), w, len(members))
            for (level, w), members in groups.items()]

    def total(mu: float) -> float:
        out = 0.0
        for rate, w, count in keys:
            y = mu * rate / w
            if y < 1:
                out += count * rate / _g_inverse(y)
        return out

    lo, hi = 1e-30, 1e30
    for _ in range(200):  # on a log scale: total() falls as mu grows
        mid = math.sqrt(lo * hi)
        if total(mid) > budget:
            lo = mid
        else:
            hi = mid
        if hi / lo < 1 + 1e-9:
            break
    mu = hi
    result: dict[str, float] = {}
    for (level, w), members in groups.items():
        rate = 10 ** (level / LEVELS_PER_DECADE)
        y = mu * rate / w
        fetch = rate / _g_inverse(y) if y < 1 else 0.0
        for lead in members:
            result[lead] = fetch
    return result


def order(candidates: Iterable[str], histories: Mapping[str, History], now: datetime, *,
          budget: float, max_interval: timedelta, limit: int | None) -> list[str]:
    """The leads of `candidates` to fetch now, most valuable first: never fetched, then
    those waiting max_interval or longer (longest first), then those whose optimal
    interval 1/f_i has passed, by how far (elapsed * f_i); with `limit`, the best `limit`
    even if not due yet. Hinted leads are put first by the caller."""
    leads = list(dict.fromkeys(candidates))
    known = {lead: histories[lead] for lead in leads
             if lead in histories and histories[lead].fetched_at is not None}
    never = [lead for lead in leads if lead not in known]
    rates = estimate(known)
    fetch = allocate(rates, {lead: float(h.tasks) for lead, h in known.items()}, budget)
    overdue: list[tuple[float, str]] = []
    ranked: list[tuple[float, str]] = []
    cap = max_interval.total_seconds()
    for lead, h in known.items():
        assert h.fetched_at is not None
        waited = max(0.0, (now - h.fetched_at).total_seconds())
        if waited >= cap:
            overdue.append((-waited, lead))
        else:
            ranked.append((-(waited * fetch.get(lead, 0.0)), lead))
    overdue.sort()
    ranked.sort()
    chosen = never + [lead for _, lead in overdue]
    due = [lead for score, lead in ranked if -score >= 1.0]
    if limit is None:
        return chosen + due
    return (chosen + [lead for _, lead in ranked])[:limit]
