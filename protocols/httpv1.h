/* http.v1 payload codec (spec §6): request context encoders (protobuf and legacy JSON)
 * and the response context decoder. */
#ifndef FL_HTTPV1_H
#define FL_HTTPV1_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "fl.h"

typedef struct {
    fl_slice_t name, value;
} fl_header_t;

typedef struct {
    fl_slice_t remote_addr, protocol, method, uri, raw_query; /* uri = full http://host/target */
    /* As received, in order, any case. */
    const fl_header_t *headers;
    size_t nheaders;
    bool parsed;
    fl_slice_t uploads; /* JSON bytes or empty */
    /* Values set by server middleware (§6.3): one string each; PHP merges them into the
     * PSR-7 attributes, and `ipAddress` overrides remoteAddr. Names must be distinct. */
    const fl_header_t *attributes;
    size_t nattributes;
} fl_http_req_t;

/* Both append to out and return 0, or -1 on out-of-memory (out is then left as it was).
 * Header names are sent in Go canonical form, Host and Transfer-Encoding are dropped,
 * same-name headers are grouped (first-arrival order), cookies come from Cookie (§6.3). */
int fl_httpv1_encode_proto(fl_buf_t *out, const fl_http_req_t *r); /* http.v1.Request */
int fl_httpv1_encode_json(fl_buf_t *out, const fl_http_req_t *r);  /* legacy JSON context */

/* Response headers up to this many values are decoded into fl_http_resp_t.local: a typical
 * answer costs no allocation. */
#define FL_HTTPV1_LOCAL_HEADERS 16

typedef struct {
    int status; /* 0 when the context carried none; NOT range-checked here */
    /* One element per value, name repeated. Slices point into the ctx bytes (proto) or into
     * `owned` (JSON). Names are as the worker sent them (not canonicalised). headers is
     * `local` or a heap array: do not copy an fl_http_resp_t by value. */
    fl_header_t *headers;
    size_t nheaders;
    char *owned;
    size_t owned_len;
    fl_header_t local[FL_HTTPV1_LOCAL_HEADERS];
} fl_http_resp_t;

/* Static error strings; compare by identity. */
extern const char fl_httpv1_err_proto[]; /* malformed protobuf http.v1.Response */
extern const char fl_httpv1_err_json[];  /* malformed JSON response context */
extern const char fl_httpv1_err_nomem[]; /* out of memory */

/* Decodes a worker's response context. frame_flags with FL_FRAME_PROTO (0x80) selects
 * protobuf; anything else (0x08, 0x00) JSON. An empty ctx gives status 0 and no headers.
 * Returns 0, or -1 with *err set (out is then empty and needs no free). */
int fl_httpv1_decode_response(uint8_t frame_flags, fl_slice_t ctx, fl_http_resp_t *out,
                              const char **err);
void fl_http_resp_free(fl_http_resp_t *r);

/* Appends s as a quoted JSON string, escaped as Go's encoding/json does it (invalid UTF-8
 * becomes \ufffd). Returns 0, or -1 on out-of-memory (out is then left as it was). */
int fl_httpv1_json_str(fl_buf_t *out, fl_slice_t s);

/* True for a non-empty RFC 9110 token (a valid header name). */
bool fl_http_is_token(fl_slice_t s);

/* Length of the valid UTF-8 sequence at s (2..4 bytes; n bytes available), or 0. Rejects
 * overlongs, surrogates and code points above U+10FFFF, like Go's utf8.DecodeRune. */
size_t fl_utf8_len(const uint8_t *s, size_t n);

#endif
