/* Unit tests for lib/log.c: the JSON lines Laravel Octane parses (level, ts, logger, msg),
 * console and raw modes, levels per channel, outputs, and reopening after a rotation. Every line
 * is read back from a real file. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <unistd.h>

#include "../../lib/buf.c"
#include "../../lib/log.c"
#include "test.h"

static char t_path[128], t_path2[128];

static void t_paths(void)
{
    snprintf(t_path, sizeof(t_path), "/tmp/fl-test-log-%d.log", (int)getpid());
    snprintf(t_path2, sizeof(t_path2), "/tmp/fl-test-log-%d.rotated", (int)getpid());
    unlink(t_path);
    unlink(t_path2);
}

static char *t_read(const char *path)
{
    static char buf[65536];
    FILE *f = fopen(path, "r");
    size_t n = f ? fread(buf, 1, sizeof(buf) - 1, f) : 0;
    if (f)
        fclose(f);
    buf[n] = 0;
    return buf;
}

static int t_configure(const char *mode, const char *level, const char *enc)
{
    char *outs[] = {t_path};
    fl_log_opts_t o = {.mode = mode, .level = level, .encoding = enc, .output = outs, .noutput = 1};
    char err[300];
    return fl_log_configure(&o, NULL, 0, err, sizeof(err));
}

static void test_production_json(void)
{
    t_paths();
    CU_ASSERT_EQUAL_FATAL(t_configure("production", "debug", "json"), 0);
    fl_logn(FL_LOG_INFO, "server", "%s", "worker said \"hi\"\n");
    fl_warn("plain %d", 42);
    fl_log_field_t f[] = {FL_LF_INT("status", 200), FL_LF_STR("method", "GET"),
                          FL_LF_FLOAT("x", 1.5), FL_LF_BOOL("ok", 1)};
    fl_logf(FL_LOG_INFO, "http", "http log", 8, f, 4);
    char *text = t_read(t_path);
    char *save = NULL;
    int lines = 0;
    for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        cJSON *j = cJSON_Parse(line);
        CU_ASSERT_PTR_NOT_NULL_FATAL(j);
        /* the order zap writes them in */
        CU_ASSERT_STRING_EQUAL(j->child->string, "level");
        CU_ASSERT_STRING_EQUAL(j->child->next->string, "ts");
        CU_ASSERT_STRING_EQUAL(j->child->next->next->string, "logger");
        CU_ASSERT_STRING_EQUAL(j->child->next->next->next->string, "msg");
        CU_ASSERT_TRUE(j->child->next->valuedouble > 1.6e18); /* Unix ns, an integer */
        const char *ts = strstr(line, "\"ts\":") + 5;
        CU_ASSERT_EQUAL(strspn(ts, "0123456789"), 19); /* digits only up to the comma */
        const char *lv = cJSON_GetObjectItem(j, "level")->valuestring;
        const char *lg = cJSON_GetObjectItem(j, "logger")->valuestring;
        const char *msg = cJSON_GetObjectItem(j, "msg")->valuestring;
        if (lines == 0) {
            CU_ASSERT_STRING_EQUAL(lv, "info");
            CU_ASSERT_STRING_EQUAL(lg, "server");
            CU_ASSERT_STRING_EQUAL(msg, "worker said \"hi\"\n"); /* raw text, newline kept */
        } else if (lines == 1) {
            CU_ASSERT_STRING_EQUAL(lv, "warn");
            CU_ASSERT_STRING_EQUAL(lg, "forkline");
            CU_ASSERT_STRING_EQUAL(msg, "plain 42");
        } else {
            CU_ASSERT_STRING_EQUAL(msg, "http log");
            CU_ASSERT_EQUAL(cJSON_GetObjectItem(j, "status")->valueint, 200);
            CU_ASSERT_STRING_EQUAL(cJSON_GetObjectItem(j, "method")->valuestring, "GET");
            CU_ASSERT_TRUE(cJSON_IsTrue(cJSON_GetObjectItem(j, "ok")));
        }
        cJSON_Delete(j);
        lines++;
    }
    CU_ASSERT_EQUAL(lines, 3);
    unlink(t_path);
}

static void test_levels_and_channels(void)
{
    t_paths();
    char *outs[] = {t_path};
    fl_log_opts_t root = {.mode = "production", .level = "warn", .output = outs, .noutput = 1};
    fl_log_channel_t ch[] = {{"http", {.level = "debug"}}, {"rpc", {.mode = "off"}}};
    char err[300];
    CU_ASSERT_EQUAL_FATAL(fl_log_configure(&root, ch, 2, err, sizeof(err)), 0);
    CU_ASSERT_EQUAL(fl_log_level, FL_LOG_WARN);
    fl_info("root info: dropped");
    fl_debug("root debug: dropped");
    fl_logn(FL_LOG_DEBUG, "http", "http debug: kept");
    fl_logn(FL_LOG_ERROR, "rpc", "rpc error: dropped (off)");
    fl_logn(FL_LOG_INFO, "jobs", "jobs info: dropped (root level)");
    fl_error("root error: kept");
    char *text = t_read(t_path);
    CU_ASSERT_PTR_NULL(strstr(text, "dropped"));
    CU_ASSERT_PTR_NOT_NULL(strstr(text, "\"level\":\"debug\",")); /* http inherits JSON */
    CU_ASSERT_PTR_NOT_NULL(strstr(text, "http debug: kept"));
    CU_ASSERT_PTR_NOT_NULL(strstr(text, "root error: kept"));
    CU_ASSERT_TRUE(fl_log_enabled(FL_LOG_DEBUG, "http"));
    CU_ASSERT_FALSE(fl_log_enabled(FL_LOG_ERROR, "rpc"));
    /* a channel without a level gets its mode's built-in level (production: info) */
    fl_log_channel_t ch2[] = {{"http", {.mode = "production"}}};
    CU_ASSERT_EQUAL_FATAL(fl_log_configure(&root, ch2, 1, err, sizeof(err)), 0);
    CU_ASSERT_FALSE(fl_log_enabled(FL_LOG_DEBUG, "http"));
    CU_ASSERT_TRUE(fl_log_enabled(FL_LOG_INFO, "http"));
    unlink(t_path);
}

static void test_console_raw_off(void)
{
    t_paths();
    CU_ASSERT_EQUAL_FATAL(t_configure("development", NULL, NULL), 0);
    CU_ASSERT_EQUAL(fl_log_level, FL_LOG_DEBUG); /* development's built-in level */
    fl_log_set_role("master");
    fl_logn(FL_LOG_INFO, "server", "line one\n");
    char *text = t_read(t_path);
    CU_ASSERT_PTR_NOT_NULL(strstr(text, "INFO  master["));
    CU_ASSERT_PTR_NOT_NULL(strstr(text, "] server: line one\n"));
    CU_ASSERT_PTR_NULL(strstr(text, "\033[")); /* not a terminal: no colours */
    unlink(t_path);
    CU_ASSERT_EQUAL_FATAL(t_configure("raw", NULL, NULL), 0);
    fl_logn(FL_LOG_INFO, "server", "just this\n");
    CU_ASSERT_STRING_EQUAL(t_read(t_path), "just this\n");
    unlink(t_path);
    CU_ASSERT_EQUAL_FATAL(t_configure("off", "debug", NULL), 0);
    fl_error("nothing");
    CU_ASSERT_STRING_EQUAL(t_read(t_path), "");
    CU_ASSERT_EQUAL_FATAL(t_configure("production", "info", "console"), 0); /* encoding wins */
    fl_info("console in production");
    CU_ASSERT_PTR_NOT_NULL(strstr(t_read(t_path), "INFO  master["));
    unlink(t_path);
}

static void test_reopen_and_errors(void)
{
    t_paths();
    CU_ASSERT_EQUAL_FATAL(t_configure("production", "info", NULL), 0);
    fl_info("before rotation");
    CU_ASSERT_EQUAL(rename(t_path, t_path2), 0);
    fl_log_reopen();
    fl_info("after rotation");
    CU_ASSERT_PTR_NOT_NULL(strstr(t_read(t_path2), "before rotation"));
    CU_ASSERT_PTR_NULL(strstr(t_read(t_path2), "after rotation"));
    CU_ASSERT_PTR_NOT_NULL(strstr(t_read(t_path), "after rotation"));
    /* a file that cannot be opened: an error, and the old configuration stays */
    char *outs[] = {"/nonexistent-dir/x.log"};
    fl_log_opts_t bad = {.mode = "production", .output = outs, .noutput = 1};
    char err[300];
    CU_ASSERT_EQUAL(fl_log_configure(&bad, NULL, 0, err, sizeof(err)), -1);
    CU_ASSERT_PTR_NOT_NULL(strstr(err, "/nonexistent-dir/x.log"));
    fl_info("still here");
    CU_ASSERT_PTR_NOT_NULL(strstr(t_read(t_path), "still here"));
    /* a line far above any fixed buffer arrives whole */
    static char big[200000];
    memset(big, 'x', sizeof(big) - 1);
    fl_logn(FL_LOG_INFO, "server", "%s", big);
    CU_ASSERT_PTR_NOT_NULL(strstr(t_read(t_path), "still here"));
    FILE *f = fopen(t_path, "r");
    fseek(f, 0, SEEK_END);
    CU_ASSERT_TRUE(ftell(f) > 200000);
    fclose(f);
    unlink(t_path);
    unlink(t_path2);
    fl_log_opts_t def = {0};
    fl_log_configure(&def, NULL, 0, err, sizeof(err)); /* back to stderr, frees the file */
}

static const fl_test_t tests[] = {
    {"production JSON lines", test_production_json},
    {"levels and channels", test_levels_and_channels},
    {"console, raw, off", test_console_raw_off},
    {"reopen, bad output, long lines", test_reopen_and_errors},
    {NULL, NULL},
};

FL_TEST_MAIN("log", tests)
