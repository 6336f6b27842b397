"""The master's busy-poll (`busy_poll`, spare.h): RPC works with it on and off, a master that
served a burst of RPC calls goes back to sleeping (no CPU while idle), and a bad value is refused
with the file, line and column."""
import os
import subprocess
import time

from fl import BIN, ROOT, Server, free_port

BURST = r'''
require getenv('FL_ROOT') . '/php/src/autoload.php';
$c = new Forkline\KV\Cache(Forkline\RPC::create($argv[1]), 'mem');
$bad = 0;
for ($i = 0; $i < (int) $argv[2]; $i++) {
    $c->set('k', $i);
    $bad += $c->get('k') === $i ? 0 : 1;
}
echo "bad=$bad\n";
'''


def cpu_ticks(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def server(busy_poll):
    rpc = "tcp://127.0.0.1:%d" % free_port()
    extra = ("busy_poll: %s\nrpc:\n  listen: %s\nkv:\n  mem:\n    driver: memory\n    config: {}\n"
             % (busy_poll, rpc))
    s = Server(workers=1, reactors=1, extra=extra)
    s.rpc = rpc
    return s


def burst(s, n):
    p = subprocess.run(["php", "-r", BURST, "--", s.rpc, str(n)], capture_output=True, text=True,
                       timeout=60, env=dict(os.environ, FL_ROOT=ROOT))
    assert p.returncode == 0 and p.stdout.strip() == "bad=0", p.stdout + p.stderr


def test_busy_poll_on_and_off_serve_rpc_and_idle_master_sleeps():
    hz = os.sysconf("SC_CLK_TCK")
    for value in ("100us", "off", "0"):
        s = server(value)
        with s:
            burst(s, 3000)
            time.sleep(0.3)
            t0 = cpu_ticks(s.proc.pid)
            time.sleep(2)
            used = (cpu_ticks(s.proc.pid) - t0) / hz
            # idle: a few timer wake-ups; a master still polling would show ~2 s
            assert used < 0.1, "busy_poll %s: idle master used %.2f s of CPU in 2 s" % (value, used)


def test_busy_poll_bad_values_name_the_place():
    for value, want in (("5s", "expected a duration from 0 to 10ms"),
                        ("-1us", "expected a duration"), ("fast", "expected a duration"),
                        ("[1]", "expected a duration such as 100us")):
        s = Server(extra="busy_poll: %s\n" % value)
        p = subprocess.run([BIN, "serve", "-c", s.config], capture_output=True, text=True,
                           timeout=20)
        out = p.stdout + p.stderr
        assert p.returncode != 0, out
        with open(s.config) as f:
            line = 1 + [l.startswith("busy_poll:") for l in f].index(True)
        assert "%s:%d:12:" % (s.config, line) in out and want in out, out
