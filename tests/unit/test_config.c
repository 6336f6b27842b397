/* Unit tests for master/conftree.c and master/config.c: .rr.yaml loading, env interpolation,
 * -o overrides, weak typing, durations, sizes and the error messages (FILE:LINE:COL / -o FLAG). */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "test.h"
#include "../../lib/buf.c"
#include "../../lib/log.c"
#include "../../master/conftree.c"
#include "../../master/config.c"
#include "../../master/svcconf.c" /* kv, metrics, status sections */

/* --- helpers -------------------------------------------------------------------------------- */

static char tdir[] = "/tmp/fl_test_config.XXXXXX";
static bool tdir_made;
static char written[32][64];
static size_t nwritten;

/* Writes name inside a private temp dir; returns its absolute path (static buffer, 4 slots). */
static const char *write_file(const char *name, const char *content)
{
    static char bufs[4][PATH_MAX];
    static unsigned slot;
    if (!tdir_made && mkdtemp(tdir))
        tdir_made = true;
    char *path = bufs[slot++ % 4];
    snprintf(path, PATH_MAX, "%s/%s", tdir, name);
    FILE *f = fopen(path, "w");
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    fputs(content, f);
    fclose(f);
    bool known = false;
    for (size_t i = 0; i < nwritten; i++)
        known |= strcmp(written[i], name) == 0;
    if (!known && nwritten < FL_ARRAY_SIZE(written))
        snprintf(written[nwritten++], sizeof(written[0]), "%s", name);
    return path;
}

static int load_yaml(fl_conf_t *c, const char *yaml, char **ov, size_t nov, fl_conf_err_t *err)
{
    err->msg[0] = '\0';
    return fl_conf_load(c, write_file(".rr.yaml", yaml), ov, nov, err);
}

/* Loads and expects success; prints the error otherwise. */
#define LOAD_OK(c, yaml, ov, nov)                                                                  \
    do {                                                                                           \
        fl_conf_err_t e_;                                                                          \
        int rc_ = load_yaml((c), (yaml), (ov), (nov), &e_);                                        \
        if (rc_ != 0)                                                                              \
            printf("\n  unexpected error: %s\n", e_.msg);                                          \
        CU_ASSERT_EQUAL_FATAL(rc_, 0);                                                             \
    } while (0)

/* Loads and expects failure with an error that contains want. */
static void load_fails(const char *yaml, char **ov, size_t nov, const char *want)
{
    fl_conf_t c;
    memset(&c, 0, sizeof(c));
    fl_conf_err_t err;
    int rc = load_yaml(&c, yaml, ov, nov, &err);
    CU_ASSERT_EQUAL(rc, -1);
    if (rc == 0)
        fl_conf_free(&c);
    if (!strstr(err.msg, want))
        printf("\n  error \"%s\"\n  does not contain \"%s\"\n", err.msg, want);
    CU_ASSERT_PTR_NOT_NULL(strstr(err.msg, want));
}

/* The error message must equal want exactly (FILE is replaced by the temp .rr.yaml path). */
static void load_fails_exactly(const char *yaml, char **ov, size_t nov, const char *want_fmt)
{
    char want[600];
    snprintf(want, sizeof(want), want_fmt, write_file(".rr.yaml", yaml));
    fl_conf_t c;
    fl_conf_err_t err;
    CU_ASSERT_EQUAL(load_yaml(&c, yaml, ov, nov, &err), -1);
    if (strcmp(err.msg, want) != 0)
        printf("\n  error \"%s\"\n   want \"%s\"\n", err.msg, want);
    CU_ASSERT_STRING_EQUAL(err.msg, want);
}

static const char *const MIN = "version: \"3\"\n";

/* --- tests ---------------------------------------------------------------------------------- */

static void test_full_example(void)
{
    const char *yaml = "version: \"3\"\n"
                       "reactors: 4\n"
                       "server:\n"
                       "  command: \"php php/app/worker.php\"\n"
                       "  relay: pipes\n"
                       "  user: www-data\n"
                       "  env:\n"
                       "    app_env: production\n"
                       "    Debug: false\n"
                       "rpc:\n"
                       "  listen: tcp://127.0.0.1:6001\n"
                       "logs:\n"
                       "  mode: production\n"
                       "  level: warn\n"
                       "  output: [stdout, /var/log/app.log]\n"
                       "http:\n"
                       "  address: 127.0.0.1:8080\n"
                       "  internal_error_code: 505\n"
                       "  max_request_size: 64\n"
                       "  raw_body: true\n"
                       "  access_logs: true\n"
                       "  codec: json\n"
                       "  pool:\n"
                       "    num_workers: 8\n"
                       "    max_jobs: 1000\n"
                       "    max_queue_size: 100\n"
                       "    allocate_timeout: 10s\n"
                       "    reset_timeout: 1m\n"
                       "    destroy_timeout: 1500ms\n"
                       "    stream_timeout: 2s\n"
                       "    supervisor:\n"
                       "      watch_tick: 1s\n"
                       "      ttl: 1h\n"
                       "      idle_ttl: 10s\n"
                       "      exec_ttl: 30s\n"
                       "      max_worker_memory: 128\n"
                       "endure:\n"
                       "  grace_period: 15s\n";
    fl_conf_t c;
    LOAD_OK(&c, yaml, NULL, 0);
    CU_ASSERT_STRING_EQUAL(c.path, write_file(".rr.yaml", yaml));
    CU_ASSERT_STRING_EQUAL(c.version, "3");
    CU_ASSERT_EQUAL(c.reactors, 4);
    CU_ASSERT_EQUAL_FATAL(c.server.command.argc, 2);
    CU_ASSERT_STRING_EQUAL(c.server.command.argv[0], "php");
    CU_ASSERT_STRING_EQUAL(c.server.command.argv[1], "php/app/worker.php");
    CU_ASSERT_PTR_NULL(c.server.command.argv[2]);
    CU_ASSERT_STRING_EQUAL(c.server.relay, "pipes");
    CU_ASSERT_STRING_EQUAL(c.server.user, "www-data");
    CU_ASSERT_EQUAL_FATAL(c.server.nenv, 2);
    CU_ASSERT_STRING_EQUAL(c.server.env[0], "APP_ENV=production");
    CU_ASSERT_STRING_EQUAL(c.server.env[1], "DEBUG=0"); /* weak bool → string, as mapstructure */
    CU_ASSERT_PTR_NULL(c.server.env[2]);
    CU_ASSERT_TRUE(c.rpc.enabled);
    CU_ASSERT_STRING_EQUAL(c.rpc.listen, "tcp://127.0.0.1:6001");
    CU_ASSERT_STRING_EQUAL(c.logs.mode, "production");
    CU_ASSERT_STRING_EQUAL(c.logs.level, "warn");
    CU_ASSERT_STRING_EQUAL(c.logs.encoding, "json");
    CU_ASSERT_EQUAL_FATAL(c.logs.noutput, 2);
    CU_ASSERT_STRING_EQUAL(c.logs.output[0], "stdout");
    CU_ASSERT_STRING_EQUAL(c.logs.output[1], "/var/log/app.log");
    CU_ASSERT_TRUE(c.http.enabled);
    CU_ASSERT_STRING_EQUAL(c.http.address, "127.0.0.1:8080");
    CU_ASSERT_EQUAL(c.http.internal_error_code, 505);
    CU_ASSERT_EQUAL(c.http.max_request_size, 64ull << 20);
    CU_ASSERT_TRUE(c.http.raw_body);
    CU_ASSERT_TRUE(c.http.access_logs);
    CU_ASSERT_EQUAL(c.http.codec, FL_CODEC_JSON);
    const fl_pool_conf_t *p = &c.http.pool;
    CU_ASSERT_EQUAL(p->command.argc, 0);
    CU_ASSERT_EQUAL(p->num_workers, 8);
    CU_ASSERT_EQUAL(p->max_jobs, 1000);
    CU_ASSERT_EQUAL(p->max_queue_size, 100);
    CU_ASSERT_EQUAL(p->allocate_timeout_ms, 10000);
    CU_ASSERT_EQUAL(p->reset_timeout_ms, 60000);
    CU_ASSERT_EQUAL(p->destroy_timeout_ms, 1500);
    CU_ASSERT_EQUAL(p->stream_timeout_ms, 2000);
    CU_ASSERT_FALSE(p->debug);
    CU_ASSERT_TRUE(p->supervisor);
    CU_ASSERT_EQUAL(p->watch_tick_ms, 1000);
    CU_ASSERT_EQUAL(p->ttl_ms, 3600000);
    CU_ASSERT_EQUAL(p->idle_ttl_ms, 10000);
    CU_ASSERT_EQUAL(p->exec_ttl_ms, 30000);
    CU_ASSERT_EQUAL(p->max_worker_memory, 128ull << 20);
    CU_ASSERT_EQUAL(c.endure.grace_period_ms, 15000);
    fl_conf_free(&c);
}

static void test_defaults(void)
{
    fl_conf_t c;
    LOAD_OK(&c, "version: \"3\"\nserver:\n  command: php w.php\nhttp:\n  address: :8080\n", NULL,
            0);
    CU_ASSERT_EQUAL(c.reactors, 0);
    CU_ASSERT_STRING_EQUAL(c.server.relay, "pipes");
    CU_ASSERT_PTR_NULL(c.server.user);
    CU_ASSERT_EQUAL(c.server.nenv, 0);
    CU_ASSERT_FALSE(c.rpc.enabled);
    CU_ASSERT_PTR_NULL(c.rpc.listen);
    CU_ASSERT_STRING_EQUAL(c.logs.mode, "development");
    CU_ASSERT_STRING_EQUAL(c.logs.level, "debug");
    CU_ASSERT_STRING_EQUAL(c.logs.encoding, "console");
    CU_ASSERT_EQUAL_FATAL(c.logs.noutput, 1);
    CU_ASSERT_STRING_EQUAL(c.logs.output[0], "stderr");
    CU_ASSERT_EQUAL(c.http.internal_error_code, 500);
    CU_ASSERT_EQUAL(c.http.max_request_size, 1000ull << 20);
    CU_ASSERT_EQUAL(c.http.codec, FL_CODEC_PROTO);
    CU_ASSERT_FALSE(c.http.raw_body);
    CU_ASSERT_EQUAL(c.http.pool.num_workers, 0);
    CU_ASSERT_EQUAL(c.http.pool.allocate_timeout_ms, 60000);
    CU_ASSERT_EQUAL(c.http.pool.reset_timeout_ms, 60000);
    CU_ASSERT_EQUAL(c.http.pool.destroy_timeout_ms, 60000);
    CU_ASSERT_EQUAL(c.http.pool.stream_timeout_ms, 60000);
    CU_ASSERT_FALSE(c.http.pool.supervisor);
    CU_ASSERT_EQUAL(c.http.pool.watch_tick_ms, 5000);
    CU_ASSERT_EQUAL(c.endure.grace_period_ms, 30000);
    fl_conf_free(&c);

    /* rpc section present but empty: enabled with the default listener. */
    LOAD_OK(&c, "version: \"3\"\nrpc: {}\nlogs:\n  level: LOUD\n", NULL, 0);
    CU_ASSERT_TRUE(c.rpc.enabled);
    CU_ASSERT_STRING_EQUAL(c.rpc.listen, "tcp://127.0.0.1:6001");
    CU_ASSERT_PTR_NULL(c.logs.level); /* unknown level: ignored, the mode decides */
    CU_ASSERT_FALSE(c.http.enabled);
    fl_conf_free(&c);
}

static void test_env_expand_table(void)
{
    setenv("FL_T_A", "va", 1);
    setenv("FL_T_EMPTY", "", 1);
    unsetenv("FL_T_UNSET");
    static const struct {
        const char *in, *out;
        bool defaults;
    } cases[] = {
        {"${FL_T_A}", "va", true},
        {"$FL_T_A", "va", true},
        {"x${FL_T_A}y", "xvay", true},
        {"$FL_T_A/b", "va/b", true},
        {"${FL_T_UNSET}", "", true},
        {"$FL_T_UNSET", "", true},
        {"${FL_T_UNSET:-dflt}", "dflt", true},
        {"${FL_T_EMPTY:-dflt}", "dflt", true},
        {"${FL_T_A:-dflt}", "va", true},
        {"tcp://127.0.0.1:${FL_T_UNSET:-36643}", "tcp://127.0.0.1:36643", true},
        {"${FL_T_UNSET:-}", "", true},
        {"cost $", "cost $", true},
        {"$", "$", true},
        {"$ x", "$ x", true},
        {"a$%b", "a$%b", true},
        {"${}", "", true},
        {"a${}b", "ab", true},
        {"${unterminated", "unterminated", true},
        {"no dollars", "no dollars", true},
        {"", "", true},
        {"${FL_T_UNSET:-dflt}", "", false}, /* plain flavour: no defaults */
        {"$FL_T_A", "va", false},
    };
    for (size_t i = 0; i < FL_ARRAY_SIZE(cases); i++) {
        char *got = fl_env_expand(cases[i].in, cases[i].defaults);
        CU_ASSERT_PTR_NOT_NULL_FATAL(got);
        if (strcmp(got, cases[i].out) != 0)
            printf("\n  expand(\"%s\") = \"%s\", want \"%s\"\n", cases[i].in, got, cases[i].out);
        CU_ASSERT_STRING_EQUAL(got, cases[i].out);
        free(got);
    }
}

static void test_env_interpolation(void)
{
    setenv("FL_T_HOST", "127.0.0.1", 1);
    setenv("FL_T_PORT", "8081", 1);
    setenv("FL_T_EMPTY", "", 1);
    setenv("FL_T_INDIRECT", "$FL_T_HOST", 1);
    unsetenv("FL_T_UNSET");
    const char *yaml = "version: \"3\"\n"
                       "server:\n"
                       "  command: \"php ${FL_T_UNSET:-worker.php}\"\n"
                       "  env:\n"
                       "    app_env: \"${FL_T_UNSET:-prod}\"\n"
                       "    host: \"$FL_T_INDIRECT\"\n"
                       "    price: \"cost $\"\n"
                       "http:\n"
                       "  address: \"${FL_T_HOST}:$FL_T_PORT\"\n"
                       "  pool:\n"
                       "    num_workers: ${FL_T_UNSET:-3}\n"
                       "rpc:\n"
                       "  listen: \"tcp://127.0.0.1:${FL_T_EMPTY:-6002}\"\n"
                       "logs:\n"
                       "  output: [\"x${}y\", \"$FL_T_UNSET\", \"${FL_T_PORT}\"]\n"
                       "  ${FL_T_HOST}: 1\n";
    fl_conf_t c;
    LOAD_OK(&c, yaml, NULL, 0);
    CU_ASSERT_EQUAL_FATAL(c.server.command.argc, 2);
    CU_ASSERT_STRING_EQUAL(c.server.command.argv[1], "worker.php");
    CU_ASSERT_EQUAL_FATAL(c.server.nenv, 3);
    CU_ASSERT_STRING_EQUAL(c.server.env[0], "APP_ENV=prod");
    /* expanded once by the config loader, a second time (plain) for the worker environment */
    CU_ASSERT_STRING_EQUAL(c.server.env[1], "HOST=127.0.0.1");
    CU_ASSERT_STRING_EQUAL(c.server.env[2], "PRICE=cost $");
    CU_ASSERT_STRING_EQUAL(c.http.address, "127.0.0.1:8081");
    CU_ASSERT_EQUAL(c.http.pool.num_workers, 3);
    CU_ASSERT_STRING_EQUAL(c.rpc.listen, "tcp://127.0.0.1:6002");
    CU_ASSERT_EQUAL_FATAL(c.logs.noutput, 3);
    CU_ASSERT_STRING_EQUAL(c.logs.output[0], "xy");
    CU_ASSERT_STRING_EQUAL(c.logs.output[1], "");
    CU_ASSERT_STRING_EQUAL(c.logs.output[2], "8081");
    fl_conf_free(&c);

    /* keys are never expanded */
    fl_ctree_t t;
    fl_conf_err_t err;
    const char *y = "${FL_T_HOST}: $FL_T_HOST\n";
    CU_ASSERT_EQUAL_FATAL(fl_ctree_load_string(&t, "mem", y, strlen(y), &err), 0);
    CU_ASSERT_EQUAL(fl_ctree_interpolate(&t, &err), 0);
    const fl_cnode_t *n = fl_cnode_child(t.root, "${fl_t_host}");
    CU_ASSERT_PTR_NOT_NULL_FATAL(n);
    CU_ASSERT_STRING_EQUAL(n->value, "127.0.0.1");
    fl_ctree_free(&t);
}

static void test_overrides(void)
{
    setenv("FL_T_W", "7", 1);
    char *ov[] = {
        "http.address=127.0.0.1:9000",
        "http.pool.num_workers=4",
        "logs.output=stdout,stderr",
        "server.command=/usr/bin/php,/app/vendor/bin/roadrunner-worker",
        "rpc.listen=tcp://127.0.0.1:7000",
        "http.pool.supervisor.exec_ttl=30s",
        "logs.level=\"info\"",
        " \"http.pool.max_jobs = 10 ",
        "http.pool.max_queue_size=$FL_T_W",
        "HTTP.RAW_BODY=true",
    };
    fl_conf_t c;
    LOAD_OK(&c, "version: \"3\"\nserver:\n  command: php old.php\nlogs:\n  output: [a, b, c]\n", ov,
            FL_ARRAY_SIZE(ov));
    CU_ASSERT_TRUE(c.http.enabled);
    CU_ASSERT_STRING_EQUAL(c.http.address, "127.0.0.1:9000");
    CU_ASSERT_EQUAL(c.http.pool.num_workers, 4);
    CU_ASSERT_EQUAL_FATAL(c.logs.noutput, 2); /* a list leaf is replaced as a whole */
    CU_ASSERT_STRING_EQUAL(c.logs.output[0], "stdout");
    CU_ASSERT_STRING_EQUAL(c.logs.output[1], "stderr");
    CU_ASSERT_EQUAL_FATAL(c.server.command.argc, 2);
    CU_ASSERT_STRING_EQUAL(c.server.command.argv[0], "/usr/bin/php");
    CU_ASSERT_STRING_EQUAL(c.server.command.argv[1], "/app/vendor/bin/roadrunner-worker");
    CU_ASSERT_TRUE(c.rpc.enabled);
    CU_ASSERT_STRING_EQUAL(c.rpc.listen, "tcp://127.0.0.1:7000");
    CU_ASSERT_TRUE(c.http.pool.supervisor);
    CU_ASSERT_EQUAL(c.http.pool.exec_ttl_ms, 30000);
    CU_ASSERT_STRING_EQUAL(c.logs.level, "info");
    CU_ASSERT_EQUAL(c.http.pool.max_jobs, 10);
    CU_ASSERT_EQUAL(c.http.pool.max_queue_size, 7);
    CU_ASSERT_TRUE(c.http.raw_body);
    fl_conf_free(&c);

    /* an override replaces a scalar with a section when it has to */
    char *ov2[] = {"server=x", "server.command=php a.php"};
    LOAD_OK(&c, MIN, ov2, 2);
    CU_ASSERT_EQUAL(c.server.command.argc, 2);
    fl_conf_free(&c);

    /* `-o version=3` satisfies the string check */
    char *ov3[] = {"version=3"};
    LOAD_OK(&c, "version: 3\n", ov3, 1);
    CU_ASSERT_STRING_EQUAL(c.version, "3");
    fl_conf_free(&c);
}

static void test_override_errors(void)
{
    char *noeq[] = {"http.address"};
    load_fails(MIN, noeq, 1, "-o http.address: invalid flag");
    char *noval[] = {"http.address="};
    load_fails(MIN, noval, 1, "-o http.address=: invalid flag: value should not be empty");
    char *blank[] = {"http.address=   "};
    load_fails(MIN, blank, 1, "value should not be empty");
    char *nokey[] = {"=x"};
    load_fails(MIN, nokey, 1, "-o =x: invalid flag: key should not be empty");
    char *dots[] = {"http..address=x"};
    load_fails(MIN, dots, 1, "invalid flag");

    char *bad[] = {"http.pool.num_workers=abc"};
    load_fails_exactly("version: \"3\"\nserver:\n  command: php\n", bad, 1,
                       "-o http.pool.num_workers=abc: expected an unsigned integer");
    setenv("FL_T_BAD", "zzz", 1);
    char *badenv[] = {"http.pool.num_workers=$FL_T_BAD"};
    load_fails_exactly("version: \"3\"\nserver:\n  command: php\n", badenv, 1,
                       "-o http.pool.num_workers=$FL_T_BAD: expected an unsigned integer, "
                       "got \"zzz\"");
    char *baddur[] = {"http.pool.supervisor.ttl=300"};
    load_fails("version: \"3\"\nserver:\n  command: php\n", baddur, 1,
               "-o http.pool.supervisor.ttl=300: expected a duration like \"30s\" or "
               "\"1m30s\" (missing unit)");
}

static void test_version(void)
{
    load_fails_exactly("version: 3\n", NULL, 0,
                       "%s:1:10: version: version should be a string, write version: \"3\"");
    load_fails_exactly("# comment\nversion: 3.0\n", NULL, 0,
                       "%s:2:10: version: version should be a string, write version: \"3\"");
    load_fails_exactly("server:\n  command: php\n", NULL, 0,
                       "%s: rr configuration file should contain a version e.g: version: 3");
    load_fails_exactly("version:\n", NULL, 0,
                       "%s: rr configuration file should contain a version e.g: version: 3");
    fl_conf_t c;
    LOAD_OK(&c, "version: !!str 3\n", NULL, 0);
    CU_ASSERT_STRING_EQUAL(c.version, "3");
    fl_conf_free(&c);
    LOAD_OK(&c, "version: '2.7'\n", NULL, 0);
    CU_ASSERT_STRING_EQUAL(c.version, "2.7");
    fl_conf_free(&c);
}

static void test_empty_file_with_overrides(void)
{
    char *ov[] = {"version=3", "server.command=php", "http.address=127.0.0.1:1"};
    fl_conf_t c;
    LOAD_OK(&c, "", ov, 3);
    CU_ASSERT_STRING_EQUAL(c.version, "3");
    CU_ASSERT_EQUAL_FATAL(c.server.command.argc, 1);
    CU_ASSERT_STRING_EQUAL(c.server.command.argv[0], "php");
    CU_ASSERT_STRING_EQUAL(c.http.address, "127.0.0.1:1");
    fl_conf_free(&c);

    /* only comments is empty too */
    LOAD_OK(&c, "# nothing here\n\n", ov, 3);
    fl_conf_free(&c);

    /* no file at all */
    fl_conf_err_t err;
    CU_ASSERT_EQUAL_FATAL(fl_conf_load(&c, NULL, ov, 3, &err), 0);
    CU_ASSERT_PTR_NULL(c.path);
    CU_ASSERT_STRING_EQUAL(c.http.address, "127.0.0.1:1");
    fl_conf_free(&c);
    CU_ASSERT_EQUAL(fl_conf_load(&c, NULL, NULL, 0, &err), -1);
    CU_ASSERT_STRING_EQUAL(err.msg, VERSION_MISSING);

    /* an empty file alone has no version */
    load_fails("", NULL, 0, VERSION_MISSING);
}

static void test_yaml_errors(void)
{
    load_fails_exactly("version: \"3\"\nhttp:\n  address: a: b\n", NULL, 0,
                       "%s:3:13: mapping values are not allowed in this context");
    load_fails_exactly("version: \"3\"\nhttp:\n  pool: [1, 2\n", NULL, 0,
                       "%s:4:1: did not find expected ',' or ']' "
                       "(while parsing a flow sequence at line 3)");
    load_fails_exactly("version: \"3\"\nhttp: 1\nhttp: 2\n", NULL, 0,
                       "%s:3:1: mapping key \"http\" already defined at line 2");
    load_fails_exactly("- a\n- b\n", NULL, 0,
                       "%s:1:1: the configuration must be a mapping of keys to values");
    load_fails_exactly("version: \"3\"\nx: *nope\n", NULL, 0,
                       "%s:2:4: unknown anchor 'nope' referenced");
    load_fails_exactly("version: \"3\"\nx: \"\xff\"\n", NULL, 0,
                       "%s:2:5: invalid leading UTF-8 octet (byte 0xff)");
    fl_conf_t c;
    fl_conf_err_t err;
    CU_ASSERT_EQUAL(fl_conf_load(&c, "/nonexistent/fl/.rr.yaml", NULL, 0, &err), -1);
    CU_ASSERT_STRING_EQUAL(err.msg, "/nonexistent/fl/.rr.yaml: No such file or directory");
}

static void test_value_errors(void)
{
    const char *head = "version: \"3\"\nserver:\n  command: php\n";
    char yaml[512];
    snprintf(yaml, sizeof(yaml), "%shttp:\n  pool:\n    num_workers: abc\n", head);
    load_fails_exactly(yaml, NULL, 0,
                       "%s:6:18: http.pool.num_workers: expected an unsigned integer, got \"abc\"");
    snprintf(yaml, sizeof(yaml), "%shttp:\n  pool:\n    num_workers: -2\n", head);
    load_fails_exactly(yaml, NULL, 0,
                       "%s:6:18: http.pool.num_workers: expected an unsigned integer, got \"-2\"");
    snprintf(yaml, sizeof(yaml), "%shttp:\n  pool:\n    num_workers: 501\n", head);
    load_fails_exactly(yaml, NULL, 0,
                       "%s:6:18: http.pool.num_workers: number of workers can't be more than "
                       "500, got \"501\"");
    snprintf(yaml, sizeof(yaml), "%shttp:\n  address: localhost\n", head);
    load_fails(yaml, NULL, 0, ":5:12: http.address: malformed http server address");
    snprintf(yaml, sizeof(yaml), "%shttp:\n  raw_body: maybe\n", head);
    load_fails(yaml, NULL, 0, ":5:13: http.raw_body: expected a boolean, got \"maybe\"");
    snprintf(yaml, sizeof(yaml), "%shttp:\n  codec: xml\n", head);
    load_fails(yaml, NULL, 0, ":5:10: http.codec: expected one of: proto, json, got \"xml\"");
    snprintf(yaml, sizeof(yaml), "%shttp:\n  pool: 4\n", head);
    load_fails(yaml, NULL, 0, ":5:9: http.pool: expected a mapping, got \"4\"");
    snprintf(yaml, sizeof(yaml), "%shttp: [a]\n", head);
    load_fails(yaml, NULL, 0, ":4:7: http: expected a mapping, got a list");
    snprintf(yaml, sizeof(yaml), "%slogs:\n  output: [stdout, {a: 1}]\n", head);
    load_fails(yaml, NULL, 0, ":5:20: logs.output[1]: expected a string, got a mapping");
    snprintf(yaml, sizeof(yaml), "%shttp:\n  internal_error_code: 42\n", head);
    load_fails(yaml, NULL, 0, "http.internal_error_code: expected an HTTP status code");
    snprintf(yaml, sizeof(yaml), "%shttp:\n  pool:\n    max_jobs: 99999999999999999999\n", head);
    load_fails(yaml, NULL, 0, "http.pool.max_jobs: value out of range");
}

static void test_command_required(void)
{
    load_fails_exactly("version: \"3\"\nhttp:\n  address: :80\n", NULL, 0,
                       "%s: server.command: command should not be empty (the http section needs "
                       "a server section with the worker command)");
    load_fails_exactly("version: \"3\"\nserver:\n  relay: pipes\n", NULL, 0,
                       "%s:3:3: server.command: command should not be empty");
    load_fails_exactly("version: \"3\"\nserver:\n  command: \"\"\n", NULL, 0,
                       "%s:3:12: server.command: command should not be empty");
    load_fails_exactly("version: \"3\"\nserver:\n  command: []\n", NULL, 0,
                       "%s:3:12: server.command: command should not be empty");
}

static void test_durations(void)
{
    static const struct {
        const char *in;
        int rc;
        int64_t ms;
    } cases[] = {
        {"1h3m40s500ms", 0, 3820500},
        {"2.5h", 0, 9000000},
        {".2m", 0, 12000},
        {"0", 0, 0},
        {"-0", 0, 0},
        {"300ms", 0, 300},
        {"10us", 0, 1},
        {"10\xc2\xb5s", 0, 1},
        {"1ns", 0, 1},
        {"1500us", 0, 2},
        {"1.5s", 0, 1500},
        {"1.s", 0, 1000},
        {"+5s", 0, 5000},
        {"-1s", 0, -1000},
        {"1h1h", 0, 7200000},
        {"2562047h", 0, 9223369200000},
        {"2562048h", -1, 0},
        {"", -1, 0},
        {"abc", -1, 0},
        {"300", -1, 0},
        {"1x", -1, 0},
        {"s", -1, 0},
        {".s", -1, 0},
        {"1s ", -1, 0},
    };
    for (size_t i = 0; i < FL_ARRAY_SIZE(cases); i++) {
        int64_t ms = -12345;
        int rc = fl_parse_duration_ms(cases[i].in, &ms);
        if (rc != cases[i].rc || (rc == 0 && ms != cases[i].ms))
            printf("\n  duration \"%s\": rc %d ms %lld\n", cases[i].in, rc, (long long)ms);
        CU_ASSERT_EQUAL(rc, cases[i].rc);
        if (rc == 0)
            CU_ASSERT_EQUAL(ms, cases[i].ms);
    }
    const char *why = NULL;
    int64_t ns;
    CU_ASSERT_EQUAL(fl_parse_duration_ns("300", &ns, &why), -1);
    CU_ASSERT_STRING_EQUAL(why, "missing unit");
    CU_ASSERT_EQUAL(fl_parse_duration_ns("1y", &ns, &why), -1);
    CU_ASSERT_STRING_EQUAL(why, "unknown unit");

    /* In YAML: a bare integer is nanoseconds. */
    fl_conf_t c;
    LOAD_OK(&c,
            "version: \"3\"\nserver:\n  command: php\nhttp:\n  pool:\n"
            "    allocate_timeout: 60\n    reset_timeout: 60000000000\n"
            "    destroy_timeout: \"2m\"\n    stream_timeout: 0\n",
            NULL, 0);
    CU_ASSERT_EQUAL(c.http.pool.allocate_timeout_ms, 1); /* 60 ns, rounded up */
    CU_ASSERT_EQUAL(c.http.pool.reset_timeout_ms, 60000);
    CU_ASSERT_EQUAL(c.http.pool.destroy_timeout_ms, 120000);
    CU_ASSERT_EQUAL(c.http.pool.stream_timeout_ms, 60000); /* 0 = default */
    fl_conf_free(&c);
    load_fails_exactly("version: \"3\"\nhttp:\n  pool:\n    reset_timeout: abc\n", NULL, 0,
                       "%s:4:20: http.pool.reset_timeout: expected a duration like \"30s\" or "
                       "\"1m30s\" (invalid duration), got \"abc\"");
    load_fails("version: \"3\"\nhttp:\n  pool:\n    reset_timeout: \"300\"\n", NULL, 0,
               "(missing unit), got \"300\"");
    load_fails("version: \"3\"\nhttp:\n  pool:\n    reset_timeout: -1s\n", NULL, 0,
               "http.pool.reset_timeout: a duration must not be negative");
}

static void test_sizes(void)
{
    fl_conf_t c;
    LOAD_OK(&c,
            "version: \"3\"\nserver:\n  command: php\nhttp:\n  max_request_size: \"20\"\n"
            "  pool:\n    supervisor:\n      max_worker_memory: 128\n",
            NULL, 0);
    CU_ASSERT_EQUAL(c.http.max_request_size, 20ull * 1024 * 1024);
    CU_ASSERT_EQUAL(c.http.pool.max_worker_memory, 128ull * 1024 * 1024);
    fl_conf_free(&c);
    LOAD_OK(&c, "version: \"3\"\nserver:\n  command: php\nhttp:\n  max_request_size: 0\n", NULL, 0);
    CU_ASSERT_EQUAL(c.http.max_request_size, 1000ull * 1024 * 1024);
    fl_conf_free(&c);
    load_fails("version: \"3\"\nhttp:\n  max_request_size: 10MB\n", NULL, 0,
               ":3:21: http.max_request_size: expected an unsigned integer, got \"10MB\"");
}

static void test_case_insensitive_keys(void)
{
    char *ov[] = {"HTTP.Pool.NUM_WORKERS=2"};
    fl_conf_t c;
    LOAD_OK(&c,
            "VERSION: '3'\nServer:\n  COMMAND: php w.php\nHTTP:\n  Address: 127.0.0.1:8080\n"
            "  POOL:\n    num_workers: 9\n    Max_Jobs: 3\n",
            ov, 1);
    CU_ASSERT_STRING_EQUAL(c.version, "3");
    CU_ASSERT_EQUAL(c.server.command.argc, 2);
    CU_ASSERT_STRING_EQUAL(c.http.address, "127.0.0.1:8080");
    CU_ASSERT_EQUAL(c.http.pool.num_workers, 2);
    CU_ASSERT_EQUAL(c.http.pool.max_jobs, 3);
    fl_conf_free(&c);
}

static void check_argv(const char *command_yaml, const char *const *want, size_t n)
{
    char yaml[256];
    snprintf(yaml, sizeof(yaml), "version: \"3\"\nserver:\n  command: %s\n", command_yaml);
    fl_conf_t c;
    LOAD_OK(&c, yaml, NULL, 0);
    if (c.server.command.argc != n)
        printf("\n  command %s: argc %zu, want %zu\n", command_yaml, c.server.command.argc, n);
    CU_ASSERT_EQUAL_FATAL(c.server.command.argc, n);
    for (size_t i = 0; i < n; i++)
        CU_ASSERT_STRING_EQUAL(c.server.command.argv[i], want[i]);
    CU_ASSERT_PTR_NULL(c.server.command.argv[n]);
    fl_conf_free(&c);
}

static void test_command_split(void)
{
    check_argv("php worker.php", (const char *const[]){"php", "worker.php"}, 2);
    /* v2025 splits on single spaces: two spaces give an empty argument */
    check_argv("\"php  -d x=1 worker.php\"",
               (const char *const[]){"php", "", "-d", "x=1", "worker.php"}, 5);
    check_argv("[php, \"my worker.php\"]", (const char *const[]){"php", "my worker.php"}, 2);
    check_argv("[\"php worker.php\"]", (const char *const[]){"php", "worker.php"}, 2);
    check_argv("php,worker.php", (const char *const[]){"php", "worker.php"}, 2);
    check_argv("\"php a b,c\"", (const char *const[]){"php a b", "c"}, 2);

    char *ov[] = {"http.pool.command=php other.php"};
    fl_conf_t c;
    LOAD_OK(&c, "version: \"3\"\nserver:\n  command: php w.php\n", ov, 1);
    CU_ASSERT_EQUAL_FATAL(c.http.pool.command.argc, 2);
    CU_ASSERT_STRING_EQUAL(c.http.pool.command.argv[1], "other.php");
    fl_conf_free(&c);
}

static void test_unknown_keys_and_weak_typing(void)
{
    fl_conf_t c;
    LOAD_OK(&c,
            "version: \"3\"\n"
            "something_new: {a: [1, 2]}\n"
            "server:\n  command: php\n  relay_timeout: 60s\n  on_init: {command: x}\n"
            "http:\n  address: :8080\n  middleware: [gzip]\n  raw_body: \"true\"\n"
            "  access_logs: 1\n"
            "  pool:\n    num_workers: \"4\"\n    debug: t\n"
            "    dynamic_allocator: {max_workers: 3}\n"
            "logs:\n  output: stdout\n  channels: {http: {level: info}}\n"
            "reactors: \"8\"\n",
            NULL, 0);
    CU_ASSERT_TRUE(c.http.raw_body);
    CU_ASSERT_TRUE(c.http.access_logs);
    CU_ASSERT_EQUAL(c.http.pool.num_workers, 4);
    CU_ASSERT_TRUE(c.http.pool.debug);
    CU_ASSERT_EQUAL_FATAL(c.logs.noutput, 1);
    CU_ASSERT_STRING_EQUAL(c.logs.output[0], "stdout");
    CU_ASSERT_EQUAL(c.reactors, 8);
    fl_conf_free(&c);
}

static void test_reactors(void)
{
    static const struct {
        const char *v;
        int ok;
        unsigned want;
    } cases[] = {
        {"auto", 1, 0}, {"AUTO", 1, 0}, {"1", 1, 1},  {"\"16\"", 1, 16}, {"1024", 1, 1024},
        {"0", 0, 0},    {"1025", 0, 0}, {"-1", 0, 0}, {"many", 0, 0},    {"[1]", 0, 0},
    };
    for (size_t i = 0; i < FL_ARRAY_SIZE(cases); i++) {
        char yaml[128];
        snprintf(yaml, sizeof(yaml), "version: \"3\"\nreactors: %s\n", cases[i].v);
        if (cases[i].ok) {
            fl_conf_t c;
            LOAD_OK(&c, yaml, NULL, 0);
            CU_ASSERT_EQUAL(c.reactors, cases[i].want);
            fl_conf_free(&c);
        } else {
            load_fails(yaml, NULL, 0,
                       ":2:11: reactors: expected \"auto\" or a number from 1 to 1024");
        }
    }
}

static void test_anchors_and_merge(void)
{
    fl_conf_t c;
    LOAD_OK(&c,
            "version: \"3\"\n"
            "x-pool: &pool\n  num_workers: 2\n  max_jobs: 10\n"
            "x-cmd: &cmd php w.php\n"
            "server:\n  command: *cmd\n"
            "http:\n  address: :8080\n  pool:\n    <<: *pool\n    max_jobs: 5\n",
            NULL, 0);
    CU_ASSERT_EQUAL(c.http.pool.num_workers, 2);
    CU_ASSERT_EQUAL(c.http.pool.max_jobs, 5);
    CU_ASSERT_EQUAL(c.server.command.argc, 2);
    fl_conf_free(&c);

    /* a "billion laughs" document is refused rather than expanded */
    load_fails("version: \"3\"\n"
               "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
               "b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
               "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\n"
               "d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
               "e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]\n"
               "f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]\n"
               "g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f, *f]\n",
               NULL, 0, "expands to too many nodes");
}

static void test_include(void)
{
    write_file("inc-http.yaml", "version: \"3\"\nhttp:\n  address: 127.0.0.1:${FL_T_PORT}\n");
    write_file("inc-old.yaml", "version: \"2.7\"\nrpc: {}\n");
    write_file("inc-bad.yaml", "version: \"3\"\nhttp:\n  pool:\n    num_workers: lots\n");
    setenv("FL_T_PORT", "8082", 1);
    fl_conf_t c;
    LOAD_OK(&c,
            "version: \"3\"\ninclude: [inc-http.yaml]\nserver:\n  command: php\n"
            "http:\n  address: :1\n  raw_body: true\n",
            NULL, 0);
    CU_ASSERT_STRING_EQUAL(c.http.address, "127.0.0.1:8082");
    CU_ASSERT_FALSE(c.http.raw_body); /* the whole section is replaced, not merged */
    fl_conf_free(&c);
    load_fails("version: \"3\"\ninclude: inc-old.yaml\n", NULL, 0,
               "inc-old.yaml:1:10: version: version in included file must be the same as in "
               "root (\"3\")");
    /* errors inside an included file name that file */
    load_fails("version: \"3\"\ninclude: inc-bad.yaml\nserver:\n  command: php\n", NULL, 0,
               "inc-bad.yaml:4:18: http.pool.num_workers: expected an unsigned integer, "
               "got \"lots\"");
    load_fails("version: \"3\"\ninclude: missing.yaml\n", NULL, 0,
               "missing.yaml: No such file or directory");
}

static void test_endure(void)
{
    char *ov[] = {"endure.grace_period=5s"};
    fl_conf_t c;
    LOAD_OK(&c, "version: \"3\"\nendure:\n  grace_period: 10s\n  print_graph: true\n", ov, 1);
    CU_ASSERT_EQUAL(c.endure.grace_period_ms, 10000); /* -o does not reach endure */
    fl_conf_free(&c);
    setenv("FL_T_GRACE", "5s", 1);
    load_fails("version: \"3\"\nendure:\n  grace_period: ${FL_T_GRACE}\n", NULL, 0,
               ":3:17: endure.grace_period: expected a duration"); /* no env expansion either */
}

static void test_failed_load_keeps_old(void)
{
    fl_conf_t c;
    LOAD_OK(&c, "version: \"3\"\nserver:\n  command: php w.php\nhttp:\n  address: :8080\n", NULL,
            0);
    fl_conf_t copy = c;
    fl_conf_err_t err;
    const char *bad = "version: \"3\"\nhttp:\n  pool:\n    num_workers: x\n";
    CU_ASSERT_EQUAL(load_yaml(&c, bad, NULL, 0, &err), -1);
    CU_ASSERT_EQUAL(memcmp(&copy, &c, sizeof(c)), 0);
    CU_ASSERT_STRING_EQUAL(c.http.address, ":8080");
    fl_conf_free(&c);
}

static void test_tree_api(void)
{
    fl_ctree_t t;
    fl_conf_err_t err;
    const char *y = "a:\n  b: [1, 'two', {c: true}]\n  n: ~\n  q: \"5\"\n  f: 2.5\n";
    CU_ASSERT_EQUAL_FATAL(fl_ctree_load_string(&t, "mem.yaml", y, strlen(y), &err), 0);
    const fl_cnode_t *b = fl_cnode_get(t.root, "A.B");
    CU_ASSERT_PTR_NOT_NULL_FATAL(b);
    CU_ASSERT_EQUAL(b->type, FL_CNODE_SEQ);
    CU_ASSERT_EQUAL_FATAL(b->n, 3);
    CU_ASSERT_EQUAL(b->items[0]->kind, FL_CSCALAR_INT);
    CU_ASSERT_EQUAL(b->items[1]->kind, FL_CSCALAR_STR);
    CU_ASSERT_TRUE(b->items[1]->quoted);
    CU_ASSERT_EQUAL(b->items[1]->line, 2);
    CU_ASSERT_EQUAL(b->items[1]->col, 10);
    CU_ASSERT_PTR_NULL(fl_cnode_get(t.root, "a.n")); /* null = absent */
    CU_ASSERT_EQUAL(fl_cnode_child(fl_cnode_get(t.root, "a"), "n")->kind, FL_CSCALAR_NULL);
    CU_ASSERT_EQUAL(fl_cnode_get(t.root, "a.q")->kind, FL_CSCALAR_STR);
    CU_ASSERT_EQUAL(fl_cnode_get(t.root, "a.f")->kind, FL_CSCALAR_FLOAT);
    char path[64];
    fl_cnode_path(b->items[2]->items[0], path, sizeof(path));
    CU_ASSERT_STRING_EQUAL(path, "a.b[2].c");
    CU_ASSERT_EQUAL(fl_ctree_override(&t, "a.b.x=1", &err), 0);
    const fl_cnode_t *x = fl_cnode_get(t.root, "a.b.x");
    CU_ASSERT_PTR_NOT_NULL_FATAL(x);
    CU_ASSERT_STRING_EQUAL(x->origin, "a.b.x=1");
    char where[64];
    fl_cnode_where(x, where, sizeof(where));
    CU_ASSERT_STRING_EQUAL(where, "-o a.b.x=1");
    int n = 0;
    CU_ASSERT_EQUAL(fl_cget_int(t.root, "a.f", &n, &err), -1); /* 2.5 is not whole */
    CU_ASSERT_STRING_EQUAL(err.msg, "mem.yaml:5:6: a.f: expected an integer, got \"2.5\"");
    fl_ctree_free(&t);
}

/* The argv laravel/octane builds (spec §4.3): an empty (touched) .rr.yaml plus overrides only. */
static void test_octane_invocation(void)
{
    char *ov[] = {
        "version=3",
        "http.address=127.0.0.1:8000",
        "server.command=/usr/bin/php8.2,/srv/app/vendor/bin/roadrunner-worker",
        "http.pool.num_workers=0",
        "http.pool.max_jobs=500",
        "rpc.listen=tcp://127.0.0.1:6001",
        "http.pool.supervisor.exec_ttl=30s",
        "http.static.dir=/srv/app/public",
        "http.middleware=static",
        "logs.mode=production",
        "logs.level=warn",
        "logs.output=stdout",
        "logs.encoding=json",
    };
    fl_conf_t c;
    LOAD_OK(&c, "", ov, FL_ARRAY_SIZE(ov));
    CU_ASSERT_STRING_EQUAL(c.version, "3");
    CU_ASSERT_STRING_EQUAL(c.http.address, "127.0.0.1:8000");
    CU_ASSERT_EQUAL_FATAL(c.server.command.argc, 2);
    CU_ASSERT_STRING_EQUAL(c.server.command.argv[0], "/usr/bin/php8.2");
    CU_ASSERT_STRING_EQUAL(c.server.command.argv[1], "/srv/app/vendor/bin/roadrunner-worker");
    CU_ASSERT_EQUAL(c.http.pool.num_workers, 0);
    CU_ASSERT_EQUAL(c.http.pool.max_jobs, 500);
    CU_ASSERT_TRUE(c.rpc.enabled);
    CU_ASSERT_TRUE(c.http.pool.supervisor);
    CU_ASSERT_EQUAL(c.http.pool.exec_ttl_ms, 30000);
    CU_ASSERT_EQUAL(c.http.pool.watch_tick_ms, 5000);
    CU_ASSERT_STRING_EQUAL(c.logs.mode, "production");
    CU_ASSERT_STRING_EQUAL(c.logs.level, "warn");
    CU_ASSERT_STRING_EQUAL(c.logs.encoding, "json");
    CU_ASSERT_EQUAL_FATAL(c.logs.noutput, 1);
    CU_ASSERT_STRING_EQUAL(c.logs.output[0], "stdout");
    fl_conf_free(&c);
}

/* forkline's HTTP front keys: uploads, trusted subnets, TLS, timeouts. */
static void test_http_front(void)
{
    fl_conf_t c;
    LOAD_OK(&c, "version: \"3\"\nserver:\n  command: php\nhttp:\n  address: :8080\n", NULL, 0);
    CU_ASSERT_EQUAL(c.http.read_header_timeout_ms, 60000);
    CU_ASSERT_EQUAL(c.http.read_timeout_ms, 60000);
    CU_ASSERT_EQUAL(c.http.write_timeout_ms, 60000);
    CU_ASSERT_EQUAL(c.http.idle_timeout_ms, 75000);
    CU_ASSERT_FALSE(c.http.ssl.enabled);
    CU_ASSERT_PTR_NULL(c.http.uploads.dir);
    fl_conf_free(&c);
    const char *cert = write_file("cert.pem", "x"), *key = write_file("key.pem", "y");
    char yaml[2048];
    snprintf(yaml, sizeof(yaml),
             "version: \"3\"\nserver:\n  command: php\nhttp:\n  address: :8080\n"
             "  middleware: [headers, proxy_ip_parser]\n"
             "  trusted_subnets: [10.0.0.0/8, \"::1/128\"]\n"
             "  uploads:\n    dir: /tmp\n    forbid: [.PHP, .exe]\n    allow: [.Png]\n"
             "  read_header_timeout: 2s\n  read_timeout: 3s\n  write_timeout: 4s\n"
             "  idle_timeout: 5s\n"
             "  ssl:\n    address: 127.0.0.1:8443\n    redirect: true\n    cert: %s\n    key: %s\n"
             "    client_auth_type: require_and_verify_client_cert\n",
             cert, key);
    LOAD_OK(&c, yaml, NULL, 0);
    CU_ASSERT_EQUAL(c.http.nmiddleware, 2);
    CU_ASSERT_STRING_EQUAL(c.http.middleware[1], "proxy_ip_parser");
    CU_ASSERT_EQUAL(c.http.ntrusted_subnets, 2);
    CU_ASSERT_STRING_EQUAL(c.http.uploads.dir, "/tmp");
    CU_ASSERT_STRING_EQUAL(c.http.uploads.forbid[0], ".php"); /* compared lower-cased */
    CU_ASSERT_STRING_EQUAL(c.http.uploads.allow[0], ".png");
    CU_ASSERT_EQUAL(c.http.read_header_timeout_ms, 2000);
    CU_ASSERT_EQUAL(c.http.idle_timeout_ms, 5000);
    CU_ASSERT_TRUE(c.http.ssl.enabled && c.http.ssl.redirect);
    CU_ASSERT_EQUAL(c.http.ssl.port, 8443);
    CU_ASSERT_EQUAL(c.http.ssl.client_auth, FL_CLIENT_AUTH_REQUIRE_VERIFY);
    fl_conf_free(&c);
    /* ssl.address defaults to 127.0.0.1:443 */
    snprintf(yaml, sizeof(yaml),
             "version: \"3\"\nserver:\n  command: php\nhttp:\n  ssl:\n    cert: %s\n    key: %s\n",
             cert, key);
    LOAD_OK(&c, yaml, NULL, 0);
    CU_ASSERT_STRING_EQUAL(c.http.ssl.address, "127.0.0.1:443");
    CU_ASSERT_EQUAL(c.http.ssl.port, 443);
    fl_conf_free(&c);
    const char *head = "version: \"3\"\nserver:\n  command: php\nhttp:\n";
    snprintf(yaml, sizeof(yaml), "%s  trusted_subnets: [10.0.0.0/33]\n", head);
    load_fails(yaml, NULL, 0, "http.trusted_subnets: invalid CIDR address: 10.0.0.0/33");
    snprintf(yaml, sizeof(yaml), "%s  trusted_subnets: [10.0.0.1]\n", head);
    load_fails(yaml, NULL, 0, "invalid CIDR address: 10.0.0.1");
    snprintf(yaml, sizeof(yaml), "%s  ssl:\n    cert: /nonexistent/c.pem\n    key: %s\n", head, key);
    load_fails(yaml, NULL, 0, "http.ssl.cert: cert file '/nonexistent/c.pem' does not exist");
    snprintf(yaml, sizeof(yaml), "%s  ssl:\n    cert: %s\n", head, cert);
    load_fails(yaml, NULL, 0, "http.ssl.key: key file is required with TLS");
    snprintf(yaml, sizeof(yaml), "%s  ssl:\n    address: nope\n    cert: %s\n    key: %s\n", head,
             cert, key);
    load_fails(yaml, NULL, 0, "malformed ssl address");
    snprintf(yaml, sizeof(yaml), "%s  ssl:\n    client_auth_type: maybe\n", head);
    load_fails(yaml, NULL, 0, "http.ssl.client_auth_type");
}

static void cleanup(void)
{
    char path[PATH_MAX];
    for (size_t i = 0; i < nwritten; i++) {
        snprintf(path, sizeof(path), "%s/%s", tdir, written[i]);
        unlink(path);
    }
    if (tdir_made)
        CU_ASSERT_EQUAL(rmdir(tdir), 0);
}

static const fl_test_t tests[] = {
    {"full example", test_full_example},
    {"defaults", test_defaults},
    {"env expand table", test_env_expand_table},
    {"env interpolation", test_env_interpolation},
    {"overrides", test_overrides},
    {"override errors", test_override_errors},
    {"version", test_version},
    {"empty file with overrides", test_empty_file_with_overrides},
    {"yaml errors", test_yaml_errors},
    {"value errors", test_value_errors},
    {"command required", test_command_required},
    {"durations", test_durations},
    {"sizes", test_sizes},
    {"case-insensitive keys", test_case_insensitive_keys},
    {"command split", test_command_split},
    {"unknown keys and weak typing", test_unknown_keys_and_weak_typing},
    {"reactors", test_reactors},
    {"anchors and merge keys", test_anchors_and_merge},
    {"include", test_include},
    {"endure", test_endure},
    {"failed load keeps old", test_failed_load_keeps_old},
    {"tree api", test_tree_api},
    {"octane invocation", test_octane_invocation},
    {"http front", test_http_front},
    {"cleanup", cleanup},
    {NULL, NULL},
};

FL_TEST_MAIN("config", tests)
