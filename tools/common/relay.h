/*
 * relay.h - move bytes both ways between a TLS connection and a plain stream socket, with
 * bounded buffers and half-close in each direction.
 *
 * Per direction: when the kernel holds that direction of the TLS connection, bytes move with
 * splice(2) through a pipe and never enter userspace; otherwise they are copied through a
 * 256 KiB buffer with tlsk_socket_read()/tlsk_socket_write().
 *
 *   TLS -> plain: the peer's close_notify becomes shutdown(plain, SHUT_WR).  When splice()
 *     out of the kTLS socket fails with EINVAL a control record is next; it is consumed with
 *     tlsk_socket_read(), which returns 0 at close_notify (and any application data behind
 *     the record is forwarded before splicing resumes).
 *   plain -> TLS: EOF on the plain socket becomes tlsk_socket_shutdown() (close_notify).
 *
 * A TCP FIN without close_notify (truncation: the peer crashed, or an attacker cut the stream)
 * is not passed on as a clean end: what arrived before it is forwarded, then the relay ends
 * at once with SO_LINGER 0 set on the plain socket, so that the caller's close() resets it
 * (a TCP peer gets RST and reads ECONNRESET, never EOF; for a unix socket see plain_peer_fd).
 * Both descriptors must be non-blocking.
 */
#ifndef TLSK_RELAY_H
#define TLSK_RELAY_H

#include <stdbool.h>
#include <stdint.h>

#include "tlsk.h"

struct relay_options {
    /* Abort after this long without any progress; 0 = never. */
    int idle_ms;
    /* -1, or a descriptor (a pidfd) that becomes readable when the program behind the plain
     * socket has exited: the relay then ends as soon as the program's output has been
     * forwarded and close_notify sent, without waiting for the TLS peer to finish. */
    int stop_fd;
    /* Use splice for the offloaded directions (default true; false forces copying). */
    bool no_splice;
    /* NULL, or the caller's descriptor of the other end of a unix socketpair plain_fd (a
     * program's stdin/stdout): at truncation one byte is queued from it, so that closing
     * plain_fd gives the program ECONNRESET (a unix socket has no RST).  Closed (and set to
     * -1) when stop_fd fires, so that the program's exit is seen as EOF. */
    int *plain_peer_fd;
};

struct relay_result {
    uint64_t to_plain, to_tls;   /* application bytes forwarded each way */
    bool splice_rx, splice_tx;   /* which directions used splice */
    bool peer_close_notify;      /* the TLS peer sent close_notify */
    bool peer_truncated;         /* the TLS peer closed TCP without close_notify */
    bool plain_reset;            /* ...so the relay ended with SO_LINGER 0 on plain_fd: close
                                  * it to reset the plain peer */
    bool sent_close_notify;      /* we sent close_notify after the plain side's EOF */
    bool plain_eof;              /* the plain side finished sending */
    bool program_exited;         /* stop_fd fired */
    int err;                     /* 0, or what aborted the relay (negative code) */
    const char *err_where;       /* "tls read", "plain write", ... */
};

/* "splice", "copy" or "splice tx, copy rx" / "copy tx, splice rx" for this connection. */
const char *relay_mode_name(const struct tlsk_socket *s, bool no_splice);

/*
 * relay_run() - relay until both directions are finished (or, with stop_fd, until the
 * program is gone), an error, or the idle timeout.  Neither descriptor is closed.
 * Returns 0 or the negative code that aborted it (also in res->err).
 */
int relay_run(struct tlsk_socket *s, int plain_fd, const struct relay_options *opts,
              struct relay_result *res);

#endif
