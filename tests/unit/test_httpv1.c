/* Unit tests for protocols/httpv1.c and protocols/pb.c: the §6.3 request context (protobuf
 * and legacy JSON) and task frame, the §6.6 response frame and the §6.7 103 frame byte for
 * byte, plus header/cookie rules, JSON escaping and tolerant response decoding. */
#include "../../lib/buf.c"
#include "../../protocols/pb.c"
#include "../../protocols/httpv1.c"
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

static void t_expect_str(const fl_buf_t *b, const char *want)
{
    bool ok = b->len == strlen(want) && memcmp(b->data, want, b->len) == 0;
    CU_ASSERT_TRUE(ok);
    if (!ok)
        printf("\n  got:  %.*s\n  want: %s\n", (int)b->len, b->data, want);
}

#define T_S(lit) FL_SLICE(lit)
/* clang-format off */
#define T_H(n, v) {T_S(n), T_S(v)}
/* clang-format on */

static bool t_hdr_is(const fl_header_t *h, const char *name, const char *value)
{
    return fl_slice_eq(h->name, name, strlen(name)) && fl_slice_eq(h->value, value, strlen(value));
}

/* Map entry of http.v1 built independently with pb_put_* and nested buffers. */
static void t_put_entry(fl_buf_t *out, uint32_t field, const char *key, const char **vals,
                        size_t nvals)
{
    fl_buf_t hv = {0}, entry = {0};
    for (size_t i = 0; i < nvals; i++)
        CU_ASSERT_EQUAL(pb_put_bytes(&hv, 1, vals[i], strlen(vals[i])), 0);
    CU_ASSERT_EQUAL(pb_put_bytes(&entry, 1, key, strlen(key)), 0);
    CU_ASSERT_EQUAL(pb_put_bytes(&entry, 2, hv.data, hv.len), 0);
    CU_ASSERT_EQUAL(pb_put_bytes(out, field, entry.data, entry.len), 0);
    fl_buf_free(&hv);
    fl_buf_free(&entry);
}

/* ---- §6.3 request ---- */

#define T_CTX_HEX                                                                                  \
    "0a093132372e302e302e311208485454502f312e311a03474554221c687474703a2f2f6c6f63616c686f7374"     \
    "3a383038302f68693f613d312a0f0a0641636365707412050a032a2f2a3a03613d31"
#define T_TASK_HDR_HEX "14804e000000b27ea8e300004e000000"
#define T_CTX_JSON                                                                                 \
    "{\"remoteAddr\":\"127.0.0.1\",\"protocol\":\"HTTP/1.1\",\"method\":\"GET\",\"uri\":"          \
    "\"http://localhost:8080/hi?a=1\",\"headers\":{\"Accept\":[\"*/*\"]},\"cookies\":{},"          \
    "\"rawQuery\":\"a=1\",\"parsed\":false,\"uploads\":null,\"attributes\":{}}"

static const fl_header_t t_spec_headers[] = {T_H("Host", "localhost:8080"), T_H("accept", "*/*")};

static fl_http_req_t t_spec_req(void)
{
    return (fl_http_req_t){
        .remote_addr = T_S("127.0.0.1"),
        .protocol = T_S("HTTP/1.1"),
        .method = T_S("GET"),
        .uri = T_S("http://localhost:8080/hi?a=1"),
        .raw_query = T_S("a=1"),
        .headers = t_spec_headers,
        .nheaders = 2,
    };
}

static void test_request_proto_spec(void)
{
    fl_http_req_t r = t_spec_req();
    uint8_t want[128];
    size_t n = t_unhex(T_CTX_HEX, want, sizeof want);
    CU_ASSERT_EQUAL(n, 78);
    fl_buf_t b = {0};
    CU_ASSERT_EQUAL(fl_buf_puts(&b, "pre"), 0); /* appends, keeps what was there */
    CU_ASSERT_EQUAL(fl_httpv1_encode_proto(&b, &r), 0);
    CU_ASSERT_TRUE(b.len >= 3 && memcmp(b.data, "pre", 3) == 0);
    t_expect_bytes(b.data + 3, b.len - 3, want, n);
    fl_buf_free(&b);
}

static void test_request_task_frame_spec(void)
{
    fl_http_req_t r = t_spec_req();
    uint8_t want[128];
    size_t hn = t_unhex(T_TASK_HDR_HEX, want, sizeof want);
    size_t n = hn + t_unhex(T_CTX_HEX, want + hn, sizeof want - hn);
    fl_buf_t ctx = {0}, frame = {0};
    CU_ASSERT_EQUAL(fl_httpv1_encode_proto(&ctx, &r), 0);
    uint32_t opt = (uint32_t)ctx.len;
    CU_ASSERT_EQUAL(fl_frame_encode(&frame, FL_FRAME_PROTO, 0, &opt, 1, ctx.data, ctx.len), 0);
    t_expect_bytes(frame.data, frame.len, want, n);
    /* And back: flags, option, context and empty body. */
    fl_frame_t f = {0};
    const char *err;
    fl_slice_t c = {0}, body = {0};
    CU_ASSERT_EQUAL(fl_frame_parse(want, n, 1 << 20, &f, &err), (ssize_t)n);
    CU_ASSERT_EQUAL(f.flags, 0x80);
    CU_ASSERT_EQUAL(f.stream, 0);
    CU_ASSERT_EQUAL(f.nopts, 1);
    CU_ASSERT_EQUAL(f.opts[0], 0x4e);
    CU_ASSERT_EQUAL(fl_frame_split(&f, &c, &body, &err), 0);
    t_expect_bytes(c.base, c.len, ctx.data, ctx.len);
    CU_ASSERT_EQUAL(body.len, 0);
    fl_buf_free(&ctx);
    fl_buf_free(&frame);
}

static void test_request_proto_fields_read_back(void)
{
    /* The pb reader walks the spec context: fields 1,2,3,4,5,7 in order. */
    uint8_t ctx[128];
    size_t n = t_unhex(T_CTX_HEX, ctx, sizeof ctx);
    const uint8_t *p = ctx;
    pb_field_t f;
    static const uint32_t want[] = {1, 2, 3, 4, 5, 7};
    size_t i = 0;
    while (pb_next_field(&p, ctx + n, &f) > 0 && i < FL_ARRAY_SIZE(want)) {
        CU_ASSERT_EQUAL(f.field, want[i]);
        CU_ASSERT_EQUAL(f.wire, PB_LEN);
        i++;
    }
    CU_ASSERT_EQUAL(i, 6);
    CU_ASSERT_PTR_EQUAL(p, ctx + n);
    CU_ASSERT_TRUE(f.len == 3 && memcmp(f.data, "a=1", 3) == 0);
}

static void test_request_json_spec(void)
{
    fl_http_req_t r = t_spec_req();
    fl_buf_t b = {0};
    CU_ASSERT_EQUAL(fl_httpv1_encode_json(&b, &r), 0);
    t_expect_str(&b, T_CTX_JSON);
    fl_buf_free(&b);
}

static void test_request_empty(void)
{
    fl_http_req_t r = {0};
    fl_buf_t b = {0};
    CU_ASSERT_EQUAL(fl_httpv1_encode_proto(&b, &r), 0);
    CU_ASSERT_EQUAL(b.len, 0); /* proto3 omits every default */
    CU_ASSERT_EQUAL(fl_httpv1_encode_json(&b, &r), 0);
    t_expect_str(&b, "{\"remoteAddr\":\"\",\"protocol\":\"\",\"method\":\"\",\"uri\":\"\","
                     "\"headers\":{},\"cookies\":{},\"rawQuery\":\"\",\"parsed\":false,"
                     "\"uploads\":null,\"attributes\":{}}");
    fl_buf_free(&b);
}

/* ---- header names and grouping ---- */

static const fl_header_t t_mixed_headers[] = {
    T_H("content-type", "a"),
    T_H("x-forwarded-for", "1.1.1.1"),
    T_H("HOST", "example.com"),
    T_H("Content-TYPE", "b"),
    T_H("transfer-encoding", "chunked"),
    T_H("x weird", "v"), /* non-token name: left as is */
    T_H("wWW-aUTHENTICATE", "w"),
    T_H("x_under-score", "u"),
    T_H("X weird", "v2"),    /* differs in case from a non-token name: a separate entry */
    T_H("CONTENT-type", ""), /* an empty value is still a value */
};

static void test_headers_json(void)
{
    fl_http_req_t r = {.headers = t_mixed_headers, .nheaders = FL_ARRAY_SIZE(t_mixed_headers)};
    fl_buf_t b = {0};
    CU_ASSERT_EQUAL(fl_httpv1_encode_json(&b, &r), 0);
    t_expect_str(&b, "{\"remoteAddr\":\"\",\"protocol\":\"\",\"method\":\"\",\"uri\":\"\","
                     "\"headers\":{\"Content-Type\":[\"a\",\"b\",\"\"],"
                     "\"X-Forwarded-For\":[\"1.1.1.1\"],\"x weird\":[\"v\"],"
                     "\"Www-Authenticate\":[\"w\"],\"X_under-Score\":[\"u\"],"
                     "\"X weird\":[\"v2\"]},"
                     "\"cookies\":{},\"rawQuery\":\"\",\"parsed\":false,"
                     "\"uploads\":null,\"attributes\":{}}");
    fl_buf_free(&b);
}

static void test_headers_proto(void)
{
    fl_http_req_t r = {.headers = t_mixed_headers, .nheaders = FL_ARRAY_SIZE(t_mixed_headers)};
    fl_buf_t got = {0}, want = {0};
    CU_ASSERT_EQUAL(fl_httpv1_encode_proto(&got, &r), 0);
    t_put_entry(&want, 5, "Content-Type", (const char *[]){"a", "b", ""}, 3);
    t_put_entry(&want, 5, "X-Forwarded-For", (const char *[]){"1.1.1.1"}, 1);
    t_put_entry(&want, 5, "x weird", (const char *[]){"v"}, 1);
    t_put_entry(&want, 5, "Www-Authenticate", (const char *[]){"w"}, 1);
    t_put_entry(&want, 5, "X_under-Score", (const char *[]){"u"}, 1);
    t_put_entry(&want, 5, "X weird", (const char *[]){"v2"}, 1);
    t_expect_bytes(got.data, got.len, want.data, want.len);
    fl_buf_free(&got);
    fl_buf_free(&want);
}

/* ---- cookies ---- */

static const fl_header_t t_cookie_headers[] = {
    T_H("Cookie", "a=1; b=hello+world%21; bad=%zz; q=\"quoted\"; sp = x ;noeq; b@d=1; a=2"),
    T_H("Accept", "*/*"),
    T_H("cookie", "c=%41%42; a=%2; d=%ff; e=\"x\"y\""),
};

static void test_cookies_json(void)
{
    fl_http_req_t r = {.headers = t_cookie_headers, .nheaders = 3};
    fl_buf_t b = {0};
    CU_ASSERT_EQUAL(fl_httpv1_encode_json(&b, &r), 0);
    /* a: last valid value wins at its first position (a=%2 fails to unescape, dropped);
     * bad: invalid escape, dropped; b@d: invalid name; e: '"' inside is not a cookie byte;
     * sp: the name is trimmed but the value keeps its space, as in Go. */
    t_expect_str(&b, "{\"remoteAddr\":\"\",\"protocol\":\"\",\"method\":\"\",\"uri\":\"\","
                     "\"headers\":{\"Cookie\":[\"a=1; b=hello+world%21; bad=%zz; "
                     "q=\\\"quoted\\\"; sp = x ;noeq; b@d=1; a=2\",\"c=%41%42; a=%2; d=%ff; "
                     "e=\\\"x\\\"y\\\"\"],\"Accept\":[\"*/*\"]},"
                     "\"cookies\":{\"a\":\"2\",\"b\":\"hello world!\",\"q\":\"quoted\","
                     "\"sp\":\" x\",\"noeq\":\"\",\"c\":\"AB\",\"d\":\"\\ufffd\"},"
                     "\"rawQuery\":\"\",\"parsed\":false,\"uploads\":null,\"attributes\":{}}");
    fl_buf_free(&b);
}

static void test_cookies_proto(void)
{
    fl_http_req_t r = {.headers = t_cookie_headers, .nheaders = 3};
    fl_buf_t got = {0}, want = {0};
    CU_ASSERT_EQUAL(fl_httpv1_encode_proto(&got, &r), 0);
    t_put_entry(&want, 5, "Cookie",
                (const char *[]){t_cookie_headers[0].value.base, t_cookie_headers[2].value.base},
                2);
    t_put_entry(&want, 5, "Accept", (const char *[]){"*/*"}, 1);
    t_put_entry(&want, 6, "a", (const char *[]){"2"}, 1);
    t_put_entry(&want, 6, "b", (const char *[]){"hello world!"}, 1);
    t_put_entry(&want, 6, "q", (const char *[]){"quoted"}, 1);
    t_put_entry(&want, 6, "sp", (const char *[]){" x"}, 1);
    t_put_entry(&want, 6, "noeq", (const char *[]){""}, 1);
    t_put_entry(&want, 6, "c", (const char *[]){"AB"}, 1);
    t_put_entry(&want, 6, "d", (const char *[]){"\xff"}, 1); /* proto bytes carry it raw */
    t_expect_bytes(got.data, got.len, want.data, want.len);
    fl_buf_free(&got);
    fl_buf_free(&want);
}

/* ---- JSON escaping ---- */

static void test_json_escaping(void)
{
    static const fl_header_t h[] = {
        T_H("X-Esc", "q\"b\\t\x01\x1f\x7f/"),
        T_H("X-Utf8", "caf\xc3\xa9 \xf0\x9f\x98\x80 \xe2\x82\xac"),
        T_H("X-Bad", "\xff|\xe2\x82|\xc0\xaf|\xed\xa0\x80|\xf4\x90\x80\x80|\xc3"),
        T_H("a\"b", "n"),
    };
    fl_http_req_t r = {
        .uri = T_S("http://h/\t"),
        .raw_query = T_S("x=\"1\""),
        .headers = h,
        .nheaders = FL_ARRAY_SIZE(h),
    };
    fl_buf_t b = {0};
    CU_ASSERT_EQUAL(fl_httpv1_encode_json(&b, &r), 0);
    t_expect_str(
        &b, "{\"remoteAddr\":\"\",\"protocol\":\"\",\"method\":\"\",\"uri\":\"http://h/\\u0009\","
            "\"headers\":{\"X-Esc\":[\"q\\\"b\\\\t\\u0001\\u001f\x7f/\"],"
            "\"X-Utf8\":[\"caf\xc3\xa9 \xf0\x9f\x98\x80 \xe2\x82\xac\"],"
            "\"X-Bad\":[\"\\ufffd|\\ufffd\\ufffd|\\ufffd\\ufffd|\\ufffd\\ufffd\\ufffd|"
            "\\ufffd\\ufffd\\ufffd\\ufffd|\\ufffd\"],"
            "\"a\\\"b\":[\"n\"]},\"cookies\":{},\"rawQuery\":\"x=\\\"1\\\"\","
            "\"parsed\":false,\"uploads\":null,\"attributes\":{}}");
    /* Whatever we emit is valid JSON and round-trips. */
    cJSON *root = cJSON_ParseWithLength(b.data, b.len);
    CU_ASSERT_PTR_NOT_NULL(root);
    const cJSON *hs = cJSON_GetObjectItemCaseSensitive(root, "headers");
    const cJSON *esc = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(hs, "X-Esc"), 0);
    CU_ASSERT_TRUE(cJSON_IsString(esc) && strcmp(esc->valuestring, "q\"b\\t\x01\x1f\x7f/") == 0);
    cJSON_Delete(root);
    fl_buf_free(&b);
}

static void test_parsed_and_uploads(void)
{
    static const char up[] = "{\"avatar\":{\"name\":\"a.png\",\"mime\":\"image/png\",\"size\":1,"
                             "\"error\":0,\"tmpName\":\"/tmp/upload1\"}}";
    fl_http_req_t r = {.method = T_S("POST"), .parsed = true, .uploads = T_S(up)};
    fl_buf_t got = {0}, want = {0};
    CU_ASSERT_EQUAL(fl_httpv1_encode_json(&got, &r), 0);
    t_expect_str(&got, "{\"remoteAddr\":\"\",\"protocol\":\"\",\"method\":\"POST\",\"uri\":\"\","
                       "\"headers\":{},\"cookies\":{},\"rawQuery\":\"\",\"parsed\":true,"
                       "\"uploads\":"
                       "{\"avatar\":{\"name\":\"a.png\",\"mime\":\"image/png\","
                       "\"size\":1,\"error\":0,\"tmpName\":\"/tmp/upload1\"}}"
                       ",\"attributes\":{}}");
    got.len = 0;
    CU_ASSERT_EQUAL(fl_httpv1_encode_proto(&got, &r), 0);
    CU_ASSERT_EQUAL(pb_put_bytes(&want, 3, "POST", 4), 0);
    CU_ASSERT_EQUAL(pb_put_tag(&want, 8, PB_VARINT), 0);
    CU_ASSERT_EQUAL(pb_put_varint(&want, 1), 0);
    CU_ASSERT_EQUAL(pb_put_bytes(&want, 9, up, sizeof up - 1), 0);
    t_expect_bytes(got.data, got.len, want.data, want.len);
    fl_buf_free(&got);
    fl_buf_free(&want);
}

/* Middleware attributes: proto field 10 (one value per HeaderValue), a JSON object of strings. */
static void test_attributes(void)
{
    static const fl_header_t attrs[] = {T_H("ipAddress", "203.0.113.7"), T_H("k\"q", "v\n")};
    fl_http_req_t r = {.method = T_S("GET"), .attributes = attrs, .nattributes = 2};
    fl_buf_t got = {0}, want = {0};
    CU_ASSERT_EQUAL(fl_httpv1_encode_json(&got, &r), 0);
    t_expect_str(&got, "{\"remoteAddr\":\"\",\"protocol\":\"\",\"method\":\"GET\",\"uri\":\"\","
                       "\"headers\":{},\"cookies\":{},\"rawQuery\":\"\",\"parsed\":false,"
                       "\"uploads\":null,\"attributes\":{\"ipAddress\":\"203.0.113.7\","
                       "\"k\\\"q\":\"v\\u000a\"}}");
    got.len = 0;
    CU_ASSERT_EQUAL(fl_httpv1_encode_proto(&got, &r), 0);
    CU_ASSERT_EQUAL(pb_put_bytes(&want, 3, "GET", 3), 0);
    t_put_entry(&want, 10, "ipAddress", (const char *[]){"203.0.113.7"}, 1);
    t_put_entry(&want, 10, "k\"q", (const char *[]){"v\n"}, 1);
    t_expect_bytes(got.data, got.len, want.data, want.len);
    fl_buf_free(&got);
    fl_buf_free(&want);
}

/* More headers and cookies than the on-stack arrays hold, and multi-byte varint lengths. */
static void test_many_headers_and_cookies(void)
{
    enum { NH = 150 };
    fl_header_t h[NH + 1];
    char names[NH][16], cookie[40 * 12 + 1] = "", big[300];
    for (int i = 0; i < NH; i++) {
        snprintf(names[i], sizeof names[i], "x-h%d", i % 100); /* 50 repeats */
        h[i] = (fl_header_t){fl_slice_cstr(names[i]), FL_SLICE("v")};
    }
    for (int i = 0; i < 40; i++)
        snprintf(cookie + strlen(cookie), sizeof cookie - strlen(cookie), "k%02d=v%02d; ", i % 100, i % 100);
    h[NH] = (fl_header_t){FL_SLICE("Cookie"), fl_slice_cstr(cookie)};
    memset(big, 'u', sizeof big);
    fl_http_req_t r = {.uri = fl_slice(big, sizeof big), .headers = h, .nheaders = NH + 1};
    fl_buf_t b = {0};
    CU_ASSERT_EQUAL(fl_httpv1_encode_json(&b, &r), 0);
    cJSON *root = cJSON_ParseWithLength(b.data, b.len);
    CU_ASSERT_PTR_NOT_NULL(root);
    const cJSON *hs = cJSON_GetObjectItemCaseSensitive(root, "headers");
    CU_ASSERT_EQUAL(cJSON_GetArraySize(hs), 101);
    CU_ASSERT_EQUAL(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(hs, "X-H7")), 2);
    CU_ASSERT_EQUAL(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(root, "cookies")), 40);
    cJSON_Delete(root);
    /* Proto: count the map entries of each kind with the reader. */
    b.len = 0;
    CU_ASSERT_EQUAL(fl_httpv1_encode_proto(&b, &r), 0);
    const uint8_t *p = (uint8_t *)b.data;
    pb_field_t f;
    int counts[11] = {0};
    while (pb_next_field(&p, (uint8_t *)b.data + b.len, &f) > 0)
        counts[f.field < 11 ? f.field : 0]++;
    CU_ASSERT_PTR_EQUAL(p, (uint8_t *)b.data + b.len);
    CU_ASSERT_EQUAL(counts[4], 1);
    CU_ASSERT_EQUAL(counts[5], 101);
    CU_ASSERT_EQUAL(counts[6], 40);
    fl_buf_free(&b);
}

/* ---- responses ---- */

#define T_RESP_HEX                                                                                 \
    "1480260000005ea13a1d00002100000008c801121c0a0c436f6e74656e742d54797065120c0a0a746578742f"     \
    "706c61696e68656c6c6f"
#define T_103_HEX                                                                                  \
    "1480230000006c51e42a0100230000000867121f0a044c696e6b12170a153c2f612e6373733e3b2072656c3d"     \
    "7072656c6f6164"

/* Builds http.v1.Response{status, one header} with the pb writer, then the frame. */
static void t_response_frame(fl_buf_t *frame, int status, const char *name, const char *value,
                             const char *body, uint8_t stream)
{
    fl_buf_t ctx = {0};
    CU_ASSERT_EQUAL(pb_put_tag(&ctx, 1, PB_VARINT), 0);
    CU_ASSERT_EQUAL(pb_put_varint(&ctx, (uint64_t)status), 0);
    t_put_entry(&ctx, 2, name, &value, 1);
    CU_ASSERT_EQUAL(fl_buf_puts(&ctx, body), 0);
    uint32_t opt = (uint32_t)(ctx.len - strlen(body));
    CU_ASSERT_EQUAL(fl_frame_encode(frame, FL_FRAME_PROTO, stream, &opt, 1, ctx.data, ctx.len), 0);
    fl_buf_free(&ctx);
}

/* Parses a response frame and decodes its context. */
static void t_read_response(const uint8_t *buf, size_t n, fl_frame_t *f, fl_http_resp_t *resp,
                            fl_slice_t *body)
{
    const char *err = NULL;
    fl_slice_t ctx = {0};
    CU_ASSERT_EQUAL(fl_frame_parse(buf, n, 1 << 20, f, &err), (ssize_t)n);
    CU_ASSERT_EQUAL(fl_frame_split(f, &ctx, body, &err), 0);
    CU_ASSERT_EQUAL(fl_httpv1_decode_response(f->flags, ctx, resp, &err), 0);
}

static void test_response_spec(void)
{
    uint8_t want[128];
    size_t n = t_unhex(T_RESP_HEX, want, sizeof want);
    fl_buf_t frame = {0};
    t_response_frame(&frame, 200, "Content-Type", "text/plain", "hello", 0);
    t_expect_bytes(frame.data, frame.len, want, n);
    fl_frame_t f = {0};
    fl_http_resp_t resp;
    fl_slice_t body;
    t_read_response(want, n, &f, &resp, &body);
    CU_ASSERT_EQUAL(f.flags, 0x80);
    CU_ASSERT_EQUAL(f.stream, 0);
    CU_ASSERT_EQUAL(f.opts[0], 33);
    CU_ASSERT_EQUAL(resp.status, 200);
    CU_ASSERT_EQUAL(resp.nheaders, 1);
    CU_ASSERT_TRUE(resp.nheaders == 1 && t_hdr_is(&resp.headers[0], "Content-Type", "text/plain"));
    CU_ASSERT_TRUE(fl_slice_eq(body, "hello", 5));
    /* Proto slices point into the frame bytes: nothing copied. */
    CU_ASSERT_TRUE(resp.nheaders == 1 && resp.headers[0].value.base > (const char *)want &&
                   resp.headers[0].value.base < (const char *)want + n);
    CU_ASSERT_PTR_NULL(resp.owned);
    fl_http_resp_free(&resp);
    fl_buf_free(&frame);
}

static void test_response_103_spec(void)
{
    uint8_t want[128];
    size_t n = t_unhex(T_103_HEX, want, sizeof want);
    fl_buf_t frame = {0};
    t_response_frame(&frame, 103, "Link", "</a.css>; rel=preload", "", FL_STREAM_MORE);
    t_expect_bytes(frame.data, frame.len, want, n);
    fl_frame_t f = {0};
    fl_http_resp_t resp;
    fl_slice_t body;
    t_read_response(want, n, &f, &resp, &body);
    CU_ASSERT_EQUAL(f.stream, FL_STREAM_MORE);
    CU_ASSERT_EQUAL(f.opts[0], 0x23);
    CU_ASSERT_EQUAL(resp.status, 103);
    CU_ASSERT_TRUE(resp.nheaders == 1 &&
                   t_hdr_is(&resp.headers[0], "Link", "</a.css>; rel=preload"));
    CU_ASSERT_EQUAL(body.len, 0);
    fl_http_resp_free(&resp);
    fl_buf_free(&frame);
}

static int t_decode(uint8_t flags, const void *p, size_t n, fl_http_resp_t *r, const char **err)
{
    return fl_httpv1_decode_response(flags, fl_slice(p, n), r, err);
}

static void test_response_proto_any_order(void)
{
    /* Unknown fields of every wire type, headers before status, value before key inside an
     * entry, a value field split over two HeaderValue occurrences, status last. */
    fl_buf_t ctx = {0}, entry = {0}, hv = {0};
    pb_put_tag(&ctx, 15, PB_VARINT);
    pb_put_varint(&ctx, 300);
    pb_put_bytes(&hv, 1, "v1", 2);
    pb_put_tag(&hv, 7, PB_FIXED32);
    fl_buf_append(&hv, "abcd", 4);
    pb_put_bytes(&hv, 1, "v2", 2);
    pb_put_bytes(&entry, 2, hv.data, hv.len);
    pb_put_bytes(&entry, 1, "X-Lost", 6); /* a repeated key: the last one wins */
    pb_put_bytes(&entry, 1, "X-Multi", 7);
    pb_put_bytes(&entry, 2, "\x0a\x02v3", 4);
    pb_put_bytes(&ctx, 2, entry.data, entry.len);
    pb_put_tag(&ctx, 3, PB_FIXED64);
    fl_buf_append(&ctx, "12345678", 8);
    pb_put_bytes(&ctx, 99, "unknown", 7);
    t_put_entry(&ctx, 2, "Set-Cookie", (const char *[]){"a=1", "b=2"}, 2);
    pb_put_bytes(&ctx, 1, "x", 1); /* status with the wrong wire type: skipped as unknown */
    pb_put_tag(&ctx, 1, PB_VARINT);
    pb_put_varint(&ctx, 404);
    fl_http_resp_t r;
    const char *err = NULL;
    CU_ASSERT_EQUAL(t_decode(FL_FRAME_PROTO, ctx.data, ctx.len, &r, &err), 0);
    CU_ASSERT_EQUAL(r.status, 404);
    CU_ASSERT_EQUAL(r.nheaders, 5);
    if (r.nheaders == 5) {
        CU_ASSERT_TRUE(t_hdr_is(&r.headers[0], "X-Multi", "v1"));
        CU_ASSERT_TRUE(t_hdr_is(&r.headers[1], "X-Multi", "v2"));
        CU_ASSERT_TRUE(t_hdr_is(&r.headers[2], "X-Multi", "v3"));
        CU_ASSERT_TRUE(t_hdr_is(&r.headers[3], "Set-Cookie", "a=1"));
        CU_ASSERT_TRUE(t_hdr_is(&r.headers[4], "Set-Cookie", "b=2"));
    }
    fl_http_resp_free(&r);
    fl_buf_free(&ctx);
    fl_buf_free(&entry);
    fl_buf_free(&hv);
}

static void test_response_proto_status_edges(void)
{
    fl_http_resp_t r;
    const char *err;
    /* int64 -1 is a 10-byte varint. */
    CU_ASSERT_EQUAL(t_decode(0x80, "\x08\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01", 11, &r, &err),
                    0);
    CU_ASSERT_EQUAL(r.status, -1);
    CU_ASSERT_EQUAL(t_decode(0x80, "\x08\x80\x80\x80\x80\x80\x01", 7, &r, &err), 0);
    CU_ASSERT_EQUAL(r.status, INT_MAX);                          /* 2^35, clamped */
    CU_ASSERT_EQUAL(t_decode(0x80, "\x12\x00", 2, &r, &err), 0); /* empty entry: no values */
    CU_ASSERT_EQUAL(r.status, 0);
    CU_ASSERT_EQUAL(r.nheaders, 0);
    fl_http_resp_free(&r);
}

static void t_expect_proto_error(const void *p, size_t n)
{
    fl_http_resp_t r;
    const char *err = NULL;
    CU_ASSERT_EQUAL(t_decode(FL_FRAME_PROTO, p, n, &r, &err), -1);
    CU_ASSERT_PTR_EQUAL(err, fl_httpv1_err_proto);
    CU_ASSERT_PTR_NULL(r.headers);
    CU_ASSERT_EQUAL(r.nheaders, 0);
}

static void test_response_proto_malformed(void)
{
    t_expect_proto_error("\x08", 1);                     /* truncated varint */
    t_expect_proto_error("\x12\x05\x0a\x01", 4);         /* length past the end */
    t_expect_proto_error("\x00\x01", 2);                 /* field 0 */
    t_expect_proto_error("\x0b\x0c", 2);                 /* group */
    t_expect_proto_error("\x0e\x00", 2);                 /* wire type 6 */
    t_expect_proto_error("\x12\x02\x0a\x05", 4);         /* truncated key inside an entry */
    t_expect_proto_error("\x12\x04\x12\x02\x0a\x05", 6); /* truncated value inside HeaderValue */
    t_expect_proto_error("\x1d\x01\x02", 3);             /* truncated fixed32 */
    t_expect_proto_error("\x08\xff\xff\xff\xff\xff\xff\xff\xff\xff\x02", 11); /* > 64 bits */
    /* A valid entry before the error must not leak. */
    t_expect_proto_error("\x12\x07\x0a\x01k\x12\x02\x0a\x00\x08", 10);
}

static void test_response_json(void)
{
    /* PHP style: escaped slashes, \u escapes incl. a surrogate pair, a plain-string value. */
    static const char js[] = "{\"status\":201,\"headers\":{\"Content-Type\":\"text\\/html\","
                             "\"X-Name\":[\"caf\\u00e9\",\"\\ud83d\\ude00\"],\"Empty\":[],"
                             "\"Null\":null}}";
    fl_http_resp_t r;
    const char *err = NULL;
    for (int flags = 0; flags <= FL_FRAME_JSON; flags += FL_FRAME_JSON) {
        CU_ASSERT_EQUAL(t_decode((uint8_t)flags, js, sizeof js - 1, &r, &err), 0);
        CU_ASSERT_EQUAL(r.status, 201);
        CU_ASSERT_EQUAL(r.nheaders, 3);
        if (r.nheaders == 3) {
            CU_ASSERT_TRUE(t_hdr_is(&r.headers[0], "Content-Type", "text/html"));
            CU_ASSERT_TRUE(t_hdr_is(&r.headers[1], "X-Name", "caf\xc3\xa9"));
            CU_ASSERT_TRUE(t_hdr_is(&r.headers[2], "X-Name", "\xf0\x9f\x98\x80"));
            /* JSON slices point into owned, which outlives the cJSON tree. */
            CU_ASSERT_TRUE(r.headers[1].value.base >= r.owned &&
                           r.headers[1].value.base < r.owned + r.owned_len);
        }
        fl_http_resp_free(&r);
    }
}

static void test_response_json_variants(void)
{
    fl_http_resp_t r;
    const char *err = NULL;
    static const char *ok[] = {
        "{}",
        "{\"headers\":{}}",
        "{\"status\":200,\"headers\":[]}",
        " {\"status\":null,\"headers\":null} \n",
        "{\"Status\":204}",
    };
    static const int ok_status[] = {0, 0, 200, 0, 204};
    for (size_t i = 0; i < FL_ARRAY_SIZE(ok); i++) {
        CU_ASSERT_EQUAL(t_decode(FL_FRAME_JSON, ok[i], strlen(ok[i]), &r, &err), 0);
        CU_ASSERT_EQUAL(r.status, ok_status[i]);
        CU_ASSERT_EQUAL(r.nheaders, 0);
        fl_http_resp_free(&r);
    }
    CU_ASSERT_EQUAL(t_decode(FL_FRAME_JSON, "{\"headers\":{\"A\":[\"\"]}}", 22, &r, &err), 0);
    CU_ASSERT_TRUE(r.nheaders == 1 && t_hdr_is(&r.headers[0], "A", ""));
    fl_http_resp_free(&r);
}

static void test_response_json_malformed(void)
{
    static const char *bad[] = {
        "{\"status\":\"200\"}",
        "{\"status\":200.5}",
        "[1]",
        "{\"status\":200} x",
        "{\"status\":",
        "null",
        "{\"headers\":{\"A\":[1]}}",
        "{\"headers\":{\"A\":1}}",
        "{\"headers\":[\"x\"]}",
        "{\"headers\":\"x\"}",
        "{\"status\":1e300}",
        "{\"headers\":{\"A\":\"\\ud83d\"}}",
    };
    for (size_t i = 0; i < FL_ARRAY_SIZE(bad); i++) {
        fl_http_resp_t r;
        const char *err = NULL;
        CU_ASSERT_EQUAL(t_decode(0, bad[i], strlen(bad[i]), &r, &err), -1);
        CU_ASSERT_PTR_EQUAL(err, fl_httpv1_err_json);
        CU_ASSERT_PTR_NULL(r.headers);
        CU_ASSERT_PTR_NULL(r.owned);
    }
}

static void test_response_empty_ctx(void)
{
    fl_http_resp_t r;
    const char *err = NULL;
    CU_ASSERT_EQUAL(t_decode(FL_FRAME_PROTO, "", 0, &r, &err), 0);
    CU_ASSERT_EQUAL(r.status, 0);
    CU_ASSERT_EQUAL(r.nheaders, 0);
    CU_ASSERT_EQUAL(t_decode(0, NULL, 0, &r, &err), 0);
    CU_ASSERT_EQUAL(r.status, 0);
    fl_http_resp_free(&r);
}

/* ---- pb ---- */

static void test_pb_varint(void)
{
    static const uint64_t vals[] = {0, 1, 127, 128, 300, 16383, 16384, UINT32_MAX, UINT64_MAX};
    for (size_t i = 0; i < FL_ARRAY_SIZE(vals); i++) {
        fl_buf_t b = {0};
        CU_ASSERT_EQUAL(pb_put_varint(&b, vals[i]), 0);
        CU_ASSERT_EQUAL(b.len, pb_varint_size(vals[i]));
        uint64_t v = 42;
        const uint8_t *p = (uint8_t *)b.data, *end = p + b.len;
        CU_ASSERT_PTR_EQUAL(pb_read_varint(p, end, &v), end);
        CU_ASSERT_EQUAL(v, vals[i]);
        CU_ASSERT_PTR_NULL(pb_read_varint(p, end - 1, &v)); /* truncated */
        fl_buf_free(&b);
    }
    uint8_t eleven[11];
    memset(eleven, 0x80, sizeof eleven);
    uint64_t v;
    CU_ASSERT_PTR_NULL(pb_read_varint(eleven, eleven + 11, &v));
    CU_ASSERT_EQUAL(pb_varint_size(UINT64_MAX), 10);
    fl_buf_t b = {0};
    CU_ASSERT_EQUAL(pb_put_bytes(&b, 5, "", 0), 0);
    t_expect_bytes(b.data, b.len, "\x2a\x00", 2);
    CU_ASSERT_EQUAL(pb_put_tag(&b, 16, PB_LEN), 0); /* two-byte tag */
    t_expect_bytes(b.data + 2, b.len - 2, "\x82\x01", 2);
    fl_buf_free(&b);
}

/* Up to FL_HTTPV1_LOCAL_HEADERS values land in the inline array (no allocation), more in a
 * heap array; both give every value in order, and the token check used by the reactor. */
static void test_response_header_counts(void)
{
    static const size_t counts[] = {0, 1, FL_HTTPV1_LOCAL_HEADERS, FL_HTTPV1_LOCAL_HEADERS + 1, 40};
    for (size_t k = 0; k < FL_ARRAY_SIZE(counts); k++) {
        size_t n = counts[k];
        fl_buf_t ctx = {0};
        char names[40][32], vals[40][32];
        for (size_t i = 0; i < n; i++) {
            snprintf(names[i], sizeof names[i], "X-H%zu", i);
            snprintf(vals[i], sizeof vals[i], "v%zu", i);
            /* the last one as a two-value entry, value before key: the general path */
            if (i + 1 == n && n > 1) {
                fl_buf_t hv = {0}, entry = {0};
                pb_put_bytes(&hv, 1, vals[i], strlen(vals[i]));
                pb_put_bytes(&hv, 1, "w", 1);
                pb_put_bytes(&entry, 2, hv.data, hv.len);
                pb_put_bytes(&entry, 1, names[i], strlen(names[i]));
                pb_put_bytes(&ctx, 2, entry.data, entry.len);
                fl_buf_free(&hv);
                fl_buf_free(&entry);
            } else {
                t_put_entry(&ctx, 2, names[i], (const char *[]){vals[i]}, 1);
            }
        }
        pb_put_tag(&ctx, 1, PB_VARINT);
        pb_put_varint(&ctx, 201);
        fl_http_resp_t r;
        const char *err = NULL;
        CU_ASSERT_EQUAL(t_decode(FL_FRAME_PROTO, ctx.data, ctx.len, &r, &err), 0);
        CU_ASSERT_EQUAL(r.status, 201);
        size_t want = n > 1 ? n + 1 : n;
        CU_ASSERT_EQUAL(r.nheaders, want);
        CU_ASSERT_TRUE(want > FL_HTTPV1_LOCAL_HEADERS ? r.headers != r.local : r.nheaders == 0 || r.headers == r.local);
        for (size_t i = 0; i < n && r.nheaders == want; i++)
            CU_ASSERT_TRUE(t_hdr_is(&r.headers[i], names[i], vals[i]));
        if (n > 1 && r.nheaders == want)
            CU_ASSERT_TRUE(t_hdr_is(&r.headers[n], names[n - 1], "w"));
        fl_http_resp_free(&r);
        fl_buf_free(&ctx);
    }
    CU_ASSERT_TRUE(fl_http_is_token(FL_SLICE("Content-Type")));
    CU_ASSERT_TRUE(fl_http_is_token(FL_SLICE("x!#$%&'*+-.^_`|~9")));
    CU_ASSERT_FALSE(fl_http_is_token(FL_SLICE("")));
    CU_ASSERT_FALSE(fl_http_is_token(FL_SLICE("a b")));
    CU_ASSERT_FALSE(fl_http_is_token(FL_SLICE("a:b")));
    CU_ASSERT_FALSE(fl_http_is_token(FL_SLICE("caf\xc3\xa9")));
    CU_ASSERT_FALSE(fl_http_is_token(fl_slice("a\0b", 3)));
}

static const fl_test_t tests[] = {
    {"response header counts (inline and heap)", test_response_header_counts},
    {"6.3 request proto context", test_request_proto_spec},
    {"6.3 request task frame", test_request_task_frame_spec},
    {"6.3 request proto read back", test_request_proto_fields_read_back},
    {"6.3 request legacy json", test_request_json_spec},
    {"empty request", test_request_empty},
    {"header canonicalisation and grouping (json)", test_headers_json},
    {"header canonicalisation and grouping (proto)", test_headers_proto},
    {"cookies (json)", test_cookies_json},
    {"cookies (proto)", test_cookies_proto},
    {"json escaping", test_json_escaping},
    {"parsed and uploads", test_parsed_and_uploads},
    {"attributes", test_attributes},
    {"many headers and cookies", test_many_headers_and_cookies},
    {"6.6 response frame", test_response_spec},
    {"6.7 103 early hints frame", test_response_103_spec},
    {"response proto any order, unknown fields", test_response_proto_any_order},
    {"response proto status edges", test_response_proto_status_edges},
    {"response proto malformed", test_response_proto_malformed},
    {"response json (php style)", test_response_json},
    {"response json variants", test_response_json_variants},
    {"response json malformed", test_response_json_malformed},
    {"response empty context", test_response_empty_ctx},
    {"pb varint", test_pb_varint},
    {NULL, NULL},
};

FL_TEST_MAIN("httpv1", tests)
