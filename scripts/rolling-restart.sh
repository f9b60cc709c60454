#!/usr/bin/env bash
# Restart every node of a quorum-relay tier in turn, without a 4xx to any
# sender that reaches a node in service and without a duplicate: for each
# node, drain it (relayctl member drain: it answers 421 to new SMTP
# connections, hands leadership and its queue on, and waits until it is
# safe to stop), restart it, wait until it answers and has caught up with
# the leader's log, put it back in service (undrain), and go on with the
# next one. Stops at the first step that fails, leaving that node drained
# (undrain it by hand once it is fixed: relayctl member undrain N).
#
#   scripts/rolling-restart.sh --nodes 1,2,3 --restart 'COMMAND'
#
#   --restart COMMAND  run as `COMMAND ID` to restart node ID; it must return
#                      once the node was stopped and started again, e.g.
#                      a script running `ssh relay$1 systemctl restart
#                      relayd` (systemd) or `docker compose restart relay$1`
#   --nodes IDS        comma-separated node ids, in order (default 1,2,3)
#   --drain-wait S     seconds to wait for "safe to stop" (default 120)
#   --catch-up S       seconds to wait for the restarted node (default 120)
#   --max-lag N        "caught up": at most N entries behind (default 50)
#
# relayctl is found as $RELAYCTL, else bin/relayctl, else on PATH; it reads
# RELAYCTL_ADDR (give every node's admin address, comma-separated, so a
# stopped node is skipped), RELAYCTL_TOKEN and the TLS variables as usual.
# Needs jq.
set -euo pipefail

nodes="1,2,3"
restart=""
drain_wait=120
catch_up=120
max_lag=50
while [ $# -gt 0 ]; do
    case "$1" in
    --nodes) nodes="$2"; shift 2 ;;
    --restart) restart="$2"; shift 2 ;;
    --drain-wait) drain_wait="$2"; shift 2 ;;
    --catch-up) catch_up="$2"; shift 2 ;;
    --max-lag) max_lag="$2"; shift 2 ;;
    -h|--help) sed -n '2,27p' "$0"; exit 0 ;;
    *) echo "rolling-restart: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
if [ -z "$restart" ]; then
    echo "rolling-restart: --restart COMMAND is required (see --help)" >&2
    exit 2
fi
command -v jq >/dev/null || { echo "rolling-restart: needs jq (scripts/setup.sh installs it)" >&2; exit 2; }
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
relayctl="${RELAYCTL:-}"
if [ -z "$relayctl" ]; then
    if [ -x "$here/../bin/relayctl" ]; then relayctl="$here/../bin/relayctl"; else relayctl=relayctl; fi
fi

say() { echo "rolling-restart: $(date -u +%H:%M:%S) $*"; }

# The node's entry in `relayctl status --json`, or nothing.
node_status() {
    "$relayctl" --json status 2>/dev/null | jq -c --argjson id "$1" '.nodes[] | select(.id == $id)' || true
}

wait_caught_up() {
    local id=$1 deadline=$((SECONDS + catch_up)) entry=""
    while [ $SECONDS -lt $deadline ]; do
        entry="$(node_status "$id")"
        if [ -n "$entry" ] &&
            [ "$(jq -r '.reachable' <<<"$entry")" = true ] &&
            [ "$(jq -r '.role' <<<"$entry")" != candidate ] &&
            [ "$(jq -r '.lag' <<<"$entry")" -le "$max_lag" ] &&
            [ "$(jq -r '.applied' <<<"$entry")" -gt 0 ]; then
            say "node $id is back and caught up (lag $(jq -r '.lag' <<<"$entry") entries)"
            return 0
        fi
        sleep 0.5
    done
    say "node $id did not catch up within ${catch_up}s: ${entry:-no answer}" >&2
    return 1
}

IFS=',' read -r -a ids <<<"$nodes"
for id in "${ids[@]}"; do
    say "node $id: draining"
    if ! "$relayctl" member drain "$id" --wait "$drain_wait"; then
        say "node $id is not safe to stop; stopping here (it stays drained)" >&2
        exit 1
    fi
    say "node $id: restarting"
    if ! $restart "$id"; then
        say "the restart command failed for node $id; stopping here (it stays drained)" >&2
        exit 1
    fi
    wait_caught_up "$id" || exit 1
    say "node $id: back in service"
    "$relayctl" member undrain "$id"
done
say "done: ${ids[*]} restarted"
