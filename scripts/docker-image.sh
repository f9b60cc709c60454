#!/usr/bin/env bash
# Builds the image quorum-relay:local without pulling anything (no registry
# is reachable): FROM scratch with the release binaries (relayd, relayctl,
# demo-target) and exactly the shared libraries ldd says they load. The
# image runs as the unprivileged user `relay` (uid/gid 10001), which owns
# /data, /mail and /certs (a named volume mounted there starts with that
# owner).
#
#   scripts/docker-image.sh             build the binaries, then the image
#   scripts/docker-image.sh --no-build  use the binaries already in $QR_BIN_DIR
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/build-env.sh"
cd "$QR_ROOT"
if [ "${1:-}" != "--no-build" ]; then
    qr_ensure_rocksdb
    cargo build --release --locked --bin relayd --bin relayctl --bin demo-target
fi
bins=("$QR_BIN_DIR/relayd" "$QR_BIN_DIR/relayctl" "$QR_BIN_DIR/demo-target")
for bin in "${bins[@]}"; do
    [ -x "$bin" ] || { echo "docker-image: $bin is missing; build it first (drop --no-build)" >&2; exit 1; }
done
context="$(mktemp -d "${TMPDIR:-/tmp}/qr-image.XXXXXX")"
trap 'rm -rf "$context"' EXIT
# rootfs/ is copied owned by root; owned/ (the data and mail dirs) by relay.
root="$context/rootfs"
mkdir -p "$root/usr/local/bin" "$root/etc" "$root/tmp" "$context/owned/data" "$context/owned/mail" "$context/owned/certs"
chmod 1777 "$root/tmp"
cp "${bins[@]}" "$root/usr/local/bin/"
# Debug line tables stay in the target dir; the image does not need them.
strip --strip-debug "$root"/usr/local/bin/*
# The dynamic loader and every library the binaries need, at the same paths.
ldd "${bins[@]}" | awk '/=> \// {print $3} /^[[:space:]]*\/[^ ]*ld-linux/ {print $1}' | sort -u |
while read -r lib; do
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
done
printf '%s\n' "root:x:0:0:root:/:/usr/local/bin/relayd" \
    "relay:x:10001:10001:quorum-relay:/data:/usr/local/bin/relayd" >"$root/etc/passwd"
printf '%s\n' "root:x:0:" "relay:x:10001:" >"$root/etc/group"
echo "hosts: files dns" >"$root/etc/nsswitch.conf"
echo "Dockerfile" >"$context/.dockerignore"
cat >"$context/Dockerfile" <<'DOCKERFILE'
FROM scratch
LABEL org.quorum-relay.image=local
COPY rootfs/ /
COPY --chown=10001:10001 owned/ /
USER 10001:10001
ENTRYPOINT ["/usr/local/bin/relayd"]
DOCKERFILE
DOCKER_BUILDKIT=0 docker build -q -t quorum-relay:local "$context" >/dev/null
# The previous build's image lost its tag: remove it (and only ours, by
# label), or every test run would leave one more image on the disk.
docker image prune -f --filter label=org.quorum-relay.image=local >/dev/null
echo "built quorum-relay:local ($(docker image inspect -f '{{.Size}}' quorum-relay:local) bytes)"
