# Served to test contexts by their master (tests/python_via.rs, tests/ssh.rs):
# small functions that reach econtext.core from user code.
import os
import time

import econtext.core as c

_got = []


def ids():
    return [c.context_id, c.parent_id, os.getpid(), os.getppid()]


def ppid_cmdline():
    p = os.getppid()
    with open('/proc/%d/cmdline' % p, 'rb') as f:
        return [os.getpid(), p, f.read().replace(b'\0', b' ').decode('utf-8', 'replace')]


def listen():
    # A handle here that records whatever arrives on it.
    return c.router.add_handler(lambda src, rt, obj: _got.append([src, obj]))


def got(n=1, timeout=10.0):
    end = time.time() + timeout
    while len(_got) < n and time.time() < end:
        time.sleep(0.01)
    return list(_got)


def send(dst, handle, obj):
    c.router.send(dst, handle, obj)
    return True


def ask(dst, handle, obj, timeout=10.0):
    # Sends with a reply handle and describes the reply.
    box = []
    h = c.router.add_handler(lambda src, rt, o: box.append(o), persist=False)
    c.router.send(dst, handle, obj, h)
    end = time.time() + timeout
    while not box and time.time() < end:
        time.sleep(0.01)
    if not box:
        return ['timeout']
    v = box[0]
    if isinstance(v, c.Dead):
        return ['dead', v.reason]
    if isinstance(v, c.CallError):
        return ['error', v.type, v.message]
    return ['value', v]


def spoof(dst, src, handle, obj):
    # A frame claiming another source (the parent must drop it).
    c.router.route(dst, src, handle, 0, c.packl(obj))
    return True


def spoof_in_batch(dst, src, handle, objs):
    # One batch frame up (one MAC): objs[0] and objs[2] from us, objs[1]
    # claiming src. The parent must drop that one and deliver the others.
    s, me = c.router.parent, c.router.id
    bodies = []
    for i, obj in enumerate(objs):
        data = c.pack(obj)
        bodies.append(c._FLD.pack(dst, i == 1 and src or me, handle, 0, len(data)) + data)
    size = sum(map(len, bodies))
    with s.wlock:
        s._close_batch()
        s.held.append(c._seal_batch(s.tx, bodies, len(bodies), size))
        s._write_held()
    return True


def trace(on=True):
    import econtext.parent as p
    return p.trace(on)


def traced():
    import econtext.parent as p
    return p.traced()


def call_child(cid, module, function, *args):
    import econtext.parent as p
    try:
        return ['value', p.call(cid, module, function, *args)]
    except EOFError as e:
        return ['dead', str(e)]


def stop():
    # This whole process stops (SIGSTOP): it reads nothing until SIGCONT.
    import signal
    os.kill(os.getpid(), signal.SIGSTOP)


def flood(dst, handle, n, size):
    # n frames of `size` bytes to (dst, handle), as fast as they go.
    blob = b'x' * size
    for i in range(n):
        try:
            c.router.send(dst, handle, blob)
        except Exception as e:
            return [i, repr(e)]
    return [n, None]


_held_fds = []


def hold_fds_past(n):
    # Opens pipes until an fd number passes n (an intermediate with many
    # children): select() refuses such fds. Returns the highest.
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < n + 64:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(max(n + 64, soft), hard), hard))
    while not _held_fds or _held_fds[-1] <= n:
        _held_fds.extend(os.pipe())
    return _held_fds[-1]
