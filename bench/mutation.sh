#!/usr/bin/env bash
# Mutation testing (issue 15): mutmut over the modules that decide correctness (the
# limiter, response classification, task parsing, edit checks and merging, the batch
# writer, the upsert), each mutant judged by those modules' fast tests, on SQLite (the
# PostgreSQL-only upsert path is reported as surviving unless LSQ_TEST_POSTGRES_URL is
# set). Configuration: [tool.mutmut] in pyproject.toml; mutants are built in mutants/.
#
#   bash bench/mutation.sh            # the whole run: about 40 minutes on 2 cores
#   bash bench/mutation.sh 'lsq_sync.client.x_classify*'   # only some mutants again
#
# Prints the score per module; `mutmut show NAME` shows one mutant, `mutmut browse` all.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install --quiet 'mutmut>=3.3'
mutmut run --max-children "${MUTMUT_CHILDREN:-2}" "$@" >/dev/null 2>&1 || true
mutmut results --all true 2>/dev/null | python - <<'PY'
import collections, re, sys
counts = collections.defaultdict(collections.Counter)
for line in sys.stdin:
    name, _, status = line.strip().rpartition(": ")
    module = re.sub(r"\.x.*$", "", name.strip())
    counts[module][status] += 1
total = collections.Counter()
for module, c in sorted(counts.items()):
    total.update(c)
    judged = c["killed"] + c["survived"]
    print(f"{module:22s} killed {c['killed']:4d}  survived {c['survived']:4d}  "
          f"no tests {c['no tests']:3d}  score {c['killed'] / judged:6.1%}" if judged else module)
judged = total["killed"] + total["survived"]
print(f"{'all':22s} killed {total['killed']:4d}  survived {total['survived']:4d}  "
      f"no tests {total['no tests']:3d}  score {total['killed'] / max(judged, 1):6.1%}")
PY
