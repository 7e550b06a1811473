/*
 * tlsk/uv.h - run tlsk's evented API (servers, evented sockets) on a libuv loop.
 *
 * Header-only: it includes <uv.h> and tlsk.h; link with libuv (`pkg-config --libs libuv`).
 * Under -std=c11 define _GNU_SOURCE or _POSIX_C_SOURCE=200809L (as libuv's own headers need),
 * or use -std=gnu11.  It builds a hooked tlsk_loop (tlsk_loop_new_hooked) whose
 * three hooks are implemented with libuv handles:
 *
 *   watch  -> one uv_poll_t per tlsk_handle, created on the first watch of its fd;
 *             POLLIN/POLLOUT map to UV_READABLE/UV_WRITABLE, 0 stops the poll.  Readiness
 *             calls tlsk_handle_dispatch(h, POLLIN|POLLOUT); a poll error (status < 0)
 *             dispatches POLLIN|POLLOUT|POLLERR so the library's next call sees the error.
 *   timer  -> one uv_timer_t per tlsk_handle: uv_timer_start(ms), uv_timer_stop for ms < 0;
 *             expiry calls tlsk_handle_dispatch(h, 0).
 *   forget -> both uv handles are stopped and uv_close()d; the adapter's per-handle memory is
 *             released by the close callbacks, so uv_run() must run once more after the last
 *             tlsk object is closed (it does by itself: closing handles keep it alive).
 *
 * Usage:
 *
 *     uv_loop_t *uv = uv_default_loop();
 *     struct tlsk_loop *loop;
 *     struct tlsk_server *srv;
 *
 *     tlsk_uv_loop_new(&loop, uv);
 *     tlsk_server_new(&srv, loop, &opts, &callbacks, data);
 *     tlsk_server_listen(srv, "127.0.0.1", "8443", 0);
 *     uv_run(uv, UV_RUN_DEFAULT);      // returns once the server is closed and all is done
 *     tlsk_uv_loop_free(loop);         // tlsk_loop_free() plus the adapter's state
 *
 * Callbacks of tlsk run from libuv's callbacks, so everything on the loop belongs to the
 * thread running uv_run(), as for any libuv handle.  The adapter keeps its tlsk_handle ->
 * uv handles map in a hash table (O(1) per hook call).
 *
 * tlsk_uv_loop_new() and tlsk_uv_loop_free() find the adapter's state through a small
 * registry that is private to each file including this header: call both from the same
 * source file.  Returns follow tlsk.h: 0 or a negative code (TLSK_ENOMEM, TLSK_ESTATE, -errno
 * from libuv).
 */
#ifndef TLSK_UV_H
#define TLSK_UV_H

#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>

#include <uv.h>

#include "../tlsk.h"

#ifdef __cplusplus
extern "C" {
#endif

struct tlsk_uv__state;

/* One tlsk_handle as libuv sees it. */
struct tlsk_uv__h {
    struct tlsk_handle *h;
    struct tlsk_uv__h *next; /* hash chain */
    uv_poll_t poll;
    uv_timer_t timer;
    int fd;
    int events;         /* POLLIN/POLLOUT currently watched */
    int poll_init, timer_init;
    int open;           /* uv handles not yet closed */
    int forgotten;
};

struct tlsk_uv__state {
    uv_loop_t *uv;
    struct tlsk_loop *loop;
    struct tlsk_uv__h **tab;
    size_t cap, count; /* cap is a power of two */
    struct tlsk_uv__state *reg_next;
};

static pthread_mutex_t tlsk_uv__reg_lock = PTHREAD_MUTEX_INITIALIZER;
static struct tlsk_uv__state *tlsk_uv__reg;

static inline size_t tlsk_uv__slot(const struct tlsk_uv__state *st, const struct tlsk_handle *h)
{
    uint64_t x = (uint64_t)(uintptr_t)h;
    x ^= x >> 29;
    x *= 0x9E3779B97F4A7C15ull;
    return (size_t)(x >> 32) & (st->cap - 1);
}

static inline struct tlsk_uv__h *tlsk_uv__find(struct tlsk_uv__state *st,
                                               const struct tlsk_handle *h)
{
    for (struct tlsk_uv__h *a = st->tab[tlsk_uv__slot(st, h)]; a; a = a->next) {
        if (a->h == h) {
            return a;
        }
    }
    return NULL;
}

static inline int tlsk_uv__grow(struct tlsk_uv__state *st)
{
    size_t ncap = st->cap * 2, ocap = st->cap;
    struct tlsk_uv__h **old = st->tab, **nt = (struct tlsk_uv__h **)calloc(ncap, sizeof *nt);

    if (!nt) {
        return TLSK_ENOMEM;
    }
    st->tab = nt;
    st->cap = ncap;
    for (size_t i = 0; i < ocap; i++) {
        while (old[i]) {
            struct tlsk_uv__h *a = old[i];
            size_t k = tlsk_uv__slot(st, a->h);
            old[i] = a->next;
            a->next = nt[k];
            nt[k] = a;
        }
    }
    free(old);
    return 0;
}

/* The adapter for h, created on first use.  NULL only when out of memory. */
static inline struct tlsk_uv__h *tlsk_uv__get(struct tlsk_uv__state *st, struct tlsk_handle *h)
{
    struct tlsk_uv__h *a = tlsk_uv__find(st, h);
    size_t k;

    if (a) {
        return a;
    }
    if (st->count + 1 > st->cap / 2 && tlsk_uv__grow(st) != 0) {
        return NULL;
    }
    a = (struct tlsk_uv__h *)calloc(1, sizeof *a);
    if (!a) {
        return NULL;
    }
    a->h = h;
    a->fd = -1;
    k = tlsk_uv__slot(st, h);
    a->next = st->tab[k];
    st->tab[k] = a;
    st->count++;
    return a;
}

static inline void tlsk_uv__unlink(struct tlsk_uv__state *st, struct tlsk_uv__h *a)
{
    struct tlsk_uv__h **pp = &st->tab[tlsk_uv__slot(st, a->h)];

    while (*pp && *pp != a) {
        pp = &(*pp)->next;
    }
    if (*pp) {
        *pp = a->next;
        st->count--;
    }
    a->next = NULL;
}

static inline void tlsk_uv__poll_cb(uv_poll_t *p, int status, int uvev)
{
    struct tlsk_uv__h *a = (struct tlsk_uv__h *)p->data;
    int re;

    if (status < 0) {
        re = POLLIN | POLLOUT | POLLERR;
    } else {
        re = (uvev & UV_READABLE ? POLLIN : 0) | (uvev & UV_WRITABLE ? POLLOUT : 0) |
             (uvev & UV_DISCONNECT ? POLLIN : 0);
    }
    tlsk_handle_dispatch(a->h, re);
    /* libuv stops a poll handle that reported an error; keep watching what the library asked
     * for unless it forgot the handle (or changed the mask) during the dispatch. */
    if (status < 0 && !a->forgotten && a->events && !uv_is_active((uv_handle_t *)&a->poll)) {
        uv_poll_start(&a->poll, (a->events & POLLIN ? UV_READABLE : 0) |
                                    (a->events & POLLOUT ? UV_WRITABLE : 0),
                      tlsk_uv__poll_cb);
    }
}

static inline void tlsk_uv__timer_cb(uv_timer_t *t)
{
    struct tlsk_uv__h *a = (struct tlsk_uv__h *)t->data;
    tlsk_handle_dispatch(a->h, 0);
}

static inline int tlsk_uv__watch(void *ud, struct tlsk_handle *h, int fd, int events)
{
    struct tlsk_uv__state *st = (struct tlsk_uv__state *)ud;
    struct tlsk_uv__h *a = tlsk_uv__get(st, h);
    int rc;

    if (!a) {
        return TLSK_ENOMEM;
    }
    events &= POLLIN | POLLOUT;
    if (!a->poll_init) {
        if (events == 0) {
            return 0;
        }
        rc = uv_poll_init(st->uv, &a->poll, fd);
        if (rc != 0) {
            return rc; /* libuv's codes are -errno on Linux */
        }
        a->poll.data = a;
        a->poll_init = 1;
        a->open++;
        a->fd = fd;
    }
    if (events == 0) {
        rc = uv_poll_stop(&a->poll);
    } else {
        rc = uv_poll_start(&a->poll, (events & POLLIN ? UV_READABLE : 0) |
                                         (events & POLLOUT ? UV_WRITABLE : 0),
                           tlsk_uv__poll_cb);
    }
    if (rc == 0) {
        a->events = events;
    }
    return rc;
}

static inline int tlsk_uv__timer(void *ud, struct tlsk_handle *h, int64_t ms)
{
    struct tlsk_uv__state *st = (struct tlsk_uv__state *)ud;
    struct tlsk_uv__h *a = tlsk_uv__get(st, h);
    int rc;

    if (!a) {
        return TLSK_ENOMEM;
    }
    if (!a->timer_init) {
        if (ms < 0) {
            return 0;
        }
        rc = uv_timer_init(st->uv, &a->timer);
        if (rc != 0) {
            return rc;
        }
        a->timer.data = a;
        a->timer_init = 1;
        a->open++;
    }
    if (ms < 0) {
        return uv_timer_stop(&a->timer);
    }
    return uv_timer_start(&a->timer, tlsk_uv__timer_cb, (uint64_t)ms, 0);
}

static inline void tlsk_uv__closed(uv_handle_t *uh)
{
    struct tlsk_uv__h *a = (struct tlsk_uv__h *)uh->data;

    if (--a->open == 0) {
        free(a);
    }
}

static inline void tlsk_uv__forget(void *ud, struct tlsk_handle *h)
{
    struct tlsk_uv__state *st = (struct tlsk_uv__state *)ud;
    struct tlsk_uv__h *a = tlsk_uv__find(st, h);

    if (!a) {
        return;
    }
    tlsk_uv__unlink(st, a);
    a->forgotten = 1;
    a->events = 0;
    if (a->open == 0) {
        free(a);
        return;
    }
    /* The close callbacks free a: never the state, which may be gone by then. */
    if (a->poll_init) {
        uv_poll_stop(&a->poll);
        uv_close((uv_handle_t *)&a->poll, tlsk_uv__closed);
    }
    if (a->timer_init) {
        uv_timer_stop(&a->timer);
        uv_close((uv_handle_t *)&a->timer, tlsk_uv__closed);
    }
}

/*
 * tlsk_uv_loop_new() - a tlsk_loop driven by the libuv loop uv (borrowed: it must outlive the
 * tlsk loop).  Returns 0 and sets *out, or TLSK_ENOMEM / TLSK_ECONFIG.
 */
static inline int tlsk_uv_loop_new(struct tlsk_loop **out, uv_loop_t *uv)
{
    struct tlsk_uv__state *st;
    struct tlsk_loop_hooks hooks;
    int rc;

    if (!out || !uv) {
        return TLSK_ECONFIG;
    }
    st = (struct tlsk_uv__state *)calloc(1, sizeof *st);
    if (!st) {
        return TLSK_ENOMEM;
    }
    st->uv = uv;
    st->cap = 16;
    st->tab = (struct tlsk_uv__h **)calloc(st->cap, sizeof *st->tab);
    if (!st->tab) {
        free(st);
        return TLSK_ENOMEM;
    }
    hooks.watch = tlsk_uv__watch;
    hooks.timer = tlsk_uv__timer;
    hooks.forget = tlsk_uv__forget;
    hooks.ud = st;
    rc = tlsk_loop_new_hooked(&st->loop, &hooks);
    if (rc != 0) {
        free(st->tab);
        free(st);
        return rc;
    }
    pthread_mutex_lock(&tlsk_uv__reg_lock);
    st->reg_next = tlsk_uv__reg;
    tlsk_uv__reg = st;
    pthread_mutex_unlock(&tlsk_uv__reg_lock);
    *out = st->loop;
    return 0;
}

/*
 * tlsk_uv_loop_free() - tlsk_loop_free(l), then release the adapter's state.  Everything on
 * the loop must be closed and its close callbacks run (TLSK_ESTATE otherwise, and nothing is
 * freed).  libuv handles still closing free themselves from uv_run().  NULL is a no-op.
 */
static inline int tlsk_uv_loop_free(struct tlsk_loop *l)
{
    struct tlsk_uv__state **pp, *st = NULL;
    int rc;

    if (!l) {
        return 0;
    }
    rc = tlsk_loop_free(l);
    if (rc != 0) {
        return rc;
    }
    pthread_mutex_lock(&tlsk_uv__reg_lock);
    for (pp = &tlsk_uv__reg; *pp; pp = &(*pp)->reg_next) {
        if ((*pp)->loop == l) {
            st = *pp;
            *pp = st->reg_next;
            break;
        }
    }
    pthread_mutex_unlock(&tlsk_uv__reg_lock);
    if (st) {
        /* Handles the library never forgot (none when it is used correctly). */
        for (size_t i = 0; i < st->cap; i++) {
            while (st->tab[i]) {
                struct tlsk_uv__h *a = st->tab[i];
                st->tab[i] = a->next;
                a->forgotten = 1;
                if (a->open == 0) {
                    free(a);
                    continue;
                }
                if (a->poll_init) {
                    uv_close((uv_handle_t *)&a->poll, tlsk_uv__closed);
                }
                if (a->timer_init) {
                    uv_close((uv_handle_t *)&a->timer, tlsk_uv__closed);
                }
            }
        }
        free(st->tab);
        free(st);
    }
    return 0;
}

#ifdef __cplusplus
}
#endif

#endif /* TLSK_UV_H */
