"""The worker pool as a state machine: supervision, limits, failure handling (issue 5).
One test per rule, each with the real binary and real php-cli workers (tests/php/behave.php,
tests/php/stop_after_error.php) on 127.0.0.1."""
import os
import signal
import tempfile
import threading
import time

from fl import ROOT, Reader, Server, kill_tree, raw_request, wait_for

BEHAVE = os.path.join(ROOT, "tests", "php", "behave.php")
STOP_AFTER_ERROR = os.path.join(ROOT, "tests", "php", "stop_after_error.php")


def behave(reactors=1, workers=1, pool="", top="", server="", allocate="10s"):
    """A server running behave.php; `pool` is extra YAML under http.pool (4 spaces), `server`
    under server (2 spaces), `top` at the top level."""
    yaml = (
        'version: "3"\n'
        "reactors: %d\n"
        "server:\n  command: \"php %s\"\n%s"
        "http:\n  address: 127.0.0.1:{port}\n  pool:\n    num_workers: %d\n"
        "    allocate_timeout: %s\n%s%s" % (reactors, BEHAVE, server, workers, allocate, pool, top)
    )
    return Server(yaml=yaml)


def pid_of(s):
    r = s.get("/pid")
    assert r.status == 200, r
    return int(r.body)


def timed_get(s, path):
    t0 = time.time()
    r = s.get(path)
    return r, time.time() - t0


def in_thread(fn):
    out = {}

    def run():
        try:
            out["r"] = fn()
        except Exception as e:  # noqa
            out["e"] = e

    t = threading.Thread(target=run)
    t.start()
    return t, out


def exit_code(s, timeout=10):
    """Starts s expecting it to fail on its own; kills it if it does not."""
    s.start(wait=False)
    try:
        return s.proc.wait(timeout)
    except Exception:  # noqa
        kill_tree(s.proc.pid)
        s.proc.wait(5)
        raise


def alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_exec_ttl_kills_the_worker_and_answers_in_time():
    with behave(pool="    supervisor:\n      exec_ttl: 1s\n") as s:
        pid = pid_of(s)
        r, took = timed_get(s, "/sleep?ms=3000")
        assert r.status == 500, r
        assert 0.8 < took < 2.0, took
        new = wait_for(lambda: pid_of(s) != pid, 5)
        assert new, "the killed worker was not replaced"
        out = s.output()
        assert "exec_ttl elapsed" in out and "/sleep?ms=3000" in out, out
        assert not alive(pid)
        # a request under the limit is untouched
        assert s.get("/sleep?ms=200").status == 200


def test_max_jobs_recycles_the_worker():
    with behave(pool="    max_jobs: 10\n") as s:
        first = pid_of(s)
        pids = [first] + [pid_of(s) for _ in range(13)]
        n_first = pids.count(first)
        # 10 plus a 0-14 % jitter: 10 or 11 executions, then a fresh worker
        assert 10 <= n_first <= 11, pids
        assert pids[:n_first] == [first] * n_first and pids[n_first] != first, pids
        assert "worker %d: max_jobs reached" % first in s.output()


def test_max_worker_memory_is_a_soft_limit():
    with behave(pool="    supervisor:\n      max_worker_memory: 40\n") as s:
        pid = pid_of(s)
        for _ in range(3):
            assert pid_of(s) == pid  # ~24 MB of plain PHP is under the limit
        r = s.get("/alloc?mb=40")
        # the request that crossed the limit gets its answer from the same worker ...
        assert r.status == 200 and int(r.body) == pid, r
        # ... and the next one a new worker
        assert pid_of(s) != pid
        assert "max_worker_memory reached" in s.output()


def test_idle_worker_killed_next_request_served():
    with behave() as s:
        for _ in range(3):
            pid = pid_of(s)
            os.kill(pid, signal.SIGKILL)
            assert wait_for(lambda: not alive(pid), 5)
            # straight away: the reactor must notice the death before it dispatches
            r = s.get("/pid")
            assert r.status == 200 and int(r.body) != pid, r


def test_octane_error_then_stop_runs_each_request_once():
    log = tempfile.mktemp(prefix="fl-exec-")
    yaml = (
        'version: "3"\nreactors: 1\n'
        "server:\n  command: \"php %s\"\n  env:\n    EXEC_LOG: %s\n    STOP_DELAY_MS: \"150\"\n"
        "http:\n  address: 127.0.0.1:{port}\n  pool:\n    num_workers: 1\n"
        "    allocate_timeout: 10s\n" % (STOP_AFTER_ERROR, log)
    )
    with Server(yaml=yaml) as s:
        assert s.get("/a").status == 200
        tb, rb = in_thread(lambda: s.get("/b"))
        # /c must go out only once the worker has /b (a loaded box can delay the thread past any
        # fixed sleep); /b fails with ERROR and its stop frame comes 150 ms later
        wait_for(lambda: os.path.exists(log) and "/b" in open(log).read(), timeout=10)
        tc, rc = in_thread(lambda: s.get("/c"))
        tb.join(10)
        tc.join(10)
        assert rb["r"].status == 500, rb
        assert rc["r"].status == 200 and rc["r"].body == b"ok 1\n", rc
        time.sleep(0.3)
        with open(log) as f:
            lines = f.read().split()
        paths = lines[1::2]
        assert paths.count("/c") == 1, lines
        assert paths == ["/a", "/b", "/c"], lines
        assert "asked to be stopped" in s.output()
    os.unlink(log)


def test_no_free_worker_within_allocate_timeout():
    with behave(workers=2, allocate="500ms") as s:
        busy = [in_thread(lambda: s.get("/sleep?ms=2000")) for _ in range(2)]
        time.sleep(0.3)
        r, took = timed_get(s, "/pid")
        assert r.status == 500, r
        assert r.header("No-Workers") == "true", r
        assert 0.4 < took < 1.2, took
        for t, out in busy:
            t.join(10)
            assert out["r"].status == 200, out
        assert "no free worker within allocate_timeout" in s.output()
        assert s.get("/pid").status == 200


def test_max_queue_size_answers_at_once():
    with behave(pool="    max_queue_size: 1\n") as s:
        conns = [s.connect() for _ in range(3)]
        try:
            # accepted while the pool is idle: a first request each (the listener defers a
            # connection until its first bytes come, TCP_DEFER_ACCEPT)
            for c in conns:
                c.sendall(raw_request("GET", "/pid"))
                assert Reader(c).read().status == 200
            conns[0].sendall(raw_request("GET", "/sleep?ms=1500"))
            time.sleep(0.2)
            conns[1].sendall(raw_request("GET", "/pid"))  # waits in the queue
            time.sleep(0.2)
            t0 = time.time()
            conns[2].sendall(raw_request("GET", "/pid"))  # beyond max_queue_size
            r = Reader(conns[2]).read()
            assert r.status == 500 and time.time() - t0 < 0.5, (r, time.time() - t0)
            assert Reader(conns[0]).read().status == 200
            assert Reader(conns[1]).read().status == 200
        finally:
            for c in conns:
                c.close()
        assert "max_queue_size (1) reached" in s.output()


def test_ttl_replaces_workers_without_failing_requests():
    with behave(workers=2, pool="    supervisor:\n      ttl: 1s\n      watch_tick: 200ms\n") as s:
        before = {pid_of(s) for _ in range(4)}
        deadline = time.time() + 3
        seen = set()
        while time.time() < deadline:
            seen.add(pid_of(s))  # every request succeeds while workers are swapped
            time.sleep(0.05)
        assert seen - before, (before, seen)
        assert "ttl reached" in s.output()


def test_ttl_waits_for_the_running_request():
    with behave(pool="    supervisor:\n      ttl: 1s\n      watch_tick: 200ms\n") as s:
        pid = pid_of(s)
        r = s.get("/sleep?ms=2000")  # outlives the ttl: soft limit, not killed
        assert r.status == 200 and r.body == b"slept 2000", r
        assert pid_of(s) != pid


def test_idle_ttl_replaces_an_idle_worker():
    with behave(pool="    supervisor:\n      idle_ttl: 1s\n      watch_tick: 200ms\n") as s:
        time.sleep(1.5)  # never used: never idle-killed
        pid = pid_of(s)
        assert pid_of(s) == pid
        time.sleep(1.8)
        assert pid_of(s) != pid


def test_worker_stderr_logged_per_line():
    with behave() as s:
        assert s.get("/stderr?n=3&text=hello-line").status == 200
        assert s.get("/stderr-partial?text=glued-").status == 200
        assert s.get("/stderr?n=1&text=together").status == 200
        out = wait_for(lambda: (lambda o: o if "glued-together 1" in o else None)(s.output()), 3)
        assert out, s.output()
        lines = [l for l in out.splitlines() if "server: hello-line" in l]
        assert len(lines) == 3 and all("server" in l for l in lines), lines
        assert [l.split("hello-line ")[1][:1] for l in lines] == ["1", "2", "3"], lines


def test_stderr_flood_does_not_block_other_workers():
    with behave(workers=2) as s:
        flood, out = in_thread(lambda: s.get("/flood?mb=20"))
        time.sleep(0.1)
        worst = 0
        with s.connect() as c:
            rd = Reader(c)
            while flood.is_alive():
                t0 = time.time()
                c.sendall(raw_request("GET", "/pid"))
                assert rd.read().status == 200
                worst = max(worst, time.time() - t0)
                time.sleep(0.01)
        flood.join(30)
        assert out["r"].status == 200 and out["r"].body == b"flooded", out
        assert worst < 0.5, worst


def test_debug_mode_fresh_worker_per_request():
    with behave(pool="    debug: true\n") as s:
        pids = [pid_of(s) for _ in range(5)]
        assert len(set(pids)) == 5, pids
        r = s.get("/throw")  # debug: the ERROR frame's message is the body
        assert r.status == 500 and b"thrown by /throw" in r.body, r


def test_error_frame_body_only_in_debug():
    with behave() as s:
        pid = pid_of(s)
        r = s.get("/throw")
        assert r.status == 500 and r.body == b"", r
        assert pid_of(s) == pid  # the worker stays


def test_garbage_on_stdout_replaces_the_worker():
    with behave() as s:
        pid = pid_of(s)
        r = s.get("/garbage")
        assert r.status == 500, r
        assert pid_of(s) != pid
        assert 'the worker printed "oops, some debug output on stdout' in s.output(), s.output()


def test_stop_answer_reruns_the_request_elsewhere():
    log = tempfile.mktemp(prefix="fl-exec-")
    with behave(server="  env:\n    EXEC_LOG: %s\n" % log) as s:
        pid = pid_of(s)
        r = s.get("/stop?pid=%d" % pid)
        assert r.status == 200 and int(r.body) != pid, r
        with open(log) as f:
            lines = f.read().split()
        assert lines.count("/stop") == 2 and lines[lines.index("/stop") - 1] == str(pid), lines
    os.unlink(log)


def test_crash_loop_backs_off_and_recovers():
    flag = tempfile.mktemp(prefix="fl-bootfail-")
    with behave(server="  env:\n    BOOT_FAIL_IF: %s\n" % flag) as s:
        pid = pid_of(s)
        open(flag, "w").close()
        assert s.get("/exit").status == 500
        t0 = time.time()
        out = wait_for(lambda: (lambda o: o if "workers keep dying before start-up" in o else None)(
            s.output()), 8)
        assert out, s.output()
        time.sleep(max(0, 3 - (time.time() - t0)))
        spawned = s.output().count("spawned worker")
        assert spawned < 12, spawned  # 100, 200, 400, 800 ms ... not a fork storm
        os.unlink(flag)
        r = wait_for(lambda: s.get("/pid"), 10)
        assert r.status == 200 and int(r.body) != pid, r


def test_server_user_and_group():
    if os.geteuid() != 0:
        return
    with behave(server="  user: nobody\n  group: daemon\n") as s:
        r = s.get("/uid")
        assert r.status == 200 and r.body == b"65534 1", r
    s = behave(server="  user: no-such-user-here\n")
    assert exit_code(s) == 1
    assert "no such user: no-such-user-here" in s.output()


def test_server_env_expansion():
    os.environ["FL_TEST_GREETING"] = "hello-from-env"
    try:
        with behave(server="  env:\n    greeting: \"${FL_TEST_GREETING}\"\n") as s:
            assert s.get("/env?name=GREETING").body == b"hello-from-env"
            assert s.get("/env?name=RR_MODE").body == b"http"
    finally:
        del os.environ["FL_TEST_GREETING"]


def test_on_init_runs_once_before_workers():
    d = tempfile.mkdtemp(prefix="fl-oninit-")
    marker = os.path.join(d, "marker")
    oninit = (
        "  on_init:\n"
        "    command: [\"sh\", \"-c\", \"echo on-init-stdout; printenv INIT_VAR; echo on-init-stderr >&2; "
        "touch %s\"]\n"
        "    env:\n      init_var: value-1\n" % marker
    )
    with behave(server=oninit) as s:
        assert os.path.exists(marker)
        out = s.output()
        assert "on-init-stdout" in out and "on-init-stderr" in out, out
        assert "server: value-1" in out, out  # on_init.env, key upper-cased
        assert out.index("on-init-stdout") < out.index("spawned worker"), out
        assert s.get("/pid").status == 200
    failing = "  on_init:\n    command: \"false\"\n    exit_on_error: true\n"
    s = behave(server=failing)
    assert exit_code(s) == 1, s.output()
    assert "server.on_init" in s.output() and "status 1" in s.output()
    slow = "  on_init:\n    command: \"sleep 5\"\n    exec_timeout: 300ms\n"
    with behave(server=slow) as s:  # not exit_on_error: logged, then the server starts
        assert "did not finish within exec_timeout" in s.output()
        assert s.get("/pid").status == 200


def test_destroy_timeout_bounds_the_stop():
    # the worker lingers 8 s after its stop frame; destroy_timeout 1s cuts that short
    yaml_env = "  env:\n    STOP_LINGER_MS: \"8000\"\n"
    with behave(server=yaml_env, pool="    destroy_timeout: 1s\n") as s:
        pid = pid_of(s)
        t0 = time.time()
        rc = s.stop(signal.SIGTERM)
        took = time.time() - t0
        assert rc == 0, (rc, s.output())
        assert 0.8 < took < 4, took
        assert wait_for(lambda: not alive(pid), 2)
