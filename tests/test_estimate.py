"""verify's estimators: exact when every lead is sampled, and 95% intervals that cover the
truth as often as they should over seeded repetitions."""

from __future__ import annotations

import random

from lsq_sync.core.estimate import lead_share, task_share


def population(seed: int, leads: int = 2000) -> list[tuple[int, int]]:
    """(stale, tasks) per lead: 0 to 8 tasks, staleness clustered by lead."""
    rng = random.Random(seed)
    result = []
    for _ in range(leads):
        tasks = rng.randint(0, 8)
        hot = rng.random() < 0.15  # some leads changed lately: their tasks go stale together
        stale = sum(1 for _ in range(tasks) if rng.random() < (0.6 if hot else 0.02))
        result.append((stale, tasks))
    return result


def test_every_lead_sampled_gives_the_truth_exactly() -> None:
    pop = population(1)
    truth = sum(s for s, _ in pop) / sum(t for _, t in pop)
    share = task_share([s for s, _ in pop], [t for _, t in pop], len(pop))
    assert share.value == truth and share.low == share.high == truth
    stale_leads = sum(1 for s, _ in pop if s)
    leads = lead_share(stale_leads, len(pop), len(pop))
    assert leads.value == leads.low == leads.high == stale_leads / len(pop)


def test_the_intervals_cover_the_truth_in_at_least_90_percent_of_50_samples() -> None:
    pop = population(2)
    truth = sum(s for s, _ in pop) / sum(t for _, t in pop)
    lead_truth = sum(1 for s, _ in pop if s) / len(pop)
    covered = leads_covered = 0
    widths = []
    for seed in range(50):
        sample = random.Random(seed).sample(pop, 300)
        share = task_share([s for s, _ in sample], [t for _, t in sample], len(pop))
        covered += share.low <= truth <= share.high
        widths.append(share.high - share.low)
        leads = lead_share(sum(1 for s, _ in sample if s), len(sample), len(pop))
        leads_covered += leads.low <= lead_truth <= leads.high
    assert covered >= 45 and leads_covered >= 45
    assert max(widths) < 0.1  # an interval that says something, not [0, 1]


def test_the_finite_population_correction_narrows_the_interval() -> None:
    pop = population(3, leads=400)
    sample = random.Random(0).sample(pop, 200)
    stale, tasks = [s for s, _ in sample], [t for _, t in sample]
    half = task_share(stale, tasks, 400)
    huge = task_share(stale, tasks, 10**9)
    assert half.value == huge.value
    assert (half.high - half.low) < (huge.high - huge.low) * 0.75


def test_no_tasks_and_no_leads_are_zero_not_an_error() -> None:
    assert task_share([], [], 10).value == 0.0
    assert task_share([0, 0], [0, 0], 10).high == 0.0
    assert lead_share(0, 0, 10).value == 0.0
