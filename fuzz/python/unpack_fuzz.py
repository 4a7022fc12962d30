# The Python side of econtext-fuzz's `python` target: reads batches of
# inputs on stdin, runs the Python core's unpack() on each, and answers
# one line per batch. MsgError is the only accepted failure: anything
# else (another exception, a crash) is a finding, reported with the input.
#   batch:  u32 count, then count x (u32 length, bytes), big-endian
#   answer: "ok <outcomes>\n" or "FAIL <hex input>\n<traceback>" and exit 1
import os
import struct
import sys
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(HERE)), 'bootstrap', 'python'))
import econtext_core as core  # noqa: E402

stdin = getattr(sys.stdin, 'buffer', sys.stdin)
stdout = getattr(sys.stdout, 'buffer', sys.stdout)


def read(n):
    b = stdin.read(n)
    if len(b) != n:
        sys.exit(0)
    return b


while True:
    count, = struct.unpack('>I', read(4))
    kinds = set()
    for _ in range(count):
        n, = struct.unpack('>I', read(4))
        data = read(n)
        try:
            v = core.unpack(data)
            # What we accept, we can send back, and it decodes the same
            # (compared as bytes: NaN != NaN; Python 3 only: Python 2 sends
            # UTF-8 bin back as str, by design).
            if core.PY3 and core.pack(core.unpack(core.pack(v))) != core.pack(v):
                raise AssertionError('re-packed value differs')
            kinds.add(type(v).__name__)
        except core.MsgError as e:
            kinds.add(str(e)[:20])
        except Exception:
            stdout.write(b'FAIL ' + data.hex().encode() if hasattr(data, 'hex')
                         else b'FAIL ' + data.encode('hex'))
            stdout.write(b'\n' + traceback.format_exc().encode('utf-8', 'replace'))
            stdout.flush()
            sys.exit(1)
    stdout.write(('ok %d\n' % len(kinds)).encode('ascii'))
    stdout.flush()
