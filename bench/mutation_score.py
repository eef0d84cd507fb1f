"""Killed / survived mutants per module, from `mutmut results --all true` on stdin."""

from __future__ import annotations

import collections
import re
import sys


def main() -> None:
    counts: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for line in sys.stdin:
        name, _, status = line.strip().rpartition(": ")
        if not name:
            continue
        counts[re.sub(r"\.x.*$", "", name)][status] += 1
    total: collections.Counter[str] = collections.Counter()
    for module, c in [*sorted(counts.items()), ("all", total)]:
        if module != "all":
            total.update(c)
        judged = c["killed"] + c["survived"]
        score = f"{c['killed'] / judged:6.1%}" if judged else "   n/a"
        print(f"{module:22s} killed {c['killed']:4d}  survived {c['survived']:4d}  "
              f"no tests {c['no tests']:3d}  not checked {c['not checked']:4d}  score {score}")


if __name__ == "__main__":
    main()
