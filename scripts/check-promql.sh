#!/usr/bin/env bash
# Checks the PromQL shipped in cluster-config/: every expression of the
# alert rules (prometheus/relay-alerts.yml) and of the Grafana dashboard
# (grafana/quorum-relay.json) parses, the alert rules' unit tests pass
# (among them: every node down fires the lost-quorum and no-leader alerts),
# and every expression reads only metrics that three real relayd processes
# export. The checks themselves are tests/tests/promql_expressions.rs, so
# `cargo test` runs them too; this script runs them alone, for CI and for
# anyone editing a rule or a panel.
#
#   scripts/check-promql.sh
#
# Needs promtool (scripts/setup.sh test installs Debian's prometheus).
set -euo pipefail
here="$(dirname "${BASH_SOURCE[0]}")"
source "$here/build-env.sh"
cd "$QR_ROOT"
if ! command -v promtool >/dev/null; then
    echo "check-promql: promtool not found; run scripts/setup.sh test" >&2
    exit 1
fi
promtool check rules cluster-config/prometheus/relay-alerts.yml
promtool test rules cluster-config/prometheus/relay-alerts.test.yml
qr_ensure_rocksdb
# The name check starts real relayd processes from the target dir.
cargo build --release --locked --bins
cargo test --release --locked --workspace --test promql_expressions
