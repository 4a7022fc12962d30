# econtext.files: the file service of a Python context.
#
# The master serves this module built in; a context imports it through
# GET_MODULE the first time the master pushes or pulls a file, so it costs
# the core's startup nothing. docs/PROTOCOL.md, "Files", is the contract.
#
# - recv_begin(): this context receives a transfer (a push): it checks the
#   destination, answers with a data handle and what it can resume, and a
#   writer thread puts each file into a temporary file in its destination
#   directory; the last chunk carries the sender's SHA-256, and the file is
#   then fsynced (by a small pool: journal commits are shared) and renamed
#   over the destination with its mode, mtime and (as root) owner.
# - send_begin(): this context sends files (a pull): it answers with the
#   manifest and an ack handle; a reader thread streams once the receiver
#   says where to resume.
# - relay: recv_begin() with opts['relay'] forwards one incoming stream to
#   several of our children at once, acking upward at the pace of the
#   slowest, so the data crosses the link above us once.
#
# Chunks travel as bulk frames (core.Bulk): the frame MAC covers
# [D_BULK, index, offset, sha256, last] only, where sha256 is the file's
# digest from its start through the chunk; the receiver hashes the chunk
# into its running SHA-256, compares, and only then writes it. One hash
# pass per byte on each side instead of two (HMAC-SHA1 and SHA-256).
#
# Flow control: the sender keeps at most `window` bytes of chunk data
# unacknowledged; the receiver acks what it has written. Memory on every
# hop is bounded by the window, whatever the file size.
from __future__ import absolute_import

import errno
import fcntl
import hashlib
import os
import stat
import struct
import sys
import threading
import time

import econtext.core as core
from econtext.core import CALL_FUNCTION, CallError, Dead, Sender, _Queue, _text

router = core.router
F_FILE, F_DIR, F_LINK = 0, 1, 2
# Data messages (sender -> receiver's data handle). D_BULK: a bulk frame's
# covered part (a chunk); D_CHUNK: a chunk in an ordinary frame (accepted).
D_CHUNK, D_BULK, D_FAIL, D_END = 0, 1, 2, 3
# Ack messages (receiver -> sender's ack handle).
A_CREDIT, A_ERROR, A_DONE, A_START = 0, 1, 2, 5
CHUNK = 262144
WINDOW = 1 << 20
# Finishers of a tree: concurrent fsyncs share journal commits (32 beat 8
# here: 1,000 files of 4 KiB fsynced in 0.06-0.10 s against 0.12-0.28 s).
FINISHERS = 32
# With fsync, writeback of each file starts every WRITEBACK_STEP bytes
# (posix_fadvise DONTNEED starts it without waiting), so the final fsync
# has little left and the disk works while data still arrives.
WRITEBACK_STEP = 8 << 20
_fadvise = getattr(os, 'posix_fadvise', None)  # Python 3.3+
# The pipes to our parent (sshd's, over ssh) hold 64 KiB by default: a
# 256 KiB chunk took four reads here and four writes there, each a
# wake-up. Grown once, at the first transfer; a socketpair (a local
# child) is left alone.
PIPE_SIZE = 1 << 20
_F_SETPIPE_SZ = getattr(fcntl, 'F_SETPIPE_SZ', 1031)  # Linux's value
_piped = []
# Temporaries of a transfer that was never resumed: see _sweep().
PART_MAX_AGE = 86400
PY3 = core.PY3
_stats = {u'bytes_in': 0, u'bytes_out': 0, u'files_in': 0, u'files_out': 0, u'relayed': 0,
          u'fsynced': 0}


# Counted from the writer, finisher and sender threads of every transfer
# at once: `d[k] += n` is not atomic, so each goes through _count.
_stats_lock = threading.Lock()


def _count(key, n=1):
    with _stats_lock:
        _stats[key] += n


def stats():
    with _stats_lock:
        return dict(_stats)


def _kind(e):
    n = getattr(e, 'errno', None)
    if n == errno.ENOENT:
        return u'not_found'
    if n in (errno.EACCES, errno.EPERM, errno.EROFS):
        return u'permission_denied'
    if n in (errno.ENOSPC, getattr(errno, 'EDQUOT', -1)):
        return u'no_space'
    if n == errno.EISDIR:
        return u'is_a_directory'
    if n == errno.ENOTDIR:
        return u'not_a_directory'
    return u'io'


def _err(kind, path, msg):
    return [kind, _text(path), _text(msg)]


def _join(root, rel):
    return os.path.join(root, rel) if rel else root


def _tmp_name(path, key):
    d, b = os.path.split(path)
    return os.path.join(d, b'.' + b + b'.ec-' + key.encode('ascii') + b'.part')


def _part(n):
    # A temporary's name, `.<name>.ec-<key>.part` (key: 1-64 ASCII letters
    # and digits), as (name, key); None for any other name. By hand, not
    # with re: importing re (and enum) cost the first transfer milliseconds.
    if not (n.startswith(b'.') and n.endswith(b'.part')):
        return None
    i = n.rfind(b'.ec-', 0, len(n) - 5)
    key = n[i + 4:-5]
    if i < 2 or not 1 <= len(key) <= 64 or not key.isalnum() or \
            [c for c in bytearray(key) if c > 127]:
        return None
    return n[1:i], key


def _sweep(dirs):
    # The rule for stale temporaries (docs/PROTOCOL.md, "Files"): when a
    # transfer starts writing into a directory, a temporary there for one
    # of its destinations with another key is deleted (its source changed
    # since: it can never be resumed), and any other temporary untouched
    # for PART_MAX_AGE is deleted (an interrupted transfer nobody reran).
    # `dirs`: {directory: {destination name: this transfer's key}}.
    now = time.time()
    for d, names in dirs.items():
        try:
            listing = os.listdir(d)
        except EnvironmentError:
            continue
        for n in listing:
            m = _part(n)
            if not m:
                continue
            p = os.path.join(d, n)
            try:
                st = os.lstat(p)
                if stat.S_ISDIR(st.st_mode):
                    continue
                mine = names.get(m[0])
                if (m[1] != mine) if mine is not None else (now - st.st_mtime > PART_MAX_AGE):
                    os.unlink(p)
            except EnvironmentError:
                pass


def _safe(rel):
    # The master is trusted, but a wrong path must not escape the root.
    parts = rel.split(b'/') if rel else []
    return b'\0' not in rel and not rel.startswith(b'/') and not [
        p for p in parts if p in (b'', b'.', b'..')]


_B1 = struct.Struct('B')
_UINT = {0xcc: struct.Struct('>B'), 0xcd: struct.Struct('>H'), 0xce: struct.Struct('>I'),
         0xcf: struct.Struct('>Q')}
_BINLEN = {0xc4: struct.Struct('>B'), 0xc5: struct.Struct('>H'), 0xc6: struct.Struct('>I')}


def _uint(b, p):
    c = _B1.unpack_from(b, p)[0]
    if c < 0x80:
        return c, p + 1
    u = _UINT[c]  # KeyError: not an unsigned int
    return u.unpack_from(b, p + 1)[0], p + 1 + u.size


def _raw_chunk(b):
    # A chunk message [D_CHUNK, index, offset, data, sha or nil] as both
    # senders encode it, parsed where it lies: the data is a view of the
    # frame (on Python 3), not a copy (core.unpack would copy it). None for
    # anything else, which is then decoded as usual: every length is
    # checked against the frame, so a hostile one is only that.
    try:
        if _B1.unpack_from(b, 0)[0] != 0x95 or _B1.unpack_from(b, 1)[0] != D_CHUNK:
            return None
        i, p = _uint(b, 2)
        off, p = _uint(b, p)
        u = _BINLEN[_B1.unpack_from(b, p)[0]]
        n = u.unpack_from(b, p + 1)[0]
        p += 1 + u.size
        q = p + n
        c = _B1.unpack_from(b, q)[0]
        if c == 0xc0:
            sha, end = None, q + 1
        elif c == 0xd9 or 0xa0 <= c < 0xc0:
            start = q + 2 if c == 0xd9 else q + 1
            end = start + (_B1.unpack_from(b, q + 1)[0] if c == 0xd9 else c & 31)
            sha = b[start:end].decode('utf-8') if end <= len(b) else None
        else:
            return None
        if end != len(b):
            return None
        return [D_CHUNK, i, off, memoryview(b)[p:q] if PY3 else b[p:q], sha]
    except (KeyError, struct.error, UnicodeDecodeError):
        return None


def _raw_bulk(b):
    # A bulk frame's covered part [D_BULK, index, offset, sha256, last]
    # and its body, as the message the writer thread takes; a malformed
    # one (MAC-covered, so from a broken sender) fails the transfer.
    try:
        m = core.unpack(b.covered())
        if type(m) is list and len(m) == 5 and m[0] == D_BULK and type(m[1]) in core._INTS and \
                type(m[2]) in core._INTS and m[1] >= 0 and m[2] >= 0 and \
                isinstance(m[3], bytes) and len(m[3]) == 32 and type(m[4]) is bool:
            return [D_BULK, m[1], m[2], b.body, m[3], m[4]]
    except core.MsgError:
        pass
    return [D_BAD, u'malformed bulk frame']


D_BAD = -1  # on the writer's queue only: a malformed bulk frame


class _Hasher(object):
    # The receiver's one pass over a chunk's bytes, on the thread that
    # read its frame: each file's running SHA-256 is compared with the
    # sender's digest through the chunk, so the writer thread (the
    # pipeline's slowest stage: page cache and disk) only writes.
    # [D_BULK, i, off, body, sha256, last] gets [ok, the running hash]
    # appended; the writer's own checks (index, offset, size) come first
    # there, so a chunk that is not ok for those reasons fails as they do.

    def __init__(self, entries, resumed):
        self.entries = entries
        self.seed = dict((i, (r[0], r[1].copy())) for i, r in resumed.items())
        self.files = {}  # index -> [next offset, running SHA-256]

    def _state(self, i, off):
        s = self.files.get(i)
        if s is None and 0 <= i < len(self.entries) and self.entries[i][1] == F_FILE:
            if off == 0:
                s = [0, hashlib.sha256()]
            elif i in self.seed and self.seed[i][0] == off:
                s = [off, self.seed.pop(i)[1]]
            if s is not None:
                self.files[i] = s
        return s

    def __call__(self, m):
        if m[0] != D_BULK:
            return m
        i, off, body = m[1], m[2], m[3]
        s, ok = self._state(i, off), False
        if s is not None and s[0] == off:
            s[1].update(body)
            s[0] += len(body)
            ok = core._same(s[1].digest(), m[4])
        if not ok or m[5]:
            self.files.pop(i, None)
        m.append(ok)
        m.append(s[1] if s is not None else None)
        return m


def _writeall(fd, data):
    mv = memoryview(data)
    n = 0
    while n < len(mv):
        n += os.write(fd, mv[n:])


def _grow_pipes():
    parent = router.parent
    if _piped or parent is None or not sys.platform.startswith('linux'):
        return
    _piped.append(True)
    for fd in set([parent.rfd, parent.wfd]):
        try:
            if stat.S_ISFIFO(os.fstat(fd).st_mode):
                fcntl.fcntl(fd, _F_SETPIPE_SZ, PIPE_SIZE)
        except (EnvironmentError, TypeError):
            pass  # only an optimisation: pipe-max-size, or no such fcntl


def _utime(path, mtime_ns):
    if PY3:
        os.utime(path, ns=(mtime_ns, mtime_ns))
    else:
        t = mtime_ns / 1e9
        os.utime(path, (t, t))


# ---- Receiving ----------------------------------------------------------------
class _Recv(object):
    def __init__(self, root, entries, opts, ack):
        self.root, self.entries, self.ack, self.opts = root, entries, ack, opts
        self.window = int(opts.get(u'window') or WINDOW)
        self.fsync = opts.get(u'fsync', True)
        self.as_root = os.geteuid() == 0
        self.q = _Queue()
        self.open = {}  # index -> [fd, tmp, hash, written]
        self.failed = set()
        self.resumed = {}  # index -> (offset, hash of the prefix)
        self.done_bytes = self.acked = 0
        self.files_ok = 0
        self.lock = threading.Lock()
        self.fin = _Queue()
        self.fin_pending = 0
        self.fin_idle = threading.Condition(self.lock)
        self.handle = None

    def begin(self):
        # Main thread (a call): fail early and whole on a bad destination.
        root, entries, opts = self.root, self.entries, self.opts
        for e in entries:
            if not _safe(e[0]):
                return {u'error': _err(u'protocol', e[0], u'unsafe path in manifest')}
        tree = bool(entries) and entries[0][0] == b''
        try:
            if tree:
                if os.path.lexists(root) and not os.path.isdir(root):
                    return {u'error': _err(u'not_a_directory', root, u'destination exists and is not a directory')}
                if not os.path.isdir(root):
                    os.makedirs(root, 0o700)
                for e in entries[1:]:
                    if e[1] == F_DIR:
                        p = _join(root, e[0])
                        if not os.path.isdir(p):
                            os.mkdir(p, 0o700)
            elif not os.path.isdir(root):
                return {u'error': _err(u'not_found', root, u'destination directory does not exist')}
            elif opts.get(u'name') and os.path.isdir(_join(root, entries[0][0])):
                # Pushing a file onto a directory puts it inside, as cp does.
                self.root = root = _join(root, entries[0][0])
                entries[0][0] = opts[u'name']
            if not os.access(root, os.W_OK | os.X_OK):
                return {u'error': _err(u'permission_denied', root, u'destination directory is not writable')}
        except EnvironmentError as e:
            return {u'error': _err(_kind(e), getattr(e, 'filename', None) or root, e.strerror or str(e))}
        dirs = {}
        for e in entries:
            if e[1] == F_DIR:
                continue
            d, b = os.path.split(_join(root, e[0]))
            names = dirs.setdefault(d or b'.', {})
            if e[1] == F_FILE and e[8]:
                names[b] = e[8].encode('ascii')
        _sweep(dirs)
        resume = []
        for i, e in enumerate(entries):
            if e[1] == F_FILE and e[8]:
                r = self._partial(i, e)
                if r:
                    resume.append(r)
        # Data only from the context that began the push (its acks go
        # there): our writer keeps owners and set-id bits for it.
        self.handle = router.add_handler(self._on_data, accept=self.ack.context_id)
        decoded = router.handlers[self.handle]
        hashed = _Hasher(entries, self.resumed)

        def on_frame(src, reply_to, data):
            # IO thread. Chunks (nearly every frame) are parsed in place;
            # the rest (and any other source) go through the usual checks.
            if type(data) is core.Bulk:
                if src != self.ack.context_id:
                    return router._refuse(src, self.handle)
                return self.q.put(hashed(_raw_bulk(data)))
            if src == self.ack.context_id and not isinstance(data, Dead):
                m = _raw_chunk(data)
                if m is not None:
                    return self.q.put(m)
            decoded(src, reply_to, data)
        router.handlers[self.handle] = on_frame
        router.bulk.add(self.handle)
        self.nfin = FINISHERS if len(entries) > 1 else 1
        for _ in range(self.nfin):
            t = threading.Thread(target=self._finisher)
            t.daemon = True
            t.start()
        t = threading.Thread(target=self._run)
        t.daemon = True
        t.start()
        return {u'handle': self.handle, u'resume': resume}

    def _partial(self, i, e):
        # A temporary file left by an interrupted transfer of the same
        # source (same key): offer to resume after its verified prefix.
        tmp = _tmp_name(_join(self.root, e[0]), e[8])
        try:
            st = os.lstat(tmp)
        except EnvironmentError:
            return None
        if not stat.S_ISREG(st.st_mode) or not 0 < st.st_size <= e[2]:
            return None
        h = hashlib.sha256()
        with open(tmp, 'rb') as f:
            while True:
                b = f.read(1 << 20)
                if not b:
                    break
                h.update(b)
        self.resumed[i] = (st.st_size, h)
        return [i, st.st_size, _text(h.hexdigest())]

    def _on_data(self, src, reply_to, obj):
        # IO thread: never block; the writer thread does the disk work.
        self.q.put(obj)

    def _credit(self, force=False):
        # Every half window, not every chunk: each credit is a frame back
        # through sshd, ssh and the master (a wake-up of each). A sender
        # blocked on its window has a whole window unacknowledged, so once
        # that is written a credit always goes.
        if force or self.done_bytes - self.acked >= self.window >> 1:
            self.acked = self.done_bytes
            self.ack.send([A_CREDIT, self.done_bytes, self.files_ok])

    def _run(self):
        while True:
            m = self.q.get()
            if isinstance(m, Dead) or type(m) is not list or not m:
                # The sender is gone (or gave up): keep the temporary files
                # for a resume, and stop the finishers.
                for i in list(self.open):
                    os.close(self.open.pop(i)[0])
                for _ in range(self.nfin):
                    self.fin.put(None)
                break
            t = m[0]
            try:
                if t == D_BULK:
                    self._bulk(m[1], m[2], m[3], m[5], m[6], m[7])
                elif t == D_CHUNK:
                    self._chunk(m[1], m[2], m[3], m[4])
                elif t == D_BAD:
                    self._fail(-1, u'protocol', m[1])
                elif t == D_FAIL:
                    self._discard(m[1])
                elif t == D_END:
                    self._end()
                    break
            except Exception as e:
                core.LOG.exception('receiving %r failed', m[:3])
                self._fail(m[1] if len(m) > 1 else 0, u'io', str(e))
        router.del_handler(self.handle)

    def _open(self, i, off):
        e = self.entries[i]
        path = _join(self.root, e[0])
        tmp = _tmp_name(path, e[8] or u'x%d' % os.getpid())
        r = self.resumed.pop(i, None)
        if off and (r is None or r[0] != off):
            raise ValueError('chunk at %d for a file not resumed there' % off)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | getattr(os, 'O_NOFOLLOW', 0), 0o600)
        h = r[1] if off else hashlib.sha256()
        if off:
            os.lseek(fd, off, 0)
        elif os.fstat(fd).st_size:
            # Only a leftover needs it: on ext4 a truncate to 0 makes the
            # close flush the whole file (auto_da_alloc), a long stall.
            os.ftruncate(fd, 0)
        f = self.open[i] = [fd, tmp, h, off, off]
        return f

    def _writeback(self, f):
        # f[4]: where writeback was last started.
        if self.fsync and _fadvise is not None and f[3] - f[4] >= WRITEBACK_STEP:
            try:
                _fadvise(f[0], f[4], f[3] - f[4], os.POSIX_FADV_DONTNEED)
            except EnvironmentError:
                pass  # only an optimisation; the fsync still comes
            f[4] = f[3]

    def _chunk(self, i, off, data, sha):
        n = len(data)
        if i not in self.failed:
            f = self.open.get(i)
            try:
                if f is None:
                    f = self._open(i, off)
                elif off != f[3]:
                    raise ValueError('chunk at %d, expected %d' % (off, f[3]))
                _writeall(f[0], data)
                f[2].update(data)
                f[3] += n
                self._writeback(f)
                if f[3] > self.entries[i][2]:
                    raise ValueError('more data than the manifest said')
            except EnvironmentError as e:
                self._fail(i, _kind(e), e.strerror or str(e))
            except ValueError as e:
                self._fail(i, u'protocol', str(e))
            if sha is not None and i not in self.failed:
                del self.open[i]
                with self.lock:
                    self.fin_pending += 1
                self.fin.put((i, f, sha))
        self.done_bytes += n
        _count(u'bytes_in', n)
        self._credit()

    def _bulk(self, i, off, data, last, ok, h):
        # A chunk no frame MAC covered, already hashed and compared by the
        # _Hasher (ok); written only when it matched.
        n = len(data)
        if i not in self.failed:
            f = self.open.get(i)
            try:
                if not 0 <= i < len(self.entries) or self.entries[i][1] != F_FILE:
                    raise ValueError('chunk for entry %d, not a file' % i)
                if f is None:
                    f = self._open(i, off)
                elif off != f[3]:
                    raise ValueError('chunk at %d, expected %d' % (off, f[3]))
                if f[3] + n > self.entries[i][2]:
                    raise ValueError('more data than the manifest said')
                if not ok:
                    self._fail(i, u'checksum', u"the chunk at offset %d does not match the "
                               u"sender's SHA-256" % off)
                else:
                    _writeall(f[0], data)
                    f[3] += n
                    self._writeback(f)
            except EnvironmentError as e:
                self._fail(i, _kind(e), e.strerror or str(e))
            except ValueError as e:
                self._fail(i, u'protocol', str(e))
            if last and i not in self.failed:
                del self.open[i]
                with self.lock:
                    self.fin_pending += 1
                f[2] = h  # the _Hasher's, through the last chunk
                self.fin.put((i, f, _text(h.hexdigest())))
        self.done_bytes += n
        _count(u'bytes_in', n)
        self._credit()

    def _fail(self, i, kind, msg):
        self._discard(i)
        e = self.entries[i] if 0 <= i < len(self.entries) else [b'']
        self.ack.send([A_ERROR, i, _err(kind, _join(self.root, e[0]), msg)])

    def _discard(self, i):
        self.failed.add(i)
        f = self.open.pop(i, None)
        if f:
            os.close(f[0])
            try:
                os.unlink(f[1])
            except EnvironmentError:
                pass

    def _finisher(self):
        while True:
            job = self.fin.get()
            if job is None:
                return
            i, f, sha = job
            e = self.entries[i]
            path = _join(self.root, e[0])
            try:
                self._finish_file(e, f, sha, path)
                with self.lock:
                    self.files_ok += 1
                _count(u'files_in')
            except EnvironmentError as x:
                self._cleanup(f)
                self.ack.send([A_ERROR, i, _err(_kind(x), getattr(x, 'filename', None) or path,
                                                x.strerror or str(x))])
            except ValueError as x:
                self._cleanup(f)
                self.ack.send([A_ERROR, i, _err(u'checksum', path, str(x))])
            with self.lock:
                self.fin_pending -= 1
                if not self.fin_pending:
                    self.fin_idle.notify_all()

    def _cleanup(self, f):
        try:
            os.close(f[0])
        except EnvironmentError:
            pass
        try:
            os.unlink(f[1])
        except EnvironmentError:
            pass

    def _finish_file(self, e, f, sha, path):
        fd, tmp, h = f[0], f[1], f[2]
        if f[3] != e[2]:
            raise ValueError('%d bytes received, the manifest said %d' % (f[3], e[2]))
        if h.hexdigest() != sha:
            raise ValueError('SHA-256 mismatch: received %s, sender read %s' % (h.hexdigest(), sha))
        os.fchmod(fd, e[3] & 0o7777)
        if self.as_root:
            os.fchown(fd, e[6], e[7])
            os.fchmod(fd, e[3] & 0o7777)  # chown clears setuid bits
        if self.fsync:
            os.fsync(fd)
            with self.lock:
                _count(u'fsynced')
        os.close(fd)
        f[0] = -1
        _utime(tmp, e[4])
        if os.path.isdir(path) and not os.path.islink(path):
            os.unlink(tmp)
            raise EnvironmentError(errno.EISDIR, 'destination is a directory', path)
        os.rename(tmp, path)

    def _end(self):
        # Wait for the finishers, then links and directories (deepest
        # first, so setting a directory's mtime is the last touch in it).
        with self.lock:
            while self.fin_pending:
                self.fin_idle.wait(1.0)
        for _ in range(self.nfin):
            self.fin.put(None)
        for i, e in enumerate(self.entries):
            if e[1] == F_LINK:
                self._link(i, e)
        dirs = [(i, e) for i, e in enumerate(self.entries) if e[1] == F_DIR]
        for i, e in sorted(dirs, key=lambda x: -x[1][0].count(b'/') - (1 if x[1][0] else 0)):
            p = _join(self.root, e[0])
            try:
                if self.as_root:
                    os.chown(p, e[6], e[7])
                os.chmod(p, e[3] & 0o7777)
                _utime(p, e[4])
            except EnvironmentError as x:
                self.ack.send([A_ERROR, i, _err(_kind(x), p, x.strerror or str(x))])
        self._credit(True)
        self.ack.send([A_DONE, core.context_id, self.files_ok, self.done_bytes])

    def _link(self, i, e):
        path = _join(self.root, e[0])
        tmp = _tmp_name(path, e[8] or u'l%d' % os.getpid())
        try:
            if os.path.lexists(tmp):
                os.unlink(tmp)
            os.symlink(e[5], tmp)
            if self.as_root:
                os.lchown(tmp, e[6], e[7])
            if os.path.isdir(path) and not os.path.islink(path):
                os.unlink(tmp)
                raise EnvironmentError(errno.EISDIR, 'destination is a directory', path)
            os.rename(tmp, path)
            with self.lock:
                self.files_ok += 1
        except EnvironmentError as x:
            self.ack.send([A_ERROR, i, _err(_kind(x), path, x.strerror or str(x))])


def recv_begin(root, entries, opts, ack):
    _grow_pipes()
    if opts.get(u'relay'):
        return _Relay(root, entries, opts, ack).begin()
    return _Recv(root, entries, opts, ack).begin()


# ---- Relaying to our children ---------------------------------------------------
def _call(cid, fn, args):
    q = _Queue()
    h = router.add_handler(lambda src, rt, obj: q.put(obj), persist=False)
    router.send(cid, CALL_FUNCTION, [u'econtext.files', None, fn, args, {}], h)
    return q


_END = core.pack([D_END])  # as a relay sees it: raw, never decoded


class _Relay(object):
    # One incoming stream, forwarded frame by frame (raw, never decoded) to
    # each child's data handle; our credit upward is the smallest credit
    # any child has given, so we hold at most a window per child.
    def __init__(self, root, entries, opts, ack):
        self.root, self.entries, self.ack = root, entries, ack
        self.targets = list(opts[u'relay'])
        self.opts = dict(opts)
        del self.opts[u'relay']
        self.credit = {}
        self.acks = {}  # child -> our ack handle for it, until it is done
        self.lock = threading.Lock()
        self.sent = 0

    def begin(self):
        pending = []
        for cid in self.targets:
            h = self.acks[cid] = router.add_handler(self._acker(cid))
            pending.append((cid, h, _call(cid, u'recv_begin',
                                          [self.root, self.entries, self.opts, Sender(core.context_id, h)])))
        self.data = {}
        errors = []
        for cid, h, q in pending:
            r = q.get()
            if isinstance(r, (CallError, Dead)) or type(r) is not dict or u'handle' not in r:
                router.del_handler(self.acks.pop(cid))
                errors.append([cid, r.get(u'error') if type(r) is dict else _err(
                    u'io', self.root, u'%r' % (r,))])
                continue
            self.data[cid] = r[u'handle']
            self.credit[cid] = [0, 0]
        for cid, err in errors:
            self.ack.send([A_ERROR, -1, err, cid])
            self.ack.send([A_DONE, cid, 0, 0])
        self.handle = router.add_handler(None)
        router.handlers[self.handle] = self._forward  # raw: no decode, no copy
        router.bulk.add(self.handle)  # chunks go on as the bulk frames they are
        return {u'handle': self.handle, u'resume': [], u'relayed': sorted(self.data)}

    def _forward(self, src, reply_to, data):
        # IO thread: the same bytes go to every child (queued by its stream).
        # Only the caller's frames: what we forward is sourced from us, which
        # every leaf accepts, and a hostile leaf of the same fan-out knows the
        # file's prefix, so it could forge chunks whose running SHA-256 its
        # siblings would accept (the Rust relay opens its channel for the
        # caller alone too).
        if src != self.ack.context_id:
            return router._refuse(src, self.handle)
        if isinstance(data, Dead) or data == _END:
            # The sender is done (or gave up): no frame comes after this.
            router.del_handler(self.handle)
        if not isinstance(data, Dead):
            # A Bulk goes on as one (its body is never hashed here); a
            # list is consumed by each stream's send: one per child.
            bulk = type(data) is core.Bulk
            for cid, h in list(self.data.items()):
                try:
                    router.route(cid, core.context_id, h, 0, data if bulk else [data])
                    _count(u'relayed', len(data))
                except Exception:
                    core.LOG.warning('relay to %d failed', cid, exc_info=True)

    def _acker(self, cid):
        def on_ack(src, rt, m):
            if isinstance(m, Dead) or type(m) is not list or not m:
                m = [A_ERROR, -1, _err(u'connection_lost', self.root, u'context %d is gone' % cid)]
                self._done(cid)
                self.ack.send(m + [cid])
                self.ack.send([A_DONE, cid, 0, 0])
                self.data.pop(cid, None)
                self.credit.pop(cid, None)
                return self._upward()
            if m[0] == A_CREDIT:
                self.credit[cid] = [m[1], m[2]]
                self._upward()
            elif m[0] == A_ERROR:
                self.ack.send(m[:3] + [cid])
            elif m[0] == A_DONE:
                self._done(cid)
                self.data.pop(cid, None)
                self.credit.pop(cid, None)
                self.ack.send(m)
                self._upward()
        return on_ack

    def _done(self, cid):
        # That child says nothing more: its ack handle goes.
        h = self.acks.pop(cid, None)
        if h is not None:
            router.del_handler(h)

    def _upward(self):
        c = list(self.credit.values())
        b = min([x[0] for x in c]) if c else 1 << 62
        f = min([x[1] for x in c]) if c else 0
        if b > self.sent:
            self.sent = b
            self.ack.send([A_CREDIT, b, f])


# ---- Sending ------------------------------------------------------------------
def _entry(root, rel, st, key_base):
    path = _join(root, rel)
    m = st.st_mode
    kind = F_DIR if stat.S_ISDIR(m) else F_LINK if stat.S_ISLNK(m) else F_FILE
    mtime = getattr(st, 'st_mtime_ns', None) or int(st.st_mtime * 1e9)
    target = os.readlink(path) if kind == F_LINK else None
    key = None
    if kind == F_FILE:
        key = _text(hashlib.sha256(b'%s\0%d\0%d\0%s' % (key_base, st.st_size, mtime, rel)).hexdigest()[:16])
    return [rel, kind, st.st_size if kind == F_FILE else 0, stat.S_IMODE(m), mtime, target,
            st.st_uid, st.st_gid, key]


def manifest(src, tree):
    # The whole list up front: directories travel as one stream.
    st = os.lstat(src)
    if not tree:
        if stat.S_ISDIR(st.st_mode):
            raise EnvironmentError(errno.EISDIR, 'source is a directory (pull a tree)', src)
        if not (stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode)):
            raise EnvironmentError(errno.EINVAL, 'not a regular file', src)
        return [_entry(src, b'', st, src)]
    if not stat.S_ISDIR(st.st_mode):
        raise EnvironmentError(errno.ENOTDIR, 'source is not a directory', src)
    out = [_entry(src, b'', st, src)]
    for d, dirs, files in os.walk(src):
        dirs.sort()
        rel = d[len(src):].lstrip(b'/')
        for n in dirs + sorted(files):
            r = rel + b'/' + n if rel else n
            try:
                out.append(_entry(src, r, os.lstat(os.path.join(d, n)), src))
            except EnvironmentError:
                pass  # vanished while we walked
    return out


class _Send(object):
    def __init__(self, src, entries, data, opts):
        self.src, self.entries, self.data = src, entries, data
        self.window = int(opts.get(u'window') or WINDOW)
        self.chunk = int(opts.get(u'chunk') or CHUNK)
        self.q = _Queue()
        self.credit = 0
        self.cv = threading.Condition()
        self.dead = False
        self.handle = router.add_handler(self._on_ack)

    def _on_ack(self, src, rt, m):
        # IO thread. The handle lives until the receiver is done (A_DONE)
        # or gives up (Dead): its credits for the last window arrive after
        # our D_END, and must not meet a closed handle.
        if isinstance(m, Dead) or type(m) is not list or not m or m[0] == A_DONE:
            router.del_handler(self.handle)
            with self.cv:
                self.dead = True
                self.cv.notify_all()
            return
        if m[0] == A_START:
            t = threading.Thread(target=self._run, args=(dict((r[0], r) for r in m[1]),))
            t.daemon = True
            t.start()
        elif m[0] == A_CREDIT:
            with self.cv:
                self.credit = max(self.credit, m[1])
                self.cv.notify_all()

    def _wait(self, sent):
        with self.cv:
            while sent - self.credit > self.window and not self.dead:
                self.cv.wait(5.0)
            return not self.dead

    def _run(self, resume):
        sent = 0
        try:
            for i, e in enumerate(self.entries):
                if e[1] != F_FILE:
                    continue
                sent = self._file(i, e, resume.get(i), sent)
                if sent is None:
                    return
            self.data.send([D_END])
        except Exception:
            # The receiver stalls out and says so; its Dead closes us.
            core.LOG.exception('sending %r failed', self.src)

    def _file(self, i, e, r, sent):
        path = _join(self.src, e[0])
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, 'O_NOFOLLOW', 0))
        except EnvironmentError as x:
            self.data.send([D_FAIL, i, _err(_kind(x), path, x.strerror or str(x))])
            return sent
        try:
            h = hashlib.sha256()
            off = 0
            if r:
                # Resume only after a prefix whose hash matches ours.
                pre = hashlib.sha256()
                left = r[1]
                while left > 0:
                    b = os.read(fd, min(left, 1 << 20))
                    if not b:
                        break
                    pre.update(b)
                    left -= len(b)
                if left == 0 and _text(pre.hexdigest()) == r[2]:
                    h, off = pre, r[1]
                else:
                    os.lseek(fd, 0, 0)
            size = e[2]
            while True:
                if not self._wait(sent):
                    return None
                b = os.read(fd, min(self.chunk, size - off)) if off < size else b''
                h.update(b)
                last = off + len(b) >= size
                if not b and off < size:
                    self.data.send([D_FAIL, i, _err(u'changed', path, u'file shrank while it was read')])
                    return sent
                if last:
                    st = os.fstat(fd)
                    changed = st.st_size != size or (
                        getattr(st, 'st_mtime_ns', None) or int(st.st_mtime * 1e9)) != e[4]
                    if changed or (b == b'' and off < size) or os.read(fd, 1):
                        self.data.send([D_FAIL, i, _err(u'changed', path, u'file changed while it was read')])
                        return sent + len(b)
                # A bulk frame: the MAC covers the file's SHA-256 through
                # this chunk (one more block), not the chunk's bytes.
                self.data.send_bulk(core.pack([D_BULK, i, off, bytearray(h.digest()), last]), b)
                off += len(b)
                sent += len(b)
                _count(u'bytes_out', len(b))
                if last:
                    _count(u'files_out')
                    return sent
        finally:
            os.close(fd)


def send_begin(src, tree, data, opts):
    _grow_pipes()
    try:
        entries = manifest(src, tree)
    except EnvironmentError as x:
        return {u'error': _err(_kind(x), getattr(x, 'filename', None) or src, x.strerror or str(x))}
    s = _Send(src, entries, data, opts)
    return {u'ack': s.handle, u'entries': entries}
