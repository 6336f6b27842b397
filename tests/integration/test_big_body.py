"""Big request bodies on their way to PHP: bodies larger than the relay pipe that arrive in many
TCP segments reach the worker byte-exact (the body is written after the task frame, not copied
into it; PHP reads it unbuffered), keep-alive and pipelining after them, and the
http.max_request_size boundary (exactly at the limit: 200; one byte over: 413). Real binary, real
php-cli workers (the example app's /echo and /info), real sockets."""
import json
import os
import random
import time

from fl import Reader, Server, raw_request, request

MB = 1024 * 1024


def send_in_pieces(sock, data, seed):
    """data in segments of 1 byte .. 96 KiB, with an occasional pause so the reactor sees the
    body arrive over many reads."""
    rnd = random.Random(seed)
    i = 0
    while i < len(data):
        n = rnd.choice((1, 7, 1400, 4096, 65536, 98304))
        sock.sendall(data[i:i + n])
        i += n
        if rnd.random() < 0.05:
            time.sleep(0.002)


def test_body_bigger_than_the_pipe_in_many_segments_intact_then_keepalive():
    body = os.urandom(3 * MB + 17)  # the relay pipe holds 1 MiB at most
    with Server(reactors=1, workers=1, extra="  max_request_size: 8\n") as s:
        with s.connect() as c:
            rd = Reader(c)
            for round_ in range(2):  # the second one reuses the connection (and the worker)
                c.sendall(raw_request("POST", "/echo", {"Content-Type": "application/octet-stream",
                                                        "Content-Length": str(len(body))}))
                send_in_pieces(c, body, round_)
                r = rd.read()
                assert r.status == 200 and len(r.body) == len(body), (r.status, len(r.body))
                assert r.body == body
                c.sendall(raw_request("GET", "/"))
                r = rd.read()
                assert r.status == 200 and r.body.startswith(b"Hello"), r
            # chunked: no length up front, the buffer grows as it goes
            c.sendall(raw_request("POST", "/echo", {"Transfer-Encoding": "chunked"}))
            for i in range(0, len(body), 300000):
                piece = body[i:i + 300000]
                c.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
            c.sendall(b"0\r\n\r\n")
            r = rd.read()
            assert r.status == 200 and r.body == body, (r.status, len(r.body))
            # pipelined: a big body and a small one in one write; each gets its own answer
            small = b"second request"
            c.sendall(raw_request("POST", "/echo", {}, body) + raw_request("POST", "/echo", {}, small))
            r1, r2 = rd.read(), rd.read()
            assert r1.status == 200 and r1.body == body, (r1.status, len(r1.body))
            assert r2.status == 200 and r2.body == small, r2


test_body_bigger_than_the_pipe_in_many_segments_intact_then_keepalive.timeout = 60


def test_body_exactly_at_max_request_size_and_one_byte_over():
    limit = 2 * MB
    body = bytes(random.Random(1).getrandbits(8) for _ in range(4096)) * (limit // 4096)
    with Server(reactors=1, workers=1, extra="  max_request_size: 2\n") as s:
        with s.connect() as c:
            r = request(c, "POST", "/echo", {"Content-Type": "application/octet-stream"}, body)
            assert r.status == 200 and r.body == body, (r.status, len(r.body))
            r = request(c, "GET", "/")  # and the connection is still good
            assert r.status == 200, r
        with s.connect() as c:
            try:
                r = request(c, "POST", "/echo", {}, body + b"x")
            except (BrokenPipeError, ConnectionResetError):
                r = Reader(c).read()
            assert r.status == 413, r
        # chunked, so counted as it arrives: at the limit, then one over
        for extra, status in ((b"", 200), (b"x", 413)):
            with s.connect() as c:
                c.sendall(raw_request("POST", "/echo", {"Transfer-Encoding": "chunked"}))
                data = body + extra
                try:
                    for i in range(0, len(data), 65536):
                        piece = data[i:i + 65536]
                        c.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
                    c.sendall(b"0\r\n\r\n")
                except (BrokenPipeError, ConnectionResetError):
                    pass
                r = Reader(c).read()
                assert r.status == status, (extra, r.status)
                if status == 200:
                    assert r.body == body, len(r.body)


test_body_exactly_at_max_request_size_and_one_byte_over.timeout = 60


def test_big_urlencoded_body_still_parsed():
    value = "v" * (2 * MB)
    form = ("a=%s&b=2&c=%%C3%%A9" % value).encode()
    with Server(reactors=1, workers=1, extra="  max_request_size: 4\n") as s:
        with s.connect() as c:
            r = request(c, "POST", "/info", {"Content-Type": "application/x-www-form-urlencoded"}, form)
            assert r.status == 200, r
            body = json.loads(r.body)["parsedBody"]
            assert body == {"a": value, "b": "2", "c": "\u00e9"}, {k: len(v) for k, v in body.items()}
            r = request(c, "POST", "/echo", {"Content-Type": "text/plain"}, b"after")
            assert r.status == 200 and r.body == b"after", r
