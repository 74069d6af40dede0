#!/usr/bin/env bash
# Puts promtool (Prometheus's rule checker and rule unit tester) at $1/promtool (default
# .bin), taken from Debian's prometheus package without installing the package: no
# Prometheus service is installed or started. make test runs it; the rules tests need it.
set -euo pipefail
bin=${1:-.bin}
if [ -x "$bin/promtool" ]; then exit 0; fi
if ! command -v apt-get >/dev/null 2>&1 || ! command -v dpkg-deb >/dev/null 2>&1; then
  echo "promtool is missing and this is not a Debian-like system: put Prometheus's promtool (2.42 or newer) at $bin/promtool." >&2
  exit 1
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "fetching promtool from Debian's prometheus package…" >&2
if ! (cd "$tmp" && apt-get download prometheus >/dev/null 2>&1); then
  apt-get update >/dev/null 2>&1 || true
  (cd "$tmp" && apt-get download prometheus >/dev/null) || {
    echo "apt-get download prometheus failed: check the network, or put promtool at $bin/promtool yourself." >&2
    exit 1
  }
fi
mkdir -p "$bin"
dpkg-deb --fsys-tarfile "$tmp"/prometheus_*.deb | tar -xO ./usr/bin/promtool > "$tmp/promtool"
chmod 0755 "$tmp/promtool"
"$tmp/promtool" --version >/dev/null
mv "$tmp/promtool" "$bin/promtool"
