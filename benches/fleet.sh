#!/usr/bin/env bash
# Fleet benchmark, in one sitting beside the peers: `uname -r` and a
# Python call on N distinct loopback hosts (../shared/peer-bench/
# fleet_setup.sh N: sshd on 127.0.0.2..N+1:2222 and an Ansible inventory).
#
# Each round runs plain ssh (all at once) and `econtext run` twice, in
# the order ssh, run, run, ssh (odd rounds) or run, ssh, ssh, run (even
# rounds), then `econtext call` once: each adjacent ssh/run pair gives one
# ratio that the machine's drift hits on both sides. Then fleet_peers.sh
# times plain ssh, Ansible ad-hoc and Ansible with Mitogen once each
# (with the peers, Ansible ad-hoc also runs once per round).
#
# Wall seconds, and the CPU seconds of every process of a run, which a
# shared machine distorts far less: with cgroups (cpuacct, as root), the
# command and everything it starts (the ssh clients) in one group and the
# sshd listeners with every session they fork (shell, Python, uname) in
# another; without them, /usr/bin/time's client side plus the listeners'
# cutime+cstime. machine_cpu_s is the whole machine's busy time from
# /proc/stat over the run: far above cpu_s, the sitting was not quiet.
# On 2 cores with 50 hosts the run is CPU-bound, so the CPU ratio
# predicts the quiet wall ratio. (Here root's ~/.bashrc runs `pyenv init`
# at every ssh login, whose rehash takes a lock: 50 logins at once queue
# on it, which makes wall time noisy; both sides pay it.)
#
# Prints one JSON line per run, then a summary: medians, the per-pair
# ratios and their median (the figure for the target: econtext run within
# 1.10x of plain ssh), Ansible's ratio to econtext (target >= 1.6x), and
# the master's CPU and peak RSS per host. With the peers (the default;
# FLEET_PEERS=0 leaves them out), each round also runs Ansible ad-hoc once.
# Usage: benches/fleet.sh [N] [ROUNDS]   (FLEET_PEERS=0: without the
#        peers; needs a release build:
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
OUT=$(mktemp /tmp/fleet-bench.XXXXXX)

# cpuacct groups for the two sides, when we may make them.
CG=/sys/fs/cgroup/cpuacct/econtext-fleet-bench
cg_release() {
  [ -d "$CG" ] || return 0
  local g p
  for g in "$CG"/hosts "$CG"/client; do
    [ -d "$g" ] || continue
    while read -r p; do echo "$p" > /sys/fs/cgroup/cpuacct/cgroup.procs 2>/dev/null || true; done < "$g/cgroup.procs"
    rmdir "$g" 2>/dev/null || true
  done
  rmdir "$CG" 2>/dev/null || true
}
cleanup() { cg_release; rm -f "$OUT" "$OUT".*; }
trap cleanup EXIT
USE_CG=0
cg_release
if mkdir -p "$CG/hosts" "$CG/client" 2>/dev/null; then
  USE_CG=1
  for f in "$D"/pid.*; do echo "$(cat "$f")" > "$CG/hosts/cgroup.procs" || USE_CG=0; done
fi

# CPU ticks the hosts' side has used so far (sessions reaped by sshd).
hosts_ticks() {
  local t=0 f s
  for f in "$D"/pid.*; do
    read -r -a s < "/proc/$(cat "$f")/stat"
    t=$((t + s[15] + s[16]))
  done
  echo $t
}
# The machine's busy ticks (user nice system irq softirq steal).
machine_ticks() {
  local c u n s i io irq sirq st rest
  read -r c u n s i io irq sirq st rest < /proc/stat
  echo $((u + n + s + irq + sirq + st))
}
ns() { cat "$1/cpuacct.usage"; }
# One measured command: {"wall_s", "client_cpu_s", "hosts_cpu_s",
# "cpu_s", "machine_cpu_s"; the caller closes the object.
measure() {
  local h0 h1 m0 m1 c0=0 c1=0 g0=0 g1=0
  h0=$(hosts_ticks); m0=$(machine_ticks)
  if [ $USE_CG = 1 ]; then c0=$(ns "$CG/client"); g0=$(ns "$CG/hosts"); fi
  /usr/bin/time -o "$OUT.time" -f '%e %U %S %x' \
    sh -c 'if [ -n "$0" ]; then echo $$ > "$0"; fi; exec "$@"' \
    "$([ $USE_CG = 1 ] && echo "$CG/client/cgroup.procs")" "$@" >"$OUT.stdout" 2>"$OUT.stderr" || true
  if [ $USE_CG = 1 ]; then c1=$(ns "$CG/client"); g1=$(ns "$CG/hosts"); fi
  h1=$(hosts_ticks); m1=$(machine_ticks)
  read -r wall u s x < <(tail -1 "$OUT.time")
  echo "$x" > "$OUT.rc"
  python3 - "$wall" "$u" "$s" $((h1 - h0)) "$TCK" $((m1 - m0)) $USE_CG $((c1 - c0)) $((g1 - g0)) <<'PY'
import sys
wall, u, s, ht, tck, mt, cg, cns, gns = sys.argv[1:]
if cg == '1':
    client, hosts = int(cns) / 1e9, int(gns) / 1e9
else:
    client, hosts = float(u) + float(s), int(ht) / int(tck)
print('{"wall_s": %.3f, "client_cpu_s": %.3f, "hosts_cpu_s": %.3f, "cpu_s": %.3f, '
      '"machine_cpu_s": %.3f' % (float(wall), client, hosts, client + hosts,
                                 int(mt) / int(tck)), end='')
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
run() { ec run -i "$INV" -f 64 --json --stats fleet -- uname -r; }
call() { ec call -i "$INV" -f 64 --json --stats fleet platform.python_version; }
# Ansible ad-hoc as fleet_peers.sh runs it (its ansible.cfg: forks = N,
# pipelining), once per round, so that its ratio has the rounds' drift too.
V=/tmp/mitobench/venv
ansible() {
  measure env ANSIBLE_CONFIG="$D/ansible.cfg" "$V/bin/ansible" all -i "$INV" -m command -a 'uname -r' -o
  # A failed run is not a fast one: its hosts' lines and exit code.
  printf ', "lines": %s, "rc": %s}\n' \
    "$(grep -c ' | CHANGED | rc=0' "$OUT.stdout" || true)" "$(cat "$OUT.rc")"
}
PEERS=${FLEET_PEERS:-1}
if [ "$PEERS" != 0 ] && { [ ! -x "$V/bin/ansible" ] || ! grep -qx "forks = $N" "$D/ansible.cfg" 2>/dev/null; }; then
  # First use, or another N: fleet_peers.sh installs Ansible and writes
  # its config (forks = N).
  bash "$PB/fleet_peers.sh" "$N" >/dev/null
fi
row() { echo "{\"round\": $1, \"pair\": $2, \"$3\": $($3)}"; }
{
  echo "{\"cpu_from\": \"$([ $USE_CG = 1 ] && echo cgroup || echo rusage)\"}"
  for r in $(seq 1 "$R"); do
    if [ $((r % 2)) = 1 ]; then
      row "$r" 1 plain; row "$r" 1 run; row "$r" 2 run; row "$r" 2 plain
    else
      row "$r" 1 run; row "$r" 1 plain; row "$r" 2 plain; row "$r" 2 run
    fi
    row "$r" 0 call
    [ "$PEERS" = 0 ] || row "$r" 0 ansible
  done
  [ "$PEERS" = 0 ] || echo "{\"peers\": $(bash "$PB/fleet_peers.sh" "$N")}"
} | tee "$OUT.lines"
python3 - "$OUT.lines" "$N" <<'PY'
import json, statistics as st, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith('{')]
n = int(sys.argv[2])
names = {'plain': 'plain ssh all at once', 'run': 'econtext run', 'call': 'econtext call',
         'ansible': 'ansible ad-hoc'}
def vals(key, field):
    return [r[key][field] for r in rows if key in r]
def med(key, field):
    v = vals(key, field)
    return st.median(v) if v else float('nan')
peers = next((r['peers'] for r in rows if 'peers' in r), {})
cpu_from = next((r['cpu_from'] for r in rows if 'cpu_from' in r), '?')
plain_w, plain_c = med('plain', 'wall_s'), med('plain', 'cpu_s')
print('\n== fleet: %d hosts, %d runs each of plain ssh and econtext run (medians); CPU from %s'
      % (n, len(vals('plain', 'wall_s')), cpu_from))
print('%-24s %8s %8s %10s %10s %12s' % ('', 'wall s', 'cpu s', 'wall/ssh', 'cpu/ssh', 'machine cpu'))
for k in ('plain', 'run', 'call', 'ansible'):
    if not vals(k, 'wall_s'):
        continue
    w, c = med(k, 'wall_s'), med(k, 'cpu_s')
    print('%-24s %8.2f %8.2f %9.2fx %9.2fx %12.2f' % (names[k], w, c, w / plain_w, c / plain_c,
                                                    med(k, 'machine_cpu_s')))
for k, name in (('ansible_adhoc_s', 'ansible ad-hoc (peers)'),
                ('ansible_mitogen_s', 'ansible + mitogen (peers)')):
    if k in peers:
        print('%-24s %8.2f %8s %9.2fx' % (name, peers[k], '-', peers[k] / plain_w))
# Adjacent pairs: (round, pair) -> {plain: run, run: run}.
pairs = {}
for r in rows:
    for k in ('plain', 'run'):
        if k in r:
            pairs.setdefault((r['round'], r['pair']), {})[k] = r[k]
wr = [p['run']['wall_s'] / p['plain']['wall_s'] for p in pairs.values() if len(p) == 2]
cr = [p['run']['cpu_s'] / p['plain']['cpu_s'] for p in pairs.values() if len(p) == 2]
print('\nper pair (run/ssh, adjacent runs): wall %s; cpu %s'
      % (' '.join('%.2f' % x for x in wr), ' '.join('%.2f' % x for x in cr)))
if wr:
    print('median of the pairs: wall %.2fx, cpu %.2fx   <- target: econtext run <= 1.10x plain ssh'
          % (st.median(wr), st.median(cr)))
for k in ('run', 'call'):
    extra = 1000 * (med(k, 'cpu_s') - plain_c) / n
    print('%-14s %+.1f ms CPU per host over plain ssh (1.10x allows %+.1f)'
          % (names[k], extra, 100 * plain_c / n))
run_w = med('run', 'wall_s')
if vals('ansible', 'wall_s'):
    print('ansible ad-hoc / econtext run = %.2fx over the rounds (medians; the issue expects >= 1.6x)'
          % (med('ansible', 'wall_s') / run_w))
if 'ansible_adhoc_s' in peers:
    print('ansible ad-hoc / econtext run = %.2fx with fleet_peers.sh own run' % (peers['ansible_adhoc_s'] / run_w))
if 'plain_ssh_all_at_once_s' in peers:
    print('(fleet_peers.sh own plain ssh run: %.2f s)' % peers['plain_ssh_all_at_once_s'])
bad = [r['ansible'] for r in rows if 'ansible' in r and (r['ansible']['lines'] != n or r['ansible']['rc'] != 0)]
if bad:
    print('ansible ad-hoc: %d runs without %d ok lines and exit 0!' % (len(bad), n))
for k in ('run', 'call'):
    s = [r[k]['stats'] for r in rows if k in r and r[k].get('stats')]
    bad = [r[k] for r in rows if k in r and (r[k]['lines'] != n or r[k]['rc'] != 0)]
    if s:
        cpu = st.median(x['master_cpu_s'] for x in s)
        rss = st.median(x['master_max_rss_kb'] for x in s)
        print('%-14s master: %.3f cpu s = %.1f ms/host; peak RSS %.1f MB = %.0f KB/host%s'
              % (names[k], cpu, 1000 * cpu / n, rss / 1024, rss / n,
                 '' if not bad else '  (%d runs without %d ok lines!)' % (len(bad), n)))
PY
