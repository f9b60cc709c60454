#!/usr/bin/env bash
# The nemesis: three local relayd processes, continuous load, a seeded
# random schedule of faults and heals, and an independent checker.
#
#   scripts/nemesis.sh --seed S --minutes M [--classes a,b,...] [--out DIR]
#                      [--senders N] [--break-append-fsync] [--dry-run]
#
# Classes: process, power, operator, target, network (cuts, and link rate
# caps, loss and reordering between nodes only), disk (fsync EIO, full disk
# on a small loop-mounted ext4), clock, membership (member remove/wipe/add/promote and
# demote/promote of a follower) (default: all but clock and membership).
# The same seed and classes give the same schedule. Files
# and results.md (the per-class table) go to --out (default
# $CARGO_TARGET_DIR/nemesis/seed-S). The last line is the verdict:
#   nemesis: seed=S classes=... faults=N acked=N lost=N duplicated=N counted_duplicates=N unexpected=N
# Exit status 0: passed; 1: mail lost or invented, or a bad state after the
# heal; 3: only duplicate counting failed (a duplicated message the relay did
# not flag); 2: the run itself broke.
# Needs root (iptables rules and an htb qdisc on lo between the nodes'
# 127.77.0.x addresses, loop mounts); without root it says so and exits 0.
# Ctrl-c removes everything it added. See docs/fault-suite.md, "Nemesis".
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if [ "$(id -u)" != 0 ]; then
    echo "nemesis: skipped: needs root (iptables on lo, libfaketime install)"
    exit 0
fi
seed="" out=""
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
    case "${args[i]}" in
    --seed) seed="${args[i + 1]:-}" ;;
    --seed=*) seed="${args[i]#--seed=}" ;;
    --out | --out=*) out=set ;;
    -h | --help) sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    esac
done
[ -n "$seed" ] || { seed="$(( $(date +%s) % 1000000 ))"; args+=(--seed "$seed"); }
"$here/setup.sh" nemesis
source "$here/build-env.sh"
cd "$QR_ROOT"
qr_ensure_rocksdb
cargo build --release --locked --bins >&2
[ -n "$out" ] || args+=(--out "$CARGO_TARGET_DIR/nemesis/seed-$seed")
exec "$CARGO_TARGET_DIR/release/relay-nemesis" --bin-dir "$CARGO_TARGET_DIR/release" "${args[@]}"
