#!/usr/bin/env bash
# Makes sure the PostgreSQL server binaries (initdb, postgres) are installed: keyplane's
# tests, demo, benchmarks and chaos drills start a private server from them.
set -euo pipefail

have() {
  command -v initdb >/dev/null 2>&1 && return 0
  compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null
}

if have; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "PostgreSQL server binaries (initdb, postgres) are missing." >&2
  echo "Install them, then run this again:  sudo apt-get install -y postgresql" >&2
  exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "PostgreSQL server binaries are missing and this is not a Debian/Ubuntu system." >&2
  echo "Install PostgreSQL 13 or newer and put initdb and postgres on PATH." >&2
  exit 1
fi
echo "installing PostgreSQL server binaries with apt-get…" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends postgresql >/dev/null
# The Debian package starts a system-wide cluster; keyplane never uses it.
have || { echo "apt-get installed postgresql but initdb is still missing" >&2; exit 1; }
