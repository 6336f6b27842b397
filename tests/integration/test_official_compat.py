"""What the OFFICIAL RoadRunner PHP packages put on the wire, and what forkline must tolerate
(spec goridge §14, ten items). The official packages cannot be installed here, so
tests/php/official_http.php, official_jobs.php and official_rpc.php reproduce their bytes and
behaviour as the spec describes them: goridge 4.2's single fread() of a header, exactly one option
per task, respond(500) followed by error(), unsolicited frames while idle, a stream STOP noticed
only while a PONG is awaited, PING on frames 6, 11, 16, JSON headers as plain strings, jobs acks
of types 0-4, repeated RPC sequence numbers, `rr reset` with and without `-o version=3`.

Each test checks that the PHP worker is still the same process where it should be, and that no
request after the odd behaviour is affected. The workers report every rule the server broke on
their stderr ("OFFICIAL-VIOLATION"), which lands in forkline's log."""
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time

from fl import BIN, ROOT, Reader, Server, free_port, raw_request, request, wait_for
from test_jobs import Conn, push, wait_ready_jobs

PHP = os.path.join(ROOT, "tests", "php")
HTTP_WORKER = os.path.join(PHP, "official_http.php")
JOBS_WORKER = os.path.join(PHP, "official_jobs.php")
RPC_CLIENT = os.path.join(PHP, "official_rpc.php")


def official(workers=1, reactors=1, http="", pool="", env=None, top=""):
    """A server whose HTTP workers are official_http.php."""
    env_yaml = ""
    if env:
        env_yaml = "  env:\n" + "".join("    %s: \"%s\"\n" % kv for kv in env.items())
    yaml = (
        'version: "3"\n'
        "reactors: %d\n"
        "server:\n  command: \"php %s\"\n%s"
        "http:\n  address: 127.0.0.1:{port}\n%s  pool:\n    num_workers: %d\n"
        "    allocate_timeout: 10s\n%s%s" % (reactors, HTTP_WORKER, env_yaml, http, workers, pool, top)
    )
    return Server(yaml=yaml)


def no_violation(s):
    out = s.output()
    assert "OFFICIAL-VIOLATION" not in out, out[-3000:]


def pid_of(s):
    r = s.get("/pid")
    assert r.status == 200, r
    return int(r.body)


def get_on(c, path):
    c.sendall(raw_request("GET", path))
    return Reader(c).read()


def exec_log(path):
    try:
        with open(path) as f:
            return [l.split(" ", 1) for l in f.read().splitlines()]
    except FileNotFoundError:
        return []


# ---- item 1 (one write per header) and item 2 (exactly one option per task) -----------------

def _frames_both_ways(http=""):
    with official(http=http) as s:
        pid = pid_of(s)
        # tasks of every size reach a reader that takes the header in ONE fread(12)
        for n in (0, 1, 11, 12, 13, 4096, 65536, 65537, 1 << 20, 8 << 20):
            body = os.urandom(n)
            with s.connect() as c:
                r = request(c, "POST", "/echo", {"Content-Type": "application/octet-stream"}, body)
            want = "POST %d %s parsed=0" % (n, hashlib.sha1(body).hexdigest())
            assert r.status == 200 and r.body.decode() == want, (n, r)
        # keep-alive and pipelined: back-to-back task frames, each header whole
        with s.connect() as c:
            c.sendall(b"".join(raw_request("GET", "/pid") for _ in range(50)))
            rd = Reader(c)
            for _ in range(50):
                r = rd.read()
                assert r.status == 200 and int(r.body) == pid, r
        # the worker's answer in pieces: header, then the rest later; even the header split
        for path in ("/split?ms=150", "/split-header?ms=150"):
            t0 = time.time()
            queued = [threading.Thread(target=lambda: s.get("/pid")) for _ in range(3)]
            with s.connect() as c:
                c.sendall(raw_request("GET", path))
                time.sleep(0.05)
                for t in queued:  # tasks waiting for the worker while its answer trickles in
                    t.start()
                r = Reader(c).read()
            assert r.status == 200 and r.body == b"split %d" % pid, (path, r)
            assert time.time() - t0 >= 0.14, path
            for t in queued:
                t.join(10)
        assert pid_of(s) == pid
        no_violation(s)


def test_item1_2_headers_whole_one_option_proto():
    _frames_both_ways()


def test_item1_2_headers_whole_one_option_json():
    _frames_both_ways(http="  codec: json\n")


# ---- item 3: more than one frame for a task, frames while idle -------------------------------

def test_item3_respond500_then_error_sequential():
    """RoadRunner's documented loop answers an exception with respond(500) and then error()."""
    with official() as s:
        pid = pid_of(s)
        with s.connect() as c:
            for _ in range(10):
                r = get_on(c, "/throw500")
                assert r.status == 500 and r.body == b"Something Went Wrong!", r
                r = get_on(c, "/pid")
                assert r.status == 200 and int(r.body) == pid, r
        assert pid_of(s) == pid
        # the trailing ERROR frame is logged and discarded: read while idle, or held behind the
        # next task and found stale
        out = s.output()
        assert "unexpected frame" in out or "left over from its previous task" in out, out[-2000:]
        no_violation(s)


def test_item3_respond500_then_error_with_requests_waiting():
    """The same, while other requests wait for the only worker: the trailing ERROR frame of one
    request must not become the answer of the next."""
    with official() as s:
        pid = pid_of(s)
        bad = []

        def client(k):
            with s.connect() as c:
                for i in range(40):
                    path = "/throw500" if (i + k) % 3 == 0 else "/pid"
                    r = get_on(c, path)
                    ok = (r.status == 500 and r.body == b"Something Went Wrong!") if path == "/throw500" \
                        else (r.status == 200 and int(r.body) == pid)
                    if not ok:
                        bad.append((path, r))

        ts = [threading.Thread(target=client, args=(k,)) for k in range(6)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(60)
        assert not bad, bad[:5]
        assert pid_of(s) == pid
        no_violation(s)
test_item3_respond500_then_error_with_requests_waiting.timeout = 90


def test_item3_unsolicited_400_while_idle_is_discarded():
    with official() as s:
        pid = pid_of(s)
        r = s.get("/late400?ms=100")
        assert r.status == 200 and r.body == b"late400 %d" % pid, r
        time.sleep(0.4)  # the 400 arrives while the worker is idle
        for _ in range(3):
            assert pid_of(s) == pid
        assert "unexpected frame while idle" in s.output(), s.output()[-2000:]
        no_violation(s)


def test_item3_late_error_is_not_the_next_answer():
    """respond(500), then error() 150 ms later: the next request is sent to the worker in between,
    and the stale ERROR frame reaches the server before that request's answer."""
    with official() as s:
        pid = pid_of(s)
        with s.connect() as c:
            for _ in range(3):
                r = get_on(c, "/throw500?ms=150")
                assert r.status == 500 and r.body == b"Something Went Wrong!", r
                t0 = time.time()
                r = get_on(c, "/pid")
                assert r.status == 200 and int(r.body) == pid, r
                assert time.time() - t0 > 0.1  # it did wait for the worker
            # the next answer a stream with PINGs: the barrier's PID request reaches the worker
            # mid-stream, where the library queues it and answers after the stream
            r = get_on(c, "/throw500?ms=150")
            assert r.status == 500, r
            r = get_on(c, "/stream?n=17&ms=5")
            assert r.status == 200 and r.body.count(b"chunk") == 17, r
        assert "left over from its previous task" in s.output(), s.output()[-2000:]
        assert pid_of(s) == pid
        # a real ERROR answer still fails its own request, and only that one
        assert s.get("/throw").status == 500
        assert pid_of(s) == pid
        no_violation(s)


def test_item3_unsolicited_stop_while_idle_retires_the_worker():
    log = tempfile.mktemp(prefix="fl-exec-")
    with official(env={"EXEC_LOG": log}) as s:
        pid = pid_of(s)
        # the stop frame comes 100 ms after the answer, the worker idle by then
        r = s.get("/stop-idle?ms=100")
        assert r.status == 200, r
        time.sleep(0.4)
        new = pid_of(s)
        assert new != pid
        assert wait_for(lambda: not os.path.exists("/proc/%d" % pid) or
                        open("/proc/%d/stat" % pid).read().split()[2] == "Z", 5)
        # the stop frame 100 ms after the answer, but the next request sent at once: the worker
        # already has it and answers it; it runs once, then the worker goes
        with s.connect() as c:
            r = get_on(c, "/stop-idle?ms=100")
            assert r.status == 200, r
            r = get_on(c, "/pid")
            assert r.status == 200 and int(r.body) == new, r
            r = get_on(c, "/pid")
            assert r.status == 200 and int(r.body) not in (pid, new), r
            third = int(r.body)
            # and the stop right behind the answer: whichever way the frames arrive, once
            r = get_on(c, "/stop-idle?ms=0")
            assert r.status == 200 and r.body == b"stop-idle %d" % third, r
            r = get_on(c, "/pid")
            assert r.status == 200, r
        time.sleep(0.3)
        paths = [l[1] for l in exec_log(log)]
        assert paths.count("/pid") == 5, exec_log(log)
        assert wait_for(lambda: pid_of(s) not in (pid, new, third), 5)
        assert "asked to be stopped" in s.output()
        no_violation(s)
    os.unlink(log)


def test_item3_stop_instead_of_answer_then_exit_reruns_elsewhere():
    """§3.6: {"stop":true} as the answer re-dispatches the task, even when the worker exits
    before the server could ask it anything more."""
    log = tempfile.mktemp(prefix="fl-exec-")
    with official(env={"EXEC_LOG": log}) as s:
        pid = pid_of(s)
        r = s.get("/stop-exit")
        assert r.status == 200 and r.body.startswith(b"stop-exit ") and int(r.body.split()[1]) != pid, r
        assert [l[1] for l in exec_log(log)].count("/stop-exit") == 2, exec_log(log)
        no_violation(s)
    for f in (log, log + ".stopped"):
        os.unlink(f)


# ---- item 4 (stream STOP) and item 5 (PING every fifth frame) ---------------------------------

def _stop_stream(s, mode, queued=False):
    """Starts a long stream, reads a few chunks, goes away; returns what the requests sent
    meanwhile got."""
    c = s.connect()
    c.sendall(raw_request("GET", "/stream?n=400&ms=10&on_stop=%s" % mode))
    c.settimeout(5)
    buf = b""
    while b"chunk 3\n" not in buf:
        d = c.recv(65536)
        assert d, buf
        buf += d
    waiting = []
    if queued:  # requests waiting for the only worker while it is told to stop
        for _ in range(3):
            t = threading.Thread(target=lambda: waiting.append(s.get("/pid")))
            t.start()
            waiting.append(t)
        time.sleep(0.05)
    c.close()
    for t in [w for w in waiting if isinstance(w, threading.Thread)]:
        t.join(15)
    return [w for w in waiting if not isinstance(w, threading.Thread)]


def test_item4_stream_stop_every_ending():
    """After STOP the official worker may send up to five more STREAM frames (it notices STOP only
    while awaiting a PONG), then ends with an ERROR frame, a 500 data frame plus an ERROR frame,
    or the library's empty frame. The worker stays, no later request sees its leftovers."""
    with official(pool="    stream_timeout: 5s\n") as s:
        pid = pid_of(s)
        for mode in ("error", "500", "catch"):
            for queued in (False, True):
                got = _stop_stream(s, mode, queued)
                for r in got:
                    assert r.status == 200 and int(r.body) == pid, (mode, r)
                t0 = time.time()
                r = s.get("/pid")
                assert r.status == 200 and int(r.body) == pid, (mode, r)
                assert time.time() - t0 < 2, (mode, time.time() - t0)
        r = s.get("/counters")
        assert r.status == 200, r
        counters = dict(kv.split("=") for kv in r.body.decode().split())
        assert int(counters["stops"]) >= 6, counters  # every stream saw its STOP
        assert pid_of(s) == pid
        no_violation(s)
test_item4_stream_stop_every_ending.timeout = 90


def test_item4_stream_timeout_after_stop():
    """A worker that never looks for the STOP (an endless stream, e.g. server-sent events) is
    killed pool.stream_timeout after it, as RoadRunner does (§5.3, §3.9), not kept forever."""
    with official(pool="    stream_timeout: 1s\n") as s:
        pid = pid_of(s)
        c = s.connect()
        c.sendall(raw_request("GET", "/stream?n=100000&ms=20&on_stop=ignore"))
        c.settimeout(5)
        buf = b""
        while b"chunk 3\n" not in buf:
            buf += c.recv(65536)
        c.close()
        t0 = time.time()
        r = s.get("/pid")  # waits for the only worker: its replacement answers
        took = time.time() - t0
        assert r.status == 200 and int(r.body) != pid, r
        assert 0.8 < took < 4, took
        assert "stream_timeout" in s.output(), s.output()[-2000:]
        # a stream the client reads to the end is not cut by it, nor is a slow answer
        assert s.get("/stream?n=80&ms=20").body.count(b"chunk") == 80
        no_violation(s)


def test_item5_ping_on_frames_6_11_16_answered():
    def counters(c):
        r = get_on(c, "/counters")
        assert r.status == 200, r
        return {k: int(v) for k, v in (kv.split("=") for kv in r.body.decode().split())}

    with official() as s:
        pid = pid_of(s)
        with s.connect() as c:
            for n, final_ping, pings in ((21, 0, 4), (4, 0, 0), (10, 1, 2), (16, 1, 4), (5, 1, 1)):
                before = counters(c)
                r = get_on(c, "/stream?n=%d&final_ping=%d" % (n, final_ping))
                assert r.status == 200, r
                assert r.body == b"".join(b"chunk %d\n" % i for i in range(1, n + 1)), r
                # every PING (the final frame's too) has its PONG before the next task
                after = counters(c)
                assert after["pings"] - before["pings"] == pings, (n, before, after)
                assert after["pongs"] - before["pongs"] == pings, (n, before, after)
        assert pid_of(s) == pid
        no_violation(s)


# ---- item 6: JSON-mode header values as plain strings ----------------------------------------

def test_item6_json_header_values_plain_strings():
    for env in ({}, {"CODEC_FLAGS_34": "1"}):  # http 3.5 (flags 0x08) and 3.4 (flags 0x00)
        with official(http="  codec: json\n", env=env) as s:
            pid = pid_of(s)
            r = s.get("/strheaders")
            assert r.status == 201 and r.body == b"strheaders", (env, r)
            assert r.header("X-Plain") == "one", r
            assert [v for k, v in r.headers if k.lower() == "x-list"] == ["a", "b"], r
            assert pid_of(s) == pid
            no_violation(s)


# ---- item 7: jobs acks of every type ---------------------------------------------------------

def test_item7_jobs_ack_types_0_to_4():
    listen = "tcp://127.0.0.1:%d" % free_port()
    extra = ("rpc:\n  listen: %s\n"
             "jobs:\n  consume: [q]\n  pool:\n    num_workers: 1\n    command: \"php %s\"\n"
             "  pipelines:\n    q:\n      driver: memory\n      config:\n        priority: 1\n"
             % (listen, JOBS_WORKER))
    s = Server(workers=1, reactors=1, extra=extra)
    sink, marks = os.path.join(s.dir, "sink"), os.path.join(s.dir, "marks")
    os.mkdir(marks)
    with s:
        wait_ready_jobs(s)
        c = Conn(listen)
        cases = {  # id: (payload, deliveries expected)
            "t0": ({"type": 0}, 1),                       # complete(): {"type":0,"data":[]}
            "t1": ({"type": 1, "requeue": False}, 1),     # fail(): acked, message logged
            "t1r": ({"type": 1, "requeue": True}, 2),     # fail(requeue): delivered again
            "t2": ({"type": 2}, 1),                       # ack()
            "t3": ({"type": 3, "requeue": False}, 1),     # nack(): dropped
            "t3r": ({"type": 3, "requeue": True}, 2),     # nack(requeue): delivered again
            "t4": ({"type": 4}, 2),                       # requeue(): delivered again
        }
        for jid, (p, _) in cases.items():
            push(c, "q", dict(p, sink=sink, marks=marks), id=jid)
        want = sum(n for _, n in cases.values())

        def rows():
            try:
                with open(sink) as f:
                    return [l.split() for l in f.read().splitlines()]
            except FileNotFoundError:
                return []
        assert wait_for(lambda: len(rows()) >= want, timeout=20), (rows(), s.output()[-2000:])
        time.sleep(1.0)  # nothing more comes
        got = rows()
        for jid, (_, n) in cases.items():
            assert [r[0] for r in got].count(jid) == n, (jid, got)
        assert len({r[1] for r in got}) == 1, got  # one worker did it all: none was killed
        out = s.output()
        assert "malformed acknowledgement" not in out, out[-2000:]
        assert "failed t1" in out, out[-2000:]  # type 1 without requeue: its message is logged
        no_violation(s)
test_item7_jobs_ack_types_0_to_4.timeout = 60


# ---- item 8: RPC sequence numbers repeated on one connection --------------------------------

def test_item8_rpc_repeated_sequence_numbers():
    listen = "tcp://127.0.0.1:%d" % free_port()
    with official(top="rpc:\n  listen: %s\n" % listen) as s:
        pid = pid_of(s)
        p = subprocess.run(["php", RPC_CLIENT, listen], capture_output=True, text=True, timeout=30)
        assert p.returncode == 0, (p.stdout, p.stderr)
        out = json.loads(p.stdout)
        assert [o[0] for o in out] == [1, 2, 3, 3, 3, 3, 3, 4], out
        assert out[0][2] == ["http"] and out[1][2] == ["http"], out
        assert [w["pid"] for w in out[2][2]["workers"]] == [pid], out
        assert out[3][2] == out[2][2] or [w["pid"] for w in out[3][2]["workers"]] == [pid], out
        assert isinstance(out[4][2], str) and not out[4][2].startswith("ERROR"), out
        assert out[5][2].startswith("ERROR: rpc: can't find service nope.Method"), out
        assert out[6][2] == ["http"] and out[7][2] == ["http"], out
        assert s.proc.poll() is None and pid_of(s) == pid


# ---- item 9: an empty parsed body ------------------------------------------------------------

def test_item9_empty_parsed_body_is_empty():
    """RR sends nothing for an empty form tree; PHP substitutes [] or {} by version."""
    with official() as s:
        for body in (b"", b"&", b"&&"):
            with s.connect() as c:
                r = request(c, "POST", "/echo", {"Content-Type": "application/x-www-form-urlencoded"}, body)
            assert r.status == 200, r
            assert r.body.decode() == "POST 0 %s parsed=1" % hashlib.sha1(b"").hexdigest(), (body, r)
        no_violation(s)


# ---- item 10: `rr reset` with and without -o version=3 ---------------------------------------

def test_item10_reset_without_version_from_a_dir_with_rr_yaml():
    rpc_port = free_port()
    listen = "tcp://127.0.0.1:%d" % rpc_port
    with official(workers=2, top="rpc:\n  listen: %s\n" % listen) as s:
        cwd = tempfile.mkdtemp(prefix="fl-octane-cwd-")
        rr = os.path.join(cwd, "rr")
        os.symlink(BIN, rr)
        runs = [
            # Octane >= 2.4 (PR #1008) and Octane 2.3.x, from a base path with an EMPTY .rr.yaml
            ("", ["reset", "-o", "version=3", "-o", "rpc.listen=" + listen, "-s"]),
            ("", ["reset", "-o", "rpc.listen=" + listen, "-s"]),
            # a .rr.yaml without a version that names rpc.listen itself; no -o at all
            ("rpc:\n  listen: %s\n" % listen, ["reset", "-s"]),
            ("rpc:\n  listen: %s\n" % listen, ["reset", "http", "-s"]),
            # a v3 .rr.yaml (with other sections) and -o version=3 on top
            ('version: "3"\nrpc:\n  listen: %s\nhttp:\n  address: 127.0.0.1:1\n' % listen,
             ["reset", "-o", "version=3", "-s"]),
        ]
        try:
            before = set(s.php_workers())
            for conf, argv in runs:
                with open(os.path.join(cwd, ".rr.yaml"), "w") as f:
                    f.write(conf)
                p = subprocess.run([rr] + argv, cwd=cwd, capture_output=True, text=True, timeout=60)
                assert p.returncode == 0 and p.stderr == "" and p.stdout == "", (conf, argv, p)
                after = set(s.php_workers())
                assert len(after) == 2 and not after & before, (argv, before, after)
                assert s.get("/pid").status == 200
                before = after
            # the client commands do not ask for a version either
            p = subprocess.run([rr, "workers"], cwd=cwd, capture_output=True, text=True, timeout=30)
            assert p.returncode == 0 and "Workers of [http]:" in p.stdout, p
        finally:
            shutil.rmtree(cwd, ignore_errors=True)
        no_violation(s)
test_item10_reset_without_version_from_a_dir_with_rr_yaml.timeout = 120


# ---- the Octane flow as older Octane releases drive it (rr-config-cli-octane.md §4) ----------

def test_older_octane_argv_space_separated_command_auto_workers():
    """Octane before PR #1162 passes `server.command=php ./vendor/bin/roadrunner-worker` (one
    space-separated string, relative to the base path), --workers=auto becomes 0 (the CPU
    count), and 2.3.x reloads with `rr reset` without `-o version=3`."""
    from test_octane import Octane

    class OldOctane(Octane):
        def argv(self):
            a = super().argv()
            i = a.index("-o", a.index("http.pool.num_workers=%d" % self.workers) - 1)
            a[i + 1] = "http.pool.num_workers=0"
            j = [k for k, v in enumerate(a) if v.startswith("server.command=")][0]
            a[j] = "server.command=%s ./vendor/bin/roadrunner-worker" % shutil.which("php")
            return a

    o = OldOctane(app_env="production", workers=2)
    try:
        o.start()
        r = o.get("/")
        assert r.status == 200 and json.loads(r.body)["env"]["APP_BASE_PATH"] == o.base, r
        before = o.php_workers()
        assert len(before) == os.cpu_count(), (before, os.cpu_count())
        rel = o.reload(with_version=False)
        assert rel.returncode == 0 and rel.stderr == "" and rel.stdout == "", rel
        after = o.php_workers()
        assert len(after) == len(before) and not set(after) & set(before), (before, after)
        assert o.get("/").status == 200
        assert o.stop() == 0
        assert o.errlines == [], o.errlines
    finally:
        o.cleanup()
test_older_octane_argv_space_separated_command_auto_workers.timeout = 120
