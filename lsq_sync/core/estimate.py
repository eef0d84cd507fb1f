"""verify's statistics: the share of stale tasks in a cluster sample of leads (a ratio
estimator with the finite-population correction) and the share of stale leads (Wilson)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

Z95 = 1.959963984540054


@dataclass(frozen=True)
class Share:
    """An estimated share and its 95% interval."""

    value: float
    low: float
    high: float


def task_share(stale: Sequence[int], tasks: Sequence[int], population: int) -> Share:
    """The share of stale tasks over all leads, from a simple random sample of leads
    (clusters) without replacement: R = sum s_i / sum t_i, with
    Var(R) = (1 - n/N) / (n tbar^2) * sum (s_i - R t_i)^2 / (n - 1) (Cochran, Sampling
    Techniques, 1977, 6.9; Lohr, Sampling, 2019, 5.2). Every lead sampled (n = N): exact."""
    n = len(tasks)
    total = sum(tasks)
    if n == 0 or total == 0:
        return Share(0.0, 0.0, 0.0)
    ratio = sum(stale) / total
    fpc = max(0.0, 1 - n / population) if population else 0.0
    if n < 2 or fpc == 0:
        spread = 0.0 if fpc == 0 else 1.0  # one lead says nothing of the spread
        return Share(ratio, max(0.0, ratio - spread), min(1.0, ratio + spread))
    mean_t = total / n
    residuals = sum((s - ratio * t) ** 2 for s, t in zip(stale, tasks, strict=True)) / (n - 1)
    half = Z95 * math.sqrt(fpc * residuals / (n * mean_t ** 2))
    return Share(ratio, max(0.0, ratio - half), min(1.0, ratio + half))


def lead_share(stale_leads: int, sampled: int, population: int) -> Share:
    """The share of leads with a stale task: a Wilson interval, its n scaled by the
    finite-population correction (n / (1 - n/N)); exact when every lead was sampled."""
    if sampled == 0:
        return Share(0.0, 0.0, 0.0)
    p = stale_leads / sampled
    fpc = max(0.0, 1 - sampled / population) if population else 0.0
    if fpc == 0:
        return Share(p, p, p)
    n = sampled / fpc
    z2 = Z95 ** 2
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = Z95 * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return Share(p, max(0.0, centre - half), min(1.0, centre + half))
