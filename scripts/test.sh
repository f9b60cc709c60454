#!/usr/bin/env bash
# Runs the whole test suite: unit, property, storage-suite and multi-process
# tests, in the single release profile (see scripts/build-env.sh).
set -euo pipefail
here="$(dirname "${BASH_SOURCE[0]}")"
"$here/setup.sh"
source "$here/build-env.sh"
cd "$QR_ROOT"
qr_ensure_rocksdb
# The process-level tests start the real binaries from the target dir.
cargo build --release --locked --bins
cargo test --release --locked --workspace "$@"
