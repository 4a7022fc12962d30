#!/usr/bin/env bash
# Spinning before sleeping, A/B on one binary (docs/PERFORMANCE.md,
# "Spinning before sleeping"): py_roundtrip with the default window (50 µs)
# and with spinning off (--spin-us 0), alternating, twice as the scheduler
# places the two processes and twice with the master pinned to CPU 0 and
# its Python child to CPU 1 (the case where both would halt between
# messages), then peer-bench's execnet round trip for the ratio. Build
# first: cargo build --release --examples. About 2 minutes.
set -uo pipefail
cd "$(dirname "$0")/.."
PB=${PEER_BENCH:-$PWD/../shared/peer-bench}
BIN=${BIN:-./target/release/examples/py_roundtrip}
run() { # label, then py_roundtrip's arguments
    echo "== $1 (load $(cut -d' ' -f1 /proc/loadavg))"; shift
    "$BIN" "$@" 2>&1 | grep -E "round trip|in flight"
}
pinned() { # label, then arguments: master on CPU 0, its child on CPU 1
    echo "== $1 (load $(cut -d' ' -f1 /proc/loadavg))"; shift
    local out
    coproc P { exec taskset -c 0 "$BIN" --pause "$@" 2>&1; }
    exec {out}<&"${P[0]}"  # the coproc's array goes when it exits
    while read -r line <&"$out"; do
        case "$line" in
        *"child pid"*) taskset -apc 1 "${line##* }" > /dev/null ;;
        *"round trip"*|*"in flight"*) echo "$line" ;;
        esac
    done
    exec {out}<&-
    wait
}
for i in 1 2; do
    run "spin 50 µs" --n 5000 --inflight 10000 --echo 0
    run "spin off" --n 5000 --inflight 10000 --echo 0 --spin-us 0
done
for i in 1 2; do
    pinned "pinned, spin 50 µs" --n 5000 --inflight 10000 --echo 0
    pinned "pinned, spin off" --n 5000 --inflight 10000 --echo 0 --spin-us 0
done
if [ -d "$PB" ]; then
    echo "== execnet_roundtrip.py 2000 (channel_echo median_us)"
    (cd "$PB" && /tmp/mitobench/venv/bin/python execnet_roundtrip.py 2000) |
        grep -A3 channel_echo | grep median_us
fi
