/* See spare.h. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "spare.h"

#define SPARE_PERIOD_NS 200000000LL

/* The "cpu " line: user nice system idle iowait irq softirq steal (guest time is already in
 * user). 0, or -1 when it cannot be read. */
static int spare_read(int fd, uint64_t *idle, uint64_t *total)
{
    char buf[512];
    ssize_t n = pread(fd, buf, sizeof(buf) - 1, 0);
    if (n <= 0)
        return -1;
    buf[n] = 0;
    unsigned long long v[8] = {0};
    if (sscanf(buf, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3],
               &v[4], &v[5], &v[6], &v[7]) < 4)
        return -1;
    *idle = v[3] + v[4];
    *total = 0;
    for (int i = 0; i < 8; i++)
        *total += v[i];
    return 0;
}

void fl_spare_init(fl_spare_t *s, fl_loop_t *loop)
{
    *s = (fl_spare_t){.loop = loop, .ok = true};
    s->fd = open("/proc/stat", O_RDONLY | O_CLOEXEC);
}

void fl_spare_close(fl_spare_t *s)
{
    if (s->fd >= 0)
        close(s->fd);
    s->fd = -1;
}

bool fl_spare_decide(uint64_t d_idle, uint64_t d_total, int64_t wall_ns, int64_t spun_ns)
{
    if (!d_total || wall_ns <= 0)
        return false;
    long hz = sysconf(_SC_CLK_TCK);
    double ncpu = (double)d_total / (double)hz / ((double)wall_ns / 1e9);
    double idle_cpus = ncpu * (double)d_idle / (double)d_total + (double)spun_ns / (double)wall_ns;
    return idle_cpus >= 0.5;
}

bool fl_spare_cpu(void *data)
{
    fl_spare_t *s = data;
    if (s->fd < 0)
        return false;
    int64_t now = fl_now_ns();
    if (s->at_ns && now - s->at_ns < SPARE_PERIOD_NS)
        return s->ok;
    uint64_t idle, total;
    if (spare_read(s->fd, &idle, &total) < 0) {
        fl_spare_close(s);
        return false;
    }
    int64_t spun = fl_loop_spun_ns(s->loop);
    if (s->at_ns)
        s->ok =
            fl_spare_decide(idle - s->idle, total - s->total, now - s->at_ns, spun - s->spun_ns);
    s->at_ns = now;
    s->idle = idle;
    s->total = total;
    s->spun_ns = spun;
    return s->ok;
}
