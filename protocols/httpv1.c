/* http.v1 payload codec. See httpv1.h and spec §6.
 *
 * Request encoding is the hot path: one pass groups the headers and collects the cookies
 * (on the stack for ordinary requests), the protobuf encoder then computes the exact size,
 * reserves once and writes every byte in place. */
#include <assert.h>
#include <limits.h>
#include <stdlib.h>

#include <cjson/cJSON.h>

#include "httpv1.h"
#include "pb.h"

/* FL_FRAME_PROTO; repeated here so protocols/ does not depend on relay/. */
#define HTTPV1_FLAG_PROTO 0x80

const char fl_httpv1_err_proto[] = "malformed protobuf http.v1.Response";
const char fl_httpv1_err_json[] = "malformed JSON http response context";
const char fl_httpv1_err_nomem[] = "out of memory";

/* Request field numbers (http.v1.Request), spec §6.2. */
enum {
    HTTPV1_REQ_REMOTE_ADDR = 1,
    HTTPV1_REQ_PROTOCOL = 2,
    HTTPV1_REQ_METHOD = 3,
    HTTPV1_REQ_URI = 4,
    HTTPV1_REQ_HEADER = 5,
    HTTPV1_REQ_COOKIES = 6,
    HTTPV1_REQ_RAW_QUERY = 7,
    HTTPV1_REQ_PARSED = 8,
    HTTPV1_REQ_UPLOADS = 9,
    HTTPV1_REQ_ATTRIBUTES = 10,
};
/* Map entries and HeaderValue. */
enum { HTTPV1_MAP_KEY = 1, HTTPV1_MAP_VALUE = 2, HTTPV1_HV_VALUE = 1 };
/* http.v1.Response. */
enum { HTTPV1_RESP_STATUS = 1, HTTPV1_RESP_HEADERS = 2 };

/* ------------------------------------------------------------------------------------ */
/* Header names                                                                           */

static inline uint8_t httpv1_lower(uint8_t c)
{
    return c >= 'A' && c <= 'Z' ? c + 32 : c;
}

/* RFC 7230 tchar, the set Go's header canonicalisation accepts: digits, letters and
 * !#$%&'*+-.^_`|~, as a bitmap (a strchr per byte showed in the profile). */
static inline bool httpv1_is_tchar(uint8_t c)
{
    static const uint64_t tchar[2] = {0x03ff6cfa00000000ull, 0x57ffffffc7fffffeull};
    return c < 128 && ((tchar[c >> 6] >> (c & 63)) & 1);
}

static bool httpv1_is_token(fl_slice_t s)
{
    for (size_t i = 0; i < s.len; i++)
        if (!httpv1_is_tchar((uint8_t)s.base[i]))
            return false;
    return true;
}

bool fl_http_is_token(fl_slice_t s)
{
    return s.len > 0 && httpv1_is_token(s);
}

static bool httpv1_ci_eq(const char *a, const char *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (httpv1_lower((uint8_t)a[i]) != httpv1_lower((uint8_t)b[i]))
            return false;
    return true;
}

static inline bool httpv1_name_is(fl_slice_t name, const char *lower, size_t n)
{
    return name.len == n && httpv1_ci_eq(name.base, lower, n);
}

/* True when both names have the same Go canonical form. Canonicalisation depends only on
 * the lower-cased bytes, and only applies to all-token names (others stay verbatim). */
static bool httpv1_same_name(fl_slice_t a, fl_slice_t b)
{
    if (a.len != b.len || !httpv1_ci_eq(a.base, b.base, a.len))
        return false;
    return httpv1_is_token(a) || memcmp(a.base, b.base, a.len) == 0;
}

/* Go's CanonicalMIMEHeaderKey: first letter and letters after '-' upper-cased, the rest
 * lower-cased; a name holding a non-token byte is copied unchanged. */
static void httpv1_canon(uint8_t *dst, fl_slice_t name)
{
    const uint8_t *s = (const uint8_t *)name.base;
    if (!httpv1_is_token(name)) {
        if (name.len)
            memcpy(dst, s, name.len);
        return;
    }
    bool upper = true;
    for (size_t i = 0; i < name.len; i++) {
        uint8_t c = s[i];
        if (upper && c >= 'a' && c <= 'z')
            c -= 32;
        else if (!upper && c >= 'A' && c <= 'Z')
            c += 32;
        dst[i] = c;
        upper = c == '-';
    }
}

/* ------------------------------------------------------------------------------------ */
/* Cookie values: url.QueryUnescape                                                       */

static inline int httpv1_hexval(uint8_t c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = httpv1_lower(c);
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* Unescaped length, or -1 where Go fails: a '%' not followed by two hex digits. */
static long httpv1_unescaped_len(fl_slice_t s)
{
    const uint8_t *p = (const uint8_t *)s.base;
    size_t n = s.len;
    for (size_t i = 0; i < s.len; i++) {
        if (p[i] != '%')
            continue;
        if (i + 2 >= s.len || httpv1_hexval(p[i + 1]) < 0 || httpv1_hexval(p[i + 2]) < 0)
            return -1;
        n -= 2;
        i += 2;
    }
    return (long)n;
}

/* Writes the unescaped bytes (s already validated): "+" is a space, %XX a byte. */
static uint8_t *httpv1_w_unescaped(uint8_t *d, fl_slice_t s)
{
    const uint8_t *p = (const uint8_t *)s.base;
    for (size_t i = 0; i < s.len; i++) {
        if (p[i] == '%') {
            *d++ = (uint8_t)(httpv1_hexval(p[i + 1]) << 4 | httpv1_hexval(p[i + 2]));
            i += 2;
        } else {
            *d++ = p[i] == '+' ? ' ' : p[i];
        }
    }
    return d;
}

/* ------------------------------------------------------------------------------------ */
/* Request preparation: header groups and cookies                                         */

#define HTTPV1_NONE UINT32_MAX         /* end of a group chain */
#define HTTPV1_DROP (UINT32_MAX - 1)   /* Host, Transfer-Encoding */
#define HTTPV1_MEMBER (UINT32_MAX - 2) /* a later header of an earlier group */
#define HTTPV1_MAX_HEADERS (UINT32_MAX - 3)
enum { HTTPV1_STACK_HEADERS = 64, HTTPV1_STACK_COOKIES = 32 };

typedef struct {
    fl_slice_t name;
    fl_slice_t raw; /* value as sent, surrounding quotes removed, not yet unescaped */
    size_t len;     /* length once unescaped */
} httpv1_cookie_t;

typedef struct {
    const fl_http_req_t *r;
    /* Per header: next[i] chains a group's headers in arrival order; tail[i] is, for the
     * first header of a group (its "leader"), the group's last header, else a marker. */
    uint32_t *next, *tail, *heap_idx;
    httpv1_cookie_t *cookies, *heap_cookies;
    size_t ncookies, cookie_cap;
    uint32_t stack_idx[2 * HTTPV1_STACK_HEADERS];
    httpv1_cookie_t stack_cookies[HTTPV1_STACK_COOKIES];
} httpv1_prep_t;

static inline bool httpv1_is_leader(const httpv1_prep_t *pp, size_t i)
{
    return pp->tail[i] < HTTPV1_MEMBER;
}

static uint32_t httpv1_find_leader(const httpv1_prep_t *pp, size_t i)
{
    const fl_header_t *h = pp->r->headers;
    for (size_t j = 0; j < i; j++)
        if (httpv1_is_leader(pp, j) && httpv1_same_name(h[j].name, h[i].name))
            return (uint32_t)j;
    return HTTPV1_NONE;
}

/* O(n^2) over the header count, which beats hashing for the usual dozen headers. */
static void httpv1_group(httpv1_prep_t *pp)
{
    const fl_header_t *h = pp->r->headers;
    for (size_t i = 0; i < pp->r->nheaders; i++) {
        pp->next[i] = HTTPV1_NONE;
        /* Go's server removes both from r.Header; the host lives on in uri. */
        if (httpv1_name_is(h[i].name, "host", 4) ||
            httpv1_name_is(h[i].name, "transfer-encoding", 17)) {
            pp->tail[i] = HTTPV1_DROP;
            continue;
        }
        uint32_t lead = httpv1_find_leader(pp, i);
        if (lead == HTTPV1_NONE) {
            pp->tail[i] = (uint32_t)i;
            continue;
        }
        pp->next[pp->tail[lead]] = (uint32_t)i;
        pp->tail[lead] = (uint32_t)i;
        pp->tail[i] = HTTPV1_MEMBER;
    }
}

static int httpv1_cookie_grow(httpv1_prep_t *pp)
{
    size_t cap = pp->cookie_cap * 2;
    httpv1_cookie_t *c = realloc(pp->heap_cookies, cap * sizeof *c);
    if (!c)
        return -1;
    if (!pp->heap_cookies)
        memcpy(c, pp->stack_cookies, sizeof pp->stack_cookies);
    pp->heap_cookies = pp->cookies = c;
    pp->cookie_cap = cap;
    return 0;
}

/* Go keeps cookies in a map: a repeated name keeps its first position, last value wins. */
static int httpv1_cookie_add(httpv1_prep_t *pp, fl_slice_t name, fl_slice_t raw, size_t len)
{
    for (size_t i = 0; i < pp->ncookies; i++) {
        httpv1_cookie_t *c = &pp->cookies[i];
        if (c->name.len == name.len && memcmp(c->name.base, name.base, name.len) == 0) {
            c->raw = raw;
            c->len = len;
            return 0;
        }
    }
    if (pp->ncookies == pp->cookie_cap && httpv1_cookie_grow(pp) < 0)
        return -1;
    pp->cookies[pp->ncookies++] = (httpv1_cookie_t){name, raw, len};
    return 0;
}

/* textproto.TrimString: ASCII space, tab, CR, LF. */
static fl_slice_t httpv1_trim(const char *p, const char *end)
{
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n'))
        p++;
    while (end > p && (end[-1] == ' ' || end[-1] == '\t' || end[-1] == '\r' || end[-1] == '\n'))
        end--;
    return fl_slice(p, (size_t)(end - p));
}

/* Go's validCookieValueByte. */
static bool httpv1_cookie_value_ok(fl_slice_t v)
{
    for (size_t i = 0; i < v.len; i++) {
        uint8_t c = (uint8_t)v.base[i];
        if (c < 0x20 || c >= 0x7f || c == '"' || c == ';' || c == '\\')
            return false;
    }
    return true;
}

/* One "name=value" part of a Cookie line, following net/http readCookies and RR's
 * url.QueryUnescape; invalid parts are skipped, like Go does. */
static int httpv1_cookie_part(httpv1_prep_t *pp, fl_slice_t part)
{
    const char *end = part.base + part.len;
    const char *eq = memchr(part.base, '=', part.len);
    fl_slice_t name = httpv1_trim(part.base, eq ? eq : end);
    fl_slice_t val = eq ? fl_slice(eq + 1, (size_t)(end - eq - 1)) : fl_slice(end, 0);
    if (name.len == 0 || !httpv1_is_token(name))
        return 0;
    if (val.len > 1 && val.base[0] == '"' && val.base[val.len - 1] == '"')
        val = fl_slice(val.base + 1, val.len - 2);
    if (!httpv1_cookie_value_ok(val))
        return 0;
    long len = httpv1_unescaped_len(val);
    return len < 0 ? 0 : httpv1_cookie_add(pp, name, val, (size_t)len);
}

static int httpv1_cookie_line(httpv1_prep_t *pp, fl_slice_t line)
{
    if (!line.len)
        return 0;
    const char *p = line.base, *end = line.base + line.len;
    while (p < end) {
        const char *semi = memchr(p, ';', (size_t)(end - p));
        if (!semi)
            semi = end;
        fl_slice_t part = httpv1_trim(p, semi);
        p = semi < end ? semi + 1 : end;
        if (part.len && httpv1_cookie_part(pp, part) < 0)
            return -1;
    }
    return 0;
}

static int httpv1_collect_cookies(httpv1_prep_t *pp)
{
    const fl_header_t *h = pp->r->headers;
    for (size_t i = 0; i < pp->r->nheaders; i++) {
        if (!httpv1_is_leader(pp, i) || !httpv1_name_is(h[i].name, "cookie", 6))
            continue;
        for (uint32_t k = (uint32_t)i; k != HTTPV1_NONE; k = pp->next[k])
            if (httpv1_cookie_line(pp, h[k].value) < 0)
                return -1;
        break; /* grouping leaves exactly one Cookie leader */
    }
    return 0;
}

static void httpv1_prep_free(httpv1_prep_t *pp)
{
    if (pp->heap_idx) /* usually NULL: spare the allocator two calls per request */
        free(pp->heap_idx);
    if (pp->heap_cookies)
        free(pp->heap_cookies);
}

/* Fills pp; returns 0, or -1 on out-of-memory (nothing left to free). */
static int httpv1_prep(httpv1_prep_t *pp, const fl_http_req_t *r)
{
    size_t n = r->nheaders;
    pp->r = r;
    pp->heap_idx = NULL;
    pp->heap_cookies = NULL;
    pp->cookies = pp->stack_cookies;
    pp->ncookies = 0;
    pp->cookie_cap = HTTPV1_STACK_COOKIES;
    pp->next = pp->stack_idx;
    if (n > HTTPV1_STACK_HEADERS) {
        if (n > HTTPV1_MAX_HEADERS || !(pp->heap_idx = malloc(2 * n * sizeof(uint32_t))))
            return -1;
        pp->next = pp->heap_idx;
    }
    pp->tail = pp->next + n;
    httpv1_group(pp);
    if (httpv1_collect_cookies(pp) < 0) {
        httpv1_prep_free(pp);
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------------------------------ */
/* Protobuf request                                                                       */

/* Size of a header group's HeaderValue message (one bytes field per value). */
static size_t httpv1_hv_size(const httpv1_prep_t *pp, uint32_t lead)
{
    size_t n = 0;
    for (uint32_t k = lead; k != HTTPV1_NONE; k = pp->next[k])
        n += pb_bytes_size(HTTPV1_HV_VALUE, pp->r->headers[k].value.len);
    return n;
}

/* Map entry: key (field 1) and the HeaderValue (field 2); Go always writes both. */
static inline size_t httpv1_entry_size(size_t klen, size_t hv)
{
    return pb_bytes_size(HTTPV1_MAP_KEY, klen) + pb_bytes_size(HTTPV1_MAP_VALUE, hv);
}

static inline size_t httpv1_cookie_entry_size(const httpv1_cookie_t *c)
{
    return httpv1_entry_size(c->name.len, pb_bytes_size(HTTPV1_HV_VALUE, c->len));
}

/* proto3 omits empty strings. */
static inline size_t httpv1_str_size(uint32_t field, fl_slice_t s)
{
    return s.len ? pb_bytes_size(field, s.len) : 0;
}

/* An attribute is a map entry whose HeaderValue holds its one value (PHP takes the first). */
static inline size_t httpv1_attr_entry_size(const fl_header_t *a)
{
    return httpv1_entry_size(a->name.len, pb_bytes_size(HTTPV1_HV_VALUE, a->value.len));
}

static size_t httpv1_pb_size(const httpv1_prep_t *pp)
{
    const fl_http_req_t *r = pp->r;
    size_t n = httpv1_str_size(HTTPV1_REQ_REMOTE_ADDR, r->remote_addr) +
               httpv1_str_size(HTTPV1_REQ_PROTOCOL, r->protocol) +
               httpv1_str_size(HTTPV1_REQ_METHOD, r->method) +
               httpv1_str_size(HTTPV1_REQ_URI, r->uri);
    for (size_t i = 0; i < r->nheaders; i++) {
        if (!httpv1_is_leader(pp, i))
            continue;
        size_t entry = httpv1_entry_size(r->headers[i].name.len, httpv1_hv_size(pp, (uint32_t)i));
        n += pb_bytes_size(HTTPV1_REQ_HEADER, entry);
    }
    for (size_t i = 0; i < pp->ncookies; i++)
        n += pb_bytes_size(HTTPV1_REQ_COOKIES, httpv1_cookie_entry_size(&pp->cookies[i]));
    n += httpv1_str_size(HTTPV1_REQ_RAW_QUERY, r->raw_query);
    n += r->parsed ? 2 : 0; /* tag 0x40, varint 1 */
    n += httpv1_str_size(HTTPV1_REQ_UPLOADS, r->uploads);
    for (size_t i = 0; i < r->nattributes; i++)
        n += pb_bytes_size(HTTPV1_REQ_ATTRIBUTES, httpv1_attr_entry_size(&r->attributes[i]));
    return n;
}

static inline uint8_t *httpv1_w_str(uint8_t *p, uint32_t field, fl_slice_t s)
{
    return s.len ? pb_w_bytes(p, field, s.base, s.len) : p;
}

static uint8_t *httpv1_w_header(uint8_t *p, const httpv1_prep_t *pp, uint32_t lead)
{
    fl_slice_t name = pp->r->headers[lead].name;
    size_t hv = httpv1_hv_size(pp, lead);
    p = pb_w_len(p, HTTPV1_REQ_HEADER, httpv1_entry_size(name.len, hv));
    p = pb_w_len(p, HTTPV1_MAP_KEY, name.len);
    httpv1_canon(p, name);
    p = pb_w_len(p + name.len, HTTPV1_MAP_VALUE, hv);
    for (uint32_t k = lead; k != HTTPV1_NONE; k = pp->next[k]) {
        fl_slice_t v = pp->r->headers[k].value;
        p = pb_w_bytes(p, HTTPV1_HV_VALUE, v.base, v.len);
    }
    return p;
}

static uint8_t *httpv1_w_cookie(uint8_t *p, const httpv1_cookie_t *c)
{
    p = pb_w_len(p, HTTPV1_REQ_COOKIES, httpv1_cookie_entry_size(c));
    p = pb_w_bytes(p, HTTPV1_MAP_KEY, c->name.base, c->name.len);
    p = pb_w_len(p, HTTPV1_MAP_VALUE, pb_bytes_size(HTTPV1_HV_VALUE, c->len));
    p = pb_w_len(p, HTTPV1_HV_VALUE, c->len);
    return httpv1_w_unescaped(p, c->raw);
}

static uint8_t *httpv1_pb_write(uint8_t *p, const httpv1_prep_t *pp)
{
    const fl_http_req_t *r = pp->r;
    p = httpv1_w_str(p, HTTPV1_REQ_REMOTE_ADDR, r->remote_addr);
    p = httpv1_w_str(p, HTTPV1_REQ_PROTOCOL, r->protocol);
    p = httpv1_w_str(p, HTTPV1_REQ_METHOD, r->method);
    p = httpv1_w_str(p, HTTPV1_REQ_URI, r->uri);
    for (size_t i = 0; i < r->nheaders; i++)
        if (httpv1_is_leader(pp, i))
            p = httpv1_w_header(p, pp, (uint32_t)i);
    for (size_t i = 0; i < pp->ncookies; i++)
        p = httpv1_w_cookie(p, &pp->cookies[i]);
    p = httpv1_w_str(p, HTTPV1_REQ_RAW_QUERY, r->raw_query);
    if (r->parsed)
        p = pb_w_varint(pb_w_tag(p, HTTPV1_REQ_PARSED, PB_VARINT), 1);
    p = httpv1_w_str(p, HTTPV1_REQ_UPLOADS, r->uploads);
    for (size_t i = 0; i < r->nattributes; i++) {
        const fl_header_t *a = &r->attributes[i];
        p = pb_w_len(p, HTTPV1_REQ_ATTRIBUTES, httpv1_attr_entry_size(a));
        p = pb_w_bytes(p, HTTPV1_MAP_KEY, a->name.base, a->name.len);
        p = pb_w_len(p, HTTPV1_MAP_VALUE, pb_bytes_size(HTTPV1_HV_VALUE, a->value.len));
        p = pb_w_bytes(p, HTTPV1_HV_VALUE, a->value.base, a->value.len);
    }
    return p;
}

int fl_httpv1_encode_proto(fl_buf_t *out, const fl_http_req_t *r)
{
    httpv1_prep_t pp;
    if (httpv1_prep(&pp, r) < 0)
        return -1;
    size_t size = httpv1_pb_size(&pp);
    int rc = 0;
    if (size && fl_buf_reserve(out, size) < 0) {
        rc = -1;
    } else if (size) {
        uint8_t *start = (uint8_t *)out->data + out->len;
        uint8_t *end = httpv1_pb_write(start, &pp);
        assert((size_t)(end - start) == size);
        (void)end;
        out->len += size;
    }
    httpv1_prep_free(&pp);
    return rc;
}

/* ------------------------------------------------------------------------------------ */
/* JSON request (legacy context, §6.3)                                                    */

static const char httpv1_hexdigits[] = "0123456789abcdef";

/* Length of a valid UTF-8 sequence at s (2..4), or 0. Rejects overlongs, surrogates and
 * code points above U+10FFFF, like Go's utf8.DecodeRune. */
size_t fl_utf8_len(const uint8_t *s, size_t n)
{
    uint8_t c = s[0], lo = 0x80, hi = 0xbf;
    size_t k = c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : 2;
    if (c < 0xc2 || c > 0xf4 || n < k)
        return 0;
    /* The second byte's range is what excludes overlongs (E0, F0), UTF-16 surrogates (ED)
     * and code points past U+10FFFF (F4). */
    if (c == 0xe0)
        lo = 0xa0;
    else if (c == 0xed)
        hi = 0x9f;
    else if (c == 0xf0)
        lo = 0x90;
    else if (c == 0xf4)
        hi = 0x8f;
    if (s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i < k; i++)
        if ((s[i] & 0xc0) != 0x80)
            return 0;
    return k;
}

/* Escapes one byte that needs it (control, quote, backslash) at d. */
static uint8_t *httpv1_json_esc_byte(uint8_t *d, uint8_t c)
{
    if (c == '"' || c == '\\') {
        *d++ = '\\';
        *d++ = c;
        return d;
    }
    memcpy(d, "\\u00", 4);
    d[4] = (uint8_t)httpv1_hexdigits[c >> 4];
    d[5] = (uint8_t)httpv1_hexdigits[c & 15];
    return d + 6;
}

/* JSON string body of s (no quotes). Worst case 6 output bytes per input byte. Invalid
 * UTF-8 becomes U+FFFD one byte at a time, as Go's encoding/json does. */
static uint8_t *httpv1_json_escape(uint8_t *d, const uint8_t *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        uint8_t c = s[i];
        if (c >= 0x20 && c < 0x80 && c != '"' && c != '\\') {
            *d++ = c;
            i++;
        } else if (c < 0x80) {
            d = httpv1_json_esc_byte(d, c);
            i++;
        } else {
            size_t k = fl_utf8_len(s + i, n - i);
            if (k)
                memcpy(d, s + i, k);
            else
                memcpy(d, "\\ufffd", 6);
            d += k ? k : 6;
            i += k ? k : 1;
        }
    }
    return d;
}

/* A JSON writer with a sticky error, so the top level reads as a flat sequence. */
typedef struct {
    fl_buf_t *b;
    bool err;
} httpv1_jw_t;

static void httpv1_jw_raw(httpv1_jw_t *w, const void *p, size_t n)
{
    if (!w->err && fl_buf_append(w->b, p, n) < 0)
        w->err = true;
}

#define HTTPV1_JW_LIT(w, lit) httpv1_jw_raw((w), (lit), sizeof(lit) - 1)

/* Room for n more bytes at the end of the buffer, or NULL (and the error set). */
static uint8_t *httpv1_jw_room(httpv1_jw_t *w, size_t n)
{
    if (w->err)
        return NULL;
    if (n > SIZE_MAX / 8 || fl_buf_reserve(w->b, n) < 0) {
        w->err = true;
        return NULL;
    }
    return (uint8_t *)w->b->data + w->b->len;
}

static inline void httpv1_jw_commit(httpv1_jw_t *w, uint8_t *end)
{
    w->b->len = (size_t)((char *)end - w->b->data);
}

static void httpv1_jw_str(httpv1_jw_t *w, fl_slice_t s)
{
    uint8_t *p = httpv1_jw_room(w, 6 * s.len + 2);
    if (!p)
        return;
    *p++ = '"';
    p = httpv1_json_escape(p, (const uint8_t *)s.base, s.len);
    *p++ = '"';
    httpv1_jw_commit(w, p);
}

int fl_httpv1_json_str(fl_buf_t *out, fl_slice_t s)
{
    httpv1_jw_t w = {out, false};
    httpv1_jw_str(&w, s);
    return w.err ? -1 : 0;
}

/* Canonical token names need no escaping: tchar excludes quotes, controls and non-ASCII. */
static void httpv1_jw_name(httpv1_jw_t *w, fl_slice_t name)
{
    if (!httpv1_is_token(name)) {
        httpv1_jw_str(w, name);
        return;
    }
    uint8_t *p = httpv1_jw_room(w, name.len + 2);
    if (!p)
        return;
    *p++ = '"';
    httpv1_canon(p, name);
    p += name.len;
    *p++ = '"';
    httpv1_jw_commit(w, p);
}

/* The unescaped value may hold any byte, so it is escaped too. It is unescaped into
 * scratch room just past the worst-case escaped output, then escaped into place: no
 * temporary allocation, and the two regions never overlap. */
static void httpv1_jw_cookie_value(httpv1_jw_t *w, const httpv1_cookie_t *c)
{
    uint8_t *p = httpv1_jw_room(w, 7 * c->len + 2);
    if (!p)
        return;
    uint8_t *scratch = p + 6 * c->len + 2;
    httpv1_w_unescaped(scratch, c->raw);
    *p++ = '"';
    p = httpv1_json_escape(p, scratch, c->len);
    *p++ = '"';
    httpv1_jw_commit(w, p);
}

/* "Name":["v1","v2"],... */
static void httpv1_jw_headers(httpv1_jw_t *w, const httpv1_prep_t *pp)
{
    const fl_header_t *h = pp->r->headers;
    bool first = true;
    for (size_t i = 0; i < pp->r->nheaders; i++) {
        if (!httpv1_is_leader(pp, i))
            continue;
        if (!first)
            HTTPV1_JW_LIT(w, ",");
        first = false;
        httpv1_jw_name(w, h[i].name);
        HTTPV1_JW_LIT(w, ":[");
        for (uint32_t k = (uint32_t)i; k != HTTPV1_NONE; k = pp->next[k]) {
            if (k != i)
                HTTPV1_JW_LIT(w, ",");
            httpv1_jw_str(w, h[k].value);
        }
        HTTPV1_JW_LIT(w, "]");
    }
}

/* "name":"value",... */
static void httpv1_jw_cookies(httpv1_jw_t *w, const httpv1_prep_t *pp)
{
    for (size_t i = 0; i < pp->ncookies; i++) {
        if (i)
            HTTPV1_JW_LIT(w, ",");
        httpv1_jw_str(w, pp->cookies[i].name);
        HTTPV1_JW_LIT(w, ":");
        httpv1_jw_cookie_value(w, &pp->cookies[i]);
    }
}

/* Key order of RR v4.5; PHP reads remoteAddr..parsed without defaults, so all are present. */
static void httpv1_jw_request(httpv1_jw_t *w, const httpv1_prep_t *pp)
{
    const fl_http_req_t *r = pp->r;
    HTTPV1_JW_LIT(w, "{\"remoteAddr\":");
    httpv1_jw_str(w, r->remote_addr);
    HTTPV1_JW_LIT(w, ",\"protocol\":");
    httpv1_jw_str(w, r->protocol);
    HTTPV1_JW_LIT(w, ",\"method\":");
    httpv1_jw_str(w, r->method);
    HTTPV1_JW_LIT(w, ",\"uri\":");
    httpv1_jw_str(w, r->uri);
    HTTPV1_JW_LIT(w, ",\"headers\":{");
    httpv1_jw_headers(w, pp);
    HTTPV1_JW_LIT(w, "},\"cookies\":{");
    httpv1_jw_cookies(w, pp);
    HTTPV1_JW_LIT(w, "},\"rawQuery\":");
    httpv1_jw_str(w, r->raw_query);
    if (r->parsed)
        HTTPV1_JW_LIT(w, ",\"parsed\":true,\"uploads\":");
    else
        HTTPV1_JW_LIT(w, ",\"parsed\":false,\"uploads\":");
    if (r->uploads.len) /* already JSON, built by our own upload code */
        httpv1_jw_raw(w, r->uploads.base, r->uploads.len);
    else
        HTTPV1_JW_LIT(w, "null");
    HTTPV1_JW_LIT(w, ",\"attributes\":{");
    for (size_t i = 0; i < r->nattributes; i++) {
        if (i)
            HTTPV1_JW_LIT(w, ",");
        httpv1_jw_str(w, r->attributes[i].name);
        HTTPV1_JW_LIT(w, ":");
        httpv1_jw_str(w, r->attributes[i].value);
    }
    HTTPV1_JW_LIT(w, "}}");
}

int fl_httpv1_encode_json(fl_buf_t *out, const fl_http_req_t *r)
{
    httpv1_prep_t pp;
    if (httpv1_prep(&pp, r) < 0)
        return -1;
    size_t start = out->len;
    httpv1_jw_t w = {out, false};
    httpv1_jw_request(&w, &pp);
    httpv1_prep_free(&pp);
    if (w.err) {
        out->len = start;
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------------------------------ */
/* Response decoding                                                                      */

/* Headers are decoded by one pass that counts, validates and fills out->local as far as it
 * goes (out->headers == out->local). When they did not fit, a second pass over the same code
 * fills a heap array of the counted size, and cannot fail. JSON counts with out->headers NULL. */
static inline void httpv1_emit(fl_http_resp_t *out, size_t *n, fl_slice_t name, fl_slice_t v)
{
    if (out->headers && (out->headers != out->local || *n < FL_HTTPV1_LOCAL_HEADERS))
        out->headers[*n] = (fl_header_t){name, v};
    (*n)++;
}

static inline fl_slice_t httpv1_pb_slice(const pb_field_t *f)
{
    return fl_slice((const char *)f->data, f->len);
}

/* Every value (field 1) of one HeaderValue message. */
static int httpv1_pb_values(const pb_field_t *hv, fl_slice_t key, fl_http_resp_t *out, size_t *n)
{
    const uint8_t *p = hv->data;
    pb_field_t f;
    int rc;
    while ((rc = pb_next_field(&p, hv->data + hv->len, &f)) > 0)
        if (f.field == HTTPV1_HV_VALUE && f.wire == PB_LEN)
            httpv1_emit(out, n, key, httpv1_pb_slice(&f));
    return rc;
}

/* One map entry. The key may come after the value, so find it first (last one wins, as
 * in protobuf); repeated value fields merge, so each contributes its values. The usual
 * entry is exactly one key then one value: that one is decoded in a single pass. */
static int httpv1_pb_entry(const pb_field_t *entry, fl_http_resp_t *out, size_t *n)
{
    const uint8_t *end = entry->data + entry->len, *p = entry->data;
    fl_slice_t key = fl_slice((const char *)entry->data, 0);
    pb_field_t f, v;
    int rc;
    if (pb_next_field(&p, end, &f) > 0 && f.field == HTTPV1_MAP_KEY && f.wire == PB_LEN &&
        pb_next_field(&p, end, &v) > 0 && v.field == HTTPV1_MAP_VALUE && v.wire == PB_LEN &&
        p == end)
        return httpv1_pb_values(&v, httpv1_pb_slice(&f), out, n) < 0 ? -1 : 0;
    p = entry->data;
    while ((rc = pb_next_field(&p, end, &f)) > 0)
        if (f.field == HTTPV1_MAP_KEY && f.wire == PB_LEN)
            key = httpv1_pb_slice(&f);
    if (rc < 0)
        return -1;
    p = entry->data;
    while (pb_next_field(&p, end, &f) > 0) {
        if (f.field != HTTPV1_MAP_VALUE || f.wire != PB_LEN)
            continue;
        if (httpv1_pb_values(&f, key, out, n) < 0)
            return -1;
    }
    return 0;
}

/* int64 on the wire; clamped so the caller's 100..599 check still rejects it. */
static int httpv1_clamp_status(uint64_t v)
{
    int64_t s = (int64_t)v;
    return s > INT_MAX ? INT_MAX : s < INT_MIN ? INT_MIN : (int)s;
}

/* Unknown fields, and known ones with an unexpected wire type, are skipped (protobuf-go
 * treats the latter as unknown too). */
static int httpv1_pb_walk(fl_slice_t ctx, fl_http_resp_t *out, size_t *n)
{
    const uint8_t *p = (const uint8_t *)ctx.base, *end = p + ctx.len;
    pb_field_t f;
    int rc;
    while ((rc = pb_next_field(&p, end, &f)) > 0) {
        if (f.field == HTTPV1_RESP_STATUS && f.wire == PB_VARINT)
            out->status = httpv1_clamp_status(f.value);
        else if (f.field == HTTPV1_RESP_HEADERS && f.wire == PB_LEN &&
                 httpv1_pb_entry(&f, out, n) < 0)
            return -1;
    }
    return rc;
}

static int httpv1_decode_pb(fl_slice_t ctx, fl_http_resp_t *out, const char **err)
{
    size_t n = 0;
    out->headers = out->local;
    if (httpv1_pb_walk(ctx, out, &n) < 0) {
        *err = fl_httpv1_err_proto;
        return -1;
    }
    if (n <= FL_HTTPV1_LOCAL_HEADERS) {
        out->nheaders = n;
        return 0;
    }
    if (!(out->headers = malloc(n * sizeof *out->headers))) {
        *err = fl_httpv1_err_nomem;
        return -1;
    }
    out->nheaders = 0;
    httpv1_pb_walk(ctx, out, &out->nheaders);
    return 0;
}

/* JSON: counting pass sums string bytes too; the filling pass copies into out->owned. */
typedef struct {
    fl_http_resp_t *out;
    size_t n, bytes;
} httpv1_jacc_t;

static fl_slice_t httpv1_jcopy(httpv1_jacc_t *a, const char *s)
{
    size_t len = strlen(s);
    char *dst = a->out->owned ? a->out->owned + a->bytes : NULL;
    if (dst && len)
        memcpy(dst, s, len);
    a->bytes += len;
    return fl_slice(dst ? dst : s, len);
}

/* One "Name": ["v1", ...] | "v" | null member. */
static int httpv1_json_header(httpv1_jacc_t *a, const cJSON *item)
{
    fl_slice_t name = httpv1_jcopy(a, item->string ? item->string : "");
    if (cJSON_IsString(item)) {
        httpv1_emit(a->out, &a->n, name, httpv1_jcopy(a, item->valuestring));
        return 0;
    }
    if (cJSON_IsNull(item))
        return 0;
    if (!cJSON_IsArray(item))
        return -1;
    const cJSON *v;
    cJSON_ArrayForEach(v, item)
    {
        if (!cJSON_IsString(v))
            return -1;
        httpv1_emit(a->out, &a->n, name, httpv1_jcopy(a, v->valuestring));
    }
    return 0;
}

static int httpv1_json_headers(httpv1_jacc_t *a, const cJSON *hdrs)
{
    /* PHP's json_encode turns an empty array into [] rather than {}. */
    if (!hdrs || cJSON_IsNull(hdrs) || (cJSON_IsArray(hdrs) && !hdrs->child))
        return 0;
    if (!cJSON_IsObject(hdrs))
        return -1;
    const cJSON *item;
    cJSON_ArrayForEach(item, hdrs)
    {
        if (httpv1_json_header(a, item) < 0)
            return -1;
    }
    return 0;
}

/* Go decodes into an int: integral numbers only; null or absent means none. */
static int httpv1_json_status(const cJSON *st, int *status)
{
    if (!st || cJSON_IsNull(st))
        return 0;
    if (!cJSON_IsNumber(st) || st->valuedouble < INT_MIN || st->valuedouble > INT_MAX ||
        (double)(int)st->valuedouble != st->valuedouble)
        return -1;
    *status = (int)st->valuedouble;
    return 0;
}

/* Parses ctx as one JSON object with nothing but whitespace after it. */
static cJSON *httpv1_json_parse(fl_slice_t ctx)
{
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(ctx.base, ctx.len, &end, 0);
    if (!root)
        return NULL;
    const char *stop = ctx.base + ctx.len;
    while (end < stop && (*end == ' ' || *end == '\t' || *end == '\r' || *end == '\n'))
        end++;
    if (end != stop || !cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return NULL;
    }
    return root;
}

static int httpv1_json_fill(const cJSON *hdrs, fl_http_resp_t *out, httpv1_jacc_t *a)
{
    out->headers = a->n <= FL_HTTPV1_LOCAL_HEADERS ? out->local : malloc(a->n * sizeof *out->headers);
    out->owned = malloc(a->bytes ? a->bytes : 1);
    if (!out->headers || !out->owned)
        return -1;
    out->owned_len = a->bytes;
    httpv1_jacc_t fill = {out, 0, 0};
    httpv1_json_headers(&fill, hdrs);
    out->nheaders = fill.n;
    return 0;
}

static int httpv1_decode_json(fl_slice_t ctx, fl_http_resp_t *out, const char **err)
{
    cJSON *root = httpv1_json_parse(ctx);
    *err = fl_httpv1_err_json;
    if (!root)
        return -1;
    /* Go's decoder matches keys case-insensitively, and so does cJSON_GetObjectItem. */
    const cJSON *hdrs = cJSON_GetObjectItem(root, "headers");
    httpv1_jacc_t count = {out, 0, 0};
    int rc = -1;
    if (httpv1_json_status(cJSON_GetObjectItem(root, "status"), &out->status) == 0 &&
        httpv1_json_headers(&count, hdrs) == 0) {
        rc = 0;
        if (count.n && httpv1_json_fill(hdrs, out, &count) < 0) {
            *err = fl_httpv1_err_nomem;
            rc = -1;
        }
    }
    cJSON_Delete(root);
    return rc;
}

int fl_httpv1_decode_response(uint8_t frame_flags, fl_slice_t ctx, fl_http_resp_t *out,
                              const char **err)
{
    out->status = 0; /* not a memset: local[] needs none */
    out->headers = NULL;
    out->nheaders = out->owned_len = 0;
    out->owned = NULL;
    if (ctx.len == 0) /* old libraries send empty contexts on later stream frames */
        return 0;
    int rc = (frame_flags & HTTPV1_FLAG_PROTO) ? httpv1_decode_pb(ctx, out, err)
                                               : httpv1_decode_json(ctx, out, err);
    if (rc < 0) {
        fl_http_resp_free(out);
        out->status = 0;
    }
    return rc;
}

void fl_http_resp_free(fl_http_resp_t *r)
{
    if (r->headers != r->local)
        free(r->headers);
    if (r->owned)
        free(r->owned);
    r->headers = NULL;
    r->owned = NULL;
    r->nheaders = r->owned_len = 0;
}
