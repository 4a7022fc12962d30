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
