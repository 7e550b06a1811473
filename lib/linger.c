/*
 * linger.c - a closed evented socket's descriptor waits for the peer's FIN.
 *
 * After the close callback the write side is shut (FIN after whatever was sent, an alert
 * included), then what the peer still sends is read and dropped, for at most LINGER_MS and
 * LINGER_BYTES, until its FIN arrives; only then may the descriptor be closed.  Closed at
 * once, a socket with unread bytes makes the kernel answer with a reset, which can destroy
 * the alert before the peer reads it (docs/KERNEL.md §8).  Nothing here blocks: each step
 * reads what is there and arms the socket's handle (a watch or a timer) for the next, and
 * says when the linger is over; the evented layer (events.c) then closes.
 */
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <sys/socket.h>

#include "internal.h"
#include "kconst.h"

#define LINGER_READS 16            /* reads per step, as the evented layer's per dispatch */
#define LINGER_MS 1000             /* the longest a closed socket waits for the peer's FIN */
#define LINGER_BYTES (256 * 1024)  /* the most it reads (and drops) meanwhile */
#define LINGER_POLL_MS 5           /* kernel receive is looked at on a timer, never watched: */
#define LINGER_POLL_MAX_MS 160     /* first after 5 ms, then twice as long each time */

/* Receive in the kernel: tlsk's record layer in its place (soft.c) reads as userspace does. */
static bool krx(const struct tlsk_socket *s)
{
    return s->rx_kernel && !s->soft;
}

bool tlsk__linger_step(struct tlsk_socket *s, struct tlsk__linger *l)
{
    static _Thread_local unsigned char sink[TLSK_MAX_PLAINTEXT];
    struct tlsk_handle *h = &s->ev->h;
    int64_t left;

    for (int i = 0; i < LINGER_READS && !l->deaf; i++) {
        ssize_t n;
        int type = TLSK_REC_APPDATA;
        bool eor;

        if (l->bytes >= LINGER_BYTES || tlsk__now_ms() >= l->end) {
            return true;
        }
        if (krx(s)) {
            /* With the record-type buffer, so that control records are consumed too. */
            n = tlsk__krecv(s->fd, sink, sizeof sink, &type, &eor);
        } else {
            n = recv(s->fd, sink, sizeof sink, MSG_DONTWAIT);
            n = n < 0 ? -errno : n;
        }
        if (n > 0 || (n == 0 && type != TLSK_REC_APPDATA)) {
            l->bytes += (size_t)n; /* (a zero-length control record is no end) */
            continue;
        }
        if (n == -EAGAIN || n == -EWOULDBLOCK) {
            break;
        }
        if (n == -EINTR) {
            continue;
        }
        if (n < 0 && krx(s) && n != -ECONNRESET && n != -EPIPE && n != -ENOTCONN) {
            l->deaf = true; /* the kernel refuses what is queued: see below */
            break;
        }
        return true; /* the peer's FIN (0), or a reset */
    }
    if (l->deaf) {
        /* What is queued stays unread (a record the kernel refused), so the peer's FIN is
         * the sign it has read what we sent: once it came, closing sends no reset. */
        struct pollfd pf = { .fd = s->fd, .events = POLLRDHUP };
        if (poll(&pf, 1, 0) > 0 && (pf.revents & (POLLRDHUP | POLLHUP | POLLERR))) {
            return true;
        }
    }
    left = l->end - tlsk__now_ms();
    if (left <= 0 || l->bytes >= LINGER_BYTES) {
        return true;
    }
    /* A userspace receive is watched; a kernel one is looked at on a timer (before Linux
     * 6.5 poll reports a partial record as readable, and a refused record stays readable
     * for ever: watching would spin). */
    if (krx(s) || l->deaf) {
        tlsk__handle_watch(h, 0);
        tlsk__handle_timer(h, left < l->poll_ms ? left : l->poll_ms);
        if (l->poll_ms < LINGER_POLL_MAX_MS) {
            l->poll_ms *= 2;
        }
    } else {
        tlsk__handle_watch(h, POLLIN);
        tlsk__handle_timer(h, left);
    }
    return false;
}

bool tlsk__linger_start(struct tlsk_socket *s, struct tlsk__linger *l)
{
    if (s->fd < 0 || s->is_pair || !(s->flags & TLSK_SOCKET_OWN_FD) ||
        shutdown(s->fd, SHUT_WR) != 0) {
        return false;
    }
    l->end = tlsk__now_ms() + LINGER_MS;
    l->bytes = 0;
    l->poll_ms = LINGER_POLL_MS;
    /* Kernel receive that failed (a refused record stays queued): reading again would only
     * fail again, and count another TlsDecryptError. */
    l->deaf = krx(s) && s->state == TLSK__FAILED;
    return true;
}
