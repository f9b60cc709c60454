#!/usr/bin/env bash
# The README's first command: a working 3-node quorum-relay cluster and a
# demo target mail server, with how to send a first message.
#
#   scripts/demo.sh [start]   Docker Compose when an engine and a Compose tool
#                             answer (the image is built FROM scratch here,
#                             nothing pulled); otherwise three local processes
#   scripts/demo.sh stop      stop what start started (volumes are kept)
#   scripts/demo.sh env       relayctl's mTLS settings as shell exports
#                             (eval "$(scripts/demo.sh env)")
#   QR_DEMO=docker|local      choose instead of detecting
#
# Compose tool: the v2 plugin (`docker compose`) when present, else the
# classic `docker-compose`; the script says which and why. Both ways use
# the same host ports (SMTP 2525-2527, Raft gRPC 7101-7103, admin gRPC
# 7201-7203, HTTP 9101-9103), checked free before anything starts; the
# target's mail lands in data/compose/target-mail/ or data/local/target-mail/.
# bin/relayctl links to the built relayctl. Both run mutual TLS on the Raft
# and admin ports with development certificates: data/local/certs/, or the
# Compose `certs` volume, copied to data/compose/certs/ for relayctl.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
cd "$root"
source "$here/ports.sh"
mkdir -p data
mode_file=data/demo-mode

# Sets COMPOSE (the command) and COMPOSE_WHY; returns 1 if there is none.
find_compose() {
    local v
    if v="$(docker compose version --short 2>/dev/null)"; then
        COMPOSE=(docker compose)
        COMPOSE_WHY="the Compose v2 plugin answers ('docker compose' $v)"
    elif command -v docker-compose >/dev/null && v="$(docker-compose version --short 2>/dev/null)"; then
        COMPOSE=(docker-compose)
        COMPOSE_WHY="no Compose v2 plugin ('docker compose' is not a docker command here); using docker-compose $v"
    else
        return 1
    fi
}

# Prints the mode and says why on stderr.
detect() {
    if [ -n "${QR_DEMO:-}" ]; then
        echo "demo: mode $QR_DEMO (QR_DEMO)" >&2
        echo "$QR_DEMO"
        return
    fi
    if ! docker info >/dev/null 2>&1; then
        echo "demo: local processes: no Docker engine answers ('docker info')" >&2
        echo local
    elif ! find_compose; then
        echo "demo: local processes: a Docker engine answers but neither 'docker compose' nor 'docker-compose' is installed" >&2
        echo local
    else
        echo "demo: Docker Compose: the engine answers" >&2
        echo docker
    fi
}

compose() { "${COMPOSE[@]}" "$@"; }

admin_token() { tr -d '[:space:]' <"${QR_ADMIN_TOKEN_FILE:-cluster-config/compose/secrets/admin-token}"; }

# The long-running services (the one-shot `certs` service exits 0).
services=(relay1 relay2 relay3 demo-target)
certs_dir=data/compose/certs

# Waits until every long-running service of the project reports healthy.
wait_healthy() {
    local deadline=$((SECONDS + 120)) ids states
    while :; do
        ids="$(compose ps -q "${services[@]}")"
        if [ -n "$ids" ]; then
            # shellcheck disable=SC2086
            states="$(docker inspect -f '{{.Name}} {{if .State.Health}}{{.State.Health.Status}}{{else}}{{.State.Status}}{{end}}' $ids)"
            if [ "$(echo "$states" | grep -vc ' healthy$')" = 0 ] && [ "$(echo "$states" | wc -l)" = 4 ]; then
                echo "$states" | sed 's|^/||; s|^|  |'
                return 0
            fi
        fi
        if [ $SECONDS -ge $deadline ]; then
            echo "demo: not every service became healthy within 120 s:" >&2
            echo "${states:-no containers}" | sed 's|^/||; s|^|  |' >&2
            echo "demo: see '${COMPOSE[*]} logs'" >&2
            return 1
        fi
        sleep 1
    done
}

# Copies the CA and relayctl's certificate out of the `certs` volume (the
# one-shot container that wrote them is kept stopped by Compose).
copy_certs() {
    local id
    id="$(compose ps -a -q certs 2>/dev/null || compose ps -q certs)"
    [ -n "$id" ] || { echo "demo: no certs container to copy the certificates from" >&2; return 1; }
    rm -rf "$certs_dir" && mkdir -p "$certs_dir"
    for f in ca.pem relayctl.pem relayctl-key.pem; do
        docker cp "$id:/certs/$f" "$certs_dir/$f" >/dev/null
    done
    chmod 0600 "$certs_dir/relayctl-key.pem"
}

certs_env() {
    [ -f "$certs_dir/ca.pem" ] || return 0
    echo "export RELAYCTL_CA=$root/$certs_dir/ca.pem RELAYCTL_CERT=$root/$certs_dir/relayctl.pem RELAYCTL_KEY=$root/$certs_dir/relayctl-key.pem"
}

case "${1:-start}" in
env)
    mode=$(cat "$mode_file" 2>/dev/null || true)
    if [ "$mode" = local ]; then
        exec "$here/local-cluster.sh" env
    fi
    certs_env
    ;;
start)
    mode=$(detect)
    if [ "$mode" = local ]; then
        "$here/setup.sh" demo
        echo "$mode" >"$mode_file"
        exec "$here/local-cluster.sh" start
    fi
    find_compose || { echo "demo: QR_DEMO=docker but no Compose tool is installed" >&2; exit 1; }
    echo "demo: compose command '${COMPOSE[*]}': $COMPOSE_WHY" >&2
    if [ -z "$(compose ps -q 2>/dev/null)" ]; then
        for n in 1 2 3; do qr_node_ports "$n"; done | qr_check_ports
    fi
    "$here/setup.sh" demo
    echo "$mode" >"$mode_file"
    "$here/docker-image.sh"
    source "$here/build-env.sh"
    # The demo target runs as uid 10001 and writes here.
    mkdir -p data/compose/target-mail
    if [ "$(id -u)" = 0 ]; then
        chown 10001:10001 data/compose/target-mail
    else
        chmod 0777 data/compose/target-mail
    fi
    compose up -d
    echo "demo: waiting for every service to be healthy (relays: /readyz; target: 220 greeting)" >&2
    wait_healthy
    mkdir -p bin && ln -sfn "$QR_BIN_DIR/relayctl" bin/relayctl
    copy_certs
    token="$(admin_token)"
    # status exits 4 while a node is still degraded: the report is what matters.
    eval "$(certs_env)"
    bin/relayctl --addr 127.0.0.1:7201 --token "$token" status || true
    cat <<EOT
Docker Compose: relay1..relay3 + demo-target (${COMPOSE[*]} ps, ${COMPOSE[*]} logs)
SMTP:       127.0.0.1:2525, 127.0.0.1:2526, 127.0.0.1:2527
HTTP:       http://127.0.0.1:9101/ status page (9102, 9103; also /readyz, /metrics)
Send one:   swaks --server 127.0.0.1:2525 --from you@sender.test --to user@example.test
It lands:   data/compose/target-mail/1.eml
Status:     eval "\$(scripts/demo.sh env)"; bin/relayctl --token $token status   (bin/relayctl -> $QR_BIN_DIR/relayctl)
mTLS:       Raft and admin gRPC; CA and relayctl certificate in $certs_dir/
Stop:       scripts/demo.sh stop
EOT
    ;;
stop)
    mode=$(cat "$mode_file" 2>/dev/null || detect)
    if [ "$mode" = local ]; then
        "$here/local-cluster.sh" stop
    else
        find_compose || { echo "demo: no Compose tool to stop the containers with" >&2; exit 1; }
        echo "demo: compose command '${COMPOSE[*]}': $COMPOSE_WHY" >&2
        compose down
    fi
    rm -f "$mode_file"
    ;;
*)
    sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'
    exit 2
    ;;
esac
