#!/usr/bin/env bash
# Builds the Debian package of one quorum-relay node with cargo-deb:
# relayd and relayctl in /usr/bin, the systemd unit
# (cluster-config/systemd/relayd.service, installed, not enabled), an
# example configuration in /etc/quorum-relay/relayd.toml, and the docs.
# The package metadata is in crates/relay-node/Cargo.toml.
#
#   scripts/build-deb.sh              build the binaries, then the .deb
#   scripts/build-deb.sh --no-build   package the binaries already built
#
# Prints the path of the .deb (in $CARGO_TARGET_DIR/debian/). Install and
# configure a node: README "Install a node from the .deb".
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/build-env.sh"
cd "$QR_ROOT"
if ! command -v cargo-deb >/dev/null; then
    echo "build-deb: installing cargo-deb (once per machine, a few minutes)" >&2
    # Built in its own temporary dir, not the shared target dir.
    env -u CARGO_TARGET_DIR cargo install --locked cargo-deb
fi
if [ "${1:-}" != "--no-build" ]; then
    qr_ensure_rocksdb
    cargo build --release --locked --bin relayd --bin relayctl
fi
for bin in relayd relayctl; do
    [ -x "$QR_BIN_DIR/$bin" ] || { echo "build-deb: $QR_BIN_DIR/$bin is missing; build it first (drop --no-build)" >&2; exit 1; }
done
deb="$(cargo deb --locked -p relay-node --no-build --strip --output "$CARGO_TARGET_DIR/debian/" | tail -n 1)"
echo "$deb"
