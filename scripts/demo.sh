#!/usr/bin/env bash
# The README's first command: a working 3-node quorum-relay cluster and a
# demo target mail server, with how to send a first message.
#
#   scripts/demo.sh [start]   Docker Compose when an engine answers (the image
#                             is built FROM scratch here, nothing pulled);
#                             otherwise three local processes
#   scripts/demo.sh stop      stop what start started (volumes are kept)
#   QR_DEMO=docker|local      choose instead of detecting
#
# Both ways use the same host ports (SMTP 2525-2527, admin gRPC 7201-7203,
# HTTP 9101-9103); the target's mail lands in data/compose/target-mail/ or
# data/local/target-mail/.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
cd "$root"
mkdir -p data
mode_file=data/demo-mode

detect() {
    if [ -n "${QR_DEMO:-}" ]; then echo "$QR_DEMO"; return; fi
    if docker info >/dev/null 2>&1 && command -v docker-compose >/dev/null; then echo docker; else echo local; fi
}

case "${1:-start}" in
start)
    "$here/setup.sh"
    mode=$(detect)
    echo "$mode" >"$mode_file"
    if [ "$mode" = local ]; then
        exec "$here/local-cluster.sh" start
    fi
    "$here/docker-image.sh"
    source "$here/build-env.sh"
    mkdir -p data/compose/target-mail
    docker-compose up -d
    deadline=$((SECONDS + 60))
    # status exits 4 while a node is still coming up (degraded): only the
    # leader line matters here.
    until { "$QR_BIN_DIR/relayctl" --addr 127.0.0.1:7201 --token dev-token status 2>/dev/null || true; } | grep -q 'leader: node [0-9]'; do
        [ $SECONDS -lt $deadline ] || { echo "no leader within 60 s; see docker-compose logs" >&2; exit 1; }
        sleep 0.5
    done
    "$QR_BIN_DIR/relayctl" --addr 127.0.0.1:7201 --token dev-token status || true
    cat <<EOT
Docker Compose: relay1..relay3 + demo-target (docker-compose ps, docker-compose logs)
SMTP:       127.0.0.1:2525, 127.0.0.1:2526, 127.0.0.1:2527
HTTP:       http://127.0.0.1:9101/ status page (9102, 9103; also /readyz, /metrics)
Send one:   swaks --server 127.0.0.1:2525 --from you@sender.test --to user@example.test
It lands:   data/compose/target-mail/1.eml
Status:     $QR_BIN_DIR/relayctl --token dev-token status
Stop:       scripts/demo.sh stop
EOT
    ;;
stop)
    mode=$(cat "$mode_file" 2>/dev/null || detect)
    if [ "$mode" = local ]; then
        "$here/local-cluster.sh" stop
    else
        docker-compose down
    fi
    rm -f "$mode_file"
    ;;
*)
    sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
    ;;
esac
