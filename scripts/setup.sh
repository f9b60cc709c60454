#!/usr/bin/env bash
# Installs what a fresh Debian 12 machine lacks, and checks the Rust
# toolchain. Idempotent: installs only missing packages.
#
#   scripts/setup.sh demo   what scripts/demo.sh needs: build tools, RocksDB's
#                           bindgen step, an SMTP client to try the relay
#   scripts/setup.sh test   (default) the demo set plus real SMTP peers and a
#                           browser for the test suite and the benchmarks
#   scripts/setup.sh nemesis  the demo set plus iptables and libfaketime for
#                           scripts/nemesis.sh
#   scripts/setup.sh SET --dry-run  only say what would be installed, and
#                           what apt's own resolver would remove for it
#                           (apt-get --simulate); changes nothing
#
#   build-essential  C/C++ compiler for RocksDB (librocksdb-sys)
#   libclang-dev     RocksDB's bindgen step
#   swaks            a real SMTP client for the README demo
#   jq               reads relayctl --json in scripts/rolling-restart.sh
#   postfix          smtp-source / smtp-sink, real SMTP peers for tests and
#                    benches (test only; never replaces another mail server)
#   chromium         headless browser for the status-page test (test only)
#   prometheus       for promtool: .ci/run checks and unit-tests the alert
#                    rules (cluster-config/prometheus); the server Debian
#                    starts on install is disabled again (test only)
#   iptables, libfaketime  the nemesis's link and clock faults (nemesis only)
#   the Compose v2 plugin  `docker compose` beside Debian 12's docker-compose
#                    1.29, so the Compose test runs with both tools (test
#                    only, where a Docker CLI exists; scripts/compose-plugin.sh)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
what="${1:-test}"
dry_run=
[ "${2:-}" = --dry-run ] && dry_run=1
case "$what" in
demo) want=(build-essential libclang-dev swaks jq) ;;
test) want=(build-essential libclang-dev swaks jq postfix chromium prometheus) ;;
nemesis) want=(build-essential libclang-dev iptables libfaketime) ;;
*)
    sed -n '2,28p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
    ;;
esac

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }

# Installed packages other than postfix that provide mail-transport-agent
# (exim4, opensmtpd, msmtp-mta, ...). Debian's postfix conflicts with every
# one of them: installing it would remove that mail server.
other_mta() {
    dpkg-query -W -f='${Package}\t${Provides}\t${Status}\n' 2>/dev/null |
        awk -F'\t' '$1 != "postfix" && $2 ~ /(^|[ ,])mail-transport-agent([ ,(]|$)/ && $3 ~ /install ok installed/ {print $1}' |
        paste -sd' ' -
}

missing=()
for pkg in "${want[@]}"; do
    installed "$pkg" && continue
    if [ "$pkg" = postfix ]; then
        mta="$(other_mta)"
        if [ -n "$mta" ]; then
            echo "setup: not installing postfix: it would replace the installed mail server ($mta)." >&2
            echo "setup: the test that runs postfix's smtp-source is skipped (it says so), and" >&2
            echo "setup: benches/relay-vs-postfix.sh needs postfix: run it on a machine without another MTA." >&2
            continue
        fi
    fi
    missing+=("$pkg")
done
if [ -n "$dry_run" ]; then
    echo "setup: dry run: would install: ${missing[*]:-nothing}"
    if [ ${#missing[@]} -gt 0 ]; then
        # apt's resolver on the current package lists: every package it
        # would remove to install the set (none, unless something conflicts).
        sim="$(apt-get install --simulate --no-install-recommends "${missing[@]}" 2>&1)" || {
            echo "setup: dry run: apt-get --simulate failed (run apt-get update first?):" >&2
            echo "$sim" >&2
            exit 1
        }
        removed="$(echo "$sim" | awk '$1 == "Remv" {print $2}' | paste -sd' ' -)"
        echo "setup: dry run: apt would remove: ${removed:-nothing}"
    fi
    [ "$what" = test ] && "$here/compose-plugin.sh" --dry-run
    exit 0
fi
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "setup: missing Debian packages: ${missing[*]}" >&2
        echo "setup: install them with: sudo apt-get install --no-install-recommends ${missing[*]}" >&2
        exit 1
    fi
    echo "setup: installing ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    # Postfix only as a toolbox: no local mail system is configured or started.
    echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    # Only promtool is wanted: stop the server Debian starts on install.
    if [[ " ${missing[*]} " == *" prometheus "* ]] && command -v systemctl >/dev/null; then
        systemctl disable --now prometheus >/dev/null 2>&1 || true
    fi
fi
# Optional: without the plugin the Compose test runs with docker-compose only
# (and says so), so a failed download does not stop the setup.
if [ "$what" = test ] && ! "$here/compose-plugin.sh"; then
    echo "setup: the Compose v2 plugin was not installed; the Compose test runs with docker-compose only" >&2
fi

# The Rust toolchain: rust-toolchain.toml asks for the stable channel; the
# workspace's rust-version is the oldest compiler that builds it.
need="$(sed -n 's/^rust-version *= *"\([0-9.]*\)".*/\1/p' "$here/../Cargo.toml" | head -n 1)"
how="get one with rustup (see https://rustup.rs), then 'rustup toolchain install stable'"
if ! command -v cargo >/dev/null || ! command -v rustc >/dev/null; then
    echo "setup: no Rust toolchain (cargo, rustc) on PATH; $how" >&2
    exit 1
fi
have="$(rustc --version | awk '{print $2}')"
if [ -n "$need" ] && [ "$(printf '%s\n%s\n' "$need" "${have%%-*}" | sort -V | head -n 1)" != "$need" ]; then
    echo "setup: rustc $have is older than the $need this workspace needs; run 'rustup update stable' ($how)" >&2
    exit 1
fi
