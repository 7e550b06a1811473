/*
 * test_keyupdate.c - TLS 1.3 KeyUpdate and the record-count limit with tlsk at both ends
 * (tlsk.h tlsk_socket_key_update / tlsk_socket_key_updates / key_update_records,
 * TLSK_OFFLOAD_RX_TLS13; docs/KERNEL.md §7; lib/bridge.c, lib/rekey.c):
 *  - userspace (policy off): key updates each direction, with and without request_peer; the
 *    peer keeps reading and both ends count them;
 *  - policy auto: natively as userspace.  On a kernel that re-keys (6.14+, the newest tier)
 *    both directions are in the kernel and every update re-keys it: /proc/net/tls_stat's
 *    TlsTxRekeyOk and TlsRxRekeyOk move by exactly the updates sent; a KeyUpdate that meets a
 *    full send buffer waits and goes before later data.  On 6.1 (TX in the kernel, no re-key)
 *    tlsk_socket_key_update() gives TLSK_EKEYUPDATE and the connection continues; a peer's
 *    update_requested reaching a TX-offloaded end is not answered and the stream stays
 *    consistent;
 *  - TLSK_OFFLOAD_RX_TLS13 forced: on 6.1 a peer's KeyUpdate gives a clean, named
 *    TLSK_EKEYUPDATE instead of corruption; natively and on 6.14+ the data arrives;
 *  - 1,000 key updates each way during a 64 MiB transfer each way: byte-exact;
 *  - key_update_records = 64: userspace re-keys and the data stays intact; with TX in the
 *    kernel it re-keys on 6.14+, and on 6.1 the write fails with TLSK_EKEY_LIMIT and the peer
 *    reads a clean close_notify; a receiving kernel end asks its peer for new keys.
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "harness.h"
#include "pair.h"
#include "tap.h"

/* ---------------------------------------------------------------------------------------- */
/* One connection: a server end and a client end, each in its own thread                     */

/* Re-key counters of /proc/net/tls_stat (6.14+). */
struct rk {
    long long tx, rx, txerr, rxerr;
};

static struct rk rk_now(void)
{
    struct rk r = { h_tls_stat("TlsTxRekeyOk"), h_tls_stat("TlsRxRekeyOk"),
                    h_tls_stat("TlsTxRekeyError"), h_tls_stat("TlsRxRekeyError") };
    return r;
}

/* The kernel re-keyed exactly tx transmit and rx receive keys since a, with no error. */
static void rk_check(struct rk a, long long tx, long long rx, const char *what)
{
    struct rk b = rk_now();
    TAP_OK(b.tx - a.tx == tx && b.rx - a.rx == rx && b.txerr == a.txerr && b.rxerr == a.rxerr,
           "%s: tls_stat TlsTxRekeyOk +%lld (want %lld), TlsRxRekeyOk +%lld (want %lld), no "
           "re-key errors",
           what, b.tx - a.tx, tx, b.rx - a.rx, rx);
}

/* ---------------------------------------------------------------------------------------- */
/* Key updates on demand                                                                    */

static int ku(struct tlsk_socket *s, int req)
{
    int rc;
    while ((rc = tlsk_socket_key_update(s, req)) == -EAGAIN) {
        if ((rc = tp_wait(s)) != 0) {
            return rc;
        }
    }
    return rc;
}

/* Server: a, KU(0), b, <c, KU(1), d, <e, end.  r[0], r[1]: the two key_update results. */
static int ku_server_body(struct tp_end *e, struct tlsk_socket *s)
{
    int rc;
    if ((rc = h_write_all(s, "a", 1)) != 0) {
        return rc;
    }
    e->r[0] = ku(s, 0);
    if ((rc = h_write_all(s, "b", 1)) != 0 || (rc = tp_expect_byte(s, 'c')) != 0) {
        return rc;
    }
    e->v[0] = (long long)tlsk_socket_key_updates(s);
    e->r[1] = ku(s, 1);
    if ((rc = h_write_all(s, "d", 1)) != 0 || (rc = tp_expect_byte(s, 'e')) != 0) {
        return rc;
    }
    return tp_finish(s, true);
}

/* Client: <a, <b, KU(0) or KU(1) (arg), c, <d, e, end.  r[0]: its key_update result. */
static int ku_client_body(struct tp_end *e, struct tlsk_socket *s)
{
    int rc;
    if ((rc = tp_expect_byte(s, 'a')) != 0 || (rc = tp_expect_byte(s, 'b')) != 0) {
        return rc;
    }
    e->v[0] = (long long)tlsk_socket_key_updates(s);
    e->r[0] = ku(s, e->arg);
    if ((rc = h_write_all(s, "c", 1)) != 0 || (rc = tp_expect_byte(s, 'd')) != 0) {
        return rc;
    }
    if ((rc = h_write_all(s, "e", 1)) != 0) {
        return rc;
    }
    return tp_finish(s, false);
}

static void ku_userspace(int client_req)
{
    struct tp_end sv = { 0 }, cl = { 0 };
    char what[96];

    snprintf(what, sizeof what, "userspace KeyUpdate (client request_peer %d)", client_req);
    sv.ctx = tp_ctx(TLSK_TLS1_3, 0, "agent1", 0, 0, 0);
    cl.ctx = tp_ctx(TLSK_TLS1_3, 0, NULL, 0, 0, 0);
    sv.policy = cl.policy = TLSK_OFFLOAD_OFF;
    sv.body = ku_server_body;
    cl.body = ku_client_body;
    cl.arg = client_req;
    tp_conn(&sv, &cl);
    tp_conn_ok(&sv, &cl, what);
    TAP_OK(sv.r[0] == 0 && sv.r[1] == 0 && cl.r[0] == 0,
           "%s: tlsk_socket_key_update returned 0 each time (server %s/%s, client %s)", what,
           tlsk_err_name(sv.r[0]), tlsk_err_name(sv.r[1]), tlsk_err_name(cl.r[0]));
    TAP_OK(cl.v[0] >= 1, "%s: the client counted the server's update before answering (%lld)",
           what, cl.v[0]);
    /* Server: own KU(0), client's KU, own KU(1), client's answer (+ answer to the client's
     * request).  Client: the mirror image. */
    TAP_OK(sv.key_updates >= 4 && cl.key_updates >= 4,
           "%s: both ends count the updates (server %llu, client %llu)", what,
           (unsigned long long)sv.key_updates, (unsigned long long)cl.key_updates);
    TAP_OK(sv.off.tx.mode == TLSK_MODE_USERSPACE && sv.off.tx.reason == TLSK_REASON_POLICY,
           "%s: server in userspace by policy", what);
    tlsk_context_free(sv.ctx);
    tlsk_context_free(cl.ctx);
}

/* Auto policy: the kTLS tier has TX in the kernel at both ends, and RX too where the kernel
 * re-keys. */
static void ku_auto(void)
{
    struct tp_end sv = { 0 }, cl = { 0 };
    const char *what = "auto-policy KeyUpdate";
    struct rk before = rk_now();

    sv.ctx = tp_ctx(TLSK_TLS1_3, 0, "agent1", 0, 0, 0);
    cl.ctx = tp_ctx(TLSK_TLS1_3, 0, NULL, 0, 0, 0);
    sv.body = ku_server_body;
    cl.body = ku_client_body;
    tp_conn(&sv, &cl);
    tp_conn_ok(&sv, &cl, what);
    if (h_kernel_rekey()) {
        TAP_OK(sv.kernel_tx && sv.kernel_rx && cl.kernel_tx && cl.kernel_rx &&
                   sv.off.rx.mode == TLSK_MODE_KERNEL && cl.off.rx.mode == TLSK_MODE_KERNEL,
               "%s: both ends have both directions in kTLS (re-keying kernel)", what);
        TAP_OK(sv.r[0] == 0 && sv.r[1] == 0 && cl.r[0] == 0,
               "%s: key_update returned 0 each time (server %s/%s, client %s)", what,
               tlsk_err_name(sv.r[0]), tlsk_err_name(sv.r[1]), tlsk_err_name(cl.r[0]));
        TAP_OK(sv.key_updates >= 4 && cl.key_updates >= 4,
               "%s: both ends count the updates (server %llu, client %llu)", what,
               (unsigned long long)sv.key_updates, (unsigned long long)cl.key_updates);
        /* Server KU(0), client KU(0), server KU(1) and the client's answer: four keys sent
         * through the kernel, four received. */
        rk_check(before, 4, 4, what);
    } else if (h_expect_ktls()) {
        TAP_OK(sv.off.tx.mode == TLSK_MODE_KERNEL && cl.off.tx.mode == TLSK_MODE_KERNEL &&
                   sv.kernel_tx && cl.kernel_tx,
               "%s: both ends transmit through kTLS", what);
        TAP_OK(sv.r[0] == TLSK_EKEYUPDATE && sv.r[1] == TLSK_EKEYUPDATE &&
                   cl.r[0] == TLSK_EKEYUPDATE,
               "%s: TX offloaded: key_update gives TLSK_EKEYUPDATE (server %s/%s, client %s)",
               what, tlsk_err_name(sv.r[0]), tlsk_err_name(sv.r[1]), tlsk_err_name(cl.r[0]));
        TAP_OK(sv.key_updates == 0 && cl.key_updates == 0,
               "%s: no key update happened (server %llu, client %llu)", what,
               (unsigned long long)sv.key_updates, (unsigned long long)cl.key_updates);
    } else {
        TAP_OK(sv.r[0] == 0 && sv.r[1] == 0 && cl.r[0] == 0 && sv.key_updates >= 4,
               "%s: userspace: updates performed (server %llu)", what,
               (unsigned long long)sv.key_updates);
    }
    tlsk_context_free(sv.ctx);
    tlsk_context_free(cl.ctx);
}

/* A KeyUpdate that meets a full send buffer (non-blocking server): tlsk_socket_key_update()
 * still answers 0, the record waits (the socket asks for POLLOUT), and it goes before any
 * later data, with the kernel re-keyed after it. */
#define PARK_TAIL (1u << 20)

static int park_server_body(struct tp_end *e, struct tlsk_socket *s)
{
    static _Thread_local unsigned char buf[65536];
    uint64_t off = 0;
    int rc;

    for (;;) {
        ssize_t n;
        h_pattern(21, off, buf, sizeof buf);
        n = tlsk_socket_write(s, buf, sizeof buf);
        if (n == -EAGAIN) {
            break;
        }
        if (n < 0) {
            return (int)n;
        }
        off += (uint64_t)n;
    }
    /* arg 1: a NewSessionTicket instead (the same parked-record path, hostile review 9);
     * arg 2: neither (the baseline) */
    e->r[0] = e->arg == 1   ? tlsk_socket_new_session_ticket(s)
              : e->arg == 2 ? 0
                            : tlsk_socket_key_update(s, 0);
    e->r[1] = (tlsk_socket_events(s) & POLLOUT) != 0;
    e->v[0] = (long long)off;
    for (uint64_t end = off + PARK_TAIL; off < end;) {
        size_t n = end - off < sizeof buf ? (size_t)(end - off) : sizeof buf;
        h_pattern(21, off, buf, n);
        if ((rc = h_write_all(s, buf, n)) != 0) {
            return rc;
        }
        off += n;
    }
    e->v[1] = (long long)off;
    /* The server ends first here: close_notify, then the client's. */
    if ((rc = h_shutdown(s)) != 0) {
        return rc;
    }
    rc = (int)h_read_some(s, buf, sizeof buf);
    return rc > 0 ? -EPROTO : rc;
}

static int park_client_body(struct tp_end *e, struct tlsk_socket *s)
{
    static _Thread_local unsigned char buf[65536];
    uint64_t off = 0;

    usleep(300 * 1000); /* let the server fill its send buffer first */
    for (;;) {
        ssize_t n = h_read_some(s, buf, sizeof buf);
        if (n == 0) {
            break;
        }
        if (n < 0) {
            return (int)n;
        }
        if (h_pattern_check(21, off, buf, (size_t)n) >= 0) {
            return -EILSEQ;
        }
        off += (uint64_t)n;
    }
    e->v[0] = (long long)off;
    return h_shutdown(s);
}

static void count_session(struct tlsk_socket *s, const unsigned char *d, size_t n, void *ud)
{
    (void)s, (void)d, (void)n;
    ((struct tp_end *)ud)->v[1]++;
}

/* A NewSessionTicket that meets a full send buffer with transmit in the kernel (any kernel):
 * tlsk_socket_new_session_ticket() answers 0, the record waits for POLLOUT and reaches the
 * client before the later data (before: it was lost and the socket failed with -EAGAIN). */
static void ticket_parked(void)
{
    struct tp_end sv = { 0 }, cl = { 0 };
    const char *what = "NewSessionTicket meeting a full send buffer";
    long long plain;

    sv.ctx = tp_ctx(TLSK_TLS1_3, 0, "agent1", 0, 0, 0);
    cl.ctx = tp_ctx(TLSK_TLS1_3, 0, NULL, 0, 0, 0);
    sv.nonblock = true;
    sv.body = park_server_body;
    cl.body = park_client_body;
    cl.on_session = count_session;
    /* The same connection without the extra ticket: how many the handshake brings. */
    sv.arg = 2;
    tp_conn(&sv, &cl);
    plain = cl.v[1];
    sv.arg = 1;
    tp_conn(&sv, &cl);
    tp_conn_ok(&sv, &cl, what);
    TAP_IS(sv.r[0], 0, "%s: tlsk_socket_new_session_ticket() accepted it", what);
    TAP_OK(sv.kernel_tx, "%s: transmit in the kernel", what);
    TAP_OK(sv.r[1] == 1, "%s: the socket waits for POLLOUT to send it", what);
    TAP_OK(sv.v[1] > sv.v[0] && cl.v[0] == sv.v[1],
           "%s: every byte before and after it arrived intact (%lld of %lld)", what, cl.v[0],
           sv.v[1]);
    TAP_OK(cl.v[1] == plain + 1, "%s: the client received it (%lld sessions, %lld without)",
           what, cl.v[1], plain);
    tlsk_context_free(sv.ctx);
    tlsk_context_free(cl.ctx);
}

static void ku_parked(void)
{
    struct tp_end sv = { 0 }, cl = { 0 };
    const char *what = "KeyUpdate meeting a full send buffer";
    struct rk before = rk_now();

    sv.ctx = tp_ctx(TLSK_TLS1_3, 0, "agent1", 0, 0, 0);
    cl.ctx = tp_ctx(TLSK_TLS1_3, 0, NULL, 0, 0, 0);
    sv.nonblock = true;
    sv.body = park_server_body;
    cl.body = park_client_body;
    tp_conn(&sv, &cl);
    tp_conn_ok(&sv, &cl, what);
    TAP_IS(sv.r[0], 0, "%s: tlsk_socket_key_update() accepted it", what);
    TAP_OK(sv.v[1] > sv.v[0] && cl.v[0] == sv.v[1],
           "%s: every byte before and after it arrived intact (%lld of %lld)", what, cl.v[0],
           sv.v[1]);
    if (h_kernel_rekey()) {
        TAP_OK(sv.r[1] == 1, "%s: the socket waits for POLLOUT to send it", what);
        rk_check(before, 1, 1, what);
    }
    tlsk_context_free(sv.ctx);
    tlsk_context_free(cl.ctx);
}

/* A userspace client asks a TX-offloaded server to update (request_peer 1): the server's
 * answer cannot be sent and is not; the stream stays consistent. */
static int req_server_body(struct tp_end *e, struct tlsk_socket *s)
{
    int rc;
    (void)e;
    if ((rc = h_write_all(s, "a", 1)) != 0 || (rc = h_write_all(s, "b", 1)) != 0 ||
        (rc = tp_expect_byte(s, 'c')) != 0) {
        return rc;
    }
    if ((rc = h_write_all(s, "d", 1)) != 0 || (rc = tp_expect_byte(s, 'e')) != 0) {
        return rc;
    }
    if ((rc = h_send_pattern(s, 3, 300000)) != 0) {
        return rc;
    }
    return tp_finish(s, true);
}

static int req_client_body(struct tp_end *e, struct tlsk_socket *s)
{
    int rc;
    if ((rc = tp_expect_byte(s, 'a')) != 0 || (rc = tp_expect_byte(s, 'b')) != 0) {
        return rc;
    }
    e->r[0] = ku(s, 1);
    if ((rc = h_write_all(s, "c", 1)) != 0 || (rc = tp_expect_byte(s, 'd')) != 0) {
        return rc;
    }
    if ((rc = h_write_all(s, "e", 1)) != 0 || (rc = h_recv_pattern(s, 3, 300000)) != 0) {
        return rc;
    }
    return tp_finish(s, false);
}

static void ku_request_to_offloaded(void)
{
    struct tp_end sv = { 0 }, cl = { 0 };
    const char *what = "peer's update_requested to an auto-policy server";

    sv.ctx = tp_ctx(TLSK_TLS1_3, 0, "agent1", 0, 0, 0);
    cl.ctx = tp_ctx(TLSK_TLS1_3, 0, NULL, 0, 0, 0);
    cl.policy = TLSK_OFFLOAD_OFF;
    sv.body = req_server_body;
    cl.body = req_client_body;
    tp_conn(&sv, &cl);
    tp_conn_ok(&sv, &cl, what);
    TAP_IS(cl.r[0], 0, "%s: the userspace client sent KeyUpdate(update_requested)", what);
    if (h_kernel_rekey()) {
        TAP_OK(sv.kernel_tx && sv.kernel_rx, "%s: server TX and RX in kTLS", what);
        TAP_OK(cl.key_updates == 2,
               "%s: the server answered through the kernel (client counted %llu)", what,
               (unsigned long long)cl.key_updates);
    } else if (h_expect_ktls()) {
        TAP_OK(sv.off.tx.mode == TLSK_MODE_KERNEL && sv.kernel_tx &&
                   sv.off.rx.mode == TLSK_MODE_USERSPACE &&
                   sv.off.rx.reason == TLSK_REASON_NO_REKEY,
               "%s: server TX in kTLS, RX userspace (%s)", what,
               tlsk_reason_name(sv.off.rx.reason));
        TAP_OK(cl.key_updates == 1,
               "%s: the server's answer was not sent: the client saw only its own update (%llu)",
               what, (unsigned long long)cl.key_updates);
    } else {
        TAP_OK(cl.key_updates == 2, "%s: userspace: the server answered (client counted %llu)",
               what, (unsigned long long)cl.key_updates);
    }
    tlsk_context_free(sv.ctx);
    tlsk_context_free(cl.ctx);
}

/* TLSK_OFFLOAD_RX_TLS13 on the client; a userspace server sends KeyUpdate. */
static int rx13_server_body(struct tp_end *e, struct tlsk_socket *s)
{
    int rc;
    char b[16];
    if ((rc = h_write_all(s, "a", 1)) != 0) {
        return rc;
    }
    e->r[0] = ku(s, 0);
    if ((rc = h_write_all(s, "b", 1)) != 0) {
        return rc;
    }
    /* Either the client's close_notify, or its failure. */
    e->r[1] = (int)h_read_some(s, b, sizeof b);
    if (e->r[1] == 0) {
        return h_shutdown(s);
    }
    return 0;
}

static int rx13_client_body(struct tp_end *e, struct tlsk_socket *s)
{
    char b[16];
    int rc;
    if ((rc = tp_expect_byte(s, 'a')) != 0) {
        return rc;
    }
    e->r[0] = (int)h_read_some(s, b, sizeof b);
    e->v[0] = e->r[0] == 1 && b[0] == 'b';
    snprintf(e->note, sizeof e->note, "%s", tlsk_socket_error_detail(s));
    if (e->r[0] < 0) {
        shutdown(e->fd, SHUT_RDWR); /* the server is waiting for our end */
        return 0;
    }
    return tp_finish(s, false);
}

static void ku_rx13_forced(void)
{
    struct tp_end sv = { 0 }, cl = { 0 };
    const char *what = "KeyUpdate to a client with TLSK_OFFLOAD_RX_TLS13";

    sv.ctx = tp_ctx(TLSK_TLS1_3, 0, "agent1", 0, 0, 0);
    cl.ctx = tp_ctx(TLSK_TLS1_3, TLSK_OFFLOAD_RX_TLS13, NULL, 0, 0, 0);
    sv.policy = TLSK_OFFLOAD_OFF;
    sv.body = rx13_server_body;
    cl.body = rx13_client_body;
    tp_conn(&sv, &cl);
    tp_conn_ok(&sv, &cl, what);
    TAP_IS(sv.r[0], 0, "%s: the userspace server sent its KeyUpdate", what);
    if (h_kernel_rekey()) {
        TAP_OK(cl.off.rx.mode == TLSK_MODE_KERNEL && cl.kernel_rx, "%s: client RX in kTLS",
               what);
        TAP_OK(cl.r[0] == 1 && cl.v[0] == 1,
               "%s: the kernel took the next key and the data after the update arrives (%s: "
               "%s)",
               what, tlsk_err_name(cl.r[0]), cl.note);
        TAP_OK(cl.key_updates == 1, "%s: the client counted it (%llu)", what,
               (unsigned long long)cl.key_updates);
    } else if (h_expect_ktls()) {
        TAP_OK(cl.off.rx.mode == TLSK_MODE_KERNEL && cl.kernel_rx,
               "%s: client RX in kTLS", what);
        if (!TAP_OK(cl.r[0] == TLSK_EKEYUPDATE,
                    "%s: the read fails with TLSK_EKEYUPDATE, not corrupted data (%s)", what,
                    tlsk_err_name(cl.r[0]))) {
            tap_diag("  client detail: %s", cl.note);
        }
        TAP_OK(strstr(cl.note, "KeyUpdate") != NULL, "%s: the detail names the KeyUpdate (%s)",
               what, cl.note);
        TAP_OK(sv.r[1] != 1, "%s: the server then sees the connection end (%s)", what,
               tlsk_err_name(sv.r[1]));
    } else {
        TAP_OK(cl.r[0] == 1 && cl.v[0] == 1, "%s: userspace: the data after the update arrives",
               what);
        TAP_OK(cl.key_updates == 1, "%s: the client counted it (%llu)", what,
               (unsigned long long)cl.key_updates);
    }
    tlsk_context_free(sv.ctx);
    tlsk_context_free(cl.ctx);
}

/* ---------------------------------------------------------------------------------------- */
/* The record-count limit                                                                   */

#define LIM_RECS 200
#define LIM_SIZE 100

/* Server: LIM_RECS writes of LIM_SIZE bytes (one record each); r[0] = the first failure,
 * v[0] = bytes written. */
static int lim_server_body(struct tp_end *e, struct tlsk_socket *s)
{
    unsigned char buf[LIM_SIZE];
    for (int i = 0; i < LIM_RECS; i++) {
        int rc;
        h_pattern(9, (uint64_t)i * LIM_SIZE, buf, sizeof buf);
        rc = h_write_all(s, buf, sizeof buf);
        if (rc != 0) {
            e->r[0] = rc;
            snprintf(e->note, sizeof e->note, "%s", tlsk_socket_error_detail(s));
            return 0;
        }
        e->v[0] += LIM_SIZE;
    }
    return tp_finish(s, true);
}

/* Client: read until 0 or an error; v[0] bytes, v[1] 1 when they match the pattern, r[0] the
 * last read's result. */
static int lim_client_body(struct tp_end *e, struct tlsk_socket *s)
{
    static _Thread_local unsigned char buf[LIM_RECS * LIM_SIZE];
    ssize_t n;
    for (;;) {
        n = h_read_some(s, buf + e->v[0], sizeof buf - (size_t)e->v[0]);
        if (n <= 0) {
            break;
        }
        e->v[0] += n;
        if ((size_t)e->v[0] == sizeof buf) {
            n = (int)tp_finish(s, false);
            break;
        }
    }
    e->r[0] = (int)n;
    e->v[1] = h_pattern_check(9, 0, buf, (size_t)e->v[0]) < 0;
    if (n < 0) {
        snprintf(e->note, sizeof e->note, "%s", tlsk_socket_error_detail(s));
        return (int)n;
    }
    if ((size_t)e->v[0] < sizeof buf) {
        /* Clean close_notify before everything arrived: answer it. */
        return h_shutdown(s);
    }
    return 0;
}

static void key_limit(bool on_server, enum tlsk_offload_policy pol)
{
    struct tp_end sv = { 0 }, cl = { 0 };
    char what[128];
    /* The end with the limit is the kernel one under auto; the other stays in userspace. */
    bool kernel_tx = h_expect_ktls() && pol != TLSK_OFFLOAD_OFF && on_server;
    bool ends = kernel_tx && !h_kernel_rekey(); /* no re-key: the connection ends */
    struct rk before = rk_now();

    snprintf(what, sizeof what, "key_update_records 64 on the %s (%s)",
             on_server ? "sender" : "receiver", pol == TLSK_OFFLOAD_OFF ? "policy off" : "auto");
    sv.ctx = tp_ctx(TLSK_TLS1_3, 0, "agent1", on_server ? 64 : 0, 0, 0);
    cl.ctx = tp_ctx(TLSK_TLS1_3, 0, NULL, on_server ? 0 : 64, 0, 0);
    /* Where the kernel re-keys, a receiving kernel end's request is answered by a kernel
     * sender, so both directions re-key; elsewhere the sender stays in userspace. */
    sv.policy = on_server || h_kernel_rekey() ? pol : TLSK_OFFLOAD_OFF;
    cl.policy = on_server ? TLSK_OFFLOAD_OFF : pol;
    sv.body = lim_server_body;
    cl.body = lim_client_body;
    tp_conn(&sv, &cl);
    if (!ends) {
        tp_conn_ok(&sv, &cl, what);
        TAP_OK(sv.r[0] == 0 && sv.v[0] == LIM_RECS * LIM_SIZE,
               "%s: all %d records written (%s: %s)", what, LIM_RECS, tlsk_err_name(sv.r[0]),
               sv.note);
        TAP_OK(cl.v[0] == LIM_RECS * LIM_SIZE && cl.v[1] == 1, "%s: data intact (%lld bytes)",
               what, cl.v[0]);
        if (on_server) {
            TAP_OK(sv.key_updates >= LIM_RECS / 64,
                   "%s: the sender re-keyed on its own (%llu key updates)", what,
                   (unsigned long long)sv.key_updates);
        } else if (h_expect_ktls() && !h_kernel_rekey() && pol != TLSK_OFFLOAD_OFF) {
            /* Its transmit key is the kernel's for life: the request cannot be sent. */
            TAP_OK(sv.key_updates == 0,
                   "%s: before 6.14 a TX-offloaded receiver cannot ask (server saw %llu)", what,
                   (unsigned long long)sv.key_updates);
        } else {
            TAP_OK(cl.key_updates >= 1 && sv.key_updates >= 1,
                   "%s: the receiver asked for new keys (client %llu, server %llu)", what,
                   (unsigned long long)cl.key_updates, (unsigned long long)sv.key_updates);
        }
        if (h_kernel_rekey() && pol != TLSK_OFFLOAD_OFF) {
            struct rk after = rk_now();
            const struct tp_end *k = on_server ? &sv : &cl;
            TAP_OK(k->kernel_tx && k->kernel_rx, "%s: the limited end is in kTLS", what);
            /* Sender: one transmit re-key per 63 records.  Receiver: its request re-keys its
             * transmit key and the sender's receive key, the answer the other two. */
            TAP_OK(on_server ? after.tx - before.tx >= LIM_RECS / 64
                             : after.rx - before.rx >= 2 && after.tx - before.tx >= 2,
                   "%s: the kernel re-keyed (TlsTxRekeyOk +%lld, TlsRxRekeyOk +%lld)", what,
                   after.tx - before.tx, after.rx - before.rx);
        }
    } else {
        TAP_OK(sv.off.tx.mode == TLSK_MODE_KERNEL && sv.kernel_tx, "%s: server TX in kTLS", what);
        if (!TAP_OK(sv.r[0] == TLSK_EKEY_LIMIT, "%s: the write fails with TLSK_EKEY_LIMIT (%s)",
                    what, tlsk_err_name(sv.r[0]))) {
            tap_diag("  server: %s", sv.note);
        }
        TAP_OK(sv.v[0] > 0 && sv.v[0] <= 64 * LIM_SIZE,
               "%s: at most 64 records went out under the key (%lld bytes)", what, sv.v[0]);
        if (!TAP_OK(cl.r[0] == 0 && cl.rc == 0,
                    "%s: the peer reads a clean close_notify (%s)", what, tlsk_err_name(cl.r[0]))) {
            tap_diag("  client: %s %s", cl.detail, cl.note);
        }
        TAP_OK(cl.v[0] == sv.v[0] && cl.v[1] == 1,
               "%s: the peer got every byte written before, intact (%lld of %lld)", what,
               cl.v[0], sv.v[0]);
    }
    tlsk_context_free(sv.ctx);
    tlsk_context_free(cl.ctx);
}

/* ---------------------------------------------------------------------------------------- */
/* 1,000 key updates each way during a 64 MiB transfer each way                              */

#define BULK_UPDATES 1000

/* Send len pattern bytes, calling tlsk_socket_key_update(s, 0) BULK_UPDATES times evenly
 * spread; r[slot] = the first key_update failure. */
static int bulk_send(struct tp_end *e, struct tlsk_socket *s, uint32_t seed, size_t len, int slot)
{
    static _Thread_local unsigned char buf[65536];
    size_t step = len / (BULK_UPDATES + 1), off = 0, next = step;
    int updates = 0, rc;

    while (off < len) {
        size_t n = len - off < sizeof buf ? len - off : sizeof buf;
        if (n > next - off && next > off) {
            n = next - off;
        }
        h_pattern(seed, off, buf, n);
        if ((rc = h_write_all(s, buf, n)) != 0) {
            return rc;
        }
        off += n;
        if (off == next && updates < BULK_UPDATES) {
            rc = ku(s, 0);
            if (rc != 0 && e->r[slot] == 0) {
                e->r[slot] = rc;
            }
            updates++;
            next += step;
        }
    }
    e->v[slot] = updates;
    return 0;
}

static int bulk_server_body(struct tp_end *e, struct tlsk_socket *s)
{
    size_t len = (size_t)e->arg << 20;
    int rc;
    if ((rc = bulk_send(e, s, 31, len, 0)) != 0 || (rc = h_recv_pattern(s, 32, len)) != 0) {
        return rc;
    }
    return tp_finish(s, true);
}

static int bulk_client_body(struct tp_end *e, struct tlsk_socket *s)
{
    size_t len = (size_t)e->arg << 20;
    int rc;
    if ((rc = h_recv_pattern(s, 31, len)) != 0 || (rc = bulk_send(e, s, 32, len, 0)) != 0) {
        return rc;
    }
    return tp_finish(s, false);
}

static void ku_bulk(void)
{
    struct tp_end sv = { 0 }, cl = { 0 };
    char what[128];
    struct rk before = rk_now();
    /* On a kernel that cannot re-key, the same load runs in userspace (policy off). */
    enum tlsk_offload_policy pol =
        h_expect_ktls() && !h_kernel_rekey() ? TLSK_OFFLOAD_OFF : TLSK_OFFLOAD_DEFAULT;

    snprintf(what, sizeof what, "%d key updates each way during 64 MiB each way (%s)",
             BULK_UPDATES, pol == TLSK_OFFLOAD_OFF ? "policy off" : "auto");
    sv.ctx = tp_ctx(TLSK_TLS1_3, 0, "agent1", 0, 0, 0);
    cl.ctx = tp_ctx(TLSK_TLS1_3, 0, NULL, 0, 0, 0);
    sv.policy = cl.policy = pol;
    sv.arg = cl.arg = 64;
    sv.body = bulk_server_body;
    cl.body = bulk_client_body;
    tp_conn(&sv, &cl);
    tp_conn_ok(&sv, &cl, what);
    TAP_OK(sv.r[0] == 0 && cl.r[0] == 0 && sv.v[0] == BULK_UPDATES && cl.v[0] == BULK_UPDATES,
           "%s: every update accepted (server %lld, %s; client %lld, %s)", what, sv.v[0],
           tlsk_err_name(sv.r[0]), cl.v[0], tlsk_err_name(cl.r[0]));
    TAP_OK(sv.key_updates == 2 * BULK_UPDATES && cl.key_updates == 2 * BULK_UPDATES,
           "%s: both ends count %d (server %llu, client %llu)", what, 2 * BULK_UPDATES,
           (unsigned long long)sv.key_updates, (unsigned long long)cl.key_updates);
    if (h_kernel_rekey()) {
        TAP_OK(sv.kernel_tx && sv.kernel_rx && cl.kernel_tx && cl.kernel_rx,
               "%s: both directions of both ends in kTLS", what);
        rk_check(before, 2 * BULK_UPDATES, 2 * BULK_UPDATES, what);
    }
    tlsk_context_free(sv.ctx);
    tlsk_context_free(cl.ctx);
}

/* ---------------------------------------------------------------------------------------- */
/* 200 updates with update_requested and 200 without, from a tlsk client, between echoes      */

#define FLOOD 200

/* Server: echo 4-byte lines until the client's close_notify. */
static int flood_server_body(struct tp_end *e, struct tlsk_socket *s)
{
    char b[4];
    (void)e;
    for (;;) {
        ssize_t n = h_read_full(s, b, sizeof b);
        if (n == 0) {
            return h_shutdown(s);
        }
        if (n != (ssize_t)sizeof b) {
            return n < 0 ? (int)n : -EPROTO;
        }
        if (h_write_all(s, b, sizeof b) != 0) {
            return -EPIPE;
        }
    }
}

/* Client: KU(1), KU(0) alternating, each followed by an echoed line; v[0] lines echoed intact,
 * r[0] the first key_update failure. */
static int flood_client_body(struct tp_end *e, struct tlsk_socket *s)
{
    for (int i = 0; i < 2 * FLOOD; i++) {
        char line[8], back[4];
        int rc = ku(s, i % 2 == 0);
        if (rc != 0 && e->r[0] == 0) {
            e->r[0] = rc;
        }
        snprintf(line, sizeof line, "%04d", i);
        if ((rc = h_write_all(s, line, 4)) != 0) {
            return rc;
        }
        if (h_read_full(s, back, 4) != 4 || memcmp(back, line, 4) != 0) {
            return -EILSEQ;
        }
        e->v[0]++;
    }
    return tp_finish(s, false);
}

static void ku_flood(void)
{
    struct tp_end sv = { 0 }, cl = { 0 };
    char what[96];
    struct rk before = rk_now();

    snprintf(what, sizeof what, "tlsk client: %d KeyUpdates with update_requested and %d "
             "without, between echoes", FLOOD, FLOOD);
    sv.ctx = tp_ctx(TLSK_TLS1_3, 0, "agent1", 0, 0, 0);
    cl.ctx = tp_ctx(TLSK_TLS1_3, 0, NULL, 0, 0, 0);
    if (h_expect_ktls() && !h_kernel_rekey()) {
        /* Without re-key the kernel's keys are for life: the same exchange in userspace. */
        sv.policy = cl.policy = TLSK_OFFLOAD_OFF;
    }
    sv.body = flood_server_body;
    cl.body = flood_client_body;
    tp_conn(&sv, &cl);
    tp_conn_ok(&sv, &cl, what);
    TAP_OK(cl.r[0] == 0 && cl.v[0] == 2 * FLOOD, "%s: every update accepted, %lld of %d lines "
           "echoed intact (%s)", what, cl.v[0], 2 * FLOOD, tlsk_err_name(cl.r[0]));
    /* The client's 400, and the server's 200 answers, counted at both ends. */
    TAP_OK(cl.key_updates == 3 * FLOOD && sv.key_updates == 3 * FLOOD,
           "%s: both ends count %d (client %llu, server %llu)", what, 3 * FLOOD,
           (unsigned long long)cl.key_updates, (unsigned long long)sv.key_updates);
    if (h_kernel_rekey()) {
        TAP_OK(sv.kernel_rx && sv.kernel_tx && cl.kernel_rx && cl.kernel_tx,
               "%s: both directions of both ends in kTLS", what);
        rk_check(before, 3 * FLOOD, 3 * FLOOD, what);
    }
    tlsk_context_free(sv.ctx);
    tlsk_context_free(cl.ctx);
}

int main(void)
{
    /* OpenSSL's socket writes (an alert to a peer that already left) can raise SIGPIPE. */
    signal(SIGPIPE, SIG_IGN);
    alarm(480);
    if (h_expect_ktls() && !TAP_OK(tlsk_kernel_probe()->ulp, "kTLS kernel present")) {
        return tap_done();
    }
    if (h_newest_tier()) {
        /* The newest tier exists to run the re-key: a probe that missed it would quietly
         * test the 6.1 behaviour instead. */
        TAP_OK(tlsk_kernel_probe()->rekey, "the newest kernel re-keys TLS 1.3 (probe)");
    }
    ku_userspace(0);
    ku_userspace(1);
    ku_auto();
    if (h_kernel_rekey()) {
        /* Userspace OpenSSL refuses a key update while a write waits for room
         * (SSL_R_BAD_WRITE_RETRY): the parked record is a kernel-path mechanism. */
        ku_parked();
    }
    if (h_expect_ktls()) {
        ticket_parked();
    }
    ku_request_to_offloaded();
    ku_rx13_forced();
    key_limit(true, TLSK_OFFLOAD_OFF);
    key_limit(false, TLSK_OFFLOAD_OFF);
    key_limit(true, TLSK_OFFLOAD_DEFAULT);
    key_limit(false, TLSK_OFFLOAD_DEFAULT);
    ku_bulk();
    ku_flood();
    return tap_done();
}
