/* See applog.h. */
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "applog.h"
#include "log.h"
#include "pb.h"

#define AL_MAX_ATTRS 64
#define AL_RAW (-1) /* app.Log: stderr as is */

static void al_raw(const char *p, size_t n)
{
    while (n) {
        ssize_t w = write(STDERR_FILENO, p, n);
        if (w <= 0)
            return;
        p += w;
        n -= (size_t)w;
    }
}

static void al_plain(fl_rpc_call_t *call, int level)
{
    char ebuf[200];
    const char *err = NULL;
    char *msg = fl_rpc_arg_string(&call->req, ebuf, sizeof(ebuf), &err);
    if (!msg) {
        fl_rpc_fail(call, "%s", err);
        return;
    }
    if (level == AL_RAW)
        al_raw(msg, strlen(msg));
    else
        fl_logf(level, "app", msg, strlen(msg), NULL, 0);
    free(msg);
    fl_rpc_reply_json(call, "false", 5); /* upstream never sets the reply */
}

/* LogEntry{message=1, log_attrs=2 {key=1, value=2}}. */
static void al_context(fl_rpc_call_t *call, int level)
{
    if (call->req.codec != FL_RPC_PROTO) {
        fl_rpc_fail(call, "app.*WithContext takes an applogger.v1.LogEntry: use the proto codec");
        return;
    }
    const uint8_t *p = (const uint8_t *)call->req.arg.base, *end = p + call->req.arg.len;
    fl_slice_t msg = FL_SLICE("");
    fl_log_field_t f[AL_MAX_ATTRS];
    fl_slice_t keys[AL_MAX_ATTRS];
    size_t n = 0;
    pb_field_t fld;
    int rc;
    while ((rc = pb_next_field(&p, end, &fld)) > 0) {
        if (fld.wire != PB_LEN)
            continue;
        if (fld.field == 1) {
            msg = fl_slice((const char *)fld.data, fld.len);
        } else if (fld.field == 2 && n < AL_MAX_ATTRS) {
            const uint8_t *q = fld.data, *qe = fld.data + fld.len;
            pb_field_t a;
            fl_slice_t k = FL_SLICE(""), v = FL_SLICE("");
            while ((rc = pb_next_field(&q, qe, &a)) > 0) {
                if (a.wire == PB_LEN && a.field == 1)
                    k = fl_slice((const char *)a.data, a.len);
                else if (a.wire == PB_LEN && a.field == 2)
                    v = fl_slice((const char *)a.data, a.len);
            }
            if (rc < 0)
                break;
            keys[n] = k;
            f[n++] = FL_LF_STRN(NULL, v.base, v.len);
        }
    }
    if (rc < 0) {
        fl_rpc_fail(call, "proto: cannot parse invalid wire-format data");
        return;
    }
    /* field keys must be C strings: copy them together into one block */
    fl_buf_t kb = {0};
    size_t offs[AL_MAX_ATTRS];
    for (size_t i = 0; i < n; i++) {
        offs[i] = kb.len;
        fl_buf_append(&kb, keys[i].base, keys[i].len);
        fl_buf_append(&kb, "", 1);
    }
    if (kb.len < n) { /* out of memory: log without the attributes */
        n = 0;
    }
    for (size_t i = 0; i < n; i++)
        f[i].key = kb.data + offs[i];
    if (level == AL_RAW) {
        /* "message key:value,key:value" - all of the last value (upstream cuts one char) */
        fl_buf_t line = {0};
        fl_buf_append(&line, msg.base, msg.len);
        for (size_t i = 0; i < n; i++)
            fl_buf_printf(&line, "%s%s:%.*s", i ? "," : " ", f[i].key, (int)f[i].len, f[i].s);
        al_raw(line.data ? line.data : "", line.len);
        fl_buf_free(&line);
    } else {
        fl_logf(level, "app", msg.base, msg.len, f, n);
    }
    fl_buf_free(&kb);
    fl_rpc_reply(call, "", 0); /* an empty Response */
}

static void al_error(fl_rpc_call_t *c)
{
    al_plain(c, FL_LOG_ERROR);
}
static void al_warning(fl_rpc_call_t *c)
{
    al_plain(c, FL_LOG_WARN);
}
static void al_info(fl_rpc_call_t *c)
{
    al_plain(c, FL_LOG_INFO);
}
static void al_debug(fl_rpc_call_t *c)
{
    al_plain(c, FL_LOG_DEBUG);
}
static void al_log(fl_rpc_call_t *c)
{
    al_plain(c, AL_RAW);
}
static void al_error_ctx(fl_rpc_call_t *c)
{
    al_context(c, FL_LOG_ERROR);
}
static void al_warning_ctx(fl_rpc_call_t *c)
{
    al_context(c, FL_LOG_WARN);
}
static void al_info_ctx(fl_rpc_call_t *c)
{
    al_context(c, FL_LOG_INFO);
}
static void al_debug_ctx(fl_rpc_call_t *c)
{
    al_context(c, FL_LOG_DEBUG);
}
static void al_log_ctx(fl_rpc_call_t *c)
{
    al_context(c, AL_RAW);
}

static const fl_rpc_method_t al_methods[] = {
    {"app.Error", al_error},
    {"app.Warning", al_warning},
    {"app.Info", al_info},
    {"app.Debug", al_debug},
    {"app.Log", al_log},
    {"app.ErrorWithContext", al_error_ctx},
    {"app.WarningWithContext", al_warning_ctx},
    {"app.InfoWithContext", al_info_ctx},
    {"app.DebugWithContext", al_debug_ctx},
    {"app.LogWithContext", al_log_ctx},
};

int fl_applog_register(fl_rpc_server_t *rpc)
{
    return rpc ? fl_rpc_server_add(rpc, al_methods, FL_ARRAY_SIZE(al_methods), NULL) : 0;
}
