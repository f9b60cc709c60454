#!/usr/bin/env bash
# Builds, once per machine, a minimal Debian 12 (bookworm) root filesystem
# with systemd, and imports it as the Docker image `quorum-relay-debian:12`
# (`docker import` of a tar; no registry is used). The package tests
# (tests/tests/deb_package.rs) boot it with systemd as PID 1 to install the
# .deb, and run scripts/setup.sh in it beside another mail server.
#
#   scripts/debian-rootfs.sh          build the tar if missing, import it if
#                                     the image is missing; print the image
#   scripts/debian-rootfs.sh --remove remove the image (the tar is kept; the
#                                     tests do this once none uses it)
#
# The tar is cached outside the repository, in
# ${QR_DEBIAN_ROOTFS_DIR:-$HOME/.cache/quorum-relay/debian-rootfs}
# (about 90 MB). Needs root, debootstrap and a reachable Debian mirror
# (QR_DEBIAN_MIRROR, default http://deb.debian.org/debian) the first time.
set -euo pipefail
image="quorum-relay-debian:12"
dir="${QR_DEBIAN_ROOTFS_DIR:-$HOME/.cache/quorum-relay/debian-rootfs}"
mirror="${QR_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
tar="$dir/bookworm-systemd.tar"

if [ "${1:-}" = --remove ]; then
    docker image rm "$image" >/dev/null 2>&1 || true
    exit 0
fi

if [ ! -f "$tar" ]; then
    command -v debootstrap >/dev/null || {
        echo "debian-rootfs: debootstrap is missing: apt-get install debootstrap" >&2
        exit 1
    }
    [ "$(id -u)" = 0 ] || { echo "debian-rootfs: debootstrap needs root" >&2; exit 1; }
    mkdir -p "$dir"
    root="$(mktemp -d "$dir/root.XXXXXX")"
    trap 'rm -rf "$root"' EXIT
    echo "debian-rootfs: debootstrap bookworm into $root (a few minutes, once)" >&2
    # systemd to be PID 1; adduser for the .deb's postinst; ca-certificates
    # so apt works over https mirrors too; iproute2 to read the address.
    debootstrap --variant=minbase \
        --include=systemd,systemd-sysv,dbus,adduser,ca-certificates,iproute2 \
        bookworm "$root" "$mirror" >"$dir/debootstrap.log" 2>&1 || {
        echo "debian-rootfs: debootstrap failed; see $dir/debootstrap.log" >&2
        exit 1
    }
    # The downloaded .debs are not needed in the image.
    rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
    # No console gettys in a container; nothing waits for a network manager.
    ln -sf /dev/null "$root/etc/systemd/system/getty@tty1.service"
    ln -sf /dev/null "$root/etc/systemd/system/console-getty.service"
    tar -C "$root" --numeric-owner -cf "$tar.tmp" .
    mv "$tar.tmp" "$tar"
fi

if ! docker image inspect "$image" >/dev/null 2>&1; then
    docker import --change 'CMD ["/sbin/init"]' "$tar" "$image" >/dev/null
fi
echo "$image"
