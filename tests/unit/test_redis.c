/* Unit tests for master/redis.c against real redis-server processes started here on free
 * 127.0.0.1 ports (stopped by pid): commands and pipelines, binary values, error replies, a server
 * killed and restarted under pending calls, read timeouts, AUTH / ACL users / SELECT / SETNAME,
 * unix sockets, dial timeouts, TLS (Debian 12's redis-server is built with it) with server and
 * client certificates made by the openssl CLI. */
#include <arpa/inet.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../../lib/buf.c"
#include "../../lib/log.c"
#include "../../reactor/ev.c"
#include "../../master/redis.c"
#include "test.h"

static fl_loop_t *L;
static char tmpdir[64];

/* ---- redis-server ---- */

static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0 ||
        getsockname(fd, (struct sockaddr *)&a, &len) < 0)
        return -1;
    close(fd);
    return ntohs(a.sin_port);
}

static bool port_open(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    bool ok = connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0;
    close(fd);
    return ok;
}

/* Starts redis-server with the given extra arguments (NULL-terminated) and waits until port
 * accepts (or until path exists for a unix-socket-only server). */
static pid_t redis_start(int port, const char *path, const char *const *extra)
{
    char portbuf[16];
    snprintf(portbuf, sizeof(portbuf), "%d", path ? 0 : port);
    const char *argv[40] = {"redis-server", "--port", portbuf, "--bind", "127.0.0.1", "--save", "",
                            "--appendonly", "no",     "--dir", tmpdir};
    int n = 11;
    for (; extra && *extra && n < 38; extra++)
        argv[n++] = *extra;
    argv[n] = NULL;
    pid_t pid = fork();
    if (pid == 0) {
        int dn = open("/dev/null", O_RDWR);
        dup2(dn, 1);
        dup2(dn, 2);
        execvp("redis-server", (char *const *)argv);
        _exit(127);
    }
    for (int i = 0; i < 500; i++) {
        struct stat st;
        if (path ? stat(path, &st) == 0 : port_open(port))
            return pid;
        if (waitpid(pid, NULL, WNOHANG) == pid)
            return -1;
        usleep(10000);
    }
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    return -1;
}

static void redis_stop(pid_t pid)
{
    if (pid <= 0)
        return;
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
}

/* ---- the loop ---- */

static void stop_fire(fl_loop_t *l, void *d)
{
    (void)d;
    fl_loop_stop(l);
}

/* Runs the loop in 5 ms slices until *v >= want or ms elapse. */
static bool run_until(const int *v, int want, int ms)
{
    int64_t end = fl_now_ms() + ms;
    while (*v < want && fl_now_ms() < end) {
        fl_timer_add(L, 5, stop_fire, NULL);
        fl_loop_run(L);
    }
    return *v >= want;
}

static void run_for(int ms)
{
    static const int never = 0;
    run_until(&never, 1, ms);
}

/* ---- results ---- */

typedef struct {
    int calls;
    const char *err;
    int type;
    long long integer;
    char str[512];
    size_t len, elements;
    int order;
} res_t;

static int ndone, seq;

static void on_res(fl_redis_t *r, redisReply *rep, const char *err, void *data)
{
    (void)r;
    res_t *x = data;
    x->calls++;
    x->err = err;
    x->order = seq++;
    CU_ASSERT((rep == NULL) == (err != NULL));
    if (rep) {
        x->type = rep->type;
        x->integer = rep->integer;
        x->len = rep->len;
        x->elements = rep->elements;
        if (rep->str)
            memcpy(x->str, rep->str, rep->len < sizeof(x->str) ? rep->len : sizeof(x->str) - 1);
    }
    ndone++;
}

static int ups, downs;
static void on_state(fl_redis_t *r, bool up, void *data)
{
    (void)r, (void)data;
    if (up)
        ups++;
    else
        downs++;
}

static fl_redis_t *client(fl_redis_opts_t o)
{
    char err[256];
    ups = downs = 0;
    fl_redis_t *r = fl_redis_new(L, &o, on_state, NULL, err, sizeof(err));
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    return r;
}

/* One command to completion. */
static res_t call(fl_redis_t *r, int argc, const char **argv, const size_t *lens)
{
    res_t x = {0};
    int before = ndone;
    CU_ASSERT_EQUAL(fl_redis_cmd(r, on_res, &x, argc, argv, lens), 0);
    CU_ASSERT(run_until(&ndone, before + 1, 3000));
    CU_ASSERT_EQUAL(x.calls, 1);
    return x;
}

static res_t call1(fl_redis_t *r, const char *a, const char *b)
{
    const char *argv[] = {a, b};
    return call(r, b ? 2 : 1, argv, NULL);
}

/* A client whose handshake the server refuses: a command fails with EDOWN (held, never sent
 * as if the connection were up) and the last error names why. */
static void assert_not_up(fl_redis_t *r, const char *cmd, const char *why)
{
    res_t held = {0};
    fl_redis_cmdf(r, on_res, &held, cmd);
    CU_ASSERT(run_until(&held.calls, 1, 2000));
    CU_ASSERT_PTR_EQUAL(held.err, FL_REDIS_EDOWN);
    CU_ASSERT_EQUAL(ups, 0);
    CU_ASSERT(strstr(fl_redis_last_error(r), why) != NULL);
}

#define ADDR(buf, port) (snprintf(buf, sizeof(buf), "127.0.0.1:%d", port), buf)

/* ---- tests ---- */

static void t_commands(void)
{
    int port = free_port();
    pid_t pid = redis_start(port, NULL, NULL);
    CU_ASSERT_FATAL(pid > 0);
    char addr[64];
    fl_redis_t *r = client((fl_redis_opts_t){.addr = ADDR(addr, port), .name = "fl-unit"});
    /* issued before the connection is up: held, then answered */
    res_t ping = {0};
    CU_ASSERT_EQUAL(fl_redis_cmdf(r, on_res, &ping, "PING"), 0);
    CU_ASSERT_EQUAL(ping.calls, 0);
    CU_ASSERT(run_until(&ndone, ndone + 1, 3000));
    CU_ASSERT_PTR_NULL(ping.err);
    CU_ASSERT_STRING_EQUAL(ping.str, "PONG");
    CU_ASSERT_EQUAL(ups, 1);
    CU_ASSERT(fl_redis_up(r));

    /* binary values, both APIs */
    const char val[] = "a\0b\r\n\xff\x00z";
    const char *set[] = {"SET", "bin", val};
    size_t setl[] = {3, 3, sizeof(val) - 1};
    res_t x = call(r, 3, set, setl);
    CU_ASSERT_EQUAL(x.type, REDIS_REPLY_STATUS);
    x = call1(r, "GET", "bin");
    CU_ASSERT_EQUAL(x.type, REDIS_REPLY_STRING);
    CU_ASSERT_EQUAL(x.len, sizeof(val) - 1);
    CU_ASSERT(memcmp(x.str, val, sizeof(val) - 1) == 0);
    res_t y = {0};
    fl_redis_cmdf(r, on_res, &y, "SET %s %b", "bin2", val, sizeof(val) - 1);
    run_until(&ndone, ndone + 1, 3000);
    x = call1(r, "STRLEN", "bin2");
    CU_ASSERT_EQUAL(x.integer, (long long)sizeof(val) - 1);
    x = call1(r, "GET", "missing");
    CU_ASSERT_EQUAL(x.type, REDIS_REPLY_NIL);

    /* a pipeline of 2000 answers in order, in few writes */
    enum { N = 2000 };
    static res_t inc[N];
    memset(inc, 0, sizeof(inc));
    int before = ndone;
    for (int i = 0; i < N; i++)
        CU_ASSERT_EQUAL(fl_redis_cmdf(r, on_res, &inc[i], "INCR ctr"), 0);
    CU_ASSERT(run_until(&ndone, before + N, 5000));
    int ordered = 0;
    for (int i = 0; i < N; i++)
        ordered += inc[i].calls == 1 && inc[i].integer == i + 1 &&
                   (i == 0 || inc[i].order == inc[i - 1].order + 1);
    CU_ASSERT_EQUAL(ordered, N);

    /* a server error is a reply, not a connection error */
    x = call1(r, "INCR", "bin");
    CU_ASSERT_PTR_NULL(x.err);
    CU_ASSERT_EQUAL(x.type, REDIS_REPLY_ERROR);
    CU_ASSERT(strncmp(x.str, "ERR value is not an integer", 27) == 0);
    x = call1(r, "NOSUCHCOMMAND", NULL);
    CU_ASSERT_EQUAL(x.type, REDIS_REPLY_ERROR);
    CU_ASSERT(fl_redis_up(r));
    const char *gn[] = {"CLIENT", "GETNAME"};
    x = call(r, 2, gn, NULL);
    CU_ASSERT_STRING_EQUAL(x.str, "fl-unit");

    /* free with calls pending: each gets ECLOSED before free returns */
    res_t p1 = {0}, p2 = {0};
    fl_redis_cmdf(r, on_res, &p1, "PING");
    fl_redis_cmdf(r, on_res, &p2, "PING");
    fl_redis_free(r);
    CU_ASSERT(p1.calls == 1 && p1.err == FL_REDIS_ECLOSED);
    CU_ASSERT(p2.calls == 1 && p2.err == FL_REDIS_ECLOSED);
    redis_stop(pid);
}

/* A callback that frees the client: the rest get ECLOSED, nothing is touched after. */
static fl_redis_t *to_free;
static void on_res_free(fl_redis_t *r, redisReply *rep, const char *err, void *data)
{
    on_res(r, rep, err, data);
    fl_redis_free(to_free);
}

static void t_free_in_callback(void)
{
    int port = free_port();
    pid_t pid = redis_start(port, NULL, NULL);
    CU_ASSERT_FATAL(pid > 0);
    char addr[64];
    to_free = client((fl_redis_opts_t){.addr = ADDR(addr, port)});
    res_t a = {0}, b = {0}, c = {0};
    int before = ndone;
    fl_redis_cmdf(to_free, on_res_free, &a, "PING");
    fl_redis_cmdf(to_free, on_res, &b, "PING");
    fl_redis_cmdf(to_free, on_res, &c, "PING");
    CU_ASSERT(run_until(&ndone, before + 3, 3000));
    CU_ASSERT(a.calls == 1 && a.err == NULL);
    CU_ASSERT(b.calls == 1 && b.err == FL_REDIS_ECLOSED);
    CU_ASSERT(c.calls == 1 && c.err == FL_REDIS_ECLOSED);
    run_for(50);
    redis_stop(pid);
}

static void t_restart(void)
{
    int port = free_port();
    char addr[64];
    /* no server yet: down, calls fail with EDOWN, never re-entrantly */
    fl_redis_t *r = client((fl_redis_opts_t){
        .addr = ADDR(addr, port), .reconnect_min_ms = 20, .reconnect_max_ms = 100});
    run_for(100);
    CU_ASSERT_EQUAL(ups, 0);
    CU_ASSERT(strstr(fl_redis_last_error(r), "refused") != NULL);
    res_t d = {0};
    fl_redis_cmdf(r, on_res, &d, "PING");
    CU_ASSERT_EQUAL(d.calls, 0);
    CU_ASSERT(run_until(&d.calls, 1, 1000));
    CU_ASSERT_PTR_EQUAL(d.err, FL_REDIS_EDOWN);

    /* the server appears: the back-off reconnects */
    pid_t pid = redis_start(port, NULL, NULL);
    CU_ASSERT_FATAL(pid > 0);
    CU_ASSERT(run_until(&ups, 1, 2000));
    CU_ASSERT_STRING_EQUAL(call1(r, "PING", NULL).str, "PONG");

    /* killed with calls pending: ELOST for each, then the state callback */
    res_t blk = {0}, behind = {0};
    const char *blpop[] = {"BLPOP", "nolist", "0"};
    fl_redis_cmd_blocking(r, on_res, &blk, 3, blpop, NULL);
    fl_redis_cmdf(r, on_res, &behind, "PING");
    run_for(50);
    CU_ASSERT_EQUAL(blk.calls + behind.calls, 0);
    redis_stop(pid);
    CU_ASSERT(run_until(&behind.calls, 1, 2000));
    CU_ASSERT(blk.calls == 1 && blk.err == FL_REDIS_ELOST);
    CU_ASSERT(behind.calls == 1 && behind.err == FL_REDIS_ELOST);
    CU_ASSERT(blk.order < behind.order);
    CU_ASSERT_EQUAL(downs, 1);
    CU_ASSERT(!fl_redis_up(r));
    res_t e = {0};
    fl_redis_cmdf(r, on_res, &e, "PING");
    CU_ASSERT_EQUAL(e.calls, 0);
    CU_ASSERT(run_until(&e.calls, 1, 1000));
    CU_ASSERT_PTR_EQUAL(e.err, FL_REDIS_EDOWN);

    /* restarted: later calls succeed */
    pid = redis_start(port, NULL, NULL);
    CU_ASSERT_FATAL(pid > 0);
    CU_ASSERT(run_until(&ups, 2, 2000));
    res_t x = call1(r, "PING", NULL);
    CU_ASSERT_PTR_NULL(x.err);
    CU_ASSERT_STRING_EQUAL(x.str, "PONG");
    fl_redis_free(r);
    redis_stop(pid);
}

/* A forked child (a reactor) does not keep the connection open after the parent closed it. */
static void t_fork(void)
{
    int port = free_port();
    pid_t pid = redis_start(port, NULL, NULL);
    CU_ASSERT_FATAL(pid > 0);
    char addr[64];
    fl_redis_t *r = client((fl_redis_opts_t){.addr = ADDR(addr, port), .name = "forked"});
    fl_redis_t *watch = client((fl_redis_opts_t){.addr = addr});
    CU_ASSERT(run_until(&ups, 1, 2000));
    CU_ASSERT_STRING_EQUAL(call1(r, "PING", NULL).str, "PONG");
    pid_t child = fork();
    if (child == 0) {
        sleep(5);
        _exit(0);
    }
    fl_redis_free(r);
    const char *list[] = {"CLIENT", "LIST"};
    res_t x = {0};
    for (int i = 0; i < 50; i++) {
        x = call(watch, 2, list, NULL);
        if (!strstr(x.str, "name=forked "))
            break;
        run_for(20);
    }
    CU_ASSERT(strstr(x.str, "name=forked ") == NULL);
    kill(child, SIGKILL);
    waitpid(child, NULL, 0);
    fl_redis_free(watch);
    redis_stop(pid);
}

static void t_read_timeout(void)
{
    int port = free_port();
    pid_t pid = redis_start(port, NULL, NULL);
    CU_ASSERT_FATAL(pid > 0);
    char addr[64];
    fl_redis_t *r = client((fl_redis_opts_t){
        .addr = ADDR(addr, port), .read_timeout_ms = 200, .reconnect_min_ms = 20});
    CU_ASSERT(run_until(&ups, 1, 2000));

    /* a blocking command is exempt, and the command behind it counts from its reply */
    res_t blk = {0}, behind = {0};
    const char *blpop[] = {"BLPOP", "nolist", "0.5"};
    int64_t t0 = fl_now_ms();
    fl_redis_cmd_blocking(r, on_res, &blk, 3, blpop, NULL);
    fl_redis_cmdf(r, on_res, &behind, "PING");
    CU_ASSERT(run_until(&behind.calls, 1, 3000));
    CU_ASSERT(blk.err == NULL && blk.type == REDIS_REPLY_NIL);
    CU_ASSERT(behind.err == NULL && strcmp(behind.str, "PONG") == 0);
    CU_ASSERT(fl_now_ms() - t0 >= 450);
    CU_ASSERT_EQUAL(downs, 0);

    /* the same server-side wait through the normal API times out, with what is behind it */
    res_t slow = {0}, after = {0};
    t0 = fl_now_ms();
    fl_redis_cmd(r, on_res, &slow, 3, blpop, NULL);
    fl_redis_cmdf(r, on_res, &after, "PING");
    CU_ASSERT(run_until(&after.calls, 1, 3000));
    int64_t took = fl_now_ms() - t0;
    CU_ASSERT(slow.calls == 1 && slow.err == FL_REDIS_ETIMEOUT);
    CU_ASSERT(after.calls == 1 && after.err == FL_REDIS_ETIMEOUT);
    CU_ASSERT(took >= 190 && took < 450);
    CU_ASSERT_EQUAL(downs, 1);
    CU_ASSERT(run_until(&ups, 2, 2000));
    CU_ASSERT_STRING_EQUAL(call1(r, "PING", NULL).str, "PONG");
    fl_redis_free(r);
    redis_stop(pid);
}

static void t_auth_select(void)
{
    int port = free_port();
    const char *args[] = {"--requirepass", "s3cret", NULL};
    pid_t pid = redis_start(port, NULL, args);
    CU_ASSERT_FATAL(pid > 0);
    char addr[64];
    ADDR(addr, port);

    /* a wrong password never comes up and says why */
    fl_redis_t *bad = client((fl_redis_opts_t){.addr = addr, .password = "nope"});
    assert_not_up(bad, "PING", "WRONGPASS");
    fl_redis_free(bad);

    fl_redis_t *r =
        client((fl_redis_opts_t){.addr = addr, .password = "s3cret", .db = 3, .name = "fl-db3"});
    CU_ASSERT(run_until(&ups, 1, 2000));
    const char *info[] = {"CLIENT", "INFO"};
    res_t x = call(r, 2, info, NULL);
    CU_ASSERT(strstr(x.str, " db=3 ") != NULL);
    CU_ASSERT(strstr(x.str, " name=fl-db3 ") != NULL);
    const char *acl[] = {"ACL", "SETUSER", "alice", "on", ">pw", "~*", "+@all"};
    CU_ASSERT_EQUAL(call(r, 7, acl, NULL).type, REDIS_REPLY_STATUS);
    fl_redis_free(r);

    /* a Redis 6 ACL user */
    r = client((fl_redis_opts_t){.addr = addr, .username = "alice", .password = "pw"});
    CU_ASSERT(run_until(&ups, 1, 2000));
    const char *who[] = {"ACL", "WHOAMI"};
    CU_ASSERT_STRING_EQUAL(call(r, 2, who, NULL).str, "alice");
    fl_redis_free(r);
    redis_stop(pid);
}

static void t_unix_and_names(void)
{
    char path[128];
    snprintf(path, sizeof(path), "%s/redis.sock", tmpdir);
    unlink(path);
    const char *args[] = {"--unixsocket", path, NULL};
    pid_t pid = redis_start(0, path, args);
    CU_ASSERT_FATAL(pid > 0);
    char addr[160];
    snprintf(addr, sizeof(addr), "unix://%s", path);
    fl_redis_t *r = client((fl_redis_opts_t){.addr = addr});
    CU_ASSERT(run_until(&ups, 1, 2000));
    CU_ASSERT_STRING_EQUAL(call1(r, "PING", NULL).str, "PONG");
    fl_redis_free(r);
    redis_stop(pid);

    /* a name goes through the resolver thread */
    int port = free_port();
    pid = redis_start(port, NULL, NULL);
    CU_ASSERT_FATAL(pid > 0);
    snprintf(addr, sizeof(addr), "localhost:%d", port);
    r = client((fl_redis_opts_t){.addr = addr});
    CU_ASSERT(run_until(&ups, 1, 3000));
    CU_ASSERT_STRING_EQUAL(call1(r, "PING", NULL).str, "PONG");
    fl_redis_free(r);
    redis_stop(pid);

    /* an unknown name fails to resolve, without blocking the loop */
    r = client((fl_redis_opts_t){.addr = "no-such-host.invalid:6379"});
    res_t x = {0};
    fl_redis_cmdf(r, on_res, &x, "PING");
    CU_ASSERT(run_until(&x.calls, 1, 6000));
    CU_ASSERT_PTR_EQUAL(x.err, FL_REDIS_EDOWN);
    CU_ASSERT(strstr(fl_redis_last_error(r), "resolve") != NULL);
    fl_redis_free(r); /* a resolver thread may still be running: it cleans up after itself */
}

static void t_dial_timeout(void)
{
    /* a listener that never answers: TCP connects, AUTH gets no reply */
    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    CU_ASSERT_FATAL(bind(lfd, (struct sockaddr *)&a, sizeof(a)) == 0 && listen(lfd, 8) == 0);
    getsockname(lfd, (struct sockaddr *)&a, &len);
    char addr[64];
    fl_redis_t *r = client((fl_redis_opts_t){
        .addr = ADDR(addr, ntohs(a.sin_port)), .password = "x", .dial_timeout_ms = 200});
    res_t x = {0};
    int64_t t0 = fl_now_ms();
    fl_redis_cmdf(r, on_res, &x, "PING");
    CU_ASSERT(run_until(&x.calls, 1, 2000));
    int64_t took = fl_now_ms() - t0;
    CU_ASSERT_PTR_EQUAL(x.err, FL_REDIS_EDOWN);
    CU_ASSERT(took >= 190 && took < 1000);
    CU_ASSERT(strstr(fl_redis_last_error(r), "dial_timeout") != NULL);
    CU_ASSERT_EQUAL(ups, 0);
    fl_redis_free(r);
    close(lfd);
}

static void t_bad_options(void)
{
    char err[256];
    const char *bad[] = {"nocolon", "host:", "host:0", "host:99999", "[::1]6379", ""};
    for (size_t i = 0; i < FL_ARRAY_SIZE(bad); i++) {
        fl_redis_t *r =
            fl_redis_new(L, &(fl_redis_opts_t){.addr = bad[i]}, NULL, NULL, err, sizeof(err));
        CU_ASSERT_PTR_NULL(r);
        CU_ASSERT(err[0] != 0);
    }
    fl_redis_t *r = fl_redis_new(
        L, &(fl_redis_opts_t){.addr = "127.0.0.1:1", .tls_root_ca = "/nonexistent/ca.pem"}, NULL,
        NULL, err, sizeof(err));
    CU_ASSERT_PTR_NULL(r);
    CU_ASSERT(strstr(err, "/nonexistent/ca.pem") != NULL);
    r = fl_redis_new(L, &(fl_redis_opts_t){.addr = "127.0.0.1:1", .tls_cert = "/x.pem"}, NULL, NULL,
                     err, sizeof(err));
    CU_ASSERT_PTR_NULL(r);
    CU_ASSERT(strstr(err, "cert and key") != NULL);
}

/* ---- TLS ---- */

static int sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int sh(const char *fmt, ...)
{
    char cmd[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof(cmd), fmt, ap);
    va_end(ap);
    return system(cmd);
}

static bool make_certs(const char *d)
{
    const char *ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
    return sh("cd %s && printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\\n' >san.ext && "
              "openssl req -x509 %s -keyout ca.key -out ca.crt -days 2 -subj /CN=fl-test-ca "
              ">/dev/null 2>&1 && "
              "openssl req %s -keyout srv.key -out srv.csr -subj /CN=localhost >/dev/null 2>&1 && "
              "openssl x509 -req -in srv.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 "
              "-extfile san.ext -out srv.crt >/dev/null 2>&1 && "
              "openssl req %s -keyout cli.key -out cli.csr -subj /CN=client >/dev/null 2>&1 && "
              "openssl x509 -req -in cli.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 "
              "-out cli.crt >/dev/null 2>&1",
              d, ec, ec, ec) == 0;
}

static void t_tls(void)
{
    CU_ASSERT_FATAL(make_certs(tmpdir));
    char crt[128], key[128], ca[128], cli[128], clikey[128], addr[64], port_s[16];
    snprintf(crt, sizeof(crt), "%s/srv.crt", tmpdir);
    snprintf(key, sizeof(key), "%s/srv.key", tmpdir);
    snprintf(ca, sizeof(ca), "%s/ca.crt", tmpdir);
    snprintf(cli, sizeof(cli), "%s/cli.crt", tmpdir);
    snprintf(clikey, sizeof(clikey), "%s/cli.key", tmpdir);
    int port = free_port();
    snprintf(port_s, sizeof(port_s), "%d", port);
    /* --port 0 --tls-port P: redis_start waits on P (a TCP accept works before TLS) */
    const char *args[] = {"--port",
                          "0",
                          "--tls-port",
                          port_s,
                          "--tls-cert-file",
                          crt,
                          "--tls-key-file",
                          key,
                          "--tls-ca-cert-file",
                          ca,
                          "--tls-auth-clients",
                          "optional",
                          NULL};
    pid_t pid = redis_start(port, NULL, args);
    /* Debian 12's redis-server is built with TLS: this fails if a build without it is used */
    CU_ASSERT_FATAL(pid > 0);
    ADDR(addr, port);

    fl_redis_t *r = client((fl_redis_opts_t){.addr = addr, .tls_root_ca = ca});
    CU_ASSERT(run_until(&ups, 1, 3000));
    CU_ASSERT_STRING_EQUAL(call1(r, "PING", NULL).str, "PONG");
    /* 1 MB each way: partial TLS writes and many records per read */
    size_t big = 1 << 20;
    char *v = malloc(big);
    for (size_t i = 0; i < big; i++)
        v[i] = (char)(i * 7 + 3);
    const char *set[] = {"SET", "big", v};
    size_t setl[] = {3, 3, big};
    CU_ASSERT_EQUAL(call(r, 3, set, setl).type, REDIS_REPLY_STATUS);
    CU_ASSERT_EQUAL(call1(r, "STRLEN", "big").integer, (long long)big);
    const char *gr[] = {"GETRANGE", "big", "1048000", "1048009"};
    res_t x = call(r, 4, gr, NULL);
    CU_ASSERT(x.len == 10 && memcmp(x.str, v + 1048000, 10) == 0);
    free(v);
    fl_redis_free(r);

    /* by name: resolver, SNI and the DNS SAN */
    char byname[64];
    snprintf(byname, sizeof(byname), "localhost:%d", port);
    r = client((fl_redis_opts_t){.addr = byname, .tls_root_ca = ca});
    CU_ASSERT(run_until(&ups, 1, 3000));
    fl_redis_free(r);

    /* the system store does not know our CA */
    r = client((fl_redis_opts_t){.addr = addr, .tls = true, .dial_timeout_ms = 1000});
    run_for(300);
    CU_ASSERT_EQUAL(ups, 0);
    CU_ASSERT(strstr(fl_redis_last_error(r), "certificate verify failed") != NULL);
    fl_redis_free(r);

    /* client certificates: required by the server, refused without one */
    r = client(
        (fl_redis_opts_t){.addr = addr, .tls_root_ca = ca, .tls_cert = cli, .tls_key = clikey});
    CU_ASSERT(run_until(&ups, 1, 3000));
    const char *cs[] = {"CONFIG", "SET", "tls-auth-clients", "yes"};
    CU_ASSERT_EQUAL(call(r, 4, cs, NULL).type, REDIS_REPLY_STATUS);
    fl_redis_t *anon = client((fl_redis_opts_t){
        .addr = addr, .tls_root_ca = ca, .name = "anon", .dial_timeout_ms = 1000});
    run_for(300);
    CU_ASSERT_EQUAL(ups, 0);
    CU_ASSERT(fl_redis_last_error(anon)[0] != 0);
    fl_redis_free(anon);
    fl_redis_free(r);
    r = client((fl_redis_opts_t){
        .addr = addr, .tls_root_ca = ca, .tls_cert = cli, .tls_key = clikey, .name = "withcert"});
    CU_ASSERT(run_until(&ups, 1, 3000));
    CU_ASSERT_STRING_EQUAL(call1(r, "PING", NULL).str, "PONG");
    fl_redis_free(r);
    redis_stop(pid);
}

static void t_setup(void)
{
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/fl-redis-unit-XXXXXX");
    CU_ASSERT_PTR_NOT_NULL_FATAL(mkdtemp(tmpdir));
    L = fl_loop_new(1024);
    CU_ASSERT_PTR_NOT_NULL_FATAL(L);
    fl_log_level = getenv("FL_DEBUG") ? FL_LOG_DEBUG : FL_LOG_OFF;
}

static void t_teardown(void)
{
    fl_loop_free(L);
    sh("rm -rf %s", tmpdir);
}

/* A server loading its data set accepts connections and answers -LOADING: the client is not up
 * until PING says PONG, calls meanwhile fail as while the server is down (never with the
 * LOADING text as if it were their answer), and it comes up by itself once loading ends. */
static void t_loading(void)
{
    int port = free_port();
    char addr[64], dbfile[128];
    snprintf(dbfile, sizeof(dbfile), "loading-%d.rdb", port);
    const char *save_args[] = {"--enable-debug-command", "yes", "--dbfilename", dbfile, NULL};
    pid_t pid = redis_start(port, NULL, save_args);
    CU_ASSERT_FATAL(pid > 0);
    fl_redis_t *r = client((fl_redis_opts_t){.addr = ADDR(addr, port)});
    const char *pop[] = {"DEBUG", "POPULATE", "12000"};
    CU_ASSERT_STRING_EQUAL(call(r, 3, pop, NULL).str, "OK");
    CU_ASSERT_STRING_EQUAL(call1(r, "SAVE", NULL).str, "OK");
    fl_redis_free(r);
    run_for(20);
    redis_stop(pid);

    /* 12000 keys at 100 µs each: loading takes over a second, with events served meanwhile */
    const char *load_args[] = {"--dbfilename", dbfile, "--key-load-delay", "100",
                               "--loading-process-events-interval-bytes", "1024", NULL};
    pid = redis_start(port, NULL, load_args);
    CU_ASSERT_FATAL(pid > 0);
    r = client((fl_redis_opts_t){
        .addr = ADDR(addr, port), .reconnect_min_ms = 20, .reconnect_max_ms = 100});
    assert_not_up(r, "DBSIZE", "LOADING");
    CU_ASSERT(run_until(&ups, 1, 10000));
    res_t x = call1(r, "DBSIZE", NULL);
    CU_ASSERT(x.err == NULL && x.type == REDIS_REPLY_INTEGER && x.integer == 12000);
    fl_redis_free(r);
    run_for(20);
    redis_stop(pid);
    char path[256];
    snprintf(path, sizeof(path), "%s/%s", tmpdir, dbfile);
    unlink(path);
}

static const fl_test_t tests[] = {
    {"setup", t_setup},
    {"commands, binary values, pipelines, errors", t_commands},
    {"free from inside a callback", t_free_in_callback},
    {"server down at start, killed, restarted", t_restart},
    {"a server loading its data set is not up", t_loading},
    {"a fork does not hold the connection", t_fork},
    {"read timeout, blocking commands exempt", t_read_timeout},
    {"AUTH, ACL user, SELECT, SETNAME", t_auth_select},
    {"unix socket, names, resolve failure", t_unix_and_names},
    {"dial timeout", t_dial_timeout},
    {"bad options", t_bad_options},
    {"TLS: CA, names, client certificates", t_tls},
    {"teardown", t_teardown},
    {NULL, NULL},
};

FL_TEST_MAIN("redis", tests)
