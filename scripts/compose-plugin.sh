#!/usr/bin/env bash
# Installs the Docker Compose v2 plugin (`docker compose`) next to the
# classic `docker-compose`, so the tests can bring the Compose tier up with
# both tools. Idempotent: does nothing when `docker compose` answers, or
# when there is no Docker CLI at all.
#
#   scripts/compose-plugin.sh            install if missing
#   scripts/compose-plugin.sh --dry-run  only say what it would do
#
# Where it comes from: Debian 12 ships only Compose v1 (`docker-compose`
# 1.29, Python), and Docker's own package repository is not a source this
# project relies on. Debian 13's `docker-compose` package is Compose v2, a
# static Go program that needs only libc6 >= 2.34 (Debian 12 has 2.36).
# Installing that package would replace v1, so only its plugin binary is
# unpacked, into /usr/local/lib/docker/cli-plugins/ (a directory the Docker
# CLI searches and dpkg does not own). The package file is pinned by its
# SHA-256 from Debian's signed index; a mismatch installs nothing.
set -euo pipefail
version=2.26.1-4
sha256=47681197cb2b1ab88206b42a1a92fc75f50d9530a6322d03494a473eed0408ea
url="http://deb.debian.org/debian/pool/main/d/docker-compose/docker-compose_${version}_amd64.deb"
dest=/usr/local/lib/docker/cli-plugins/docker-compose

command -v docker >/dev/null || { echo "compose-plugin: no docker CLI; nothing to do" >&2; exit 0; }
if docker compose version >/dev/null 2>&1; then
    exit 0
fi
if [ "$(dpkg --print-architecture 2>/dev/null)" != amd64 ]; then
    echo "compose-plugin: only amd64 is pinned here; install the Compose v2 plugin by hand" >&2
    exit 0
fi
if [ "${1:-}" = --dry-run ]; then
    echo "setup: dry run: would unpack the Compose v2 plugin (Debian 13 docker-compose $version) to $dest"
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "compose-plugin: 'docker compose' is missing; run this script as root to install it to $dest" >&2
    exit 1
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
echo "compose-plugin: fetching Debian 13 docker-compose $version for its Compose v2 plugin" >&2
curl -fsS --retry 3 --max-time 600 -o "$work/pkg.deb" "$url"
echo "$sha256  $work/pkg.deb" | sha256sum --check --quiet -
dpkg-deb -x "$work/pkg.deb" "$work/root"
install -D -m 0755 "$work/root/usr/libexec/docker/cli-plugins/docker-compose" "$dest"
echo "compose-plugin: installed $(docker compose version) at $dest" >&2
