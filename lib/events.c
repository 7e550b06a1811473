/*
 * events.c - evented sockets: the Node-style stream layer (data, end, drain, error, close,
 * secure) over the blocking/non-blocking core, driven by a tlsk_loop.
 *
 * Callbacks run only from the loop's dispatch.  Work that an API call would otherwise do
 * "now" (an error found by tlsk_socket_send(), a close, a resume) is deferred with a
 * zero-delay timer.  The handle's single timer also carries the handshake timeout, which is
 * re-armed after every such kick until the handshake is done.  A renegotiation the
 * application starts (tlsk_socket_renegotiate) is driven from the loop like the handshake,
 * bounded by the same timeout (Node's handshakeTimeout applies to renegotiations too), and
 * reported by the renegotiated callback; reads wait until it is over.
 *
 * Closing lingers (linger.c, docs/KERNEL.md §8): after the close callback the write side is
 * shut and the peer's bytes are drained until its FIN, so that an alert is not destroyed by a
 * reset.  The handle stays on the loop meanwhile (never blocking it); the owner (the server)
 * hears of the close at the end, so a server's close event still comes after its last
 * descriptor is gone.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "kconst.h"

#define READS_PER_DISPATCH 16

struct ev_ext {
    struct tlsk__ev ev;
    int64_t hs_deadline; /* monotonic ms, 0 = none */
    int64_t hs_timeout_ms; /* the owner's handshake timeout, for renegotiations too (0 none) */
    int64_t reneg_deadline; /* our renegotiation's, monotonic ms; 0 = not started, -1 = no limit */
    int pending_err;
    bool lingering;
    struct tlsk__linger linger;
};

static struct ev_ext *ext(struct tlsk_socket *s)
{
    return (struct ev_ext *)s->ev;
}

static void kick(struct tlsk_socket *s)
{
    tlsk__handle_timer(&s->ev->h, 0);
}

/* Both directions finished (the peer's end arrived, ours was sent): nothing is left. */
static void maybe_done(struct tlsk_socket *s)
{
    struct tlsk__ev *ev = s->ev;

    if (ev->read_done && ev->ended && !ev->closing) {
        tlsk_socket_close(s);
    }
}

static void update_watch(struct tlsk_socket *s)
{
    struct tlsk__ev *ev = s->ev;
    int events = 0;

    if (ev->closing) {
        events = 0;
    } else if (!ev->secure) {
        events = tlsk_socket_events(s);
    } else {
        if (!ev->paused && !ev->read_done) {
            events |= POLLIN;
        }
        if (ev->woff < ev->wlen || (ev->ending && !ev->ended) || tlsk__txq_busy(s)) {
            events |= tlsk_socket_events(s) & POLLIN ? POLLIN | POLLOUT : POLLOUT;
        }
    }
    tlsk__handle_watch(&ev->h, events);
}

/* The end of a close: the owner hears of it, the loop releases the handle (and with it the
 * socket and its descriptor). */
static void release_closed(struct tlsk_socket *s)
{
    struct tlsk__ev *ev = s->ev;

    ext(s)->lingering = false;
    if (ev->owner_cb) {
        ev->owner_cb->closed(ev->owner, s);
    }
    tlsk__handle_close(&ev->h);
}

/* One step of a lingering close (linger.c), and the release once it is over. */
static void linger_step(struct tlsk_socket *s)
{
    if (tlsk__linger_step(s, &ext(s)->linger)) {
        release_closed(s);
    }
}

/* Start a lingering close: 1 when started, 0 when there is nothing to linger on (no
 * descriptor of ours, or the connection is gone already). */
static int start_linger(struct tlsk_socket *s)
{
    struct ev_ext *x = ext(s);

    if (!tlsk__linger_start(s, &x->linger)) {
        return 0;
    }
    x->lingering = true;
    linger_step(s);
    return 1;
}

static void finish_close(struct tlsk_socket *s)
{
    struct tlsk__ev *ev = s->ev;

    if (ev->closed_reported) {
        return;
    }
    ev->closed_reported = true;
    if (ev->secure && ev->cb.close) {
        ev->cb.close(s, s->data);
    }
    if (!start_linger(s)) {
        release_closed(s);
    }
}

static void fail_now(struct tlsk_socket *s, int err)
{
    struct tlsk__ev *ev = s->ev;

    if (ev->closing) {
        return;
    }
    if (!ev->secure) {
        if (ev->owner_cb) {
            ev->owner_cb->client_error(ev->owner, s, err);
        } else if (ev->cb.error) {
            ev->cb.error(s, err, s->data);
        }
    } else {
        if ((err == TLSK_ERENEG_LIMIT || (err == -ETIMEDOUT && s->own_reneg)) &&
            ev->owner_cb) {
            /* Node raises the renegotiation attack, and a renegotiation's handshake timeout,
             * on the server as clientError (and on the socket as error). */
            ev->owner_cb->client_error(ev->owner, s, err);
        }
        if (ev->cb.error) {
            ev->cb.error(s, err, s->data);
        }
    }
    tlsk_socket_close(s);
}

/* Write what is queued; then the close_notify of tlsk_socket_end().  -1 when the socket
 * failed (and is closing). */
static int flush(struct tlsk_socket *s)
{
    struct tlsk__ev *ev = s->ev;
    int rc;

    /* Records the socket did not take yet (txq.c), even with nothing of ours queued. */
    if ((rc = tlsk__txq_flush(s)) != 0 && rc != -EAGAIN) {
        fail_now(s, rc);
        return -1;
    }
    while (ev->woff < ev->wlen) {
        ssize_t n = tlsk_socket_write(s, ev->wbuf + ev->woff, ev->wlen - ev->woff);
        if (n == -EAGAIN) {
            return 0;
        }
        if (n < 0) {
            fail_now(s, (int)n);
            return -1;
        }
        ev->woff += (size_t)n;
    }
    ev->woff = ev->wlen = 0;
    if (ev->want_drain) {
        ev->want_drain = false;
        if (ev->cb.drain) {
            ev->cb.drain(s, s->data);
        }
        if (ev->closing || ev->wlen > 0) {
            return ev->closing ? -1 : 0;
        }
    }
    if (ev->ending && !ev->ended) {
        rc = tlsk_socket_shutdown(s);
        if (rc == 0) {
            ev->ended = true;
            maybe_done(s);
        } else if (rc != -EAGAIN) {
            fail_now(s, rc);
            return -1;
        }
    }
    return 0;
}

static void do_reads(struct tlsk_socket *s)
{
    static _Thread_local unsigned char buf[4 * TLSK_MAX_PLAINTEXT];
    struct tlsk__ev *ev = s->ev;

    for (int i = 0; !ev->paused && !ev->read_done && !ev->closing; i++) {
        ssize_t n;

        if (s->own_reneg) {
            kick(s); /* renegotiate() called in a callback: the loop drives it first */
            return;
        }
        if (i == READS_PER_DISPATCH) {
            kick(s); /* fairness: more may be buffered in OpenSSL, come back soon */
            return;
        }
        n = tlsk_socket_read(s, buf, sizeof buf);
        if (n > 0) {
            if (ev->cb.data) {
                ev->cb.data(s, buf, (size_t)n, s->data);
            }
            continue;
        }
        if (n == -EAGAIN) {
            return;
        }
        if (n == 0 || n == TLSK_ETRUNCATED) {
            ev->read_done = true;
            if (ev->cb.end) {
                ev->cb.end(s, (int)n, s->data);
            }
            if (!ev->closing && ev->ending && !ev->ended) {
                /* end() called in the callback: flush and send close_notify now. */
                if (flush(s) < 0) {
                    return;
                }
            }
            maybe_done(s);
            return;
        }
        fail_now(s, (int)n);
        return;
    }
}

/* Our renegotiation, if one is running: 1 still running (wait), 0 none or finished (go on),
 * -1 failed (the socket is closing). */
static int reneg_step(struct tlsk_socket *s)
{
    struct ev_ext *x = ext(s);
    int64_t now;
    int rc;

    if (!s->own_reneg) {
        return 0;
    }
    now = tlsk__now_ms();
    if (x->reneg_deadline == 0) {
        x->reneg_deadline = x->hs_timeout_ms > 0 ? now + x->hs_timeout_ms : -1;
    }
    if (x->reneg_deadline > 0 && now >= x->reneg_deadline) {
        x->reneg_deadline = 0;
        fail_now(s, tlsk__fail(s, tlsk__set_detail(s, -ETIMEDOUT,
                                                   "HANDSHAKE_TIMEOUT: the renegotiation did not "
                                                   "finish in time")));
        s->reneg_running = s->own_reneg = false;
        return -1;
    }
    rc = tlsk_socket_renegotiate(s, 0);
    if (rc == -EAGAIN) {
        if (x->reneg_deadline > 0) {
            tlsk__handle_timer(&s->ev->h, x->reneg_deadline - now);
        }
        tlsk__handle_watch(&s->ev->h, tlsk_socket_events(s));
        return 1;
    }
    x->reneg_deadline = 0;
    tlsk__handle_timer(&s->ev->h, -1);
    if (rc != 0) {
        fail_now(s, rc);
        return -1;
    }
    if (s->ev->cb.renegotiated) {
        s->ev->cb.renegotiated(s, s->data);
    }
    return s->ev->closing ? -1 : 0;
}

static void on_event(struct tlsk_handle *h, int revents)
{
    struct tlsk_socket *s = h->owner;
    struct ev_ext *x = ext(s);
    struct tlsk__ev *ev = s->ev;

    (void)revents;
    if (ev->closing) {
        if (x->lingering) {
            linger_step(s);
        } else {
            finish_close(s);
        }
        return;
    }
    if (x->pending_err) {
        fail_now(s, x->pending_err);
        return;
    }
    if (!ev->secure) {
        int rc;

        if (x->hs_deadline && tlsk__now_ms() >= x->hs_deadline) {
            tlsk__set_detail(s, -ETIMEDOUT, "HANDSHAKE_TIMEOUT: the handshake did not finish in "
                                            "time");
            fail_now(s, -ETIMEDOUT);
            return;
        }
        rc = tlsk_socket_handshake(s);
        if (rc == -EAGAIN) {
            if (x->hs_deadline) {
                tlsk__handle_timer(h, x->hs_deadline - tlsk__now_ms());
            }
            update_watch(s);
            return;
        }
        if (rc != 0) {
            fail_now(s, rc);
            return;
        }
        ev->secure = true;
        x->hs_deadline = 0;
        tlsk__handle_timer(h, -1);
        if (ev->owner_cb) {
            ev->owner_cb->secure(ev->owner, s);
        } else if (ev->cb.secure) {
            ev->cb.secure(s, s->data);
        }
        if (ev->closing) {
            return;
        }
    }
    if (reneg_step(s) != 0) {
        return;
    }
    if (flush(s) < 0 || ev->closing) {
        return;
    }
    do_reads(s);
    if (!ev->closing) {
        update_watch(s);
    }
}

static void release(struct tlsk_handle *h)
{
    struct tlsk_socket *s = h->owner;
    struct ev_ext *x = ext(s);

    free(x->ev.wbuf);
    s->ev = NULL;
    free(x);
    tlsk_socket_free(s);
}

static void hook_wake(struct tlsk_socket *s)
{
    tlsk__handle_timer(&s->ev->h, 0);
}

/* The core's way up (struct tlsk__ev_hooks). */
static const struct tlsk__ev_hooks core_hooks = {
    .close = tlsk_socket_close,
    .wake = hook_wake,
};

int tlsk__ev_start(struct tlsk_socket *s, struct tlsk_loop *l, const struct tlsk__ev_owner *ocb,
                   void *owner, int64_t handshake_timeout_ms)
{
    struct ev_ext *x;
    int fl;

    if (s->ev) {
        return TLSK_ESTATE;
    }
    fl = fcntl(s->fd, F_GETFL);
    if (fl < 0 || fcntl(s->fd, F_SETFL, fl | O_NONBLOCK) != 0) {
        return -errno;
    }
    x = calloc(1, sizeof *x);
    if (!x) {
        return TLSK_ENOMEM;
    }
    s->ev = &x->ev;
    x->ev.hooks = &core_hooks;
    x->ev.owner_cb = ocb;
    x->ev.owner = owner;
    x->ev.secure = s->state == TLSK__OPEN;
    tlsk__handle_init(&x->ev.h, l, s->fd, on_event, release, s);
    if (handshake_timeout_ms > 0 && !x->ev.secure) {
        x->hs_deadline = tlsk__now_ms() + handshake_timeout_ms;
    }
    x->hs_timeout_ms = handshake_timeout_ms > 0 ? handshake_timeout_ms : 0;
    /* Start from the loop, never from this call. */
    kick(s);
    return 0;
}

TLSK_PUBLIC int tlsk_socket_start(struct tlsk_socket *s, struct tlsk_loop *loop,
                                  const struct tlsk_socket_callbacks *cb)
{
    int rc;

    if (!s || !loop) {
        return TLSK_ECONFIG;
    }
    rc = tlsk__ev_start(s, loop, NULL, NULL, 0);
    if (rc == 0 && cb) {
        s->ev->cb = *cb;
    }
    return rc;
}

TLSK_PUBLIC void tlsk_socket_set_callbacks(struct tlsk_socket *s,
                                           const struct tlsk_socket_callbacks *cb)
{
    if (s && s->ev) {
        if (cb) {
            s->ev->cb = *cb;
        } else {
            memset(&s->ev->cb, 0, sizeof s->ev->cb);
        }
    }
}

TLSK_PUBLIC int tlsk_socket_send(struct tlsk_socket *s, const void *buf, size_t len)
{
    struct tlsk__ev *ev;
    size_t done = 0;

    if (!s || !s->ev) {
        return TLSK_ESTATE;
    }
    ev = s->ev;
    if (ev->closing || ev->ending) {
        return TLSK_ECLOSED;
    }
    if (ev->secure && ev->wlen == 0) {
        while (done < len) {
            ssize_t n = tlsk_socket_write(s, (const unsigned char *)buf + done, len - done);
            if (n == -EAGAIN) {
                break;
            }
            if (n < 0) {
                /* Report from the loop, not from here. */
                ext(s)->pending_err = (int)n;
                kick(s);
                return (int)n;
            }
            done += (size_t)n;
        }
        if (done == len) {
            return 1;
        }
    }
    if (ev->wlen + (len - done) > ev->wcap) {
        size_t cap = ev->wcap ? ev->wcap : 16384;
        unsigned char *nb;
        while (cap < ev->wlen + (len - done)) {
            cap *= 2;
        }
        nb = realloc(ev->wbuf, cap);
        if (!nb) {
            return TLSK_ENOMEM;
        }
        ev->wbuf = nb;
        ev->wcap = cap;
    }
    memcpy(ev->wbuf + ev->wlen, (const unsigned char *)buf + done, len - done);
    ev->wlen += len - done;
    ev->want_drain = true;
    if (ev->secure) {
        update_watch(s);
    }
    return 0;
}

TLSK_PUBLIC size_t tlsk_socket_queued(const struct tlsk_socket *s)
{
    return s && s->ev ? s->ev->wlen - s->ev->woff : 0;
}

TLSK_PUBLIC int tlsk_socket_end(struct tlsk_socket *s)
{
    if (!s || !s->ev) {
        return TLSK_ESTATE;
    }
    if (s->ev->closing) {
        return TLSK_ECLOSED;
    }
    s->ev->ending = true;
    kick(s);
    return 0;
}

TLSK_PUBLIC void tlsk_socket_pause(struct tlsk_socket *s, int paused)
{
    if (!s || !s->ev || s->ev->closing) {
        return;
    }
    s->ev->paused = paused != 0;
    if (!paused) {
        kick(s); /* OpenSSL may hold data the fd will never signal */
    }
    if (s->ev->secure) {
        update_watch(s);
    }
}

TLSK_PUBLIC void tlsk_socket_close(struct tlsk_socket *s)
{
    if (!s) {
        return;
    }
    if (!s->ev) {
        tlsk_socket_free(s);
        return;
    }
    if (s->ev->closing) {
        return;
    }
    s->ev->closing = true;
    tlsk__handle_watch(&s->ev->h, 0);
    kick(s);
}
