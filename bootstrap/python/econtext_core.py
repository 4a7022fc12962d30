# econtext core: sent to every Python child and run as its main script.
# One source for CPython 2.7 and 3.6+, stdlib only. Comments and docstrings
# are stripped before sending (line numbers are kept), so the comments here
# explain why, freely. docs/PROTOCOL.md is the byte-level contract.
import errno
import fcntl
# posix, the C module, not os: os.py and what it imports (_collections_abc,
# posixpath, stat) cost a lean leaf 1 ms of its ~12 ms of CPU, and the core
# uses only C functions that os takes from posix. User code imports the
# real os as always.
import posix as os
import select
import sys
import time
import zlib
# _thread and _collections, not threading and collections: those two (with
# functools) cost 1 MiB of RSS and 11 M instructions at every start.
from _collections import deque
# _struct, not struct: the latter is a Python module re-exporting it (80
# KiB of RSS in every child).
import _struct as struct

PY3 = sys.version_info[0] > 2
if PY3:
    import _thread
else:
    import thread as _thread
_local, _Lock = _thread._local, _thread.allocate_lock
if PY3:
    _UNI, _BYTES, _INTS = str, bytes, (int,)
else:
    _UNI, _BYTES, _INTS = unicode, str, (int, long)  # noqa: F821
    import imp  # here: importing it lazily inside find_module would recurse

GET_MODULE = 100
CALL_FUNCTION = 101
FORWARD_LOG = 102
ADD_ROUTE = 103
DEL_ROUTE = 104
SHUTDOWN = 105
SPAWN = 106
FIRST_DYNAMIC = 1000
# Handles only an ancestor may send to, and only down the parent stream.
_AUTH = (CALL_FUNCTION, SPAWN, SHUTDOWN, ADD_ROUTE)
MAX_DEPTH = 128
# How long the IO thread lets a stuck main thread run after the parent is
# gone, and how long graceful shutdown waits for stdio pipes to drain.
GRACE = 2.0

# Set by main(); user code reaches its context through econtext.core.*.
context_id = parent_id = context_name = router = broker = importer = None
CORE_SOURCE = None
# Modules the master compiled for this interpreter and sent with the
# payload, as (name, filename, code object): blocks run after this module
# body append to it (bootstrap/src/compiled.rs), main() creates them.
_PRE = []
# Whether this core arrived compiled (marshal, made on the master for this
# interpreter) rather than as source alone.
COMPILED = False
# The master's module path (config 'module_path'), for ImportError messages.
MODULE_PATH = ''
# How long an import waits for the parent (config 'import_timeout', ms).
IMPORT_TIMEOUT = 30.0
# The real interpreter path: the first stage re-executed Python with a
# decorated argv[0], so sys.executable is not usable for grandchildren.
PYTHON = sys.executable
# Spinning before sleeping (docs/ARCHITECTURE.md): for SPIN seconds after
# writing to its parent (config 'spin_us'; 0: never) a thread about to
# wait for the parent polls without blocking first. On a VM whose idle
# vCPU halts at once, the wake-up costs more CPU than that much polling,
# and the next call usually comes within it. The time of the last write
# to the parent and the parent's write fd (set by main).
SPIN = 5e-05
_now = getattr(time, 'perf_counter', time.time)  # 2.7 has no perf_counter
# Between polls: under load both ends of a link often share one CPU, where
# a spin that kept it would only delay the message it waits for (2.7 has
# no sched_yield: it spins without).
_yield = getattr(os, 'sched_yield', None) or (lambda: None)
_WROTE = [0.0, None]


class _Log(object):
    # The core's own records go straight to FORWARD_LOG: the logging
    # package costs 27 ms and 2.5 MB to import, so it is loaded only when
    # user code imports it (see _LoggingHook). A record sent while sending
    # one (a route failure reported from inside send) is dropped, never
    # recursed into, and counted (`nested`; no lock: the thread may hold a
    # budget's lock already), so the context's last summary says so.
    level = 20
    nested = 0

    def __init__(self):
        self.busy = _local()

    def _log(self, lvl, msg, args, exc):
        if lvl < self.level or router is None or router.lost:
            return
        if getattr(self.busy, 'on', False):
            self.nested += 1
            return
        self.busy.on = True
        try:
            if args:
                msg = msg % args
            if exc:
                import traceback
                msg = '%s\n%s' % (msg, traceback.format_exc().rstrip())
            forward_log(u'econtext', lvl, _text(msg))
        except Exception:
            pass
        finally:
            self.busy.on = False

    def debug(self, msg, *a, **kw):
        self._log(10, msg, a, kw.get('exc_info'))

    def info(self, msg, *a, **kw):
        self._log(20, msg, a, kw.get('exc_info'))

    def warning(self, msg, *a, **kw):
        self._log(30, msg, a, kw.get('exc_info'))

    def error(self, msg, *a, **kw):
        self._log(40, msg, a, kw.get('exc_info'))

    def exception(self, msg, *a):
        self._log(40, msg, a, True)


LOG = _Log()

# A record longer than this is cut (the master cuts at the same length).
MAX_RECORD = 65536


# The clock of log budgets and warn_once: one that never steps back where
# there is one (2.7 has no monotonic; its time.time() may step back, and an
# age below zero then counts as due, never as a long wait).
_mono = getattr(time, 'monotonic', time.time)


def _due(now, then, every):
    # Whether `every` seconds passed since `then` (None: never happened).
    return then is None or not 0 <= now - then < every


class _LogBudget(object):
    # How much of this context's log goes to the master: the master's
    # LogBudget (actors/src/logbudget.rs) with the same limits, 1,000
    # records or 1 MiB at once, then 100 records or 256 KiB a second, so
    # user code logging in a loop (or a grandchild's garbage making us warn
    # per frame) costs the link and the operator's terminal a trickle.
    # Past it records are counted; the next record that passes, at most
    # once a second, the IO thread within a second (_OWED), or the end of
    # the context (flush) says how many were suppressed. Any thread logs:
    # a lock. `parent`: a Python intermediate's budget for a child's
    # stderr, whose lines the master sees under the intermediate's id:
    # each is charged to the intermediate's own (_BUDGET) too, and counted
    # here when either refuses (the child's summaries say so; they are
    # not charged: at most one a second per child).
    def __init__(self, burst=1000, rate=100, burst_bytes=1 << 20, byte_rate=256 << 10,
                 parent=None):
        self.lock = _Lock()
        self.burst, self.rate = float(burst), float(rate)
        self.burst_bytes, self.byte_rate = float(max(burst_bytes, MAX_RECORD)), float(byte_rate)
        self.records, self.bytes = self.burst, self.burst_bytes
        self.at = _mono()
        self.lost = self.lost_bytes = 0
        self.reported = None  # when the last summary went (None: never)
        self.owed = None  # the logger to report under, while queued in _OWED
        self.parent = parent

    def _fits(self, n, now):
        # Under self.lock: refilled to now; whether n bytes may go.
        dt = now - self.at
        self.at = now
        if dt > 0:
            self.records = min(self.records + dt * self.rate, self.burst)
            self.bytes = min(self.bytes + dt * self.byte_rate, self.burst_bytes)
        return self.records >= 1 and self.bytes >= n

    def _charge(self, n, now):
        # A child's line that passed its own budget, charged to this one
        # (never counted here when refused: the child's budget counts it).
        with self.lock:
            if not self._fits(n, now):
                return False
            self.records -= 1
            self.bytes -= n
            return True

    def admit(self, n, logger=u'econtext', now=None):
        # (whether a record of n bytes may go now, the summary to send
        # before it or None, whether this budget is newly owed a summary
        # under `logger`: the caller queues it in _OWED). `owed` is set
        # under the lock, so one budget is queued once however many
        # threads it refuses at once.
        now = _mono() if now is None else now
        n = min(n, MAX_RECORD)
        with self.lock:
            if self._fits(n, now) and (self.parent is None or self.parent._charge(n, now)):
                self.records -= 1
                self.bytes -= n
                if not self.lost or not _due(now, self.reported, 1):
                    return True, None, False
                self.reported = now
                return True, self._take(), False
            self.lost += 1
            self.lost_bytes += n
            if self.owed is None:
                self.owed = logger
                return False, None, True
            return False, None, False

    def take_owed(self, now=None, force=False):
        # For _report_owed (IO thread): (whether its summary is due, the
        # logger, the summary or None). Once due it is no longer owed (the
        # caller drops it from _OWED); the same lock as admit, so a record
        # refused meanwhile either is in this summary or queues it again.
        now = _mono() if now is None else now
        with self.lock:
            if not force and not _due(now, self.reported, 1):
                return False, None, None
            logger, self.owed = self.owed or u'econtext', None
            if not self.lost:
                return True, logger, None
            self.reported = now
            return True, logger, self._take()

    def _take(self):
        note = u'suppressed %d log records (%d bytes) from this source: over its log rate' % (
            self.lost, self.lost_bytes)
        self.lost = self.lost_bytes = 0
        return note

    def flush(self, now=None):
        # The summary still owed, or None.
        with self.lock:
            self.reported = _mono() if now is None else now
            return self._take() if self.lost else None


_BUDGET = _LogBudget()
# Budgets that suppressed records since their last summary: the IO thread
# wakes within a second to report them (_report_owed), so a flood that
# stops is still told about without waiting for the next record.
_OWED = deque()


def forward_log(logger, level, msg, budget=_BUDGET):
    # Sends one FORWARD_LOG record (msg: text, or bytes that are not
    # UTF-8) within budget; raises what router.send raises.
    if len(msg) > MAX_RECORD:
        msg = msg[:MAX_RECORD] + (b' [record too long, cut]' if isinstance(msg, _BYTES)
                                  else u' [record too long, cut]')
    ok, note, owed = budget.admit(len(msg), logger)
    if owed:
        _OWED.append(budget)
        broker.wake()
    if not ok:
        return
    if note:
        router.send(0, FORWARD_LOG, [logger, 30, note])
    router.send(0, FORWARD_LOG, [logger, level, msg])


def _report_owed(force=False):
    # IO thread, after each poll while _OWED is not empty: the summaries
    # at least a second after the last one go now (force: all of them, at
    # the end of the context).
    now = _mono()
    for _ in range(len(_OWED)):
        b = _OWED.popleft()
        due, logger, note = b.take_owed(now, force)
        if not due:
            _OWED.append(b)
        elif note:
            _send_note(logger, note)


def flush_log(budget=_BUDGET, logger=u'econtext'):
    # The suppressed-records summary still owed, sent now (at the end of
    # the context, or of a child's stderr).
    note = budget.flush()
    if note:
        _send_note(logger, note)
    if budget is _BUDGET:
        note = _nested_note()
        if note:
            _send_note(logger, note)


def _nested_note():
    # What _Log dropped while sending a record, once (None: nothing).
    n, LOG.nested = LOG.nested, 0
    if n:
        return u'dropped %d log records of the core raised while sending another' % n


def _send_note(logger, note):
    try:
        router.send(0, FORWARD_LOG, [logger, 30, note])
    except Exception:
        pass


# Set on the main thread while replies may be held back (see _dispatch).
_HOLD = _local()
HOLD_MS = 1


def _text(s):
    # Python 2 text may be bytes of any encoding; the wire wants UTF-8 str.
    return s if isinstance(s, _UNI) else s.decode('utf-8', 'replace')


def _cloexec(fd):
    # Python 2 fds are inheritable: a daemon started by user code must not
    # keep the data channel (or our private pipes) open after we exit.
    fcntl.fcntl(fd, fcntl.F_SETFD, fcntl.fcntl(fd, fcntl.F_GETFD) | fcntl.FD_CLOEXEC)
    return fd


class MsgError(ValueError):
    pass


class _Ext(object):
    # Base of the protocol's ext types: equality, hashing and repr by value.
    def __eq__(self, o):
        return type(o) is type(self) and o._data() == self._data()

    def __ne__(self, o):
        return not self == o

    def __hash__(self):
        return hash(repr(self))

    def __repr__(self):
        d = self._data()
        return '%s(%s)' % (type(self).__name__, ', '.join(map(repr, type(d) is list and d or [d])))


class Dead(_Ext):
    _code = 1

    def __init__(self, reason=u''):
        self.reason = reason

    def _data(self):
        return self.reason


class CallError(_Ext, Exception):
    _code = 2

    def __init__(self, type, message, traceback=u''):
        Exception.__init__(self, type, message, traceback)
        self.type, self.message, self.traceback = type, message, traceback

    def _data(self):
        return [self.type, self.message, self.traceback]

    def __str__(self):
        return '%s: %s\n%s' % (self.type, self.message, self.traceback)


class Context(_Ext):
    _code = 3

    def __init__(self, id, name=u''):
        self.id, self.name = id, name

    def _data(self):
        return [self.id, self.name]

    def send(self, handle, obj, reply_to=0):
        router.send(self.id, handle, obj, reply_to)


class Sender(_Ext):
    _code = 4

    def __init__(self, context_id, handle):
        self.context_id, self.handle = context_id, handle

    def _data(self):
        return [self.context_id, self.handle]

    def send(self, obj):
        router.send(self.context_id, self.handle, obj)

    def send_bulk(self, covered, body):
        # A bulk frame (see Bulk): only a file receiver's handle takes it.
        router.route(self.context_id, router.id, self.handle, 0, bulk(covered, body))


_EXT = dict((c._code, c) for c in (Dead, CallError, Context, Sender))

# ---- MessagePack ----------------------------------------------------------
_S = struct.Struct
_B, _BB, _BH, _BI = _S('B').pack, _S('BB').pack, _S('>BH').pack, _S('>BI').pack
# Header markers per kind: (fix marker, fix limit, 8-bit, 16-bit, 32-bit).
_STR = (0xa0, 32, 0xd9, 0xda, 0xdb)
_BIN = (0, 0, 0xc4, 0xc5, 0xc6)
_ARR = (0x90, 16, 0, 0xdc, 0xdd)
_MAP = (0x80, 16, 0, 0xde, 0xdf)
_EXH = (0, 0, 0xc7, 0xc8, 0xc9)
_FIXEXT = {1: 0xd4, 2: 0xd5, 4: 0xd6, 8: 0xd7, 16: 0xd8}
_INT = ((0xcc, _S('>BB'), 0, 1 << 8), (0xcd, _S('>BH'), 0, 1 << 16),
        (0xce, _S('>BI'), 0, 1 << 32), (0xcf, _S('>BQ'), 0, 1 << 64),
        (0xd0, _S('>Bb'), -(1 << 7), 1 << 7), (0xd1, _S('>Bh'), -(1 << 15), 1 << 15),
        (0xd2, _S('>Bi'), -(1 << 31), 1 << 31), (0xd3, _S('>Bq'), -(1 << 63), 1 << 63))
_F64 = _S('>Bd').pack


def _hdr(w, n, k):
    if n < k[1]:
        w(_B(k[0] | n))
    elif k[2] and n < 256:
        w(_BB(k[2], n))
    elif n < 65536:
        w(_BH(k[3], n))
    elif n < 4294967296:
        w(_BI(k[4], n))
    else:
        raise MsgError('too long to encode')


def _pk(o, w):
    t = type(o)
    if t is _UNI:
        s = o.encode('utf-8')
        _hdr(w, len(s), _STR)
        w(s)
    elif t in _INTS:
        if -32 <= o < 128:
            w(_B(o & 255))
        else:
            for m, s, lo, hi in _INT[o < 0 and 4 or 0:]:
                if lo <= o < hi:
                    return w(s.pack(m, o))
            raise MsgError('integer out of 64-bit range')
    elif o is None:
        w(b'\xc0')
    elif t is list or t is tuple:
        _hdr(w, len(o), _ARR)
        for x in o:
            _pk(x, w)
    elif t is dict:
        _hdr(w, len(o), _MAP)
        for k, v in o.items():
            _pk(k, w)
            _pk(v, w)
    elif t is _BYTES:
        if not PY3:
            try:
                o.decode('utf-8')
                _hdr(w, len(o), _STR)
                return w(o)
            except UnicodeDecodeError:
                pass
        _hdr(w, len(o), _BIN)
        w(o)
    elif t is bool:
        w(o and b'\xc3' or b'\xc2')
    elif t is float:
        w(_F64(0xcb, o))
    elif t is bytearray or t is memoryview:
        o = memoryview(o).cast('B') if PY3 else memoryview(o).tobytes()
        _hdr(w, len(o), _BIN)
        w(o)
    elif isinstance(o, _Ext):
        d = pack(o._data())
        n = len(d)
        if n in _FIXEXT:
            w(_B(_FIXEXT[n]))
        else:
            _hdr(w, n, _EXH)
        w(_B(o._code))
        w(d)
    # Subclasses (IntEnum, OrderedDict, namedtuple...) encode as their base.
    elif isinstance(o, bool):
        _pk(bool(o), w)
    elif isinstance(o, _INTS):
        _pk(int(o), w)
    elif isinstance(o, float):
        _pk(float(o), w)
    elif isinstance(o, _UNI):
        _pk(_UNI(o), w)
    elif isinstance(o, _BYTES):
        _pk(_BYTES(o), w)
    elif isinstance(o, (list, tuple)):
        _pk(list(o), w)
    elif isinstance(o, dict):
        _hdr(w, len(o), _MAP)
        for k, v in o.items():  # keeps an OrderedDict's order
            _pk(k, w)
            _pk(v, w)
    else:
        raise TypeError('cannot encode %r' % (t,))


def packl(o):
    # Returns the encoding as a list of chunks: large bin values stay the
    # caller's objects, so a 64 MiB reply is never copied into one buffer.
    out = []
    _pk(o, out.append)
    return out


def pack(o):
    return b''.join(packl(o))


_SCALAR = dict((m, _S(f)) for m, f in (
    (0xca, '>f'), (0xcb, '>d'), (0xcc, '>B'), (0xcd, '>H'), (0xce, '>I'),
    (0xcf, '>Q'), (0xd0, '>b'), (0xd1, '>h'), (0xd2, '>i'), (0xd3, '>q')))
_L8, _L16, _L32 = _S('>B'), _S('>H'), _S('>I')
# marker -> (kind, length struct); kinds: 0 bin, 1 str, 2 array, 3 map, 4 ext
_VAR = {0xc4: (0, _L8), 0xc5: (0, _L16), 0xc6: (0, _L32), 0xd9: (1, _L8),
        0xda: (1, _L16), 0xdb: (1, _L32), 0xdc: (2, _L16), 0xdd: (2, _L32),
        0xde: (3, _L16), 0xdf: (3, _L32), 0xc7: (4, _L8), 0xc8: (4, _L16),
        0xc9: (4, _L32)}
_CONST = {0xc0: None, 0xc2: False, 0xc3: True}


def _trunc():
    raise MsgError('truncated value')


def _unp(b, i, d, n):
    # Every length is checked against the bytes remaining (n is len(b))
    # before use, and depth is bounded, so hostile input costs O(len(b)).
    # b is bytes or (for large frames read in place) a bytearray; an index
    # past the end raises IndexError, which unpack() reports as truncation.
    c = b[i]
    if not PY3:
        c = ord(c)
    i += 1
    if c < 0x80:
        return c, i
    if c >= 0xe0:
        return c - 256, i
    if c < 0x90:
        k, ln = 3, c & 15
    elif c < 0xa0:
        k, ln = 2, c & 15
    elif c < 0xc0:
        k, ln = 1, c & 31
    elif c in _CONST:
        return _CONST[c], i
    elif c in _SCALAR:
        s = _SCALAR[c]
        if i + s.size > n:
            _trunc()
        return s.unpack_from(b, i)[0], i + s.size
    elif 0xd4 <= c <= 0xd8:
        k, ln = 4, 1 << (c - 0xd4)
    elif c in _VAR:
        k, s = _VAR[c]
        if i + s.size > n:
            _trunc()
        ln = s.unpack_from(b, i)[0]
        i += s.size
    else:
        raise MsgError('invalid marker 0x%02x' % c)
    if k < 2:
        j = i + ln
        if j > n:
            _trunc()
        if k:
            return b[i:j].decode('utf-8'), j
        return (b[i:j] if type(b) is _BYTES else memoryview(b)[i:j].tobytes()), j
    if k == 4:
        j = i + 1 + ln
        if j > n:
            _trunc()
        code = _S('b').unpack_from(b, i)[0]
        cls = _EXT.get(code)
        if cls is None:
            raise MsgError('unknown ext type %d' % code)
        # Ext data is a str (Dead) or an array: checking its marker first
        # means ext-in-ext nesting always passes through a counted array.
        m = _S('B').unpack_from(b, i + 1)[0] if ln else 0
        if not ((0xa0 <= m < 0xc0 or 0xd9 <= m <= 0xdb) if code == 1 else
                (0x90 <= m < 0xa0 or m in (0xdc, 0xdd))):
            raise MsgError('bad ext data')
        v, e = _unp(b[i + 1:j], 0, d, ln)
        if e != ln:
            raise MsgError('bad ext data')
        if code == 1:
            if not isinstance(v, _UNI):
                raise MsgError('bad Dead')
            return Dead(v), j
        if type(v) is not list or len(v) != (3 if code == 2 else 2):
            raise MsgError('bad ext data')
        return cls(*v), j
    if d >= MAX_DEPTH:
        raise MsgError('nesting too deep')
    d += 1
    if k == 2:
        return _arr(b, i, d, n, ln)
    # Every entry takes at least two bytes: refuse counts that lie.
    if ln * 2 > n - i:
        _trunc()
    out = {}
    for _ in range(ln):
        key, i = _unp(b, i, d, n)
        v, i = _unp(b, i, d, n)
        try:
            out[key] = v
        except TypeError:
            raise MsgError('unhashable map key')
    return out, i


def _arr(b, i, d, n, ln):
    # The ln elements of an array at b[i:], at depth d (already checked).
    # The commonest small values are decoded inline: a call per element is
    # the decoder's main cost.
    if ln > n - i:
        _trunc()  # every element takes at least one byte: a count that lies
    out = []
    app = out.append
    for _ in range(ln):
        c = b[i]
        if not PY3:
            c = ord(c)
        if c < 0x80:
            app(c)
            i += 1
        elif 0xcc <= c <= 0xd3:  # an integer: a call's usual argument
            s = _SCALAR[c]
            j = i + 1 + s.size
            if j > n:
                _trunc()
            app(s.unpack_from(b, i + 1)[0])
            i = j
        elif 0xa0 <= c < 0xc0:
            j = i + 1 + (c & 31)
            if j > n:
                _trunc()
            app(b[i + 1:j].decode('utf-8'))
            i = j
        elif c == 0xc0:
            app(None)
            i += 1
        elif c == 0x80:  # {}: a call's usual kwargs
            app({})
            i += 1
        else:
            v, i = _unp(b, i, d, n)
            app(v)
    return out, i


def unpack(b):
    if type(b) is not _BYTES and not (PY3 and type(b) is bytearray):
        b = memoryview(b).tobytes()
    try:
        v, i = _unp(b, 0, 0, len(b))
    except (UnicodeDecodeError, struct.error, IndexError):
        raise MsgError('malformed value')
    if i != len(b):
        raise MsgError('trailing bytes')
    return v


# The encoded [module, class, function] that began the last call's data
# (its first bytes, from the array marker on), the three decoded, and
# where they end.
_LAST_CALL = [None, None, 0]
# A map marker of no entries (b[i] is an int on Python 3, a str on 2).
_EMPTY_MAP = 0x80 if PY3 else b'\x80'


def unpack_call(b):
    # CALL_FUNCTION data: [module, class or nil, function, args, kwargs].
    # Decoding the three names costs as much as the rest of a trivial
    # call's path, and calls in a row mostly name the same function: a
    # call whose data begins with the last one's encoded names reuses them.
    # Anything else is decoded in full (unpack).
    n = len(b)
    try:
        pre = _LAST_CALL[0]
        if pre is not None and b.startswith(pre):
            names, i = _LAST_CALL[1], _LAST_CALL[2]
        elif b[:1] != b'\x95':
            return unpack(b)
        else:
            mod, i = _unp(b, 1, 1, n)
            cls, i = _unp(b, i, 1, n)
            fn, i = _unp(b, i, 1, n)
            names = [mod, cls, fn]
            if type(mod) is _UNI and type(fn) is _UNI and (cls is None or type(cls) is _UNI):
                _LAST_CALL[:] = [b[:i], names, i]
        c = b[i]
        if not PY3:
            c = ord(c)
        if c == 0x91:  # one argument: a small integer inline, as _arr would
            if i + 1 >= n:
                _trunc()
            c = b[i + 1]
            if not PY3:
                c = ord(c)
            if c < 0x80:
                args, i = [c], i + 2
            elif 0xcc <= c <= 0xd3:
                s = _SCALAR[c]
                j = i + 2 + s.size
                if j > n:
                    _trunc()
                args, i = [s.unpack_from(b, i + 2)[0]], j
            else:
                args, i = _arr(b, i + 1, 2, n, 1)
        elif 0x90 <= c <= 0x9f:  # a short args array
            args, i = _arr(b, i + 1, 2, n, c - 0x90)
        else:
            args, i = _unp(b, i, 1, n)
        if b[i] == _EMPTY_MAP:  # past the end: IndexError, truncated
            kwargs, i = {}, i + 1
        else:
            kwargs, i = _unp(b, i, 1, n)
    except (UnicodeDecodeError, struct.error, IndexError):
        raise MsgError('malformed value')
    if i != n:
        raise MsgError('trailing bytes')
    return names + [args, kwargs]


# ---- Frames ---------------------------------------------------------------
_HDR = _S('>20sHHIII')
_FLD = _S('>HHIII')
# The length field's top bit: this frame's MAC follows its data (the
# header's 20 MAC bytes are zero), so its writer hashes each piece as it
# writes it instead of all of it first. See docs/PROTOCOL.md.
TRAILER = 0x80000000
# The length field's second bit: a bulk frame (a file chunk), whose data is
# covered_len:u32 covered bytes and whose MAC (in the header) covers the
# fields and `covered` only; see Bulk and docs/PROTOCOL.md. Never with
# TRAILER or BATCH, and never inside a batch.
BULK = 0x40000000
# We send frames this big or bigger with a trailing MAC, hashed and
# written TRAILER_PIECE bytes at a time; we accept either form at any size.
TRAILER_FROM = 1048576
TRAILER_PIECE = 262144
# The length field's bit 29: a batch frame, whose data is small frames
# (each its 16 fields and data, no MAC) under the batch's one MAC; its own
# routing fields are zero. See docs/PROTOCOL.md, "Batch frames". (Bit 30
# is BULK; an inner frame with it is refused as oversized.)
BATCH = 0x20000000
_FLAGS = TRAILER | BULK | BATCH
_LENGTH = BATCH - 1
# A batch we send holds at most this many data bytes (the Rust side's
# BATCH_MAX): its MAC is one Mac.one call.
BATCH_MAX = 16384
# A batch up to this size that is not all here yet waits in the stream's
# buffer for the next read (and is then handled inline, like the whole
# ones); a larger one (never ours) is read as a large frame is.
_BATCH_WAIT = 65536
# Held small replies (see Stream.seal) are written once this many frames
# or bytes wait, even while more calls are queued: a bound on a reply's
# wait and on the memory held, as before batches.
HOLD_FRAMES = 128
HOLD_BYTES = 262144
_NO_MAC = b'\0' * 20
_T36 = _BYTES(bytearray(x ^ 0x36 for x in range(256)))
_T5C = _BYTES(bytearray(x ^ 0x5c for x in range(256)))


# The direction byte and the frame's sequence number, MACed before its fields.
_SEQ = _S('>BQ')
if PY3:
    from itertools import count as _count, repeat as _repeat
    _imap = map
else:
    from itertools import count as _count, imap as _imap, repeat as _repeat
# Frames this big or bigger are MACed with OpenSSL's SHA-1 (6x faster),
# smaller ones with the interpreter's built-in one, so that a child that
# only ever sees small frames never loads libcrypto (3.5 MiB of RSS and
# 11 M instructions to import hashlib). SHA-1 is SHA-1: the choice is
# per frame and invisible on the wire.
BIG_FRAME = 16384
try:
    from _sha1 import sha1 as _sha1
except ImportError:
    try:
        from _sha import new as _sha1  # Python 2
    except ImportError:
        _sha1 = None
try:
    from _operator import _compare_digest as _same
except ImportError:
    try:
        from operator import _compare_digest as _same  # Python 2.7.7+
    except ImportError:
        def _same(a, b):
            r = len(a) ^ len(b)
            for x, y in zip(bytearray(a), bytearray(b)):
                r |= x ^ y
            return r == 0


if PY3:
    import _imp as _IMPORT_LOCK  # builtin, loaded by importlib's bootstrap
else:
    _IMPORT_LOCK = imp


def _openssl_sha1(io_thread):
    # OpenSSL's SHA-1 constructor, None for "not now", False if this Python
    # has none. Never called with a stream's write lock held. _hashlib
    # itself, not hashlib (which imports more), and only when Python's own
    # finders have it: our importer would ask the master for it otherwise.
    # Python 2's import lock is global: if another thread holds it (an
    # import waiting for GET_MODULE, whose reply the IO thread delivers)
    # importing on the IO thread would deadlock; not now, then.
    if '_hashlib' not in sys.modules:
        # Python 3 calls meta path finders under its global import lock
        # too: while our importer waits for a GET_MODULE reply (often a big
        # frame) an import here would deadlock until the import timeout.
        if io_thread and _IMPORT_LOCK.lock_held():
            return None
        if PY3:
            from importlib.machinery import PathFinder
            if '_hashlib' not in sys.builtin_module_names and not PathFinder.find_spec('_hashlib'):
                return False
        else:
            try:
                f = imp.find_module('_hashlib')[0]
            except ImportError:
                return False
            if f:
                f.close()
    try:
        import _hashlib
        return _hashlib.openssl_sha1
    except (ImportError, AttributeError):
        return False


def _pads(sha1, key):
    if len(key) > 64:
        key = sha1(key).digest()
    key = key.ljust(64, b'\0')
    return sha1(key.translate(_T36)), sha1(key.translate(_T5C))


class Mac(object):
    # One direction's MACs: frame n (from 0) has HMAC-SHA1(key, direction
    # || n:u64be || fields || data); see docs/PROTOCOL.md. HMAC is written
    # out (two SHA-1 states keyed once, copied per frame) because the hmac
    # module imports _hashlib and its copy() is Python code.
    def __init__(self, key, direction):
        self.key = key
        # Each frame's direction || n:u64be, in order: one C call per frame.
        self.seqs = _imap(_SEQ.pack, _repeat(bytearray(direction)[0]), _count())
        self.small = _sha1 and _pads(_sha1, key)
        self.big = None  # OpenSSL's, made by prepare(); False: there is none
        if not self.small:
            self.prepare(False)
            self.small = self.big or _pads(_need_sha1(), key)
        self.one = _one(self.small, self.seqs)

    def prepare(self, io_thread):
        # Before a frame of BIG_FRAME bytes or more, outside any lock: the
        # first one loads OpenSSL (an import must never run under wlock).
        if self.big is None:
            sha1 = _openssl_sha1(io_thread)
            if sha1 is not None:
                self.big = sha1 and _pads(sha1, self.key)

    def begin(self, n):
        # The MAC of the next frame, fed piece by piece (update the first
        # item with the fields, then the data), finished by end().
        pads = n >= BIG_FRAME and self.big or self.small
        i = pads[0].copy()
        i.update(next(self.seqs))
        return i, pads[1]

    def end(self, st):
        o = st[1].copy()
        o.update(st[0].digest())
        return o.digest()

    def __call__(self, chunks, n):
        if n < BIG_FRAME:
            return self.one(b''.join(chunks))
        st = self.begin(n)
        for c in chunks:
            st[0].update(c)
        return self.end(st)



def _one(pads, seqs):
    # Mac.one(b): the MAC of a small frame whose fields and data are the
    # bytes b. A closure, one Python call and the fewest C calls: this runs
    # twice per call, and with calls in flight the child's CPU per call is
    # the limit.
    ipad, opad = pads

    def one(b):
        i = ipad.copy()
        i.update(next(seqs) + b)
        o = opad.copy()
        o.update(i.digest())
        return o.digest()
    return one


def _seal_batch(mac, chunks, count, size):
    # The bytes of `count` small frames, each its fields and data, which
    # are `chunks` (size bytes in all): one batch frame under one MAC (see
    # docs/PROTOCOL.md, "Batch frames"), or the frame itself when alone.
    # chunks is consumed.
    if count > 1:
        chunks.insert(0, _FLD.pack(0, 0, 0, 0, size | BATCH))
    body = chunks[0] if len(chunks) == 1 else b''.join(chunks)
    return mac.one(body) + body


def _need_sha1():
    import hashlib  # neither SHA-1 above: whatever hashlib has
    return hashlib.sha1


class Bulk(object):
    # A bulk frame's data as delivered and forwarded: head is covered_len
    # and the covered part (MACed), body the bytes no frame MAC covers.
    # The router hands one only to a handle in router.bulk (a file
    # receiver, which checks the body against the file's SHA-256 in the
    # covered part before writing it); a relay forwards it as it came,
    # MACing the head only, and never hashes the body.
    __slots__ = ('head', 'body')

    def __init__(self, head, body):
        self.head, self.body = head, body

    def covered(self):
        return bytes(self.head[4:])

    def __len__(self):
        return len(self.head) + len(self.body)


def bulk(covered, body):
    return Bulk(_L32.pack(len(covered)) + covered, body)


def _bulk_data(data):
    # A received bulk frame's data as a Bulk, or None when its prefix
    # claims more than the frame holds. Views on Python 3 (no copy).
    if len(data) < 4:
        return None
    k = 4 + _L32.unpack_from(data, 0)[0]
    if k > len(data):
        return None
    if PY3:
        mv = memoryview(data)
        return Bulk(mv[:k], mv[k:])
    return Bulk(data[:k], data[k:])


_HAVE_READV = hasattr(os, 'readv')
# Frames at least this big are read in place (readv into their buffer):
# a file chunk (256 KiB) read as a list of os.read pieces and joined cost
# a copy of every byte and fresh pages (page faults) for every piece.
IN_PLACE = 131072
# Buffers of in-place frames up to this size are reused once nothing
# holds them any more (the receiver of a file chunk drops it once it is
# written): fresh 256 KiB buffers cost a page fault per 4 KiB.
REUSE_MAX = 4 << 20
_refs = sys.getrefcount


# Kept buffers (_SPARE, the streams' pools) are freed by the IO thread once
# no in-place frame has taken or made one for KEEP_IDLE seconds
# (_release_idle): one large transfer must not make a context that much
# bigger for life, and back-to-back ones still reuse them. _KEPT: in-place
# frames at the last look, and when the count last changed (None: nothing
# is watched, the IO thread polls without a timeout for it).
KEEP_IDLE = 2.0
_KEPT = [0, None]
_USES = [0]


def _kept():
    # An in-place frame takes or makes a buffer that may be kept.
    _USES[0] += 1
    if _KEPT[1] is None:
        _KEPT[1] = time.time()
        wake = getattr(broker, 'wake', None)
        if wake is not None:
            wake()  # the IO thread starts watching


def _release_idle():
    # IO thread, after each poll while _KEPT is watched. A frame being
    # read counts as a use (a slow sender's 64 MiB takes seconds).
    now = time.time()
    if _USES[0] != _KEPT[0] or _filling():
        _KEPT[0], _KEPT[1] = _USES[0], now
    elif now - _KEPT[1] >= KEEP_IDLE:
        _KEPT[1] = None  # from here on a new frame's _kept() wakes us
        _SPARE[0] = None  # a frame still using it holds its own reference
        for s in list(router.streams.values()):
            del s.pool[:]
        if _filling() or _SPARE[0] is not None:
            _KEPT[1] = now  # a frame began meanwhile: watch what it keeps


def _filling():
    return any(s.pend is not None for s in list(router.streams.values()))


def _frame_buffer(pool, n):
    # A buffer of n bytes for an in-place frame: a pooled one only we hold
    # (its count is the pool's reference and the call's), else a new one.
    _kept()
    if n <= REUSE_MAX and _REUSE[0]:
        for b in pool:
            if len(b) == n and _refs(b) == _ALONE + 1:
                return b
        b = bytearray(n)
        pool.append(b)
        if len(pool) > 4:
            del pool[0]
        return b
    return bytearray(n)


# The buffer the last large frame was read into. A fresh 64 MiB bytearray
# costs 16,384 page faults and a memset (35 ms of CPU here); once nothing
# but this list holds it (the frame was decoded and dropped) the next
# large frame of about its size is read into the same resident pages. One
# per process, so at most one frame's worth is kept.
_SPARE = [None]


def _alone():
    # What getrefcount says of an object only a local holds (2 up to 3.13).
    b = bytearray()
    return sys.getrefcount(b)


def _big_buffer(need):
    _kept()
    b, _SPARE[0] = _SPARE[0], None
    if b is not None and _REUSE[0] and need - 20 <= len(b) <= need and sys.getrefcount(b) == _ALONE:
        if len(b) < need:
            b.extend(_NO_MAC[:need - len(b)])  # within its allocation
        return b
    return bytearray(need)


_ALONE = _alone()
_REUSE = [True]


def _reuse_is_safe():
    # Checked once at start: reference counts are an implementation
    # detail (3.14 borrows local loads, so getrefcount reads lower), and
    # a buffer handed out while something still holds it would be
    # overwritten by the next frame. Reuse only where the counts tell a
    # held buffer from a free one exactly as assumed above.
    pool = [bytearray(16)]
    held = pool[0]
    if _frame_buffer(pool, 16) is held:
        return False
    del held, pool[1:]
    if _frame_buffer(pool, 16) is not pool[0]:
        return False
    _SPARE[0] = bytearray(16)
    held = _SPARE[0]
    if _big_buffer(16) is held:
        return False
    del held
    _SPARE[0] = bytearray(16)
    free = id(_SPARE[0])
    return id(_big_buffer(16)) == free


_REUSE[0] = _reuse_is_safe()
_KEPT[1] = None  # the check's buffers are gone


def _pieces(b, size):
    # Zero-copy slices of b (bytes, bytearray or a byte memoryview).
    if PY3:
        mv = memoryview(b)
        return [mv[i:i + size] for i in range(0, len(mv), size)]
    return [buffer(b, i, size) for i in range(0, len(b), size)]  # noqa: F821


def _write(fd, b):
    n = os.write(fd, b)
    if n < len(b):
        # Partial write: continue from a view, never re-slicing the bytes.
        mv = memoryview(b)
        while n < len(mv):
            n += os.write(fd, mv[n:])
    if fd == _WROTE[1]:
        _WROTE[0] = _now()  # a reply is out: the next call may come soon


def should_spin(now, last, window):
    # The rule, as econtext_actors::spin::SpinPolicy::should_spin: poll
    # again while less than the window has passed since the last write to
    # the parent. A child spins only after it has written (a reply), so an
    # idle child never does, and what it reads does not extend it.
    return 0 <= now - last < window


def _spin(p, may=None):
    # Polls p without blocking while the rule says so and may() (when
    # given) still holds, checked before every poll: its events, or []
    # once the window is over (the caller's blocking poll then sleeps).
    while should_spin(_now(), _WROTE[0], SPIN) and (may is None or may()):
        evs = p.poll(0)
        if evs:
            return evs
        _yield()
    return []


class Stream(object):
    # One link to a directly connected context: its fds, both MAC chains
    # and the frame parser. `down` is True when the far end is our child.
    def __init__(self, router, remote_id, rfd, wfd, key, down=False):
        self.router, self.remote_id, self.rfd, self.wfd = router, remote_id, rfd, wfd
        # What receives each verified frame: the router, or (for a child
        # stream, in econtext.parent) a checker in front of it. Looking it
        # up here costs what self.router.route did.
        self.on_frame = router.route
        self.tx = Mac(key, down and b'\0' or b'\1')
        self.rx = Mac(key, down and b'\1' or b'\0')
        self.wlock = _Lock()
        # Replies the main thread holds back while more calls are queued,
        # written together in one syscall (see _dispatch): the frames in
        # held are sealed already, so their order and MACs are fixed; the
        # small ones after them wait in batch (fields and data, no MAC) to
        # be sealed as one batch frame (_close_batch) before anything is
        # written or sealed after them.
        self.held = []
        self.batch = []
        self.blen = 0
        # Replies the main thread's _dispatch appends without the lock
        # while more calls are queued (fields and data, as in batch):
        # whoever next seals or writes under wlock moves them into batch
        # first (_take_replies).
        self.replies = []
        # How many small frames and bytes seal has held since the last
        # write (in held and batch): past HOLD_FRAMES or HOLD_BYTES the
        # held replies go out at once, whatever the call queue holds (a
        # hint only: a count an interrupt leaves stale costs one early
        # or late write, never a wrong frame). Every write of what is held
        # resets them (_write_held, and the large and bulk frames' sends).
        self.hframes = 0
        self.hbytes = 0
        # A batch never outgrows what the receiver takes as one frame.
        self.bmax = min(BATCH_MAX, router.max_size)
        self.buf = b''
        self.pend = None
        self.pmac = None
        self.pbulk = 0
        self.pool = []
        self.rpoll = None
        self.closed = False

    def send(self, dst, src, handle, reply_to, chunks):
        # Called from any thread; the lock also guards the send MAC state,
        # so the main thread writes its replies here with no extra hop.
        if type(chunks) is not list:
            if type(chunks) is Bulk:
                return self._send_bulk(dst, src, handle, reply_to, chunks)
            chunks = [chunks]
        n = sum(map(len, chunks))
        if n > self.router.max_size:
            raise MsgError('message of %d bytes exceeds max_message_size' % n)
        f = _FLD.pack(dst, src, handle, reply_to, n)
        if n >= BIG_FRAME:
            return self._send_big(f, chunks, n)
        self.seal(f + b''.join(chunks), getattr(_HOLD, 'on', False))

    def _send_bulk(self, dst, src, handle, reply_to, b):
        # MAC over the fields (BULK set) and the head only, in the header;
        # then the body as it is (a file chunk: never hashed here).
        head, body = b.head, b.body
        n = len(head) + len(body)
        if n > self.router.max_size:
            raise MsgError('message of %d bytes exceeds max_message_size' % n)
        f = _FLD.pack(dst, src, handle, reply_to, n | BULK)
        if len(head) >= BIG_FRAME:
            self.tx.prepare(False)
        with self.wlock:
            if self.closed:
                raise EOFError('stream to %d is closed' % self.remote_id)
            self._close_batch()  # before this frame takes its number
            held = self.held
            try:
                held.append(self.tx((f, head), len(head)))
                held.append(f)
                held.append(head)
                _write(self.wfd, b''.join(held))
                del held[:]
                self.hframes = self.hbytes = 0  # what seal held went too
                _write(self.wfd, body)
            except BaseException:
                # As in seal: part of a frame may be out.
                self.closed = True
                del held[:]
                raise

    def seal(self, body, hold):
        # A small frame (its fields and data in body) is sealed in one
        # piece, and held back as one item while the main thread has more
        # calls queued (hold: a call's own sends). _dispatch calls this
        # directly for a reply when the queue is empty (send's checks cost
        # as much as the rest) and holds the others in replies.
        with self.wlock:
            if self.closed:
                raise EOFError('stream to %d is closed' % self.remote_id)
            if self.replies:
                self._take_replies()
            batch, n = self.batch, len(body)
            if batch:
                if self.blen + n > self.bmax:
                    self._close_batch()
            elif hold and not self.held:
                broker.hold(self)
            batch.append(body)
            self.blen += n
            if hold:
                # Held until the queue is empty, or until enough is held
                # (counted across batches: one batch alone never reaches
                # HOLD_FRAMES when its replies are over bmax / 128 bytes).
                self.hframes += 1
                self.hbytes += n
                if self.hframes < HOLD_FRAMES and self.hbytes < HOLD_BYTES:
                    return
            self._write_held()

    def _take_replies(self):
        # Under wlock: the main thread's unsealed replies (see replies)
        # into batch, in order, a batch frame sealed whenever one is full.
        # Copying then deleting what was copied loses no append racing
        # it; one that lands after the copy stays, and the broker is told
        # (the appender, finding others there, did not tell it).
        replies = self.replies
        items = replies[:]
        try:
            del replies[:len(items)]
            n = sum(_imap(len, items))
            if self.blen + n <= self.bmax:
                self.batch.extend(items)
                self.blen += n
            else:
                for body in items:
                    if self.batch and self.blen + len(body) > self.bmax:
                        self._seal_held_batch()
                    self.batch.append(body)
                    self.blen += len(body)
        except BaseException:
            # An interrupt midway may have lost replies to earlier calls:
            # their callers must learn it from the stream's end, not wait.
            self.closed = True
            raise
        if replies:
            broker.hold(self)

    def _close_batch(self):
        # Under wlock: the small frames waiting in batch (and replies),
        # sealed (their sequence number taken) as one batch frame, or
        # alone if one.
        if self.replies:
            self._take_replies()
        self._seal_held_batch()

    def _seal_held_batch(self):
        batch = self.batch
        if batch:
            # The length from the parts (at most HOLD_FRAMES of them), not
            # blen, which an interrupt inside seal can leave short.
            self.held.append(_seal_batch(self.tx, batch, len(batch), sum(_imap(len, batch))))
            del batch[:]
            self.blen = 0

    def _write_held(self):
        # Under wlock: everything held, in one write.
        held = self.held
        self.hframes = self.hbytes = 0
        try:
            self._close_batch()
            _write(self.wfd, held[0] if len(held) == 1 else b''.join(held))
        except BaseException:
            # Some bytes may be out and the frames' sequence numbers
            # are spent (an interrupt included): the stream is done,
            # and nothing may be written again by a later flush.
            self.closed = True
            del held[:], self.batch[:]
            del self.replies[:]
            raise
        del held[:]

    def _send_big(self, f, chunks, n):
        if n >= TRAILER_FROM:
            return self._send_trailing(f, chunks, n)
        chunks.insert(0, f)
        self.tx.prepare(False)
        hold = n < 65536 and getattr(_HOLD, 'on', False)
        with self.wlock:
            if self.closed:
                raise EOFError('stream to %d is closed' % self.remote_id)
            self._close_batch()  # before this frame takes its number
            m = self.tx(chunks, n)
            held = self.held
            try:
                if hold:
                    if not held:
                        broker.hold(self)
                    held.append(m)
                    held.extend(chunks)
                    if len(held) < 256:
                        return
                    chunks = []
                elif n < 262144 or held:
                    held.append(m)
                    held.extend(chunks)
                    chunks = []
                else:
                    held.append(m)
                _write(self.wfd, b''.join(held))
                del held[:]
                self.hframes = self.hbytes = 0  # what seal held went too
                for c in chunks:
                    _write(self.wfd, c)
            except BaseException:
                # As in seal: part of a frame may be out.
                self.closed = True
                del held[:]
                raise

    def _send_trailing(self, f, chunks, n):
        # Header (MAC bytes zero, TRAILER set), then the data, each large
        # chunk hashed one piece at a time just before that piece is
        # written (the hash runs while the peer reads what went before),
        # then the MAC. Small chunks and anything held go in one write.
        f = f[:12] + _L32.pack(n | TRAILER)
        self.tx.prepare(False)
        with self.wlock:
            if self.closed:
                raise EOFError('stream to %d is closed' % self.remote_id)
            self._close_batch()  # before this frame takes its number
            st = self.tx.begin(n)
            h, fd, out = st[0], self.wfd, self.held
            self.hframes = self.hbytes = 0  # what seal held goes first
            h.update(f)
            out.append(_NO_MAC + f)
            try:
                small = 0
                for c in chunks:
                    if len(c) < TRAILER_PIECE:
                        # Gathered, but never more than a piece at once.
                        h.update(c)
                        out.append(c)
                        small += len(c)
                        if small >= TRAILER_PIECE:
                            _write(fd, b''.join(out))
                            del out[:]
                            small = 0
                        continue
                    _write(fd, b''.join(out))
                    del out[:]
                    small = 0
                    for piece in _pieces(c, TRAILER_PIECE):
                        h.update(piece)
                        _write(fd, piece)
                out.append(self.tx.end(st))
                _write(fd, b''.join(out))
                del out[:]
            except BaseException:
                # Part of a frame may be out and its sequence number is
                # spent: nothing more can go on this stream (an interrupt
                # in the main thread included), and nothing half-made may
                # wait in held for the next flush.
                self.closed = True
                del out[:]
                raise

    def flush(self):
        with self.wlock:
            if (self.held or self.batch or self.replies) and not self.closed:
                try:
                    self._write_held()
                except EnvironmentError:
                    pass  # closed by _write_held

    def on_read(self):
        p = self.pend
        if p is not None and type(p) is not list:
            # Mid-way through a large frame: read straight into its buffer
            # (an os.read first would copy every byte twice).
            return self._readv()
        try:
            # 64 KiB stays under malloc's mmap threshold: a 256 KiB read
            # cost an mmap, an mremap and a munmap on every small frame.
            s = os.read(self.rfd, p is not None and 262144 or 65536)
        except EnvironmentError as e:
            return self.disconnect('read error: %s' % (e,))
        if not s:
            return self.disconnect(None)
        if p is not None:
            # Completing a large frame: chunks are joined once, not per read.
            p.append(s)
            self.plen += len(s)
            if self.plen < self.need:
                return
            s = b''.join(p)
            self.pend = None
            n, need = self.pn, self.need
            self._frame(self.phdr, self.pfld, s if len(s) == n else s[:n], None,
                        need > n and s[n:need] or None, self.pbulk)
            s = s[need:]
        elif self.buf:
            s = self.buf + s
        self._parse(s)

    def _parse(self, s):
        r = self.router
        # Calls to us from an ancestor down the parent stream go straight
        # onto the call queue (what route, _local and _queue_call would do,
        # a third of the cost of reading a call), and the main thread is
        # woken once for all of them, when this read is parsed.
        if self is not getattr(r, 'parent', None) or self.on_frame != r.route:
            return self._parse_frames(s, None, None, None)
        calls = r.calls
        try:
            return self._parse_frames(s, calls.q.append, r.id, r.ancestors)
        finally:
            # As _Queue.put does, for everything queued here (the main
            # thread may have taken some already: waking it is harmless).
            if calls.q and calls.lk.locked():
                calls.put_wake()

    def _parse_frames(self, s, queue, me, anc):
        pos, end = 0, len(s)
        unhdr, limit, one, on_frame = _HDR.unpack_from, self.router.max_size, self.rx.one, self.on_frame
        small = min(BIG_FRAME, limit + 1)
        # An offset walks the buffer: slicing off each frame would copy the
        # rest every time (quadratic with thousands of small frames).
        while end - pos >= 36 and not self.closed:
            mac, dst, src, handle, reply_to, n = h = unhdr(s, pos)
            j = pos + 36 + n
            if n < small and j <= end:
                # A whole small frame (the common case, inlined: with
                # thousands of calls in flight this loop is per call).
                if not _same(one(s[pos + 20:j]), mac):
                    return self.disconnect('bad MAC on frame from %d' % src)
                if handle == CALL_FUNCTION and dst == me and src in anc:
                    queue((src, reply_to, s[pos + 36:j]))
                else:
                    try:
                        on_frame(dst, src, handle, reply_to, s[pos + 36:j], self)
                    except Exception:
                        LOG.exception('routing frame %r failed', h[1:])
                pos = j
                continue
            need = n
            flags = n & _FLAGS
            if flags:
                n -= flags
                need = n
                if flags & TRAILER:
                    need = n + 20  # the MAC follows the data
            if n > limit:
                return self.disconnect('frame of %d bytes exceeds max_message_size' % n)
            # BULK: the MAC covers its head only (_frame). Never with
            # TRAILER or BATCH: its MAC is in the header, and it is never
            # batched.
            bulk = flags & BULK
            if bulk and flags != BULK:
                return self.disconnect('bad MAC on frame from %d (bulk with another flag)' % src)
            if flags & BATCH:
                fault = (flags & TRAILER and 'trailing' or h[1:5] != (0, 0, 0, 0) and 'addressed'
                         or not n and 'empty')
                if fault:
                    return self.disconnect('malformed batch frame: %s' % fault)
                j = pos + 36 + n
                if j <= end:
                    # A whole batch (what a busy master sends): verified
                    # once, then each of its frames as above.
                    if not _same(one(s[pos + 20:j]), mac):
                        return self.disconnect('bad MAC on frame from %d' % src)
                    if not self._unbatch(s, pos + 36, j, queue, me, anc):
                        return
                    pos = j
                    continue
                if n <= _BATCH_WAIT:
                    break  # the rest of a small batch comes with the next read

            if need > n and h[0] != _NO_MAC:
                # No MAC covers a trailing frame's header MAC bytes, so
                # they must be zero: no bit of a frame changes unnoticed.
                return self.disconnect('bad MAC on frame from %d (trailer)' % h[2])
            fld = s[pos + 20:pos + 36]
            pos += 36
            if end - pos < need:
                self.phdr, self.pfld, self.pn, self.need = h, fld, n, need
                self.pbulk = bulk
                self.plen = end - pos
                self.buf = b''
                if _HAVE_READV and n >= IN_PLACE:
                    # Read the rest in place: no chunk list, no join copy;
                    # MACed as it arrives, so SHA-1 runs while the sender
                    # is still writing the rest.
                    # Frames up to REUSE_MAX with the MAC in the header
                    # take a buffer of the stream's pool; the rest (a
                    # trailing MAC's frame shrinks its buffer once read)
                    # the process's one spare for large frames.
                    if need == n and n <= REUSE_MAX:
                        self.pend = _frame_buffer(self.pool, need)
                    else:
                        self.pend = _big_buffer(need)
                    self.pend[:self.plen] = memoryview(s)[pos:]
                    if not bulk:  # a bulk frame's head is MACed whole
                        self.rx.prepare(True)
                        self.pmac = self.rx.begin(n)
                        self.pmac[0].update(fld)
                        self.pmac[0].update(memoryview(self.pend)[:min(self.plen, n)])
                else:
                    self.pend = [s[pos:]]
                return
            self._frame(h, fld, s[pos:pos + n], None, need > n and s[pos + n:pos + need] or None,
                        bulk)
            pos += need
        self.buf = s[pos:]

    def _unbatch(self, s, pos, end, queue, me, anc):
        # The frames of a verified batch, s[pos:end], each handled as if it
        # had come alone (queue, me, anc as in _parse_frames). Every one is
        # checked first: a malformed batch closes the stream with none of
        # its frames handled. False when the stream is closed.
        b = s[pos:end]
        unfld, limit, p, e, n = _FLD.unpack_from, self.router.max_size, 0, len(b), 0
        # The usual batch is all calls to us from an ancestor: checked and
        # gathered for the call queue in one pass. Anything else in it
        # (mixed) and every frame goes the long way below, in order.
        calls, mixed = [], queue is None
        add = calls.append
        try:
            while p < e:
                dst, src, handle, reply_to, n = unfld(b, p)
                if n > limit:
                    break
                j = p + 16 + n
                if handle == CALL_FUNCTION and dst == me and src in anc:
                    add((src, reply_to, b[p + 16:j]))
                else:
                    mixed = True
                p = j
        except struct.error:
            pass  # fields past the end
        if p != e:
            if n & BATCH:
                return self.disconnect('malformed batch frame: nested')
            if n & TRAILER:
                return self.disconnect('malformed batch frame: inner_trailer')
            if n > limit:
                return self.disconnect('frame of %d bytes exceeds max_message_size' % n)
            return self.disconnect('malformed batch frame: runs_past')
        if not mixed:
            deque(_imap(queue, calls), 0)  # queue them all, at C speed
            return True
        on_frame, p = self.on_frame, 0
        while p < e:
            dst, src, handle, reply_to, n = h = unfld(b, p)
            j = p + 16 + n
            if handle == CALL_FUNCTION and dst == me and src in anc:
                queue((src, reply_to, b[p + 16:j]))
            else:
                try:
                    on_frame(dst, src, handle, reply_to, b[p + 16:j], self)
                except Exception:
                    LOG.exception('routing frame %r failed', h)
                if self.closed:
                    return False
            p = j
        return True

    def _ready(self):
        rp = self.rpoll
        if rp is None:
            rp = self.rpoll = select.poll()
            rp.register(self.rfd, select.POLLIN)
        return bool(rp.poll(0))

    def _readv(self):
        # Reads the rest of a large frame (and its trailing MAC, if any)
        # straight into its buffer, MACing the data as it comes.
        p, n, need = self.pend, self.pn, self.need
        mv = memoryview(p)
        h = self.pmac and self.pmac[0]
        try:
            while self.plen < need:
                a = self.plen
                r = os.readv(self.rfd, [mv[a:]])
                if not r:
                    return self.disconnect(None)
                self.plen += r
                if a < n and h:
                    h.update(mv[a:min(a + r, n)])
                # Back to poll unless more is ready right away (poll,
                # not select: select refuses fds from 1024 up, which an
                # intermediate with many children reaches).
                if not self._ready():
                    break
        except EnvironmentError as e:
            return self.disconnect('read error: %s' % (e,))
        finally:
            mv.release()
        if self.plen >= need:
            self.pend = None
            got = None
            if need > n:
                got = bytes(p[n:])
                del p[n:]  # a small shrink: the buffer stays where it is
            if need > n or n > REUSE_MAX:
                _SPARE[0] = p  # not a pool buffer: the next large frame's
            pmac, self.pmac = self.pmac, None
            self._frame(self.phdr, self.pfld, p, pmac and self.rx.end(pmac), got, self.pbulk)

    def _frame(self, h, fld, data, mac=None, got=None, bulk=0):
        # got: the frame's trailing MAC, or None for the one in its header.
        if self.closed:
            return
        if bulk:
            # The MAC covers the fields and the head (covered_len and the
            # covered part) only; the body goes on as a Bulk, which only a
            # file receiver's handle takes (Router._local).
            data = _bulk_data(data)
            if data is None:
                return self.disconnect('bad MAC on frame from %d (bulk prefix)' % h[2])
            k = len(data.head)
            if k >= BIG_FRAME:
                self.rx.prepare(True)
            mac = self.rx((fld, data.head), k)
        n = len(data)
        if mac is None:
            if h[5] & BATCH:
                mac = self.rx.one(fld + bytes(data))  # no OpenSSL for a batch
            else:
                if n >= BIG_FRAME:
                    self.rx.prepare(True)
                mac = self.rx((fld, data), n)
        if not _same(mac, got or h[0]):
            return self.disconnect('bad MAC on frame from %d' % h[2])
        if h[5] & BATCH:
            return self._unbatch(data, 0, n, None, None, None)
        try:
            self.on_frame(h[1], h[2], h[3], h[4], data, self)
        except Exception:
            LOG.exception('routing frame %r failed', h[1:])

    def disconnect(self, reason):
        if self.closed and self.rfd is None:
            return
        if reason:  # logged first, while the stream can still carry it
            LOG.error('closing stream to %d: %s', self.remote_id, reason)
        self.closed = True
        broker.del_reader(self.rfd)
        os.close(self.rfd)
        # Never block here: a writer stuck on a full pipe holds the lock.
        if self.wlock.acquire(False):
            if self.wfd != self.rfd:
                os.close(self.wfd)
            self.wlock.release()
        self.rfd = None
        self.router.on_disconnect(self)


class _Thread(object):
    # The little of threading.Thread the core needs, on _thread. Like a
    # daemon thread, it does not hold the process up at exit.
    def __init__(self, target, args=()):
        self.target, self.args, self.ident = target, args, None
        self.running = _Lock()
        self.started = False

    def start(self):
        self.started = True
        self.running.acquire()
        _thread.start_new_thread(self._run, ())

    def _run(self):
        self.ident = _thread.get_ident()
        try:
            self.target(*self.args)
        finally:
            self.running.release()

    def is_current(self):
        return _thread.get_ident() == self.ident

    def join(self, timeout):
        # Python 2 locks have no acquire timeout: poll, bounded.
        end = time.time() + timeout
        while not self.running.acquire(False):
            if time.time() > end:
                return
            time.sleep(0.005)
        self.running.release()


class _Queue(object):
    # A deque plus a lock used as a wake-up flag. Cheaper than Queue.Queue
    # (no Condition, no per-wait lock allocation): the main thread's wake-up
    # is on the path of every call.
    # Called after a put: router.calls' wakes a main thread that is reading
    # the parent stream instead of waiting here (Broker.lead).
    nudge = None

    def __init__(self):
        self.q = deque()
        self.lk = _Lock()
        self.lk.acquire()

    def put(self, x, first=False):
        if first:
            self.q.appendleft(x)
        else:
            self.q.append(x)
        # Released already (the getter has not drained the queue yet): no
        # release, whose error would cost more than the put itself with
        # thousands of calls in flight. A put racing another may still
        # find it released.
        if self.lk.locked():
            self.put_wake()
        if self.nudge is not None:
            self.nudge()

    def put_wake(self):
        try:
            self.lk.release()
        except Exception:
            pass

    def get(self, timeout=None):
        # With a timeout: None when nothing came in time. Python 2's lock
        # cannot wait with a timeout, so it polls, backing off like its
        # own Condition.wait does.
        if timeout is not None:
            end, nap = time.time() + timeout, 0.0005
            while not self.q:
                left = end - time.time()
                if left <= 0:
                    return None
                if PY3:
                    self.lk.acquire(True, left)
                elif not self.lk.acquire(False):
                    time.sleep(min(nap, left))
                    nap = min(nap * 2, 0.05)
        while not self.q:
            self.lk.acquire()
        return self.q.popleft()


ANY = 'any'  # Receiver(accept=ANY): messages from every source


class Receiver(object):
    # User-facing: a handle whose messages can be waited for; .sender can
    # be passed to any context in the tree. Like the Rust side's Channel it
    # takes messages only from its peer: `accept` (a context ID or a list of
    # them), by default the context whose call made it (else our parent),
    # and always this context itself. Others are refused, counted and
    # logged once per source per interval. accept=ANY takes any source.
    def __init__(self, handle=None, accept=None):
        if accept is None:
            accept = router.caller if router.caller is not None else parent_id
        if accept != ANY:
            accept = set(accept if isinstance(accept, (list, tuple, set)) else [accept])
            accept.add(context_id)
        self.q = _Queue()
        self.handle = router.add_handler(lambda src, reply_to, obj: self.q.put(obj), handle,
                                         accept=None if accept == ANY else accept)
        self.sender = Sender(context_id, self.handle)

    def get(self, timeout=None):
        # With a timeout: None when nothing came in time.
        return self.q.get(timeout)

    def close(self):
        router.del_handler(self.handle)


class Router(object):
    def __init__(self, cfg):
        self.id = cfg['context_id']
        self.ancestors = list(cfg.get('ancestors') or [cfg['parent_id']])
        # At most 512 MiB - 1: the length field's top bits are flags.
        self.max_size = min(cfg.get('max_message_size') or 134217728, _LENGTH)
        self.handlers = {}
        # Handles that take bulk frames (file receivers': they check the
        # bytes themselves); every other handle refuses them.
        self.bulk = set()
        self.streams = {}
        self.routes = {}
        self.parent = None
        self._rand = b''  # os.urandom bytes not yet used for handles
        self.refused = {}  # source -> replies refused from it (forged, misdirected)
        self._warned = {}  # (what, source) -> [when it was last logged, not logged since]
        self._wlock = _Lock()
        self._wforgot = 0  # not logged by pairs forgotten since the last warning
        self.lock = _Lock()
        self.calls = _Queue()
        self.lost = False
        self.caller = None  # the context whose call the main thread runs
        h = self.handlers
        h[CALL_FUNCTION] = self._queue_call
        h[SHUTDOWN] = lambda src, rt, data: self.calls.put(None, True)
        h[ADD_ROUTE] = self._add_route
        h[SPAWN] = self._spawn

    def _queue_call(self, src, reply_to, data):
        # _Queue.put inlined: this runs once per call.
        calls = self.calls
        calls.q.append((src, reply_to, data))
        if calls.lk.locked():
            calls.put_wake()

    def _new_handle(self):
        # Under self.lock. Unpredictable (a guessed handle is how a hostile
        # context would slip a reply in): random in [FIRST_DYNAMIC, 2**32),
        # never one in use. os.urandom is read 4 KiB at a time.
        while True:
            if len(self._rand) < 4:
                self._rand = os.urandom(4096)
            h = struct.unpack('>I', self._rand[:4])[0]
            self._rand = self._rand[4:]
            if h >= FIRST_DYNAMIC and h not in self.handlers:
                return h

    def add_handler(self, fn, handle=None, persist=True, accept=None):
        # fn(src, reply_to, obj) runs on the thread reading the stream (the
        # IO thread, or an idle main thread leading: Broker.lead); it must not block
        # or import. On shutdown it receives Dead. `accept`: the context a
        # reply is awaited from; frames from anyone else are refused
        # (Dead only from ourselves, an ancestor or a context on the path
        # to it), counted and logged, and a one-shot handle stays armed
        # for the real reply. A set: any of those sources. None: any source.
        with self.lock:
            if handle is None:
                handle = self._new_handle()
            self.handlers[handle] = None  # reserved
        awaited = accept if isinstance(accept, (set, frozenset)) else (accept,)

        def cb(src, reply_to, data):
            obj = data if isinstance(data, Dead) else unpack(data)
            if accept is not None and src not in awaited and \
                    not [a for a in awaited if self._may_bounce(a, src, obj)]:
                return self._refuse(src, handle)
            if not persist:
                self.handlers.pop(handle, None)
            fn(src, reply_to, obj)
        self.handlers[handle] = cb
        return handle

    def _via(self, dst):
        return self.streams.get(dst) or self.streams.get(self.routes.get(dst)) or self.parent

    def _may_bounce(self, awaited, src, obj):
        # Dead for a call to `awaited` may come from ourselves (no route),
        # from an ancestor (trusted), or from a context between us and a
        # descendant we called (routed down the same child stream).
        if not isinstance(obj, Dead):
            return False
        if src == self.id or src in self.ancestors:
            return True
        via = self._via(awaited)
        return via is not self.parent and self._via(src) is via

    def _refuse(self, src, handle):
        self.refused[src] = self.refused.get(src, 0) + 1
        self.warn_once('reply', src, 'refused a reply to handle %d from context %d, '
                       'which it was not awaited from (%d so far)', handle, src, self.refused[src])

    def warn_once(self, what, src, msg, *args):
        # At most one warning per kind and source every 10 s, saying how
        # many were not logged before it: a hostile child must not flood
        # the log through us. At most 1024 (kind, source) pairs are
        # remembered (then the oldest half goes, and what they had not
        # logged is told with the next warning logged).
        now = _mono()
        with self._wlock:  # any thread routes; logged outside it
            w = self._warned.get((what, src))
            if w is not None and not _due(now, w[0], 10):
                w[1] += 1
                return
            if w is not None:
                del self._warned[(what, src)]  # its count goes with this one
            if len(self._warned) >= 1024:
                for k in sorted(self._warned, key=lambda k: self._warned[k][0])[:512]:
                    self._wforgot += self._warned.pop(k)[1]
            self._warned[(what, src)] = [now, 0]
            forgot, self._wforgot = self._wforgot, 0
        if w is not None and w[1]:
            msg += ' (and %d more like it not logged)'
            args += (w[1],)
        if forgot:
            msg += ' (and %d other warnings not logged, of kinds and sources forgotten since)'
            args += (forgot,)
        LOG.warning(msg, *args)

    def del_handler(self, handle):
        self.handlers.pop(handle, None)
        self.bulk.discard(handle)

    def send(self, dst, handle, obj, reply_to=0):
        self.route(dst, self.id, handle, reply_to, packl(obj))

    def route(self, dst, src, handle, reply_to, data, via=None):
        if dst == self.id:
            return self._local(src, handle, reply_to, data, via)
        s = self.streams.get(dst) or self.streams.get(self.routes.get(dst)) or self.parent
        if s is None or s is via or s.closed:
            self.warn_once('no_route', src, 'no route to %d for handle %d from %d', dst, handle, src)
            self._dead(src, reply_to, 'no route to %d' % dst)
        else:
            s.send(dst, src, handle, reply_to, data)

    def _dead(self, dst, reply_to, reason):
        self._reply(dst, reply_to, Dead(_UNI(reason)))

    def _reply(self, dst, reply_to, obj):
        if reply_to:
            try:
                self.route(dst, self.id, reply_to, 0, packl(obj))
            except Exception:
                pass

    def _local(self, src, handle, reply_to, data, via):
        if type(data) is Bulk and handle not in self.bulk and handle in self.handlers:
            # Bytes no MAC covered, for a handle that would not check them
            # (to no handle at all, a late chunk of a finished transfer:
            # "no handler", below).
            self.refused[src] = self.refused.get(src, 0) + 1
            self.warn_once('bulk', src, 'refused a bulk frame for handle %d from context %d: '
                           'not a file receiver (%d refused so far)', handle, src, self.refused[src])
            return self._dead(src, reply_to, 'refused: bulk frame for handle %d' % handle)
        if handle == DEL_ROUTE:
            # Deaths travel up: DEL_ROUTE is honoured only from a child
            # stream (econtext.parent's ChildStream applies it for that
            # child's subtree before it gets here). From our parent, or a
            # sibling through it, it is refused.
            return self.warn_once('del_route', src, 'refused DEL_ROUTE from context %d: '
                                  'not from a child stream', src)
        if handle in _AUTH and (via is None or via is not self.parent or src not in self.ancestors):
            self.warn_once('refused', src, 'refused message for handle %d from context %d', handle, src)
            return self._dead(src, reply_to, 'refused: handle %d from context %d' % (handle, src))
        fn = self.handlers.get(handle)
        if fn is None:
            self.warn_once('no_handler', src, 'no handler for handle %d (from %d)', handle, src)
            return self._dead(src, reply_to, 'no handler %d in context %d' % (handle, self.id))
        fn(src, reply_to, data)

    def _add_route(self, src, reply_to, data):
        target, via = unpack(data)
        self.routes[target] = via

    def _spawn(self, src, reply_to, data):
        # The code for children (econtext.parent) is fetched on first use,
        # and the IO thread must never import: a worker thread does it all.
        _Thread(_spawn, (src, reply_to, data)).start()

    def on_disconnect(self, stream):
        self.streams.pop(stream.remote_id, None)
        for t, v in list(self.routes.items()):
            if v == stream.remote_id:
                del self.routes[t]
        if stream is self.parent:
            self.lost = True
            # Waiters (imports, receivers) must never hang on a dead parent.
            for h, fn in list(self.handlers.items()):
                if h >= FIRST_DYNAMIC:
                    try:
                        fn(self.parent.remote_id, 0, Dead(u'parent disconnected'))
                    except Exception:
                        pass
            self.handlers.clear()
            self.bulk.clear()


class Broker(object):
    # The IO thread: one poll loop over the parent stream, the IoLogger
    # pipes and a wake pipe. Runs handlers; never imports, never blocks on
    # the main thread.
    def __init__(self):
        self.readers = {}
        self.poller = select.poll()
        self.wr, self.ww = [_cloexec(fd) for fd in os.pipe()]
        self.add_reader(self.wr, self._woken)
        self.pending = deque()
        self.stopping = False
        self.held = set()
        # When the streams in held began holding (a hint: a race between
        # hold and _flush_held makes it early or late by one episode).
        self.held_since = 0.0
        self.iologgers = []
        self.thread = _Thread(self._run)
        # Leader/follower reading of the parent stream (add_parent, lead):
        # an epoll set holding only its fd, which the IO thread polls and
        # an idle main thread switches off; rlock is held by whichever
        # thread reads the stream; leader is the main thread's id while it
        # reads; paused: econtext.parent stopped reading (flow control).
        self.ep = self.leader = self.pfd = None
        self.paused = False
        # The IO thread's poll of the parent is switched off (quiet, lead).
        self.off = False

    def add_reader(self, fd, cb, mask=select.POLLIN):
        self.readers[fd] = cb
        self.poller.register(fd, mask)

    def del_reader(self, fd):
        if self.readers.pop(fd, None):
            self.poller.unregister(fd)
        if self.ep is not None and fd is not None and fd == self.pfd:
            # Before the parent's fd is closed: its socket may stay open
            # through the write fd, and epoll would go on reporting it.
            self.pfd = None
            for p in self.ep, self.mpoll:
                try:
                    p.unregister(fd)
                except (EnvironmentError, KeyError, ValueError):
                    pass

    def add_parent(self, s):
        # Reads the parent stream s. With epoll (Linux), through a set of
        # its own, so that an idle main thread can take reading over
        # (lead): one wake-up per call instead of two (the IO thread's,
        # then the main thread's). Elsewhere the IO thread alone reads it.
        ep = getattr(select, 'epoll', None)
        if ep is None:
            return self.add_reader(s.rfd, s.on_read)
        self.ep, self.pfd, self.rlock = ep(), s.rfd, _Lock()
        _cloexec(self.ep.fileno())
        self.ep.register(s.rfd, select.EPOLLIN)
        self.add_reader(self.ep.fileno(), self._parent_ready)
        self.mpoll = select.poll()
        self.mwr, self.mww = [_cloexec(fd) for fd in os.pipe()]
        self.mpoll.register(s.rfd, select.POLLIN)
        self.mpoll.register(self.mwr, select.POLLIN)
        router.calls.nudge = self._nudge

    def _parent_ready(self):
        # IO thread: the parent stream was readable. Not when the main
        # thread reads it: it switched this off, but a poll that had
        # already returned, or a hangup (always reported), still gets here.
        # The main thread may also have led and read everything since this
        # poll returned: ask again, without waiting, before a read that
        # would block (the fd is blocking) with IoLoggers and held replies
        # unserved. The set reports EPOLLIN only while it is switched on,
        # and hangups always.
        if self.rlock.acquire(False):
            try:
                if router.parent.rfd is not None and self.ep.poll(0):
                    router.parent.on_read()
            finally:
                self.rlock.release()

    def read_parent(self, on):
        # econtext.parent's flow control (IO thread): stop or resume
        # reading the parent stream; hangups and errors are still seen.
        self.paused = not on
        fd = router.parent.rfd
        if fd is not None:
            if self.ep is not None:
                self.ep.modify(fd, on and select.EPOLLIN or 0)
            else:
                self.poller.modify(fd, on and select.POLLIN or 0)

    def lead(self, q):
        # The main thread with no call queued: rather than sleep until the
        # IO thread has read and queued the next call (a wake-up of the IO
        # thread, then one of ours, on the path of every call), it reads
        # the parent stream itself until something is queued, then gives
        # reading back to the IO thread before running it, so that a call
        # that blocks or imports has the IO thread reading for it. Not in
        # a parent of other contexts (econtext.parent's flow control is
        # the IO thread's), nor without epoll. Frames read here are routed
        # exactly as the IO thread routes them (handlers never block).
        s = router.parent
        if self.ep is None or s.rfd is None or 'econtext.parent' in sys.modules:
            self.on()
            return q.get()
        if not self.off:
            try:
                self.ep.modify(s.rfd, 0)  # the IO thread no longer wakes for it,
            except EnvironmentError:
                return q.get()
            self.off = True
        self.rlock.acquire()  # and is not reading it now
        self.leader = _thread.get_ident()
        try:
            while not q.q and s.rfd is not None and not router.lost \
                    and 'econtext.parent' not in sys.modules:
                try:
                    evs = _spin(self.mpoll) or self.mpoll.poll()
                except Exception as e:
                    if e.args and e.args[0] == errno.EINTR:
                        continue  # Python 2: a signal
                    raise
                for fd, ev in evs:
                    if fd == self.mwr:
                        os.read(self.mwr, 4096)
                    elif s.rfd is not None:
                        s.on_read()
        finally:
            self.leader = None
            self.rlock.release()
            self.on()
            if s.rfd is None or router.lost:
                self.wake()  # the IO thread must see that the parent is gone
        return q.get()

    def quiet(self):
        # Main thread, about to write the reply to the last queued call and
        # then lead: the IO thread's poll of the parent goes off first, so
        # that a next call that comes quickly (a busy master) does not wake
        # it either. Only before a small reply (a write that cannot wait
        # long); whatever the main thread does next but lead turns it on.
        if self.ep is not None and not self.off and self.pfd is not None \
                and 'econtext.parent' not in sys.modules:
            try:
                self.ep.modify(self.pfd, 0)
                self.off = True
            except EnvironmentError:
                pass

    def on(self):
        # The IO thread reads the parent stream again (if quiet or lead
        # switched its poll off), unless econtext.parent paused it.
        if self.off:
            self.off = False
            try:
                if self.pfd is not None:
                    self.ep.modify(self.pfd, 0 if self.paused else select.EPOLLIN)
            except EnvironmentError:
                pass

    def _nudge(self):
        # Wakes a leading main thread, from another thread: after a put to
        # router.calls, or once econtext.parent is imported (_spawn).
        if self.leader is not None and self.leader != _thread.get_ident():
            try:
                os.write(self.mww, b'x')
            except EnvironmentError:
                pass

    def wake(self):
        try:
            os.write(self.ww, b'x')
        except EnvironmentError:
            pass

    def hold(self, stream):
        # A stream now holds replies back: the IO thread writes them within
        # HOLD_S if the main thread has not by then (a slow call must not
        # delay the replies before it).
        if not self.held:
            self.held_since = _mono()
        self.held.add(stream)
        self.wake()

    def _flush_held(self):
        # Either thread may get here; set.pop() is atomic, the check is not.
        while self.held:
            try:
                s = self.held.pop()
            except KeyError:
                break
            s.flush()

    def defer(self, fn):
        # Runs fn() on the IO thread (other threads must not touch the
        # poller or parse streams).
        self.pending.append(fn)
        self.wake()

    def _woken(self):
        os.read(self.wr, 4096)
        while self.pending:
            try:
                self.pending.popleft()()
            except Exception:
                LOG.exception('deferred IO callback failed')

    def stop(self):
        self.deadline = time.time() + GRACE
        self.stopping = True
        self.wake()

    def _may_spin(self):
        # The IO thread spins only while it reads the parent: not once lead
        # or quiet switched its poll off (the main thread spins then), not
        # while replies are held (they are due within HOLD_MS), and never
        # in a parent of other contexts: there _write also stamps frames
        # forwarded from grandchildren, which would let a chatty one keep
        # this thread spinning.
        return not self.off and not self.held and self.pfd is not None \
            and 'econtext.parent' not in sys.modules

    def _flush_due(self, evs, now):
        # Held replies go out when the poll found nothing, or after HOLD_MS
        # however busy the fds are (frames arriving all through a slow call
        # must not keep the replies before it).
        return bool(self.held) and (not evs or now - self.held_since >= HOLD_MS / 1000.0)

    def _run(self):
        try:
            while not router.lost:
                if self.stopping and (time.time() > self.deadline or
                                      not [i for i in self.iologgers if i.rfd is not None]):
                    break
                try:
                    evs = self._may_spin() and _spin(self.poller, self._may_spin)
                    evs = evs or self.poller.poll(self.stopping and 100 or self.held and HOLD_MS or
                                                  (_OWED or _KEPT[1]) and 1000 or None)
                    if _OWED:
                        _report_owed()
                    if _KEPT[1] is not None:
                        _release_idle()
                    if self.held and self._flush_due(evs, _mono()):
                        self._flush_held()
                except Exception as e:
                    if e.args and e.args[0] == errno.EINTR:
                        continue
                    raise
                for fd, ev in evs:
                    cb = self.readers.get(fd)
                    if cb:
                        try:
                            cb()
                        except Exception:
                            LOG.exception('IO callback failed')
        except Exception:
            LOG.exception('IO thread crashed')
            # Nobody reads the parent any more: end as if it were gone
            # (the main thread must not wait for a call that cannot come).
            router.parent.disconnect(None)
        if not router.lost:
            # Graceful: the main thread asked us to stop; stdio is drained.
            for i in self.iologgers:
                i.flush()
            # Every summary still owed (children's stderr budgets too).
            _report_owed(True)
            flush_log()
            router.parent.disconnect(None)
            return
        # The parent is gone: wake the main thread, and exit the process
        # ourselves if it is stuck in user code. No orphans.
        router.calls.put(None, True)
        time.sleep(GRACE)
        os._exit(1)


def split_lines(buf, s):
    # Complete lines from buf + s, and what is left of the last one. A
    # "line" longer than 64 KiB is cut rather than held forever.
    lines = (buf + s).split(b'\n')
    rest = lines.pop()
    if len(rest) > 65536:
        lines.append(rest)
        rest = b''
    return lines, rest


class IoLogger(object):
    # A pipe replacing fd 1 or 2 (dup2, so subprocesses write into it too);
    # the IO thread forwards it line by line as FORWARD_LOG.
    def __init__(self, name, fd, level):
        self.name, self.level = name, level
        self.rfd, w = os.pipe()
        _cloexec(self.rfd)
        os.dup2(w, fd)
        os.close(w)
        self.buf = b''
        broker.add_reader(self.rfd, self.on_read)
        broker.iologgers.append(self)

    def on_read(self):
        try:
            s = os.read(self.rfd, 65536)
        except EnvironmentError:
            s = b''
        if not s:
            broker.del_reader(self.rfd)
            os.close(self.rfd)
            self.rfd = None
            return self.flush()
        lines, self.buf = split_lines(self.buf, s)
        for line in lines:
            self._emit(line)

    def flush(self):
        if self.buf:
            self._emit(self.buf)
            self.buf = b''

    def _emit(self, line):
        # A line that is not UTF-8 goes up as bytes: the master's sanitizer
        # shows the bad bytes escaped (\xNN), nobody replaces them.
        try:
            line = line.decode('utf-8')
        except UnicodeDecodeError:
            pass
        try:
            forward_log(self.name, self.level, line)
        except Exception:
            pass


def _install_log_handler(logging):
    # Called once the logging package is imported (by anyone): records at
    # or above the master's level are forwarded to it.
    class LogHandler(logging.Handler):
        # A record logged while forwarding (by us, or by the IO thread
        # reporting a send failure) is dropped rather than recursing.
        def handle(self, rec):
            # No handler lock: sends are serialised by the stream lock.
            if self.filter(rec):
                self.emit(rec)

        def emit(self, rec):
            if getattr(LOG.busy, 'on', False) or router is None or router.lost:
                return
            LOG.busy.on = True
            try:
                forward_log(_text(rec.name), rec.levelno, _text(self.format(rec)))
            except Exception:
                pass
            finally:
                LOG.busy.on = False

    root = logging.getLogger()
    root.setLevel(LOG.level)
    root.addHandler(LogHandler())


class _LoggingHook(object):
    # Sits first on sys.meta_path until the modules of _AFTER are
    # imported, then wraps each one's loading so its patch is applied the
    # moment it exists: `logging` gets the LogHandler; on 3.9,
    # importlib._common gets a files() that asks our loader.
    def find_module(self, fullname, path=None):
        if fullname == 'logging':
            return self

    def load_module(self, fullname):
        self._seen(fullname)
        import imp
        f, p, d = imp.find_module(fullname)
        try:
            mod = imp.load_module(fullname, f, p, d)
        finally:
            if f:
                f.close()
        _install_log_handler(mod)
        return mod

    def _seen(self, fullname):
        then = _AFTER.pop(fullname)
        if not _AFTER:
            sys.meta_path.remove(self)
        return then

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in _AFTER:
            return None
        then = self._seen(fullname)
        from importlib.machinery import PathFinder
        spec = PathFinder.find_spec(fullname, path)
        if spec is not None:
            spec.loader = _LoaderThen(spec.loader, then)
        return spec


class _LoaderThen(object):
    # A loader that runs the real one, then the patch.
    def __init__(self, loader, then):
        self.loader = loader
        self.then = then

    def __getattr__(self, name):
        return getattr(self.loader, name)

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, mod):
        self.loader.exec_module(mod)
        self.then(mod)


def _files_39(common):
    # 3.9's importlib.resources.files() never asks the loader: it returns
    # pathlib.Path(spec.origin).parent, a 'master:' path that exists
    # nowhere here. For our packages, the resource reader's Traversable.
    # Patched when importlib._common loads, so that files('pkg') works
    # even when it is what first imports pkg.
    real = common.from_package

    def from_package(package):
        if isinstance(getattr(package.__spec__, 'loader', None), Importer):
            return _resources().Reader(package.__name__).files()
        return real(package)
    common.from_package = from_package


# Module name -> what to do once it is imported (see _LoggingHook).
_AFTER = {'logging': _install_log_handler}
if sys.version_info[:2] == (3, 9):
    _AFTER['importlib._common'] = _files_39


# Parts of the core the master serves built in, fetched on first use.
_SERVED = ('econtext.parent', 'econtext.fleet', 'econtext.files', 'econtext.resources')

# Stdlib modules of other platforms (probed by the stdlib: subprocess asks
# for _winapi, copy for Jython's org.python.core), and on 3.10+ every
# stdlib name: never on the master's module path, never a round trip.
_ELSEWHERE = set(getattr(sys, 'stdlib_module_names', ())) | set((
    '_winapi', 'nt', 'winreg', '_winreg', 'msvcrt', '_overlapped', '_msi', 'winsound',
    '_scproxy', 'org', 'java', 'vms_lib', 'riscos', 'riscosenviron', 'ce', 'os2', 'mac'))


class Importer(object):
    # Finds modules the parent can serve, for both PEP 302 (Python 2) and
    # PEP 451 (required on 3.12+). On Python 3 it is appended to
    # sys.meta_path so Python's own finders are asked first; Python 2 has
    # no meta_path entries for the builtin machinery, so it asks imp first.
    # cache: name -> [name, master filename, is_package, zlib source,
    # children] as the parent sent it, or None. A record with no file name
    # says the name cannot be imported (source: why, or nothing).
    # Resources ('pkg/rel/path') use the same cache and request; the code
    # for them is econtext.resources, sent with the first package that has
    # data files. docs/PROTOCOL.md, "Modules", is the contract.

    def __init__(self):
        self.cache = {}
        self.hint = None

    def _record(self, fullname):
        if broker.thread.is_current() or broker.leader == _thread.get_ident():
            # Waiting for a reply on a thread that must read it deadlocks.
            return None
        if not broker.thread.started:
            # A preloaded module's imports, before the IO thread reads
            # replies: a request would wait out IMPORT_TIMEOUT. Declining
            # lets the stdlib's own fallbacks work (hashlib without
            # _hashlib on 3.6 and 2.7 builds without OpenSSL).
            return None
        pkg, _, short = fullname.rpartition('.')
        if pkg in self.cache:
            rec = self.cache[pkg]
            if not rec or not rec[2] or short not in rec[4]:
                return None  # the master enumerated pkg: fullname does not exist
        elif pkg and fullname not in _SERVED:
            # pkg was imported locally (or is our synthetic econtext), not
            # by us: its submodules (and, on Python 2, its implicit relative
            # probes like json.re or econtext.traceback) are Python's
            # business, never a round trip to the master.
            return None
        if not pkg and (short in _ELSEWHERE or not PY3 and self._local(short)):
            return None
        if fullname not in self.cache:
            want = self._deepest(fullname)
            self._fetch(want)
            if want != fullname and fullname not in self.cache:
                self._fetch(fullname)
        rec = self.cache.get(fullname)
        if not rec or not rec[1]:
            return False if fullname in self.cache else None
        return rec

    def _deepest(self, fullname):
        # Python imports a.b.c as a, then a.b, then a.b.c: asking for a.b.c
        # at once brings its parents in the same reply. The name is the
        # call being dispatched (hint), or on Python 3 the outermost
        # import in progress.
        want, f = fullname, PY3 and sys._getframe(2)
        if self.hint and self.hint.startswith(fullname + '.'):
            want = self.hint
        while f:
            if f.f_code.co_name == '_find_and_load':
                n = f.f_locals.get('name')
                if isinstance(n, str) and n.startswith(want + '.'):
                    want = n
            f = f.f_back
        return want

    def _missing(self, fullname):
        rec = self.cache.get(fullname)
        if rec and rec[3]:  # the master said why (a compiled module)
            return ImportError(zlib.decompress(rec[3]).decode('utf-8', 'replace'))
        msg = "No module named '%s' (not found locally, nor on the master's module path: %s)" % (
            fullname, MODULE_PATH or '(empty)')
        if PY3:
            return ModuleNotFoundError(msg, name=fullname)  # noqa: F821
        return ImportError(msg)

    def _local(self, short):
        try:
            f = imp.find_module(short)[0]
            if f:
                f.close()
            return True
        except ImportError:
            return False

    def _fetch(self, fullname):
        # Only our parent may answer (accept=; anti-spoofing makes the
        # source trustworthy): a reply forged by a sibling or a child is
        # dropped, and the wait goes on. No answer within the connect
        # timeout is an ImportError, never a hang.
        q = _Queue()
        h = router.add_handler(lambda src, rt, obj: q.put((obj,)), persist=False, accept=parent_id)
        try:
            router.send(parent_id, GET_MODULE, fullname, h)
        except Exception:
            return router.del_handler(h)  # parent gone: plain ImportError
        r = q.get(IMPORT_TIMEOUT)
        router.del_handler(h)
        if r is None:
            raise ImportError('%s: no answer from the parent (context %d) within %.1f s' % (
                fullname, parent_id, IMPORT_TIMEOUT))
        if isinstance(r[0], CallError):
            # Refused by the parent's service (overloaded, malformed): said,
            # not mistaken for "no such module".
            raise ImportError('%s: %s: %s' % (fullname, r[0].type, r[0].message))
        self._store(fullname, r[0])

    def _store(self, fullname, reply):
        # Also called by econtext.parent's module forwarder (IO thread).
        # The requested record first, then the related ones the parent
        # chose to send; nothing else in the reply is kept.
        if type(reply) is list:
            for rec in reply:
                if type(rec) is list and len(rec) >= 5 and isinstance(rec[0], _UNI):
                    rec[4] = set(rec[4] or ())
                    self.cache[rec[0]] = rec
        if reply is None or type(reply) is list:
            self.cache.setdefault(fullname, None)  # nil: known not to exist

    def find_module(self, fullname, path=None):
        # Python 2 turns an ImportError raised here into its own message:
        # a module the master does not have fails in load_module instead.
        if self._record(fullname) is not None:
            return self

    def find_spec(self, fullname, path=None, target=None):
        rec = self._record(fullname)
        if rec is False:
            # Only an import statement gets the error; probes such as
            # importlib.util.find_spec() expect None for "not found".
            try:
                f = sys._getframe(2).f_code.co_name
            except ValueError:
                f = None
            said = self.cache.get(fullname)
            if f == '_find_and_load_unlocked' or (said and said[3]):
                raise self._missing(fullname)
        elif rec:
            from importlib.machinery import ModuleSpec
            ns = rec[2] and not rec[3]
            spec = ModuleSpec(fullname, self, origin=None if ns else self.get_filename(fullname),
                              is_package=rec[2])
            spec.has_location = not ns
            return spec

    def create_module(self, spec):
        return None

    def get_filename(self, fullname):
        # __file__ of a served module: 'master:' + its path on the master.
        # It exists nowhere here, so code opening files beside it fails
        # loudly instead of reading a same-named local file; get_data()
        # and the resource reader serve paths under it (docs/ARCHITECTURE.md).
        f = self.cache[fullname][1]
        return f if f.startswith(('<', 'master:')) else 'master:' + f

    def exec_module(self, mod):
        rec = self.cache[mod.__name__]
        if 'econtext.resources' in self.cache and 'econtext.resources' not in sys.modules \
                and mod.__name__ != 'econtext.resources':
            _resources()  # a package with data files came: open() must know
        if rec[2] and not rec[3]:
            return  # a namespace package has no code
        filename = self.get_filename(mod.__name__)
        try:
            code = compile(zlib.decompress(rec[3]), filename, 'exec')
        except SyntaxError:
            e = sys.exc_info()[1]
            raise ImportError("cannot compile module '%s' (%s, line %s: %s) under Python %s, "
                              "%s: a syntax error, or syntax of a newer Python%s" % (
                                  mod.__name__, filename, e.lineno, e.msg,
                                  '.'.join(map(str, sys.version_info[:3])), _master_python(rec),
                                  _requires(rec)))
        exec(code, mod.__dict__)

    def load_module(self, fullname):
        rec = self.cache[fullname]
        if not rec or not rec[1]:
            raise self._missing(fullname)
        mod = sys.modules.get(fullname)
        if mod is None:
            mod = sys.modules[fullname] = type(sys)(fullname)
        mod.__loader__ = self
        if not (rec[2] and not rec[3]):
            mod.__file__ = self.get_filename(fullname)
        if rec[2]:
            mod.__path__ = []
            mod.__package__ = fullname
        else:
            mod.__package__ = fullname.rpartition('.')[0]
        try:
            self.exec_module(mod)
        except BaseException:
            sys.modules.pop(fullname, None)
            raise
        return sys.modules[fullname]

    def get_source(self, fullname):
        # Lets linecache put source lines in tracebacks.
        rec = self.cache.get(fullname)
        if rec and rec[3]:
            return zlib.decompress(rec[3]).decode('utf-8', 'replace')

    def is_package(self, fullname):
        return bool(self.cache[fullname][2])

    # Package resources (pkgutil.get_data, importlib.resources,
    # pkg_resources): rarely needed, so the code is fetched on first use.
    def get_data(self, path):
        return _resources().get_data(path)

    def get_resource_reader(self, fullname):
        return _resources().Reader(fullname)


def _requires(rec):
    # The distribution's Requires-Python, when the master found it.
    return len(rec) > 5 and rec[5] and ' (its distribution requires Python %s)' % rec[5] or ''


def _master_python(rec):
    # The version of the Python the master's module path is for, which
    # the master sends in every record (docs/PROTOCOL.md, "Modules").
    v = len(rec) > 6 and rec[6]
    return v and "the master's Python is %s" % v or "the master's Python version is unknown"


def _resources():
    __import__('econtext.resources')
    return sys.modules['econtext.resources']


def _call_error():
    import traceback
    t, e, tb = sys.exc_info()
    try:
        msg = _text(str(e))
    except Exception:
        msg = _text(repr(e))
    return CallError(_text('%s.%s' % (t.__module__, t.__name__)), msg,
                     _text(''.join(traceback.format_exception(t, e, tb))))


# The encodings of -32..255, by value (a negative index counts from the end).
_SMALL_INTS = [_B(x) for x in range(128)] + [_BB(0xcc, x) for x in range(128, 256)] + \
    [_B(x & 255) for x in range(-32, 0)]


def _call(msg):
    try:
        mod, cls, fn, args, kwargs = msg
        m = sys.modules.get(mod)
        if m is None:
            importer.hint = mod
            try:
                __import__(mod)
            finally:
                importer.hint = None
            m = sys.modules[mod]
        f = getattr(getattr(m, cls) if cls else m, fn)
        r = f(*args, **kwargs)
        # The commonest results as bytes, without _pk's type tests (any
        # other result is a list of chunks).
        if r is None:
            return b'\xc0'
        if type(r) is int and -32 <= r < 65536:
            return _SMALL_INTS[r] if r < 256 else _BH(0xcd, r)
        out = []
        _pk(r, out.append)
        return out
    except BaseException:  # SystemExit from user code is an error, not our exit
        return packl(_call_error())


def _dispatch():
    # The main thread: runs calls one at a time in arrival order and
    # writes each reply frame itself. While more calls are already queued,
    # replies are held and written together (one syscall for many, with
    # 10,000 calls in flight); the IO thread writes them after HOLD_MS if
    # the next call turns out to be slow.
    q, streams, me = router.calls, router.streams, context_id
    calls = q.q
    popleft, pack_fields = calls.popleft, _FLD.pack
    small = min(BIG_FRAME, router.max_size + 1)
    hold = False
    while True:
        if calls:
            item = popleft()
            if broker.off:
                broker.on()  # never run a call with the IO thread not reading
        else:
            _HOLD.on = hold = False
            broker._flush_held()
            # Nothing of the last call outlives it while the next is
            # awaited: a large argument's frame buffer is then the next
            # large frame's (_big_buffer), and its value is freed first.
            item = data = msg = out = None
            item = broker.lead(q)
        if item is None:
            break
        src, reply_to, data = item
        try:
            msg = unpack_call(data)
        except Exception:
            msg = None
        if type(msg) is not list:  # (unpack_call's usual answer)
            if msg is None:
                out = packl(CallError(u'econtext.core.MsgError', u'malformed CALL_FUNCTION data'))
            elif isinstance(msg, Dead):
                break
            else:
                out = _call(msg)  # not a call: _call's error says why
        else:
            router.caller = src  # a Receiver made by the call accepts its caller
            out = _call(msg)
            router.caller = None
        if hold is not bool(calls):
            _HOLD.on = hold = not hold
        if not reply_to:
            continue
        if type(out) is not list:
            n = len(out)
        else:
            n = sum(map(len, out))
            if n < small:
                out = b''.join(out)
        if not calls and n < 16384:
            broker.quiet()  # lead comes next
        try:
            # A small reply down a direct stream is sealed here (what
            # router.route and Stream.send would do, checks and all);
            # anything else goes the long way.
            s = streams.get(src)
            if s is not None and n < small and not s.closed:
                if not hold:
                    s.seal(pack_fields(src, me, reply_to, 0, n) + out, False)
                    continue
                # Held without the lock (see Stream.replies): the IO
                # thread is told when the stream starts holding, and the
                # replies go out at once past HOLD_FRAMES or HOLD_BYTES
                # (the stream's hbytes, which counts what seal holds too
                # and which every write resets: a hint here, as there).
                r = s.replies
                r.append(pack_fields(src, me, reply_to, 0, n) + out)
                s.hbytes += n
                if len(r) == 1:
                    broker.hold(s)
                elif len(r) >= HOLD_FRAMES or s.hbytes >= HOLD_BYTES:
                    s.flush()
            else:
                router.route(src, me, reply_to, 0, out)
        except MsgError:
            broker.on()  # _call_error imports
            router.route(src, me, reply_to, 0, packl(_call_error()))
        except Exception:
            LOG.debug('reply to %d failed', src, exc_info=True)
    _HOLD.on = False
    broker.on()
    broker._flush_held()
    for s in list(streams.values()):
        if s.replies:  # an interrupt between an append and its broker.hold
            s.flush()
    for item in list(q.q):
        if item:
            router._dead(item[0], item[1], 'context %d is shutting down' % context_id)


def _spawn(src, reply_to, data):
    # A worker thread (see Router._spawn): SPAWN is econtext.parent's job.
    try:
        __import__('econtext.parent')
        # A main thread reading the parent stream (Broker.lead) stops now:
        # with children, reading the parent is the IO thread's alone.
        broker._nudge()
        sys.modules['econtext.parent'].spawn(src, reply_to, data)
    except BaseException:
        router._reply(src, reply_to, _call_error())


def _shutdown():
    # Graceful exit: children first (SHUTDOWN, then EOF; econtext.parent
    # waits for them and reaps them), then flush stdio, close the IoLogger
    # write ends so the IO thread can drain them to EOF, then close the
    # parent stream and exit.
    p = sys.modules.get('econtext.parent')
    if p:
        p.shutdown()
    for f in sys.stdout, sys.stderr:
        try:
            f.flush()
        except Exception:
            pass
    null = os.open('/dev/null', os.O_RDWR)
    os.dup2(null, 1)
    os.dup2(null, 2)
    os.close(null)
    if not router.lost:
        broker.stop()
        broker.thread.join(GRACE + 1)
    os._exit(0)


def _setup_package():
    # The core runs as __main__: make it econtext.core inside a synthetic
    # econtext package, and fix __module__ so pickle names classes by it.
    mod = sys.modules['__main__']
    pkg = type(sys)('econtext')
    pkg.__path__ = []
    pkg.__package__ = 'econtext'
    pkg.core = mod
    mod.__name__, mod.__package__ = 'econtext.core', 'econtext'
    sys.modules['econtext'], sys.modules['econtext.core'] = pkg, mod
    for v in list(vars(mod).values()):
        if getattr(v, '__module__', None) == '__main__':
            try:
                v.__module__ = 'econtext.core'
            except Exception:
                pass
    # A Rust master has no __main__ to serve, so instead of deleting it
    # (and paying a GET_MODULE round trip for nothing, or breaking code that
    # reads sys.modules['__main__']) it becomes an empty module.
    sys.modules['__main__'] = type(sys)('__main__')


def _read_all(fd):
    out = []
    while True:
        s = os.read(fd, 65536)
        if not s:
            break
        out.append(s)
    os.close(fd)
    return b''.join(out)


def _preload(name, filename, source):
    # A module the master sent with the payload (`econtext run`'s
    # econtext.fleet), as source or as a code object it compiled for this
    # interpreter (_PRE): made here at start, with no GET_MODULE round trip
    # and none of the import machinery (importlib.machinery alone costs
    # more than compiling it). It runs before the IO thread starts, so it
    # may import only what the child has itself (the master's modules
    # would wait for a reply nobody reads): the master preloads only
    # built-in modules whose imports are the stdlib's.
    mod = type(sys)(name)
    mod.__file__, mod.__loader__ = filename, importer
    pkg, _, short = name.rpartition('.')
    mod.__package__ = pkg
    if PY3:
        # A spec as the importer would give (find_spec, reload and pickle
        # by reference need one), from the frozen bootstrap already loaded.
        spec = sys.modules['_frozen_importlib'].ModuleSpec(name, importer, origin=filename)
        spec.has_location = True
        mod.__spec__ = spec
    if type(source) is not _CODE:
        source = compile(source, filename, 'exec')
    exec(source, mod.__dict__)
    sys.modules[name] = mod
    if pkg in sys.modules:
        setattr(sys.modules[pkg], short, mod)


_CODE = type(_preload.__code__)


def _argv0():
    # The interpreter's real path, which the two-stage first stage put in
    # the environment before re-executing it with a decorated argv[0];
    # removed so that commands do not inherit it. posix.environ is a
    # snapshot (bytes keys on Python 3): only then is the real os needed,
    # and site has loaded it already.
    if (b'ARGV0' if PY3 else 'ARGV0') not in os.environ:
        return None
    import os as real
    return real.environ.pop('ARGV0', None)


def main(cfg, preload=None):
    global context_id, parent_id, context_name, router, broker, importer, CORE_SOURCE, PYTHON, MODULE_PATH
    global IMPORT_TIMEOUT, COMPILED, SPIN
    context_id, parent_id, context_name = cfg['context_id'], cfg['parent_id'], cfg['name']
    SPIN = min(cfg.get('spin_us', 50), 1000) / 1e6
    MODULE_PATH = cfg.get('module_path') or ''
    IMPORT_TIMEOUT = cfg.get('import_timeout', 30000) / 1000.0
    PYTHON = _argv0() or sys.executable
    _setup_package()
    # The first stage compiled the payload (or took the code the master
    # compiled for this interpreter, then _m is 1) and wrote a header of
    # sizes, the source and the code on fd 101; our stdin script (a stub:
    # Python reads a script on stdin one byte per syscall, 35,000 reads
    # for the core) read them, kept the source in _s and ran the code.
    # Keep the core (minus the trailing main(...) line) so grandchildren
    # need not fetch it, and drop the stub's variables.
    g = globals()
    COMPILED = bool(g.get('_m'))
    s = g.pop('_s', None)
    if s is None:
        # "<_m> <len(source)> <len(code)>...\n", the source, the code.
        s = g.pop('_P', None) or _read_all(101)
        i = s.index(b'\n')
        head = s[:i].split()
        COMPILED = head[0] == b'1'
        s = s[i + 1:i + 1 + int(head[1])]
    for name in ('_P', '_C', '_c', '_i', '_k', '_m', '_n', '_t', '_x', 'marshal'):
        g.pop(name, None)
    # Empty when the master left the source out (a lean start with the
    # core compiled): econtext.parent fetches it if this context ever
    # starts a child.
    CORE_SOURCE = s[:s.rfind(b'\nmain(') + 1]
    del s
    rfd = _cloexec(os.dup(100))
    os.close(100)
    wfd = _cloexec(os.dup(1))  # before fd 1 becomes the stdout pipe
    try:
        os.wait()  # reap the first stage
    except OSError:
        pass
    LOG.level = cfg.get('log_level', 20)
    broker = Broker()
    router = Router(cfg)
    import binascii
    key = binascii.unhexlify(cfg['key'])
    router.parent = router.streams[parent_id] = Stream(router, parent_id, rfd, wfd, key)
    _WROTE[1] = wfd
    broker.add_parent(router.parent)
    importer = Importer()
    if PY3:
        sys.meta_path.append(importer)
    else:
        sys.meta_path.insert(0, importer)
    for name, filename, code in _PRE:
        _preload(name, filename, code)
    del _PRE[:]
    for name in preload or ():
        _preload(name, *preload[name])
    for name in list(_AFTER):
        if name in sys.modules:  # already imported: patch it now
            _AFTER.pop(name)(sys.modules[name])
    if _AFTER:
        sys.meta_path.insert(0, _LoggingHook())
    IoLogger('stdout', 1, 20)
    IoLogger('stderr', 2, 30)
    null = os.open('/dev/null', os.O_RDWR)
    os.dup2(null, 0)
    os.close(null)
    if PY3:
        import io
        sys.stdout = io.open(1, 'w', 1, 'utf-8', 'backslashreplace', closefd=False)
        sys.stderr = io.open(2, 'w', 1, 'utf-8', 'backslashreplace', closefd=False)
    else:
        import os as _os
        sys.stdout = _os.fdopen(1, 'w', 1)
        sys.stderr = _os.fdopen(2, 'w', 0)
    broker.thread.start()
    _dispatch()
    _shutdown()
