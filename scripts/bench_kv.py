#!/usr/bin/env python3
"""kv benchmark (not a test): Set+MGet round trips per second from 2 PHP processes.

  RPC memory   PHP -> forkline master (kv memory driver)             Forkline\\KV\\Cache
  RPC redis    PHP -> forkline master -> redis-server (kv redis)     Forkline\\KV\\Cache
  direct       PHP -> redis-server with phpredis (php8.2-redis)       Redis::set + Redis::mget

Both clients serialize() values (phpredis with SERIALIZER_PHP), one op = set(k, v) then
getMultiple([k]) / mget([k]): two synchronous round trips. The 2 PHP processes run at once; the
sum of their ops over the run is reported. The cost ratio is direct ops/s / RPC ops/s (the bar:
the RPC path costs no more than 1.5x the direct one).

  python3 scripts/bench_kv.py [--seconds 5] [--procs 2] [--value-size 100] [--rounds 1]

redis-server and forkline are started here on free 127.0.0.1 ports and stopped by pid.
"""
import argparse
import os
import shutil
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
    $r->connect('127.0.0.1', (int) $target);
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
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.dir],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: subprocess.run(["redis-cli", "-p", str(self.port), "PING"],
                                        capture_output=True, text=True).stdout.strip() == "PONG",
                 timeout=10)

    def stop(self):
        self.proc.kill()
        self.proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


def run(mode, target, args, script):
    env = dict(os.environ, FL_ROOT=ROOT)
    procs = [subprocess.Popen(["php", script, mode, str(target), str(args.seconds),
                               str(args.value_size), str(i)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
             for i in range(args.procs)]
    total = 0.0
    for p in procs:
        out, err = p.communicate(timeout=args.seconds + 60)
        if p.returncode != 0:
            raise SystemExit("php %s failed: %s%s" % (mode, out, err))
        n, took, bad = out.split()
        if int(bad):
            raise SystemExit("php %s: %s wrong answers" % (mode, bad))
        total += int(n) / float(took)
    return total


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=5)
    ap.add_argument("--procs", type=int, default=2)
    ap.add_argument("--value-size", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=1)
    args = ap.parse_args()
    if subprocess.run(["php", "-r", "exit(extension_loaded('redis') ? 0 : 1);"]).returncode:
        raise SystemExit("phpredis is missing: apt-get install php8.2-redis")
    if not os.path.exists(os.path.join(ROOT, "forkline")):
        raise SystemExit("build forkline first: make")

    load = os.getloadavg()
    redis = Redis()
    rpc = "tcp://127.0.0.1:%d" % free_port()
    kv = ("rpc:\n  listen: %s\n"
          "kv:\n  mem:\n    driver: memory\n    config: {}\n"
          "  red:\n    driver: redis\n    config:\n      addrs: [\"127.0.0.1:%d\"]\n"
          % (rpc, redis.port))
    srv = Server(workers=1, reactors=1, extra=kv)
    script = os.path.join(srv.dir, "bench_kv.php")
    with open(script, "w") as f:
        f.write(PHP)
    results = {"RPC memory": [], "RPC redis": [], "direct phpredis": []}
    try:
        with srv:
            for _ in range(args.rounds):
                results["direct phpredis"].append(run("direct", redis.port, args, script))
                results["RPC memory"].append(run("mem", rpc, args, script))
                results["RPC redis"].append(run("red", rpc, args, script))
    finally:
        redis.stop()

    best = {k: max(v) for k, v in results.items()}
    print("kv Set+MGet (2 round trips per op), %d PHP processes, %.0f s per run, value %d B, "
          "%d round(s), best shown; %d CPUs, load before: %s"
          % (args.procs, args.seconds, args.value_size, args.rounds, os.cpu_count(),
             " ".join("%.2f" % x for x in load)))
    print("%-18s %12s %14s" % ("path", "ops/s", "us per op"))
    for k, v in best.items():
        print("%-18s %12.0f %14.1f" % (k, v, args.procs * 1e6 / v))
    d = best["direct phpredis"]
    for k in ("RPC memory", "RPC redis"):
        ratio = d / best[k]
        print("cost %-13s %.2fx the direct path (bar 1.5x: %s)"
              % (k, ratio, "met" if ratio <= 1.5 else "NOT met"))


if __name__ == "__main__":
    main()
