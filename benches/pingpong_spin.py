"""The VM's wake-up cost: two Python processes ping-pong a byte over a
socketpair, 20,000 round trips, each end sleeping in poll() or first
polling poll(0) for SPIN seconds (docs/PERFORMANCE.md, "Spinning before
sleeping (fifth session, spin)"). Prints the round trip and the CPU of
both processes per round trip.

    python3 benches/pingpong_spin.py 0        # sleep in poll()
    python3 benches/pingpong_spin.py 50e-6    # poll(0) for up to 50 us first
"""
import os, socket, sys, time, select
spin = float(sys.argv[1]) if len(sys.argv) > 1 else 0.0   # seconds
N = 20000
a, b = socket.socketpair()
def wait_read(s, p):
    if spin:
        end = time.perf_counter() + spin
        while time.perf_counter() < end:
            if p.poll(0):
                return
    p.poll()
pid = os.fork()
if pid == 0:
    a.close(); p = select.poll(); p.register(b, select.POLLIN)
    for i in range(N):
        wait_read(b, p); b.recv(64); b.send(b'y')
    os._exit(0)
b.close(); p = select.poll(); p.register(a, select.POLLIN)
t = time.perf_counter()
for i in range(N):
    a.send(b'x'); wait_read(a, p); a.recv(64)
dt = time.perf_counter() - t
os.waitpid(pid, 0)
r = os.times()
print("spin=%g us: rt %.1f us, cpu/rt %.1f us" % (spin*1e6, dt/N*1e6, (r[0]+r[1]+r[2]+r[3])/N*1e6))
