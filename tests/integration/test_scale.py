"""Scaling the http pool at run time (informer.AddWorker / RemoveWorker, spec goridge §9.3) on a
real server: new php-cli workers appear and serve, a removal never fails a request (a busy worker
goes only after its task), the new size survives a worker crash and a reactor crash, the command
line shows it, and a reload (SIGHUP) restores the configured size."""
import os
import signal
import subprocess
import threading
import time

from fl import BIN, cmdline, children, wait_for
from test_rpc import Conn, request, rpc_server


def workers(c):
    return c.call(99, "informer.Workers", "http")["workers"]


def pids(c):
    return sorted(w["pid"] for w in workers(c))


def per_reactor(s):
    """PHP workers under each reactor process, by reactor pid."""
    return {r: [p for p in children(r) if "php" in cmdline(p)] for r in s.reactors()}


class Load:
    """Clients in a loop on fresh connections; every answer that is not a 200 is kept."""

    def __init__(self, s, clients=8, path="/"):
        self.s, self.path, self.stop = s, path, False
        self.ok, self.bad = 0, []
        self.threads = [threading.Thread(target=self.run) for _ in range(clients)]

    def run(self):
        while not self.stop:
            try:
                r = self.s.get(self.path)
                if r.status == 200:
                    self.ok += 1
                else:
                    self.bad.append(r.status)
            except Exception as e:  # noqa
                self.bad.append(repr(e))

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop = True
        for t in self.threads:
            t.join()


def test_add_and_remove_under_load():
    s = rpc_server(workers=2, reactors=2)
    with s:
        c = Conn(s.rpc, timeout=60)
        before = pids(c)
        assert len(before) == 2, before
        with Load(s) as load:
            # RR's reply value is never set: false
            assert c.call(1, "informer.AddWorker", "http") is False
            assert c.call(2, "informer.AddWorker", "http") is False
            now = pids(c)
            added = sorted(set(now) - set(before))
            assert len(now) == 4 and len(added) == 2, (before, now)
            # real php-cli processes, one more under each reactor (the one with fewest gets it)
            assert set(added) <= set(s.php_workers()), (added, s.php_workers())
            assert sorted(len(v) for v in per_reactor(s).values()) == [2, 2], per_reactor(s)
            # the new workers take requests
            assert wait_for(lambda: all(w["numExecs"] > 0 for w in workers(c)
                                        if w["pid"] in added), 10), workers(c)
            # a removal under load: one worker fewer, no request lost meanwhile
            assert c.call(3, "informer.RemoveWorker", "http") is False
            after = pids(c)
            assert len(after) == 3 and set(after) < set(now), (now, after)
            gone = (set(now) - set(after)).pop()
            assert wait_for(lambda: not os.path.exists("/proc/%d" % gone) or not cmdline(gone), 5)
            time.sleep(0.3)
        assert load.ok > 50 and not load.bad, (load.ok, load.bad[:5])
        # the command line shows the new count
        p = subprocess.run([BIN, "workers", "-c", s.config], capture_output=True, text=True, timeout=30)
        assert p.returncode == 0, p.stderr
        assert p.stdout.count(" ready ") == 3 and all("| %d " % x in p.stdout for x in after), p.stdout
        c.close()


def test_remove_waits_for_a_busy_worker():
    """Every worker busy: RemoveWorker retires the next one to finish; its request completes."""
    s = rpc_server(workers=2, reactors=1)
    with s:
        c = Conn(s.rpc, timeout=60)
        assert len(pids(c)) == 2
        results = []

        def slow():
            results.append(s.get("/sleep?ms=800"))

        ts = [threading.Thread(target=slow) for _ in range(2)]
        for t in ts:
            t.start()
        assert wait_for(lambda: sum(w["statusStr"] == "working" for w in workers(c)) == 2, 5)
        t0 = time.time()
        assert c.call(1, "informer.RemoveWorker", "http") is False
        waited = time.time() - t0
        for t in ts:
            t.join()
        assert [r.status for r in results] == [200, 200], results
        assert [r.body for r in results] == [b"slept 800"] * 2, results
        assert waited > 0.3, waited  # it waited for a task to end instead of killing a worker
        assert len(pids(c)) == 1
        # the last worker of a reactor stays: a clear error, nothing changes
        try:
            c.call(2, "informer.RemoveWorker", "http")
            raise AssertionError("removing the last worker succeeded")
        except RuntimeError as e:
            assert "every reactor has only one" in str(e), e
        try:
            c.call(3, "informer.AddWorker", "nope")
            raise AssertionError("an unknown plugin was scaled")
        except RuntimeError as e:
            assert str(e) == "plugin nope does not support workers management", e
        assert s.get("/").status == 200 and len(pids(c)) == 1
        c.close()


def test_new_size_survives_crashes_and_reload_restores_it():
    s = rpc_server(workers=2, reactors=2)
    with s:
        c = Conn(s.rpc, timeout=60)
        for i in range(3):
            assert c.call(i + 1, "informer.AddWorker", "http") is False
        assert len(pids(c)) == 5
        # a PHP worker crash: the supervisor respawns to the new target
        victim = pids(c)[-1]
        os.kill(victim, signal.SIGKILL)
        assert wait_for(lambda: len(pids(c)) == 5 and victim not in pids(c)
                        and all(w["statusStr"] == "ready" for w in workers(c)), 10), workers(c)
        # a reactor crash: the respawned reactor starts with its new worker count
        big = max(per_reactor(s).items(), key=lambda kv: len(kv[1]))
        assert len(big[1]) == 3, per_reactor(s)
        os.kill(big[0], signal.SIGKILL)
        assert wait_for(lambda: big[0] not in s.reactors() and len(s.reactors()) == 2
                        and sorted(len(v) for v in per_reactor(s).values()) == [2, 3], 15), per_reactor(s)
        assert wait_for(lambda: len(pids(c)) == 5, 10), pids(c)
        # a reload builds the generation from the config again: 2 workers
        s.proc.send_signal(signal.SIGHUP)
        assert wait_for(lambda: "reload complete" in s.output(), 20), s.output()[-2000:]
        assert wait_for(lambda: len(pids(c)) == 2, 10), pids(c)
        assert wait_for(lambda: len(s.php_workers()) == 2, 15), s.php_workers()
        assert s.get("/").status == 200
        c.close()


test_new_size_survives_crashes_and_reload_restores_it.timeout = 90


def test_jobs_pool_add_and_remove_while_jobs_run():
    """informer.AddWorker / RemoveWorker("jobs"): the broker's capacity follows the pool (2 jobs in
    flight per worker), all workers run jobs, a removal while every worker is busy loses no job and
    runs none twice, the size survives worker and reactor crashes, a reload restores the config."""
    from test_jobs import job, jobs_server, lines, push_batch, stats
    from test_services import Conn as PConn, RPCError

    s = jobs_server(reactors=2, jobs_workers=2, pipelines={"p": 1}, consume=("p",))
    sink, start = os.path.join(s.dir, "sink"), os.path.join(s.dir, "start")
    with s:
        assert wait_for(lambda: s.output().count("jobs pool ready") == 2, 15), s.output()
        c = PConn(s.rpc, timeout=60)

        def jpids():
            return sorted(w["pid"] for w in c.call("informer.Workers", "jobs", flags=0x08)["workers"])

        def per_reactor_jobs():
            return sorted(len([p for p in children(r) if "jobs_worker" in cmdline(p)])
                          for r in s.reactors())

        def pipeline():  # jobs.Stat: 4 = ready (memory driver), 6 = reserved (in flight)
            st = stats(c)["p"]
            return st.get(4, 0), st.get(6, 0)

        def run(prefix, n):
            ids = ["%s%d" % (prefix, i) for i in range(n)]
            push_batch(c, [job("p", {"sink": sink, "start": start, "sleep_ms": 300}, id=i)
                           for i in ids])
            return ids

        http = sorted(w["pid"] for w in c.call("informer.Workers", "http", flags=0x08)["workers"])
        before = jpids()
        assert len(before) == 2 and per_reactor_jobs() == [1, 1], (before, per_reactor_jobs())
        assert c.call("informer.AddWorker", "jobs", flags=0x08) is False
        now = jpids()
        assert len(now) == 3 and set(before) < set(now), (before, now)
        assert per_reactor_jobs() == [1, 2], per_reactor_jobs()
        assert sorted(w["pid"] for w in c.call("informer.Workers", "http", flags=0x08)["workers"]) == http

        # the broker fills the grown pool: 2 + 4 jobs in flight, and all three run at once
        ids = run("a", 12)
        assert wait_for(lambda: pipeline()[1] == 6, 5), pipeline()
        assert wait_for(lambda: len(lines(sink)) >= 12, 20), len(lines(sink))
        assert {int(l[1]) for l in lines(start)[:3]} == set(now), lines(start)
        assert {int(l[2]) for l in lines(sink)} == set(now), lines(sink)

        # the new size survives a jobs worker crash and a reactor crash
        os.kill(now[-1], signal.SIGKILL)
        assert wait_for(lambda: len(jpids()) == 3 and now[-1] not in jpids(), 10), jpids()
        big = [r for r in s.reactors()
               if len([p for p in children(r) if "jobs_worker" in cmdline(p)]) == 2]
        assert len(big) == 1, per_reactor_jobs()
        os.kill(big[0], signal.SIGKILL)
        assert wait_for(lambda: big[0] not in s.reactors() and len(s.reactors()) == 2
                        and per_reactor_jobs() == [1, 2], 15), per_reactor_jobs()
        assert wait_for(lambda: s.output().count("jobs pool ready") == 3, 15)
        assert wait_for(lambda: len(jpids()) == 3, 10), jpids()

        # a removal while every worker is busy: the busy worker finishes its job and goes; the
        # broker stops filling its share at once, so 2 + 2 in flight while jobs still wait
        three = jpids()
        started = len(lines(start))
        ids += run("b", 18)
        assert wait_for(lambda: len(lines(start)) >= started + 3, 5)
        assert c.call("informer.RemoveWorker", "jobs", flags=0x08) is False
        after = jpids()
        assert len(after) == 2 and set(after) < set(three), (three, after)
        gone = (set(three) - set(after)).pop()
        assert wait_for(lambda: not cmdline(gone), 5)
        assert wait_for(lambda: pipeline()[0] > 0 and pipeline()[1] == 4, 5), pipeline()
        assert wait_for(lambda: len(lines(sink)) >= len(ids), 20), len(lines(sink))
        time.sleep(0.3)
        assert sorted(l[0] for l in lines(sink)) == sorted(ids)  # each exactly once
        assert per_reactor_jobs() == [1, 1], per_reactor_jobs()
        try:
            c.call("informer.RemoveWorker", "jobs", flags=0x08)
            raise AssertionError("removed the last jobs worker of a reactor")
        except RPCError as e:
            assert "every reactor has only one" in str(e), e

        # a reload builds the generation from the config again: 2 jobs workers
        assert c.call("informer.AddWorker", "jobs", flags=0x08) is False
        assert len(jpids()) == 3
        s.proc.send_signal(signal.SIGHUP)
        assert wait_for(lambda: "reload complete" in s.output(), 20), s.output()[-2000:]
        assert wait_for(lambda: len(jpids()) == 2 and per_reactor_jobs() == [1, 1], 15), jpids()
        assert s.proc.poll() is None
        c.close()


test_jobs_pool_add_and_remove_while_jobs_run.timeout = 90


def test_refused_scales_leave_the_count_a_respawn_uses():
    """More AddWorker calls at once than a reactor takes (16 in flight): the refused ones fail
    with the reactor's reason, and the count the master keeps for a respawn stays true, so a
    reactor crash brings back exactly the workers it had."""
    s = rpc_server(workers=1, reactors=1)
    with s:
        conns = [Conn(s.rpc, timeout=60) for _ in range(24)]
        for i, c in enumerate(conns):  # all sent before any is answered
            c.send(request(i + 1, "informer.AddWorker", b'"http"', 0x08))
        refused = 0
        for c in conns:
            f, opts, m, body = c.recv_frame()
            if f & 0x40:
                assert b"too many scale requests at once" in body, body
                refused += 1
        assert refused > 0, "no call was refused: the reactor took 24 at once"
        c = conns[0]
        want = 1 + len(conns) - refused
        assert wait_for(lambda: len(pids(c)) == want, 30), (len(pids(c)), want)
        reactor = s.reactors()[0]
        os.kill(reactor, signal.SIGKILL)
        assert wait_for(lambda: [r for r in s.reactors() if r != reactor], 15)
        assert wait_for(lambda: len(pids(c)) == want, 30), (len(pids(c)), want)
        time.sleep(0.5)
        assert len(pids(c)) == want and len(s.php_workers()) == want, (pids(c), want)
        for x in conns:
            x.close()


test_refused_scales_leave_the_count_a_respawn_uses.timeout = 90
