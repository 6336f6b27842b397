#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "sdnotify.h"

static char sock_path[sizeof(((struct sockaddr_un *)0)->sun_path)];
static size_t sock_len;

void fl_sd_init(void)
{
    const char *p = getenv("NOTIFY_SOCKET");
    if (p && (p[0] == '/' || p[0] == '@') && strlen(p) < sizeof(sock_path)) {
        sock_len = strlen(p);
        memcpy(sock_path, p, sock_len);
        if (sock_path[0] == '@')
            sock_path[0] = 0; /* abstract namespace */
    }
    unsetenv("NOTIFY_SOCKET");
    unsetenv("LISTEN_FDS");
    unsetenv("LISTEN_PID");
    unsetenv("LISTEN_FDNAMES");
}

void fl_sd_notify(const char *fmt, ...)
{
    if (!sock_len)
        return;
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (n <= 0)
        return;
    int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return;
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    memcpy(sa.sun_path, sock_path, sock_len);
    /* offsetof + length keeps abstract names exact (no trailing NULs), as HAProxy does */
    socklen_t len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + sock_len);
    if (connect(fd, (struct sockaddr *)&sa, len) == 0) {
        ssize_t w = write(fd, msg, (size_t)(n < (int)sizeof(msg) ? n : (int)sizeof(msg) - 1));
        (void)w;
    }
    close(fd);
}

void fl_sd_reloading(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    fl_sd_notify("RELOADING=1\nMONOTONIC_USEC=%llu\nSTATUS=reloading the configuration",
                 (unsigned long long)ts.tv_sec * 1000000ULL + (unsigned long long)ts.tv_nsec / 1000);
}
