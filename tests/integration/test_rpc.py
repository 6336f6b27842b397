"""RPC (rpc.listen): goridge RPC from PHP (php/src/RPC.php) and from raw Python sockets, the
resetter / informer services over real reactors and php-cli workers, hostile and concurrent
clients, and the `reset` / `workers` / `stop` command line."""
import json
import os
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time
import zlib

from fl import APP, BIN, ROOT, Server, free_port, wait_for

PHP_CLIENT = os.path.join(ROOT, "tests", "php", "rpc_client.php")
KEYS = ["pid", "status", "numExecs", "created", "memoryUsage", "CPUPercent", "command", "statusStr"]


def rpc_server(workers=3, reactors=2, listen=None, extra="", command=None):
    port = free_port()
    listen = listen or "tcp://127.0.0.1:%d" % port
    s = Server(workers=workers, reactors=reactors, command=command,
               extra="rpc:\n  listen: %s\n%s" % (listen, extra))
    s.rpc = listen
    return s


# ---- a goridge RPC client in Python (spec §9.1) ----

def frame(flags, opts, payload):
    hl = 3 + len(opts)
    head = struct.pack("<BBI", 0x10 | hl, flags, len(payload))
    head += struct.pack("<I", zlib.crc32(head) & 0xFFFFFFFF) + b"\0\0"
    return head + b"".join(struct.pack("<I", o) for o in opts) + payload


def request(seq, method, arg=b"", flags=0x08):
    m = method.encode()
    return frame(flags, [seq, len(m)], m + arg)


class Conn:
    def __init__(self, listen, timeout=10):
        if listen.startswith("unix://"):
            self.s = socket.socket(socket.AF_UNIX)
            self.s.settimeout(timeout)
            self.s.connect(listen[7:])
        else:
            host, port = listen[6:].rsplit(":", 1)
            self.s = socket.create_connection((host, int(port)), timeout=timeout)
        self.buf = b""

    def send(self, data):
        self.s.sendall(data)

    def recv_frame(self):
        """(flags, opts, method, body) of the next frame; raises EOFError on close."""
        while True:
            if len(self.buf) >= 12:
                hl = self.buf[0] & 0x0F
                flags = self.buf[1]
                (plen,) = struct.unpack("<I", self.buf[2:6])
                total = 4 * hl + plen
                if len(self.buf) >= total:
                    opts = list(struct.unpack("<%dI" % (hl - 3), self.buf[12:4 * hl]))
                    payload = self.buf[4 * hl:total]
                    self.buf = self.buf[total:]
                    mlen = opts[1] if len(opts) == 2 else 0
                    return flags, opts, payload[:mlen].decode(), payload[mlen:]
            d = self.s.recv(65536)
            if not d:
                raise EOFError("closed")
            self.buf += d

    def call(self, seq, method, arg, flags=0x08):
        self.send(request(seq, method, json.dumps(arg).encode() if flags == 0x08 else arg, flags))
        f, opts, m, body = self.recv_frame()
        assert opts[0] == seq and m == method, (opts, m)
        if f & 0x40:
            raise RuntimeError(body.decode())
        return json.loads(body) if f & 0x08 else body

    def closed_within(self, seconds):
        self.s.settimeout(seconds)
        try:
            while True:
                if not self.s.recv(65536):
                    return True
        except socket.timeout:
            return False
        except OSError:
            return True

    def close(self):
        self.s.close()


def php_rpc(listen, *args):
    p = subprocess.run(["php", PHP_CLIENT, listen] + list(args), capture_output=True, text=True,
                       timeout=60)
    assert p.stdout.strip(), p.stderr
    return json.loads(p.stdout.strip().splitlines()[-1])


def rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


# ---- tests ----

def test_php_lists_workers_and_resets():
    s = rpc_server(workers=3)
    with s:
        before = php_rpc(s.rpc, "workers", "http")["ok"]["workers"]
        assert len(before) == 3, before
        for w in before:
            assert list(w.keys()) == KEYS, w.keys()  # all eight keys, in RR's order
            assert w["statusStr"] == "ready" and w["status"] == 1, w
            assert w["command"] == "" and w["memoryUsage"] > 1000000, w
            assert abs(w["created"] / 1e9 - time.time()) < 60, w  # Unix nanoseconds
        assert sorted(w["pid"] for w in before) == sorted(s.php_workers())
        assert s.get("/").status == 200
        assert php_rpc(s.rpc, "list") == {"ok": ["http"]}
        r = php_rpc(s.rpc, "reset", "http")
        assert r == {"ok": True}, r
        after = php_rpc(s.rpc, "workers", "http")["ok"]["workers"]
        assert len(after) == 3
        assert not set(w["pid"] for w in after) & set(w["pid"] for w in before), (before, after)
        assert sorted(w["pid"] for w in after) == sorted(s.php_workers())
        assert s.get("/").status == 200
        # errors arrive as ServiceException with goridge's message shape
        e = php_rpc(s.rpc, "reset", "nope")
        assert e["class"] == "Forkline\\ServiceException", e
        assert e["error"] == "Error 'no such plugin: nope' on %s" % s.rpc, e
        e = php_rpc(s.rpc, "call", "informer.Nope", "true")
        assert "rpc: can't find method informer.Nope" in e["error"], e
        assert php_rpc(s.rpc, "call", "informer.Workers", '"jobs"') == {"ok": {"workers": None}}
        assert php_rpc(s.rpc, "call", "rpc.Version", "true") == {"ok": "2025.1.0"}


def test_exec_counts_and_busy_status():
    s = rpc_server(workers=1, reactors=1)
    with s:
        for _ in range(5):
            assert s.get("/").status == 200
        c = Conn(s.rpc)
        w = c.call(1, "informer.Workers", "http")["workers"]
        assert w[0]["numExecs"] == 5, w
        t = threading.Thread(target=lambda: s.get("/sleep?ms=800"))
        t.start()
        time.sleep(0.3)
        w = c.call(2, "informer.Workers", "http")["workers"]
        assert w[0]["statusStr"] == "working" and w[0]["status"] == 2, w
        t.join()
        c.close()


def test_python_socket_vectors_and_out_of_order():
    s = rpc_server(workers=2)
    with s:
        c = Conn(s.rpc)
        # the spec's request bytes, sent verbatim
        c.send(bytes.fromhex("1508160000000971dba700000100000010000000696e666f726d65722e576f726b657273"
                             "226874747022"))
        f, opts, m, body = c.recv_frame()
        assert f == 0x08 and opts == [1, 16] and m == "informer.Workers", (f, opts, m)
        assert len(json.loads(body)["workers"]) == 2
        # a slow reset and fast calls pipelined on one connection: the fast ones overtake it
        c.send(request(10, "resetter.Reset", b'"http"') + request(11, "informer.List", b"true") +
               request(11, "resetter.List", b"true"))  # a repeated seq is echoed, not refused
        got = [c.recv_frame() for _ in range(3)]
        assert [g[1][0] for g in got] == [11, 11, 10], [g[1] for g in got]
        assert got[2][3] == b"true" and got[2][0] == 0x08
        # an unknown method with the proto codec: PROTO|ERROR and Go's text, connection kept
        c.send(request(7, "informer.Foo", b"", flags=0x80))
        f, opts, m, body = c.recv_frame()
        assert f == 0xC0 and body == b"rpc: can't find method informer.Foo", (hex(f), body)
        c.send(request(7, "nosuch.Foo", b"", flags=0x80))
        f, opts, m, body = c.recv_frame()
        assert f == 0xC0 and body == b"rpc: can't find service nosuch.Foo", (hex(f), body)
        c.send(request(8, "informer.List", b"", flags=0x00))  # no codec bit
        f, opts, m, body = c.recv_frame()
        assert f == 0x60 and b"unknown decoder" in body, (hex(f), body)
        assert c.call(9, "informer.List", True) == ["http"]
        c.close()


def test_hostile_clients_lose_only_their_connection():
    s = rpc_server(workers=2)
    with s:
        good = Conn(s.rpc)
        assert good.call(1, "informer.List", True) == ["http"]
        master_rss = rss_kb(s.proc.pid)
        # garbage
        bad = Conn(s.rpc)
        bad.send(b"\x00" * 7 + b"GET / HTTP/1.1\r\n\r\n")
        assert bad.closed_within(5)
        # a valid header announcing 4 GB (0xffffffff bytes)
        head = struct.pack("<BBI", 0x15, 0x08, 0xFFFFFFFF)
        bad2 = Conn(s.rpc)
        bad2.send(head + struct.pack("<I", zlib.crc32(head)) + b"\0\0" + struct.pack("<II", 1, 4))
        assert bad2.closed_within(5)
        # half a frame, then silence: closed after the stall limit; meanwhile good is served
        half = Conn(s.rpc)
        half.send(request(1, "informer.List", b"true")[:20])
        t0 = time.time()
        for i in range(20):
            assert good.call(100 + i, "informer.List", True) == ["http"]
        assert half.closed_within(20), "a stalled half frame must be closed"
        assert time.time() - t0 < 20
        # a frame of the wrong shape (one option)
        bad3 = Conn(s.rpc)
        bad3.send(frame(0x08, [1], b"informer.List"))
        assert bad3.closed_within(5)
        assert good.call(200, "informer.Workers", "http")["workers"]
        assert rss_kb(s.proc.pid) < master_rss + 20000, (master_rss, rss_kb(s.proc.pid))
        assert s.proc.poll() is None and s.get("/").status == 200
        for c in (good, bad, bad2, bad3, half):
            c.close()


def test_many_concurrent_clients():
    s = rpc_server(workers=2)
    with s:
        errors = []

        def client(n):
            try:
                c = Conn(s.rpc)
                for i in range(30):
                    if i % 10 == 0:
                        assert len(c.call(i, "informer.Workers", "http")["workers"]) == 2
                    else:
                        assert c.call(i, "resetter.List", True) == ["http"]
                c.close()
            except Exception as e:  # noqa
                errors.append(repr(e))

        threads = [threading.Thread(target=client, args=(n,)) for n in range(40)]
        for t in threads:
            t.start()
        # PHP clients at the same time
        p = [subprocess.Popen(["php", PHP_CLIENT, s.rpc, "loop", "50"], stdout=subprocess.PIPE, text=True)
             for _ in range(4)]
        for t in threads:
            t.join(60)
        outs = [json.loads(x.communicate(timeout=60)[0]) for x in p]
        assert not errors, errors[:5]
        assert outs == [{"ok": 50}] * 4, outs


def test_unix_socket_listener():
    path = "/tmp/fl-it-rpc-%d.sock" % os.getpid()
    s = rpc_server(workers=1, reactors=1, listen="unix://" + path)
    with s:
        assert php_rpc(s.rpc, "list") == {"ok": ["http"]}
        c = Conn(s.rpc)
        assert c.call(1, "rpc.Version", True) == "2025.1.0"
        c.close()
    assert not os.path.exists(path), "the socket file is removed at exit"


def test_cli_reset_workers_stop():
    s = rpc_server(workers=2, reactors=1)
    s.args = ["-p"]
    with s:
        env = dict(os.environ)
        before = set(s.php_workers())
        # flags before and after the command; -c given after
        p = subprocess.run([BIN, "workers", "-c", s.config], capture_output=True, text=True, timeout=30)
        assert p.returncode == 0, p.stderr
        assert p.stdout.startswith("Workers of [http]:\n"), p.stdout
        for col in ("PID", "STATUS", "EXECS", "MEMORY", "CPU%", "CREATED"):
            assert col in p.stdout.splitlines()[2], p.stdout
        for pid in before:
            assert "| %d " % pid in p.stdout, p.stdout
        assert p.stdout.count(" ready ") == 2 and " MB " in p.stdout, p.stdout
        # reset, not silent: Go log lines on stderr
        p = subprocess.run([BIN, "-c", s.config, "reset"], capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, p.stderr
        assert "resetting plugin: [http]" in p.stderr and "plugin reset: [http]" in p.stderr, p.stderr
        mid = set(s.php_workers())
        assert not mid & before, (before, mid)
        # as rr, silent, with the rpc address only from -o and the plugin named
        rr = os.path.join(s.dir, "rr")
        os.symlink(BIN, rr)
        p = subprocess.run([rr, "reset", "http", "-s", "-c", s.config], capture_output=True,
                           text=True, timeout=60, env=env)
        assert p.returncode == 0 and p.stderr == "" and p.stdout == "", (p.returncode, p.stderr)
        assert not set(s.php_workers()) & mid
        # workers -i redraws until SIGINT, then exits 0
        w = subprocess.Popen([rr, "workers", "-i", "-c", s.config], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
        time.sleep(1.5)
        w.send_signal(signal.SIGINT)
        out, err = w.communicate(timeout=10)
        assert w.returncode == 0, (w.returncode, err)
        assert out.count("Workers of [http]:") >= 2, out
        # --dotenv (and DOTENV_PATH, which wins) feed ${VAR} in the config
        port = s.rpc.rsplit(":", 1)[1]
        envconf = os.path.join(s.dir, "env.yaml")
        with open(envconf, "w") as f:
            f.write("rpc:\n  listen: tcp://127.0.0.1:${FL_T_RPC_PORT}\n")
        with open(os.path.join(s.dir, "good.env"), "w") as f:
            f.write('# comment\nexport FL_T_RPC_PORT="%s"\n' % port)
        with open(os.path.join(s.dir, "bad.env"), "w") as f:
            f.write("FL_T_RPC_PORT=1 # nothing listens there\n")
        p = subprocess.run([rr, "workers", "-c", envconf, "--dotenv", "good.env"], capture_output=True,
                           text=True, timeout=30)
        assert p.returncode == 0 and "Workers of [http]:" in p.stdout, (p.stdout, p.stderr)
        denv = dict(os.environ, DOTENV_PATH="bad.env")
        p = subprocess.run([rr, "workers", "-c", envconf, "--dotenv", "good.env"], capture_output=True,
                           text=True, timeout=30, env=denv)
        assert p.returncode == 1 and "127.0.0.1:1:" in p.stderr, (p.stdout, p.stderr)
        # jobs: no jobs service yet, so Go's lookup error, exit 1
        p = subprocess.run([rr, "jobs", "--list", "-c", s.config], capture_output=True, text=True,
                           timeout=30)
        assert p.returncode == 1 and "can't find service jobs.List" in p.stderr, (p.returncode, p.stderr)
        # no rpc section: a clear error, exit 1
        noconf = os.path.join(s.dir, "norpc.yaml")
        with open(noconf, "w") as f:
            f.write('version: "3"\n')
        p = subprocess.run([BIN, "reset", "-c", noconf], capture_output=True, text=True, timeout=30)
        assert p.returncode == 1 and "rpc service not specified" in p.stderr, (p.returncode, p.stderr)
        # stop through .pid
        p = subprocess.run([rr, "stop", "-c", s.config], capture_output=True, text=True, timeout=30)
        assert p.returncode == 0, p.stderr
        assert "stopping process with PID: %d" % s.proc.pid in p.stderr, p.stderr
        s.proc.wait(30)
        assert s.proc.returncode == 0, s.output()[-2000:]


def test_reset_under_load_loses_nothing():
    s = rpc_server(workers=4, reactors=2)
    with s:
        stop = [False]
        stats = {"ok": 0, "bad": []}

        def load():
            while not stop[0]:
                try:
                    r = s.get("/")
                    if r.status == 200:
                        stats["ok"] += 1
                    else:
                        stats["bad"].append(r.status)
                except Exception as e:  # noqa
                    stats["bad"].append(repr(e))

        ts = [threading.Thread(target=load) for _ in range(8)]
        for t in ts:
            t.start()
        c = Conn(s.rpc, timeout=60)
        for i in range(3):
            assert c.call(i + 1, "resetter.Reset", "http") is True
        stop[0] = True
        for t in ts:
            t.join()
        c.close()
        assert stats["ok"] > 50 and not stats["bad"], (stats["ok"], stats["bad"][:5])


def test_php_client_bytes_match_the_spec():
    """The PHP client's first call in a process is byte for byte the §9.1 request (seq 1), and it
    reads a reply written by hand the same way."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    port = srv.getsockname()[1]
    got = {}

    def serve():
        c, _ = srv.accept()
        c.settimeout(10)
        data = b""
        while len(data) < 42:
            data += c.recv(4096)
        got["req"] = data
        c.sendall(bytes.fromhex("15081e000000e6596f620000010000001000000069"
                                "6e666f726d65722e576f726b6572737b22776f726b657273223a5b5d7d"))
        c.close()

    t = threading.Thread(target=serve)
    t.start()
    out = php_rpc("tcp://127.0.0.1:%d" % port, "workers", "http")
    t.join(10)
    srv.close()
    assert got["req"].hex() == ("1508160000000971dba70000010000001000000069"
                                "6e666f726d65722e576f726b657273226874747022"), got["req"].hex()
    assert out == {"ok": {"workers": []}}, out


def test_reset_during_startup_replaces_early_workers():
    """A reset that arrives while one reactor is still starting (nothing is 'serving' yet) must
    still replace the workers already up, and wait for the starting ones."""
    d = tempfile.mkdtemp(prefix="fl-it-slow-")
    script = os.path.join(d, "worker.php")
    with open(script, "w") as f:
        # the first worker to boot anywhere takes 1.5 s; every later one is fast
        f.write("<?php if (@mkdir(%r)) { usleep(1500000); } require %r;\n"
                % (os.path.join(d, "slow"), APP))
    s = rpc_server(workers=2, reactors=2, command="php " + script)
    s.start(wait=False)
    try:
        assert wait_for(lambda: len(s.php_workers()) == 2, timeout=10)
        time.sleep(0.5)  # the fast worker is up, the slow one still boots
        early = set(s.php_workers())
        t0 = time.time_ns()
        assert Conn(s.rpc, timeout=60).call(1, "resetter.Reset", "http") is True
        ws = Conn(s.rpc).call(2, "informer.Workers", "http")["workers"]
        assert len(ws) == 2 and all(w["created"] >= t0 for w in ws), (t0, ws)
        assert not set(w["pid"] for w in ws) & early, (early, ws)
        s.wait_ready(10)
        assert s.get("/").status == 200
    finally:
        s.stop()
