#!/usr/bin/env bash
# Mutation testing (issue 15): mutmut over the modules that decide correctness (the run
# core, the limiter, response classification, task parsing, edit checks and merging, the batch
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
mutmut results --all true 2>/dev/null | python bench/mutation_score.py
