"""econtext.fleet: what `econtext run` and the fleet CLI call in a context.

run(argv) runs a command (through /bin/sh -c when given one string, else
exec'd directly) with stdin from /dev/null and returns its exit status,
stdout, stderr and the interpreter that ran it, in one reply.
interpreter() names that interpreter (for the fleet's report of what
interpreter discovery chose).

On Python 3.8+ the command starts with os.posix_spawn and its output is
read with select, both already loaded by the core: `import subprocess`
(signal, locale, re, enum, collections, functools...) costs more CPU than
the rest of a fleet host's call (24 ms of a ~60 ms Python side on 3.11),
on every host. Older interpreters use subprocess.
"""
import os
import select
import sys


def interpreter():
    return sys.executable


def run(argv):
    if not argv:
        raise ValueError('empty command')
    if len(argv) == 1:
        argv = ['/bin/sh', '-c', argv[0]]
    if hasattr(os, 'posix_spawn'):
        rc, out, err = _spawn_and_read(argv)
    else:
        rc, out, err = _with_subprocess(argv)
    return {'rc': rc, 'stdout': out, 'stderr': err, 'python': sys.executable}


def _status(rc):
    # killed by a signal: the shell's convention (128 + N)
    if rc < 0:
        return 128 - rc
    return rc


def _default_sigpipe():
    import signal
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)


def _with_subprocess(argv):
    import subprocess
    null = open(os.devnull, 'rb')
    # Python 2's subprocess has no restore_signals.
    pre = _default_sigpipe if sys.version_info[0] < 3 else None
    try:
        p = subprocess.Popen(argv, stdin=null, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, close_fds=True,
                             preexec_fn=pre)
        out, err = p.communicate()
    finally:
        null.close()
    return _status(p.returncode), out, err


def _spawn_and_read(argv):
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    try:
        # The child gets /dev/null, the two pipes and nothing else: every
        # fd Python opened is non-inheritable already; any inherited one
        # the core holds is closed for the child.
        actions = [
            (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
            (os.POSIX_SPAWN_DUP2, out_w, 1),
            (os.POSIX_SPAWN_DUP2, err_w, 2),
        ]
        for fd in _inheritable_fds():
            actions.append((os.POSIX_SPAWN_CLOSE, fd))
        spawn = os.posix_spawn if '/' in argv[0] else os.posix_spawnp
        pid = spawn(argv[0], argv, os.environ, file_actions=actions,
                    setsigdef=_ignored_by_python())
    except BaseException:
        for fd in (out_r, err_r):
            os.close(fd)
        raise
    finally:
        os.close(out_w)
        os.close(err_w)
    chunks = {out_r: [], err_r: []}
    try:
        _read_until_eof(chunks)
    finally:
        for fd in chunks:
            os.close(fd)
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        rc = 128 + os.WTERMSIG(status)
    else:
        rc = os.WEXITSTATUS(status)
    return rc, b''.join(chunks[out_r]), b''.join(chunks[err_r])


def _ignored_by_python():
    # Python ignores SIGPIPE and SIGXFSZ; a command gets them back at
    # their default, as subprocess's restore_signals does. `_signal` is
    # loaded already (`signal` would import enum).
    import _signal
    return [getattr(_signal, n) for n in ('SIGPIPE', 'SIGXFSZ')
            if hasattr(_signal, n)]


def _read_until_eof(chunks):
    """Reads every fd of `chunks` (a dict fd -> list) until EOF."""
    open_fds = list(chunks)
    while open_fds:
        try:
            ready, _, _ = select.select(open_fds, [], [])
        except InterruptedError:
            continue
        for fd in ready:
            data = os.read(fd, 65536)
            if data:
                chunks[fd].append(data)
            else:
                open_fds.remove(fd)


def _inheritable_fds():
    """fds above 2 a spawned child would inherit (an fd passed to the
    core at start, say)."""
    try:
        names = os.listdir('/proc/self/fd')
    except OSError:
        return []
    fds = []
    for name in names:
        fd = int(name)
        if fd <= 2:
            continue
        try:
            if os.get_inheritable(fd):
                fds.append(fd)
        except OSError:
            pass  # the listdir's own fd, closed by now
    return fds
