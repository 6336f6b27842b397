/* epoll backend, #included by ev.c. */
#include <stdbool.h>
#include <sys/epoll.h>

typedef struct {
    int epfd;
    int qfd; /* the quiet set (fl_loop_quiet): -1 until first wanted */
    struct epoll_event *events;
} fl_poll_t;

static int poll_create(fl_poll_t *p, int setsize)
{
    p->qfd = -1;
    p->events = calloc((size_t)setsize, sizeof(*p->events));
    p->epfd = epoll_create1(EPOLL_CLOEXEC);
    return p->events && p->epfd >= 0 ? 0 : -1;
}

static int poll_create_quiet(fl_poll_t *p)
{
    p->qfd = epoll_create1(EPOLL_CLOEXEC);
    return p->qfd >= 0 ? 0 : -1;
}

static void poll_free(fl_poll_t *p)
{
    if (p->epfd >= 0)
        close(p->epfd);
    if (p->qfd >= 0)
        close(p->qfd);
    free(p->events);
}

static int poll_set_in(int epfd, int fd, int oldmask, int mask)
{
    struct epoll_event ee = {0};
    ee.data.fd = fd;
    if (mask & FL_EV_READ)
        ee.events |= EPOLLIN;
    if (mask & FL_EV_WRITE)
        ee.events |= EPOLLOUT;
    if (mask & FL_EV_EXCLUSIVE)
        ee.events |= EPOLLEXCLUSIVE;
    if (mask == 0)
        return epoll_ctl(epfd, EPOLL_CTL_DEL, fd, NULL);
    /* EPOLLEXCLUSIVE cannot be modified, only added: re-add such fds. */
    if (oldmask & FL_EV_EXCLUSIVE) {
        epoll_ctl(epfd, EPOLL_CTL_DEL, fd, NULL);
        oldmask = 0;
    }
    return epoll_ctl(epfd, oldmask ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, fd, &ee);
}

static int poll_set(fl_poll_t *p, int fd, int oldmask, int mask)
{
    return poll_set_in(p->epfd, fd, oldmask, mask);
}

static int poll_set_quiet(fl_poll_t *p, int fd, int oldmask, int mask)
{
    return poll_set_in(p->qfd, fd, oldmask, mask);
}

static int poll_wait(fl_poll_t *p, bool quiet, int setsize, int timeout_ms, int *fds, int *masks)
{
    int n = epoll_wait(quiet ? p->qfd : p->epfd, p->events, setsize, timeout_ms);
    for (int i = 0; i < n; i++) {
        uint32_t e = p->events[i].events;
        int m = 0;
        /* Errors and hang-ups are delivered as readable so the read path sees EOF/error. */
        if (e & (EPOLLIN | EPOLLERR | EPOLLHUP | EPOLLRDHUP))
            m |= FL_EV_READ;
        if (e & (EPOLLOUT | EPOLLERR | EPOLLHUP))
            m |= FL_EV_WRITE;
        fds[i] = p->events[i].data.fd;
        masks[i] = m;
    }
    return n;
}
