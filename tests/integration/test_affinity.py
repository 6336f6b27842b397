"""cpu_affinity: reactor i is pinned to the i-th CPU forkline may use, and its PHP workers inherit
the mask through fork + exec; `off` leaves every process on the inherited mask."""
import os
import signal
import subprocess

from fl import BIN, Server, cmdline, children, wait_for

ALLOWED = sorted(os.sched_getaffinity(0))  # the master inherits the test runner's mask


def slot_of(pid):
    return int(cmdline(pid).rsplit(" ", 1)[1])  # "forkline: reactor 1"


def check_pinned(s, nreactors):
    rs = s.reactors()
    assert len(rs) == nreactors, rs
    for r in rs:
        want = {ALLOWED[slot_of(r) % len(ALLOWED)]}
        assert os.sched_getaffinity(r) == want, (cmdline(r), os.sched_getaffinity(r), want)
        php = children(r)
        assert php, "reactor %d has no PHP worker" % r
        for p in php:
            assert os.sched_getaffinity(p) == want, (cmdline(p), os.sched_getaffinity(p), want)


def test_affinity_on_pins_reactors_and_their_workers():
    with Server(reactors=2, workers=4, args=["-o", "cpu_affinity=on"]) as s:
        check_pinned(s, 2)
        assert s.get("/").status == 200


def test_affinity_default_is_on():
    with Server(reactors=2, workers=2) as s:
        check_pinned(s, 2)


def test_affinity_off_keeps_the_inherited_mask():
    with Server(reactors=2, workers=2, args=["-o", "cpu_affinity=off"]) as s:
        for r in s.reactors():
            assert os.sched_getaffinity(r) == set(ALLOWED), (r, os.sched_getaffinity(r))
            for p in children(r):
                assert os.sched_getaffinity(p) == set(ALLOWED), (cmdline(p), os.sched_getaffinity(p))
        assert s.get("/").status == 200


def test_affinity_respawned_reactor_is_pinned_to_its_slot():
    with Server(reactors=2, workers=2, args=["-o", "cpu_affinity=on"]) as s:
        victim = [r for r in s.reactors() if slot_of(r) == 1][0]
        os.kill(victim, signal.SIGKILL)

        def respawned():
            rs = [r for r in s.reactors() if r != victim and slot_of(r) == 1 and children(r)]
            return rs[0] if rs else None
        r = wait_for(respawned, timeout=15)
        assert r, s.output()
        check_pinned(s, 2)


def test_affinity_bad_value_is_a_config_error():
    s = Server(yaml='version: "3"\ncpu_affinity: sometimes\nserver:\n  command: php x\n')
    p = subprocess.run([BIN, "-t", "-c", s.config], capture_output=True, text=True, timeout=20)
    assert p.returncode == 1, p.stderr
    assert "%s:2:" % s.config in p.stderr and "cpu_affinity" in p.stderr, p.stderr
    assert "auto, on, off" in p.stderr, p.stderr
    p = subprocess.run([BIN, "-t", "-c", s.config, "-o", "cpu_affinity=off"], capture_output=True,
                       text=True, timeout=20)
    assert p.returncode == 0, p.stderr
