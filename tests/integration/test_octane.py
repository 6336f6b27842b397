"""Laravel Octane as a drop-in (spec rr-config-cli-octane.md §4): the binary installed as a file
named `rr` in a temporary Laravel-like base path with an EMPTY .rr.yaml, started with Octane's
exact argv and environment, its stdout parsed the way Octane parses it, `octane:reload`'s exact
reset call, and `octane:stop`'s SIGTERM. The worker at vendor/bin/roadrunner-worker is written with
our php/ library and behaves like Octane's (APP_BASE_PATH required, pipes relay, JSON stream
events on stderr)."""
import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time

from fl import BIN, ROOT, descendants, free_port, raw_request, Reader, wait_for
import socket

WORKER = r"""#!/usr/bin/env php
<?php
// Stand-in for laravel/octane's bin/roadrunner-worker, written with forkline's php/ library.
declare(strict_types=1);
ini_set('display_errors', 'stderr');
$base = $_SERVER['APP_BASE_PATH'] ?? $_ENV['APP_BASE_PATH'] ?? null;
if (!is_string($base) || $base === '') {
    fwrite(STDERR, "Cannot find application base path.\n");
    exit(11);
}
require '%(autoload)s';
use Forkline\HttpWorker;
use Forkline\Relay;
use Forkline\Worker;
// Octane ignores RR_RELAY: pipes unless LARAVEL_OCTANE_ROADRUNNER_RELAY says otherwise
$relay = Relay::create($_ENV['LARAVEL_OCTANE_ROADRUNNER_RELAY'] ?? 'pipes');
$http = new HttpWorker(Worker::create($relay));
while (($req = $http->waitRequest()) !== null) {
    // Octane's request stream event goes to stderr; rr logs it under logger "server"
    fwrite(STDERR, json_encode(['type' => 'request', 'method' => $req->method, 'url' => $req->uri,
        'statusCode' => 200, 'duration' => 1.5, 'memory' => memory_get_usage()]) . "\n");
    $env = [];
    foreach (['APP_ENV', 'APP_BASE_PATH', 'LARAVEL_OCTANE', 'RR_MODE', 'RR_RPC'] as $k) {
        $env[$k] = getenv($k);
    }
    $http->respond(200, json_encode(['pid' => getmypid(), 'env' => $env]),
        ['Content-Type' => 'application/json']);
}
"""

# What Octane's version check does with `rr --version` (InstallsRoadRunnerDependencies).
VERSION_CHECK = r"""
$out = $argv[1];
if (!str_starts_with($out, 'rr version')) { echo "warn\n"; exit(2); }
$v = explode(' ', $out)[2];
echo version_compare($v, '2023.3.0', '>=') ? "ok $v\n" : "old $v\n";
exit(version_compare($v, '2023.3.0', '>=') ? 0 : 1);
"""


class Octane:
    """A base path laid out like a Laravel app that Octane runs rr in."""

    def __init__(self, app_env="local", workers=2):
        self.base = tempfile.mkdtemp(prefix="fl-octane-")
        self.rr = os.path.join(self.base, "rr")
        shutil.copy(BIN, self.rr)  # Octane uses base_path('rr') when that file exists
        os.chmod(self.rr, 0o755)
        open(os.path.join(self.base, ".rr.yaml"), "w").close()  # Octane touches it: empty
        os.makedirs(os.path.join(self.base, "public"))
        with open(os.path.join(self.base, "public", "robots.txt"), "w") as f:
            f.write("User-agent: *\nDisallow:\n")
        os.makedirs(os.path.join(self.base, "vendor", "bin"))
        self.worker = os.path.join(self.base, "vendor", "bin", "roadrunner-worker")
        with open(self.worker, "w") as f:
            f.write(WORKER % {"autoload": os.path.join(ROOT, "php", "src", "autoload.php")})
        self.port = free_port()
        self.rpc_port = free_port()
        self.app_env = app_env
        self.workers = workers
        self.lines, self.errlines = [], []

    def argv(self):
        """StartRoadRunnerCommand's argv, in its order (spec §4.3)."""
        level = "debug" if self.app_env == "local" else "warn"
        return [self.rr, "-c", os.path.join(self.base, ".rr.yaml"),
                "-o", "version=3",
                "-o", "http.address=127.0.0.1:%d" % self.port,
                "-o", "server.command=%s,%s" % (shutil.which("php"), self.worker),
                "-o", "http.pool.num_workers=%d" % self.workers,
                "-o", "http.pool.max_jobs=500",
                "-o", "rpc.listen=tcp://127.0.0.1:%d" % self.rpc_port,
                "-o", "http.pool.supervisor.exec_ttl=30s",
                "-o", "http.static.dir=%s" % os.path.join(self.base, "public"),
                "-o", "http.middleware=static",
                "-o", "logs.mode=production",
                "-o", "logs.level=%s" % level,
                "-o", "logs.output=stdout",
                "-o", "logs.encoding=json",
                "serve"]

    def env(self):
        env = dict(os.environ)
        env.update(APP_ENV=self.app_env, APP_BASE_PATH=self.base, LARAVEL_OCTANE="1")
        return env

    def start(self):
        self.proc = subprocess.Popen(self.argv(), cwd=self.base, env=self.env(),
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     stdin=subprocess.DEVNULL)
        threading.Thread(target=self._pump, args=(self.proc.stdout, self.lines), daemon=True).start()
        threading.Thread(target=self._pump, args=(self.proc.stderr, self.errlines), daemon=True).start()
        ok = wait_for(self.serving, timeout=20)
        assert ok, "not serving:\n%s\n%s" % ("\n".join(self.lines[-30:]), "\n".join(self.errlines))
        return self

    @staticmethod
    def _pump(stream, into):
        for raw in stream:
            into.append(raw.decode("utf-8", "replace").rstrip("\n"))

    def serving(self):
        if self.proc.poll() is not None:
            raise AssertionError("rr exited %s:\n%s\n%s" % (self.proc.returncode, "\n".join(self.lines),
                                                           "\n".join(self.errlines)))
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
            return True
        except OSError:
            return False

    def get(self, path):
        with socket.create_connection(("127.0.0.1", self.port), timeout=10) as s:
            s.sendall(raw_request("GET", path))
            return Reader(s).read()

    def php_workers(self):
        return sorted(p for p in descendants(self.proc.pid) if "roadrunner-worker" in _cmd(p))

    def reload(self, with_version=True):
        """octane:reload (spec §4.4): no -c, base path as cwd."""
        argv = [self.rr, "reset"] + (["-o", "version=3"] if with_version else []) + \
               ["-o", "rpc.listen=tcp://127.0.0.1:%d" % self.rpc_port, "-s"]
        return subprocess.run(argv, cwd=self.base, env=self.env(), capture_output=True, text=True,
                              timeout=120)

    def stop(self, sig=signal.SIGTERM):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(30)
        except subprocess.TimeoutExpired:
            for p in descendants(self.proc.pid) + [self.proc.pid]:
                try:
                    os.kill(p, signal.SIGKILL)
                except OSError:
                    pass
            raise

    def cleanup(self):
        if self.proc.poll() is None:
            self.stop()
        shutil.rmtree(self.base, ignore_errors=True)


def _cmd(pid):
    try:
        with open("/proc/%d/cmdline" % pid, "rb") as f:
            return f.read().replace(b"\0", b" ").decode("utf-8", "replace")
    except OSError:
        return ""


def octane_parse(lines):
    """ServerProcessInspector / StartRoadRunnerCommand::writeServerOutput: every stdout line that
    json_decode()s to an array is read as $debug['msg'], $debug['logger'] (and 'level'); a
    missing key is an exception in Laravel, so it is a failure here. Returns (info lines,
    parsed JSON lines)."""
    info, parsed = [], []
    for line in lines:
        try:
            d = json.loads(line)
        except ValueError:
            info.append(line)
            continue
        if not isinstance(d, (dict, list)):
            info.append(line)  # json_decode gives a scalar: not an array, printed as info
            continue
        assert isinstance(d, dict), "a JSON array on stdout breaks Octane: %r" % line
        for key in ("level", "logger", "msg"):
            assert key in d, "JSON line without %r breaks Octane: %r" % (key, line)
        assert d["level"] == d["level"].lower(), line
        assert isinstance(d.get("ts"), int), line
        parsed.append(d)
    return info, parsed


def test_octane_serve_reload_stop():
    o = Octane(app_env="local", workers=2)
    try:
        # the version check Octane runs first (base path as cwd, no config needed)
        v = subprocess.run([o.rr, "--version"], cwd=o.base, capture_output=True, text=True, timeout=10)
        assert v.returncode == 0 and v.stderr == "", v
        assert v.stdout.startswith("rr version 2025.1.0 (build time: "), v.stdout
        assert v.stdout.rstrip().endswith("OS: linux, arch: amd64"), v.stdout
        chk = subprocess.run(["php", "-r", VERSION_CHECK, v.stdout.strip()], capture_output=True,
                             text=True, timeout=10)
        assert chk.returncode == 0, (chk.stdout, chk.stderr)

        o.start()
        r = o.get("/")
        assert r.status == 200, r
        body = json.loads(r.body)
        assert body["env"]["APP_ENV"] == "local", body
        assert body["env"]["APP_BASE_PATH"] == o.base, body
        assert body["env"]["LARAVEL_OCTANE"] == "1", body
        assert body["env"]["RR_MODE"] == "http", body
        assert body["env"]["RR_RPC"] == "tcp://127.0.0.1:%d" % o.rpc_port, body
        static = o.get("/robots.txt")
        assert static.status == 200 and static.body == b"User-agent: *\nDisallow:\n", static
        before = o.php_workers()
        assert len(before) == 2, before

        # octane:reload: stderr must stay empty (Octane throws otherwise), exit 0, new workers
        rel = o.reload(with_version=True)
        assert rel.returncode == 0 and rel.stderr == "" and rel.stdout == "", rel
        after = o.php_workers()
        assert len(after) == 2 and not set(after) & set(before), (before, after)
        assert json.loads(o.get("/").body)["pid"] in after
        # Octane 2.3.x calls it without -o version=3 (§14 item 10)
        rel = o.reload(with_version=False)
        assert rel.returncode == 0 and rel.stderr == "", rel
        again = o.php_workers()
        assert len(again) == 2 and not set(again) & set(after), (after, again)
        assert o.get("/").status == 200

        # octane:stop: SIGTERM, exit 0, nothing left behind
        pids = descendants(o.proc.pid)
        assert o.stop(signal.SIGTERM) == 0, "\n".join(o.lines[-20:])
        assert not [p for p in pids if os.path.exists("/proc/%d" % p) and _cmd(p)], pids
        time.sleep(0.2)  # the pump threads drain the pipes

        info, parsed = octane_parse(o.lines)
        assert any(l.startswith("[INFO] RoadRunner server started; version: 2025.1.0") for l in info), info
        assert len(parsed) > 10, o.lines[:20]
        # worker stderr arrives as {"level":"info","logger":"server","msg":<raw text>}; its msg is
        # Octane's request stream event, which Octane decodes and pretty-prints
        events = [json.loads(d["msg"]) for d in parsed if d["logger"] == "server" and d["msg"].startswith("{")]
        assert any(e.get("type") == "request" and e.get("method") == "GET" for e in events), parsed[-10:]
        assert all(d["level"] == "info" for d in parsed if d["logger"] == "server")
        # Octane shows every stderr line without DEBUG/INFO/WARN as an error: there are none
        assert o.errlines == [], o.errlines
    finally:
        o.cleanup()


def test_octane_production_levels_and_ctrl_c():
    """APP_ENV=production makes Octane pass logs.level=warn: info lines (worker stderr included)
    are filtered, as rr does. Ctrl-C sends SIGINT, then Octane's SIGTERM: still exit 0."""
    o = Octane(app_env="production", workers=1)
    try:
        o.start()
        assert o.get("/").status == 200
        assert o.get("/robots.txt").status == 200
        o.proc.send_signal(signal.SIGINT)
        time.sleep(0.1)
        assert o.stop(signal.SIGTERM) == 0, "\n".join(o.lines[-20:])
        time.sleep(0.2)
        info, parsed = octane_parse(o.lines)
        assert any(l.startswith("[INFO] RoadRunner server started") for l in info), info
        assert all(d["level"] in ("warn", "error") for d in parsed), parsed
        assert o.errlines == [], o.errlines
    finally:
        o.cleanup()
