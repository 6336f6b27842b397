/* Unit tests for the RPC codec (protocols/rpc.c), the RPC server (master/rpc.c) and the CLI's
 * client helpers (master/ctl.c).
 *
 * Every hex dump of spec §9.1 is produced byte for byte, by the encoder and - for the replies -
 * by the real server answering over a real unix socket (the server runs its event loop in a
 * forked child; the test talks to it with the CLI's blocking client). Hostile clients (garbage,
 * a 4 GB length, half a frame then silence) must lose only their own connection. */
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>

#include "../../lib/buf.c"
#include "../../lib/log.c"
#include "../../relay/frame.c"
#include "../../protocols/pb.c"
#include "../../protocols/rpc.c"
#include "../../reactor/ev.c"
#include "../../lib/net.c"
#include "../../master/rpc.c"
#include "../../master/conftree.c"
#include "../../master/ctl.c"
#include "test.h"

/* ---- helpers ---- */

static size_t t_unhex(const char *hex, uint8_t *out, size_t cap)
{
    size_t n = 0;
    for (const char *p = hex; p[0] && p[1] && n < cap; p += 2) {
        unsigned v;
        if (sscanf(p, "%2x", &v) != 1)
            break;
        out[n++] = (uint8_t)v;
    }
    return n;
}

static void t_dump(const char *what, const uint8_t *p, size_t n)
{
    printf("\n  %s (%zu):", what, n);
    for (size_t i = 0; i < n; i++)
        printf("%s%02x", i % 16 ? " " : "\n    ", p[i]);
    printf("\n");
}

static bool t_same(const void *got, size_t glen, const char *hex)
{
    uint8_t want[512];
    size_t wlen = t_unhex(hex, want, sizeof(want));
    bool ok = glen == wlen && memcmp(got, want, glen) == 0;
    if (!ok) {
        t_dump("got", got, glen);
        t_dump("want", want, wlen);
    }
    return ok;
}

/* The §9.1 examples. */
#define HEX_WORKERS_REQ                                                                            \
    "1508160000000971dba7000001000000100000"                                                       \
    "00696e666f726d65722e576f726b657273226874747022"
#define HEX_WORKERS_REPLY                                                                          \
    "15081e000000e6596f62000001000000100000"                                                       \
    "00696e666f726d65722e576f726b6572737b22776f726b657273223a5b5d7d"
#define HEX_KVHAS_REQ                                                                              \
    "1580120000000d1d2fa90000030000000600000"                                                      \
    "06b762e4861730a056c6f63616c12030a0161"
#define HEX_KVHAS_REPLY                                                                            \
    "15800b00000018053e84000003000000060000"                                                       \
    "006b762e4861730a030a0161"
static const char hex_kvfoo_error[] = "15c02300000080da4bb9000007000000060000"
                                      "006b762e466f6f7270633a2063616e27742066696e64206d6574686f64"
                                      "206b762e466f6f";

/* ---- codec: the spec's hex vectors ---- */

static void test_encode_request_vector(void)
{
    fl_buf_t b = {0};
    CU_ASSERT_EQUAL(
        fl_rpc_encode_request(&b, 1, FL_RPC_JSON, FL_SLICE("informer.Workers"), "\"http\"", 6), 0);
    CU_ASSERT_TRUE(t_same(b.data, b.len, HEX_WORKERS_REQ));
    b.len = 0;
    static const uint8_t kv[] = {0x0a, 0x05, 'l', 'o', 'c', 'a', 'l', 0x12, 0x03, 0x0a, 0x01, 'a'};
    CU_ASSERT_EQUAL(fl_rpc_encode_request(&b, 3, FL_RPC_PROTO, FL_SLICE("kv.Has"), kv, sizeof(kv)),
                    0);
    CU_ASSERT_TRUE(t_same(b.data, b.len, HEX_KVHAS_REQ));
    fl_buf_free(&b);
}

static void test_encode_reply_vectors(void)
{
    fl_buf_t b = {0};
    CU_ASSERT_EQUAL(fl_rpc_encode_reply(&b, 1, FL_RPC_JSON, FL_SLICE("informer.Workers"),
                                        "{\"workers\":[]}", 14),
                    0);
    CU_ASSERT_TRUE(t_same(b.data, b.len, HEX_WORKERS_REPLY));
    b.len = 0;
    static const uint8_t kv[] = {0x0a, 0x03, 0x0a, 0x01, 'a'};
    CU_ASSERT_EQUAL(fl_rpc_encode_reply(&b, 3, FL_RPC_PROTO, FL_SLICE("kv.Has"), kv, sizeof(kv)),
                    0);
    CU_ASSERT_TRUE(t_same(b.data, b.len, HEX_KVHAS_REPLY));
    b.len = 0;
    fl_buf_t text = {0};
    CU_ASSERT_EQUAL(fl_rpc_lookup_error(&text, FL_RPC_NO_METHOD, FL_SLICE("kv.Foo")), 0);
    CU_ASSERT_EQUAL(
        fl_rpc_encode_error(&b, 7, FL_RPC_PROTO, FL_SLICE("kv.Foo"), fl_slice(text.data, text.len)),
        0);
    CU_ASSERT_TRUE(t_same(b.data, b.len, hex_kvfoo_error));
    fl_buf_free(&text);
    fl_buf_free(&b);
}

static void test_parse_request_vector(void)
{
    uint8_t raw[256];
    size_t n = t_unhex(HEX_WORKERS_REQ, raw, sizeof(raw));
    fl_frame_t f;
    fl_rpc_req_t r;
    const char *err = NULL;
    CU_ASSERT_EQUAL(fl_frame_parse(raw, n, UINT32_MAX, &f, &err), (ssize_t)n);
    CU_ASSERT_EQUAL(fl_rpc_parse_request(&f, &r, &err), 0);
    CU_ASSERT_EQUAL(r.seq, 1);
    CU_ASSERT_EQUAL(r.codec, FL_RPC_JSON);
    CU_ASSERT_TRUE(r.codec_given);
    CU_ASSERT_TRUE(fl_slice_eq(r.method, "informer.Workers", 16));
    CU_ASSERT_TRUE(fl_slice_eq(r.arg, "\"http\"", 6));
    char ebuf[100];
    char *s = fl_rpc_arg_string(&r, ebuf, sizeof(ebuf), &err);
    CU_ASSERT_STRING_EQUAL(s, "http");
    free(s);

    n = t_unhex(hex_kvfoo_error, raw, sizeof(raw));
    fl_rpc_reply_t rep;
    CU_ASSERT_EQUAL(fl_frame_parse(raw, n, UINT32_MAX, &f, &err), (ssize_t)n);
    CU_ASSERT_EQUAL(fl_rpc_parse_reply(&f, &rep, &err), 0);
    CU_ASSERT_EQUAL(rep.seq, 7);
    CU_ASSERT_TRUE(rep.error);
    CU_ASSERT_TRUE(fl_slice_eq(rep.body, "rpc: can't find method kv.Foo", 29));
}

static void test_codec_priority(void)
{
    CU_ASSERT_EQUAL(fl_rpc_pick_codec(0xA0), FL_RPC_PROTO); /* Go's gob|proto */
    CU_ASSERT_EQUAL(fl_rpc_pick_codec(FL_RPC_JSON | FL_RPC_RAW), FL_RPC_JSON);
    CU_ASSERT_EQUAL(fl_rpc_pick_codec(FL_RPC_RAW | FL_RPC_MSGPACK), FL_RPC_RAW);
    CU_ASSERT_EQUAL(fl_rpc_pick_codec(FL_RPC_MSGPACK | FL_RPC_GOB), FL_RPC_MSGPACK);
    CU_ASSERT_EQUAL(fl_rpc_pick_codec(0), FL_RPC_GOB);
    fl_frame_t f = {
        .flags = 0, .nopts = 2, .opts = {5, 3}, .payload = (const uint8_t *)"a.b", .len = 3};
    fl_rpc_req_t r;
    const char *err = NULL;
    CU_ASSERT_EQUAL(fl_rpc_parse_request(&f, &r, &err), 0);
    CU_ASSERT_FALSE(r.codec_given);
    char ebuf[100];
    CU_ASSERT_PTR_NULL(fl_rpc_arg_string(&r, ebuf, sizeof(ebuf), &err));
    CU_ASSERT_PTR_EQUAL(err, fl_rpc_err_no_decoder);
}

static void test_framing_errors(void)
{
    fl_frame_t f = {
        .flags = FL_RPC_JSON, .nopts = 1, .opts = {1}, .payload = (const uint8_t *)"x", .len = 1};
    fl_rpc_req_t r;
    const char *err = NULL;
    CU_ASSERT_EQUAL(fl_rpc_parse_request(&f, &r, &err), -1);
    CU_ASSERT_PTR_EQUAL(err, fl_rpc_err_opts);
    f.nopts = 2;
    f.opts[1] = 2; /* method longer than the payload */
    CU_ASSERT_EQUAL(fl_rpc_parse_request(&f, &r, &err), -1);
    CU_ASSERT_PTR_EQUAL(err, fl_rpc_err_method_len);
    f.opts[1] = 1; /* a method name and no argument */
    CU_ASSERT_EQUAL(fl_rpc_parse_request(&f, &r, &err), 0);
    CU_ASSERT_EQUAL(r.arg.len, 0);
}

static void test_lookup_texts(void)
{
    fl_buf_t b = {0};
    fl_rpc_lookup_error(&b, FL_RPC_ILL_FORMED, FL_SLICE("nodot"));
    fl_buf_append(&b, "", 1);
    CU_ASSERT_STRING_EQUAL(b.data, "rpc: service/method request ill-formed: nodot");
    b.len = 0;
    fl_rpc_lookup_error(&b, FL_RPC_NO_SERVICE, FL_SLICE("nope.Foo"));
    fl_buf_append(&b, "", 1);
    CU_ASSERT_STRING_EQUAL(b.data, "rpc: can't find service nope.Foo");
    fl_buf_free(&b);
    fl_slice_t svc, name;
    CU_ASSERT_TRUE(fl_rpc_split_method(FL_SLICE("a.b.C"), &svc, &name));
    CU_ASSERT_TRUE(fl_slice_eq(svc, "a.b", 3) && fl_slice_eq(name, "C", 1));
    CU_ASSERT_FALSE(fl_rpc_split_method(FL_SLICE("abc"), &svc, &name));
}

static char *t_arg(uint8_t codec, const char *arg, const char **err)
{
    static char ebuf[200];
    fl_rpc_req_t r = {.codec = codec, .codec_given = true, .arg = fl_slice_cstr(arg)};
    *err = NULL;
    return fl_rpc_arg_string(&r, ebuf, sizeof(ebuf), err);
}

static void test_arg_string(void)
{
    const char *err;
    char *s = t_arg(FL_RPC_JSON, "\"ht\\u0074p\"", &err);
    CU_ASSERT_STRING_EQUAL(s, "http");
    free(s);
    s = t_arg(FL_RPC_JSON, "", &err);
    CU_ASSERT_STRING_EQUAL(s, ""); /* empty argument: the zero value */
    free(s);
    s = t_arg(FL_RPC_JSON, "null", &err);
    CU_ASSERT_STRING_EQUAL(s, "");
    free(s);
    CU_ASSERT_PTR_NULL(t_arg(FL_RPC_JSON, "123", &err));
    CU_ASSERT_STRING_EQUAL(err, "json: cannot unmarshal number into Go value of type string");
    CU_ASSERT_PTR_NULL(t_arg(FL_RPC_JSON, "{bad", &err));
    CU_ASSERT_PTR_NOT_NULL(err);
    s = t_arg(FL_RPC_RAW, "http", &err);
    CU_ASSERT_STRING_EQUAL(s, ""); /* Go fills only []byte arguments from raw */
    free(s);
    CU_ASSERT_PTR_NULL(t_arg(FL_RPC_PROTO, "\x0a\x01x", &err));
    CU_ASSERT_PTR_EQUAL(err, fl_rpc_err_not_proto);
    CU_ASSERT_PTR_NULL(t_arg(FL_RPC_GOB, "x", &err));
    CU_ASSERT_PTR_EQUAL(err, fl_rpc_err_codec);
}

static void test_json_string(void)
{
    fl_buf_t b = {0};
    static const char in[] = "a\"b\\c\n\t<&>\x01\xff\xe2\x80\xa8z\xc3\xa9";
    CU_ASSERT_EQUAL(fl_rpc_json_string(&b, in, sizeof(in) - 1), 0);
    fl_buf_append(&b, "", 1);
    CU_ASSERT_STRING_EQUAL(b.data, "\"a\\\"b\\\\c\\n\\t\\u003c\\u0026\\u003e\\u0001\\ufffd\\u2028z"
                                   "\xc3\xa9\"");
    fl_buf_free(&b);
}

static void test_base64(void)
{
    static const char *const v[][2] = {{"", ""},
                                       {"f", "Zg=="},
                                       {"fo", "Zm8="},
                                       {"foo", "Zm9v"},
                                       {"foob", "Zm9vYg=="},
                                       {"fooba", "Zm9vYmE="},
                                       {"foobar", "Zm9vYmFy"}};
    for (size_t i = 0; i < FL_ARRAY_SIZE(v); i++) {
        fl_buf_t b = {0};
        fl_rpc_base64(&b, v[i][0], strlen(v[i][0]));
        fl_buf_append(&b, "", 1);
        CU_ASSERT_STRING_EQUAL(b.data, v[i][1]);
        fl_buf_free(&b);
    }
}

/* ---- the server, in a child process, on a unix socket ---- */

static char t_sock[108];
static pid_t t_server_pid;
static fl_loop_t *t_loop;

static size_t t_plugins(void *m, const char **names, size_t max)
{
    FL_UNUSED(m);
    if (max)
        names[0] = "http";
    return 1;
}

static void t_workers(void *m, fl_rpc_call_t *call, const char *plugin)
{
    FL_UNUSED(m);
    FL_UNUSED(plugin);
    fl_rpc_reply_json(call, "{\"workers\":[]}", 14);
}

/* A reset that completes later, from a timer: replies go out in completion order. */
static void t_reset_later(fl_loop_t *loop, void *data)
{
    FL_UNUSED(loop);
    fl_rpc_reply_json(data, "true", 4);
}

static void t_reset(void *m, fl_rpc_call_t *call, const char *plugin)
{
    FL_UNUSED(m);
    FL_UNUSED(plugin);
    fl_timer_add(t_loop, 300, t_reset_later, call);
}

static int t_config(void *m, fl_buf_t *out)
{
    FL_UNUSED(m);
    return fl_buf_puts(out, "version: \"3\"\n");
}

static void t_kv_has(fl_rpc_call_t *call)
{
    static const uint8_t kv[] = {0x0a, 0x03, 0x0a, 0x01, 'a'};
    fl_rpc_reply(call, kv, sizeof(kv));
}

/* Answers after 200 ms whether the client still counted as there (raw codec). */
static void t_alive_later(fl_loop_t *loop, void *data)
{
    FL_UNUSED(loop);
    fl_rpc_call_t *call = data;
    const char *v = fl_rpc_call_alive(call) ? "alive" : "gone";
    fl_rpc_reply(call, v, strlen(v));
}

static void t_alive(fl_rpc_call_t *call)
{
    fl_timer_add(t_loop, 200, t_alive_later, call);
}

static const fl_rpc_method_t t_kv_methods[] = {{"kv.Has", t_kv_has}, {"t.Alive", t_alive}};

static void t_server_start(void)
{
    snprintf(t_sock, sizeof(t_sock), "/tmp/fl-test-rpc-%d.sock", (int)getpid());
    int ready[2];
    CU_ASSERT_EQUAL_FATAL(pipe(ready), 0);
    t_server_pid = fork();
    if (t_server_pid == 0) {
        close(ready[0]);
        t_loop = fl_loop_new(1024);
        char dsn[200], err[300];
        snprintf(dsn, sizeof(dsn), "unix://%s", t_sock);
        fl_rpc_limits_t lim = {.max_frame = 1 << 20, .stall_ms = 300};
        fl_rpc_server_t *s = fl_rpc_server_new(t_loop, dsn, &lim, err, sizeof(err));
        if (!s) {
            fprintf(stderr, "server: %s\n", err);
            _exit(1);
        }
        fl_rpc_ops_t ops = {
            .plugins = t_plugins, .workers = t_workers, .reset = t_reset, .config = t_config};
        fl_rpc_add_builtin(s, &ops, NULL);
        fl_rpc_server_add(s, t_kv_methods, 2, NULL);
        if (write(ready[1], "r", 1) != 1)
            _exit(1);
        fl_loop_run(t_loop);
        _exit(0);
    }
    close(ready[1]);
    char c;
    CU_ASSERT_EQUAL(read(ready[0], &c, 1), 1);
    close(ready[0]);
}

static void t_server_stop(void)
{
    kill(t_server_pid, SIGKILL);
    waitpid(t_server_pid, NULL, 0);
    unlink(t_sock);
}

static int t_connect(fl_rpc_client_t *c)
{
    char dsn[200], err[300];
    snprintf(dsn, sizeof(dsn), "unix://%s", t_sock);
    int rc = fl_rpc_client_connect(c, dsn, 3000, err, sizeof(err));
    if (rc < 0)
        printf("\n  connect: %s\n", err);
    return rc;
}

/* Sends raw bytes and returns the exact bytes of the next reply frame. */
static size_t t_roundtrip(fl_rpc_client_t *c, const char *hex, uint8_t *out, size_t cap)
{
    uint8_t req[512];
    size_t n = t_unhex(hex, req, sizeof(req));
    if (send(c->fd, req, n, 0) != (ssize_t)n)
        return 0;
    size_t got = 0;
    for (;;) {
        fl_frame_t f;
        const char *err;
        ssize_t k = fl_frame_parse(out, got, UINT32_MAX, &f, &err);
        if (k > 0)
            return (size_t)k;
        if (k < 0 || got == cap)
            return 0;
        ssize_t r = recv(c->fd, out + got, cap - got, 0);
        if (r <= 0)
            return 0;
        got += (size_t)r;
    }
}

static void test_server_vectors(void)
{
    t_server_start();
    fl_rpc_client_t c;
    CU_ASSERT_EQUAL_FATAL(t_connect(&c), 0);
    uint8_t out[512];
    size_t n = t_roundtrip(&c, HEX_WORKERS_REQ, out, sizeof(out));
    CU_ASSERT_TRUE(t_same(out, n, HEX_WORKERS_REPLY));
    n = t_roundtrip(&c, HEX_KVHAS_REQ, out, sizeof(out));
    CU_ASSERT_TRUE(t_same(out, n, HEX_KVHAS_REPLY));
    /* kv.Foo, proto, seq 7: the spec's error frame, and the connection stays usable */
    fl_buf_t req = {0};
    fl_rpc_encode_request(&req, 7, FL_RPC_PROTO, FL_SLICE("kv.Foo"), NULL, 0);
    char hex[200] = "";
    for (size_t i = 0; i < req.len; i++)
        sprintf(hex + 2 * i, "%02x", (uint8_t)req.data[i]);
    n = t_roundtrip(&c, hex, out, sizeof(out));
    CU_ASSERT_TRUE(t_same(out, n, hex_kvfoo_error));
    fl_buf_free(&req);
    n = t_roundtrip(&c, HEX_WORKERS_REQ, out, sizeof(out));
    CU_ASSERT_TRUE(t_same(out, n, HEX_WORKERS_REPLY));
    fl_rpc_client_close(&c);
    t_server_stop();
}

static int t_call(fl_rpc_client_t *c, uint8_t codec, const char *method, const char *arg,
                  fl_buf_t *body)
{
    char err[300];
    int rc = fl_rpc_client_call(c, codec, method, arg, strlen(arg), body, err, sizeof(err));
    fl_buf_append(body, "", 1);
    body->len--;
    if (rc < 0)
        printf("\n  call %s: %s\n", method, err);
    return rc;
}

static void test_server_builtin(void)
{
    t_server_start();
    fl_rpc_client_t c;
    CU_ASSERT_EQUAL_FATAL(t_connect(&c), 0);
    fl_buf_t b = {0};
    CU_ASSERT_EQUAL(t_call(&c, FL_RPC_JSON, "resetter.List", "true", &b), 0);
    CU_ASSERT_STRING_EQUAL(b.data, "[\"http\"]");
    CU_ASSERT_EQUAL(t_call(&c, FL_RPC_JSON, "informer.List", "", &b), 0);
    CU_ASSERT_STRING_EQUAL(b.data, "[\"http\"]");
    CU_ASSERT_EQUAL(t_call(&c, FL_RPC_JSON, "informer.Workers", "\"nope\"", &b), 0);
    CU_ASSERT_STRING_EQUAL(b.data, "{\"workers\":null}");
    CU_ASSERT_EQUAL(t_call(&c, FL_RPC_JSON, "resetter.Reset", "\"nope\"", &b), 1);
    CU_ASSERT_STRING_EQUAL(b.data, "no such plugin: nope");
    CU_ASSERT_EQUAL(t_call(&c, FL_RPC_JSON, "resetter.Reset", "\"http\"", &b), 0);
    CU_ASSERT_STRING_EQUAL(b.data, "true");
    CU_ASSERT_EQUAL(t_call(&c, FL_RPC_JSON, "informer.Jobs", "\"jobs\"", &b), 0);
    CU_ASSERT_STRING_EQUAL(b.data, "[]");
    CU_ASSERT_EQUAL(t_call(&c, FL_RPC_JSON, "informer.AddWorker", "\"http\"", &b), 1);
    CU_ASSERT_PTR_NOT_NULL(strstr(b.data, "not supported"));
    CU_ASSERT_EQUAL(t_call(&c, FL_RPC_JSON, "informer.AddWorker", "\"kv\"", &b), 1);
    CU_ASSERT_STRING_EQUAL(b.data, "plugin kv does not support workers management");
    CU_ASSERT_EQUAL(t_call(&c, FL_RPC_JSON, "rpc.Version", "true", &b), 0);
    CU_ASSERT_STRING_EQUAL(b.data, "\"" FL_RR_VERSION "\"");
    CU_ASSERT_EQUAL(t_call(&c, FL_RPC_JSON, "rpc.Config", "true", &b), 0);
    CU_ASSERT_STRING_EQUAL(b.data, "\"dmVyc2lvbjogIjMiCg==\""); /* base64 of the yaml */
    CU_ASSERT_EQUAL(t_call(&c, FL_RPC_RAW, "rpc.Config", "", &b), 0);
    CU_ASSERT_STRING_EQUAL(b.data, "version: \"3\"\n");
    CU_ASSERT_EQUAL(t_call(&c, FL_RPC_RAW, "rpc.Version", "", &b), 1);
    CU_ASSERT_STRING_EQUAL(b.data, "unknown Raw payload type");
    CU_ASSERT_EQUAL(t_call(&c, FL_RPC_JSON, "nodot", "", &b), 1);
    CU_ASSERT_STRING_EQUAL(b.data, "rpc: service/method request ill-formed: nodot");
    CU_ASSERT_EQUAL(t_call(&c, FL_RPC_JSON, "nope.Foo", "", &b), 1);
    CU_ASSERT_STRING_EQUAL(b.data, "rpc: can't find service nope.Foo");
    CU_ASSERT_EQUAL(t_call(&c, 0, "informer.List", "", &b), 1);
    CU_ASSERT_STRING_EQUAL(b.data, fl_rpc_err_no_decoder);
    CU_ASSERT_EQUAL(t_call(&c, FL_RPC_JSON, "informer.Workers", "42", &b), 1);
    CU_ASSERT_STRING_EQUAL(b.data, "json: cannot unmarshal number into Go value of type string");
    fl_buf_free(&b);
    fl_rpc_client_close(&c);
    t_server_stop();
}

/* A slow call (reset: 300 ms) and a fast one on the same connection: the fast reply comes first,
 * each with its own sequence number, even a repeated one (§14 item 8). */
static void test_server_out_of_order(void)
{
    t_server_start();
    fl_rpc_client_t c;
    CU_ASSERT_EQUAL_FATAL(t_connect(&c), 0);
    char err[300];
    CU_ASSERT_EQUAL(
        fl_rpc_client_send(&c, 10, FL_RPC_JSON, "resetter.Reset", "\"http\"", 6, err, sizeof(err)),
        0);
    CU_ASSERT_EQUAL(
        fl_rpc_client_send(&c, 11, FL_RPC_JSON, "informer.List", "", 0, err, sizeof(err)), 0);
    CU_ASSERT_EQUAL(
        fl_rpc_client_send(&c, 11, FL_RPC_JSON, "informer.List", "", 0, err, sizeof(err)), 0);
    uint32_t seq;
    bool is_err;
    fl_buf_t b = {0};
    CU_ASSERT_EQUAL(fl_rpc_client_recv(&c, &seq, &is_err, &b, err, sizeof(err)), 0);
    CU_ASSERT_EQUAL(seq, 11);
    CU_ASSERT_EQUAL(fl_rpc_client_recv(&c, &seq, &is_err, &b, err, sizeof(err)), 0);
    CU_ASSERT_EQUAL(seq, 11);
    CU_ASSERT_EQUAL(fl_rpc_client_recv(&c, &seq, &is_err, &b, err, sizeof(err)), 0);
    CU_ASSERT_EQUAL(seq, 10);
    CU_ASSERT_FALSE(is_err);
    CU_ASSERT_TRUE(b.len == 4 && memcmp(b.data, "true", 4) == 0);
    fl_buf_free(&b);
    fl_rpc_client_close(&c);
    t_server_stop();
}

/* Waits up to ms for the peer to close; true when it did. */
static bool t_closed_within(int fd, int ms)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    for (;;) {
        if (poll(&p, 1, ms) <= 0)
            return false;
        char buf[256];
        ssize_t n = recv(fd, buf, sizeof(buf), 0);
        if (n <= 0)
            return true;
    }
}

static void t_good_call_works(fl_rpc_client_t *good)
{
    fl_buf_t b = {0};
    CU_ASSERT_EQUAL(t_call(good, FL_RPC_JSON, "informer.List", "true", &b), 0);
    CU_ASSERT_STRING_EQUAL(b.data, "[\"http\"]");
    fl_buf_free(&b);
}

static void test_server_hostile(void)
{
    t_server_start();
    fl_rpc_client_t good, bad;
    CU_ASSERT_EQUAL_FATAL(t_connect(&good), 0);
    t_good_call_works(&good);

    /* garbage: the CRC cannot match */
    CU_ASSERT_EQUAL_FATAL(t_connect(&bad), 0);
    CU_ASSERT_EQUAL(send(bad.fd, "GET / HTTP/1.1\r\n\r\n", 18, 0), 18);
    CU_ASSERT_TRUE(t_closed_within(bad.fd, 2000));
    fl_rpc_client_close(&bad);
    t_good_call_works(&good);

    /* a valid header announcing 4 GB: closed at once, nothing allocated for it */
    CU_ASSERT_EQUAL_FATAL(t_connect(&bad), 0);
    uint8_t hdr[20];
    uint32_t opts[2] = {1, 4};
    fl_frame_header(hdr, FL_RPC_JSON, 0, opts, 2, 0xffffffffu);
    CU_ASSERT_EQUAL(send(bad.fd, hdr, sizeof(hdr), 0), (ssize_t)sizeof(hdr));
    CU_ASSERT_TRUE(t_closed_within(bad.fd, 2000));
    fl_rpc_client_close(&bad);
    t_good_call_works(&good);

    /* one option only: a framing error */
    CU_ASSERT_EQUAL_FATAL(t_connect(&bad), 0);
    fl_buf_t b = {0};
    uint32_t one = 1;
    fl_frame_encode(&b, FL_RPC_JSON, 0, &one, 1, "x.Y", 3);
    CU_ASSERT_EQUAL(send(bad.fd, b.data, b.len, 0), (ssize_t)b.len);
    CU_ASSERT_TRUE(t_closed_within(bad.fd, 2000));
    fl_rpc_client_close(&bad);

    /* half a frame, then silence: closed after the stall limit (300 ms here) */
    CU_ASSERT_EQUAL_FATAL(t_connect(&bad), 0);
    b.len = 0;
    fl_rpc_encode_request(&b, 1, FL_RPC_JSON, FL_SLICE("informer.List"), "true", 4);
    CU_ASSERT_EQUAL(send(bad.fd, b.data, b.len - 3, 0), (ssize_t)(b.len - 3));
    int64_t t0 = fl_now_ms();
    t_good_call_works(&good); /* meanwhile the others are served */
    CU_ASSERT_TRUE(t_closed_within(bad.fd, 3000));
    CU_ASSERT_TRUE(fl_now_ms() - t0 >= 250);
    fl_rpc_client_close(&bad);
    fl_buf_free(&b);

    /* an idle connection between frames is kept */
    fl_rpc_client_t idle;
    CU_ASSERT_EQUAL_FATAL(t_connect(&idle), 0);
    CU_ASSERT_FALSE(t_closed_within(idle.fd, 700));
    t_good_call_works(&idle);
    fl_rpc_client_close(&idle);
    t_good_call_works(&good);
    fl_rpc_client_close(&good);
    t_server_stop();
}

/* A client that half-closes after its requests still gets every answer (Go net/rpc does). */
static void test_server_half_close(void)
{
    t_server_start();
    fl_rpc_client_t c;
    CU_ASSERT_EQUAL_FATAL(t_connect(&c), 0);
    char err[300];
    CU_ASSERT_EQUAL(
        fl_rpc_client_send(&c, 1, FL_RPC_JSON, "resetter.Reset", "\"http\"", 6, err, sizeof(err)),
        0);
    shutdown(c.fd, SHUT_WR);
    uint32_t seq;
    bool is_err;
    fl_buf_t b = {0};
    CU_ASSERT_EQUAL(fl_rpc_client_recv(&c, &seq, &is_err, &b, err, sizeof(err)), 0);
    CU_ASSERT_EQUAL(seq, 1);
    CU_ASSERT_TRUE(t_closed_within(c.fd, 2000));
    fl_rpc_client_close(&c);
    /* a long call sees a client that stopped sending as gone, yet the answer is delivered */
    CU_ASSERT_EQUAL_FATAL(t_connect(&c), 0);
    CU_ASSERT_EQUAL(t_call(&c, FL_RPC_RAW, "t.Alive", "", &b), 0);
    CU_ASSERT_STRING_EQUAL(b.data, "alive");
    CU_ASSERT_EQUAL(fl_rpc_client_send(&c, 2, FL_RPC_RAW, "t.Alive", "", 0, err, sizeof(err)), 0);
    shutdown(c.fd, SHUT_WR);
    CU_ASSERT_EQUAL(fl_rpc_client_recv(&c, &seq, &is_err, &b, err, sizeof(err)), 0);
    CU_ASSERT_TRUE(b.len == 4 && memcmp(b.data, "gone", 4) == 0);
    fl_buf_free(&b);
    fl_rpc_client_close(&c);
    t_server_stop();
}

/* ---- CLI helpers ---- */

static void test_human(void)
{
    char s[64];
    fl_ctl_human_bytes(5, s, sizeof(s));
    CU_ASSERT_STRING_EQUAL(s, "5 B");
    fl_ctl_human_bytes(21434368, s, sizeof(s));
    CU_ASSERT_STRING_EQUAL(s, "21 MB");
    fl_ctl_human_bytes(8500000, s, sizeof(s));
    CU_ASSERT_STRING_EQUAL(s, "8.5 MB");
    fl_ctl_human_bytes(1000, s, sizeof(s));
    CU_ASSERT_STRING_EQUAL(s, "1.0 kB");
    fl_ctl_human_ago(0, s, sizeof(s));
    CU_ASSERT_STRING_EQUAL(s, "now");
    fl_ctl_human_ago(1, s, sizeof(s));
    CU_ASSERT_STRING_EQUAL(s, "1 second ago");
    fl_ctl_human_ago(42, s, sizeof(s));
    CU_ASSERT_STRING_EQUAL(s, "42 seconds ago");
    fl_ctl_human_ago(300, s, sizeof(s));
    CU_ASSERT_STRING_EQUAL(s, "5 minutes ago");
    fl_ctl_human_ago(7300, s, sizeof(s));
    CU_ASSERT_STRING_EQUAL(s, "2 hours ago");
}

static char *t_write_conf(const char *text)
{
    static char path[64];
    snprintf(path, sizeof(path), "/tmp/fl-test-rpc-conf-%d.yaml", (int)getpid());
    FILE *f = fopen(path, "w");
    fputs(text, f);
    fclose(f);
    return path;
}

static void test_rpc_listen_from_config(void)
{
    char err[300];
    /* an empty file plus the override, no version (Octane 2.3's reset, §14 item 10) */
    char *path = t_write_conf("");
    char *o1[] = {"rpc.listen=tcp://127.0.0.1:7001"};
    char *dsn = fl_ctl_rpc_listen(path, o1, 1, err, sizeof(err));
    CU_ASSERT_STRING_EQUAL(dsn, "tcp://127.0.0.1:7001");
    free(dsn);
    dsn = fl_ctl_rpc_listen(path, NULL, 0, err, sizeof(err));
    CU_ASSERT_PTR_NULL(dsn);
    CU_ASSERT_STRING_EQUAL(err, "rpc service not specified in the configuration");
    path = t_write_conf("rpc: {}\n");
    dsn = fl_ctl_rpc_listen(path, NULL, 0, err, sizeof(err));
    CU_ASSERT_STRING_EQUAL(dsn, "tcp://127.0.0.1:6001");
    free(dsn);
    setenv("FL_T_RPC_PORT", "7123", 1);
    path = t_write_conf("version: 3\nrpc:\n  listen: tcp://127.0.0.1:${FL_T_RPC_PORT}\n");
    dsn = fl_ctl_rpc_listen(path, NULL, 0, err, sizeof(err));
    CU_ASSERT_STRING_EQUAL(dsn, "tcp://127.0.0.1:7123"); /* unquoted version: no complaint */
    free(dsn);
    dsn = fl_ctl_rpc_listen(NULL, o1, 1, err, sizeof(err)); /* no file at all */
    CU_ASSERT_STRING_EQUAL(dsn, "tcp://127.0.0.1:7001");
    free(dsn);
    unlink(path);
}

static const fl_test_t tests[] = {
    {"9.1 request vectors (JSON and proto)", test_encode_request_vector},
    {"9.1 reply and error vectors", test_encode_reply_vectors},
    {"9.1 request and error reply parse back", test_parse_request_vector},
    {"codec priority, flags 0", test_codec_priority},
    {"framing errors", test_framing_errors},
    {"net/rpc lookup texts", test_lookup_texts},
    {"string arguments per codec", test_arg_string},
    {"JSON string escaping as Go", test_json_string},
    {"base64 (RFC 4648 vectors)", test_base64},
    {"server answers the 9.1 vectors byte for byte", test_server_vectors},
    {"server built-in services", test_server_builtin},
    {"server replies out of order", test_server_out_of_order},
    {"server: hostile clients lose only their connection", test_server_hostile},
    {"server: half-closed client gets its answers", test_server_half_close},
    {"humanized bytes and ages", test_human},
    {"rpc.listen for reset/workers", test_rpc_listen_from_config},
    {NULL, NULL},
};

FL_TEST_MAIN("rpc", tests)
