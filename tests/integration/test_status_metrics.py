"""Built-in metrics (shared-memory counters summed by the master, docs/metrics.md), the status
plugin (/health, /ready, /jobs, status.Status/Ready over RPC; config §2.7) and the PHP clients
php/src/{Lock,Metrics,Logger} against the real binary with real php-cli workers."""
import json
import math
import os
import re
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request

from fl import ROOT, Server, free_port, request, wait_for
from test_services import JSON, PROTO, Conn, RPCError, pb_bytes, pb_fields

AUTOLOAD = os.path.join(ROOT, "php", "src", "autoload.php")


# ---- a strict parser of the Prometheus text format 0.0.4 ----

NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
LABEL_NAME = r"[a-zA-Z_][a-zA-Z0-9_]*"
SAMPLE_RE = re.compile(r"^(%s)(?:\{(.*)\})? (\S+)(?: (-?\d+))?$" % NAME)
LABEL_RE = re.compile(r'(%s)="((?:[^"\\\n]|\\[\\"n])*)"' % LABEL_NAME)
TYPES = ("counter", "gauge", "histogram", "summary", "untyped")


def unescape(s, quote):
    out, i = "", 0
    while i < len(s):
        c = s[i]
        if c == "\\":
            n = s[i + 1]  # a trailing lone backslash raises IndexError: malformed
            assert n in ("\\", "n") or (quote and n == '"'), "bad escape \\%s in %r" % (n, s)
            out += {"\\": "\\", "n": "\n", '"': '"'}[n]
            i += 2
        else:
            out += c
            i += 1
    return out


def parse_value(v):
    if v in ("+Inf", "Inf"):
        return math.inf
    if v == "-Inf":
        return -math.inf
    if v == "NaN":
        return math.nan
    assert re.match(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$", v), "bad value %r" % v
    return float(v)


def parse_labels(text, line):
    labels, rest = {}, text
    while rest:
        m = LABEL_RE.match(rest)
        assert m, "bad labels in %r" % line
        name = m.group(1)
        assert name not in labels, "duplicate label %s in %r" % (name, line)
        labels[name] = unescape(m.group(2), True)
        rest = rest[m.end():]
        if rest:
            assert rest[0] == ",", "labels not separated by a comma in %r" % line
            rest = rest[1:]
            assert rest, "trailing comma in %r" % line
    return labels


class Exposition:
    """families: {name: {"type", "help", "samples": [(sample name, labels dict, value)]}}."""

    def __init__(self, text):
        assert text.endswith("\n"), "the exposition must end with a newline"
        self.families, current, seen = {}, None, set()
        for line in text[:-1].split("\n"):
            assert line, "empty line"
            if line.startswith("#"):
                parts = line.split(" ", 3)
                assert len(parts) >= 3 and parts[1] in ("HELP", "TYPE"), "stray comment %r" % line
                name = parts[2]
                assert re.match("^%s$" % NAME, name), "bad family name %r" % line
                fam = self.families.setdefault(name, {"type": "untyped", "help": None, "samples": []})
                assert not fam["samples"], "%s after the samples of %s" % (parts[1], name)
                assert current == name or name not in seen, "family %s is split" % name
                seen.add(name)
                current = name
                if parts[1] == "HELP":
                    assert fam["help"] is None, "two HELP lines for " + name
                    fam["help"] = unescape(parts[3] if len(parts) > 3 else "", False)
                else:
                    assert len(parts) == 4 and parts[3] in TYPES, "bad TYPE line %r" % line
                    assert fam.get("typed") is None, "two TYPE lines for " + name
                    fam["type"], fam["typed"] = parts[3], True
                continue
            m = SAMPLE_RE.match(line)
            assert m, "bad sample line %r" % line
            sname, ltext, value = m.group(1), m.group(2) or "", m.group(3)
            fam_name = self.family_of(sname)
            assert fam_name == current, "sample %r outside its family's block" % line
            self.families[fam_name]["samples"].append((sname, parse_labels(ltext, line),
                                                       parse_value(value)))
        for name, fam in self.families.items():
            self.check_family(name, fam)

    def family_of(self, sname):
        for suffix in ("_bucket", "_sum", "_count", ""):
            base = sname[:-len(suffix)] if suffix and sname.endswith(suffix) else sname
            fam = self.families.get(base)
            if fam and (not suffix or fam["type"] in ("histogram", "summary")):
                return base
        raise AssertionError("sample %s has no family (TYPE line)" % sname)

    @staticmethod
    def check_family(name, fam):
        keys = set()
        for sname, labels, v in fam["samples"]:
            key = (sname, tuple(sorted(labels.items())))
            assert key not in keys, "duplicate series %r" % (key,)
            keys.add(key)
            if fam["type"] == "counter":
                assert sname == name and v >= 0, "bad counter sample %s %r" % (sname, v)
        if fam["type"] != "histogram":
            return
        series = {}
        for sname, labels, v in fam["samples"]:
            base = tuple(sorted((k, x) for k, x in labels.items() if k != "le"))
            s = series.setdefault(base, {"buckets": [], "sum": None, "count": None})
            if sname == name + "_bucket":
                assert "le" in labels, "bucket without le in " + name
                s["buckets"].append((parse_value(labels["le"]), v))
            elif sname == name + "_sum":
                s["sum"] = v
            elif sname == name + "_count":
                s["count"] = v
            else:
                raise AssertionError("stray sample %s in histogram %s" % (sname, name))
        for base, s in series.items():
            les = [le for le, _ in s["buckets"]]
            assert les == sorted(les) and len(set(les)) == len(les), "le not increasing: %r" % les
            assert les and les[-1] == math.inf, "no +Inf bucket in %s %r" % (name, base)
            counts = [c for _, c in s["buckets"]]
            assert counts == sorted(counts), "buckets not cumulative in %s %r" % (name, base)
            assert s["count"] == counts[-1], "_count != +Inf bucket in %s %r" % (name, base)
            assert s["sum"] is not None and s["sum"] >= 0, "no _sum in %s %r" % (name, base)

    def value(self, sname, **labels):
        fam = self.families[self.family_of(sname)]
        for n, l, v in fam["samples"]:
            if n == sname and l == labels:
                return v
        return None

    def total(self, sname, **match):
        fam = self.families[self.family_of(sname)]
        return sum(v for n, l, v in fam["samples"]
                   if n == sname and all(l.get(k) == x for k, x in match.items()))


def scrape(port):
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=10) as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        return Exposition(r.read().decode())


def test_parser_is_strict():
    good = ('# HELP a_total Things \\\\ and\\nmore\n# TYPE a_total counter\n'
            'a_total{x="q\\"uote\\\\ \\n"} 3\n'
            '# TYPE h histogram\nh_bucket{le="0.5"} 1\nh_bucket{le="+Inf"} 2\nh_sum 1.5\nh_count 2\n')
    e = Exposition(good)
    assert e.value("a_total", x='q"uote\\ \n') == 3
    assert e.families["a_total"]["help"] == "Things \\ and\nmore"
    bad = [
        good[:-1],                                                   # no final newline
        good.replace('le="+Inf"} 2', 'le="+Inf"} 3'),                # _count != +Inf
        good.replace('h_bucket{le="0.5"} 1\n', ''),                 # fine, but then:
        good.replace('h_bucket{le="0.5"} 1\nh_bucket{le="+Inf"} 2',
                     'h_bucket{le="+Inf"} 2\nh_bucket{le="0.5"} 1'),  # le order
        good.replace("h_bucket{le=\"0.5\"} 1", "h_bucket{le=\"0.5\"} 3"),  # not cumulative
        good.replace('x="q', 'x="\\q'),                              # bad escape
        good.replace("a_total{", "a-total{"),                        # bad name
        good.replace("} 3", "} three"),                              # bad value
        good + "a_total 4\n",                                        # split family
        good[good.index("# TYPE h"):] + "x 1\n",                     # sample without family
        good.replace("a_total{x=", "a_total{x=\"1\",x="),             # duplicate label
        good.replace("} 3", "} -3"),                                 # negative counter
    ]
    for i, text in enumerate(bad):
        if i == 2:
            Exposition(text)  # removing one bucket keeps it valid
            continue
        try:
            Exposition(text)
        except (AssertionError, IndexError):
            continue
        raise AssertionError("the parser accepted bad text #%d" % i)


# ---- servers ----

def metrics_server(reactors=2, workers=2, extra="", pool_extra=""):
    mport, rport = free_port(), free_port()
    s = Server(reactors=reactors, workers=workers, extra=(
        pool_extra + "rpc:\n  listen: tcp://127.0.0.1:%d\nmetrics:\n  address: 127.0.0.1:%d\n%s"
        % (rport, mport, extra)))
    s.mport, s.rpc = mport, "tcp://127.0.0.1:%d" % rport
    return s


def send(s, method, path, body=b""):
    with s.connect() as c:
        return request(c, method, path, body=body)


def test_request_counter_matches_across_reactors_and_reload():
    s = metrics_server()
    with s:
        pids, lock = set(), threading.Lock()
        sent = {"GET": 0, "POST": 0, "HEAD": 0, "DELETE": 0}
        by_class = {"2xx": 0, "4xx": 0, "5xx": 0}
        bytes_in = 0

        def one(i):
            nonlocal bytes_in
            kind = i % 5
            if kind == 0:
                r = send(s, "POST", "/echo", b"x" * (i + 1))
                m, cls, n = "POST", "2xx", i + 1
            elif kind == 1:
                r = send(s, "GET", "/status?code=404")
                m, cls, n = "GET", "4xx", 0
            elif kind == 2:
                r = send(s, "HEAD", "/")
                m, cls, n = "HEAD", "2xx", 0
            elif kind == 3:
                r = send(s, "DELETE", "/status?code=503")
                m, cls, n = "DELETE", "5xx", 0
            else:
                r = send(s, "GET", "/pid")
                m, cls, n = "GET", "2xx", 0
            assert r.status // 100 == int(cls[0]), r
            with lock:
                sent[m] += 1
                by_class[cls] += 1
                bytes_in += n
                if kind == 4:
                    pids.add(r.body)

        # parallel clients until both reactors' workers answered (the kernel spreads them)
        i = 0
        while len(pids) < 2 or i < 200:
            ts = [threading.Thread(target=one, args=(i + k,)) for k in range(10)]
            for t in ts:
                t.start()
            for t in ts:
                t.join()
            i += 10
            assert i < 5000, "only one reactor ever answered"
        e = scrape(s.mport)
        total = sum(sent.values())
        assert e.total("rr_http_request_total") == total, (e.total("rr_http_request_total"), total)
        for m, n in sent.items():
            assert e.total("rr_http_request_total", method=m) == n, (m, n)
        for cls, n in by_class.items():
            assert e.total("rr_http_request_total", status=cls) == n, (cls, n)
            assert e.value("rr_http_request_duration_seconds_count", status=cls) == n
        assert e.value("rr_http_read_bytes_total") == bytes_in
        assert e.families["rr_http_request_duration_seconds"]["type"] == "histogram"
        assert e.value("rr_http_total_workers") == 2 and e.value("rr_http_workers_ready") == 2
        assert e.value("rr_http_workers_by_state", state="ready") == 2

        # a reload replaces every reactor: the totals must not go backwards
        s.proc.send_signal(signal.SIGHUP)
        assert wait_for(lambda: "reload complete" in s.output(), timeout=20), s.output()
        assert wait_for(lambda: len(s.reactors()) == 2, timeout=10)
        e2 = scrape(s.mport)
        assert e2.total("rr_http_request_total") == total, e2.total("rr_http_request_total")
        for k in range(7):
            assert send(s, "GET", "/").status == 200
        e3 = scrape(s.mport)
        assert e3.total("rr_http_request_total") == total + 7
        assert e3.value("rr_http_request_duration_seconds_count", status="2xx") == \
            by_class["2xx"] + 7
        assert e3.value("rr_http_total_workers") == 2  # the old generation's gauges are gone


test_request_counter_matches_across_reactors_and_reload.timeout = 90


def test_worker_gauges_queue_and_restarts():
    s = metrics_server(reactors=1, workers=1, pool_extra="")
    s_cfg = open(s.config).read().replace("    allocate_timeout: 10s\n",
                                          "    allocate_timeout: 10s\n    max_jobs: 3\n")
    with open(s.config, "w") as f:
        f.write(s_cfg)
    with s:
        for _ in range(9):
            assert send(s, "GET", "/").status == 200
        ok = wait_for(lambda: scrape(s.mport).value(
            "rr_http_worker_restarts_total", reason="maxJobsReached") == 3, timeout=5)
        assert ok, scrape(s.mport).families["rr_http_worker_restarts_total"]
        # a worker that dies mid-request is an "errored" restart
        assert send(s, "GET", "/exit").status >= 500
        assert wait_for(lambda: scrape(s.mport).value(
            "rr_http_worker_restarts_total", reason="errored") == 1, timeout=5)
        # queue depth: one request runs, one waits; the reactor stops accepting beyond that
        res = []
        ts = [threading.Thread(target=lambda: res.append(send(s, "GET", "/sleep?ms=2000")))
              for _ in range(2)]
        for t in ts:
            t.start()
            time.sleep(0.2)
        e = wait_for(lambda: (lambda e: e if e.value("rr_http_requests_queue") == 1 else None)(
            scrape(s.mport)), timeout=4)
        assert e, "no queued request seen"
        assert e.value("rr_http_workers_working") == 1 and e.value("rr_http_workers_ready") == 0
        for t in ts:
            t.join()
        assert [r.status for r in res] == [200, 200]
        e = scrape(s.mport)
        assert e.value("rr_http_requests_queue") == 0 and e.value("rr_http_workers_ready") == 1


test_worker_gauges_queue_and_restarts.timeout = 60


PHP_METRICS = r'''
require %(autoload)r;
use Forkline\Metrics\Collector; use Forkline\Metrics\Metrics; use Forkline\Metrics\MetricsException;
$m = new Metrics(Forkline\RPC::create($argv[1]));
$m->declare('php_orders', Collector::counter()->withNamespace('shop')->withHelp('Orders placed')
    ->withLabels('method', 'status'));
$m->declare('php_orders', Collector::counter());  // existing: nothing happens
for ($i = 0; $i < 5; $i++) { $m->add('php_orders', 1, ['POST', "say \"hi\"\n"]); }
$m->add('php_orders', 2.5, ['GET', '200']);
$m->declare('php_temp', Collector::gauge()->withHelp('t'));
$m->set('php_temp', 20); $m->sub('php_temp', 1.5);
$m->declare('php_lat', Collector::histogram(0.1, 1.0)->withHelp('latency'));
$m->observe('php_lat', 0.5); $m->observe('php_lat', 3);
$m->declare('php_gone', Collector::gauge());
$m->unregister('php_gone');
foreach ([fn() => $m->add('nope', 1), fn() => $m->add('php_orders', 1), fn() => $m->unregister('php_gone')] as $f) {
    try { $f(); echo "no error\n"; } catch (MetricsException $e) { echo $e->getMessage(), "\n"; }
}
'''


def test_app_counter_from_php_client_and_rpc_calls():
    s = metrics_server(reactors=1, workers=1)
    with s:
        p = subprocess.run(["php", "-r", PHP_METRICS % {"autoload": AUTOLOAD}, "--", s.rpc],
                           capture_output=True, text=True, timeout=30)
        out = p.stdout.splitlines()
        assert p.returncode == 0 and len(out) == 3, (p.stdout, p.stderr)
        assert "undefined collector nope" in out[0], out
        assert "required labels for collector php_orders" in out[1], out
        assert "undefined collector php_gone" in out[2], out
        e = scrape(s.mport)
        assert e.families["shop_php_orders"]["type"] == "counter"
        assert e.families["shop_php_orders"]["help"] == "Orders placed"
        assert e.value("shop_php_orders", method="POST", status='say "hi"\n') == 5
        assert e.value("shop_php_orders", method="GET", status="200") == 2.5
        assert e.value("php_temp") == 18.5
        assert e.value("php_lat_bucket", le="1") == 1 and e.value("php_lat_count") == 2
        assert "php_gone" not in e.families
        # built-in: every RPC call the client made, by method
        assert e.value("rr_rpc_calls_total", method="metrics.Add") == 8  # 6 + 2 failed
        assert e.value("rr_rpc_calls_total", method="metrics.Declare") == 5
        assert e.value("rr_rpc_calls_total", method="metrics.Unregister") == 2


# ---- status ----

def status_server(code=None, extra=""):
    sport = free_port()
    st = "status:\n  address: 127.0.0.1:%d\n" % sport
    if code:
        st += "  unavailable_status_code: %d\n" % code
    s = metrics_server(extra=st + extra)
    s.sport = sport
    return s


def check(s, path):
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d%s" % (s.sport, path), timeout=10) as r:
            return r.status, r.headers["Content-Type"], json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, e.headers["Content-Type"], json.loads(e.read())


def status_rpc(c, method, plugin, codec=PROTO):
    if codec == PROTO:
        d = dict(pb_fields(c.call("status." + method, pb_bytes(1, plugin))))
        return d.get(1, 0), d.get(2, b"").decode()
    r = c.call("status." + method, {"plugin": plugin}, JSON)
    return r.get("code", 0), r.get("message", "")


def test_health_ready_endpoints_and_rpc():
    s = status_server()
    with s:
        ok = [{"plugin_name": "http", "error_message": "", "status_code": 200}]
        for path in ("/health", "/ready", "/health?plugin=http", "/ready?plugin=http&plugin=http"):
            code, ctype, body = check(s, path)
            assert code == 200 and ctype == "application/json", (path, code, body)
            assert body == ok * (2 if path.count("plugin=") == 2 else 1), (path, body)
        code, _, body = check(s, "/ready?plugin=http&plugin=nope%21")
        assert code == 503, code
        assert body[1] == {"plugin_name": "nope!", "error_message": "plugin not found",
                           "status_code": 404}, body
        code, _, body = check(s, "/jobs")  # no jobs section: nothing to send work to
        assert code == 503 and body == [], (code, body)
        with socket.create_connection(("127.0.0.1", s.sport), timeout=5) as g:
            assert request(g, "GET", "/nope").status == 404
        c = Conn(s.rpc)
        assert status_rpc(c, "Status", "http") == (200, "")
        assert status_rpc(c, "Ready", "http") == (200, "")
        assert status_rpc(c, "Ready", "http", JSON) == (200, "")
        for m in ("Status", "Ready"):
            try:
                status_rpc(c, m, "nope")
                raise AssertionError("no error")
            except RPCError as e:
                assert "no such plugin: nope" in str(e), e
        c.close()


def test_ready_fails_while_stopping_health_stays():
    s = status_server(code=555)
    s_cfg = open(s.config).read() + "endure:\n  grace_period: 10s\n"
    with open(s.config, "w") as f:
        f.write(s_cfg)
    s.start()
    try:
        assert check(s, "/ready")[0] == 200 and check(s, "/health")[0] == 200
        c = Conn(s.rpc)
        res = {}
        t = threading.Thread(target=lambda: res.setdefault("r", send(s, "GET", "/sleep?ms=4000")))
        t.start()
        assert wait_for(lambda: scrape(s.mport).value("rr_http_workers_working") == 1, timeout=5)
        s.proc.send_signal(signal.SIGTERM)
        assert wait_for(lambda: "stopping" in s.output(), timeout=5)
        code, _, body = check(s, "/ready")
        assert code == 555, (code, body)
        assert body == [{"plugin_name": "http", "error_message": "the server is stopping",
                         "status_code": 555}], body
        code, _, body = check(s, "/health")  # the slow request is still being served
        assert code == 200 and body[0]["status_code"] == 200, (code, body)
        assert status_rpc(c, "Ready", "http") == (503, "the server is stopping")
        assert status_rpc(c, "Status", "http") == (200, "")
        assert check(s, "/jobs")[0] == 555
        t.join()
        assert res["r"].status == 200 and res["r"].body == b"slept 4000"
        assert s.proc.wait(15) == 0
    finally:
        s.stop()


test_ready_fails_while_stopping_health_stays.timeout = 60


# ---- PHP clients: lock, logger ----

PHP_LOCK = r'''
require %(autoload)r;
use Forkline\Lock\Lock;
$lock = new Lock(Forkline\RPC::create($argv[1]));
[$mode, $file] = [$argv[2], $argv[3] ?? ''];
switch ($mode) {
case 'count':  // $argv[4] rounds of read-modify-write under the exclusive lock
    for ($i = 0; $i < (int)$argv[4]; $i++) {
        $id = $lock->lock('counter', null, 5, 5);
        if ($id === false) { fwrite(STDERR, "no lock\n"); exit(1); }
        $n = (int)file_get_contents($file);
        usleep(20);
        file_put_contents($file, (string)($n + 1));
        if (!$lock->release('counter', $id)) { fwrite(STDERR, "not released\n"); exit(1); }
    }
    echo "done\n";
    break;
case 'read':  // hold a read lock until $file exists
    $id = $lock->lockRead('shared', null, 10, 2);
    echo $id === false ? "failed\n" : "reading\n";
    while (!file_exists($file)) usleep(10000);
    $lock->release('shared', $id);
    break;
case 'die':  // take the lock for 0.6 s and die without releasing it
    echo $lock->lock('orphan', 'dead-owner', 0.6) === 'dead-owner' ? "locked\n" : "failed\n";
    posix_kill(getmypid(), SIGKILL);
    break;
case 'api':
    $out = [];
    $out[] = $lock->lock('r', 'A', new DateInterval('PT5S'));
    $out[] = $lock->lock('r', 'B');                       // held: false after ~1 ms
    $out[] = $lock->exists('r') && $lock->exists('r', 'A') && !$lock->exists('r', 'B');
    $out[] = $lock->updateTTL('r', 'A', 0.3) && !$lock->updateTTL('r', 'B', 1);
    $out[] = $lock->release('r', 'B');                    // not the owner
    $out[] = $lock->forceRelease('r') && !$lock->exists('r');
    $out[] = strlen((string)$lock->lockRead('r2'));       // a generated UUID
    try { $lock->release('r2', ''); $out[] = 'no error'; } catch (Forkline\ServiceException $e) { $out[] = $e->getMessage(); }
    echo json_encode($out), "\n";
    break;
}
'''


def php_lock(s, *args, **kw):
    return subprocess.Popen(["php", "-r", PHP_LOCK % {"autoload": AUTOLOAD}, "--", s.rpc] +
                            [str(a) for a in args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kw)


def test_php_lock_client():
    s = metrics_server(reactors=1, workers=1)
    with s:
        out, err = php_lock(s, "api").communicate(timeout=30)
        res = json.loads(out)
        assert res[:6] == ["A", False, True, True, False, True], (res, err)
        assert res[6] == 36, res
        assert "empty ID is not allowed" in res[7], res
        # mutual exclusion: two PHP processes, 1000 rounds each, one shared counter file
        counter = os.path.join(s.dir, "counter")
        with open(counter, "w") as f:
            f.write("0")
        procs = [php_lock(s, "count", counter, 1000) for _ in range(2)]
        for p in procs:
            out, err = p.communicate(timeout=90)
            assert p.returncode == 0 and out == "done\n", (out, err)
        with open(counter) as f:
            assert f.read() == "2000"  # no lost update
        # read locks are shared between processes; a writer waits for both
        flag = os.path.join(s.dir, "release")
        readers = [php_lock(s, "read", flag) for _ in range(2)]
        for r in readers:
            assert r.stdout.readline() == "reading\n"
        c = Conn(s.rpc)
        lk = lambda m, res, id, ttl=0, wait=0: dict(pb_fields(c.call(
            "lock." + m, pb_bytes(1, res) + pb_bytes(2, id) + bytes([0x18]) + bytes([ttl]) +
            bytes([0x20]) + bytes([wait])))).get(1, 0) == 1
        assert not lk("Lock", "shared", "writer")
        open(flag, "w").close()
        for r in readers:
            r.communicate(timeout=10)
        assert wait_for(lambda: lk("Lock", "shared", "writer"), timeout=5)
        # a lock whose owner died is freed by its ttl
        out, _ = php_lock(s, "die").communicate(timeout=30)
        assert out == "locked\n"
        assert lk("Exists", "orphan", "dead-owner")
        t0 = time.time()
        p = subprocess.run(["php", "-r", "require %r; var_dump((new Forkline\\Lock\\Lock("
                            "Forkline\\RPC::create($argv[1])))->lock('orphan', 'heir', 5, 3));"
                            % AUTOLOAD, "--", s.rpc], capture_output=True, text=True, timeout=30)
        assert 'string(4) "heir"' in p.stdout, (p.stdout, p.stderr)
        assert time.time() - t0 < 3, time.time() - t0
        c.close()


test_php_lock_client.timeout = 150


def test_php_logger_client():
    s = metrics_server(reactors=1, workers=1)
    with s:
        code = r'''
require %r;
$log = new Forkline\Logger\Logger(Forkline\RPC::create($argv[1]));
$log->info('plain info line');
$log->error('order failed', ['order' => 42, 'user' => 'alice', 'vip' => true, 'tags' => ['a', 'b']]);
$log->warning('careful');
$log->debug('debugging', ['k' => 'v']);
$log->log("RAW-FROM-PHP\n");
$log->log('raw with context', ['a' => 'xyz']);
echo "ok\n";
''' % AUTOLOAD
        p = subprocess.run(["php", "-r", code, "--", s.rpc], capture_output=True, text=True,
                           timeout=30)
        assert p.stdout == "ok\n", (p.stdout, p.stderr)
        out = wait_for(lambda: (lambda o: o if "raw with context" in o else None)(s.output()), 5)
        assert out, s.output()
        lines = out.splitlines()
        err = [l for l in lines if "order failed" in l]
        assert err and "ERROR" in err[0].upper(), lines
        for frag in ('"order":"42"', '"user":"alice"', '"vip":"true"', r'"tags":"[\"a\",\"b\"]"'):
            assert frag in err[0], (frag, err[0])
        assert any("plain info line" in l for l in lines)
        assert any("careful" in l for l in lines)
        assert "RAW-FROM-PHP\n" in out
        assert "raw with context a:xyz" in out


# ---- jobs: broker counters per pipeline, the jobs pool, /jobs ----

JOBS_WORKER = os.path.join(ROOT, "tests", "php", "jobs_worker.php")


def push_job(c, pipeline, payload, id):
    job = (pb_bytes(1, "T") + pb_bytes(2, id) + pb_bytes(3, json.dumps(payload)) +
           pb_bytes(5, pb_bytes(2, pipeline)))
    return c.call("jobs.Push", pb_bytes(1, job))


def test_jobs_counters_and_status_jobs():
    s = status_server(extra=(
        "jobs:\n  consume: [mail]\n  pool:\n    num_workers: 2\n    command: \"php %s\"\n"
        "  pipelines:\n    mail:\n      driver: memory\n      config:\n        priority: 10\n"
        % JOBS_WORKER))
    with s:
        assert wait_for(lambda: s.output().count("jobs pool ready") >= 1, timeout=15)
        c = Conn(s.rpc)
        sink, marks = os.path.join(s.dir, "sink"), os.path.join(s.dir, "marks")
        os.mkdir(marks)
        jobs = [{"sink": sink}] * 5 + [{"sink": sink, "fail_first": marks}] * 2 + \
            [{"nack": "not today"}]
        for i, p in enumerate(jobs):
            assert push_job(c, "mail", p, "job-%d" % i) == b""
        try:
            push_job(c, "nope", {}, "x")
            raise AssertionError("no error")
        except RPCError:
            pass

        def counts():
            e = scrape(s.mport)
            return tuple(e.value(n, pipeline="mail") for n in (
                "rr_jobs_push_ok", "rr_jobs_jobs_ok", "rr_jobs_jobs_err", "rr_jobs_jobs_dead"))
        assert wait_for(lambda: counts() == (8, 7, 3, 1), timeout=15), counts()
        e = scrape(s.mport)
        assert e.value("rr_jobs_total_workers") == 2 and e.value("rr_http_total_workers") == 2
        assert e.value("rr_rpc_calls_total", method="jobs.Push") == 9
        code, _, body = check(s, "/jobs")
        assert code == 200 and [j["pipeline"] for j in body] == ["mail"], body
        assert body[0]["driver"] == "memory" and body[0]["ready"] is True, body
        assert set(body[0]) >= {"pipeline", "driver", "queue", "active", "delayed", "reserved",
                                "ready", "priority", "error_message"}, body
        code, _, body = check(s, "/health")
        assert code == 200 and [b["plugin_name"] for b in body] == ["http", "jobs"], body
        assert status_rpc(c, "Ready", "jobs") == (200, "")
        c.close()


test_jobs_counters_and_status_jobs.timeout = 60
