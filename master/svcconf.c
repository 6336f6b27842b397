/* Decoding of the sections of the master's services: kv (§2.10), metrics (§2.8), status (§2.7).
 * Kept apart from config.c, which calls fl_conf_services() after its own sections. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "config.h"

static int svc_oom(fl_conf_err_t *err)
{
    return fl_conf_error(err, "out of memory");
}

static int svc_default(char **s, const char *def, fl_conf_err_t *err)
{
    if (*s && **s)
        return 0;
    free(*s);
    *s = strdup(def);
    return *s ? 0 : svc_oom(err);
}

static int svc_double(const fl_cnode_t *n, double *v, fl_conf_err_t *err)
{
    char *end;
    if (n->type != FL_CNODE_SCALAR || !n->value[0])
        return fl_cnode_error_value(n, err, "expected a number");
    errno = 0;
    *v = strtod(n->value, &end);
    if (*end || errno == ERANGE)
        return fl_cnode_error_value(n, err, "expected a number");
    return 0;
}

/* ---- kv ---- */

static int svc_kv_redis(struct fl_conf_kv *k, const fl_cnode_t *cfg, fl_conf_err_t *err)
{
    k->dial_timeout_ms = 5000;
    k->read_timeout_ms = 3000;
    k->write_timeout_ms = -1;
    if (fl_cget_strlist(cfg, "addrs", &k->addrs, &k->naddrs, err) < 0 ||
        fl_cget_str(cfg, "username", &k->username, err) < 0 ||
        fl_cget_str(cfg, "password", &k->password, err) < 0 ||
        fl_cget_int(cfg, "db", &k->db, err) < 0 ||
        fl_cget_duration_ms(cfg, "dial_timeout", &k->dial_timeout_ms, err) < 0 ||
        fl_cget_duration_ms(cfg, "read_timeout", &k->read_timeout_ms, err) < 0 ||
        fl_cget_duration_ms(cfg, "write_timeout", &k->write_timeout_ms, err) < 0 ||
        fl_cget_str(cfg, "tls.root_ca", &k->tls_root_ca, err) < 0 ||
        fl_cget_str(cfg, "tls.cert", &k->tls_cert, err) < 0 ||
        fl_cget_str(cfg, "tls.key", &k->tls_key, err) < 0)
        return -1;
    if (k->write_timeout_ms < 0)
        k->write_timeout_ms = k->read_timeout_ms; /* upstream: same as read */
    /* cluster (several addrs) and sentinel (master_name) are upstream's, not ours */
    const fl_cnode_t *mn = fl_cnode_get(cfg, "master_name");
    if (mn && mn->type == FL_CNODE_SCALAR && mn->value[0])
        return fl_cnode_error(mn, err, "redis sentinel is not supported: forkline supports one "
                                       "redis node; give its address in addrs");
    if (k->naddrs > 1)
        return fl_cnode_error(fl_cnode_get(cfg, "addrs"), err,
                              "several addresses mean a redis cluster: forkline supports one "
                              "redis node; give one address");
    if (!k->naddrs) {
        fl_strlist_free(k->addrs);
        k->addrs = calloc(2, sizeof(char *));
        if (!k->addrs || !(k->addrs[0] = strdup("localhost:6379")))
            return svc_oom(err);
        k->naddrs = 1;
    }
    return 0;
}

static int svc_kv_one(struct fl_conf_kv *k, const fl_cnode_t *st, const fl_cnode_t *root,
                      fl_conf_err_t *err)
{
    if (st->type != FL_CNODE_MAP)
        return fl_cnode_error(st, err, "expected a storage section (driver, config)");
    if (!(k->name = strdup(st->key)))
        return svc_oom(err);
    if (fl_cget_str(st, "driver", &k->driver, err) < 0)
        return -1;
    if (!k->driver || !*k->driver)
        return fl_cnode_error(st, err, "driver is required (memory or redis)");
    const fl_cnode_t *cfg = NULL;
    if (fl_cget_map(st, "config", &cfg, err) < 0)
        return -1;
    if (!cfg && fl_cget_map(root, st->key, &cfg, err) < 0) /* §2.10: the root section fallback */
        return -1;
    if (strcasecmp(k->driver, "memory") == 0)
        return 0;
    if (strcasecmp(k->driver, "redis") == 0)
        return svc_kv_redis(k, cfg, err);
    const fl_cnode_t *d = fl_cnode_get(st, "driver");
    return fl_cnode_error_value(d ? d : st, err,
                                "unsupported kv driver (forkline has memory and redis)");
}

static int svc_kv(fl_conf_t *c, const fl_cnode_t *root, fl_conf_err_t *err)
{
    const fl_cnode_t *sec = NULL;
    if (fl_cget_map(root, "kv", &sec, err) < 0)
        return -1;
    if (!sec || !sec->n)
        return 0;
    c->kv.storages = calloc(sec->n, sizeof(*c->kv.storages));
    if (!c->kv.storages)
        return svc_oom(err);
    for (size_t i = 0; i < sec->n; i++)
        if (svc_kv_one(&c->kv.storages[c->kv.n++], sec->items[i], root, err) < 0)
            return -1;
    return 0;
}

/* ---- metrics ---- */

static int svc_buckets(struct fl_conf_collector *k, const fl_cnode_t *col, fl_conf_err_t *err)
{
    const fl_cnode_t *b = fl_cnode_get(col, "buckets");
    if (!b)
        return 0;
    if (b->type != FL_CNODE_SEQ)
        return fl_cnode_error(b, err, "expected a list of numbers");
    k->buckets = calloc(b->n ? b->n : 1, sizeof(double));
    if (!k->buckets)
        return svc_oom(err);
    for (size_t i = 0; i < b->n; i++)
        if (svc_double(b->items[i], &k->buckets[k->nbuckets++], err) < 0)
            return -1;
    return 0;
}

static int svc_objective(struct fl_conf_collector *k, const fl_cnode_t *n, fl_conf_err_t *err)
{
    char *end;
    double q = strtod(n->key, &end);
    if (*end || !(q > 0 && q < 1))
        return fl_cnode_error(n, err, "a quantile is a number in (0, 1)");
    k->objectives[2 * k->nobjectives] = q;
    if (svc_double(n, &k->objectives[2 * k->nobjectives + 1], err) < 0)
        return -1;
    k->nobjectives++;
    return 0;
}

/* objectives: {0.5: 0.05, ...} or [{0.5: 0.05}, ...] (the sample config's form). */
static int svc_objectives(struct fl_conf_collector *k, const fl_cnode_t *col, fl_conf_err_t *err)
{
    const fl_cnode_t *o = fl_cnode_get(col, "objectives");
    if (!o)
        return 0;
    size_t total = 0;
    if (o->type == FL_CNODE_MAP)
        total = o->n;
    else if (o->type == FL_CNODE_SEQ)
        for (size_t i = 0; i < o->n; i++)
            total += o->items[i]->type == FL_CNODE_MAP ? o->items[i]->n : 0;
    else
        return fl_cnode_error(o, err, "expected a map of quantile: error");
    k->objectives = calloc(total ? 2 * total : 1, sizeof(double));
    if (!k->objectives)
        return svc_oom(err);
    for (size_t i = 0; i < o->n; i++) {
        const fl_cnode_t *m = o->type == FL_CNODE_MAP ? o : o->items[i];
        if (m->type != FL_CNODE_MAP)
            return fl_cnode_error(m, err, "expected quantile: error");
        size_t from = m == o ? i : 0, to = m == o ? i + 1 : m->n;
        for (size_t j = from; j < to; j++)
            if (svc_objective(k, m->items[j], err) < 0)
                return -1;
    }
    return 0;
}

static int svc_collector(struct fl_conf_collector *k, const fl_cnode_t *col, fl_conf_err_t *err)
{
    static const char *const types[] = {"counter", "gauge", "histogram", "summary", NULL};
    if (col->type != FL_CNODE_MAP)
        return fl_cnode_error(col, err, "expected a collector (type, help, labels, ...)");
    int t = -1;
    if (!(k->name = strdup(col->key)))
        return svc_oom(err);
    if (fl_cget_enum(col, "type", types, &t, err) < 0)
        return -1;
    if (t < 0)
        return fl_cnode_error(col, err, "type is required (counter, gauge, histogram, summary)");
    if (!(k->type = strdup(types[t])) || fl_cget_str(col, "help", &k->help, err) < 0 ||
        fl_cget_str(col, "namespace", &k->namespace_, err) < 0 ||
        fl_cget_str(col, "subsystem", &k->subsystem, err) < 0 ||
        fl_cget_strlist(col, "labels", &k->labels, &k->nlabels, err) < 0 ||
        svc_buckets(k, col, err) < 0 || svc_objectives(k, col, err) < 0)
        return k->type ? -1 : svc_oom(err);
    return 0;
}

static int svc_metrics(fl_conf_t *c, const fl_cnode_t *root, fl_conf_err_t *err)
{
    const fl_cnode_t *sec = NULL, *col = NULL;
    if (fl_cget_map(root, "metrics", &sec, err) < 0)
        return -1;
    c->metrics.enabled = fl_cnode_get(root, "metrics") != NULL;
    if (!c->metrics.enabled)
        return 0;
    if (fl_cget_str(sec, "address", &c->metrics.address, err) < 0 ||
        svc_default(&c->metrics.address, "127.0.0.1:2112", err) < 0 ||
        fl_cget_map(sec, "collect", &col, err) < 0)
        return -1;
    if (!col || !col->n)
        return 0;
    c->metrics.collect = calloc(col->n, sizeof(*c->metrics.collect));
    if (!c->metrics.collect)
        return svc_oom(err);
    for (size_t i = 0; i < col->n; i++)
        if (svc_collector(&c->metrics.collect[c->metrics.ncollect++], col->items[i], err) < 0)
            return -1;
    return 0;
}

/* ---- status ---- */

static int svc_status(fl_conf_t *c, const fl_cnode_t *root, fl_conf_err_t *err)
{
    const fl_cnode_t *sec = NULL;
    if (fl_cget_map(root, "status", &sec, err) < 0)
        return -1;
    c->status.enabled = fl_cnode_get(root, "status") != NULL;
    c->status.unavailable_status_code = 503;
    c->status.check_timeout_ms = 60000;
    if (!c->status.enabled)
        return 0;
    int secs = 60;
    if (fl_cget_str(sec, "address", &c->status.address, err) < 0 ||
        fl_cget_int(sec, "unavailable_status_code", &c->status.unavailable_status_code, err) < 0 ||
        fl_cget_int(sec, "check_timeout", &secs, err) < 0)
        return -1;
    if (!c->status.address || !*c->status.address)
        return fl_cnode_error(fl_cnode_get(root, "status"), err, "address is required");
    if (c->status.unavailable_status_code < 100 || c->status.unavailable_status_code > 999)
        return fl_cnode_error_value(fl_cnode_get(sec, "unavailable_status_code"), err,
                                    "expected an HTTP status code");
    c->status.check_timeout_ms = secs > 0 ? (int64_t)secs * 1000 : 60000;
    return 0;
}

int fl_conf_services(fl_conf_t *c, const fl_cnode_t *root, fl_conf_err_t *err)
{
    if (svc_kv(c, root, err) < 0 || svc_metrics(c, root, err) < 0 || svc_status(c, root, err) < 0)
        return -1;
    return 0;
}

void fl_conf_services_free(fl_conf_t *c)
{
    for (size_t i = 0; i < c->kv.n; i++) {
        struct fl_conf_kv *k = &c->kv.storages[i];
        free(k->name);
        free(k->driver);
        fl_strlist_free(k->addrs);
        free(k->username);
        free(k->password);
        free(k->tls_root_ca);
        free(k->tls_cert);
        free(k->tls_key);
    }
    free(c->kv.storages);
    free(c->metrics.address);
    for (size_t i = 0; i < c->metrics.ncollect; i++) {
        struct fl_conf_collector *k = &c->metrics.collect[i];
        free(k->name);
        free(k->type);
        free(k->help);
        free(k->namespace_);
        free(k->subsystem);
        fl_strlist_free(k->labels);
        free(k->buckets);
        free(k->objectives);
    }
    free(c->metrics.collect);
    free(c->status.address);
}
