/* Unit tests for relay/spawn.c: a worker's relay is two real pipes (RoadRunner's `pipes`), our
 * ends non-blocking and close-on-exec, the child's blocking; real children (sh, cat). */
#include <dirent.h>
#include <poll.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "../../relay/spawn.c"
#include "test.h"

static char *const env_none[] = {NULL};

static int count_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    int n = 0;
    for (struct dirent *e; d && (e = readdir(d));)
        n += e->d_name[0] != '.';
    if (d)
        closedir(d);
    return n;
}

/* Reads fd (non-blocking) until EOF or 5 s; returns the bytes read. */
static size_t read_all(int fd, char *buf, size_t cap)
{
    size_t len = 0;
    for (;;) {
        struct pollfd pf = {fd, POLLIN, 0};
        if (poll(&pf, 1, 5000) <= 0)
            return len;
        ssize_t n = read(fd, buf + len, cap - len);
        if (n < 0 && errno == EAGAIN)
            continue;
        if (n <= 0 || (len += (size_t)n) == cap)
            return len;
    }
}

static int wait_status(pid_t pid)
{
    int st = -1;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
        ;
    return st;
}

static void check_our_end(int fd)
{
    struct stat st;
    CU_ASSERT_EQUAL_FATAL(fstat(fd, &st), 0);
    CU_ASSERT_TRUE(S_ISFIFO(st.st_mode));
    CU_ASSERT_TRUE(fcntl(fd, F_GETFL) & O_NONBLOCK);
    CU_ASSERT_TRUE(fcntl(fd, F_GETFD) & FD_CLOEXEC);
}

/* The child's stdin and stdout are pipes, and blocking: cat waits for input that comes late
 * instead of failing with EAGAIN, and its stdout ends at EOF once we close its stdin. */
static void test_relay_is_two_blocking_pipes(void)
{
    char *argv[] = {"/bin/sh", "-c", "test -p /dev/stdin && test -p /dev/stdout && exec cat", NULL};
    char err[256] = "";
    fl_spawned_t s;
    CU_ASSERT_EQUAL_FATAL(fl_spawn(argv, env_none, &s, err, sizeof(err)), 0);
    CU_ASSERT_NOT_EQUAL(s.relay_fd, s.relay_wfd);
    check_our_end(s.relay_fd);
    check_our_end(s.relay_wfd);
    check_our_end(s.err_fd);
    FILE *f = fopen("/proc/sys/fs/pipe-max-size", "r");
    long max = 0;
    if (f && fscanf(f, "%ld", &max) != 1)
        max = 0;
    if (f)
        fclose(f);
    if (pipes_unlimited() && max >= RELAY_PIPE_SIZE) { /* allowed: the relay pipes have 1 MiB */
        CU_ASSERT_EQUAL(fcntl(s.relay_fd, F_GETPIPE_SZ), RELAY_PIPE_SIZE);
        CU_ASSERT_EQUAL(fcntl(s.relay_wfd, F_GETPIPE_SZ), RELAY_PIPE_SIZE);
    }
    usleep(100 * 1000); /* a non-blocking stdin would have made cat fail by now */
    static char big[300000], got[sizeof(big) + 1];
    for (size_t i = 0; i < sizeof(big); i++)
        big[i] = (char)('a' + i % 26);
    /* More than a default 64 KiB pipe holds: written and read back in whatever it takes. */
    size_t off = 0, len = 0;
    for (int rounds = 0; len < sizeof(big) && rounds < 10000; rounds++) {
        struct pollfd pf[2] = {{s.relay_fd, POLLIN, 0},
                               {off < sizeof(big) ? s.relay_wfd : -1, POLLOUT, 0}};
        if (poll(pf, 2, 5000) <= 0)
            break;
        ssize_t k = off < sizeof(big) ? write(s.relay_wfd, big + off, sizeof(big) - off) : 0;
        if (k > 0 && (off += (size_t)k) == sizeof(big))
            close(s.relay_wfd);
        ssize_t r = read(s.relay_fd, got + len, sizeof(got) - len);
        if (r == 0)
            break;
        len += r > 0 ? (size_t)r : 0;
    }
    CU_ASSERT_EQUAL(off, sizeof(big));
    CU_ASSERT_EQUAL(len + read_all(s.relay_fd, got + len, sizeof(got) - len), sizeof(big));
    CU_ASSERT_EQUAL(memcmp(got, big, sizeof(big)), 0);
    int st = wait_status(s.pid);
    CU_ASSERT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    close(s.relay_fd);
    close(s.err_fd);
}

/* A dead worker: EOF on the read pipe, EPIPE (SIGPIPE ignored, as in the reactor) on a write. */
static void test_dead_child_eof_and_epipe(void)
{
    char *argv[] = {"/bin/sh", "-c", "echo bye >&2", NULL};
    char err[256] = "", buf[64];
    fl_spawned_t s;
    CU_ASSERT_EQUAL_FATAL(fl_spawn(argv, env_none, &s, err, sizeof(err)), 0);
    wait_status(s.pid);
    CU_ASSERT_EQUAL(read_all(s.relay_fd, buf, sizeof(buf)), 0);
    CU_ASSERT_EQUAL(read_all(s.err_fd, buf, sizeof(buf)), 4);
    void (*old)(int) = signal(SIGPIPE, SIG_IGN);
    errno = 0;
    CU_ASSERT_EQUAL(write(s.relay_wfd, "x", 1), -1);
    CU_ASSERT_EQUAL(errno, EPIPE);
    signal(SIGPIPE, old);
    close(s.relay_fd);
    close(s.relay_wfd);
    close(s.err_fd);
}

/* A command that cannot run is reported, and leaves no fd behind. */
static void test_exec_failure_leaks_nothing(void)
{
    char *argv[] = {"/nonexistent/php-nope", NULL};
    char err[256] = "";
    fl_spawned_t s;
    int before = count_fds();
    CU_ASSERT_EQUAL(fl_spawn(argv, env_none, &s, err, sizeof(err)), -1);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "exec /nonexistent/php-nope: No such file"));
    CU_ASSERT_EQUAL(count_fds(), before);
    while (waitpid(-1, NULL, WNOHANG) > 0)
        ;
}

/* With our own stdin and stdout closed the pipes get fds 0 and 1: the child still ends up
 * with its stdin and stdout the right way round. */
static void test_pipes_on_stdio_fds(void)
{
    int saved0 = dup(0), saved1 = dup(1);
    close(0);
    close(1);
    char *argv[] = {"/bin/cat", NULL};
    char err[256] = "", buf[16];
    fl_spawned_t s;
    int rc = fl_spawn(argv, env_none, &s, err, sizeof(err));
    int *ours[3] = {&s.relay_fd, &s.relay_wfd, &s.err_fd};
    for (int i = 0; rc == 0 && i < 3; i++) { /* off 0 and 1 before our stdio comes back there */
        int moved = fcntl(*ours[i], F_DUPFD_CLOEXEC, 3);
        close(*ours[i]);
        *ours[i] = moved;
    }
    dup2(saved0, 0);
    dup2(saved1, 1);
    close(saved0);
    close(saved1);
    CU_ASSERT_EQUAL_FATAL(rc, 0);
    CU_ASSERT_EQUAL(write(s.relay_wfd, "ping", 4), 4);
    close(s.relay_wfd);
    CU_ASSERT_EQUAL(read_all(s.relay_fd, buf, sizeof(buf)), 4);
    CU_ASSERT_EQUAL(memcmp(buf, "ping", 4), 0);
    int st = wait_status(s.pid);
    CU_ASSERT_TRUE(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    close(s.relay_fd);
    close(s.err_fd);
}

static const fl_test_t tests[] = {
    {"relay is two blocking pipes", test_relay_is_two_blocking_pipes},
    {"dead child: EOF and EPIPE", test_dead_child_eof_and_epipe},
    {"exec failure leaks nothing", test_exec_failure_leaks_nothing},
    {"pipes on stdio fds", test_pipes_on_stdio_fds},
    {NULL, NULL},
};

FL_TEST_MAIN("spawn", tests)
