#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <sys/time.h>
#include <unistd.h>

#include "log.h"

int fl_log_level = FL_LOG_INFO;
static char role[32] = "forkline";

void fl_log_set_role(const char *r)
{
    snprintf(role, sizeof(role), "%s", r);
}

int fl_log_parse_level(const char *s)
{
    static const char *names[] = {"debug", "info", "warn", "error"};
    for (int i = 0; i < 4; i++)
        if (strcasecmp(s, names[i]) == 0)
            return i;
    if (strcasecmp(s, "warning") == 0)
        return FL_LOG_WARN;
    if (strcasecmp(s, "panic") == 0 || strcasecmp(s, "fatal") == 0 || strcasecmp(s, "dpanic") == 0)
        return FL_LOG_ERROR;
    return -1;
}

void fl_log(int level, const char *fmt, ...)
{
    static const char *tags[] = {"DEBUG", "INFO", "WARN", "ERROR"};
    if (level < fl_log_level || level >= FL_LOG_OFF)
        return;
    char line[4096];
    struct timeval tv;
    struct tm tm;
    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    int n = snprintf(line, sizeof(line), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ %-5s %s[%d]: ",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                     tm.tm_sec, (int)(tv.tv_usec / 1000), tags[level], role, (int)getpid());
    va_list ap;
    va_start(ap, fmt);
    int m = vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
    va_end(ap);
    size_t len = (size_t)n + (m < 0 ? 0 : (size_t)m);
    if (len > sizeof(line) - 2)
        len = sizeof(line) - 2;
    if (len > 0 && line[len - 1] == '\n')
        len--;
    line[len++] = '\n';
    /* One write() per line so lines from reactors and the master never interleave. */
    ssize_t w = write(STDERR_FILENO, line, len);
    (void)w;
}
