/*
 * test_lean.c - a lean server (TLSK_SOCKET_LEAN) frees OpenSSL's state once the kernel has both
 * directions, and the connection goes on as before (lib/lean.c, docs/KERNEL.md §14).
 *
 * Each case runs one connection twice, with a server that is lean and one that is not, both
 * real tlsk over loopback TCP with a real tlsk client, and compares what the application sees:
 *   - the getters (version, cipher, cipher info, resumption, the client certificate and its
 *     verification, server name), written into a string that must be the same both times;
 *   - data both ways, 1 MiB from the server by write and 256 KiB by sendfile, byte-exact;
 *   - TLS 1.3 where the kernel re-keys: the server updates its keys asking the client to
 *     answer, then the client does the same; data after each update reads back, and both
 *     ends count the same key updates as a server that kept OpenSSL;
 *   - what only OpenSSL could do answers TLSK_ESTATE and harms nothing (a ticket, the
 *     session bytes);
 *   - close_notify both ways.
 * A TLS 1.2 connection that resumes a session of an earlier lean connection must resume: the
 * session stays in the server's cache when OpenSSL's state is freed.
 * Lean happens exactly where both directions are in the kernel: in the newest tier for TLS
 * 1.3 and 1.2; in the 6.1 tier for TLS 1.2 only (TLS 1.3 receive stays in userspace there).
 * The lean servers' contexts also have TLSK_LEAN_USERSPACE, so where the kernel has no tls
 * module (natively) they are lean with tlsk's own record layer in its place (lib/soft.c), and
 * every case runs through it: key updates, sendfile, the owed answer.  With
 * TLSK_EXPECT_KTLS=1 a case that should be lean and is not fails.
 * In the newest tier, the answer a lean server owes to update_requested while its own
 * KeyUpdate waits behind a full send buffer goes out once the buffer drains (owed()).
 * The alerts a lean server sends for bad post-handshake messages are test_keyupdate_alerts'.
 */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "harness.h"
#include "internal.h"
#include "pair.h"
#include "tap.h"

enum { R_LEAN, R_TICKET, R_SESSION, R_SENDFILE, R_KU };

#define BULK (1u << 20)
#define FILE_LEN (256u << 10)

/* The getters, as one string. */
static void describe(struct tlsk_socket *s, char *out, size_t cap)
{
    struct tlsk_cipher_info ci = { 0 };
    struct tlsk_cert_info *peer = NULL, *chain1 = NULL;
    const char *ae = tlsk_socket_authorization_error(s);
    int rc0 = tlsk_socket_peer_certificate(s, 0, &peer);
    int rc1 = tlsk_socket_peer_certificate(s, 1, &chain1);

    if (tlsk_socket_get_cipher(s, &ci) != 0) {
        ci.name = ci.standard_name = ci.version = "?";
    }
    snprintf(out, cap, "%s %s %d reused=%d | %s %s %s %d | authorized=%d %s | sni=%s | "
             "peer=%d %s %s | chain1=%d",
             tlsk_socket_version(s), tlsk_socket_cipher(s), tlsk_socket_version_number(s),
             tlsk_socket_session_reused(s), ci.name, ci.standard_name, ci.version, ci.bits,
             tlsk_socket_authorized(s), ae ? ae : "-", tlsk_socket_servername(s) ?: "-", rc0,
             peer && peer->fingerprint256 ? peer->fingerprint256 : "-",
             peer && peer->subject_count ? peer->subject[peer->subject_count - 1].value : "-",
             rc1);
    tlsk_cert_info_free(peer);
    tlsk_cert_info_free(chain1);
}

static int server_body(struct tp_end *e, struct tlsk_socket *s)
{
    bool ku = e->arg & 1;
    int rc, fd;

    e->r[R_LEAN] = s->lean != NULL && s->ssl == NULL;
    describe(s, e->note, sizeof e->note);
    if ((rc = tp_expect_byte(s, 'h')) != 0 || (rc = h_send_pattern(s, 1, BULK)) != 0) {
        return rc;
    }
    fd = h_pattern_file(2, FILE_LEN);
    e->r[R_SENDFILE] = fd < 0 ? fd : h_sendfile_all(s, fd, FILE_LEN);
    if (fd >= 0) {
        close(fd);
    }
    if (ku) {
        /* Ours, asking for the client's answer; then the client's, which we answer. */
        e->r[R_KU] = tlsk_socket_key_update(s, 1);
        if ((rc = h_send_pattern(s, 3, 100000)) != 0 || (rc = h_recv_pattern(s, 4, 100000)) != 0 ||
            (rc = h_send_pattern(s, 5, 100000)) != 0) {
            return rc;
        }
    }
    if (tlsk_socket_version_number(s) == TLSK_TLS1_3) {
        e->r[R_TICKET] = tlsk_socket_new_session_ticket(s);
    }
    e->r[R_SESSION] = (int)tlsk_socket_session(s, NULL, 0);
    if ((rc = h_send_pattern(s, 6, 1000)) != 0) {
        return rc;
    }
    return tp_finish(s, true);
}

static unsigned char g_sess[8192];
static size_t g_sess_len;

static int client_body(struct tp_end *e, struct tlsk_socket *s)
{
    bool ku = e->arg & 1;
    ssize_t n;
    int rc;

    if ((rc = h_write_all(s, "h", 1)) != 0 || (rc = h_recv_pattern(s, 1, BULK)) != 0 ||
        (rc = h_recv_pattern(s, 2, FILE_LEN)) != 0) {
        return rc;
    }
    if (ku) {
        if ((rc = h_recv_pattern(s, 3, 100000)) != 0) {
            return rc;
        }
        e->r[R_KU] = tlsk_socket_key_update(s, 1);
        if ((rc = h_send_pattern(s, 4, 100000)) != 0 || (rc = h_recv_pattern(s, 5, 100000)) != 0) {
            return rc;
        }
    }
    if ((rc = h_recv_pattern(s, 6, 1000)) != 0) {
        return rc;
    }
    n = tlsk_socket_session(s, g_sess, sizeof g_sess);
    g_sess_len = n > 0 ? (size_t)n : 0;
    return tp_finish(s, false);
}

struct run {
    struct tp_end sv, cl;
    bool ok;
};

static void run(struct run *r, int version, bool lean, bool ku, bool resume)
{
    memset(r, 0, sizeof *r);
    /* TLS 1.2 without tickets: it resumes from the server's session cache, which is what
     * freeing OpenSSL's state must not harm. */
    r->sv.ctx = tp_ctx(version,
                       TLSK_REQUIRE_PEER_CERT | (version == TLSK_TLS1_2 ? TLSK_NO_TICKETS : 0) |
                           (lean ? TLSK_LEAN_USERSPACE : 0),
                       "agent1", 0, 0, 0);
    r->cl.ctx = tp_ctx(version, 0, "agent1", 0, 0, 0);
    r->sv.body = server_body;
    r->cl.body = client_body;
    r->sv.sock_flags = lean ? TLSK_SOCKET_LEAN : 0;
    r->sv.arg = r->cl.arg = ku;
    if (resume) {
        r->cl.session = g_sess;
        r->cl.session_len = g_sess_len;
    }
    if (r->sv.ctx && r->cl.ctx) {
        tp_conn(&r->sv, &r->cl);
    } else {
        r->sv.rc = r->cl.rc = -ENOMEM;
    }
}

static void free_run(struct run *r)
{
    tlsk_context_free(r->sv.ctx);
    tlsk_context_free(r->cl.ctx);
}

static void one(int version)
{
    const char *vn = version == TLSK_TLS1_3 ? "TLS 1.3" : "TLS 1.2";
    bool soft = !tlsk_kernel_probe()->ulp; /* lean in tlsk's record layer */
    bool ku = version == TLSK_TLS1_3 && (h_kernel_rekey() || soft);
    /* Where both directions go to the kernel (the tier decides), or natively to soft.c. */
    bool want_lean = soft || (h_expect_ktls() && (version == TLSK_TLS1_2 || h_kernel_rekey()));
    struct run plain, lean;
    char what[128];

    run(&plain, version, false, ku, false);
    run(&lean, version, true, ku, false);
    snprintf(what, sizeof what, "%s, server not lean", vn);
    tp_conn_ok(&plain.sv, &plain.cl, what);
    snprintf(what, sizeof what, "%s, lean server", vn);
    tp_conn_ok(&lean.sv, &lean.cl, what);

    TAP_OK(!plain.sv.r[R_LEAN], "%s: without the flag OpenSSL's state stays", vn);
    TAP_OK(lean.sv.r[R_LEAN] == ((lean.sv.kernel_tx && lean.sv.kernel_rx) ||
                                 (soft && !lean.sv.kernel_tx && !lean.sv.kernel_rx)),
           "%s: lean exactly when both directions are in the kernel, or neither can be (lean "
           "%d, tx %d, rx %d)", vn, lean.sv.r[R_LEAN], lean.sv.kernel_tx, lean.sv.kernel_rx);
    if (want_lean) {
        TAP_OK(lean.sv.r[R_LEAN], "%s: %s, so the server is lean", vn,
               soft ? "no tls module here: tlsk's record layer takes both directions"
                    : "this kernel takes both directions");
    }
    if (!TAP_OK(strcmp(plain.sv.note, lean.sv.note) == 0 && lean.sv.note[0],
                "%s: the getters answer the same after OpenSSL's state is freed", vn)) {
        tap_diag("  kept:  %s", plain.sv.note);
        tap_diag("  freed: %s", lean.sv.note);
    }
    TAP_OK(strstr(lean.sv.note, "authorized=1 -") && strstr(lean.sv.note, "peer=0 "),
           "%s: the client certificate is still there and verified: %s", vn, lean.sv.note);
    TAP_OK(plain.sv.r[R_SENDFILE] == 0 && lean.sv.r[R_SENDFILE] == 0,
           "%s: sendfile byte-exact (%s, %s)", vn, tlsk_err_name(plain.sv.r[R_SENDFILE]),
           tlsk_err_name(lean.sv.r[R_SENDFILE]));
    if (ku) {
        TAP_OK(lean.sv.r[R_KU] == 0 && lean.cl.r[R_KU] == 0,
               "%s: key updates both ways with a lean server (%s, %s)", vn,
               tlsk_err_name(lean.sv.r[R_KU]), tlsk_err_name(lean.cl.r[R_KU]));
        /* (Natively both servers count 3: measured, with OpenSSL and with tlsk's record layer.) */
    TAP_OK(lean.sv.key_updates == plain.sv.key_updates &&
                   lean.cl.key_updates == plain.cl.key_updates &&
                   lean.sv.key_updates == (soft ? 3 : 4),
               "%s: the same key updates counted (server %llu / %llu, client %llu / %llu)", vn,
               (unsigned long long)lean.sv.key_updates, (unsigned long long)plain.sv.key_updates,
               (unsigned long long)lean.cl.key_updates, (unsigned long long)plain.cl.key_updates);
    }
    if (version == TLSK_TLS1_3) {
        TAP_OK(plain.sv.r[R_TICKET] == 0, "%s: a server that kept OpenSSL issues a ticket", vn);
        TAP_OK(lean.sv.r[R_TICKET] == (lean.sv.r[R_LEAN] ? TLSK_ESTATE : 0),
               "%s: a lean server answers a ticket request with TLSK_ESTATE (%s)", vn,
               tlsk_err_name(lean.sv.r[R_TICKET]));
    }
    TAP_OK(plain.sv.r[R_SESSION] > 0 &&
               (lean.sv.r[R_LEAN] ? lean.sv.r[R_SESSION] == TLSK_ESTATE
                                  : lean.sv.r[R_SESSION] > 0),
           "%s: the session bytes: %d kept, %s lean", vn, plain.sv.r[R_SESSION],
           tlsk_err_name(lean.sv.r[R_SESSION]));
    free_run(&plain);

    if (version == TLSK_TLS1_2) {
        /* g_sess is the lean connection's session: the client resumes it on a new connection
         * to a new server with the same context. */
        struct run again;
        memset(&again, 0, sizeof again);
        again.sv.ctx = lean.sv.ctx;
        again.cl.ctx = lean.cl.ctx;
        again.sv.body = server_body;
        again.cl.body = client_body;
        again.sv.sock_flags = TLSK_SOCKET_LEAN;
        again.cl.session = g_sess;
        again.cl.session_len = g_sess_len;
        tp_conn(&again.sv, &again.cl);
        tp_conn_ok(&again.sv, &again.cl, "TLS 1.2, resuming a lean connection's session");
        TAP_OK(g_sess_len > 0 && strstr(again.sv.note, "reused=1"),
               "TLS 1.2: a lean connection's session resumes (%zu bytes): %s", g_sess_len,
               again.sv.note);
        TAP_OK(again.sv.r[R_LEAN] == lean.sv.r[R_LEAN], "TLS 1.2: the resumed one is lean too");
    }
    free_run(&lean);
}

/*
 * The answer a lean server owes: the client's KeyUpdate asks for one while the server's own
 * KeyUpdate waits, parked behind a full send buffer.  The answer goes after the parked record
 * once the buffer drains (lib/bridge.c, ku_owed).  Steps, through g_step: the client fixes a
 * small receive buffer and the server a small send buffer; the server fills them (the client
 * reads nothing) and updates its key (parked); the client updates its own asking for an
 * answer; the server reads that update; the client reads everything; data both ways then
 * reads back under the new keys.
 */
static atomic_int g_step;

static atomic_llong g_filled;

enum { R_PARKED = 5, R_SEEN, R_FLUSHED };

static int owed_server(struct tp_end *e, struct tlsk_socket *s)
{
    static unsigned char fill[16384];
    long long sent = 0;
    ssize_t n;
    int rc, tries = 0;
    char b[1];

    e->r[R_LEAN] = s->lean != NULL && s->ssl == NULL;
    memset(fill, 'f', sizeof fill);
    /* Small fixed buffers at both ends (no autotuning), so that once full the path stays
     * full until the client reads. */
    while (atomic_load(&g_step) < 1) {
        usleep(1000);
    }
    setsockopt(e->fd, SOL_SOCKET, SO_SNDBUF, &(int){ 131072 }, sizeof(int));
    /* Until a write still finds no room after a pause: ACKs in flight free room for a
     * while after the first -EAGAIN; then the client's window is what is closed. */
    for (int pause = 0; pause < 50; pause++) {
        bool more = false;
        while ((n = tlsk_socket_write(s, fill, sizeof fill)) > 0) {
            sent += n;
            more = true;
        }
        if (n != -EAGAIN) {
            return (int)n;
        }
        if (!more && pause > 0) {
            break;
        }
        usleep(50000);
    }
    /* tlsk's record layer keeps userspace mode's write contract: the records a write that
     * said -EAGAIN made still leave, ahead of anything else, and their count is told at the
     * retry, which this program does not make.  The client reads them all the same. */
    sent += (long long)tlsk__soft_untold(s);
    atomic_store(&g_filled, sent);
    e->r[R_KU] = tlsk_socket_key_update(s, 0);
    e->r[R_PARKED] = (tlsk_socket_events(s) & POLLOUT) != 0;
    atomic_store(&g_step, 2);
    /* The client's update: read (no data comes) until it is counted. */
    while (tlsk_socket_key_updates(s) < 2 && tries++ < 2000) {
        struct pollfd p = { .fd = e->fd, .events = POLLIN };
        n = tlsk_socket_read(s, b, 1);
        if (n != -EAGAIN) {
            return n < 0 ? (int)n : -EPROTO;
        }
        poll(&p, 1, 10);
    }
    e->v[0] = (long long)tlsk_socket_key_updates(s);
    e->v[1] = tlsk_socket_events(s);
    e->r[R_SEEN] = e->v[0] == 2 && (e->v[1] & POLLOUT) != 0;
    atomic_store(&g_step, 3);
    /* The client drains: what was parked leaves, then the answer owed (a read sends them;
     * it says -EAGAIN, there being no data yet). */
    for (;;) {
        n = tlsk_socket_read(s, b, 1);
        if (n != -EAGAIN) {
            return n < 0 ? (int)n : -EPROTO;
        }
        if (!(tlsk_socket_events(s) & POLLOUT)) {
            break;
        }
        if ((rc = tp_wait(s)) != 0) {
            return rc;
        }
    }
    /* The retry of the write that said -EAGAIN (tlsk's record layer): told now, sent before. */
    while (tlsk__soft_untold(s) > 0) {
        size_t u = tlsk__soft_untold(s);
        if ((n = tlsk_socket_write(s, fill, u < sizeof fill ? u : sizeof fill)) <= 0) {
            return n < 0 ? (int)n : -EPROTO;
        }
    }
    e->r[R_FLUSHED] = 1;
    atomic_store(&g_step, 4);
    if ((rc = h_recv_pattern(s, 7, 1000)) != 0 || (rc = h_send_pattern(s, 8, 1000)) != 0) {
        return rc;
    }
    return tp_finish(s, true);
}

static int owed_client(struct tp_end *e, struct tlsk_socket *s)
{
    static unsigned char b[65536];
    long long want, got = 0;
    int rc;

    setsockopt(e->fd, SOL_SOCKET, SO_RCVBUF, &(int){ 65536 }, sizeof(int)); /* > 2 records */
    atomic_store(&g_step, 1);
    while (atomic_load(&g_step) < 2) {
        usleep(1000);
    }
    e->r[R_KU] = tlsk_socket_key_update(s, 1);
    while (atomic_load(&g_step) < 3) {
        usleep(1000);
    }
    want = atomic_load(&g_filled);
    e->r[R_SEEN] = 1;
    while (got < want) {
        ssize_t n = h_read_some(s, b, (size_t)(want - got < (long long)sizeof b ? want - got
                                                                                : (long long)sizeof b));
        if (n <= 0) {
            return n < 0 ? (int)n : -EPROTO;
        }
        for (ssize_t i = 0; i < n; i++) {
            e->r[R_SEEN] &= b[i] == 'f';
        }
        got += n;
    }
    while (atomic_load(&g_step) < 4) { /* until the server's updates have left */
        usleep(1000);
    }
    if ((rc = h_send_pattern(s, 7, 1000)) != 0 || (rc = h_recv_pattern(s, 8, 1000)) != 0) {
        return rc;
    }
    return tp_finish(s, false);
}

static void owed_run(struct run *r, bool lean)
{
    memset(r, 0, sizeof *r);
    atomic_store(&g_step, 0);
    r->sv.ctx = tp_ctx(TLSK_TLS1_3, lean ? TLSK_LEAN_USERSPACE : 0, "agent1", 0, 0, 0);
    r->cl.ctx = tp_ctx(TLSK_TLS1_3, 0, NULL, 0, 0, 0);
    r->sv.body = owed_server;
    r->cl.body = owed_client;
    r->sv.sock_flags = lean ? TLSK_SOCKET_LEAN : 0;
    r->sv.nonblock = r->cl.nonblock = true;
    if (r->sv.ctx && r->cl.ctx) {
        tp_conn(&r->sv, &r->cl);
    } else {
        r->sv.rc = r->cl.rc = -ENOMEM;
    }
}

static void owed(void)
{
    /* The server that keeps OpenSSL is the reference where the kernel has both directions.
     * With OpenSSL's own record layer this program's writes after a parked KeyUpdate are not
     * the retries OpenSSL requires ("bad length"), so natively only the lean server runs, and
     * its counts are checked against the 3 each that the kernel tier measures for both. */
    bool plain_runs = tlsk_kernel_probe()->ulp;
    struct run plain, lean;

    memset(&plain, 0, sizeof plain);
    if (plain_runs) {
        owed_run(&plain, false);
        tp_conn_ok(&plain.sv, &plain.cl, "owed answer, server not lean");
    }
    owed_run(&lean, true);
    tp_conn_ok(&lean.sv, &lean.cl, "owed answer, lean server");
    TAP_OK(lean.sv.r[R_LEAN], "owed answer: the server is lean");
    TAP_OK(lean.sv.r[R_KU] == 0 && lean.sv.r[R_PARKED] && lean.cl.r[R_KU] == 0,
           "owed answer: the server's KeyUpdate met a full buffer and waits (%s, parked %d)",
           tlsk_err_name(lean.sv.r[R_KU]), lean.sv.r[R_PARKED]);
    TAP_OK(lean.sv.r[R_SEEN],
           "owed answer: the client's update_requested was read while ours still waited "
           "(key updates %lld, events %#llx)", lean.sv.v[0], lean.sv.v[1]);
    TAP_OK(lean.sv.r[R_FLUSHED] && lean.cl.r[R_SEEN],
           "owed answer: the buffer drained, the client read the %lld bytes before the updates",
           (long long)atomic_load(&g_filled));
    TAP_OK(lean.sv.key_updates == 3 && lean.cl.key_updates == 3 &&
               (!plain_runs || (plain.sv.key_updates == lean.sv.key_updates &&
                                plain.cl.key_updates == lean.cl.key_updates)),
           "owed answer: the answer went after the parked update (server %llu / %llu, client "
           "%llu / %llu, lean / not lean; 3 each)",
           (unsigned long long)lean.sv.key_updates, (unsigned long long)plain.sv.key_updates,
           (unsigned long long)lean.cl.key_updates, (unsigned long long)plain.cl.key_updates);
    free_run(&plain);
    free_run(&lean);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    alarm(300);
    if (h_expect_ktls() && !TAP_OK(tlsk_kernel_probe()->ulp, "kTLS kernel present")) {
        return tap_done();
    }
    one(TLSK_TLS1_3);
    one(TLSK_TLS1_2);
    if ((h_expect_ktls() && h_kernel_rekey()) || !tlsk_kernel_probe()->ulp) {
        owed(); /* needs a lean TLS 1.3 server: both directions in the kernel, re-keyed, or
                 * in tlsk's record layer */
    }
    return tap_done();
}
