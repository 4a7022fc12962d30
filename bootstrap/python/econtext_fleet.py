"""econtext.fleet: what `econtext run` and the fleet CLI call in a context.

run(argv) runs a command (through /bin/sh -c when given one string, else
exec'd directly) with stdin from /dev/null and returns its exit status,
stdout, stderr and the interpreter that ran it, in one reply.
interpreter() names that interpreter (for the fleet's report of what
interpreter discovery chose).

On Python 3.8+ the command starts with posix_spawn and its output is
read with select, both already loaded by the core (posix, not os: a lean
leaf never loads posix.py, whose imports cost it 1 ms): `import subprocess`
(signal, locale, re, enum, collections, functools...) costs more CPU than
the rest of a fleet host's call (24 ms of a ~60 ms Python side on 3.11),
on every host. Older interpreters use subprocess.
"""
import posix
import select
import sys


def interpreter():
    return sys.executable


def run(argv):
    if not argv:
        raise ValueError('empty command')
    if len(argv) == 1:
        argv = ['/bin/sh', '-c', argv[0]]
    if hasattr(posix, 'posix_spawn'):
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
    null = open('/dev/null', 'rb')
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
    out_r, out_w = posix.pipe()
    err_r, err_w = posix.pipe()
    try:
        # The child gets /dev/null, the two pipes and nothing else: every
        # fd Python opened is non-inheritable already; any inherited one
        # the core holds is closed for the child.
        actions = [
            (posix.POSIX_SPAWN_OPEN, 0, '/dev/null', posix.O_RDONLY, 0),
            (posix.POSIX_SPAWN_DUP2, out_w, 1),
            (posix.POSIX_SPAWN_DUP2, err_w, 2),
        ]
        for fd in _inheritable_fds():
            actions.append((posix.POSIX_SPAWN_CLOSE, fd))
        spawn = posix.posix_spawn if '/' in argv[0] else posix.posix_spawnp
        pid = spawn(argv[0], argv, _environ(), file_actions=actions,
                    setsigdef=_ignored_by_python())
    except BaseException:
        for fd in (out_r, err_r):
            posix.close(fd)
        raise
    finally:
        posix.close(out_w)
        posix.close(err_w)
    chunks = {out_r: [], err_r: []}
    try:
        _read_until_eof(chunks)
    finally:
        for fd in chunks:
            posix.close(fd)
    _, status = posix.waitpid(pid, 0)
    if posix.WIFSIGNALED(status):
        rc = 128 + posix.WTERMSIG(status)
    else:
        rc = posix.WEXITSTATUS(status)
    return rc, b''.join(chunks[out_r]), b''.join(chunks[err_r])


def _environ():
    # os.environ once something has loaded os (it may have changed it);
    # until then the process's own, which is posix's.
    os = sys.modules.get('os')
    return os.environ if os else posix.environ


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
            data = posix.read(fd, 65536)
            if data:
                chunks[fd].append(data)
            else:
                open_fds.remove(fd)


def _inheritable_fds():
    """fds above 2 a spawned child would inherit (an fd passed to the
    core at start, say)."""
    try:
        names = posix.listdir('/proc/self/fd')
    except OSError:
        return []
    fds = []
    for name in names:
        fd = int(name)
        if fd <= 2:
            continue
        try:
            if posix.get_inheritable(fd):
                fds.append(fd)
        except OSError:
            pass  # the listdir's own fd, closed by now
    return fds
