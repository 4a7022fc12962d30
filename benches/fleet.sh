#!/usr/bin/env bash
# Fleet benchmark, in one sitting beside the peers: `uname -r` and a
# Python call on N distinct loopback hosts (../shared/peer-bench/
# fleet_setup.sh N: sshd on 127.0.0.2..N+1:2222 and an Ansible inventory).
# Rounds alternate plain ssh (all at once) and econtext so that the
# machine's drift hits both; then fleet_peers.sh times plain ssh, Ansible
# ad-hoc and Ansible with Mitogen once each.
#
# Besides wall seconds, each run's CPU seconds are counted, which a loaded
# machine does not distort: the client side (the command and every child
# it reaped: ssh clients) from /usr/bin/time, and the hosts' side (sshd,
# the shell, Python, uname) from the sshd listeners' cutime+cstime, which
# grow by what every session they reaped cost. On 2 cores with 50 hosts
# the run is CPU-bound, so the CPU ratio predicts the quiet wall ratio.
#
# Prints one JSON line per run, then a summary of medians with the ratios
# the issue sets as targets (econtext within 1.10x of plain ssh; Ansible
# at least 1.6x slower than econtext) and the master's CPU and peak RSS
# per host.
# Usage: benches/fleet.sh [N] [ROUNDS]   (needs a release build:
#        cargo build --release --bin econtext)
set -euo pipefail
N=${1:-50}; R=${2:-3}
HERE=$(cd "$(dirname "$0")/.." && pwd)
PB=${PEER_BENCH:-$HERE/../shared/peer-bench}
EC=$HERE/target/release/econtext
D=/tmp/mitobench/fleet; K=/tmp/mitobench/ssh/id
[ -x "$EC" ] || { echo "build first: cargo build --release --bin econtext" >&2; exit 1; }
[ -x /usr/bin/time ] || { echo "needs /usr/bin/time (apt-get install time)" >&2; exit 1; }
[ -f /tmp/mitobench/ssh/sshd_config ] || bash "$PB/setup.sh" >/dev/null
bash "$PB/fleet_setup.sh" "$N" >/dev/null
INV=$D/inventory.ini
TCK=$(getconf CLK_TCK)
OUT=$(mktemp /tmp/fleet-bench.XXXXXX); trap 'rm -f "$OUT" "$OUT".*' EXIT

# CPU ticks the hosts' side has used so far (sessions reaped by sshd).
hosts_ticks() {
  local t=0 f s
  for f in "$D"/pid.*; do
    read -r -a s < "/proc/$(cat "$f")/stat"
    t=$((t + s[15] + s[16]))
  done
  echo $t
}
# One measured command: {"wall_s", "client_cpu_s", "hosts_cpu_s",
# "cpu_s"} plus extra JSON fields from $EXTRA.
measure() {
  local h0 h1
  h0=$(hosts_ticks)
  /usr/bin/time -o "$OUT.time"  -f '%e %U %S %x' "$@" >"$OUT.stdout" 2>"$OUT.stderr" || true
  h1=$(hosts_ticks)
  read -r wall u s x < <(tail -1 "$OUT.time")
  echo "$x" > "$OUT.rc"
  python3 - "$wall" "$u" "$s" $((h1 - h0)) "$TCK" <<'PY'
import sys
wall, u, s, ht, tck = sys.argv[1:]
client = float(u) + float(s); hosts = int(ht) / int(tck)
print('{"wall_s": %.3f, "client_cpu_s": %.3f, "hosts_cpu_s": %.3f, "cpu_s": %.3f'
      % (float(wall), client, hosts, client + hosts), end='')
PY
}
plain_cmd="for n in \$(seq 2 $((N + 1))); do ssh -p 2222 -i $K -o StrictHostKeyChecking=no \
  -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -o BatchMode=yes root@127.0.0.\$n uname -r \
  >/dev/null & done; wait"
plain() { measure bash -c "$plain_cmd"; echo '}'; }
# An econtext run: lines, exit code and --stats (master CPU, RSS) too.
ec() {
  measure "$EC" "$@"
  printf ', "lines": %s, "rc": %s, "stats": %s}\n' \
    "$(grep -c '"host"' "$OUT.stdout" || true)" \
    "$(cat "$OUT.rc")" \
    "$(tail -1 "$OUT.stderr" | grep '^{' || echo null)"
}
{
  for r in $(seq 1 "$R"); do
    echo "{\"round\": $r, \"plain_ssh\": $(plain)}"
    echo "{\"round\": $r, \"econtext_run\": $(ec run -i "$INV" -f 64 --json --stats fleet -- uname -r)}"
    echo "{\"round\": $r, \"econtext_call\": $(ec call -i "$INV" -f 64 --json --stats fleet platform.python_version)}"
  done
  echo "{\"peers\": $(bash "$PB/fleet_peers.sh" "$N")}"
} | tee "$OUT.lines"
python3 - "$OUT.lines" "$N" <<'PY'
import json, statistics as st, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith('{')]
n = int(sys.argv[2])
def med(key, field):
    v = [r[key][field] for r in rows if key in r]
    return st.median(v) if v else float('nan')
peers = next((r['peers'] for r in rows if 'peers' in r), {})
plain_w, plain_c = med('plain_ssh', 'wall_s'), med('plain_ssh', 'cpu_s')
print('\n== fleet: %d hosts, medians of %d rounds' % (n, len([r for r in rows if 'plain_ssh' in r])))
print('%-24s %8s %8s %10s %10s' % ('', 'wall s', 'cpu s', 'wall/ssh', 'cpu/ssh'))
print('%-24s %8.2f %8.2f %10s %10s' % ('plain ssh all at once', plain_w, plain_c, '1.00', '1.00'))
for k in ('econtext_run', 'econtext_call'):
    w, c = med(k, 'wall_s'), med(k, 'cpu_s')
    print('%-24s %8.2f %8.2f %9.2fx %9.2fx' % (k.replace('_', ' '), w, c, w / plain_w, c / plain_c))
for k, name in (('ansible_adhoc_s', 'ansible ad-hoc'), ('ansible_mitogen_s', 'ansible + mitogen')):
    if k in peers:
        print('%-24s %8.2f %8s %9.2fx' % (name, peers[k], '-', peers[k] / plain_w))
for k in ('econtext_run', 'econtext_call'):
    extra = 1000 * (med(k, 'cpu_s') - plain_c) / n
    print('%-24s %+.1f ms CPU per host over plain ssh (1.10x allows %+.1f)'
          % (k.replace('_', ' '), extra, 100 * plain_c / n))
run_w = med('econtext_run', 'wall_s')
print('\ntargets: econtext run <= 1.10x plain ssh (wall; cpu/ssh predicts it on a quiet machine);')
if 'ansible_adhoc_s' in peers:
    print('         ansible ad-hoc / econtext run = %.2fx (target >= 1.6x)' % (peers['ansible_adhoc_s'] / run_w))
if 'plain_ssh_all_at_once_s' in peers:
    print('         (fleet_peers.sh own plain ssh run: %.2f s)' % peers['plain_ssh_all_at_once_s'])
for k in ('econtext_run', 'econtext_call'):
    s = [r[k]['stats'] for r in rows if k in r and r[k].get('stats')]
    bad = [r[k] for r in rows if k in r and (r[k]['lines'] != n or r[k]['rc'] != 0)]
    if s:
        cpu = st.median(x['master_cpu_s'] for x in s)
        rss = st.median(x['master_max_rss_kb'] for x in s)
        print('%-14s master: %.3f cpu s = %.1f ms/host; peak RSS %.1f MB = %.0f KB/host%s'
              % (k.replace('_', ' '), cpu, 1000 * cpu / n, rss / 1024, rss / n,
                 '' if not bad else '  (%d runs without %d ok lines!)' % (len(bad), n)))
PY
