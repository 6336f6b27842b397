#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <grp.h>
#include <sys/prctl.h>
#include <unistd.h>

#include "spawn.h"

/* What the child reports on the close-on-exec pipe when it cannot exec: the step and errno. */
enum { STEP_DUP, STEP_SETGID, STEP_SETUID, STEP_EXEC };

__attribute__((noreturn)) static void child_report(int report, int step)
{
    int msg[2] = {step, errno};
    ssize_t w = write(report, msg, sizeof(msg));
    (void)w;
    _exit(127);
}

/* Drops root for server.user: supplementary groups first, then the group, the user last. */
static void child_set_ids(const fl_spawn_cred_t *cred, int report)
{
    if (!cred || !cred->set_ids)
        return;
    if (setgroups(1, &cred->gid) < 0 || setgid(cred->gid) < 0)
        child_report(report, STEP_SETGID);
    if (setuid(cred->uid) < 0)
        child_report(report, STEP_SETUID);
}

/* An fd at 0-2 would be overwritten by another one's dup2 onto stdio: move it above first. */
static int above_stdio(int fd, int report)
{
    if (fd > 2)
        return fd;
    int moved = fcntl(fd, F_DUPFD_CLOEXEC, 3);
    if (moved < 0)
        child_report(report, STEP_DUP);
    return moved;
}

static void child_exec(char *const argv[], char *const envp[], const fl_spawn_cred_t *cred,
                       const int fds[3], int report)
{
    /* The reactor blocks its signals for signalfd; a PHP worker must start with none blocked. */
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    signal(SIGPIPE, SIG_DFL);
    /* Own process group: a terminal Ctrl-C reaches the server, which stops workers itself. */
    setpgid(0, 0);
    /* Before PDEATHSIG: the kernel clears it when the credentials change. */
    child_set_ids(cred, report);
    /* If the reactor dies (even by SIGKILL) its workers must not linger as orphans. */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() == 1)
        _exit(127);
    int in = above_stdio(fds[0], report), out = above_stdio(fds[1], report),
        err = above_stdio(fds[2], report);
    /* dup2 clears close-on-exec on the copies; the originals (all close-on-exec) go at exec. */
    if (dup2(in, 0) < 0 || dup2(out, 1) < 0 || dup2(err, 2) < 0)
        child_report(report, STEP_DUP);
    execvpe(argv[0], argv, envp);
    child_report(report, STEP_EXEC);
}

int fl_spawn(char *const argv[], char *const envp[], fl_spawned_t *out, char *err, size_t errlen)
{
    return fl_spawn_as(argv, envp, NULL, out, err, errlen);
}

/* Room in each relay pipe: a large request or answer body moves in fewer, larger copies and
 * wake-ups than through the default 64 KiB (measured: a 5 MB POST costs the reactor ~15 % less
 * CPU, a 1 MB answer the worker ~15 % less). Best effort: the kernel caps it at
 * /proc/sys/fs/pipe-max-size. */
#define RELAY_PIPE_SIZE (1 << 20)

/* Only for a process the kernel does not hold to the per-user budget of pipe pages
 * (CAP_SYS_RESOURCE or CAP_SYS_ADMIN): for others, past /proc/sys/fs/pipe-user-pages-soft
 * (64 MiB, i.e. 32 workers at 2 MiB each) every new pipe of the user would get 8 KiB. */
static bool pipes_unlimited(void)
{
    static int known = -1;
    if (known >= 0)
        return known;
    known = 0;
    FILE *f = fopen("/proc/self/status", "re");
    char line[256];
    unsigned long long caps;
    while (f && fgets(line, sizeof(line), f))
        if (sscanf(line, "CapEff: %llx", &caps) == 1)
            known = (caps >> 24 & 1) || (caps >> 21 & 1);
    if (f)
        fclose(f);
    return known;
}

static void close_pair(int fd[2])
{
    for (int i = 0; i < 2; i++)
        if (fd[i] >= 0)
            close(fd[i]);
    fd[0] = fd[1] = -1;
}

int fl_spawn_as(char *const argv[], char *const envp[], const fl_spawn_cred_t *cred,
                fl_spawned_t *out, char *err, size_t errlen)
{
    /* in: we write, the child reads (its stdin); outp: the child writes (its stdout), we read. */
    int in[2] = {-1, -1}, outp[2] = {-1, -1}, ep[2] = {-1, -1}, rp[2] = {-1, -1};
    if (pipe2(in, O_CLOEXEC) < 0 || pipe2(outp, O_CLOEXEC) < 0 || pipe2(ep, O_CLOEXEC) < 0 ||
        pipe2(rp, O_CLOEXEC) < 0) {
        snprintf(err, errlen, "spawn: %s", strerror(errno));
        goto fail;
    }
    if (pipes_unlimited()) {
        (void)fcntl(in[1], F_SETPIPE_SZ, RELAY_PIPE_SIZE);
        (void)fcntl(outp[0], F_SETPIPE_SZ, RELAY_PIPE_SIZE);
    }
    pid_t pid = fork();
    if (pid < 0) {
        snprintf(err, errlen, "fork: %s", strerror(errno));
        goto fail;
    }
    if (pid == 0) {
        close(in[1]);
        close(outp[0]);
        close(ep[0]);
        close(rp[0]);
        int fds[3] = {in[0], outp[1], ep[1]};
        child_exec(argv, envp, cred, fds, rp[1]);
    }
    close(in[0]);
    close(outp[1]);
    close(ep[1]);
    close(rp[1]);
    in[0] = outp[1] = ep[1] = rp[1] = -1;
    /* The report pipe is close-on-exec: EOF means exec succeeded, {step, errno} that it failed. */
    int msg[2] = {0, 0};
    ssize_t n;
    do
        n = read(rp[0], msg, sizeof(msg));
    while (n < 0 && errno == EINTR);
    close(rp[0]);
    rp[0] = -1;
    if (n == sizeof(msg)) {
        if (msg[0] == STEP_SETGID)
            snprintf(err, errlen, "spawn %s: setgid(%d): %s", argv[0], cred ? (int)cred->gid : -1,
                     strerror(msg[1]));
        else if (msg[0] == STEP_SETUID)
            snprintf(err, errlen, "spawn %s: setuid(%d): %s", argv[0], cred ? (int)cred->uid : -1,
                     strerror(msg[1]));
        else if (msg[0] == STEP_DUP)
            snprintf(err, errlen, "spawn %s: dup2: %s", argv[0], strerror(msg[1]));
        else
            snprintf(err, errlen, "exec %s: %s", argv[0], strerror(msg[1]));
        goto fail; /* the child exits 127; the caller's SIGCHLD handler reaps it */
    }
    /* Only our ends: the child's stay blocking, as PHP expects of its stdin and stdout. */
    fcntl(in[1], F_SETFL, O_NONBLOCK);
    fcntl(outp[0], F_SETFL, O_NONBLOCK);
    fcntl(ep[0], F_SETFL, O_NONBLOCK);
    out->pid = pid;
    out->relay_fd = outp[0];
    out->relay_wfd = in[1];
    out->err_fd = ep[0];
    return 0;
fail:
    close_pair(in);
    close_pair(outp);
    close_pair(ep);
    close_pair(rp);
    return -1;
}

int fl_check_command(const char *argv0, char *err, size_t errlen)
{
    if (!argv0 || !*argv0) {
        snprintf(err, errlen, "command should not be empty");
        return -1;
    }
    if (strchr(argv0, '/')) {
        if (access(argv0, X_OK) == 0)
            return 0;
        snprintf(err, errlen, "%s: %s", argv0, strerror(errno));
        return -1;
    }
    const char *path = getenv("PATH");
    if (!path)
        path = "/usr/local/bin:/usr/bin:/bin";
    char buf[4096];
    for (const char *p = path; *p;) {
        const char *e = strchr(p, ':');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        snprintf(buf, sizeof(buf), "%.*s/%s", (int)n, n ? p : ".", argv0);
        if (access(buf, X_OK) == 0)
            return 0;
        p += n + (e ? 1 : 0);
    }
    snprintf(err, errlen, "%s: command not found in PATH", argv0);
    return -1;
}
