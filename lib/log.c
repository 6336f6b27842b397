/* Logging: named loggers, per-channel configuration, JSON / console / raw lines. See log.h.
 * Processes are single-threaded, so one reusable line buffer serves every call. */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "fl.h"
#include "log.h"

enum { LOG_MODE_DEV, LOG_MODE_PROD, LOG_MODE_RAW, LOG_MODE_OFF };
enum { LOG_ENC_CONSOLE, LOG_ENC_JSON };

typedef struct {
    int fd;
    char *path; /* NULL for stdout / stderr */
    bool owned; /* opened by this sink (closed with it) */
    bool tty;
} log_out_t;

typedef struct {
    char *name; /* NULL for the root */
    int mode, level, enc;
    log_out_t *outs, *errs;
    size_t nouts, nerrs;
} log_sink_t;

int fl_log_level = FL_LOG_INFO;
static char log_role[32] = "forkline";

static log_out_t log_stderr_out = {STDERR_FILENO, NULL, false, false};
/* The root's level lives in fl_log_level so that callers may still set it directly. */
static log_sink_t log_root = {
    NULL, LOG_MODE_DEV, FL_LOG_INFO, LOG_ENC_CONSOLE, &log_stderr_out, &log_stderr_out, 1, 1};
static log_sink_t *log_channels;
static size_t log_nchannels;
static fl_buf_t log_line, log_colored, log_msg;
static int64_t log_last_err_report;

static const char *const log_level_names[] = {"debug", "info", "warn", "error"};

void fl_log_set_role(const char *r)
{
    snprintf(log_role, sizeof(log_role), "%s", r);
}

int fl_log_parse_level(const char *s)
{
    for (int i = 0; i < 4; i++)
        if (strcasecmp(s, log_level_names[i]) == 0)
            return i;
    if (strcasecmp(s, "warning") == 0)
        return FL_LOG_WARN;
    if (strcasecmp(s, "panic") == 0 || strcasecmp(s, "fatal") == 0 || strcasecmp(s, "dpanic") == 0)
        return FL_LOG_ERROR;
    return -1;
}

/* ---- choosing the sink ---- */

static const log_sink_t *log_find(const char *logger)
{
    for (size_t i = 0; logger && i < log_nchannels; i++)
        if (strcmp(log_channels[i].name, logger) == 0)
            return &log_channels[i];
    return &log_root;
}

static int log_sink_level(const log_sink_t *s)
{
    return s == &log_root ? fl_log_level : s->level;
}

bool fl_log_enabled(int level, const char *logger)
{
    const log_sink_t *s = log_find(logger);
    return level >= 0 && level < FL_LOG_OFF && s->mode != LOG_MODE_OFF &&
           level >= log_sink_level(s);
}

/* ---- encoding ---- */

static void log_json_str(fl_buf_t *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    fl_buf_reserve(b, n + 2);
    fl_buf_append(b, "\"", 1);
    size_t run = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c != '"' && c != '\\')
            continue;
        fl_buf_append(b, s + run, i - run);
        run = i + 1;
        char esc[6] = {'\\', 0};
        size_t elen = 2;
        switch (c) {
        case '"':
            esc[1] = '"';
            break;
        case '\\':
            esc[1] = '\\';
            break;
        case '\n':
            esc[1] = 'n';
            break;
        case '\r':
            esc[1] = 'r';
            break;
        case '\t':
            esc[1] = 't';
            break;
        default:
            memcpy(esc, "\\u00", 4);
            esc[4] = hex[c >> 4];
            esc[5] = hex[c & 15];
            elen = 6;
        }
        fl_buf_append(b, esc, elen);
    }
    fl_buf_append(b, s + run, n - run);
    fl_buf_append(b, "\"", 1);
}

static void log_json_fields(fl_buf_t *b, const fl_log_field_t *f, size_t n, bool lead_comma)
{
    for (size_t i = 0; i < n; i++) {
        if (i || lead_comma)
            fl_buf_append(b, ",", 1);
        log_json_str(b, f[i].key, strlen(f[i].key));
        fl_buf_append(b, ":", 1);
        switch (f[i].type) {
        case FL_LF_T_STR:
            log_json_str(b, f[i].s ? f[i].s : "", f[i].s ? f[i].len : 0);
            break;
        case FL_LF_T_INT:
            fl_buf_printf(b, "%lld", (long long)f[i].i);
            break;
        case FL_LF_T_FLOAT:
            fl_buf_printf(b, "%.17g", f[i].f);
            break;
        default:
            fl_buf_puts(b, f[i].i ? "true" : "false");
        }
    }
}

static size_t log_trim_newlines(const char *msg, size_t n)
{
    while (n && (msg[n - 1] == '\n' || msg[n - 1] == '\r'))
        n--;
    return n;
}

/* zap's production JSON: level, ts (Unix ns), logger, msg, then the fields. The message is kept
 * as it is, trailing newline included (worker stderr, spec §2.4). */
static void log_encode_json(fl_buf_t *b, int level, const char *logger, const char *msg, size_t n,
                            const fl_log_field_t *f, size_t nf)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    fl_buf_printf(b, "{\"level\":\"%s\",\"ts\":%lld,\"logger\":", log_level_names[level],
                  (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec);
    log_json_str(b, logger ? logger : "forkline", logger ? strlen(logger) : 8);
    fl_buf_puts(b, ",\"msg\":");
    log_json_str(b, msg, n);
    if (!logger) {
        fl_log_field_t proc = FL_LF_STR("proc", log_role);
        log_json_fields(b, &proc, 1, true);
    }
    log_json_fields(b, f, nf, true);
    fl_buf_puts(b, "}\n");
}

/* "2026-01-02T15:04:05.123Z INFO  master[12] http: msg\t{fields}". */
static void log_encode_console(fl_buf_t *b, bool color, int level, const char *logger,
                               const char *msg, size_t n, const fl_log_field_t *f, size_t nf)
{
    static const char *const tags[] = {"DEBUG", "INFO ", "WARN ", "ERROR"};
    static const char *const colors[] = {"\033[35m", "\033[34m", "\033[33m", "\033[31m"};
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    fl_buf_printf(b, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ %s%s%s %s[%d]%s%s: ", tm.tm_year + 1900,
                  tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                  (int)(ts.tv_nsec / 1000000), color ? colors[level] : "", tags[level],
                  color ? "\033[0m" : "", log_role, (int)getpid(), logger ? " " : "",
                  logger ? logger : "");
    fl_buf_append(b, msg, log_trim_newlines(msg, n));
    if (nf) {
        fl_buf_puts(b, "\t{");
        log_json_fields(b, f, nf, false);
        fl_buf_puts(b, "}");
    }
    fl_buf_append(b, "\n", 1);
}

/* ---- writing ---- */

static int log_write_all(int fd, const char *p, size_t n)
{
    while (n) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static void log_report_error(const log_sink_t *s, const log_out_t *o, int err)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    int64_t now = (int64_t)ts.tv_sec;
    if (now - log_last_err_report < 10)
        return; /* a full disk would otherwise double every line */
    log_last_err_report = now;
    char msg[600];
    int n =
        snprintf(msg, sizeof(msg), "%s[%d]: log write to %s failed: %s\n", log_role, (int)getpid(),
                 o->path      ? o->path
                 : o->fd == 1 ? "stdout"
                              : "stderr",
                 strerror(err));
    for (size_t i = 0; i < s->nerrs; i++)
        if (s->errs[i].fd != o->fd)
            log_write_all(s->errs[i].fd, msg, (size_t)n);
}

static void log_emit(int level, const char *logger, const char *msg, size_t n,
                     const fl_log_field_t *f, size_t nf)
{
    const log_sink_t *s = log_find(logger);
    if (level < 0 || level >= FL_LOG_OFF || s->mode == LOG_MODE_OFF || level < log_sink_level(s))
        return;
    log_line.len = 0;
    log_colored.len = 0;
    if (s->mode == LOG_MODE_RAW) {
        fl_buf_append(&log_line, msg, log_trim_newlines(msg, n));
        fl_buf_append(&log_line, "\n", 1);
    } else if (s->enc == LOG_ENC_JSON) {
        log_encode_json(&log_line, level, logger, msg, n, f, nf);
    } else {
        log_encode_console(&log_line, false, level, logger, msg, n, f, nf);
    }
    for (size_t i = 0; i < s->nouts; i++) {
        const fl_buf_t *b = &log_line;
        if (s->outs[i].tty && s->mode != LOG_MODE_RAW && s->enc == LOG_ENC_CONSOLE) {
            if (!log_colored.len)
                log_encode_console(&log_colored, true, level, logger, msg, n, f, nf);
            b = &log_colored;
        }
        /* One write per line: lines from the master and the reactors never interleave. */
        if (b->len && log_write_all(s->outs[i].fd, b->data, b->len) < 0)
            log_report_error(s, &s->outs[i], errno);
    }
    if (log_line.cap > 1u << 20)
        fl_buf_free(&log_line); /* a huge stderr chunk went by: do not keep the memory */
    if (log_colored.cap > 1u << 20)
        fl_buf_free(&log_colored);
}

static void log_vemit(int level, const char *logger, const fl_log_field_t *f, size_t nf,
                      const char *fmt, va_list ap)
{
    va_list ap2;
    va_copy(ap2, ap);
    char small[1024];
    int m = vsnprintf(small, sizeof(small), fmt, ap);
    if (m < 0) {
        va_end(ap2);
        return;
    }
    if ((size_t)m < sizeof(small)) {
        log_emit(level, logger, small, (size_t)m, f, nf);
    } else {
        log_msg.len = 0;
        if (fl_buf_reserve(&log_msg, (size_t)m + 1) == 0) {
            vsnprintf(log_msg.data, (size_t)m + 1, fmt, ap2);
            log_emit(level, logger, log_msg.data, (size_t)m, f, nf);
        }
        if (log_msg.cap > 1u << 20)
            fl_buf_free(&log_msg);
    }
    va_end(ap2);
}

void fl_log(int level, const char *fmt, ...)
{
    if (!fl_log_enabled(level, NULL))
        return;
    va_list ap;
    va_start(ap, fmt);
    log_vemit(level, NULL, NULL, 0, fmt, ap);
    va_end(ap);
}

void fl_logn(int level, const char *logger, const char *fmt, ...)
{
    if (!fl_log_enabled(level, logger))
        return;
    va_list ap;
    va_start(ap, fmt);
    log_vemit(level, logger, NULL, 0, fmt, ap);
    va_end(ap);
}

void fl_logf(int level, const char *logger, const char *msg, size_t msglen,
             const fl_log_field_t *fields, size_t nfields)
{
    log_emit(level, logger, msg, msglen, fields, nfields);
}

/* ---- configuration ---- */

static void log_outs_free(log_out_t *outs, size_t n)
{
    if (outs == &log_stderr_out)
        return;
    for (size_t i = 0; i < n; i++) {
        if (outs[i].owned)
            close(outs[i].fd);
        free(outs[i].path);
    }
    free(outs);
}

static void log_sink_free(log_sink_t *s)
{
    log_outs_free(s->outs, s->nouts);
    log_outs_free(s->errs, s->nerrs);
    free(s->name);
    memset(s, 0, sizeof(*s));
}

static int log_open_outs(char *const *names, size_t n, log_out_t **out, size_t *nout, char *err,
                         size_t errlen)
{
    log_out_t *o = calloc(n ? n : 1, sizeof(*o));
    if (!o) {
        snprintf(err, errlen, "logs: out of memory");
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        const char *name = names[i];
        if (strcmp(name, "stdout") == 0 || strcmp(name, "stderr") == 0) {
            o[i].fd = name[3] == 'o' ? STDOUT_FILENO : STDERR_FILENO;
        } else {
            o[i].fd = open(name, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
            o[i].path = strdup(name);
            o[i].owned = o[i].fd >= 0;
            if (o[i].fd < 0 || !o[i].path) {
                snprintf(err, errlen, "logs: cannot open %s: %s", name, strerror(errno));
                log_outs_free(o, i + 1);
                return -1;
            }
        }
        o[i].tty = isatty(o[i].fd) == 1;
    }
    *out = o;
    *nout = n;
    return 0;
}

/* Borrowed copies of another sink's outputs (not owned: closed with that sink). */
static int log_share_outs(const log_out_t *src, size_t n, log_out_t **out, size_t *nout)
{
    log_out_t *o = calloc(n ? n : 1, sizeof(*o));
    if (!o)
        return -1;
    for (size_t i = 0; i < n; i++)
        o[i] = (log_out_t){src[i].fd, NULL, false, src[i].tty};
    *out = o;
    *nout = n;
    return 0;
}

static int log_parse_mode(const char *m)
{
    if (!m || !*m || strcasecmp(m, "development") == 0)
        return LOG_MODE_DEV;
    if (strcasecmp(m, "production") == 0)
        return LOG_MODE_PROD;
    if (strcasecmp(m, "raw") == 0)
        return LOG_MODE_RAW;
    if (strcasecmp(m, "off") == 0 || strcasecmp(m, "none") == 0)
        return LOG_MODE_OFF;
    return LOG_MODE_DEV; /* zap's default branch */
}

/* parent NULL: the root. A channel takes what it does not say from the root, except the level,
 * which defaults to its mode's built-in level (upstream builds each channel's logger alone). */
static int log_sink_build(log_sink_t *s, const char *name, const fl_log_opts_t *o,
                          const log_sink_t *parent, char *err, size_t errlen)
{
    memset(s, 0, sizeof(*s));
    if (name && !(s->name = strdup(name))) {
        snprintf(err, errlen, "logs: out of memory");
        return -1;
    }
    s->mode = o->mode || !parent ? log_parse_mode(o->mode) : parent->mode;
    int lvl = o->level ? fl_log_parse_level(o->level) : -1;
    s->level = lvl >= 0 ? lvl : s->mode == LOG_MODE_DEV ? FL_LOG_DEBUG : FL_LOG_INFO;
    if (o->encoding && *o->encoding)
        s->enc = strcasecmp(o->encoding, "json") == 0 ? LOG_ENC_JSON : LOG_ENC_CONSOLE;
    else if (o->mode || !parent)
        s->enc = s->mode == LOG_MODE_PROD ? LOG_ENC_JSON : LOG_ENC_CONSOLE;
    else
        s->enc = parent->enc;
    static char *const def_stderr[] = {"stderr"};
    int rc;
    if (o->noutput || !parent)
        rc = o->noutput ? log_open_outs(o->output, o->noutput, &s->outs, &s->nouts, err, errlen)
                        : log_open_outs(def_stderr, 1, &s->outs, &s->nouts, err, errlen);
    else
        rc = log_share_outs(parent->outs, parent->nouts, &s->outs, &s->nouts);
    if (rc == 0) {
        if (o->nerr_output || !parent)
            rc = o->nerr_output ? log_open_outs(o->err_output, o->nerr_output, &s->errs, &s->nerrs,
                                                err, errlen)
                                : log_open_outs(def_stderr, 1, &s->errs, &s->nerrs, err, errlen);
        else
            rc = log_share_outs(parent->errs, parent->nerrs, &s->errs, &s->nerrs);
    }
    if (rc < 0) {
        if (!err[0])
            snprintf(err, errlen, "logs: out of memory");
        log_sink_free(s);
    }
    return rc;
}

int fl_log_configure(const fl_log_opts_t *root, const fl_log_channel_t *channels, size_t n,
                     char *err, size_t errlen)
{
    log_sink_t r;
    err[0] = 0;
    if (log_sink_build(&r, NULL, root, NULL, err, errlen) < 0)
        return -1;
    log_sink_t *ch = calloc(n ? n : 1, sizeof(*ch));
    size_t built = 0;
    for (; ch && built < n; built++)
        if (log_sink_build(&ch[built], channels[built].name, &channels[built].o, &r, err, errlen) <
            0)
            break;
    if (!ch || built < n) {
        for (size_t i = 0; ch && i < built; i++)
            log_sink_free(&ch[i]);
        free(ch);
        log_sink_free(&r);
        if (!err[0])
            snprintf(err, errlen, "logs: out of memory");
        return -1;
    }
    for (size_t i = 0; i < log_nchannels; i++)
        log_sink_free(&log_channels[i]);
    free(log_channels);
    if (log_root.outs != &log_stderr_out)
        log_sink_free(&log_root);
    log_root = r;
    log_channels = ch;
    log_nchannels = n;
    fl_log_level = r.mode == LOG_MODE_OFF ? FL_LOG_OFF : r.level;
    return 0;
}

static void log_reopen_outs(log_out_t *o, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (!o[i].owned || !o[i].path)
            continue;
        int fd = open(o[i].path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
        if (fd < 0) {
            fl_log(FL_LOG_ERROR, "cannot reopen log file %s: %s", o[i].path, strerror(errno));
            continue;
        }
        /* dup3 keeps the number (and close-on-exec), so nothing else needs to know. */
        if (dup3(fd, o[i].fd, O_CLOEXEC) < 0)
            fl_log(FL_LOG_ERROR, "cannot reopen log file %s: %s", o[i].path, strerror(errno));
        close(fd);
    }
}

void fl_log_reopen(void)
{
    if (log_root.outs != &log_stderr_out) {
        log_reopen_outs(log_root.outs, log_root.nouts);
        log_reopen_outs(log_root.errs, log_root.nerrs);
    }
    for (size_t i = 0; i < log_nchannels; i++) {
        log_reopen_outs(log_channels[i].outs, log_channels[i].nouts);
        log_reopen_outs(log_channels[i].errs, log_channels[i].nerrs);
    }
}
