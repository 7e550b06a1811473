/*
 * test_options.c - docs/NODE.md §1.2 createServer options and §1.3 connect options, tlsk
 * server against tlsk client over loopback TCP, each end in its own thread:
 *
 *   verify table (ca, crl, requestCert, rejectUnauthorized) for TLS 1.2 and 1.3, T_RSA tree,
 *   and rows 2 to 5 on the T_EC tree [both]; CA-1, CA-2; K-1, K-3, K-4, K-5; CO-1 to CO-5;
 *   EC-1, EC-2, EC-5; SP-1 to SP-3; CN-2, CN-6, CN-7; AL-1, AL-2, NPN-1 to NPN-5 and the
 *   ALPN no-overlap failure; ST-1; SI-1, SI-2.
 *
 * Runs in both tiers.  With TLSK_EXPECT_KTLS=1 every TLS 1.2 connection that completes must
 * be offloaded both ways on both ends, so each feature is shown with kTLS on.
 * Fixtures: TLSK_FIXTURES (T_RSA tree), TLSK_FIXTURES_EC (T_EC tree).
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <openssl/bn.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "contexts.h"
#include "harness.h"
#include "tap.h"

#define NUL "<null>"

/* TAP_IS as an expression: returns whether got == want. */
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

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    char *b = NULL;
    long n;

    if (!f) {
        return NULL;
    }
    if (fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) >= 0 && fseek(f, 0, SEEK_SET) == 0) {
        b = malloc((size_t)n + 1);
        if (b && fread(b, 1, (size_t)n, f) != (size_t)n) {
            free(b);
            b = NULL;
        }
        if (b) {
            b[n] = 0;
            if (len) {
                *len = (size_t)n;
            }
        }
    }
    fclose(f);
    return b;
}

/* Serial number of a PEM certificate as uppercase hex (static buffer). */
static const char *cert_serial(const char *path)
{
    static char out[128];
    FILE *f = fopen(path, "r");
    X509 *x = f ? PEM_read_X509(f, NULL, NULL, NULL) : NULL;
    BIGNUM *bn = x ? ASN1_INTEGER_to_BN(X509_get0_serialNumber(x), NULL) : NULL;
    char *hex = bn ? BN_bn2hex(bn) : NULL;

    snprintf(out, sizeof out, "%s", hex ? hex : "?");
    OPENSSL_free(hex);
    BN_free(bn);
    X509_free(x);
    if (f) {
        fclose(f);
    }
    return out;
}

/* ---------------------------------------------------------------------------------------- */
/* One connection: server and client threads                                                */

struct end {
    /* in */
    struct tlsk_context *ctx;
    bool server;
    const char *servername; /* client */
    const void *session;
    size_t session_len;
    int fd;
    /* out */
    int hs; /* handshake result */
    int rc; /* first failure: handshake, then I/O; 0 when all went well */
    int authorized;
    char autherr[64];
    char sn[300];
    char alpn[256], npn[256];
    char version[16], cipher[64];
    char peer_cn[128], peer_serial[80];
    int reused;
    struct tlsk_offload off;
    unsigned char sess[8192];
    ssize_t sess_len;
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
    grab(e->alpn, sizeof e->alpn, tlsk_socket_alpn_protocol(s));
    grab(e->npn, sizeof e->npn, tlsk_socket_npn_protocol(s));
    grab(e->version, sizeof e->version, tlsk_socket_version(s));
    grab(e->cipher, sizeof e->cipher, tlsk_socket_cipher(s));
    e->reused = tlsk_socket_session_reused(s);
    e->off = tlsk_socket_offload(s);
    grab(e->peer_cn, sizeof e->peer_cn, NULL);
    grab(e->peer_serial, sizeof e->peer_serial, NULL);
    if (tlsk_socket_peer_certificate(s, 0, &ci) == 0) {
        for (size_t i = 0; i < ci->subject_count; i++) {
            if (strcmp(ci->subject[i].key, "CN") == 0) {
                grab(e->peer_cn, sizeof e->peer_cn, ci->subject[i].value);
            }
        }
        grab(e->peer_serial, sizeof e->peer_serial, ci->serial_number);
        tlsk_cert_info_free(ci);
    }
}

static void *end_main(void *arg)
{
    struct end *e = arg;
    struct tlsk_socket *s = NULL;
    struct tlsk_socket_options o = { .servername = e->servername, .session = e->session,
                                     .session_len = e->session_len };
    char b[16];
    ssize_t n;

    e->hs = e->rc = -EINVAL;
    e->sess_len = -ENOENT;
    grab(e->autherr, sizeof e->autherr, NULL);
    grab(e->sn, sizeof e->sn, NULL);
    grab(e->alpn, sizeof e->alpn, NULL);
    grab(e->npn, sizeof e->npn, NULL);
    e->rc = e->server ? tlsk_socket_new_server(&s, e->ctx, e->fd, &o)
                      : tlsk_socket_new_client(&s, e->ctx, e->fd, &o);
    if (e->rc != 0) {
        snprintf(e->detail, sizeof e->detail, "socket_new: %s", tlsk_err_name(e->rc));
        e->hs = e->rc;
        shutdown(e->fd, SHUT_RDWR);
        return NULL;
    }
    e->rc = e->hs = h_handshake(s);
    if (e->hs != 0) {
        goto out;
    }
    collect(e, s);
    if (e->server) {
        /* One byte, then wait for the client's close_notify and answer it. */
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
        e->sess_len = tlsk_socket_session(s, e->sess, sizeof e->sess);
        if ((e->rc = h_shutdown(s)) != 0) {
            goto out;
        }
        n = h_read_some(s, b, sizeof b);
        e->rc = n == 0 ? 0 : n < 0 ? (int)n : -EPROTO;
    }
out:
    if (e->rc != 0) {
        snprintf(e->detail, sizeof e->detail, "%s", tlsk_socket_error_detail(s));
        shutdown(e->fd, SHUT_RDWR); /* never leave the other end waiting */
    }
    tlsk_socket_free(s);
    return NULL;
}

/* Run one connection between sv and cl (ctx, servername, session filled in by the caller). */
static void run(struct end *sv, struct end *cl)
{
    pthread_t a, b;

    sv->server = true;
    cl->server = false;
    if (!sv->ctx || !cl->ctx || h_tcp_pair(&cl->fd, &sv->fd) != 0) {
        sv->hs = sv->rc = cl->hs = cl->rc = -EIO;
        snprintf(sv->detail, sizeof sv->detail, "setup failed (context or TCP pair)");
        snprintf(cl->detail, sizeof cl->detail, "setup failed (context or TCP pair)");
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

/* kTLS tier: a completed TLS 1.2 connection is offloaded both ways on both ends. */
static void ktls_check(const char *label, const struct end *sv, const struct end *cl)
{
    if (!h_expect_ktls() || sv->hs != 0 || cl->hs != 0 || strcmp(cl->version, "TLSv1.2") != 0) {
        return;
    }
    TAP_OK(both_kernel(&sv->off) && both_kernel(&cl->off),
           "%s: kTLS both ways (server tx %s rx %s, client tx %s rx %s)", label,
           tlsk_reason_name(sv->off.tx.reason), tlsk_reason_name(sv->off.rx.reason),
           tlsk_reason_name(cl->off.tx.reason), tlsk_reason_name(cl->off.rx.reason));
}

static bool expect_ok(const char *label, const struct end *sv, const struct end *cl)
{
    bool ok = TAP_OK(sv->rc == 0 && cl->rc == 0, "%s: connects", label);
    if (!ok) {
        diag_ends(sv, cl);
    }
    ktls_check(label, sv, cl);
    return ok;
}

/* REJECTED: the server's handshake fails (with a verify code or an alert) and the client
 * fails, in its handshake or (TLS 1.3 client certificates) on its first read, with alert. */
static void expect_rejected(const char *label, const struct end *sv, const struct end *cl,
                            int alert)
{
    if (!TAP_OK(sv->hs < 0 && cl->rc == TLSK_EALERT(alert),
                "%s: REJECTED %d (server %s, client %s)", label, alert, tlsk_err_name(sv->hs),
                tlsk_err_name(cl->rc))) {
        diag_ends(sv, cl);
    }
}

static void conn(struct tlsk_context *sctx, struct tlsk_context *cctx, const char *servername,
                 struct end *sv, struct end *cl)
{
    memset(sv, 0, sizeof *sv);
    memset(cl, 0, sizeof *cl);
    sv->ctx = sctx;
    cl->ctx = cctx;
    cl->servername = servername;
    run(sv, cl);
}

static struct end g_sv, g_cl; /* scratch for the simple cases */

/* ---------------------------------------------------------------------------------------- */
/* Verify table                                                                             */

enum { AUTHED, UNAUTHED, REJ };
struct cell {
    int kind;
    const char *err; /* UNAUTHED: authorizationError (NULL: null) */
    int alert;       /* REJ: alert; 0 = 40 (TLS 1.2) / 116 (TLS 1.3) */
};

static const char *const clients[] = { "agent1", "agent2", "agent3", "agent4", NULL };
#define NCLI 5

static const struct {
    const char *name;
    unsigned flags;
    const char *ca[2];
    bool crl;
    struct cell c[NCLI];
} rows[] = {
    { "requestCert: false", 0, { NULL, NULL }, false,
      { { UNAUTHED, NULL, 0 }, { UNAUTHED, NULL, 0 }, { UNAUTHED, NULL, 0 },
        { UNAUTHED, NULL, 0 }, { UNAUTHED, NULL, 0 } } },
    { "requestCert, !reject, ca [ca1]", TLSK_REQUEST_PEER_CERT, { "ca1-cert.pem", NULL }, false,
      { { AUTHED, NULL, 0 }, { UNAUTHED, "DEPTH_ZERO_SELF_SIGNED_CERT", 0 },
        { UNAUTHED, "UNABLE_TO_VERIFY_LEAF_SIGNATURE", 0 },
        { UNAUTHED, "UNABLE_TO_VERIFY_LEAF_SIGNATURE", 0 },
        { UNAUTHED, "NO_PEER_CERTIFICATE", 0 } } },
    { "requestCert, reject, ca [ca1]", TLSK_REQUIRE_PEER_CERT, { "ca1-cert.pem", NULL }, false,
      { { AUTHED, NULL, 0 }, { REJ, NULL, 48 }, { REJ, NULL, 48 }, { REJ, NULL, 48 },
        { REJ, NULL, 0 } } },
    { "requestCert, reject, ca [ca1, ca2]", TLSK_REQUIRE_PEER_CERT,
      { "ca1-cert.pem", "ca2-cert.pem" }, false,
      { { AUTHED, NULL, 0 }, { REJ, NULL, 48 }, { AUTHED, NULL, 0 }, { AUTHED, NULL, 0 },
        { REJ, NULL, 0 } } },
    { "requestCert, reject, ca [ca2], crl ca2-crl", TLSK_REQUIRE_PEER_CERT,
      { "ca2-cert.pem", NULL }, true,
      { { REJ, NULL, 48 }, { REJ, NULL, 48 }, { AUTHED, NULL, 0 }, { REJ, NULL, 44 },
        { REJ, NULL, 0 } } },
};

/* Check one cell: server sv, client cl finished; label names the case. */
static void check_cell(const char *label, const struct cell *c, int v, const struct end *sv,
                       const struct end *cl)
{
    switch (c->kind) {
    case AUTHED:
        if (expect_ok(label, sv, cl)) {
            TAP_OK(sv->authorized == 1 && strcmp(sv->autherr, NUL) == 0,
                   "%s: authed (authorized %d, error %s)", label, sv->authorized, sv->autherr);
        }
        break;
    case UNAUTHED:
        if (expect_ok(label, sv, cl)) {
            const char *want = c->err ? c->err : NUL;
            TAP_OK(sv->authorized == 0 && strcmp(sv->autherr, want) == 0,
                   "%s: unauthed:%s (authorized %d, error %s)", label, want, sv->authorized,
                   sv->autherr);
        }
        break;
    default:
        expect_rejected(label, sv, cl, c->alert ? c->alert : v == TLSK_TLS1_3 ? 116 : 40);
        if (c->alert) {
            /* The server refused the certificate it was sent: its own verification failed. */
            tis(sv->hs, TLSK_EVERIFY, "%s: server reports EVERIFY", label);
        } else {
            TAP_OK(sv->hs == TLSK_EVERIFY || sv->hs == TLSK_EHANDSHAKE,
                   "%s: server reports EVERIFY or EHANDSHAKE for the missing certificate (%s)",
                   label, tlsk_err_name(sv->hs));
        }
        break;
    }
}

static void verify_table(int tree, int v, size_t first_row)
{
    char *ca_pem = NULL;

    for (size_t r = first_row; r < sizeof rows / sizeof rows[0]; r++) {
        struct tlsk_context_options so = { .min_version = v, .max_version = v,
                                           .flags = rows[r].flags };
        struct tlsk_context *sctx;
        size_t l1 = 0, l2 = 0;

        hc_identity(&so, tree, "agent2");
        if (rows[r].ca[1]) {
            /* Two CAs as one in-memory PEM. */
            char *a = slurp(hc_fixture(tree, rows[r].ca[0]), &l1),
                 *b = slurp(hc_fixture(tree, rows[r].ca[1]), &l2);
            ca_pem = a && b ? malloc(l1 + l2 + 1) : NULL;
            if (ca_pem) {
                memcpy(ca_pem, a, l1);
                memcpy(ca_pem + l1, b, l2 + 1);
            }
            free(a);
            free(b);
            so.ca_pem = ca_pem;
        } else if (rows[r].ca[0]) {
            so.ca_file = hc_fixture(tree, rows[r].ca[0]);
        }
        if (rows[r].crl) {
            so.crl_file = hc_fixture(tree, "ca2-crl.pem");
        }
        sctx = hc_new(&so, rows[r].name);
        for (int c = 0; c < NCLI; c++) {
            char label[200];
            struct tlsk_context *cctx;
            struct tlsk_context_options co = { .min_version = v, .max_version = v,
                                               .flags = TLSK_VERIFY_NONE_INSECURE };
            hc_identity(&co, tree, clients[c]);
            cctx = hc_new(&co, "table client");
            snprintf(label, sizeof label, "table %s %s [%s] %s", hc_tree_name(tree), hc_vname(v),
                     rows[r].name, clients[c] ? clients[c] : "no cert");
            conn(sctx, cctx, "localhost", &g_sv, &g_cl);
            check_cell(label, &rows[r].c[c], v, &g_sv, &g_cl);
            tlsk_context_free(cctx);
        }
        tlsk_context_free(sctx);
        free(ca_pem);
        ca_pem = NULL;
    }
}

/* CA-1: no request flag with a ca list: the client is not asked.  CA-2: no ca: system store. */
static void ca_cases(void)
{
    struct tlsk_context_options so = { .ca_file = hc_fixture(T_RSA, "ca1-cert.pem"),
                                       .min_version = TLSK_TLS1_2, .max_version = TLSK_TLS1_2 };
    struct tlsk_context *sctx, *cctx = NULL;
    struct tlsk_context_options co = { .flags = TLSK_VERIFY_NONE_INSECURE };

    hc_identity(&so, T_RSA, "agent2");
    hc_identity(&co, T_RSA, "agent1");
    sctx = hc_new(&so, "CA-1");
    cctx = hc_new(&co, "agent1 client");
    conn(sctx, cctx, "localhost", &g_sv, &g_cl);
    if (expect_ok("CA-1 ca [ca1] without requestCert, agent1", &g_sv, &g_cl)) {
        TAP_OK(g_sv.authorized == 0 && strcmp(g_sv.autherr, NUL) == 0 &&
                   strcmp(g_sv.peer_cn, NUL) == 0,
               "CA-1: unauthed, error null, no peer certificate (authorized %d, error %s, "
               "peer %s)", g_sv.authorized, g_sv.autherr, g_sv.peer_cn);
    }
    tlsk_context_free(sctx);

    for (int v = TLSK_TLS1_2; v <= TLSK_TLS1_3; v++) {
        char label[100];
        struct tlsk_context_options s2 = { .flags = TLSK_REQUIRE_PEER_CERT, .min_version = v,
                                           .max_version = v };
        hc_identity(&s2, T_RSA, "agent2");
        sctx = hc_new(&s2, "CA-2");
        snprintf(label, sizeof label, "CA-2 %s requestCert, reject, ca omitted, agent1",
                 hc_vname(v));
        conn(sctx, cctx, "localhost", &g_sv, &g_cl);
        expect_rejected(label, &g_sv, &g_cl, 48);
        tlsk_context_free(sctx);
    }
    tlsk_context_free(cctx);
}

/* ---------------------------------------------------------------------------------------- */
/* key, cert, passphrase, pfx                                                                */

/* Serve with sctx; a client trusting ca1 of tree checks localhost; expect agent1 served. */
static void serves_agent1(const char *label, int tree, struct tlsk_context *sctx)
{
    struct tlsk_context *cctx = hc_client(tree, NULL, 0, 0);
    conn(sctx, cctx, "localhost", &g_sv, &g_cl);
    if (expect_ok(label, &g_sv, &g_cl)) {
        TAP_OK(g_cl.authorized == 1 && strcmp(g_cl.peer_cn, "agent1") == 0,
               "%s: client verified agent1 (authorized %d, CN %s, error %s)", label,
               g_cl.authorized, g_cl.peer_cn, g_cl.autherr);
    }
    tlsk_context_free(cctx);
}

/* K-3: with a terminal as stdin and as the controlling terminal (where OpenSSL's default
 * callback would prompt), an encrypted key without passphrase still fails at once and nothing
 * is written to the terminal.  Runs in a child so the terminal and session stay its own. */
static void no_prompt_on_tty(const struct tlsk_context_options *o)
{
    int m = posix_openpt(O_RDWR | O_NOCTTY);
    char *name = m >= 0 && grantpt(m) == 0 && unlockpt(m) == 0 ? ptsname(m) : NULL;
    char slave[256], out[256];
    pid_t pid;
    int st = 0;
    bool exited = false;
    ssize_t n;

    if (!name) {
        tap_diag("K-3 pty check not run: no pseudo-terminal here (%s)", strerror(errno));
        if (m >= 0) {
            close(m);
        }
        return;
    }
    snprintf(slave, sizeof slave, "%s", name);
    fflush(stdout);
    pid = fork();
    if (pid == 0) {
        struct tlsk_context *c = NULL;
        int fd, rc;
        setsid();
        fd = open(slave, O_RDWR); /* becomes the controlling terminal */
        if (fd < 0) {
            _exit(100);
        }
        ioctl(fd, TIOCSCTTY, 0);
        dup2(fd, 0);
        rc = tlsk_context_new(&c, o, NULL, 0);
        _exit(rc == TLSK_EPASSPHRASE ? 0 : 101);
    }
    for (long long end = now_ms() + 5000; pid > 0 && now_ms() < end;) {
        if (waitpid(pid, &st, WNOHANG) == pid) {
            exited = true;
            break;
        }
        usleep(10000);
    }
    if (pid > 0 && !exited) {
        kill(pid, SIGKILL);
        waitpid(pid, &st, 0);
    }
    TAP_OK(exited && WIFEXITED(st) && WEXITSTATUS(st) == 0,
           "K-3 without passphrase on a terminal: EPASSPHRASE at once, no prompt (exited %d, "
           "status %d)", exited, WIFEXITED(st) ? WEXITSTATUS(st) : -1);
    fcntl(m, F_SETFL, O_NONBLOCK);
    n = read(m, out, sizeof out - 1);
    out[n > 0 ? n : 0] = 0;
    TAP_OK(n <= 0, "K-3: nothing written to the terminal (%s)", n > 0 ? out : "");
    close(m);
}

static void key_cases(void)
{
    char label[160], err[512];
    struct tlsk_context *c;
    int rc;

    /* K-1 */
    for (int tree = T_RSA; tree <= T_EC; tree++) {
        size_t cl = 0, kl = 0;
        char *cert = slurp(hc_fixture(tree, "agent1-cert.pem"), &cl);
        char *key = slurp(hc_fixture(tree, "agent1-key.pem"), &kl);
        if (!TAP_OK(cert && key, "K-1 %s: fixtures readable", hc_tree_name(tree))) {
            free(cert);
            free(key);
            continue;
        }
        struct tlsk_context_options o = { .cert_pem = cert, .key_pem = key };
        c = hc_new(&o, "K-1 NUL-terminated");
        snprintf(label, sizeof label, "K-1 %s key/cert as NUL-terminated PEM", hc_tree_name(tree));
        serves_agent1(label, tree, c);
        tlsk_context_free(c);

        /* Buffer plus length: copies followed by junk that is not NUL and not PEM. */
        char *cb = malloc(cl + 16), *kb = malloc(kl + 16);
        memcpy(cb, cert, cl);
        memset(cb + cl, '#', 16);
        memcpy(kb, key, kl);
        memset(kb + kl, '#', 16);
        struct tlsk_context_options o2 = { .cert_pem = cb, .cert_pem_len = cl, .key_pem = kb,
                                           .key_pem_len = kl };
        c = hc_new(&o2, "K-1 buffer");
        snprintf(label, sizeof label, "K-1 %s key/cert as buffer and length", hc_tree_name(tree));
        serves_agent1(label, tree, c);
        tlsk_context_free(c);
        free(cb);
        free(kb);
        free(cert);
        free(key);
    }

    /* K-3 */
    {
        struct tlsk_context_options o = { .cert_file = hc_fixture(T_RSA, "agent1-cert.pem"),
                                          .key_file = hc_fixture(T_RSA, "agent1-key-enc.pem"),
                                          .passphrase = "password" };
        c = hc_new(&o, "K-3");
        TAP_OK(c != NULL, "K-3 encrypted key with passphrase: context built");
        if (c) {
            serves_agent1("K-3 encrypted key with passphrase", T_RSA, c);
        }
        tlsk_context_free(c);

        struct timespec t0, t1;
        o.passphrase = NULL;
        c = NULL;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        rc = tlsk_context_new(&c, &o, err, sizeof err);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        if (!tis(rc, TLSK_EPASSPHRASE, "K-3 encrypted key without passphrase: EPASSPHRASE")) {
            tap_diag("  %s", err);
        }
        TAP_OK(t1.tv_sec - t0.tv_sec < 3, "K-3 without passphrase fails at once (no prompt)");
        TAP_OK(c == NULL, "K-3: out-parameter untouched on failure");
        tlsk_context_free(c);
        c = NULL;

        no_prompt_on_tty(&o);

        o.passphrase = "wrong";
        rc = tlsk_context_new(&c, &o, err, sizeof err);
        if (!tis(rc, TLSK_EPASSPHRASE, "K-3 wrong passphrase: EPASSPHRASE")) {
            tap_diag("  %s", err);
        }
        tlsk_context_free(c);

        struct tlsk_context_options o3 = { .cert_file = hc_fixture(T_RSA, "agent1-cert.pem"),
                                           .key_file = hc_fixture(T_RSA, "agent1-key.pem"),
                                           .passphrase = "password" };
        c = hc_new(&o3, "K-3 passphrase with plain key");
        TAP_OK(c != NULL, "K-3 passphrase with an unencrypted key is ignored");
        if (c) {
            serves_agent1("K-3 passphrase with an unencrypted key", T_RSA, c);
        }
        tlsk_context_free(c);
    }

    /* K-4 */
    {
        size_t pl = 0;
        char *pfx = slurp(hc_fixture(T_RSA, "agent1.pfx"), &pl);
        struct tlsk_context_options o = { .pfx_file = hc_fixture(T_RSA, "agent1.pfx"),
                                          .passphrase = "sample" };
        c = hc_new(&o, "K-4 pfx file");
        TAP_OK(c != NULL, "K-4 pfx file with passphrase: context built");
        if (c) {
            serves_agent1("K-4 pfx file", T_RSA, c);
        }
        tlsk_context_free(c);
        struct tlsk_context_options ob = { .pfx = pfx, .pfx_len = pl, .passphrase = "sample" };
        c = pfx ? hc_new(&ob, "K-4 pfx bytes") : NULL;
        TAP_OK(c != NULL, "K-4 pfx bytes with passphrase: context built");
        if (c) {
            serves_agent1("K-4 pfx bytes", T_RSA, c);
        }
        tlsk_context_free(c);
        c = NULL;

        o.passphrase = "wrong";
        rc = tlsk_context_new(&c, &o, err, sizeof err);
        if (!tis(rc, TLSK_EPASSPHRASE, "K-4 pfx wrong passphrase: EPASSPHRASE")) {
            tap_diag("  %s", err);
        }
        tlsk_context_free(c);
        c = NULL;
        o.passphrase = "sample";

        struct tlsk_context_options ok = o, oc = o, oa = o;
        ok.key_file = hc_fixture(T_RSA, "agent1-key.pem");
        oc.cert_file = hc_fixture(T_RSA, "agent1-cert.pem");
        oa.ca_file = hc_fixture(T_RSA, "ca1-cert.pem");
        rc = tlsk_context_new(&c, &ok, err, sizeof err);
        tis(rc, TLSK_ECONFIG, "K-4 pfx together with key: ECONFIG");
        tlsk_context_free(c);
        c = NULL;
        rc = tlsk_context_new(&c, &oc, err, sizeof err);
        tis(rc, TLSK_ECONFIG, "K-4 pfx together with cert: ECONFIG");
        tlsk_context_free(c);
        c = NULL;
        rc = tlsk_context_new(&c, &oa, err, sizeof err);
        tis(rc, TLSK_ECONFIG, "K-4 pfx together with ca: ECONFIG");
        tlsk_context_free(c);
        c = NULL;
        free(pfx);
    }

    /* K-5: the pfx's CA certificates verify client certificates. */
    {
        struct tlsk_context_options o = { .pfx_file = hc_fixture(T_RSA, "agent1.pfx"),
                                          .passphrase = "sample",
                                          .flags = TLSK_REQUEST_PEER_CERT };
        struct tlsk_context *sctx = hc_new(&o, "K-5");
        struct tlsk_context *c1 = hc_client(T_RSA, "agent1", 0, 0),
                            *c2 = hc_client(T_RSA, "agent2", 0, 0);
        char serial[128];

        snprintf(serial, sizeof serial, "%s", cert_serial(hc_fixture(T_RSA, "agent1-cert.pem")));
        conn(sctx, c1, "localhost", &g_sv, &g_cl);
        if (expect_ok("K-5 pfx server, requestCert, client agent1", &g_sv, &g_cl)) {
            TAP_OK(g_sv.authorized == 1 && strcmp(g_sv.autherr, NUL) == 0,
                   "K-5 agent1 authorized by the pfx's CA (authorized %d, error %s)",
                   g_sv.authorized, g_sv.autherr);
            TAP_OK(strcmp(g_sv.peer_serial, serial) == 0, "K-5 peer serial %s is agent1's (%s)",
                   g_sv.peer_serial, serial);
        }
        conn(sctx, c2, "localhost", &g_sv, &g_cl);
        if (expect_ok("K-5 pfx server, requestCert, client agent2", &g_sv, &g_cl)) {
            TAP_OK(g_sv.authorized == 0 &&
                       strcmp(g_sv.autherr, "DEPTH_ZERO_SELF_SIGNED_CERT") == 0,
                   "K-5 agent2: DEPTH_ZERO_SELF_SIGNED_CERT (authorized %d, error %s)",
                   g_sv.authorized, g_sv.autherr);
        }
        tlsk_context_free(sctx);
        tlsk_context_free(c1);
        tlsk_context_free(c2);
    }
}

/* ---------------------------------------------------------------------------------------- */
/* ciphers, honorCipherOrder, groups, secure_protocol                                       */

/* Connect a server (sopt, identity agent1 of tree) and a client (copt, ca1 of tree). */
static void pair(int tree, struct tlsk_context_options sopt, struct tlsk_context_options copt,
                 const char *servername)
{
    struct tlsk_context *s, *c;
    hc_identity(&sopt, tree, "agent1");
    copt.ca_file = hc_fixture(tree, "ca1-cert.pem");
    s = hc_new(&sopt, "server");
    c = hc_new(&copt, "client");
    conn(s, c, servername, &g_sv, &g_cl);
    tlsk_context_free(s);
    tlsk_context_free(c);
}

static void cipher_cases(void)
{
    char label[200];

    /* CO-1 [both] */
    for (int tree = T_RSA; tree <= T_EC; tree++) {
        const char *k = tree == T_EC ? "ECDSA" : "RSA";
        char sl[200], cl[200], aes256[64], chacha[64];
        snprintf(sl, sizeof sl, "ECDHE-%s-AES256-GCM-SHA384:ECDHE-%s-AES128-GCM-SHA256:"
                 "ECDHE-%s-CHACHA20-POLY1305", k, k, k);
        snprintf(cl, sizeof cl, "ECDHE-%s-CHACHA20-POLY1305:ECDHE-%s-AES128-GCM-SHA256:"
                 "ECDHE-%s-AES256-GCM-SHA384", k, k, k);
        snprintf(aes256, sizeof aes256, "ECDHE-%s-AES256-GCM-SHA384", k);
        snprintf(chacha, sizeof chacha, "ECDHE-%s-CHACHA20-POLY1305", k);
        for (int honor = 0; honor <= 1; honor++) {
            const char *want = honor ? aes256 : chacha;
            pair(tree,
                 (struct tlsk_context_options){ .ciphers = sl, .min_version = TLSK_TLS1_2,
                                                .max_version = TLSK_TLS1_2,
                                                .flags = honor ? TLSK_HONOR_CIPHER_ORDER : 0 },
                 (struct tlsk_context_options){ .ciphers = cl, .min_version = TLSK_TLS1_2,
                                                .max_version = TLSK_TLS1_2 },
                 "localhost");
            snprintf(label, sizeof label, "CO-1 %s %s honorCipherOrder", hc_tree_name(tree),
                     honor ? "with" : "without");
            if (expect_ok(label, &g_sv, &g_cl)) {
                TAP_OK(strcmp(g_sv.cipher, want) == 0 && strcmp(g_cl.cipher, want) == 0,
                       "%s: %s (server %s, client %s)", label, want, g_sv.cipher, g_cl.cipher);
            }
        }
    }

    /* CO-2: TLS_ names in ciphers form the TLS 1.3 list. */
    {
        const char *sl = "TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256:"
                         "ECDHE-RSA-AES128-GCM-SHA256";
        for (int honor = 0; honor <= 1; honor++) {
            const char *want = honor ? "TLS_AES_256_GCM_SHA384" : "TLS_CHACHA20_POLY1305_SHA256";
            pair(T_RSA,
                 (struct tlsk_context_options){ .ciphers = sl,
                                                .flags = honor ? TLSK_HONOR_CIPHER_ORDER : 0 },
                 (struct tlsk_context_options){
                     .ciphersuites = "TLS_CHACHA20_POLY1305_SHA256:TLS_AES_256_GCM_SHA384",
                     .min_version = TLSK_TLS1_3, .max_version = TLSK_TLS1_3 },
                 "localhost");
            snprintf(label, sizeof label, "CO-2 TLS 1.3 %s honorCipherOrder",
                     honor ? "with" : "without");
            if (expect_ok(label, &g_sv, &g_cl)) {
                TAP_OK(strcmp(g_sv.cipher, want) == 0, "%s: %s (server %s)", label, want,
                       g_sv.cipher);
            }
        }
        /* An order the default TLS 1.3 list does not have: honored only if the list was used. */
        pair(T_RSA,
             (struct tlsk_context_options){
                 .ciphers = "TLS_CHACHA20_POLY1305_SHA256:TLS_AES_256_GCM_SHA384:"
                            "ECDHE-RSA-AES128-GCM-SHA256",
                 .flags = TLSK_HONOR_CIPHER_ORDER },
             (struct tlsk_context_options){
                 .ciphersuites = "TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256",
                 .min_version = TLSK_TLS1_3, .max_version = TLSK_TLS1_3 },
             "localhost");
        if (expect_ok("CO-2 TLS 1.3 server order CHACHA20 first, honored", &g_sv, &g_cl)) {
            TAP_OK(strcmp(g_sv.cipher, "TLS_CHACHA20_POLY1305_SHA256") == 0,
                   "CO-2 server order from ciphers: TLS_CHACHA20_POLY1305_SHA256 (server %s)",
                   g_sv.cipher);
        }
        pair(T_RSA, (struct tlsk_context_options){ .ciphers = sl },
             (struct tlsk_context_options){ .ciphersuites = "TLS_AES_128_GCM_SHA256",
                                            .min_version = TLSK_TLS1_3,
                                            .max_version = TLSK_TLS1_3 },
             "localhost");
        expect_rejected("CO-2 client offering only TLS_AES_128_GCM_SHA256", &g_sv, &g_cl, 40);
        /* The TLS 1.2 part of the same list still works. */
        pair(T_RSA, (struct tlsk_context_options){ .ciphers = sl },
             (struct tlsk_context_options){ .min_version = TLSK_TLS1_2,
                                            .max_version = TLSK_TLS1_2 },
             "localhost");
        if (expect_ok("CO-2 TLS 1.2 client against the mixed list", &g_sv, &g_cl)) {
            TAP_OK(strcmp(g_sv.cipher, "ECDHE-RSA-AES128-GCM-SHA256") == 0,
                   "CO-2 TLS 1.2 part: ECDHE-RSA-AES128-GCM-SHA256 (%s)", g_sv.cipher);
        }
    }

    /* CO-3 */
    {
        const char *sl = "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-RSA-AES128-GCM-SHA256:"
                         "ECDHE-RSA-CHACHA20-POLY1305";
        const char *one[] = { "ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-RSA-CHACHA20-POLY1305" };
        for (int honor = 0; honor <= 1; honor++) {
            for (size_t i = 0; i < 2; i++) {
                pair(T_RSA,
                     (struct tlsk_context_options){
                         .ciphers = sl, .flags = honor ? TLSK_HONOR_CIPHER_ORDER : 0 },
                     (struct tlsk_context_options){ .ciphers = one[i],
                                                    .min_version = TLSK_TLS1_2,
                                                    .max_version = TLSK_TLS1_2 },
                     "localhost");
                snprintf(label, sizeof label, "CO-3 client offering only %s (%s honor)", one[i],
                         honor ? "with" : "without");
                if (expect_ok(label, &g_sv, &g_cl)) {
                    TAP_OK(strcmp(g_sv.cipher, one[i]) == 0, "%s: gets it (%s)", label,
                           g_sv.cipher);
                }
            }
        }
        pair(T_RSA, (struct tlsk_context_options){ .ciphers = sl },
             (struct tlsk_context_options){ .ciphers = "ECDHE-RSA-AES128-SHA256",
                                            .min_version = TLSK_TLS1_2,
                                            .max_version = TLSK_TLS1_2 },
             "localhost");
        expect_rejected("CO-3 client offering no listed suite", &g_sv, &g_cl, 40);
    }

    /* CO-4 */
    {
        const char *bad[] = { "NOPE", "RC4-SHA" };
        for (size_t i = 0; i < 2; i++) {
            struct tlsk_context_options o = { .ciphers = bad[i] };
            struct tlsk_context *c = NULL;
            char err[512] = "";
            hc_identity(&o, T_RSA, "agent1");
            int rc = tlsk_context_new(&c, &o, err, sizeof err);
            tis(rc, TLSK_ECONFIG, "CO-4 ciphers %s: creation fails with ECONFIG (%s)", bad[i],
                   err);
            tlsk_context_free(c);
        }
    }

    /* CO-5: the default list has no CBC suites. */
    {
        const char *cbc[] = { "AES128-SHA", "ECDHE-RSA-AES128-SHA" };
        for (size_t i = 0; i < 2; i++) {
            pair(T_RSA, (struct tlsk_context_options){ 0 },
                 (struct tlsk_context_options){ .ciphers = cbc[i], .min_version = TLSK_TLS1_2,
                                                .max_version = TLSK_TLS1_2 },
                 "localhost");
            snprintf(label, sizeof label, "CO-5 default server, client -cipher %s", cbc[i]);
            expect_rejected(label, &g_sv, &g_cl, 40);
        }
        pair(T_RSA, (struct tlsk_context_options){ 0 },
             (struct tlsk_context_options){ .ciphers = "ECDHE-RSA-AES128-GCM-SHA256",
                                            .min_version = TLSK_TLS1_2,
                                            .max_version = TLSK_TLS1_2 },
             "localhost");
        expect_ok("CO-5 default server, client -cipher ECDHE-RSA-AES128-GCM-SHA256", &g_sv,
                  &g_cl);
    }
}

static void group_cases(void)
{
    static const struct {
        const char *server;
        const char *client;
        bool ok;
    } g[] = {
        { "prime256v1", "P-256", true },  { "prime256v1", "P-384", false },
        { "prime256v1", "X25519", false }, { "secp384r1", "P-384", true },
        { "secp384r1", "P-256", false },   { "secp384r1", "X25519", false },
        { "X25519:P-256", "X25519", true }, { "X25519:P-256", "P-256", true },
        { "X25519:P-256", "P-384", false },
    };
    char label[200];

    for (int v = TLSK_TLS1_2; v <= TLSK_TLS1_3; v++) {
        for (size_t i = 0; i < sizeof g / sizeof g[0]; i++) {
            pair(T_RSA, (struct tlsk_context_options){ .groups = g[i].server },
                 (struct tlsk_context_options){ .groups = g[i].client, .min_version = v,
                                                .max_version = v },
                 "localhost");
            snprintf(label, sizeof label, "EC-%d %s server groups %s, client %s",
                     strcmp(g[i].server, "prime256v1") == 0 ? 1 : 2, hc_vname(v), g[i].server,
                     g[i].client);
            if (g[i].ok) {
                expect_ok(label, &g_sv, &g_cl);
            } else {
                expect_rejected(label, &g_sv, &g_cl, 40);
            }
        }
    }
    {
        struct tlsk_context_options o = { .groups = "nosuchcurve" };
        struct tlsk_context *c = NULL;
        char err[512] = "";
        hc_identity(&o, T_RSA, "agent1");
        int rc = tlsk_context_new(&c, &o, err, sizeof err);
        tis(rc, TLSK_ECONFIG, "EC-5 unknown curve: creation fails with ECONFIG (%s)", err);
        tlsk_context_free(c);
    }
}

static void protocol_cases(void)
{
    static const char *const v12[] = { "TLSv1_2_method", "TLSv1_2_server_method",
                                       "TLSv1_2_client_method" };
    static const char *const any[] = { "TLS_method", "TLS_server_method", "SSLv23_method",
                                       "SSLv23_server_method" };
    static const char *const old[] = { "SSLv2_method", "SSLv3_method", "TLSv1_method",
                                       "TLSv1_1_method", "SSLv3_server_method",
                                       "TLSv1_server_method", "TLSv1_1_client_method" };
    char label[200];

    /* SP-1 */
    for (size_t i = 0; i < sizeof v12 / sizeof v12[0]; i++) {
        struct tlsk_context_options so = { .secure_protocol = v12[i] };
        if (i == 0) {
            so.max_version = TLSK_TLS1_3; /* overridden by secure_protocol */
        }
        pair(T_RSA, so,
             (struct tlsk_context_options){ .min_version = TLSK_TLS1_3,
                                            .max_version = TLSK_TLS1_3 },
             "localhost");
        snprintf(label, sizeof label, "SP-1 %s: TLS 1.3-only client", v12[i]);
        expect_rejected(label, &g_sv, &g_cl, 70);
        pair(T_RSA, so, (struct tlsk_context_options){ 0 }, "localhost");
        snprintf(label, sizeof label, "SP-1 %s: default client", v12[i]);
        if (expect_ok(label, &g_sv, &g_cl)) {
            TAP_OK(strcmp(g_sv.version, "TLSv1.2") == 0, "%s: TLSv1.2 (%s)", label, g_sv.version);
        }
    }
    /* SP-2 */
    for (size_t i = 0; i < sizeof any / sizeof any[0]; i++) {
        for (int v = TLSK_TLS1_2; v <= TLSK_TLS1_3; v++) {
            pair(T_RSA, (struct tlsk_context_options){ .secure_protocol = any[i] },
                 (struct tlsk_context_options){ .min_version = v, .max_version = v },
                 "localhost");
            snprintf(label, sizeof label, "SP-2 %s: TLS %s client", any[i], hc_vname(v));
            if (expect_ok(label, &g_sv, &g_cl)) {
                TAP_OK(strcmp(g_sv.version, v == TLSK_TLS1_3 ? "TLSv1.3" : "TLSv1.2") == 0,
                       "%s: %s", label, g_sv.version);
            }
        }
    }
    /* SP-3 */
    for (size_t i = 0; i < sizeof old / sizeof old[0]; i++) {
        struct tlsk_context_options o = { .secure_protocol = old[i] };
        struct tlsk_context *c = NULL;
        char err[512] = "";
        hc_identity(&o, T_RSA, "agent1");
        int rc = tlsk_context_new(&c, &o, err, sizeof err);
        if (!tis(rc, TLSK_EUNSUPPORTED_PROTOCOL, "SP-3 %s: EUNSUPPORTED_PROTOCOL", old[i])) {
            tap_diag("  %s", err);
        }
        TAP_OK(strstr(err, "1.2") != NULL, "SP-3 %s: the detail names the TLS 1.2 minimum (%s)",
               old[i], err);
        tlsk_context_free(c);
    }
    {
        struct tlsk_context_options o = { .secure_protocol = "Bogus_method" };
        struct tlsk_context *c = NULL;
        char err[512] = "";
        hc_identity(&o, T_RSA, "agent1");
        int rc = tlsk_context_new(&c, &o, err, sizeof err);
        TAP_OK(rc < 0 && rc != TLSK_EUNSUPPORTED_PROTOCOL,
               "SP-3 unknown method name: creation fails (%s: %s)", tlsk_err_name(rc), err);
        tlsk_context_free(c);
    }
}

/* ---------------------------------------------------------------------------------------- */
/* connect options                                                                          */

static void connect_cases(void)
{
    struct tlsk_context *agent1 = hc_server(T_RSA, "agent1", 0, NULL, 0);
    struct tlsk_context *agent2 = hc_server(T_RSA, "agent2", 0, NULL, 0);
    struct tlsk_context *snia = hc_server(T_RSA, "sni-a", 0, NULL, 0);
    struct tlsk_context *ca1 = hc_client(T_RSA, NULL, 0, 0);
    struct tlsk_context *ca1_insecure = hc_client(T_RSA, NULL, 0, TLSK_VERIFY_NONE_INSECURE);
    struct tlsk_context_options so = { 0 }, si = { .flags = TLSK_VERIFY_NONE_INSECURE };
    struct tlsk_context *sys = hc_new(&so, "system store client");
    struct tlsk_context *sys_insecure = hc_new(&si, "system store insecure client");

    /* CN-2 */
    for (int v = TLSK_TLS1_2; v <= TLSK_TLS1_3; v++) {
        struct tlsk_context *c = hc_client(T_RSA, NULL, v, 0);
        char label[100];
        snprintf(label, sizeof label, "CN-2 %s servername 127.0.0.1 against agent1", hc_vname(v));
        conn(agent1, c, "127.0.0.1", &g_sv, &g_cl);
        if (expect_ok(label, &g_sv, &g_cl)) {
            TAP_OK(g_cl.authorized == 1 && strcmp(g_cl.autherr, NUL) == 0,
                   "%s: authorized by the IP SAN (%d, %s)", label, g_cl.authorized, g_cl.autherr);
            TAP_OK(strcmp(g_sv.sn, NUL) == 0, "%s: no SNI sent, server servername null (%s)",
                   label, g_sv.sn);
        }
        tlsk_context_free(c);
    }
    conn(snia, ca1_insecure, "127.0.0.1", &g_sv, &g_cl);
    if (expect_ok("CN-2 127.0.0.1 against sni-a, insecure client", &g_sv, &g_cl)) {
        TAP_OK(g_cl.authorized == 0 && strcmp(g_cl.autherr, "IP_ADDRESS_MISMATCH") == 0,
               "CN-2 sni-a: IP_ADDRESS_MISMATCH (authorized %d, %s)", g_cl.authorized,
               g_cl.autherr);
    }
    conn(snia, ca1, "127.0.0.1", &g_sv, &g_cl);
    tis(g_cl.rc, TLSK_EVERIFY, "CN-2 127.0.0.1 against sni-a, default client: EVERIFY");

    /* CN-6 */
    conn(agent1, sys_insecure, "localhost", &g_sv, &g_cl);
    if (expect_ok("CN-6 ca omitted (system store), insecure client, agent1", &g_sv, &g_cl)) {
        TAP_OK(g_cl.authorized == 0 &&
                   strcmp(g_cl.autherr, "UNABLE_TO_VERIFY_LEAF_SIGNATURE") == 0,
               "CN-6: UNABLE_TO_VERIFY_LEAF_SIGNATURE (authorized %d, %s)", g_cl.authorized,
               g_cl.autherr);
    }
    conn(agent1, sys, "localhost", &g_sv, &g_cl);
    tis(g_cl.rc, TLSK_EVERIFY, "CN-6 ca omitted, default client: EVERIFY");
    conn(agent1, ca1, "localhost", &g_sv, &g_cl);
    if (expect_ok("CN-6 ca [ca1]", &g_sv, &g_cl)) {
        TAP_OK(g_cl.authorized == 1 && strcmp(g_cl.autherr, NUL) == 0,
               "CN-6 ca [ca1]: authorized, error null (%d, %s)", g_cl.authorized, g_cl.autherr);
    }

    /* CN-7 */
    for (int v = TLSK_TLS1_2; v <= TLSK_TLS1_3; v++) {
        struct tlsk_context_options co = { .min_version = v, .max_version = v };
        struct tlsk_context *c = hc_new(&co, "CN-7 client"), *ci;
        char label[160];

        snprintf(label, sizeof label, "CN-7 %s default client against agent2", hc_vname(v));
        conn(agent2, c, "localhost", &g_sv, &g_cl);
        if (!TAP_OK(g_cl.hs == TLSK_EVERIFY && g_sv.hs == TLSK_EALERT(48),
                    "%s: client EVERIFY, server ALERT_48 (client %s, server %s)", label,
                    tlsk_err_name(g_cl.hs), tlsk_err_name(g_sv.hs))) {
            diag_ends(&g_sv, &g_cl);
        }
        tlsk_context_free(c);

        c = hc_client(T_RSA, NULL, v, 0);
        snprintf(label, sizeof label, "CN-7 %s servername wrong.example, ca [ca1], agent1",
                 hc_vname(v));
        conn(agent1, c, "wrong.example", &g_sv, &g_cl);
        if (!TAP_OK(g_cl.hs == TLSK_EVERIFY && g_sv.hs == TLSK_EALERT(42),
                    "%s: client EVERIFY, server ALERT_42 (client %s, server %s)", label,
                    tlsk_err_name(g_cl.hs), tlsk_err_name(g_sv.hs))) {
            diag_ends(&g_sv, &g_cl);
        }
        tlsk_context_free(c);

        co.flags = TLSK_VERIFY_NONE_INSECURE;
        ci = hc_new(&co, "CN-7 insecure client");
        snprintf(label, sizeof label, "CN-7 %s insecure client against agent2", hc_vname(v));
        conn(agent2, ci, "localhost", &g_sv, &g_cl);
        if (expect_ok(label, &g_sv, &g_cl)) {
            TAP_OK(g_cl.authorized == 0 &&
                       strcmp(g_cl.autherr, "DEPTH_ZERO_SELF_SIGNED_CERT") == 0,
                   "%s: DEPTH_ZERO_SELF_SIGNED_CERT (authorized %d, %s)", label, g_cl.authorized,
                   g_cl.autherr);
        }
        tlsk_context_free(ci);
        c = hc_client(T_RSA, NULL, v, TLSK_VERIFY_NONE_INSECURE);
        snprintf(label, sizeof label, "CN-7 %s insecure client, wrong.example, agent1",
                 hc_vname(v));
        conn(agent1, c, "wrong.example", &g_sv, &g_cl);
        if (expect_ok(label, &g_sv, &g_cl)) {
            TAP_OK(g_cl.authorized == 0 && strcmp(g_cl.autherr, "HOSTNAME_MISMATCH") == 0,
                   "%s: HOSTNAME_MISMATCH (authorized %d, %s)", label, g_cl.authorized,
                   g_cl.autherr);
            TAP_OK(strcmp(g_sv.sn, "wrong.example") == 0, "%s: server saw SNI wrong.example (%s)",
                   label, g_sv.sn);
        }
        tlsk_context_free(c);
    }

    tlsk_context_free(agent1);
    tlsk_context_free(agent2);
    tlsk_context_free(snia);
    tlsk_context_free(ca1);
    tlsk_context_free(ca1_insecure);
    tlsk_context_free(sys);
    tlsk_context_free(sys_insecure);
}

/* ---------------------------------------------------------------------------------------- */
/* ALPN and NPN                                                                             */

static const char *const abc[] = { "a", "b", "c", NULL };
static const char *const cbe[] = { "c", "b", "e", NULL };
static const char *const xy[] = { "x", "y", NULL };
static const char *const fxy[] = { "first-priority-unsupported", "x", "y", NULL };

static void proto_pair(int v, const char *const *s_alpn, const char *const *s_npn,
                       const char *const *c_alpn, const char *const *c_npn)
{
    pair(T_RSA, (struct tlsk_context_options){ .alpn = s_alpn, .npn = s_npn },
         (struct tlsk_context_options){ .alpn = c_alpn, .npn = c_npn, .min_version = v,
                                        .max_version = v },
         "localhost");
}

static void expect_proto(const char *label, bool npn, const char *want)
{
    const char *w = want ? want : NUL;
    if (expect_ok(label, &g_sv, &g_cl)) {
        const char *s = npn ? g_sv.npn : g_sv.alpn, *c = npn ? g_cl.npn : g_cl.alpn;
        TAP_OK(strcmp(s, w) == 0 && strcmp(c, w) == 0, "%s: %s %s on both sides (server %s, "
               "client %s)", label, npn ? "npn" : "alpn", w, s, c);
    }
}

static void proto_cases(void)
{
    char label[160];

    for (int v = TLSK_TLS1_2; v <= TLSK_TLS1_3; v++) {
        snprintf(label, sizeof label, "AL-1 %s C [a,b,c]", hc_vname(v));
        proto_pair(v, abc, NULL, abc, NULL);
        expect_proto(label, false, "a");
        snprintf(label, sizeof label, "AL-1 %s C [c,b,e]", hc_vname(v));
        proto_pair(v, abc, NULL, cbe, NULL);
        expect_proto(label, false, "b");
        snprintf(label, sizeof label, "AL-1 %s client without ALPN", hc_vname(v));
        proto_pair(v, abc, NULL, NULL, NULL);
        expect_proto(label, false, NULL);
        snprintf(label, sizeof label, "AL-1 %s server without ALPN", hc_vname(v));
        proto_pair(v, NULL, NULL, abc, NULL);
        expect_proto(label, false, NULL);
        proto_pair(v, abc, NULL, xy, NULL);
        if (!TAP_OK(g_sv.hs == TLSK_ENO_APPLICATION_PROTOCOL && g_cl.hs == TLSK_EALERT(120),
                    "AL-1 %s C [x,y]: server ENO_APPLICATION_PROTOCOL, client ALERT_120 "
                    "(server %s, client %s)", hc_vname(v), tlsk_err_name(g_sv.hs),
                    tlsk_err_name(g_cl.hs))) {
            diag_ends(&g_sv, &g_cl);
        }
    }
    /* AL-2 */
    proto_pair(TLSK_TLS1_2, abc, abc, cbe, abc);
    expect_proto("AL-2 ALPN and NPN both, TLS 1.2", false, "b");
    TAP_OK(strcmp(g_sv.npn, NUL) == 0 && strcmp(g_cl.npn, NUL) == 0,
           "AL-2: ALPN wins, npn null on both sides (server %s, client %s)", g_sv.npn, g_cl.npn);

    /* NPN-1 .. NPN-4 */
    proto_pair(TLSK_TLS1_2, NULL, abc, NULL, abc);
    expect_proto("NPN-1 TLS 1.2 C [a,b,c]", true, "a");
    proto_pair(TLSK_TLS1_2, NULL, abc, NULL, cbe);
    expect_proto("NPN-2 TLS 1.2 C [c,b,e]", true, "b");
    proto_pair(TLSK_TLS1_2, NULL, abc, NULL, fxy);
    expect_proto("NPN-3 TLS 1.2 C [first-priority-unsupported,x,y]", true,
                 "first-priority-unsupported");
    proto_pair(TLSK_TLS1_2, NULL, abc, NULL, NULL);
    expect_proto("NPN-4 TLS 1.2 client without NPN", true, NULL);
    proto_pair(TLSK_TLS1_3, NULL, abc, NULL, abc);
    expect_proto("NPN-4 TLS 1.3 never negotiates NPN", true, NULL);

    /* NPN-5 (list form): empty entry, entry over 255 bytes, empty list. */
    {
        static char big[300];
        memset(big, 'z', 256);
        const char *const empty_entry[] = { "a", "", NULL };
        const char *const long_entry[] = { "a", big, NULL };
        const char *const none[] = { NULL };
        const char *const *bad[] = { empty_entry, long_entry, none };
        const char *what[] = { "an empty entry", "an entry of 256 bytes", "an empty list" };
        for (size_t i = 0; i < 3; i++) {
            for (int alpn = 0; alpn <= 1; alpn++) {
                struct tlsk_context_options o = { 0 };
                struct tlsk_context *c = NULL;
                char err[512] = "";
                hc_identity(&o, T_RSA, "agent1");
                if (alpn) {
                    o.alpn = bad[i];
                } else {
                    o.npn = bad[i];
                }
                int rc = tlsk_context_new(&c, &o, err, sizeof err);
                tis(rc, TLSK_ECONFIG, "NPN-5 %s list with %s: ECONFIG (%s)",
                       alpn ? "ALPN" : "NPN", what[i], err);
                tlsk_context_free(c);
            }
        }
        const char *const ok255[] = { big, NULL };
        memset(big, 'z', 255);
        big[255] = 0;
        struct tlsk_context_options o = { .npn = ok255, .alpn = ok255 };
        hc_identity(&o, T_RSA, "agent1");
        struct tlsk_context *c = hc_new(&o, "255-byte protocol");
        TAP_OK(c != NULL, "NPN-5 a 255-byte name is accepted");
        tlsk_context_free(c);
    }
}

/* ---------------------------------------------------------------------------------------- */
/* Sessions                                                                                  */

static void session_conn(struct tlsk_context *s, struct tlsk_context *c, const struct end *from,
                         struct end *sv, struct end *cl)
{
    memset(sv, 0, sizeof *sv);
    memset(cl, 0, sizeof *cl);
    sv->ctx = s;
    cl->ctx = c;
    cl->servername = "localhost";
    if (from && from->sess_len > 0) {
        cl->session = from->sess;
        cl->session_len = (size_t)from->sess_len;
    }
    run(sv, cl);
}

static struct end s1, c1, s2, c2, s3, c3, sd1, cd1, sd3, cd3;

/* SI-2 with shared state, so that only the session id context keeps B from resuming A's
 * sessions: (1) one external session store, session ids only (TLSK_NO_TICKETS); (2) the same
 * ticket keys, TLS 1.2 tickets.  A control server with A's context string resumes. */
static struct {
    pthread_mutex_t mu;
    int n;
    unsigned char id[16][64];
    size_t id_len[16];
    unsigned char data[16][8192];
    size_t data_len[16];
    int resumes;
} g_store = { .mu = PTHREAD_MUTEX_INITIALIZER };

static void store_new(struct tlsk_socket *s, const unsigned char *id, size_t id_len,
                      const unsigned char *data, size_t data_len, void *ud)
{
    (void)s;
    (void)ud;
    pthread_mutex_lock(&g_store.mu);
    if (g_store.n < 16 && id_len <= 64 && data_len <= 8192) {
        memcpy(g_store.id[g_store.n], id, id_len);
        g_store.id_len[g_store.n] = id_len;
        memcpy(g_store.data[g_store.n], data, data_len);
        g_store.data_len[g_store.n] = data_len;
        g_store.n++;
    }
    pthread_mutex_unlock(&g_store.mu);
}

static int store_resume(struct tlsk_socket *s, const unsigned char *id, size_t id_len, void *ud)
{
    int rc = TLSK_EINTERNAL;
    (void)ud;
    pthread_mutex_lock(&g_store.mu);
    g_store.resumes++;
    for (int i = 0; i < g_store.n; i++) {
        if (g_store.id_len[i] == id_len && memcmp(g_store.id[i], id, id_len) == 0) {
            rc = tlsk_socket_resume_answer(s, g_store.data[i], g_store.data_len[i], 0);
            pthread_mutex_unlock(&g_store.mu);
            return rc;
        }
    }
    pthread_mutex_unlock(&g_store.mu);
    return tlsk_socket_resume_answer(s, NULL, 0, 0);
}

static void si2_shared(struct tlsk_context *c)
{
    static const struct tlsk_session_store store = { .new_session = store_new,
                                                     .resume_session = store_resume };
    static const unsigned char keys[48] = "0123456789abcdef0123456789abcdef0123456789abcde";
    char label[160];

    for (int how = 0; how < 2; how++) {
        const char *hn = how ? "shared ticket keys" : "shared session store, no tickets";
        struct tlsk_context_options oa = { .session_id_context = "ctxA" },
                                    ob = { .session_id_context = "ctxB" },
                                    oa2 = { .session_id_context = "ctxA" };
        struct tlsk_context *a, *b, *a2;
        if (how) {
            oa.ticket_keys = ob.ticket_keys = oa2.ticket_keys = keys;
        } else {
            oa.session_store = ob.session_store = oa2.session_store = &store;
            oa.flags = ob.flags = oa2.flags = TLSK_NO_TICKETS;
        }
        hc_identity(&oa, T_RSA, "agent1");
        hc_identity(&ob, T_RSA, "agent1");
        hc_identity(&oa2, T_RSA, "agent1");
        a = hc_new(&oa, "SI-2 A");
        b = hc_new(&ob, "SI-2 B");
        a2 = hc_new(&oa2, "SI-2 A'");
        g_store.n = g_store.resumes = 0;
        session_conn(a, c, NULL, &s1, &c1);
        snprintf(label, sizeof label, "SI-2 %s: first connection to A", hn);
        expect_ok(label, &s1, &c1);
        if (!how) {
            TAP_OK(g_store.n == 1, "SI-2 %s: A stored its session (%d)", hn, g_store.n);
        }
        session_conn(b, c, &c1, &s2, &c2);
        snprintf(label, sizeof label, "SI-2 %s: A's session presented to B (ctxB)", hn);
        if (expect_ok(label, &s2, &c2)) {
            TAP_OK(s2.reused == 0 && c2.reused == 0, "%s: New (server %d, client %d)", label,
                   s2.reused, c2.reused);
        }
        if (!how) {
            TAP_OK(g_store.resumes >= 1, "SI-2 %s: B looked the id up in the store (%d)", hn,
                   g_store.resumes);
        }
        session_conn(a2, c, &c1, &s3, &c3);
        snprintf(label, sizeof label, "SI-2 %s: A's session presented to A' (ctxA)", hn);
        if (expect_ok(label, &s3, &c3)) {
            TAP_OK(s3.reused == 1 && c3.reused == 1, "%s: Reused (server %d, client %d)", label,
                   s3.reused, c3.reused);
        }
        tlsk_context_free(a);
        tlsk_context_free(b);
        tlsk_context_free(a2);
    }
}

static void session_cases(void)
{
    char label[160];

    /* ST-1 */
    for (int v = TLSK_TLS1_2; v <= TLSK_TLS1_3; v++) {
        struct tlsk_context_options o = { .session_timeout = 1 };
        struct tlsk_context *st, *def, *c = hc_client(T_RSA, NULL, v, 0);
        hc_identity(&o, T_RSA, "agent1");
        st = hc_new(&o, "session_timeout 1");
        def = hc_server(T_RSA, "agent1", 0, NULL, 0);

        session_conn(st, c, NULL, &s1, &c1);
        snprintf(label, sizeof label, "ST-1 %s first connection (timeout 1)", hc_vname(v));
        expect_ok(label, &s1, &c1);
        TAP_OK(c1.sess_len > 0, "ST-1 %s: client holds a session (%zd)", hc_vname(v), c1.sess_len);
        session_conn(def, c, NULL, &sd1, &cd1);
        snprintf(label, sizeof label, "ST-1 %s first connection (default timeout)", hc_vname(v));
        expect_ok(label, &sd1, &cd1);

        session_conn(st, c, &c1, &s2, &c2);
        snprintf(label, sizeof label, "ST-1 %s resume at once", hc_vname(v));
        if (expect_ok(label, &s2, &c2)) {
            TAP_OK(s2.reused == 1 && c2.reused == 1, "%s: reused (server %d, client %d)", label,
                   s2.reused, c2.reused);
        }
        usleep(2200 * 1000);
        session_conn(st, c, &c1, &s3, &c3);
        snprintf(label, sizeof label, "ST-1 %s resume after 2 s (timeout 1)", hc_vname(v));
        if (expect_ok(label, &s3, &c3)) {
            TAP_OK(s3.reused == 0 && c3.reused == 0, "%s: new session (server %d, client %d)",
                   label, s3.reused, c3.reused);
        }
        session_conn(def, c, &cd1, &sd3, &cd3);
        snprintf(label, sizeof label, "ST-1 %s resume after 2 s (default 300)", hc_vname(v));
        if (expect_ok(label, &sd3, &cd3)) {
            TAP_OK(sd3.reused == 1 && cd3.reused == 1, "%s: reused (server %d, client %d)", label,
                   sd3.reused, cd3.reused);
        }
        tlsk_context_free(st);
        tlsk_context_free(def);
        tlsk_context_free(c);
    }

    /* SI-1: requestCert without session_id_context still resumes (TLS 1.2), and the resumed
     * connection reports the full handshake's verification (A3). */
    {
        struct tlsk_context_options o = { .ca_file = hc_fixture(T_RSA, "ca1-cert.pem"),
                                          .flags = TLSK_REQUEST_PEER_CERT };
        struct tlsk_context *s, *c = hc_client(T_RSA, "agent1", TLSK_TLS1_2, 0);
        hc_identity(&o, T_RSA, "agent1");
        s = hc_new(&o, "SI-1");
        session_conn(s, c, NULL, &s1, &c1);
        expect_ok("SI-1 requestCert, agent1, first connection", &s1, &c1);
        session_conn(s, c, &c1, &s2, &c2);
        if (expect_ok("SI-1 second connection", &s2, &c2)) {
            TAP_OK(s2.reused == 1 && c2.reused == 1, "SI-1: reused (server %d, client %d)",
                   s2.reused, c2.reused);
            TAP_OK(s2.authorized == 1, "SI-1: the resumed connection reports agent1 authorized "
                   "(A3) (%d, %s)", s2.authorized, s2.autherr);
        }
        tlsk_context_free(s);
        tlsk_context_free(c);
    }

    /* SI-2 */
    {
        struct tlsk_context_options oa = { .session_id_context = "ctxA" },
                                    ob = { .session_id_context = "ctxB" },
                                    ol = { .session_id_context =
                                               "0123456789abcdef0123456789abcdefX" };
        struct tlsk_context *a, *b, *c = hc_client(T_RSA, NULL, TLSK_TLS1_2, 0), *x = NULL;
        char err[512] = "";
        hc_identity(&oa, T_RSA, "agent1");
        hc_identity(&ob, T_RSA, "agent1");
        hc_identity(&ol, T_RSA, "agent1");
        a = hc_new(&oa, "SI-2 A");
        b = hc_new(&ob, "SI-2 B");
        session_conn(a, c, NULL, &s1, &c1);
        expect_ok("SI-2 TLS 1.2 first connection to A", &s1, &c1);
        session_conn(b, c, &c1, &s2, &c2);
        if (expect_ok("SI-2 A's session presented to B", &s2, &c2)) {
            TAP_OK(s2.reused == 0 && c2.reused == 0, "SI-2 B: new (server %d, client %d)",
                   s2.reused, c2.reused);
        }
        session_conn(a, c, &c1, &s3, &c3);
        if (expect_ok("SI-2 A's session presented to A", &s3, &c3)) {
            TAP_OK(s3.reused == 1 && c3.reused == 1, "SI-2 A: reused (server %d, client %d)",
                   s3.reused, c3.reused);
        }
        si2_shared(c);
        int rc = tlsk_context_new(&x, &ol, err, sizeof err);
        tis(rc, TLSK_ECONFIG, "SI-2 session_id_context of 33 bytes: ECONFIG");
        tlsk_context_free(x);
        ol.session_id_context = "0123456789abcdef0123456789abcdef";
        x = hc_new(&ol, "32-byte sid ctx");
        TAP_OK(x != NULL, "SI-2 session_id_context of 32 bytes accepted");
        tlsk_context_free(x);
        tlsk_context_free(a);
        tlsk_context_free(b);
        tlsk_context_free(c);
    }
}

static void on_alarm(int sig)
{
    static const char msg[] = "Bail out! test_options: timed out\n";
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
    alarm(h_expect_ktls() ? 1500 : 600);
    if (h_expect_ktls() && !TAP_OK(tlsk_kernel_probe()->ulp, "kTLS kernel present")) {
        return tap_done();
    }
    for (int v = TLSK_TLS1_2; v <= TLSK_TLS1_3; v++) {
        verify_table(T_RSA, v, 0);
        verify_table(T_EC, v, 1);
    }
    ca_cases();
    key_cases();
    cipher_cases();
    group_cases();
    protocol_cases();
    connect_cases();
    proto_cases();
    session_cases();
    return tap_done();
}
