"""Lifecycle: zero-downtime reload (SIGHUP), graceful stops, systemd notifications."""
import os
import signal
import socket
import tempfile
import threading
import time

from fl import Reader, Server, cmdline, descendants, raw_request, wait_for


def ppid_of(pid):
    with open("/proc/%d/stat" % pid) as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


def write_config(s, workers, reactors=2, address=None, extra=""):
    with open(s.config, "w") as f:
        f.write('version: "3"\nreactors: %d\nserver:\n  command: "php %s"\n'
                "http:\n  address: %s\n  pool:\n    num_workers: %d\n    allocate_timeout: 10s\n%s"
                % (reactors, os.path.join(os.path.dirname(s.config), "app.php") if False else _app(),
                   address or "127.0.0.1:%d" % s.port, workers, extra))


def _app():
    from fl import APP
    return APP


def no_orphans(pids):
    return [p for p in pids if os.path.exists("/proc/%d" % p) and cmdline(p)]


class Load:
    """N keep-alive clients hammering the server; every failure is counted."""

    def __init__(self, port, clients=50):
        self.port, self.n = port, clients
        self.ok = self.bad = self.errors = 0
        self.lock = threading.Lock()
        self.stop = False
        self.details = []
        self.threads = [threading.Thread(target=self.run) for _ in range(clients)]

    def run(self):
        sock = rd = None
        while not self.stop:
            try:
                if sock is None:
                    sock = socket.create_connection(("127.0.0.1", self.port), timeout=10)
                    rd = Reader(sock)
                sock.sendall(raw_request("GET", "/"))
                r = rd.read()
                with self.lock:
                    if r.status == 200 and r.body == b"Hello from forkline\n":
                        self.ok += 1
                    else:
                        self.bad += 1
                        self.details.append(repr(r))
                if (r.header("Connection") or "").lower() == "close":
                    sock.close()
                    sock = None
            except Exception as e:  # noqa
                with self.lock:
                    self.errors += 1
                    self.details.append(repr(e))
                if sock:
                    sock.close()
                sock = None
        if sock:
            sock.close()

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *a):
        self.stop = True
        for t in self.threads:
            t.join(15)


def test_reload_under_load_drops_nothing():
    with Server(reactors=2, workers=2) as s:
        with Load(s.port, 50) as load:  # 50 keep-alive clients, 30 s, a SIGHUP every 2 s
            for _ in range(15):
                time.sleep(2)
                s.proc.send_signal(signal.SIGHUP)
            time.sleep(2)
        assert load.ok > 500, load.ok
        assert load.bad == 0 and load.errors == 0, (load.bad, load.errors, load.details[:5])
        assert s.output().count("reload complete") >= 10, s.output()[-3000:]
        assert s.proc.poll() is None


test_reload_under_load_drops_nothing.timeout = 120


def test_reload_changes_pool_size():
    with Server(reactors=2, workers=2) as s:
        assert len(s.php_workers()) == 2
        old_reactors = s.reactors()
        write_config(s, 4)
        s.proc.send_signal(signal.SIGHUP)
        assert wait_for(lambda: "reload complete" in s.output(), 15), s.output()
        assert wait_for(lambda: len(s.php_workers()) == 4 and not set(old_reactors) & set(s.reactors()), 15), \
            (s.php_workers(), s.reactors(), old_reactors)
        pids = set()
        for _ in range(40):
            r = s.get("/pid")
            assert r.status == 200
            pids.add(int(r.body))
        assert pids <= set(s.php_workers())


def test_reload_with_broken_yaml_keeps_serving():
    with Server(reactors=1, workers=1) as s:
        pid = s.get("/pid").body
        with open(s.config, "w") as f:
            f.write('version: "3"\nhttp:\n  address: [broken\n')
        s.proc.send_signal(signal.SIGHUP)
        assert wait_for(lambda: "reload failed" in s.output(), 10), s.output()
        assert s.config in s.output()
        r = s.get("/pid")
        assert r.status == 200 and r.body == pid, r  # the very same worker still serves


def test_reload_to_a_new_address():
    with Server(reactors=1, workers=1) as s:
        from fl import free_port
        port2 = free_port()
        write_config(s, 1, reactors=1, address="127.0.0.1:%d" % port2)
        s.proc.send_signal(signal.SIGHUP)
        assert wait_for(lambda: "reload complete" in s.output(), 15), s.output()
        with socket.create_connection(("127.0.0.1", port2), timeout=5) as c:
            c.sendall(raw_request("GET", "/"))
            assert Reader(c).read().status == 200
        # the old address is closed once the old generation is gone
        def old_closed():
            try:
                socket.create_connection(("127.0.0.1", s.port), timeout=1).close()
                return False
            except OSError:
                return True
        assert wait_for(old_closed, 10)


def test_sigquit_finishes_a_running_request():
    s = Server(reactors=1, workers=1).start()
    procs = descendants(s.proc.pid)
    res = {}

    def slow():
        res["r"] = s.get("/sleep?ms=2000")

    t = threading.Thread(target=slow)
    t.start()
    time.sleep(0.4)
    s.proc.send_signal(signal.SIGQUIT)
    t.join(10)
    assert s.proc.wait(10) == 0
    assert res["r"].status == 200 and res["r"].body == b"slept 2000", res
    assert not no_orphans(procs)


def test_sigint_then_sigterm_is_one_stop():
    s = Server(reactors=1, workers=1).start()
    res = {}
    t = threading.Thread(target=lambda: res.setdefault("r", s.get("/sleep?ms=1500")))
    t.start()
    time.sleep(0.3)
    s.proc.send_signal(signal.SIGINT)
    time.sleep(0.1)
    s.proc.send_signal(signal.SIGTERM)
    t.join(10)
    assert s.proc.wait(10) == 0
    assert res["r"].status == 200


def test_second_signal_forces_exit_1():
    s = Server(reactors=1, workers=1).start()
    t = threading.Thread(target=lambda: _swallow(lambda: s.get("/sleep?ms=5000")))
    t.start()
    time.sleep(0.3)
    s.proc.send_signal(signal.SIGTERM)
    time.sleep(1.2)
    s.proc.send_signal(signal.SIGTERM)
    assert s.proc.wait(10) == 1
    t.join(10)


def _swallow(f):
    try:
        f()
    except Exception:  # noqa
        pass


def test_systemd_notifications():
    d = tempfile.mkdtemp(prefix="fl-notify-")
    path = os.path.join(d, "notify.sock")
    ns = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    ns.bind(path)
    ns.settimeout(20)
    os.environ["NOTIFY_SOCKET"] = path
    try:
        s = Server(reactors=1, workers=1).start(wait=False)
    finally:
        del os.environ["NOTIFY_SOCKET"]
    try:
        msgs = [ns.recv(4096).decode()]
        assert "READY=1" in msgs[0], msgs
        # the workers must not see NOTIFY_SOCKET
        wait_for(lambda: s.php_workers(), 10)
        for p in s.php_workers() + s.reactors():
            with open("/proc/%d/environ" % p, "rb") as f:
                assert b"NOTIFY_SOCKET" not in f.read()
        s.proc.send_signal(signal.SIGHUP)
        m = ns.recv(4096).decode()
        assert "RELOADING=1" in m and "MONOTONIC_USEC=" in m, m
        m = ns.recv(4096).decode()
        assert "READY=1" in m, m
        s.proc.send_signal(signal.SIGTERM)
        m = ns.recv(4096).decode()
        assert "STOPPING=1" in m, m
        assert s.proc.wait(15) == 0
    finally:
        s.stop()
        ns.close()


def test_reload_command_reports_outcome():
    import subprocess
    from fl import BIN
    with Server(reactors=1, workers=1, args=["-p"]) as s:
        p = subprocess.run([BIN, "reload", "-c", s.config], capture_output=True, text=True, timeout=30)
        assert p.returncode == 0, p.stderr
        # valid YAML, but a worker that cannot start: only the running server can tell
        write_config(s, 1, reactors=1, extra="")
        with open(s.config) as f:
            text = f.read().replace(_app(), "/nonexistent/worker.php")
        with open(s.config, "w") as f:
            f.write(text)
        p = subprocess.run([BIN, "reload", "-c", s.config], capture_output=True, text=True, timeout=60)
        assert p.returncode == 1 and "reload failed" in p.stderr, (p.returncode, p.stderr)
        assert s.get("/").status == 200
        # invalid YAML is refused before any signal is sent
        with open(s.config, "w") as f:
            f.write("version: 3\n")
        p = subprocess.run([BIN, "reload", "-c", s.config], capture_output=True, text=True, timeout=30)
        assert p.returncode == 1 and "version" in p.stderr, p.stderr
        assert s.get("/").status == 200


def test_sigusr2_reexec_in_place_under_load():
    with Server(reactors=2, workers=2) as s:
        master = s.proc.pid
        old_reactors = set(s.reactors())
        with Load(s.port, 30) as load:
            time.sleep(1)
            s.proc.send_signal(signal.SIGUSR2)
            assert wait_for(lambda: "reload complete" in s.output(), 15), s.output()
            time.sleep(1.5)
        assert load.ok > 100 and load.bad == 0 and load.errors == 0, (load.ok, load.bad, load.errors, load.details[:5])
        assert s.proc.poll() is None and s.proc.pid == master
        assert "adopted 1 listeners and 2 running reactors" in s.output(), s.output()
        assert wait_for(lambda: not (set(s.reactors()) & old_reactors) and len(s.reactors()) == 2, 10)
        assert s.get("/").status == 200
        assert s.stop() == 0


test_sigusr2_reexec_in_place_under_load.timeout = 60


def test_sigusr2_with_broken_config_keeps_old_reactors():
    with Server(reactors=1, workers=1) as s:
        pid = s.get("/pid").body
        with open(s.config, "w") as f:
            f.write("version: 3\n")
        s.proc.send_signal(signal.SIGUSR2)
        assert wait_for(lambda: "adopted" in s.output(), 10), s.output()
        time.sleep(0.5)
        assert s.proc.poll() is None
        r = s.get("/pid")
        assert r.status == 200 and r.body == pid
        assert s.stop() == 0


def test_reactor_crash_queued_connections_are_served():
    with Server(reactors=1, workers=1) as s:
        (r0,) = s.reactors()
        os.kill(r0, signal.SIGKILL)
        # connect while no reactor exists: the master holds the socket, the connection waits in
        # the backlog and is served by the respawned reactor, not reset
        with s.connect() as c:
            c.sendall(raw_request("GET", "/"))
            r = Reader(c).read()
            assert r.status == 200, r
        assert wait_for(lambda: s.reactors() and r0 not in s.reactors(), 5)


def test_reactor_crash_loop_is_reported():
    with Server(reactors=1, workers=1) as s:
        for _ in range(4):
            rs = wait_for(lambda: s.reactors(), 10)
            os.kill(rs[0], signal.SIGKILL)
            time.sleep(0.3)
        assert wait_for(lambda: "crash loop" in s.output(), 10), s.output()
        assert wait_for(lambda: _ok(s), 15)


def _ok(s):
    try:
        return s.get("/").status == 200
    except OSError:
        return False


def test_sigusr1_reopens_log_files():
    d = tempfile.mkdtemp(prefix="fl-logs-")
    log = os.path.join(d, "forkline.log")
    # a server whose log goes to a file: rotate it, USR1, and see new lines in the new file
    s = Server(reactors=1, workers=1, extra="logs:\n  output: %s\n  level: info\n" % log)
    s.start(wait=False)
    try:
        assert wait_for(lambda: os.path.exists(log) and " ready: http" in open(log).read(), 15)
        os.rename(log, log + ".1")
        s.proc.send_signal(signal.SIGUSR1)
        assert wait_for(lambda: os.path.exists(log) and "log files reopened" in open(log).read(), 10)
        s.get("/exit")  # a worker failure is logged by the reactor: into the new file too
        assert wait_for(lambda: "failed" in open(log).read(), 10), open(log).read()
    finally:
        assert s.stop() == 0


def test_reload_adds_a_second_listen_address():
    """A reload that adds http.ssl: the new generation serves on both, no restart."""
    import ssl
    from fl import free_port
    from test_http import make_cert
    d = tempfile.mkdtemp(prefix="fl-reload-tls-")
    with Server(reactors=1, workers=1) as s:
        cert, key = make_cert(d)
        sport = free_port()
        write_config(s, 1, reactors=1, extra="  ssl:\n    address: 127.0.0.1:%d\n    cert: %s\n    key: %s\n"
                     % (sport, cert, key))
        s.proc.send_signal(signal.SIGHUP)
        assert wait_for(lambda: "reload complete" in s.output(), 15), s.output()
        assert s.get("/").status == 200
        ctx = ssl.create_default_context(cafile=cert)
        with ctx.wrap_socket(socket.create_connection(("127.0.0.1", sport), timeout=10),
                             server_hostname="localhost") as c:
            c.sendall(raw_request("GET", "/"))
            r = Reader(c).read()
            assert r.status == 200 and r.body == b"Hello from forkline\n", r


def test_rolling_reset_under_load_drops_nothing():
    import subprocess
    from fl import BIN, free_port
    rport = free_port()
    extra = "rpc:\n  listen: tcp://127.0.0.1:%d\n" % rport
    with Server(reactors=2, workers=4, extra=extra) as s:
        before = set(s.php_workers())
        with Load(s.port, 50) as load:
            for _ in range(5):
                time.sleep(2)
                p = subprocess.run([BIN, "reset", "-s", "-c", s.config], capture_output=True, text=True, timeout=60)
                assert p.returncode == 0 and p.stderr == "", (p.returncode, p.stderr)
            time.sleep(1)
        assert load.ok > 500 and load.bad == 0 and load.errors == 0, (load.ok, load.bad, load.errors, load.details[:5])
        assert not (set(s.php_workers()) & before)


test_rolling_reset_under_load_drops_nothing.timeout = 120


def test_reload_applies_the_logs_section():
    import json
    with Server(reactors=1, workers=1) as s:
        # access_logs: the per-request line is at info only then (at debug otherwise, as in RR)
        write_config(s, 1, reactors=1,
                     extra="  access_logs: true\nlogs:\n  mode: production\n  level: info\n")
        s.proc.send_signal(signal.SIGHUP)
        assert wait_for(lambda: "reload complete" in s.output(), 15), s.output()
        assert s.get("/").status == 200
        # after the reload the lines are JSON (production mode), from the master and the new reactor
        def json_lines():
            out = []
            for line in s.output().splitlines():
                if line.startswith("{"):
                    try:
                        out.append(json.loads(line))
                    except ValueError:
                        pass
            return out
        assert wait_for(lambda: any(j.get("msg") == "http access log" for j in json_lines()), 10), s.output()[-2000:]
