/*
 * test_lean_idle.c - lean at idle (TLSK_SOCKET_LEAN_IDLE, lib/idle.c, docs/KERNEL.md §16.1):
 * where tlsk's own record layer is to carry a server connection, it takes it when the
 * connection first waits for its peer, not at the end of the handshake, and only when
 * OpenSSL holds nothing in flight.
 *
 * Each case is one connection between two tlsk ends (tests/lib/pair.c), the server's
 * descriptor non-blocking, for TLS 1.2 and TLS 1.3:
 *
 *   wait      the client's "h" is read; the server's next read must block (the client waits
 *             for it) and the connection is lean from then on; 1 MiB each way after it,
 *             checked byte for byte (the sequence numbers soft.c starts from)
 *   short     handshake, then close_notify: never lean
 *   held      the client sends 20,000 bytes (two records) in one write; the server reads 100
 *             and calls tlsk_socket_idle(): not lean, OpenSSL holds the rest; once it is read,
 *             the next call makes the connection lean; data both ways after it
 *   cut       the server writes records of 16 KiB until the socket is full, so that OpenSSL
 *             holds the last one half sent: tlsk_socket_idle() must leave it alone; once the
 *             client reads and the write is finished, the next call makes the connection
 *             lean, and the client checks the whole stream (a record lost or sent twice in
 *             the change would show)
 *   stream    as cut, with no call of tlsk_socket_idle(): the write after the one that
 *             waited for the socket changes the connection over, and every byte arrives in
 *             order
 *   file      tlsk_socket_sendfile() of an 8 MiB file to a client that reads at once: lean
 *             from the first call (64 KiB or more changes over first), every byte in order
 *   update    TLS 1.3: a KeyUpdate from the client before the first wait keeps the
 *             connection with OpenSSL for good (its captured secret is no longer in use);
 *             data both ways after it
 *
 * Natively (no tls module) each case checks when the connection became lean.  In the kTLS
 * tiers the kernel takes the keys at the end of the handshake, so the connection is lean
 * from then exactly when both directions are in the kernel, and every case must still run.
 */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"
#include "pair.h"
#include "tap.h"

enum { C_WAIT, C_SHORT, C_HELD, C_CUT, C_STREAM, C_FILE, C_UPDATE };
static const char *const case_name[] = { "wait", "short", "held", "cut", "stream", "file",
                                         "update" };

/* Server results: lean after the handshake, at the check before the change, after it. */
enum { R_HS, R_BEFORE, R_AFTER, R_IDLE_RC };

#define BULK (1u << 20)
#define CHUNK 16384u
#define STREAM (8u << 20)

static atomic_int g_full;   /* cut: the server's socket is full and checked */
static atomic_llong g_total; /* cut: the bytes of pattern 7 the client is to read */

/* One read that must find nothing: the peer is waiting for us.  0 or the failure. */
static int read_blocks(struct tlsk_socket *s)
{
    char b[64];
    ssize_t n = tlsk_socket_read(s, b, sizeof b);
    return n == -EAGAIN ? 0 : n < 0 ? (int)n : -EPROTO;
}

/* Exchange after the change: 1 MiB to the client, 100,000 bytes back. */
static int server_after(struct tlsk_socket *s)
{
    int rc = h_send_pattern(s, 1, BULK);
    return rc ? rc : h_recv_pattern(s, 2, 100000);
}

static int client_after(struct tlsk_socket *s)
{
    int rc = h_recv_pattern(s, 1, BULK);
    return rc ? rc : h_send_pattern(s, 2, 100000);
}

/* cut, stream: 16 KiB records of pattern 7 until one is cut short; the checks (cut: with
 * tlsk_socket_idle(), stream: none); then the rest. */
static int server_cut(struct tp_end *e, struct tlsk_socket *s, bool ask)
{
    static _Thread_local unsigned char buf[CHUNK];
    uint64_t off = 0;
    ssize_t n;
    int rc;

    for (;;) {
        h_pattern(7, off, buf, CHUNK);
        n = tlsk_socket_write(s, buf, CHUNK);
        if (n == -EAGAIN) {
            break;
        }
        if (n < 0) {
            return (int)n;
        }
        off += (uint64_t)n;
        if (off > (256u << 20)) {
            return -ENOBUFS; /* the socket never filled */
        }
    }
    e->r[R_IDLE_RC] = ask ? tlsk_socket_idle(s) : 0;
    e->r[R_BEFORE] = tlsk_socket_lean(s);
    /* The same bytes again, as OpenSSL requires, then 1 MiB more. */
    atomic_store(&g_total, (long long)(off + CHUNK + BULK));
    atomic_store(&g_full, 1);
    if ((rc = h_write_all(s, buf, CHUNK)) != 0) {
        return rc;
    }
    off += CHUNK;
    if (ask && (rc = tlsk_socket_idle(s)) != 0) {
        return rc;
    }
    e->r[R_AFTER] = tlsk_socket_lean(s);
    while (off < (uint64_t)atomic_load(&g_total)) {
        h_pattern(7, off, buf, CHUNK);
        if ((rc = h_write_all(s, buf, CHUNK)) != 0) {
            return rc;
        }
        off += CHUNK;
    }
    e->v[2] = tlsk_socket_lean(s);
    return 0;
}

static int server_body(struct tp_end *e, struct tlsk_socket *s)
{
    char b[20000];
    int rc;

    e->r[R_HS] = tlsk_socket_lean(s);
    switch (e->arg) {
    case C_WAIT:
    case C_UPDATE: /* the client's KeyUpdate comes before its "h", so it is read first */
        if ((rc = tp_expect_byte(s, 'h')) != 0) {
            return rc;
        }
        e->r[R_BEFORE] = tlsk_socket_lean(s);
        if ((rc = read_blocks(s)) != 0) {
            return rc;
        }
        e->r[R_AFTER] = tlsk_socket_lean(s);
        e->v[0] = (long long)tlsk_socket_key_updates(s);
        rc = server_after(s);
        break;
    case C_SHORT:
        rc = 0;
        break;
    case C_HELD:
        if ((rc = (int)h_read_full(s, b, 100)) != 100) {
            return rc < 0 ? rc : -EPROTO;
        }
        e->r[R_IDLE_RC] = tlsk_socket_idle(s);
        e->r[R_BEFORE] = tlsk_socket_lean(s);
        if ((rc = (int)h_read_full(s, b + 100, sizeof b - 100)) != (int)sizeof b - 100) {
            return rc < 0 ? rc : -EPROTO;
        }
        if (h_pattern_check(3, 0, (unsigned char *)b, sizeof b) >= 0) {
            return -EBADMSG;
        }
        if ((rc = tlsk_socket_idle(s)) != 0) {
            return rc;
        }
        e->r[R_AFTER] = tlsk_socket_lean(s);
        rc = server_after(s);
        break;
    case C_CUT:
    case C_STREAM:
        rc = server_cut(e, s, e->arg == C_CUT);
        break;
    case C_FILE:
        if ((rc = h_pattern_file(8, STREAM)) >= 0) {
            int fd = rc;
            off_t off = 0;
            ssize_t n = tlsk_socket_sendfile(s, fd, &off, STREAM); /* the first call */
            e->r[R_BEFORE] = tlsk_socket_lean(s);
            rc = n < 0 && n != -EAGAIN ? (int)n : 0;
            while (rc == 0 && off < (off_t)STREAM) {
                n = tlsk_socket_sendfile(s, fd, &off, STREAM - (size_t)off);
                rc = n == -EAGAIN ? tp_wait(s) : n < 0 ? (int)n : 0;
            }
            close(fd);
        }
        e->r[R_AFTER] = tlsk_socket_lean(s);
        break;
    default:
        return -EINVAL;
    }
    e->v[1] = (long long)tlsk_socket_lean(s);
    return rc ? rc : tp_finish(s, true);
}

static int client_body(struct tp_end *e, struct tlsk_socket *s)
{
    unsigned char b[20000];
    int rc = 0;

    switch (e->arg) {
    case C_WAIT:
        if ((rc = h_write_all(s, "h", 1)) == 0) {
            rc = client_after(s);
        }
        break;
    case C_SHORT:
        break;
    case C_HELD:
        h_pattern(3, 0, b, sizeof b);
        if ((rc = h_write_all(s, b, sizeof b)) == 0) {
            rc = client_after(s);
        }
        break;
    case C_CUT:
    case C_STREAM:
        for (int i = 0; i < 2000 && !atomic_load(&g_full); i++) {
            poll(NULL, 0, 10);
        }
        rc = h_recv_pattern(s, 7, (size_t)atomic_load(&g_total));
        break;
    case C_FILE:
        rc = h_recv_pattern(s, 8, STREAM);
        break;
    default: /* C_UPDATE */
        if ((rc = tlsk_socket_key_update(s, 0)) == 0 && (rc = h_write_all(s, "h", 1)) == 0) {
            rc = client_after(s);
        }
        break;
    }
    return rc ? rc : tp_finish(s, false);
}

static void one(int version, int c, bool soft)
{
    struct tp_end sv = { 0 }, cl = { 0 };
    const char *vn = version == TLSK_TLS1_3 ? "TLS 1.3" : "TLS 1.2";
    char what[96];
    bool kernel;

    sv.ctx = tp_ctx(version, TLSK_LEAN_USERSPACE, "agent1", 0, 0, 0);
    cl.ctx = tp_ctx(version, 0, NULL, 0, 0, 0);
    sv.body = server_body;
    cl.body = client_body;
    sv.sock_flags = TLSK_SOCKET_LEAN_IDLE;
    cl.policy = TLSK_OFFLOAD_OFF; /* the client's own KeyUpdate needs no kernel re-key */
    sv.nonblock = true;
    sv.arg = cl.arg = c;
    atomic_store(&g_full, 0);
    atomic_store(&g_total, 0);
    if (!sv.ctx || !cl.ctx) {
        TAP_OK(false, "%s, %s: contexts", vn, case_name[c]);
        goto out;
    }
    tp_conn(&sv, &cl);
    snprintf(what, sizeof what, "%s, %s", vn, case_name[c]);
    tp_conn_ok(&sv, &cl, what);
    kernel = sv.kernel_tx && sv.kernel_rx;
    if (!soft) {
        /* The kernel's keys go in at the end of the handshake: lean from then, or never. */
        TAP_OK(sv.r[R_HS] == kernel && sv.v[1] == kernel,
               "%s: lean from the handshake exactly when the kernel has both directions (lean "
               "%d then %lld, tx %d, rx %d)", what, sv.r[R_HS], sv.v[1], sv.kernel_tx,
               sv.kernel_rx);
        goto out;
    }
    TAP_OK(!sv.r[R_HS], "%s: not lean at the end of the handshake", what);
    switch (c) {
    case C_WAIT:
        TAP_OK(!sv.r[R_BEFORE] && sv.r[R_AFTER],
               "%s: lean from the first read that waited after data (before %d, after %d)",
               what, sv.r[R_BEFORE], sv.r[R_AFTER]);
        break;
    case C_SHORT:
        TAP_OK(!sv.v[1], "%s: a connection that closes before it waits is never lean", what);
        break;
    case C_HELD:
        TAP_OK(sv.r[R_IDLE_RC] == 0 && !sv.r[R_BEFORE] && sv.r[R_AFTER],
               "%s: not lean while OpenSSL holds a record read ahead, lean once it is read "
               "(idle %s, before %d, after %d)", what, tlsk_err_name(sv.r[R_IDLE_RC]),
               sv.r[R_BEFORE], sv.r[R_AFTER]);
        break;
    case C_CUT:
        TAP_OK(sv.r[R_IDLE_RC] == 0 && !sv.r[R_BEFORE] && sv.r[R_AFTER],
               "%s: not lean while a record is half sent, lean once the write is done, and "
               "all %lld bytes arrived in order (idle %s, before %d, after %d)", what,
               (long long)atomic_load(&g_total), tlsk_err_name(sv.r[R_IDLE_RC]),
               sv.r[R_BEFORE], sv.r[R_AFTER]);
        break;
    case C_STREAM:
        TAP_OK(!sv.r[R_BEFORE] && sv.v[2],
               "%s: with no call of tlsk_socket_idle(), lean once a write of 16 KiB has waited "
               "for the socket and finished, all %lld bytes in order (at the wait %d, end %lld)",
               what, (long long)atomic_load(&g_total), sv.r[R_BEFORE], sv.v[2]);
        break;
    case C_FILE:
        TAP_OK(sv.r[R_BEFORE] && sv.r[R_AFTER],
               "%s: lean from a first sendfile of %u bytes on (bulk goes through tlsk's record "
               "layer), all in order (first %d, end %d)", what, STREAM, sv.r[R_BEFORE],
               sv.r[R_AFTER]);
        break;
    default:
        TAP_OK(sv.v[0] == 1 && !sv.r[R_AFTER] && !sv.v[1],
               "%s: a key update before the first wait keeps OpenSSL (key updates %lld, lean "
               "%d)", what, sv.v[0], sv.r[R_AFTER]);
        break;
    }
out:
    tlsk_context_free(sv.ctx);
    tlsk_context_free(cl.ctx);
}

int main(void)
{
    bool soft = !tlsk_kernel_probe()->ulp;

    signal(SIGPIPE, SIG_IGN);
    alarm(300);
    if (h_expect_ktls() && !TAP_OK(!soft, "kTLS kernel present")) {
        return tap_done();
    }
    TAP_OK(tlsk_socket_idle(NULL) == TLSK_ECONFIG, "tlsk_socket_idle(NULL): TLSK_ECONFIG");
    for (int v = 0; v < 2; v++) {
        int version = v ? TLSK_TLS1_2 : TLSK_TLS1_3;
        for (int c = C_WAIT; c <= C_UPDATE; c++) {
            if (c != C_UPDATE || version == TLSK_TLS1_3) {
                one(version, c, soft);
            }
        }
    }
    return tap_done();
}
