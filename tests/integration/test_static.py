"""Static files (`http.static` + `static` in `http.middleware`) served by the reactor: bytes and
Content-Type, conditional GET (ETag, If-Modified-Since), single ranges, 403 for `..`, symlinks
followed as nginx does (Laravel's public/storage) unless http.static.symlinks says inside or off,
misses answered by the real PHP worker, a slow reader of a large file while others are served,
and no descriptor left open when a client goes away mid-file."""
import hashlib
import os
import shutil
import socket
import subprocess
import tempfile
import time

from fl import BIN, Reader, Server, raw_request, request, wait_for

PHP_404 = b"not found\n"  # the example worker's answer for unknown routes


def make_root():
    base = tempfile.mkdtemp(prefix="fl-static-")
    pub = os.path.join(base, "pub")
    os.makedirs(os.path.join(pub, "css"))
    os.makedirs(os.path.join(pub, "dir.d"))
    files = {
        "a.txt": b"hello static\n",
        "css/app.css": b"body { color: red }\n",
        "app.js": b"console.log(1)\n",
        "logo.png": b"\x89PNG\r\n\x1a\n" + bytes(range(256)),
        "data.weird": b"\x00\x01\x02",
        "index.php": b"<?php echo 'source must not leak';\n",
        "README": b"no extension\n",
        "big.bin": os.urandom(1 << 20),
    }
    for name, data in files.items():
        with open(os.path.join(pub, name), "wb") as f:
            f.write(data)
    with open(os.path.join(base, "secret.txt"), "wb") as f:
        f.write(b"SECRET\n")
    os.symlink("../secret.txt", os.path.join(pub, "escape.txt"))
    os.symlink("/etc/hostname", os.path.join(pub, "abs.txt"))
    os.symlink("a.txt", os.path.join(pub, "inside.txt"))
    os.symlink(os.path.join(pub, "css", "app.css"), os.path.join(pub, "abs_inside.css"))
    # Laravel's `php artisan storage:link`: public/storage -> ../storage/app/public
    os.makedirs(os.path.join(base, "storage", "app", "public", "avatars"))
    with open(os.path.join(base, "storage", "app", "public", "avatars", "me.png"), "wb") as f:
        f.write(files["logo.png"])
    os.symlink("../storage/app/public", os.path.join(pub, "storage"))
    return base, pub, files


def static_yaml(pub, middleware="[static]", extra=""):
    return (
        'version: "3"\n'
        "reactors: 1\n"
        'server:\n  command: "php {app}"\n'
        "http:\n  address: 127.0.0.1:{port}\n"
        "  middleware: %s\n"
        "  static:\n"
        "    dir: %s\n"
        '    forbid: [".php"]\n'
        "    calculate_etag: true\n"
        "    response:\n      x-served-by: forkline-static\n"
        "%s"
        "  pool:\n    num_workers: 1\n    allocate_timeout: 10s\n" % (middleware, pub, extra)
    )


class Root:
    def __init__(self, **kw):
        self.base, self.pub, self.files = make_root()
        self.server = Server(yaml=static_yaml(self.pub, **kw))

    def __enter__(self):
        self.server.start()
        return self

    def __exit__(self, *exc):
        self.server.__exit__(*exc)
        shutil.rmtree(self.base, ignore_errors=True)


def raw_status(s, target, headers=""):
    """Sends the target byte for byte (curl and urllib would normalize `..`)."""
    with s.connect() as c:
        c.sendall(("GET %s HTTP/1.1\r\nHost: x\r\n%s\r\n" % (target, headers)).encode())
        return Reader(c).read()


def test_static_200_bytes_and_types():
    with Root() as r:
        s = r.server
        types = {
            "a.txt": "text/plain; charset=utf-8",
            "css/app.css": "text/css; charset=utf-8",
            "app.js": "text/javascript; charset=utf-8",
            "logo.png": "image/png",
            "data.weird": "application/octet-stream",
            "big.bin": "application/octet-stream",
        }
        for name, ctype in types.items():
            resp = s.get("/" + name)
            assert resp.status == 200, (name, resp)
            assert resp.body == r.files[name], name
            assert resp.header("Content-Type") == ctype, (name, resp.headers)
            assert resp.header("Content-Length") == str(len(r.files[name])), resp.headers
            assert resp.header("ETag").startswith('"'), resp.headers
            assert resp.header("Last-Modified").endswith(" GMT"), resp.headers
            assert resp.header("Accept-Ranges") == "bytes", resp.headers
            assert resp.header("X-Served-By") == "forkline-static", resp.headers
        big = s.get("/big.bin?v=2")
        assert hashlib.sha1(big.body).digest() == hashlib.sha1(r.files["big.bin"]).digest()
        # a symlink that stays inside the root is served (relative and absolute)
        assert s.get("/inside.txt").body == r.files["a.txt"]
        assert s.get("/abs_inside.css").body == r.files["css/app.css"]
        # the PHP worker was never asked
        assert s.get("/").body == b"Hello from forkline\n"


def test_static_head_and_pipelining():
    with Root() as r:
        s = r.server
        with s.connect() as c:
            rd = Reader(c)
            c.sendall(raw_request("HEAD", "/big.bin"))
            h = rd.read(head=True)
            assert h.status == 200 and h.header("Content-Length") == str(1 << 20), h
            # no body followed the HEAD answer: the next answer parses on the same connection
            c.sendall(raw_request("GET", "/a.txt"))
            assert rd.read().body == r.files["a.txt"]
            # file, PHP, file, 304 pipelined in one write: answered in order, bodies intact
            etag = s.get("/a.txt").header("ETag")
            c.sendall(raw_request("GET", "/big.bin") + raw_request("GET", "/") +
                      raw_request("GET", "/css/app.css") +
                      raw_request("GET", "/a.txt", {"If-None-Match": etag}))
            assert rd.read().body == r.files["big.bin"]
            assert rd.read().body == b"Hello from forkline\n"
            assert rd.read().body == r.files["css/app.css"]
            assert rd.read().status == 304


def test_static_conditional():
    with Root() as r:
        s = r.server
        first = s.get("/a.txt")
        etag, lm = first.header("ETag"), first.header("Last-Modified")
        resp = s.get("/a.txt", headers={"If-None-Match": etag})
        assert resp.status == 304 and resp.body == b"", resp
        assert resp.header("ETag") == etag and resp.header("Content-Length") is None, resp
        assert resp.header("X-Served-By") == "forkline-static", resp
        assert s.get("/a.txt", headers={"If-None-Match": '"x", W/%s' % etag}).status == 304
        assert s.get("/a.txt", headers={"If-None-Match": '"other"'}).status == 200
        assert s.get("/a.txt", headers={"If-Modified-Since": lm}).status == 304
        assert s.get("/a.txt", headers={"If-Modified-Since": "Sat, 01 Jan 2000 00:00:00 GMT"}).status == 200
        # If-None-Match wins over If-Modified-Since (RFC 9110 13.2.2)
        assert s.get("/a.txt", headers={"If-None-Match": '"other"', "If-Modified-Since": lm}).status == 200
        assert s.get("/a.txt", headers={"If-Match": '"other"'}).status == 412
        assert s.get("/a.txt", headers={"If-Match": etag}).status == 200
        # the file changes: the old validators no longer match
        path = os.path.join(r.pub, "a.txt")
        with open(path, "wb") as f:
            f.write(b"changed!\n")
        os.utime(path, (time.time() + 5, time.time() + 5))
        resp = s.get("/a.txt", headers={"If-None-Match": etag})
        assert resp.status == 200 and resp.body == b"changed!\n", resp
        assert resp.header("ETag") != etag
        assert s.get("/a.txt", headers={"If-Modified-Since": lm}).status == 200


def test_static_ranges():
    with Root() as r:
        s = r.server
        big = r.files["big.bin"]
        resp = s.get("/big.bin", headers={"Range": "bytes=1000-1999"})
        assert resp.status == 206, resp
        assert resp.body == big[1000:2000]
        assert resp.header("Content-Range") == "bytes 1000-1999/%d" % len(big), resp.headers
        resp = s.get("/big.bin", headers={"Range": "bytes=-100"})
        assert resp.status == 206 and resp.body == big[-100:], resp
        resp = s.get("/big.bin", headers={"Range": "bytes=1048000-"})
        assert resp.status == 206 and resp.body == big[1048000:], resp
        resp = s.get("/a.txt", headers={"Range": "bytes=100-200"})
        assert resp.status == 416, resp
        assert resp.header("Content-Range") == "bytes */%d" % len(r.files["a.txt"]), resp.headers
        # several ranges, or a stale If-Range: the whole file
        resp = s.get("/a.txt", headers={"Range": "bytes=0-1,3-4"})
        assert resp.status == 200 and resp.body == r.files["a.txt"], resp
        resp = s.get("/a.txt", headers={"Range": "bytes=0-1", "If-Range": '"stale"'})
        assert resp.status == 200 and resp.body == r.files["a.txt"], resp
        etag = s.get("/a.txt").header("ETag")
        resp = s.get("/a.txt", headers={"Range": "bytes=0-4", "If-Range": etag})
        assert resp.status == 206 and resp.body == b"hello", resp


def test_static_403():
    with Root() as r:
        s = r.server
        for target in ("/../secret.txt", "/css/../../secret.txt", "/%2e%2e/secret.txt",
                       "/css/%2E%2E%2F%2E%2E/secret.txt", "/css/../a.txt"):
            resp = raw_status(s, target)
            assert resp.status == 403, (target, resp)
            assert b"SECRET" not in resp.body
        # `..` through a followed symlink is still a `..`
        for target in ("/storage/../../secret.txt", "/storage/%2e%2e/%2e%2e/secret.txt"):
            resp = raw_status(s, target)
            assert resp.status == 403 and b"SECRET" not in resp.body, (target, resp)
        # the connection stays usable after a 403
        with s.connect() as c:
            rd = Reader(c)
            c.sendall(raw_request("GET", "/../x.txt") + raw_request("GET", "/a.txt"))
            assert rd.read().status == 403
            assert rd.read().body == r.files["a.txt"]


def test_static_symlinks_followed_like_nginx():
    """Default (symlinks: follow): a symlink below the root is followed wherever it points, as
    nginx (disable_symlinks off) and RoadRunner do; Laravel's storage link is served."""
    with Root() as r:
        s = r.server
        resp = s.get("/storage/avatars/me.png")
        assert resp.status == 200 and resp.body == r.files["logo.png"], resp
        assert resp.header("Content-Type") == "image/png", resp.headers
        assert s.get("/escape.txt").body == b"SECRET\n"
        with open("/etc/hostname", "rb") as f:
            assert s.get("/abs.txt").body == f.read()
        assert s.get("/inside.txt").body == r.files["a.txt"]
        assert s.get("/storage/avatars/none.png").body == PHP_404  # a miss still goes to PHP


def test_static_symlinks_inside_and_off():
    with Root(extra="    symlinks: inside\n") as r:
        s = r.server
        for target in ("/escape.txt", "/abs.txt", "/storage/avatars/me.png"):
            resp = s.get(target)
            assert resp.status == 403 and b"SECRET" not in resp.body, (target, resp)
        assert s.get("/inside.txt").body == r.files["a.txt"]
        assert s.get("/abs_inside.css").body == r.files["css/app.css"]
        assert "leaves through a symlink" in s.output()
    with Root(extra="    symlinks: off\n") as r:
        s = r.server
        for target in ("/inside.txt", "/abs_inside.css", "/escape.txt", "/storage/avatars/me.png"):
            assert s.get(target).status == 403, target
        assert s.get("/a.txt").body == r.files["a.txt"]
        assert s.get("/css/app.css").body == r.files["css/app.css"]
        assert "goes through a symlink" in s.output()
    # off concerns what is below the root: a root reached through a symlink (a deploy's
    # current -> releases/N) is fine
    base, pub, files = make_root()
    link = os.path.join(base, "current")
    os.symlink(pub, link)
    s = Server(yaml=static_yaml(link, extra="    symlinks: off\n"))
    with s:
        assert s.get("/css/app.css").body == files["css/app.css"]
        assert s.get("/inside.txt").status == 403
    # an unknown value is a config error with its position
    bad = Server(yaml=static_yaml(pub, extra="    symlinks: sometimes\n"))
    p = subprocess.run([BIN, "-t", "-c", bad.config], capture_output=True, text=True, timeout=20)
    assert p.returncode != 0 and "follow, inside, off" in p.stdout + p.stderr, (p.stdout, p.stderr)
    shutil.rmtree(base, ignore_errors=True)


def test_static_misses_go_to_php():
    with Root() as r:
        s = r.server
        # forbidden extension: PHP answers, the source is not sent
        resp = s.get("/index.php")
        assert resp.status == 404 and resp.body == PHP_404, resp
        for target in ("/missing.txt", "/css", "/dir.d", "/README", "/"):
            resp = s.get(target)
            assert resp.header("X-Served-By") is None, (target, resp)
            if target != "/":
                assert resp.body == PHP_404, (target, resp)
        # only GET and HEAD are served from disk
        with s.connect() as c:
            resp = request(c, "POST", "/a.txt", body=b"x")
            assert resp.body == PHP_404, resp


def test_static_allow_list():
    base, pub, files = make_root()
    try:
        yaml = static_yaml(pub, extra='    allow: [".css", ".PNG"]\n')
        with Server(yaml=yaml) as s:
            assert s.get("/css/app.css").body == files["css/app.css"]
            assert s.get("/logo.png").body == files["logo.png"]
            assert s.get("/a.txt").body == PHP_404
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_static_needs_middleware():
    base, pub, files = make_root()
    try:
        with Server(yaml=static_yaml(pub, middleware="[]")) as s:
            assert s.get("/a.txt").body == PHP_404
            assert "\"static\" is not in http.middleware" in s.output(), s.output()
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_static_bad_dir_is_refused():
    base = tempfile.mkdtemp(prefix="fl-static-")
    try:
        cfg = os.path.join(base, ".rr.yaml")
        notdir = os.path.join(base, "file.txt")
        open(notdir, "w").close()
        cases = (("    dir: nope\n", "serve", b"root directory"),
                 ("    dir: %s\n" % notdir, "serve", b"not a directory"),
                 ("    forbid: []\n", "-t", b"dir is required"))
        for dir_line, cmd, want in cases:
            with open(cfg, "w") as f:
                f.write('version: "3"\nserver:\n  command: "php x.php"\nhttp:\n'
                        "  address: 127.0.0.1:1\n  middleware: [static]\n  static:\n" + dir_line)
            args = [BIN, "-t", "-c", cfg] if cmd == "-t" else [BIN, "serve", "-c", cfg]
            p = subprocess.run(args, capture_output=True, timeout=10)
            out = p.stdout + p.stderr
            assert p.returncode == 1, (dir_line, p)
            assert want in out and b"http.static" in out, out
    finally:
        shutil.rmtree(base, ignore_errors=True)


def reactor_fds(s):
    pid = s.reactors()[0]
    return len(os.listdir("/proc/%d/fd" % pid))


def test_static_slow_reader_and_abort():
    base, pub, files = make_root()
    big = os.urandom(4 << 20)
    with open(os.path.join(pub, "huge.bin"), "wb") as f:
        f.write(big)
    try:
        with Server(yaml=static_yaml(pub)) as s:
            s.get("/a.txt")
            baseline = reactor_fds(s)
            # a slow reader with a small receive buffer: the reactor must wait for EPOLLOUT
            # and keep serving others in the meantime
            slow = socket.socket()
            slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            slow.connect(("127.0.0.1", s.port))
            slow.sendall(raw_request("GET", "/huge.bin"))
            time.sleep(0.3)
            t0 = time.time()
            assert s.get("/a.txt").body == files["a.txt"]
            assert s.get("/").body == b"Hello from forkline\n"
            assert time.time() - t0 < 2
            got = b""
            slow.settimeout(10)
            while b"\r\n\r\n" not in got:
                got += slow.recv(4096)
            head, body = got.split(b"\r\n\r\n", 1)
            assert b"Content-Length: %d" % len(big) in head, head
            while len(body) < len(big):
                d = slow.recv(1 << 16)
                assert d, "closed early after %d bytes" % len(body)
                body += d
            assert body == big
            slow.close()
            # a client that goes away mid-file: its file descriptor is closed, others served
            for _ in range(3):
                c = socket.socket()
                c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                c.connect(("127.0.0.1", s.port))
                c.sendall(raw_request("GET", "/huge.bin"))
                c.recv(1000)
                c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                c.close()
            assert s.get("/css/app.css").body == files["css/app.css"]
            assert wait_for(lambda: reactor_fds(s) <= baseline, timeout=5), (reactor_fds(s), baseline)
    finally:
        shutil.rmtree(base, ignore_errors=True)
