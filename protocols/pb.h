/* Minimal protobuf wire-format writer and reader: just varints and length-delimited
 * fields, which is all http.v1 needs (spec §6.2).
 *
 * Two writer flavours:
 *  - pb_put_*: append to an fl_buf_t (grows it; 0 or -1);
 *  - pb_w_*:   write to raw memory the caller reserved, returning the new end. The hot
 *              path computes the exact size with pb_*_size first, reserves once, then
 *              writes with these, so nested lengths never need a second copy. */
#ifndef FL_PB_H
#define FL_PB_H

#include <stddef.h>
#include <stdint.h>

#include "fl.h"

enum { PB_VARINT = 0, PB_FIXED64 = 1, PB_LEN = 2, PB_FIXED32 = 5 };

#define PB_MAX_FIELD ((1u << 29) - 1)

/* Sizes. */
static inline size_t pb_varint_size(uint64_t v)
{
    size_t n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}
static inline size_t pb_tag_size(uint32_t field)
{
    return pb_varint_size((uint64_t)field << 3);
}
/* A whole length-delimited field: tag + length varint + n bytes. */
static inline size_t pb_bytes_size(uint32_t field, size_t n)
{
    return pb_tag_size(field) + pb_varint_size(n) + n;
}

/* Raw writers: the caller guarantees room (see the sizes above). */
static inline uint8_t *pb_w_varint(uint8_t *p, uint64_t v)
{
    while (v >= 0x80) {
        *p++ = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    *p++ = (uint8_t)v;
    return p;
}
static inline uint8_t *pb_w_tag(uint8_t *p, uint32_t field, unsigned wire)
{
    return pb_w_varint(p, (uint64_t)field << 3 | wire);
}
/* Tag + length only: the n payload bytes are written next by the caller. */
static inline uint8_t *pb_w_len(uint8_t *p, uint32_t field, size_t n)
{
    return pb_w_varint(pb_w_tag(p, field, PB_LEN), n);
}
static inline uint8_t *pb_w_bytes(uint8_t *p, uint32_t field, const void *s, size_t n)
{
    p = pb_w_len(p, field, n);
    if (n)
        memcpy(p, s, n);
    return p + n;
}

/* Buffer writers. */
int pb_put_varint(fl_buf_t *out, uint64_t v);
int pb_put_tag(fl_buf_t *out, uint32_t field, unsigned wire);
int pb_put_bytes(fl_buf_t *out, uint32_t field, const void *p, size_t n);

/* Reader. Reads one varint (at most 10 bytes, no 64-bit overflow) from [p, end).
 * Returns the position after it, or NULL when truncated or malformed. */
const uint8_t *pb_read_varint(const uint8_t *p, const uint8_t *end, uint64_t *v);

/* One decoded field. For PB_LEN, data/len is the payload; for the others, value holds the
 * varint or the little-endian fixed-width integer. */
typedef struct {
    uint32_t field;
    unsigned wire;
    uint64_t value;
    const uint8_t *data;
    size_t len;
} pb_field_t;

/* Iterates the fields of a message: *p advances past each one.
 * Returns 1 with *f filled, 0 at the end, -1 on malformed input (bad tag, field 0,
 * truncated data, groups or unknown wire types). */
int pb_next_field(const uint8_t **p, const uint8_t *end, pb_field_t *f);

#endif
