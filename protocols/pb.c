/* Minimal protobuf wire-format writer and reader. See pb.h. */
#include "pb.h"

int pb_put_varint(fl_buf_t *out, uint64_t v)
{
    if (fl_buf_reserve(out, 10) < 0)
        return -1;
    uint8_t *p = (uint8_t *)out->data + out->len;
    out->len += (size_t)(pb_w_varint(p, v) - p);
    return 0;
}

int pb_put_tag(fl_buf_t *out, uint32_t field, unsigned wire)
{
    return pb_put_varint(out, (uint64_t)field << 3 | wire);
}

int pb_put_bytes(fl_buf_t *out, uint32_t field, const void *p, size_t n)
{
    if (fl_buf_reserve(out, pb_bytes_size(field, n)) < 0)
        return -1;
    uint8_t *w = (uint8_t *)out->data + out->len;
    out->len += (size_t)(pb_w_bytes(w, field, p, n) - w);
    return 0;
}

const uint8_t *pb_read_varint(const uint8_t *p, const uint8_t *end, uint64_t *v)
{
    uint64_t r = 0;
    for (unsigned shift = 0; shift < 64 && p < end; shift += 7) {
        uint8_t b = *p++;
        /* The 10th byte may only carry the top bit of a 64-bit value. */
        if (shift == 63 && b > 1)
            return NULL;
        r |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            *v = r;
            return p;
        }
    }
    return NULL;
}

/* Fixed-width little-endian value of n bytes, or NULL when truncated. */
static const uint8_t *pb_read_fixed(const uint8_t *p, const uint8_t *end, unsigned n, uint64_t *v)
{
    if ((size_t)(end - p) < n)
        return NULL;
    uint64_t r = 0;
    for (unsigned i = 0; i < n; i++)
        r |= (uint64_t)p[i] << (8 * i);
    *v = r;
    return p + n;
}

/* Reads the field body after its tag; returns the position after it or NULL. */
static const uint8_t *pb_read_body(const uint8_t *p, const uint8_t *end, pb_field_t *f)
{
    f->data = NULL;
    f->len = 0;
    f->value = 0;
    switch (f->wire) {
    case PB_VARINT:
        return pb_read_varint(p, end, &f->value);
    case PB_FIXED64:
        return pb_read_fixed(p, end, 8, &f->value);
    case PB_FIXED32:
        return pb_read_fixed(p, end, 4, &f->value);
    case PB_LEN: {
        uint64_t n;
        p = pb_read_varint(p, end, &n);
        if (!p || n > (uint64_t)(end - p))
            return NULL;
        f->data = p;
        f->len = (size_t)n;
        return p + n;
    }
    default: /* groups (3, 4) are deprecated and never used by http.v1; 6, 7 are invalid */
        return NULL;
    }
}

int pb_next_field(const uint8_t **p, const uint8_t *end, pb_field_t *f)
{
    if (*p >= end)
        return 0;
    uint64_t tag;
    const uint8_t *q = pb_read_varint(*p, end, &tag);
    if (!q || (tag >> 3) == 0 || (tag >> 3) > PB_MAX_FIELD)
        return -1;
    f->field = (uint32_t)(tag >> 3);
    f->wire = (unsigned)(tag & 7);
    q = pb_read_body(q, end, f);
    if (!q)
        return -1;
    *p = q;
    return 1;
}
