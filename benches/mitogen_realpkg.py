"""Mitogen beside econtext on real PyPI packages (issue 13): the first call
into requests (`requests.utils.requote_uri`) and into rich (a Console
render) from a fresh local child that has neither package, with the same
wheels examples/bench.rs serves (/tmp/mitobench/realpkg/<child version>,
which `cargo run --release --example bench` unpacks on first use).

Per trial and workload: connect a fresh context, ctx.call(os.getpid)
(bootstrap done), then time the first call; Router.get_stats() deltas give
the GET_MODULE requests (child -> master round trips) and the modules and
bytes Mitogen sent. Counts do not depend on the machine's load; times do.

usage: /tmp/mitobench/venv/bin/python benches/mitogen_realpkg.py [N]
(needs ../shared/peer-bench: `bash /work/shared/peer-bench/setup.sh`)
"""
import json
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.environ.get('PEER_BENCH', '/work/shared/peer-bench'))
import common  # noqa: E402
import mitogen.master  # noqa: E402

N = int(sys.argv[1]) if len(sys.argv) > 1 else 3
CHILD = common.CHILD_PY
VERSION = subprocess.check_output(
    [CHILD, '-c', 'import platform; print(platform.python_version())']).decode().strip()
SITE = '/tmp/mitobench/realpkg/%s' % VERSION
if not os.path.isdir(os.path.join(SITE, 'requests')):
    sys.exit('%s has no requests: run `cargo run --release --example bench` once first' % SITE)
sys.path.insert(0, SITE)
import requests.utils  # noqa: E402  (master only)
import ecprobe  # noqa: E402  (tests/common/ecprobe.py, which econtext calls too)


WORKLOADS = [
    ('requests.utils.requote_uri', requests.utils.requote_uri, ('http://example.com/a b?q=%zz',),
     'http://example.com/a%20b?q=%25zz'),
    ('rich Console render', ecprobe.rich_render, (), '\x1b[1;31malert\x1b[0m ok\n'),
]


def trial(router, fn, args, want):
    ctx = router.local(python_path=CHILD)
    ctx.call(os.getpid)
    s0 = router.get_stats()
    t0 = time.perf_counter()
    r = ctx.call(fn, *args)
    t1 = time.perf_counter()
    s1 = router.get_stats()
    assert want is None or r == want, r
    ctx.shutdown(wait=True)
    return {
        'ms': (t1 - t0) * 1e3,
        'get_module_requests': s1['get_module_count'] - s0['get_module_count'],
        'modules_sent': s1['good_load_module_count'] - s0['good_load_module_count'],
        'kb_sent': (s1['good_load_module_size'] - s0['good_load_module_size']) / 1024.0,
    }


def main():
    broker = mitogen.master.Broker()
    router = mitogen.master.Router(broker)
    out = {'child': '%s (%s)' % (CHILD, VERSION), 'mitogen': '.'.join(map(str, mitogen.__version__))}
    try:
        for name, fn, args, want in WORKLOADS:
            runs = [trial(router, fn, args, want) for _ in range(N)]
            out[name] = {k: round(statistics.median(r[k] for r in runs), 1) for k in runs[0]}
    finally:
        broker.shutdown()
        broker.join()
    print(json.dumps(out, indent=1))


if __name__ == '__main__':
    main()
