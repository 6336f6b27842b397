/* Goridge RPC codec (spec goridge-and-worker-protocol.md §9.1): the frames of RoadRunner's RPC,
 * which is Go net/rpc carried in goridge frames.
 *
 * Request: two options [seq, M], one codec bit in the flags, payload = method name (M bytes)
 * followed by the encoded argument. Reply: options [seq, M], the codec picked from the request,
 * payload = method name echoed, then the encoded reply; an error reply adds the ERROR flag and
 * carries the error text instead. Nothing here does I/O or allocates except the appends into the
 * caller's fl_buf_t.
 *
 * Not to be confused with master/rpc.h, the server built on this codec. */
#ifndef FL_RPC_CODEC_H
#define FL_RPC_CODEC_H

#include <stdbool.h>
#include <stdint.h>

#include "fl.h"
#include "frame.h"

/* Codec bits of the flags byte. PHP sends JSON (default), PROTO or RAW; Go clients GOB. */
#define FL_RPC_RAW 0x04
#define FL_RPC_JSON 0x08
#define FL_RPC_MSGPACK 0x10
#define FL_RPC_GOB 0x20
#define FL_RPC_PROTO 0x80

/* A request, all slices pointing into the frame's payload. */
typedef struct {
    uint32_t seq;      /* echoed as is: never validated (§14 item 8) */
    uint8_t codec;     /* the single codec of the reply: PROTO > JSON > RAW > MSGPACK > GOB */
    bool codec_given;  /* false when no codec bit was set: the argument cannot be decoded */
    fl_slice_t method; /* "informer.Workers" */
    fl_slice_t arg;    /* the encoded argument; empty = the zero value */
} fl_rpc_req_t;

/* Framing errors: RoadRunner closes the connection on these. Static, compare by identity. */
extern const char fl_rpc_err_opts[];       /* not exactly two options */
extern const char fl_rpc_err_method_len[]; /* options[1] is longer than the payload */

/* Go net/rpc's lookup errors and the codec's body errors (the connection stays open). */
extern const char fl_rpc_err_no_decoder[]; /* flags without a codec bit */
extern const char fl_rpc_err_not_proto[];  /* proto argument to a method that takes none */
extern const char fl_rpc_err_codec[];      /* gob / msgpack: not spoken here */
extern const char fl_rpc_err_raw_reply[];  /* raw codec for a method whose reply is not bytes */

/* The reply codec RoadRunner picks for a request's flags (none set: GOB). */
uint8_t fl_rpc_pick_codec(uint8_t flags);

/* A request from a parsed frame. 0, or -1 with *err = fl_rpc_err_opts / _method_len. */
int fl_rpc_parse_request(const fl_frame_t *f, fl_rpc_req_t *r, const char **err);

/* One whole frame each (header and payload contiguous, for a single write). 0, or -1 when memory
 * runs out or the payload would not fit a u32 (out unchanged). */
int fl_rpc_encode_request(fl_buf_t *out, uint32_t seq, uint8_t codec, fl_slice_t method,
                          const void *arg, size_t len);
int fl_rpc_encode_reply(fl_buf_t *out, uint32_t seq, uint8_t codec, fl_slice_t method,
                        const void *body, size_t len);
/* flags = codec | ERROR, payload = method || text. */
int fl_rpc_encode_error(fl_buf_t *out, uint32_t seq, uint8_t codec, fl_slice_t method,
                        fl_slice_t text);

/* A reply frame, as a client reads it: 0, or -1 with *err on a framing error. */
typedef struct {
    uint32_t seq;
    bool error; /* the ERROR flag: body is the error text */
    uint8_t flags;
    fl_slice_t body; /* after the echoed method name */
} fl_rpc_reply_t;
int fl_rpc_parse_reply(const fl_frame_t *f, fl_rpc_reply_t *r, const char **err);

/* Go net/rpc's texts for a method that is not served (the whole "service.Method" is quoted):
 * "rpc: service/method request ill-formed: X", "rpc: can't find service X",
 * "rpc: can't find method X". Appends to out; 0 or -1. */
enum { FL_RPC_ILL_FORMED, FL_RPC_NO_SERVICE, FL_RPC_NO_METHOD };
int fl_rpc_lookup_error(fl_buf_t *out, int what, fl_slice_t method);
/* Splits "kv.Has" at the last dot; false when there is none (ill-formed). */
bool fl_rpc_split_method(fl_slice_t method, fl_slice_t *service, fl_slice_t *name);

/* Arguments of the JSON-era services (resetter, informer): a Go string. JSON: a JSON string
 * (empty argument or null = ""); RAW: the bytes (Go leaves a string argument empty); PROTO: only
 * an empty argument. Returns a malloc'd string, or NULL with *err set to a static text or to
 * errbuf (filled with Go's "json: cannot unmarshal ..." text). */
char *fl_rpc_arg_string(const fl_rpc_req_t *r, char *errbuf, size_t errlen, const char **err);

/* Appends s as a JSON string literal ("..." with escapes); invalid UTF-8 becomes U+FFFD. */
int fl_rpc_json_string(fl_buf_t *out, const char *s, size_t n);
/* Appends standard base64 (Go's []byte in JSON). */
int fl_rpc_base64(fl_buf_t *out, const void *p, size_t n);

#endif
