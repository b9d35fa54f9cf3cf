#!/bin/sh
# Container entrypoint: arguments are a fakescan command line.
#   docker run IMAGE scan s3://bucket/prefix/     -> fakescan scan s3://bucket/prefix/
#   docker run IMAGE worker                       -> fakescan worker
#   docker run IMAGE db upgrade                   -> fakescan db upgrade
# A program on PATH (celery, python, sh) runs as given, for debugging and tools like Flower.
set -eu

home="${FAKESCAN_HOME:-/var/lib/fakescan}"
if ! mkdir -p "$home" 2>/dev/null || [ ! -w "$home" ]; then
    echo "fakescan-entrypoint: FAKESCAN_HOME=$home is not writable: mount a volume there" >&2
    exit 78
fi

if [ "$#" -eq 0 ]; then
    exec fakescan --help
fi
case "$1" in
    fakescan) shift; exec fakescan "$@" ;;
    -*) exec fakescan "$@" ;;
esac
if command -v "$1" >/dev/null 2>&1; then
    exec "$@"
fi
exec fakescan "$@"
