#!/usr/bin/env bash
# Retention benchmark: does the replicated state go back to its empty-queue
# size once the history window has passed? Three relayd nodes (this
# script's own, mTLS on, a short cluster.history_retention), COUNT messages
# through SMTP into all three, delivered to one smtp-sink; then it waits
# out the window and measures again.
#
#   benches/retention.sh                    1,000,000 messages (the figure)
#   COUNT=20000 benches/retention.sh        a short end-to-end check
#
# Measured on every node at three points: `empty` (fresh cluster, before
# any mail), `drained` (all COUNT delivered, queue empty, history of every
# message still inside the window) and `after` (RETENTION plus two
# PRUNE_EVERY after every queue was empty: the leader has committed a
# Prune whose cutoff is past every message's delivery):
#   - store_bytes: relay_store_bytes from /metrics (RocksDB SST files and
#     memtables; deleted rows leave it only when RocksDB compacts);
#   - snapshot_bytes and snapshot_s: `relayctl snapshot` on that node (it
#     answers once the new snapshot is built) timed from the outside, and
#     the size of the snapshot file it wrote (<data_dir>/db/snapshots/*.snap),
#     which is the serialized replicated state. Before each point one
#     `relayctl route set` of the same dummy route is committed, so every
#     node has something new to snapshot.
#
# Environment: COUNT (1000000), SESSIONS (50, spread over the three nodes),
# SIZE (1024 octets), RETENTION (2m; also delivery.queue_lifetime, which
# may not exceed it), PRUNE_EVERY (30s, cluster.purge_interval: how often
# the leader prunes and each node snapshots and purges its log), WORK
# (data/retention-bench, removed at the start), BASE_PORT (3500: SMTP
# BASE+1..3, Raft BASE+11..13, admin BASE+21..23, HTTP BASE+31..33, sink
# BASE+40), QR_SKIP_BUILD=1 to use the binaries already built.
# Writes benches/results/retention-<date>.md (time appended if it exists).
# Needs smtp-sink (postfix; scripts/setup.sh test) and curl.
set -euo pipefail
BENCH="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$BENCH/../scripts/build-env.sh"
cd "$QR_ROOT"

COUNT=${COUNT:-1000000}
SESSIONS=${SESSIONS:-50}
SIZE=${SIZE:-1024}
RETENTION=${RETENTION:-2m}
PRUNE_EVERY=${PRUNE_EVERY:-30s}
WORK=${WORK:-data/retention-bench}
BASE_PORT=${BASE_PORT:-3500}
SINK_PORT=$((BASE_PORT + 40))
TOKEN=bench-token

seconds() { # 90s, 2m, 1h -> seconds
    case "$1" in
    *ms) echo 0 ;; *s) echo "${1%s}" ;; *m) echo $((${1%m} * 60)) ;; *h) echo $((${1%h} * 3600)) ;;
    *) echo "retention: cannot read the duration '$1' (use s, m or h)" >&2; exit 2 ;;
    esac
}
retention_s=$(seconds "$RETENTION")
prune_s=$(seconds "$PRUNE_EVERY")

command -v smtp-sink >/dev/null || { echo "retention: smtp-sink not found (scripts/setup.sh test installs postfix)" >&2; exit 1; }
command -v curl >/dev/null || { echo "retention: curl not found" >&2; exit 1; }
if [ -z "${QR_SKIP_BUILD:-}" ]; then
    qr_ensure_rocksdb
    cargo build --release --locked --bin relayd --bin relayctl --bin smtp-latency 2>&1 | tail -1 >&2
fi
for bin in relayd relayctl smtp-latency; do
    [ -x "$QR_BIN_DIR/$bin" ] || { echo "retention: $QR_BIN_DIR/$bin is missing (drop QR_SKIP_BUILD)" >&2; exit 1; }
done

smtp_port() { echo $((BASE_PORT + $1)); }
raft_port() { echo $((BASE_PORT + 10 + $1)); }
admin_port() { echo $((BASE_PORT + 20 + $1)); }
http_port() { echo $((BASE_PORT + 30 + $1)); }
busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for port in $(for i in 1 2 3; do smtp_port $i; raft_port $i; admin_port $i; http_port $i; done) $SINK_PORT; do
    if busy "$port"; then echo "retention: port $port is in use on 127.0.0.1 (BASE_PORT moves them all)" >&2; exit 1; fi
done

log() { echo "retention: $(date -u +%H:%M:%S) $*" >&2; }
rm -rf "$WORK"
mkdir -p "$WORK"
WORK="$(cd "$WORK" && pwd)"

# ---- processes this script started (stopped by PID on exit) ---------------
pids=()
cleanup() {
    local pid
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT

"$QR_BIN_DIR/relayd" --dev-certs "$WORK/certs" --nodes 1,2,3 >/dev/null
export RELAYCTL_CA="$WORK/certs/ca.pem" RELAYCTL_CERT="$WORK/certs/relayctl.pem" RELAYCTL_KEY="$WORK/certs/relayctl-key.pem"
relayctl() { local i=$1; shift; "$QR_BIN_DIR/relayctl" --addr "127.0.0.1:$(admin_port "$i")" --token "$TOKEN" "$@"; }

for i in 1 2 3; do
    cat >"$WORK/node$i.toml" <<TOML
node_id = $i
data_dir = "$WORK/node$i"
hostname = "relay$i.bench"

[listen]
smtp = "127.0.0.1:$(smtp_port "$i")"
raft = "127.0.0.1:$(raft_port "$i")"
admin = "127.0.0.1:$(admin_port "$i")"
http = "127.0.0.1:$(http_port "$i")"

[cluster]
secret = "retention-bench-cluster-secret"
bootstrap = $([ "$i" = 1 ] && echo true || echo false)
heartbeat = "100ms"
election_timeout_min = "500ms"
election_timeout_max = "1000ms"
purge_interval = "$PRUNE_EVERY"
history_retention = "$RETENTION"

[[cluster.members]]
id = 1
raft = "127.0.0.1:$(raft_port 1)"

[[cluster.members]]
id = 2
raft = "127.0.0.1:$(raft_port 2)"

[[cluster.members]]
id = 3
raft = "127.0.0.1:$(raft_port 3)"

[smtp]
authorized_networks = ["127.0.0.0/8"]
tls = "off"

[delivery]
queue_lifetime = "$RETENTION"
default_route = ["127.0.0.1:$SINK_PORT"]
default_route_tls = "none"

[admin]
token = "$TOKEN"

[tls]
mode = "on"
ca = "$WORK/certs/ca.pem"
cert = "$WORK/certs/node-$i.pem"
key = "$WORK/certs/node-$i-key.pem"
admin_client_cert = true
TOML
done

smtp-sink -c -m 2000 -u nobody "127.0.0.1:$SINK_PORT" 1024 >"$WORK/sink.out" 2>"$WORK/sink.err" &
pids+=($!)
sink_count() { # last "mesg=N" smtp-sink -c wrote
    local last
    last=$(tail -c 200 "$WORK/sink.out" 2>/dev/null | tr '\r' '\n' | grep -o 'mesg=[0-9]*' | tail -1)
    last=${last#mesg=}
    echo "${last:-0}"
}

for i in 1 2 3; do
    RELAY_LOG=warn "$QR_BIN_DIR/relayd" --config "$WORK/node$i.toml" >"$WORK/node$i.log" 2>&1 &
    pids+=($!)
done
deadline=$((SECONDS + 120))
for i in 1 2 3; do
    until curl -sf "http://127.0.0.1:$(http_port "$i")/readyz" >/dev/null; do
        [ $SECONDS -lt $deadline ] || { echo "retention: node $i not ready within 120 s; see $WORK/node$i.log" >&2; exit 1; }
        sleep 0.2
    done
done
log "three nodes ready (retention $RETENTION, prune and snapshot every $PRUNE_EVERY)"

metric() { # node name: one sample line's value
    curl -sf "http://127.0.0.1:$(http_port "$1")/metrics" | awk -v n="$2" '$1 == n { v = $2 } END { print v + 0 }'
}
# measure POINT: one line per node: point node store_bytes snapshot_bytes snapshot_s
rows=()
# A node builds a snapshot only if it applied something since its last one
# (the periodic one may just have run), so each point first commits one
# small entry that leaves the state the same size every time: the same
# route set again. A node that has not applied it yet is asked again.
measure() {
    local point=$1 i t0 t1 snap out try built
    relayctl 1 route set bench-marker.invalid 127.0.0.1:9 --tls none >/dev/null
    for i in 1 2 3; do
        built=
        for try in 1 2 3 4 5 6 7 8 9 10; do
            t0=$(date +%s.%N)
            if out=$(relayctl "$i" --json snapshot 2>&1); then
                t1=$(date +%s.%N)
                built=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }')
                break
            fi
            sleep 1
        done
        [ -n "$built" ] || log "node $i: relayctl snapshot: $out (the size is its last snapshot's)"
        snap=$(ls -t "$WORK/node$i/db/snapshots/"*.snap 2>/dev/null | head -n 1)
        rows+=("$point $i $(metric "$i" relay_store_bytes) $([ -n "$snap" ] && stat -c %s "$snap" || echo -) ${built:--}")
        log "$point node $i: ${rows[-1]#* * }"
    done
}

queue_empty() { # every node's view: nothing queued, deferred or held
    local i q
    for i in 1 2 3; do
        q=$(relayctl "$i" --json status 2>/dev/null | tr -d ' \n' | grep -o '"queue":{[^}]*}') || return 1
        echo "$q" | grep -q '"queued":0' && echo "$q" | grep -q '"deferred":0' && echo "$q" | grep -q '"held":0' || return 1
    done
}

measure empty
started=$SECONDS
targets="127.0.0.1:$(smtp_port 1),127.0.0.1:$(smtp_port 2),127.0.0.1:$(smtp_port 3)"
log "sending $COUNT messages of $SIZE octets over $SESSIONS sessions"
lat=$("$QR_BIN_DIR/smtp-latency" --targets "$targets" --sessions "$SESSIONS" --count "$COUNT" --size "$SIZE" --to rcpt@dest.test)
accepted_at=$SECONDS
log "sent: $lat"
deadline=$((SECONDS + 600 + COUNT / 100))
until [ "$(sink_count)" -ge "$COUNT" ] && queue_empty; do
    [ $SECONDS -lt $deadline ] || { echo "retention: not delivered in time: sink has $(sink_count) of $COUNT" >&2; exit 1; }
    sleep 1
done
delivered_s=$((SECONDS - started))
log "all $COUNT at the sink and every queue empty after ${delivered_s}s"
measure drained
# The window runs from each message's delivery, not its acceptance: when
# delivery trails acceptance (a large COUNT), waiting from the last
# acceptance measures `after` while the last messages are still inside it.
drained_at=$SECONDS

wait_until=$((drained_at + retention_s + 2 * prune_s + 5))
log "waiting $((wait_until - SECONDS))s: the retention window plus two prune intervals"
while [ $SECONDS -lt $wait_until ]; do sleep 5; done
measure after

mkdir -p benches/results
out="benches/results/retention-$(date -u +%Y-%m-%d).md"
[ -e "$out" ] && out="benches/results/retention-$(date -u +%Y-%m-%dT%H%M).md"
{
    echo "# Retention: state, snapshot and snapshot build time after the window"
    echo
    echo "- Run: $(date -u +%Y-%m-%dT%H:%M:%SZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown), $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "- Load: $COUNT messages x $SIZE octets, smtp-latency over $SESSIONS sessions spread over the three nodes; delivered to smtp-sink"
    echo "- Settings: cluster.history_retention = $RETENTION (delivery.queue_lifetime the same), cluster.purge_interval = $PRUNE_EVERY, mTLS on"
    echo "- smtp-latency: $lat"
    echo "- All delivered and every queue empty ${delivered_s}s after the load started; 'after' measured $((SECONDS - accepted_at))s after the last acceptance, $((SECONDS - drained_at))s after the queues were empty"
    echo
    echo "| point | node | store bytes (relay_store_bytes) | snapshot bytes | snapshot build, s (relayctl snapshot) |"
    echo "|---|---|---|---|---|"
    for r in "${rows[@]}"; do
        # shellcheck disable=SC2086
        set -- $r
        echo "| $1 | $2 | $3 | $4 | $5 |"
    done
} >"$out"
cat "$out"
log "written to $out"
