#!/usr/bin/env bash
# The whole test suite: installs what is missing (docker/install.sh), runs the static checks
# (ruff, then mypy; configured in pyproject.toml), then pytest with the arguments given.
# The tests start their own Redis, PostgreSQL and S3 (moto) servers on 127.0.0.1 and stop them.
#   tests/run.sh -q                       everything
#   tests/run.sh tests/unit -x            static checks, then only those tests
#   FAKESCAN_STATIC_CHECKS=0 tests/run.sh tests/unit/test_decode.py   skip ruff and mypy while iterating
set -euo pipefail
project="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$project/docker/install.sh"
venv="${FAKESCAN_VENV:-$project/.venv}"
cd "$project"
if [ "${FAKESCAN_STATIC_CHECKS:-1}" != 0 ]; then
    echo "run.sh: ruff check ." >&2
    "$venv/bin/ruff" check --quiet .
    echo "run.sh: mypy (fakescan worker scheduler migrations)" >&2
    "$venv/bin/mypy"
fi
exec "$venv/bin/python" -m pytest "$@"  # no path given: pyproject's testpaths (tests/)
