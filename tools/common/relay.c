/* relay.c - bidirectional relay between a TLS connection and a plain socket (see relay.h). */
#include "relay.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* 256 KiB: one read(2) and one send of 16 records (lib/txq.c's most) per buffer.  Against
 * 64 KiB, a 1 GiB download through tlsk-proxy makes about 4,100 reads and sends instead of
 * 16,900 each and costs about 14 % less CPU (bench/README.md, proxy).  Pages are touched only
 * as bytes arrive, so a connection that moves little stays small in memory. */
#define RELAY_BUF (256u << 10)

struct dir {
    bool from_tls; /* source is the TLS side (TLS -> plain) */
    bool splice;
    int src_fd, dst_fd;
    int pipe[2];
    size_t pipe_cap, in_pipe;
    unsigned char *buf; /* copy mode, or data found behind a control record */
    size_t off, len;
    bool eof;   /* the source has finished */
    bool shut;  /* the destination has been shut down (or is dead): direction finished */
    bool truncated; /* the source (the TLS peer) closed TCP without close_notify */
    bool rblk, wblk;
    short rwant, wwant;
    uint64_t bytes;
    int *reset_fd; /* TLS -> plain: the plain peer's own end (relay_options.plain_peer_fd) */
};

const char *relay_mode_name(const struct tlsk_socket *s, bool no_splice)
{
    struct tlsk_offload o = tlsk_socket_offload(s);
    bool tx = !no_splice && o.tx.mode == TLSK_MODE_KERNEL;
    bool rx = !no_splice && o.rx.mode == TLSK_MODE_KERNEL;

    if (tx && rx) {
        return "splice";
    }
    if (tx) {
        return "splice tx, copy rx";
    }
    if (rx) {
        return "copy tx, splice rx";
    }
    return "copy";
}

static short tls_want(const struct tlsk_socket *s)
{
    short ev = (short)tlsk_socket_events(s);
    return ev ? ev : POLLIN;
}

/* Read from the source into d->buf (TLS or plain).  Returns bytes, 0 at EOF, -EAGAIN, or a
 * negative code. */
static ssize_t src_read(struct tlsk_socket *s, struct dir *d, void *p, size_t n)
{
    ssize_t r;
    if (d->from_tls) {
        r = tlsk_socket_read(s, p, n);
        if (r == -EAGAIN) {
            d->rwant = tls_want(s);
        }
        return r;
    }
    do {
        r = read(d->src_fd, p, n);
    } while (r < 0 && errno == EINTR);
    if (r < 0) {
        r = -errno;
        if (r == -EWOULDBLOCK) {
            r = -EAGAIN;
        }
        d->rwant = POLLIN;
    }
    return r;
}

static ssize_t dst_write(struct tlsk_socket *s, struct dir *d, const void *p, size_t n)
{
    ssize_t r;
    if (!d->from_tls) {
        r = tlsk_socket_write(s, p, n);
        if (r == -EAGAIN) {
            d->wwant = tls_want(s);
        }
        return r;
    }
    do {
        r = send(d->dst_fd, p, n, MSG_NOSIGNAL);
        if (r < 0 && errno == ENOTSOCK) {
            r = write(d->dst_fd, p, n);
        }
    } while (r < 0 && errno == EINTR);
    if (r < 0) {
        r = -errno;
        if (r == -EWOULDBLOCK) {
            r = -EAGAIN;
        }
        d->wwant = POLLOUT;
    }
    return r;
}

/* A TLS peer that closed TCP without close_notify may have been cut off (an attacker's
 * truncation, a crash): the plain side must not see the clean end a FIN would be.  SO_LINGER
 * 0 makes the caller's close() reset a TCP peer; a unix socket has no RST, but closing our
 * end with unread bytes queued gives its peer ECONNRESET, so one byte is queued from the
 * program's end when we hold it. */
static void dst_reset(struct dir *d, struct relay_result *res)
{
    struct linger l = { .l_onoff = 1, .l_linger = 0 };

    setsockopt(d->dst_fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
    if (d->reset_fd && *d->reset_fd >= 0) {
        if (send(*d->reset_fd, "", 1, MSG_DONTWAIT | MSG_NOSIGNAL) < 0) {
            /* Full: then bytes are queued already, which is all that is needed. */
        }
    }
    res->plain_reset = true;
}

/* Half-close the destination.  Returns 0, -EAGAIN, or a negative code. */
static int dst_shutdown(struct tlsk_socket *s, struct dir *d, struct relay_result *res)
{
    if (!d->from_tls) {
        int r = tlsk_socket_shutdown(s);
        if (r == -EAGAIN) {
            d->wwant = tls_want(s);
        } else if (r == 0) {
            res->sent_close_notify = true;
        }
        return r;
    }
    if (d->truncated) {
        dst_reset(d, res);
        return 0;
    }
    if (shutdown(d->dst_fd, SHUT_WR) != 0 && errno != ENOTCONN) {
        return -errno;
    }
    return 0;
}

static bool is_dead_peer(ssize_t r)
{
    return r == -EPIPE || r == -ECONNRESET || r == -ENOTCONN || r == TLSK_ECLOSED;
}

static void set_err(struct relay_result *res, int err, const char *where)
{
    if (!res->err) {
        res->err = err;
        res->err_where = where;
    }
}

/* The destination cannot take more: drop what is queued and count the direction finished. */
static void dir_kill(struct dir *d)
{
    d->eof = d->shut = true;
    d->off = d->len = 0;
    d->in_pipe = 0;
}

/* Source side of a direction.  Returns 1 on progress, 0 if none, or a fatal negative code. */
static int dir_fill(struct tlsk_socket *s, struct dir *d, struct relay_result *res)
{
    ssize_t n;

    if (d->eof || d->rblk) {
        return 0;
    }
    if (d->splice) {
        /* Fill the pipe only when it is empty, and nothing found behind a control record is
         * still waiting: then EAGAIN always means "no data", never "pipe full". */
        if (d->in_pipe > 0 || d->len > d->off) {
            return 0;
        }
        n = splice(d->src_fd, NULL, d->pipe[1], NULL, d->pipe_cap,
                   SPLICE_F_NONBLOCK | SPLICE_F_MOVE);
        if (n > 0) {
            d->in_pipe += (size_t)n;
            return 1;
        }
        if (n == 0) {
            d->eof = true;
            if (d->from_tls) {
                res->peer_truncated = true; /* TCP FIN with no close_notify before it */
                d->truncated = true;
            } else {
                res->plain_eof = true;
            }
            return 1;
        }
        if (errno == EINTR) {
            return 1;
        }
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            d->rblk = true;
            d->rwant = POLLIN;
            return 0;
        }
        if (!(d->from_tls && (errno == EINVAL || errno == EBADMSG || errno == EMSGSIZE))) {
            set_err(res, -errno, d->from_tls ? "splice from tls" : "splice from plain");
            return -errno;
        }
        /* A control record is next (docs/KERNEL.md §3.4): let the library consume it.  A
         * record the kernel refused (EBADMSG, EMSGSIZE) goes to the library too: its read
         * fails the same way and sends the fatal alert the kernel never sends. */
        d->off = d->len = 0;
    } else {
        if (d->len == RELAY_BUF) {
            return 0;
        }
        if (d->off == d->len) {
            d->off = d->len = 0;
        }
    }
    n = src_read(s, d, d->buf + d->len, RELAY_BUF - d->len);
    if (n > 0) {
        d->len += (size_t)n;
        return 1;
    }
    if (n == 0) {
        d->eof = true;
        if (d->from_tls) {
            res->peer_close_notify = true;
        } else {
            res->plain_eof = true;
        }
        return 1;
    }
    if (n == -EAGAIN) {
        d->rblk = true;
        return 0;
    }
    if (d->from_tls && n == TLSK_ETRUNCATED) {
        d->eof = true;
        res->peer_truncated = true;
        d->truncated = true;
        return 1;
    }
    set_err(res, (int)n, d->from_tls ? "tls read" : "plain read");
    return (int)n;
}

/* Destination side.  Returns 1 on progress, 0 if none, or a fatal negative code. */
static int dir_flush(struct tlsk_socket *s, struct dir *d, struct relay_result *res)
{
    ssize_t n;

    if (d->shut || d->wblk) {
        return 0;
    }
    if (d->in_pipe > 0) {
        n = splice(d->pipe[0], NULL, d->dst_fd, NULL, d->in_pipe,
                   SPLICE_F_NONBLOCK | SPLICE_F_MOVE);
        if (n > 0) {
            d->in_pipe -= (size_t)n;
            d->bytes += (uint64_t)n;
            return 1;
        }
        n = n == 0 ? -EPIPE : -errno;
        if (n == -EINTR) {
            return 1;
        }
        if (n == -EAGAIN || n == -EWOULDBLOCK) {
            d->wblk = true;
            d->wwant = POLLOUT;
            return 0;
        }
        set_err(res, (int)n, d->from_tls ? "splice to plain" : "splice to tls");
        if (is_dead_peer(n)) {
            dir_kill(d);
            return 1;
        }
        return (int)n;
    }
    if (d->len > d->off) {
        n = dst_write(s, d, d->buf + d->off, d->len - d->off);
        if (n > 0) {
            d->off += (size_t)n;
            d->bytes += (uint64_t)n;
            if (d->off == d->len) {
                d->off = d->len = 0;
            }
            return 1;
        }
        if (n == -EAGAIN) {
            d->wblk = true;
            return 0;
        }
        set_err(res, (int)n, d->from_tls ? "plain write" : "tls write");
        if (is_dead_peer(n)) {
            dir_kill(d);
            return 1;
        }
        return (int)n;
    }
    if (d->eof) {
        int r = dst_shutdown(s, d, res);
        if (r == -EAGAIN) {
            d->wblk = true;
            return 0;
        }
        if (r != 0) {
            set_err(res, r, d->from_tls ? "plain shutdown" : "tls shutdown");
        }
        d->shut = true;
        return 1;
    }
    return 0;
}

static int dir_init(struct dir *d, bool from_tls, bool use_splice, int tls_fd, int plain_fd)
{
    memset(d, 0, sizeof *d);
    d->pipe[0] = d->pipe[1] = -1;
    d->from_tls = from_tls;
    d->src_fd = from_tls ? tls_fd : plain_fd;
    d->dst_fd = from_tls ? plain_fd : tls_fd;
    d->buf = malloc(RELAY_BUF);
    if (!d->buf) {
        return -ENOMEM;
    }
    if (use_splice) {
        if (pipe2(d->pipe, O_CLOEXEC | O_NONBLOCK) != 0) {
            return -errno;
        }
        int cap = fcntl(d->pipe[0], F_GETPIPE_SZ);
        d->pipe_cap = cap > 0 ? (size_t)cap : 65536;
        d->splice = true;
    }
    return 0;
}

static void dir_dispose(struct dir *d)
{
    free(d->buf);
    for (int i = 0; i < 2; i++) {
        if (d->pipe[i] >= 0) {
            close(d->pipe[i]);
        }
    }
}

int relay_run(struct tlsk_socket *s, int plain_fd, const struct relay_options *opts,
              struct relay_result *res)
{
    struct tlsk_offload o = tlsk_socket_offload(s);
    int tls_fd = tlsk_socket_fd(s), rc = 0, spins = 0;
    bool stopped = false;
    struct dir up, down; /* up: TLS -> plain, down: plain -> TLS */
    long long last = 0;

    memset(res, 0, sizeof *res);
    memset(&up, 0, sizeof up);
    memset(&down, 0, sizeof down);
    up.pipe[0] = up.pipe[1] = down.pipe[0] = down.pipe[1] = -1;
    res->splice_rx = !opts->no_splice && o.rx.mode == TLSK_MODE_KERNEL;
    res->splice_tx = !opts->no_splice && o.tx.mode == TLSK_MODE_KERNEL;
    if ((rc = dir_init(&up, true, res->splice_rx, tls_fd, plain_fd)) != 0 ||
        (rc = dir_init(&down, false, res->splice_tx, tls_fd, plain_fd)) != 0) {
        set_err(res, rc, "setup");
        goto out;
    }
    up.reset_fd = opts->plain_peer_fd;
    if (opts->idle_ms > 0) {
        struct timespec t;
        clock_gettime(CLOCK_MONOTONIC, &t);
        last = (long long)t.tv_sec * 1000 + t.tv_nsec / 1000000;
    }
    for (;;) {
        int p = 0, r;

        if (up.shut && down.shut) {
            break;
        }
        if (res->plain_reset) {
            break; /* the TLS peer truncated: the whole connection ends, abortively */
        }
        if (stopped && down.shut) {
            break;
        }
        struct dir *ds[2] = { &down, &up };
        for (int i = 0; i < 2; i++) {
            int f = dir_fill(s, ds[i], res);
            r = f < 0 ? f : dir_flush(s, ds[i], res);
            if (r < 0) {
                rc = r;
                goto out;
            }
            p |= f | r;
        }
        if (p) {
            spins = 0;
            if (opts->idle_ms > 0) {
                struct timespec t;
                clock_gettime(CLOCK_MONOTONIC, &t);
                last = (long long)t.tv_sec * 1000 + t.tv_nsec / 1000000;
            }
            continue;
        }

        struct pollfd pf[3];
        int n = 0;
        short tev = (short)((up.rblk ? up.rwant : 0) | (down.wblk ? down.wwant : 0));
        short pev = (short)((up.wblk ? POLLOUT : 0) | (down.rblk ? POLLIN : 0));
        pf[n++] = (struct pollfd){ .fd = tev ? tls_fd : -1, .events = tev };
        pf[n++] = (struct pollfd){ .fd = pev ? plain_fd : -1, .events = pev };
        if (opts->stop_fd >= 0 && !stopped) {
            pf[n++] = (struct pollfd){ .fd = opts->stop_fd, .events = POLLIN };
        }
        /* Level-triggered poll on 6.1 reports a partial kTLS record as readable while reads
         * give EAGAIN (docs/KERNEL.md §5): back off briefly instead of spinning. */
        if (++spins > 4) {
            struct timespec t = { 0, 1000000 };
            nanosleep(&t, NULL);
        }
        int timeout = -1;
        if (opts->idle_ms > 0) {
            struct timespec t;
            clock_gettime(CLOCK_MONOTONIC, &t);
            long long now = (long long)t.tv_sec * 1000 + t.tv_nsec / 1000000;
            if (now - last >= opts->idle_ms) {
                rc = -ETIMEDOUT;
                set_err(res, rc, "idle");
                goto out;
            }
            timeout = (int)(opts->idle_ms - (now - last));
        }
        r = poll(pf, (nfds_t)n, timeout);
        if (r < 0) {
            if (errno == EINTR) {
                continue;
            }
            rc = -errno;
            set_err(res, rc, "poll");
            goto out;
        }
        if (r == 0) {
            continue;
        }
        if (opts->idle_ms > 0) {
            struct timespec t;
            clock_gettime(CLOCK_MONOTONIC, &t);
            last = (long long)t.tv_sec * 1000 + t.tv_nsec / 1000000;
        }
        short bad = POLLERR | POLLHUP | POLLNVAL;
        if (pf[0].revents) {
            if (pf[0].revents & (up.rwant | bad)) {
                up.rblk = false;
            }
            if (pf[0].revents & (down.wwant | bad)) {
                down.wblk = false;
            }
        }
        if (pf[1].revents) {
            if (pf[1].revents & (POLLIN | bad)) {
                down.rblk = false;
            }
            if (pf[1].revents & (POLLOUT | bad)) {
                up.wblk = false;
            }
        }
        if (n > 2 && pf[2].revents) {
            stopped = true;
            res->program_exited = true;
            if (opts->plain_peer_fd && *opts->plain_peer_fd >= 0) {
                close(*opts->plain_peer_fd); /* now its exit is our EOF */
                *opts->plain_peer_fd = -1;
            }
            /* The program is gone: whatever it wrote is still readable; read it all. */
            down.rblk = false;
        }
    }
out:
    res->to_plain = up.bytes;
    res->to_tls = down.bytes;
    dir_dispose(&up);
    dir_dispose(&down);
    return rc;
}
