/* pair.h - one TLS connection between two tlsk ends over a loopback TCP pair, each end in its
 * own thread running a test-supplied body after the handshake (the two-thread harness of
 * test_keyupdate.c and test_reneg.c).
 *
 * Use:
 *     struct tp_end sv = { 0 }, cl = { 0 };
 *     sv.ctx = tp_ctx(TLSK_TLS1_3, 0, "agent1", 0, 0, 0);   // server identity agent1
 *     cl.ctx = tp_ctx(TLSK_TLS1_3, 0, NULL, 0, 0, 0);       // client trusting ca1
 *     sv.body = my_server_body;  cl.body = my_client_body;  // required
 *     conn settings: .policy (socket offload override), .nonblock, .arg;
 *     tp_conn(&sv, &cl);                                    // both threads joined on return
 *     tp_conn_ok(&sv, &cl, "what");                         // one TAP line
 *     ... assertions on sv.r[], sv.v[], sv.off, sv.kernel_tx, sv.key_updates, sv.note ...
 *     tlsk_context_free(sv.ctx);  tlsk_context_free(cl.ctx);
 *
 * A body returns 0 or a negative code (it becomes e->rc; non-zero also fills e->detail with
 * tlsk_socket_error_detail() and shuts the TCP connection so that the peer never waits).  It
 * records what the test checks in r[] (results), v[] (values) and note (a string).
 *
 * Mapping of test_keyupdate.c's local harness (identical to test_reneg.c's before it moved):
 *     struct end                     -> struct tp_end (same fields, same names)
 *     body_fn                        -> tp_body_fn
 *     wait_fd(s)                     -> tp_wait(s)
 *     run_end()                      -> internal to tp_conn()
 *     conn(&sv, &cl)                 -> tp_conn(&sv, &cl)
 *     conn_ok(&sv, &cl, what)        -> tp_conn_ok(&sv, &cl, what)
 *     expect_byte(s, c)              -> tp_expect_byte(s, c)
 *     finish(s, server)              -> tp_finish(s, server)
 *     mkctx(server, v, f, cert, ku, rl, rw)
 *                                    -> tp_ctx(v, f, cert, ku, rl, rw)  (the unused server
 *                                       flag is gone: sed 's/mkctx(\(true\|false\), /tp_ctx(/')
 * struct rk, rk_now() and rk_check() (tls_stat re-key counters) are test_keyupdate.c's alone
 * and stay there.
 *
 * TAP: tap.h keeps its counters per translation unit, so whatever prints an ok line
 * (tp_conn_ok) is a static inline function here and runs in the test's own unit; the
 * functions in pair.c print only diagnostics.
 */
#ifndef TLSK_TEST_PAIR_H
#define TLSK_TEST_PAIR_H

#include <stdbool.h>
#include <stdint.h>

#include "tap.h"
#include "tlsk.h"

#define TP_SLOTS 8

struct tp_end;
/* Runs in the end's thread after a successful handshake; returns 0 or a negative code. */
typedef int (*tp_body_fn)(struct tp_end *e, struct tlsk_socket *s);

struct tp_end {
    /* configuration: set by the test, kept across tp_conn() */
    struct tlsk_context *ctx;
    enum tlsk_offload_policy policy; /* socket override (tlsk_socket_options.offload) */
    tp_body_fn body;
    int arg;       /* case parameter for the body */
    bool nonblock; /* make the fd non-blocking before the socket is made */
    unsigned sock_flags; /* tlsk_socket_options.flags (TLSK_SOCKET_LEAN ...) */
    const void *session; /* client: tlsk_socket_options.session, or NULL */
    size_t session_len;
    /* client: the socket option on_session (its data is this tp_end) */
    void (*on_session)(struct tlsk_socket *s, const unsigned char *data, size_t len, void *ud);
    /* set by tp_conn() */
    int fd;
    bool server;
    /* results: reset by tp_conn() */
    int hs_rc;                /* socket creation or handshake */
    int rc;                   /* first failure: creation, handshake, then the body; 0 = all ok */
    struct tlsk_offload off;  /* after the handshake */
    bool kernel_tx, kernel_rx; /* SOL_TLS state of the fd after the handshake */
    uint64_t key_updates;     /* tlsk_socket_key_updates() after the body */
    int r[TP_SLOTS];          /* body results */
    long long v[TP_SLOTS];    /* body values */
    char detail[256];         /* tlsk_socket_error_detail() when rc != 0 (or set by the body) */
    char note[256];           /* free for the body */
};

/* Run one connection: a TCP pair (client fd, server fd), sv as server and cl as client, each
 * with servername "localhost"; returns when both threads are done and the fds are closed.
 * A failed TCP pair leaves rc = -EIO on both. */
void tp_conn(struct tp_end *sv, struct tp_end *cl);

/* Poll the socket's fd for tlsk_socket_events() up to 20 s: 0, -ETIMEDOUT or -errno. */
int tp_wait(struct tlsk_socket *s);

/* Read one byte (h_read_full) and check it: 0, the read's error, or -EPROTO. */
int tp_expect_byte(struct tlsk_socket *s, char want);

/* Close in order.  Server: wait for the client's close_notify, then answer it.  Client: send
 * close_notify, then read the server's.  0, or the error, or -EPROTO on unexpected data. */
int tp_finish(struct tlsk_socket *s, bool server);

/* Context from the RSA fixture tree (h_fixture): identity cert ("<cert>-cert.pem" and
 * "<cert>-key.pem"; NULL none), ca1 as CA, min = max = version (0 any), flags,
 * key_update_records, client_reneg_limit and client_reneg_window_s.  NULL (with a TAP
 * diagnostic) on failure. */
struct tlsk_context *tp_ctx(int version, unsigned flags, const char *cert, uint64_t ku_records,
                            int reneg_limit, int reneg_window);

/* One TAP line "<what>: connection completed" (both rc 0); on failure a diagnostic with each
 * end's code, detail and note.  Returns the result. */
static inline bool tp_conn_ok(const struct tp_end *sv, const struct tp_end *cl, const char *what)
{
    if (!TAP_OK(sv->rc == 0 && cl->rc == 0, "%s: connection completed", what)) {
        tap_diag("  server %s: %s %s; client %s: %s %s", tlsk_err_name(sv->rc), sv->detail,
                 sv->note, tlsk_err_name(cl->rc), cl->detail, cl->note);
        return false;
    }
    return true;
}

#endif
