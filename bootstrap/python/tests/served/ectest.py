# Test functions the harness calls in the child; served by the importer.
import logging
import os
import sys
import time


def echo(x):
    return x


def add(a, b=0, c=0):
    return a + b + c


def boom():
    return 1 / 0


def prints():
    print('hello from print')
    sys.stdout.flush()
    os.system('echo hi')
    sys.stderr.write('to stderr\n')
    return 42


def logs():
    logging.getLogger('ectest').warning('warned %d', 5)
    logging.getLogger('ectest').debug('debugged')
    return 'logged'


def flood_logs(n):
    # User code logging in a loop, through each way a record leaves: the
    # logging package, print (the stdout IoLogger) and the core's own LOG.
    import econtext.core
    log = logging.getLogger('ectest.flood')
    for i in range(n):
        log.warning('flood %d', i)
        print('flood line %d' % i)
        econtext.core.LOG.warning('core flood %d', i)
    sys.stdout.flush()
    return n


def kept_buffers():
    # (bytes of buffers kept for the next large frame, whether this child
    # reads large frames in place, i.e. keeps any).
    import econtext.core as c
    n = len(c._SPARE[0] or b'') + sum(len(b) for s in c.router.streams.values() for b in s.pool)
    return [n, bool(c._HAVE_READV and c._REUSE[0])]


def count_files_stat_from_threads(threads, n):
    # econtext.files' counters from many threads at once, with the GIL
    # switched as often as it can be: none may be lost.
    import threading
    import econtext.files as f
    before = f.stats()[u'relayed']
    if hasattr(sys, 'setswitchinterval'):
        old = sys.getswitchinterval()
        sys.setswitchinterval(1e-6)
    else:
        old = sys.getcheckinterval()
        sys.setcheckinterval(1)

    def run():
        for _ in range(n):
            f._count(u'relayed', 1)
    ts = [threading.Thread(target=run) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    if hasattr(sys, 'setswitchinterval'):
        sys.setswitchinterval(old)
    else:
        sys.setcheckinterval(old)
    return f.stats()[u'relayed'] - before


def send_to(sender, obj):
    sender.send(obj)
    return sender.handle


def ident():
    import econtext.core as c
    return [c.context_id, c.parent_id, c.context_name, c.router.id,
            os.environ.get('ARGV0'), c.PYTHON, sys.executable,
            type(c.CORE_SOURCE).__name__, len(c.CORE_SOURCE),
            c.CORE_SOURCE.rstrip().endswith(b'_shutdown()') and b'\nmain({' not in c.CORE_SOURCE]


def cmdline():
    with open('/proc/self/cmdline', 'rb') as f:
        return f.read().split(b'\0')[0].decode()


def children():
    # The first stage must have been reaped: no child processes at all.
    try:
        return os.waitpid(-1, os.WNOHANG)
    except OSError as e:
        return e.errno


def sleep(n):
    time.sleep(n)
    return n


def unencodable():
    return object()


def import_missing():
    try:
        import ecpkg.nothere  # noqa: F401
    except ImportError as e:
        return str(e)
    return 'imported?'


def import_unknown_top():
    try:
        import ec_no_such_module  # noqa: F401
    except ImportError as e:
        return str(e)
    return 'imported?'


def import_named(name):
    try:
        __import__(name)
    except ImportError as e:
        return str(e)
    return 'imported?'


def use_pkg():
    import ecpkg
    import ecpkg.sub
    import ecpkg.rel
    return [ecpkg.VALUE, ecpkg.sub.f(), ecpkg.rel.f(), ecpkg.__file__,
            ecpkg.__path__, ecpkg.__package__, ecpkg.sub.__package__,
            ecpkg.sub.__file__, type(ecpkg.__loader__).__name__]


def sub_fail():
    import ecpkg.sub
    ecpkg.sub.fail()


def syntax_error():
    import ecpkg.bad  # noqa: F401


def newer_syntax():
    import ecpkg.newer
    return ecpkg.newer.y


def pickle_core():
    import pickle
    import econtext.core as c
    s = pickle.dumps([c.Dead(u'x'), c.CallError(u'a', u'b', u'c'), c.Sender(1, 1000), c.Context(2, u'n')])
    back = pickle.loads(s)
    return [back[0] == c.Dead(u'x'), back[1].type, back[2] == c.Sender(1, 1000),
            c.Dead.__module__, c.CallError.__module__, sys.modules['econtext'].core is c]


def fds():
    return sorted(int(x) for x in os.listdir('/proc/self/fd'))


def stdin_is_null():
    return os.path.realpath('/proc/self/fd/0')


def exits():
    sys.exit(3)


class Klass(object):
    @staticmethod
    def smeth(x):
        return x * 2

    @classmethod
    def cmeth(cls, x):
        return cls.__name__ + str(x)


def sleep_loud(n):
    print('sleeping')
    time.sleep(n)
    return n


# Work a thread does after its call has returned, while the main thread
# is idle (and reads the parent stream itself: Broker.lead).
LATER = {}


def later(what, arg, delay):
    def run():
        time.sleep(delay)
        try:
            if what == 'import':
                LATER[arg] = __import__(arg, fromlist=['x']).__name__
            else:
                print(arg)
                sys.stdout.flush()
                LATER[arg] = 'printed'
        except Exception as e:
            LATER[arg] = 'failed: %r' % (e,)
    import econtext.core as c
    c._Thread(run).start()
    return 'started'


def done_later(arg):
    return LATER.get(arg)


def receive_one(sender):
    # Blocks the main thread in a call until a message comes: the IO
    # thread must be the one reading the parent stream meanwhile.
    import econtext.core as c
    r = c.Receiver()
    sender.send(r.handle)
    return r.get(10)


def stale_parent_ready():
    # What the IO thread does when its poll said "readable" but the main
    # thread has since led and read everything (Broker._parent_ready with
    # nothing to read): it must return, not block in a read of the parent.
    import econtext.core as c
    done = []

    def ready():
        c.broker._parent_ready()
        done.append(1)
    t = c._Thread(ready)
    t.start()
    t.join(2)
    return bool(done)
