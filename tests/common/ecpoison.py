# Served to test contexts by tests/importer.rs: the pieces of a module
# poisoning attack. A context holds its next GET_MODULE upward (a slow
# parent, simulated) so that the attacker knows the reply handle; another
# context forges the reply; then the real request goes out.
import sys
import threading
import time
import zlib

import econtext.core as c

_held = {}


def hold_next_module_request(name):
    real = c.router.send

    def send(dst, handle, obj, reply_to=0):
        if handle == c.GET_MODULE and obj == name and name not in _held:
            _held[name] = (real, dst, reply_to)
            return
        return real(dst, handle, obj, reply_to)
    c.router.send = send
    return True


def held_handle(name):
    end = time.time() + 10
    while name not in _held and time.time() < end:
        time.sleep(0.01)
    return _held[name][2]


def release(name):
    real, dst, h = _held[name]
    c.router.send = real
    real(dst, c.GET_MODULE, name, h)
    return True


def forge(dst, handle, name):
    # The attacker's reply: its own source under the victim's name.
    src = b"def who():\n    return 'attacker'\n"
    rec = [name, u'/evil/%s.py' % name, False, bytearray(zlib.compress(src)), []]
    c.router.send(dst, handle, [rec])
    return True


def refused():
    return sum(c.router.refused.values())


def import_in_background(name):
    threading.Thread(target=__import__, args=(name,)).start()
    return True


def who(name):
    # The module enters sys.modules before its body runs: wait until the
    # background import has finished executing it, not merely started.
    end = time.time() + 10
    while time.time() < end:
        mod = sys.modules.get(name)
        if mod is not None and hasattr(mod, 'who'):
            break
        time.sleep(0.01)
    return sys.modules[name].who()
