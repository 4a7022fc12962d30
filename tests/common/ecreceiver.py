# Served to test contexts by tests/hostile.rs: a Receiver made by a call,
# as user code makes one (its peer: the caller), and hostile code in a
# sibling that writes into the Sender it was handed.
import econtext.core as c

_rx = {}


def open_receiver():
    r = c.Receiver()
    _rx[r.handle] = r
    return r.handle


def send_into(context_id, handle, value):
    # The hostile part: a message from this context into another's
    # Receiver, routed through the parent like any sibling's.
    c.Sender(context_id, handle).send(value)
    return True


def received(h, timeout):
    # What reached the Receiver, in order, until nothing came for `timeout`.
    out = []
    while True:
        x = _rx[h].get(timeout)
        if x is None:
            return out
        out.append(x)


def refused(src):
    return c.router.refused.get(src, 0)
