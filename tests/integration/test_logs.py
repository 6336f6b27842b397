"""The logs section (spec §2.4) on a real server: production JSON into a file, per-channel
levels, raw mode, off, and a bad output path refused at start-up."""
import json
import os
import subprocess
import tempfile

from fl import BIN, Server, wait_for


def read(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def test_production_json_to_file_with_channel_levels():
    log = os.path.join(tempfile.mkdtemp(prefix="fl-it-logs-"), "app.log")
    s2 = Server(workers=1, reactors=1, extra=(
        "logs:\n  mode: production\n  level: debug\n  output: [%s]\n"
        "  channels:\n    server:\n      level: error\n" % log))
    s2.start(wait=False)
    try:
        assert wait_for(lambda: "ready: http" in read(log), timeout=15), s2.output()
        assert s2.get("/echo-stdout").status == 200  # the worker prints "hello" on stderr
        assert s2.get("/").status == 200
    finally:
        assert s2.stop() == 0
    lines = [json.loads(l) for l in read(log).splitlines()]
    assert lines, read(log)
    for d in lines:
        assert list(d)[:4] == ["level", "ts", "logger", "msg"], d
    assert any(d["level"] == "debug" for d in lines)  # the root logger is at debug
    assert not [d for d in lines if d["logger"] == "server"], "server is at error: its info is filtered"
    # the process's own stdout/stderr carry only the banner
    out = s2.output().strip().splitlines()
    assert out and all(l.startswith("[INFO] RoadRunner server started") for l in out), out


def test_worker_stderr_under_server_logger_and_raw_mode():
    s = Server(workers=1, reactors=1, extra="logs:\n  mode: production\n  level: info\n")
    with s:
        assert s.get("/echo-stdout").status == 200
        assert wait_for(lambda: '"logger":"server"' in s.output())
    server = [json.loads(l) for l in s.output().splitlines() if '"logger":"server"' in l]
    assert any(d["msg"].rstrip("\n") == "hello" and d["level"] == "info" for d in server), server

    raw = Server(workers=1, reactors=1, extra="logs:\n  mode: raw\n")
    with raw:
        assert raw.get("/echo-stdout").status == 200
        assert wait_for(lambda: "\nhello\n" in raw.output())
    text = raw.output().replace("[INFO] RoadRunner server started", "")
    assert "INFO" not in text and '"level"' not in text and "master[" not in text, text[:500]


def test_logs_off_and_bad_output():
    s = Server(workers=1, reactors=1, extra="logs:\n  mode: off\n")
    s.start(wait=False)
    try:
        assert wait_for(lambda: s.get("/").status == 200 if _up(s) else False, timeout=15)
        assert s.get("/echo-stdout").status == 200
    finally:
        s.stop()
    assert s.output().strip().splitlines() == [l for l in s.output().strip().splitlines()
                                               if l.startswith("[INFO] RoadRunner server started")]
    bad = Server(workers=1, reactors=1, extra="logs:\n  output: /nonexistent-dir/forkline.log\n")
    p = subprocess.run([BIN, "serve", "-c", bad.config], capture_output=True, text=True, timeout=20)
    assert p.returncode == 1 and "/nonexistent-dir/forkline.log" in p.stderr, (p.returncode, p.stderr)


def _up(s):
    try:
        s.connect().close()
        return True
    except OSError:
        return False


def test_access_log_levels():
    """As RoadRunner: without http.access_logs each request is an "http log" line at debug (shown
    by the default level, hidden at info); with access_logs: true an "http access log" at info."""
    default = Server(workers=1, reactors=1)  # no logs section: development mode, level debug
    with default:
        assert default.get("/").status == 200
        assert wait_for(lambda: "http log" in default.output())
    line = [l for l in default.output().splitlines() if "http log" in l][0]
    assert " DEBUG " in line and '"status":200' in line, line

    quiet = Server(workers=1, reactors=1, extra="logs:\n  mode: production\n  level: info\n")
    with quiet:
        assert quiet.get("/").status == 200 and quiet.get("/nope").status == 404
    assert quiet.stop() == 0
    msgs = [json.loads(l) for l in quiet.output().splitlines() if l.startswith("{")]
    assert msgs and not [d for d in msgs if d["logger"] == "http"], msgs

    loud = Server(workers=1, reactors=1,
                  extra="  access_logs: true\nlogs:\n  mode: production\n  level: info\n")
    with loud:
        assert loud.get("/").status == 200
    assert loud.stop() == 0
    acc = [json.loads(l) for l in loud.output().splitlines() if '"http access log"' in l]
    assert len(acc) == 1, loud.output()[-2000:]
    d = acc[0]
    assert d["level"] == "info" and d["logger"] == "http" and d["status"] == 200, d
    assert d["URI"] == "/" and d["method"] == "GET" and "write_bytes" in d and "read_bytes" in d, d
