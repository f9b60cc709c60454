#!/usr/bin/env bash
# The one-command benchmark: quorum-relay against Postfix as a relay, same
# load, same run, same sink, over a matrix of configurations.
#
#   benches/relay-vs-postfix.sh
#
# Matrix: sessions in $SESSIONS_LIST (1 10 50) x message size in $SIZES
# (1024 32768 octets); messages per configuration: $COUNT_1 (1 session,
# default 2000), $COUNT_10 (default 20000), $COUNT_50 (default 20000). For
# every configuration both systems run back to back, each freshly started
# on an empty store/queue:
#   - quorum-relay: the local 3-process cluster (scripts/local-cluster.sh),
#     every 250 after a quorum fsync; sessions spread round-robin over the
#     three nodes' SMTP ports; each node delivers what it accepted.
#   - Postfix: one private instance, logging off
#     (../shared/bench/postfix-relay.sh), smtpd on 127.0.0.1:2535.
# Both relay to one smtp-sink on 127.0.0.1:2600 (smtp-sink -c counts what
# arrives). The load driver is benches' smtp-latency (MAIL FROM to 250 per
# message, every session back to back over one connection).
#
# Per configuration and system: accepted msgs/s and p50/p99 submit->250
# (smtp-latency), end-to-end msgs/s (COUNT / time from the driver's start
# until the sink has COUNT messages), CPU seconds of the relay during that
# window, peak RSS, and for quorum-relay the group-commit figures from each
# node's /metrics (scraped before and after). What is counted is written
# into the results header. Writes benches/results/$NAME-<date>.md. Figures
# are a ratio in one run on this machine, never assertions.
#
# Environment: SESSIONS_LIST, SIZES, COUNT_1, COUNT_10, COUNT_50 (a count for
# another session number: COUNT_<n>, else COUNT_DEFAULT=20000), NAME
# [relay-vs-postfix-matrix], SYSTEMS [qr pfx], E2E_TIMEOUT [300] seconds,
# QR_SHARED_BENCH [../shared/bench], QR_SKIP_BUILD=1 (use the binaries in
# $CARGO_TARGET_DIR/release as they are, e.g. to compare two builds).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$here/../scripts/build-env.sh"
cd "$QR_ROOT"
BENCH="${QR_SHARED_BENCH:-$QR_ROOT/../shared/bench}"
SESSIONS_LIST=${SESSIONS_LIST:-"1 10 50"}
SIZES=${SIZES:-"1024 32768"}
SYSTEMS=${SYSTEMS:-"qr pfx"}
COUNT_DEFAULT=${COUNT_DEFAULT:-20000}
COUNT_1=${COUNT_1:-2000}
NAME=${NAME:-relay-vs-postfix-matrix}
E2E_TIMEOUT=${E2E_TIMEOUT:-300}
SINK_PORT=2600            # the local cluster's default route (demo target port)
PFX_LISTEN=127.0.0.1:2535
PFX_DIR=${PFX_DIR:-/tmp/pfx-bench}
QR_SMTP=127.0.0.1:2525,127.0.0.1:2526,127.0.0.1:2527
QR_HTTP=(9101 9102 9103)
PATH=$PATH:/usr/sbin
TCK=$(getconf CLK_TCK)
out="benches/results/$NAME-$(date -u +%Y-%m-%d).md"
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
    echo "${last#mesg=}" | sed 's/^$/0/'
}

# ---- systems -------------------------------------------------------------
start_qr() {
    rm -rf data/local
    QR_SKIP_BUILD=1 QR_NO_TARGET=1 scripts/local-cluster.sh start >"$work/cluster-start.log"
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

cleanup() {
    stop_sink
    stop_qr
    stop_pfx
    rm -rf "$work"
}
trap cleanup EXIT

# ---- one configuration -----------------------------------------------------
# run SYSTEM SESSIONS SIZE COUNT: appends one line of key=value to rows.
run() {
    local sys=$1 sessions=$2 size=$3 count=$4 targets pids lat t0 t1 t2 got c0 c1 rss row
    if [ "$sys" = qr ]; then start_qr; targets=$QR_SMTP; else start_pfx; targets=$PFX_LISTEN; fi
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
    row="sys=$sys sessions=$sessions size=$size count=$count $lat"
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
        local i leader=0 le=0 la=0 l1=0 lall=0 fe=0 fa=0 ds=0 dn=0 b a
        for i in 1 2 3; do
            b=$work/before.$i a=$work/after.$i
            local e n f1 fall
            e=$(awk -v x="$(metric "$a" relay_raft_append_batch_entries_sum)" -v y="$(metric "$b" relay_raft_append_batch_entries_sum)" 'BEGIN { print x - y }')
            n=$(awk -v x="$(metric "$a" relay_raft_append_batch_entries_count)" -v y="$(metric "$b" relay_raft_append_batch_entries_count)" 'BEGIN { print x - y }')
            f1=$(awk -v x="$(metric "$a" 'relay_raft_append_batch_entries_bucket{le="1"}')" -v y="$(metric "$b" 'relay_raft_append_batch_entries_bucket{le="1"}')" 'BEGIN { print x - y }')
            fall=$(awk -v x="$(fsyncs_all "$a")" -v y="$(fsyncs_all "$b")" 'BEGIN { print x - y }')
            ds=$(awk -v s="$ds" -v x="$(metric "$a" relay_delivery_attempt_seconds_sum)" -v y="$(metric "$b" relay_delivery_attempt_seconds_sum)" 'BEGIN { print s + x - y }')
            dn=$(awk -v s="$dn" -v x="$(metric "$a" relay_delivery_attempt_seconds_count)" -v y="$(metric "$b" relay_delivery_attempt_seconds_count)" 'BEGIN { print s + x - y }')
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
    fi
    stop_sink
    if [ "$sys" = qr ]; then stop_qr; else stop_pfx; fi
    echo "$row" >>"$work/rows"
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
    cargo build --release --locked --bin relayd --bin relayctl --bin smtp-latency 2>&1 | tail -1 >&2
fi
: >"$work/rows"
total=0
for s in $SESSIONS_LIST; do for z in $SIZES; do for sys in $SYSTEMS; do total=$((total + 1)); done; done; done
n=0
for sessions in $SESSIONS_LIST; do
    for size in $SIZES; do
        count=$(count_for "$sessions")
        for sys in $SYSTEMS; do
            n=$((n + 1))
            log "[$n/$total] $sys: $sessions sessions x $size octets x $count messages"
            run "$sys" "$sessions" "$size" "$count"
        done
    done
done
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
    echo "  every 250 after the Enqueue committed on 2 of 3 fsynced logs; sessions"
    echo "  round-robin over the three SMTP ports; each node delivers what it accepted"
    echo "  (per_target_concurrency 5 per node)."
    echo "- Postfix: one instance (../shared/bench/postfix-relay.sh: logging off,"
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
    echo
    echo "| sessions | size | system | accepted/s | p50 ms | p99 ms | e2e/s | CPU s | CPU ms/msg | peak RSS MiB |"
    echo "|---:|---:|---|---:|---:|---:|---:|---:|---:|---|"
    awk '{
        for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = substr($i, length(kv[1]) + 2) }
        sys = (v["sys"] == "qr" ? "quorum-relay" : "Postfix")
        size = (v["size"] % 1024 == 0 ? v["size"] / 1024 " KiB" : v["size"] " B")
        fail = (v["failed"] > 0 ? " (" v["failed"] " refused)" : "")
        e2e = v["e2e_msgs_per_s"]; if (e2e == "NA") e2e = "NA (" v["delivered"] "/" v["count"] ")"
        rss = v["rss_mib"]; gsub("_", " ", rss)
        printf "| %s | %s | %s | %s%s | %s | %s | %s | %s | %.2f | %s |\n", v["sessions"], size, sys,
            v["msgs_per_s"], fail, v["p50_ms"], v["p99_ms"], e2e, v["cpu_s"], v["cpu_s"] * 1000 / v["count"], rss
    }' "$work/rows"
    echo
    echo "Ratios (quorum-relay / Postfix; issue 8 targets: accepted >= 2 at 50 x 1 KiB,"
    echo "p99 <= 1, e2e >= 1.5):"
    echo
    echo "| sessions | size | accepted | p99 | e2e | CPU s |"
    echo "|---:|---:|---:|---:|---:|---:|"
    awk '{
        for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = substr($i, length(kv[1]) + 2) }
        k = v["sessions"] SUBSEP v["size"]
        if (!(k in seen)) { seen[k] = 1; order[++n] = k }
        acc[k, v["sys"]] = v["msgs_per_s"]; p99[k, v["sys"]] = v["p99_ms"]
        e2e[k, v["sys"]] = v["e2e_msgs_per_s"]; cpu[k, v["sys"]] = v["cpu_s"]
    }
    function r(a, b) { return (a == "" || b == "" || a == "NA" || b == "NA" || b + 0 == 0) ? "-" : sprintf("%.2f", a / b) }
    END {
        for (j = 1; j <= n; j++) {
            k = order[j]; split(k, p, SUBSEP)
            size = (p[2] % 1024 == 0 ? p[2] / 1024 " KiB" : p[2] " B")
            printf "| %s | %s | %s | %s | %s | %s |\n", p[1], size, r(acc[k, "qr"], acc[k, "pfx"]),
                r(p99[k, "qr"], p99[k, "pfx"]), r(e2e[k, "qr"], e2e[k, "pfx"]), r(cpu[k, "qr"], cpu[k, "pfx"])
        }
    }' "$work/rows"
    echo
    echo "Group commit in quorum-relay (from /metrics before and after each run:"
    echo "relay_raft_append_batch_entries, relay_raft_log_fsyncs_total). Entries are"
    echo "all log entries appended in the window (Enqueue, delivery reports, blanks)."
    echo "Mean delivery attempt = relay_delivery_attempt_seconds (SMTP work to the sink"
    echo "only), over the three nodes."
    echo
    echo "| sessions | size | accepted msgs/s | leader: entries per append fsync | leader: appends of 1 entry | followers: entries per append fsync | leader: all WAL fsyncs per message | mean delivery attempt ms |"
    echo "|---:|---:|---:|---:|---:|---:|---:|---:|"
    awk '$1 == "sys=qr" {
        for (i = 1; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = substr($i, length(kv[1]) + 2) }
        size = (v["size"] % 1024 == 0 ? v["size"] / 1024 " KiB" : v["size"] " B")
        le = (v["leader_appends"] > 0 ? sprintf("%.2f", v["leader_entries"] / v["leader_appends"]) : "-")
        l1 = (v["leader_appends"] > 0 ? sprintf("%.0f%%", 100 * v["leader_single_appends"] / v["leader_appends"]) : "-")
        fe = (v["follower_appends"] > 0 ? sprintf("%.2f", v["follower_entries"] / v["follower_appends"]) : "-")
        fm = sprintf("%.2f", v["leader_fsyncs_all"] / v["count"])
        printf "| %s | %s | %s | %s | %s | %s | %s | %s |\n", v["sessions"], size, v["msgs_per_s"], le, l1, fe, fm, v["delivery_attempt_ms"]
    }' "$work/rows"
    echo
    echo "Raw lines:"
    echo
    echo '```'
    cat "$work/rows"
    echo '```'
} >"$out"
log "done in ${wall_s} s; wrote $out"
cat "$out"
