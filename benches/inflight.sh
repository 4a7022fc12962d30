#!/bin/sh
# Issue 16's "10,000 calls in flight" row beside execnet, with each side's
# CPU per call (docs/PERFORMANCE.md, "Batch frames (fifth session,
# batch)"). Release build first: cargo build --release --examples.
#   bash benches/inflight.sh             this tree's binary, then execnet
#   OLD=DIR bash benches/inflight.sh     DIR's py_roundtrip first (A/B)
# Prints calls/s and CPU µs per call (master, child) for 30,000 calls in
# flight, execnet_throughput's pipelined median for 10,000, and the ratio
# (target: at least 2x execnet). Under a minute.
HERE=$(cd "$(dirname "$0")/.." && pwd)
NEW=${NEW:-$HERE/target/release/examples}
PEER=${PEER:-$HERE/../shared/peer-bench}
EX=${EXECNET_PYTHON:-/tmp/mitobench/venv/bin/python}
echo "load $(cut -d' ' -f1 /proc/loadavg) at $(date -u +%T)"
run() {
    "$1/py_roundtrip" --n 10 --inflight 30000 --echo 0 2>&1 | grep -i 'in flight' |
        sed 's/in flight: per call: //' | tr '\n' ' '
    echo
}
[ -n "$OLD" ] && echo "old: $(run "$OLD")"
line=$(run "$NEW")
echo "new: $line"
ours=$(echo "$line" | grep -o '[0-9]* calls/s' | head -1 | grep -o '[0-9]*')
theirs=$(cd "$PEER" && "$EX" execnet_throughput.py 10000 3 2>/dev/null | python3 -c '
import json, sys
print("%.0f" % json.load(sys.stdin)["result"]["pipelined_channel"]["calls_per_sec"]["median"])')
echo "execnet: $theirs calls/s (pipelined median of 3)"
python3 -c "print('ratio: %.2fx execnet (target >= 2x)' % ($ours / float($theirs)))"
