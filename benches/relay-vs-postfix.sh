#!/usr/bin/env bash
# The one-command benchmark: quorum-relay against Postfix as a relay, same
# load, same run, same sink, over a matrix of configurations, plus group
# commit at a paced load and quorum-relay with 1 M messages queued (every
# benchmark target figure in one results file).
#
#   benches/relay-vs-postfix.sh
#
# Phases ($PHASES, default "matrix gc queue"; the results header gives the
# run's own wall time):
#
# Matrix: sessions in $SESSIONS_LIST (1 10 50) x message size in $SIZES
# (1024 32768 102400 octets); messages per configuration: $COUNT_1 (1
# session, default 2000), $COUNT_10 (default 20000), $COUNT_50 (default
# 20000). For every configuration both systems run back to back, each
# freshly started on an empty store/queue:
#   - quorum-relay: the local 3-process cluster (scripts/local-cluster.sh),
#     every 250 after a quorum fsync; each node delivers what it accepted.
#     Once per ingress in $INGRESS_LIST (spread single): `spread` sends the
#     sessions round-robin over the three nodes' SMTP ports, `single` sends
#     them all to node 1 (the bootstrap node, normally the leader; the row
#     says which node led).
#   - Postfix: one private instance, logging off
#     (benches/postfix-relay.sh), smtpd on 127.0.0.1:2535.
# Both relay to one smtp-sink on 127.0.0.1:2600 (smtp-sink -c counts what
# arrives). The load driver is benches' smtp-latency (MAIL FROM to 250 per
# message, every session back to back over one connection).
#
# Per configuration and system: accepted msgs/s and p50/p99 submit->250
# (smtp-latency), end-to-end msgs/s (COUNT / time from the driver's start
# until the sink has COUNT messages), CPU seconds of the relay during that
# window, peak RSS, and for quorum-relay the group-commit figures and the
# SMTP connections the nodes opened to the sink
# (relay_delivery_connections_opened_total) from each node's /metrics
# (scraped before and after). What is counted is written into the results
# header.
#
# gc: group commit at a paced load. Both systems at $GC_RATE messages/s
# offered (smtp-latency --rate: $GC_SESSIONS sessions x 1 KiB, $GC_COUNT
# messages, i.e. $GC_COUNT / $GC_RATE seconds), fresh. quorum-relay: per
# node, commands per log append fsync (relay_raft_entry_commands_sum /
# relay_raft_log_fsyncs_total{op="append"}, deltas over the run); on the
# leader also accepted messages per append fsync (Enqueues only) and the
# relay_raft_entry_commands bucket distribution. Postfix: the same load,
# for its latency at that rate.
#
# queue: quorum-relay with 1 M messages queued ($Q_FILL). Fresh cluster;
# accept rate on the empty queue (smtp-latency $Q_SESSIONS x 1 KiB x
# $Q_COUNT); queue-fill puts $Q_FILL deferred messages in through the
# leader's Submit RPC ($Q_BATCH per Command::Batch, timed); per node VmRSS,
# VmHWM and store size on disk; the same accept run with the queue full
# (ratio to empty); then all three nodes stopped and started again on their
# data, timing each node's /readyz and first SMTP 250 from the start; last,
# one snapshot of the full queue on node 1 alone (relayctl snapshot), timed.
# Node RSS is sampled every 0.5 s and reported per step. Postfix is not
# filled (see the results header). The nodes run the local cluster's config
# (purge_interval = $Q_PURGE_INTERVAL, default 1m as shipped: each node
# snapshots its state to a file and purges its log every minute, fill
# included). Each node runs in a memory cgroup capped at $MEM_CAP_MIB MiB,
# and a guard SIGKILLs the nodes if the machine runs low (a safety net from
# the days of in-memory snapshots, kept so a regression cannot take the
# machine down).
# benches/README.md has the trials behind these choices.
#
# Writes benches/results/$NAME-<date>.md (with the time appended if that
# exists). Figures are a ratio in one run on this machine, never assertions.
#
# Environment: PHASES [matrix gc queue]; matrix: SESSIONS_LIST, SIZES,
# INGRESS_LIST [spread single],
# COUNT_1, COUNT_10, COUNT_50 (a count for another session number:
# COUNT_<n>, else COUNT_DEFAULT=20000), SYSTEMS [qr pfx] (matrix and gc),
# E2E_TIMEOUT [300] seconds; gc: GC_RATE [1000], GC_SESSIONS [50], GC_COUNT
# [20000]; queue: Q_FILL [1000000], Q_SESSIONS [50], Q_COUNT [10000],
# RESTART_TIMEOUT [120] seconds, MEM_CAP_MIB [6144] (each node's memory
# cgroup limit in the queue phase, so a node's in-memory snapshot of 1 M
# messages cannot exhaust the machine; 0 = no cap), MEM_FLOOR_MIB [3072]
# (the queue phase SIGKILLs its nodes when the machine's MemAvailable
# falls below this, and says so), Q_PURGE_INTERVAL [1m] (the nodes'
# purge_interval in the queue phase), Q_BATCH [128] messages per Submit,
# Q_IN_FLIGHT [16] Submits, Q_MAX_LAG [512] entries (queue-fill's flow
# control);
# NAME [relay-vs-postfix-matrix],
# QR_BENCH_TOOLS [benches] (where postfix-relay.sh is), QR_SKIP_BUILD=1 (use the binaries in
# $CARGO_TARGET_DIR/release as they are, e.g. to compare two builds).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$here/../scripts/build-env.sh"
cd "$QR_ROOT"
BENCH="${QR_BENCH_TOOLS:-$QR_ROOT/benches}"
SESSIONS_LIST=${SESSIONS_LIST:-"1 10 50"}
SIZES=${SIZES:-"1024 32768 102400"}
INGRESS_LIST=${INGRESS_LIST:-"spread single"}
SYSTEMS=${SYSTEMS:-"qr pfx"}
COUNT_DEFAULT=${COUNT_DEFAULT:-20000}
COUNT_1=${COUNT_1:-2000}
NAME=${NAME:-relay-vs-postfix-matrix}
E2E_TIMEOUT=${E2E_TIMEOUT:-300}
PHASES=${PHASES:-"matrix gc queue"}
GC_RATE=${GC_RATE:-1000}
GC_SESSIONS=${GC_SESSIONS:-50}
GC_COUNT=${GC_COUNT:-20000}
Q_FILL=${Q_FILL:-1000000}
Q_SESSIONS=${Q_SESSIONS:-50}
Q_COUNT=${Q_COUNT:-10000}
RESTART_TIMEOUT=${RESTART_TIMEOUT:-120}
MEM_CAP_MIB=${MEM_CAP_MIB:-6144}
MEM_FLOOR_MIB=${MEM_FLOOR_MIB:-3072}
Q_PURGE_INTERVAL=${Q_PURGE_INTERVAL:-1m}
Q_BATCH=${Q_BATCH:-128}
Q_IN_FLIGHT=${Q_IN_FLIGHT:-16}
Q_MAX_LAG=${Q_MAX_LAG:-512}
SINK_PORT=2600            # the local cluster's default route (demo target port)
PFX_LISTEN=127.0.0.1:2535
PFX_DIR=${PFX_DIR:-/tmp/pfx-bench}
QR_SMTP=127.0.0.1:2525,127.0.0.1:2526,127.0.0.1:2527
QR_SMTP_SINGLE=127.0.0.1:2525
QR_HTTP=(9101 9102 9103)
PATH=$PATH:/usr/sbin
TCK=$(getconf CLK_TCK)
out="benches/results/$NAME-$(date -u +%Y-%m-%d).md"
[ -e "$out" ] && out="benches/results/$NAME-$(date -u +%Y-%m-%dT%H%M).md" # keep earlier runs
work=$(mktemp -d /tmp/qr-bench.XXXXXX)
started_s=$(date +%s.%N)
load_start=$(cut -d' ' -f1-3 /proc/loadavg)
busy_start=$(ps -eo pcpu=,nice=,comm= --sort=-pcpu | head -4 | awk '{printf "%s%s (%s%% CPU, nice %s)", (NR>1?", ":""), $3, $1, $2}')

count_for() { local v="COUNT_$1"; echo "${!v:-$COUNT_DEFAULT}"; }
now() { date +%s.%N; }
log() { printf '[%s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# utime+stime+cutime+cstime of the given pids, in clock ticks (threads are
# included in a process's own figures; cutime/cstime hold reaped children).
ticks() {
    local t=0 p v
    for p in "$@"; do
        v=$(awk '{ sub(/^.*\) /, ""); print $12+$13+$14+$15 }' "/proc/$p/stat" 2>/dev/null || echo 0)
        t=$((t + v))
    done
    echo "$t"
}
hwm_kib() { awk '/^VmHWM/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
has() { case " $2 " in *" $1 "*) return 0 ;; esac; return 1; } # has WORD "LIST"
# per_node FN: FN's KiB for each node, as MiB "n1/n2/n3"
per_node() { local p; for p in $(qr_pids); do "$1" "$p"; done | awk '{ printf "%s%.0f", (NR > 1 ? "/" : ""), $1 / 1024 }'; }
pss_kib() { awk '/^Pss:/ {print $2}' "/proc/$1/smaps_rollup" 2>/dev/null || echo 0; }
pfx_master() { awk '{print $1}' "$PFX_DIR/queue/pid/master.pid" 2>/dev/null || true; }
pfx_pids() { local m; m=$(pfx_master); [ -n "$m" ] && echo "$m $(pgrep -P "$m" | tr '\n' ' ')"; }
qr_pids() { cat data/local/node{1,2,3}.pid; }

# ---- sink ----------------------------------------------------------------
sink_pid=
start_sink() {
    if port_busy "$SINK_PORT"; then echo "port $SINK_PORT is busy" >&2; exit 1; fi
    : >"$work/sink.out"
    smtp-sink -c -m 2000 -u nobody "127.0.0.1:$SINK_PORT" 1024 >"$work/sink.out" 2>"$work/sink.err" &
    sink_pid=$!
    for _ in $(seq 100); do port_busy "$SINK_PORT" && break; sleep 0.05; done
    sleep 0.2
}
stop_sink() {
    [ -n "$sink_pid" ] || return 0
    kill "$sink_pid" 2>/dev/null || true
    wait "$sink_pid" 2>/dev/null || true
    sink_pid=
}
sink_count() { # last "mesg=N" written by smtp-sink -c
    local last
    last=$(tail -c 200 "$work/sink.out" 2>/dev/null | tr '\r' '\n' | grep -o 'mesg=[0-9]*' | tail -1)
    last=${last#mesg=}
    echo "${last:-0}"
}

# ---- systems -------------------------------------------------------------
start_qr() {
    rm -rf data/local
    QR_SKIP_BUILD=1 QR_NO_TARGET=1 scripts/local-cluster.sh start >"$work/cluster-start.log"
    # The admin port runs mTLS: relayctl's CA and certificate.
    eval "$(scripts/local-cluster.sh env)"
    local port deadline=$((SECONDS + 60))
    for port in "${QR_HTTP[@]}"; do # every node ready (knows the leader)
        until curl -sf "http://127.0.0.1:$port/readyz" >/dev/null; do
            [ $SECONDS -lt $deadline ] || { echo "node on :$port not ready" >&2; exit 1; }
            sleep 0.2
        done
    done
}
stop_qr() { scripts/local-cluster.sh stop >/dev/null 2>&1 || true; }
start_pfx() {
    PFX_DIR=$PFX_DIR LISTEN=$PFX_LISTEN NEXTHOP=127.0.0.1:$SINK_PORT MAILLOG=none \
        "$BENCH/postfix-relay.sh" start >"$work/pfx-start.log"
    local deadline=$((SECONDS + 30))
    until port_busy "${PFX_LISTEN##*:}"; do
        [ $SECONDS -lt $deadline ] || { echo "postfix not listening" >&2; exit 1; }
        sleep 0.1
    done
}
stop_pfx() { PFX_DIR=$PFX_DIR "$BENCH/postfix-relay.sh" stop >/dev/null 2>&1 || true; }

scrape() { # $1 = file prefix: one metrics file per node
    local i
    for i in 0 1 2; do
        curl -sf "http://127.0.0.1:${QR_HTTP[$i]}/metrics" >"$1.$((i + 1))" || : >"$1.$((i + 1))"
    done
}
# metric FILE NAME: the value of the sample line NAME (labels included)
metric() { awk -v n="$2" '$1 == n { print $2; found = 1 } END { if (!found) print 0 }' "$1"; }
# fsyncs FILE: all relay_raft_log_fsyncs_total samples summed
fsyncs_all() { awk '/^relay_raft_log_fsyncs_total\{/ { s += $2 } END { print s + 0 }' "$1"; }
# delta BEFORE AFTER NAME: after - before of one sample line
delta() { awk -v x="$(metric "$2" "$3")" -v y="$(metric "$1" "$3")" 'BEGIN { print x - y }'; }
# buckets BEFORE AFTER: relay_raft_entry_commands entries per size range over
# the window, "1:n,2:n,3-4:n,...,513-1024:n" (from the cumulative buckets)
buckets() {
    awk -F'[{}" ]+' '/^relay_raft_entry_commands_bucket\{/ {
            v = $NF; le = $3
            if (FILENAME == ARGV[1]) b[le] = v; else { a[le] = v; if (!(le in seen)) { seen[le] = 1; order[++n] = le } }
        }
        END {
            prev = 0; lo = 1; out = ""
            for (i = 1; i <= n; i++) {
                le = order[i]; c = a[le] - b[le]
                if (le == "+Inf") r = (c - prev > 0 ? sprintf(">%s:%d", last, c - prev) : "")
                else { r = (lo == le + 0 ? le : lo "-" le) ":" (c - prev); lo = le + 1; last = le }
                if (r != "") out = out (out == "" ? "" : ",") r
                prev = c
            }
            print (out == "" ? "none" : out)
        }' "$1" "$2"
}
cleanup() {
    local rc=$?
    if [ "$rc" -ne 0 ] && ls data/local/node*.log >/dev/null 2>&1; then
        mkdir -p /tmp/qr-bench-failed && cp data/local/node*.log /tmp/qr-bench-failed/
        echo "failed (exit $rc); node logs kept in /tmp/qr-bench-failed/" >&2
    fi
    stop_sink
    stop_qr
    stop_pfx
    stop_sampler
    rm -rf "$work" data/local # the 1 M queue phase leaves GBs there
    cap_remove
}
trap cleanup EXIT

# ---- one configuration -----------------------------------------------------
# run SYSTEM SESSIONS SIZE COUNT: appends one line of key=value to rows.
run() {
    local sys=$1 sessions=$2 size=$3 count=$4 ingress=${5:--} targets pids lat t0 t1 t2 got c0 c1 rss row
    if [ "$sys" = qr ]; then
        start_qr
        targets=$QR_SMTP
        [ "$ingress" = single ] && targets=$QR_SMTP_SINGLE
    else
        start_pfx
        targets=$PFX_LISTEN
    fi
    start_sink
    local base; base=$(sink_count)
    if [ "$sys" = qr ]; then pids=$(qr_pids); scrape "$work/before"; else pids=$(pfx_pids); fi
    # shellcheck disable=SC2086
    c0=$(ticks $pids)
    t0=$(now)
    lat=$("$QR_BIN_DIR/smtp-latency" --targets "$targets" --sessions "$sessions" \
        --count "$count" --size "$size")
    t1=$(now)
    local deadline; deadline=$(awk -v t="$t0" -v d="$E2E_TIMEOUT" 'BEGIN { printf "%d", t + d }')
    while :; do
        got=$(( $(sink_count) - base ))
        [ "$got" -ge "$count" ] && break
        [ "$(date +%s)" -lt "$deadline" ] || break
        sleep 0.02
    done
    t2=$(now)
    [ "$sys" = pfx ] && pids=$(pfx_pids) # children come and go; the master holds the reaped ones
    # shellcheck disable=SC2086
    c1=$(ticks $pids)
    if [ "$sys" = qr ]; then
        scrape "$work/after"
        rss=$(for p in $pids; do hwm_kib "$p"; done | awk '{ printf "%s%.0f", (NR > 1 ? "/" : ""), $1 / 1024 }')
    else
        # Many processes sharing pages: PSS (each shared page split among
        # its users) summed is the fair total; summed VmHWM overcounts.
        rss=$(for p in $pids; do echo "$(pss_kib "$p") $(hwm_kib "$p")"; done | awk '{ s += $1; h += $2; n++ }
            END { printf "PSS %.0f, VmHWM %.0f (%d procs)", s / 1024, h / 1024, n }')
    fi
    row="sys=$sys ingress=$ingress sessions=$sessions size=$size count=$count $lat"
    row="$row accept_wall_s=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')"
    if [ "$got" -ge "$count" ]; then
        row="$row e2e_s=$(awk -v a="$t0" -v b="$t2" 'BEGIN { printf "%.2f", b - a }')"
        row="$row e2e_msgs_per_s=$(awk -v a="$t0" -v b="$t2" -v c="$count" 'BEGIN { printf "%.0f", c / (b - a) }')"
    else
        row="$row e2e_s=NA e2e_msgs_per_s=NA"
    fi
    row="$row delivered=$got cpu_s=$(awk -v t="$((c1 - c0))" -v h="$TCK" 'BEGIN { printf "%.1f", t / h }')"
    row="$row rss_mib=${rss// /_}"
    if [ "$sys" = qr ]; then
        local i leader=0 le=0 la=0 l1=0 lall=0 fe=0 fa=0 ds=0 dn=0 conns=0 b a
        for i in 1 2 3; do
            b=$work/before.$i a=$work/after.$i
            local e n f1 fall
            e=$(awk -v x="$(metric "$a" relay_raft_append_batch_entries_sum)" -v y="$(metric "$b" relay_raft_append_batch_entries_sum)" 'BEGIN { print x - y }')
            n=$(awk -v x="$(metric "$a" relay_raft_append_batch_entries_count)" -v y="$(metric "$b" relay_raft_append_batch_entries_count)" 'BEGIN { print x - y }')
            f1=$(awk -v x="$(metric "$a" 'relay_raft_append_batch_entries_bucket{le="1"}')" -v y="$(metric "$b" 'relay_raft_append_batch_entries_bucket{le="1"}')" 'BEGIN { print x - y }')
            fall=$(awk -v x="$(fsyncs_all "$a")" -v y="$(fsyncs_all "$b")" 'BEGIN { print x - y }')
            ds=$(awk -v s="$ds" -v x="$(metric "$a" relay_delivery_attempt_seconds_sum)" -v y="$(metric "$b" relay_delivery_attempt_seconds_sum)" 'BEGIN { print s + x - y }')
            dn=$(awk -v s="$dn" -v x="$(metric "$a" relay_delivery_attempt_seconds_count)" -v y="$(metric "$b" relay_delivery_attempt_seconds_count)" 'BEGIN { print s + x - y }')
            conns=$(awk -v s="$conns" -v x="$(metric "$a" relay_delivery_connections_opened_total)" -v y="$(metric "$b" relay_delivery_connections_opened_total)" 'BEGIN { print s + x - y }')
            if [ "$(metric "$a" relay_raft_is_leader)" = 1 ]; then
                leader=$i le=$e la=$n l1=$f1 lall=$fall
            else
                fe=$(awk -v x="$fe" -v y="$e" 'BEGIN { print x + y }')
                fa=$(awk -v x="$fa" -v y="$n" 'BEGIN { print x + y }')
            fi
        done
        row="$row leader=$leader leader_entries=$le leader_appends=$la leader_single_appends=$l1"
        row="$row leader_fsyncs_all=$lall follower_entries=$fe follower_appends=$fa"
        row="$row delivery_attempt_ms=$(awk -v s="$ds" -v n="$dn" 'BEGIN { printf "%.1f", (n > 0 ? 1000 * s / n : 0) }')"
        row="$row sink_connections=$conns"
    fi
    stop_sink
    if [ "$sys" = qr ]; then stop_qr; else stop_pfx; fi
    echo "$row" >>"$work/rows"
    log "   $row"
}

# ---- group commit at a paced load --------------------------------------------
# run_gc SYSTEM: one paced run (GC_RATE offered); appends a line to gc_rows.
run_gc() {
    local sys=$1 targets lat row i leader=0
    if [ "$sys" = qr ]; then start_qr; targets=$QR_SMTP; else start_pfx; targets=$PFX_LISTEN; fi
    start_sink
    [ "$sys" = qr ] && scrape "$work/gc-before"
    lat=$("$QR_BIN_DIR/smtp-latency" --targets "$targets" --sessions "$GC_SESSIONS" \
        --count "$GC_COUNT" --size 1024 --rate "$GC_RATE")
    row="sys=$sys sessions=$GC_SESSIONS size=1024 count=$GC_COUNT $lat"
    if [ "$sys" = qr ]; then
        scrape "$work/gc-after"
        local b a cmds fs ents per=""
        for i in 1 2 3; do
            b=$work/gc-before.$i a=$work/gc-after.$i
            cmds=$(delta "$b" "$a" relay_raft_entry_commands_sum)
            ents=$(delta "$b" "$a" relay_raft_entry_commands_count)
            fs=$(delta "$b" "$a" 'relay_raft_log_fsyncs_total{op="append"}')
            per="$per node${i}_commands=$cmds node${i}_entries=$ents node${i}_append_fsyncs=$fs"
            if [ "$(metric "$a" relay_raft_is_leader)" = 1 ]; then
                leader=$i
                row="$row leader=$i leader_commands=$cmds leader_entries=$ents leader_append_fsyncs=$fs"
                row="$row leader_fsyncs_all=$(awk -v x="$(fsyncs_all "$a")" -v y="$(fsyncs_all "$b")" 'BEGIN { print x - y }')"
                row="$row leader_buckets=$(buckets "$b" "$a")"
            fi
        done
        [ "$leader" != 0 ] || row="$row leader=0"
        row="$row$per"
    fi
    stop_sink
    if [ "$sys" = qr ]; then stop_qr; else stop_pfx; fi
    echo "$row" >>"$work/gc_rows"
    log "   $row"
}

# ---- 1 M queued ---------------------------------------------------------------
# first_250 PORT FILE T0: polls a 1-message send to PORT until a 250; writes
# the seconds since T0 (or NA after RESTART_TIMEOUT) to FILE.
first_250() {
    local port=$1 file=$2 t0=$3 out
    while :; do
        if out=$("$QR_BIN_DIR/smtp-latency" --targets "127.0.0.1:$port" --sessions 1 --count 1 --size 1024 2>/dev/null) &&
            [ "${out%% *}" = accepted=1 ]; then
            awk -v a="$t0" -v b="$(now)" 'BEGIN { printf "%.2f\n", b - a }' >"$file"
            return
        fi
        if awk -v a="$t0" -v b="$(now)" -v d="$RESTART_TIMEOUT" 'BEGIN { exit !(b - a > d) }'; then echo NA >"$file"; return; fi
        sleep 0.1
    done
}
# first_ready PORT FILE T0: the same for the node's HTTP /readyz.
first_ready() {
    local port=$1 file=$2 t0=$3
    until curl -sf -m 1 "http://127.0.0.1:$port/readyz" >/dev/null; do
        if awk -v a="$t0" -v b="$(now)" -v d="$RESTART_TIMEOUT" 'BEGIN { exit !(b - a > d) }'; then echo NA >"$file"; return; fi
        sleep 0.1
    done
    awk -v a="$t0" -v b="$(now)" 'BEGIN { printf "%.2f\n", b - a }' >"$file"
}
kv() { tr ' ' '\n' <<<"$1" | awk -F= -v k="$2" '$1 == k { print substr($0, length(k) + 2) }'; }

# Memory cap per node (queue phase): one cgroup per node under ours
# (cgroup v1 memory controller, else v2 memory.max). A node over the cap is
# OOM-killed alone, which the results then report.
cg_base=
cap_setup() {
    [ "$MEM_CAP_MIB" -gt 0 ] || return 0
    local v1 v2 i
    v1=/sys/fs/cgroup/memory$(awk -F: '$2 == "memory" { print $3 }' /proc/self/cgroup)
    v2=/sys/fs/cgroup$(awk -F: '$1 == "0" { print $3 }' /proc/self/cgroup)
    if [ -w "$v1" ] && [ -f "$v1/memory.limit_in_bytes" ]; then cg_base=$v1
    elif [ -w "$v2" ] && grep -qw memory "$v2/cgroup.subtree_control" 2>/dev/null; then cg_base=$v2
    else echo "cannot create memory cgroups (MEM_CAP_MIB=0 runs the queue phase without a cap)" >&2; exit 1; fi
    for i in 1 2 3; do
        mkdir -p "$cg_base/qr-bench-node$i"
        if [ -f "$cg_base/qr-bench-node$i/memory.limit_in_bytes" ]; then
            echo $((MEM_CAP_MIB * 1048576)) >"$cg_base/qr-bench-node$i/memory.limit_in_bytes"
        else
            echo $((MEM_CAP_MIB * 1048576)) >"$cg_base/qr-bench-node$i/memory.max"
        fi
    done
}
cap_nodes() { # move the running nodes into their cgroups
    [ -n "$cg_base" ] || return 0
    local i
    for i in 1 2 3; do cat "data/local/node$i.pid" >"$cg_base/qr-bench-node$i/cgroup.procs"; done
}
oom_kills() { # per node "n1/n2/n3": OOM kills in its cgroup so far
    [ -n "$cg_base" ] || { echo "-"; return 0; }
    local i
    local f
    for i in 1 2 3; do
        f=$cg_base/qr-bench-node$i/memory.oom_control # v1; v2: memory.events
        [ -f "$f" ] || f=$cg_base/qr-bench-node$i/memory.events
        awk '$1 == "oom_kill" { k = $2 } END { print k + 0 }' "$f" 2>/dev/null || echo "?"
    done | paste -sd/
}
cap_remove() {
    [ -n "$cg_base" ] || return 0
    local i
    for i in 1 2 3; do rmdir "$cg_base/qr-bench-node$i" 2>/dev/null || true; done
}
alive() { # per node "n1/n2/n3": 1 running, 0 gone
    local i
    for i in 1 2 3; do if kill -0 "$(cat "data/local/node$i.pid" 2>/dev/null)" 2>/dev/null; then echo 1; else echo 0; fi; done | paste -sd/
}
# RSS sampler: every 0.5 s, the current step and each node's VmRSS (KiB).
# Also the machine's guard: below MEM_FLOOR_MIB available, it SIGKILLs the
# three nodes (by their pid files) and leaves a note in $work/watchdog.
sampler_pid=
step() { echo "$1" >"$work/step"; }
start_sampler() {
    (
        while :; do
            echo "$(cat "$work/step") $(for i in 1 2 3; do rss_kib "$(cat "data/local/node$i.pid" 2>/dev/null || echo 0)"; done | paste -sd' ')"
            avail=$(awk '/^MemAvailable:/ { print int($2 / 1024) }' /proc/meminfo)
            if [ "$avail" -lt "$MEM_FLOOR_MIB" ]; then
                for i in 1 2 3; do kill -KILL "$(cat "data/local/node$i.pid" 2>/dev/null)" 2>/dev/null || true; done
                echo "$(cat "$work/step"):${avail}MiB" >>"$work/watchdog"
            fi
            sleep 0.5
        done
    ) >>"$work/rss_samples" 2>/dev/null &
    sampler_pid=$!
}
stop_sampler() { [ -z "$sampler_pid" ] || kill "$sampler_pid" 2>/dev/null || true; sampler_pid=; }
# peaks: per step, the highest sampled VmRSS of each node, "step:n1/n2/n3,..."
peaks() {
    awk '{ if (!($1 in seen)) { seen[$1] = 1; order[++n] = $1 }
           for (i = 2; i <= 4; i++) if ($i > m[$1, i]) m[$1, i] = $i }
         END { for (j = 1; j <= n; j++) { s = order[j]
                 printf "%s%s:%.0f/%.0f/%.0f", (j > 1 ? "," : ""), s, m[s, 2] / 1024, m[s, 3] / 1024, m[s, 4] / 1024 } }' "$work/rss_samples"
}

# The queue phase's configs: the local cluster's, data dirs absolute,
# purge_interval = Q_PURGE_INTERVAL.
write_q_configs() {
    local i
    mkdir -p "$work/qconf"
    for i in 1 2 3; do
        sed -e "s|^data_dir = .*|data_dir = \"$QR_ROOT/data/local/node$i\"|" \
            -e "s|^purge_interval = .*|purge_interval = \"$Q_PURGE_INTERVAL\"|" \
            "cluster-config/local/node$i.toml" >"$work/qconf/node$i.toml"
        grep -q "^purge_interval = \"$Q_PURGE_INTERVAL\"" "$work/qconf/node$i.toml" ||
            { echo "no purge_interval in cluster-config/local/node$i.toml" >&2; exit 1; }
    done
}
# start_q_nodes: the three nodes on those configs, pid files where
# scripts/local-cluster.sh keeps them (so its stop works).
start_q_nodes() {
    local i
    mkdir -p data/local
    for i in 1 2 3; do
        nohup "$QR_BIN_DIR/relayd" --config "$work/qconf/node$i.toml" >>"data/local/node$i.log" 2>&1 &
        echo $! >"data/local/node$i.pid"
    done
}
wait_ready() {
    local port deadline=$((SECONDS + 60))
    for port in "${QR_HTTP[@]}"; do
        until curl -sf "http://127.0.0.1:$port/readyz" >/dev/null; do
            [ $SECONDS -lt $deadline ] || { echo "node on :$port not ready" >&2; exit 1; }
            sleep 0.2
        done
    done
}

# snapshot_node I: builds a snapshot on node I now and waits until it is
# done; prints the seconds, or why not (killed: OOM at the cap, or timeout).
snapshot_node() {
    local i=$1 t0 applied deadline
    step "snapshot-node$i"
    scrape "$work/q-snap"
    applied=$(metric "$work/q-snap.$i" relay_raft_applied_index)
    t0=$(now)
    # answers after 10 s at most, built or not: then wait for the metric
    "$QR_BIN_DIR/relayctl" --addr "127.0.0.1:720$i" --token dev-token snapshot >/dev/null 2>&1 || true
    deadline=$((SECONDS + 300))
    while :; do
        kill -0 "$(cat "data/local/node$i.pid")" 2>/dev/null || { echo killed; return; }
        curl -sf "http://127.0.0.1:${QR_HTTP[$((i - 1))]}/metrics" >"$work/q-snap.now" 2>/dev/null || :
        [ "$(metric "$work/q-snap.now" relay_raft_snapshot_index)" -ge "$applied" ] 2>/dev/null && break
        [ $SECONDS -lt $deadline ] || { echo timeout; return; }
        sleep 0.5
    done
    awk -v a="$t0" -v b="$(now)" 'BEGIN { printf "%.1f\n", b - a }'
}

run_queue() {
    local row lat fill t0 t1 i pids=() f r
    log "queue: fresh cluster, accept rate on the empty queue ($Q_SESSIONS x 1 KiB x $Q_COUNT)"
    cap_setup
    write_q_configs
    step start
    rm -rf data/local
    start_q_nodes
    cap_nodes
    wait_ready
    start_sampler
    start_sink
    step empty-run
    lat=$("$QR_BIN_DIR/smtp-latency" --targets "$QR_SMTP" --sessions "$Q_SESSIONS" --count "$Q_COUNT" --size 1024)
    row="empty_msgs_per_s=$(kv "$lat" msgs_per_s) empty_p50_ms=$(kv "$lat" p50_ms) empty_p99_ms=$(kv "$lat" p99_ms) empty_failed=$(kv "$lat" failed)"
    row="$row empty_rss_mib=$(per_node rss_kib)"
    log "   $row"
    log "queue: filling $Q_FILL deferred messages (queue-fill)"
    step fill
    fill=$("$QR_BIN_DIR/queue-fill" --count "$Q_FILL" --batch "$Q_BATCH" --in-flight "$Q_IN_FLIGHT" --max-lag "$Q_MAX_LAG" 2> >(while read -r l; do log "   $l"; done))
    row="$row fill_count=$(kv "$fill" filled) fill_s=$(kv "$fill" seconds) fill_msgs_per_s=$(kv "$fill" msgs_per_s) fill_all_applied_s=$(kv "$fill" all_applied_s)"
    row="$row full_rss_mib=$(per_node rss_kib) full_hwm_mib=$(per_node hwm_kib)"
    row="$row disk_mib=$(for i in 1 2 3; do du -sm "data/local/node$i" | cut -f1; done | paste -sd/)"
    row="$row alive_after_fill=$(alive)"
    log "   $row"
    log "queue: accept rate with $Q_FILL queued"
    step queued-run
    lat=$("$QR_BIN_DIR/smtp-latency" --targets "$QR_SMTP" --sessions "$Q_SESSIONS" --count "$Q_COUNT" --size 1024)
    row="$row queued_msgs_per_s=$(kv "$lat" msgs_per_s) queued_p50_ms=$(kv "$lat" p50_ms) queued_p99_ms=$(kv "$lat" p99_ms) queued_failed=$(kv "$lat" failed)"
    row="$row after_rss_mib=$(per_node rss_kib) hwm_mib=$(per_node hwm_kib)"
    scrape "$work/q-end"
    row="$row snapshots=$(for i in 1 2 3; do metric "$work/q-end.$i" relay_raft_snapshots_total; done | paste -sd/)"
    row="$row alive_before_restart=$(alive)"
    log "queue: restarting the three nodes on their data"
    step stop
    t0=$(now)
    stop_qr
    t1=$(now)
    row="$row stop_s=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')"
    step restart
    t0=$(now)
    start_q_nodes
    cap_nodes
    for i in 1 2 3; do
        first_250 $((2524 + i)) "$work/first250.$i" "$t0" &
        pids+=($!)
        first_ready "${QR_HTTP[$((i - 1))]}" "$work/ready.$i" "$t0" &
        pids+=($!)
    done
    for p in "${pids[@]}"; do wait "$p" || true; done
    f=$(for i in 1 2 3; do cat "$work/first250.$i"; done | paste -sd/)
    r=$(for i in 1 2 3; do cat "$work/ready.$i"; done | paste -sd/)
    row="$row restart_ready_s=$r restart_first250_s=$f"
    row="$row restart_first250_any_s=$(awk -F/ '{ m = "NA"; for (i = 1; i <= NF; i++) if ($i != "NA" && (m == "NA" || $i + 0 < m + 0)) m = $i; print m }' <<<"$f")"
    row="$row restart_rss_mib=$(per_node rss_kib) alive_after_restart=$(alive)"
    log "queue: one snapshot of the full queue, on node 1 alone (relayctl snapshot)"
    row="$row snapshot_s=$(snapshot_node 1)"
    sleep 1
    row="$row alive_after_snapshot=$(alive)"
    stop_sampler
    row="$row rss_peaks_mib=$(peaks) oom_kills_end=$(oom_kills)"
    row="$row watchdog=$(if [ -s "$work/watchdog" ]; then paste -sd, "$work/watchdog"; else echo none; fi)"
    stop_sink
    stop_qr
    echo "$row" >"$work/queue_row"
    log "   $row"
}

# ---- main ------------------------------------------------------------------
for p in 2525 2526 2527 2535 $SINK_PORT 7101 7102 7103 7201 7202 7203 9101 9102 9103; do
    if port_busy "$p"; then echo "port $p is in use; stop whatever runs there first" >&2; exit 1; fi
done
command -v smtp-sink >/dev/null || { echo "smtp-sink not found (scripts/setup.sh installs postfix)" >&2; exit 1; }
if [ "${QR_SKIP_BUILD:-0}" = 1 ]; then
    log "using the binaries in $QR_BIN_DIR (QR_SKIP_BUILD=1)"
else
    log "building (release)"
    qr_ensure_rocksdb
    cargo build --release --locked --bin relayd --bin relayctl --bin smtp-latency --bin queue-fill 2>&1 | tail -1 >&2
fi
: >"$work/rows"
: >"$work/gc_rows"
: >"$work/queue_row"
if has matrix "$PHASES"; then
    runs_per_config=0
    has qr "$SYSTEMS" && runs_per_config=$(wc -w <<<"$INGRESS_LIST")
    has pfx "$SYSTEMS" && runs_per_config=$((runs_per_config + 1))
    total=$(($(wc -w <<<"$SESSIONS_LIST") * $(wc -w <<<"$SIZES") * runs_per_config))
    n=0
    for sessions in $SESSIONS_LIST; do
        for size in $SIZES; do
            count=$(count_for "$sessions")
            for sys in $SYSTEMS; do
                if [ "$sys" = qr ]; then
                    for ingress in $INGRESS_LIST; do
                        n=$((n + 1))
                        log "[$n/$total] qr ($ingress ingress): $sessions sessions x $size octets x $count messages"
                        run qr "$sessions" "$size" "$count" "$ingress"
                    done
                else
                    n=$((n + 1))
                    log "[$n/$total] $sys: $sessions sessions x $size octets x $count messages"
                    run "$sys" "$sessions" "$size" "$count"
                fi
            done
        done
    done
fi
if has gc "$PHASES"; then
    for sys in $SYSTEMS; do
        log "gc: $sys at $GC_RATE msgs/s offered ($GC_SESSIONS sessions x 1 KiB x $GC_COUNT messages)"
        run_gc "$sys"
    done
fi
if has queue "$PHASES"; then
    log "queue: $(df -h . | awk 'NR == 2 { print $4 " free on " $6 }')"
    run_queue
fi
rm -rf data/local
wall_s=$(awk -v a="$started_s" -v b="$(date +%s.%N)" 'BEGIN { printf "%.0f", b - a }')
load_end=$(cut -d' ' -f1-3 /proc/loadavg)

# ---- results ---------------------------------------------------------------
commit=$(git rev-parse --short HEAD)
git diff --quiet HEAD -- crates benches scripts Cargo.toml Cargo.lock 2>/dev/null || commit="$commit (with uncommitted changes)"
mkdir -p benches/results
{
    echo "# quorum-relay vs Postfix: relay path matrix, $(date -u +%Y-%m-%dT%H:%MZ)"
    echo
    echo "- Machine: $(nproc) cores ($(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)),"
    echo "  $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo) RAM, kernel $(uname -r), $(df -T . | awk 'NR == 2 {print $2}') disk."
    echo "- Commit: $commit. Release profile. Total wall time of this run: ${wall_s} s."
    echo "- Load average (1/5/15 min) at start: $load_start; at end: $load_end."
    echo "  Busiest processes at start: $busy_start."
    echo "- Load: benches' smtp-latency, each session sends its share of the"
    echo "  messages back to back over one connection (MAIL, RCPT, DATA);"
    echo "  messages per configuration: 1 session $(count_for 1), 10 sessions $(count_for 10),"
    echo "  50 sessions $(count_for 50). Driver, relay and sink share the $(nproc) cores."
    echo "- quorum-relay: 3 relayd processes on loopback (cluster-config/local),"
    echo "  every 250 after the Enqueue committed on 2 of 3 fsynced logs; each node"
    echo "  delivers what it accepted (per_target_concurrency 5 per node). Ingress"
    echo "  \"spread\": sessions round-robin over the three SMTP ports; \"single\": every"
    echo "  session to node 1. Sink connections = relay_delivery_connections_opened_total"
    echo "  summed over the nodes."
    echo "- Postfix: one instance (benches/postfix-relay.sh: logging off,"
    echo "  destination concurrency 20, in_flow_delay 1s), fsyncs each queue file before 250."
    echo "- Sink: one smtp-sink on 127.0.0.1:$SINK_PORT for both. Each system starts fresh"
    echo "  (empty store / queue) for every configuration."
    echo "- accepted/s = COUNT / driver wall time; p50/p99 = MAIL FROM to the 250 after"
    echo "  the final dot; e2e/s = COUNT / (driver start until the sink counted COUNT)."
    echo "- CPU s = utime+stime (+cutime+cstime) from /proc/<pid>/stat over that window:"
    echo "  quorum-relay = the 3 relayd processes (all threads); Postfix = the master"
    echo "  plus its live children (smtpd, cleanup, qmgr, smtp, trivial-rewrite, ...),"
    echo "  children that exited counted through the master's cutime/cstime."
    echo "  Driver and sink CPU are not included."
    echo "- Peak RSS: quorum-relay = VmHWM of each node (MiB, node1/node2/node3)."
    echo "  Postfix (one node, many processes) = at the end of the run, over the master"
    echo "  and its live children: summed PSS (shared pages split among their users:"
    echo "  the fair total) and summed VmHWM (peak, but shared pages counted in every"
    echo "  process: an upper bound)."
    echo "- Postfix with 1 M queued is not measured: the only honest way to queue mail"
    echo "  in Postfix is through smtpd or sendmail/postdrop (cleanup writes and fsyncs"
    echo "  each queue file), ~700 msgs/s here, so 1 M would take ~25 min, more than"
    echo "  this whole benchmark; copying queue files is not an honest fill (Postfix"
    echo "  names them after their inode)."
    echo
    echo "## Target figures"
    echo
    echo "The benchmark targets, per ingress where it matters (spread = sessions over"
    echo "the three nodes, single = all to node 1). \"-\" = phase or row not run;"
    echo "verdicts compare this run's figures only."
    echo
    echo "| figure | target | quorum-relay | Postfix | verdict |"
    echo "|---|---|---:|---:|---|"
    awk -v qfill="$Q_FILL" -v cap="$MEM_CAP_MIB" '
    function parse(line,   i, kv) { delete v; n = split(line, f, " "); for (i = 1; i <= n; i++) { split(f[i], kv, "="); v[kv[1]] = substr(f[i], length(kv[1]) + 2) } }
    function verdict(ok) { return ok ? "met" : "**missed**" }
    function maxof(s,   p, i, m, k) { k = split(s, p, "/"); m = 0; for (i = 1; i <= k; i++) if (p[i] + 0 > m) m = p[i] + 0; return m }
    function kib(b) { return (b % 1024 == 0 ? b / 1024 " KiB" : b " B") }
    function label(qk,   p) { split(qk, p, SUBSEP); return p[1] " x " kib(p[2]) ", " p[3] }
    function num(x) { return x != "" && x != "NA" }
    FILENAME == ARGV[1] {
        parse($0)
        k = v["sessions"] SUBSEP v["size"]
        if (v["sys"] == "pfx") {
            pacc[k] = v["msgs_per_s"]; pp99[k] = v["p99_ms"]; pe2e[k] = v["e2e_msgs_per_s"]; pcpu[k] = 1000 * v["cpu_s"] / v["count"]
        } else {
            qk = k SUBSEP v["ingress"]; qrow[++nq] = qk; qkey[qk] = k
            qacc[qk] = v["msgs_per_s"]; qp99[qk] = v["p99_ms"]; qe2e[qk] = v["e2e_msgs_per_s"]; qcpu[qk] = 1000 * v["cpu_s"] / v["count"]
            qconn[qk] = v["sink_connections"]; qcount[qk] = v["count"]
        }
    }
    # One line per quorum-relay row of (sessions, size) matching want_s/want_b,
    # comparing field f (acc, e2e, cpu, p99) with Postfix against ratio goal.
    function per_ingress(want_s, want_b, what, goal, cmp,   j, qk, a, b, r, shown) {
        for (j = 1; j <= nq; j++) {
            qk = qrow[j]; split(qk, p, SUBSEP)
            if (p[1] != want_s || p[2] != want_b) continue
            k = qkey[qk]
            if (what == "acc") { a = qacc[qk]; b = pacc[k] } else if (what == "e2e") { a = qe2e[qk]; b = pe2e[k] } else { a = sprintf("%.2f", qcpu[qk]); b = sprintf("%.2f", pcpu[k]) }
            if (!num(a) || !num(b) || b + 0 == 0) { printf "| %s, %s | %s | %s | %s | **missed** (not measured) |\n", title, label(qk), goalt, a, b; shown = 1; continue }
            r = a / b
            printf "| %s, %s | %s | %s | %s | %s (%.2f x) |\n", title, label(qk), goalt, a, b, verdict(cmp == "ge" ? r >= goal : r <= goal), r
            shown = 1
        }
        if (!shown) printf "| %s, %s x %s | %s | - | - | - |\n", title, want_s, kib(want_b), goalt
    }
    END {
        # Every row: accepted >= 1.0 x and p99 <= Postfix; report the worst row.
        worst = ""; wr = 1e9; worstp = ""; wp = 0
        for (j = 1; j <= nq; j++) {
            qk = qrow[j]; k = qkey[qk]
            if (!(k in pacc)) continue
            r = qacc[qk] / pacc[k]; if (r < wr) { wr = r; worst = qk }
            r = qp99[qk] / pp99[k]; if (r > wp) { wp = r; worstp = qk }
        }
        if (worst != "") printf "| accepted msgs/s, every row (worst: %s) | >= 1.0 x Postfix | %s | %s | %s (%.2f x) |\n", label(worst), qacc[worst], pacc[qkey[worst]], verdict(wr >= 1), wr
        else print "| accepted msgs/s, every row | >= 1.0 x Postfix | - | - | - |"
        if (worstp != "") printf "| p99 submit->250 ms, every row (worst: %s) | <= Postfix | %s | %s | %s (%.2f x) |\n", label(worstp), qp99[worstp], pp99[qkey[worstp]], verdict(wp <= 1), wp
        title = "accepted msgs/s"; goalt = ">= 3 x Postfix"; per_ingress(50, 1024, "acc", 3, "ge")
        title = "end-to-end msgs/s"; goalt = ">= 1.5 x Postfix"; per_ingress(50, 1024, "e2e", 1.5, "ge")
        title = "accepted msgs/s"; goalt = ">= 1.0 x Postfix"; per_ingress(1, 1024, "acc", 1, "ge")
        title = "accepted msgs/s"; goalt = ">= 1.5 x Postfix"
        per_ingress(10, 32768, "acc", 1.5, "ge"); per_ingress(50, 32768, "acc", 1.5, "ge")
        per_ingress(10, 102400, "acc", 1.5, "ge"); per_ingress(50, 102400, "acc", 1.5, "ge")
        title = "CPU ms per message (relay processes)"; goalt = "<= Postfix"; per_ingress(50, 1024, "cpu", 1, "le")
        for (j = 1; j <= nq; j++) {
            qk = qrow[j]; split(qk, p, SUBSEP)
            if (p[1] != 50 || p[2] != 1024 || qconn[qk] == "") continue
            printf "| messages per connection to the sink, %s | >= 20 | %.1f (%s connections) | n/a | %s |\n", label(qk), (qconn[qk] > 0 ? qcount[qk] / qconn[qk] : qcount[qk]), qconn[qk], verdict(qconn[qk] * 20 <= qcount[qk])
        }
    }
    FILENAME == ARGV[2] {
        parse($0)
        if (v["sys"] == "qr" && v["leader_append_fsyncs"] > 0) { mpf = v["accepted"] / v["leader_append_fsyncs"]; gcacc = v["msgs_per_s"]; gcoff = v["offered_per_s"] }
    }
    FILENAME == ARGV[3] { parse($0); for (k in v) q[k] = v[k]; haveq = 1 }
    END {
        if (mpf != "") printf "| accepted messages per leader log fsync at %s msgs/s offered | >= 4 | %.2f (accepted %s msgs/s) | n/a (one fsync per queue file) | %s |\n", gcoff, mpf, gcacc, verdict(mpf >= 4)
        else print "| messages per fsync at 1,000 msgs/s offered | >= 4 | - | n/a | - |"
        if (haveq) {
            printf "| %d queued: peak RSS per node through fill and accept run (VmHWM, periodic snapshots included), MiB | <= 512 | %s | not measured | %s |\n", qfill, q["hwm_mib"], verdict(maxof(q["hwm_mib"]) <= 512)
            printf "| %d queued: RSS per node after the fill (VmRSS), MiB | <= 512 | %s | not measured | %s |\n", qfill, q["full_rss_mib"], verdict(maxof(q["full_rss_mib"]) <= 512)
            k = split(q["rss_peaks_mib"], st, ","); snap = ""
            for (i = 1; i <= k; i++) { split(st[i], p, ":"); if (p[1] ~ /^snapshot-node[123]$/) { split(p[2], nn, "/"); n = substr(p[1], 14); snap = snap (snap == "" ? "" : "/") nn[n] } }
            killed = (q["snapshot_s"] ~ /killed/)
            printf "| %d queued: peak RSS per node building its snapshot (sampled), MiB | <= 512 | %s%s | not measured | %s |\n", qfill, snap, (killed ? " (OOM-killed at the " cap " MiB cap)" : ""), verdict(!killed && snap != "" && maxof(snap) <= 512)
            first = q["restart_first250_any_s"]
            printf "| %d queued: restart to first 250, s | <= 10 | %s | not measured | %s |\n", qfill, first, (first == "NA" ? "**missed** (no 250)" : verdict(first + 0 <= 10))
            r = q["queued_msgs_per_s"] / q["empty_msgs_per_s"]
            printf "| %d queued: accept rate vs empty queue | >= 0.9 x | %s vs %s msgs/s (%.2f x) | not measured | %s |\n", qfill, q["queued_msgs_per_s"], q["empty_msgs_per_s"], r, verdict(r >= 0.9)
        } else print "| 1 M queued: RSS, restart, accept rate | see issue | - | not measured | - |"
    }' "$work/rows" "$work/gc_rows" "$work/queue_row"

    echo
    echo "## Matrix"
    echo
    echo "| sessions | size | system | ingress | accepted/s | p50 ms | p99 ms | e2e/s | CPU s | CPU ms/msg | sink connections | peak RSS MiB |"
    echo "|---:|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---|"
    awk '{
        delete v
        for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = substr($i, length(kv[1]) + 2) }
        sys = (v["sys"] == "qr" ? "quorum-relay" : "Postfix")
        size = (v["size"] % 1024 == 0 ? v["size"] / 1024 " KiB" : v["size"] " B")
        fail = (v["failed"] > 0 ? " (" v["failed"] " refused)" : "")
        e2e = v["e2e_msgs_per_s"]; if (e2e == "NA") e2e = "NA (" v["delivered"] "/" v["count"] ")"
        rss = v["rss_mib"]; gsub("_", " ", rss)
        conns = (v["sink_connections"] == "" ? "-" : v["sink_connections"])
        printf "| %s | %s | %s | %s | %s%s | %s | %s | %s | %s | %.2f | %s | %s |\n", v["sessions"], size, sys, v["ingress"],
            v["msgs_per_s"], fail, v["p50_ms"], v["p99_ms"], e2e, v["cpu_s"], v["cpu_s"] * 1000 / v["count"], conns, rss
    }' "$work/rows"
    echo
    echo "Ratios (quorum-relay / Postfix of the same sessions and size):"
    echo
    echo "| sessions | size | ingress | accepted | p99 | e2e | CPU ms/msg |"
    echo "|---:|---:|---|---:|---:|---:|---:|"
    awk '{
        for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = substr($i, length(kv[1]) + 2) }
        k = v["sessions"] SUBSEP v["size"]
        if (v["sys"] == "pfx") { pacc[k] = v["msgs_per_s"]; pp99[k] = v["p99_ms"]; pe2e[k] = v["e2e_msgs_per_s"]; pcpu[k] = v["cpu_s"] / v["count"]; next }
        q = k SUBSEP v["ingress"]; order[++n] = q; key[q] = k
        acc[q] = v["msgs_per_s"]; p99[q] = v["p99_ms"]; e2e[q] = v["e2e_msgs_per_s"]; cpu[q] = v["cpu_s"] / v["count"]
    }
    function r(a, b) { return (a == "" || b == "" || a == "NA" || b == "NA" || b + 0 == 0) ? "-" : sprintf("%.2f", a / b) }
    END {
        for (j = 1; j <= n; j++) {
            q = order[j]; k = key[q]; split(q, p, SUBSEP)
            size = (p[2] % 1024 == 0 ? p[2] / 1024 " KiB" : p[2] " B")
            printf "| %s | %s | %s | %s | %s | %s | %s |\n", p[1], size, p[3], r(acc[q], pacc[k]),
                r(p99[q], pp99[k]), r(e2e[q], pe2e[k]), r(cpu[q], pcpu[k])
        }
    }' "$work/rows"
    echo
    echo "Group commit in quorum-relay (from /metrics before and after each run:"
    echo "relay_raft_append_batch_entries, relay_raft_log_fsyncs_total). Entries are"
    echo "all log entries appended in the window (Enqueue, delivery reports, blanks)."
    echo "Mean delivery attempt = relay_delivery_attempt_seconds (SMTP work to the sink"
    echo "only), over the three nodes."
    echo
    echo "| sessions | size | ingress | accepted msgs/s | leader: entries per append fsync | leader: appends of 1 entry | followers: entries per append fsync | leader: all WAL fsyncs per message | mean delivery attempt ms |"
    echo "|---:|---:|---|---:|---:|---:|---:|---:|---:|"
    awk '$1 == "sys=qr" {
        for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = substr($i, length(kv[1]) + 2) }
        size = (v["size"] % 1024 == 0 ? v["size"] / 1024 " KiB" : v["size"] " B")
        le = (v["leader_appends"] > 0 ? sprintf("%.2f", v["leader_entries"] / v["leader_appends"]) : "-")
        l1 = (v["leader_appends"] > 0 ? sprintf("%.0f%%", 100 * v["leader_single_appends"] / v["leader_appends"]) : "-")
        fe = (v["follower_appends"] > 0 ? sprintf("%.2f", v["follower_entries"] / v["follower_appends"]) : "-")
        fm = sprintf("%.2f", v["leader_fsyncs_all"] / v["count"])
        printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", v["sessions"], size, v["ingress"], v["msgs_per_s"], le, l1, fe, fm, v["delivery_attempt_ms"]
    }' "$work/rows"
    if [ -s "$work/gc_rows" ]; then
        echo
        echo "## Group commit at $GC_RATE msgs/s offered"
        echo
        echo "smtp-latency --rate $GC_RATE: $GC_SESSIONS sessions x 1 KiB, $GC_COUNT messages, each session"
        echo "sending on its own schedule (one message every $GC_SESSIONS/$GC_RATE s), or at once when its"
        echo "previous message is not yet answered (counted \"late\"). p50/p99 = MAIL FROM to"
        echo "250; sched p99 = from the scheduled send to 250 (includes time a session was"
        echo "behind). Each system fresh, same sink."
        echo
        echo "| system | offered/s | accepted/s | late sends | p50 ms | p99 ms | sched p99 ms |"
        echo "|---|---:|---:|---:|---:|---:|---:|"
        awk '{
            for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = substr($i, length(kv[1]) + 2) }
            sys = (v["sys"] == "qr" ? "quorum-relay" : "Postfix")
            fail = (v["failed"] > 0 ? " (" v["failed"] " refused)" : "")
            printf "| %s | %s | %s%s | %s | %s | %s | %s |\n", sys, v["offered_per_s"], v["msgs_per_s"], fail, v["late"], v["p50_ms"], v["p99_ms"], v["sched_p99_ms"]
        }' "$work/gc_rows"
        if grep -q '^sys=qr' "$work/gc_rows"; then
            echo
            echo "quorum-relay, per node over the run (deltas of /metrics): commands = sum of"
            echo "relay_raft_entry_commands (every applied Enqueue, Delivered, ... ), entries ="
            echo "its count (applied normal entries), append fsyncs ="
            echo "relay_raft_log_fsyncs_total{op=\"append\"}. On the leader an append is one entry"
            echo "(openraft 0.9), a Command::Batch from the write batcher; followers append"
            echo "what each AppendEntries carried. Accepted messages per leader append fsync"
            echo "counts the Enqueues only (accepted / leader append fsyncs)."
            echo
            echo "| node | role | commands | entries | append fsyncs | commands per append fsync | accepted messages per append fsync |"
            echo "|---:|---|---:|---:|---:|---:|---:|"
            awk '$1 == "sys=qr" {
                for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = substr($i, length(kv[1]) + 2) }
                for (n = 1; n <= 3; n++) {
                    c = v["node" n "_commands"]; e = v["node" n "_entries"]; f = v["node" n "_append_fsyncs"]
                    lead = (v["leader"] == n)
                    printf "| %d | %s | %s | %s | %s | %s | %s |\n", n, (lead ? "leader" : "follower"), c, e, f,
                        (f > 0 ? sprintf("%.2f", c / f) : "-"), (lead && f > 0 ? sprintf("**%.2f**", v["accepted"] / f) : "")
                }
                printf "\nAll WAL fsyncs on the leader (append, committed, vote, pending reports, ...): %s, %.2f per accepted message.\n", v["leader_fsyncs_all"], (v["accepted"] > 0 ? v["leader_fsyncs_all"] / v["accepted"] : 0)
                printf "\nLeader (node %s), relay_raft_entry_commands distribution over the run (applied entries by commands carried; from the histogram buckets 1, 2, 4, ..., 1024):\n\n", v["leader"]
                k = split(v["leader_buckets"], b, ","); hdr = "| commands per entry |"; sep = "|---|"; row = "| entries |"
                for (i = 1; i <= k; i++) { split(b[i], p, ":"); hdr = hdr " " p[1] " |"; sep = sep "---:|"; row = row " " p[2] " |" }
                print hdr; print sep; print row
            }' "$work/gc_rows"
        fi
    fi
    if [ -s "$work/queue_row" ]; then
        echo
        echo "## quorum-relay with $Q_FILL messages queued"
        echo
        echo "One fresh local cluster for the whole phase, the sink up throughout. Steps:"
        echo "accept rate on the empty queue (smtp-latency $Q_SESSIONS sessions x 1 KiB x $Q_COUNT);"
        echo "queue-fill: $Q_FILL messages (~1 KiB stored, with a Received header) through"
        echo "the leader's Submit RPC, $Q_BATCH per Command::Batch (Enqueue + the owner's Attempt"
        echo "deferring it, \"451 4.3.0 bench: target down\", next attempt in 2 h; owners"
        echo "round robin over the three nodes), $Q_IN_FLIGHT Submits in flight, no new one while"
        echo "a follower's log is more than $Q_MAX_LAG entries behind (0 = no limit), until every"
        echo "node has applied it all; RSS and store size; the same accept run with the queue"
        echo "full; then all three nodes stopped (SIGTERM) and started again on their data,"
        echo "polling each node's /readyz and a 1-message SMTP send every 0.1 s from the"
        echo "start; last, one snapshot of the full queue built on node 1 alone (relayctl"
        echo "snapshot), timed, RSS sampled."
        echo
        echo "The nodes run cluster-config/local as shipped except purge_interval ="
        echo "$Q_PURGE_INTERVAL (shipped: 1m), started by this script: every node snapshots its"
        echo "state to a file (streamed, bounded memory) and purges its log on that interval,"
        echo "during the fill too. AppendEntries are split at 2 MiB of bodies, so a lagging"
        echo "follower catches up on large batch entries (an earlier run of this phase found"
        echo "one that never did; see benches/README.md)."
        echo
        echo "Each node runs in its own memory cgroup capped at $MEM_CAP_MIB MiB (0 = none), and a"
        echo "guard SIGKILLs the nodes if the machine's MemAvailable falls below $MEM_FLOOR_MIB MiB;"
        echo "a node over its cap is OOM-killed alone. Both are counted below."
        echo
        echo "| step | figure | target | measured (node1/node2/node3 where per node) | verdict |"
        echo "|---|---|---|---|---|"
        awk -v cap="$MEM_CAP_MIB" '{
            for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = substr($i, length(kv[1]) + 2) }
        }
        function maxof(s,   p, i, m, k) { k = split(s, p, "/"); m = 0; for (i = 1; i <= k; i++) if (p[i] + 0 > m) m = p[i] + 0; return m }
        function verdict(ok) { return ok ? "met" : "**missed**" }
        END {
            printf "| empty queue | accepted msgs/s (p50 / p99 ms) | | %s (%s / %s)%s | |\n", v["empty_msgs_per_s"], v["empty_p50_ms"], v["empty_p99_ms"], (v["empty_failed"] > 0 ? ", " v["empty_failed"] " refused" : "")
            printf "| empty queue | VmRSS MiB | | %s | |\n", v["empty_rss_mib"]
            printf "| fill | %s messages: leader answered after, s (msgs/s); all nodes applied after, s | | %s (%s); %s | |\n", v["fill_count"], v["fill_s"], v["fill_msgs_per_s"], v["fill_all_applied_s"]
            printf "| after fill | VmRSS MiB | <= 512 | %s | %s |\n", v["full_rss_mib"], verdict(maxof(v["full_rss_mib"]) <= 512)
            printf "| after fill | store on disk MiB (du of the data dir) | | %s | |\n", v["disk_mib"]
            printf "| queue full | accepted msgs/s (p50 / p99 ms); ratio to empty | >= 0.9 | %s (%s / %s)%s; %.2f | %s |\n", v["queued_msgs_per_s"], v["queued_p50_ms"], v["queued_p99_ms"], (v["queued_failed"] > 0 ? ", " v["queued_failed"] " refused" : ""), v["queued_msgs_per_s"] / v["empty_msgs_per_s"], verdict(v["queued_msgs_per_s"] / v["empty_msgs_per_s"] >= 0.9)
            printf "| queue full | VmRSS MiB after that run | <= 512 | %s | %s |\n", v["after_rss_mib"], verdict(maxof(v["after_rss_mib"]) <= 512)
            printf "| whole phase | peak RSS (VmHWM) MiB | <= 512 | %s | %s |\n", v["hwm_mib"], verdict(maxof(v["hwm_mib"]) <= 512)
            printf "| restart | stop (SIGTERM, all three), s | | %s | |\n", v["stop_s"]
            printf "| restart | start to /readyz, s | | %s | |\n", v["restart_ready_s"]
            printf "| restart | start to first SMTP 250, s | | %s | |\n", v["restart_first250_s"]
            f = v["restart_first250_any_s"]
            printf "| restart | start to the first 250 from any node, s | <= 10 | %s | %s |\n", f, (f == "NA" ? "**missed**" : verdict(f + 0 <= 10))
            printf "| restart | VmRSS MiB once every node answered | | %s | |\n", v["restart_rss_mib"]
            k = split(v["rss_peaks_mib"], st, ",")
            for (i = 1; i <= k; i++) { split(st[i], p, ":"); printf "| %s | highest sampled VmRSS MiB (every 0.5 s) | <= 512 | %s | %s |\n", p[1], p[2], verdict(maxof(p[2]) <= 512) }
            printf "| snapshot-node1 | one snapshot of the full queue on node 1, s (or what stopped it) | | %s | |\n", v["snapshot_s"]
            printf "| whole phase | snapshots before that one (relay_raft_snapshots_total, before the restart) | | %s | |\n", v["snapshots"]
            printf "| whole phase | nodes running after the fill / before the restart / after it / after the snapshot (1 = yes) | | %s / %s / %s / %s | |\n", v["alive_after_fill"], v["alive_before_restart"], v["alive_after_restart"], v["alive_after_snapshot"]
            printf "| whole phase | OOM kills at the %s MiB per-node memory cap | | %s | |\n", cap, v["oom_kills_end"]
            printf "| whole phase | nodes killed by the machine guard (step:MemAvailable when it fired) | | %s | |\n", v["watchdog"]
        }' "$work/queue_row"
    fi
    echo
    echo "Raw lines:"
    echo
    echo '```'
    cat "$work/rows" "$work/gc_rows"
    [ -s "$work/queue_row" ] && echo "queue $(cat "$work/queue_row")"
    echo '```'
} >"$out"
log "done in ${wall_s} s; wrote $out"
cat "$out"
