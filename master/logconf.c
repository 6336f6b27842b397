#include <stdio.h>
#include <stdlib.h>

#include "log.h"
#include "logconf.h"

/* The logs section (spec §2.4) into the logger; every process forked later inherits it. */
int fl_conf_apply_logs(const fl_conf_t *c)
{
    fl_log_opts_t root = {.mode = c->logs.mode,
                          .level = c->logs.level,
                          .encoding = c->logs.encoding,
                          .output = c->logs.output,
                          .noutput = c->logs.noutput,
                          .err_output = c->logs.err_output,
                          .nerr_output = c->logs.nerr_output};
    fl_log_channel_t *ch = calloc(c->logs.nchannels + 1, sizeof(*ch));
    if (!ch)
        return -1;
    for (size_t i = 0; i < c->logs.nchannels; i++) {
        const struct fl_conf_log_channel *k = &c->logs.channels[i];
        ch[i] = (fl_log_channel_t){k->name,
                                   {k->mode && *k->mode ? k->mode : NULL, k->level, k->encoding,
                                    k->output, k->noutput, k->err_output, k->nerr_output}};
    }
    char err[600];
    int rc = fl_log_configure(&root, ch, c->logs.nchannels, err, sizeof(err));
    free(ch);
    if (rc < 0)
        fprintf(stderr, "%s\n", err);
    return rc;
}

