#!/usr/bin/env bash
# What this machine's ssh allows, whatever econtext does: the floors
# behind issue 14's and 15's ssh targets (docs/PERFORMANCE.md, "Eighth
# session: the floors under the ssh targets").
#
# 1. A 256 MiB push: `ssh host 'cat > f'` beside the least a Python
#    receiver that checks a SHA-256 can do over the same ssh: read stdin
#    into one 1 MiB buffer (pipe grown to 1 MiB, as econtext.files
#    does), hash, write; no framing, no acks, nothing on the sending side
#    but ssh. Then the same with the sender's SHA-256 of the source
#    running at once on this machine (`sha256sum`), as a sender that
#    checks what it sends must. Rounds alternate, medians reported.
# 2. One ssh login's client CPU with ssh's default key exchange beside
#    curve25519-sha256 alone: what a rekey in a long transfer costs and
#    what every fleet host costs before any command runs. (econtext never
#    overrides ssh's choice; this only shows where the time goes.)
#
# Uses peer-bench's sshd on 127.0.0.1:2222 (setup.sh starts it).
# Usage: benches/ssh_floor.sh [ROUNDS]   (default 5)
set -euo pipefail
R=${1:-5}
HERE=$(cd "$(dirname "$0")/.." && pwd)
PB=${PEER_BENCH:-$HERE/../shared/peer-bench}
K=/tmp/mitobench/ssh/id
[ -f /tmp/mitobench/ssh/sshd_config ] || bash "$PB/setup.sh" >/dev/null
pgrep -f 'sshd -f /tmp/mitobench/ssh/sshd_config' >/dev/null ||
  /usr/sbin/sshd -f /tmp/mitobench/ssh/sshd_config
PY=/usr/bin/python3
D=$(mktemp -d /tmp/ssh-floor.XXXXXX)
trap 'rm -rf "$D"' EXIT
SSH=(ssh -i "$K" -p 2222 -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null
     -o LogLevel=ERROR -o BatchMode=yes root@127.0.0.1)
head -c $((256 << 20)) /dev/urandom > "$D/big"
cat "$D/big" > /dev/null
cat > "$D/recv.py" <<'EOF'
import fcntl, hashlib, os, sys
try:
    fcntl.fcntl(0, 1031, 1 << 20)  # F_SETPIPE_SZ
except OSError:
    pass
h = hashlib.sha256() if sys.argv[2] == 'hash' else None
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
buf = bytearray(1 << 20)
mv = memoryview(buf)
while True:
    n = os.readv(0, [buf])
    if not n:
        break
    if h:
        h.update(mv[:n])
    os.write(fd, mv[:n])
EOF
secs() { local t0 t1; t0=$(date +%s.%N); "$@" >/dev/null; t1=$(date +%s.%N); awk "BEGIN { print $t1 - $t0 }"; }
cat_() { "${SSH[@]}" "cat > $D/out" < "$D/big"; }
nohash() { "${SSH[@]}" "$PY -S $D/recv.py $D/out none" < "$D/big"; }
hash_() { "${SSH[@]}" "$PY -S $D/recv.py $D/out hash" < "$D/big"; }
both() { sha256sum "$D/big" >/dev/null & "${SSH[@]}" "$PY -S $D/recv.py $D/out hash" < "$D/big"; wait; }
: > "$D/t"
for r in $(seq 1 "$R"); do
  for f in cat_ nohash hash_ both; do echo "$f $(secs $f)" >> "$D/t"; done
done
login_cpu() {  # user+sys CPU seconds of one ssh client, median of 5
  for _ in 1 2 3 4 5; do
    /usr/bin/time -f '%U %S' -o "$D/cpu" "${SSH[@]}" "$@" true
    awk '{print $1 + $2}' "$D/cpu"
  done | sort -n | sed -n 3p
}
python3 - "$D/t" "$(login_cpu)" "$(login_cpu -o KexAlgorithms=curve25519-sha256)" <<'PY'
import statistics as st, sys
rows = {}
for line in open(sys.argv[1]):
    k, v = line.split()
    rows.setdefault(k, []).append(float(v))
names = {'cat_': "ssh 'cat > f'", 'nohash': 'python receiver, no hash',
         'hash_': 'python receiver + SHA-256', 'both': '+ sender SHA-256 at once'}
base = st.median(rows['cat_'])
print('256 MiB over ssh, connect included (%d rounds, medians)' % len(rows['cat_']))
for k in ('cat_', 'nohash', 'hash_', 'both'):
    m = st.median(rows[k])
    print('  %-28s %6.3f s  %5.2fx   (%s)' % (names[k], m, m / base,
                                          ' '.join('%.2f' % x for x in rows[k])))
print('one ssh login, client CPU: default kex %.3f s, curve25519-sha256 %.3f s'
      % (float(sys.argv[2]), float(sys.argv[3])))
PY
