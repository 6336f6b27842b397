/* See status.h. */
#include <cjson/cJSON.h>
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jobs.h"
#include "log.h"
#include "mhttp.h"
#include "pb.h"
#include "srvmetrics.h"
#include "status.h"

#define ST_MAX_PLUGINS 16
#define ST_MAX_NAME 64

static struct {
    bool on, stopping, jobs, pipelines; /* jobs: the plugin (a pool); pipelines: the section */
    int unavailable;                    /* unavailable_status_code */
    fl_mhttp_t *http;
    char *address;         /* where http listens */
    int64_t timeout_ms;    /* its check_timeout */
    bool rpc;              /* status.* on the RPC server */
    bool prepared;         /* a reload's prepare ran: commit or abort it */
    fl_mhttp_t *next_http; /* the reload's new listener */
} st;

static const char st_stopping[] = "the server is stopping";
static const char st_no_ready[] = "no worker is ready";
static const char st_no_live[] = "no worker is ready or working";

void fl_status_stopping(void)
{
    st.stopping = true;
}

int fl_status_check(const char *plugin, bool ready, const char **why)
{
    int p = strcmp(plugin, "http") == 0              ? FL_SRVM_HTTP
            : st.jobs && strcmp(plugin, "jobs") == 0 ? FL_SRVM_JOBS
                                                     : -1;
    *why = NULL;
    if (p < 0)
        return -1;
    if (ready && st.stopping) {
        *why = st_stopping;
        return 503;
    }
    fl_srvm_counters_t t;
    fl_srvm_sum(&t);
    int64_t n = t.workers[p][FL_W_READY] + (ready ? 0 : t.workers[p][FL_W_WORKING]);
    if (n > 0)
        return 200;
    *why = ready ? st_no_ready : st_no_live;
    return 503;
}

/* ---- HTTP: /health, /ready, /jobs ---- */

static int st_hex(int c)
{
    return isdigit(c) ? c - '0' : isxdigit(c) ? (tolower(c) - 'a' + 10) : -1;
}

/* URL-decodes s into out (cap bytes with the NUL); false when it does not fit. */
static bool st_unescape(fl_slice_t s, char *out, size_t cap)
{
    size_t n = 0;
    for (size_t i = 0; i < s.len; i++) {
        int c = (unsigned char)s.base[i];
        if (c == '+') {
            c = ' ';
        } else if (c == '%' && i + 2 < s.len && st_hex(s.base[i + 1]) >= 0 &&
                   st_hex(s.base[i + 2]) >= 0) {
            c = st_hex(s.base[i + 1]) * 16 + st_hex(s.base[i + 2]);
            i += 2;
        }
        if (n + 1 >= cap)
            return false;
        out[n++] = (char)c;
    }
    out[n] = 0;
    return true;
}

/* The values of every plugin= in the query; returns how many (at most ST_MAX_PLUGINS). */
static size_t st_plugins(fl_slice_t q, char names[][ST_MAX_NAME])
{
    size_t n = 0;
    while (q.len && n < ST_MAX_PLUGINS) {
        const char *amp = memchr(q.base, '&', q.len);
        size_t len = amp ? (size_t)(amp - q.base) : q.len;
        const char *eq = memchr(q.base, '=', len);
        char key[16];
        if (eq && st_unescape(fl_slice(q.base, (size_t)(eq - q.base)), key, sizeof(key)) &&
            strcmp(key, "plugin") == 0 &&
            st_unescape(fl_slice(eq + 1, len - (size_t)(eq + 1 - q.base)), names[n], ST_MAX_NAME))
            n++;
        q = amp ? fl_slice(amp + 1, q.len - len - 1) : FL_SLICE_NULL;
    }
    return n;
}

static void st_report(fl_slice_t query, bool ready, fl_mhttp_resp_t *r)
{
    char names[ST_MAX_PLUGINS][ST_MAX_NAME];
    size_t n = st_plugins(query, names);
    if (n == 0) { /* every registered plugin */
        strcpy(names[n++], "http");
        if (st.jobs)
            strcpy(names[n++], "jobs");
    }
    cJSON *arr = cJSON_CreateArray();
    bool fine = true;
    for (size_t i = 0; i < n && arr; i++) {
        const char *why;
        int code = fl_status_check(names[i], ready, &why);
        cJSON *o = cJSON_CreateObject();
        if (!o)
            break;
        cJSON_AddItemToArray(arr, o);
        if (code != 200)
            fine = false;
        if (code < 0) {
            code = 404;
            why = "plugin not found";
        } else if (code >= 500) {
            code = st.unavailable;
        }
        cJSON_AddStringToObject(o, "plugin_name", names[i]);
        cJSON_AddStringToObject(o, "error_message", why ? why : "");
        cJSON_AddNumberToObject(o, "status_code", code);
    }
    char *text = arr ? cJSON_PrintUnformatted(arr) : NULL;
    cJSON_Delete(arr);
    if (!text) {
        r->status = 500;
        fl_buf_puts(&r->body, "out of memory\n");
        return;
    }
    r->status = fine ? 200 : st.unavailable;
    r->ctype = "application/json";
    fl_buf_puts(&r->body, text);
    free(text);
}

/* "ErrorMessage" -> "error_message": informer.Jobs' Go names as the status plugin's JSON. */
static void st_snake(const char *s, char *out, size_t cap)
{
    size_t n = 0;
    for (; *s && n + 2 < cap; s++) {
        if (isupper((unsigned char)*s) && n)
            out[n++] = '_';
        out[n++] = (char)tolower((unsigned char)*s);
    }
    out[n] = 0;
}

/* informer.Jobs' objects with the status plugin's snake_case keys ("ErrorMessage" ->
 * "error_message"). Without a jobs section, or while stopping: the unavailable code (no place to
 * send work to). */
static void st_jobs(fl_mhttp_resp_t *r)
{
    fl_buf_t in = {0};
    cJSON *src = st.pipelines && fl_jobs_informer(&in) == 0
                     ? cJSON_ParseWithLength(in.data ? in.data : "", in.len)
                     : NULL;
    cJSON *out = cJSON_CreateArray();
    fl_buf_free(&in);
    for (const cJSON *p = src ? src->child : NULL; p && out; p = p->next) {
        cJSON *o = cJSON_CreateObject();
        if (!o)
            break;
        cJSON_AddItemToArray(out, o);
        for (const cJSON *f = p->child; f; f = f->next) {
            char key[64];
            st_snake(f->string, key, sizeof(key));
            cJSON_AddItemToObject(o, key, cJSON_Duplicate(f, true));
        }
    }
    char *text = out ? cJSON_PrintUnformatted(out) : NULL;
    cJSON_Delete(src);
    cJSON_Delete(out);
    if (!text) {
        r->status = 500;
        fl_buf_puts(&r->body, "out of memory\n");
        return;
    }
    r->status = st.pipelines && !st.stopping ? 200 : st.unavailable;
    r->ctype = "application/json";
    fl_buf_puts(&r->body, text);
    free(text);
}

static void st_http(void *ctx, fl_slice_t method, fl_slice_t path, fl_slice_t query,
                    fl_mhttp_resp_t *r)
{
    FL_UNUSED(ctx);
    FL_UNUSED(method);
    if (fl_slice_eq(path, "/health", 7) || fl_slice_eq(path, "/ready", 6)) {
        st_report(query, path.len == 6, r);
    } else if (fl_slice_eq(path, "/jobs", 5)) {
        st_jobs(r);
    } else {
        r->status = 404;
        fl_buf_puts(&r->body, "404 page not found\n");
    }
}

/* ---- RPC: status.Status, status.Ready (status.v1 Request{plugin=1} → Response{code=1,
 * message=2}; JSON too, with Go's field names and omitempty) ---- */

static void st_rpc(fl_rpc_call_t *call, bool ready)
{
    const char *op = ready ? "checker_rpc_ready" : "checker_rpc_status";
    char name[ST_MAX_NAME] = "";
    fl_slice_t a = call->req.arg;
    if (call->req.codec == FL_RPC_PROTO) {
        const uint8_t *p = (const uint8_t *)a.base, *end = p + a.len;
        pb_field_t f;
        int rc;
        while ((rc = pb_next_field(&p, end, &f)) > 0)
            if (f.field == 1 && f.wire == PB_LEN)
                snprintf(name, sizeof(name), "%.*s", (int)f.len, (const char *)f.data);
        if (rc < 0) {
            fl_rpc_fail(call, "%s: proto: cannot parse invalid wire-format data", op);
            return;
        }
    } else if (call->req.codec == FL_RPC_JSON) {
        cJSON *j = cJSON_ParseWithLength(a.base, a.len);
        const cJSON *v = j ? cJSON_GetObjectItem(j, "plugin") : NULL; /* case-insensitive */
        if (!j || (!cJSON_IsObject(j) && !cJSON_IsNull(j))) {
            cJSON_Delete(j);
            fl_rpc_fail(call, "%s: json: cannot unmarshal the argument into status.v1.Request", op);
            return;
        }
        if (cJSON_IsString(v))
            snprintf(name, sizeof(name), "%s", v->valuestring);
        cJSON_Delete(j);
    } else {
        fl_rpc_fail(call, "%s: status takes a status.v1.Request: use the proto or JSON codec", op);
        return;
    }
    const char *why;
    int code = fl_status_check(name, ready, &why);
    if (code < 0) {
        fl_rpc_fail(call, "%s: no such plugin: %s", op, name);
        return;
    }
    fl_buf_t b = {0};
    int rc;
    if (call->req.codec == FL_RPC_PROTO) {
        rc = pb_put_tag(&b, 1, PB_VARINT) | pb_put_varint(&b, (uint64_t)code);
        if (why)
            rc |= pb_put_bytes(&b, 2, why, strlen(why));
    } else {
        rc = fl_buf_printf(&b, "{\"code\":%d%s%s%s}", code, why ? ",\"message\":\"" : "",
                           why ? why : "", why ? "\"" : "");
    }
    if (rc < 0)
        fl_rpc_fail(call, "out of memory");
    else if (call->req.codec == FL_RPC_PROTO)
        fl_rpc_reply(call, b.data, b.len);
    else
        fl_rpc_reply_json(call, b.data, b.len);
    fl_buf_free(&b);
}

static void st_rpc_status(fl_rpc_call_t *call)
{
    st_rpc(call, false);
}

static void st_rpc_ready(fl_rpc_call_t *call)
{
    st_rpc(call, true);
}

static const fl_rpc_method_t st_methods[] = {
    {"status.Status", st_rpc_status},
    {"status.Ready", st_rpc_ready},
};

/* Everything off: the listener, status.* on rpc (NULL: the server is gone). */
static void st_off(fl_rpc_server_t *rpc)
{
    if (rpc && st.rpc)
        fl_rpc_server_remove(rpc, st_methods);
    fl_mhttp_free(st.http);
    free(st.address);
    bool stopping = st.stopping;
    memset(&st, 0, sizeof(st));
    st.stopping = stopping;
}

int fl_status_prepare(fl_loop_t *loop, const fl_conf_t *c, fl_conf_err_t *err)
{
    fl_status_abort();
    if (c->status.enabled &&
        (!st.http || !st.address || strcmp(st.address, c->status.address) != 0)) {
        char ebuf[300];
        st.next_http = fl_mhttp_listen(loop, c->status.address, c->status.check_timeout_ms, st_http,
                                       NULL, ebuf, sizeof(ebuf));
        if (!st.next_http)
            return fl_conf_error(err, "status.address %s", ebuf);
    }
    st.prepared = true;
    return 0;
}

void fl_status_commit(fl_rpc_server_t *rpc, const fl_conf_t *c)
{
    if (!st.prepared)
        return;
    st.prepared = false;
    if (!c->status.enabled) {
        if (st.on)
            fl_logn(FL_LOG_INFO, "status", "the status section is gone: health checks closed");
        st_off(rpc);
        return;
    }
    bool fresh = !st.on;
    st.on = true;
    st.jobs = c->jobs.enabled && c->jobs.has_pool;
    st.pipelines = c->jobs.enabled;
    st.unavailable = c->status.unavailable_status_code;
    if (st.next_http) {
        fl_mhttp_free(st.http); /* the old address closes */
        st.http = st.next_http;
        st.next_http = NULL;
        free(st.address);
        st.address = strdup(c->status.address);
        fl_logn(fresh ? FL_LOG_DEBUG : FL_LOG_INFO, "status", "health checks at http://%s/health",
                c->status.address);
    } else if (st.timeout_ms != c->status.check_timeout_ms) {
        fl_mhttp_set_timeout(st.http, c->status.check_timeout_ms);
    }
    st.timeout_ms = c->status.check_timeout_ms;
    if (rpc && !st.rpc) {
        st.rpc = fl_rpc_server_add(rpc, st_methods, FL_ARRAY_SIZE(st_methods), NULL) == 0;
        if (!st.rpc)
            fl_logn(FL_LOG_WARN, "status", "status.* not registered on RPC: out of memory");
    }
}

void fl_status_abort(void)
{
    fl_mhttp_free(st.next_http);
    st.next_http = NULL;
    st.prepared = false;
}

int fl_status_start(fl_rpc_server_t *rpc, fl_loop_t *loop, const fl_conf_t *c, fl_conf_err_t *err)
{
    if (!c->status.enabled)
        return 0;
    st.stopping = false;
    if (fl_status_prepare(loop, c, err) < 0)
        return -1;
    fl_status_commit(rpc, c);
    return 0;
}

void fl_status_stop(void)
{
    fl_status_abort();
    st_off(NULL);
    st.stopping = false;
}
