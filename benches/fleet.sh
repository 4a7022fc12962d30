#!/usr/bin/env bash
# Fleet benchmark, in one sitting beside the peers: `uname -r` and a
# Python call on N distinct loopback hosts (../shared/peer-bench/
# fleet_setup.sh N: sshd on 127.0.0.2..N+1:2222 and an Ansible inventory).
# Rounds alternate plain ssh (all at once) and econtext so that the
# machine's drift hits both; then fleet_peers.sh times plain ssh, Ansible
# ad-hoc and Ansible with Mitogen. Prints JSON lines; medians at the end.
# Usage: benches/fleet.sh [N] [ROUNDS]   (needs a release build:
#        cargo build --release --bin econtext)
set -euo pipefail
N=${1:-50}; R=${2:-3}
HERE=$(cd "$(dirname "$0")/.." && pwd)
PB=${PEER_BENCH:-$HERE/../shared/peer-bench}
EC=$HERE/target/release/econtext
D=/tmp/mitobench/fleet; K=/tmp/mitobench/ssh/id
[ -x "$EC" ] || { echo "build first: cargo build --release --bin econtext" >&2; exit 1; }
bash "$PB/fleet_setup.sh" "$N" >/dev/null
INV=$D/inventory.ini
now() { date +%s.%N; }
plain() { for n in $(seq 2 $((N + 1))); do ssh -p 2222 -i $K -o StrictHostKeyChecking=no \
  -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -o BatchMode=yes root@127.0.0.$n uname -r \
  >/dev/null & done; wait; }
# One econtext run: wall seconds, lines, exit code, master CPU and RSS.
ec() {
  local s e out rc stats
  s=$(now)
  set +e; out=$("$EC" "$@" 2>/tmp/fleet-bench-stats); rc=$?; set -e
  e=$(now)
  stats=$(tail -1 /tmp/fleet-bench-stats)
  printf '{"wall_s": %s, "lines": %s, "rc": %s, "stats": %s}' \
    "$(echo "$e - $s" | bc)" "$(printf '%s\n' "$out" | grep -c '"host"')" $rc "${stats:-null}"
}
for r in $(seq 1 "$R"); do
  s=$(now); plain; e=$(now)
  echo "{\"round\": $r, \"plain_ssh_s\": $(echo "$e - $s" | bc)}"
  echo "{\"round\": $r, \"econtext_run\": $(ec run -i $INV -f 64 --json --stats fleet -- uname -r)}"
  echo "{\"round\": $r, \"econtext_call\": $(ec call -i $INV -f 64 --json --stats fleet platform.python_version)}"
done
echo "{\"peers\": $(bash "$PB/fleet_peers.sh" "$N")}"
