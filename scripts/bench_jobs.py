#!/usr/bin/env python3
"""Jobs benchmark (not a test): jobs per second through N PHP workers that ack at once.

  forkline redis   RPC PushBatch -> redis stream; the master reads it (XREADGROUP) and pushes
                   each job to a PHP worker of a jobs pool over its relay (Forkline\\Jobs\\Consumer)
  forkline memory  the same with the memory driver (no broker)
  BRPOP            the traditional model: N php-cli processes, each with its own phpredis
                   (php8.2-redis) connection, looping on BRPOP (at-most-once: a worker that dies
                   loses its job; forkline's redis driver is at-least-once)
  BRPOPLPUSH+LREM  the same loop made at-least-once the usual way (the job waits in a list of
                   the worker's until it is acked with LREM): for context

For each model the queue is filled first (forkline: pipeline paused, then resumed; BRPOP: the
workers wait on a start list), then the clock runs until the queue is empty and every job is
done. Each job's payload is the same small JSON object, decoded by the worker. Broker connections
are counted with CLIENT LIST while the workers run.

  python3 scripts/bench_jobs.py [--jobs 50000] [--workers 2,4]

redis-server and forkline are started here on free 127.0.0.1 ports and stopped by pid.
"""
import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
from fl import Server, free_port, wait_for  # noqa: E402
from test_jobs import job, push_batch, stats  # noqa: E402
from test_jobs_redis import RedisServer, Resp, fl_clients  # noqa: E402
from test_services import Conn, pb_bytes  # noqa: E402

WORKER = os.path.join(ROOT, "tests", "php", "jobs_worker.php")
PAYLOAD = json.dumps({"noop": True})

BRPOP = r'''<?php
[$_, $port, $queue, $mode] = $argv;
$r = new Redis();
$r->connect('127.0.0.1', (int) $port);
$r->brPop(['bench:go'], 0);                       // wait for the start signal
$n = 0;
$mine = $queue . ':processing:' . getmypid();
while (true) {
    if ($mode === 'reliable') {                   // at-least-once: the job waits in a list of
        $v = $r->brpoplpush($queue, $mine, 1);    // this worker's until its ack (LREM)
        $v = $v === false ? false : [$queue, $v];
    } else {
        $v = $r->brPop([$queue], 1);
    }
    if (!$v) {
        if ($r->exists('bench:stop')) break;
        continue;
    }
    $job = json_decode($v[1], true);              // the same work as the forkline worker
    if (isset($job['noop'])) { $n++; }            // ack at once: nothing else to do
    if ($mode === 'reliable') {
        $r->lRem($mine, $v[1], 1);
    }
}
echo $n, "\n";
'''


def fill_list(r, key, n):
    import socket
    with socket.create_connection(("127.0.0.1", r.port)) as s:
        c = Resp(s)
        for i in range(0, n, 1000):
            c.call("RPUSH", key, *[PAYLOAD] * min(1000, n - i))


def run_forkline(r, driver, workers, n, tmp, busy_poll=None):
    listen = "tcp://127.0.0.1:%d" % free_port()
    cfg = "      driver: %s\n      config:\n        prefetch: %d\n" % (driver, 256 if driver ==
                                                                       "redis" else 100000)
    if driver == "redis":
        cfg += "        addrs: [\"127.0.0.1:%d\"]\n        stream: bench:%s:%d\n" % (
            r.port, driver, workers)
    extra = (("busy_poll: %s\n" % busy_poll if busy_poll else "") + "logs:\n  level: info\n"
             "rpc:\n  listen: %s\n"
             "jobs:\n  consume: []\n  pool:\n    num_workers: %d\n    command: \"php %s\"\n"
             "  pipelines:\n    bench:\n%s" % (listen, workers, WORKER, cfg))
    reactors = min(2, workers)
    s = Server(workers=reactors, reactors=reactors, extra=extra)
    with s:
        c = Conn(listen, timeout=60)
        assert wait_for(lambda: sum(w["status"] == 1 for w in c.call(
            "informer.Workers", "jobs", flags=0x08)["workers"]) == workers, timeout=30)
        for i in range(0, n, 1000):
            push_batch(c, [job("bench", {"noop": True}, id="b%d" % k)
                           for k in range(i, min(n, i + 1000))])
        conns = len(fl_clients(r)) if driver == "redis" else 0
        t0 = time.time()
        c.call("jobs.Resume", pb_bytes(1, "bench"))

        def drained():
            st = stats(c)["bench"]
            return st.get(4, 0) + st.get(5, 0) + st.get(6, 0) == 0
        ok = wait_for(drained, timeout=600, step=0.01)
        took = time.time() - t0
        assert ok, "forkline %s did not drain" % driver
        if driver == "redis":
            xlen = r.cmd("XLEN", "bench:%s:%d" % (driver, workers))
            assert xlen == 0, xlen
    return n / took, conns


def run_brpop(r, workers, n, tmp, mode="brpop"):
    script = os.path.join(tmp, "brpop.php")
    with open(script, "w") as f:
        f.write(BRPOP)
    queue = "bench:%s:%d" % (mode, workers)
    r.cmd("DEL", "bench:go", "bench:stop", queue)
    procs = [subprocess.Popen(["php", script, str(r.port), queue, mode], stdout=subprocess.PIPE,
                              text=True) for _ in range(workers)]
    try:
        def connected():
            return len([l for l in r.cmd("CLIENT", "LIST").splitlines() if "cmd=brpop" in l])
        assert wait_for(lambda: connected() >= workers, timeout=20), "php workers did not start"
        conns = connected()
        fill_list(r, queue, n)
        import socket
        with socket.create_connection(("127.0.0.1", r.port)) as s:
            mon = Resp(s)
            t0 = time.time()
            mon.call("RPUSH", "bench:go", *["go"] * workers)
            ok = wait_for(lambda: mon.call("LLEN", queue) == 0, timeout=600, step=0.005)
            took = time.time() - t0
        assert ok, "BRPOP workers did not drain"
        r.cmd("SET", "bench:stop", "1")
        done = sum(int(p.communicate(timeout=30)[0] or 0) for p in procs)
        assert done == n, done
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    return n / took, conns


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--jobs", type=int, default=50000)
    ap.add_argument("--workers", default="2,4")
    ap.add_argument("--busy-poll", help="the master's busy_poll (default: forkline's, 100us)")
    a = ap.parse_args()
    if subprocess.run(["php", "-r", "exit(extension_loaded('redis') ? 0 : 1);"]).returncode:
        sys.exit("phpredis is missing: apt-get install php8.2-redis")
    tmp = tempfile.mkdtemp(prefix="fl-bench-jobs-")
    rows = []
    print("jobs per run: %d; cores: %d; each worker acks at once" % (a.jobs, os.cpu_count()))
    with RedisServer() as r:
        r.cmd("CONFIG", "SET", "appendonly", "no")  # the same broker settings for every model
        for w in [int(x) for x in a.workers.split(",")]:
            fr, fc = run_forkline(r, "redis", w, a.jobs, tmp, a.busy_poll)
            fm, _ = run_forkline(r, "memory", w, a.jobs, tmp, a.busy_poll)
            br, bc = run_brpop(r, w, a.jobs, tmp)
            bl, _ = run_brpop(r, w, a.jobs, tmp, "reliable")
            rows.append((w, fr, fc, fm, br, bc, bl))
            print("%d workers: forkline redis %.0f jobs/s (%d connections), memory %.0f jobs/s, "
                  "BRPOP %.0f jobs/s (%d connections), BRPOPLPUSH+LREM %.0f jobs/s"
                  % (w, fr, fc, fm, br, bc, bl), flush=True)
    shutil.rmtree(tmp, ignore_errors=True)
    print()
    print("| PHP workers | forkline redis | forkline memory | php-cli BRPOP | forkline redis / "
          "BRPOP | broker connections: forkline / BRPOP | BRPOPLPUSH+LREM (at-least-once) |")
    print("|---|---|---|---|---|---|---|")
    for w, fr, fc, fm, br, bc, bl in rows:
        print("| %d | %.0f jobs/s | %.0f jobs/s | %.0f jobs/s | %.2fx | %d / %d | %.0f jobs/s |"
              % (w, fr, fm, br, fr / br, fc, bc, bl))


if __name__ == "__main__":
    main()
