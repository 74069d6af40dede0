#!/usr/bin/env bash
# Makes sure the PostgreSQL server binaries (initdb, postgres) are installed: keyplane's
# tests, demo, benchmarks and chaos drills start a private server from them. Also curl:
# the demo test runs the examples the demo prints, as a newcomer would. And chromium
# (the Debian package): the OpenID Provider's browser test drives a headless Chromium
# through its login and consent pages (region/oidc_browser_test.go).
set -euo pipefail

have_postgres() {
  command -v initdb >/dev/null 2>&1 && return 0
  compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null
}

missing=()
have_postgres || missing+=(postgresql)
command -v curl >/dev/null 2>&1 || missing+=(curl)
have_chromium() { command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; }
have_chromium || missing+=(chromium)
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "Missing: ${missing[*]} (PostgreSQL server binaries initdb and postgres; curl; chromium)." >&2
  echo "Install them, then run this again:  sudo apt-get install -y ${missing[*]}" >&2
  exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "Missing: ${missing[*]}, and this is not a Debian/Ubuntu system." >&2
  echo "Install PostgreSQL 13 or newer (initdb and postgres on PATH), curl and Chromium." >&2
  exit 1
fi
echo "installing ${missing[*]} with apt-get…" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# The Debian package starts a system-wide cluster; keyplane never uses it.
have_postgres || { echo "apt-get installed postgresql but initdb is still missing" >&2; exit 1; }
command -v curl >/dev/null 2>&1 || { echo "apt-get installed curl but it is still missing" >&2; exit 1; }
have_chromium || { echo "apt-get installed chromium but it is still missing" >&2; exit 1; }
