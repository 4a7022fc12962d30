# Checks the Python codec against the Rust encoder's shared vectors
# (wire/vectors/, described in its README.md): every file is fed through
# core.Stream on a fresh stream; frames, values, errors and the exact
# re-encoding of every value must match vectors.json.
import binascii
import collections
import json
import os
import struct
import threading

import harness
from harness import core


def from_json(v):
    if isinstance(v, list):
        return [from_json(x) for x in v]
    if not isinstance(v, dict):
        return v
    if '$float' in v:
        return float(v['$float'])
    if '$bin' in v:
        return bytearray(binascii.unhexlify(v['$bin']))  # bin on Python 2 too
    if '$map' in v:
        return collections.OrderedDict((from_json(k), from_json(x)) for k, x in v['$map'])
    e = v['$ext']
    if e == 'Dead':
        return core.Dead(v['reason'])
    if e == 'CallError':
        return core.CallError(v['type'], v['message'], v['traceback'])
    if e == 'Context':
        return core.Context(v['id'], v['name'])
    return core.Sender(v['context'], v['handle'])


class _Sink(object):
    id = 0

    def __init__(self, max_size):
        self.max_size = max_size
        self.frames = []

    def route(self, dst, src, handle, reply_to, data, via=None):
        if type(data) is core.Bulk:  # (covered part, bytes no MAC covers)
            data = (data.covered(), bytes(data.body))
        else:
            data = bytes(data)
        self.frames.append((dst, src, handle, reply_to, data))

    def on_disconnect(self, s):
        pass


class _Stream(core.Stream):
    reason = None

    def disconnect(self, reason):
        if self.reason is None:
            self.reason = reason or 'EOF'
        core.Stream.disconnect(self, reason)


def decode_file(path, key, direction, max_size):
    with open(path, 'rb') as f:
        wire = f.read()
    return decode_bytes(wire, key, direction, max_size)


def decode_bytes(wire, key, direction, max_size):
    r, w = os.pipe()
    sink = _Sink(max_size)
    # A child receives 'down' frames: its Stream(down=False) verifies them.
    s = _Stream(sink, 0, r, os.open(os.devnull, os.O_WRONLY), key, down=(direction == 'up'))

    def feed():
        mv = memoryview(wire)
        pos = 0
        try:
            while pos < len(wire):
                pos += os.write(w, mv[pos:pos + 65536])
        except OSError:
            pass
        os.close(w)
    t = threading.Thread(target=feed)
    t.start()
    while not s.closed:
        s.on_read()
    t.join()
    leftover = len(s.buf) + (s.plen + 36 if s.pend is not None else 0)
    return sink.frames, s.reason, leftover


def reseal(frames, key, direction):
    # What the Python core's senders write for these frames: lone ones
    # with Mac.one, trailing ones with Mac.begin/end, and each batch group
    # with _seal_batch (as Stream._close_batch and ChildStream._seal do).
    tx = core.Mac(key, direction == 'up' and b'\1' or b'\0')
    out, group, chunks, count, size = [], None, [], 0, 0
    for f in frames + [None]:
        k = f and f.get('batch')
        if count and k != group:
            out.append(core._seal_batch(tx, chunks, count, size))
            chunks, count, size = [], 0, 0
        if f is None:
            break
        group = k
        data = core.pack(from_json(f['value']))
        if f.get('bulk'):
            head = struct.pack('>I', len(data)) + data
            body = binascii.unhexlify(f['bytes'])
            fld = core._FLD.pack(f['dst'], f['src'], f['handle'], f['reply_to'],
                                 (len(head) + len(body)) | core.BULK)
            out.append(tx.one(fld + head) + fld + head + body)
            continue
        if f['trailer']:
            fld = core._FLD.pack(f['dst'], f['src'], f['handle'], f['reply_to'], len(data) | core.TRAILER)
            st = tx.begin(len(data))
            st[0].update(fld + data)
            out.append(b'\0' * 20 + fld + data + tx.end(st))
            continue
        body = core._FLD.pack(f['dst'], f['src'], f['handle'], f['reply_to'], len(data)) + data
        if k is None:
            out.append(tx.one(body) + body)
        else:
            chunks.append(body)
            count += 1
            size += len(body)
    return b''.join(out)


def check_all(tc, root):
    core.broker = harness._NoBroker()
    with open(os.path.join(root, 'vectors.json')) as f:
        doc = json.load(f)
    tc.assertEqual(doc['format'], 5)
    key = binascii.unhexlify(doc['key_hex'])
    n = 0
    for v in doc['vectors']:
        frames, reason, leftover = decode_file(os.path.join(root, v['file']), key,
                                               v['direction'], doc['max_message_size'])
        name = v['name']
        tc.assertEqual(len(frames), v['decoded'], name)
        for got, want in zip(frames, v['frames']):
            tc.assertEqual(got[:4], (want['dst'], want['src'], want['handle'], want['reply_to']), name)
            data = got[4]
            tc.assertEqual(type(data) is tuple, want['bulk'], name)
            if want['bulk']:
                data, body = data
                tc.assertEqual(body, binascii.unhexlify(want['bytes']), name)
                tc.assertEqual(4 + len(data) + len(body), want['length'], name)
            else:
                tc.assertEqual(len(data), want['length'], name)
            value = from_json(want['value'])
            tc.assertEqual(core.unpack(data), value, name)
            tc.assertEqual(core.pack(value), data, name)  # byte for byte
            n += 1
        err = v['error']
        if err is None and [f for f in v['frames'] if f.get('batch') is not None or f.get('bulk')]:
            # Sealed by Python, the batches are the Rust encoder's bytes:
            # each implementation decodes the other's.
            with open(os.path.join(root, v['file']), 'rb') as f:
                tc.assertTrue(reseal(v['frames'], key, v['direction']) == f.read(), name)
            n += 1
        if err is None:
            tc.assertEqual((reason, leftover), ('EOF', 0), name)
        elif err['kind'] == 'bad_mac':
            tc.assertTrue(reason and 'bad MAC' in reason, (name, reason))
        elif err['kind'] == 'bad_batch':
            tc.assertEqual(reason, 'malformed batch frame: %s' % err['fault'], name)
        elif err['kind'] == 'oversized':
            tc.assertTrue(reason and 'max_message_size' in reason, (name, reason))
        else:
            tc.assertEqual(err['kind'], 'truncated', name)
            tc.assertEqual(reason, 'EOF', name)
            tc.assertEqual(leftover, err['have'], name)
    return n


def _pattern(n):
    # vectors/large.json's pattern: byte i is (i * 31 + 7) % 256.
    period = bytearray((i * 31 + 7) & 255 for i in range(256))
    return (period * (n // 256 + 1))[:n]


class _Tap(object):
    # The far end of a pipe, read to the end on a thread.
    def __init__(self, fd):
        self.fd, self.out = fd, []
        self.t = threading.Thread(target=self._read)
        self.t.start()

    def _read(self):
        while True:
            s = os.read(self.fd, 1 << 20)
            if not s:
                return
            self.out.append(s)

    def bytes(self):
        self.t.join()
        os.close(self.fd)
        return b''.join(self.out)


def check_large(tc, root):
    # Frames of 1 MiB and more (wire/vectors/large.json, generated): this
    # core's encoder must make the same bytes as the Rust one (the SHA-1
    # of the whole stream), and its reader must take them back.
    import hashlib
    core.broker = harness._NoBroker()
    with open(os.path.join(root, 'large.json')) as f:
        doc = json.load(f)
    tc.assertEqual((doc['format'], doc['direction']), (1, 'up'))
    key = binascii.unhexlify(doc['key_hex'])
    r, w = os.pipe()
    tap = _Tap(r)
    sink = _Sink(128 << 20)
    tx = core.Stream(sink, 0, os.open(os.devnull, os.O_RDONLY), w, key, down=False)
    datas = []
    for fr in doc['frames']:
        data = core.pack(_pattern(fr['bin_len']))
        tc.assertEqual(len(data), fr['length'])
        datas.append(data)
        tx.send(fr['dst'], fr['src'], fr['handle'], fr['reply_to'], core.packl(_pattern(fr['bin_len'])))
    os.close(w)
    wire = tap.bytes()
    tc.assertEqual(len(wire), doc['size'])
    tc.assertEqual(hashlib.sha1(wire).hexdigest(), doc['sha1_hex'], 'not the Rust encoder\'s bytes')
    # The parent's reader, fed 64 KiB at a time (large frames read in place).
    frames, reason, leftover = decode_bytes(wire, key, 'up', 128 << 20)
    tc.assertEqual((reason, leftover), ('EOF', 0))
    tc.assertEqual(len(frames), len(doc['frames']))
    for got, fr, data in zip(frames, doc['frames'], datas):
        tc.assertEqual(got[:4], (fr['dst'], fr['src'], fr['handle'], fr['reply_to']))
        tc.assertEqual(got[4], data)
    return len(frames)
