"""The walking skeleton, end to end: the real binary, real php-cli workers, real sockets."""
import os
import re
import signal
import socket
import subprocess
import threading
import time

from fl import (BIN, Reader, Server, all_php_pids, cmdline, descendants, raw_request, request,
                wait_for)


def ppid_of(pid):
    with open("/proc/%d/stat" % pid) as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


def test_reactor_processes_exist():
    with Server(reactors=2, workers=4) as s:
        rs = s.reactors()
        assert len(rs) == 2, rs
        assert cmdline(s.proc.pid).startswith("forkline: master"), cmdline(s.proc.pid)
        titles = sorted(cmdline(p) for p in rs)
        assert titles == ["forkline: reactor 0", "forkline: reactor 1"], titles
        php = s.php_workers()
        assert len(php) == 4, php
        # every PHP worker is a child of a reactor, two each
        assert sorted(ppid_of(p) for p in php) == sorted(rs + rs), (php, rs)


def test_1000_keepalive_requests():
    with Server(reactors=2, workers=2) as s:
        with s.connect() as c:
            rd = Reader(c)
            for i in range(1000):
                c.sendall(raw_request("GET", "/"))
                r = rd.read()
                assert r.status == 200, r
                assert r.body == b"Hello from forkline\n", r
                assert r.header("Connection") is None, r


def test_both_reactors_workers_answer():
    with Server(reactors=2, workers=2) as s:
        pids, errors = [], []

        def client():
            try:
                with s.connect() as c:
                    rd = Reader(c)
                    c.sendall(raw_request("GET", "/sleep?ms=300"))
                    assert rd.read().status == 200
                    c.sendall(raw_request("GET", "/pid"))
                    pids.append(int(rd.read().body))
            except Exception as e:  # noqa
                errors.append(e)

        ts = [threading.Thread(target=client) for _ in range(4)]
        for t in ts:
            t.start()
            time.sleep(0.02)
        for t in ts:
            t.join()
        assert not errors, errors
        owners = {ppid_of(p) for p in set(pids)}
        assert owners == set(s.reactors()), (pids, owners, s.reactors())


def test_5mb_post_echoed_intact():
    body = os.urandom(5 * 1024 * 1024)
    with Server(reactors=1, workers=1) as s:
        with s.connect() as c:
            r = request(c, "POST", "/echo", {"Content-Type": "application/octet-stream"}, body)
            assert r.status == 200, r
            assert r.body == body
            # chunked request body too
            chunked = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + 65536]), body[i:i + 65536])
                               for i in range(0, len(body), 65536)) + b"0\r\n\r\n"
            c.sendall(raw_request("POST", "/echo", {"Transfer-Encoding": "chunked"}) + chunked)
            r = Reader(c).read()
            assert r.status == 200 and r.body == body, (r.status, len(r.body))


def test_pipelined_requests_in_order():
    with Server(reactors=1, workers=2) as s:
        with s.connect() as c:
            reqs = b"".join(raw_request("POST", "/echo", body=b"request-%d" % i) for i in range(20))
            c.sendall(reqs)
            rd = Reader(c)
            for i in range(20):
                r = rd.read()
                assert r.status == 200 and r.body == b"request-%d" % i, (i, r)


def test_worker_killed_mid_request():
    with Server(reactors=1, workers=1) as s:
        pid = int(s.get("/pid").body)
        result = {}

        def slow():
            t0 = time.time()
            result["r"] = s.get("/sleep?ms=8000")
            result["t"] = time.time() - t0

        t = threading.Thread(target=slow)
        t.start()
        time.sleep(0.5)
        os.kill(pid, signal.SIGKILL)
        t.join(10)
        assert result["r"].status == 500, result
        assert result["t"] < 3, result
        r = wait_for(lambda: s.get("/pid"), 10)
        assert r.status == 200 and int(r.body) != pid, r
        assert "worker %d failed" % pid in s.output(), s.output()


def test_reactor_killed_is_respawned():
    with Server(reactors=2, workers=2) as s:
        before = s.reactors()
        os.kill(before[0], signal.SIGKILL)
        after = wait_for(lambda: (lambda r: r if len(r) == 2 and before[0] not in r else None)(s.reactors()), 10)
        assert after and before[1] in after, (before, after)
        # its workers died with it, the new reactor has its own
        wait_for(lambda: len(s.php_workers()) == 2, 10)
        assert len(s.php_workers()) == 2
        time.sleep(0.5)
        for _ in range(50):
            r = s.get("/")
            assert r.status == 200, r


def test_sigterm_exits_0_no_php_left():
    s = Server(reactors=2, workers=4).start()
    procs = descendants(s.proc.pid)
    php = s.php_workers()
    assert len(php) == 4
    assert s.get("/").status == 200
    rc = s.stop(signal.SIGTERM)
    assert rc == 0, (rc, s.output())
    alive = [p for p in procs if os.path.exists("/proc/%d" % p) and cmdline(p)]
    assert not alive, alive


def test_graceful_stop_finishes_inflight_request():
    s = Server(reactors=1, workers=1).start()
    result = {}

    def slow():
        result["r"] = s.get("/sleep?ms=1000")

    t = threading.Thread(target=slow)
    t.start()
    time.sleep(0.3)
    s.proc.send_signal(signal.SIGTERM)
    t.join(10)
    assert s.proc.wait(10) == 0
    assert result["r"].status == 200 and result["r"].body == b"slept 1000", result


def test_malformed_request_line_400_and_closed():
    with Server(reactors=1, workers=1) as s:
        with s.connect() as c:
            c.sendall(b"GARBAGE\r\n\r\n")
            r = Reader(c).read()
            assert r.status == 400, r
            assert r.header("Connection") == "close"
            c.settimeout(5)
            assert c.recv(100) == b""
        # the server is unaffected
        assert s.get("/").status == 200


def test_limits_414_431_413():
    with Server(reactors=1, workers=1, extra="  max_request_size: 1\n") as s:
        for req, code in [
            (b"GET /" + b"a" * 10000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414),
            (b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 70000 + b"\r\n\r\n", 431),
            (b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2000000\r\n\r\n", 413),
        ]:
            with s.connect() as c:
                c.sendall(req)
                r = Reader(c).read()
                assert r.status == code, (code, r)
                c.settimeout(5)
                try:
                    assert c.recv(100) == b""
                except ConnectionResetError:
                    pass


def test_worker_error_frame_gives_500_worker_stays():
    with Server(reactors=1, workers=1) as s:
        pid = s.get("/pid").body
        r = s.get("/error")
        assert r.status == 500 and r.body == b"", r
        assert s.get("/pid").body == pid
        assert "boom" in s.output()


def test_worker_exit_mid_request():
    with Server(reactors=1, workers=1) as s:
        pid = s.get("/pid").body
        assert s.get("/exit").status == 500
        r = wait_for(lambda: s.get("/pid"), 10)
        assert r.status == 200 and r.body != pid


def test_echo_in_php_goes_to_log_not_relay():
    with Server(reactors=1, workers=1) as s:
        r = s.get("/echo-stdout")
        assert r.status == 200 and r.body == b"ok", r
        assert s.get("/").status == 200


def test_json_codec():
    with Server(reactors=1, workers=1, extra="  codec: json\n") as s:
        r = s.get("/info?a=1")
        assert r.status == 200, r
        assert b'"method":"GET"' in r.body and b'"a":"1"' in r.body, r.body


def test_request_context_reaches_php():
    import json
    with Server(reactors=1, workers=1) as s:
        with s.connect() as c:
            r = request(c, "GET", "/info?x=1&y=two", {"Cookie": "a=1; b=hello+world", "X-Test": "yes"})
        info = json.loads(r.body)
        assert info["method"] == "GET"
        assert info["uri"] == "http://localhost/info?x=1&y=two", info
        assert info["query"] == {"x": "1", "y": "two"}, info
        assert info["cookies"]["b"] == "hello world", info
        assert info["remoteAddr"] == "127.0.0.1", info
        r = s.get("/headers")
        hdrs = json.loads(r.body)
        assert "Host" not in hdrs


def test_head_and_status():
    with Server(reactors=1, workers=1) as s:
        with s.connect() as c:
            r = request(c, "HEAD", "/")
            assert r.status == 200 and r.header("Content-Length") == "20", r
            r = request(c, "GET", "/status?code=404")
            assert r.status == 404, r
            r = request(c, "GET", "/nowhere")
            assert r.status == 404 and r.body == b"not found\n", r


def test_fewer_workers_than_reactors():
    """Rule: never more reactors than workers, so no reactor accepts work it cannot do."""
    with Server(reactors=2, workers=1) as s:
        assert len(s.reactors()) == 1, s.reactors()
        pids = {s.get("/pid").body for _ in range(20)}
        assert len(pids) == 1


def run_forkline(args, timeout=20):
    return subprocess.run([BIN] + args, capture_output=True, text=True, timeout=timeout)


def test_bad_yaml_error_has_file_line_col():
    s = Server(yaml='version: "3"\nhttp:\n  address: [oops\n')
    p = run_forkline(["serve", "-c", s.config])
    assert p.returncode == 1
    assert re.search(re.escape(s.config) + r":\d+:\d+: ", p.stderr), p.stderr
    p = run_forkline(["-t", "-c", s.config])
    assert p.returncode == 1 and s.config in p.stderr, p.stderr


def test_bad_value_error_has_file_line_col():
    s = Server(yaml='version: "3"\nserver:\n  command: php x\nhttp:\n  address: 127.0.0.1:1\n  pool:\n    num_workers: abc\n')
    p = run_forkline(["-t", "-c", s.config])
    assert p.returncode == 1
    assert "%s:7:" % s.config in p.stderr and "num_workers" in p.stderr, p.stderr


def test_bad_override_names_the_flag():
    s = Server()
    p = run_forkline(["-t", "-c", s.config, "-o", "http.pool.num_workers=abc"])
    assert p.returncode == 1 and "http.pool.num_workers=abc" in p.stderr, p.stderr
    p = run_forkline(["-t", "-c", s.config, "-o", "noequals"])
    assert p.returncode == 1 and "noequals" in p.stderr, p.stderr


def test_config_check_ok_and_unquoted_version():
    s = Server()
    p = run_forkline(["-t", "-c", s.config])
    assert p.returncode == 0, p.stderr
    s2 = Server(yaml="version: 3\nserver:\n  command: php x\n")
    p = run_forkline(["-t", "-c", s2.config])
    assert p.returncode == 1 and "version" in p.stderr and "%s:1:" % s2.config in p.stderr, p.stderr


def test_overrides_only_config():
    s = Server()
    os.unlink(s.config)
    p = subprocess.Popen([BIN, "serve", "-o", "version=3", "-o", "server.command=php," + os.path.join(os.path.dirname(BIN), "php/app/worker.php"),
                          "-o", "http.address=127.0.0.1:%d" % s.port, "-o", "reactors=1", "-o", "http.pool.num_workers=1"],
                         cwd=s.dir, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        r = wait_for(lambda: _try_get(s), 10)
        assert r and r.status == 200, r
    finally:
        p.send_signal(signal.SIGTERM)
        assert p.wait(15) == 0


def _try_get(s):
    try:
        return s.get("/")
    except OSError:
        return None


def test_missing_command_fails_startup():
    s = Server(command="php-does-not-exist /x.php")
    t0 = time.time()
    p = run_forkline(["serve", "-c", s.config])
    assert p.returncode == 1, (p.returncode, p.stderr)
    assert "php-does-not-exist" in p.stderr and "not found" in p.stderr, p.stderr
    assert time.time() - t0 < 5


def test_missing_php_script_fails_startup():
    s = Server(command="php /nonexistent/worker.php")
    t0 = time.time()
    p = run_forkline(["serve", "-c", s.config])
    assert p.returncode == 1, (p.returncode, p.stderr)
    assert "Could not open input file" in p.stderr, p.stderr
    assert p.stderr.count("spawned") < 5
    assert time.time() - t0 < 10
