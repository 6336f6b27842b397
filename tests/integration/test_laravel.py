"""Laravel on forkline: the real binary serving examples/laravel (Debian's Laravel 8, no Composer)
through the persistent-worker bridge in php/src/Laravel, with real php-cli workers."""
import hashlib
import json
import os
import subprocess
import time
import uuid

from fl import ROOT, Reader, Server, raw_request, request, wait_for

APP = os.path.join(ROOT, "examples", "laravel")
WORKER = os.path.join(APP, "forkline-worker.php")
HELLO = b"Hello from Laravel\n"
_setup_done = []


def setup_app():
    """storage/, APP_KEY, SQLite row, classmap: once per test run (setup.php is idempotent)."""
    if not _setup_done:
        r = subprocess.run(["php", os.path.join(APP, "setup.php")], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, "examples/laravel/setup.php failed:\n%s%s" % (r.stdout, r.stderr)
        _setup_done.append(True)


def laravel(workers=1, reactors=1, http_extra=""):
    setup_app()
    yaml = (
        'version: "3"\n'
        "reactors: %d\n"
        "server:\n"
        '  command: "php -d opcache.enable_cli=1 %s"\n'
        "  env:\n"
        "    LOG_CHANNEL: stderr\n"  # the app's error reports land in forkline's log
        "http:\n"
        "  address: 127.0.0.1:{port}\n"
        "%s"
        "  pool:\n"
        "    num_workers: %d\n"
        "    allocate_timeout: 20s\n" % (reactors, WORKER, http_extra, workers)
    )
    return Server(yaml=yaml)


def cookies_of(resp):
    out = {}
    for k, v in resp.headers:
        if k.lower() == "set-cookie":
            name, _, rest = v.partition("=")
            out[name] = rest.split(";", 1)[0]
    return out


class Client:
    """One browser: keeps its cookies across requests on one keep-alive connection."""

    def __init__(self, server):
        self.sock = server.connect()
        self.reader = Reader(self.sock)
        self.jar = {}

    def get(self, path, headers=None):
        h = dict(headers or {})
        if self.jar:
            h["Cookie"] = "; ".join("%s=%s" % kv for kv in self.jar.items())
        self.sock.sendall(raw_request("GET", path, h))
        r = self.reader.read()
        self.jar.update(cookies_of(r))
        return r

    def close(self):
        self.sock.close()


def multipart(fields, files, boundary="forklineBoundary7MA4YWxk"):
    out = b""
    for name, value in fields.items():
        out += b"--%s\r\nContent-Disposition: form-data; name=\"%s\"\r\n\r\n%s\r\n" % (
            boundary.encode(), name.encode(), value.encode())
    for name, (filename, mime, data) in files.items():
        out += (b"--%s\r\nContent-Disposition: form-data; name=\"%s\"; filename=\"%s\"\r\n"
                b"Content-Type: %s\r\n\r\n" % (boundary.encode(), name.encode(), filename.encode(), mime.encode()))
        out += data + b"\r\n"
    out += b"--%s--\r\n" % boundary.encode()
    return out, "multipart/form-data; boundary=%s" % boundary


def test_laravel_routes():
    for codec in ("proto", "json"):  # the bridge answers in the codec the request came in
        check_routes(codec)


def check_routes(codec):
    with laravel(workers=2, http_extra="  codec: %s\n" % codec) as s:
        r = s.get("/")
        assert r.status == 200 and r.body == HELLO, r
        assert r.header("Content-Type").startswith("text/plain"), r
        assert r.header("Content-Length") == str(len(HELLO)), r

        r = s.get("/json")
        assert r.status == 200, r
        assert r.header("Content-Type") == "application/json", r
        doc = json.loads(r.body)
        assert doc["message"] == "Hello from Laravel" and doc["laravel"].startswith("8."), doc

        r = s.get("/web")  # web group: session + CSRF cookies, encrypted
        assert r.status == 200 and r.body == HELLO, r
        jar = cookies_of(r)
        assert "laravel_session" in jar and "XSRF-TOKEN" in jar, r.headers

        r = s.get("/db")
        assert r.status == 200, r
        assert json.loads(r.body) == {"id": 1, "message": "Hello from SQLite through Eloquent"}, r

        r = s.get("/stream")
        assert r.status == 200 and r.body == b"chunk one\nchunk two\nchunk three\n", r

        r = s.get("/no-such-route")
        assert r.status == 404 and b"Not Found" in r.body, r

        with s.connect() as c:
            r = request(c, "HEAD", "/")
            assert r.status == 200 and r.body == b"", r


def test_laravel_session_no_leak_between_clients():
    # One worker: a leak between requests would show up in this one process.
    with laravel(workers=1) as s:
        alice, bob = Client(s), Client(s)
        try:
            a1 = json.loads(alice.get("/session?name=alice").body)
            assert a1["name"] == "alice" and a1["count"] == 1 and a1["visits_cookie"] is None, a1

            a2 = json.loads(alice.get("/session").body)
            assert a2["name"] == "alice" and a2["count"] == 2, a2
            assert a2["visits_cookie"] == "1", a2  # the queued cookie came back, decrypted
            assert a2["token"] == a1["token"], (a1, a2)

            # Alice's queued `visits` cookie is not sent to the next visitor of the worker.
            r = bob.get("/web")
            assert r.status == 200 and "visits" not in cookies_of(r), r.headers
            bob.jar.clear()

            b1 = json.loads(bob.get("/session").body)
            assert b1["name"] is None and b1["count"] == 1, b1  # nothing of alice's session
            assert b1["visits_cookie"] is None, b1
            assert b1["token"] != a1["token"], (a1, b1)  # nor her CSRF token
            assert bob.jar["laravel_session"] != alice.jar["laravel_session"]

            b2 = json.loads(bob.get("/session?name=bob").body)
            assert b2["name"] == "bob" and b2["count"] == 2 and b2["visits_cookie"] == "1", b2

            a3 = json.loads(alice.get("/session").body)
            assert a3["name"] == "alice" and a3["count"] == 3 and a3["visits_cookie"] == "2", a3

            # A client without cookies after both: a fresh session again.
            fresh = json.loads(s.get("/session").body)
            assert fresh["name"] is None and fresh["count"] == 1, fresh
            assert fresh["token"] not in (a1["token"], b1["token"]), fresh
        finally:
            alice.close()
            bob.close()


def test_laravel_exception_500_then_200_same_worker():
    with laravel(workers=1) as s:
        before = s.php_workers()
        pid = s.get("/pid").body
        r = s.get("/throw")
        assert r.status == 500, r
        assert b"Server Error" in r.body, r  # Laravel's own error page, not forkline's
        assert b"thrown on purpose" not in r.body, r  # APP_DEBUG off: no details leak
        r = s.get("/pid")
        assert r.status == 200 and r.body == pid, (pid, r)
        assert s.php_workers() == before
        assert "thrown on purpose by /throw" in s.output()  # reported to the app's log


def test_laravel_fatal_error_kills_only_that_worker():
    with laravel(workers=2) as s:
        before = set(s.php_workers())
        assert len(before) == 2, before
        r = s.get("/fatal")
        assert r.status >= 500, r
        after = wait_for(lambda: (lambda w: w if len(w) == 2 and w != before else None)(set(s.php_workers())),
                         timeout=15)
        assert after and len(before & after) == 1, (before, after)  # one died, one kept serving
        for _ in range(4):
            r = s.get("/")
            assert r.status == 200 and r.body == HELLO, r
        assert "Allowed memory size" in s.output()


def test_laravel_upload():
    data = os.urandom(300 * 1024)
    body, ctype = multipart({"note": "holiday photo"}, {"file": ("photo.jpg", "image/jpeg", data)})
    # Forms parsed by forkline (uploads tree) and raw bodies parsed by the bridge.
    for extra in ("", "  raw_body: true\n"):
        with laravel(workers=1, http_extra=extra) as s:
            with s.connect() as c:
                r = request(c, "POST", "/upload", {"Content-Type": ctype, "Accept": "application/json"}, body)
                assert r.status == 200, (extra, r)
                doc = json.loads(r.body)
                assert doc == {"name": "photo.jpg", "mime": "image/jpeg", "size": len(data),
                               "sha1": hashlib.sha1(data).hexdigest(), "note": "holiday photo"}, (extra, doc)

                # no file: Laravel's validation answers 422 (JSON, since the client accepts it)
                empty, ctype2 = multipart({"note": "x"}, {})
                r = request(c, "POST", "/upload", {"Content-Type": ctype2, "Accept": "application/json"}, empty)
                assert r.status == 422 and b"file" in r.body, (extra, r)


def test_laravel_memory_flat_across_requests():
    with laravel(workers=1) as s:
        c = Client(s)
        try:
            c.get("/web")  # a returning visitor from here on
            tag = uuid.uuid4().hex

            def burst(n):
                for i in range(n):
                    assert c.get("/web").status == 200
                    assert c.get("/session?name=%s%d" % (tag, i)).status == 200
                    assert c.get("/db").status == 200
                return int(c.get("/memory").body)

            burst(100)  # warm-up: caches fill, opcache settles
            m1 = burst(300)
            m2 = burst(300)
            # 900 requests between the two readings; a leak of 100 bytes per request would be 90 KB
            assert m2 - m1 < 32 * 1024, (m1, m2)
        finally:
            c.close()


test_laravel_memory_flat_across_requests.timeout = 90


# In-process checks of the bridge's parts against what php-fpm's Request::capture() gives and
# against the state a fresh process starts with (real Laravel, booted through the bridge).
PARITY = r"""<?php
declare(strict_types=1);
require %(root)s . '/php/src/autoload.php';
require %(app)s . '/bootstrap/autoload.php';
use Forkline\Http\Request as FR;
use Forkline\Laravel\{Bridge, RequestFactory, ResponseSender};
use Illuminate\Http\Request;
use Symfony\Component\HttpFoundation\Request as SymfonyRequest;
$fail = [];
$check = function (bool $ok, string $what) use (&$fail) { if (!$ok) { $fail[] = $what; } };
$in = fopen('php://temp', 'w+b');
$http = new Forkline\HttpWorker(new Forkline\Worker(Forkline\Relay::fromStreams($in, fopen('php://temp', 'w+b'))));
$bridge = Bridge::boot(%(app)s, $http);
$app = $bridge->application();
$factory = new RequestFactory($app->publicPath());
$cases = [
    ['GET', '/web?q=1&a[]=x', '', ''],
    ['HEAD', '/?q=2', '', ''],
    ['POST', '/form?q=3', 'application/x-www-form-urlencoded', 'p=4&q=5'],
    ['POST', '/api?q=6', 'application/json', '{"j":7}'],
];
foreach ($cases as [$method, $target, $ctype, $body]) {
    $q = (string) parse_url($target, PHP_URL_QUERY);
    parse_str($q, $query);
    $headers = ['User-Agent' => ['t'], 'Cookie' => ['c=v']];
    if ($ctype !== '') { $headers['Content-Type'] = [$ctype]; }
    $ours = $factory->make(new FR('10.0.0.9', 'HTTP/1.1', $method, 'http://example.test:8080' . $target,
        $headers, ['c' => 'v'], $q, $query, $body));
    $server = ['REMOTE_ADDR' => '10.0.0.9', 'HTTP_USER_AGENT' => 't', 'HTTP_COOKIE' => 'c=v'];
    if ($ctype !== '') { $server['CONTENT_TYPE'] = $ctype; }
    $post = [];
    if (str_contains($ctype, 'urlencoded')) { parse_str($body, $post); }
    $sym = SymfonyRequest::create('http://example.test:8080' . $target, $method, $post, ['c' => 'v'], [], $server, $body);
    if ($method === 'POST') { $sym->request = new Symfony\Component\HttpFoundation\InputBag($post); }
    $fpm = Request::createFromBase($sym);
    $tag = "$method $target";
    $check(($ours->request === $ours->query) === ($fpm->request === $fpm->query), "$tag: input source bag");
    foreach (['all', 'input', 'post', 'query', 'fullUrl', 'path', 'ip', 'getHost', 'getPort', 'isJson', 'method', 'cookie'] as $m) {
        $check($ours->$m() === $fpm->$m(), "$tag: $m() " . json_encode($ours->$m()) . ' vs ' . json_encode($fpm->$m()));
    }
}

// Sandbox: configuration changed by a request comes back, in the same repository object.
$sandbox = $bridge->sandbox();
$config = $app['config'];
$sandbox->prepare();
config(['app.name' => 'changed by a request']);
$check(config('app.name') === 'changed by a request', 'config() works during a request');
$sandbox->reset();
$check(config('app.name') !== 'changed by a request' && $app['config'] === $config, 'config restored');

// Session store: a used store gets a fresh id and no data; an unused one keeps its fresh id.
$store = $app['session']->driver();
$sandbox->prepare();
$store->start();
$store->put('secret', 'alice');
$used = $store->getId();
$sandbox->reset();
$check($store->all() === [] && $store->getId() !== $used && !$store->isStarted(), 'used session reset');
$fresh = $store->getId();
$sandbox->prepare();
$sandbox->reset();
$check($store->getId() === $fresh && $store->all() === [], 'unused session kept its fresh id');
$sandbox->prepare();
$store->setId($fresh);
$store->put('k', 'v');
$sandbox->reset();
$check($store->getId() !== $fresh && $store->all() === [], 'session with data reset');

// Response headers: as Symfony lists them, each cookie once, names as written.
$response = new Illuminate\Http\Response('x', 200, ['X-Custom' => 'a', 'content-type' => 'text/plain']);
$response->headers->set('X-Multi', ['1', '2']);
$response->withCookie(cookie('one', 'v1', 10));
$response->withCookie(cookie('two', 'v2'));
$expect = $response->headers->allPreserveCaseWithoutCookies();
foreach ($response->headers->getCookies() as $c) { $expect['Set-Cookie'][] = (string) $c; }
$check(ResponseSender::headers($response) === $expect, 'headers: ' . json_encode(ResponseSender::headers($response)));
echo $fail === [] ? "OK\n" : implode("\n", $fail) . "\n";
"""


def test_laravel_bridge_parity_in_process():
    setup_app()
    import tempfile
    with tempfile.NamedTemporaryFile("w", suffix=".php", delete=False) as f:
        f.write(PARITY % {"root": repr(ROOT), "app": repr(APP)})
    try:
        r = subprocess.run(["php", f.name], capture_output=True, text=True, timeout=60,
                           env=dict(os.environ, LOG_CHANNEL="stderr"))
    finally:
        os.unlink(f.name)
    assert r.returncode == 0 and r.stdout.strip().endswith("OK"), r.stdout + r.stderr
