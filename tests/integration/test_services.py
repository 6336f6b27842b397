"""The master's services over RPC (spec §9.3): kv (memory driver), lock, metrics (Prometheus
text at metrics.address), the app logger - driven over real sockets from Python (a tiny goridge
RPC client and a protobuf encoder) and from PHP (php/src/RPC.php) against the real binary."""
import json
import os
import re
import socket
import struct
import subprocess
import tempfile
import threading
import time
import urllib.request
import zlib
from datetime import datetime, timedelta, timezone

from fl import ROOT, Server, free_port, wait_for

PROTO, JSON, ERROR = 0x80, 0x08, 0x40


# ---- goridge RPC client (spec §9.1) ----

def frame(flags, opts, payload):
    hl = 3 + len(opts)
    head = struct.pack("<BBI", 0x10 | hl, flags, len(payload))
    head += struct.pack("<I", zlib.crc32(head) & 0xFFFFFFFF) + b"\0\0"
    return head + b"".join(struct.pack("<I", o) for o in opts) + payload


class RPCError(Exception):
    pass


class Conn:
    seq = 0
    lock = threading.Lock()

    def __init__(self, listen, timeout=10):
        host, port = listen[len("tcp://"):].rsplit(":", 1)
        self.s = socket.create_connection((host, int(port)), timeout=timeout)
        self.buf = b""

    def send(self, method, arg, flags):
        with Conn.lock:  # connections may be driven from several threads
            Conn.seq += 1
            seq = Conn.seq
        m = method.encode()
        self.s.sendall(frame(flags, [seq, len(m)], m + arg))
        return seq

    def recv(self):
        while True:
            if len(self.buf) >= 12:
                hl = self.buf[0] & 0x0F
                (plen,) = struct.unpack("<I", self.buf[2:6])
                total = 4 * hl + plen
                if len(self.buf) >= total:
                    flags = self.buf[1]
                    opts = struct.unpack("<%dI" % (hl - 3), self.buf[12:4 * hl])
                    payload = self.buf[4 * hl:total]
                    self.buf = self.buf[total:]
                    return flags, opts[0], payload[opts[1]:]
            d = self.s.recv(65536)
            if not d:
                raise EOFError("closed")
            self.buf += d

    def call(self, method, arg=b"", flags=PROTO):
        if flags == JSON:
            arg = json.dumps(arg).encode()
        seq = self.send(method, arg, flags)
        f, rseq, body = self.recv()
        assert rseq == seq, (rseq, seq)
        if f & ERROR:
            raise RPCError(body.decode())
        return json.loads(body) if flags == JSON else body

    def close(self):
        self.s.close()


# ---- protobuf (just what kv.v1 and lock.v1beta1 need) ----

def varint(v):
    v &= (1 << 64) - 1
    out = b""
    while v >= 0x80:
        out += bytes([v & 0x7F | 0x80])
        v >>= 7
    return out + bytes([v])


def pb_bytes(field, b):
    if isinstance(b, str):
        b = b.encode()
    return varint(field << 3 | 2) + varint(len(b)) + b


def pb_varint(field, v):
    return varint(field << 3) + varint(v)


def pb_fields(data):
    """[(field, value)] of one message: bytes for LEN fields, ints for varints."""
    out, i = [], 0
    while i < len(data):
        tag, i = read_varint(data, i)
        if tag & 7 == 2:
            n, i = read_varint(data, i)
            out.append((tag >> 3, data[i:i + n]))
            i += n
        elif tag & 7 == 0:
            v, i = read_varint(data, i)
            out.append((tag >> 3, v))
        else:
            raise ValueError("wire type %d" % (tag & 7))
    return out


def read_varint(d, i):
    v = shift = 0
    while True:
        b = d[i]
        i += 1
        v |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return v, i


def kv_req(storage, items):
    """items: [(key, value, timeout)] with value/timeout optional."""
    out = pb_bytes(1, storage) if storage is not None else b""
    for it in items:
        key, value, timeout = (list(it) + [None, None])[:3]
        inner = pb_bytes(1, key)
        if value:
            inner += pb_bytes(2, value)
        if timeout:
            inner += pb_bytes(3, timeout)
        out += pb_bytes(2, inner)
    return out


def kv_items(body):
    res = []
    for f, v in pb_fields(body):
        assert f == 1
        d = {1: b"", 2: b"", 3: b""}
        for g, w in pb_fields(v):
            d[g] = w
        res.append((d[1].decode(), d[2], d[3].decode()))
    return res


def deadline(seconds):
    t = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(seconds=seconds)
    return t.strftime("%Y-%m-%dT%H:%M:%S+00:00")


def lock_req(resource, id, ttl=0, wait=0):
    return pb_bytes(1, resource) + pb_bytes(2, id) + pb_varint(3, ttl) + pb_varint(4, wait)


def lock_ok(body):
    return dict(pb_fields(body)).get(1, 0) == 1


# ---- servers ----

def services_server(extra=""):
    port = free_port()
    listen = "tcp://127.0.0.1:%d" % port
    s = Server(workers=1, reactors=1, extra="rpc:\n  listen: %s\n%s" % (listen, extra))
    s.rpc = listen
    return s


KV_MEM = "kv:\n  local:\n    driver: memory\n    config: {}\n"


def rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


# ---- kv ----

def kv_suite(c, storage):
    """The same checks for every driver."""
    c.call("kv.Clear", kv_req(storage, []))
    assert c.call("kv.Set", kv_req(storage, [("a", b"1"), ("b", b"\x00\xff binary\n"), ("c", b"")])) == b""
    assert kv_items(c.call("kv.Has", kv_req(storage, [("a",), ("b",), ("nope",)]))) == [
        ("a", b"", ""), ("b", b"", "")]
    got = kv_items(c.call("kv.MGet", kv_req(storage, [("a",), ("nope",), ("b",)])))
    assert got == [("a", b"1", ""), ("b", b"\x00\xff binary\n", "")], got
    c.call("kv.Delete", kv_req(storage, [("a",)]))
    assert kv_items(c.call("kv.Has", kv_req(storage, [("a",), ("b",)]))) == [("b", b"", "")]
    # TTL: a key set with 1 s is gone after it; TTL reports the deadline
    t1 = deadline(1)
    c.call("kv.Set", kv_req(storage, [("t", b"x", t1), ("keep", b"y")]))
    ttl = kv_items(c.call("kv.TTL", kv_req(storage, [("t",), ("keep",)])))
    assert ("t", b"", t1) in ttl and ("keep", b"", "") in ttl, ttl
    # MExpire puts a deadline on an existing key
    c.call("kv.MExpire", kv_req(storage, [("keep", None, deadline(1))]))
    time.sleep(2.2)
    assert kv_items(c.call("kv.MGet", kv_req(storage, [("t",), ("keep",), ("b",)]))) == [
        ("b", b"\x00\xff binary\n", "")]
    c.call("kv.Clear", kv_req(storage, []))
    assert c.call("kv.Has", kv_req(storage, [("b",)])) == b""
    # a large value round-trips
    big = os.urandom(3 << 20)
    c.call("kv.Set", kv_req(storage, [("big", big)]))
    assert kv_items(c.call("kv.MGet", kv_req(storage, [("big",)]))) == [("big", big, "")]


def kv_suite_and_errors(c, storage):
    """The suite, then the errors PHP sees, the same for every driver."""
    kv_suite(c, storage)
    for req, text in [
        (kv_req("", [("a",)]), "rpc_has: no storage provided"),
        (kv_req("nope", [("a",)]), "rpc_has: no such storage: nope"),
        (kv_req(storage, [("  ",)]), "empty key"),
    ]:
        try:
            c.call("kv.Has", req)
            raise AssertionError("no error for %r" % req)
        except RPCError as e:
            assert text in str(e), e
    for method, req, text in [
        ("kv.MExpire", kv_req(storage, [("a",)]), "timeout for the key should be set"),
        ("kv.Set", kv_req(storage, [("a", b"1", "tomorrow")]), "parsing time"),
        ("kv.Foo", b"", "rpc: can't find method kv.Foo"),
        ("kv.Has", b"\xff\xff", "cannot parse"),
    ]:
        try:
            c.call(method, req)
            raise AssertionError("no error for %s" % method)
        except RPCError as e:
            assert text in str(e), e
    # a past deadline stores without TTL (upstream memory driver; go-redis with a negative one)
    c.call("kv.Set", kv_req(storage, [("p", b"v", "2001-01-01T00:00:00Z")]))
    assert kv_items(c.call("kv.TTL", kv_req(storage, [("p",)]))) == [("p", b"", "")]
    # MExpire with a past deadline deletes; on a missing key it is a no-op
    c.call("kv.Set", kv_req(storage, [("gone", b"v")]))
    c.call("kv.MExpire", kv_req(storage, [("gone", None, "2001-01-01T00:00:00Z"), ("nokey", None, deadline(5))]))
    assert c.call("kv.Has", kv_req(storage, [("gone",), ("nokey",)])) == b""
    # no items: an empty answer
    assert c.call("kv.MGet", kv_req(storage, [])) == b""
    # the connection and the master survived all of it
    assert kv_items(c.call("kv.MGet", kv_req(storage, [("p",)]))) == [("p", b"v", "")]


def test_kv_memory_suite_and_errors():
    s = services_server(KV_MEM)
    with s:
        c = Conn(s.rpc)
        kv_suite_and_errors(c, "local")
        c.close()


test_kv_memory_suite_and_errors.timeout = 30


class RedisServer:
    """A real redis-server on a free 127.0.0.1 port (or a given one, to restart it), stopped by
    pid. Nothing is persisted."""

    def __init__(self, port=None, args=()):
        self.port = port or free_port()
        self.args = list(args)
        self.proc = None
        self.dir = tempfile.mkdtemp(prefix="fl-redis-")

    def start(self):
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", self.dir] + self.args,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)

        def accepting():
            assert self.proc.poll() is None, "redis-server exited %s" % self.proc.returncode
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return True
            except OSError:
                return False
        wait_for(accepting, timeout=10)
        return self

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def kv_redis_yaml(port, extra=""):
    return ("kv:\n  shared:\n    driver: redis\n    config:\n"
            "      addrs: [\"127.0.0.1:%d\"]\n%s" % (port, extra))


def test_kv_redis_suite_and_errors():
    """The same suite and error texts against a real redis-server; the data is really there."""
    with RedisServer() as r:
        s = services_server(kv_redis_yaml(r.port))
        with s:
            c = Conn(s.rpc)
            kv_suite_and_errors(c, "shared")
            c.call("kv.Set", kv_req("shared", [("seen", b"by redis")]))
            out = subprocess.run(["redis-cli", "-p", str(r.port), "GET", "seen"],
                                 capture_output=True, text=True, timeout=10).stdout
            assert out.strip() == "by redis", out
            name = subprocess.run(["redis-cli", "-p", str(r.port), "CLIENT", "LIST"],
                                  capture_output=True, text=True, timeout=10).stdout
            assert "name=forkline-kv-shared" in name, name
            c.close()


test_kv_redis_suite_and_errors.timeout = 40


def test_kv_redis_restart_under_traffic():
    """redis-server killed and restarted in the middle of kv traffic: calls during the outage fail
    with an error (never a wrong answer), calls after it succeed, and other RPC (informer.List)
    keeps answering meanwhile: the master never blocks on Redis."""
    with RedisServer() as r:
        s = services_server(kv_redis_yaml(r.port))
        with s:
            kv, info = Conn(s.rpc), Conn(s.rpc)
            events, lat, stop = [], [], threading.Event()

            def traffic():
                i = 0
                while not stop.is_set():
                    i += 1
                    v = b"v%d" % i
                    t = time.time()
                    try:
                        kv.call("kv.Set", kv_req("shared", [("k", v)]))
                        got = kv_items(kv.call("kv.MGet", kv_req("shared", [("k",)])))
                        events.append((t, True, v, got))
                    except RPCError as e:
                        events.append((t, False, v, str(e)))
                    time.sleep(0.005)

            def informer():
                while not stop.is_set():
                    t = time.time()
                    assert info.call("informer.List", True, flags=JSON) is not None
                    lat.append((t, time.time() - t))
                    time.sleep(0.01)

            th = [threading.Thread(target=traffic), threading.Thread(target=informer)]
            for t in th:
                t.start()
            try:
                time.sleep(1.0)
                killed = time.time()
                r.stop()
                time.sleep(1.0)
                r.start()
                restarted = time.time()
                time.sleep(3.0)
            finally:
                stop.set()
                for t in th:
                    t.join(10)
            before = [e for e in events if e[0] < killed - 0.05]
            outage = [e for e in events if killed + 0.1 < e[0] < restarted - 0.05]
            after = [e for e in events if e[0] > restarted + 1.8]
            assert before and all(e[1] for e in before), before[:3]
            assert len(outage) >= 5 and not any(e[1] for e in outage), outage[:5]
            assert all("redis" in e[3] and "rpc_set" in e[3] for e in outage), outage[:3]
            assert after and all(e[1] for e in after), [e for e in after if not e[1]][:3]
            # never a wrong answer: a read after a successful write sees that write (or nothing,
            # across the restart, which lost the data)
            for t, ok, v, got in events:
                if ok:
                    assert got in ([("k", v, "")], []), (v, got)
            assert sum(1 for e in events if e[1] and e[3]) > len(before)
            # the master kept answering other RPC during the outage, promptly
            during = [l for t, l in lat if killed < t < restarted]
            assert len(during) >= 10, len(during)
            assert max(l for t, l in lat) < 1.0, max(l for t, l in lat)
            kv.close()
            info.close()
        assert "connected" in s.output(), s.output()[-2000:]


test_kv_redis_restart_under_traffic.timeout = 40


def test_kv_redis_config_errors():
    """Cluster and sentinel configs are refused with a clear error; a bad address too."""
    for cfg, text in [
        ("      addrs: [\"127.0.0.1:1\", \"127.0.0.1:2\"]\n", "forkline supports one redis node"),
        ("      addrs: [\"127.0.0.1:1\"]\n      master_name: mymaster\n", "sentinel is not supported"),
        ("      addrs: [\"nocolon\"]\n", "address must be host:port"),
    ]:
        s = services_server("kv:\n  shared:\n    driver: redis\n    config:\n" + cfg)
        s.start(wait=False)
        try:
            rc = s.proc.wait(15)
        finally:
            s.stop()
        assert rc != 0 and text in s.output(), (rc, s.output())


def test_kv_memory_flat_under_ttl_churn():
    """1M set-with-TTL operations (4 rounds of 250k keys): once the keys expire, the master's RSS
    comes back down (the keys are freed, not leaked), and keeps flat over the rounds."""
    s = services_server(KV_MEM)
    # jemalloc keeps freed pages for 10 s by default: make RSS follow what is really live
    os.environ["MALLOC_CONF"] = "dirty_decay_ms:0,muzzy_decay_ms:0"
    with s:
        del os.environ["MALLOC_CONF"]
        c = Conn(s.rpc)
        value = b"v" * 100
        rounds = []
        for r in range(4):
            for batch in range(125):  # 125 x 2000 = 250k keys a round, 1M in all
                # a deadline already past would store the key without TTL (upstream). 5 s ahead
                # (4-5 s, whole seconds): every key of a round is alive at the peak even on a
                # loaded box, so the peaks of the rounds compare like with like
                t = deadline(5)
                items = [("k%d-%d-%d" % (r, batch, i), value, t) for i in range(2000)]
                c.call("kv.Set", kv_req("local", items))
            peak = rss_kb(s.proc.pid)
            time.sleep(5.2)  # the last batch's TTL (5 s) is over, whatever the setting took
            # one call so the master runs its loop once more after the timer
            # expiry runs on the master's timer: on a loaded machine give it a moment more
            gone = lambda: c.call("kv.Has", kv_req("local", [("k%d-124-1999" % r,)])) == b""
            deadline_t = time.time() + 5
            while not gone() and time.time() < deadline_t:
                time.sleep(0.2)
            assert gone()
            rounds.append((peak, rss_kb(s.proc.pid)))
        c.close()
        # no growth from round to round: the memory of expired keys is reused or returned
        print("kv churn rss (peak kB, after expiry kB) per round:", rounds)
        assert rounds[3][0] < rounds[0][0] + 8 * 1024, rounds
        assert rounds[3][1] < rounds[0][1] + 8 * 1024, rounds


test_kv_memory_flat_under_ttl_churn.timeout = 120


def test_kv_php_client():
    s = services_server(KV_MEM)
    with s:
        code = r'''
require %r;
use Forkline\RPC; use Forkline\Frame;
$rpc = RPC::create($argv[1])->withCodec(Frame::CODEC_PROTO);
function item($k, $v = '', $t = '') { $b = "\x0a" . chr(strlen($k)) . $k; if ($v !== '') $b .= "\x12" . chr(strlen($v)) . $v; if ($t !== '') $b .= "\x1a" . chr(strlen($t)) . $t; return "\x12" . chr(strlen($b)) . $b; }
$req = fn($items) => "\x0a\x05local" . implode('', $items);
$rpc->call('kv.Set', $req([item('php', serialize(['a' => 1]))]));
$out = $rpc->call('kv.MGet', $req([item('php')]));
echo json_encode(['mget' => bin2hex($out)]), "\n";
try { $rpc->call('kv.Has', "\x0a\x04nope" . item('x')); } catch (Throwable $e) { echo json_encode(['err' => $e->getMessage()]), "\n"; }
''' % os.path.join(ROOT, "php", "src", "autoload.php")
        p = subprocess.run(["php", "-r", code, "--", s.rpc], capture_output=True, text=True, timeout=30)
        lines = [json.loads(x) for x in p.stdout.strip().splitlines()]
        assert len(lines) == 2, (p.stdout, p.stderr)
        val = serialize = 'a:1:{s:1:"a";i:1;}'.encode()
        assert kv_items(bytes.fromhex(lines[0]["mget"])) == [("php", val, "")], lines
        assert "no such storage: nope" in lines[1]["err"], lines


def run_php_cache(s, storage):
    p = subprocess.run(["php", os.path.join(ROOT, "tests", "php", "kv_cache.php"), s.rpc, storage],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and " 0 failed" in p.stdout, p.stdout + p.stderr
    assert "FAIL" not in p.stdout and "passed" in p.stdout, p.stdout


def test_kv_php_cache_memory_and_redis():
    """Forkline\\KV\\Cache (PSR-16) against both drivers: tests/php/kv_cache.php."""
    s = services_server(KV_MEM)
    with s:
        run_php_cache(s, "local")
    with RedisServer() as r:
        s = services_server(kv_redis_yaml(r.port))
        with s:
            run_php_cache(s, "shared")


test_kv_php_cache_memory_and_redis.timeout = 60


# ---- lock ----

def test_lock_semantics():
    s = services_server()
    with s:
        a, b = Conn(s.rpc), Conn(s.rpc)
        L = lambda c, m, *args: lock_ok(c.call("lock." + m, lock_req(*args)))
        assert L(a, "Lock", "r", "A", 0, 0)
        assert not L(b, "Lock", "r", "B", 0, 0)          # exclusive: B fails after ~1 ms
        assert not L(b, "LockRead", "r", "B", 0, 0)
        assert L(b, "Exists", "r", "*") and L(a, "Exists", "r", "A") and not L(b, "Exists", "r", "B")
        assert not L(b, "Release", "r", "B")              # not the owner
        assert L(a, "Release", "r", "A") and not L(a, "Exists", "r", "*")
        # shared locks
        assert L(a, "LockRead", "s", "A") and L(b, "LockRead", "s", "B")
        assert not L(a, "Lock", "s", "C", 0, 0)
        assert L(a, "Release", "s", "A") and L(a, "Exists", "s", "B")
        assert L(a, "ForceRelease", "s", "") and not L(a, "Exists", "s", "*")
        # ttl expiry frees a lock whose owner never releases it (the owner "died")
        assert L(a, "Lock", "t", "A", 300000, 0)          # 0.3 s
        t0 = time.time()
        assert L(b, "Lock", "t", "B", 0, 2000000)         # waits, granted when the ttl ends
        assert 0.15 < time.time() - t0 < 1.5, time.time() - t0
        # UpdateTTL extends the holder
        assert L(b, "UpdateTTL", "t", "B", 200000) and not L(a, "UpdateTTL", "t", "A", 200000)
        time.sleep(0.4)
        assert not L(a, "Exists", "t", "*")
        # errors
        for m in ("Lock", "LockRead", "Release", "Exists", "UpdateTTL"):
            try:
                a.call("lock." + m, lock_req("r", ""))
                raise AssertionError("no error for " + m)
            except RPCError as e:
                assert "empty ID is not allowed" in str(e), e


def test_lock_wait_queue_in_order_and_disconnected_waiter():
    s = services_server()
    with s:
        owner = Conn(s.rpc)
        assert lock_ok(owner.call("lock.Lock", lock_req("q", "owner", 0, 0)))
        # a waiter that goes away must not be granted the lock
        gone = Conn(s.rpc)
        gone.send("lock.Lock", lock_req("q", "gone", 0, 10000000), PROTO)
        time.sleep(0.2)
        # a reset, as from a killed client: the server drops the connection (a plain FIN is a
        # half-close to the RPC server, which then still answers what is in flight)
        gone.s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        gone.close()
        waiters, order = [], []
        for i in range(3):
            c = Conn(s.rpc)
            c.send("lock.Lock", lock_req("q", "w%d" % i, 0, 10000000), PROTO)
            waiters.append(c)
            time.sleep(0.05)

        def serve(i, c):
            f, _, body = c.recv()
            order.append(i)
            assert lock_ok(body)
            time.sleep(0.05)
            c.call("lock.Release", lock_req("q", "w%d" % i))

        ts = [threading.Thread(target=serve, args=(i, c)) for i, c in enumerate(waiters)]
        for t in ts:
            t.start()
        t0 = time.time()
        assert lock_ok(owner.call("lock.Release", lock_req("q", "owner")))
        for t in ts:
            t.join(10)
        assert order == [0, 1, 2], order
        assert time.time() - t0 < 2  # served as soon as released, not by polling
        assert not lock_ok(owner.call("lock.Exists", lock_req("q", "gone")))
        assert not lock_ok(owner.call("lock.Exists", lock_req("q", "*")))


PHP_LOCKER = r'''
require %(autoload)r;
use Forkline\RPC; use Forkline\Frame;
$rpc = RPC::create($argv[1])->withCodec(Frame::CODEC_PROTO);
$file = $argv[2]; $id = $argv[3]; $rounds = (int)$argv[4];
function req($res, $id, $ttl, $wait) { $v = function ($n) { $s = ''; while ($n >= 0x80) { $s .= chr($n & 0x7f | 0x80); $n >>= 7; } return $s . chr($n); };
  return "\x0a" . chr(strlen($res)) . $res . "\x12" . chr(strlen($id)) . $id . "\x18" . $v($ttl) . "\x20" . $v($wait); }
$ok = fn($b) => $b === "\x08\x01";
for ($i = 0; $i < $rounds; $i++) {
    if (!$ok($rpc->call('lock.Lock', req('counter', $id, 5000000, 5000000)))) { fwrite(STDERR, "no lock\n"); exit(1); }
    $n = (int)file_get_contents($file);
    usleep(50);
    file_put_contents($file, (string)($n + 1));
    if (!$ok($rpc->call('lock.Release', req('counter', $id, 0, 0)))) { fwrite(STDERR, "not released\n"); exit(1); }
}
echo "done\n";
'''


def test_lock_two_php_processes_mutual_exclusion():
    s = services_server()
    with s:
        counter = os.path.join(s.dir, "counter")
        with open(counter, "w") as f:
            f.write("0")
        code = PHP_LOCKER % {"autoload": os.path.join(ROOT, "php", "src", "autoload.php")}
        procs = [subprocess.Popen(["php", "-r", code, "--", s.rpc, counter, "p%d" % i, "1000"],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for i in range(2)]
        for p in procs:
            out, err = p.communicate(timeout=90)
            assert p.returncode == 0 and "done" in out, (out, err)
        with open(counter) as f:
            assert f.read() == "2000"  # no lost update: the lock excluded the other process


test_lock_two_php_processes_mutual_exclusion.timeout = 120


# ---- metrics ----

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"(,|$)')


def parse_prometheus(text):
    """A strict parser of the text format 0.0.4: {(name, frozenset(labels)): value}, and the
    TYPE of each family. Anything malformed raises."""
    assert text.endswith("\n"), "exposition must end with a newline"
    samples, types, helps = {}, {}, set()
    for line in text.split("\n")[:-1]:
        if line.startswith("# HELP "):
            name = line.split(" ", 3)[2]
            assert name not in helps, "two HELP lines for " + name
            helps.add(name)
            continue
        if line.startswith("# TYPE "):
            _, _, name, typ = line.split(" ")
            assert typ in ("counter", "gauge", "histogram", "summary", "untyped"), line
            assert name not in types, "two TYPE lines for " + name
            types[name] = typ
            continue
        assert line and not line.startswith("#"), "unexpected line %r" % line
        m = SAMPLE.match(line)
        assert m, "bad sample line %r" % line
        name, _, lab, val = m.groups()
        labels = {}
        rest = lab or ""
        while rest:
            lm = LABEL.match(rest)
            assert lm, "bad labels in %r" % line
            assert lm.group(1) not in labels, "duplicate label in %r" % line
            labels[lm.group(1)] = lm.group(2)
            rest = rest[lm.end():]
        fam = re.sub(r"_(bucket|sum|count)$", "", name)
        assert fam in types or name in types, "sample before its TYPE: %r" % line
        key = (name, frozenset(labels.items()))
        assert key not in samples, "duplicate sample %r" % line
        samples[key] = float(val)
    return samples, types


def scrape(port, path="/metrics"):
    with urllib.request.urlopen("http://127.0.0.1:%d%s" % (port, path), timeout=10) as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        return r.read().decode()


def test_metrics_app_collectors_over_rpc_and_config():
    mport = free_port()
    s = services_server(
        "metrics:\n  address: 127.0.0.1:%d\n  collect:\n"
        "    app_jobs:\n      type: histogram\n      help: Job time\n      buckets: [0.1, 1]\n"
        "      labels: [queue]\n" % mport)
    with s:
        c = Conn(s.rpc)
        M = lambda m, arg: c.call("metrics." + m, arg, JSON)
        assert M("Declare", {"name": "orders", "collector": {
            "namespace": "shop", "type": "counter", "help": "Orders \\ placed\nto day",
            "labels": ["method", "status"]}}) is True
        assert M("Declare", {"name": "orders", "collector": {"type": "counter"}}) is True  # no-op
        assert M("Declare", {"name": "temp", "collector": {"type": "gauge", "help": "t"}}) is True
        assert M("Declare", {"name": "lat", "collector": {
            "type": "summary", "help": "l", "objectives": {"0.5": 0.05, "0.99": 0.001}}}) is True
        for _ in range(3):
            M("Add", {"name": "orders", "value": 1, "labels": ["GET", 'a "quoted"\nvalue']})
        M("Add", {"NAME": "orders", "VALUE": 2.5, "LABELS": ["POST", "200"]})  # keys any case
        M("Set", {"name": "temp", "value": 21.5})
        M("Sub", {"name": "temp", "value": 1})
        for v in range(1, 101):
            M("Observe", {"name": "lat", "value": v})
        M("Observe", {"name": "app_jobs", "value": 0.5, "labels": ["default"]})
        M("Observe", {"name": "app_jobs", "value": 5, "labels": ["default"]})
        errors = [
            ("Add", {"name": "nope", "value": 1}, "undefined collector nope, try first Declare"),
            ("Sub", {"name": "orders", "value": 1, "labels": ["a", "b"]},
             "collector orders does not support method Sub"),
            ("Add", {"name": "orders", "value": 1}, "required labels for collector orders"),
            ("Observe", {"name": "temp", "value": 1}, "collector temp does not support method Observe"),
            ("Add", {"name": "orders", "value": -1, "labels": ["a", "b"]}, "counter cannot decrease"),
            ("Declare", {"name": "bad", "collector": {"type": "nope"}}, "unknown collector type"),
            ("Unregister", "ghost", "undefined collector ghost"),
        ]
        for m, arg, text in errors:
            try:
                M(m, arg)
                raise AssertionError("no error for %s %r" % (m, arg))
            except RPCError as e:
                assert text in str(e), e
        text = scrape(mport)
        samples, types = parse_prometheus(text)
        app = {k: v for k, v in types.items() if not k.startswith("rr_")}  # rr_*: built-in
        assert app == {"shop_orders": "counter", "temp": "gauge", "lat": "summary",
                       "app_jobs": "histogram"}, types
        assert samples[("shop_orders", frozenset({("method", "GET"),
                                                  ("status", 'a \\"quoted\\"\\nvalue')}))] == 3
        assert samples[("shop_orders", frozenset({("method", "POST"), ("status", "200")}))] == 2.5
        assert "# HELP shop_orders Orders \\\\ placed\\nto day\n" in text
        assert samples[("temp", frozenset())] == 20.5
        assert samples[("lat", frozenset({("quantile", "0.5")}))] in (50, 51)
        assert samples[("lat", frozenset({("quantile", "0.99")}))] in (99, 100)
        assert samples[("lat_count", frozenset())] == 100 and samples[("lat_sum", frozenset())] == 5050
        q = ("queue", "default")
        assert samples[("app_jobs_bucket", frozenset({q, ("le", "0.1")}))] == 0
        assert samples[("app_jobs_bucket", frozenset({q, ("le", "1")}))] == 1
        assert samples[("app_jobs_bucket", frozenset({q, ("le", "+Inf")}))] == 2
        assert samples[("app_jobs_count", frozenset({q}))] == 2
        assert M("Unregister", "temp") is True
        samples, types = parse_prometheus(scrape(mport))
        assert "temp" not in types
        # anything but /metrics is a 404, and the listener survives garbage
        try:
            scrape(mport, "/nope")
            raise AssertionError("no 404")
        except urllib.error.HTTPError as e:
            assert e.code == 404
        g = socket.create_connection(("127.0.0.1", mport), timeout=5)
        g.sendall(b"\x00garbage\r\n\r\n")
        assert g.recv(100).startswith(b"HTTP/1.1 400")
        g.close()
        parse_prometheus(scrape(mport))
        c.close()


def test_metrics_php_client():
    mport = free_port()
    s = services_server("metrics:\n  address: 127.0.0.1:%d\n" % mport)
    with s:
        code = r'''
require %r;
$rpc = Forkline\RPC::create($argv[1])->withServicePrefix('metrics');
$rpc->call('declare', ['name' => 'php_hits', 'collector' => ['type' => 'counter', 'help' => 'Hits', 'labels' => ['route']]]);
for ($i = 0; $i < 7; $i++) { $rpc->call('add', ['name' => 'php_hits', 'value' => 1, 'labels' => ['/home']]); }
try { $rpc->call('add', ['name' => 'missing', 'value' => 1]); } catch (Throwable $e) { echo $e->getMessage(), "\n"; }
''' % os.path.join(ROOT, "php", "src", "autoload.php")
        p = subprocess.run(["php", "-r", code, "--", s.rpc], capture_output=True, text=True, timeout=30)
        assert "undefined collector missing" in p.stdout, (p.stdout, p.stderr)
        samples, _ = parse_prometheus(scrape(mport))
        assert samples[("php_hits", frozenset({("route", "/home")}))] == 7, samples


# ---- app logger ----

def test_app_logger():
    s = services_server()
    with s:
        c = Conn(s.rpc)
        assert c.call("app.Info", "hello from the app", JSON) is False
        assert c.call("app.Error", "it broke", JSON) is False
        entry = pb_bytes(1, "ctx message") + pb_bytes(2, pb_bytes(1, "user") + pb_bytes(2, "alice")) \
            + pb_bytes(2, pb_bytes(1, "order") + pb_bytes(2, "42"))
        assert c.call("app.WarningWithContext", entry) == b""
        assert c.call("app.LogWithContext", entry) == b""
        assert c.call("app.Log", "RAW-LINE\n", JSON) is False
        try:
            c.call("app.InfoWithContext", b"\xff\xff")
            raise AssertionError("no error")
        except RPCError as e:
            assert "cannot parse" in str(e)
        out = wait_for(lambda: (lambda o: o if "RAW-LINE" in o and "ctx message" in o else None)(
            s.output()), timeout=5)
        assert out, s.output()
        lines = out.splitlines()
        info = [l for l in lines if "hello from the app" in l]
        assert info and "INFO" in info[0].upper() and "app" in info[0], info
        warn = [l for l in lines if "ctx message" in l and "user" in l]
        assert warn and "alice" in warn[0] and "42" in warn[0], lines
        # the raw form keeps the whole last value (upstream cuts its last character)
        assert "ctx message user:alice,order:42" in out, out
        assert "order:42RAW-LINE\n" in out  # app.Log: raw, no newline added by the server
