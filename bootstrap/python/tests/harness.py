# A small test master for the Python core: bootstraps a child exactly as
# the Rust master does (first stage, EC0, size line + zlib payload, EC1) and
# then speaks frames to it. Runs under Python 2.7 and 3.6+, stdlib only.
#
#   python harness.py bench [CHILD_PYTHON]   prints the budget numbers
import base64
import io
import os
import socket
import subprocess
import sys
import threading
import time
import tokenize
import zlib

HERE = os.path.dirname(os.path.abspath(__file__))
PYDIR = os.path.dirname(HERE)
sys.path.insert(0, PYDIR)
import econtext_core as core  # noqa: E402  (the codec and Stream are shared)

try:
    import Queue as queue
except ImportError:
    import queue

CORE_PATH = os.path.join(PYDIR, 'econtext_core.py')
FIRST_STAGE_PATH = os.path.join(PYDIR, 'first_stage.py')
SERVED = os.path.join(HERE, 'served')


def minimize(src):
    # Blanks comments and docstrings in place (keeping every line), then
    # strips trailing whitespace: line numbers in tracebacks stay true.
    lines = io.StringIO(src if isinstance(src, type(u'')) else src.decode('utf-8')).readlines()
    out = [list(l) for l in lines]
    kill = []
    prev = tokenize.NEWLINE
    toks = list(tokenize.generate_tokens(io.StringIO(u''.join(lines)).readline))
    for i, t in enumerate(toks):
        typ = t[0]
        if typ == tokenize.COMMENT:
            kill.append((t[2], t[3]))
        elif typ == tokenize.STRING and prev in (tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT) \
                and i + 1 < len(toks) and toks[i + 1][0] in (tokenize.NEWLINE, tokenize.ENDMARKER):
            kill.append((t[2], t[3]))
        if typ not in (tokenize.NL, tokenize.COMMENT):
            prev = typ
    for (sr, sc), (er, ec) in kill:
        for r in range(sr, er + 1):
            row = out[r - 1]
            a = sc if r == sr else 0
            b = ec if r == er else len(row)
            for c in range(a, b):
                if row[c] != '\n':
                    row[c] = ' '
    text = u''.join(u''.join(r).rstrip() + u'\n' for r in out)
    return text


_CORE = []


def core_source():
    if not _CORE:
        with open(CORE_PATH, 'rb') as f:
            _CORE.append(minimize(f.read().decode('utf-8')))
    return _CORE[0]


def compressed_core_size():
    return len(zlib.compress(core_source().encode('utf-8'), 9))


def first_stage_argv(python, name):
    with open(FIRST_STAGE_PATH, 'rb') as f:
        src = f.read()
    b64 = base64.b64encode(zlib.compress(src, 9)).decode('ascii')
    # As bootstrap/src/first_stage.rs: -S, binascii (base64 imports re),
    # and the name in N, outside the compressed source.
    return [python, '-S', '-c',
            "import binascii,zlib;N='%s';exec(zlib.decompress(binascii.a2b_base64('%s')))" % (name, b64)]


def config_literal(cfg):
    # A Python dict literal both Pythons parse; what the Rust side emits.
    items = []
    for k in sorted(cfg):
        v = cfg[k]
        if isinstance(v, (list, tuple)):
            v = '[%s]' % ', '.join('%d' % x for x in v)
        elif isinstance(v, int):
            v = '%d' % v
        else:
            v = "'%s'" % v
        items.append("'%s': %s" % (k, v))
    return '{%s}' % ', '.join(items)


def load_served(root=SERVED):
    # {fullname: [fullname, filename, is_package, zsource, children]}
    mods = {}
    for dirpath, dirs, files in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        pkg = '' if rel == '.' else rel.replace(os.sep, '.')
        for fn in files:
            if not fn.endswith('.py'):
                continue
            path = os.path.join(dirpath, fn)
            with open(path, 'rb') as f:
                src = f.read()
            if fn == '__init__.py':
                name, is_pkg = pkg, True
                children = sorted([x[:-3] for x in files if x.endswith('.py') and x != '__init__.py'] +
                                  [d for d in dirs if os.path.exists(os.path.join(dirpath, d, '__init__.py'))])
            else:
                name = (pkg + '.' if pkg else '') + fn[:-3]
                is_pkg, children = False, []
            # Like the Rust master: Requires-Python (unknown here) and
            # the version of the Python the served files are for (ours).
            mods[name] = [name, 'master:' + path, is_pkg, zlib.compress(src, 9), children,
                          u'', u'%d.%d.%d' % sys.version_info[:3]]
    return mods


class DeadError(Exception):
    pass


class _NoBroker(object):
    # core.Stream.disconnect() unregisters from the core's broker global.
    def del_reader(self, fd):
        pass

    def hold(self, stream):
        pass  # the test flushes held frames itself


class Child(object):
    # One bootstrapped child plus the master-side router for its stream.
    id = 0
    max_size = 128 * 1024 * 1024

    def __init__(self, python=None, name='test', context_id=1, log_level=10,
                 modules=None, related=None, timeout=30.0, spin_us=None):
        core.broker = _NoBroker()
        self.python = python or sys.executable
        self.context_id = context_id
        self.key = os.urandom(20)
        self.modules = load_served() if modules is None else modules
        self.related = related or {}
        self.module_requests = []
        # Names answered with a CallError (a parent's service refusing).
        self.refused_modules = {}
        self.logs = []
        self.stderr_lines = []
        self.waiters = {}
        self.callbacks = {}
        self.next_handle = 1000
        self.lock = threading.Lock()
        self.log_event = threading.Condition()
        self.closed = threading.Event()
        t0 = time.time()
        a, b = socket.socketpair()
        self.proc = subprocess.Popen(first_stage_argv(self.python, name), stdin=b, stdout=b,
                                     stderr=subprocess.PIPE, close_fds=True, cwd='/')
        b.close()
        self.sock = a
        self.fd = a.fileno()
        threading.Thread(target=self._stderr_loop).start()
        self._expect(b'EC0\n', timeout)
        cfg = {'context_id': context_id, 'parent_id': 0, 'name': name,
               'key': base64.b16encode(self.key).decode('ascii').lower(),
               'log_level': log_level, 'max_message_size': self.max_size, 'ancestors': [0]}
        if spin_us is not None:  # else the core's default
            cfg['spin_us'] = spin_us
        payload = core_source() + u'\nmain(%s)\n' % config_literal(cfg)
        z = zlib.compress(payload.encode('utf-8'), 9)
        a.sendall(('%d\n' % len(z)).encode('ascii') + z)
        self._expect(b'EC1\n', timeout)
        self.connect_time = time.time() - t0
        self.stream = core.Stream(self, context_id, os.dup(self.fd), os.dup(self.fd), self.key, down=True)
        self.reader = threading.Thread(target=self._read_loop)
        self.reader.daemon = True
        self.reader.start()

    def _expect(self, want, timeout):
        # `want` exactly, except that EC0 may follow the first stage's
        # `ECT <cache_tag> <magic>` line (docs/PROTOCOL.md), which is skipped.
        got = b''
        self.sock.settimeout(timeout)
        try:
            while len(got) < len(want) or (got.startswith(b'ECT ') and not got.endswith(want)):
                s = self.sock.recv(1 if got.startswith(b'ECT ') else len(want) - len(got))
                if not s or len(got) > 200:
                    break
                got += s
        except socket.timeout:
            pass
        self.sock.settimeout(None)
        if got.startswith(b'ECT ') and got.endswith(want) and got.count(b'\n') == 2:
            got = want
        if got != want:
            time.sleep(0.2)
            raise AssertionError('expected %r, got %r; stderr: %s' % (want, got, self.stderr_lines[-20:]))

    def _stderr_loop(self):
        for line in iter(self.proc.stderr.readline, b''):
            self.stderr_lines.append(line.decode('utf-8', 'replace').rstrip('\n'))
        self.proc.stderr.close()

    def _read_loop(self):
        while not self.stream.closed:
            self.stream.on_read()

    # The router interface core.Stream calls back into.
    def route(self, dst, src, handle, reply_to, data, via=None):
        if handle == core.FORWARD_LOG:
            with self.log_event:
                self.logs.append(core.unpack(data))
                self.log_event.notify_all()
        elif handle == core.GET_MODULE:
            name = core.unpack(data)
            self.module_requests.append(name)
            rec = self.modules.get(name)
            reply = self.refused_modules.get(name)
            if rec is not None:
                reply = [rec] + [self.modules[r] for r in self.related.get(name, ())]
            self.send(reply_to, reply)
        else:
            self.frames_in = getattr(self, 'frames_in', 0) + 1
            cb = self.callbacks.get(handle)
            if cb is not None:
                return cb(data)
            q = self.waiters.pop(handle, None)
            if q is not None:
                q.put(core.unpack(data))

    def on_disconnect(self, stream):
        self.closed.set()
        for h, q in list(self.waiters.items()):
            q.put(core.Dead(u'child disconnected'))

    def alloc(self):
        with self.lock:
            h = self.next_handle
            self.next_handle += 1
        return h

    def send(self, handle, obj, reply_to=0, src=0, dst=None, raw=None):
        self.stream.send(self.context_id if dst is None else dst, src, handle, reply_to,
                         raw if raw is not None else core.packl(obj))

    def request(self, handle, obj, timeout=30.0, **kw):
        h = self.alloc()
        q = self.waiters[h] = queue.Queue()
        self.send(handle, obj, reply_to=h, **kw)
        try:
            return q.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError('no reply within %ss; stderr: %s' % (timeout, self.stderr_lines[-20:]))

    def call(self, module, function, *args, **kwargs):
        cls = kwargs.pop('_cls', None)
        timeout = kwargs.pop('_timeout', 30.0)
        v = self.request(core.CALL_FUNCTION, [module, cls, function, list(args), kwargs], timeout)
        if isinstance(v, core.CallError):
            raise v
        if isinstance(v, core.Dead):
            raise DeadError(v.reason)
        return v

    def wait_log(self, pred, timeout=10.0):
        end = time.time() + timeout
        with self.log_event:
            while True:
                for rec in self.logs:
                    if pred(rec):
                        return rec
                left = end - time.time()
                if left <= 0:
                    return None
                self.log_event.wait(left)

    def wait_exit(self, timeout=10.0):
        end = time.time() + timeout
        while time.time() < end:
            rc = self.proc.poll()
            if rc is not None:
                return rc
            time.sleep(0.01)
        return None

    def shutdown(self):
        try:
            self.send(core.SHUTDOWN, None)
        except Exception:
            pass
        rc = self.wait_exit(5)
        self.close()
        return rc

    def close(self):
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except Exception:
            pass
        if self.wait_exit(5) is None:
            self.proc.kill()
            self.proc.wait()
        self.reader.join(5)
        self.sock.close()


def rss_kib(pid):
    with open('/proc/%d/status' % pid) as f:
        for line in f:
            if line.startswith('VmRSS:'):
                return int(line.split()[1])


def baseline(python):
    # What the interpreter costs by itself here (site, .pth files...), to
    # tell the core's share of connect time and RSS from Python's.
    best = None
    for _ in range(3):
        t = time.time()
        subprocess.call([python, '-c', 'pass'])
        best = min(best or 1e9, time.time() - t)
    p = subprocess.Popen([python, '-c', 'import time; time.sleep(0.5)'])
    time.sleep(0.3)
    rss = rss_kib(p.pid)
    p.wait()
    return best * 1000, rss


def micro(n=20000):
    # Child-side CPU per call, in this interpreter: decode a request,
    # dispatch it, encode and seal the reply, parse and verify a frame.
    req = core.pack(['os', None, 'getpid', [], {}])
    msg = core.unpack(req)
    r, w = os.pipe()
    sink = type('S', (), {'id': 0, 'max_size': 1 << 30, 'route': lambda *a: None})()
    up = core.Stream(sink, 0, os.dup(r), w, b'k')
    down = core.Stream(sink, 1, r, os.dup(w), b'k', down=True)
    t = time.time()
    for _ in range(n):
        core.unpack(req)
        core._call(msg)
    t1 = time.time()
    for _ in range(1000):
        up.send(0, 1, 1000, 0, core.packl(1234))
        up.send(0, 1, 1000, 0, core.packl(1234))
        down.on_read()
    t2 = time.time()
    for fd in (r, w, up.rfd, down.wfd):
        os.close(fd)
    return (t1 - t) / n * 1e6, (t2 - t1) / 2000 * 1e6


def bench(python=None, out=sys.stdout):
    python = python or sys.executable
    res = {'core_zlib_bytes': compressed_core_size()}
    res['baseline_python_start_ms'], res['baseline_python_rss_kib'] = baseline(python)
    res['micro_decode_call_us'], res['micro_frame_send_recv_us'] = micro()
    t0 = time.time()
    c = Child(python, log_level=30)
    c.call('os', 'getpid')
    res['connect_first_call_ms'] = (time.time() - t0) * 1000
    res['child_rss_kib_idle'] = rss_kib(c.proc.pid)
    for _ in range(200):
        c.call('os', 'getpid')
    ts = []
    for _ in range(2000):
        t = time.time()
        c.call('os', 'getpid')
        ts.append(time.time() - t)
    ts.sort()
    res['roundtrip_median_us'] = ts[len(ts) // 2] * 1e6
    # 10,000 calls in flight: replies counted by a callback.
    n = 10000
    done = threading.Event()
    count = [0]

    def cb(data):
        count[0] += 1
        if count[0] == n:
            done.set()
    hs = [c.alloc() for _ in range(n)]
    for h in hs:
        c.callbacks[h] = cb
    msg = core.pack(['os', None, 'getpid', [], {}])
    t = time.time()
    for h in hs:
        c.send(core.CALL_FUNCTION, None, reply_to=h, raw=msg)
    done.wait(120)
    res['calls_per_s'] = n / (time.time() - t)
    res['child_rss_kib_after_flood'] = rss_kib(c.proc.pid)
    # Echo: copy.copy returns its (immutable) argument, in every Python.
    blob = os.urandom(1024) * (64 * 1024)
    t = time.time()
    back = c.call('copy', 'copy', blob)
    res['echo_64MiB_MiBps'] = 64 / (time.time() - t)
    assert back == blob
    c.shutdown()
    for k in sorted(res):
        v = res[k]
        out.write('  %-24s %s\n' % (k, ('%.1f' % v) if isinstance(v, float) else v))
    return res


if __name__ == '__main__':
    if len(sys.argv) > 1 and sys.argv[1] == 'bench':
        py = sys.argv[2] if len(sys.argv) > 2 else sys.executable
        sys.stdout.write('bench, child %s:\n' % py)
        bench(py)
