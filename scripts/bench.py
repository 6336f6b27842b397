#!/usr/bin/env python3
"""forkline side-by-side benchmark (issue 9). Python 3 standard library only.

    python3 scripts/bench.py            # full: 3 rounds x 4 s per run, writes BENCHMARKS.md
    python3 scripts/bench.py --quick    # 1 round x 3 s, writes build/BENCHMARKS.quick.md
    python3 scripts/bench.py --only callgrind,strace   # one phase or a few: build/BENCHMARKS.partial.md
    make bench  /  make bench QUICK=1  /  make bench BENCH_ARGS="--only rss"

Starts, each on 127.0.0.1 and a free port with its own config in a temp directory (the system
services' configs and ports are never used): forkline with the example app (php/app/worker.php),
nginx + php-fpm (pm static, the same number of PHP processes, OPcache on), apache2 prefork + mod_php,
and nginx `return 200`. wrk runs against each in turn (alternating, every round), c = 8, 64, 256,
keep-alive and `Connection: close`; the table holds the median of the rounds. Then: static files
(if forkline's http.static works), a 1 MB PHP response, a 5 MB POST, RSS idle and after N requests,
instructions and allocator calls per request of a reactor under callgrind, and its system calls
per request under `strace -c`. CPU time per request of each server's front and PHP processes is
read from /proc for every run. The report opens with the issue's bars: met, or missed by how
much. BENCHMARKS.md keeps everything below its notes marker. Every process is stopped by pid.
"""
import argparse
import atexit
import datetime
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
BIN = os.path.join(ROOT, "forkline")
APP = os.path.join(ROOT, "php", "app", "worker.php")
HELLO = b"Hello from forkline\n"
PACKAGES = {  # binary -> Debian package
    "/usr/sbin/nginx": "nginx",
    "/usr/sbin/php-fpm8.2": "php8.2-fpm",
    "/usr/sbin/apache2": "apache2",
    "/usr/lib/apache2/modules/libphp8.2.so": "libapache2-mod-php8.2",
    "/usr/bin/wrk": "wrk",
    "/usr/bin/php8.2": "php8.2-cli",
    "/usr/bin/strace": "strace",  # system calls per request
}
CPU_PHP = "$x = 'forkline';\nfor ($i = 0; $i < 5000; $i++) {\n    $x = md5($x);\n}\n"
NOTES_MARK = "<!-- notes: everything below this line is kept when the harness rewrites the file -->"

procs = []  # every Popen we started, stopped at exit
OUR_SIDS = {os.getsid(0)}  # our session and each server's (every server is a session leader)
# A disturbed run is repeated after a quiet wait, within a total waiting budget so that a run on
# a busy machine still ends (the report says how disturbed the kept runs were).
NOISE = {"max": 0.10, "retries": 3, "wait": 120, "budget": 900, "spent": 0.0, "kept": [], "retried": 0}


def log(*a):
    print(*a, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- setup


def ensure_packages(callgrind):
    need = sorted({pkg for path, pkg in PACKAGES.items() if not os.path.exists(path)})
    if callgrind and not shutil.which("valgrind"):
        need.append("valgrind")
    if not need:
        return
    cmd = ["apt-get", "install", "-y", "--no-install-recommends"] + need
    if os.geteuid() != 0:
        sys.exit("bench: missing packages; run as root or: sudo %s" % " ".join(cmd))
    log("bench: installing", " ".join(need))
    # Keep the packages' own services from starting on port 80 during the install (Debian's
    # invoke-rc.d asks policy-rc.d); only when no policy is in place, and removed afterwards.
    policy = "/usr/sbin/policy-rc.d"
    ours = not os.path.exists(policy)
    if ours:
        with open(policy, "w") as f:
            f.write("#!/bin/sh\n# forkline bench: no service starts during install\nexit 101\n")
        os.chmod(policy, 0o755)
    try:
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        if subprocess.call(cmd, env=env) != 0:
            subprocess.check_call(["apt-get", "update"], env=env)
            subprocess.check_call(cmd, env=env)
    finally:
        if ours:
            os.unlink(policy)


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def write(path, text, mode=0o644):
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, mode)


def sh(cmd):
    try:
        out = subprocess.run(cmd, shell=True, capture_output=True, text=True, timeout=10)
        return (out.stdout + out.stderr).strip()
    except Exception as e:  # noqa
        return "(%s)" % e


# ---------------------------------------------------------------- processes


def start(name, argv, logfile, env=None):
    lf = open(logfile, "ab")
    p = subprocess.Popen(argv, stdout=lf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                         env=env, start_new_session=True)
    p.bench_name = name
    procs.append(p)
    OUR_SIDS.add(p.pid)
    return p


def stop(p, sig=signal.SIGTERM, timeout=15):
    """Graceful stop by pid, then SIGKILL of the process group we created for it."""
    if p.poll() is None:
        try:
            os.kill(p.pid, sig)
            p.wait(timeout)
        except (OSError, subprocess.TimeoutExpired):
            pass
    try:
        os.killpg(p.pid, signal.SIGKILL)  # leftovers (php workers, apache children) by group id
    except OSError:
        pass
    try:
        p.wait(5)
    except subprocess.TimeoutExpired:
        pass
    if p in procs:
        procs.remove(p)


def stop_all():
    for p in list(procs):
        stop(p)


def children(pid):
    out = []
    try:
        for t in os.listdir("/proc/%d/task" % pid):
            with open("/proc/%d/task/%s/children" % (pid, t)) as f:
                out += [int(x) for x in f.read().split()]
    except OSError:
        pass
    return out


def cmdline(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return f.read().replace(b"\0", b" ").decode("utf-8", "replace").strip()
    except OSError:
        return ""


def mem_kb(pid):
    """(VmRSS, Pss) in kB."""
    rss = pss = 0
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1])
        with open("/proc/%d/smaps_rollup" % pid) as f:
            for line in f:
                if line.startswith("Pss:"):
                    pss = int(line.split()[1])
    except OSError:
        pass
    return rss, pss


def http_get(port, path="/", timeout=2.0):
    """(status, body) over one Connection: close request; (0, b"") on failure."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
            s.sendall(("GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n" % path).encode())
            data = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
    except OSError:
        return 0, b""
    head, _, body = data.partition(b"\r\n\r\n")
    try:
        status = int(head.split(b" ", 2)[1])
    except (IndexError, ValueError):
        return 0, b""
    if b"transfer-encoding: chunked" in head.lower():
        body = dechunk(body)
    return status, body


def dechunk(b):
    out, pos = b"", 0
    while True:
        end = b.find(b"\r\n", pos)
        if end < 0:
            return out
        n = int(b[pos:end].split(b";")[0], 16)
        if n == 0:
            return out
        out += b[end + 2:end + 2 + n]
        pos = end + 4 + n


def wait_http(port, proc, what, path="/", timeout=30.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError("%s exited with %s (see its log)" % (what, proc.returncode))
        st, body = http_get(port, path)
        if st == 200:
            return body
        time.sleep(0.1)
    raise RuntimeError("%s did not answer 200 on %s within %ss" % (what, path, timeout))


# ---------------------------------------------------------------- servers


class Env:
    """The temp directory with every config, document root and log."""

    def __init__(self, workers):
        self.dir = tempfile.mkdtemp(prefix="fl-bench-")
        os.chmod(self.dir, 0o755)  # www-data (fpm, apache children) reads the scripts
        self.workers = workers
        self.www = os.path.join(self.dir, "www")
        self.static = os.path.join(self.dir, "static")
        os.makedirs(self.www)
        os.makedirs(self.static)
        for d in (self.www, self.static):
            os.chmod(d, 0o755)
        hello = "<?php\nheader('Content-Type: text/plain');\necho \"Hello from forkline\\n\";\n"
        write(os.path.join(self.www, "hello.php"), hello)
        write(os.path.join(self.www, "big.php"),
              "<?php\nheader('Content-Type: application/octet-stream');\necho str_repeat('x', 1048576);\n")
        write(os.path.join(self.www, "post.php"),
              "<?php\nheader('Content-Type: text/plain');\necho strlen(file_get_contents('php://input')), \"\\n\";\n")
        # ~0.5 ms of PHP CPU per request, a stand-in for a framework's work (same loop everywhere)
        write(os.path.join(self.www, "cpu.php"),
              "<?php\nheader('Content-Type: text/plain');\n" + CPU_PHP + "echo $x, \"\\n\";\n")
        write(os.path.join(self.www, "opcache.php"),
              "<?php\n$s = function_exists('opcache_get_status') ? opcache_get_status(false) : false;\n"
              "echo ($s && $s['opcache_enabled']) ? 'on' : 'off';\n")
        with open(os.path.join(self.static, "1k.bin"), "wb") as f:
            f.write(bytes(i % 251 for i in range(1024)))
        with open(os.path.join(self.static, "1m.bin"), "wb") as f:
            f.write(bytes(i % 251 for i in range(1 << 20)))
        for fn in os.listdir(self.static):
            os.chmod(os.path.join(self.static, fn), 0o644)
        # forkline's worker for the 1 MB response and the POST (the example app has neither route;
        # the hello rows use the example app itself).
        write(os.path.join(self.dir, "flworker.php"), """<?php
declare(strict_types=1);
require '%s/php/src/autoload.php';
$http = Forkline\\HttpWorker::create();
while (($req = $http->waitRequest()) !== null) {
    switch ($req->path()) {
        case '/big':
            $http->respond(200, str_repeat('x', 1048576), ['Content-Type' => 'application/octet-stream']);
            break;
        case '/post':
            $http->respond(200, strlen($req->body) . "\\n", ['Content-Type' => 'text/plain']);
            break;
        case '/cpu':
%s            $http->respond(200, $x . "\\n", ['Content-Type' => 'text/plain']);
            break;
        default:
            $http->respond(200, "Hello from forkline\\n", ['Content-Type' => 'text/plain']);
    }
}
""" % (ROOT, "".join("            " + l + "\n" for l in CPU_PHP.splitlines())))
        write(os.path.join(self.dir, "post.lua"),
              'wrk.method = "POST"\nwrk.body = string.rep("a", 5 * 1024 * 1024)\n'
              'wrk.headers["Content-Type"] = "application/octet-stream"\n')

    def path(self, *p):
        return os.path.join(self.dir, *p)


class Forkline:
    """One forkline master. label: table name; extra: config text; overrides: -o flags."""

    def __init__(self, env, label, reactors="auto", workers=None, worker=APP, overrides=(),
                 extra="", wrapper=()):
        self.env, self.label, self.port = env, label, free_port()
        self.workers = workers or env.workers
        self.cfg = env.path("forkline-%s.yaml" % re.sub(r"\W+", "-", label))
        write(self.cfg, (
            'version: "3"\n'
            "reactors: %s\n"
            "server:\n  command: \"php -d opcache.enable_cli=1 %s\"\n"
            "logs:\n  mode: production\n  level: error\n"
            "http:\n  address: 127.0.0.1:%d\n  pool:\n    num_workers: %d\n    allocate_timeout: 60s\n"
            "%s" % (reactors, worker, self.port, self.workers, extra)))
        self.overrides = list(overrides)
        self.wrapper = list(wrapper)
        self.proc = None

    def start(self, timeout=30):
        argv = self.wrapper + [BIN, "serve", "-c", self.cfg]
        for o in self.overrides:
            argv += ["-o", o]
        self.proc = start(self.label, argv, self.cfg + ".log")
        wait_http(self.port, self.proc, self.label, timeout=timeout)
        return self

    def stop(self):
        if self.proc:
            stop(self.proc)

    def reactors(self):
        return children(self.proc.pid)  # the master's children are its reactors

    def php(self):
        return [c for r in self.reactors() for c in children(r)]


class NginxFpm:
    """One nginx (fastcgi to php-fpm, `return 200`, static) + one php-fpm, pm static."""

    def __init__(self, env):
        self.env = env
        self.port_fpm, self.port_200, self.port_static = free_port(), free_port(), free_port()
        d = env.dir
        sock = env.path("fpm.sock")
        tmp = env.path("nginx-tmp")
        os.makedirs(tmp)
        fastcgi = "".join("    fastcgi_param %s %s;\n" % kv for kv in [
            ("QUERY_STRING", "$query_string"), ("REQUEST_METHOD", "$request_method"),
            ("CONTENT_TYPE", "$content_type"), ("CONTENT_LENGTH", "$content_length"),
            ("REQUEST_URI", "$request_uri"), ("DOCUMENT_URI", "$document_uri"),
            ("DOCUMENT_ROOT", "$document_root"), ("SERVER_PROTOCOL", "$server_protocol"),
            ("REQUEST_SCHEME", "$scheme"), ("GATEWAY_INTERFACE", "CGI/1.1"),
            ("SERVER_SOFTWARE", "nginx/$nginx_version"), ("REMOTE_ADDR", "$remote_addr"),
            ("REMOTE_PORT", "$remote_port"), ("SERVER_ADDR", "$server_addr"),
            ("SERVER_PORT", "$server_port"), ("SERVER_NAME", "$server_name")])
        loc = lambda uri, script: (  # noqa: E731
            "  location = %s {\n    fastcgi_pass unix:%s;\n%s    fastcgi_param SCRIPT_FILENAME %s/%s;\n"
            "    fastcgi_param SCRIPT_NAME /%s;\n  }\n" % (uri, sock, fastcgi, env.www, script, script))
        write(env.path("nginx.conf"), f"""daemon off;
worker_processes auto;
worker_rlimit_nofile 65536;
user www-data;
pid {d}/nginx.pid;
error_log {d}/nginx-error.log warn;
events {{ worker_connections 8192; }}
http {{
  access_log off;
  client_body_temp_path {tmp}/body;
  fastcgi_temp_path {tmp}/fastcgi;
  proxy_temp_path {tmp}/proxy;
  uwsgi_temp_path {tmp}/uwsgi;
  scgi_temp_path {tmp}/scgi;
  keepalive_requests 10000000;
  keepalive_timeout 65;
  sendfile on;
  tcp_nopush on;
  client_max_body_size 16m;
  default_type application/octet-stream;
  server {{
  listen 127.0.0.1:{self.port_fpm} backlog=4096;
  root {env.www};
{loc("/", "hello.php")}{loc("/big", "big.php")}{loc("/post", "post.php")}{loc("/cpu", "cpu.php")}{loc("/opcache", "opcache.php")}  }}
  server {{
    listen 127.0.0.1:{self.port_200} backlog=4096;
    location / {{ default_type text/plain; return 200 "Hello from forkline\\n"; }}
  }}
  server {{
    listen 127.0.0.1:{self.port_static} backlog=4096;
    root {env.static};
  }}
}}
""")
        write(env.path("php-fpm.conf"), f"""[global]
pid = {d}/php-fpm.pid
error_log = {d}/php-fpm-error.log
daemonize = no
[bench]
user = www-data
group = www-data
listen = {sock}
listen.owner = www-data
listen.group = www-data
listen.mode = 0660
listen.backlog = 4096
pm = static
pm.max_children = {env.workers}
pm.max_requests = 0
""")
        self.fpm = self.nginx = None

    def start(self):
        self.fpm = start("php-fpm", ["/usr/sbin/php-fpm8.2", "-F", "-y", self.env.path("php-fpm.conf"),
                                     "-p", self.env.dir], self.env.path("php-fpm.log"))
        deadline = time.time() + 15
        while not os.path.exists(self.env.path("fpm.sock")) and time.time() < deadline:
            time.sleep(0.05)
        self.nginx = start("nginx", ["/usr/sbin/nginx", "-e", self.env.path("nginx-error.log"),
                                     "-p", self.env.dir, "-c", self.env.path("nginx.conf")],
                           self.env.path("nginx.log"))
        wait_http(self.port_200, self.nginx, "nginx")
        wait_http(self.port_fpm, self.fpm, "nginx+php-fpm")
        return self

    def stop(self):
        for p in (self.nginx, self.fpm):
            if p:
                stop(p, signal.SIGQUIT)


class Apache:
    """apache2, mpm prefork + mod_php, every process started up front (like pm static)."""

    def __init__(self, env, procs=256):
        self.env, self.port, self.procs = env, free_port(), procs
        d, www = env.dir, env.www
        run = env.path("apache-run")
        os.makedirs(run)
        mods = "/usr/lib/apache2/modules"
        write(env.path("apache2.conf"), f"""ServerRoot {d}
ServerName 127.0.0.1
Listen 127.0.0.1:{self.port}
ListenBacklog 4096
PidFile {d}/apache2.pid
ErrorLog {d}/apache2-error.log
LogLevel warn
DefaultRuntimeDir {run}
Mutex file:{run} default
LoadModule mpm_prefork_module {mods}/mod_mpm_prefork.so
LoadModule authz_core_module {mods}/mod_authz_core.so
LoadModule alias_module {mods}/mod_alias.so
LoadModule php_module {mods}/libphp8.2.so
User www-data
Group www-data
StartServers {procs}
MinSpareServers {procs}
MaxSpareServers {procs}
ServerLimit {procs}
MaxRequestWorkers {procs}
MaxConnectionsPerChild 0
KeepAlive On
MaxKeepAliveRequests 0
KeepAliveTimeout 5
DocumentRoot {www}
<Directory />
  AllowOverride None
  Require all denied
</Directory>
<Directory {www}>
  Require all granted
</Directory>
AliasMatch ^/$ {www}/hello.php
Alias /big {www}/big.php
Alias /post {www}/post.php
Alias /cpu {www}/cpu.php
Alias /opcache {www}/opcache.php
<FilesMatch "\\.php$">
  SetHandler application/x-httpd-php
</FilesMatch>
""")
        self.proc = None

    def start(self):
        self.proc = start("apache2", ["/usr/sbin/apache2", "-f", self.env.path("apache2.conf"),
                                      "-DFOREGROUND"], self.env.path("apache2.log"))
        wait_http(self.port, self.proc, "apache2")
        return self

    def stop(self):
        if self.proc:
            stop(self.proc)


# ---------------------------------------------------------------- wrk


def cpu_snapshot():
    """(/proc/stat cpu jiffies, jiffies used by our sessions incl. reaped children)."""
    with open("/proc/stat") as f:
        total = [int(x) for x in f.readline().split()[1:9]]
    ours = 0
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % d) as f:
                st = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(st[3]) in OUR_SIDS:
            ours += int(st[11]) + int(st[12]) + int(st[13]) + int(st[14])
    return total, ours


def foreign_share(a, b):
    """Share of all CPUs that processes outside the benchmark used between two snapshots (user +
    nice + system jiffies not ours; softirq is not charged to anyone, so it is left out)."""
    d = [y - x for x, y in zip(a[0], b[0])]
    busy = d[0] + d[1] + d[2]
    return max(0.0, (busy - (b[1] - a[1])) / float(sum(d) or 1))


def wait_quiet():
    """On a shared machine: wait (bounded) until others leave the CPUs alone for 2 s."""
    t0 = time.time()
    deadline = t0 + min(NOISE["wait"], max(0.0, NOISE["budget"] - NOISE["spent"]))
    try:
        while True:
            a = cpu_snapshot()
            time.sleep(2)
            share = foreign_share(a, cpu_snapshot())
            if share < NOISE["max"] / 2 or time.time() > deadline:
                return share
            log("  (other processes use %.0f %% of the CPUs: waiting)" % (100 * share))
    finally:
        NOISE["spent"] += time.time() - t0


def parse_time(s):
    m = re.match(r"([\d.]+)(us|ms|s|m)$", s)
    if not m:
        return float("nan")
    return float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[m.group(2)]


def wrk(port, path, c, close, seconds, script=None):
    """One wrk run -> dict(rps, p50, p99 in ms, errors, requests)."""
    argv = ["wrk", "-t", str(min(2, c)), "-c", str(c), "-d", "%ds" % seconds, "--timeout", "10s",
            "--latency"]
    if close:
        argv += ["-H", "Connection: close"]
    if script:
        argv += ["-s", script]
    argv.append("http://127.0.0.1:%d%s" % (port, path))
    snap = cpu_snapshot()
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60).stdout
    foreign = foreign_share(snap, cpu_snapshot())
    r = {"rps": 0.0, "p50": float("nan"), "p99": float("nan"), "errors": 0, "requests": 0,
         "cmd": " ".join(a if " " not in a else "'%s'" % a for a in argv), "foreign": foreign}
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if m:
        r["rps"] = float(m.group(1))
    for pct, key in (("50", "p50"), ("99", "p99")):
        m = re.search(r"^\s+%s(?:\.000)?%%\s+(\S+)" % pct, out, re.M)
        if m:
            r[key] = parse_time(m.group(1))
    r["detail"] = {}
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        # wrk counts the server's orderly close after a `Connection: close` response as a read error
        # on some versions; only connect/write/timeout errors and bad statuses are real failures.
        r["errors"] += int(m.group(1)) + int(m.group(3)) + int(m.group(4))
        r["detail"] = {k: int(v) for k, v in zip(("connect", "read", "write", "timeout"), m.groups()) if int(v)}
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if m:
        r["errors"] += int(m.group(1))
        r["detail"]["non-2xx"] = int(m.group(1))
    m = re.search(r"(\d+) requests in", out)
    if m:
        r["requests"] = int(m.group(1))
    return r


def median_of(runs):
    def med(key):
        vals = [x[key] for x in runs if x[key] == x[key]]
        return statistics.median(vals) if vals else float("nan")
    detail = {}
    for x in runs:
        for k, v in x.get("detail", {}).items():
            detail[k] = detail.get(k, 0) + v
    cpu = {}
    for g in sorted({g for x in runs for g in x.get("cpu", {})}):
        cpu[g] = statistics.median([x["cpu"][g] for x in runs if g in x.get("cpu", {})])
    return {"rps": med("rps"), "p50": med("p50"), "p99": med("p99"), "detail": detail,
            "errors": sum(x["errors"] for x in runs), "n": len(runs), "cmd": runs[-1]["cmd"],
            "all": [x["rps"] for x in runs], "cpu": cpu}


# name -> function returning {group: [pids]}: whose CPU time a run of that target is charged to
CPU_GROUPS = {}


def jiffies(pids):
    t = 0
    for p in pids:
        try:
            with open("/proc/%d/stat" % p) as f:
                st = f.read().rsplit(")", 1)[1].split()
            t += int(st[11]) + int(st[12])
        except (OSError, IndexError, ValueError):
            pass
    return t


def wrk_cpu(name, port, path, c, close, seconds, script):
    """wrk() plus the CPU time per request (µs) of the target's process groups and of wrk."""
    groups = CPU_GROUPS[name]() if name in CPU_GROUPS else {}
    before = {g: jiffies(pids) for g, pids in groups.items()}
    t0 = os.times()
    r = wrk(port, path, c, close, seconds, script)
    t1 = os.times()
    n = float(r["requests"] or 1)
    hz = float(os.sysconf("SC_CLK_TCK"))
    r["cpu"] = {g: 1e6 * (jiffies(pids) - before[g]) / hz / n for g, pids in groups.items()}
    r["cpu"]["wrk"] = 1e6 * ((t1.children_user + t1.children_system) -
                             (t0.children_user + t0.children_system)) / n
    return r


def run_matrix(targets, cells, rounds, seconds, pause=0.5):
    """targets: [(name, port, path, script)]; cells: [(c, close)]. Alternates the targets inside
    every cell, every round (rotating who goes first), and returns {(name, c, close): median}."""
    raw = {}
    total = rounds * len(cells) * len(targets)
    done = 0
    for rnd in range(rounds):
        for c, close in cells:
            k = (rnd + cells.index((c, close))) % len(targets)
            for name, port, path, script in targets[k:] + targets[:k]:
                r = wrk_cpu(name, port, path, c, close, seconds, script)
                for _ in range(NOISE["retries"]):
                    if r["foreign"] <= NOISE["max"] or NOISE["spent"] >= NOISE["budget"]:
                        break
                    log("  (run disturbed: other processes used %.0f %% of the CPUs; again)" % (100 * r["foreign"]))
                    NOISE["retried"] += 1
                    wait_quiet()
                    r = wrk_cpu(name, port, path, c, close, seconds, script)
                NOISE["kept"].append(r["foreign"])
                raw.setdefault((name, c, close), []).append(r)
                done += 1
                log("  [%d/%d] round %d %-22s c=%-3d %-10s %9.0f req/s  p50 %7.2f ms  p99 %7.2f ms  "
                    "others %2.0f %%%s" % (done, total, rnd + 1, name, c, "close" if close else "keep-alive",
                                          r["rps"], r["p50"], r["p99"], 100 * r["foreign"],
                                          "  errors %s" % r["detail"] if r["errors"] else ""))
                time.sleep(pause)
    return {k: median_of(v) for k, v in raw.items()}


# ---------------------------------------------------------------- callgrind


def raw_client(port, n, close, path="/"):
    """n sequential GETs; keep-alive on one connection, or one connection each."""
    req = ("GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\n%s\r\n" % (
        path, "Connection: close\r\n" if close else "")).encode()
    s, buf = None, b""
    for _ in range(n):
        if s is None:
            s = socket.create_connection(("127.0.0.1", port), timeout=60)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            buf = b""
        s.sendall(req)
        while True:
            head_end = buf.find(b"\r\n\r\n")
            if head_end >= 0:
                m = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", buf[:head_end + 2])
                need = head_end + 4 + (int(m.group(1)) if m else 0)
                if len(buf) >= need:
                    if not buf.startswith(b"HTTP/1.1 200"):
                        raise RuntimeError("callgrind client: %r" % buf[:80])
                    buf = buf[need:]
                    break
            chunk = s.recv(65536)
            if not chunk:
                raise RuntimeError("callgrind client: connection closed early")
            buf += chunk
        if close:
            s.close()
            s = None
    if s:
        s.close()


# forkline's own sources in a callgrind file:function name, wherever the binary was built
OUR_SRC = re.compile(r"^\S*?/((?:reactor|protocols|relay|lib|master)/[\w.]+\.c:)")

ALLOC_FNS = {"malloc", "calloc", "realloc", "free", "posix_memalign", "aligned_alloc", "mallocx",
             "rallocx", "sdallocx", "je_malloc", "je_calloc", "je_realloc", "je_free",
             "je_sdallocx", "je_mallocx", "je_rallocx"}


def callgrind_calls(path):
    """{(caller, callee): calls} summed over the whole dump (fn=, cfn= and calls= lines; names
    are compressed as "(id) name" on first use and "(id)" after)."""
    names, calls, fn, cfn = {}, {}, None, None

    def name(rest):
        m = re.match(r"\((\d+)\)(?: (.*))?$", rest)
        if not m:
            return rest
        if m.group(2):
            names[m.group(1)] = m.group(2)
        return names.get(m.group(1), rest)
    with open(path, errors="replace") as f:
        for line in f:
            if line.startswith("fn="):
                fn = name(line[3:].strip())
            elif line.startswith("cfn="):
                cfn = name(line[4:].strip())
            elif line.startswith("calls=") and cfn:
                k = (fn, cfn)
                calls[k] = calls.get(k, 0) + int(line[6:].split()[0])
                cfn = None
    return calls


def annotate(path, top, inclusive=False):
    out = subprocess.run(["callgrind_annotate", "--threshold=100", "--inclusive=%s" % (
        "yes" if inclusive else "no"), path], capture_output=True, text=True).stdout
    total, fns = 0, []
    for line in out.splitlines():
        m = re.match(r"^\s*([\d,]+)\s+(?:\([\s\d.]+%\)\s+)?(.*)$", line)
        if not m:
            continue
        ir, what = int(m.group(1).replace(",", "")), m.group(2).strip()
        if what.startswith("PROGRAM TOTALS"):
            total = ir
        elif ":" in what and total and ir < total * 0.999:
            # (functions on the call stack at zero/dump time show up with the whole total)
            fns.append((ir, what))
    return total, fns[:top]


def callgrind_run(env, n, quick):
    """Instructions per request of one reactor (1 reactor, 1 PHP worker), keep-alive and close.
    The reactor is a fork of the master (no exec), so callgrind follows it; php is skipped."""
    out = {}
    cgdir = env.path("callgrind")
    os.makedirs(cgdir)
    fl = Forkline(env, "forkline-callgrind", reactors=1, workers=1, wrapper=[
        "valgrind", "--tool=callgrind", "--trace-children=yes", "--trace-children-skip=*php*",
        "--callgrind-out-file=%s/callgrind.out.%%p" % cgdir, "--dump-instr=no", "--collect-jumps=no"])
    fl.start(timeout=120)
    try:
        reactor = fl.reactors()[0]
        for mode, close in (("keep-alive", False), ("close", True)):
            raw_client(fl.port, 300 if quick else 1000, close)  # warm up
            subprocess.run(["callgrind_control", "-z", str(reactor)], capture_output=True, timeout=60)
            t0 = time.time()
            raw_client(fl.port, n, close)
            el = time.time() - t0
            before = set(os.listdir(cgdir))
            subprocess.run(["callgrind_control", "-d", "bench-%s" % mode, str(reactor)],
                           capture_output=True, timeout=60)
            time.sleep(0.5)
            new = [f for f in os.listdir(cgdir) if f not in before and f.startswith("callgrind.out.%d" % reactor)]
            if not new:
                raise RuntimeError("callgrind_control -d produced no dump")
            dump = os.path.join(cgdir, sorted(new)[-1])
            total, fns = annotate(dump, 15)
            ours = [(ir, OUR_SRC.sub(r"\1", w)) for ir, w in annotate(dump, 400, inclusive=True)[1]
                    if OUR_SRC.search(w) and "/main.c:" not in w and "/master.c:" not in w][:15]
            allocs, callers = {}, {}
            for (caller, callee), v in callgrind_calls(dump).items():
                if callee.split("'")[0] in ALLOC_FNS and v:
                    allocs[callee] = allocs.get(callee, 0) + v
                    if callee != "free" and caller.split("'")[0] not in ALLOC_FNS:
                        callers["%s ← %s" % (callee, caller)] = v
            out[mode] = {"n": n, "ir": total, "ir_req": total / n, "top": fns, "ours": ours, "dump": dump,
                         "allocs": allocs, "callers": callers, "secs": el}
            log("  callgrind %-10s %d requests: %.0f Ir/request" % (mode, n, total / n))
    finally:
        fl.stop()
    return out


# ---------------------------------------------------------------- strace


def strace_counts(path):
    """{syscall: calls} from an `strace -c` summary."""
    out = {}
    with open(path) as f:
        for line in f:
            t = line.split()
            if len(t) >= 5 and t[0][0].isdigit() and t[-1] != "total":
                out[t[-1]] = int(t[3])
    return out


def strace_run(env, n):
    """System calls per request of one reactor (1 reactor, 1 PHP worker): `strace -c -p` attached
    to the reactor over n sequential requests (keep-alive, then a new connection each) and over
    a wrk run at c = 64 (requests counted by wrk). The PHP worker is not traced."""
    out = {}
    fl = Forkline(env, "forkline-strace", reactors=1, workers=1).start()
    try:
        reactor = fl.reactors()[0]
        for mode in ("keep-alive", "close", "wrk c=64 keep-alive"):
            if mode.startswith("wrk"):
                wrk(fl.port, "/", 64, False, 1)
            else:
                raw_client(fl.port, 300, mode == "close")  # warm up
            txt = env.path("strace-%s.txt" % mode.replace(" ", "-").replace("=", ""))
            st = subprocess.Popen(["strace", "-c", "-p", str(reactor), "-o", txt],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            line = st.stderr.readline()  # "strace: Process N attached"
            if "attached" not in line:
                st.kill()
                raise RuntimeError("strace: %s" % line.strip())
            if mode.startswith("wrk"):
                reqs = wrk(fl.port, "/", 64, False, 3)["requests"]
            else:
                raw_client(fl.port, n, mode == "close")
                reqs = n
            time.sleep(0.2)
            st.send_signal(signal.SIGINT)
            st.communicate(timeout=30)
            counts = strace_counts(txt)
            out[mode] = {"n": reqs, "calls": counts, "per_req": sum(counts.values()) / float(reqs or 1)}
            log("  strace %-20s %d requests: %.2f syscalls/request" % (mode, reqs, out[mode]["per_req"]))
    finally:
        fl.stop()
    return out


# ---------------------------------------------------------------- report


def fmt_rps(x):
    return "%.0f" % x if x == x else "-"


def fmt_ms(x):
    if x != x:
        return "-"
    return "%.2f" % x if x < 10 else "%.1f" % x


def ratio(a, b):
    return "%.2f×" % (a / b) if b and a == a and b == b else "-"


def machine():
    def first(cmd):
        return sh(cmd).splitlines()[0] if sh(cmd) else "?"
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = sh("free -m | awk '/^Mem:/ {print $2}'")
    return [
        ("date", datetime.datetime.now().strftime("%Y-%m-%d %H:%M %Z").strip()),
        ("cpus (nproc)", "%s × %s" % (os.cpu_count(), cpu)),
        ("memory", "%s MB" % mem),
        ("kernel", platform.release()),
        ("os", first("cat /etc/debian_version") and "Debian " + first("cat /etc/debian_version")),
        ("forkline", first("%s -v" % BIN) + " (" + first("grep '^CFLAGS' %s/Makefile" % ROOT).replace("CFLAGS  = ", "") + ")"),
        ("php", first("php -v")),
        ("php-fpm", first("/usr/sbin/php-fpm8.2 -v")),
        ("nginx", first("/usr/sbin/nginx -v")),
        ("apache", first("/usr/sbin/apache2 -v")),
        ("wrk", first("wrk -v")),
        ("valgrind", first("valgrind --version")),
        ("load average at start", sh("cat /proc/loadavg")),
    ]


class Report:
    def __init__(self):
        self.lines = []

    def add(self, *ls):
        self.lines += ls

    def text(self):
        return "\n".join(self.lines) + "\n"


def main_table(res, cells, names):
    fl, fpm, ap, n200 = names
    rows = ["| connection | c | forkline req/s | p50 ms | p99 ms | nginx+fpm req/s | p50 ms | p99 ms "
            "| apache req/s | p50 ms | p99 ms | nginx `return 200` req/s | **forkline / nginx+fpm** "
            "| **forkline / apache** |",
            "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"]
    for c, close in cells:
        g = lambda n: res.get((n, c, close), {"rps": float("nan"), "p50": float("nan"), "p99": float("nan")})  # noqa: E731
        a, b, d, e = g(fl), g(fpm), g(ap), g(n200)
        rows.append("| %s | %d | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | **%s** | **%s** |" % (
            "close" if close else "keep-alive", c, fmt_rps(a["rps"]), fmt_ms(a["p50"]), fmt_ms(a["p99"]),
            fmt_rps(b["rps"]), fmt_ms(b["p50"]), fmt_ms(b["p99"]), fmt_rps(d["rps"]), fmt_ms(d["p50"]),
            fmt_ms(d["p99"]), fmt_rps(e["rps"]), ratio(a["rps"], b["rps"]), ratio(a["rps"], d["rps"])))
    return rows


def variant_table(res, cells, base, variants):
    def cpu(x):
        t = x.get("cpu", {}).get("front", float("nan")) + x.get("cpu", {}).get("php", float("nan"))
        return "%.1f" % t if t == t else "-"
    rows = ["| connection | c | %s req/s | p99 ms | CPU µs/req | %s |" % (
        base, " | ".join("%s req/s | p99 ms | CPU µs/req | ratio" % v for v in variants)),
        "|---|--:|--:|--:|--:|" + "--:|--:|--:|--:|" * len(variants)]
    for c, close in cells:
        b = res.get((base, c, close))
        if not b:
            continue
        cols = []
        for v in variants:
            x = res.get((v, c, close), {"rps": float("nan"), "p99": float("nan")})
            cols.append("%s | %s | %s | %s" % (fmt_rps(x["rps"]), fmt_ms(x["p99"]), cpu(x),
                                              ratio(x["rps"], b["rps"])))
        rows.append("| %s | %d | %s | %s | %s | %s |" % ("close" if close else "keep-alive", c,
                                                          fmt_rps(b["rps"]), fmt_ms(b["p99"]), cpu(b),
                                                          " | ".join(cols)))
    return rows


def simple_table(res, rows_spec):
    rows = ["| test | server | req/s | p50 ms | p99 ms | MB/s | runs (req/s) |", "|---|---|--:|--:|--:|--:|---|"]
    for test, name, key, size in rows_spec:
        r = res.get(key)
        if not r:
            continue
        rows.append("| %s | %s | %s | %s | %s | %s | %s |" % (
            test, name, fmt_rps(r["rps"]), fmt_ms(r["p50"]), fmt_ms(r["p99"]),
            "%.0f" % (r["rps"] * size / 1e6) if size else "", ", ".join("%.0f" % x for x in r["all"])))
    return rows


# ---------------------------------------------------------------- main


FL, FLOFF, FLJSON = "forkline", "forkline affinity off", "forkline json codec"
FPM, AP, N200 = "nginx+php-fpm", "apache mod_php", "nginx return 200"
CELLS = [(c, close) for close in (False, True) for c in (8, 64, 256)]
PHASES = ("php", "rss", "callgrind", "strace")  # php = hello world, large bodies, static files


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="1 round, 3 s per run")
    ap.add_argument("--rounds", type=int)
    ap.add_argument("--seconds", type=int, help="wrk duration per run")
    ap.add_argument("--workers", type=int, default=0,
                    help="PHP processes for forkline and php-fpm (default: 2 per CPU)")
    ap.add_argument("--apache-procs", type=int, default=256, help="apache prefork processes (static)")
    ap.add_argument("--rss-requests", type=int, help="requests for the RSS growth check")
    ap.add_argument("--callgrind-requests", type=int)
    ap.add_argument("--no-callgrind", action="store_true")
    ap.add_argument("--strace-requests", type=int)
    ap.add_argument("--only", help="comma-separated phases to run, of: %s (default: all; a partial "
                    "run writes build/BENCHMARKS.partial.md unless --out)" % ",".join(PHASES))
    ap.add_argument("--out", help="report file (default BENCHMARKS.md, or build/BENCHMARKS.quick.md with --quick)")
    ap.add_argument("--keep", action="store_true", help="keep the temp directory")
    ap.add_argument("--noise", type=float, default=10,
                    help="repeat a run when other processes used more than this %% of the CPUs (default 10)")
    ap.add_argument("--noise-budget", type=float, default=900,
                    help="seconds of quiet-waiting for repeats over the whole run (default 900)")
    ap.add_argument("--bin", help="forkline binary to measure (default ./forkline; a copy keeps a "
                    "rebuild during the run from changing what is measured)")
    a = ap.parse_args()
    a.rounds = a.rounds or (1 if a.quick else 3)
    a.seconds = a.seconds or (3 if a.quick else 4)
    # 2M: the verdict is taken over the second half (>= 1M requests), after the pages that the
    # first connections touch (buffers, epoll, the kernel's socket accounting) have settled
    a.rss_requests = a.rss_requests or (200000 if a.quick else 2000000)
    a.callgrind_requests = a.callgrind_requests or (2000 if a.quick else 10000)
    a.strace_requests = a.strace_requests or (2000 if a.quick else 10000)
    a.phases = set(PHASES)
    if a.only:
        a.phases = {x.strip() for x in a.only.split(",") if x.strip()}
        bad = a.phases - set(PHASES)
        if bad:
            ap.error("unknown phase(s) %s; choose from %s" % (", ".join(sorted(bad)), ", ".join(PHASES)))
    if a.no_callgrind:
        a.phases.discard("callgrind")
    partial = a.phases != set(PHASES)
    a.out = a.out or os.path.join(ROOT, "build/BENCHMARKS.partial.md" if partial else
                                  "build/BENCHMARKS.quick.md" if a.quick else "BENCHMARKS.md")
    a.workers = a.workers or 2 * (os.cpu_count() or 1)
    return a


class Servers:
    """Everything the PHP runs need, started up front (idle servers cost nothing) and checked."""

    def __init__(self, env, a):
        self.fl = Forkline(env, FL, overrides=["cpu_affinity=on"]).start()
        self.fl_off = Forkline(env, FLOFF, overrides=["cpu_affinity=off"]).start()
        self.fl_json = Forkline(env, FLJSON, overrides=["cpu_affinity=on", "http.codec=json"]).start()
        static = "  middleware: [\"static\"]\n  static:\n    dir: \"%s\"\n" % env.static
        self.app = Forkline(env, "forkline bench worker", worker=env.path("flworker.php"), extra=static,
                            overrides=["cpu_affinity=on"]).start()
        self.app_off = Forkline(env, "forkline bench worker, affinity off", worker=env.path("flworker.php"),
                                overrides=["cpu_affinity=off"]).start()
        self.ngx = NginxFpm(env).start()
        self.apache = Apache(env, a.apache_procs).start()
        self.hello = [(FL, self.fl.port), (FPM, self.ngx.port_fpm), (AP, self.apache.port),
                      (N200, self.ngx.port_200), (FLOFF, self.fl_off.port), (FLJSON, self.fl_json.port)]
        self.static_ok = False
        self.opcache = {}
        # whose CPU time a run is charged to: the HTTP front (forkline's master and reactors,
        # nginx's workers) and the PHP processes (apache's children do both)
        for name, f in ((FL, self.fl), (FLOFF, self.fl_off), (FLJSON, self.fl_json)):
            CPU_GROUPS[name] = lambda f=f: {"front": [f.proc.pid] + f.reactors(), "php": f.php()}
        nginx = lambda: children(self.ngx.nginx.pid)  # noqa: E731
        CPU_GROUPS[FPM] = lambda: {"front": nginx(), "php": children(self.ngx.fpm.pid)}
        CPU_GROUPS[N200] = lambda: {"front": nginx()}
        CPU_GROUPS[AP] = lambda: {"php": children(self.apache.proc.pid)}

    def check(self, env):
        """Same body everywhere, OPcache really on for fpm and mod_php, does http.static work."""
        for name, port in self.hello:
            st, body = http_get(port)
            if st != 200 or body != HELLO:
                sys.exit("bench: %s answered %s %r instead of %r" % (name, st, body[:60], HELLO))
        for name, port in ((FPM, self.ngx.port_fpm), (AP, self.apache.port)):
            self.opcache[name] = http_get(port, "/opcache")[1].decode()
            if self.opcache[name] != "on":
                sys.exit("bench: OPcache is %r under %s" % (self.opcache[name], name))
        ok = True
        for f in ("1k.bin", "1m.bin"):
            with open(os.path.join(env.static, f), "rb") as fh:
                ok = ok and http_get(self.app.port, "/" + f) == (200, fh.read())
        self.static_ok = ok
        log("bench: forkline http.static %s" % ("works" if ok else "not available"))
        for _, port in self.hello:  # warm-up: OPcache, fpm's and apache's processes, PHP workers
            wrk(port, "/", 64, False, 1)

    def stop(self):
        for s in (self.apache, self.fl, self.fl_off, self.fl_json, self.app, self.app_off, self.ngx):
            s.stop()


def measure_php(S, env, a):
    D = {}
    log("bench: PHP hello world")
    D["hello"] = run_matrix([(n, p, "/", None) for n, p in S.hello], CELLS, a.rounds, a.seconds)
    log("bench: 1 MB PHP response, 5 MB POST, CPU-bound script")
    post = env.path("post.lua")
    trio = ((FL, S.app.port), (FPM, S.ngx.port_fpm), (AP, S.apache.port))
    D["other"] = run_matrix([("big " + n, p, "/big", None) for n, p in trio], [(8, False)], a.rounds, a.seconds)
    D["other"].update(run_matrix([("post " + n, p, "/post", post) for n, p in trio], [(8, False)],
                                 a.rounds, a.seconds))
    D["other"].update(run_matrix([("cpu " + n, p, "/cpu", None) for n, p in trio + ((FLOFF, S.app_off.port),)],
                                 [(64, False)], a.rounds, a.seconds))
    D["static"] = {}
    if S.static_ok:
        log("bench: static files")
        for f in ("1k.bin", "1m.bin"):
            D["static"].update(run_matrix([("%s %s" % (f, FL), S.app.port, "/" + f, None),
                                           ("%s nginx" % f, S.ngx.port_static, "/" + f, None)],
                                          [(64, False)], a.rounds, a.seconds))
    return D


def measure_rss(env, a):
    """A fresh forkline (`reactors: auto`): master + reactors idle, then after N keep-alive requests."""
    log("bench: RSS idle and after %d requests" % a.rss_requests)
    fl = Forkline(env, "forkline rss", overrides=["cpu_affinity=on"]).start()
    time.sleep(1)

    def tree():
        m = mem_kb(fl.proc.pid)
        rs = [mem_kb(r) for r in fl.reactors()]
        return {"master": m, "reactors": rs, "rss": m[0] + sum(r[0] for r in rs),
                "pss": m[1] + sum(r[1] for r in rs), "php_rss": sum(mem_kb(p)[0] for p in fl.php())}
    R = {"idle": tree(), "samples": [], "sent": 0}
    while R["sent"] < a.rss_requests:
        r = wrk(fl.port, "/", 64, False, 5)
        if not r["requests"]:
            break
        R["sent"] += r["requests"]
        R["samples"].append((R["sent"], tree()["rss"]))
    time.sleep(1)
    R["after"] = tree()
    fl.stop()
    return R


def main():
    global BIN
    a = parse_args()
    BIN = os.path.abspath(a.bin) if a.bin else BIN
    a.argv = " ".join(sys.argv[1:])
    NOISE["max"] = a.noise / 100.0
    NOISE["budget"] = a.noise_budget
    t_start = time.time()
    if not os.access(BIN, os.X_OK):
        sys.exit("bench: %s not built (run make)" % BIN)
    ensure_packages("callgrind" in a.phases)
    if "strace" in a.phases and not shutil.which("strace"):
        log("bench: strace not installed: no syscall counts (apt-get install strace)")
        a.phases.discard("strace")
    env = Env(a.workers)
    atexit.register(stop_all)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    if not a.keep:
        atexit.register(shutil.rmtree, env.dir, True)
    log("bench: temp dir %s, %d PHP processes each, %d round(s) x %d s" % (env.dir, a.workers, a.rounds,
                                                                           a.seconds))
    mach = machine()
    # Measure a copy: a rebuild of ./forkline during the run must not change what is measured.
    shutil.copy2(BIN, env.path("forkline"))
    BIN = env.path("forkline")
    D = {"hello": {}, "other": {}, "static": {}, "rss": None, "cg": {}, "strace": {}}
    S = None
    if "php" in a.phases:
        S = Servers(env, a)
        S.check(env)
        log("bench: others use %.0f %% of the CPUs now" % (100 * wait_quiet()))
        D.update(measure_php(S, env, a))
        S.stop()
    if "rss" in a.phases:
        D["rss"] = measure_rss(env, a)
    if "callgrind" in a.phases:
        log("bench: callgrind, %d requests per mode" % a.callgrind_requests)
        try:
            D["cg"] = callgrind_run(env, a.callgrind_requests, a.quick)
        except Exception as e:  # noqa
            log("bench: callgrind failed: %s" % e)
            D["cg"] = {"error": str(e)}
    if "strace" in a.phases:
        log("bench: strace, %d sequential requests per mode" % a.strace_requests)
        try:
            D["strace"] = strace_run(env, a.strace_requests)
        except Exception as e:  # noqa
            log("bench: strace failed: %s" % e)
            D["strace"] = {"error": str(e)}
    stop_all()
    text = report(a, mach, S, D, time.time() - t_start)
    notes = ""
    if os.path.exists(a.out):
        with open(a.out) as f:
            old = f.read()
        if NOTES_MARK in old:
            notes = old.split(NOTES_MARK, 1)[1].lstrip("\n")
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    with open(a.out, "w") as f:
        f.write(text + notes)
    # On the terminal: the noise, the bars and the hello-world table (the rest is in the file).
    print("load average at start %s, at end %s" % (dict(mach)["load average at start"], sh("cat /proc/loadavg")))
    print("**Noise:** " + noise_line() + "\n")
    print("## Bars" + text.split("## Bars", 1)[1].split("\n## ", 1)[0])
    if "## PHP hello world" in text:
        print("## PHP hello world" + text.split("## PHP hello world", 1)[1].split("req/s of each round", 1)[0])
    log("bench: wrote %s (%.0f s)" % (a.out, time.time() - t_start))


def report(a, mach, S, D, elapsed):
    R = Report()
    res, other, stat, M, cg = D["hello"], D["other"], D["static"], D["rss"], D["cg"]
    R.add("# forkline benchmarks", "",
          "Generated by `%s` (`python3 scripts/bench.py %s`; %s mode, %d round(s) × %d s per wrk run, "
          "median of the rounds; phases: %s), finished in %.0f s. Everything ran on one machine over "
          "loopback: wrk shares the cores with the servers." % (
              "make bench" + (" QUICK=1" if a.quick else ""), a.argv, "quick" if a.quick else "full",
              a.rounds, a.seconds, ", ".join(p for p in PHASES if p in a.phases), elapsed), "")
    R.add("## Machine", "", "| | |", "|---|---|")
    for k, v in mach + [("load average at end", sh("cat /proc/loadavg"))]:
        R.add("| %s | %s |" % (k, v.replace("|", "/")))
    R.add("", "**Noise:** %s" % noise_line(), "")
    if S:
        report_setup(R, a, S)
    R.add("## Bars (issue 9), from this run", "")
    R.add(*bars(res, stat, M, cg, FL, FPM, AP))
    R.add("")
    if S:
        report_php(R, res, other, stat, S)
    if M:
        report_rss(R, M, a)
    if cg:
        report_callgrind(R, cg, a)
    if D["strace"]:
        report_strace(R, D["strace"], a)
    R.add(NOTES_MARK, "")
    return R.text()


def noise_line():
    if not NOISE["kept"]:
        return "no timed PHP runs in this run."
    return ("the harness charges every CPU jiffy of a wrk run to our processes or to others "
            "(`/proc/stat` against our sessions' `/proc/PID/stat`); a run in which others used > %.0f %% "
            "of the CPUs is repeated after a quiet wait (up to %d times, %.0f s of waiting in all). "
            "Others' share over the %d kept runs: median %.1f %%, max %.1f %%, %d above %.0f %%; %d run(s) "
            "repeated, %.0f s spent waiting." % (
                100 * NOISE["max"], NOISE["retries"], NOISE["budget"], len(NOISE["kept"]),
                100 * statistics.median(NOISE["kept"]), 100 * max(NOISE["kept"]),
                sum(1 for x in NOISE["kept"] if x > NOISE["max"]), 100 * NOISE["max"], NOISE["retried"],
                NOISE["spent"]))


def report_setup(R, a, S):
    R.add("## Setup", "",
          "- **PHP processes:** %d for forkline (`http.pool.num_workers`, spread over `reactors: auto` = "
          "%d reactors) and %d for php-fpm (`pm = static`). apache prefork: %d processes, all started "
          "up front (Start/Min/MaxSpare/MaxRequestWorkers = %d, `MaxKeepAliveRequests 0`), so none is "
          "forked during a run." % (a.workers, os.cpu_count() or 1, a.workers, a.apache_procs, a.apache_procs),
          "- **Same body everywhere:** `Hello from forkline\\n` (20 bytes, text/plain), checked before the "
          "runs. forkline runs the example app `php/app/worker.php` route `/`; fpm and apache run "
          "`<?php header('Content-Type: text/plain'); echo \"Hello from forkline\\n\";`.",
          "- **OPcache:** on for php-fpm and mod_php (checked through `opcache_get_status()`: %s), and "
          "`-d opcache.enable_cli=1` for forkline's php-cli workers (long-lived, so it matters little)."
          % ", ".join("%s %s" % kv for kv in S.opcache.items()),
          "- nginx: `worker_processes auto`, `access_log off`, `keepalive_requests 10000000`, fastcgi "
          "over a unix socket without upstream keep-alive (the usual setup), `sendfile on`. forkline: "
          "`logs.level: error`, `cpu_affinity: on` unless the row says otherwise.",
          "- wrk: `wrk -t 2 -c C -d %ds --timeout 10s --latency [-H 'Connection: close'] URL` "
          "(`-t 1` for c < 2). Rounds alternate the servers inside each cell, rotating who goes "
          "first." % a.seconds,
          "- Every server listens on 127.0.0.1 and a free port with its own config in a temp directory; "
          "the configs are written by `scripts/bench.py` (see `Env`, `NginxFpm`, `Apache`, `Forkline`).",
          "")


def report_php(R, res, other, stat, S):
    errs = [(k, v["detail"]) for k, v in list(res.items()) + list(other.items()) + list(stat.items())
            if v["errors"]]
    R.add("## PHP hello world", "")
    R.add(*main_table(res, CELLS, (FL, FPM, AP, N200)))
    R.add("", "Ratios are req/s. Errors (connect/write/timeout/non-2xx, summed over the rounds, in every "
          "table of this file): %s." % (
              "; ".join("%s c=%d %s: %s" % (k[0], k[1], "close" if k[2] else "keep-alive", ", ".join(
                  "%s %d" % kv for kv in d.items())) for k, d in errs) if errs else "none"), "")
    R.add("req/s of each round (in the order run):", "", "| connection | c | %s |" % " | ".join(
        n for n, _ in S.hello), "|---|--:|" + "---|" * len(S.hello))
    for c, close in CELLS:
        R.add("| %s | %d | %s |" % ("close" if close else "keep-alive", c, " | ".join(
            ", ".join("%.0f" % x for x in res.get((n, c, close), {}).get("all", [])) for n, _ in S.hello)))
    R.add("", "CPU time per request in µs (utime + stime from `/proc/PID/stat` over each run, median "
          "of the rounds): the HTTP front (forkline's master and reactors; nginx's workers), the PHP "
          "processes (apache's children do both), and wrk itself. It is the figure the machine's "
          "load disturbs least, and with wrk on the same cores it bounds the req/s ratios.", "",
          "| connection | c | forkline front | forkline PHP | forkline total | nginx (fpm) | php-fpm "
          "| nginx+fpm total | apache | nginx `return 200` | wrk (forkline run) |",
          "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
    f1 = lambda x: "%.1f" % x if x == x else "-"  # noqa: E731
    for c, close in CELLS:
        g = lambda n, k: res.get((n, c, close), {}).get("cpu", {}).get(k, float("nan"))  # noqa: E731
        R.add("| %s | %d | %s | %s | **%s** | %s | %s | **%s** | %s | %s | %s |" % (
            "close" if close else "keep-alive", c, f1(g(FL, "front")), f1(g(FL, "php")),
            f1(g(FL, "front") + g(FL, "php")), f1(g(FPM, "front")), f1(g(FPM, "php")),
            f1(g(FPM, "front") + g(FPM, "php")), f1(g(AP, "php")), f1(g(N200, "front")), f1(g(FL, "wrk"))))
    R.add("", "### CPU affinity and codec (forkline variants, same runs)", "")
    R.add(*variant_table(res, CELLS, FL, (FLOFF, FLJSON)))
    R.add("", "`forkline` = `cpu_affinity: on`, protobuf codec (`http.codec: proto`). Ratios are against "
          "`forkline`. The JSON codec row is `-o http.codec=json`; with either codec the request "
          "context is decoded in pure PHP by php/src (no extension), the way the official "
          "spiral/roadrunner-http package decodes it, so that cost is the PHP side's, not ours.", "")
    R.add("## Large bodies (c = 8) and a CPU-bound script (c = 64), keep-alive", "")
    rows = [("1 MB PHP response", n, ("big " + n, 8, False), 1 << 20) for n in (FL, FPM, AP)]
    rows += [("5 MB POST (body length back)", n, ("post " + n, 8, False), 5 << 20) for n in (FL, FPM, AP)]
    rows += [("5000 × md5 in PHP (~0.5 ms)", n, ("cpu " + n, 64, False), 0) for n in (FL, FLOFF, FPM, AP)]
    R.add(*simple_table(other, rows))
    R.add("", "forkline here runs a bench worker (temp `flworker.php`, php/src library) with `/big` "
          "(`str_repeat('x', 1048576)`), `/post` (`strlen` of the body) and `/cpu` (`$x = md5($x)` 5000 "
          "times); fpm and apache run the same lines of PHP. POST: wrk script `wrk.body = "
          "string.rep(\"a\", 5 * 1024 * 1024)`. MB/s is the response (1 MB) or request (5 MB) payload "
          "rate.", "")
    report_static(R, stat, S.static_ok)


def report_strace(R, st, a):
    R.add("", "## System calls per request (reactor, strace)", "")
    if "error" in st:
        R.add("strace failed: %s" % st["error"], "")
        return
    modes = list(st)
    names = sorted({k for m in modes for k in st[m]["calls"]},
                   key=lambda k: -max(st[m]["calls"].get(k, 0) / float(st[m]["n"] or 1) for m in modes))
    R.add("`strace -c -p <reactor pid>` with `reactors: 1`, 1 PHP worker, attached after a warm-up: %d "
          "sequential `GET /` on one keep-alive connection, %d with a new connection each, and a 3 s "
          "`wrk -c 64` keep-alive run (requests counted by wrk; strace slows the reactor, so only the "
          "counts matter). The PHP worker's own calls are not counted." % (a.strace_requests,
                                                                           a.strace_requests), "")
    R.add("| syscall | %s |" % " | ".join(modes), "|---|" + "--:|" * len(modes))
    for k in names:
        R.add("| %s | %s |" % (k, " | ".join("%.2f" % (st[m]["calls"].get(k, 0) / float(st[m]["n"] or 1))
                                             for m in modes)))
    R.add("| **total per request** | %s |" % " | ".join("**%.2f**" % st[m]["per_req"] for m in modes),
          "| requests | %s |" % " | ".join(str(st[m]["n"]) for m in modes), "")


def report_static(R, stat, ok):
    R.add("## Static files (c = 64, keep-alive)", "")
    if not ok:
        R.add("TODO: forkline's `http.static` did not serve `/1k.bin` when this ran (static files are "
              "in progress in reactor/static.c); the 1 KB / 1 MB static rows (forkline vs nginx "
              "`sendfile on`) appear here automatically once it does.")
        return
    rows = [("1 KB file", n, ("1k.bin " + n, 64, False), 1024) for n in (FL, "nginx")]
    rows += [("1 MB file", n, ("1m.bin " + n, 64, False), 1 << 20) for n in (FL, "nginx")]
    R.add(*simple_table(stat, rows))
    a1, b1 = stat.get(("1k.bin " + FL, 64, False)), stat.get(("1k.bin nginx", 64, False))
    a2, b2 = stat.get(("1m.bin " + FL, 64, False)), stat.get(("1m.bin nginx", 64, False))
    if a1 and b1 and a2 and b2:
        R.add("", "forkline / nginx: 1 KB %s (bar ≥ 0.70), 1 MB %s (bar ≥ 0.90)." % (
            ratio(a1["rps"], b1["rps"]), ratio(a2["rps"], b2["rps"])))


def report_rss(R, M, a):
    R.add("", "## Memory (RSS of master + reactors)", "")
    mb = lambda kb: "%.1f MB" % (kb / 1024.0)  # noqa: E731
    R.add("| | master + reactors VmRSS | master + reactors Pss | master | reactors | PHP workers (RSS, all) |",
          "|---|--:|--:|--:|--:|--:|")
    for label, m in (("idle (1 s after start)", M["idle"]), ("after %d requests" % M["sent"], M["after"])):
        R.add("| %s | %s | %s | %s | %s | %s |" % (label, mb(m["rss"]), mb(m["pss"]), mb(m["master"][0]),
                                                   " + ".join(mb(r[0]) for r in m["reactors"]),
                                                   mb(m["php_rss"])))
    R.add("", "`reactors: auto` (%d), %d PHP workers, wrk `-c 64` keep-alive in 5 s runs until %d "
          "requests; master + reactors VmRSS after each run (requests → kB): %s." % (
              os.cpu_count() or 1, a.workers, M["sent"], ", ".join("%d → %d" % s for s in M["samples"])), "")


def report_callgrind(R, cg, a):
    R.add("## Instructions per request (C side, callgrind)", "")
    if not cg:
        R.add("skipped (`--no-callgrind`).")
        return
    if "error" in cg:
        R.add("callgrind failed: %s" % cg["error"])
        return
    R.add("`valgrind --tool=callgrind --trace-children=yes --trace-children-skip='*php*' "
          "--dump-instr=no --collect-jumps=no ./forkline serve` with `reactors: 1`, 1 PHP worker "
          "(php itself runs natively); warm-up, `callgrind_control -z <reactor pid>`, %d sequential "
          "`GET /` (one keep-alive connection, or a new connection each), `callgrind_control -d`. "
          "User-space instructions of the reactor process only (libc, jemalloc and llhttp "
          "included; the kernel's share of each syscall is not counted)." % a.callgrind_requests, "")
    R.add("| mode | requests | Ir total | **Ir / request** | allocations / request | free() calls / request |",
          "|---|--:|--:|--:|--:|--:|")
    modes = [(m, cg[m]) for m in ("keep-alive", "close") if m in cg]
    for mode, x in modes:
        al = ", ".join("%s %.3f" % (k, v / x["n"]) for k, v in sorted(x["allocs"].items())
                       if k.split("'")[0] in ALLOCS and v) or "0"
        fr = sum(v for k, v in x["allocs"].items() if k.split("'")[0] not in ALLOCS) / float(x["n"])
        R.add("| %s | %d | %d | **%.0f** | %s | %.2f |" % (mode, x["n"], x["ir"], x["ir_req"], al, fr))
    R.add("", "Allocations are calls into malloc, calloc, realloc and the aligned variants (counted by "
          "callgrind, so exact); free() calls include free(NULL).")
    for mode, x in modes:
        if x["callers"]:
            R.add("", "Allocations per request, %s, by caller: %s." % (mode, ", ".join(
                "`%s` %.2f" % (k, v / x["n"]) for k, v in sorted(x["callers"].items(), key=lambda kv: -kv[1])
                if v >= x["n"] / 100)))
    for mode, x in modes:
        R.add("", "Hottest functions, %s (self Ir per request, share of the total):" % mode, "",
              "| Ir / request | % | function |", "|--:|--:|---|")
        for ir, what in x["top"]:
            what = OUR_SRC.sub(r"\1", re.sub(r" \[[^\]]*\]$", "", what))
            R.add("| %.0f | %.1f %% | `%s` |" % (ir / x["n"], 100.0 * ir / x["ir"] if x["ir"] else 0, what))
        R.add("", "forkline's own functions, %s, inclusive (with everything they call):" % mode, "",
              "| Ir / request | % | function |", "|--:|--:|---|")
        for ir, what in x["ours"]:
            what = re.sub(r" \[[^\]]*\]$", "", what)
            R.add("| %.0f | %.1f %% | `%s` |" % (ir / x["n"], 100.0 * ir / x["ir"] if x["ir"] else 0, what))


ALLOCS = {"malloc", "calloc", "realloc", "posix_memalign", "aligned_alloc", "memalign", "valloc",
          "mallocx", "rallocx", "je_malloc", "je_calloc", "je_realloc", "je_mallocx", "je_rallocx"}


def bars(res, stat, M, cg, FL, FPM, AP):
    """Each bar of issue 9 that this run measured: value, met or missed, and by how much."""
    out = ["| bar | measured | verdict |", "|---|---|---|"]
    nan = float("nan")

    def row(name, value, ok, short=""):
        if ok != ok or ok is None:
            out.append("| %s | %s | not measured |" % (name, value))
        else:
            out.append("| %s | %s | %s |" % (name, value, "met" if ok else "**missed**%s" % (
                ": " + short if short else "")))

    def rps(n, c, close):
        return res.get((n, c, close), {}).get("rps", nan)

    def at_least(name, val, bar, fmt="%.2f×"):
        if val != val:
            return row(name, "-", nan)
        row(name, fmt % val, val >= bar, "%.0f %% short of %s" % (100 * (1 - val / bar), fmt % bar))
    if res:
        at_least("keep-alive c=64 ≥ 3× nginx+fpm", rps(FL, 64, False) / rps(FPM, 64, False), 3)
        at_least("keep-alive c=64 ≥ 1.5× apache mod_php", rps(FL, 64, False) / rps(AP, 64, False), 1.5)
        at_least("Connection: close c=64 ≥ 1.5× nginx+fpm", rps(FL, 64, True) / rps(FPM, 64, True), 1.5)
        for close in (False, True):
            x = res.get((FL, 256, close), {}).get("p99", nan)
            y = res.get((FPM, 256, close), {}).get("p99", nan)
            row("p99 c=256 %s < nginx+fpm's" % ("close" if close else "keep-alive"),
                "%s ms vs %s ms" % (fmt_ms(x), fmt_ms(y)), x < y if x == x and y == y else nan,
                "%.0f %% higher" % (100 * (x / y - 1)) if y else "")
    for f, label, bar in (("1k.bin", "static 1 KB ≥ 70 % of nginx", 0.7),
                          ("1m.bin", "static 1 MB ≥ 90 % of nginx", 0.9)):
        x, y = stat.get(("%s %s" % (f, FL), 64, False)), stat.get(("%s nginx" % f, 64, False))
        if x and y:
            at_least(label, 100.0 * x["rps"] / y["rps"], 100 * bar, fmt="%.0f %%")
    if cg and "keep-alive" in cg:
        for mode in ("keep-alive", "close"):
            x = cg.get(mode)
            if not x:
                continue
            n = sum(v for k, v in x["allocs"].items() if k.split("'")[0] in ALLOCS) / float(x["n"])
            row("no allocation per request (%s, callgrind)" % mode,
                "%.3f allocations/request, %.0f Ir/request" % (n, x["ir_req"]), n < 0.01,
                "%.2f per request" % n)
    if M:
        idle, after, samples = M["idle"], M["after"], M["samples"]
        mb = idle["rss"] / 1024.0
        row("master + reactors < 16 MB RSS idle (%d reactors)" % len(idle["reactors"]), "%.1f MB" % mb,
            mb < 16, "%.1f MB over" % (mb - 16))
        first = samples[0][1] if samples else idle["rss"]
        # steady state: the last 1M+ requests (from the last sample that leaves >= 1M after it)
        half = ([x for x in samples if x[0] <= M["sent"] - 1000000] or [(0, first)])[-1]
        grow = after["rss"] - half[1]
        row("no RSS growth over %d requests (after %d warm-up requests)" % (M["sent"] - half[0], half[0]),
            "%+d kB over them (%+d kB from idle, %+d kB after the first 5 s run)"
            % (grow, after["rss"] - idle["rss"], after["rss"] - first),
            grow <= 256, "%+d kB" % grow)
    return out


if __name__ == "__main__":
    main()
