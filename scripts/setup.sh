#!/usr/bin/env bash
# Installs what a fresh Debian 12 machine lacks for building and testing
# quorum-relay. Idempotent: installs only missing packages.
#   libclang-dev  RocksDB's bindgen step (librocksdb-sys)
#   postfix       smtp-source / smtp-sink, real SMTP peers for tests and benches
#   swaks         a real SMTP client for the README demo
#   chromium      headless browser for the status-page test
#   prometheus    for promtool: .ci/run checks and unit-tests the alert rules
#                 (cluster-config/prometheus); its server is disabled again
set -euo pipefail
missing=()
for pkg in libclang-dev postfix swaks chromium prometheus; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
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
command -v cargo >/dev/null || { echo "setup: cargo (Rust toolchain) is required" >&2; exit 1; }
