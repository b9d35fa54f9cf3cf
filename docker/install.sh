#!/usr/bin/env bash
# The one install path: README, CI and both container images run this script.
#   docker/install.sh            system packages (if missing) + virtualenv + fakescan with test extras
#   FAKESCAN_SKIP_APT=1          skip the apt step (container images install their own)
#   FAKESCAN_VENV=DIR            where the virtualenv goes (default: .venv in the project)
#   FAKESCAN_EXTRAS=test         pip extras to install (the CPU/CUDA images use none)
#   FAKESCAN_DEPS_ONLY=1         only the dependencies pyproject.toml declares, not fakescan itself
#                                (the images' cached layer: rebuilt only when pyproject.toml changes)
#   FAKESCAN_EDITABLE=0          a regular install instead of an editable one (the images)
set -euo pipefail
project="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${FAKESCAN_VENV:-$project/.venv}"
extras="${FAKESCAN_EXTRAS-test}"

need_apt=()
command -v redis-server >/dev/null 2>&1 || need_apt+=(redis-server)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need_apt+=(postgresql)
# the review page's browser tests drive Debian's chromium through its chromedriver (never a downloaded browser)
if [[ ",$extras," == *",test,"* ]]; then
    command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
    command -v chromedriver >/dev/null 2>&1 || need_apt+=(chromium-driver)
fi
if [ "${FAKESCAN_SKIP_APT:-0}" != 1 ] && [ ${#need_apt[@]} -gt 0 ]; then
    echo "install.sh: apt-get install ${need_apt[*]}" >&2
    sudo_cmd=""; [ "$(id -u)" = 0 ] || sudo_cmd="sudo"
    $sudo_cmd apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

python="${PYTHON:-python3.11}"
command -v "$python" >/dev/null 2>&1 || python=python3
if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv"
fi
spec="$project"; [ -n "$extras" ] && spec="$project[$extras]"
mode=editable
[ "${FAKESCAN_EDITABLE:-1}" = 0 ] && mode=regular
[ "${FAKESCAN_DEPS_ONLY:-0}" = 1 ] && mode=deps-only
stamp="$venv/.fakescan-install-stamp"
want="$(cat "$project/pyproject.toml" | sha256sum | cut -c1-16)-$extras-$mode"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    # this machine's pip config lists optional local indexes; their "ignored location" notes are noise
    quiet_pip() { "$venv/bin/pip" "$@" 2> >(grep -v "is neither a file nor a directory" >&2); }
    quiet_pip install -q --upgrade pip setuptools wheel
    case "$mode" in
        deps-only)
            requirements="$(mktemp)"
            "$venv/bin/python" - "$project/pyproject.toml" "$extras" > "$requirements" <<'PY'
import sys
import tomllib

with open(sys.argv[1], "rb") as handle:
    project = tomllib.load(handle)["project"]
wanted = list(project["dependencies"])
for extra in filter(None, sys.argv[2].split(",")):
    wanted += project["optional-dependencies"][extra]
print("\n".join(wanted))
PY
            quiet_pip install -q -r "$requirements"
            rm -f "$requirements" ;;
        regular) quiet_pip install -q "$spec" ;;
        *) quiet_pip install -q -e "$spec" ;;
    esac
    echo "$want" > "$stamp"
fi
echo "install.sh: fakescan installed in $venv" >&2
