# shellcheck shell=bash
# Sourced by .ci/run and every script that builds: one target dir outside the
# clone, one profile (release), and RocksDB's C++ compiled once per machine.
#
# librocksdb-sys compiles RocksDB from source (25-45 min on 2 cores). The first
# build here compiles it once in the release profile and copies the static
# library to a per-version cache; every later build links that cached
# librocksdb.a through ROCKSDB_LIB_DIR/ROCKSDB_STATIC, whatever the profile.
set -euo pipefail

QR_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
QR_CACHE="${QR_CACHE:-$HOME/.cache/quorum-relay}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$QR_CACHE/target}"
export QR_BIN_DIR="$CARGO_TARGET_DIR/release"

qr_ensure_rocksdb() {
    local version lib_dir built
    version="$(awk '/^name = "librocksdb-sys"/{getline; gsub(/[" ]/,""); sub("version=",""); print}' "$QR_ROOT/Cargo.lock")"
    [ -n "$version" ] || { echo "build-env: librocksdb-sys not found in Cargo.lock" >&2; return 1; }
    lib_dir="$QR_CACHE/rocksdb-$version"
    if [ ! -f "$lib_dir/librocksdb.a" ]; then
        echo "build-env: compiling RocksDB $version once for this machine (25-45 min on 2 cores)" >&2
        (cd "$QR_ROOT" && env -u ROCKSDB_LIB_DIR -u ROCKSDB_STATIC cargo build --release --locked -p librocksdb-sys)
        built="$(ls -t "$CARGO_TARGET_DIR"/release/build/librocksdb-sys-*/out/librocksdb.a | head -n 1)"
        mkdir -p "$lib_dir.tmp"
        cp "$built" "$lib_dir.tmp/librocksdb.a"
        rm -rf "$lib_dir" && mv "$lib_dir.tmp" "$lib_dir"
    fi
    export ROCKSDB_LIB_DIR="$lib_dir" ROCKSDB_STATIC=1
}

# Free space (GiB) on the file system that holds the target dir.
qr_free_gib() {
    mkdir -p "$QR_CACHE"
    df -P -BG "$QR_CACHE" | awk 'NR == 2 {sub("G", "", $4); print $4}'
}

# Makes room for a whole build and test run: when fewer than $1 GiB are
# free and a target dir from an earlier run is there, it is removed and the
# next build starts afresh (RocksDB's cached library lives beside it, not in
# it, and stays). A machine that keeps ~/.cache between runs accumulates
# artifacts with every dependency or toolchain change; running out of disk
# half-way through the tests fails them all with "No space left on device".
qr_disk_guard() {
    local need="$1" free
    free="$(qr_free_gib)"
    echo "build-env: ${free} GiB free for $CARGO_TARGET_DIR (a whole run needs about ${need} GiB)" >&2
    if [ "$free" -lt "$need" ] && [ -d "$CARGO_TARGET_DIR" ]; then
        echo "build-env: removing $CARGO_TARGET_DIR ($(du -sh "$CARGO_TARGET_DIR" 2>/dev/null | cut -f1)) to make room" >&2
        rm -rf "$CARGO_TARGET_DIR"
        free="$(qr_free_gib)"
        echo "build-env: ${free} GiB free now" >&2
    fi
    if [ "$free" -lt "$need" ]; then
        echo "build-env: WARNING: only ${free} GiB free; the build or the tests may run out of disk" >&2
    fi
}
