#!/usr/bin/env python3
"""CPU of every process of a run, by what it was: `perf record` of the
scheduler's runtime, fork and exec events machine-wide, kept only for the
process trees under the given roots (sshd listeners, the command itself).

Each task's runtime is split at its execs, so `bash -> python3 -> python3`
(the login shell, the first stage, the re-executed core) shows as three
phases. Prints milliseconds per phase name, total and divided by --per
(hosts), sorted by total. Needs perf with tracepoints (root).

Usage: cpu_tree.py [--per N] [--root PID]... -- COMMAND [ARG...]
"""
import collections
import os
import re
import subprocess
import sys
import tempfile

EVENTS = ['sched:sched_stat_runtime', 'sched:sched_process_fork',
          'sched:sched_process_exec']
RUNTIME = re.compile(r'sched_stat_runtime: comm=(.*) pid=(\d+) runtime=(\d+)')
FORK = re.compile(r'sched_process_fork: comm=.* pid=(\d+) child_comm=(.*) child_pid=(\d+)')
EXEC = re.compile(r'sched_process_exec: filename=(\S+) pid=(\d+)')


def parse_args(argv):
    per, roots = 1, []
    while argv and argv[0] != '--':
        a = argv.pop(0)
        if a == '--per':
            per = int(argv.pop(0))
        elif a == '--root':
            roots.append(int(argv.pop(0)))
        else:
            sys.exit(__doc__)
    if not argv:
        sys.exit(__doc__)
    return per, roots, argv[1:]


def record(cmd, data, pidfile):
    args = ['perf', 'record', '-q', '-a', '-o', data]
    for e in EVENTS:
        args += ['-e', e]
    # The command's own pid, a root too: a shell that writes it and execs.
    wrap = ['sh', '-c', 'echo $$ > "$0"; exec "$@"', pidfile]
    return subprocess.call(args + ['--'] + wrap + cmd)


def phases(data, roots):
    """{phase name: ns} for the tasks under roots (and perf's child)."""
    out = subprocess.run(['perf', 'script', '-i', data], stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, universal_newlines=True).stdout
    inside = set(roots)
    phase = {}  # pid -> current phase name
    ns = collections.Counter()
    for line in out.splitlines():
        m = RUNTIME.search(line)
        if m:
            pid = int(m.group(2))
            if pid in inside:
                ns[phase.get(pid) or m.group(1)] += int(m.group(3))
            continue
        m = FORK.search(line)
        if m:
            parent, child = int(m.group(1)), int(m.group(3))
            if parent in inside:
                inside.add(child)
                # a forked process or a thread: named after its parent
                phase[child] = (phase.get(parent) or m.group(2)) + '+'
            continue
        m = EXEC.search(line)
        if m:
            pid = int(m.group(2))
            if pid in inside:
                prev = phase.get(pid, '')
                name = os.path.basename(m.group(1))
                phase[pid] = name + ('' if not prev.startswith(name) else "'")
    return ns


def main():
    per, roots, cmd = parse_args(sys.argv[1:])
    with tempfile.TemporaryDirectory() as d:
        data = os.path.join(d, 'perf.data')
        pidfile = os.path.join(d, 'pid')
        rc = record(cmd, data, pidfile)
        roots.append(int(open(pidfile).read()))
        ns = phases(data, roots)
    total = sum(ns.values())
    print('%-28s %10s %10s' % ('phase', 'total ms', 'ms/%d' % per if per > 1 else 'ms'))
    for name, v in ns.most_common():
        print('%-28s %10.1f %10.2f' % (name[:28], v / 1e6, v / 1e6 / per))
    print('%-28s %10.1f %10.2f' % ('TOTAL', total / 1e6, total / 1e6 / per))
    sys.exit(rc)


if __name__ == '__main__':
    main()
