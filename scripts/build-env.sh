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
