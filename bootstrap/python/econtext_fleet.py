"""econtext.fleet: what `econtext run` and the fleet CLI call in a context.

run(argv) runs a command (through /bin/sh -c when given one string, else
exec'd directly) with stdin from /dev/null and returns its exit status,
stdout, stderr and the interpreter that ran it, in one reply.
interpreter() names that interpreter (for the fleet's report of what
interpreter discovery chose).
"""
import os
import subprocess
import sys


def interpreter():
    return sys.executable


def run(argv):
    if not argv:
        raise ValueError('empty command')
    if len(argv) == 1:
        argv = ['/bin/sh', '-c', argv[0]]
    null = open(os.devnull, 'rb')
    try:
        p = subprocess.Popen(argv, stdin=null, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, close_fds=True)
        out, err = p.communicate()
    finally:
        null.close()
    rc = p.returncode
    if rc < 0:
        rc = 128 - rc  # killed by a signal: the shell's convention
    return {'rc': rc, 'stdout': out, 'stderr': err, 'python': sys.executable}
