/* Application metrics (spec §9.3 metrics, config §2.8): a registry of Prometheus collectors -
 * counter, gauge, histogram, summary, with labels - declared in `metrics.collect` or over RPC
 * (metrics.Declare, Add, Sub, Set, Observe, Unregister; JSON), served as Prometheus text
 * exposition (format 0.0.4) at `metrics.address` + /metrics on the master's loop.
 *
 * Summaries keep the last FL_SUMMARY_WINDOW observations per series and compute their quantiles
 * at scrape time (exact over that window, instead of Prometheus' decaying CKMS streams). */
#ifndef FL_METRICS_H
#define FL_METRICS_H

#include "config.h"
#include "hmap.h"
#include "rpc.h"

#define FL_SUMMARY_WINDOW 1024

enum { FL_M_COUNTER, FL_M_GAUGE, FL_M_HISTOGRAM, FL_M_SUMMARY };

typedef struct {
    fl_hmap_t by_name; /* the name given to Declare -> collector */
    void *head, *tail; /* collectors in declaration order (the exposition's order) */
} fl_metrics_t;

/* A collector description (borrowed strings). */
typedef struct {
    const char *name, *namespace_, *subsystem, *help;
    int type;
    const char *const *labels;
    size_t nlabels;
    const double *buckets; /* NULL = Prometheus' defaults */
    size_t nbuckets;
    const double *objectives; /* quantile, error pairs */
    size_t nobjectives;
} fl_metric_desc_t;

void fl_metrics_init(fl_metrics_t *m);
void fl_metrics_destroy(fl_metrics_t *m);
/* 0 (declared, or existed already); -1 with a static or errbuf text in *err. */
int fl_metrics_declare(fl_metrics_t *m, const fl_metric_desc_t *d, char *errbuf, size_t errlen,
                       const char **err);
enum { FL_M_ADD, FL_M_SUB, FL_M_SET, FL_M_OBSERVE };
/* Applies op to the series of these label values. 0, or -1 with the error text in errbuf
 * (upstream's texts: "undefined collector N", "required labels for collector N", ...). */
int fl_metrics_update(fl_metrics_t *m, int op, const char *name, double value,
                      const char *const *labels, size_t nlabels, char *errbuf, size_t errlen);
/* 1 removed, 0 unknown name. */
int fl_metrics_unregister(fl_metrics_t *m, const char *name);
/* Appends the text exposition of every collector. 0 or -1 (out of memory). */
int fl_metrics_render(const fl_metrics_t *m, fl_buf_t *out);

/* The service: registry from c->metrics.collect, /metrics listener, metrics.* on rpc (may be
 * NULL). Nothing when the metrics section is absent. 0, or -1 with err. */
int fl_metrics_start(fl_rpc_server_t *rpc, fl_loop_t *loop, const fl_conf_t *c, fl_conf_err_t *err);
void fl_metrics_stop(void);
/* A reload: prepare checks c's collectors and opens a changed metrics.address beside the live
 * one (0, or -1 with err and nothing changed); commit switches to the new listener, applies
 * metrics.collect (unchanged collectors keep their values, removed ones go, new ones appear,
 * those declared over RPC stay) and (un)registers metrics.* on rpc as the section comes or goes;
 * abort closes what prepare opened. */
int fl_metrics_prepare(fl_loop_t *loop, const fl_conf_t *c, fl_conf_err_t *err);
void fl_metrics_commit(fl_rpc_server_t *rpc, const fl_conf_t *c);
void fl_metrics_abort(void);

#endif
