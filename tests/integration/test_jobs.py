"""Jobs with the memory driver (issue 8, spec §7 and §9.3): jobs pushed over RPC (protobuf
jobs.v1) run in the reactors' RR_MODE=jobs pools on real php-cli workers
(tests/php/jobs_worker.php), which append to a sink file the test reads."""
import json
import os
import signal
import time
import uuid

from fl import ROOT, Server, free_port, wait_for
from test_services import Conn, RPCError, pb_bytes, pb_fields, pb_varint

WORKER = os.path.join(ROOT, "tests", "php", "jobs_worker.php")


def jobs_yaml(listen, jobs_workers=2, pipelines=None, consume=("high", "low"), jobs_extra=""):
    """pipelines: {name: priority} or {name: {option: value}} (memory driver)."""
    pipelines = pipelines or {"high": 1, "low": 10}
    pl = ""
    for n, p in pipelines.items():
        opts = p if isinstance(p, dict) else {"priority": p}
        pl += "    %s:\n      driver: memory\n      config:\n" % n
        pl += "".join("        %s: %s\n" % kv for kv in opts.items())
    return ("rpc:\n  listen: %s\n"
            "jobs:\n%s  consume: [%s]\n  pool:\n    num_workers: %d\n    command: \"php %s\"\n"
            "  pipelines:\n%s" % (listen, jobs_extra, ", ".join(consume), jobs_workers, WORKER, pl))


def jobs_server(reactors=2, jobs_workers=2, pipelines=None, consume=("high", "low"), jobs_extra=""):
    listen = "tcp://127.0.0.1:%d" % free_port()
    extra = jobs_yaml(listen, jobs_workers, pipelines, consume, jobs_extra)
    s = Server(workers=reactors, reactors=reactors, extra=extra)
    s.rpc = listen
    return s


def job(pipeline, payload, id=None, delay=0, priority=0, name="Test\\Job", headers=None):
    opts = pb_varint(1, priority) if priority else b""
    opts += pb_bytes(2, pipeline) + (pb_varint(3, delay) if delay else b"")
    h = b""
    for k, vs in (headers or {}).items():
        h += pb_bytes(4, pb_bytes(1, k) + pb_bytes(2, b"".join(pb_bytes(1, v) for v in vs)))
    return (pb_bytes(1, name) + pb_bytes(2, str(uuid.uuid4()) if id is None else id) +
            pb_bytes(3, json.dumps(payload)) + h + pb_bytes(5, opts))


def push(c, pipeline, payload, **kw):
    return c.call("jobs.Push", pb_bytes(1, job(pipeline, payload, **kw)))


def push_batch(c, jobs):
    return c.call("jobs.PushBatch", b"".join(pb_bytes(1, j) for j in jobs))


def lines(path):
    try:
        with open(path) as f:
            return [l.split(" ", 3) for l in f.read().splitlines()]
    except FileNotFoundError:
        return []


def stats(c):
    out = {}
    for f, st in pb_fields(c.call("jobs.Stat", b"")):
        d = dict(pb_fields(st))
        out[d[1].decode()] = d
    return out


def wait_ready_jobs(s):
    wait_for(lambda: s.output().count("jobs pool ready") >= 1, timeout=15)


def test_jobs_2000_each_processed_once_and_rpc_errors():
    s = jobs_server()
    sink = os.path.join(s.dir, "sink")
    with s:
        wait_ready_jobs(s)
        c = Conn(s.rpc)
        ids = [str(uuid.uuid4()) for _ in range(2000)]
        for i in range(0, 1000, 100):  # half in batches,
            push_batch(c, [job("high" if k % 2 else "low", {"sink": sink}, id=ids[k])
                           for k in range(i, i + 100)])
        for k in range(1000, 2000):  # half one by one
            push(c, "low" if k % 3 else "high", {"sink": sink}, id=ids[k])
        assert wait_for(lambda: len(lines(sink)) >= 2000, timeout=30), len(lines(sink))
        time.sleep(0.3)
        got = [l[0] for l in lines(sink)]
        assert len(got) == 2000 and sorted(got) == sorted(ids), (len(got), len(set(got)))
        pids = {l[2] for l in lines(sink)}
        assert len(pids) == 2, pids  # both reactors' jobs workers took part
        st = stats(c)
        assert st["high"][4] == 0 and st["high"].get(6, 0) == 0 and st["high"][7] == 1, st
        assert dict(pb_fields(c.call("jobs.List", b""))) and \
            sorted(v.decode() for f, v in pb_fields(c.call("jobs.List", b""))) == ["high", "low"]
        for arg, want in [
            (pb_bytes(1, job("high", {}, id="")), "empty ID field not allowed"),
            (pb_bytes(1, job("nope", {})), "no such pipeline, requested: nope"),
            (b"\xff\xff", "proto: cannot parse invalid wire-format data"),
            (pb_bytes(1, job("high", {"x": "y" * 200000}, id="big")), "job big is too large"),
        ]:
            try:
                c.call("jobs.Push", arg)
                raise AssertionError("accepted: %r" % arg)
            except RPCError as e:
                assert want in str(e), (str(e), want)
        try:
            push_batch(c, [job("high", {"sink": sink}), job("nope", {"sink": sink})])
            raise AssertionError("bad batch accepted")
        except RPCError as e:
            assert "no such pipeline" in str(e)
        time.sleep(0.3)
        assert len(lines(sink)) == 2000  # nothing of the bad batch ran
        infos = {i["Pipeline"]: i for i in c.call("informer.Jobs", "jobs", flags=0x08)}
        assert infos["low"]["Priority"] == 10 and infos["low"]["Ready"] is True, infos
        assert infos["high"]["Active"] == 0 and infos["high"]["Driver"] == "memory", infos
        assert s.proc.poll() is None
test_jobs_2000_each_processed_once_and_rpc_errors.timeout = 90


def test_jobs_nack_requeue_headers_and_malformed_ack():
    s = jobs_server()
    sink, marks = os.path.join(s.dir, "sink"), os.path.join(s.dir, "marks")
    os.mkdir(marks)
    with s:
        wait_ready_jobs(s)
        c = Conn(s.rpc)
        ids = ["fail-%d" % i for i in range(20)]
        for i in ids:  # first attempt throws → nack(requeue) → delivered again → acked
            push(c, "high", {"sink": sink, "fail_first": marks}, id=i)
        # type 4 REQUEUE with headers: merged into the job's on redelivery
        push(c, "low", {"sink": sink + "4", "answer": json.dumps(
            {"type": 4, "data": {"message": "again", "delay_seconds": 0,
                                 "headers": {"attempt": ["2"]}}})}, id="rq", headers={"a": ["1"]})
        # a malformed answer: logged, the job is requeued (after 5 s), not lost
        push(c, "low", {"sink": sink + "bad", "answer": "not json"}, id="bad")
        assert wait_for(lambda: len(lines(sink)) >= 20, timeout=15), lines(sink)
        assert sorted(l[0] for l in lines(sink)) == sorted(ids)
        assert sorted(os.listdir(marks)) == sorted(ids)
        assert wait_for(lambda: lines(sink + "4"), timeout=10)
        (rq,) = lines(sink + "4")
        assert rq[0] == "rq" and json.loads(rq[3]) == {"a": ["1"], "attempt": ["2"]}, rq
        time.sleep(1)
        assert lines(sink + "bad") == []  # not before its 5 s back-off
        assert "malformed acknowledgement" in s.output()
        assert wait_for(lambda: lines(sink + "bad"), timeout=10), s.output()[-2000:]
        assert [l[0] for l in lines(sink + "bad")] == ["bad"]
test_jobs_nack_requeue_headers_and_malformed_ack.timeout = 60


def test_jobs_delay_not_before_its_time():
    s = jobs_server()
    sink = os.path.join(s.dir, "sink")
    with s:
        wait_ready_jobs(s)
        c = Conn(s.rpc)
        t0 = time.time()
        push(c, "low", {"sink": sink}, id="later", delay=2)
        push(c, "low", {"sink": sink}, id="now")
        assert wait_for(lambda: lines(sink), timeout=5)
        assert stats(c)["low"].get(5) == 1  # delayed
        while time.time() - t0 < 1.8:
            assert [l[0] for l in lines(sink)] == ["now"], lines(sink)
            time.sleep(0.05)
        assert wait_for(lambda: len(lines(sink)) == 2, timeout=5)
        assert time.time() - t0 < 3.2, time.time() - t0  # within a second after its time
        assert stats(c)["low"].get(5, 0) == 0
test_jobs_delay_not_before_its_time.timeout = 30


def test_jobs_kill9_consumer_mid_job_is_redelivered():
    s = jobs_server()
    sink, start = os.path.join(s.dir, "sink"), os.path.join(s.dir, "start")
    with s:
        wait_ready_jobs(s)
        c = Conn(s.rpc)
        push(c, "high", {"sink": sink, "start": start, "sleep_ms": 1500}, id="victim")
        assert wait_for(lambda: lines(start), timeout=10)
        pid = int(lines(start)[0][1])
        os.kill(pid, signal.SIGKILL)
        assert wait_for(lambda: lines(sink), timeout=15), s.output()[-2000:]
        assert [l[0] for l in lines(sink)] == ["victim"]
        starts = lines(start)
        assert len(starts) == 2 and int(starts[1][1]) != pid, starts
        time.sleep(0.5)
        assert len(lines(sink)) == 1
test_jobs_kill9_consumer_mid_job_is_redelivered.timeout = 40


def test_jobs_priority_pipelines_both_progress_and_pause():
    s = jobs_server(reactors=1, jobs_workers=1)
    sink = os.path.join(s.dir, "sink")
    with s:
        wait_ready_jobs(s)
        c = Conn(s.rpc)
        push_batch(c, [job("high", {"sink": sink, "sleep_ms": 2}) for _ in range(400)])
        push_batch(c, [job("low", {"sink": sink, "sleep_ms": 2}) for _ in range(100)])

        def count(p):
            return sum(1 for l in lines(sink) if l[1] == p)
        assert wait_for(lambda: count("high") >= 200, timeout=20)
        hi, lo = count("high"), count("low")
        # weights 1 : 10 → about one low job per ten high ones, and never starved
        print("priority: high %d, low %d" % (hi, lo))
        assert 10 <= lo <= 40 and hi < 400, (hi, lo)
        c.call("jobs.Pause", pb_bytes(1, "low"))
        assert stats(c)["low"].get(7, 0) == 0  # ready = false
        assert wait_for(lambda: count("high") == 400, timeout=20)
        time.sleep(0.3)
        paused_at = count("low")
        time.sleep(0.5)
        assert count("low") == paused_at and paused_at < 100
        c.call("jobs.Resume", pb_bytes(1, "low"))
        assert wait_for(lambda: count("low") == 100, timeout=20)
        try:
            c.call("jobs.Pause", pb_bytes(1, "nope"))
            raise AssertionError("unknown pipeline paused")
        except RPCError as e:
            assert "no such pipeline, requested: nope" in str(e)
test_jobs_priority_pipelines_both_progress_and_pause.timeout = 60


def declare(c, **kv):
    return c.call("jobs.Declare", b"".join(
        pb_bytes(1, pb_bytes(1, k) + pb_bytes(2, str(v))) for k, v in kv.items()))


def test_jobs_declare_destroy_and_php_client():
    s = jobs_server()
    sink = os.path.join(s.dir, "sink")
    with s:
        wait_ready_jobs(s)
        c = Conn(s.rpc)
        declare(c, driver="memory", name="dyn", priority=3)
        for args, want in [({"driver": "memory", "name": "dyn"}, "pipeline already exists, name: dyn"),
                           ({"driver": "amqp", "name": "x"}, "unsupported jobs driver"),
                           ({"driver": "memory"}, "pipeline name is required")]:
            try:
                declare(c, **args)
                raise AssertionError("declared %r" % args)
            except RPCError as e:
                assert want in str(e), str(e)
        # the PHP push client (php/src/Jobs/Jobs.php) over php/src/RPC.php
        code = r"""
require getenv('FL_ROOT') . '/php/src/autoload.php';
$jobs = new Forkline\Jobs\Jobs(Forkline\RPC::create($argv[1]));
$ids = [];
for ($i = 0; $i < 50; $i++) {
    $ids[] = $jobs->push('dyn', 'App\\Job', json_encode(['sink' => $argv[2]]), headers: ['h' => ['v']]);
}
$jobs->pushBatch([['pipeline' => 'low', 'name' => 'B', 'payload' => json_encode(['sink' => $argv[2]]), 'id' => 'batch-1']]);
echo json_encode(['ids' => $ids, 'list' => $jobs->list()]), "\n";
"""
        import subprocess
        p = subprocess.run(["php", "-r", code, "--", s.rpc, sink], capture_output=True, text=True,
                           timeout=30, env=dict(os.environ, FL_ROOT=ROOT))
        assert p.returncode == 0, p.stderr + p.stdout
        out = json.loads(p.stdout)
        assert sorted(out["list"]) == ["dyn", "high", "low"], out
        assert wait_for(lambda: len(lines(sink)) == 51, timeout=15), len(lines(sink))
        got = {l[0]: l for l in lines(sink)}
        assert set(got) == set(out["ids"]) | {"batch-1"}
        assert got[out["ids"][0]][1] == "dyn" and json.loads(got[out["ids"][0]][3]) == {"h": ["v"]}
        # destroy: queued jobs of a paused pipeline are dropped, the name is gone
        c.call("jobs.Pause", pb_bytes(1, "dyn"))
        push(c, "dyn", {"sink": sink}, id="dropped")
        destroyed = [v.decode() for f, v in pb_fields(c.call("jobs.Destroy", pb_bytes(1, "dyn")))]
        assert destroyed == ["dyn"]
        assert sorted(v.decode() for f, v in pb_fields(c.call("jobs.List", b""))) == ["high", "low"]
        try:
            push(c, "dyn", {"sink": sink})
            raise AssertionError("pushed to a destroyed pipeline")
        except RPCError as e:
            assert "no such pipeline, requested: dyn" in str(e)
        declare(c, driver="memory", name="dyn")  # the name can be declared again
        time.sleep(0.3)
        assert "dropped" not in {l[0] for l in lines(sink)}
test_jobs_declare_destroy_and_php_client.timeout = 60


def test_jobs_graceful_stop_finishes_job_in_flight():
    s = jobs_server(reactors=1, jobs_workers=1)
    sink, start = os.path.join(s.dir, "sink"), os.path.join(s.dir, "start")
    with s:
        wait_ready_jobs(s)
        c = Conn(s.rpc)
        push(c, "high", {"sink": sink, "start": start, "sleep_ms": 800}, id="inflight")
        assert wait_for(lambda: lines(start), timeout=10)
        assert s.stop() == 0, s.output()[-2000:]
        assert [l[0] for l in lines(sink)] == ["inflight"]
test_jobs_graceful_stop_finishes_job_in_flight.timeout = 40


def test_jobs_config_errors_are_clear():
    import subprocess
    from fl import BIN
    s = jobs_server(pipelines={"ok": 10, "bad": 10})
    with open(s.config) as f:
        text = f.read()
    lines_ = text.splitlines()
    # the second pipeline's driver line → amqp
    idx = [i for i, l in enumerate(lines_) if "driver: memory" in l][1]
    lines_[idx] = lines_[idx].replace("memory", "amqp")
    with open(s.config, "w") as f:
        f.write("\n".join(lines_) + "\n")
    p = subprocess.run([BIN, "-t", "-c", s.config], capture_output=True, text=True, timeout=10)
    assert p.returncode == 1, p.stdout + p.stderr
    assert "jobs.pipelines.bad.driver: unsupported jobs driver" in p.stderr + p.stdout, p.stderr


def test_jobs_timeout_kills_the_worker_and_requeues():
    """jobs.timeout: a job running longer is stopped (its worker killed), logged, and requeued;
    the second attempt completes."""
    s = jobs_server(reactors=1, jobs_workers=1, jobs_extra="  timeout: 1\n")
    sink, start, marks = (os.path.join(s.dir, x) for x in ("sink", "start", "marks"))
    os.mkdir(marks)
    with s:
        wait_ready_jobs(s)
        c = Conn(s.rpc)
        t0 = time.time()
        push(c, "high", {"sink": sink, "start": start, "hang_first": marks}, id="slow")
        assert wait_for(lambda: lines(sink), timeout=15), s.output()[-3000:]
        assert time.time() - t0 < 10  # not the 30 s the first attempt would have slept
        starts = lines(start)
        assert [l[0] for l in starts] == ["slow", "slow"] and starts[0][1] != starts[1][1], starts
        assert [l[0] for l in lines(sink)] == ["slow"]
        out = s.output()
        assert "job slow: exec_ttl elapsed (1000 ms)" in out and "requeued" in out, out[-3000:]
test_jobs_timeout_kills_the_worker_and_requeues.timeout = 40


def concurrency(path):
    """Most jobs running at once, from a file where each job writes "id pid" when it starts and
    "id pipeline pid headers" when it ends."""
    run = top = 0
    for l in lines(path):
        run += 1 if len(l) == 2 else -1
        top = max(top, run)
    return top


def test_jobs_prefetch_caps_jobs_in_flight():
    s = jobs_server(jobs_workers=4, pipelines={"one": {"prefetch": 1}, "three": {"prefetch": 3}},
                    consume=("one", "three"))
    f1, f3 = os.path.join(s.dir, "f1"), os.path.join(s.dir, "f3")
    with s:
        wait_ready_jobs(s)
        c = Conn(s.rpc)
        push_batch(c, [job("one", {"sink": f1, "start": f1, "sleep_ms": 40}) for _ in range(10)] +
                   [job("three", {"sink": f3, "start": f3, "sleep_ms": 40}) for _ in range(15)])
        assert wait_for(lambda: len(lines(f1)) == 20 and len(lines(f3)) == 30, timeout=20)
        assert concurrency(f1) == 1, lines(f1)
        assert concurrency(f3) == 3, lines(f3)  # 4 workers, but prefetch 3
test_jobs_prefetch_caps_jobs_in_flight.timeout = 40


def test_jobs_pipeline_size_refuses_pushes_beyond():
    s = jobs_server(pipelines={"p": 10}, consume=(), jobs_extra="  pipeline_size: 5\n")
    with s:
        wait_ready_jobs(s)
        c = Conn(s.rpc)
        for i in range(4):
            push(c, "p", {}, id="q%d" % i)
        try:
            push_batch(c, [job("p", {}), job("p", {})])  # 4 + 2 > 5: none is queued
            raise AssertionError("pushed past pipeline_size")
        except RPCError as e:
            assert "pipeline p is full: 4 job(s) queued + 2 pushed > jobs.pipeline_size 5" in str(e), e
        push(c, "p", {}, id="q4")
        try:
            push(c, "p", {}, id="q5")
            raise AssertionError("pushed past pipeline_size")
        except RPCError as e:
            assert "pipeline p is full" in str(e)
        assert stats(c)["p"][4] == 5
test_jobs_pipeline_size_refuses_pushes_beyond.timeout = 30


def test_jobs_reload_reapplies_pipelines_and_loses_nothing():
    """SIGHUP with a changed jobs section: a pipeline is added, one removed, a priority changed;
    the job in flight finishes on the old generation, the ones prefetched by its reactor come
    back to the broker and run on the new one: each exactly once."""
    s = jobs_server(reactors=1, jobs_workers=1)
    sink, start = os.path.join(s.dir, "sink"), os.path.join(s.dir, "start")
    with s:
        wait_ready_jobs(s)
        c = Conn(s.rpc)
        ids = ["r%d" % i for i in range(6)]
        push(c, "high", {"sink": sink, "start": start, "sleep_ms": 1200}, id=ids[0])
        assert wait_for(lambda: lines(start), timeout=10)
        push_batch(c, [job("high", {"sink": sink, "sleep_ms": 100}, id=i) for i in ids[1:]])
        with open(s.config) as f:
            text = f.read()
        new = jobs_yaml(s.rpc, 1, {"high": 2, "fresh": 5}, ("high", "fresh"))
        with open(s.config, "w") as f:
            f.write(text[:text.index("rpc:\n")] + new)
        s.proc.send_signal(signal.SIGHUP)
        assert wait_for(lambda: "reload complete" in s.output(), 20), s.output()[-3000:]
        assert wait_for(lambda: len(lines(sink)) >= 6, timeout=20), s.output()[-3000:]
        time.sleep(0.5)
        got = [l[0] for l in lines(sink)]
        assert sorted(got) == sorted(ids), got  # each exactly once
        assert sorted(v.decode() for f, v in pb_fields(c.call("jobs.List", b""))) == ["fresh", "high"]
        assert stats(c)["high"][8] == 2
        push(c, "fresh", {"sink": sink}, id="in-fresh")
        assert wait_for(lambda: "in-fresh" in [l[0] for l in lines(sink)], timeout=10)
        try:
            push(c, "low", {})
            raise AssertionError("low still exists")
        except RPCError as e:
            assert "no such pipeline, requested: low" in str(e)
test_jobs_reload_reapplies_pipelines_and_loses_nothing.timeout = 60


def test_jobs_pool_reset_informer_and_cli():
    """resetter.Reset("jobs") (and `forkline reset`) replaces the jobs workers while jobs run,
    losing nothing; informer.Workers("jobs") lists them; resetter.List has both plugins."""
    s = jobs_server(jobs_workers=2)
    sink = os.path.join(s.dir, "sink")
    with s:
        wait_ready_jobs(s)
        c = Conn(s.rpc)
        assert sorted(c.call("resetter.List", True, flags=0x08)) == ["http", "jobs"]
        jw = {w["pid"] for w in c.call("informer.Workers", "jobs", flags=0x08)["workers"]}
        hw = {w["pid"] for w in c.call("informer.Workers", "http", flags=0x08)["workers"]}
        assert len(jw) == 2 and len(hw) == 2 and not jw & hw, (jw, hw)
        ids = ["x%d" % i for i in range(40)]
        push_batch(c, [job("low", {"sink": sink, "sleep_ms": 50}, id=i) for i in ids])
        time.sleep(0.2)
        assert c.call("resetter.Reset", "jobs", flags=0x08) is True
        jw2 = {w["pid"] for w in c.call("informer.Workers", "jobs", flags=0x08)["workers"]}
        assert len(jw2) == 2 and not jw2 & jw, (jw, jw2)
        assert {w["pid"] for w in c.call("informer.Workers", "http", flags=0x08)["workers"]} == hw
        assert wait_for(lambda: len(lines(sink)) >= 40, timeout=20)
        time.sleep(0.3)
        assert sorted(l[0] for l in lines(sink)) == sorted(ids)  # nothing lost, nothing twice
        import subprocess
        from fl import BIN
        p = subprocess.run([BIN, "-c", s.config, "reset"], capture_output=True, text=True,
                           timeout=60)
        assert p.returncode == 0 and "plugin reset: [jobs]" in p.stderr, p.stderr
        p = subprocess.run([BIN, "-c", s.config, "workers", "jobs"], capture_output=True,
                           text=True, timeout=30)
        assert p.returncode == 0 and "Workers of [jobs]" in p.stdout, p.stdout + p.stderr
test_jobs_pool_reset_informer_and_cli.timeout = 90
