"""The HTTP front, end to end: forms and uploads, streaming, early hints, limits and timeouts,
request smuggling, trusted proxies, response rules (header injection, trailers, status range),
TLS and the https redirect, the access log. Real binary, real php-cli workers, real sockets."""
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time

from fl import BIN, Reader, Server, free_port, raw_request, request, wait_for


# ---- helpers ----------------------------------------------------------------------------------

def multipart(fields, files, boundary="----forklineTestBoundary7MA4YWxk"):
    """fields: [(name, value)], files: [(name, filename, content_type, bytes)]."""
    out = b""
    for name, value in fields:
        out += (b"--%s\r\nContent-Disposition: form-data; name=\"%s\"\r\n\r\n%s\r\n"
                % (boundary.encode(), name.encode(), value.encode()))
    for name, filename, ctype, data in files:
        out += (b"--%s\r\nContent-Disposition: form-data; name=\"%s\"; filename=\"%s\"\r\n"
                b"Content-Type: %s\r\n\r\n" % (boundary.encode(), name.encode(), filename.encode(),
                                               ctype.encode()))
        out += data + b"\r\n"
    out += b"--%s--\r\n" % boundary.encode()
    return out, "multipart/form-data; boundary=%s" % boundary


def post(s, path, body, ctype, extra=None):
    h = {"Content-Type": ctype}
    h.update(extra or {})
    with s.connect() as c:
        return request(c, "POST", path, h, body)


def closed_by_peer(sock, timeout):
    """True when the server closes the connection (EOF or reset) within timeout seconds."""
    sock.settimeout(timeout)
    try:
        while True:
            if not sock.recv(65536):
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except socket.timeout:
        return False


def uploads_server(tmp, extra="", **kw):
    return Server(extra="  uploads:\n    dir: %s\n    forbid: [\".php\"]\n%s" % (tmp, extra), **kw)


# ---- forms ------------------------------------------------------------------------------------

def test_urlencoded_form_parsed_both_codecs():
    body = b"name=J%C3%BCrgen+M&tags[]=a&tags[]=b&user[address][city]=Berlin&n=1&n=2"
    want = {"name": "J\u00fcrgen M", "tags": ["a", "b"], "user": {"address": {"city": "Berlin"}},
            "n": "2"}
    for codec in ("proto", "json"):
        with Server(reactors=1, workers=1, extra="  codec: %s\n" % codec) as s:
            r = post(s, "/info?q=1", body, "application/x-www-form-urlencoded")
            assert r.status == 200, r
            info = json.loads(r.body)
            assert info["parsed"] is True and info["parsedBody"] == want, (codec, info)
            assert info["query"] == {"q": "1"}, info  # the query stays out of the form tree
            # a leaf that later gets sub-keys: RoadRunner's "invalid multiple values" → 400
            r = post(s, "/info", b"a=1&a[b]=2", "application/x-www-form-urlencoded")
            assert r.status == 400, r
            assert "invalid multiple values to key 'a'" in s.output(), s.output()[-2000:]
            # http.raw_body is not set, but other types stay raw
            r = post(s, "/echo", b"a=1", "text/plain")
            assert r.status == 200 and r.body == b"a=1", r


def test_raw_body_keeps_forms_unparsed():
    with Server(reactors=1, workers=1, extra="  raw_body: true\n") as s:
        r = post(s, "/info", b"a=1&b=2", "application/x-www-form-urlencoded")
        info = json.loads(r.body)
        assert info["parsed"] is False and info["parsedBody"] is None, info
        r = post(s, "/echo", b"a=1&b=2", "application/x-www-form-urlencoded")
        assert r.body == b"a=1&b=2", r


def test_multipart_two_files_sha1_and_cleanup():
    for codec in ("proto", "json"):
        check_multipart_two_files(codec)


def check_multipart_two_files(codec):
    tmp = tempfile.mkdtemp(prefix="fl-up-")
    try:
        a, b = os.urandom(100 * 1024), os.urandom(1024 * 1024 + 7)
        body, ctype = multipart([("title", "two files"), ("meta[kind]", "test")],
                                [("docs[]", "a.bin", "application/octet-stream", a),
                                 ("docs[]", "b.txt", "text/plain", b),
                                 ("evil", "x.PHP", "application/x-php", b"<?php")])
        with uploads_server(tmp, "  codec: %s\n" % codec, reactors=1, workers=1) as s, \
                s.connect() as c:
            r = request(c, "POST", "/upload", {"Content-Type": ctype}, body)
            assert r.status == 200, r
            out = json.loads(r.body)
            files = out["files"]
            assert out["parsed"] is True and out["body"] == {"title": "two files",
                                                              "meta": {"kind": "test"}}, out
            fa, fb, evil = files["docs[0]"], files["docs[1]"], files["evil"]
            assert fa["sha1"] == hashlib.sha1(a).hexdigest() and fa["size"] == len(a), fa
            assert fb["sha1"] == hashlib.sha1(b).hexdigest() and fb["size"] == len(b), fb
            assert fa["name"] == "a.bin" and fb["mime"] == "text/plain" and fa["error"] == 0, fa
            assert fa["tmpName"].startswith(tmp + "/upload"), fa
            assert evil["error"] == 8 and evil["tmpName"] == "" and evil["size"] == 0, evil
            assert fa["exists"] and fb["onDisk"] == len(b), out
            # gone once the response is complete, the keep-alive connection still open
            assert wait_for(lambda: os.listdir(tmp) == [], 5), os.listdir(tmp)
            assert not os.path.exists(fa["tmpName"])
            assert request(c, "GET", "/pid").status == 200
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def test_upload_temp_files_removed_after_worker_crash_and_client_gone():
    tmp = tempfile.mkdtemp(prefix="fl-up-")
    try:
        body, ctype = multipart([], [("f", "a.bin", "application/octet-stream", os.urandom(65536))])
        with uploads_server(tmp, reactors=1, workers=1) as s:
            r = post(s, "/exit", body, ctype)  # the worker exits mid-request
            assert r.status == 500, r
            assert wait_for(lambda: os.listdir(tmp) == [], 5), os.listdir(tmp)
            # the client goes away halfway through its upload: the partial file goes too
            with s.connect() as c:
                c.sendall(raw_request("POST", "/upload", {"Content-Type": ctype,
                                                          "Content-Length": str(len(body))},
                                      body[: len(body) // 2]))
                assert wait_for(lambda: len(os.listdir(tmp)) == 1, 5), os.listdir(tmp)
            assert wait_for(lambda: os.listdir(tmp) == [], 5), os.listdir(tmp)
            # and the worker pool is fine afterwards
            assert s.get("/pid").status == 200
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def test_50mb_upload_with_100mb_limit():
    tmp = tempfile.mkdtemp(prefix="fl-up-")
    try:
        data = os.urandom(50 * 1024 * 1024)
        body, ctype = multipart([("x", "y")], [("big", "big.bin", "application/octet-stream", data)])
        with uploads_server(tmp, "  max_request_size: 100\n", reactors=1, workers=1) as s:
            r = post(s, "/upload", body, ctype)
            assert r.status == 200, r
            f = json.loads(r.body)["files"]["big"]
            assert f["size"] == len(data) and f["sha1"] == hashlib.sha1(data).hexdigest(), f
            assert wait_for(lambda: os.listdir(tmp) == [], 5), os.listdir(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


test_50mb_upload_with_100mb_limit.timeout = 120


# ---- limits and request smuggling -------------------------------------------------------------

def test_2mb_body_against_1mb_limit_413_and_closed():
    body = os.urandom(2 * 1024 * 1024)
    with Server(reactors=1, workers=1, extra="  max_request_size: 1\n") as s:
        # decided from Content-Length before the body is read
        with s.connect() as c:
            c.sendall(raw_request("POST", "/echo", {"Content-Length": str(len(body))}))
            rd = Reader(c)
            r = rd.read()
            assert r.status == 413 and r.header("Connection") == "close", r
            assert closed_by_peer(c, 5)
        # the whole body sent at once: the client still reads the 413 (lingering close)
        with s.connect() as c:
            try:
                c.sendall(raw_request("POST", "/echo", {"Content-Length": str(len(body))}, body))
            except (BrokenPipeError, ConnectionResetError):
                pass
            r = Reader(c).read()
            assert r.status == 413, r
            assert closed_by_peer(c, 5)
        # chunked: no length up front, so it is counted while it is read
        with s.connect() as c:
            c.sendall(raw_request("POST", "/echo", {"Transfer-Encoding": "chunked"}))
            try:
                for i in range(0, len(body), 65536):
                    piece = body[i:i + 65536]
                    c.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
            except (BrokenPipeError, ConnectionResetError):
                pass
            r = Reader(c).read()
            assert r.status == 413 and r.header("Connection") == "close", r
            assert closed_by_peer(c, 5)
        # a body under the limit still works on a new connection
        with s.connect() as c:
            r = request(c, "POST", "/echo", {}, body[: 512 * 1024])
            assert r.status == 200 and len(r.body) == 512 * 1024, r


def test_request_smuggling_400_and_close():
    cases = [
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"0\r\n\r\nGET /pid HTTP/1.1\r\nHost: x\r\n\r\n",
        b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
        b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\nhello",
        b"GET /pid HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        b"GET /pid HTTP/1.1\r\n\r\n",  # HTTP/1.1 without Host
    ]
    with Server(reactors=1, workers=1) as s:
        for raw in cases:
            with s.connect() as c:
                c.sendall(raw)
                r = Reader(c).read()
                assert r.status == 400 and r.header("Connection") == "close", (raw, r)
                assert closed_by_peer(c, 5), raw
        assert s.get("/pid").status == 200


def test_expect_100_continue():
    with Server(reactors=1, workers=1) as s:
        with s.connect() as c:
            c.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                      b"Expect: 100-continue\r\n\r\n")
            rd = Reader(c)
            r = rd.read()
            assert r.status == 100, r  # before a single body byte was sent
            c.sendall(b"hello")
            r = rd.read()
            assert r.status == 200 and r.body == b"hello", r
        with s.connect() as c:
            c.sendall(b"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: magic\r\n\r\n")
            assert Reader(c).read().status == 417


# ---- timeouts ---------------------------------------------------------------------------------

TIMEOUTS = "  read_header_timeout: 1s\n  read_timeout: 1s\n  write_timeout: 1s\n  idle_timeout: 1s\n"


def test_slowloris_cut_off_while_others_are_served():
    with Server(reactors=1, workers=1, extra=TIMEOUTS) as s:
        slow = s.connect()
        t0 = time.time()
        slow.sendall(b"GET /pid HTTP/1.1\r\nHost: x\r\n")
        stop = threading.Event()

        def drip():  # one header byte every 100 ms: never a complete request
            try:
                while not stop.is_set():
                    slow.sendall(b"X")
                    time.sleep(0.1)
            except OSError:
                pass

        t = threading.Thread(target=drip)
        t.start()
        # meanwhile other clients are served at once
        for _ in range(5):
            t1 = time.time()
            assert s.get("/pid").status == 200
            assert time.time() - t1 < 0.5
        assert closed_by_peer(slow, 5)
        took = time.time() - t0
        stop.set()
        t.join()
        slow.close()
        assert 0.8 < took < 2.5, took
        assert "read header timeout" in s.output(), s.output()[-2000:]


def test_body_and_idle_timeouts():
    with Server(reactors=1, workers=1, extra=TIMEOUTS) as s:
        # a body that stops coming
        with s.connect() as c:
            t0 = time.time()
            c.sendall(raw_request("POST", "/echo", {"Content-Length": "100"}, b"0123456789"))
            assert closed_by_peer(c, 5)
            assert 0.8 < time.time() - t0 < 2.5
        # an idle keep-alive connection
        with s.connect() as c:
            assert request(c, "GET", "/pid").status == 200
            t0 = time.time()
            assert closed_by_peer(c, 5)
            assert 0.8 < time.time() - t0 < 2.5
        # a connection that never sends anything (the first request is under the header timeout)
        with s.connect() as c:
            t0 = time.time()
            assert closed_by_peer(c, 5)
            assert 0.8 < time.time() - t0 < 2.5


def test_write_timeout_frees_connection_and_worker():
    body = os.urandom(16 * 1024 * 1024)
    with Server(reactors=1, workers=1, extra=TIMEOUTS) as s:
        c = socket.socket()
        c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        c.connect(("127.0.0.1", s.port))
        c.sendall(raw_request("POST", "/echo", {}, body))  # and never read the 16 MB echo
        # 16 MB through PHP and back first: on a loaded machine that alone can take seconds
        assert wait_for(lambda: "write timeout" in s.output(), 15), s.output()[-2000:]
        got = 0
        c.settimeout(5)
        try:
            while True:
                d = c.recv(1 << 20)
                if not d:
                    break
                got += len(d)
        except ConnectionResetError:
            pass
        c.close()
        assert got < len(body), got
        r = s.get("/pid")
        assert r.status == 200, r


# ---- streaming and early hints ----------------------------------------------------------------

def test_streamed_response_arrives_before_worker_finishes():
    with Server(reactors=1, workers=1) as s:
        with s.connect() as c:
            t0 = time.time()
            c.sendall(raw_request("GET", "/stream?n=3&delay=600"))
            c.settimeout(5)
            buf = b""
            while b"chunk 1\n" not in buf:
                d = c.recv(65536)
                assert d, buf
                buf += d
            first = time.time() - t0
            head = buf.split(b"\r\n\r\n", 1)[0].lower()
            assert b"transfer-encoding: chunked" in head and b"content-length" not in head, buf
            assert first < 0.5, first  # the worker is still sleeping before chunk 2
            while not buf.endswith(b"0\r\n\r\n"):
                d = c.recv(65536)
                assert d, buf
                buf += d
            assert time.time() - t0 > 1.1
            body = buf.split(b"\r\n\r\n", 1)[1]
            assert body == b"8\r\nchunk 1\n\r\n8\r\nchunk 2\n\r\n8\r\nchunk 3\n\r\n0\r\n\r\n", body
            # keep-alive continues after a streamed answer
            c.sendall(raw_request("GET", "/pid"))
            assert Reader(c).read().status == 200
        # HTTP/1.0: no chunked encoding, the end of the body is the end of the connection
        with s.connect() as c:
            c.sendall(b"GET /stream?n=2 HTTP/1.0\r\nHost: x\r\n\r\n")
            r = Reader(c).read()
            assert r.status == 200 and r.body == b"chunk 1\nchunk 2\n", r


def test_client_gone_mid_stream_leaves_worker_ready():
    with Server(reactors=1, workers=1) as s:
        pid = int(s.get("/pid").body)
        c = s.connect()
        c.sendall(raw_request("GET", "/stream?n=60&delay=50"))
        c.settimeout(5)
        buf = b""
        while b"chunk 2\n" not in buf:
            buf += c.recv(65536)
        c.close()
        t0 = time.time()
        r = s.get("/pid")  # the only worker must come back (STOP, or at worst the stream's end)
        assert r.status == 200 and int(r.body) == pid, (r, pid)
        assert time.time() - t0 < 7
        assert s.get("/stream?n=2").body == b"chunk 1\nchunk 2\n"


def test_early_hints_then_final_response():
    with Server(reactors=1, workers=1) as s:
        with s.connect() as c:
            c.sendall(raw_request("GET", "/early-hints"))
            rd = Reader(c)
            hints = rd.read()
            assert hints.status == 103, hints
            assert hints.header("Link") == "</a.css>; rel=preload", hints
            final = rd.read()
            assert final.status == 200 and final.body == b"hints sent\n", final
            assert final.header("Link") is None, final  # no leak into the final answer
        # HTTP/1.0 clients do not get interim answers
        with s.connect() as c:
            c.sendall(b"GET /early-hints HTTP/1.0\r\nHost: x\r\n\r\n")
            r = Reader(c).read()
            assert r.status == 200 and r.body == b"hints sent\n", r


# ---- response rules ---------------------------------------------------------------------------

def test_header_injection_rejected_with_500():
    with Server(reactors=1, workers=1) as s:
        for q in ("name=X-A&value=a%0d%0aSet-Cookie:%20pwned=1", "name=X-A&value=a%0aX-B:%20b",
                  "name=X-A%0d%0aX-B&value=v", "name=Bad%20Name&value=v"):
            with s.connect() as c:
                c.sendall(raw_request("GET", "/header?" + q))
                raw = c.recv(65536)
                r = Reader(c)
                r.buf = raw
                resp = r.read()
                assert resp.status == 500, (q, resp)
                assert b"pwned" not in raw and b"X-B" not in raw, (q, raw)
        assert "header injection" in s.output()
        r = s.get("/header?name=X-A&value=fine")
        assert r.status == 200 and r.header("X-A") == "fine", r


def test_status_out_of_range_is_500():
    with Server(reactors=1, workers=1) as s:
        for code in (99, 600, 1000):
            r = s.get("/status?code=%d" % code)
            assert r.status == 500, (code, r)
        assert "unknown status code from worker: 600" in s.output()
        assert s.get("/status?code=599").status == 599


def test_multi_value_headers_and_trailers():
    with Server(reactors=1, workers=1) as s:
        r = s.get("/header?name=X-Multi&value[]=a&value[]=b")
        assert [v for k, v in r.headers if k == "X-Multi"] == ["a", "b"], r
        with s.connect() as c:
            c.sendall(raw_request("GET", "/header?name=X-A&value=1&trailer=X-Checksum"))
            buf = b""
            c.settimeout(5)
            while not buf.endswith(b"\r\n\r\n") or b"0\r\n" not in buf:
                buf += c.recv(65536)
            head, rest = buf.split(b"\r\n\r\n", 1)
            assert b"Transfer-Encoding: chunked" in head, head
            assert b"X-Checksum" not in head and b"Trailer" not in head, head
            assert rest == b"3\r\nok\n\r\n0\r\nX-Checksum: trailer-value\r\n\r\n", rest


def raw_head(s, path):
    """The response head of GET path as raw header lines (name, value), from the bytes."""
    with s.connect() as c:
        c.sendall(raw_request("GET", path, {"Connection": "close"}))
        buf = b""
        c.settimeout(5)
        while b"\r\n\r\n" not in buf:
            d = c.recv(65536)
            if not d:
                break
            buf += d
    lines = buf.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")[1:]
    return [tuple(x.strip() for x in l.split(":", 1)) for l in lines]


def test_worker_date_and_server_headers_not_duplicated():
    """Issue 11: a worker that sets Date (Symfony/Laravel always do) gets exactly its own Date,
    whatever the case of the name, in both codecs; without one, the server adds one."""
    date = "Tue, 01 Jan 2030 00:00:00 GMT"
    for codec in ("proto", "json"):
        with Server(reactors=1, workers=1, extra="  codec: %s\n" % codec) as s:
            for name in ("Date", "date", "DATE"):
                h = raw_head(s, "/header?name=%s&value=%s" % (name, date.replace(" ", "%20")))
                dates = [v for k, v in h if k.lower() == "date"]
                assert dates == [date], (codec, name, h)
            h = raw_head(s, "/")
            dates = [v for k, v in h if k.lower() == "date"]
            assert len(dates) == 1 and dates[0].endswith(" GMT") and dates[0] != date, h
            # Server: the worker's only (forkline adds none of its own)
            h = raw_head(s, "/header?name=Server&value=php-app")
            assert [v for k, v in h if k.lower() == "server"] == ["php-app"], h
            assert not [k for k, v in raw_head(s, "/") if k.lower() == "server"]
            # a Date sent as a trailer does not replace the head's Date
            h = raw_head(s, "/header?name=X-A&value=1&trailer=Date")
            assert len([v for k, v in h if k.lower() == "date"]) == 1, h


def test_head_gets_headers_only():
    with Server(reactors=1, workers=1) as s:
        with s.connect() as c:
            r = request(c, "HEAD", "/stream?n=3")
            assert r.status == 200 and r.body == b"", r
            r = request(c, "HEAD", "/")
            assert r.status == 200 and r.header("Content-Length") == "20", r
            r = request(c, "GET", "/")  # the connection is still in sync
            assert r.body == b"Hello from forkline\n", r


# ---- trusted proxies --------------------------------------------------------------------------

def remote_of(s, headers):
    with s.connect() as c:
        return json.loads(request(c, "GET", "/info", headers).body)["remoteAddr"]


def test_trusted_proxy_headers():
    trusted = ("  middleware: [\"proxy_ip_parser\"]\n"
               "  trusted_subnets: [\"10.0.0.0/8\", \"127.0.0.0/8\"]\n")
    with Server(reactors=1, workers=1, extra=trusted) as s:
        assert remote_of(s, {}) == "127.0.0.1"
        assert remote_of(s, {"X-Forwarded-For": "203.0.113.7, 10.1.1.1"}) == "203.0.113.7"
        assert remote_of(s, {"X-Real-IP": "198.51.100.2"}) == "198.51.100.2"
        assert remote_of(s, {"Forwarded": "for=\"[2001:db8::1]:4711\";proto=https"}) == "2001:db8::1"
        assert remote_of(s, {"Forwarded": "for=192.0.2.60;by=203.0.113.43",
                             "X-Forwarded-For": "1.1.1.1"}) == "192.0.2.60"
        assert remote_of(s, {"X-Forwarded-For": "not-an-ip"}) == ""
        s.get("/pid", headers={"X-Forwarded-For": "203.0.113.9"})
        assert wait_for(lambda: '"remote_address":"203.0.113.9"' in s.output(), 5)
    # a peer outside the trusted subnets cannot rewrite its address
    with Server(reactors=1, workers=1, extra=trusted.replace("\"127.0.0.0/8\"", "\"::1/128\"")) as s:
        assert remote_of(s, {"X-Forwarded-For": "203.0.113.7"}) == "127.0.0.1"
    # and without the middleware listed, trusted_subnets alone does nothing (RoadRunner's rule)
    with Server(reactors=1, workers=1, extra="  trusted_subnets: [\"127.0.0.0/8\"]\n") as s:
        assert remote_of(s, {"X-Forwarded-For": "203.0.113.7"}) == "127.0.0.1"


def test_bad_trusted_subnet_is_a_config_error():
    s = Server(reactors=1, workers=1, extra="  trusted_subnets: [\"10.0.0.0/33\"]\n")
    out = subprocess.run([BIN, "-t", "-c", s.config], capture_output=True, text=True)
    assert out.returncode != 0 and "invalid CIDR address: 10.0.0.0/33" in out.stdout + out.stderr, out


# ---- access log -------------------------------------------------------------------------------

def test_access_log_line_per_request():
    with Server(reactors=1, workers=1) as s:
        s.get("/sleep?ms=30")
        s.get("/status?code=404")
        line = wait_for(lambda: re.search(r'http log.*"status":200.*"method":"GET".*'
                                          r'"URI":"/sleep\?ms=30".*"remote_address":"127.0.0.1"'
                                          r'.*"elapsed":(\d+)', s.output()), 5)
        assert line and int(line.group(1)) >= 30, s.output()[-2000:]
        assert re.search(r'http log.*"status":404', s.output())


# ---- TLS --------------------------------------------------------------------------------------

def make_cert(d):
    cert, key = os.path.join(d, "cert.pem"), os.path.join(d, "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", key, "-out", cert,
                    "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                   check=True, capture_output=True)
    return cert, key


def tls_server(d, redirect=True, reactors=2):
    cert, key = make_cert(d)
    sport = free_port()
    extra = ("  ssl:\n    address: 127.0.0.1:%d\n    redirect: %s\n    cert: %s\n    key: %s\n"
             % (sport, "true" if redirect else "false", cert, key))
    s = Server(reactors=reactors, workers=reactors, extra=extra)
    s.sport, s.cert = sport, cert
    return s


def tls_connect(s, ctx=None, session=None):
    ctx = ctx or ssl.create_default_context(cafile=s.cert)
    raw = socket.create_connection(("127.0.0.1", s.sport), timeout=10)
    return ctx.wrap_socket(raw, server_hostname="localhost", session=session)


def test_https_alpn_resumption_and_redirect():
    d = tempfile.mkdtemp(prefix="fl-tls-")
    try:
        with tls_server(d) as s:
            ctx = ssl.create_default_context(cafile=s.cert)
            ctx.set_alpn_protocols(["h2", "http/1.1"])
            with tls_connect(s, ctx) as c:
                assert c.selected_alpn_protocol() == "http/1.1"
                assert c.version() in ("TLSv1.2", "TLSv1.3"), c.version()
                r = request(c, "GET", "/info?x=1")
                info = json.loads(r.body)
                assert info["uri"] == "https://localhost/info?x=1", info
                # keep-alive over TLS, and a 5 MB body both ways (partial TLS writes)
                body = os.urandom(5 * 1024 * 1024)
                r = request(c, "POST", "/echo", {"Content-Type": "application/octet-stream"}, body)
                assert r.status == 200 and r.body == body
            # session resumption, TLS 1.2 and 1.3, on any reactor (shared ticket keys)
            for version in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
                ctx = ssl.create_default_context(cafile=s.cert)
                ctx.minimum_version = ctx.maximum_version = version
                with tls_connect(s, ctx) as c:
                    assert request(c, "GET", "/pid").status == 200
                    sess = c.session
                for _ in range(4):
                    with tls_connect(s, ctx, sess) as c:
                        assert request(c, "GET", "/pid").status == 200
                        assert c.session_reused, version
            # curl, the way a user checks it
            out = subprocess.run(["curl", "-sS", "--cacert", s.cert, "-o", "-", "-w", " %{http_code}",
                                  "https://localhost:%d/" % s.sport], capture_output=True, text=True,
                                 timeout=20)
            assert out.stdout == "Hello from forkline\n 200", out
            # the plain listener redirects everything to https
            with s.connect() as c:
                r = request(c, "GET", "/a/b?c=d", {"Host": "localhost:%d" % s.port})
                assert r.status == 308, r
                assert r.header("Location") == "https://localhost:%d/a/b?c=d" % s.sport, r
                r = request(c, "POST", "/form", {"Host": "[::1]:80"}, b"x=1")
                assert r.status == 308 and r.header("Location") == "https://[::1]:%d/form" % s.sport
            # TLS 1.1 is refused (checked with a client that still speaks it, where it can)
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
            try:
                ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
                ctx.minimum_version = ssl.TLSVersion.TLSv1
                ctx.maximum_version = ssl.TLSVersion.TLSv1_1
                refused = False
                try:
                    with tls_connect(s, ctx):
                        pass
                except (ssl.SSLError, OSError):
                    refused = True
                assert refused
            except ValueError:
                pass  # this OpenSSL build cannot even try TLS 1.1
            # a plain-text client on the TLS port does not hurt anybody
            with socket.create_connection(("127.0.0.1", s.sport)) as c:
                c.sendall(raw_request("GET", "/"))
                assert closed_by_peer(c, 5)
            assert s.get("/pid", headers={"Host": "x"}).status == 308
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_tls_config_errors():
    d = tempfile.mkdtemp(prefix="fl-tls-")
    try:
        cert, key = make_cert(d)
        bad = os.path.join(d, "bad.pem")
        with open(bad, "w") as f:
            f.write("not a certificate\n")
        # a missing file is a config error; a file that is not a certificate fails the start
        for c, k, want in ((os.path.join(d, "nope.pem"), key, "does not exist"),
                           (bad, key, "http.ssl.cert: cannot load")):
            s = Server(reactors=1, workers=1, extra="  ssl:\n    address: 127.0.0.1:%d\n"
                       "    cert: %s\n    key: %s\n" % (free_port(), c, k))
            s.start(wait=False)
            rc = s.proc.wait(15)
            assert rc != 0 and want in s.output(), s.output()
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_tls_client_certificates():
    d = tempfile.mkdtemp(prefix="fl-tls-")
    try:
        cert, key = make_cert(d)  # self-signed: it is its own CA, so it also works as a client cert
        sport = free_port()
        extra = ("  ssl:\n    address: 127.0.0.1:%d\n    cert: %s\n    key: %s\n    root_ca: %s\n"
                 "    client_auth_type: require_and_verify_client_cert\n" % (sport, cert, key, cert))
        with Server(reactors=1, workers=1, extra=extra) as s:
            s.sport, s.cert = sport, cert
            ctx = ssl.create_default_context(cafile=cert)
            ctx.load_cert_chain(cert, key)
            with tls_connect(s, ctx) as c:
                assert request(c, "GET", "/pid").status == 200
            refused = False
            try:
                with tls_connect(s) as c:  # no client certificate
                    request(c, "GET", "/pid")
            except (ssl.SSLError, OSError, EOFError):
                refused = True
            assert refused
            assert s.get("/pid").status == 200  # the plain listener is not affected
    finally:
        shutil.rmtree(d, ignore_errors=True)


def test_certificate_reloaded_on_sighup():
    d = tempfile.mkdtemp(prefix="fl-tls-")
    try:
        with tls_server(d, reactors=1) as s:
            with tls_connect(s) as c:
                before = c.getpeercert(binary_form=True)
            make_cert(d)  # a renewed certificate under the same paths
            s.proc.send_signal(signal.SIGHUP)
            assert wait_for(lambda: "reload complete" in s.output(), 15), s.output()[-2000:]
            with tls_connect(s) as c:
                assert c.getpeercert(binary_form=True) != before
                assert request(c, "GET", "/pid").status == 200
    finally:
        shutil.rmtree(d, ignore_errors=True)
