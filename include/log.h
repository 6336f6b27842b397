/* Logging, RoadRunner style (spec rr-config-cli-octane.md §2.4): named loggers ("http", "server",
 * "rpc", ...), each line one write() to every output of its channel.
 *
 *   logs.mode    production  JSON lines {"level":"info","ts":<unix
 * ns>,"logger":"..","msg":"..",...} development console lines (the default), coloured on a terminal
 *                raw         the message only
 *                off / none  nothing
 *   logs.level, logs.encoding (json|console), logs.output / err_output (stdout, stderr, paths),
 *   logs.channels.<logger>: the same keys for one logger; what a channel leaves out it takes from
 *   the root, except the level, which defaults to its mode's built-in level (as upstream).
 *
 * fl_log()/fl_info()/... log under the process's own logger ("forkline", with the role of the
 * process as a field); fl_logn() names the logger; fl_logf() adds structured fields. */
#ifndef FL_LOG_H
#define FL_LOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

enum { FL_LOG_DEBUG, FL_LOG_INFO, FL_LOG_WARN, FL_LOG_ERROR, FL_LOG_OFF };

/* The level of the root logger; fl_debug() tests it before formatting anything. */
extern int fl_log_level;
/* Who is talking: "master", "reactor 0", ... set once per process. */
void fl_log_set_role(const char *role);
int fl_log_parse_level(const char *s); /* -1 if unknown */
void fl_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The same under a named logger ("http", "server", "rpc"). */
void fl_logn(int level, const char *logger, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Whether a line of this level under this logger would be written anywhere. */
bool fl_log_enabled(int level, const char *logger);

/* Structured fields, e.g. the access log:
 *   fl_log_field_t f[] = {FL_LF_INT("status", 200), FL_LF_STR("method", "GET")};
 *   fl_logf(FL_LOG_INFO, "http", "http log", f, 2); */
enum { FL_LF_T_STR, FL_LF_T_INT, FL_LF_T_FLOAT, FL_LF_T_BOOL };
typedef struct {
    const char *key;
    int type;
    const char *s; /* FL_LF_T_STR: s, len */
    size_t len;
    int64_t i; /* INT and BOOL */
    double f;
} fl_log_field_t;
#define FL_LF_STR(k, v)                                                                            \
    ((fl_log_field_t){.key = (k), .type = FL_LF_T_STR, .s = (v), .len = strlen(v)})
#define FL_LF_STRN(k, v, n)                                                                        \
    ((fl_log_field_t){.key = (k), .type = FL_LF_T_STR, .s = (v), .len = (n)})
#define FL_LF_INT(k, v) ((fl_log_field_t){.key = (k), .type = FL_LF_T_INT, .i = (int64_t)(v)})
#define FL_LF_FLOAT(k, v) ((fl_log_field_t){.key = (k), .type = FL_LF_T_FLOAT, .f = (v)})
#define FL_LF_BOOL(k, v) ((fl_log_field_t){.key = (k), .type = FL_LF_T_BOOL, .i = !!(v)})
void fl_logf(int level, const char *logger, const char *msg, size_t msglen,
             const fl_log_field_t *fields, size_t nfields);

/* Configuration (from the `logs` section). NULL / 0 members mean "not given". */
typedef struct {
    const char *mode;     /* development | production | raw | off | none */
    const char *level;    /* debug | info | warn | error (| panic | fatal | dpanic → error) */
    const char *encoding; /* json | console */
    char *const *output;  /* stdout, stderr or file paths (opened for append) */
    size_t noutput;
    char *const *err_output; /* where the logger's own errors go (a failed write) */
    size_t nerr_output;
} fl_log_opts_t;
typedef struct {
    const char *name; /* the logger: "http", "server", ... */
    fl_log_opts_t o;
} fl_log_channel_t;

/* Replaces the configuration; 0, or -1 with err filled (e.g. an output file cannot be opened)
 * and the previous configuration kept. Forked children inherit it. */
int fl_log_configure(const fl_log_opts_t *root, const fl_log_channel_t *channels, size_t n,
                     char *err, size_t errlen);
/* Reopens every file output under its path (after a rotation, on SIGUSR1); the descriptors keep
 * their numbers. Each process that logs must call it for itself. */
void fl_log_reopen(void);

#define fl_debug(...)                                                                              \
    do {                                                                                           \
        if (fl_log_level <= FL_LOG_DEBUG)                                                          \
            fl_log(FL_LOG_DEBUG, __VA_ARGS__);                                                     \
    } while (0)
#define fl_info(...) fl_log(FL_LOG_INFO, __VA_ARGS__)
#define fl_warn(...) fl_log(FL_LOG_WARN, __VA_ARGS__)
#define fl_error(...) fl_log(FL_LOG_ERROR, __VA_ARGS__)

#endif
