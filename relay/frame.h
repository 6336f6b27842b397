/* Goridge v1 frame codec (spec §2) plus the worker-relay helpers built on it (§3, §4).
 *
 * A frame is: byte0 = 0x10 | HL (header length in 32-bit words, 3 + number of options),
 * flags, u32 LE payload length, u32 LE CRC-32 of bytes 0..5, stream byte, a zero byte,
 * HL-3 u32 LE options, then the payload. Everything here is allocation-free except the
 * appends into the caller's fl_buf_t. */
#ifndef FL_FRAME_H
#define FL_FRAME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "fl.h"

/* Flags (byte 1). */
#define FL_FRAME_CONTROL 0x01
#define FL_FRAME_RAW 0x04
#define FL_FRAME_JSON 0x08
#define FL_FRAME_ERROR 0x40
#define FL_FRAME_PROTO 0x80

/* Stream byte (byte 10); not covered by the CRC. */
#define FL_STREAM_MORE 0x01 /* W->RR: more frames of this response follow */
#define FL_STREAM_STOP 0x02 /* RR->W: stop the stream you are sending */
#define FL_STREAM_PING 0x04 /* W->RR: answer with a PONG */
#define FL_STREAM_PONG 0x08 /* RR->W: answer to a PING */

#define FL_FRAME_MIN_HEADER 12
#define FL_FRAME_MAX_OPTS 10

/* CRC-32/IEEE, zlib-compatible: fl_crc32("123456789", 9) == 0xCBF43926. */
uint32_t fl_crc32(const void *p, size_t n);

/* A parsed frame. payload points into the buffer given to fl_frame_parse(). */
typedef struct {
    uint8_t flags, stream;
    unsigned nopts;
    uint32_t opts[FL_FRAME_MAX_OPTS];
    const uint8_t *payload;
    uint32_t len;
} fl_frame_t;

/* Static error strings; compare by identity (err == fl_frame_err_crc). */
extern const char fl_frame_err_crc[];         /* "CRC mismatch" */
extern const char fl_frame_err_hl[];          /* header length HL < 3 or HL > 13 */
extern const char fl_frame_err_too_big[];     /* payload length above max_payload */
extern const char fl_frame_err_not_found[];   /* PHP printed "Could not open input file" */
extern const char fl_frame_err_opts[];        /* "options length should be equal 1 (body offset)" */
extern const char fl_frame_err_bad_payload[]; /* "bad payload": opts[0] > payload length */

/* Appends one whole frame (header, options, payload) to out, contiguous so the caller can
 * send it with one write(). nopts <= 10, len <= UINT32_MAX. Returns 0, or -1 (out unchanged). */
int fl_frame_encode(fl_buf_t *out, uint8_t flags, uint8_t stream, const uint32_t *opts,
                    unsigned nopts, const void *payload, size_t len);

/* Header + options only, for writev() with a separate payload iovec. */
static inline size_t fl_frame_header_len(unsigned nopts)
{
    return 12 + 4 * (size_t)nopts;
}
/* Writes fl_frame_header_len(nopts) bytes to hdr. Precondition: nopts <= 10. */
void fl_frame_header(uint8_t *hdr, uint8_t flags, uint8_t stream, const uint32_t *opts,
                     unsigned nopts, uint32_t payload_len);

/* Parses one frame from the front of buf.
 * Returns the frame's total size (> 0) when it is complete (f->payload points into buf),
 * 0 when more bytes are needed, -1 on a protocol error with *err = one of fl_frame_err_*. */
ssize_t fl_frame_parse(const uint8_t *buf, size_t len, uint32_t max_payload, fl_frame_t *f,
                       const char **err);

/* Worker response/task layout (§4): exactly one option = context length; payload is
 * context || body. Returns 0, or -1 with *err = fl_frame_err_opts / fl_frame_err_bad_payload. */
int fl_frame_split(const fl_frame_t *f, fl_slice_t *ctx, fl_slice_t *body, const char **err);

/* True for the worker's "restart me" data frame (§3.6): no CONTROL (nor ERROR) bit, one
 * option, context exactly {"stop":true}, empty body. */
bool fl_frame_is_stop_request(const fl_frame_t *f);

/* Control frames RR->W (§2.9, §3.4, §5). Each appends one frame; 0 or -1. */
int fl_frame_pid_request(fl_buf_t *out, int pid); /* CONTROL|JSON {"pid":N} */
int fl_frame_stop(fl_buf_t *out);                 /* CONTROL|JSON {"stop":true} */
int fl_frame_pong(fl_buf_t *out);                 /* flags 0, stream PONG, empty */
int fl_frame_stream_stop(fl_buf_t *out);          /* flags 0, stream STOP, empty */

/* The worker's PID from a CONTROL frame with JSON payload {"pid":N}: N > 0, or -1. */
long fl_frame_parse_pid_reply(const fl_frame_t *f);

#endif
