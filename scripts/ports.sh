# shellcheck shell=bash
# Sourced by scripts/demo.sh and scripts/local-cluster.sh: which host ports
# the demo uses, by name, and a check that reports every one already taken
# before anything starts (instead of a node dying on "address in use").

# "port name" lines for node N (1..3).
qr_node_ports() {
    local n=$1
    printf '%s\n' "$((2524 + n)) node $n SMTP" "$((7100 + n)) node $n Raft gRPC" \
        "$((7200 + n)) node $n admin gRPC" "$((9100 + n)) node $n HTTP"
}

# Reads "port name" lines on stdin; prints each port something on
# 127.0.0.1 already answers on, and returns 1 if there was any.
qr_check_ports() {
    local port name taken=0
    while read -r port name; do
        [ -n "$port" ] || continue
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "port $port ($name) is already in use on 127.0.0.1" >&2
            taken=1
        fi
    done
    if [ "$taken" = 1 ]; then
        echo "stop what listens there (e.g. 'ss -ltnp' shows it), or stop an earlier demo with 'scripts/demo.sh stop'" >&2
        return 1
    fi
}
