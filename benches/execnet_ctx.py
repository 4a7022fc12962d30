# execnet's round trip with the counts examples/py_roundtrip prints for
# econtext: context switches per call of every thread of both processes
# (/proc/PID/task/*/status) and each side's CPU. Run with peer-bench's
# venv: /tmp/mitobench/venv/bin/python benches/execnet_ctx.py [N]
import os, sys, time, glob
sys.path.insert(0, os.environ.get('PEER_BENCH', os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', '..', 'shared', 'peer-bench')))
import execnet, execnet_funcs
def ctx(pid):
    v = n = 0
    for st in glob.glob('/proc/%d/task/*/status' % pid):
        for l in open(st):
            if l.startswith('voluntary_ctxt_switches'): v += int(l.split()[1])
            if l.startswith('nonvoluntary_ctxt_switches'): n += int(l.split()[1])
    return v, n
def cpu(pid):
    f = open('/proc/%d/stat' % pid).read().rsplit(')', 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf('SC_CLK_TCK')
gw = execnet.makegateway('popen//python=/usr/bin/python3')
pid = gw.remote_exec(execnet_funcs.getpid).receive()
ch = gw.remote_exec(execnet_funcs.echo_loop)
for i in range(200):
    ch.send(i); ch.receive()
N = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
a, b, c0, m0 = ctx(pid), ctx(os.getpid()), cpu(pid), cpu(os.getpid())
lat = []
for i in range(N):
    t = time.perf_counter(); ch.send(i); assert ch.receive() == i; lat.append(time.perf_counter() - t)
a2, b2, c1, m1 = ctx(pid), ctx(os.getpid()), cpu(pid), cpu(os.getpid())
lat.sort()
print('execnet: median %.1f us; per call: child vol %.2f invol %.2f, master vol %.2f invol %.2f; cpu child %.1f us master %.1f us; threads child %d master %d' % (
    lat[N//2]*1e6, (a2[0]-a[0])/N, (a2[1]-a[1])/N, (b2[0]-b[0])/N, (b2[1]-b[1])/N, (c1-c0)/N*1e6, (m1-m0)/N*1e6,
    len(os.listdir('/proc/%d/task' % pid)), len(os.listdir('/proc/self/task'))))
ch.send(None); gw.exit()
