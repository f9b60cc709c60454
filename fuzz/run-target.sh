#!/usr/bin/env bash
# Runs one built fuzz target for a while, niced, growing a working corpus in
# fuzz/work/<target> from the committed seeds in fuzz/corpus/<target>; the
# log goes to fuzz/work/logs/<target>.log.
# Usage: fuzz/run-target.sh TARGET [SECONDS] [TARGET_DIR]
#   Build first, e.g. RUSTC_BOOTSTRAP=1 cargo fuzz build TARGET (TARGET_DIR
#   defaults to fuzz/target; the session target was built with
#   `-s none --target-dir target/nosan`). The binary is copied and run
#   directly, so a build running meanwhile neither blocks nor replaces it.
set -euo pipefail
cd "$(dirname "$0")"
target="$1"; secs="${2:-600}"; dir="${3:-target}"
mkdir -p "work/$target" work/logs work/bin "corpus/$target" "artifacts/$target"
cp "$dir/x86_64-unknown-linux-gnu/release/$target" "work/bin/$target"
nice -n 10 "work/bin/$target" -artifact_prefix="artifacts/$target/" \
    -max_total_time="$secs" -print_final_stats=1 -timeout=20 -rss_limit_mb=4096 \
    "work/$target" "corpus/$target" 2>&1 | tee "work/logs/$target.log"
