/* test_userio.c - userspace I/O in as few syscalls as the contract allows.
 *
 * Writes: records gather into one send (lib/txq.c) and the write contract holds: a count is
 * bytes whose records have left, -EAGAIN or a short count means "write the same bytes again",
 * queued records never overtake or get overtaken (an alert, close_notify), and the peer reads
 * exactly the stream that was written.
 *
 * Reads: a context made where the kernel has no tls ULP reads ahead (one read(2) for what has
 * arrived); one made where the kernel could take the connection reads one record at a time,
 * so that bytes past the handshake stay in the kernel for RX offload (docs/OPENSSL.md §4).
 *
 * Pending: tlsk_socket_pending() says 1 while a record behind the one read is held in
 * userspace (OpenSSL's read-ahead) or a close_notify was seen, and 0 once nothing is held, so
 * an event loop may wait for POLLIN instead of reading; in kernel receive mode the record
 * waits in the socket (readable) instead.
 *
 * Stale errors: an error some other code left on the thread's OpenSSL error queue does not turn
 * the next read or write into a failure (SSL_get_error() reads the queue: the record paths
 * empty it first, docs/OPENSSL.md §7.1).
 *
 * Every connection keeps both directions in userspace (policy off): in the kernel tiers the
 * kernel makes TLS records itself and the write path here is not used.
 */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <openssl/err.h>

#include "harness.h"
#include "pair.h"
#include "tap.h"
#include "tlsk.h"

#define BIG (4u << 20)

static unsigned char pattern(size_t i)
{
    return (unsigned char)(i * 7 + (i >> 11));
}

/* The syscalls a thread makes while counting: read(2) and write(2) (OpenSSL's socket BIO) and
 * send(2) (txq.c) are wrapped here, counted, and passed straight to the kernel.  Nothing is
 * faked: the library is linked statically into this program and the wrappers are exported,
 * so its calls and libcrypto's land here. */
static __thread bool counting;
static __thread long long sends, reads;

__attribute__((visibility("default"))) ssize_t write(int fd, const void *buf, size_t len)
{
    sends += counting;
    return syscall(SYS_write, fd, buf, len);
}

__attribute__((visibility("default"))) ssize_t send(int fd, const void *buf, size_t len, int flags)
{
    sends += counting;
    return syscall(SYS_sendto, fd, buf, len, flags, NULL, 0);
}

__attribute__((visibility("default"))) ssize_t read(int fd, void *buf, size_t len)
{
    reads += counting;
    return syscall(SYS_read, fd, buf, len);
}

static unsigned char *big_buf(size_t len)
{
    unsigned char *b = malloc(len);
    for (size_t i = 0; b && i < len; i++) {
        b[i] = pattern(i);
    }
    return b;
}

/* Reader: exactly arg bytes of the pattern (v[0] = bytes read, r[0] = 1 if all matched),
 * then close in order.  With nonblock set it reads slowly: small reads with pauses, so that
 * the writer meets a full socket. */
static int read_pattern(struct tp_end *e, struct tlsk_socket *s)
{
    unsigned char buf[8192];
    size_t got = 0, want = (size_t)e->arg;
    bool same = true;
    int pauses = 0;

    while (got < want) {
        size_t n = want - got < sizeof buf ? want - got : sizeof buf;
        ssize_t r;
        if (e->nonblock && pauses < 40 && got % (256 * 1024) < sizeof buf) {
            usleep(20000);
            pauses++;
        }
        r = tlsk_socket_read(s, buf, n);
        if (r == -EAGAIN) {
            if ((r = tp_wait(s)) != 0) {
                return (int)r;
            }
            continue;
        }
        if (r <= 0) {
            snprintf(e->note, sizeof e->note, "read %s after %zu bytes", tlsk_err_name((int)r),
                     got);
            return r == 0 ? -EPROTO : (int)r;
        }
        for (ssize_t i = 0; i < r; i++) {
            same = same && buf[i] == pattern(got + (size_t)i);
        }
        got += (size_t)r;
    }
    e->v[0] = (long long)got;
    e->r[0] = same;
    return tp_finish(s, false);
}

/* Writer, blocking socket: one tlsk_socket_write of BIG bytes; v[0] = its result, v[1] =
 * write syscalls it took, v[2] = tlsk_socket_events() after it. */
static int write_once(struct tp_end *e, struct tlsk_socket *s)
{
    unsigned char *b = big_buf(BIG);
    ssize_t n;

    if (!b) {
        return -ENOMEM;
    }
    sends = 0;
    counting = true;
    n = tlsk_socket_write(s, b, BIG);
    counting = false;
    e->v[1] = sends;
    e->v[0] = n;
    e->v[2] = tlsk_socket_events(s) & POLLOUT;
    free(b);
    if (n < 0) {
        return (int)n;
    }
    return tp_finish(s, true);
}

/* Writer, non-blocking socket with a small send buffer: the contract loop (a short count
 * moves on, -EAGAIN waits, the rest is offered again).  v[0] = bytes written, v[1] = short
 * counts and -EAGAIN seen, r[0] = 1 if no count ever exceeded what was offered. */
static int write_contract(struct tp_end *e, struct tlsk_socket *s)
{
    size_t len = (size_t)e->arg, done = 0;
    unsigned char *b = big_buf(len);
    int sndbuf = 16384;
    bool sane = true;

    if (!b) {
        return -ENOMEM;
    }
    setsockopt(tlsk_socket_fd(s), SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf);
    while (done < len) {
        size_t offer = len - done < 300000 ? len - done : 300000;
        ssize_t n = tlsk_socket_write(s, b + done, offer);
        if (n == -EAGAIN) {
            e->v[1]++;
            if (tp_wait(s) != 0) {
                break;
            }
            continue;
        }
        if (n <= 0) {
            free(b);
            return n < 0 ? (int)n : -EPROTO;
        }
        sane = sane && (size_t)n <= offer;
        e->v[1] += (size_t)n < offer;
        done += (size_t)n;
    }
    free(b);
    e->v[0] = (long long)done;
    e->r[0] = sane;
    return tp_finish(s, true);
}

/* Writer: one write that the socket cannot take whole, then close_notify without offering
 * the rest again.  The queued records must leave before close_notify (the peer reads a clean
 * end after whole records).  v[0] = the write's result, v[1] = shutdown calls until 0. */
static int write_then_shutdown(struct tp_end *e, struct tlsk_socket *s)
{
    unsigned char *b = big_buf(BIG);
    int sndbuf = 16384, rc;
    ssize_t n;

    if (!b) {
        return -ENOMEM;
    }
    setsockopt(tlsk_socket_fd(s), SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf);
    n = tlsk_socket_write(s, b, BIG);
    free(b);
    e->v[0] = n;
    if (n < 0 && n != -EAGAIN) {
        return (int)n;
    }
    while ((rc = tlsk_socket_shutdown(s)) == -EAGAIN) {
        e->v[1]++;
        if ((rc = tp_wait(s)) != 0) {
            return rc;
        }
    }
    e->v[1]++;
    return rc;
}

/* Reader for write_then_shutdown: slowly, everything up to close_notify.  v[0] = bytes,
 * r[0] = 1 if they are a prefix of the pattern, r[1] = 1 if the end was close_notify. */
static int read_to_close(struct tp_end *e, struct tlsk_socket *s)
{
    unsigned char buf[8192];
    size_t got = 0;
    bool same = true;

    usleep(200000); /* let the writer meet the full socket first */
    for (;;) {
        ssize_t r = tlsk_socket_read(s, buf, sizeof buf);
        if (r == -EAGAIN) {
            if ((r = tp_wait(s)) != 0) {
                return (int)r;
            }
            continue;
        }
        if (r < 0) {
            snprintf(e->note, sizeof e->note, "read %s after %zu bytes", tlsk_err_name((int)r),
                     got);
            return (int)r;
        }
        if (r == 0) {
            e->r[1] = 1;
            break;
        }
        for (ssize_t i = 0; i < r; i++) {
            same = same && buf[i] == pattern(got + (size_t)i);
        }
        got += (size_t)r;
    }
    e->v[0] = (long long)got;
    e->r[0] = same;
    return 0;
}

/* One userspace-only connection: sbody on the server, cbody on the client (arg for both). */
static bool run(struct tp_end *sv, struct tp_end *cl, int version, bool nonblock,
                tp_body_fn sbody, tp_body_fn cbody, int arg, const char *v)
{
    sv->ctx = tp_ctx(version, 0, "agent1", 0, 0, 0);
    cl->ctx = tp_ctx(version, 0, NULL, 0, 0, 0);
    sv->policy = cl->policy = TLSK_OFFLOAD_OFF;
    sv->nonblock = cl->nonblock = nonblock;
    sv->body = sbody;
    cl->body = cbody;
    sv->arg = cl->arg = arg;
    tp_conn(sv, cl);
    tlsk_context_free(sv->ctx);
    tlsk_context_free(cl->ctx);
    return tp_conn_ok(sv, cl, v);
}

static void one_send_per_batch(int version, const char *v)
{
    struct tp_end sv = { 0 }, cl = { 0 };

    if (run(&sv, &cl, version, false, write_once, read_pattern, BIG, v)) {
        TAP_OK(sv.v[0] == BIG, "%s: one 4 MiB write returns 4 MiB (%lld)", v, sv.v[0]);
        TAP_OK(cl.v[0] == BIG && cl.r[0], "%s: the peer read exactly the 4 MiB written", v);
        /* 256 records: one write(2) each without txq.c; one send per 16 records with it,
         * plus any short send of a full socket. */
        TAP_OK(sv.v[1] > 0 && sv.v[1] <= 64,
               "%s: 256 records left in %lld write/send syscalls (at most 64)", v, sv.v[1]);
        TAP_OK(sv.v[2] == 0, "%s: nothing is left queued after a whole write", v);
    }
}

static void contract(int version, const char *v, int len)
{
    struct tp_end sv = { 0 }, cl = { 0 };

    if (run(&sv, &cl, version, true, write_contract, read_pattern, len, v)) {
        TAP_OK(sv.v[0] == len && sv.r[0],
               "%s: non-blocking writes add up to the stream (%lld of %d), none over its offer",
               v, sv.v[0], len);
        TAP_OK(sv.v[1] > 0, "%s: the slow reader made writes short or -EAGAIN (%lld times)", v,
               sv.v[1]);
        TAP_OK(cl.v[0] == len && cl.r[0], "%s: the peer read exactly the stream", v);
    }
}

static void close_after_queue(int version, const char *v)
{
    struct tp_end sv = { 0 }, cl = { 0 };

    if (run(&sv, &cl, version, true, write_then_shutdown, read_to_close, 0, v)) {
        TAP_OK(sv.v[0] == -EAGAIN || (sv.v[0] > 0 && sv.v[0] < (long long)BIG),
               "%s: a 4 MiB write into a full socket is short or -EAGAIN (%lld)", v, sv.v[0]);
        TAP_OK(sv.v[1] > 1, "%s: close_notify waited for the queued records (%lld calls)", v,
               sv.v[1]);
        TAP_OK(cl.r[1] && cl.r[0] && cl.v[0] >= (sv.v[0] > 0 ? sv.v[0] : 0),
               "%s: the peer read %lld bytes of the stream (at least the %lld reported), then "
               "close_notify", v, cl.v[0], sv.v[0]);
    }
}

#define SMALL_RECS 64
#define SMALL_LEN 100

/* Client: SMALL_RECS records of SMALL_LEN bytes, each its own write, then close. */
static int write_small(struct tp_end *e, struct tlsk_socket *s)
{
    unsigned char b[SMALL_LEN];

    (void)e;
    for (int i = 0; i < SMALL_RECS; i++) {
        memset(b, 'a' + i % 26, sizeof b);
        if (h_write_all(s, b, sizeof b) != 0) {
            return -EIO;
        }
    }
    return tp_finish(s, false);
}

/* Server: once they have all arrived, read them; v[0] = read(2) calls, r[0] = bytes right. */
static int read_small(struct tp_end *e, struct tlsk_socket *s)
{
    unsigned char b[SMALL_RECS * SMALL_LEN];
    ssize_t n;
    bool same = true;

    usleep(200000);
    reads = 0;
    counting = true;
    n = h_read_full(s, b, sizeof b);
    counting = false;
    e->v[0] = reads;
    for (size_t i = 0; n == (ssize_t)sizeof b && i < sizeof b; i++) {
        same = same && b[i] == 'a' + (i / SMALL_LEN) % 26;
    }
    e->r[0] = n == (ssize_t)sizeof b && same;
    return tp_finish(s, true);
}

static void read_ahead(int version, const char *v)
{
    struct tp_end sv = { 0 }, cl = { 0 };
    bool ulp = tlsk_kernel_probe()->ulp;

    if (run(&sv, &cl, version, false, read_small, write_small, 0, v)) {
        TAP_OK(sv.r[0], "%s: the server read the %d records exactly", v, SMALL_RECS);
        if (ulp) {
            /* Read-ahead here would keep bytes past a handshake from the kernel. */
            TAP_OK(sv.v[0] >= 2 * SMALL_RECS,
                   "%s: the kernel has a tls ULP: one record per read, header then body "
                   "(%lld reads for %d records)", v, sv.v[0], SMALL_RECS);
        } else {
            TAP_OK(sv.v[0] >= 1 && sv.v[0] <= 8,
                   "%s: no tls ULP: OpenSSL reads ahead (%lld reads for %d records, at most 8)",
                   v, sv.v[0], SMALL_RECS);
        }
    }
}

#define STALE_LEN (64u << 10)

/* Server: before each call, an unrelated error on this thread's queue.  r[0] a read with
 * nothing to read says -EAGAIN, r[1] a 1 KiB write (one record) and r[2] a 64 KiB write
 * (gathered) go whole, r[3] the client's byte reads back; v[0] what the read returned. */
static int stale_errors(struct tp_end *e, struct tlsk_socket *s)
{
    static unsigned char b[STALE_LEN];
    ssize_t n;

    memset(b, 's', sizeof b);
    ERR_raise_data(ERR_LIB_USER, 1, "left by someone else");
    n = tlsk_socket_read(s, b, 1);
    e->v[0] = n;
    e->r[0] = n == -EAGAIN;
    ERR_raise_data(ERR_LIB_USER, 1, "left by someone else");
    e->r[1] = h_write_all(s, b, 1024) == 0;
    ERR_raise_data(ERR_LIB_USER, 1, "left by someone else");
    e->r[2] = h_write_all(s, b, sizeof b) == 0;
    ERR_raise_data(ERR_LIB_USER, 1, "left by someone else");
    e->r[3] = tp_expect_byte(s, 'x') == 0;
    return tp_finish(s, true);
}

/* Client: reads the server's 1 KiB + 64 KiB, then sends one byte. */
static int stale_peer(struct tp_end *e, struct tlsk_socket *s)
{
    static unsigned char b[1024 + STALE_LEN];
    ssize_t n = h_read_full(s, b, sizeof b);

    e->r[0] = n == (ssize_t)sizeof b;
    if (h_write_all(s, "x", 1) != 0) {
        return -EIO;
    }
    return tp_finish(s, false);
}

static void stale(int version, const char *v)
{
    struct tp_end sv = { 0 }, cl = { 0 };

    if (run(&sv, &cl, version, true, stale_errors, stale_peer, 0, v)) {
        TAP_OK(sv.r[0], "%s: a read with nothing to read says -EAGAIN, not the stale error (%s)",
               v, tlsk_err_name((int)sv.v[0]));
        TAP_OK(sv.r[1] && sv.r[2] && cl.r[0], "%s: a 1 KiB and a 64 KiB write go whole", v);
        TAP_OK(sv.r[3], "%s: the peer's byte reads back", v);
    }
}

static bool readable(int fd)
{
    struct pollfd p = { .fd = fd, .events = POLLIN };
    return poll(&p, 1, 0) == 1 && (p.revents & POLLIN);
}

/* Server (non-blocking), once the client's two one-byte records have both arrived: r[0] after
 * reading the first, the second is held (pending) or in the socket (readable); v[0] pending
 * then, v[1] whether it came from the socket; r[1] after the second, nothing held and nothing
 * readable; r[2] after the client's close_notify, pending says 1 (the read answers 0 at once). */
static int pending_server(struct tp_end *e, struct tlsk_socket *s)
{
    char b[16];
    ssize_t n;

    usleep(200000);
    /* One byte at a time: kernel receive fills a larger buffer from both records. */
    n = tlsk_socket_read(s, b, 1);
    e->v[0] = tlsk_socket_pending(s);
    e->v[1] = readable(e->fd);
    e->r[0] = n == 1 && b[0] == 'A' && (e->v[0] == 1 || e->v[1]);
    n = tlsk_socket_read(s, b, 1);
    e->r[1] = n == 1 && b[0] == 'B' && tlsk_socket_pending(s) == 0 && !readable(e->fd);
    if (h_write_all(s, "x", 1) != 0) {
        return -EIO;
    }
    while ((n = tlsk_socket_read(s, b, sizeof b)) == -EAGAIN) {
        tp_wait(s);
    }
    e->r[2] = n == 0 && tlsk_socket_pending(s) == 1;
    return tlsk_socket_shutdown(s);
}

static int pending_client(struct tp_end *e, struct tlsk_socket *s)
{
    (void)e;
    if (h_write_all(s, "A", 1) != 0 || h_write_all(s, "B", 1) != 0) {
        return -EIO;
    }
    return tp_expect_byte(s, 'x') == 0 ? tp_finish(s, false) : -EPROTO;
}

static void pending(int version, enum tlsk_offload_policy policy, const char *v)
{
    struct tp_end sv = { 0 }, cl = { 0 };
    bool ulp = tlsk_kernel_probe()->ulp;

    sv.ctx = tp_ctx(version, 0, "agent1", 0, 0, 0);
    cl.ctx = tp_ctx(version, 0, NULL, 0, 0, 0);
    sv.policy = cl.policy = policy;
    sv.nonblock = cl.nonblock = true;
    sv.body = pending_server;
    cl.body = pending_client;
    tp_conn(&sv, &cl);
    tlsk_context_free(sv.ctx);
    tlsk_context_free(cl.ctx);
    if (!tp_conn_ok(&sv, &cl, v)) {
        return;
    }
    TAP_OK(sv.r[0], "%s: a record behind the one read is held (pending %lld) or readable (%lld)",
           v, sv.v[0], sv.v[1]);
    TAP_OK(sv.r[1], "%s: all read: pending 0 and nothing readable, so waiting is right", v);
    TAP_OK(sv.r[2], "%s: after close_notify, pending 1 (the read answers at once)", v);
    if (!ulp) {
        /* No tls ULP: OpenSSL read both records in one read(2) (read_ahead above). */
        TAP_OK(sv.v[0] == 1 && !sv.v[1],
               "%s: no tls ULP: the second record is OpenSSL's, and pending says so", v);
    } else if (sv.off.rx.mode == TLSK_MODE_KERNEL) {
        TAP_OK(sv.v[0] == 0 && sv.v[1],
               "%s: kernel receive: the second record waits in the socket, pending 0", v);
    }
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    alarm(120);
    one_send_per_batch(TLSK_TLS1_3, "TLS 1.3");
    one_send_per_batch(TLSK_TLS1_2, "TLS 1.2");
    contract(TLSK_TLS1_3, "TLS 1.3 contract", 3 << 20);
    contract(TLSK_TLS1_2, "TLS 1.2 contract", 3 << 20);
    close_after_queue(TLSK_TLS1_3, "TLS 1.3 close");
    close_after_queue(TLSK_TLS1_2, "TLS 1.2 close");
    read_ahead(TLSK_TLS1_3, "TLS 1.3 reads");
    read_ahead(TLSK_TLS1_2, "TLS 1.2 reads");
    stale(TLSK_TLS1_3, "TLS 1.3 stale errors");
    stale(TLSK_TLS1_2, "TLS 1.2 stale errors");
    pending(TLSK_TLS1_3, TLSK_OFFLOAD_OFF, "TLS 1.3 pending");
    pending(TLSK_TLS1_2, TLSK_OFFLOAD_OFF, "TLS 1.2 pending");
    pending(TLSK_TLS1_3, TLSK_OFFLOAD_AUTO, "TLS 1.3 pending, offload auto");
    pending(TLSK_TLS1_2, TLSK_OFFLOAD_AUTO, "TLS 1.2 pending, offload auto");
    return tap_done();
}
