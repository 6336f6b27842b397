"""The reactor's accept path and loop under load: listener options (TCP_NODELAY inherited by
accepted sockets, TCP_DEFER_ACCEPT), a request read in the wake-up that accepts its connection,
and the quiet loop of a saturated reactor (new input waits in the kernel, nothing is lost or
timed out for it). Real binary, real php-cli workers, real sockets."""
import ctypes
import os
import socket
import threading
import time

from fl import Reader, Server, raw_request, request

SYS_PIDFD_OPEN, SYS_PIDFD_GETFD = 434, 438


def server_fds(pid):
    """(fd number, socket inode) of every socket pid holds."""
    out = []
    for fd in os.listdir("/proc/%d/fd" % pid):
        try:
            target = os.readlink("/proc/%d/fd/%s" % (pid, fd))
        except OSError:
            continue
        if target.startswith("socket:["):
            out.append((int(fd), target))
    return out


def grab(pid, fd):
    """A copy of another process's fd (pidfd_getfd: needs ptrace rights over it, as root)."""
    libc = ctypes.CDLL(None, use_errno=True)
    pidfd = libc.syscall(SYS_PIDFD_OPEN, pid, 0)
    if pidfd < 0:
        raise OSError(ctypes.get_errno(), "pidfd_open")
    try:
        got = libc.syscall(SYS_PIDFD_GETFD, pidfd, fd, 0)
        if got < 0:
            raise OSError(ctypes.get_errno(), "pidfd_getfd")
        return got
    finally:
        os.close(pidfd)


def tcp_sockets(pid):
    """{'listen': [socket], 'conn': [socket]}: copies of pid's TCP sockets."""
    out = {"listen": [], "conn": []}
    for fd, _ in server_fds(pid):
        s = socket.socket(fileno=grab(pid, fd))
        if s.type != socket.SOCK_STREAM or s.family not in (socket.AF_INET, socket.AF_INET6):
            s.detach()
            continue
        listening = s.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
        out["listen" if listening else "conn"].append(s)
    return out


def test_listener_options_reach_accepted_sockets():
    with Server(reactors=1, workers=1) as s:
        (reactor,) = s.reactors()
        c = s.connect()
        try:
            assert request(c, "GET", "/pid").status == 200  # accepted, kept alive
            socks = tcp_sockets(reactor)
            try:
                assert len(socks["listen"]) == 1 and len(socks["conn"]) == 1, socks
                lst, conn = socks["listen"][0], socks["conn"][0]
                assert lst.getsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT) > 0
                assert lst.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
                # set once on the listener, inherited: no setsockopt per connection
                assert conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
            finally:
                for x in socks["listen"] + socks["conn"]:
                    x.close()
        finally:
            c.close()


def test_connection_close_requests_back_to_back():
    """Each request on its own connection, read in the wake-up that accepts it: answered in full
    with Connection: close, then closed by the server."""
    with Server(reactors=2, workers=2) as s:
        for i in range(200):
            c = s.connect()
            try:
                c.sendall(raw_request("GET", "/pid", {"Connection": "close"}))
                r = Reader(c).read()
                assert r.status == 200 and r.header("connection") == "close", (i, r)
                c.settimeout(5)
                assert c.recv(1) == b"", i  # the server closed it
            finally:
                c.close()


def test_saturated_reactor_loses_and_times_out_nothing():
    """One worker busy and a request queued: the reactor stops reading new requests (they wait
    in the kernel). A keep-alive connection whose request came in meanwhile is not closed by
    its idle timeout (it fires while the request waits unread), and every waiting request is
    answered once the worker is free."""
    extra = "  idle_timeout: 1s\n"
    with Server(reactors=1, workers=1, extra=extra) as s:
        idle = s.connect()
        others = [s.connect() for _ in range(12)]
        conns = [idle] + others
        try:
            for c in conns:  # accepted and answered: all idle keep-alive connections now
                assert request(c, "GET", "/pid").status == 200
            t0 = time.time()
            busy, queued = others[0], others[1]
            busy.sendall(raw_request("GET", "/sleep?ms=1500"))
            time.sleep(0.1)
            queued.sendall(raw_request("GET", "/pid"))  # the worker is busy: queued
            time.sleep(0.2)
            for c in [idle] + others[2:]:  # saturated: these wait unread in the kernel
                c.sendall(raw_request("GET", "/pid"))
            results = {}

            def read(i, c):
                try:
                    results[i] = Reader(c).read().status
                except Exception as e:  # noqa
                    results[i] = repr(e)

            threads = [threading.Thread(target=read, args=(i, c)) for i, c in enumerate(conns)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(15)
            # the idle connection's 1 s idle timeout fired while its request waited
            assert time.time() - t0 > 1.4
            assert results == {i: 200 for i in range(len(conns))}, results
            # and they are all still usable
            for c in conns:
                assert request(c, "GET", "/pid").status == 200
        finally:
            for c in conns:
                c.close()
