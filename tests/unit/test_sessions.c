/*
 * test_sessions.c - session resumption with tlsk at both ends (docs/NODE.md §1.6 SS-*, §2.1 D6,
 * A5; docs/OPENSSL.md §5, §6):
 *  - by session id (TLS 1.2, TLSK_NO_TICKETS) and by ticket (TLS 1.2, TLS 1.3 stateless,
 *    TLS 1.3 stateful), from the internal cache (SS-10); resumed handshakes offload like full
 *    ones (kTLS tier: TLS 1.2 both ways, TLS 1.3 TX) and carry data and close_notify;
 *  - the client's on_session callback, also with TLSK_OFFLOAD_RX_TLS13 (tickets arrive
 *    through the kernel in the kTLS tier);
 *  - the external store: synchronous, asynchronous answered by a later step on a
 *    non-blocking fd (handshake -EAGAIN, events 0 meanwhile) and from another thread; not
 *    found (SS-3), error (SS-4: TLSK_ESESSION), garbage (SS-5); TLS 1.3 stateless (SS-8: store
 *    never consulted, new_session per ticket) and stateful (SS-9);
 *  - ticket keys shared by two forked server processes; different keys; rotation;
 *    get/set; TLSK_NO_TICKETS; key lists (tlsk_context_set_ticket_key_list: the first key
 *    encrypts, all decrypt, a ticket under a later key is renewed under the first, a dropped
 *    key no longer resumes, bad arguments refused and the keys left as they were);
 *  - expiry after session_timeout;
 *  - tickets issued after transmit offload (tlsk_socket_new_session_ticket) reach the client
 *    and resume.
 * Both tiers; with TLSK_EXPECT_KTLS=1 the offload state is asserted too.
 */
#include <errno.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "tap.h"

/* ---------------------------------------------------------------------------------------- */
/* One connection: a server end and a client end, each in its own thread                     */

struct end;
typedef int (*body_fn)(struct end *e, struct tlsk_socket *s);

struct end {
    struct tlsk_context *ctx;
    int fd;
    bool server;
    const void *session; /* client: resume this */
    size_t session_len;
    bool count_sessions; /* client: install on_session */
    body_fn body;        /* after the handshake; NULL = default */
    int hs_rc, rc;
    int reused;
    struct tlsk_offload off;
    bool kernel_tx, kernel_rx; /* getsockopt(SOL_TLS) cross-check */
    unsigned char sess[8192];   /* client: tlsk_socket_session() after reading */
    ssize_t sess_len;
    int n_on_session;
    unsigned char on_sess[8192]; /* latest on_session bytes */
    size_t on_sess_len;
    int n_on_session_mid; /* body-specific snapshot */
    bool saw_pending;
    int events_pending;
    char detail[256];
    const char *version;
};

static void on_session(struct tlsk_socket *s, const unsigned char *data, size_t len, void *ud)
{
    struct end *e = ud;
    (void)s;
    e->n_on_session++;
    if (len <= sizeof e->on_sess) {
        memcpy(e->on_sess, data, len);
        e->on_sess_len = len;
    }
}

/* ---- the external store ---- */

enum store_mode { ST_FOUND, ST_NOTFOUND, ST_ERROR, ST_GARBAGE, ST_ERROR_RET };
enum store_async { AS_SYNC, AS_LATER, AS_THREAD };

struct store {
    pthread_mutex_t mu;
    enum store_mode mode;
    enum store_async async;
    int n_new, n_resume, n_resume_known;
    size_t last_id_len;
    unsigned char ids[32][64];
    size_t id_len[32];
    unsigned char *data[32];
    size_t data_len[32];
    int n;
    struct tlsk_socket *pending;
    atomic_int answered;
};

static struct store g_store = { .mu = PTHREAD_MUTEX_INITIALIZER };

static void store_reset(enum store_mode m, enum store_async a)
{
    for (int i = 0; i < g_store.n; i++) {
        free(g_store.data[i]);
    }
    pthread_mutex_lock(&g_store.mu);
    g_store.mode = m;
    g_store.async = a;
    g_store.n_new = g_store.n_resume = g_store.n_resume_known = 0;
    g_store.n = 0;
    g_store.pending = NULL;
    g_store.last_id_len = 0;
    atomic_store(&g_store.answered, 0);
    pthread_mutex_unlock(&g_store.mu);
}

static void st_new(struct tlsk_socket *s, const unsigned char *id, size_t id_len,
                   const unsigned char *data, size_t data_len, void *ud)
{
    struct store *st = ud;
    (void)s;
    pthread_mutex_lock(&st->mu);
    st->n_new++;
    if (st->n < 32 && id_len <= 64) {
        memcpy(st->ids[st->n], id, id_len);
        st->id_len[st->n] = id_len;
        st->data[st->n] = malloc(data_len);
        memcpy(st->data[st->n], data, data_len);
        st->data_len[st->n] = data_len;
        st->n++;
    }
    pthread_mutex_unlock(&st->mu);
}

static int find_id(const unsigned char *id, size_t id_len)
{
    for (int i = g_store.n - 1; i >= 0; i--) {
        if (g_store.id_len[i] == id_len && memcmp(g_store.ids[i], id, id_len) == 0) {
            return i;
        }
    }
    return -1;
}

static unsigned char g_pending_id[64];
static size_t g_pending_id_len;

static int store_answer(struct tlsk_socket *s, const unsigned char *id, size_t id_len)
{
    static const unsigned char garbage[] = "this is not a DER SSL_SESSION at all";
    int i, rc;

    pthread_mutex_lock(&g_store.mu);
    i = find_id(id, id_len);
    switch (g_store.mode) {
    case ST_FOUND:
        rc = i >= 0 ? tlsk_socket_resume_answer(s, g_store.data[i], g_store.data_len[i], 0)
                    : tlsk_socket_resume_answer(s, NULL, 0, 0);
        break;
    case ST_NOTFOUND:
        rc = tlsk_socket_resume_answer(s, NULL, 0, 0);
        break;
    case ST_ERROR:
        rc = tlsk_socket_resume_answer(s, NULL, 0, -EIO);
        break;
    default:
        rc = tlsk_socket_resume_answer(s, garbage, sizeof garbage, 0);
        break;
    }
    pthread_mutex_unlock(&g_store.mu);
    return rc;
}

static void *answer_thread(void *arg)
{
    struct tlsk_socket *s = arg;
    usleep(50 * 1000);
    store_answer(s, g_pending_id, g_pending_id_len);
    atomic_store(&g_store.answered, 1);
    return NULL;
}

static int st_resume(struct tlsk_socket *s, const unsigned char *id, size_t id_len, void *ud)
{
    struct store *st = ud;
    pthread_mutex_lock(&st->mu);
    st->n_resume++;
    st->last_id_len = id_len;
    if (find_id(id, id_len) >= 0) {
        st->n_resume_known++;
    }
    pthread_mutex_unlock(&st->mu);
    if (st->mode == ST_ERROR_RET) {
        return -EIO; /* abort without answering */
    }
    if (st->async == AS_SYNC) {
        int rc = store_answer(s, id, id_len);
        return rc < 0 ? rc : 0;
    }
    memcpy(g_pending_id, id, id_len < 64 ? id_len : 64);
    g_pending_id_len = id_len < 64 ? id_len : 64;
    st->pending = s;
    if (st->async == AS_THREAD) {
        pthread_t t;
        atomic_store(&st->answered, 0);
        h_spawn(&t, answer_thread, s);
        pthread_detach(t);
    }
    return TLSK_SESSION_PENDING;
}

static const struct tlsk_session_store g_store_cb = { st_new, st_resume, &g_store };

/* ---- handshake and default bodies ---- */

static int wait_fd(struct tlsk_socket *s)
{
    struct pollfd p = { .fd = tlsk_socket_fd(s), .events = (short)tlsk_socket_events(s) };
    int r = poll(&p, 1, 20000);
    return r == 0 ? -ETIMEDOUT : r < 0 ? -errno : 0;
}

/* The server's handshake, answering a pending store lookup as a later step (or waiting for
 * the answering thread without touching the socket). */
static int srv_handshake(struct end *e, struct tlsk_socket *s)
{
    for (;;) {
        int rc = tlsk_socket_handshake(s);
        if (rc != -EAGAIN) {
            return rc;
        }
        if (g_store.pending == s) {
            e->saw_pending = true;
            e->events_pending = tlsk_socket_events(s);
            if (g_store.async == AS_LATER) {
                usleep(50 * 1000);
                g_store.pending = NULL;
                store_answer(s, g_pending_id, g_pending_id_len);
            } else {
                for (int i = 0; i < 2000 && !atomic_load(&g_store.answered); i++) {
                    usleep(5000);
                }
                g_store.pending = NULL;
            }
            continue;
        }
        if ((rc = wait_fd(s)) != 0) {
            return rc;
        }
    }
}

static int default_server_body(struct end *e, struct tlsk_socket *s)
{
    char b[16];
    int rc;
    (void)e;
    if ((rc = h_write_all(s, "x", 1)) != 0) {
        return rc;
    }
    rc = (int)h_read_some(s, b, sizeof b);
    if (rc != 0) {
        return rc < 0 ? rc : -EPROTO;
    }
    return h_shutdown(s);
}

static int default_client_body(struct end *e, struct tlsk_socket *s)
{
    char b[16];
    int rc;
    if (h_read_full(s, b, 1) != 1 || b[0] != 'x') {
        return -EPROTO;
    }
    e->sess_len = tlsk_socket_session(s, e->sess, sizeof e->sess);
    if ((rc = h_shutdown(s)) != 0) {
        return rc;
    }
    rc = (int)h_read_some(s, b, sizeof b);
    return rc > 0 ? -EPROTO : rc;
}

static void *run_end(void *arg)
{
    struct end *e = arg;
    struct tlsk_socket *s = NULL;
    struct tlsk_socket_options o = { .servername = "localhost" };
    int rc;

    if (!e->server) {
        o.session = e->session;
        o.session_len = e->session_len;
        if (e->count_sessions) {
            o.on_session = on_session;
            o.on_session_data = e;
        }
    }
    rc = e->server ? tlsk_socket_new_server(&s, e->ctx, e->fd, NULL)
                   : tlsk_socket_new_client(&s, e->ctx, e->fd, &o);
    if (rc) {
        e->hs_rc = e->rc = rc;
        return NULL;
    }
    e->hs_rc = e->server ? srv_handshake(e, s) : h_handshake(s);
    if (e->hs_rc != 0) {
        e->rc = e->hs_rc;
        snprintf(e->detail, sizeof e->detail, "%s", tlsk_socket_error_detail(s));
        shutdown(e->fd, SHUT_RDWR);
        tlsk_socket_free(s);
        return NULL;
    }
    e->off = tlsk_socket_offload(s);
    e->reused = tlsk_socket_session_reused(s);
    e->version = tlsk_socket_version(s);
    e->kernel_tx = h_kernel_has(e->fd, true, NULL, NULL);
    e->kernel_rx = h_kernel_has(e->fd, false, NULL, NULL);
    e->rc = (e->body ? e->body : e->server ? default_server_body : default_client_body)(e, s);
    if (e->rc) {
        snprintf(e->detail, sizeof e->detail, "%s", tlsk_socket_error_detail(s));
        shutdown(e->fd, SHUT_RDWR);
    }
    tlsk_socket_free(s);
    return NULL;
}

/* Run one connection; sv and cl keep their configuration, results are reset. */
static void conn(struct end *sv, struct end *cl)
{
    pthread_t a, b;

    sv->server = true;
    cl->server = false;
    sv->rc = cl->rc = sv->hs_rc = cl->hs_rc = 0;
    sv->reused = cl->reused = -1;
    cl->sess_len = -ENOENT;
    cl->n_on_session = 0;
    sv->saw_pending = false;
    sv->detail[0] = cl->detail[0] = '\0';
    if (h_tcp_pair(&cl->fd, &sv->fd) != 0) {
        sv->rc = cl->rc = -EIO;
        return;
    }
    if (g_store.async == AS_LATER) {
        h_set_nonblock(sv->fd, true);
    }
    h_spawn(&a, run_end, sv);
    h_spawn(&b, run_end, cl);
    pthread_join(a, NULL);
    pthread_join(b, NULL);
    close(sv->fd);
    close(cl->fd);
}

static bool conn_ok(struct end *sv, struct end *cl, const char *what)
{
    if (!TAP_OK(sv->rc == 0 && cl->rc == 0, "%s: connection completed (data, close_notify)", what)) {
        tap_diag("  server %s: %s; client %s: %s", tlsk_err_name(sv->rc), sv->detail,
                 tlsk_err_name(cl->rc), cl->detail);
        return false;
    }
    return true;
}

/* kTLS tier: TLS 1.2 both ways in the kernel; TLS 1.3 the server's TX (and the client's RX
 * with TLSK_OFFLOAD_RX_TLS13). */
static void check_offload(struct end *sv, struct end *cl, int version, bool client_rx13,
                          const char *what)
{
    if (!h_expect_ktls()) {
        TAP_OK(sv->off.tx.mode == TLSK_MODE_USERSPACE && cl->off.rx.mode == TLSK_MODE_USERSPACE,
               "%s: userspace without a kTLS kernel (%s)", what,
               tlsk_reason_name(sv->off.tx.reason));
        return;
    }
    TAP_OK(sv->off.tx.mode == TLSK_MODE_KERNEL && cl->off.tx.mode == TLSK_MODE_KERNEL &&
               sv->kernel_tx && cl->kernel_tx,
           "%s: both ends transmit through kTLS (server %s, client %s)", what,
           tlsk_reason_name(sv->off.tx.reason), tlsk_reason_name(cl->off.tx.reason));
    if (version == TLSK_TLS1_2) {
        TAP_OK(sv->off.rx.mode == TLSK_MODE_KERNEL && cl->off.rx.mode == TLSK_MODE_KERNEL &&
                   sv->kernel_rx && cl->kernel_rx,
               "%s: both ends receive through kTLS", what);
    } else if (client_rx13) {
        TAP_OK(cl->off.rx.mode == TLSK_MODE_KERNEL && cl->kernel_rx,
               "%s: client receives through kTLS (TLSK_OFFLOAD_RX_TLS13)", what);
    }
}

/* ---------------------------------------------------------------------------------------- */
/* Contexts                                                                                 */

static struct tlsk_context *srv_ctx(int version, unsigned flags, const struct tlsk_session_store *st,
                                    const unsigned char *keys, long timeout)
{
    struct tlsk_context_options o = { 0 };
    struct tlsk_context *c = NULL;
    char err[512];

    o.cert_file = h_fixture("agent1-cert.pem");
    o.key_file = h_fixture("agent1-key.pem");
    o.min_version = o.max_version = version;
    o.flags = flags;
    o.session_store = st;
    o.ticket_keys = keys;
    o.session_timeout = timeout;
    o.session_id_context = "test_sessions";
    if (tlsk_context_new(&c, &o, err, sizeof err) != 0) {
        tap_diag("server context: %s", err);
        return NULL;
    }
    return c;
}

static const char *vn(int v)
{
    return v == TLSK_TLS1_3 ? "1.3" : "1.2";
}

/* ---------------------------------------------------------------------------------------- */
/* Resumption, internal cache                                                               */

static void resume_internal(int version, unsigned sflags, unsigned cflags, const char *kind)
{
    char what[128];
    struct end sv = { 0 }, cl = { 0 };
    struct tlsk_context *sctx = srv_ctx(version, sflags, NULL, NULL, 0);
    struct tlsk_context *cctx = h_client_ctx(version, NULL, TLSK_OFFLOAD_DEFAULT, cflags);
    bool rx13 = (cflags & TLSK_OFFLOAD_RX_TLS13) != 0;
    unsigned char saved[8192];
    size_t saved_len;

    snprintf(what, sizeof what, "%s %s%s", vn(version), kind, rx13 ? " (client RX_TLS13)" : "");
    if (!TAP_OK(sctx && cctx, "%s: contexts", what)) {
        goto out;
    }
    sv.ctx = sctx;
    cl.ctx = cctx;
    cl.count_sessions = true;
    conn(&sv, &cl);
    conn_ok(&sv, &cl, what);
    TAP_OK(cl.reused == 0 && sv.reused == 0, "%s: first connection is a full handshake", what);
    if (version == TLSK_TLS1_3 && !(sflags & TLSK_STATEFUL_TICKETS)) {
        TAP_IS(cl.n_on_session, 2, "%s: on_session fired for each of the two tickets", what);
    } else {
        TAP_OK(cl.n_on_session >= 1, "%s: on_session fired (%d)", what, cl.n_on_session);
    }
    TAP_OK(cl.sess_len > 0, "%s: tlsk_socket_session() after reading (%zd)", what, cl.sess_len);
    check_offload(&sv, &cl, version, rx13, what);
    if (cl.sess_len <= 0) {
        goto out;
    }
    saved_len = (size_t)cl.sess_len;
    memcpy(saved, cl.sess, saved_len);
    cl.session = saved;
    cl.session_len = saved_len;
    conn(&sv, &cl);
    snprintf(what + strlen(what), sizeof what - strlen(what), ", resumed");
    conn_ok(&sv, &cl, what);
    TAP_OK(cl.reused == 1 && sv.reused == 1, "%s: both ends report reuse (client %d, server %d)",
           what, cl.reused, sv.reused);
    if (version == TLSK_TLS1_3) {
        TAP_OK(cl.n_on_session >= 1, "%s: on_session fired for the new ticket (%d)", what,
               cl.n_on_session);
    }
    /* Resumed handshakes offload like full ones (counted sequence numbers). */
    check_offload(&sv, &cl, version, rx13, what);

    /* The session delivered through on_session resumes as well. */
    if (cl.on_sess_len > 0) {
        memcpy(saved, cl.on_sess, cl.on_sess_len);
        cl.session_len = cl.on_sess_len;
        conn(&sv, &cl);
        TAP_OK(sv.rc == 0 && cl.rc == 0 && cl.reused == 1,
               "%s: the on_session bytes resume too (reused %d)", what, cl.reused);
    }
out:
    tlsk_context_free(sctx);
    tlsk_context_free(cctx);
}

/* ---------------------------------------------------------------------------------------- */
/* External store                                                                           */

static const char *async_name(enum store_async a)
{
    return a == AS_SYNC ? "sync" : a == AS_LATER ? "later step" : "other thread";
}

/* TLS 1.2 session ids through the store: SS-1/SS-2 found, SS-3, SS-4, SS-5. */
static void store_tls12(enum store_mode mode, enum store_async async)
{
    static const char *mn[] = { "found", "not found", "error answer", "garbage",
                                "error returned" };
    char what[128];
    struct end sv = { 0 }, cl = { 0 };
    struct tlsk_context *sctx, *cctx;
    unsigned char saved[8192];

    snprintf(what, sizeof what, "1.2 store (%s, %s)", mn[mode], async_name(async));
    store_reset(mode, async);
    sctx = srv_ctx(TLSK_TLS1_2, TLSK_NO_TICKETS, &g_store_cb, NULL, 0);
    cctx = h_client_ctx(TLSK_TLS1_2, NULL, TLSK_OFFLOAD_DEFAULT, 0);
    if (!TAP_OK(sctx && cctx, "%s: contexts", what)) {
        goto out;
    }
    sv.ctx = sctx;
    cl.ctx = cctx;
    conn(&sv, &cl);
    conn_ok(&sv, &cl, what);
    TAP_OK(g_store.n_new == 1 && g_store.n_resume == 0,
           "%s: first connection: new_session once, resume_session never (%d, %d)", what,
           g_store.n_new, g_store.n_resume);
    TAP_OK(g_store.n == 1 && g_store.id_len[0] == 32, "%s: a 32-byte session id was stored", what);
    if (cl.sess_len <= 0) {
        TAP_OK(0, "%s: client session", what);
        goto out;
    }
    memcpy(saved, cl.sess, (size_t)cl.sess_len);
    cl.session = saved;
    cl.session_len = (size_t)cl.sess_len;
    for (int i = 0; i < 2; i++) {
        int new_before = g_store.n_new;
        conn(&sv, &cl);
        TAP_OK(g_store.n_resume == i + 1 && g_store.n_resume_known == i + 1 &&
                   g_store.last_id_len == 32,
               "%s #%d: resume_session called with the stored id (%d, known %d)", what, i + 2,
               g_store.n_resume, g_store.n_resume_known);
        if (async != AS_SYNC) {
            TAP_OK(sv.saw_pending && sv.events_pending == 0,
                   "%s #%d: handshake returned -EAGAIN with events 0 while the lookup was pending "
                   "(events %d)", what, i + 2, sv.events_pending);
        }
        switch (mode) {
        case ST_FOUND:
            conn_ok(&sv, &cl, what);
            TAP_OK(sv.reused == 1 && cl.reused == 1 && g_store.n_new == new_before,
                   "%s #%d: resumed, new_session not called (reused %d/%d)", what, i + 2,
                   sv.reused, cl.reused);
            break;
        case ST_NOTFOUND:
        case ST_GARBAGE:
            conn_ok(&sv, &cl, what);
            TAP_OK(sv.reused == 0 && cl.reused == 0 && g_store.n_new == new_before + 1,
                   "%s #%d: full handshake, new_session again (reused %d, new %d)", what, i + 2,
                   sv.reused, g_store.n_new - new_before);
            break;
        case ST_ERROR_RET:
            if (!TAP_OK(sv.hs_rc == TLSK_ESESSION || sv.hs_rc == -EIO, "%s #%d: the server's "
                        "handshake fails (TLSK_ESESSION or the code returned: %s)", what, i + 2,
                        tlsk_err_name(sv.hs_rc))) {
                tap_diag("  server %s: %s", tlsk_err_name(sv.hs_rc), sv.detail);
            }
            TAP_OK(cl.hs_rc < 0, "%s #%d: the client's handshake fails too (%s)", what, i + 2,
                   tlsk_err_name(cl.hs_rc));
            break;
        case ST_ERROR:
            if (!TAP_OK(sv.hs_rc == TLSK_ESESSION, "%s #%d: the server's handshake fails with "
                        "TLSK_ESESSION", what, i + 2)) {
                tap_diag("  server %s: %s", tlsk_err_name(sv.hs_rc), sv.detail);
            }
            TAP_OK(cl.hs_rc < 0, "%s #%d: the client's handshake fails too (%s)", what, i + 2,
                   tlsk_err_name(cl.hs_rc));
            break;
        }
    }
    check_offload(&sv, &cl, TLSK_TLS1_2, false, what);
out:
    tlsk_context_free(sctx);
    tlsk_context_free(cctx);
    store_reset(ST_FOUND, AS_SYNC);
}

/* TLS 1.3 with a store: stateless tickets never consult it (SS-8); stateful ones do (SS-9). */
static void store_tls13(bool stateful, enum store_mode mode)
{
    char what[128];
    struct end sv = { 0 }, cl = { 0 };
    struct tlsk_context *sctx, *cctx;
    unsigned char saved[8192];

    snprintf(what, sizeof what, "1.3 store, %s tickets%s", stateful ? "stateful" : "stateless",
             stateful ? (mode == ST_FOUND ? ", found" : ", not found") : "");
    store_reset(mode, AS_SYNC);
    sctx = srv_ctx(TLSK_TLS1_3, stateful ? TLSK_STATEFUL_TICKETS : 0, &g_store_cb, NULL, 0);
    cctx = h_client_ctx(TLSK_TLS1_3, NULL, TLSK_OFFLOAD_DEFAULT, TLSK_OFFLOAD_RX_TLS13);
    if (!TAP_OK(sctx && cctx, "%s: contexts", what)) {
        goto out;
    }
    sv.ctx = sctx;
    cl.ctx = cctx;
    cl.count_sessions = true;
    conn(&sv, &cl);
    conn_ok(&sv, &cl, what);
    TAP_IS(g_store.n_new, 2, "%s: full handshake: new_session for each of the 2 tickets (D6)", what);
    TAP_IS(cl.n_on_session, 2, "%s: the client got 2 sessions", what);
    TAP_IS(g_store.n_resume, 0, "%s: resume_session not called for a fresh ClientHello", what);
    if (cl.sess_len <= 0) {
        TAP_OK(0, "%s: client session", what);
        goto out;
    }
    memcpy(saved, cl.sess, (size_t)cl.sess_len);
    cl.session = saved;
    cl.session_len = (size_t)cl.sess_len;
    conn(&sv, &cl);
    conn_ok(&sv, &cl, what);
    if (!stateful) {
        TAP_IS(g_store.n_resume, 0, "%s: resume_session never called (the legacy session id "
               "never triggers it)", what);
        TAP_OK(sv.reused == 1 && cl.reused == 1, "%s: resumed (%d/%d)", what, sv.reused, cl.reused);
        TAP_IS(g_store.n_new, 3, "%s: resumed handshake: new_session once more", what);
    } else {
        TAP_OK(g_store.n_resume == 1 && g_store.n_resume_known == 1,
               "%s: resume_session called once with a stored id (%d, known %d)", what,
               g_store.n_resume, g_store.n_resume_known);
        if (mode == ST_FOUND) {
            TAP_OK(sv.reused == 1 && cl.reused == 1, "%s: resumed (%d/%d)", what, sv.reused,
                   cl.reused);
            TAP_IS(g_store.n_new, 3, "%s: resumed handshake: new_session once more", what);
        } else {
            TAP_OK(sv.reused == 0 && cl.reused == 0, "%s: full handshake (%d/%d)", what,
                   sv.reused, cl.reused);
        }
    }
    check_offload(&sv, &cl, TLSK_TLS1_3, true, what);
out:
    tlsk_context_free(sctx);
    tlsk_context_free(cctx);
    store_reset(ST_FOUND, AS_SYNC);
}

/* ---------------------------------------------------------------------------------------- */
/* Ticket keys                                                                              */

/* A forked server process: accept one connection, serve it, exit 10 (resumed), 11 (full)
 * or 1 (failed). */
static pid_t fork_server(int lfd, int version, const unsigned char *keys)
{
    pid_t p = fork();
    if (p != 0) {
        return p;
    }
    alarm(30);
    struct tlsk_context *c = srv_ctx(version, 0, NULL, keys, 0);
    struct end e = { .ctx = c, .server = true };
    int fd = accept(lfd, NULL, NULL);
    if (!c || fd < 0) {
        _exit(1);
    }
    e.fd = fd;
    run_end(&e);
    _exit(e.rc != 0 ? 1 : e.reused ? 10 : 11);
}

/* Client in this process against a forked server; returns the child's status. */
static int client_vs_fork(int version, const unsigned char *keys, struct end *cl)
{
    int port, lfd = h_listen(&port), st = -1;
    struct sockaddr_in a = { .sin_family = AF_INET };
    pid_t p;

    if (lfd < 0) {
        return -1;
    }
    p = fork_server(lfd, version, keys);
    cl->fd = socket(AF_INET, SOCK_STREAM, 0);
    a.sin_port = htons((uint16_t)port);
    a.sin_addr.s_addr = htonl(0x7f000001);
    cl->server = false;
    cl->rc = 0;
    cl->reused = -1;
    cl->sess_len = -ENOENT;
    if (connect(cl->fd, (struct sockaddr *)&a, sizeof a) == 0) {
        run_end(cl);
    } else {
        cl->rc = -errno;
    }
    close(cl->fd);
    close(lfd);
    waitpid(p, &st, 0);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static void ticket_keys_shared(int version)
{
    unsigned char k1[48], k2[48];
    struct end cl = { 0 };
    unsigned char saved[8192];
    size_t saved_len;
    int st;

    for (int i = 0; i < 48; i++) {
        k1[i] = (unsigned char)(i * 7 + 1);
        k2[i] = (unsigned char)(i * 13 + 5);
    }
    cl.ctx = h_client_ctx(version, NULL, TLSK_OFFLOAD_DEFAULT, 0);
    st = client_vs_fork(version, k1, &cl);
    TAP_OK(st == 11 && cl.rc == 0 && cl.sess_len > 0,
           "%s shared keys: process A served a full handshake (child %d, client %s)", vn(version),
           st, tlsk_err_name(cl.rc));
    if (cl.sess_len <= 0) {
        tlsk_context_free(cl.ctx);
        return;
    }
    saved_len = (size_t)cl.sess_len;
    memcpy(saved, cl.sess, saved_len);
    cl.session = saved;
    cl.session_len = saved_len;
    st = client_vs_fork(version, k1, &cl);
    TAP_OK(st == 10 && cl.rc == 0 && cl.reused == 1,
           "%s shared keys: process B (same ticket_keys) resumed A's ticket (child %d, reused %d)",
           vn(version), st, cl.reused);
    st = client_vs_fork(version, k2, &cl);
    TAP_OK(st == 11 && cl.rc == 0 && cl.reused == 0,
           "%s shared keys: process C (other keys) gave a full handshake (child %d, reused %d)",
           vn(version), st, cl.reused);
    tlsk_context_free(cl.ctx);
}

static void ticket_keys_rotation(int version)
{
    unsigned char k1[48], k2[48], got[48];
    struct end sv = { 0 }, cl = { 0 };
    unsigned char saved[8192];
    struct tlsk_context *nt;

    for (int i = 0; i < 48; i++) {
        k1[i] = (unsigned char)(i + 100);
        k2[i] = (unsigned char)(i * 3 + 9);
    }
    sv.ctx = srv_ctx(version, 0, NULL, k1, 0);
    cl.ctx = h_client_ctx(version, NULL, TLSK_OFFLOAD_DEFAULT, 0);
    if (!TAP_OK(sv.ctx && cl.ctx, "%s rotation: contexts", vn(version))) {
        return;
    }
    TAP_OK(tlsk_context_get_ticket_keys(sv.ctx, got) == 0 && memcmp(got, k1, 48) == 0,
           "%s rotation: get_ticket_keys returns the keys given", vn(version));
    conn(&sv, &cl);
    if (!conn_ok(&sv, &cl, "rotation, first") || cl.sess_len <= 0) {
        goto out;
    }
    memcpy(saved, cl.sess, (size_t)cl.sess_len);
    cl.session = saved;
    cl.session_len = (size_t)cl.sess_len;
    TAP_IS(tlsk_context_set_ticket_keys(sv.ctx, k2), 0, "%s rotation: set_ticket_keys", vn(version));
    TAP_OK(tlsk_context_get_ticket_keys(sv.ctx, got) == 0 && memcmp(got, k2, 48) == 0,
           "%s rotation: get_ticket_keys returns the new keys", vn(version));
    conn(&sv, &cl);
    conn_ok(&sv, &cl, "rotation, old ticket");
    TAP_OK(cl.reused == 1 && sv.reused == 1,
           "%s rotation: a ticket made under the previous keys still resumes (%d)", vn(version),
           cl.reused);
    if (cl.sess_len > 0) {
        /* The renewed ticket is under the new keys: a context with only those resumes it. */
        struct end sv2 = { 0 };
        memcpy(saved, cl.sess, (size_t)cl.sess_len);
        cl.session_len = (size_t)cl.sess_len;
        sv2.ctx = srv_ctx(version, 0, NULL, k2, 0);
        conn(&sv2, &cl);
        TAP_OK(sv2.rc == 0 && cl.reused == 1,
               "%s rotation: the ticket issued after rotation resumes on a context with only the "
               "new keys (%d)", vn(version), cl.reused);
        tlsk_context_free(sv2.ctx);
    }
    nt = srv_ctx(version, TLSK_NO_TICKETS, NULL, NULL, 0);
    TAP_IS(nt ? tlsk_context_get_ticket_keys(nt, got) : 0, TLSK_ESTATE,
           "%s: get_ticket_keys with TLSK_NO_TICKETS is TLSK_ESTATE", vn(version));
    tlsk_context_free(nt);
out:
    tlsk_context_free(sv.ctx);
    tlsk_context_free(cl.ctx);
}

/* ---------------------------------------------------------------------------------------- */
/* Expiry                                                                                   */

static void expiry(int version, unsigned sflags, const char *kind)
{
    struct end sv = { 0 }, cl = { 0 };
    unsigned char saved[8192];

    sv.ctx = srv_ctx(version, sflags, NULL, NULL, 1);
    cl.ctx = h_client_ctx(version, NULL, TLSK_OFFLOAD_DEFAULT, 0);
    if (!TAP_OK(sv.ctx && cl.ctx, "%s %s expiry: contexts", vn(version), kind)) {
        return;
    }
    conn(&sv, &cl);
    if (!conn_ok(&sv, &cl, "expiry, first") || cl.sess_len <= 0) {
        goto out;
    }
    memcpy(saved, cl.sess, (size_t)cl.sess_len);
    cl.session = saved;
    cl.session_len = (size_t)cl.sess_len;
    conn(&sv, &cl);
    TAP_OK(sv.rc == 0 && cl.reused == 1, "%s %s, session_timeout 1 s: resumed at once (%d)",
           vn(version), kind, cl.reused);
    sleep(2);
    conn(&sv, &cl);
    TAP_OK(sv.rc == 0 && cl.rc == 0 && cl.reused == 0 && sv.reused == 0,
           "%s %s: after 2 s the session has expired: full handshake (%d/%d)", vn(version), kind,
           sv.reused, cl.reused);
out:
    tlsk_context_free(sv.ctx);
    tlsk_context_free(cl.ctx);
}

/* ---------------------------------------------------------------------------------------- */
/* Tickets issued after transmit offload                                                    */

static int nst_server_body(struct end *e, struct tlsk_socket *s)
{
    char b[16];
    int rc;
    if ((rc = h_write_all(s, "x", 1)) != 0) {
        return rc;
    }
    /* Give the client time to read 'x' and note its count. */
    if ((rc = (int)h_read_full(s, b, 1)) != 1) {
        return rc < 0 ? rc : -EPROTO;
    }
    for (;;) {
        rc = tlsk_socket_new_session_ticket(s);
        if (rc == -EAGAIN) {
            if ((rc = wait_fd(s)) != 0) {
                return rc;
            }
            continue;
        }
        break;
    }
    if (rc != 0) {
        snprintf(e->detail, sizeof e->detail, "new_session_ticket: %s: %s", tlsk_err_name(rc),
                 tlsk_socket_error_detail(s));
        return rc;
    }
    if ((rc = h_write_all(s, "y", 1)) != 0) {
        return rc;
    }
    rc = (int)h_read_some(s, b, sizeof b);
    if (rc != 0) {
        return rc < 0 ? rc : -EPROTO;
    }
    return h_shutdown(s);
}

static int nst_client_body(struct end *e, struct tlsk_socket *s)
{
    char b[16];
    int rc;
    if (h_read_full(s, b, 1) != 1 || b[0] != 'x') {
        return -EPROTO;
    }
    e->n_on_session_mid = e->n_on_session;
    if ((rc = h_write_all(s, "a", 1)) != 0) {
        return rc;
    }
    if (h_read_full(s, b, 1) != 1 || b[0] != 'y') {
        return -EPROTO;
    }
    e->sess_len = tlsk_socket_session(s, e->sess, sizeof e->sess);
    if ((rc = h_shutdown(s)) != 0) {
        return rc;
    }
    rc = (int)h_read_some(s, b, sizeof b);
    return rc > 0 ? -EPROTO : rc;
}

static void tickets_after_offload(unsigned cflags)
{
    struct end sv = { 0 }, cl = { 0 };
    unsigned char saved[8192];
    const char *what = cflags & TLSK_OFFLOAD_RX_TLS13 ? "1.3 late ticket (client RX_TLS13)"
                                                      : "1.3 late ticket";

    sv.ctx = srv_ctx(TLSK_TLS1_3, 0, NULL, NULL, 0);
    cl.ctx = h_client_ctx(TLSK_TLS1_3, NULL, TLSK_OFFLOAD_DEFAULT, cflags);
    if (!TAP_OK(sv.ctx && cl.ctx, "%s: contexts", what)) {
        return;
    }
    sv.body = nst_server_body;
    cl.body = nst_client_body;
    cl.count_sessions = true;
    conn(&sv, &cl);
    conn_ok(&sv, &cl, what);
    TAP_OK(cl.n_on_session_mid == 2 && cl.n_on_session == 3,
           "%s: on_session fired for the ticket issued after the handshake (%d, then %d)", what,
           cl.n_on_session_mid, cl.n_on_session);
    check_offload(&sv, &cl, TLSK_TLS1_3, (cflags & TLSK_OFFLOAD_RX_TLS13) != 0, what);
    if (cl.on_sess_len == 0) {
        goto out;
    }
    memcpy(saved, cl.on_sess, cl.on_sess_len);
    cl.session = saved;
    cl.session_len = cl.on_sess_len;
    sv.body = cl.body = NULL;
    conn(&sv, &cl);
    TAP_OK(sv.rc == 0 && cl.rc == 0 && cl.reused == 1 && sv.reused == 1,
           "%s: the late ticket resumes (%d/%d)", what, sv.reused, cl.reused);
out:
    tlsk_context_free(sv.ctx);
    tlsk_context_free(cl.ctx);
}

static int nst12_server_body(struct end *e, struct tlsk_socket *s)
{
    int rc = tlsk_socket_new_session_ticket(s);
    e->n_on_session_mid = rc;
    return default_server_body(e, s);
}

static void tickets_after_offload_tls12(void)
{
    struct end sv = { 0 }, cl = { 0 };
    sv.ctx = srv_ctx(TLSK_TLS1_2, 0, NULL, NULL, 0);
    cl.ctx = h_client_ctx(TLSK_TLS1_2, NULL, TLSK_OFFLOAD_DEFAULT, 0);
    sv.body = nst12_server_body;
    conn(&sv, &cl);
    conn_ok(&sv, &cl, "1.2 new_session_ticket");
    TAP_IS(sv.n_on_session_mid, TLSK_ESTATE, "1.2: tlsk_socket_new_session_ticket is TLSK_ESTATE");
    tlsk_context_free(sv.ctx);
    tlsk_context_free(cl.ctx);
}

/* Key lists: a ticket made under A resumes after [B, A] and is renewed under B (a context
 * with only [B] resumes the renewed one); after [B] alone it no longer resumes. */
static void ticket_key_list(int version)
{
    unsigned char a[48], b[48], ba[96], got[48], saved[8192];
    struct end sv = { 0 }, cl = { 0 }, sv2 = { 0 };

    for (int i = 0; i < 48; i++) {
        a[i] = (unsigned char)(i + 1);
        b[i] = (unsigned char)(200 - i);
    }
    memcpy(ba, b, 48);
    memcpy(ba + 48, a, 48);
    sv.ctx = srv_ctx(version, 0, NULL, a, 0);
    sv2.ctx = srv_ctx(version, 0, NULL, NULL, 0);
    cl.ctx = h_client_ctx(version, NULL, TLSK_OFFLOAD_DEFAULT, 0);
    if (!TAP_OK(sv.ctx && sv2.ctx && cl.ctx, "%s key list: contexts", vn(version))) {
        goto out;
    }
    /* Bad arguments: refused, and the keys stay what they were. */
    TAP_IS(tlsk_context_set_ticket_key_list(NULL, ba, 2), TLSK_ECONFIG,
           "%s key list: NULL context refused", vn(version));
    TAP_IS(tlsk_context_set_ticket_key_list(sv.ctx, NULL, 2), TLSK_ECONFIG,
           "%s key list: NULL keys refused", vn(version));
    TAP_IS(tlsk_context_set_ticket_key_list(sv.ctx, ba, 0), TLSK_ECONFIG,
           "%s key list: n = 0 refused", vn(version));
    TAP_IS(tlsk_context_set_ticket_key_list(sv.ctx, ba, TLSK_TICKET_KEYS_MAX + 1), TLSK_ECONFIG,
           "%s key list: n > TLSK_TICKET_KEYS_MAX refused", vn(version));
    TAP_OK(tlsk_context_get_ticket_keys(sv.ctx, got) == 0 && memcmp(got, a, 48) == 0,
           "%s key list: keys unchanged after the refused calls", vn(version));

    conn(&sv, &cl);
    if (!conn_ok(&sv, &cl, "key list, ticket under A") || cl.sess_len <= 0) {
        goto out;
    }
    memcpy(saved, cl.sess, (size_t)cl.sess_len);
    cl.session = saved;
    cl.session_len = (size_t)cl.sess_len;

    TAP_IS(tlsk_context_set_ticket_key_list(sv.ctx, ba, 2), 0, "%s key list: set [B, A]",
           vn(version));
    TAP_OK(tlsk_context_get_ticket_keys(sv.ctx, got) == 0 && memcmp(got, b, 48) == 0,
           "%s key list: get_ticket_keys returns the first key (B)", vn(version));
    conn(&sv, &cl);
    conn_ok(&sv, &cl, "key list [B, A], ticket under A");
    TAP_OK(cl.reused == 1 && sv.reused == 1,
           "%s key list: a ticket under A resumes with [B, A] (%d/%d)", vn(version), sv.reused,
           cl.reused);
    if (TAP_OK(cl.sess_len > 0, "%s key list: the client holds a ticket after resuming",
               vn(version))) {
        /* Renewed under B: a server with only [B] resumes it. */
        struct end cl2 = cl;
        unsigned char renewed[8192];
        memcpy(renewed, cl.sess, (size_t)cl.sess_len);
        cl2.session = renewed;
        cl2.session_len = (size_t)cl.sess_len;
        TAP_IS(tlsk_context_set_ticket_key_list(sv2.ctx, b, 1), 0, "%s key list: set [B]",
               vn(version));
        conn(&sv2, &cl2);
        TAP_OK(sv2.rc == 0 && cl2.reused == 1 && sv2.reused == 1,
               "%s key list: the ticket renewed after a non-first key is under B: resumes on "
               "[B] alone (%d/%d)", vn(version), sv2.reused, cl2.reused);
    }

    /* A dropped: the old ticket falls back to a full handshake (that still succeeds). */
    TAP_IS(tlsk_context_set_ticket_key_list(sv.ctx, b, 1), 0, "%s key list: set [B]",
           vn(version));
    conn(&sv, &cl);
    conn_ok(&sv, &cl, "key list [B], ticket under A");
    TAP_OK(cl.reused == 0 && sv.reused == 0,
           "%s key list: a ticket under A does not resume once A is dropped (%d/%d)",
           vn(version), sv.reused, cl.reused);
out:
    tlsk_context_free(sv.ctx);
    tlsk_context_free(sv2.ctx);
    tlsk_context_free(cl.ctx);
}

int main(void)
{
    /* OpenSSL's socket writes (an alert to a peer that already left) can raise SIGPIPE. */
    signal(SIGPIPE, SIG_IGN);
    alarm(300);
    if (h_expect_ktls() && !TAP_OK(tlsk_kernel_probe()->ulp, "kTLS kernel present")) {
        return tap_done();
    }
    /* Internal cache (SS-10, A5), tlsk at both ends. */
    resume_internal(TLSK_TLS1_2, TLSK_NO_TICKETS, 0, "session id");
    resume_internal(TLSK_TLS1_2, 0, 0, "ticket");
    resume_internal(TLSK_TLS1_3, 0, 0, "stateless ticket");
    resume_internal(TLSK_TLS1_3, 0, TLSK_OFFLOAD_RX_TLS13, "stateless ticket");
    resume_internal(TLSK_TLS1_3, TLSK_STATEFUL_TICKETS, TLSK_OFFLOAD_RX_TLS13, "stateful ticket");

    /* External store. */
    store_tls12(ST_FOUND, AS_SYNC);
    store_tls12(ST_FOUND, AS_LATER);
    store_tls12(ST_FOUND, AS_THREAD);
    store_tls12(ST_NOTFOUND, AS_SYNC);
    store_tls12(ST_NOTFOUND, AS_LATER);
    store_tls12(ST_ERROR, AS_SYNC);
    store_tls12(ST_ERROR, AS_LATER);
    store_tls12(ST_ERROR_RET, AS_SYNC);
    store_tls12(ST_GARBAGE, AS_SYNC);
    store_tls12(ST_GARBAGE, AS_THREAD);
    store_tls13(false, ST_FOUND);
    store_tls13(true, ST_FOUND);
    store_tls13(true, ST_NOTFOUND);

    /* Ticket keys. */
    ticket_keys_shared(TLSK_TLS1_2);
    ticket_keys_shared(TLSK_TLS1_3);
    ticket_keys_rotation(TLSK_TLS1_2);
    ticket_keys_rotation(TLSK_TLS1_3);
    ticket_key_list(TLSK_TLS1_2);
    ticket_key_list(TLSK_TLS1_3);

    /* Expiry. */
    expiry(TLSK_TLS1_2, TLSK_NO_TICKETS, "session id");
    expiry(TLSK_TLS1_3, 0, "ticket");

    /* Tickets after offload. */
    tickets_after_offload(0);
    tickets_after_offload(TLSK_OFFLOAD_RX_TLS13);
    tickets_after_offload_tls12();
    return tap_done();
}
