/*
 * test_sni.c - server name indication on the server side (docs/NODE.md §1.2 SNICallback,
 * §1.6 addContext, rules D1-D3 (§2.1)):
 *
 *   - tlsk_sni_add pattern validation and tlsk_sni_lookup rules (exact beats wildcard in
 *     either insertion order, re-adding replaces, ASCII case-insensitive, "*" is exactly one
 *     non-empty left-most label);
 *   - live handshakes, tlsk server against tlsk clients in threads, default sni-default with
 *     the table {a.example.com: sni-a, *.test.com: sni-wild, x.test.com: sni-x}, RSA and EC
 *     trees, TLS 1.2 and 1.3: the served certificate (CN and the client's verification with
 *     ca1 and the host name) and tlsk_socket_servername on the server;
 *   - SC-1 (answer after 100 ms from another thread with TLSK_SNI_PENDING and
 *     tlsk_socket_sni_answer on a non-blocking server: -EAGAIN with no events meanwhile),
 *     SC-2 (errors: alert 80), SC-3 (context without certificate), SC-4 (client certificates
 *     checked against the chosen context's CA), SC-5 (no SNI: no callback), SC-6 (the callback
 *     replaces the table).
 *
 * Runs in both tiers; with TLSK_EXPECT_KTLS=1 every TLS 1.2 connection that completes must be
 * offloaded both ways on both ends.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "contexts.h"
#include "harness.h"
#include "tap.h"

#define NUL "<null>"

static bool tis(long long got, long long want, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static bool tis(long long got, long long want, const char *fmt, ...)
{
    char msg[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (!tap_ok(got == want, "%s", msg)) {
        tap_diag("  got %s (%lld), expected %s (%lld)", tlsk_err_name((int)got), got,
                 tlsk_err_name((int)want), want);
        return false;
    }
    return true;
}

static long long now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long long)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

/* ---------------------------------------------------------------------------------------- */
/* One connection                                                                           */

struct end {
    /* in */
    struct tlsk_context *ctx;
    bool server;
    const char *servername; /* client */
    const struct tlsk_sni *sni;
    tlsk_sni_cb cb;
    void *cb_data;
    bool nonblock;       /* server: non-blocking fd, serialised with mu, woken through wake[0] */
    pthread_mutex_t *mu; /* held around every tlsk call of the server when nonblock */
    int wake;            /* read end of a pipe written after a late answer */
    int fd;
    /* out */
    int hs, rc;
    int pending_polls;   /* -EAGAIN with tlsk_socket_events() == 0 */
    int pending_bad;     /* -EAGAIN with events != 0 while the answer was outstanding */
    int authorized;
    char autherr[64], sn[300], peer_cn[128], version[16];
    struct tlsk_offload off;
    char detail[300];
};

static void grab(char *dst, size_t n, const char *src)
{
    snprintf(dst, n, "%s", src ? src : NUL);
}

static void collect(struct end *e, struct tlsk_socket *s)
{
    struct tlsk_cert_info *ci = NULL;

    e->authorized = tlsk_socket_authorized(s);
    grab(e->autherr, sizeof e->autherr, tlsk_socket_authorization_error(s));
    grab(e->sn, sizeof e->sn, tlsk_socket_servername(s));
    grab(e->version, sizeof e->version, tlsk_socket_version(s));
    e->off = tlsk_socket_offload(s);
    if (tlsk_socket_peer_certificate(s, 0, &ci) == 0) {
        for (size_t i = 0; i < ci->subject_count; i++) {
            if (strcmp(ci->subject[i].key, "CN") == 0) {
                grab(e->peer_cn, sizeof e->peer_cn, ci->subject[i].value);
            }
        }
        tlsk_cert_info_free(ci);
    }
}

struct sni_cfg;
static bool answer_outstanding(struct sni_cfg *cfg);

/* Non-blocking server handshake: waits on the fd, or on the wake pipe while the SNI answer is
 * pending.  Every tlsk call is made with mu held (the answer comes from another thread). */
static int nb_handshake(struct end *e, struct tlsk_socket *s)
{
    long long end = now_ms() + 20000;
    for (;;) {
        int rc, ev;
        pthread_mutex_lock(e->mu);
        rc = tlsk_socket_handshake(s);
        ev = tlsk_socket_events(s);
        pthread_mutex_unlock(e->mu);
        if (rc != -EAGAIN) {
            return rc;
        }
        if (now_ms() > end) {
            return -ETIMEDOUT;
        }
        if (ev == 0) {
            struct pollfd p = { .fd = e->wake, .events = POLLIN };
            char b[16];
            e->pending_polls++;
            if (poll(&p, 1, 5000) == 1 && read(e->wake, b, sizeof b) < 0) {
                /* drained or nothing: retry the handshake either way */
            }
        } else {
            struct pollfd p = { .fd = e->fd, .events = (short)ev };
            if (answer_outstanding(e->cb_data)) {
                e->pending_bad++;
            }
            if (poll(&p, 1, 5000) == 0) {
                return -ETIMEDOUT;
            }
        }
    }
}

static void *end_main(void *arg)
{
    struct end *e = arg;
    struct tlsk_socket *s = NULL;
    struct tlsk_socket_options o = { .servername = e->servername, .sni = e->sni,
                                     .sni_cb = e->cb, .sni_data = e->cb_data };
    char b[16];
    ssize_t n;

    grab(e->autherr, sizeof e->autherr, NULL);
    grab(e->sn, sizeof e->sn, NULL);
    grab(e->peer_cn, sizeof e->peer_cn, NULL);
    grab(e->version, sizeof e->version, NULL);
    if (e->nonblock) {
        h_set_nonblock(e->fd, true);
    }
    e->rc = e->server ? tlsk_socket_new_server(&s, e->ctx, e->fd, &o)
                      : tlsk_socket_new_client(&s, e->ctx, e->fd, &o);
    if (e->rc != 0) {
        snprintf(e->detail, sizeof e->detail, "socket_new: %s", tlsk_err_name(e->rc));
        e->hs = e->rc;
        shutdown(e->fd, SHUT_RDWR);
        return NULL;
    }
    e->rc = e->hs = e->nonblock ? nb_handshake(e, s) : h_handshake(s);
    if (e->hs != 0) {
        goto out;
    }
    if (e->nonblock) {
        h_set_nonblock(e->fd, false); /* the rest is plain blocking I/O */
    }
    collect(e, s);
    if (e->server) {
        if ((e->rc = h_write_all(s, "x", 1)) != 0) {
            goto out;
        }
        n = h_read_some(s, b, sizeof b);
        if (n != 0) {
            e->rc = n < 0 ? (int)n : -EPROTO;
            goto out;
        }
        e->rc = h_shutdown(s);
    } else {
        n = h_read_full(s, b, 1);
        if (n != 1 || b[0] != 'x') {
            e->rc = n < 0 ? (int)n : -EPROTO;
            goto out;
        }
        if ((e->rc = h_shutdown(s)) != 0) {
            goto out;
        }
        n = h_read_some(s, b, sizeof b);
        e->rc = n == 0 ? 0 : n < 0 ? (int)n : -EPROTO;
    }
out:
    if (e->rc != 0) {
        snprintf(e->detail, sizeof e->detail, "%s", tlsk_socket_error_detail(s));
        shutdown(e->fd, SHUT_RDWR);
    }
    tlsk_socket_free(s);
    return NULL;
}

static void run(struct end *sv, struct end *cl)
{
    pthread_t a, b;

    sv->server = true;
    cl->server = false;
    if (!sv->ctx || !cl->ctx || h_tcp_pair(&cl->fd, &sv->fd) != 0) {
        sv->hs = sv->rc = cl->hs = cl->rc = -EIO;
        snprintf(sv->detail, sizeof sv->detail, "setup failed (context or TCP pair)");
        return;
    }
    h_spawn(&a, end_main, sv);
    h_spawn(&b, end_main, cl);
    pthread_join(a, NULL);
    pthread_join(b, NULL);
    close(sv->fd);
    close(cl->fd);
}

static void diag_ends(const struct end *sv, const struct end *cl)
{
    tap_diag("  server: hs %s rc %s: %s", tlsk_err_name(sv->hs), tlsk_err_name(sv->rc), sv->detail);
    tap_diag("  client: hs %s rc %s: %s", tlsk_err_name(cl->hs), tlsk_err_name(cl->rc), cl->detail);
}

static bool both_kernel(const struct tlsk_offload *o)
{
    return o->tx.mode == TLSK_MODE_KERNEL && o->rx.mode == TLSK_MODE_KERNEL;
}

static bool expect_ok(const char *label, const struct end *sv, const struct end *cl)
{
    bool ok = TAP_OK(sv->rc == 0 && cl->rc == 0, "%s: connects", label);
    if (!ok) {
        diag_ends(sv, cl);
    }
    if (ok && h_expect_ktls() && strcmp(cl->version, "TLSv1.2") == 0) {
        TAP_OK(both_kernel(&sv->off) && both_kernel(&cl->off),
               "%s: kTLS both ways (server tx %s rx %s, client tx %s rx %s)", label,
               tlsk_reason_name(sv->off.tx.reason), tlsk_reason_name(sv->off.rx.reason),
               tlsk_reason_name(cl->off.tx.reason), tlsk_reason_name(cl->off.rx.reason));
    }
    return ok;
}

static struct end g_sv, g_cl;

static void conn(struct tlsk_context *sctx, const struct tlsk_sni *sni, tlsk_sni_cb cb,
                 void *cb_data, struct tlsk_context *cctx, const char *servername)
{
    memset(&g_sv, 0, sizeof g_sv);
    memset(&g_cl, 0, sizeof g_cl);
    g_sv.ctx = sctx;
    g_sv.sni = sni;
    g_sv.cb = cb;
    g_sv.cb_data = cb_data;
    g_cl.ctx = cctx;
    g_cl.servername = servername;
    run(&g_sv, &g_cl);
}

/* ---------------------------------------------------------------------------------------- */
/* Table                                                                                    */

static void patterns(void)
{
    struct tlsk_sni *t = NULL;
    struct tlsk_context_options o = { .flags = TLSK_VERIFY_NONE_INSECURE };
    struct tlsk_context *c = hc_new(&o, "plain");
    char label64[100], name254[300], label63[100], name253[300];
    const char *const bad[] = {
        "", "*", "*.", "a.*.com", "**.a.com", "*a.com", "a*.com", "a.com.*", "*.*.com", "a..b",
        ".a.com", "a.com.", label64, name254, "a b.com", "a/b.com", "a:b.com", "caf\xc3\xa9.com",
        "a.com\n", "127.0.0.1", "::1",
    };
    const char *const good[] = { "*.test.com", "A.Example.COM", "x-y.example", "localhost",
                                         label63, name253 };

    memset(label64, 'a', 64);
    strcpy(label64 + 64, ".com");
    memset(label63, 'a', 63);
    strcpy(label63 + 63, ".com");
    /* 254 and 253 characters: labels of 49 characters and dots. */
    name254[0] = 0;
    for (int i = 0; i < 5; i++) {
        strcat(name254, "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb.");
    }
    strcpy(name253, name254);
    name254[254] = 0; /* 5 x 50 = 250: then "cccc" */
    memcpy(name254 + 250, "cccc", 5);
    memcpy(name253 + 250, "ccc", 4);

    if (!TAP_OK(c && tlsk_sni_new(&t) == 0 && t, "SNI table created")) {
        tlsk_context_free(c);
        return;
    }
    tis(strlen(name254), 254, "a 254-character name is built");
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        tis(tlsk_sni_add(t, bad[i], c), TLSK_ECONFIG, "tlsk_sni_add(\"%.40s%s\") rejected (len %zu)",
            bad[i], strlen(bad[i]) > 40 ? "..." : "", strlen(bad[i]));
    }
    tis(tlsk_sni_add(t, NULL, c), TLSK_ECONFIG, "tlsk_sni_add(NULL) rejected");
    tis(tlsk_sni_add(t, "a.example.com", NULL), TLSK_ECONFIG, "tlsk_sni_add with no context");
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        tis(tlsk_sni_add(t, good[i], c), 0, "tlsk_sni_add(\"%.40s%s\") accepted", good[i],
            strlen(good[i]) > 40 ? "..." : "");
    }
    TAP_OK(tlsk_sni_lookup(t, name253) == c, "253-character name found");
    tlsk_sni_free(t);
    tlsk_context_free(c);
}

static void lookups(void)
{
    struct tlsk_context_options o = { .flags = TLSK_VERIFY_NONE_INSECURE };
    struct tlsk_context *A = hc_new(&o, "A"), *A2 = hc_new(&o, "A2"), *W = hc_new(&o, "W"),
                        *W2 = hc_new(&o, "W2"), *X = hc_new(&o, "X"), *X2 = hc_new(&o, "X2");
    struct tlsk_sni *t1 = NULL, *t2 = NULL;

    if (!TAP_OK(A && A2 && W && W2 && X && X2 && tlsk_sni_new(&t1) == 0 && tlsk_sni_new(&t2) == 0,
                "lookup: contexts and tables")) {
        return;
    }
    /* t1: wildcard first, t2: exact first (D2). */
    tlsk_sni_add(t1, "*.test.com", W);
    tlsk_sni_add(t1, "x.test.com", X);
    tlsk_sni_add(t1, "A.Example.COM", A);
    tlsk_sni_add(t2, "x.test.com", X);
    tlsk_sni_add(t2, "*.test.com", W);
    for (int i = 0; i < 2; i++) {
        struct tlsk_sni *t = i ? t2 : t1;
        const char *ord = i ? "exact added first" : "wildcard added first";
        TAP_OK(tlsk_sni_lookup(t, "x.test.com") == X, "D2 %s: x.test.com -> exact", ord);
        TAP_OK(tlsk_sni_lookup(t, "X.Test.Com") == X, "D2/D3 %s: X.Test.Com -> exact", ord);
        TAP_OK(tlsk_sni_lookup(t, "y.test.com") == W, "D1 %s: y.test.com -> wildcard", ord);
        TAP_OK(tlsk_sni_lookup(t, "Y.TEST.COM") == W, "D3 %s: Y.TEST.COM -> wildcard", ord);
        TAP_OK(tlsk_sni_lookup(t, "a.b.test.com") == NULL, "D1 %s: a.b.test.com no match", ord);
        TAP_OK(tlsk_sni_lookup(t, "test.com") == NULL, "D1 %s: test.com no match", ord);
        TAP_OK(tlsk_sni_lookup(t, ".test.com") == NULL, "D1 %s: .test.com no match", ord);
        TAP_OK(tlsk_sni_lookup(t, "xtest.com") == NULL, "D1 %s: xtest.com no match", ord);
        TAP_OK(tlsk_sni_lookup(t, "*.test.com") == NULL, "D1 %s: the literal *.test.com is not "
               "a name", ord);
        TAP_OK(tlsk_sni_lookup(t, "c.wrong.com") == NULL, "%s: c.wrong.com no match", ord);
        TAP_OK(tlsk_sni_lookup(t, NULL) == NULL && tlsk_sni_lookup(t, "") == NULL,
               "%s: NULL and empty names match nothing", ord);
    }
    TAP_OK(tlsk_sni_lookup(t1, "a.example.com") == A, "D3: a.example.com finds A.Example.COM");
    TAP_OK(tlsk_sni_lookup(t1, "A.EXAMPLE.COM") == A, "D3: A.EXAMPLE.COM finds A.Example.COM");
    TAP_OK(tlsk_sni_lookup(NULL, "a.example.com") == NULL, "lookup in a NULL table: NULL");

    /* Re-adding replaces (the same name in another case counts as the same). */
    tis(tlsk_sni_add(t1, "x.test.com", X2), 0, "D2 re-add x.test.com");
    TAP_OK(tlsk_sni_lookup(t1, "x.test.com") == X2, "D2: re-adding x.test.com replaces it");
    tis(tlsk_sni_add(t1, "*.test.com", W2), 0, "D2 re-add *.test.com");
    TAP_OK(tlsk_sni_lookup(t1, "y.test.com") == W2, "D2: re-adding *.test.com replaces it");
    TAP_OK(tlsk_sni_lookup(t1, "x.test.com") == X2, "D2: exact still beats the new wildcard");
    tis(tlsk_sni_add(t1, "a.example.com", A2), 0, "D2/D3 re-add a.example.com in lower case");
    TAP_OK(tlsk_sni_lookup(t1, "A.Example.Com") == A2, "D3: the lower-case re-add replaced it");

    /* The table holds references: drop ours, the contexts stay usable through it. */
    tlsk_context_free(X);
    tlsk_context_free(W);
    TAP_OK(tlsk_sni_lookup(t2, "x.test.com") != NULL, "table keeps its references");
    tlsk_sni_free(t1);
    tlsk_sni_free(t2);
    tlsk_context_free(A);
    tlsk_context_free(A2);
    tlsk_context_free(W2);
    tlsk_context_free(X2);
}

/* ---------------------------------------------------------------------------------------- */
/* Live table                                                                               */

static void live_table(int tree)
{
    struct tlsk_context *def = hc_server(tree, "sni-default", 0, NULL, 0);
    struct tlsk_context *a = hc_server(tree, "sni-a", 0, NULL, 0),
                        *w = hc_server(tree, "sni-wild", 0, NULL, 0),
                        *x = hc_server(tree, "sni-x", 0, NULL, 0);
    struct tlsk_sni *t = NULL;
    static const struct {
        const char *sni;
        const char *cn;
        bool authorized;
    } cases[] = {
        { "a.example.com", "a.example.com", true }, { "A.EXAMPLE.COM", "a.example.com", true },
        { "x.test.com", "x.test.com", true },       { "X.TEST.COM", "x.test.com", true },
        { "b.test.com", "*.test.com", true },       { "B.Test.Com", "*.test.com", true },
        { "a.b.test.com", "localhost", false },     { "test.com", "localhost", false },
        { "other.example", "localhost", false },    { NULL, "localhost", false },
    };

    if (!TAP_OK(def && a && w && x && tlsk_sni_new(&t) == 0, "%s live table: setup",
                hc_tree_name(tree))) {
        return;
    }
    tlsk_sni_add(t, "a.example.com", a);
    tlsk_sni_add(t, "*.test.com", w);
    tlsk_sni_add(t, "x.test.com", x);
    /* The table holds the references from here on. */
    tlsk_context_free(a);
    tlsk_context_free(w);
    tlsk_context_free(x);
    for (int v = TLSK_TLS1_2; v <= TLSK_TLS1_3; v++) {
        struct tlsk_context *c = hc_client(tree, NULL, v, TLSK_VERIFY_NONE_INSECURE);
        for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
            char label[200];
            snprintf(label, sizeof label, "table %s %s SNI %s", hc_tree_name(tree), hc_vname(v),
                     cases[i].sni ? cases[i].sni : "(none)");
            conn(def, t, NULL, NULL, c, cases[i].sni);
            if (!expect_ok(label, &g_sv, &g_cl)) {
                continue;
            }
            TAP_OK(strcmp(g_cl.peer_cn, cases[i].cn) == 0, "%s: served %s (%s)", label,
                   cases[i].cn, g_cl.peer_cn);
            TAP_OK(strcmp(g_sv.sn, cases[i].sni ? cases[i].sni : NUL) == 0,
                   "%s: server servername is the name sent (%s)", label, g_sv.sn);
            if (cases[i].sni) {
                TAP_OK(g_cl.authorized == cases[i].authorized &&
                           (cases[i].authorized ? strcmp(g_cl.autherr, NUL) == 0
                                                : strcmp(g_cl.autherr, "HOSTNAME_MISMATCH") == 0),
                       "%s: client against ca1 and the name: %s (authorized %d, %s)", label,
                       cases[i].authorized ? "authorized" : "HOSTNAME_MISMATCH", g_cl.authorized,
                       g_cl.autherr);
            }
        }
        tlsk_context_free(c);
        /* AC-1: the default client (verification on) */
        c = hc_client(tree, NULL, v, 0);
        conn(def, t, NULL, NULL, c, "x.test.com");
        char label[100];
        snprintf(label, sizeof label, "AC-1 %s %s default client to x.test.com", hc_tree_name(tree),
                 hc_vname(v));
        if (expect_ok(label, &g_sv, &g_cl)) {
            TAP_OK(g_cl.authorized == 1, "%s: authorized", label);
        }
        conn(def, t, NULL, NULL, c, "a.b.test.com");
        tis(g_cl.hs, TLSK_EVERIFY, "AC-1 %s %s default client to a.b.test.com: EVERIFY "
            "(served the default)", hc_tree_name(tree), hc_vname(v));
        tlsk_context_free(c);
    }
    tlsk_sni_free(t);
    tlsk_context_free(def);
}

/* ---------------------------------------------------------------------------------------- */
/* SNI callback                                                                             */

enum cb_mode { CB_SYNC, CB_ASYNC };

struct sni_cfg {
    enum cb_mode mode;
    int err;                     /* answer with this error (< 0) */
    bool bad_ctx;                /* answer with a context without certificate */
    struct tlsk_context *a, *w;  /* a.example.com, b.test.com */
    struct tlsk_context *nocert;
    pthread_mutex_t mu;
    int pipe[2];
    int calls;
    char name[300];
    long long called_at;
    pthread_t th;
    bool th_started;
    volatile int outstanding;
    int answer_rc;
    /* for the answering thread */
    struct tlsk_socket *s;
    struct tlsk_context *ans_ctx;
};

static bool answer_outstanding(struct sni_cfg *cfg)
{
    return cfg && cfg->outstanding;
}

static struct tlsk_context *choose(struct sni_cfg *cfg, const char *name)
{
    if (cfg->bad_ctx) {
        return cfg->nocert;
    }
    if (strcmp(name, "a.example.com") == 0) {
        return cfg->a;
    }
    if (strcmp(name, "b.test.com") == 0) {
        return cfg->w;
    }
    return NULL;
}

static void *answer_later(void *arg)
{
    struct sni_cfg *cfg = arg;
    usleep(100 * 1000);
    pthread_mutex_lock(&cfg->mu);
    cfg->answer_rc = tlsk_socket_sni_answer(cfg->s, cfg->ans_ctx, cfg->err);
    cfg->outstanding = 0;
    pthread_mutex_unlock(&cfg->mu);
    if (write(cfg->pipe[1], "!", 1) < 0) {
        /* the server times out and reports it */
    }
    return NULL;
}

static int sni_cb(struct tlsk_socket *s, const char *servername, void *data,
                  struct tlsk_context **out)
{
    struct sni_cfg *cfg = data;
    cfg->calls++;
    snprintf(cfg->name, sizeof cfg->name, "%s", servername ? servername : NUL);
    cfg->called_at = now_ms();
    if (cfg->mode == CB_SYNC) {
        if (cfg->err < 0) {
            return cfg->err;
        }
        *out = choose(cfg, servername);
        return 0;
    }
    cfg->s = s;
    cfg->ans_ctx = choose(cfg, servername);
    cfg->outstanding = 1;
    if (pthread_create(&cfg->th, NULL, answer_later, cfg) != 0) {
        cfg->outstanding = 0;
        return -EAGAIN;
    }
    cfg->th_started = true;
    return TLSK_SNI_PENDING;
}

static void cfg_init(struct sni_cfg *cfg, int tree, enum cb_mode mode)
{
    struct tlsk_context_options o = { .flags = TLSK_VERIFY_NONE_INSECURE };
    memset(cfg, 0, sizeof *cfg);
    cfg->mode = mode;
    cfg->a = hc_server(tree, "sni-a", 0, NULL, 0);
    cfg->w = hc_server(tree, "sni-wild", 0, NULL, 0);
    cfg->nocert = hc_new(&o, "no certificate");
    pthread_mutex_init(&cfg->mu, NULL);
    if (pipe2(cfg->pipe, O_CLOEXEC | O_NONBLOCK) != 0) {
        cfg->pipe[0] = cfg->pipe[1] = -1;
    }
}

static void cfg_reset(struct sni_cfg *cfg)
{
    if (cfg->th_started) {
        pthread_join(cfg->th, NULL);
        cfg->th_started = false;
    }
    cfg->calls = 0;
    cfg->name[0] = 0;
    cfg->outstanding = 0;
    cfg->answer_rc = 0;
}

static void cfg_free(struct sni_cfg *cfg)
{
    cfg_reset(cfg);
    tlsk_context_free(cfg->a);
    tlsk_context_free(cfg->w);
    tlsk_context_free(cfg->nocert);
    close(cfg->pipe[0]);
    close(cfg->pipe[1]);
    pthread_mutex_destroy(&cfg->mu);
}

/* A connection whose server runs non-blocking with the callback cfg. */
static void cb_conn(struct tlsk_context *def, const struct tlsk_sni *t, struct sni_cfg *cfg,
                    struct tlsk_context *cctx, const char *servername)
{
    long long t0;
    cfg_reset(cfg);
    memset(&g_sv, 0, sizeof g_sv);
    memset(&g_cl, 0, sizeof g_cl);
    g_sv.ctx = def;
    g_sv.sni = t;
    g_sv.cb = sni_cb;
    g_sv.cb_data = cfg;
    g_sv.nonblock = true;
    g_sv.mu = &cfg->mu;
    g_sv.wake = cfg->pipe[0];
    g_cl.ctx = cctx;
    g_cl.servername = servername;
    t0 = now_ms();
    run(&g_sv, &g_cl);
    (void)t0;
    if (cfg->th_started) {
        pthread_join(cfg->th, NULL);
        cfg->th_started = false;
    }
}

static void callbacks(int tree)
{
    struct tlsk_context *def = hc_server(tree, "sni-default", 0, NULL, 0);
    struct sni_cfg cfg;
    char label[200];
    static const struct {
        const char *sni, *cn;
    } sc1[] = { { "a.example.com", "a.example.com" }, { "b.test.com", "*.test.com" },
                { "x.test.com", "localhost" } };

    cfg_init(&cfg, tree, CB_ASYNC);
    if (!TAP_OK(def && cfg.a && cfg.w && cfg.nocert && cfg.pipe[0] >= 0, "%s callbacks: setup",
                hc_tree_name(tree))) {
        cfg_free(&cfg);
        tlsk_context_free(def);
        return;
    }
    /* SC-1 */
    for (int v = TLSK_TLS1_2; v <= TLSK_TLS1_3; v++) {
        struct tlsk_context *c = hc_client(tree, NULL, v, TLSK_VERIFY_NONE_INSECURE);
        for (size_t i = 0; i < sizeof sc1 / sizeof sc1[0]; i++) {
            long long t0 = now_ms(), dt;
            cfg.mode = CB_ASYNC;
            cfg.err = 0;
            cfg.bad_ctx = false;
            cb_conn(def, NULL, &cfg, c, sc1[i].sni);
            dt = now_ms() - t0;
            snprintf(label, sizeof label, "SC-1 %s %s SNI %s answered after 100 ms",
                     hc_tree_name(tree), hc_vname(v), sc1[i].sni);
            if (!expect_ok(label, &g_sv, &g_cl)) {
                continue;
            }
            TAP_OK(cfg.calls == 1 && strcmp(cfg.name, sc1[i].sni) == 0,
                   "%s: callback called once with the name (%d, %s)", label, cfg.calls, cfg.name);
            TAP_OK(cfg.answer_rc == 0, "%s: tlsk_socket_sni_answer returned 0 (%s)", label,
                   tlsk_err_name(cfg.answer_rc));
            TAP_OK(g_sv.pending_polls >= 1 && g_sv.pending_bad == 0,
                   "%s: handshake returned -EAGAIN with events 0 while pending (%d times, %d "
                   "with events)", label, g_sv.pending_polls, g_sv.pending_bad);
            TAP_OK(dt >= 100 && dt < 100 + 5000, "%s: the handshake waited for the answer "
                   "(%lld ms)", label, dt);
            TAP_OK(strcmp(g_cl.peer_cn, sc1[i].cn) == 0, "%s: served %s (%s)", label, sc1[i].cn,
                   g_cl.peer_cn);
            TAP_OK(strcmp(g_sv.sn, sc1[i].sni) == 0, "%s: server servername %s", label, g_sv.sn);
        }
        tlsk_context_free(c);
    }

    /* SC-2, SC-3 */
    for (int v = TLSK_TLS1_2; v <= TLSK_TLS1_3; v++) {
        struct tlsk_context *c = hc_client(tree, NULL, v, TLSK_VERIFY_NONE_INSECURE);
        for (int m = CB_SYNC; m <= CB_ASYNC; m++) {
            const char *mn = m == CB_SYNC ? "returned" : "answered later";
            cfg.mode = (enum cb_mode)m;
            cfg.bad_ctx = false;
            cfg.err = m == CB_SYNC ? TLSK_ESNI : -EACCES;
            cb_conn(def, NULL, &cfg, c, "a.example.com");
            snprintf(label, sizeof label, "SC-2 %s %s error %s by the callback", hc_tree_name(tree),
                     hc_vname(v), mn);
            if (!TAP_OK(g_sv.hs == cfg.err && g_cl.rc == TLSK_EALERT(80),
                        "%s: server fails with it (%s), client ALERT_80 (%s)", label,
                        tlsk_err_name(g_sv.hs), tlsk_err_name(g_cl.rc))) {
                diag_ends(&g_sv, &g_cl);
            }
            cfg.err = 0;
            cfg.bad_ctx = true;
            cb_conn(def, NULL, &cfg, c, "a.example.com");
            snprintf(label, sizeof label, "SC-3 %s %s context without certificate %s",
                     hc_tree_name(tree), hc_vname(v), mn);
            if (!TAP_OK(g_sv.hs == TLSK_EINVALID_SNI_CONTEXT && g_cl.rc == TLSK_EALERT(80),
                        "%s: server EINVALID_SNI_CONTEXT (%s), client ALERT_80 (%s)", label,
                        tlsk_err_name(g_sv.hs), tlsk_err_name(g_cl.rc))) {
                diag_ends(&g_sv, &g_cl);
            }
            cfg.bad_ctx = false;
        }
        tlsk_context_free(c);
    }

    /* SC-5: no SNI (NULL servername, and an IP literal): no callback, servername null. */
    {
        struct tlsk_context *c = hc_client(tree, NULL, 0, TLSK_VERIFY_NONE_INSECURE);
        const char *names[] = { NULL, "127.0.0.1" };
        for (int i = 0; i < 2; i++) {
            cfg.mode = CB_ASYNC;
            cb_conn(def, NULL, &cfg, c, names[i]);
            snprintf(label, sizeof label, "SC-5 %s client servername %s", hc_tree_name(tree),
                     names[i] ? names[i] : "NULL");
            if (expect_ok(label, &g_sv, &g_cl)) {
                TAP_OK(cfg.calls == 0 && strcmp(g_sv.sn, NUL) == 0 &&
                           strcmp(g_cl.peer_cn, "localhost") == 0,
                       "%s: callback not called (%d), servername null (%s), default served (%s)",
                       label, cfg.calls, g_sv.sn, g_cl.peer_cn);
            }
        }
        tlsk_context_free(c);
    }

    /* SC-6: with a callback the table is not consulted. */
    {
        struct tlsk_sni *t = NULL;
        struct tlsk_context *c = hc_client(tree, NULL, 0, TLSK_VERIFY_NONE_INSECURE);
        tlsk_sni_new(&t);
        tlsk_sni_add(t, "x.test.com", cfg.a); /* would serve a.example.com */
        tlsk_sni_add(t, "a.example.com", cfg.w);
        for (int m = CB_SYNC; m <= CB_ASYNC; m++) {
            cfg.mode = (enum cb_mode)m;
            cb_conn(def, t, &cfg, c, "x.test.com");
            snprintf(label, sizeof label, "SC-6 %s table and callback (%s), SNI x.test.com",
                     hc_tree_name(tree), m == CB_SYNC ? "sync" : "async");
            if (expect_ok(label, &g_sv, &g_cl)) {
                TAP_OK(cfg.calls == 1 && strcmp(g_cl.peer_cn, "localhost") == 0,
                       "%s: the callback decided (calls %d), default served (%s)", label,
                       cfg.calls, g_cl.peer_cn);
            }
            cb_conn(def, t, &cfg, c, "a.example.com");
            snprintf(label, sizeof label, "SC-6 %s table and callback (%s), SNI a.example.com",
                     hc_tree_name(tree), m == CB_SYNC ? "sync" : "async");
            if (expect_ok(label, &g_sv, &g_cl)) {
                TAP_OK(cfg.calls == 1 && strcmp(g_cl.peer_cn, "a.example.com") == 0,
                       "%s: the callback's context served (calls %d, %s)", label, cfg.calls,
                       g_cl.peer_cn);
            }
        }
        tlsk_sni_free(t);
        tlsk_context_free(c);
    }
    cfg_free(&cfg);
    tlsk_context_free(def);
}

/* SC-4 / AC-4: client certificates are checked with the CA of the context SNI chose. */
static void client_certs(int tree)
{
    struct tlsk_context *def =
        hc_server(tree, "sni-default", 0, "ca1-cert.pem", TLSK_REQUEST_PEER_CERT);
    struct tlsk_context *a2 = hc_server(tree, "sni-a", 0, "ca2-cert.pem", TLSK_REQUEST_PEER_CERT);
    struct sni_cfg cfg;
    struct tlsk_sni *t = NULL;
    char label[200];

    cfg_init(&cfg, tree, CB_SYNC);
    tlsk_context_free(cfg.a);
    cfg.a = tlsk_context_ref(a2);
    tlsk_sni_new(&t);
    tlsk_sni_add(t, "a.example.com", a2);
    for (int v = TLSK_TLS1_2; v <= TLSK_TLS1_3; v++) {
        struct tlsk_context *ag1 = hc_client(tree, "agent1", v, TLSK_VERIFY_NONE_INSECURE);
        struct tlsk_context *ag3 = hc_client(tree, "agent3", v, TLSK_VERIFY_NONE_INSECURE);
        for (int how = 0; how < 2; how++) {
            const char *hn = how ? "table" : "callback";
            for (int k = 0; k < 3; k++) {
                const char *sni = k == 2 ? NULL : "a.example.com";
                struct tlsk_context *c = k == 1 ? ag3 : ag1;
                bool want = k != 0;
                if (how) {
                    conn(def, t, NULL, NULL, c, sni);
                } else {
                    cfg.mode = CB_SYNC;
                    cfg.err = 0;
                    cfg.bad_ctx = false;
                    cb_conn(def, NULL, &cfg, c, sni);
                }
                snprintf(label, sizeof label, "SC-4 %s %s %s: SNI %s, client %s",
                         hc_tree_name(tree), hc_vname(v), hn, sni ? sni : "(none)",
                         k == 1 ? "agent3" : "agent1");
                if (!expect_ok(label, &g_sv, &g_cl)) {
                    continue;
                }
                if (want) {
                    TAP_OK(g_sv.authorized == 1 && strcmp(g_sv.autherr, NUL) == 0,
                           "%s: authorized (%d, %s)", label, g_sv.authorized, g_sv.autherr);
                } else {
                    TAP_OK(g_sv.authorized == 0 && strcmp(g_sv.autherr, NUL) != 0 &&
                               strcmp(g_sv.autherr, "NO_PEER_CERTIFICATE") != 0,
                           "%s: not authorized by ca2 (%d, %s)", label, g_sv.authorized,
                           g_sv.autherr);
                }
                TAP_OK(strcmp(g_cl.peer_cn, sni ? "a.example.com" : "localhost") == 0,
                       "%s: served %s", label, g_cl.peer_cn);
            }
        }
        tlsk_context_free(ag1);
        tlsk_context_free(ag3);
    }
    tlsk_sni_free(t);
    cfg_free(&cfg);
    tlsk_context_free(def);
    tlsk_context_free(a2);
}

static void on_alarm(int sig)
{
    static const char msg[] = "Bail out! test_sni: timed out\n";
    (void)sig;
    if (write(STDOUT_FILENO, msg, sizeof msg - 1) < 0) {
        /* nothing */
    }
    _exit(1);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    signal(SIGALRM, on_alarm);
    alarm(h_expect_ktls() ? 1200 : 300);
    if (h_expect_ktls() && !TAP_OK(tlsk_kernel_probe()->ulp, "kTLS kernel present")) {
        return tap_done();
    }
    patterns();
    lookups();
    live_table(T_RSA);
    live_table(T_EC);
    callbacks(T_RSA);
    client_certs(T_RSA);
    return tap_done();
}
