"""Steady state is allocation-free (issue 9): forkline runs with a counting allocator preloaded
(tests/alloc/countalloc.c, compiled here), and after a warm-up the reactor's allocator calls
must not grow with the number of requests: keep-alive requests of several kinds on one
connection, then requests with a new connection each. The counts are deterministic, so the
bar is a number of calls, not a time."""
import os
import shutil
import struct
import subprocess
import tempfile

from fl import BIN, ROOT, Reader, Server, raw_request

SHIM_SRC = os.path.join(ROOT, "tests", "alloc", "countalloc.c")
SLOTS = ("malloc", "calloc", "realloc", "memalign", "free", "bytes")
# Allowed calls over all the measured requests: O(1), e.g. a timer heap or buffer that still
# doubles once; anything per request (thousands) fails.
SLACK = 16


class CountedServer(Server):
    """forkline with LD_PRELOAD=countalloc.so; each process counts into dir/<pid>."""

    def __init__(self, shim, counts, **kw):
        super().__init__(**kw)
        self.env = dict(os.environ, LD_PRELOAD=shim, FL_ALLOC_DIR=counts)

    def start(self, wait=True, timeout=15):
        self.log = open(self.logfile, "wb")
        self.proc = subprocess.Popen([BIN, "serve", "-c", self.config] + self.args, stdout=self.log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=self.env)
        if wait:
            self.wait_ready(timeout)
        return self


def build_shim(d):
    so = os.path.join(d, "countalloc.so")
    cc = os.environ.get("CC") or shutil.which("cc") or "gcc"
    subprocess.check_call([cc, "-shared", "-fPIC", "-O2", "-o", so, SHIM_SRC, "-ldl"])
    return so


def counts(d, pid):
    with open(os.path.join(d, str(pid)), "rb") as f:
        vals = struct.unpack("<8Q", f.read(64))
    return dict(zip(SLOTS, vals))


def allocations(c):
    return c["malloc"] + c["calloc"] + c["realloc"] + c["memalign"]


def delta(a, b):
    return {k: b[k] - a[k] for k in SLOTS}


# A mix of what a PHP app sees: browser-like headers with cookies, a query string and a JSON
# answer, a 2 KB POST echoed back, a worker-chosen response header.
MIX = [
    raw_request("GET", "/", {"User-Agent": "Mozilla/5.0 (X11; Linux x86_64) test",
                             "Accept": "text/html,application/xhtml+xml;q=0.9,*/*;q=0.8",
                             "Accept-Encoding": "gzip, deflate", "Accept-Language": "en-US,en;q=0.5",
                             "Cookie": "session=abc123; theme=dark; lang=en"}),
    raw_request("GET", "/info?page=2&sort=name&q=%20x", {"X-Requested-With": "XMLHttpRequest"}),
    raw_request("POST", "/echo", {"Content-Type": "application/octet-stream"}, body=b"x" * 2048),
    raw_request("GET", "/header?name=X-Test&value=forkline"),
]


def run_keepalive(s, rounds):
    with s.connect() as sock:
        rd = Reader(sock)
        for _ in range(rounds):
            for req in MIX:
                sock.sendall(req)
                r = rd.read()
                assert r.status == 200, r


def run_close(s, n):
    req = raw_request("GET", "/", {"Connection": "close"})
    for _ in range(n):
        with s.connect() as sock:
            sock.sendall(req)
            r = Reader(sock).read()
            assert r.status == 200 and r.body == b"Hello from forkline\n", r


def test_reactor_steady_state_allocates_nothing():
    d = tempfile.mkdtemp(prefix="fl-alloc-")
    try:
        shim = build_shim(d)
        cdir = os.path.join(d, "counts")
        os.mkdir(cdir)
        with CountedServer(shim, cdir, reactors=1, workers=1) as s:
            (reactor,) = s.reactors()
            # the shim really counts in the reactor: its start-up allocated
            assert allocations(counts(cdir, reactor)) > 0, counts(cdir, reactor)

            run_keepalive(s, 100)  # warm-up: buffers reach their sizes
            a = counts(cdir, reactor)
            run_keepalive(s, 500)  # 2000 requests
            k = delta(a, counts(cdir, reactor))

            run_close(s, 200)
            a = counts(cdir, reactor)
            run_close(s, 1000)
            c = delta(a, counts(cdir, reactor))

            msg = "reactor allocator calls: keep-alive 2000 requests %r, close 1000 requests %r" % (k, c)
            print(msg)
            assert allocations(k) <= SLACK and k["free"] <= SLACK, msg
            assert allocations(c) <= SLACK and c["free"] <= SLACK, msg
    finally:
        shutil.rmtree(d, ignore_errors=True)


test_reactor_steady_state_allocates_nothing.timeout = 120
