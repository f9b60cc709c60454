#!/usr/bin/env bash
# Runs one fuzz target for a while, niced, growing a working corpus in
# fuzz/work/<target> from the committed seeds in fuzz/corpus/<target>.
# Usage: fuzz/run-target.sh TARGET [SECONDS] [extra cargo-fuzz args...]
# e.g.   fuzz/run-target.sh session 600 -s none
#        fuzz/run-target.sh log_entry 600 --features node   (needs RocksDB env)
set -euo pipefail
cd "$(dirname "$0")"
target="$1"; secs="${2:-600}"; shift $(( $# > 1 ? 2 : 1 ))
mkdir -p "work/$target" work/logs "corpus/$target"
export RUSTC_BOOTSTRAP=1
exec nice -n 10 cargo fuzz run "$@" "$target" "work/$target" "corpus/$target" -- \
    -max_total_time="$secs" -print_final_stats=1 -timeout=20 -rss_limit_mb=4096 \
    2>&1 | tee "work/logs/$target.log"
