#!/usr/bin/env bash
# The relay path against Postfix as a relay, same load, same run, same sink.
#
#   benches/relay-vs-postfix.sh            COUNT=2000 SESSIONS=20 SIZE=1024
#
# For each system: ../shared/bench/smtp-load.sh (smtp-source -> relay ->
# smtp-sink; accepted and end-to-end msgs/s) and benches' smtp-latency
# (per-message MAIL-to-250 latency, p50/p90/p99). quorum-relay runs as the
# local 3-process cluster (scripts/local-cluster.sh) with its demo target
# replaced by smtp-sink; Postfix as a private instance with logging off
# (../shared/bench/postfix-relay.sh), relaying to the same sink port.
# Writes benches/results/relay-vs-postfix-<date>.md. Figures are a ratio in
# one run on this machine, never assertions.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$here/../scripts/build-env.sh"
cd "$QR_ROOT"
BENCH="${QR_SHARED_BENCH:-$QR_ROOT/../shared/bench}"
COUNT=${COUNT:-2000}
SESSIONS=${SESSIONS:-20}
SIZE=${SIZE:-1024}
SINK_PORT=2600            # the local cluster's default route (demo target port)
PFX_LISTEN=127.0.0.1:2535
out="benches/results/relay-vs-postfix-$(date -u +%Y-%m-%d).md"

qr_ensure_rocksdb
cargo build --release --locked --bin relayd --bin relayctl --bin demo-target --bin smtp-latency
lat() { "$QR_BIN_DIR/smtp-latency" --targets "$1" --sessions "$SESSIONS" --count "$COUNT" --size "$SIZE"; }
sink_pid=
start_sink() { smtp-sink -u nobody "127.0.0.1:$SINK_PORT" 1024 & sink_pid=$!; sleep 0.5; }
stop_sink() { [ -n "$sink_pid" ] && kill "$sink_pid" 2>/dev/null; wait "$sink_pid" 2>/dev/null || true; sink_pid=; }
cleanup() { stop_sink; scripts/local-cluster.sh stop >/dev/null 2>&1 || true; "$BENCH/postfix-relay.sh" stop >/dev/null 2>&1 || true; }
trap cleanup EXIT

echo "== quorum-relay (3 nodes, local processes)"
rm -rf data/local
scripts/local-cluster.sh start >/dev/null
kill "$(cat data/local/target.pid)"; rm -f data/local/target.pid   # smtp-sink takes its port
sleep 0.5
qr_load=$(TARGET=127.0.0.1:2525 SINK_PORT=$SINK_PORT COUNT=$COUNT SESSIONS=$SESSIONS SIZE=$SIZE REUSE=1 \
    "$BENCH/smtp-load.sh")
echo "$qr_load"
start_sink
qr_lat=$(lat 127.0.0.1:2525,127.0.0.1:2526,127.0.0.1:2527)
echo "$qr_lat"
stop_sink
scripts/local-cluster.sh stop >/dev/null

echo "== Postfix (one instance, logging off)"
LISTEN=$PFX_LISTEN NEXTHOP=127.0.0.1:$SINK_PORT MAILLOG=none "$BENCH/postfix-relay.sh" start >/dev/null
pf_load=$(TARGET=$PFX_LISTEN SINK_PORT=$SINK_PORT COUNT=$COUNT SESSIONS=$SESSIONS SIZE=$SIZE REUSE=1 \
    "$BENCH/smtp-load.sh")
echo "$pf_load"
start_sink
pf_lat=$(lat "$PFX_LISTEN")
echo "$pf_lat"
stop_sink
"$BENCH/postfix-relay.sh" stop >/dev/null

field() { echo "$1" | tr ' ' '\n' | awk -F= -v k="$2" '$1==k {print $2}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }'; }
{
    echo "# quorum-relay vs Postfix: relay path, $(date -u +%Y-%m-%dT%H:%MZ)"
    echo
    echo "Machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -r)."
    echo "Load: $COUNT messages x $SIZE octets over $SESSIONS sessions (smtp-source -d; smtp-latency)."
    echo "quorum-relay: 3 relayd processes on loopback, every 250 after a quorum fsync."
    echo "Postfix: one instance (../shared/bench/postfix-relay.sh), logging off."
    echo
    echo "| figure | quorum-relay | Postfix | ratio |"
    echo "|---|---|---|---|"
    for k in accept_msgs_per_s e2e_msgs_per_s; do
        echo "| $k (smtp-load) | $(field "$qr_load" $k) | $(field "$pf_load" $k) | $(ratio "$(field "$qr_load" $k)" "$(field "$pf_load" $k)") |"
    done
    for k in msgs_per_s p50_ms p90_ms p99_ms max_ms; do
        echo "| $k (smtp-latency) | $(field "$qr_lat" $k) | $(field "$pf_lat" $k) | $(ratio "$(field "$qr_lat" $k)" "$(field "$pf_lat" $k)") |"
    done
    echo
    echo "Raw lines:"
    echo
    echo '```'
    echo "quorum-relay smtp-load:    $qr_load"
    echo "quorum-relay smtp-latency: $qr_lat"
    echo "postfix smtp-load:         $pf_load"
    echo "postfix smtp-latency:      $pf_lat"
    echo '```'
} > "$out"
cat "$out"
