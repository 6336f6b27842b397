/* Goridge RPC codec. See rpc.h and spec §9.1. */
#include <stdio.h>
#include <stdlib.h>

#include <cjson/cJSON.h>

#include "rpc.h"

const char fl_rpc_err_opts[] = "should be 2 options. SEQ_ID and METHOD_LEN";
const char fl_rpc_err_method_len[] = "method name length exceeds the payload";
const char fl_rpc_err_no_decoder[] = "goridge_read_request_body: unknown decoder used in frame";
const char fl_rpc_err_not_proto[] = "goridge_read_request_body: message type is not a proto";
const char fl_rpc_err_codec[] = "goridge_read_request_body: codec not supported by forkline "
                                "(use JSON, proto or raw)";
const char fl_rpc_err_raw_reply[] = "unknown Raw payload type";

uint8_t fl_rpc_pick_codec(uint8_t flags)
{
    static const uint8_t order[] = {FL_RPC_PROTO, FL_RPC_JSON, FL_RPC_RAW, FL_RPC_MSGPACK,
                                    FL_RPC_GOB};
    for (size_t i = 0; i < FL_ARRAY_SIZE(order); i++)
        if (flags & order[i])
            return order[i];
    return FL_RPC_GOB;
}

int fl_rpc_parse_request(const fl_frame_t *f, fl_rpc_req_t *r, const char **err)
{
    if (f->nopts != 2) {
        *err = fl_rpc_err_opts;
        return -1;
    }
    /* Go slices payload[:M] and would panic past the end: a malformed frame. */
    if (f->opts[1] > f->len) {
        *err = fl_rpc_err_method_len;
        return -1;
    }
    const char *p = (const char *)f->payload;
    r->seq = f->opts[0];
    r->codec = fl_rpc_pick_codec(f->flags);
    r->codec_given =
        (f->flags & (FL_RPC_PROTO | FL_RPC_JSON | FL_RPC_RAW | FL_RPC_MSGPACK | FL_RPC_GOB)) != 0;
    r->method = fl_slice(p, f->opts[1]);
    r->arg = fl_slice(p + f->opts[1], f->len - f->opts[1]);
    return 0;
}

/* Header, then method, then body: one reservation so the frame is contiguous. */
static int rpcd_encode(fl_buf_t *out, uint8_t flags, uint32_t seq, fl_slice_t method,
                       const void *body, size_t len)
{
    if (method.len > UINT32_MAX || len > UINT32_MAX - method.len)
        return -1;
    uint32_t opts[2] = {seq, (uint32_t)method.len};
    size_t hlen = fl_frame_header_len(2);
    if (fl_buf_reserve(out, hlen + method.len + len) < 0)
        return -1;
    uint8_t *p = (uint8_t *)out->data + out->len;
    fl_frame_header(p, flags, 0, opts, 2, (uint32_t)(method.len + len));
    if (method.len)
        memcpy(p + hlen, method.base, method.len);
    if (len)
        memcpy(p + hlen + method.len, body, len);
    out->len += hlen + method.len + len;
    return 0;
}

int fl_rpc_encode_request(fl_buf_t *out, uint32_t seq, uint8_t codec, fl_slice_t method,
                          const void *arg, size_t len)
{
    return rpcd_encode(out, codec, seq, method, arg, len);
}

int fl_rpc_encode_reply(fl_buf_t *out, uint32_t seq, uint8_t codec, fl_slice_t method,
                        const void *body, size_t len)
{
    return rpcd_encode(out, codec, seq, method, body, len);
}

int fl_rpc_encode_error(fl_buf_t *out, uint32_t seq, uint8_t codec, fl_slice_t method,
                        fl_slice_t text)
{
    return rpcd_encode(out, (uint8_t)(codec | FL_FRAME_ERROR), seq, method, text.base, text.len);
}

int fl_rpc_parse_reply(const fl_frame_t *f, fl_rpc_reply_t *r, const char **err)
{
    /* The same layout as a request: PHP's client checks two options, then skips options[1]. */
    fl_rpc_req_t q;
    if (fl_rpc_parse_request(f, &q, err) < 0)
        return -1;
    r->seq = q.seq;
    r->flags = f->flags;
    r->error = (f->flags & FL_FRAME_ERROR) != 0;
    r->body = q.arg;
    return 0;
}

bool fl_rpc_split_method(fl_slice_t m, fl_slice_t *service, fl_slice_t *name)
{
    for (size_t i = m.len; i-- > 0;) {
        if (m.base[i] == '.') {
            *service = fl_slice(m.base, i);
            *name = fl_slice(m.base + i + 1, m.len - i - 1);
            return true;
        }
    }
    return false;
}

int fl_rpc_lookup_error(fl_buf_t *out, int what, fl_slice_t method)
{
    static const char *const texts[] = {
        [FL_RPC_ILL_FORMED] = "rpc: service/method request ill-formed: ",
        [FL_RPC_NO_SERVICE] = "rpc: can't find service ",
        [FL_RPC_NO_METHOD] = "rpc: can't find method ",
    };
    if (what < 0 || what > FL_RPC_NO_METHOD)
        return -1;
    if (fl_buf_puts(out, texts[what]) < 0)
        return -1;
    return fl_buf_append(out, method.base, method.len);
}

/* What Go's encoding/json names a JSON value in "cannot unmarshal X into Go value". */
static const char *rpcd_json_kind(const cJSON *v)
{
    if (cJSON_IsNumber(v))
        return "number";
    if (cJSON_IsBool(v))
        return "bool";
    if (cJSON_IsArray(v))
        return "array";
    if (cJSON_IsObject(v))
        return "object";
    return "value";
}

static char *rpcd_arg_json_string(fl_slice_t arg, char *errbuf, size_t errlen, const char **err)
{
    cJSON *v = cJSON_ParseWithLength(arg.base, arg.len);
    char *s = NULL;
    if (!v) {
        snprintf(errbuf, errlen, "invalid JSON argument: %.*s", (int)(arg.len > 64 ? 64 : arg.len),
                 arg.base);
        *err = errbuf;
    } else if (cJSON_IsNull(v)) {
        s = strdup("");
    } else if (cJSON_IsString(v)) {
        s = strdup(v->valuestring);
    } else {
        snprintf(errbuf, errlen, "json: cannot unmarshal %s into Go value of type string",
                 rpcd_json_kind(v));
        *err = errbuf;
    }
    cJSON_Delete(v);
    return s;
}

char *fl_rpc_arg_string(const fl_rpc_req_t *r, char *errbuf, size_t errlen, const char **err)
{
    if (!r->codec_given) {
        *err = fl_rpc_err_no_decoder;
        return NULL;
    }
    char *s = NULL;
    switch (r->codec) {
    case FL_RPC_JSON:
        if (r->arg.len == 0)
            s = strdup("");
        else
            return rpcd_arg_json_string(r->arg, errbuf, errlen, err);
        break;
    case FL_RPC_RAW:
        /* Go copies raw bytes only into a []byte argument: a string argument stays "". */
        s = strdup("");
        break;
    case FL_RPC_PROTO:
        if (r->arg.len) {
            *err = fl_rpc_err_not_proto;
            return NULL;
        }
        s = strdup("");
        break;
    default:
        *err = fl_rpc_err_codec;
        return NULL;
    }
    if (!s) {
        snprintf(errbuf, errlen, "out of memory");
        *err = errbuf;
    }
    return s;
}

/* Length of the valid UTF-8 sequence at p (1-4), or 0 when it is not valid. */
static size_t rpcd_utf8_len(const unsigned char *p, size_t n)
{
    unsigned c = p[0];
    size_t len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    if (len == 0 || len > n)
        return 0;
    for (size_t i = 1; i < len; i++)
        if ((p[i] & 0xc0) != 0x80)
            return 0;
    uint32_t cp = len == 1 ? c : len == 2 ? c & 0x1f : len == 3 ? c & 0x0f : c & 0x07;
    for (size_t i = 1; i < len; i++)
        cp = cp << 6 | (p[i] & 0x3f);
    static const uint32_t min[] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < min[len] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return len;
}

/* Go's json.Marshal escaping: HTML-safe (<, >, & as \u00XX), U+2028/9 escaped. */
int fl_rpc_json_string(fl_buf_t *out, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *p = (const unsigned char *)s;
    if (fl_buf_reserve(out, n + 2) < 0 || fl_buf_append(out, "\"", 1) < 0)
        return -1;
    for (size_t i = 0; i < n;) {
        unsigned c = p[i];
        char esc[8];
        size_t elen = 0;
        if (c == '"' || c == '\\') {
            esc[0] = '\\', esc[1] = (char)c, elen = 2;
        } else if (c == '\n' || c == '\r' || c == '\t') {
            esc[0] = '\\', esc[1] = c == '\n' ? 'n' : c == '\r' ? 'r' : 't', elen = 2;
        } else if (c < 0x20 || c == '<' || c == '>' || c == '&') {
            memcpy(esc, "\\u00", 4);
            esc[4] = hex[c >> 4], esc[5] = hex[c & 15], elen = 6;
        }
        if (elen) {
            if (fl_buf_append(out, esc, elen) < 0)
                return -1;
            i++;
            continue;
        }
        size_t ul = rpcd_utf8_len(p + i, n - i);
        int rc;
        if (ul == 0)
            rc = fl_buf_puts(out, "\\ufffd"), ul = 1;
        else if (ul == 3 && p[i] == 0xe2 && p[i + 1] == 0x80 && (p[i + 2] & 0xfe) == 0xa8)
            rc = fl_buf_puts(out, p[i + 2] == 0xa8 ? "\\u2028" : "\\u2029");
        else
            rc = fl_buf_append(out, p + i, ul);
        if (rc < 0)
            return -1;
        i += ul;
    }
    return fl_buf_append(out, "\"", 1);
}

int fl_rpc_base64(fl_buf_t *out, const void *data, size_t n)
{
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    const unsigned char *p = data;
    if (fl_buf_reserve(out, (n + 2) / 3 * 4) < 0)
        return -1;
    char *o = out->data + out->len;
    size_t i = 0;
    for (; i + 3 <= n; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8 | p[i + 2];
        *o++ = tab[v >> 18], *o++ = tab[(v >> 12) & 63], *o++ = tab[(v >> 6) & 63];
        *o++ = tab[v & 63];
    }
    if (i < n) {
        uint32_t v = (uint32_t)p[i] << 16 | (i + 1 < n ? (uint32_t)p[i + 1] << 8 : 0);
        *o++ = tab[v >> 18], *o++ = tab[(v >> 12) & 63];
        *o++ = i + 1 < n ? tab[(v >> 6) & 63] : '=';
        *o++ = '=';
    }
    out->len = (size_t)(o - out->data);
    return 0;
}
