#!/usr/bin/env bash
# A 3-process quorum-relay cluster on 127.0.0.1 plus a demo target mail server.
#
#   scripts/local-cluster.sh start        build, start target + 3 nodes, wait for a leader
#   scripts/local-cluster.sh stop         stop everything this script started (by PID)
#   scripts/local-cluster.sh status       relayctl status
#   scripts/local-cluster.sh kill N       SIGKILL node N
#   scripts/local-cluster.sh start-node N start node N again on its existing data dir
#   scripts/local-cluster.sh env          print `export RELAYCTL_CA=...` lines for relayctl
#                                         (eval "$(scripts/local-cluster.sh env)")
#
# The Raft and admin ports run mutual TLS; development certificates are
# created in data/local/certs/ at first start (relayd --dev-certs).
# Data, logs and PID files live in data/local/ (ignored by git). Ports: see
# cluster-config/local/node{1,2,3}.toml and docs/design.md "Operator contract".
# For benchmarks: QR_SKIP_BUILD=1 starts the binaries already built, and
# QR_NO_TARGET=1 leaves port 2600 to another target (e.g. smtp-sink).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/build-env.sh"
source "$(dirname "${BASH_SOURCE[0]}")/ports.sh"
cd "$QR_ROOT"

DATA="$QR_ROOT/data/local"
TOKEN="dev-token"
CERTS="$DATA/certs"
mkdir -p "$DATA"

tls_flags=(--ca "$CERTS/ca.pem" --cert "$CERTS/relayctl.pem" --key "$CERTS/relayctl-key.pem")
relayctl() { "$QR_BIN_DIR/relayctl" --addr 127.0.0.1:7201 --token "$TOKEN" "${tls_flags[@]}" "$@"; }

# Development CA and certificates for nodes 1-3 and relayctl, once.
ensure_certs() {
    [ -f "$CERTS/ca.pem" ] && return
    "$QR_BIN_DIR/relayd" --dev-certs "$CERTS" --nodes 1,2,3 >/dev/null
    echo "created development TLS certificates in $CERTS"
}

running() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

build() {
    qr_ensure_rocksdb
    cargo build --release --locked --bin relayd --bin relayctl --bin demo-target
}

start_target() {
    if running "$DATA/target.pid"; then return; fi
    mkdir -p "$DATA/target-mail"
    nohup "$QR_BIN_DIR/demo-target" --listen 127.0.0.1:2600 --dir "$DATA/target-mail" \
        >"$DATA/target.log" 2>&1 &
    echo $! >"$DATA/target.pid"
}

start_node() {
    local n=$1
    if running "$DATA/node$n.pid"; then echo "node $n already running (pid $(cat "$DATA/node$n.pid"))"; return; fi
    ensure_certs
    nohup "$QR_BIN_DIR/relayd" --config "cluster-config/local/node$n.toml" \
        >>"$DATA/node$n.log" 2>&1 &
    echo $! >"$DATA/node$n.pid"
    echo "node $n started (pid $!, log $DATA/node$n.log)"
}

wait_for_leader() {
    local deadline=$((SECONDS + 60)) out
    while [ $SECONDS -lt $deadline ]; do
        for port in 7201 7202 7203; do
            # Exit 4 (degraded: a node still starting) prints the status too.
            out=$("$QR_BIN_DIR/relayctl" --addr 127.0.0.1:$port --token "$TOKEN" "${tls_flags[@]}" --json status 2>/dev/null || true)
            if echo "$out" | grep -q '"leader": [0-9]'; then
                echo "$out" | sed -n 's/.*"leader": \([0-9]*\).*/leader: node \1/p'
                return 0
            fi
        done
        sleep 0.5
    done
    echo "no leader within 60 s; see $DATA/node*.log" >&2
    return 1
}

stop_pid_file() {
    local f=$1 pid
    running "$f" || { rm -f "$f"; return 0; }
    pid=$(cat "$f")
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
    rm -f "$f"
}

# The ports of everything `start` is about to start, by name.
ports_to_start() {
    if [ "${QR_NO_TARGET:-0}" != 1 ] && ! running "$DATA/target.pid"; then
        echo "2600 demo target SMTP"
    fi
    for n in 1 2 3; do
        running "$DATA/node$n.pid" || qr_node_ports "$n"
    done
}

# relayctl's TLS settings for this cluster, as shell exports (nothing when
# the local cluster is not running, e.g. after a Compose demo).
print_env() {
    local n
    for n in 1 2 3; do
        if running "$DATA/node$n.pid" && [ -f "$CERTS/ca.pem" ]; then
            echo "export RELAYCTL_CA=$CERTS/ca.pem RELAYCTL_CERT=$CERTS/relayctl.pem RELAYCTL_KEY=$CERTS/relayctl-key.pem"
            return
        fi
    done
}

case "${1:-}" in
start)
    ports_to_start | qr_check_ports
    [ "${QR_SKIP_BUILD:-0}" = 1 ] || build
    [ "${QR_NO_TARGET:-0}" = 1 ] || start_target
    for n in 1 2 3; do start_node "$n"; done
    wait_for_leader
    mkdir -p bin && ln -sfn "$QR_BIN_DIR/relayctl" bin/relayctl
    cat <<EOT
SMTP:       127.0.0.1:2525, 127.0.0.1:2526, 127.0.0.1:2527
Raft gRPC:  127.0.0.1:7101..7103   admin gRPC: 127.0.0.1:7201..7203 (token dev-token; mTLS, certs in $CERTS)
HTTP:       http://127.0.0.1:9101/ status page (9102, 9103; also /readyz, /metrics)
Target:     127.0.0.1:2600 -> messages appear in $DATA/target-mail/
Send one:   swaks --server 127.0.0.1:2525 --from you@sender.test --to user@example.test
Status:     eval "\$(scripts/local-cluster.sh env)"; bin/relayctl --token dev-token status   (bin/relayctl -> $QR_BIN_DIR/relayctl)
EOT
    print_env
    ;;
stop)
    for n in 1 2 3; do stop_pid_file "$DATA/node$n.pid"; done
    stop_pid_file "$DATA/target.pid"
    echo "stopped"
    ;;
status)
    relayctl status
    ;;
kill)
    n=${2:?usage: kill N}
    running "$DATA/node$n.pid" || { echo "node $n is not running" >&2; exit 1; }
    kill -KILL "$(cat "$DATA/node$n.pid")"
    rm -f "$DATA/node$n.pid"
    echo "node $n killed"
    ;;
start-node)
    n="${2:?usage: start-node N}"
    running "$DATA/node$n.pid" || qr_node_ports "$n" | qr_check_ports
    start_node "$n"
    ;;
env)
    print_env
    ;;
*)
    sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
    ;;
esac
