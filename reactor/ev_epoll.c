/* epoll backend, #included by ev.c. */
#include <sys/epoll.h>

typedef struct {
    int epfd;
    struct epoll_event *events;
} fl_poll_t;

static int poll_create(fl_poll_t *p, int setsize)
{
    p->events = calloc((size_t)setsize, sizeof(*p->events));
    p->epfd = epoll_create1(EPOLL_CLOEXEC);
    return p->events && p->epfd >= 0 ? 0 : -1;
}

static void poll_free(fl_poll_t *p)
{
    if (p->epfd >= 0)
        close(p->epfd);
    free(p->events);
}

static int poll_set(fl_poll_t *p, int fd, int oldmask, int mask)
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
        return epoll_ctl(p->epfd, EPOLL_CTL_DEL, fd, NULL);
    /* EPOLLEXCLUSIVE cannot be modified, only added: re-add such fds. */
    if (oldmask & FL_EV_EXCLUSIVE) {
        epoll_ctl(p->epfd, EPOLL_CTL_DEL, fd, NULL);
        oldmask = 0;
    }
    return epoll_ctl(p->epfd, oldmask ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, fd, &ee);
}

static int poll_wait(fl_poll_t *p, int setsize, int timeout_ms, int *fds, int *masks)
{
    int n = epoll_wait(p->epfd, p->events, setsize, timeout_ms);
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
