# Child-side helpers for HostileTest: arm reply handles as the core's own
# waiters do, and report what reached them.
import econtext.core as c

_got = {}


def arm_reply(awaited):
    # A one-shot handle awaiting a reply from context `awaited`.
    box = []
    h = c.router.add_handler(lambda src, rt, obj: _got.setdefault(box[0], []).append([src, obj]),
                             persist=False, accept=awaited)
    box.append(h)
    return h


def replies(h):
    return _got.get(h, [])


def armed(h):
    return h in c.router.handlers


def refused():
    return sorted([k, v] for k, v in c.router.refused.items())


def handle_samples(n):
    hs = [c.router.add_handler(lambda *a: None, persist=False) for _ in range(n)]
    for h in hs:
        c.router.del_handler(h)
    return hs


def routes():
    return sorted([k, v] for k, v in c.router.routes.items())


_rx = {}


def open_receiver(accept=None, in_thread=False):
    # A Receiver as user code makes one: by default it accepts its peer
    # (our caller). in_thread: made outside any call (its peer: our parent).
    box = []

    def make():
        r = c.Receiver() if accept is None else c.Receiver(accept=accept)
        _rx[r.handle] = r
        box.append(r.handle)
    if in_thread:
        import threading
        c.router.caller, saved = None, c.router.caller
        try:
            t = threading.Thread(target=make)
            t.start()
            t.join()
        finally:
            c.router.caller = saved
    else:
        make()
    return box[0]


def received(h, timeout):
    # What reached the Receiver, in order, until nothing came for `timeout`.
    out = []
    while True:
        x = _rx[h].get(timeout)
        if x is None:
            return out
        out.append(x)
