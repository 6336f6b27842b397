/* See deadline.h. */
#include <stdlib.h>

#include "deadline.h"

void fl_dl_init(fl_deadlines_t *s, fl_loop_t *loop)
{
    *s = (fl_deadlines_t){.loop = loop};
}

static void dl_set(fl_deadlines_t *s, size_t i, fl_deadline_t *d)
{
    s->h[i] = d;
    d->idx = i;
}

static void dl_up(fl_deadlines_t *s, size_t i)
{
    fl_deadline_t *d = s->h[i];
    while (i > 0 && d->when < s->h[(i - 1) / 2]->when) {
        dl_set(s, i, s->h[(i - 1) / 2]);
        i = (i - 1) / 2;
    }
    dl_set(s, i, d);
}

static void dl_down(fl_deadlines_t *s, size_t i)
{
    fl_deadline_t *d = s->h[i];
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= s->n)
            break;
        if (c + 1 < s->n && s->h[c + 1]->when < s->h[c]->when)
            c++;
        if (s->h[c]->when >= d->when)
            break;
        dl_set(s, i, s->h[c]);
        i = c;
    }
    dl_set(s, i, d);
}

static void dl_rearm(fl_deadlines_t *s);

static void dl_fire(fl_loop_t *loop, void *data)
{
    (void)loop;
    fl_deadlines_t *s = data;
    s->timer = 0;
    int64_t now = fl_now_ms();
    while (s->n && s->h[0]->when <= now) {
        fl_deadline_t *d = s->h[0];
        fl_dl_del(s, d); /* before fire: it may free d or arm it again */
        d->fire(d);
    }
    dl_rearm(s);
}

static void dl_rearm(fl_deadlines_t *s)
{
    if (!s->loop)
        return;
    if (s->n && s->timer && s->timer_for == s->h[0]->when)
        return;
    fl_timer_del(s->loop, s->timer);
    s->timer = 0;
    if (!s->n)
        return;
    int64_t delay = s->h[0]->when - fl_now_ms();
    s->timer = fl_timer_add(s->loop, delay < 0 ? 0 : delay, dl_fire, s);
    s->timer_for = s->h[0]->when;
}

int fl_dl_add(fl_deadlines_t *s, fl_deadline_t *d, int64_t when)
{
    if (d->idx != SIZE_MAX)
        fl_dl_del(s, d);
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 32;
        fl_deadline_t **h = realloc(s->h, cap * sizeof(*h));
        if (!h)
            return -1;
        s->h = h;
        s->cap = cap;
    }
    d->when = when;
    dl_set(s, s->n++, d);
    dl_up(s, d->idx);
    dl_rearm(s);
    return 0;
}

void fl_dl_del(fl_deadlines_t *s, fl_deadline_t *d)
{
    size_t i = d->idx;
    if (i == SIZE_MAX || i >= s->n || s->h[i] != d)
        return;
    d->idx = SIZE_MAX;
    fl_deadline_t *last = s->h[--s->n];
    if (i < s->n) {
        dl_set(s, i, last);
        dl_up(s, i);
        dl_down(s, last->idx);
    }
    if (s->cap > 64 && s->n < s->cap / 8) {
        fl_deadline_t **h = realloc(s->h, s->cap / 4 * sizeof(*h));
        if (h) {
            s->h = h;
            s->cap /= 4;
        }
    }
    /* the timer stays: at worst it fires early and re-arms */
}

void fl_dl_destroy(fl_deadlines_t *s)
{
    if (s->loop)
        fl_timer_del(s->loop, s->timer);
    free(s->h);
    *s = (fl_deadlines_t){0};
}
