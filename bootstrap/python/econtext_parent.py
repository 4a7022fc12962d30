# econtext.parent: what only a context that creates children needs.
#
# The master serves this module built in; a Python context imports it
# through GET_MODULE the first time it receives SPAWN (on a worker thread:
# the IO thread never imports). docs/PROTOCOL.md, "Creating a context
# through another (SPAWN)", is the contract. It provides:
#
# - spawn(): start the SPAWN's argv with stdin/stdout on a socketpair and
#   stderr on a pipe, run the EC0 / payload / EC1 handshake with the core
#   source this context was itself bootstrapped with (econtext.core.CORE_SOURCE,
#   never fetched again), add a ChildStream to the router, reply [pid];
#   or kill, reap and reply CallError econtext.ConnectError.
# - ChildStream: a Stream to a child. Frames from it must carry a source
#   whose route leads back to it (anti-spoofing); DEL_ROUTE from it for its
#   own subtree is applied here and passed up. When it closes, every
#   context routed through it is dropped: DEL_ROUTE for each goes to our
#   parent, local waiters get Dead, and the process is reaped.
# - The ModuleForwarder: GET_MODULE from a child is answered from the
#   importer's cache, else asked of our parent *as ourselves* (so the
#   master, which sends each module once per requester, sends it once for
#   our whole subtree); concurrent requests for one name share one request.
# - shutdown(): SHUTDOWN to every child, EOF, then kill; all reaped.
#
# A child's stderr (which after bootstrap carries only what escapes its
# own IoLogger: interpreter crashes, first-stage errors) is forwarded as
# FORWARD_LOG from this context with logger name 'stderr.<child name>'
# (its pty, when it has one: 'tty.<child name>'), level WARNING; the last
# 20 lines also go into ConnectError messages. The SPAWN's password is
# redacted from both.
#
# Methods that prompt (SPAWN keys method, new_session, tty, prompt,
# prompt_words, exit_rules, password), as bootstrap/src/connect.rs does it:
# the child runs in its own session; with tty, a pty (echo off) is its
# controlling terminal and we keep both ends open until it is reaped.
# Until EC0 we watch for a password prompt: with `prompt` (the method's own,
# sudo -p with a random token) only that one, only on the pty; without it,
# a last line ending in ':' that holds one of `prompt_words`, on the pty or
# stderr. The first is answered with the password (on the pty if it came
# there, else on the child's stdin), a second one means the password was
# refused. A failure is classified by `exit_rules`. These rules are data
# from the master: they live once, in bootstrap/src/prompt.rs.
from __future__ import absolute_import

import econtext.core as core
# Python 3's subprocess tries `import msvcrt` to learn it is not on
# Windows: known not to exist, it must not cost a round trip to the master.
core.importer.cache.setdefault('msvcrt', None)

import binascii  # noqa: E402
import errno  # noqa: E402
import fcntl  # noqa: E402
import os  # noqa: E402
import select  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import termios  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import zlib  # noqa: E402
from collections import deque  # noqa: E402

from econtext.core import (CALL_FUNCTION, DEL_ROUTE, GET_MODULE, LOG,
                           PY3, SHUTDOWN, CallError, Dead, _text, packl, unpack)

router, broker = core.router, core.broker
STAGES = ('the first stage to start (EC0)', 'the payload to be received (EC1)')
MAX_NOISE = 65536
HIGH, LOW = 8 << 20, 1 << 20  # bytes queued for one child: stop / resume reading our parent
HARD = 4 * HIGH  # bytes queued for one child past which it is closed (it does not read)
_SPAWN_FIELDS = ('id', 'name', 'argv', 'env', 'config', 'timeout',
                 'method', 'new_session', 'tty', 'prompt', 'prompt_words', 'exit_rules',
                 'password', 'agent')

MAX_PROMPT_LINE = 300  # bytes: a longer last line is output, not a question
REDACTED = u'********'

children = {}    # context id -> ChildStream, while connected
_waits = {}      # local handle -> context id whose death sends it Dead
_sent = {}       # requester -> names already sent to it (ModuleForwarder)
_related = {}    # module name -> names that came with it from our parent
_pending = {}    # module name -> [(src, reply_to)] waiting on our parent
_trace = None    # deque of [stream, 'in'/'out', src, dst, handle] when on


class _Fail(Exception):
    # A failed connection: `kind` names the Rust ConnectError variant, which
    # the master turns its CallError type econtext.ConnectError.<kind> into.
    def __init__(self, kind, msg):
        Exception.__init__(self, msg)
        self.kind, self.msg = kind, msg  # msg may be unicode on Python 2


def _native(s):
    # argv/env for Popen: text on Python 3, UTF-8 bytes on Python 2.
    s = _text(s)
    return s if PY3 else s.encode('utf-8')


def _literal(v):
    # A Python literal that means the same on 2.7 and 3.x, ASCII only
    # (the payload has no coding line), like the Rust side's to_python().
    if v is None or isinstance(v, (bool, float)):
        return repr(v)
    if isinstance(v, core._INTS):
        return '%d' % v
    if isinstance(v, (list, tuple)):
        return '[%s]' % ', '.join(map(_literal, v))
    if isinstance(v, dict):
        return '{%s}' % ', '.join('%s: %s' % (_literal(k), _literal(x)) for k, x in sorted(v.items()))
    return "'%s'" % ''.join(c in u"\\'" and u'\\' + c or (u' ' <= c <= u'~' and c or u'_')
                            for c in _text(v))


def _ends_with_prompt(text, custom, words, on_tty):
    # Whether `text` (a child's output since the last prompt, on its pty
    # if on_tty) ends with a password prompt: PromptRules::ends_with_prompt
    # in prompt.rs, whose data (custom, words) came in the SPAWN.
    t = text.rstrip(u' \t')
    if custom:
        c = custom.rstrip()
        return bool(on_tty and c and t.endswith(c))
    line = t.replace(u'\r', u'\n').rsplit(u'\n', 1)[-1]
    if not line or len(line.encode('utf-8')) > MAX_PROMPT_LINE:
        return False
    if not line.endswith((u':', u'\uff1a')):
        return False
    lower = line.lower()
    return any(w and w in lower for w in words)


def _ends_with_host_key_question(text):
    # ssh's yes/no question about a host key it cannot verify, asked on
    # its pty when ssh_config leaves StrictHostKeyChecking at `ask`:
    # prompt::ends_with_host_key_question. Answered "no".
    line = text.rstrip(u' \t').replace(u'\r', u'\n').rsplit(u'\n', 1)[-1]
    return (len(line.encode('utf-8')) <= MAX_PROMPT_LINE and line.endswith(u'?')
            and u'(yes/no' in line)


class _Stderr(object):
    # One output of a child other than its data (its stderr pipe, or its
    # pty's master): lines forwarded as FORWARD_LOG under `logger`, last 20
    # kept, the password redacted from both. Read by the worker thread
    # during the handshake (which also scans it for prompts), then by the
    # IO thread.
    def __init__(self, logger, fd, secret=None):
        self.fd = fd
        self.logger = logger
        self.secret = secret
        self.buf = b''
        self.text = u''  # what the prompt scanner has seen since the last prompt
        self.tail = deque(maxlen=20)
        self.polled = False
        # Its own (a child printing in a loop does not silence another),
        # and charged to ours too: the master counts every child's lines
        # under our id, within one budget (econtext_core._LogBudget).
        self.budget = core._LogBudget(parent=core._BUDGET)

    def fds(self):
        return [self.fd] if self.fd is not None else []

    def on_read(self):
        self.read()

    def read(self):
        # Returns what was read (b'' at EOF, then closed).
        try:
            s = os.read(self.fd, 65536)
        except EnvironmentError:
            s = b''  # EIO on a pty: no slave left
        if not s:
            self.close()
            return s
        lines, self.buf = core.split_lines(self.buf, s)
        for line in lines:
            self._emit(line)
        return s

    def prompted(self, s, auth, on_tty):
        # PromptScanner::feed: 'password' or 'hostkey' if the output now
        # ends with a password prompt or (on the pty) ssh's host key
        # question, which is then consumed (and logged as a line of its
        # own); else None.
        self.text += s.decode('utf-8', 'replace')
        if len(self.text) > 4 * MAX_PROMPT_LINE:
            self.text = self.text[-2 * MAX_PROMPT_LINE:]
        if _ends_with_prompt(self.text, auth.prompt, auth.words, on_tty):
            asked = 'password'
        elif on_tty and _ends_with_host_key_question(self.text):
            asked = 'hostkey'
        else:
            return None
        self.text = u''
        self.flush()
        return asked

    def redact(self, t):
        return t.replace(self.secret, REDACTED) if self.secret else t

    def _emit(self, line):
        # A line that is not UTF-8 goes up as the bytes it was (redacted):
        # the master's sanitizer shows the bad bytes escaped, \xNN.
        line = line.rstrip(b'\r').lstrip(b'\r')
        try:
            t = sent = self.redact(line.decode('utf-8'))
        except UnicodeDecodeError:
            t = self.redact(line.decode('utf-8', 'replace'))
            sent = line
            if self.secret:
                pw = self.secret
                pw = pw if isinstance(pw, bytes) else pw.encode('utf-8')
                sent = sent.replace(pw, REDACTED.encode('ascii'))
        if not t.strip():
            return
        self.tail.append(t)
        try:
            core.forward_log(self.logger, 30, sent, self.budget)
        except Exception:
            pass

    def flush(self):
        if self.buf:
            self._emit(self.buf)
            self.buf = b''

    def close(self):
        if self.fd is None:
            return
        if self.polled:
            broker.del_reader(self.fd)
        os.close(self.fd)
        self.fd = None
        self.flush()
        core.flush_log(self.budget, self.logger)

    def drain(self, secs):
        # After a failed handshake: what the child said last matters most.
        end = time.time() + secs
        while self.fd is not None and time.time() < end:
            if _readable([self.fd], end - time.time()):
                self.read()
            else:
                break
        self.flush()

    def start(self):
        # IO thread: keep forwarding for the child's whole life.
        if self.fd is not None:
            self.polled = True
            broker.add_reader(self.fd, self.on_read)


def _suffix(sides):
    tail = [t for side in sides if side for t in side.tail]
    return '; last output: %s' % ' | '.join(tail) if tail else ''


class _BulkChunks(list):
    # A queued bulk frame: [fields, head, body]; its MAC covers the first two.
    pass


class _Lanes(object):
    # The order a child's queued frames are written in (actors/src/lanes.rs
    # has the same rules): a frame of BULK bytes or more is bulk, and so is
    # one for a (destination, handle) that still has bulk queued (one
    # handle's frames keep their order); SHUTDOWN goes behind queued bulk;
    # the rest (calls, replies, credits) overtakes bulk, which still gets a
    # frame after RUN bytes of small ones in a row.
    BULK, RUN = 65536, 1 << 20

    def __init__(self):
        self.urgent, self.bulk, self.pending, self.run = deque(), deque(), {}, 0

    def __len__(self):
        return len(self.urgent) + len(self.bulk)

    def clear(self):
        self.urgent.clear()
        self.bulk.clear()
        self.pending.clear()
        self.run = 0

    def push(self, dst, handle, n, chunks):
        key = (dst, handle)
        p = self.pending
        if n >= self.BULK or key in p or (handle == SHUTDOWN and self.bulk):
            p[key] = p.get(key, 0) + 1
            self.bulk.append((key, n, chunks))
        else:
            self.urgent.append((n, chunks))

    def next_is_bulk(self):
        return not self.urgent or (self.run >= self.RUN and self.bulk)

    def pop(self):
        if self.urgent and not (self.run >= self.RUN and self.bulk):
            f = self.urgent.popleft()
            if self.bulk:
                self.run += f[0]
            return f
        if not self.bulk:
            return None
        key, n, chunks = self.bulk.popleft()
        self.run = 0
        c = self.pending[key] - 1
        if c:
            self.pending[key] = c
        else:
            del self.pending[key]
        return n, chunks


class ChildStream(core.Stream):
    # Writes never block: frames are queued and the IO thread flushes them
    # as the socket drains (POLLOUT on a second fd of the same socket, so
    # the core's broker needs no change). A blocking write here could
    # deadlock: our IO thread stuck writing down while the child's IO
    # thread is stuck writing up (a log flood) to us, who no longer read.
    # Backpressure: past HIGH queued bytes we stop reading our parent
    # (frames from it are what fills child queues) until the queue is
    # below LOW again; EOF and errors on the parent are still seen.
    def __init__(self, cid, name, sock, proc, key, err, tty=None, keep=()):
        fd = core._cloexec(os.dup(sock.fileno()))
        core.Stream.__init__(self, router, cid, fd, fd, key, down=True)
        # The socket object stays ours so shutdown() can give the child EOF
        # from any thread without closing (and so freeing) the fd number.
        self.name, self.sock, self.proc, self.err = name, sock, proc, err
        # The pty's reader, and its master and slave: held until the child
        # is reaped (closing the master would hang up its terminal).
        self.tty, self.keep = tty, keep
        self.on_frame = self._checked
        self.q = deque()  # sealed bytes being written (MACs fixed)
        self.lanes = _Lanes()  # frames not sealed yet: small ones go first
        self.qbytes = 0
        self.pfd = core._cloexec(os.dup(fd))  # polled for POLLOUT while q is not empty
        self.armed = False

    def _checked(self, dst, src, handle, reply_to, data, via):
        r = router
        if (r.streams.get(src) or r.streams.get(r.routes.get(src))) is not self:
            # Keyed by the child, not the (forged) source: bounded.
            r.warn_once('spoof', self.remote_id, 'dropping frame from child %d: source %d '
                        'is not in its subtree', self.remote_id, src)
            return
        if _trace is not None:
            _trace.append([self.remote_id, u'in', src, dst, handle])
        if dst == r.id and handle == DEL_ROUTE and type(data) is not core.Bulk:
            return self._del_route(data)
        r.route(dst, src, handle, reply_to, data, self)

    def send(self, dst, src, handle, reply_to, chunks):
        # Any thread. Same framing and MAC as core.Stream.send, but queued:
        # frames wait unsealed in two lanes (small before bulk, _Lanes) and
        # get their MAC, numbered in write order, when _flush takes them.
        if _trace is not None:
            _trace.append([self.remote_id, u'out', src, dst, handle])
        if type(chunks) is core.Bulk:
            # Forwarded as the bulk frame it came as: _seal MACs the fields
            # and its head only; the body (file bytes) is never hashed here.
            n = len(chunks)
            if n > router.max_size:
                raise core.MsgError('message of %d bytes exceeds max_message_size' % n)
            chunks = _BulkChunks([core._FLD.pack(dst, src, handle, reply_to, n | core.BULK),
                                  chunks.head, chunks.body])
        else:
            if type(chunks) is not list:
                chunks = [chunks]
            n = sum(map(len, chunks))
            if n > router.max_size:
                raise core.MsgError('message of %d bytes exceeds max_message_size' % n)
            chunks.insert(0, core._FLD.pack(dst, src, handle, reply_to, n))
        if n >= core.BIG_FRAME:
            self.tx.prepare(False)
        with self.wlock:
            if self.closed:
                raise EOFError('stream to %d is closed' % self.remote_id)
            # One frame counts at most HIGH against the cap, so a single
            # value up to max_message_size still passes a reading child;
            # memory stays within HARD plus one frame.
            over = self.qbytes + 36 + min(n, HIGH) > HARD
            if over:
                # Replies and bounces for a child that stopped reading
                # must not grow without bound: the child is closed (its
                # reader sees EOF and declares it dead) and this frame's
                # sender hears Dead.
                self.closed = True
                self.q.clear()
                self.lanes.clear()
                self.qbytes = 0
            else:
                self.lanes.push(dst, handle, n, chunks)
                self.qbytes += n + 36
                self._flush()
            left = self.qbytes
        if over:
            LOG.warning('closing child %d: over %d bytes queued for it and it does not read',
                        self.remote_id, HARD)
            try:
                self.sock.shutdown(socket.SHUT_RDWR)
            except EnvironmentError:
                pass
            raise EOFError('stream to %d closed: it stopped reading' % self.remote_id)
        if left:
            if broker.thread.is_current():
                self._arm()
                if left > HIGH:
                    _pause(self)
            else:
                broker.defer(self._arm)

    def _seal(self):
        # Under wlock, q empty: the next frames, MACed in the order they
        # will be written. Small ones are joined into one write of up to
        # 256 KiB, as batch frames of up to bmax bytes (one MAC each, see
        # docs/PROTOCOL.md, "Batch frames"); a bulk one goes alone (the
        # kernel takes what fits).
        parts, size, lanes = [], 0, self.lanes
        batch, count, blen, bmax = [], 0, 0, self.bmax
        while size < 262144:
            f = lanes.pop()
            if f is None:
                break
            n, chunks = f  # chunks[0] is the frame's fields
            bulk = type(chunks) is _BulkChunks  # never batched
            if n + 16 <= bmax and not bulk:
                if blen + n + 16 > bmax:
                    parts.append(core._seal_batch(self.tx, batch, count, blen))
                    batch, count, blen = [], 0, 0
                batch.extend(chunks)
                count += 1
                blen += n + 16
            else:
                if count:
                    parts.append(core._seal_batch(self.tx, batch, count, blen))
                    batch, count, blen = [], 0, 0
                if bulk:  # the MAC covers its fields and head only
                    chunks.insert(0, self.tx(chunks[:2], len(chunks[1])))
                else:
                    chunks.insert(0, self.tx(chunks, n))
                if n >= 65536 and not parts:
                    self.q.append(chunks[0] + chunks[1])  # MAC and fields
                    self.q.extend(chunks[2:])
                    return
                parts.extend(chunks)
            size += n + 36
            if lanes.next_is_bulk():
                break
        if count:
            parts.append(core._seal_batch(self.tx, batch, count, blen))
        if parts:
            self.q.append(b''.join(parts))

    def _flush(self):
        # Under wlock.
        q = self.q
        try:
            while q or self.lanes:
                if not q:
                    self._seal()
                c = q[0]
                k = self.sock.send(c, socket.MSG_DONTWAIT)
                self.qbytes -= k
                if k < len(c):
                    q[0] = memoryview(c)[k:]
                    return
                q.popleft()
        except EnvironmentError as e:
            if e.errno in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EINTR):
                return
            self.closed = True  # the reader sees EOF or the error and cleans up
            q.clear()
            self.lanes.clear()
            self.qbytes = 0
            raise

    def _arm(self):
        # IO thread.
        if not self.armed and (self.q or self.lanes) and self.pfd is not None:
            self.armed = True
            broker.add_reader(self.pfd, self._writable, select.POLLOUT)

    def _writable(self):
        # IO thread: POLLOUT (or an error) on pfd.
        with self.wlock:
            try:
                self._flush()
            except EnvironmentError:
                pass
            left = self.qbytes
        if not left or self.closed:
            self.armed = False
            broker.del_reader(self.pfd)
        if left < LOW:
            _resume(self)

    def _del_route(self, data):
        # A death in the child's subtree: only contexts routed through this
        # stream may be declared dead by it.
        try:
            target = unpack(data)
        except Exception:
            return router.warn_once('bad_del_route', self.remote_id, 'bad DEL_ROUTE from child %d',
                                    self.remote_id)
        if target != self.remote_id and router.routes.get(target) == self.remote_id:
            del router.routes[target]
            _lost([target], u'disconnected')

    def disconnect(self, reason):
        # IO thread only.
        if self.rfd is None:
            return
        dead = [t for t, v in list(router.routes.items()) if v == self.remote_id]
        core.Stream.disconnect(self, reason)  # router.on_disconnect drops the routes
        with self.wlock:
            self.q.clear()
            self.lanes.clear()
            self.qbytes = 0
        broker.del_reader(self.pfd)
        os.close(self.pfd)
        self.pfd = None
        _resume(self)
        try:
            self.sock.close()  # the child sees EOF even if we closed on a bad frame
        except Exception:
            pass
        children.pop(self.remote_id, None)
        _lost(dead + [self.remote_id], _text(reason or u'disconnected'))
        if self.tty is not None:
            self.tty.close()  # our slave keeps it from ever reading EOF
        t = threading.Thread(target=_reap, args=(self.proc, self.keep))
        t.daemon = True
        t.start()


_full = set()  # child streams over HIGH: while any, the parent is not read


def _pause(s):
    if not _full:
        broker.read_parent(False)  # still reports hangup and errors
    _full.add(s)


def _resume(s):
    if s in _full:
        _full.discard(s)
        if not _full:
            broker.read_parent(True)


def _lost(dead, reason):
    # IO thread: contexts in `dead` are gone.
    for d in dead:
        _sent.pop(d, None)
        if not router.lost:
            try:
                router.send(core.parent_id, DEL_ROUTE, d)
            except Exception:
                pass
    for h, c in list(_waits.items()):
        if c in dead:
            del _waits[h]
            fn = router.handlers.get(h)
            if fn:
                fn(c, 0, Dead(u'context %d is dead: %s' % (c, reason)))


def _kill(proc):
    try:
        proc.kill()
    except EnvironmentError:
        pass
    proc.wait()


def _wait(procs, secs):
    end = time.time() + secs
    while [p for p in procs if p.poll() is None] and time.time() < end:
        time.sleep(0.02)


def _reap(proc, keep=()):
    # The stream is gone: the child exits by itself on EOF (within the
    # core's GRACE); if not, it is killed. Either way, no zombie. Its
    # pty goes only then.
    _wait([proc], core.GRACE + 1)
    if proc.poll() is None:
        _kill(proc)
    _close_all(keep)


def _close_all(fds):
    for fd in fds:
        try:
            os.close(fd)
        except EnvironmentError:
            pass


def _status(proc, secs):
    _wait([proc], secs)
    rc = proc.poll()
    if rc is None:
        return 'still running'
    return rc < 0 and 'killed by signal %d' % -rc or 'exit status %d' % rc


class _Auth(object):
    # How a child's password prompts are answered during the handshake,
    # and its failure classified: the SPAWN's rules.
    def __init__(self, method, prompt, words, rules, password, tty_fd):
        self.method = method or u'the program'
        # Prompts are only looked for where a method can ask one.
        self.watch = method not in (u'', u'local')
        self.prompt = prompt
        self.words = [_text(w).lower() for w in words or ()]
        self.rules = rules or ()
        self.password = password
        self.tty_fd = tty_fd
        self.sent = False

    def answer(self, a, on_tty):
        if self.password is None:
            raise _Fail('PasswordRequired', '%s asked for a password and none was given' % self.method)
        if self.sent:
            raise _Fail('PasswordRefused', 'password refused by %s' % self.method)
        answer = (self.password + u'\n').encode('utf-8')
        # Answer where we were asked: prompts on the terminal are read
        # from it; a prompt on stderr (su with PAM) reads stdin.
        try:
            if on_tty:
                while answer:
                    answer = answer[os.write(self.tty_fd, answer):]
            else:
                a.sendall(answer)
        except EnvironmentError as e:
            raise _Fail('ExitedEarly', '%s exited while its password prompt was answered (%s)' % (
                self.method, _text(e.strerror or str(e))))
        self.sent = True
        LOG.debug('answered the password prompt of %s on %s', self.method,
                  on_tty and 'its tty' or 'stdin')

    def refuse_host_key(self):
        # "no", as `ask` says without a terminal: ssh then exits with
        # "Host key verification failed." (HostKeyRefused by the rules).
        try:
            os.write(self.tty_fd, b'no\n')
        except EnvironmentError:
            pass  # ssh is gone: its exit is classified as it is
        LOG.debug('answered no to the host key question of %s', self.method)

    def classify(self, sides):
        # The child exited before EC1: its last words may say why. The
        # SPAWN's exit_rules (classify_exit in prompt.rs): the first rule
        # with a matching line gives the kind, by what became of the
        # password; the matching lines are the detail.
        lines = [t for side in sides if side for t in side.tail]
        for r in self.rules:
            needles = [_text(n).lower() for n in r.get('needles') or ()]
            hit = [t.strip() for t in lines if any(n and n in t.lower() for n in needles)]
            if hit:
                k = r.get(self.sent and 'if_sent' or self.password is not None and 'if_given'
                          or 'if_none')
                return _Fail(_text(k or u'Via'), u' | '.join(hit))
        return None


def _readable(fds, timeout):
    # The fds of `fds` readable (or hung up) within `timeout` seconds.
    # poll, not select: select refuses fds from 1024 up, which an
    # intermediate with many children reaches (every spawn's handshake
    # would fail with ValueError). EINTR reaches the caller on Python 2.
    p = select.poll()
    for fd in fds:
        p.register(fd, select.POLLIN)
    ms = max(0, timeout) * 1000
    return [fd for fd, ev in p.poll(int(ms) + (ms % 1 > 0))]


def _handshake(a, proc, sides, auth, payload, timeout, skippable=False):
    # Returns whatever was read past EC1 (the start of the frame stream).
    # sides: the child's stderr, and its pty (or None). skippable: a Rust
    # agent's first stage may say EC1 with no EC0 (it ran the binary from
    # its cache), and then no payload is sent.
    deadline = time.time() + timeout
    afd = a.fileno()
    buf, stage = b'', 0
    while True:
        left = deadline - time.time()
        if left <= 0:
            raise _Fail('Timeout', 'timed out after %.1fs waiting for %s' % (timeout, STAGES[stage]))
        live = [x for x in sides if x and x.fd is not None]
        try:
            r = _readable([afd] + [x.fd for x in live], left)
        except (select.error, EnvironmentError) as e:
            if e.args[0] == errno.EINTR:
                continue
            raise
        for x in live:
            if x.fd in r:
                got = x.read()
                on_tty = x is sides[1]
                asked = got and auth.watch and stage == 0 and x.prompted(got, auth, on_tty)
                if asked == 'password':
                    auth.answer(a, on_tty)
                elif asked == 'hostkey':
                    auth.refuse_host_key()
        if afd not in r:
            continue
        s = a.recv(65536)
        if not s:
            raise _Fail('ExitedEarly', 'child exited early during %s (%s)' % (
                STAGES[stage], _status(proc, min(1.0, max(0.1, deadline - time.time())))))
        buf += s
        marker = stage and b'EC1\n' or b'EC0\n'
        i = buf.find(marker)
        if skippable and not stage:
            j = buf.find(b'EC1\n')
            if j >= 0 and (i < 0 or j < i):
                return buf[j + 4:]
        if i < 0:
            if len(buf) > MAX_NOISE:
                raise _Fail('Protocol', 'handshake failed: no %s marker in %d bytes of output' % (
                    marker[:3].decode('ascii'), len(buf)))
            continue
        buf = buf[i + 4:]
        if stage:
            return buf
        stage, buf = 1, b''  # nothing may follow EC0 until the payload is sent
        a.settimeout(max(0.1, deadline - time.time()))
        try:
            a.sendall(payload)
        except socket.timeout:
            raise _Fail('Timeout', 'timed out after %.1fs sending the payload' % timeout)
        except EnvironmentError as e:
            raise _Fail('ExitedEarly', 'child exited early during %s (%s)' % (STAGES[0], e))
        a.settimeout(None)


def _open_pty():
    # Both ends close-on-exec (the child gets the slave only as its
    # controlling terminal), echo off: a password written to the master is
    # never echoed back into what we read and log.
    master, slave = os.openpty()
    for fd in (master, slave):
        core._cloexec(fd)
    attrs = termios.tcgetattr(slave)
    attrs[3] &= ~(termios.ECHO | termios.ECHONL | termios.ECHOE | termios.ECHOK)
    termios.tcsetattr(slave, termios.TCSANOW, attrs)
    return master, slave


def _preexec(tty_name):
    # In the forked child, before exec: a new session, whose controlling
    # terminal is the pty when there is one. Opened by name (Python 2's
    # close_fds runs before preexec_fn and closes the inherited slave);
    # only plain syscalls here, as other threads may hold locks.
    def child():
        os.setsid()
        if tty_name is not None:
            fd = os.open(tty_name, os.O_RDWR)
            fcntl.ioctl(fd, termios.TIOCSCTTY, 0)
            os.close(fd)
    return child


def _core_source():
    # The core this context was bootstrapped with, or, when the master left
    # it out of a lean start's payload (it sent the core compiled), the
    # master's builtin econtext.core: fetched once, on this worker thread,
    # bounded by the import timeout like any GET_MODULE.
    if not core.CORE_SOURCE:
        imp = core.importer
        if 'econtext.core' not in imp.cache:
            try:
                imp._fetch('econtext.core')
            except ImportError:
                e = sys.exc_info()[1]
                raise _Fail('Spawn', 'cannot start a child: this context has no copy of the '
                            'core to send it (%s)' % (e,))
        rec = imp.cache.get('econtext.core')
        if not rec or not rec[3]:
            raise _Fail('Spawn', 'cannot start a child: this context has no copy of the core '
                        'to send it, and its parent did not send one')
        core.CORE_SOURCE = zlib.decompress(rec[3])
    return core.CORE_SOURCE


def _payload(cfg, agent):
    # What follows EC0, and what follows EC1. A Rust agent (SPAWN `agent`):
    # the master's framed binary, then the agent's config; else our core.
    if agent:
        if type(agent) is dict:
            agent = agent['payload'], agent['config']
        return bytes(agent[0]), bytes(agent[1])
    script = _core_source() + ('\nmain(%s)\n' % _literal(cfg)).encode('ascii')
    z = zlib.compress(script, 9)
    return ('%d\n' % len(z)).encode('ascii') + z, b''


def _connect(cid, name, argv, env, cfg, timeout, method=u'', new_session=False, tty=False,
             prompt=None, password=None, words=(), rules=(), agent=None):
    key = binascii.unhexlify(cfg['key'])
    payload, after_ec1 = _payload(cfg, agent)
    e = dict(os.environ)
    for k, v in env.items():
        e[_native(k)] = _native(v)
    argv = [_native(x) for x in argv]
    if not argv:
        raise _Fail('Spawn', 'cannot start: empty argv')
    keep, tty_name, kw = [], None, {}
    if tty:
        try:
            keep = list(_open_pty())
            tty_name = os.ttyname(keep[1])
        except EnvironmentError as x:
            _close_all(keep)
            raise _Fail('Via', '%s needs a pty, which this intermediate cannot provide: %s' % (
                method, _text(x.strerror or str(x))))
    if tty or new_session:
        kw['preexec_fn'] = _preexec(tty_name)
    a, b = socket.socketpair()
    core._cloexec(a.fileno())
    try:
        proc = subprocess.Popen(argv, stdin=b, stdout=b, stderr=subprocess.PIPE, env=e,
                                close_fds=True, **kw)
    except Exception as x:
        a.close()
        _close_all(keep)
        raise _Fail('Spawn', 'cannot start %s: %s' % (_text(argv[0]),
                                             _text(getattr(x, 'strerror', None) or str(x))))
    finally:
        b.close()
    err = _Stderr(u'stderr.' + name, core._cloexec(os.dup(proc.stderr.fileno())), password)
    proc.stderr.close()
    side = keep and _Stderr(u'tty.' + name, core._cloexec(os.dup(keep[0])), password) or None
    auth = _Auth(method, prompt, words, rules, password, keep and keep[0])
    sides = (err, side)
    try:
        initial = _handshake(a, proc, sides, auth, payload, timeout, bool(after_ec1))
        if after_ec1:
            a.settimeout(timeout)
            try:
                a.sendall(after_ec1)
            except socket.timeout:
                raise _Fail('Timeout', 'timed out after %.1fs sending the agent its config' % timeout)
            a.settimeout(None)
    except BaseException as x:
        _kill(proc)
        a.close()
        for x2 in sides:
            if x2:
                x2.drain(0.5)
                x2.close()
        _close_all(keep)
        if not isinstance(x, _Fail):
            raise
        if x.kind == 'ExitedEarly' and auth.watch:
            x = auth.classify(sides) or x
        msg = _text(x.msg)
        if password:
            msg = msg.replace(_text(password), REDACTED)
        if x.kind in ('PasswordRefused', 'PasswordRequired'):
            raise _Fail(x.kind, msg)
        raise _Fail(x.kind, msg + _suffix(sides))
    stream = ChildStream(cid, name, a, proc, key, err, side, keep)
    children[cid] = router.streams[cid] = stream

    def start():
        # IO thread: bytes read past EC1 first, then the socket itself.
        if initial:
            stream._parse(initial)
        if not stream.closed:
            broker.add_reader(stream.rfd, stream.on_read)
        err.start()
        if side is not None:
            side.start()
    broker.defer(start)
    return proc.pid


def spawn(src, reply_to, data):
    # A worker thread (econtext.core._spawn): may block, may import.
    try:
        req = unpack(data)
        if type(req) is list:
            # The Rust master's serde encodes the Spawn struct as an array
            # in field order; PROTOCOL.md says a map. Take either.
            req = dict(zip(_SPAWN_FIELDS, req))
        cid, name, cfg = req['id'], _text(req['name']), req['config']
        if cfg.get('context_id') != cid or cfg.get('parent_id') != router.id:
            raise _Fail('Via', 'SPAWN config does not match')
        if cid in children:
            raise _Fail('Via', 'context %d already exists here' % cid)
        timeout = min(max(float(req.get('timeout') or 30), 0.1), 3600)
        password = req.get('password')
        reply = [_connect(cid, name, req['argv'], req.get('env') or {}, cfg, timeout,
                          _text(req.get('method') or u''), bool(req.get('new_session')),
                          bool(req.get('tty')), req.get('prompt') and _text(req['prompt']),
                          None if password is None else _text(password),
                          req.get('prompt_words') or (), req.get('exit_rules') or (),
                          req.get('agent'))]
        LOG.debug('spawned %s (context %d) pid %d', name, cid, reply[0])
    except _Fail as e:
        reply = CallError(u'econtext.ConnectError.' + _text(e.kind), _text(e.msg), u'')
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        reply = CallError(u'econtext.ConnectError.Protocol', u'malformed SPAWN: %r' % (e,), u'')
    router._reply(src, reply_to, reply)


def shutdown():
    # Main thread, from econtext.core._shutdown: children go first.
    kids = list(children.values())
    for c in kids:
        try:
            c.send(c.remote_id, router.id, SHUTDOWN, 0, packl(None))
        except Exception:
            pass
    procs = [c.proc for c in kids]
    _wait(procs, 1.0)
    for c in kids:
        if c.proc.poll() is None:
            try:
                c.sock.shutdown(socket.SHUT_RDWR)  # EOF: the child exits by itself
            except Exception:
                pass
    _wait(procs, core.GRACE + 0.5)
    for p in procs:
        if p.poll() is None:
            _kill(p)


# ---- ModuleForwarder --------------------------------------------------------
def _wire(rec):
    # Cached records hold children as a set; source must stay bin even on
    # Python 2 (a str that happens to be UTF-8 would go as msgpack str).
    return [rec[0], rec[1], rec[2], rec[3] if PY3 else bytearray(rec[3]), sorted(rec[4])] + rec[5:]


def _answer(src, reply_to, name):
    cache = core.importer.cache
    rec = cache.get(name)
    out = None
    if rec:
        sent = _sent.setdefault(src, set())
        out = [_wire(rec)]
        sent.add(name)
        rel = _related.get(name)
        if rel is None:
            rel = rec[2] and ['%s.%s' % (name, c) for c in sorted(rec[4])] or ()
        for r in rel:
            x = cache.get(r)
            if x and r not in sent:
                out.append(_wire(x))
                sent.add(r)
    router._reply(src, reply_to, out)


def _fetched(name, reply):
    if type(reply) is list:
        _related[name] = [r[0] for r in reply[1:] if type(r) is list and len(r) >= 5]
    core.importer._store(name, reply)
    for src, reply_to in _pending.pop(name, ()):
        _answer(src, reply_to, name)


def _get_module(src, reply_to, name):
    # IO thread: never blocks, never imports.
    if not reply_to or not isinstance(name, core._UNI):
        return
    if len(name) > 512 or (name not in _pending and len(_pending) >= 1024):
        return router._reply(src, reply_to, None)  # bounded: a child picks the names
    if name in core.importer.cache:
        return _answer(src, reply_to, name)
    waiting = _pending.get(name)
    if waiting is not None:
        return waiting.append((src, reply_to))
    _pending[name] = [(src, reply_to)]
    # Only our parent answers what we asked it (accept=): a reply forged
    # by a child or a sibling is dropped, never cached or served onward.
    h = router.add_handler(lambda s, rt, reply: _fetched(name, reply), persist=False,
                           accept=core.parent_id)
    try:
        router.send(core.parent_id, GET_MODULE, name, h)
    except Exception:
        router.del_handler(h)
        _fetched(name, Dead(u'parent unreachable'))


router.add_handler(_get_module, GET_MODULE)


# ---- For user code ----------------------------------------------------------
def call(context_id, module, function, *args, **kwargs):
    # Calls a function in a descendant and waits for the result (not from
    # the IO thread). Raises CallError, or core.Dead's reason as EOFError
    # when the context dies first.
    q = core._Queue()
    h = router.add_handler(lambda src, rt, obj: q.put(obj), persist=False, accept=context_id)
    _waits[h] = context_id
    router.send(context_id, CALL_FUNCTION, [module, None, function, list(args), kwargs], h)
    v = q.get()
    _waits.pop(h, None)
    if isinstance(v, CallError):
        raise v
    if isinstance(v, Dead):
        raise EOFError(v.reason)
    return v


def trace(on=True):
    # Records every frame crossing a child stream (for tests and debugging).
    global _trace
    _trace = deque(maxlen=100000) if on else None
    return True


def traced():
    return list(_trace or ())


def stats():
    return {u'children': sorted(children), u'routes': sorted(router.routes.items()),
            u'pending_modules': len(_pending), u'waits': len(_waits)}
