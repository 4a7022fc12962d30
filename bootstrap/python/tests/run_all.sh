#!/bin/sh
# Runs test_core.py with every installed CPython as both test master and
# child, then one cross run (master 3.11, child 2.7), and prints a summary.
# ECONTEXT_BENCH=0 skips the printed benchmark numbers.
cd "$(dirname "$0")" || exit 2
PYS="$(ls /root/.pyenv/versions/*/bin/python 2>/dev/null) /usr/bin/python3"
fail=0
summary=""
run() { # master child label
    log=$(mktemp)
    if CHILD_PYTHON="$2" "$1" test_core.py >"$log" 2>&1; then res=PASS; else res=FAIL; fail=1; fi
    ver=$("$2" -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])' 2>&1)
    line=$(grep -E '^(Ran|OK|FAILED)' "$log" | tr '\n' ' ')
    summary="$summary
$res  child $ver ($3)  $line"
    echo "=== $3: child $2 ($ver): $res"
    if [ $res = FAIL ]; then cat "$log"; else grep -E '^  [A-Za-z_0-9]+ ' "$log"; fi
    rm -f "$log"
}
for p in $PYS; do
    [ -x "$p" ] && run "$p" "$p" "master=child"
done
[ -x /root/.pyenv/versions/2.7.18/bin/python ] && ECONTEXT_BENCH=0 run /usr/bin/python3 /root/.pyenv/versions/2.7.18/bin/python "master 3.11, child 2.7"
echo
echo "Summary:$summary"
if [ $fail = 0 ]; then echo "ALL PASSED"; else echo "SOME FAILED"; fi
exit $fail
