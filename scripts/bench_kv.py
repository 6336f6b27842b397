#!/usr/bin/env python3
"""kv benchmark (not a test): Set+MGet round trips per second from 2 PHP processes.

  RPC memory   PHP -> forkline master (kv memory driver)             Forkline\\KV\\Cache
  RPC redis    PHP -> forkline master -> redis-server (kv redis)     Forkline\\KV\\Cache
  direct       PHP -> redis-server with phpredis (php8.2-redis)       Redis::set + Redis::mget

Both clients serialize() values (phpredis with SERIALIZER_PHP), one op = set(k, v) then
getMultiple([k]) / mget([k]): two synchronous round trips. The 2 PHP processes run at once; the
sum of their ops over the run is reported. The cost ratio is direct ops/s / RPC ops/s (the bar:
the RPC path costs no more than 1.5x the direct one).

Each round runs the three paths one after the other (so load from others hits all of them alike);
the median over rounds is shown. The RPC paths run twice: with the master's busy_poll at its
default (100us) and off. Beside wall-clock ops/s, the CPU time per op (utime+stime of the
PHP processes, the forkline master and redis-server over the run) is shown: it is much less
sensitive to a shared box than wall time.

  python3 scripts/bench_kv.py [--seconds 5] [--procs 2] [--value-size 100] [--rounds 3]
                              [--rpc tcp|unix] [--redis tcp|unix] [--http]

--http measures instead what busy_poll must not cost: req/s of an HTTP app (2 reactors, 2 PHP
workers each) making one kv get over RPC per request, wrk -c64, busy_poll 100us against off.

redis-server and forkline are started here on free 127.0.0.1 ports and stopped by pid.
"""
import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))
from fl import Server, free_port, wait_for  # noqa: E402

PHP = r'''<?php
declare(strict_types=1);
require getenv('FL_ROOT') . '/php/src/autoload.php';
[$_, $mode, $target, $seconds, $size, $id] = $argv;
$value = str_repeat('v', (int) $size);
$key = "bench:$id";
if ($mode === 'direct') {
    $r = new Redis();
    is_numeric($target) ? $r->connect('127.0.0.1', (int) $target) : $r->connect($target);
    $r->setOption(Redis::OPT_SERIALIZER, Redis::SERIALIZER_PHP);
    $op = function (int $i) use ($r, $key, $value): bool {
        $r->set($key, [$i, $value]);
        return $r->mget([$key])[0][0] === $i;
    };
} else {
    $c = new Forkline\KV\Cache(Forkline\RPC::create($target), $mode);
    $op = function (int $i) use ($c, $key, $value): bool {
        $c->set($key, [$i, $value]);
        return $c->getMultiple([$key])[$key][0] === $i;
    };
}
for ($i = 0; $i < 200; $i++) { $op($i); }          // warm up
$start = microtime(true);
$end = $start + (float) $seconds;
$n = 0;
$bad = 0;
while (($now = microtime(true)) < $end) {
    for ($j = 0; $j < 50; $j++, $n++) {
        $bad += $op($n) ? 0 : 1;
    }
}
printf("%d %.6f %d\n", $n, microtime(true) - $start, $bad);
'''


class Redis:
    def __init__(self):
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="fl-bench-redis-")
        self.sock = os.path.join(self.dir, "redis.sock")
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.dir, "--unixsocket", self.sock],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: subprocess.run(["redis-cli", "-p", str(self.port), "PING"],
                                        capture_output=True, text=True).stdout.strip() == "PONG",
                 timeout=10)

    def stop(self):
        self.proc.kill()
        self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def cpu_seconds(pid):
    """utime+stime of a live process from /proc/PID/stat."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run(mode, target, args, script, master, redis):
    """ops/s summed over the PHP processes, and CPU us per op: (php, master, redis-server)."""
    env = dict(os.environ, FL_ROOT=ROOT)
    m0, r0 = cpu_seconds(master), cpu_seconds(redis)
    # the PHP processes are the only children reaped during the run (start-up and warm-up are
    # included: a small overcount)
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    procs = [subprocess.Popen(["php", script, mode, str(target), str(args.seconds),
                               str(args.value_size), str(i)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for i in range(args.procs)]
    total = 0.0
    ops = 0
    for p in procs:
        out, err = p.communicate(timeout=args.seconds + 60)
        if p.returncode != 0:
            raise SystemExit("php %s failed: %s%s" % (mode, out, err))
        n, took, bad = out.split()
        if int(bad):
            raise SystemExit("php %s: %s wrong answers" % (mode, bad))
        total += int(n) / float(took)
        ops += int(n)
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    m1, r1 = cpu_seconds(master), cpu_seconds(redis)
    php_cpu = ru1.ru_utime + ru1.ru_stime - ru0.ru_utime - ru0.ru_stime
    return total, tuple(x * 1e6 / ops for x in (php_cpu, m1 - m0, r1 - r0))


HTTP_WORKER = r"""<?php
declare(strict_types=1);
require getenv('FL_ROOT') . '/php/src/autoload.php';
$http = Forkline\HttpWorker::create();
$c = new Forkline\KV\Cache(Forkline\RPC::create(getenv('FL_BENCH_RPC')), getenv('FL_BENCH_KV'));
$c->set('k', 'v');
while ($req = $http->waitRequest()) {
    $http->respond(200, (string) $c->get('k'), ['Content-Type' => 'text/plain']);
}
"""


def kv_yaml(rpc, raddr, busy_poll):
    return ("busy_poll: %s\nrpc:\n  listen: %s\n"
            "kv:\n  mem:\n    driver: memory\n    config: {}\n"
            "  red:\n    driver: redis\n    config:\n      addrs: [\"%s\"]\n"
            % (busy_poll, rpc, raddr))


def rpc_address(kind, rdir, name):
    return ("tcp://127.0.0.1:%d" % free_port() if kind == "tcp"
            else "unix://" + os.path.join(rdir, name + ".sock"))


def wrk(port, seconds, conns):
    out = subprocess.run(["wrk", "-t2", "-c%d" % conns, "-d%ds" % seconds,
                          "http://127.0.0.1:%d/" % port],
                         capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        if line.startswith("Requests/sec:"):
            return float(line.split()[1])
    raise SystemExit("wrk: no Requests/sec in:\n" + out)


def http_mode(args, redis, raddr, rdir):
    """The governor's reason to exist: an HTTP app making one kv call per request saturates the
    CPUs, and a master that polled then would take a core from the PHP workers."""
    if not shutil.which("wrk"):
        raise SystemExit("wrk is missing: apt-get install wrk")
    res = {}
    for bp in (args.busy_poll, "off"):
        for storage in ("mem", "red"):
            res[(bp, storage)] = []
    for _ in range(args.rounds):
        for bp in (args.busy_poll, "off"):
            for storage in ("mem", "red"):
                rpc = rpc_address(args.rpc, rdir, "http-%s-%s" % (bp, storage))
                srv = Server(workers=2, reactors=2, extra=kv_yaml(rpc, raddr, bp))
                script = os.path.join(srv.dir, "worker.php")
                with open(script, "w") as f:
                    f.write(HTTP_WORKER)
                with open(srv.config) as f:
                    conf = f.read()
                with open(srv.config, "w") as f:
                    f.write(conf.replace("php %s" % os.path.join(ROOT, "php", "app", "worker.php"),
                                         "php %s" % script))
                os.environ.update(FL_ROOT=ROOT, FL_BENCH_RPC=rpc, FL_BENCH_KV=storage)
                with srv:
                    wrk(srv.port, 1, 64)  # warm up
                    m0 = cpu_seconds(srv.proc.pid)
                    rps = wrk(srv.port, int(args.seconds), 64)
                    res[(bp, storage)].append((rps, cpu_seconds(srv.proc.pid) - m0))
    print("HTTP app, one kv get over RPC per request, wrk -c64 %ds, 2 reactors x 2 workers, "
          "median of %d round(s); %d CPUs" % (int(args.seconds), args.rounds, os.cpu_count()))
    for storage, name in (("mem", "memory"), ("red", "redis")):
        on = statistics.median(r[0] for r in res[(args.busy_poll, storage)])
        off = statistics.median(r[0] for r in res[("off", storage)])
        mc_on = statistics.median(r[1] for r in res[(args.busy_poll, storage)])
        mc_off = statistics.median(r[1] for r in res[("off", storage)])
        print("kv %-6s busy_poll %s %8.0f req/s (master CPU %.2f s), off %8.0f req/s "
              "(master CPU %.2f s): on/off %.2f  (by round: %s / %s)"
              % (name, args.busy_poll, on, mc_on, off, mc_off, on / off,
                 " ".join("%.0f" % r[0] for r in res[(args.busy_poll, storage)]),
                 " ".join("%.0f" % r[0] for r in res[("off", storage)])))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=5)
    ap.add_argument("--procs", type=int, default=2)
    ap.add_argument("--value-size", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--rpc", choices=("tcp", "unix"), default="tcp",
                    help="rpc.listen transport the PHP clients use")
    ap.add_argument("--redis", choices=("tcp", "unix"), default="tcp",
                    help="how both the master and phpredis reach redis-server")
    ap.add_argument("--busy-poll", default="100us",
                    help="the master's busy_poll for the RPC paths (the others: off)")
    ap.add_argument("--http", action="store_true",
                    help="instead: req/s of an HTTP app making one kv call per request, "
                         "busy_poll on and off")
    args = ap.parse_args()
    if subprocess.run(["php", "-r", "exit(extension_loaded('redis') ? 0 : 1);"]).returncode:
        raise SystemExit("phpredis is missing: apt-get install php8.2-redis")
    if not os.path.exists(os.path.join(ROOT, "forkline")):
        raise SystemExit("build forkline first: make")

    load = os.getloadavg()
    redis = Redis()
    rdir = tempfile.mkdtemp(prefix="fl-bench-rpc-")
    raddr = "127.0.0.1:%d" % redis.port if args.redis == "tcp" else "unix://" + redis.sock
    if args.http:
        try:
            http_mode(args, redis, raddr, rdir)
        finally:
            redis.stop()
            shutil.rmtree(rdir, ignore_errors=True)
        return
    rpc_on = rpc_address(args.rpc, rdir, "on")
    rpc_off = rpc_address(args.rpc, rdir, "off")
    srv = Server(workers=1, reactors=1, extra=kv_yaml(rpc_on, raddr, args.busy_poll))
    srv_off = Server(workers=1, reactors=1, extra=kv_yaml(rpc_off, raddr, "off"))
    script = os.path.join(srv.dir, "bench_kv.php")
    with open(script, "w") as f:
        f.write(PHP)
    direct = redis.port if args.redis == "tcp" else redis.sock
    paths = (("direct phpredis", "direct", direct, srv), ("RPC memory", "mem", rpc_on, srv),
             ("RPC redis", "red", rpc_on, srv),
             ("memory, no poll", "mem", rpc_off, srv_off),
             ("redis, no poll", "red", rpc_off, srv_off))
    results = {p[0]: [] for p in paths}
    try:
        with srv, srv_off:
            for _ in range(args.rounds):
                for name, mode, target, server in paths:
                    results[name].append(run(mode, target, args, script, server.proc.pid,
                                             redis.proc.pid))
    finally:
        redis.stop()
        shutil.rmtree(rdir, ignore_errors=True)

    print("kv Set+MGet (2 round trips per op), %d PHP processes, %g s per run, value %d B, "
          "rpc over %s, redis over %s, median of %d round(s); %d CPUs, load before: %s"
          % (args.procs, args.seconds, args.value_size, args.rpc, args.redis, args.rounds,
             os.cpu_count(), " ".join("%.2f" % x for x in load)))
    print("RPC paths: the master with busy_poll %s (default 100us); \"no poll\": busy_poll off"
          % args.busy_poll)
    print("%-16s %8s %10s  %6s %6s %6s   %6s  %s" % ("path", "ops/s", "wall us/op", "CPU us/op: php",
                                                    "master", "redis", "total", "(ops/s by round)"))
    med = {}
    for name, runs in results.items():
        ops = statistics.median(r[0] for r in runs)
        cpu = [statistics.median(r[1][i] for r in runs) for i in range(3)]
        med[name] = (ops, sum(cpu))
        print("%-16s %8.0f %10.1f  %14.1f %6.1f %6.1f = %6.1f  (%s)"
              % (name, ops, args.procs * 1e6 / ops, cpu[0], cpu[1], cpu[2], sum(cpu),
                 " ".join("%.0f" % r[0] for r in runs)))
    d_ops, d_cpu = med["direct phpredis"]
    for name in ("RPC memory", "RPC redis", "memory, no poll", "redis, no poll"):
        ratio = d_ops / med[name][0]
        print("cost %-15s %.2fx the direct path in wall time (bar 1.5x: %s), %.2fx in CPU per op"
              % (name, ratio, "met" if ratio <= 1.5 else "NOT met", med[name][1] / d_cpu))


if __name__ == "__main__":
    main()
