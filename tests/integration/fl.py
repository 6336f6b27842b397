"""Helpers for integration tests: start the real forkline binary with real php-cli workers on
127.0.0.1 and a free port, talk raw HTTP/1.1 to it, inspect its processes, stop it by pid."""
import os
import random
import signal
import socket
import subprocess
import tempfile
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BIN = os.path.join(ROOT, "forkline")
APP = os.path.join(ROOT, "php", "app", "worker.php")
PHPDIR = os.path.join(ROOT, "tests", "php")


_GIVEN = set()


def _ephemeral_range():
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            lo, hi = (int(x) for x in f.read().split())
            return lo, hi
    except (OSError, ValueError):
        return 32768, 60999


def free_port():
    """A port nothing listens on, below the kernel's ephemeral range: a port from bind(0) is an
    ephemeral one, which any outgoing connection of the suite may take as its local port before
    the server binds it ("Address already in use"). Never the same port twice per process."""
    lo, hi = _ephemeral_range()
    top = lo - 1 if lo > 12000 else 65535
    base = 10000 if lo > 12000 else hi + 1
    for _ in range(2000):
        port = random.randint(base, top)
        if port in _GIVEN:
            continue
        s = socket.socket()
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            s.close()
        _GIVEN.add(port)
        return port
    raise RuntimeError("no free port in %d-%d" % (base, top))


class Server:
    """One forkline master. `yaml` is the config text; {port} and {app} are filled in."""

    def __init__(self, yaml=None, args=(), command=None, reactors=2, workers=2, extra=""):
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="fl-it-")
        if yaml is None:
            cmd = command or "php %s" % APP
            yaml = (
                'version: "3"\n'
                "reactors: %d\n"
                "server:\n  command: \"%s\"\n"
                "http:\n  address: 127.0.0.1:{port}\n  pool:\n    num_workers: %d\n"
                "    allocate_timeout: 10s\n"
                "%s" % (reactors, cmd, workers, extra)
            )
        self.config = os.path.join(self.dir, ".rr.yaml")
        with open(self.config, "w") as f:
            f.write(yaml.replace("{port}", str(self.port)).replace("{app}", APP))
        self.args = list(args)
        self.proc = None
        self.logfile = os.path.join(self.dir, "forkline.log")

    def start(self, wait=True, timeout=15):
        self.log = open(self.logfile, "wb")
        self.proc = subprocess.Popen(
            [BIN, "serve", "-c", self.config] + self.args,
            stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
        if wait:
            self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout=15):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError("forkline exited %s:\n%s" % (self.proc.returncode, self.output()))
            if " ready: http" in self.output():
                return
            time.sleep(0.05)
        raise AssertionError("forkline not ready in %ss:\n%s" % (timeout, self.output()))

    def output(self):
        try:
            with open(self.logfile, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def stop(self, sig=signal.SIGTERM, timeout=20):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                kill_tree(self.proc.pid)
                self.proc.wait(5)
        return self.proc.returncode

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        pids = descendants(self.proc.pid) if self.proc and self.proc.poll() is None else []
        self.stop()
        for p in pids:
            try:
                os.kill(p, signal.SIGKILL)
            except OSError:
                pass

    def reactors(self):
        # direct children only: a worker between fork and exec still carries its reactor's title
        return [p for p in children(self.proc.pid) if cmdline(p).startswith("forkline: reactor")]

    def php_workers(self):
        return [p for p in descendants(self.proc.pid) if "php" in cmdline(p)]

    def connect(self):
        s = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return s

    def get(self, path, **kw):
        with self.connect() as s:
            return request(s, "GET", path, **kw)


def cmdline(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return f.read().replace(b"\0", b" ").decode("utf-8", "replace").strip()
    except OSError:
        return ""


def children(pid):
    out = []
    try:
        for t in os.listdir("/proc/%d/task" % pid):
            with open("/proc/%d/task/%s/children" % (pid, t)) as f:
                out += [int(x) for x in f.read().split()]
    except OSError:
        pass
    return out


def descendants(pid):
    res, todo = [], [pid]
    while todo:
        for c in children(todo.pop()):
            res.append(c)
            todo.append(c)
    return res


def kill_tree(pid):
    for p in descendants(pid) + [pid]:
        try:
            os.kill(p, signal.SIGKILL)
        except OSError:
            pass


def all_php_pids():
    res = []
    for d in os.listdir("/proc"):
        if d.isdigit() and "php" in cmdline(int(d)).split(" ")[0]:
            res.append(int(d))
    return res


class Response:
    def __init__(self, status, reason, headers, body, version):
        self.status, self.reason, self.headers, self.body, self.version = status, reason, headers, body, version

    def header(self, name):
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None

    def __repr__(self):
        return "<Response %d %r %r>" % (self.status, self.headers, self.body[:200])


class Reader:
    """Buffered reader of HTTP/1.1 responses from one socket (keep-alive, pipelining)."""

    def __init__(self, sock):
        self.s, self.buf = sock, b""

    def _fill(self):
        d = self.s.recv(1 << 20)
        if not d:
            raise EOFError("connection closed")
        self.buf += d

    def _line(self):
        while b"\r\n" not in self.buf:
            self._fill()
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _n(self, n):
        while len(self.buf) < n:
            self._fill()
        d, self.buf = self.buf[:n], self.buf[n:]
        return d

    def read(self, head=False):
        status_line = self._line().decode()
        version, code, reason = (status_line.split(" ", 2) + [""])[:3]
        headers = []
        while True:
            line = self._line()
            if not line:
                break
            k, v = line.decode("latin-1").split(":", 1)
            headers.append((k.strip(), v.strip()))
        r = Response(int(code), reason, headers, b"", version)
        if head or r.status in (204, 304) or 100 <= r.status < 200:
            return r
        cl = r.header("Content-Length")
        if cl is not None:
            r.body = self._n(int(cl))
        elif (r.header("Transfer-Encoding") or "").lower() == "chunked":
            body = b""
            while True:
                size = int(self._line().split(b";")[0], 16)
                if size == 0:
                    while self._line():
                        pass
                    break
                body += self._n(size)
                self._n(2)
            r.body = body
        else:
            try:
                while True:
                    self._fill()
            except EOFError:
                pass
            r.body, self.buf = self.buf, b""
        return r


def raw_request(method, path, headers=None, body=b"", host="localhost"):
    h = {"Host": host}
    h.update(headers or {})
    if body and "Content-Length" not in h and "Transfer-Encoding" not in h:
        h["Content-Length"] = str(len(body))
    head = "%s %s HTTP/1.1\r\n" % (method, path) + "".join("%s: %s\r\n" % kv for kv in h.items()) + "\r\n"
    return head.encode() + body


def request(sock, method, path, headers=None, body=b""):
    sock.sendall(raw_request(method, path, headers, body))
    return Reader(sock).read(head=(method == "HEAD"))


def wait_for(pred, timeout=10, step=0.05):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(step)
    return pred()
