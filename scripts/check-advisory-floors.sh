#!/usr/bin/env bash
# Fails if Cargo.lock pins any version of a listed crate below its floor.
# Every locked version counts, so a second, older copy pulled in by
# some dependency fails the check too. Usage: scripts/check-advisory-floors.sh
# [path/to/Cargo.lock]  (default: the workspace's).
set -euo pipefail

# The floors: the lowest versions free of the known security advisories
# that concern this project.
# Raise a floor here when a new advisory is published; keep one per line.
FLOORS="
h2      0.4.16
tonic   0.12.3
rustls  0.23.45
lettre  0.11.22
"

lock="${1:-$(cd "$(dirname "$0")/.." && pwd)/Cargo.lock}"
[ -f "$lock" ] || { echo "check-advisory-floors: $lock not found" >&2; exit 2; }

# 0 if version $1 < $2 (semver order; a pre-release sorts before its release).
version_lt() {
    local a="$1" b="$2" a_pre="" b_pre=""
    case "$a" in *-*) a_pre="${a#*-}"; a="${a%%-*}" ;; esac
    case "$b" in *-*) b_pre="${b#*-}"; b="${b%%-*}" ;; esac
    local IFS=.
    # shellcheck disable=SC2206
    local x=($a) y=($b)
    for i in 0 1 2; do
        local p="${x[i]:-0}" q="${y[i]:-0}"
        if ((10#$p < 10#$q)); then return 0; fi
        if ((10#$p > 10#$q)); then return 1; fi
    done
    [ -n "$a_pre" ] && [ -z "$b_pre" ]
}

# "name version" for every [[package]] in the lock file.
locked="$(awk '
    /^\[\[package\]\]/ { name = "" }
    /^name = "/ { gsub(/^name = "|"$/, ""); name = $0 }
    /^version = "/ { gsub(/^version = "|"$/, ""); if (name != "") print name, $0 }
' "$lock")"

failed=0
while read -r crate floor; do
    [ -n "$crate" ] || continue
    versions="" bad=0
    while read -r name version; do
        [ "$name" = "$crate" ] || continue
        versions="$versions $version"
        if version_lt "$version" "$floor"; then
            echo "check-advisory-floors: FAIL: $crate $version is locked; need >= $floor" >&2
            bad=1
        fi
    done <<<"$locked"
    if [ -z "$versions" ]; then
        echo "check-advisory-floors: $crate not in the lock file"
    elif [ "$bad" = 0 ]; then
        echo "check-advisory-floors: $crate$versions >= $floor"
    fi
    failed=$((failed | bad))
done <<<"$FLOORS"
exit "$failed"
