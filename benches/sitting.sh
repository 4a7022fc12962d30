#!/usr/bin/env bash
# Every benchmark in one sitting, one after another, beside the peers
# (docs/PERFORMANCE.md "Quiet sitting"). Build first:
#   cargo build --release --bin econtext --examples
# Outputs in ${OUT:-/tmp/sit}; load averages between the parts in load.txt.
set -uo pipefail
cd "$(dirname "$0")/.."
PB=${PEER_BENCH:-$PWD/../shared/peer-bench}
P=/tmp/mitobench/venv/bin/python
O=${OUT:-/tmp/sit}; mkdir -p "$O"
mark() { echo "$1 $(date +%T) $(cat /proc/loadavg)" >> "$O/load.txt"; }
bash "$PB/setup.sh" > "$O/setup.log" 2>&1
mark start
./target/release/examples/agent_bench --calls 2000 > "$O/agent.txt" 2>&1; mark agent
./target/release/examples/bench --imports > "$O/imports.txt" 2>&1
$P benches/mitogen_realpkg.py 3 > "$O/mitogen_realpkg.txt" 2>&1; mark imports
./target/release/examples/bench --json --children 200 > "$O/bench.json" 2> "$O/bench.err"
(cd "$PB" && $P execnet_bootstrap.py 20 > "$O/ex_bootstrap.json" 2>&1
 $P execnet_roundtrip.py 2000 > "$O/ex_roundtrip.json" 2>&1
 $P execnet_throughput.py 10000 3 > "$O/ex_throughput.json" 2>&1
 $P execnet_fanout.py 50 > "$O/ex_fanout.json" 2>&1); mark perf
# Load-independent counts behind the round-trip and in-flight rows:
# context switches per call of each side, CPU per side (PERFORMANCE.md,
# "Wake-ups, copies and compile memory, counted").
./target/release/examples/py_roundtrip --n 5000 --threads --inflight 10000 --echo 3 > "$O/counts.txt" 2>&1
$P benches/execnet_ctx.py 5000 >> "$O/counts.txt" 2>&1; mark counts
./target/release/examples/files_bench --runs 1 > "$O/files.txt" 2>&1; mark files
bash benches/fleet.sh 50 2 > "$O/fleet.txt" 2>&1; mark fleet
