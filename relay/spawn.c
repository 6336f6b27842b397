#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <grp.h>
#include <sys/prctl.h>
#include <sys/socket.h>
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

static void child_exec(char *const argv[], char *const envp[], const fl_spawn_cred_t *cred,
                       int relay, int errw, int report)
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
    if (dup2(relay, 0) < 0 || dup2(relay, 1) < 0 || dup2(errw, 2) < 0)
        child_report(report, STEP_DUP);
    if (relay > 2)
        close(relay);
    if (errw > 2)
        close(errw);
    execvpe(argv[0], argv, envp);
    child_report(report, STEP_EXEC);
}

int fl_spawn(char *const argv[], char *const envp[], fl_spawned_t *out, char *err, size_t errlen)
{
    return fl_spawn_as(argv, envp, NULL, out, err, errlen);
}

int fl_spawn_as(char *const argv[], char *const envp[], const fl_spawn_cred_t *cred,
                fl_spawned_t *out, char *err, size_t errlen)
{
    int sv[2] = {-1, -1}, ep[2] = {-1, -1}, rp[2] = {-1, -1};
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0 || pipe2(ep, O_CLOEXEC) < 0 ||
        pipe2(rp, O_CLOEXEC) < 0) {
        snprintf(err, errlen, "spawn: %s", strerror(errno));
        goto fail;
    }
    pid_t pid = fork();
    if (pid < 0) {
        snprintf(err, errlen, "fork: %s", strerror(errno));
        goto fail;
    }
    if (pid == 0) {
        close(sv[0]);
        close(ep[0]);
        close(rp[0]);
        child_exec(argv, envp, cred, sv[1], ep[1], rp[1]);
    }
    close(sv[1]);
    close(ep[1]);
    close(rp[1]);
    sv[1] = ep[1] = rp[1] = -1;
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
        close(sv[0]);
        close(ep[0]);
        return -1; /* the child exits 127; the caller's SIGCHLD handler reaps it */
    }
    fcntl(sv[0], F_SETFL, O_NONBLOCK);
    fcntl(ep[0], F_SETFL, O_NONBLOCK);
    out->pid = pid;
    out->relay_fd = sv[0];
    out->err_fd = ep[0];
    return 0;
fail:
    for (int i = 0; i < 2; i++) {
        if (sv[i] >= 0)
            close(sv[i]);
        if (ep[i] >= 0)
            close(ep[i]);
        if (rp[i] >= 0)
            close(rp[i]);
    }
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
