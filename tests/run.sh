#!/usr/bin/env bash
# The whole test suite: installs what is missing (docker/install.sh), then runs pytest.
# The tests start their own Redis, PostgreSQL and S3 (moto) servers on 127.0.0.1 and stop them.
set -euo pipefail
project="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$project/docker/install.sh"
venv="${FAKESCAN_VENV:-$project/.venv}"
cd "$project"
exec "$venv/bin/python" -m pytest "$@"  # no path given: pyproject's testpaths (tests/)
