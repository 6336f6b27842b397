/* See metrics.h. */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "log.h"
#include "metrics.h"
#include "mhttp.h"
#include "srvmetrics.h"

static const double m_def_buckets[] = {.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10};
static const char *const m_type_names[] = {"counter", "gauge", "histogram", "summary"};
static const char *const m_op_names[] = {"Add", "Sub", "Set", "Observe"};

typedef struct m_series {
    fl_hnode_t h; /* key: the label values, each prefixed by its length (unambiguous) */
    struct m_series *next;
    fl_slice_t *vals; /* into key */
    double value, sum;
    uint64_t count;
    uint64_t *bucket; /* histogram: per bucket, not cumulative */
    double *window;   /* summary: the last FL_SUMMARY_WINDOW observations */
    size_t wn, wpos;
    char data[];
} m_series_t;

typedef struct m_coll {
    fl_hnode_t h; /* key: the name given */
    struct m_coll *next, *prev;
    char *name, *fq, *help;
    int type;
    char **labels;
    size_t nlabels;
    double *buckets, *obj;
    size_t nb, nobj;
    fl_hmap_t series;
    m_series_t *first, *last;
} m_coll_t;

void fl_metrics_init(fl_metrics_t *m)
{
    memset(m, 0, sizeof(*m));
}

/* ---- names ---- */

static bool m_valid_name(const char *s, bool label)
{
    if (!*s || (label && s[0] == '_' && s[1] == '_'))
        return false;
    for (const char *p = s; *p; p++) {
        char c = *p;
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
                  (!label && c == ':') || (p > s && c >= '0' && c <= '9');
        if (!ok)
            return false;
    }
    return true;
}

static char *m_fqname(const fl_metric_desc_t *d)
{
    const char *parts[] = {d->namespace_, d->subsystem, d->name};
    fl_buf_t b = {0};
    for (size_t i = 0; i < 3; i++) {
        if (!parts[i] || !*parts[i])
            continue;
        if ((b.len && fl_buf_puts(&b, "_") < 0) || fl_buf_puts(&b, parts[i]) < 0) {
            fl_buf_free(&b);
            return NULL;
        }
    }
    if (fl_buf_append(&b, "", 1) < 0) {
        fl_buf_free(&b);
        return NULL;
    }
    return b.data;
}

/* ---- collectors ---- */

static void m_series_free(fl_hnode_t *n, void *arg)
{
    (void)arg;
    m_series_t *s = (m_series_t *)n;
    free(s->vals);
    free(s->bucket);
    free(s->window);
    free(s);
}

static void m_coll_free(m_coll_t *c)
{
    fl_hmap_clear(&c->series, m_series_free, NULL);
    fl_hmap_free(&c->series);
    free(c->name);
    free(c->fq);
    free(c->help);
    fl_strlist_free(c->labels);
    free(c->buckets);
    free(c->obj);
    free(c);
}

static m_coll_t *m_find(const fl_metrics_t *m, const char *name)
{
    return (m_coll_t *)fl_hmap_get(&m->by_name, name, strlen(name));
}

static m_series_t *m_series(m_coll_t *c, const char *const *vals, size_t n)
{
    fl_buf_t key = {0};
    for (size_t i = 0; i < n; i++) {
        uint32_t len = (uint32_t)strlen(vals[i]);
        if (fl_buf_append(&key, &len, sizeof(len)) < 0 || fl_buf_append(&key, vals[i], len) < 0) {
            fl_buf_free(&key);
            return NULL;
        }
    }
    fl_hnode_t *hit = fl_hmap_get(&c->series, key.data ? key.data : "", key.len);
    if (hit) {
        fl_buf_free(&key);
        return (m_series_t *)hit;
    }
    m_series_t *s = calloc(1, sizeof(*s) + key.len);
    if (!s) {
        fl_buf_free(&key);
        return NULL;
    }
    if (key.len)
        memcpy(s->data, key.data, key.len);
    fl_buf_free(&key);
    s->h.key = s->data;
    s->h.klen = 0;
    for (size_t i = 0; i < n; i++)
        s->h.klen += sizeof(uint32_t) + strlen(vals[i]);
    s->vals = n ? calloc(n, sizeof(*s->vals)) : NULL;
    if (c->type == FL_M_HISTOGRAM)
        s->bucket = calloc(c->nb + 1, sizeof(*s->bucket));
    if (c->type == FL_M_SUMMARY)
        s->window = calloc(FL_SUMMARY_WINDOW, sizeof(*s->window));
    if ((n && !s->vals) || (c->type == FL_M_HISTOGRAM && !s->bucket) ||
        (c->type == FL_M_SUMMARY && !s->window) || fl_hmap_put(&c->series, &s->h) < 0) {
        m_series_free(&s->h, NULL);
        return NULL;
    }
    size_t off = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t len;
        memcpy(&len, s->data + off, sizeof(len));
        s->vals[i] = fl_slice(s->data + off + sizeof(len), len);
        off += sizeof(len) + len;
    }
    if (c->last)
        c->last->next = s;
    else
        c->first = s;
    c->last = s;
    return s;
}

static int m_desc_check(const fl_metric_desc_t *d, const char **err)
{
    if (d->type < FL_M_COUNTER || d->type > FL_M_SUMMARY)
        *err = "unknown collector type";
    else if (!d->name || !*d->name)
        *err = "collector name is required";
    for (size_t i = 0; !*err && i < d->nlabels; i++)
        if (!m_valid_name(d->labels[i], true))
            *err = "invalid label name";
    for (size_t i = 1; !*err && i < d->nbuckets; i++)
        if (!(d->buckets[i - 1] < d->buckets[i]))
            *err = "histogram buckets must be in increasing order";
    for (size_t i = 0; !*err && i < d->nobjectives; i++)
        if (!(d->objectives[2 * i] > 0 && d->objectives[2 * i] < 1))
            *err = "summary objectives: a quantile is a number in (0, 1)";
    return *err ? -1 : 0;
}

static int m_dbl_cmp(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

int fl_metrics_declare(fl_metrics_t *m, const fl_metric_desc_t *d, char *errbuf, size_t errlen,
                       const char **err)
{
    *err = NULL;
    if (m_desc_check(d, err) < 0)
        return -1;
    if (m_find(m, d->name))
        return 0; /* upstream: declaring an existing name is a no-op */
    char *fq = m_fqname(d);
    if (!fq || !m_valid_name(fq, false)) {
        snprintf(errbuf, errlen, "\"%s\" is not a valid metric name", fq ? fq : d->name);
        free(fq);
        *err = errbuf;
        return -1;
    }
    for (m_coll_t *c = m->head; c; c = c->next) {
        if (strcmp(c->fq, fq) == 0) {
            free(fq);
            *err = "duplicate metrics collector registration attempted";
            return -1;
        }
    }
    m_coll_t *c = calloc(1, sizeof(*c));
    if (!c) {
        free(fq);
        *err = "out of memory";
        return -1;
    }
    c->fq = fq;
    c->type = d->type;
    bool oom = !(c->name = strdup(d->name)) || !(c->help = strdup(d->help ? d->help : ""));
    if (d->nlabels && !oom && (c->labels = calloc(d->nlabels + 1, sizeof(char *))))
        for (size_t i = 0; i < d->nlabels && !oom; i++, c->nlabels++)
            oom = !(c->labels[i] = strdup(d->labels[i]));
    oom = oom || (d->nlabels && !c->labels);
    if (d->type == FL_M_HISTOGRAM && !oom) {
        const double *b = d->nbuckets ? d->buckets : m_def_buckets;
        c->nb = d->nbuckets ? d->nbuckets : FL_ARRAY_SIZE(m_def_buckets);
        if ((c->buckets = malloc(c->nb * sizeof(double))))
            memcpy(c->buckets, b, c->nb * sizeof(double));
        oom = !c->buckets;
    }
    if (d->type == FL_M_SUMMARY && d->nobjectives && !oom) {
        c->nobj = d->nobjectives;
        if ((c->obj = malloc(2 * c->nobj * sizeof(double)))) {
            memcpy(c->obj, d->objectives, 2 * c->nobj * sizeof(double));
            qsort(c->obj, c->nobj, 2 * sizeof(double), m_dbl_cmp); /* by quantile */
        }
        oom = !c->obj;
    }
    c->h.key = c->name;
    c->h.klen = c->name ? strlen(c->name) : 0;
    /* an unlabelled collector shows up at once, with 0 */
    if (oom || (!c->nlabels && !m_series(c, NULL, 0)) || fl_hmap_put(&m->by_name, &c->h) < 0) {
        m_coll_free(c);
        *err = "out of memory";
        return -1;
    }
    c->prev = m->tail;
    if (m->tail)
        ((m_coll_t *)m->tail)->next = c;
    else
        m->head = c;
    m->tail = c;
    return 0;
}

int fl_metrics_update(fl_metrics_t *m, int op, const char *name, double value,
                      const char *const *labels, size_t nlabels, char *errbuf, size_t errlen)
{
    m_coll_t *c = m_find(m, name);
    if (!c) {
        snprintf(errbuf, errlen, "undefined collector %s%s", name,
                 op == FL_M_ADD ? ", try first Declare the desired collector" : "");
        return -1;
    }
    bool ok = op == FL_M_ADD       ? c->type == FL_M_COUNTER || c->type == FL_M_GAUGE
              : op == FL_M_OBSERVE ? c->type == FL_M_HISTOGRAM || c->type == FL_M_SUMMARY
                                   : c->type == FL_M_GAUGE;
    if (!ok) {
        snprintf(errbuf, errlen, "collector %s does not support method %s", name, m_op_names[op]);
        return -1;
    }
    if (c->nlabels && !nlabels) {
        snprintf(errbuf, errlen, "required labels for collector %s", name);
        return -1;
    }
    if (nlabels != c->nlabels) {
        snprintf(errbuf, errlen,
                 "inconsistent label cardinality: expected %zu label values but got %zu",
                 c->nlabels, nlabels);
        return -1;
    }
    if (c->type == FL_M_COUNTER && value < 0) {
        snprintf(errbuf, errlen, "counter cannot decrease in value");
        return -1;
    }
    m_series_t *s = m_series(c, labels, nlabels);
    if (!s) {
        snprintf(errbuf, errlen, "out of memory");
        return -1;
    }
    switch (op) {
    case FL_M_ADD:
        s->value += value;
        break;
    case FL_M_SUB:
        s->value -= value;
        break;
    case FL_M_SET:
        s->value = value;
        break;
    default:
        s->sum += value;
        s->count++;
        if (c->type == FL_M_HISTOGRAM) {
            size_t i = 0;
            while (i < c->nb && value > c->buckets[i])
                i++;
            s->bucket[i]++; /* i == nb: only +Inf */
        } else {
            s->window[s->wpos] = value;
            s->wpos = (s->wpos + 1) % FL_SUMMARY_WINDOW;
            if (s->wn < FL_SUMMARY_WINDOW)
                s->wn++;
        }
        break;
    }
    return 0;
}

int fl_metrics_unregister(fl_metrics_t *m, const char *name)
{
    m_coll_t *c = m_find(m, name);
    if (!c)
        return 0;
    fl_hmap_del(&m->by_name, &c->h);
    if (c->prev)
        c->prev->next = c->next;
    else
        m->head = c->next;
    if (c->next)
        c->next->prev = c->prev;
    else
        m->tail = c->prev;
    m_coll_free(c);
    return 1;
}

void fl_metrics_destroy(fl_metrics_t *m)
{
    while (m->head)
        fl_metrics_unregister(m, ((m_coll_t *)m->head)->name);
    fl_hmap_free(&m->by_name);
}

/* ---- text exposition ---- */

/* Go's strconv.FormatFloat(v, 'g', -1, 64) in spirit: the shortest text that reads back. */
static int m_put_float(fl_buf_t *b, double v)
{
    if (isnan(v))
        return fl_buf_puts(b, "NaN");
    if (isinf(v))
        return fl_buf_puts(b, v > 0 ? "+Inf" : "-Inf");
    char t[40];
    for (int p = 1; p <= 17; p++) {
        snprintf(t, sizeof(t), "%.*g", p, v);
        if (strtod(t, NULL) == v)
            break;
    }
    return fl_buf_puts(b, t);
}

static int m_put_escaped(fl_buf_t *b, const char *s, size_t n, bool quote)
{
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        char c = s[i];
        if (c == '\\')
            rc = fl_buf_puts(b, "\\\\");
        else if (c == '\n')
            rc = fl_buf_puts(b, "\\n");
        else if (c == '"' && quote)
            rc = fl_buf_puts(b, "\\\"");
        else
            rc = fl_buf_append(b, &c, 1);
    }
    return rc;
}

/* name{l="v",...,extra="x"} value\n; extra may be NULL. */
static int m_put_sample(fl_buf_t *b, const m_coll_t *c, const char *suffix, const m_series_t *s,
                        const char *extra, double xv, double v)
{
    int rc = fl_buf_puts(b, c->fq);
    rc |= fl_buf_puts(b, suffix);
    if (c->nlabels || extra) {
        rc |= fl_buf_puts(b, "{");
        for (size_t i = 0; i < c->nlabels; i++) {
            rc |= fl_buf_printf(b, "%s%s=\"", i ? "," : "", c->labels[i]);
            rc |= m_put_escaped(b, s->vals[i].base, s->vals[i].len, true);
            rc |= fl_buf_puts(b, "\"");
        }
        if (extra) {
            rc |= fl_buf_printf(b, "%s%s=\"", c->nlabels ? "," : "", extra);
            rc |= m_put_float(b, xv);
            rc |= fl_buf_puts(b, "\"");
        }
        rc |= fl_buf_puts(b, "}");
    }
    rc |= fl_buf_puts(b, " ");
    rc |= m_put_float(b, v);
    rc |= fl_buf_puts(b, "\n");
    return rc ? -1 : 0;
}

static double m_quantile(const m_series_t *s, double q)
{
    if (!s->wn)
        return NAN;
    double *v = malloc(s->wn * sizeof(double));
    if (!v)
        return NAN;
    memcpy(v, s->window, s->wn * sizeof(double));
    qsort(v, s->wn, sizeof(double), m_dbl_cmp);
    size_t i = (size_t)(q * (double)(s->wn - 1) + 0.5);
    double r = v[i < s->wn ? i : s->wn - 1];
    free(v);
    return r;
}

static int m_render_series(fl_buf_t *b, const m_coll_t *c, const m_series_t *s)
{
    int rc = 0;
    switch (c->type) {
    case FL_M_COUNTER:
    case FL_M_GAUGE:
        return m_put_sample(b, c, "", s, NULL, 0, s->value);
    case FL_M_HISTOGRAM: {
        uint64_t cum = 0;
        for (size_t i = 0; i < c->nb; i++) {
            cum += s->bucket[i];
            rc |= m_put_sample(b, c, "_bucket", s, "le", c->buckets[i], (double)cum);
        }
        rc |= m_put_sample(b, c, "_bucket", s, "le", INFINITY, (double)s->count);
        break;
    }
    default:
        for (size_t i = 0; i < c->nobj; i++)
            rc |=
                m_put_sample(b, c, "", s, "quantile", c->obj[2 * i], m_quantile(s, c->obj[2 * i]));
        break;
    }
    rc |= m_put_sample(b, c, "_sum", s, NULL, 0, s->sum);
    rc |= m_put_sample(b, c, "_count", s, NULL, 0, (double)s->count);
    return rc ? -1 : 0;
}

int fl_metrics_render(const fl_metrics_t *m, fl_buf_t *out)
{
    int rc = 0;
    for (const m_coll_t *c = m->head; c && rc == 0; c = c->next) {
        rc |= fl_buf_printf(out, "# HELP %s ", c->fq);
        rc |= m_put_escaped(out, c->help, strlen(c->help), false);
        rc |= fl_buf_printf(out, "\n# TYPE %s %s\n", c->fq, m_type_names[c->type]);
        for (const m_series_t *s = c->first; s && rc == 0; s = s->next)
            rc |= m_render_series(out, c, s);
    }
    return rc ? -1 : 0;
}

/* ---- the service ---- */

/* A collector of metrics.collect: the config declared it, so a reload may remove or redeclare
 * it (collectors declared over RPC are the application's and stay). */
typedef struct {
    char *name, *key; /* key: its description (m_coll_key) */
} m_owned_t;

static struct {
    bool on;
    fl_metrics_t reg;
    fl_mhttp_t *http;
    char *address; /* where http listens */
    bool rpc;      /* metrics.* on the RPC server */
    m_owned_t *owned;
    size_t nowned;
    bool prepared;         /* a reload's prepare ran: commit or abort it */
    fl_mhttp_t *next_http; /* the reload's new listener */
} ms;

static void m_http(void *ctx, fl_slice_t method, fl_slice_t path, fl_slice_t query,
                   fl_mhttp_resp_t *r)
{
    (void)ctx;
    (void)method;
    (void)query;
    if (!fl_slice_eq(path, "/metrics", 8)) {
        r->status = 404;
        fl_buf_puts(&r->body, "404 page not found\n");
        return;
    }
    r->ctype = "text/plain; version=0.0.4; charset=utf-8";
    if (fl_srvm_render(&r->body) < 0 || fl_metrics_render(&ms.reg, &r->body) < 0) {
        r->status = 500;
        r->body.len = 0;
        fl_buf_puts(&r->body, "out of memory\n");
    }
}

static int m_type_of(const char *s)
{
    for (int i = 0; i < 4; i++)
        if (s && strcasecmp(s, m_type_names[i]) == 0)
            return i;
    return -1;
}

/* A JSON array of strings into a malloc'd vector of borrowed pointers. -1 if not strings. */
static int m_json_strings(const cJSON *a, const char ***out, size_t *n)
{
    *out = NULL;
    *n = 0;
    if (!a || cJSON_IsNull(a))
        return 0;
    if (!cJSON_IsArray(a))
        return -1;
    int len = cJSON_GetArraySize(a);
    if (len && !(*out = calloc((size_t)len, sizeof(char *))))
        return -1;
    for (const cJSON *e = a->child; e; e = e->next) {
        if (!cJSON_IsString(e))
            return -1;
        (*out)[(*n)++] = e->valuestring;
    }
    return 0;
}

static const char *m_json_str(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItem(o, key);
    return cJSON_IsString(v) ? v->valuestring : "";
}

static cJSON *m_arg(fl_rpc_call_t *call)
{
    if (call->req.codec != FL_RPC_JSON) {
        fl_rpc_reply_json(call, "true", 4); /* the Go codec's own error for this codec */
        return NULL;
    }
    cJSON *j = cJSON_ParseWithLength(call->req.arg.base, call->req.arg.len);
    if (!j)
        fl_rpc_fail(call, "json: cannot unmarshal the argument: invalid JSON");
    return j;
}

static void m_declare(fl_rpc_call_t *call)
{
    cJSON *j = m_arg(call);
    if (!j)
        return;
    const cJSON *col = cJSON_GetObjectItem(j, "collector");
    const char **labels = NULL;
    double *buckets = NULL, *obj = NULL;
    size_t nlabels = 0, nb = 0, nobj = 0;
    const cJSON *b = cJSON_GetObjectItem(col, "buckets"),
                *o = cJSON_GetObjectItem(col, "objectives");
    const char *err = NULL;
    char ebuf[300];
    if (!cJSON_IsObject(col))
        err = "collector is required";
    else if (m_json_strings(cJSON_GetObjectItem(col, "labels"), &labels, &nlabels) < 0)
        err = "labels: expected a list of strings";
    if (!err && cJSON_IsArray(b) &&
        (buckets = calloc((size_t)cJSON_GetArraySize(b) + 1, sizeof(double)))) {
        for (const cJSON *e = b->child; e && !err; e = e->next) {
            if (!cJSON_IsNumber(e))
                err = "buckets: expected numbers";
            else
                buckets[nb++] = e->valuedouble;
        }
    }
    if (!err && cJSON_IsObject(o) &&
        (obj = calloc(2 * (size_t)cJSON_GetArraySize(o) + 1, sizeof(double)))) {
        for (const cJSON *e = o->child; e && !err; e = e->next, nobj++) {
            char *end;
            obj[2 * nobj] = strtod(e->string, &end);
            obj[2 * nobj + 1] = e->valuedouble;
            if (*end || !cJSON_IsNumber(e))
                err = "objectives: expected {\"quantile\": error}";
        }
    }
    if (!err) {
        fl_metric_desc_t d = {.name = m_json_str(j, "name"),
                              .namespace_ = m_json_str(col, "namespace"),
                              .subsystem = m_json_str(col, "subsystem"),
                              .help = m_json_str(col, "help"),
                              .type = m_type_of(m_json_str(col, "type")),
                              .labels = labels,
                              .nlabels = nlabels,
                              .buckets = buckets,
                              .nbuckets = nb,
                              .objectives = obj,
                              .nobjectives = nobj};
        fl_metrics_declare(&ms.reg, &d, ebuf, sizeof(ebuf), &err);
    }
    if (err)
        fl_rpc_fail(call, "metrics_plugin_declare: %s", err);
    else
        fl_rpc_reply_json(call, "true", 4);
    free(labels);
    free(buckets);
    free(obj);
    cJSON_Delete(j);
}

static void m_update(fl_rpc_call_t *call, int op)
{
    static const char *const ops[] = {"metrics_plugin_add", "metrics_plugin_sub",
                                      "metrics_plugin_set", "metrics_plugin_observe"};
    cJSON *j = m_arg(call);
    if (!j)
        return;
    const cJSON *v = cJSON_GetObjectItem(j, "value");
    const char **labels = NULL;
    size_t n = 0;
    char ebuf[512];
    if (m_json_strings(cJSON_GetObjectItem(j, "labels"), &labels, &n) < 0)
        fl_rpc_fail(call, "%s: labels: expected a list of strings", ops[op]);
    else if (v && !cJSON_IsNumber(v))
        fl_rpc_fail(call, "%s: value: expected a number", ops[op]);
    else if (fl_metrics_update(&ms.reg, op, m_json_str(j, "name"), v ? v->valuedouble : 0, labels,
                               n, ebuf, sizeof(ebuf)) < 0)
        fl_rpc_fail(call, "%s: %s", ops[op], ebuf);
    else
        fl_rpc_reply_json(call, "true", 4);
    free(labels);
    cJSON_Delete(j);
}

static void m_add(fl_rpc_call_t *c)
{
    m_update(c, FL_M_ADD);
}
static void m_sub(fl_rpc_call_t *c)
{
    m_update(c, FL_M_SUB);
}
static void m_set(fl_rpc_call_t *c)
{
    m_update(c, FL_M_SET);
}
static void m_observe(fl_rpc_call_t *c)
{
    m_update(c, FL_M_OBSERVE);
}

static void m_unregister(fl_rpc_call_t *call)
{
    char ebuf[200];
    const char *err = NULL;
    char *name = fl_rpc_arg_string(&call->req, ebuf, sizeof(ebuf), &err);
    if (!name)
        fl_rpc_fail(call, "%s", err);
    else if (!fl_metrics_unregister(&ms.reg, name))
        fl_rpc_fail(call, "metrics_plugin_unregister: undefined collector %s", name);
    else
        fl_rpc_reply_json(call, "true", 4);
    free(name);
}

static const fl_rpc_method_t m_methods[] = {
    {"metrics.Declare", m_declare}, {"metrics.Add", m_add},
    {"metrics.Sub", m_sub},         {"metrics.Set", m_set},
    {"metrics.Observe", m_observe}, {"metrics.Unregister", m_unregister},
};

static fl_metric_desc_t m_desc_of(const struct fl_conf_collector *k)
{
    return (fl_metric_desc_t){.name = k->name,
                              .namespace_ = k->namespace_,
                              .subsystem = k->subsystem,
                              .help = k->help,
                              .type = m_type_of(k->type),
                              .labels = (const char *const *)k->labels,
                              .nlabels = k->nlabels,
                              .buckets = k->buckets,
                              .nbuckets = k->nbuckets,
                              .objectives = k->objectives,
                              .nobjectives = k->nobjectives};
}

static int m_key_str(fl_buf_t *b, const char *v)
{
    return v ? fl_buf_printf(b, "|%zu:%s", strlen(v), v) : fl_buf_puts(b, "|-");
}

/* A collector's whole description as one string: equal strings = an unchanged collector. */
static char *m_coll_key(const struct fl_conf_collector *k)
{
    fl_buf_t b = {0};
    int rc = m_key_str(&b, k->type) | m_key_str(&b, k->help) | m_key_str(&b, k->namespace_) |
             m_key_str(&b, k->subsystem) | fl_buf_printf(&b, "|%zu", k->nlabels);
    for (size_t i = 0; i < k->nlabels; i++)
        rc |= m_key_str(&b, k->labels[i]);
    rc |= fl_buf_printf(&b, "|%zu", k->nbuckets);
    for (size_t i = 0; i < k->nbuckets; i++)
        rc |= fl_buf_printf(&b, "|%.17g", k->buckets[i]);
    rc |= fl_buf_printf(&b, "|%zu", k->nobjectives);
    for (size_t i = 0; i < 2 * k->nobjectives; i++)
        rc |= fl_buf_printf(&b, "|%.17g", k->objectives[i]);
    if (rc || fl_buf_append(&b, "", 1) < 0) {
        fl_buf_free(&b);
        return NULL;
    }
    return b.data;
}

static bool m_same(const char *a, const char *b)
{
    return a && b && strcmp(a, b) == 0;
}

/* The config-owned collectors that are no longer configured as they are go, with their values
 * (a changed one is declared again, empty). Collectors declared over RPC are not looked at. */
static void m_drop_owned(const fl_conf_t *c, char **keys)
{
    size_t n = 0;
    for (size_t i = 0; i < ms.nowned; i++) {
        m_owned_t *o = &ms.owned[i];
        bool named = false, same = false;
        for (size_t j = 0; j < c->metrics.ncollect && !named; j++)
            if ((named = strcmp(o->name, c->metrics.collect[j].name) == 0))
                same = m_same(o->key, keys[j]);
        if (same && m_find(&ms.reg, o->name)) {
            ms.owned[n++] = *o;
            continue;
        }
        if (fl_metrics_unregister(&ms.reg, o->name))
            fl_logn(FL_LOG_INFO, "metrics", "collector %s: %s", o->name,
                    named ? "changed in metrics.collect: declared again" : "removed");
        free(o->name);
        free(o->key);
    }
    ms.nowned = n;
}

/* metrics.collect onto the live registry: unchanged collectors keep their values, removed ones
 * go, new ones appear. A name the application already declared over RPC stays its own. */
static void m_apply_collect(const fl_conf_t *c, bool log_new)
{
    size_t n = c->metrics.ncollect;
    char **keys = n ? calloc(n, sizeof(char *)) : NULL;
    m_owned_t *grown = realloc(ms.owned, (ms.nowned + n + 1) * sizeof(*grown));
    if ((n && !keys) || !grown) {
        free(keys);
        fl_logn(FL_LOG_WARN, "metrics", "metrics.collect not applied: out of memory");
        return;
    }
    ms.owned = grown;
    for (size_t j = 0; j < n; j++)
        keys[j] = m_coll_key(&c->metrics.collect[j]);
    m_drop_owned(c, keys);
    for (size_t j = 0; j < n; j++) {
        const struct fl_conf_collector *k = &c->metrics.collect[j];
        if (m_find(&ms.reg, k->name))
            continue; /* unchanged, or the application's */
        fl_metric_desc_t d = m_desc_of(k);
        char ebuf[300];
        const char *e = NULL;
        char *name = strdup(k->name);
        if (!name || !keys[j] || fl_metrics_declare(&ms.reg, &d, ebuf, sizeof(ebuf), &e) < 0) {
            fl_logn(FL_LOG_WARN, "metrics", "metrics.collect.%s not applied: %s", k->name,
                    e ? e : "out of memory");
            free(name);
            continue;
        }
        ms.owned[ms.nowned++] = (m_owned_t){name, keys[j]};
        keys[j] = NULL;
        if (log_new)
            fl_logn(FL_LOG_INFO, "metrics", "collector %s: added", k->name);
    }
    for (size_t j = 0; j < n; j++)
        free(keys[j]);
    free(keys);
}

/* Everything off: the listener, the registry, metrics.* on rpc (NULL: the server is gone). */
static void m_off(fl_rpc_server_t *rpc)
{
    if (rpc && ms.rpc)
        fl_rpc_server_remove(rpc, m_methods);
    ms.rpc = false;
    fl_mhttp_free(ms.http);
    ms.http = NULL;
    free(ms.address);
    ms.address = NULL;
    if (ms.on)
        fl_metrics_destroy(&ms.reg);
    for (size_t i = 0; i < ms.nowned; i++) {
        free(ms.owned[i].name);
        free(ms.owned[i].key);
    }
    free(ms.owned);
    ms.owned = NULL;
    ms.nowned = 0;
    ms.on = false;
}

int fl_metrics_prepare(fl_loop_t *loop, const fl_conf_t *c, fl_conf_err_t *err)
{
    fl_metrics_abort();
    if (c->metrics.enabled) {
        /* the collectors alone, in a scratch registry: a bad one fails the reload up front */
        fl_metrics_t scratch;
        fl_metrics_init(&scratch);
        for (size_t i = 0; i < c->metrics.ncollect; i++) {
            fl_metric_desc_t d = m_desc_of(&c->metrics.collect[i]);
            char ebuf[300];
            const char *e = NULL;
            if (fl_metrics_declare(&scratch, &d, ebuf, sizeof(ebuf), &e) < 0) {
                fl_conf_error(err, "metrics.collect.%s: %s", d.name, e);
                fl_metrics_destroy(&scratch);
                return -1;
            }
        }
        fl_metrics_destroy(&scratch);
        if (!ms.http || !m_same(ms.address, c->metrics.address)) {
            char ebuf[300];
            ms.next_http =
                fl_mhttp_listen(loop, c->metrics.address, 10000, m_http, NULL, ebuf, sizeof(ebuf));
            if (!ms.next_http)
                return fl_conf_error(err, "metrics.address %s", ebuf);
        }
    }
    ms.prepared = true;
    return 0;
}

void fl_metrics_commit(fl_rpc_server_t *rpc, const fl_conf_t *c)
{
    if (!ms.prepared)
        return;
    ms.prepared = false;
    if (!c->metrics.enabled) {
        if (ms.on)
            fl_logn(FL_LOG_INFO, "metrics", "the metrics section is gone: /metrics closed");
        m_off(rpc);
        return;
    }
    bool fresh = !ms.on;
    if (fresh) {
        fl_metrics_init(&ms.reg);
        ms.on = true;
    }
    if (ms.next_http) {
        fl_mhttp_free(ms.http); /* the old address closes; a scrape in progress there is cut */
        ms.http = ms.next_http;
        ms.next_http = NULL;
        free(ms.address);
        ms.address = strdup(c->metrics.address);
        fl_logn(fresh ? FL_LOG_DEBUG : FL_LOG_INFO, "metrics", "metrics at http://%s/metrics",
                c->metrics.address);
    }
    m_apply_collect(c, !fresh);
    if (rpc && !ms.rpc) {
        ms.rpc = fl_rpc_server_add(rpc, m_methods, FL_ARRAY_SIZE(m_methods), NULL) == 0;
        if (!ms.rpc)
            fl_logn(FL_LOG_WARN, "metrics", "metrics.* not registered on RPC: out of memory");
    }
}

void fl_metrics_abort(void)
{
    fl_mhttp_free(ms.next_http);
    ms.next_http = NULL;
    ms.prepared = false;
}

int fl_metrics_start(fl_rpc_server_t *rpc, fl_loop_t *loop, const fl_conf_t *c, fl_conf_err_t *err)
{
    if (!c->metrics.enabled)
        return 0;
    if (fl_metrics_prepare(loop, c, err) < 0)
        return -1;
    fl_metrics_commit(rpc, c);
    return 0;
}

void fl_metrics_stop(void)
{
    fl_metrics_abort();
    m_off(NULL);
}
