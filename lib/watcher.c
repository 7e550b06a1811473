/* watcher.c - the application's own descriptors and timers on a tlsk_loop (tlsk.h,
 * tlsk_watcher_*): a public face on the loop's handles (loop.c), so that an adapter such as
 * include/tlsk/redis.h can run on the same loop as the TLS connections. */
#include <errno.h>
#include <stdlib.h>

#include "internal.h"

struct tlsk_watcher {
    struct tlsk_handle h;
    tlsk_watcher_cb cb;
    void *ud;
};

static void on_handle(struct tlsk_handle *h, int revents)
{
    struct tlsk_watcher *w = h->owner;
    w->cb(w, revents, w->ud);
}

static void release(struct tlsk_handle *h)
{
    free(h->owner);
}

TLSK_PUBLIC int tlsk_watcher_new(struct tlsk_watcher **out, struct tlsk_loop *l, int fd,
                                 tlsk_watcher_cb cb, void *ud)
{
    struct tlsk_watcher *w;

    if (!out || !l || !cb || fd < -1) {
        return -EINVAL;
    }
    if (!(w = calloc(1, sizeof *w))) {
        return TLSK_ENOMEM;
    }
    w->cb = cb;
    w->ud = ud;
    tlsk__handle_init(&w->h, l, fd, on_handle, release, w);
    *out = w;
    return 0;
}

TLSK_PUBLIC int tlsk_watcher_watch(struct tlsk_watcher *w, int events)
{
    return w ? tlsk__handle_watch(&w->h, events) : -EINVAL;
}

TLSK_PUBLIC int tlsk_watcher_timer(struct tlsk_watcher *w, int64_t ms)
{
    return w ? tlsk__handle_timer(&w->h, ms) : -EINVAL;
}

TLSK_PUBLIC void tlsk_watcher_free(struct tlsk_watcher *w)
{
    if (w) {
        tlsk__handle_close(&w->h);
    }
}
