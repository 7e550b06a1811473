/*
 * loop.c - the tiny event loop under the evented API: the built-in epoll loop, or an
 * application's own loop through three hooks (watch, timer, forget).
 *
 * Every handle has one fd (or none) and one timer.  Owners never free a handle inside a
 * dispatch: tlsk__handle_close() marks it dead and the loop releases it after the current
 * batch, so an event for a handle closed earlier in the same batch is never delivered.
 */
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"

int64_t tlsk__now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

TLSK_PUBLIC int tlsk_loop_new(struct tlsk_loop **out)
{
    struct tlsk_loop *l;

    if (!out) {
        return TLSK_ECONFIG;
    }
    l = calloc(1, sizeof *l);
    if (!l) {
        return TLSK_ENOMEM;
    }
    l->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (l->epfd < 0) {
        int e = -errno;
        free(l);
        return e;
    }
    *out = l;
    return 0;
}

TLSK_PUBLIC int tlsk_loop_new_hooked(struct tlsk_loop **out, const struct tlsk_loop_hooks *hooks)
{
    struct tlsk_loop *l;

    if (!out || !hooks || !hooks->watch || !hooks->timer || !hooks->forget) {
        return TLSK_ECONFIG;
    }
    l = calloc(1, sizeof *l);
    if (!l) {
        return TLSK_ENOMEM;
    }
    l->epfd = -1;
    l->hooked = true;
    l->hooks = *hooks;
    *out = l;
    return 0;
}

void tlsk__handle_init(struct tlsk_handle *h, struct tlsk_loop *l, int fd,
                       void (*cb)(struct tlsk_handle *, int), void (*release)(struct tlsk_handle *),
                       void *owner)
{
    memset(h, 0, sizeof *h);
    h->loop = l;
    h->fd = fd;
    h->cb = cb;
    h->release = release;
    h->owner = owner;
    h->deadline = -1;
    h->next = l->handles;
    if (l->handles) {
        l->handles->prev = h;
    }
    l->handles = h;
    l->count++;
}

int tlsk__handle_watch(struct tlsk_handle *h, int events)
{
    struct tlsk_loop *l = h->loop;
    struct epoll_event ev = { 0 };

    if (h->dead || h->fd < 0 || events == h->events) {
        return 0;
    }
    if (l->hooked) {
        int rc = l->hooks.watch(l->hooks.ud, h, h->fd, events);
        if (rc == 0) {
            h->events = events;
        }
        return rc;
    }
    ev.events = (events & POLLIN ? EPOLLIN : 0) | (events & POLLOUT ? EPOLLOUT : 0);
    ev.data.ptr = h;
    if (!h->in_epoll) {
        if (epoll_ctl(l->epfd, EPOLL_CTL_ADD, h->fd, &ev) != 0) {
            return -errno;
        }
        h->in_epoll = true;
    } else if (epoll_ctl(l->epfd, EPOLL_CTL_MOD, h->fd, &ev) != 0) {
        return -errno;
    }
    h->events = events;
    return 0;
}

int tlsk__handle_timer(struct tlsk_handle *h, int64_t ms)
{
    struct tlsk_loop *l = h->loop;

    if (h->dead) {
        return 0;
    }
    h->deadline = ms < 0 ? -1 : tlsk__now_ms() + ms;
    if (l->hooked) {
        return l->hooks.timer(l->hooks.ud, h, ms);
    }
    return 0;
}

void tlsk__handle_close(struct tlsk_handle *h)
{
    struct tlsk_loop *l = h->loop;

    if (h->dead) {
        return;
    }
    h->dead = true;
    if (l->hooked) {
        l->hooks.forget(l->hooks.ud, h);
    } else if (h->in_epoll) {
        epoll_ctl(l->epfd, EPOLL_CTL_DEL, h->fd, NULL);
        h->in_epoll = false;
    }
    /* Unlink now; release after the current dispatch. */
    if (h->prev) {
        h->prev->next = h->next;
    } else {
        l->handles = h->next;
    }
    if (h->next) {
        h->next->prev = h->prev;
    }
    l->count--;
    h->next = l->zombies;
    l->zombies = h;
    if (!l->in_dispatch) {
        tlsk__loop_reap(l);
    }
}

void tlsk__loop_reap(struct tlsk_loop *l)
{
    while (l->zombies) {
        struct tlsk_handle *h = l->zombies;
        l->zombies = h->next;
        if (h->release) {
            h->release(h);
        }
    }
}

static void dispatch(struct tlsk_handle *h, int revents)
{
    struct tlsk_loop *l = h->loop;
    bool outer = !l->in_dispatch;

    l->in_dispatch = true;
    if (!h->dead) {
        h->cb(h, revents);
    }
    if (outer) {
        l->in_dispatch = false;
        tlsk__loop_reap(l);
    }
}

TLSK_PUBLIC void tlsk_handle_dispatch(struct tlsk_handle *h, int revents)
{
    if (!h) {
        return;
    }
    if (revents == 0) {
        h->deadline = -1;
    }
    dispatch(h, revents);
}

TLSK_PUBLIC void tlsk_loop_stop(struct tlsk_loop *l)
{
    if (l) {
        l->stop = true;
    }
}

/* The earliest timer of l's handles, or the later of bound (-1 none) when no earlier. */
static int64_t next_deadline(const struct tlsk_loop *l, int64_t bound)
{
    int64_t next = bound;
    for (const struct tlsk_handle *h = l->handles; h; h = h->next) {
        if (h->deadline >= 0 && (next < 0 || h->deadline < next)) {
            next = h->deadline;
        }
    }
    return next;
}

TLSK_PUBLIC int tlsk_loop_backend_fd(const struct tlsk_loop *l)
{
    return !l || l->hooked ? TLSK_ESTATE : l->epfd;
}

TLSK_PUBLIC int tlsk_loop_backend_timeout(const struct tlsk_loop *l)
{
    int64_t next, now = tlsk__now_ms();

    if (!l || l->hooked) {
        return TLSK_ESTATE;
    }
    next = next_deadline(l, -1);
    return next < 0 ? -1 : next <= now ? 0 : next - now > INT32_MAX ? INT32_MAX : (int)(next - now);
}

TLSK_PUBLIC int tlsk_loop_run(struct tlsk_loop *l, int timeout_ms)
{
    int64_t end = timeout_ms >= 0 ? tlsk__now_ms() + timeout_ms : -1;
    struct epoll_event evs[64];

    if (!l || l->hooked) {
        return TLSK_ESTATE;
    }
    l->stop = false;
    while (!l->stop && l->count > 0) {
        int64_t now = tlsk__now_ms(), next = next_deadline(l, end);
        int wait, n;

        wait = next < 0 ? -1 : next <= now ? 0 : (int)(next - now);
        n = epoll_wait(l->epfd, evs, 64, wait);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            return -errno;
        }
        l->in_dispatch = true;
        for (int i = 0; i < n; i++) {
            struct tlsk_handle *h = evs[i].data.ptr;
            int re = (evs[i].events & EPOLLIN ? POLLIN : 0) |
                     (evs[i].events & EPOLLOUT ? POLLOUT : 0) |
                     (evs[i].events & (EPOLLERR | EPOLLHUP) ? POLLIN | POLLOUT | POLLERR : 0);
            if (!h->dead) {
                h->cb(h, re);
            }
        }
        now = tlsk__now_ms();
        /* Timers, each at most once per iteration (a callback may re-arm its own for "soon",
         * which must wait for the next iteration), rescanning since callbacks may add or
         * close handles. */
        l->iter++;
        for (;;) {
            struct tlsk_handle *due = NULL;
            for (struct tlsk_handle *h = l->handles; h; h = h->next) {
                if (h->deadline >= 0 && h->deadline <= now && h->fired_iter != l->iter) {
                    due = h;
                    break;
                }
            }
            if (!due) {
                break;
            }
            due->deadline = -1;
            due->fired_iter = l->iter;
            due->cb(due, 0);
        }
        l->in_dispatch = false;
        tlsk__loop_reap(l);
        if (end >= 0 && tlsk__now_ms() >= end) {
            break;
        }
    }
    return 0;
}

TLSK_PUBLIC int tlsk_loop_free(struct tlsk_loop *l)
{
    if (!l) {
        return 0;
    }
    if (l->count > 0) {
        return TLSK_ESTATE;
    }
    tlsk__loop_reap(l);
    if (l->epfd >= 0) {
        close(l->epfd);
    }
    free(l);
    return 0;
}
