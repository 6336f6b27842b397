/* Unit tests for relay/frame.c: every frame hex dump of the protocol spec (§2.9, §3.6, §4,
 * §7.2, plus an RPC frame of §9.1 for two options) is produced byte for byte by the encoder
 * and read back by the parser. */
#include "../../lib/buf.c"
#include "../../relay/frame.c"
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

static void t_expect_bytes(const void *got, size_t glen, const void *want, size_t wlen)
{
    bool ok = glen == wlen && memcmp(got, want, glen) == 0;
    CU_ASSERT_TRUE(ok);
    if (!ok) {
        t_dump("got", got, glen);
        t_dump("want", want, wlen);
    }
}

typedef struct {
    const char *hex;
    uint8_t flags, stream;
    unsigned nopts;
    uint32_t opts[FL_FRAME_MAX_OPTS];
    const char *payload;
    size_t len;
} t_vec_t;

/* Encoder output equals the vector, both via fl_frame_encode and via fl_frame_header. */
static void t_check_encode(const t_vec_t *v, const uint8_t *want, size_t wlen)
{
    fl_buf_t b = {0};
    CU_ASSERT_EQUAL(fl_frame_encode(&b, v->flags, v->stream, v->opts, v->nopts, v->payload, v->len),
                    0);
    t_expect_bytes(b.data, b.len, want, wlen);
    uint8_t hdr[12 + 4 * FL_FRAME_MAX_OPTS];
    size_t hl = fl_frame_header_len(v->nopts);
    fl_frame_header(hdr, v->flags, v->stream, v->opts, v->nopts, (uint32_t)v->len);
    CU_ASSERT_TRUE(hl + v->len == wlen && memcmp(hdr, want, hl) == 0);
    fl_buf_free(&b);
}

/* Parser reads the vector back, needs every byte, and stops at the frame's end. */
static void t_check_parse(const t_vec_t *v, const uint8_t *want, size_t wlen)
{
    fl_frame_t f = {0};
    const char *err = NULL;
    for (size_t i = 0; i < wlen; i++)
        CU_ASSERT_EQUAL(fl_frame_parse(want, i, UINT32_MAX, &f, &err), 0);
    uint8_t two[2 * 256];
    memcpy(two, want, wlen);
    memcpy(two + wlen, want, wlen); /* a following frame must not be swallowed */
    CU_ASSERT_EQUAL(fl_frame_parse(two, 2 * wlen, UINT32_MAX, &f, &err), (ssize_t)wlen);
    CU_ASSERT_EQUAL(f.flags, v->flags);
    CU_ASSERT_EQUAL(f.stream, v->stream);
    CU_ASSERT_EQUAL(f.nopts, v->nopts);
    for (unsigned i = 0; i < v->nopts && i < f.nopts; i++)
        CU_ASSERT_EQUAL(f.opts[i], v->opts[i]);
    t_expect_bytes(f.payload, f.len, v->payload, v->len);
    CU_ASSERT_PTR_EQUAL(f.payload, two + fl_frame_header_len(v->nopts));
}

static void t_check_vec(const t_vec_t *v)
{
    uint8_t want[256];
    size_t wlen = t_unhex(v->hex, want, sizeof want);
    CU_ASSERT_EQUAL(wlen, strlen(v->hex) / 2);
    t_check_encode(v, want, wlen);
    t_check_parse(v, want, wlen);
}

#define T_PAYLOAD(s) (s), sizeof(s) - 1

/* ---- spec vectors ---- */

#define T_PID_REQ_HEX "13090c0000005f0c467300007b22706964223a343234327d"
#define T_PID_REPLY_HEX "13010d000000fb208afb00007b22706964223a31323334357d"
#define T_STOP_HEX "13090d0000003a6bfacb00007b2273746f70223a747275657d"
#define T_ERROR_HEX "134004000000881e11e30000626f6f6d"
#define T_PONG_HEX "13000000000096d180340800"
#define T_SSTOP_HEX "13000000000096d180340200"
#define T_RESTART_HEX "14000d000000f339efdb00000d0000007b2273746f70223a747275657d"
#define T_JOBS_HEX                                                                                 \
    "1404460000000f407a620000440000007b226964223a2231222c226a6f62223a224a222c2264726976657222"     \
    "3a226d656d6f7279222c2268656164657273223a6e756c6c2c22706970656c696e65223a2270227d6869"
#define T_ACK_HEX "140014000000e621fef60000000000007b2274797065223a322c2264617461223a5b5d7d"
#define T_RPC_HEX                                                                                  \
    "1508160000000971dba700000100000010000000696e666f726d65722e576f726b657273226874747022"

#define T_JOBS_CTX                                                                                 \
    "{\"id\":\"1\",\"job\":\"J\",\"driver\":\"memory\",\"headers\":null,\"pipeline\":\"p\"}"

static void test_crc32(void)
{
    CU_ASSERT_EQUAL(fl_crc32("123456789", 9), 0xCBF43926u);
    CU_ASSERT_EQUAL(fl_crc32("", 0), 0u);
    static const uint8_t pid_hdr[6] = {0x13, 0x09, 0x0c, 0x00, 0x00, 0x00};
    CU_ASSERT_EQUAL(fl_crc32(pid_hdr, 6), 0x73460C5Fu); /* §2.5 worked example */
    CU_ASSERT_EQUAL(fl_crc32("The quick brown fox jumps over the lazy dog", 43), 0x414FA339u);
}

static void test_pid_request(void)
{
    t_vec_t v = {T_PID_REQ_HEX, 0x09, 0, 0, {0}, T_PAYLOAD("{\"pid\":4242}")};
    t_check_vec(&v);
    fl_buf_t b = {0};
    uint8_t want[64];
    size_t n = t_unhex(T_PID_REQ_HEX, want, sizeof want);
    CU_ASSERT_EQUAL(fl_frame_pid_request(&b, 4242), 0);
    t_expect_bytes(b.data, b.len, want, n);
    fl_buf_free(&b);
}

static void test_pid_reply(void)
{
    t_vec_t v = {T_PID_REPLY_HEX, FL_FRAME_CONTROL, 0, 0, {0}, T_PAYLOAD("{\"pid\":12345}")};
    t_check_vec(&v);
    uint8_t buf[64];
    size_t n = t_unhex(T_PID_REPLY_HEX, buf, sizeof buf);
    fl_frame_t f = {0};
    const char *err;
    CU_ASSERT_EQUAL(fl_frame_parse(buf, n, 1024, &f, &err), (ssize_t)n);
    CU_ASSERT_EQUAL(fl_frame_parse_pid_reply(&f), 12345);
    /* Our own request (CONTROL|JSON) is a valid reply too: RR only needs the CONTROL bit. */
    n = t_unhex(T_PID_REQ_HEX, buf, sizeof buf);
    CU_ASSERT_EQUAL(fl_frame_parse(buf, n, 1024, &f, &err), (ssize_t)n);
    CU_ASSERT_EQUAL(fl_frame_parse_pid_reply(&f), 4242);
}

static long t_pid_of(uint8_t flags, const char *json)
{
    fl_frame_t f = {
        .flags = flags, .payload = (const uint8_t *)json, .len = (uint32_t)strlen(json)};
    return fl_frame_parse_pid_reply(&f);
}

static void test_pid_reply_invalid(void)
{
    CU_ASSERT_EQUAL(t_pid_of(FL_FRAME_CONTROL, "{\"pid\":7}"), 7);
    CU_ASSERT_EQUAL(t_pid_of(0, "{\"pid\":7}"), -1); /* data frame */
    CU_ASSERT_EQUAL(t_pid_of(FL_FRAME_CONTROL, "{\"pid\":0}"), -1);
    CU_ASSERT_EQUAL(t_pid_of(FL_FRAME_CONTROL, "{\"pid\":-5}"), -1);
    CU_ASSERT_EQUAL(t_pid_of(FL_FRAME_CONTROL, "{\"pid\":12.5}"), -1);
    CU_ASSERT_EQUAL(t_pid_of(FL_FRAME_CONTROL, "{\"pid\":\"12\"}"), -1);
    CU_ASSERT_EQUAL(t_pid_of(FL_FRAME_CONTROL, "{\"pid\":1e12}"), -1);
    CU_ASSERT_EQUAL(t_pid_of(FL_FRAME_CONTROL, "{\"stop\":true}"), -1);
    CU_ASSERT_EQUAL(t_pid_of(FL_FRAME_CONTROL, "[7]"), -1);
    CU_ASSERT_EQUAL(t_pid_of(FL_FRAME_CONTROL, "{\"pid\":"), -1);
    CU_ASSERT_EQUAL(t_pid_of(FL_FRAME_CONTROL, ""), -1);
}

static void test_stop(void)
{
    t_vec_t v = {T_STOP_HEX, 0x09, 0, 0, {0}, T_PAYLOAD("{\"stop\":true}")};
    t_check_vec(&v);
    fl_buf_t b = {0};
    uint8_t want[64];
    size_t n = t_unhex(T_STOP_HEX, want, sizeof want);
    CU_ASSERT_EQUAL(fl_frame_stop(&b), 0);
    t_expect_bytes(b.data, b.len, want, n);
    fl_buf_free(&b);
}

static void test_error_frame(void)
{
    t_vec_t v = {T_ERROR_HEX, FL_FRAME_ERROR, 0, 0, {0}, T_PAYLOAD("boom")};
    t_check_vec(&v);
}

static void test_pong_and_stream_stop(void)
{
    t_vec_t pong = {T_PONG_HEX, 0, FL_STREAM_PONG, 0, {0}, T_PAYLOAD("")};
    t_vec_t sstop = {T_SSTOP_HEX, 0, FL_STREAM_STOP, 0, {0}, T_PAYLOAD("")};
    t_check_vec(&pong);
    t_check_vec(&sstop);
    uint8_t want[16];
    fl_buf_t b = {0};
    CU_ASSERT_EQUAL(fl_frame_pong(&b), 0);
    t_expect_bytes(b.data, b.len, want, t_unhex(T_PONG_HEX, want, sizeof want));
    b.len = 0;
    CU_ASSERT_EQUAL(fl_frame_stream_stop(&b), 0);
    t_expect_bytes(b.data, b.len, want, t_unhex(T_SSTOP_HEX, want, sizeof want));
    fl_buf_free(&b);
}

static void test_restart_request(void)
{
    t_vec_t v = {T_RESTART_HEX, 0, 0, 1, {13}, T_PAYLOAD("{\"stop\":true}")};
    t_check_vec(&v);
    uint8_t buf[64];
    size_t n = t_unhex(T_RESTART_HEX, buf, sizeof buf);
    fl_frame_t f = {0};
    const char *err;
    CU_ASSERT_EQUAL(fl_frame_parse(buf, n, 1024, &f, &err), (ssize_t)n);
    CU_ASSERT_TRUE(fl_frame_is_stop_request(&f));
    fl_slice_t ctx = {0}, body = {0};
    CU_ASSERT_EQUAL(fl_frame_split(&f, &ctx, &body, &err), 0);
    CU_ASSERT_TRUE(fl_slice_eq(ctx, "{\"stop\":true}", 13));
    CU_ASSERT_EQUAL(body.len, 0);
    /* Look-alikes that are not a restart request. */
    fl_frame_t g = f;
    g.flags = FL_FRAME_CONTROL;
    CU_ASSERT_FALSE(fl_frame_is_stop_request(&g));
    g.flags = FL_FRAME_ERROR;
    CU_ASSERT_FALSE(fl_frame_is_stop_request(&g));
    g = f;
    g.opts[0] = 0; /* {"stop":true} as body, empty ctx */
    CU_ASSERT_FALSE(fl_frame_is_stop_request(&g));
    g = f;
    g.nopts = 0;
    CU_ASSERT_FALSE(fl_frame_is_stop_request(&g));
    g = f;
    g.opts[0] = 12;
    g.len = 12; /* {"stop":true  (truncated) */
    CU_ASSERT_FALSE(fl_frame_is_stop_request(&g));
    /* The CONTROL stop frame from RR is not one either. */
    n = t_unhex(T_STOP_HEX, buf, sizeof buf);
    CU_ASSERT_EQUAL(fl_frame_parse(buf, n, 1024, &f, &err), (ssize_t)n);
    CU_ASSERT_FALSE(fl_frame_is_stop_request(&f));
}

static void test_jobs_task(void)
{
    t_vec_t v = {T_JOBS_HEX, FL_FRAME_RAW, 0, 1, {68}, T_PAYLOAD(T_JOBS_CTX "hi")};
    t_check_vec(&v);
    uint8_t buf[128];
    size_t n = t_unhex(T_JOBS_HEX, buf, sizeof buf);
    fl_frame_t f = {0};
    const char *err;
    fl_slice_t ctx = {0}, body = {0};
    CU_ASSERT_EQUAL(fl_frame_parse(buf, n, 1024, &f, &err), (ssize_t)n);
    CU_ASSERT_EQUAL(fl_frame_split(&f, &ctx, &body, &err), 0);
    CU_ASSERT_TRUE(fl_slice_eq(ctx, T_JOBS_CTX, 68));
    CU_ASSERT_TRUE(fl_slice_eq(body, "hi", 2));
    CU_ASSERT_FALSE(fl_frame_is_stop_request(&f));
}

static void test_jobs_ack(void)
{
    t_vec_t v = {T_ACK_HEX, 0, 0, 1, {0}, T_PAYLOAD("{\"type\":2,\"data\":[]}")};
    t_check_vec(&v);
    uint8_t buf[128];
    size_t n = t_unhex(T_ACK_HEX, buf, sizeof buf);
    fl_frame_t f = {0};
    const char *err;
    fl_slice_t ctx = {0}, body = {0};
    CU_ASSERT_EQUAL(fl_frame_parse(buf, n, 1024, &f, &err), (ssize_t)n);
    CU_ASSERT_EQUAL(fl_frame_split(&f, &ctx, &body, &err), 0);
    CU_ASSERT_EQUAL(ctx.len, 0);
    CU_ASSERT_TRUE(fl_slice_eq(body, "{\"type\":2,\"data\":[]}", 20));
}

static void test_rpc_two_options(void)
{
    t_vec_t v = {T_RPC_HEX, FL_FRAME_JSON, 0, 2, {1, 16}, T_PAYLOAD("informer.Workers\"http\"")};
    t_check_vec(&v);
}

/* ---- errors ---- */

/* A 12-byte header with a correct CRC for arbitrary bytes 0..5. */
static void t_header(uint8_t *h, uint8_t b0, uint8_t flags, uint32_t len)
{
    h[0] = b0;
    h[1] = flags;
    frame_put_u32(h + 2, len);
    frame_put_u32(h + 6, fl_crc32(h, 6));
    h[10] = h[11] = 0;
}

static void test_crc_mismatch(void)
{
    uint8_t buf[64];
    size_t n = t_unhex(T_PID_REQ_HEX, buf, sizeof buf);
    fl_frame_t f = {0};
    for (size_t i = 1; i < 10; i++) { /* any bit in bytes 1..9; byte 0 could break HL first */
        const char *err = NULL;
        buf[i] ^= 0x10;
        CU_ASSERT_EQUAL(fl_frame_parse(buf, n, 1024, &f, &err), -1);
        CU_ASSERT_PTR_EQUAL(err, fl_frame_err_crc);
        buf[i] ^= 0x10;
    }
    /* Detected as soon as the 12 fixed bytes are in, before the payload. */
    const char *err = NULL;
    buf[6] ^= 1;
    CU_ASSERT_EQUAL(fl_frame_parse(buf, 12, 1024, &f, &err), -1);
    CU_ASSERT_PTR_EQUAL(err, fl_frame_err_crc);
    buf[6] ^= 1;
    /* Byte 10, 11, options and payload are not covered by the CRC. */
    buf[10] = FL_STREAM_MORE;
    buf[11] = 0x5a;
    buf[12] = 'X';
    CU_ASSERT_EQUAL(fl_frame_parse(buf, n, 1024, &f, &err), (ssize_t)n);
    CU_ASSERT_EQUAL(f.stream, FL_STREAM_MORE);
}

static void test_header_length_range(void)
{
    uint8_t h[12 + 4 * 12] = {0};
    fl_frame_t f = {0};
    const char *err = NULL;
    t_header(h, 0x1e, 0, 0); /* HL=14: Go would panic */
    CU_ASSERT_EQUAL(fl_frame_parse(h, sizeof h, 1024, &f, &err), -1);
    CU_ASSERT_PTR_EQUAL(err, fl_frame_err_hl);
    t_header(h, 0x1f, 0, 0);
    err = NULL;
    CU_ASSERT_EQUAL(fl_frame_parse(h, sizeof h, 1024, &f, &err), -1);
    CU_ASSERT_PTR_EQUAL(err, fl_frame_err_hl);
    t_header(h, 0x12, 0, 0); /* HL=2 */
    err = NULL;
    CU_ASSERT_EQUAL(fl_frame_parse(h, sizeof h, 1024, &f, &err), -1);
    CU_ASSERT_PTR_EQUAL(err, fl_frame_err_hl);
    /* HL=13 (10 options) is the maximum; the version nibble is not checked. */
    t_header(h, 0x2d, 0, 0);
    for (unsigned i = 0; i < 10; i++)
        frame_put_u32(h + 12 + 4 * i, 100 + i);
    CU_ASSERT_EQUAL(fl_frame_parse(h, 51, 1024, &f, &err), 0);
    CU_ASSERT_EQUAL(fl_frame_parse(h, 52, 1024, &f, &err), 52);
    CU_ASSERT_EQUAL(f.nopts, 10);
    CU_ASSERT_EQUAL(f.opts[9], 109);
}

static void test_max_options_encode(void)
{
    uint32_t opts[11] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11};
    fl_buf_t b = {0};
    CU_ASSERT_EQUAL(fl_frame_encode(&b, 0, 0, opts, 11, "x", 1), -1);
    CU_ASSERT_EQUAL(b.len, 0);
    CU_ASSERT_EQUAL(fl_frame_encode(&b, 0, 0, opts, 10, "x", 1), 0);
    CU_ASSERT_EQUAL(b.len, 53);
    CU_ASSERT_EQUAL((uint8_t)b.data[0], 0x1d);
    fl_frame_t f = {0};
    const char *err;
    CU_ASSERT_EQUAL(fl_frame_parse((uint8_t *)b.data, b.len, 1, &f, &err), 53);
    CU_ASSERT_EQUAL(f.opts[0], 1);
    CU_ASSERT_EQUAL(f.opts[9], 10);
    fl_buf_free(&b);
}

static void test_too_big(void)
{
    uint8_t h[12];
    fl_frame_t f = {0};
    const char *err = NULL;
    t_header(h, 0x13, 0, 1000);
    CU_ASSERT_EQUAL(fl_frame_parse(h, 12, 999, &f, &err), -1); /* before the payload arrives */
    CU_ASSERT_PTR_EQUAL(err, fl_frame_err_too_big);
    CU_ASSERT_EQUAL(fl_frame_parse(h, 12, 1000, &f, &err), 0); /* at the limit: wait */
    t_header(h, 0x13, 0, UINT32_MAX);
    err = NULL;
    CU_ASSERT_EQUAL(fl_frame_parse(h, 12, 1u << 20, &f, &err), -1);
    CU_ASSERT_PTR_EQUAL(err, fl_frame_err_too_big);
}

static void test_could_not_open(void)
{
    const char *msg = "Could not open input file: worker.php\n";
    fl_frame_t f = {0};
    const char *err = NULL;
    for (size_t i = 0; i < 12; i++)
        CU_ASSERT_EQUAL(fl_frame_parse((const uint8_t *)msg, i, 1024, &f, &err), 0);
    CU_ASSERT_EQUAL(fl_frame_parse((const uint8_t *)msg, 12, 1024, &f, &err), -1);
    CU_ASSERT_PTR_EQUAL(err, fl_frame_err_not_found);
    err = NULL;
    CU_ASSERT_EQUAL(fl_frame_parse((const uint8_t *)msg, strlen(msg), 1024, &f, &err), -1);
    CU_ASSERT_PTR_EQUAL(err, fl_frame_err_not_found);
    CU_ASSERT_STRING_EQUAL(fl_frame_err_crc, "CRC mismatch");
}

static void test_split_errors(void)
{
    fl_frame_t f = {.nopts = 0, .payload = (const uint8_t *)"abc", .len = 3};
    fl_slice_t ctx = {0}, body = {0};
    const char *err = NULL;
    CU_ASSERT_EQUAL(fl_frame_split(&f, &ctx, &body, &err), -1);
    CU_ASSERT_PTR_EQUAL(err, fl_frame_err_opts);
    CU_ASSERT_STRING_EQUAL(err, "options length should be equal 1 (body offset)");
    f.nopts = 2;
    err = NULL;
    CU_ASSERT_EQUAL(fl_frame_split(&f, &ctx, &body, &err), -1);
    CU_ASSERT_PTR_EQUAL(err, fl_frame_err_opts);
    f.nopts = 1;
    f.opts[0] = 4;
    err = NULL;
    CU_ASSERT_EQUAL(fl_frame_split(&f, &ctx, &body, &err), -1);
    CU_ASSERT_PTR_EQUAL(err, fl_frame_err_bad_payload);
    CU_ASSERT_STRING_EQUAL(err, "bad payload");
    f.opts[0] = 3; /* all context, empty body */
    CU_ASSERT_EQUAL(fl_frame_split(&f, &ctx, &body, &err), 0);
    CU_ASSERT_TRUE(fl_slice_eq(ctx, "abc", 3));
    CU_ASSERT_EQUAL(body.len, 0);
}

static void test_encode_appends(void)
{
    /* Frames append after existing bytes and parse back one after another. */
    fl_buf_t b = {0};
    uint32_t opt = 2;
    CU_ASSERT_EQUAL(fl_buf_puts(&b, "xy"), 0);
    CU_ASSERT_EQUAL(fl_frame_encode(&b, FL_FRAME_PROTO, FL_STREAM_MORE, &opt, 1, "ctbody", 6), 0);
    CU_ASSERT_EQUAL(fl_frame_pong(&b), 0);
    fl_frame_t f = {0};
    const char *err;
    const uint8_t *p = (uint8_t *)b.data + 2;
    ssize_t n = fl_frame_parse(p, b.len - 2, 64, &f, &err);
    CU_ASSERT_EQUAL(n, 16 + 6);
    CU_ASSERT_EQUAL(f.stream, FL_STREAM_MORE);
    fl_slice_t ctx = {0}, body = {0};
    CU_ASSERT_EQUAL(fl_frame_split(&f, &ctx, &body, &err), 0);
    CU_ASSERT_TRUE(fl_slice_eq(ctx, "ct", 2) && fl_slice_eq(body, "body", 4));
    CU_ASSERT_EQUAL(fl_frame_parse(p + n, b.len - 2 - (size_t)n, 64, &f, &err), 12);
    CU_ASSERT_EQUAL(f.stream, FL_STREAM_PONG);
    fl_buf_free(&b);
}

static const fl_test_t tests[] = {
    {"crc32 check values", test_crc32},
    {"2.9 pid request", test_pid_request},
    {"2.9 pid reply", test_pid_reply},
    {"pid reply invalid", test_pid_reply_invalid},
    {"2.9 stop", test_stop},
    {"2.9 error frame", test_error_frame},
    {"2.9 pong and stream stop", test_pong_and_stream_stop},
    {"3.6 restart request", test_restart_request},
    {"4 jobs task", test_jobs_task},
    {"7.2 jobs ack", test_jobs_ack},
    {"9.1 rpc frame, two options", test_rpc_two_options},
    {"crc mismatch", test_crc_mismatch},
    {"header length range", test_header_length_range},
    {"max options encode", test_max_options_encode},
    {"payload too big", test_too_big},
    {"could not open input file", test_could_not_open},
    {"split errors", test_split_errors},
    {"encode appends", test_encode_appends},
    {NULL, NULL},
};

FL_TEST_MAIN("frame", tests)
