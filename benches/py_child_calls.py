# -*- coding: utf-8 -*-
# The Python child's CPU per call with calls in flight, without a master
# or threads: the IO thread's part (Stream.on_read over a socket holding N
# sealed CALL_FUNCTION frames of copy.copy(i)) then the main thread's
# (_dispatch answering them, replies held and written in batches), in one
# process, replies checked. Counts that do not depend on the machine:
#
#   python benches/py_child_calls.py N             CPU µs per call (rough)
#   python benches/py_child_calls.py N opcodes     bytecodes per call, by function (3.7+)
#   python benches/py_child_calls.py N lines       bytecodes per call, by source line (3.7+)
#   python benches/py_child_calls.py N setup       everything but the calls (callgrind's baseline)
#   python benches/py_child_calls.py N unchecked   the calls, replies not checked (for callgrind)
#   bash benches/py_child_calls.sh [PYTHON]        instructions per call (callgrind)
#
# The calls arrive as the master writes them: in batch frames of up to
# BATCH_MAX bytes (docs/PROTOCOL.md, "Batch frames"), or each alone with
# LONE=1 or a core without batches (what the master sent before them).
#
# docs/PERFORMANCE.md, "The Python child's CPU per call in flight".
import os
import socket
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.environ.get('CORE_DIR', os.path.join(HERE, '..', 'bootstrap', 'python')))
import econtext_core as core  # noqa: E402

N = int(sys.argv[1]) if len(sys.argv) > 1 else 20000
MODE = sys.argv[2] if len(sys.argv) > 2 else ''
KEY = b'k' * 20


class Broker(object):
    # What the stream and _dispatch need of the IO thread's broker.
    def __init__(self):
        self.held = set()

    def del_reader(self, fd):
        pass

    def hold(self, s):
        self.held.add(s)

    def _flush_held(self):
        while self.held:
            self.held.pop().flush()

    def lead(self, q):
        return q.get()

    off = False

    def quiet(self):
        pass

    def on(self):
        pass


BATCHED = hasattr(core, '_seal_batch') and not os.environ.get('LONE')


def calls(n):
    tx = core.Mac(KEY, b'\0')
    out, batch, size = [], [], 0
    for i in range(n):
        data = core.pack([u'copy', None, u'copy', [i], {}])
        f = core._FLD.pack(1, 0, core.CALL_FUNCTION, 1000 + i, len(data))
        if not BATCHED:
            out.append(tx([f, data], len(data)) + f + data)
            continue
        if size + 16 + len(data) > core.BATCH_MAX:
            out.append(core._seal_batch(tx, batch, len(batch) // 2, size))
            batch, size = [], 0
        batch += [f, data]
        size += 16 + len(data)
    if batch:
        out.append(core._seal_batch(tx, batch, len(batch) // 2, size))
    return b''.join(out)


def check(path, n):
    out = open(path, 'rb').read()
    rx, pos, k = core.Mac(KEY, b'\1'), 0, 0
    flags = getattr(core, 'BATCH', 0)
    while pos < len(out):
        h = core._HDR.unpack_from(out, pos)
        ln = h[5] & ~flags
        body = out[pos + 20:pos + 36 + ln]
        assert rx.one(body) == h[0]
        frames = [(h[3], body[16:])]
        if h[5] & flags:
            frames, p = [], 16
            while p < len(body):
                f = core._FLD.unpack_from(body, p)
                frames.append((f[2], body[p + 16:p + 16 + f[4]]))
                p += 16 + f[4]
        for handle, data in frames:
            assert core.unpack(data) == k and handle == 1000 + k
            k += 1
        pos += 36 + ln
    assert k == n, (k, n)


def main():
    import copy  # noqa: F401  (imported before counting, as a warm child has it)
    blob = calls(N)
    chunks = [blob[i:i + 65536] for i in range(0, len(blob), 65536)]
    core.broker = Broker()
    core.context_id, core.parent_id = 1, 0
    router = core.router = core.Router({'context_id': 1, 'parent_id': 0, 'name': 'b', 'ancestors': [0]})
    a, b = socket.socketpair()
    b.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
    path = '/tmp/py_child_calls.%d.out' % os.getpid()
    w = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    st = core.Stream(router, 0, a.fileno(), w, KEY)
    router.parent = router.streams[0] = st

    def run():
        for c in chunks:
            os.write(b.fileno(), c)
            st.on_read()
        core._HOLD.on = True
        router.calls.put(None)
        core._dispatch()

    clock = getattr(time, 'process_time', None) or time.clock
    counts = {}
    if MODE in ('opcodes', 'lines'):
        def trace(frame, event, arg):
            frame.f_trace_opcodes = True
            if event == 'opcode':
                k = frame.f_code.co_name
                if MODE == 'lines':
                    k = '%s:%s' % (k, frame.f_lineno)
                counts[k] = counts.get(k, 0) + 1
            return trace
        sys.settrace(trace)
    t0 = clock()
    if MODE != 'setup':  # the setup alone, for callgrind's baseline
        run()
    t1 = clock()
    sys.settrace(None)
    os.close(w)
    if MODE not in ('setup', 'unchecked', 'lines'):
        check(path, N)
    os.unlink(path)
    if counts:
        print('%.0f bytecodes per call' % (sum(counts.values()) / float(N)))
        for k, v in sorted(counts.items(), key=lambda x: -x[1])[:MODE == "lines" and 200 or 15]:
            print('%8.1f %s' % (v / float(N), k))
    else:
        print('%s: %.2f µs of CPU per call (%d calls)' % (sys.version.split()[0], (t1 - t0) * 1e6 / N, N))


main()
