"""A reload (SIGHUP) re-applies the master's services like a cycle (master/services.c): a changed
rpc.listen / metrics.address / status.address is opened beside the live one and the old one is
closed once the new generation serves; unchanged kv storages keep their data; metrics.collect
follows the config while collectors declared over RPC stay; and a reload that cannot bind a new
address changes nothing at all."""
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request

from fl import APP, Server, free_port, wait_for
from test_services import (JSON, PROTO, Conn, RedisServer, RPCError, deadline, kv_items, kv_req,
                           parse_prometheus, scrape)


def config(port, rpc_port, kv=("local",), status_port=None, metrics_port=None, collect=(),
           extra=""):
    """A one-reactor config: kv lists memory storages, extra more YAML (another section);
    collect: [(name, type)] under metrics.collect."""
    y = ('version: "3"\nreactors: 1\nserver:\n  command: "php %s"\n' % APP +
         "http:\n  address: 127.0.0.1:%s\n  pool:\n    num_workers: 1\n    allocate_timeout: 10s\n"
         "rpc:\n  listen: tcp://127.0.0.1:%d\n" % (port, rpc_port))
    if kv:
        y += "kv:\n" + "".join("  %s:\n    driver: memory\n    config: {}\n" % n for n in kv)
    if status_port:
        y += "status:\n  address: 127.0.0.1:%d\n" % status_port
    if metrics_port:
        y += "metrics:\n  address: 127.0.0.1:%d\n" % metrics_port
        if collect:
            y += "  collect:\n" + "".join(
                "    %s:\n      type: %s\n      help: %s\n" % (n, t, n) for n, t in collect)
    return y + extra


def start(**kw):
    rpc_port = free_port()
    s = Server(yaml=config("{port}", rpc_port, **kw))
    s.rpc_port = rpc_port
    return s


def reload(s, yaml, expect="reload complete"):
    """Writes the config, sends SIGHUP, waits for the outcome line; returns the output after."""
    before = {k: s.output().count(k) for k in ("reload complete", "reload failed")}
    with open(s.config, "w") as f:
        f.write(yaml)
    s.proc.send_signal(signal.SIGHUP)
    done = lambda: any(s.output().count(k) > n for k, n in before.items())
    assert wait_for(done, 30), s.output()[-3000:]
    out = s.output()
    assert out.count(expect) > before[expect], out[-3000:]
    return out


def rpc(port):
    return Conn("tcp://127.0.0.1:%d" % port)


def refused(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
        return False
    except ConnectionRefusedError:
        return True


def http_get(port, path):
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d%s" % (port, path), timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_reload_moves_rpc_listen():
    s = start()
    with s:
        old = rpc(s.rpc_port)
        assert old.call("informer.List", True, JSON) == ["http"]
        new_port = free_port()
        out = reload(s, config(s.port, new_port))
        assert "RPC listens on tcp://127.0.0.1:%d now" % new_port in out, out[-2000:]
        c = rpc(new_port)
        assert c.call("informer.List", True, JSON) == ["http"]
        # the new generation's PHP worker was told the new address
        pid = int(s.get("/pid").body)
        with open("/proc/%d/environ" % pid, "rb") as f:
            env = f.read().split(b"\0")
        assert b"RR_RPC=tcp://127.0.0.1:%d" % new_port in env, env
        c.call("kv.Set", kv_req("local", [("k", b"v")]))
        assert refused(s.rpc_port), "the old rpc.listen still accepts"
        # a connection made before the move is not cut
        assert old.call("informer.List", True, JSON) == ["http"]
        assert kv_items(old.call("kv.MGet", kv_req("local", [("k",)]))) == [("k", b"v", "")]
        old.close()
        c.close()


def test_reload_keeps_kv_memory_and_adds_a_storage():
    s = start()
    with s:
        c = rpc(s.rpc_port)
        t = deadline(120)
        c.call("kv.Set", kv_req("local", [("a", b"kept"), ("t", b"ttl", t)]))
        try:
            c.call("kv.Has", kv_req("extra", [("a",)]))
            raise AssertionError("storage extra exists before the reload")
        except RPCError as e:
            assert "no such storage: extra" in str(e), e
        out = reload(s, config(s.port, s.rpc_port, kv=("local", "extra")))
        assert "storage extra: added" in out, out[-2000:]
        # the same connection (rpc.listen unchanged) and the same storage: keys and TTLs survive
        got = kv_items(c.call("kv.MGet", kv_req("local", [("a",), ("t",)])))
        assert got == [("a", b"kept", ""), ("t", b"ttl", "")], got
        assert kv_items(c.call("kv.TTL", kv_req("local", [("t",)]))) == [("t", b"", t)]
        c.call("kv.Set", kv_req("extra", [("x", b"1")]))
        assert kv_items(c.call("kv.MGet", kv_req("extra", [("x",)]))) == [("x", b"1", "")]
        # a reload that removes a storage frees it; local still keeps its data
        out = reload(s, config(s.port, s.rpc_port, kv=("local",)))
        assert "storage extra: removed" in out, out[-2000:]
        try:
            c.call("kv.Has", kv_req("extra", [("x",)]))
            raise AssertionError("storage extra survived its removal")
        except RPCError as e:
            assert "no such storage: extra" in str(e), e
        assert kv_items(c.call("kv.MGet", kv_req("local", [("a",)]))) == [("a", b"kept", "")]
        c.close()


def test_reload_with_a_taken_status_address_changes_nothing():
    st, mp = free_port(), free_port()
    s = start(status_port=st, metrics_port=mp)
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    tport = taken.getsockname()[1]
    with s:
        pid = s.get("/pid").body
        c = rpc(s.rpc_port)
        c.call("kv.Set", kv_req("local", [("a", b"1")]))
        new_rpc, new_metrics = free_port(), free_port()
        # rpc, metrics and kv change too: none of it may be applied when status cannot bind
        bad = config(s.port, new_rpc, kv=("local", "extra"), status_port=tport,
                     metrics_port=new_metrics)
        out = reload(s, bad, expect="reload failed")
        line = [l for l in out.splitlines() if "reload failed" in l][-1]
        assert "status.address 127.0.0.1:%d" % tport in line and "Address already in use" in line, line
        time.sleep(0.5)
        # the old everything keeps serving: the same PHP worker, RPC, kv, status, metrics
        r = s.get("/pid")
        assert r.status == 200 and r.body == pid, r
        assert c.call("informer.List", True, JSON) == ["http"]
        assert rpc(s.rpc_port).call("informer.List", True, JSON) == ["http"]
        assert kv_items(c.call("kv.MGet", kv_req("local", [("a",)]))) == [("a", b"1", "")]
        try:
            c.call("kv.Has", kv_req("extra", [("a",)]))
            raise AssertionError("the failed reload added a storage")
        except RPCError as e:
            assert "no such storage: extra" in str(e), e
        assert refused(new_rpc) and refused(new_metrics), "the failed reload left a listener open"
        code, body = http_get(st, "/health")
        assert code == 200 and '"plugin_name":"http"' in body, (code, body)
        assert "rr_http_request_total" in scrape(mp)
        # once the port is free, the same change applies
        taken.close()
        reload(s, bad)
        assert rpc(new_rpc).call("informer.List", True, JSON) == ["http"]
        assert wait_for(lambda: http_get(tport, "/ready")[0] == 200, 10)
        assert refused(st) and refused(s.rpc_port) and refused(mp)
        assert "rr_http_request_total" in scrape(new_metrics)
        assert kv_items(c.call("kv.MGet", kv_req("local", [("a",)]))) == [("a", b"1", "")]
        c.close()


test_reload_with_a_taken_status_address_changes_nothing.timeout = 90


def http_requests(samples):
    return sum(v for (name, _), v in samples.items() if name == "rr_http_request_total")


def test_reload_applies_metrics_collect():
    mp = free_port()
    s = start(metrics_port=mp, collect=[("kept", "counter"), ("gone", "gauge")])
    with s:
        c = rpc(s.rpc_port)
        M = lambda m, arg: c.call("metrics." + m, arg, JSON)
        M("Add", {"name": "kept", "value": 3})
        M("Declare", {"name": "runtime", "collector": {"type": "counter", "help": "by the app"}})
        M("Add", {"name": "runtime", "value": 2})
        for _ in range(5):
            assert s.get("/").status == 200
        before, types = parse_prometheus(scrape(mp))
        assert "gone" in types and "added" not in types, types
        served = http_requests(before)
        assert served >= 5, served
        reload(s, config(s.port, s.rpc_port, metrics_port=mp,
                         collect=[("kept", "counter"), ("added", "histogram")]))
        after, types = parse_prometheus(scrape(mp))
        assert types.get("added") == "histogram", types
        assert "gone" not in types, types
        assert after[("kept", frozenset())] == 3  # unchanged: its value stays
        assert after[("runtime", frozenset())] == 2  # declared over RPC: not the config's
        assert http_requests(after) >= served  # built-in counters never go backwards
        M("Observe", {"name": "added", "value": 0.2})
        for _ in range(3):
            assert s.get("/").status == 200
        # the old generation's reactor exits: its counts join the totals, still not backwards
        assert wait_for(lambda: http_requests(parse_prometheus(scrape(mp))[0]) >= served + 3, 15)
        samples = parse_prometheus(scrape(mp))[0]
        assert samples[("added_count", frozenset())] == 1
        c.close()


def redis_kv(port, db=0):
    return ("kv:\n  shared:\n    driver: redis\n    config:\n"
            "      addrs: [\"127.0.0.1:%d\"]\n      db: %d\n" % (port, db))


def kv_client_ids(port):
    out = subprocess.run(["redis-cli", "-p", str(port), "CLIENT", "LIST"], capture_output=True,
                         text=True, timeout=10).stdout
    return [l.split()[0] for l in out.splitlines() if "name=forkline-kv-shared" in l]


def test_reload_kv_redis_keeps_or_replaces_its_connection():
    """Unchanged: the very same Redis connection. Changed (db): a new one; a call in flight on
    the old one gets an error, never a hang or a wrong answer."""
    with RedisServer() as r:
        s = start(kv=(), extra=redis_kv(r.port))
        with s:
            c = rpc(s.rpc_port)
            c.call("kv.Set", kv_req("shared", [("a", b"1")]))
            ids = kv_client_ids(r.port)
            assert len(ids) == 1, ids
            reload(s, config(s.port, s.rpc_port, kv=(), extra=redis_kv(r.port)))
            assert kv_client_ids(r.port) == ids  # the same connection
            assert kv_items(c.call("kv.MGet", kv_req("shared", [("a",)]))) == [("a", b"1", "")]
            # Redis stalls every client: a kv call is in flight while the storage changes
            subprocess.run(["redis-cli", "-p", str(r.port), "CLIENT", "PAUSE", "3000"],
                           capture_output=True, timeout=10)
            seq = c.send("kv.Set", kv_req("shared", [("b", b"2")]), PROTO)
            time.sleep(0.2)
            out = reload(s, config(s.port, s.rpc_port, kv=(), extra=redis_kv(r.port, db=1)))
            assert "storage shared: config changed" in out, out[-2000:]
            flags, rseq, body = c.recv()
            assert rseq == seq and flags & 0x40 and b"redis: client closed" in body, (flags, body)
            # the new storage works, on db 1, over a new connection
            c.call("kv.Set", kv_req("shared", [("c", b"3")]))
            assert kv_items(c.call("kv.MGet", kv_req("shared", [("a",), ("c",)]))) == [
                ("c", b"3", "")]
            assert wait_for(lambda: len(kv_client_ids(r.port)) == 1 and
                            kv_client_ids(r.port) != ids, 10), kv_client_ids(r.port)
            c.close()


test_reload_kv_redis_keeps_or_replaces_its_connection.timeout = 60
