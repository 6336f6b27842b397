/* Logging: one line per event on stderr (or the configured file). */
#ifndef FL_LOG_H
#define FL_LOG_H

enum { FL_LOG_DEBUG, FL_LOG_INFO, FL_LOG_WARN, FL_LOG_ERROR, FL_LOG_OFF };

extern int fl_log_level;
/* Who is talking: "master", "reactor 0", ... set once per process. */
void fl_log_set_role(const char *role);
int fl_log_parse_level(const char *s); /* -1 if unknown */
void fl_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define fl_debug(...) do { if (fl_log_level <= FL_LOG_DEBUG) fl_log(FL_LOG_DEBUG, __VA_ARGS__); } while (0)
#define fl_info(...) fl_log(FL_LOG_INFO, __VA_ARGS__)
#define fl_warn(...) fl_log(FL_LOG_WARN, __VA_ARGS__)
#define fl_error(...) fl_log(FL_LOG_ERROR, __VA_ARGS__)

#endif
