/*
 * test_options_peers.c - server options of docs/NODE.md §1.2 against a real peer,
 * openssl s_client (OpenSSL 3.0), with a tlsk server in a thread:
 *
 *   - the verify table, rows 2 (requestCert, !reject, ca [ca1]) and 5 (requestCert, reject,
 *     ca [ca2], crl ca2-crl), clients agent1..agent4 and none, TLS 1.2 and 1.3: the server's
 *     authorized/authorizationError, or REJECTED with the alert s_client prints;
 *   - ALPN (AL-1: server preference, no overlap -> no_application_protocol);
 *   - NPN over TLS 1.2 (NPN-2, NPN-3);
 *   - SNI table: the subject s_client receives for exact, wildcard, upper-case and no SNI;
 *   - SP-4: a TLS 1.1 peer gets protocol_version (70);
 *   - CO-1 with -cipher: the client's order, or the server's with honorCipherOrder.
 *
 * Runs in both tiers; with TLSK_EXPECT_KTLS=1 the server must have put every completed TLS 1.2
 * connection in the kernel both ways.  Every child is bounded (deadlines, SIGKILL, an alarm).
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "tap.h"

#define NUL "<null>"

static long long now_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long long)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

static const char *vname(int v)
{
    return v == TLSK_TLS1_3 ? "1.3" : "1.2";
}

static struct tlsk_context *mk(const struct tlsk_context_options *o, const char *what)
{
    struct tlsk_context *c = NULL;
    char err[512] = "";
    int rc = tlsk_context_new(&c, o, err, sizeof err);
    if (rc != 0) {
        tap_diag("context %s: %s: %s", what, tlsk_err_name(rc), err);
        return NULL;
    }
    return c;
}

/* Fixture path (a ring of 64 buffers: paths stay valid for a while, unlike h_fixture's 4). */
static const char *fx(const char *name)
{
    static _Thread_local char path[64][512];
    static _Thread_local int slot;
    const char *dir = getenv("TLSK_FIXTURES");
    char *p = path[slot++ & 63];

    snprintf(p, 512, "%s/%s", dir ? dir : "build/fixtures/rsa", name);
    return p;
}

static void ident(struct tlsk_context_options *o, const char *id)
{
    char c[64], k[64];
    snprintf(c, sizeof c, "%s-cert.pem", id);
    snprintf(k, sizeof k, "%s-key.pem", id);
    o->cert_file = fx(c);
    o->key_file = fx(k);
}

/* ---------------------------------------------------------------------------------------- */
/* The s_client child                                                                       */

static volatile sig_atomic_t g_kid;

static void on_alarm(int sig)
{
    static const char msg[] = "Bail out! test_options_peers: timed out; child killed\n";
    (void)sig;
    if (g_kid > 0) {
        kill((pid_t)g_kid, SIGKILL);
        waitpid((pid_t)g_kid, NULL, 0);
    }
    if (write(STDOUT_FILENO, msg, sizeof msg - 1) < 0) {
        /* nothing */
    }
    _exit(1);
}

struct kid {
    pid_t pid;
    int in;  /* write end of its stdin */
    int log; /* its stdout and stderr */
    int status;
    bool done;
};

static int kid_start(struct kid *k, const char *const *argv)
{
    char path[] = "/tmp/tlsk-opt-peer-XXXXXX";
    int p[2];

    memset(k, 0, sizeof *k);
    k->pid = -1;
    k->in = -1;
    if ((k->log = mkostemp(path, O_CLOEXEC)) < 0) {
        return -errno;
    }
    unlink(path);
    if (pipe2(p, O_CLOEXEC) != 0) {
        close(k->log);
        return -errno;
    }
    k->pid = fork();
    if (k->pid < 0) {
        close(p[0]);
        close(p[1]);
        close(k->log);
        return -errno;
    }
    if (k->pid == 0) {
        sigset_t all;
        signal(SIGPIPE, SIG_DFL);
        sigemptyset(&all);
        sigprocmask(SIG_SETMASK, &all, NULL);
        if (dup2(p[0], 0) < 0 || dup2(k->log, 1) < 0 || dup2(k->log, 2) < 0) {
            _exit(126);
        }
        execvp(argv[0], (char *const *)argv);
        _exit(127);
    }
    g_kid = k->pid;
    close(p[0]);
    k->in = p[1];
    return 0;
}

/* Wait up to ms for the child to exit (SIGKILL after that when kill_it).  True if it did. */
static bool kid_wait(struct kid *k, int ms, bool kill_it)
{
    long long end = now_ms() + ms;
    int st;
    while (!k->done) {
        if (waitpid(k->pid, &st, WNOHANG) == k->pid) {
            k->done = true;
            k->status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
            g_kid = 0;
            break;
        }
        if (now_ms() > end) {
            if (!kill_it) {
                return false;
            }
            kill(k->pid, SIGKILL);
            waitpid(k->pid, &st, 0);
            k->done = true;
            k->status = -ETIMEDOUT;
            g_kid = 0;
            break;
        }
        usleep(10000);
    }
    return true;
}

static char *kid_log(const struct kid *k)
{
    struct stat st;
    size_t len = 0;
    char *s;

    if (fstat(k->log, &st) == 0) {
        len = (size_t)st.st_size;
    }
    s = malloc(len + 1);
    if (!s) {
        return NULL;
    }
    if (len && pread(k->log, s, len, 0) != (ssize_t)len) {
        len = 0;
    }
    s[len] = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] == 0) {
            s[i] = ' ';
        }
    }
    return s;
}

static bool log_has(const struct kid *k, const char *needle)
{
    char *s = kid_log(k);
    bool r = s && strstr(s, needle) != NULL;
    free(s);
    return r;
}

static void kid_diag(const struct kid *k)
{
    char *s = kid_log(k);
    if (!s) {
        return;
    }
    size_t len = strlen(s);
    char *p = len > 1800 ? s + len - 1800 : s;
    tap_diag("  --- s_client (status %d) log tail:", k->status);
    for (char *line = p, *e; line && *line; line = e ? e + 1 : NULL) {
        e = strchr(line, '\n');
        if (e) {
            *e = 0;
        }
        tap_diag("  | %s", line);
    }
    free(s);
}

static void kid_free(struct kid *k)
{
    if (k->in >= 0) {
        close(k->in);
    }
    if (k->pid > 0 && !k->done) {
        kid_wait(k, 0, true);
    }
    if (k->log >= 0) {
        close(k->log);
    }
}

/* ---------------------------------------------------------------------------------------- */
/* The tlsk server: one connection                                                          */

#define HELLO "hello from tlsk"

struct srv {
    struct tlsk_context *ctx;
    const struct tlsk_sni *sni;
    int lfd;
    volatile int hs_done;
    int hs, rc;
    int authorized;
    char autherr[64], sn[300], alpn[256], npn[256], cipher[64], version[16];
    struct tlsk_offload off;
    char detail[300];
};

static void grab(char *dst, size_t n, const char *src)
{
    snprintf(dst, n, "%s", src ? src : NUL);
}

static void *srv_main(void *arg)
{
    struct srv *d = arg;
    struct pollfd p = { .fd = d->lfd, .events = POLLIN };
    struct tlsk_socket_options o = { .sni = d->sni };
    struct tlsk_socket *s = NULL;
    char buf[4096];
    int fd;

    d->hs = d->rc = -ETIMEDOUT;
    grab(d->autherr, sizeof d->autherr, NULL);
    grab(d->sn, sizeof d->sn, NULL);
    grab(d->alpn, sizeof d->alpn, NULL);
    grab(d->npn, sizeof d->npn, NULL);
    grab(d->cipher, sizeof d->cipher, NULL);
    grab(d->version, sizeof d->version, NULL);
    if (poll(&p, 1, 20000) != 1 || (fd = accept4(d->lfd, NULL, NULL, SOCK_CLOEXEC)) < 0) {
        snprintf(d->detail, sizeof d->detail, "no connection within 20 s");
        d->hs_done = 1;
        return NULL;
    }
    if ((d->rc = d->hs = tlsk_socket_new_server(&s, d->ctx, fd, &o)) != 0) {
        d->hs_done = 1;
        close(fd);
        return NULL;
    }
    d->rc = d->hs = h_handshake(s);
    if (d->hs == 0) {
        d->authorized = tlsk_socket_authorized(s);
        grab(d->autherr, sizeof d->autherr, tlsk_socket_authorization_error(s));
        grab(d->sn, sizeof d->sn, tlsk_socket_servername(s));
        grab(d->alpn, sizeof d->alpn, tlsk_socket_alpn_protocol(s));
        grab(d->npn, sizeof d->npn, tlsk_socket_npn_protocol(s));
        grab(d->cipher, sizeof d->cipher, tlsk_socket_cipher(s));
        grab(d->version, sizeof d->version, tlsk_socket_version(s));
        d->off = tlsk_socket_offload(s);
    } else {
        snprintf(d->detail, sizeof d->detail, "%s", tlsk_socket_error_detail(s));
    }
    d->hs_done = 1;
    if (d->hs == 0) {
        d->rc = h_write_all(s, HELLO "\n", sizeof HELLO);
        /* Read whatever s_client sends until its close_notify (or it goes away). */
        for (ssize_t n = 1; d->rc == 0 && n > 0;) {
            n = h_read_some(s, buf, sizeof buf);
            if (n < 0) {
                d->rc = (int)n;
            }
        }
        if (d->rc == 0) {
            d->rc = h_shutdown(s);
        }
        if (d->rc != 0) {
            snprintf(d->detail, sizeof d->detail, "after the handshake: %s: %s",
                     tlsk_err_name(d->rc), tlsk_socket_error_detail(s));
        }
    }
    tlsk_socket_free(s);
    close(fd);
    return NULL;
}

/* Run s_client with extra args against a tlsk server with sctx (and table sni). */
static bool session(const char *tn, struct tlsk_context *sctx, const struct tlsk_sni *sni,
                    const char *const *extra, struct srv *d, struct kid *k)
{
    const char *argv[40];
    char portarg[64];
    int i = 0, port = 0;
    pthread_t th;

    memset(d, 0, sizeof *d);
    d->ctx = sctx;
    d->sni = sni;
    k->pid = -1;
    k->in = k->log = -1;
    if (!sctx || (d->lfd = h_listen(&port)) < 0) {
        TAP_OK(0, "%s: setup (context, listen)", tn);
        return false;
    }
    snprintf(portarg, sizeof portarg, "127.0.0.1:%d", port);
    argv[i++] = "openssl";
    argv[i++] = "s_client";
    argv[i++] = "-connect";
    argv[i++] = portarg;
    argv[i++] = "-CAfile";
    argv[i++] = fx("ca1-cert.pem");
    while (extra && *extra && i < 38) {
        argv[i++] = *extra++;
    }
    argv[i] = NULL;
    h_spawn(&th, srv_main, d);
    if (kid_start(k, argv) != 0) {
        TAP_OK(0, "%s: start openssl s_client", tn);
        close(d->lfd);
        pthread_join(th, NULL);
        return false;
    }
    /* Until the server's handshake is over (bounded by its own 20 s waits). */
    for (long long end = now_ms() + 30000; !d->hs_done && now_ms() < end;) {
        usleep(10000);
    }
    if (d->hs_done && d->hs == 0) {
        /* s_client prints what it received: then let it go with EOF on stdin. */
        for (long long end = now_ms() + 10000; !log_has(k, HELLO) && now_ms() < end;) {
            if (kid_wait(k, 0, false)) {
                break;
            }
            usleep(20000);
        }
    } else {
        /* Rejected: s_client reads the alert (after its own handshake in TLS 1.3) and exits. */
        kid_wait(k, 5000, false);
    }
    close(k->in);
    k->in = -1;
    kid_wait(k, 15000, true);
    pthread_join(th, NULL);
    close(d->lfd);
    return true;
}

static void ktls_check(const char *tn, const struct srv *d)
{
    if (h_expect_ktls() && d->hs == 0 && strcmp(d->version, "TLSv1.2") == 0) {
        TAP_OK(d->off.tx.mode == TLSK_MODE_KERNEL && d->off.rx.mode == TLSK_MODE_KERNEL,
               "%s: server in kTLS both ways (tx %s, rx %s)", tn,
               tlsk_reason_name(d->off.tx.reason), tlsk_reason_name(d->off.rx.reason));
    }
}

/* The connection completed on both ends. */
static bool expect_ok(const char *tn, const struct srv *d, const struct kid *k)
{
    bool ok = TAP_OK(d->hs == 0 && d->rc == 0 && log_has(k, HELLO),
                     "%s: connects (server %s/%s, s_client got the data)", tn,
                     tlsk_err_name(d->hs), tlsk_err_name(d->rc));
    if (!ok) {
        tap_diag("  server: %s", d->detail);
        kid_diag(k);
    }
    ktls_check(tn, d);
    return ok;
}

/* REJECTED with alert n: the server fails the handshake and s_client prints the alert. */
static void expect_rejected(const char *tn, const struct srv *d, const struct kid *k, int alert,
                            const char *text)
{
    char num[64];
    snprintf(num, sizeof num, "SSL alert number %d", alert);
    if (!TAP_OK(d->hs < 0 && log_has(k, num) && log_has(k, text) && !log_has(k, HELLO),
                "%s: REJECTED %d: server %s, s_client prints \"%s\"", tn, alert,
                tlsk_err_name(d->hs), text)) {
        tap_diag("  server: %s", d->detail);
        kid_diag(k);
    }
}

/* ---------------------------------------------------------------------------------------- */
/* Scenarios                                                                                */

static void verify_rows(void)
{
    static const char *const ids[] = { "agent1", "agent2", "agent3", "agent4", NULL };
    static const char *const row2[] = { NULL, "DEPTH_ZERO_SELF_SIGNED_CERT",
                                        "UNABLE_TO_VERIFY_LEAF_SIGNATURE",
                                        "UNABLE_TO_VERIFY_LEAF_SIGNATURE", "NO_PEER_CERTIFICATE" };
    static const int row5[] = { 48, 48, 0, 44, -1 };
    struct srv d;
    struct kid k;
    char tn[200];

    for (int v = TLSK_TLS1_2; v <= TLSK_TLS1_3; v++) {
        for (int row = 2; row <= 5; row += 3) {
            struct tlsk_context_options o = { .flags = row == 2 ? TLSK_REQUEST_PEER_CERT
                                                                : TLSK_REQUIRE_PEER_CERT,
                                              .ca_file = fx(row == 2 ? "ca1-cert.pem"
                                                                            : "ca2-cert.pem") };
            struct tlsk_context *s;
            ident(&o, "agent2");
            if (row == 5) {
                o.crl_file = fx("ca2-crl.pem");
            }
            s = mk(&o, "verify row");
            for (int c = 0; c < 5; c++) {
                const char *extra[8];
                char cert[64], key[64];
                int n = 0;
                extra[n++] = v == TLSK_TLS1_3 ? "-tls1_3" : "-tls1_2";
                if (ids[c]) {
                    snprintf(cert, sizeof cert, "%s-cert.pem", ids[c]);
                    snprintf(key, sizeof key, "%s-key.pem", ids[c]);
                    extra[n++] = "-cert";
                    extra[n++] = fx(cert);
                    extra[n++] = "-key";
                    extra[n++] = fx(key);
                }
                extra[n] = NULL;
                snprintf(tn, sizeof tn, "table row %d %s s_client %s", row, vname(v),
                         ids[c] ? ids[c] : "without cert");
                if (!session(tn, s, NULL, extra, &d, &k)) {
                    kid_free(&k);
                    continue;
                }
                if (row == 2 || row5[c] == 0) {
                    const char *want = row == 2 ? row2[c] : NULL;
                    if (expect_ok(tn, &d, &k)) {
                        TAP_OK(d.authorized == (want == NULL) &&
                                   strcmp(d.autherr, want ? want : NUL) == 0,
                               "%s: %s (authorized %d, error %s)", tn,
                               want ? want : "authed", d.authorized, d.autherr);
                    }
                } else if (row5[c] == 48) {
                    expect_rejected(tn, &d, &k, 48, "alert unknown ca");
                } else if (row5[c] == 44) {
                    expect_rejected(tn, &d, &k, 44, "alert certificate revoked");
                } else if (v == TLSK_TLS1_3) {
                    expect_rejected(tn, &d, &k, 116, "certificate required");
                } else {
                    expect_rejected(tn, &d, &k, 40, "alert handshake failure");
                }
                kid_free(&k);
            }
            tlsk_context_free(s);
        }
    }
}

static void alpn_npn(void)
{
    static const char *const abc[] = { "a", "b", "c", NULL };
    static const char *const web[] = { "http/1.1", "h2", NULL };
    struct tlsk_context_options o = { .alpn = abc };
    struct tlsk_context *s;
    struct srv d;
    struct kid k;
    char tn[200];

    ident(&o, "agent1");
    s = mk(&o, "ALPN abc");
    for (int v = TLSK_TLS1_2; v <= TLSK_TLS1_3; v++) {
        const char *e1[] = { v == TLSK_TLS1_3 ? "-tls1_3" : "-tls1_2", "-alpn", "c,b,e", NULL };
        const char *e2[] = { v == TLSK_TLS1_3 ? "-tls1_3" : "-tls1_2", "-alpn", "x,y", NULL };
        snprintf(tn, sizeof tn, "AL-1 %s s_client -alpn c,b,e against [a,b,c]", vname(v));
        if (session(tn, s, NULL, e1, &d, &k) && expect_ok(tn, &d, &k)) {
            TAP_OK(log_has(&k, "ALPN protocol: b") && strcmp(d.alpn, "b") == 0,
                   "%s: \"ALPN protocol: b\", server alpn %s", tn, d.alpn);
        }
        kid_free(&k);
        snprintf(tn, sizeof tn, "AL-1 %s s_client -alpn x,y against [a,b,c]", vname(v));
        if (session(tn, s, NULL, e2, &d, &k)) {
            if (!TAP_OK(d.hs == TLSK_ENO_APPLICATION_PROTOCOL &&
                            log_has(&k, "no application protocol") &&
                            log_has(&k, "SSL alert number 120"),
                        "%s: server ENO_APPLICATION_PROTOCOL (%s), s_client prints alert no "
                        "application protocol (120)", tn, tlsk_err_name(d.hs))) {
                kid_diag(&k);
            }
        }
        kid_free(&k);
    }
    tlsk_context_free(s);

    o.alpn = web;
    s = mk(&o, "ALPN web");
    {
        const char *e[] = { "-alpn", "h2,http/1.1", NULL };
        snprintf(tn, sizeof tn, "AL-1 s_client -alpn h2,http/1.1 against [http/1.1,h2]");
        if (session(tn, s, NULL, e, &d, &k) && expect_ok(tn, &d, &k)) {
            TAP_OK(log_has(&k, "ALPN protocol: http/1.1") && strcmp(d.alpn, "http/1.1") == 0,
                   "%s: server preference, \"ALPN protocol: http/1.1\" (server %s)", tn, d.alpn);
        }
        kid_free(&k);
        const char *e2[] = { NULL };
        snprintf(tn, sizeof tn, "AL-1 s_client without -alpn");
        if (session(tn, s, NULL, e2, &d, &k) && expect_ok(tn, &d, &k)) {
            TAP_OK(log_has(&k, "No ALPN negotiated") && strcmp(d.alpn, NUL) == 0,
                   "%s: \"No ALPN negotiated\", server alpn null (%s)", tn, d.alpn);
        }
        kid_free(&k);
    }
    tlsk_context_free(s);

    /* NPN (TLS 1.2 only) */
    struct tlsk_context_options on = { .npn = abc };
    ident(&on, "agent1");
    s = mk(&on, "NPN abc");
    {
        const char *e[] = { "-tls1_2", "-nextprotoneg", "c,b,e", NULL };
        snprintf(tn, sizeof tn, "NPN-2 s_client -tls1_2 -nextprotoneg c,b,e");
        if (session(tn, s, NULL, e, &d, &k) && expect_ok(tn, &d, &k)) {
            TAP_OK(log_has(&k, "Next protocol: (1) b") && strcmp(d.npn, "b") == 0,
                   "%s: \"Next protocol: (1) b\", server npn %s", tn, d.npn);
        }
        kid_free(&k);
        const char *e2[] = { "-tls1_2", "-nextprotoneg", "x,y", NULL };
        snprintf(tn, sizeof tn, "NPN-3 s_client -tls1_2 -nextprotoneg x,y");
        if (session(tn, s, NULL, e2, &d, &k) && expect_ok(tn, &d, &k)) {
            TAP_OK(log_has(&k, "Next protocol: (2) x") && strcmp(d.npn, "x") == 0,
                   "%s: \"Next protocol: (2) x\", server npn %s", tn, d.npn);
        }
        kid_free(&k);
        const char *e3[] = { "-tls1_2", NULL };
        snprintf(tn, sizeof tn, "NPN-4 s_client -tls1_2 without -nextprotoneg");
        if (session(tn, s, NULL, e3, &d, &k) && expect_ok(tn, &d, &k)) {
            TAP_OK(!log_has(&k, "Next protocol:") && strcmp(d.npn, NUL) == 0,
                   "%s: no NPN on either side (server %s)", tn, d.npn);
        }
        kid_free(&k);
    }
    tlsk_context_free(s);
}

/* CN-8 (client side of NPN): a tlsk client with NPN [c,b,e] against openssl s_server -tls1_2
 * -nextprotoneg a,b,c -rev: 'b' negotiated, and a line comes back reversed, so both record
 * streams after the NPN handshake decrypt (kTLS tier: with the client offloaded both ways). */
static void npn_client(void)
{
    static const char *const cbe[] = { "c", "b", "e", NULL };
    struct tlsk_context_options o = { .npn = cbe, .min_version = TLSK_TLS1_2,
                                      .max_version = TLSK_TLS1_2 };
    struct tlsk_context *c;
    struct tlsk_socket *s = NULL;
    struct kid k;
    const char *argv[20];
    char acc[32], got[16];
    int i = 0, port, lfd = h_listen(&port), fd = -1, rc;
    const char *tn = "CN-8 tlsk client NPN [c,b,e] vs s_server -tls1_2 -nextprotoneg a,b,c";

    o.ca_file = fx("ca1-cert.pem");
    c = mk(&o, "NPN client");
    if (lfd >= 0) {
        close(lfd);
    }
    snprintf(acc, sizeof acc, "127.0.0.1:%d", port);
    argv[i++] = "openssl";
    argv[i++] = "s_server";
    argv[i++] = "-accept";
    argv[i++] = acc;
    argv[i++] = "-naccept";
    argv[i++] = "1";
    argv[i++] = "-tls1_2";
    argv[i++] = "-cert";
    argv[i++] = fx("agent1-cert.pem");
    argv[i++] = "-key";
    argv[i++] = fx("agent1-key.pem");
    argv[i++] = "-nextprotoneg";
    argv[i++] = "a,b,c";
    argv[i++] = "-rev";
    argv[i] = NULL;
    if (!TAP_OK(c && lfd >= 0 && kid_start(&k, argv) == 0, "%s: start s_server", tn)) {
        tlsk_context_free(c);
        return;
    }
    /* Connect, retrying while s_server starts (bounded). */
    for (long long end = now_ms() + 15000; now_ms() < end;) {
        struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                                 .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
        fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof a) == 0) {
            break;
        }
        if (fd >= 0) {
            close(fd);
            fd = -1;
        }
        if (kid_wait(&k, 0, false)) {
            break;
        }
        usleep(20000);
    }
    if (!TAP_OK(fd >= 0, "%s: connected", tn)) {
        kid_diag(&k);
        kid_free(&k);
        tlsk_context_free(c);
        return;
    }
    struct tlsk_socket_options so = { .servername = "localhost" };
    rc = tlsk_socket_new_client(&s, c, fd, &so);
    if (rc == 0) {
        rc = h_handshake(s);
    }
    if (TAP_OK(rc == 0, "%s: handshake (%s)", tn, tlsk_err_name(rc))) {
        const char *npn = tlsk_socket_npn_protocol(s);
        TAP_OK(npn && strcmp(npn, "b") == 0, "%s: npn b (%s)", tn, npn ? npn : NUL);
        if (h_expect_ktls()) {
            struct tlsk_offload off = tlsk_socket_offload(s);
            TAP_OK(off.tx.mode == TLSK_MODE_KERNEL && off.rx.mode == TLSK_MODE_KERNEL,
                   "%s: client in kTLS both ways (tx %s, rx %s)", tn,
                   tlsk_reason_name(off.tx.reason), tlsk_reason_name(off.rx.reason));
        }
        rc = h_write_all(s, "ping\n", 5);
        ssize_t n = rc ? rc : h_read_full(s, got, 5);
        if (!TAP_OK(n == 5 && memcmp(got, "gnip\n", 5) == 0,
                    "%s: s_server decrypted our line and answered it reversed (%s)", tn,
                    n < 0 ? tlsk_err_name((int)n) : "bytes")) {
            tap_diag("  client: %s", tlsk_socket_error_detail(s));
            kid_diag(&k);
        }
    } else {
        tap_diag("  client: %s", tlsk_socket_error_detail(s));
        kid_diag(&k);
    }
    h_write_all(s, "CLOSE\n", 6);
    tlsk_socket_free(s);
    close(fd);
    kid_wait(&k, 5000, true);
    kid_free(&k);
    tlsk_context_free(c);
}

static void sni(void)
{
    struct tlsk_context_options od = { 0 }, oa = { 0 }, ow = { 0 }, ox = { 0 };
    struct tlsk_context *def, *a, *w, *x;
    struct tlsk_sni *t = NULL;
    struct srv d;
    struct kid k;
    char tn[200];
    static const struct {
        const char *sni, *cn, *sent;
    } cases[] = {
        { "x.test.com", "x.test.com", "x.test.com" },
        { "b.test.com", "*.test.com", "b.test.com" },
        { "X.TEST.COM", "x.test.com", "X.TEST.COM" },
        { "a.example.com", "a.example.com", "a.example.com" },
        { "a.b.test.com", "localhost", "a.b.test.com" },
        { NULL, "localhost", NUL },
    };

    ident(&od, "sni-default");
    ident(&oa, "sni-a");
    ident(&ow, "sni-wild");
    ident(&ox, "sni-x");
    def = mk(&od, "sni-default");
    a = mk(&oa, "sni-a");
    w = mk(&ow, "sni-wild");
    x = mk(&ox, "sni-x");
    if (!TAP_OK(def && a && w && x && tlsk_sni_new(&t) == 0 &&
                    tlsk_sni_add(t, "a.example.com", a) == 0 &&
                    tlsk_sni_add(t, "*.test.com", w) == 0 && tlsk_sni_add(t, "x.test.com", x) == 0,
                "SNI table built")) {
        goto out;
    }
    for (int v = TLSK_TLS1_2; v <= TLSK_TLS1_3; v++) {
        for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
            const char *e[8];
            char subj[128], verify[128];
            int n = 0;
            e[n++] = v == TLSK_TLS1_3 ? "-tls1_3" : "-tls1_2";
            if (cases[i].sni) {
                e[n++] = "-servername";
                e[n++] = cases[i].sni;
                e[n++] = "-verify_hostname";
                e[n++] = cases[i].sni;
            } else {
                e[n++] = "-noservername";
            }
            e[n] = NULL;
            snprintf(tn, sizeof tn, "SNI %s s_client %s%s", vname(v),
                     cases[i].sni ? "-servername " : "-noservername",
                     cases[i].sni ? cases[i].sni : "");
            if (session(tn, def, t, e, &d, &k) && expect_ok(tn, &d, &k)) {
                snprintf(subj, sizeof subj, "subject=O = tlsk test, CN = %s", cases[i].cn);
                TAP_OK(log_has(&k, subj), "%s: served \"%s\"", tn, subj);
                TAP_OK(strcmp(d.sn, cases[i].sent) == 0, "%s: server servername %s (%s)", tn,
                       cases[i].sent, d.sn);
                if (cases[i].sni) {
                    bool match = strcmp(cases[i].cn, "localhost") != 0;
                    snprintf(verify, sizeof verify, "Verify return code: %s",
                             match ? "0 (ok)" : "62 (hostname mismatch)");
                    if (!TAP_OK(log_has(&k, verify), "%s: s_client \"%s\"", tn, verify)) {
                        kid_diag(&k);
                    }
                }
            }
            kid_free(&k);
        }
    }
out:
    tlsk_sni_free(t);
    tlsk_context_free(def);
    tlsk_context_free(a);
    tlsk_context_free(w);
    tlsk_context_free(x);
}

static void legacy_and_ciphers(void)
{
    struct tlsk_context_options o = { 0 };
    struct tlsk_context *s;
    struct srv d;
    struct kid k;
    char tn[200];

    /* SP-4 */
    ident(&o, "agent1");
    s = mk(&o, "default");
    {
        const char *e[] = { "-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0", NULL };
        snprintf(tn, sizeof tn, "SP-4 s_client -tls1_1 -cipher DEFAULT@SECLEVEL=0");
        if (session(tn, s, NULL, e, &d, &k)) {
            expect_rejected(tn, &d, &k, 70, "alert protocol version");
        }
        kid_free(&k);
    }
    tlsk_context_free(s);

    /* CO-1 */
    for (int honor = 0; honor <= 1; honor++) {
        struct tlsk_context_options oc = {
            .ciphers = "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-RSA-AES128-GCM-SHA256:"
                       "ECDHE-RSA-CHACHA20-POLY1305",
            .flags = honor ? TLSK_HONOR_CIPHER_ORDER : 0
        };
        const char *want = honor ? "ECDHE-RSA-AES256-GCM-SHA384" : "ECDHE-RSA-CHACHA20-POLY1305";
        const char *e[] = { "-tls1_2", "-cipher",
                            "ECDHE-RSA-CHACHA20-POLY1305:ECDHE-RSA-AES128-GCM-SHA256:"
                            "ECDHE-RSA-AES256-GCM-SHA384",
                            NULL };
        char line[128];
        ident(&oc, "agent1");
        s = mk(&oc, "CO-1");
        snprintf(tn, sizeof tn, "CO-1 s_client -tls1_2 -cipher CHACHA20:AES128:AES256, %s "
                 "honorCipherOrder", honor ? "with" : "without");
        snprintf(line, sizeof line, "Cipher is %s", want);
        if (session(tn, s, NULL, e, &d, &k) && expect_ok(tn, &d, &k)) {
            TAP_OK(log_has(&k, line) && strcmp(d.cipher, want) == 0, "%s: \"%s\" (server %s)",
                   tn, line, d.cipher);
        }
        kid_free(&k);
        tlsk_context_free(s);
    }
}

int main(void)
{
    char exe[PATH_MAX];
    signal(SIGPIPE, SIG_IGN);
    signal(SIGALRM, on_alarm);
    alarm(h_expect_ktls() ? 1200 : 400);
    if (h_expect_ktls() && !TAP_OK(tlsk_kernel_probe()->ulp, "kTLS kernel present")) {
        return tap_done();
    }
    {
        /* openssl on PATH is the peer; without it this program cannot say anything. */
        const char *path = getenv("PATH");
        bool found = false;
        for (const char *p = path ? path : "/usr/bin:/bin"; *p && !found;) {
            const char *e = strchr(p, ':');
            size_t n = e ? (size_t)(e - p) : strlen(p);
            snprintf(exe, sizeof exe, "%.*s/openssl", (int)n, p);
            found = access(exe, X_OK) == 0;
            p += n + (e ? 1 : 0);
        }
        if (!found) {
            tap_skip_all("openssl not found on PATH");
        }
    }
    verify_rows();
    alpn_npn();
    npn_client();
    sni();
    legacy_and_ciphers();
    return tap_done();
}
