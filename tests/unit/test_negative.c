/*
 * test_negative.c - bad peers and bad input on live connections.  Every case must end in a
 * named error code (never a crash, a hang or a SIGPIPE death) and must not disturb another
 * live connection: one healthy tlsk connection is held open for the whole program, its server
 * echoing in a thread of its own, and is pinged after every case and checked at the end.
 *
 * Cases, each blocking and non-blocking:
 *   - certificate verification: untrusted issuer (system store), host name mismatch, IP SAN,
 *     self-signed server, TLSK_VERIFY_NONE_INSECURE;
 *   - raw peers: garbage or HTTP instead of a ClientHello, a lone record header, an
 *     immediate close, on both sides of the handshake;
 *   - the peer closing during a 64 MiB sendfile;
 *   - TCP close without close_notify (TLSK_ETRUNCATED);
 *   - one byte flipped in flight by a relay after the handshake (TLSK_EBADRECORD), with the
 *     client's receive direction in the kernel in the kTLS tier (TLS 1.2, TLS 1.3 with
 *     TLSK_OFFLOAD_RX_TLS13) and in userspace (policy off);
 *   - argument and state errors: read of 0 bytes, write after shutdown.
 *
 * Every wait is bounded: the harness loops poll() for at most 20 s, blocking descriptors get
 * SO_RCVTIMEO/SO_SNDTIMEO, and a per-case alarm() turns any remaining hang into a bail-out
 * that names the case.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "tap.h"

#define TMO_MS 20000
#define SENDFILE_SIZE (64u << 20)

static const char *volatile current_case = "startup";

/* ---------------------------------------------------------------------------------------- */
/* Watchdog                                                                                 */

static void on_alarm(int sig)
{
    static const char head[] = "Bail out! watchdog: hang in case: ";
    const char *c = current_case;
    (void)sig;
    if (write(1, head, sizeof head - 1) < 0 || write(1, c, strlen(c)) < 0 ||
        write(1, "\n", 1) < 0) {
        /* nothing more to do */
    }
    _exit(1);
}

static void begin_case(const char *name)
{
    current_case = name;
    tap_diag("case: %s", name);
    alarm(h_expect_ktls() ? 300 : 90);
}

/* Blocking descriptors still never wait forever: a stuck recv/send returns EAGAIN after 20 s,
 * which the harness loops then turn into -ETIMEDOUT. */
static void prep_fd(int fd, bool nonblock)
{
    struct timeval tv = { .tv_sec = TMO_MS / 1000 };
    h_set_nonblock(fd, nonblock);
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

static bool named(int rc)
{
    return strcmp(tlsk_err_name(rc), "UNKNOWN") != 0;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---------------------------------------------------------------------------------------- */
/* The healthy connection: TLS 1.2 (both directions in the kernel in the kTLS tier).        */

static struct {
    struct tlsk_context *sctx, *cctx;
    struct tlsk_socket *c, *s;
    int cfd, sfd;
    pthread_t thread;
    atomic_bool stop;
    int srv_rc;
    char srv_detail[256];
    uint64_t echoed;
    uint32_t seed;
    bool up;
} healthy;

static void *healthy_server(void *arg)
{
    static unsigned char buf[65536];
    int rc;

    (void)arg;
    rc = h_handshake(healthy.s);
    while (rc == 0) {
        ssize_t n = tlsk_socket_read(healthy.s, buf, sizeof buf);
        if (n == -EAGAIN) {
            struct pollfd p = { .fd = healthy.sfd, .events = (short)tlsk_socket_events(healthy.s) };
            if (atomic_load(&healthy.stop)) {
                rc = -ECANCELED;
                break;
            }
            poll(&p, 1, 500);
            continue;
        }
        if (n == 0) {
            rc = h_shutdown(healthy.s); /* answered close_notify: the clean end */
            break;
        }
        if (n < 0) {
            rc = (int)n;
            break;
        }
        rc = h_write_all(healthy.s, buf, (size_t)n);
        healthy.echoed += (uint64_t)n;
    }
    healthy.srv_rc = rc;
    snprintf(healthy.srv_detail, sizeof healthy.srv_detail, "%s",
             tlsk_socket_error_detail(healthy.s));
    return NULL;
}

static void healthy_start(void)
{
    struct tlsk_socket_options o = { .servername = "localhost" };
    int rc;

    begin_case("healthy connection setup");
    healthy.sctx = h_server_ctx(TLSK_TLS1_2, NULL, TLSK_OFFLOAD_DEFAULT, 0);
    healthy.cctx = h_client_ctx(TLSK_TLS1_2, NULL, TLSK_OFFLOAD_DEFAULT, 0);
    if (!healthy.sctx || !healthy.cctx || h_tcp_pair(&healthy.cfd, &healthy.sfd) != 0) {
        tap_bail("healthy connection: contexts or tcp pair");
    }
    prep_fd(healthy.cfd, true);
    prep_fd(healthy.sfd, true);
    if (tlsk_socket_new_server(&healthy.s, healthy.sctx, healthy.sfd, NULL) != 0 ||
        tlsk_socket_new_client(&healthy.c, healthy.cctx, healthy.cfd, &o) != 0) {
        tap_bail("healthy connection: sockets");
    }
    h_spawn(&healthy.thread, healthy_server, NULL);
    rc = h_handshake(healthy.c);
    if (!TAP_OK(rc == 0, "healthy connection: handshake (%s)", tlsk_err_name(rc))) {
        tap_diag("  %s", tlsk_socket_error_detail(healthy.c));
        tap_bail("no healthy connection");
    }
    healthy.up = true;
    if (h_expect_ktls()) {
        struct tlsk_offload off = tlsk_socket_offload(healthy.c);
        TAP_OK(off.tx.mode == TLSK_MODE_KERNEL && off.rx.mode == TLSK_MODE_KERNEL,
               "healthy connection: client TX and RX in the kernel (%s/%s)",
               tlsk_reason_name(off.tx.reason), tlsk_reason_name(off.rx.reason));
    }
}

/* Echo len pattern bytes in 16 KiB steps (each read back before the next: no deadlock). */
static int healthy_echo(size_t len)
{
    static unsigned char out[16384], in[16384];
    uint32_t seed = ++healthy.seed;

    for (size_t off = 0; off < len;) {
        size_t n = len - off < sizeof out ? len - off : sizeof out;
        ssize_t got;
        int rc;

        h_pattern(seed, off, out, n);
        if ((rc = h_write_all(healthy.c, out, n)) != 0) {
            return rc;
        }
        got = h_read_full(healthy.c, in, n);
        if (got != (ssize_t)n) {
            return got < 0 ? (int)got : -EPIPE;
        }
        if (h_pattern_check(seed, off, in, n) >= 0) {
            return -EILSEQ;
        }
        off += n;
    }
    return 0;
}

static void healthy_ping(const char *after)
{
    int rc = healthy_echo(1000 + (healthy.seed % 7) * 1111);
    if (!TAP_OK(rc == 0, "healthy connection still echoes after: %s", after)) {
        tap_diag("  %s: %s", tlsk_err_name(rc), tlsk_socket_error_detail(healthy.c));
    }
}

static void healthy_finish(void)
{
    unsigned char buf[16];
    uint64_t before;
    ssize_t n;
    int rc;

    begin_case("healthy connection end");
    rc = healthy_echo(256 << 10);
    if (!TAP_OK(rc == 0, "healthy connection: 256 KiB echo at the end, byte-exact")) {
        tap_diag("  %s: %s", tlsk_err_name(rc), tlsk_socket_error_detail(healthy.c));
    }
    before = healthy.echoed;
    rc = h_shutdown(healthy.c);
    TAP_OK(rc == 0, "healthy connection: client close_notify (%s)", tlsk_err_name(rc));
    n = h_read_some(healthy.c, buf, sizeof buf);
    TAP_OK(n == 0, "healthy connection: server answered close_notify (%s)",
           tlsk_err_name((int)n));
    if (n != 0) {
        atomic_store(&healthy.stop, true);
    }
    pthread_join(healthy.thread, NULL);
    if (!TAP_OK(healthy.srv_rc == 0, "healthy connection: echo server ended cleanly (%s)",
                tlsk_err_name(healthy.srv_rc))) {
        tap_diag("  %s", healthy.srv_detail);
    }
    TAP_OK(before >= (256 << 10), "healthy connection: server echoed %llu bytes in all",
           (unsigned long long)before);
    tlsk_socket_free(healthy.c);
    tlsk_socket_free(healthy.s);
    close(healthy.cfd);
    close(healthy.sfd);
    tlsk_context_free(healthy.sctx);
    tlsk_context_free(healthy.cctx);
}

/* ---------------------------------------------------------------------------------------- */
/* A tlsk peer in a thread: handshake, then optionally echo.                                */

struct peer {
    bool server;
    struct tlsk_context *ctx;
    int fd;
    const char *servername;
    bool echo;
    int rc;       /* handshake */
    int echo_rc;
    int again_rc; /* a second handshake call after a failure */
    char detail[256];
    struct tlsk_offload off;
    double secs;
};

static void *peer_main(void *arg)
{
    struct peer *p = arg;
    struct tlsk_socket_options o = { .servername = p->servername };
    struct tlsk_socket *s = NULL;
    double t0 = now_s();
    char buf[8];

    p->rc = p->server ? tlsk_socket_new_server(&s, p->ctx, p->fd, NULL)
                      : tlsk_socket_new_client(&s, p->ctx, p->fd, &o);
    if (p->rc == 0) {
        p->rc = h_handshake(s);
    }
    p->secs = now_s() - t0;
    p->off = tlsk_socket_offload(s);
    snprintf(p->detail, sizeof p->detail, "%s", tlsk_socket_error_detail(s));
    if (p->rc != 0) {
        p->again_rc = s ? tlsk_socket_handshake(s) : p->rc;
        tlsk_socket_free(s);
        /* Let the other side see the end at once instead of waiting for a timeout. */
        shutdown(p->fd, SHUT_RDWR);
        return NULL;
    }
    if (p->echo) {
        if (p->server) {
            ssize_t n = h_read_full(s, buf, 5);
            p->echo_rc = n == 5 ? h_write_all(s, buf, 5) : (n < 0 ? (int)n : -EPIPE);
        } else {
            ssize_t n;
            p->echo_rc = h_write_all(s, "hello", 5);
            if (p->echo_rc == 0) {
                n = h_read_full(s, buf, 5);
                p->echo_rc = n == 5 ? (memcmp(buf, "hello", 5) ? -EILSEQ : 0)
                                    : (n < 0 ? (int)n : -EPIPE);
            }
        }
    }
    if (p->echo_rc != 0) {
        snprintf(p->detail, sizeof p->detail, "%s", tlsk_socket_error_detail(s));
    }
    tlsk_socket_free(s);
    return NULL;
}

/* Server and client in threads over a fresh TCP pair; both joined before return. */
static void run_pair(struct peer *sv, struct peer *cl, bool nonblock)
{
    pthread_t ts, tc;
    int cfd, sfd;

    if (h_tcp_pair(&cfd, &sfd) != 0) {
        tap_bail("tcp pair");
    }
    prep_fd(cfd, nonblock);
    prep_fd(sfd, nonblock);
    sv->server = true;
    sv->fd = sfd;
    cl->server = false;
    cl->fd = cfd;
    h_spawn(&ts, peer_main, sv);
    h_spawn(&tc, peer_main, cl);
    pthread_join(tc, NULL);
    pthread_join(ts, NULL);
    close(cfd);
    close(sfd);
}

static struct tlsk_context *ctx_with(const char *cert, const char *key, const char *ca,
                                     int version, unsigned flags)
{
    struct tlsk_context_options o = { 0 };
    struct tlsk_context *c = NULL;
    char err[512];

    o.cert_file = cert ? h_fixture(cert) : NULL;
    o.key_file = key ? h_fixture(key) : NULL;
    o.ca_file = ca ? h_fixture(ca) : NULL;
    o.min_version = o.max_version = version;
    o.flags = flags;
    if (tlsk_context_new(&c, &o, err, sizeof err) != 0) {
        tap_diag("context: %s", err);
        tap_bail("cannot build a context");
    }
    return c;
}

static const char *vname(int version)
{
    return version == TLSK_TLS1_2 ? "TLS1.2" : version == TLSK_TLS1_3 ? "TLS1.3" : "default";
}

static const char *mname(bool nb)
{
    return nb ? "non-blocking" : "blocking";
}

/* ---------------------------------------------------------------------------------------- */
/* Verification                                                                             */

/* The client must fail with TLSK_EVERIFY and a detail holding needle; the server with a
 * named negative code that is not -EAGAIN. */
static void verify_fail(const char *what, struct tlsk_context *sctx, struct tlsk_context *cctx,
                        const char *servername, const char *needle, bool nonblock, bool want_alert)
{
    struct peer sv = { .ctx = sctx }, cl = { .ctx = cctx, .servername = servername };
    char name[160];

    snprintf(name, sizeof name, "%s, %s", what, mname(nonblock));
    begin_case(name);
    run_pair(&sv, &cl, nonblock);
    if (!TAP_OK(cl.rc == TLSK_EVERIFY, "%s: client TLSK_EVERIFY", name)) {
        tap_diag("  got %s: %s", tlsk_err_name(cl.rc), cl.detail);
    }
    if (!TAP_OK(strstr(cl.detail, needle) != NULL, "%s: detail mentions \"%s\"", name, needle)) {
        tap_diag("  detail: \"%s\"", cl.detail);
    }
    TAP_OK(cl.again_rc == cl.rc, "%s: a second handshake call gives the same code (%s)", name,
           tlsk_err_name(cl.again_rc));
    tap_diag("  server got %s (%d): %s", tlsk_err_name(sv.rc), sv.rc, sv.detail);
    TAP_OK(sv.rc < 0 && sv.rc != -EAGAIN && sv.rc != -ETIMEDOUT && named(sv.rc),
           "%s: server fails with a named code, not -EAGAIN (%s)", name, tlsk_err_name(sv.rc));
    if (want_alert) {
        TAP_OK(TLSK_IS_ALERT(sv.rc) || sv.rc == TLSK_EHANDSHAKE,
               "%s: server sees the client's alert or a handshake failure (%s)", name,
               tlsk_err_name(sv.rc));
    }
    healthy_ping(name);
}

static void verify_ok(const char *what, struct tlsk_context *sctx, struct tlsk_context *cctx,
                      const char *servername, bool nonblock)
{
    struct peer sv = { .ctx = sctx, .echo = true },
                cl = { .ctx = cctx, .servername = servername, .echo = true };
    char name[160];

    snprintf(name, sizeof name, "%s, %s", what, mname(nonblock));
    begin_case(name);
    run_pair(&sv, &cl, nonblock);
    if (!TAP_OK(cl.rc == 0 && sv.rc == 0, "%s: handshake succeeds", name)) {
        tap_diag("  client %s: %s", tlsk_err_name(cl.rc), cl.detail);
        tap_diag("  server %s: %s", tlsk_err_name(sv.rc), sv.detail);
    } else if (!TAP_OK(cl.echo_rc == 0 && sv.echo_rc == 0, "%s: echo", name)) {
        tap_diag("  client %s, server %s: %s", tlsk_err_name(cl.echo_rc),
                 tlsk_err_name(sv.echo_rc), cl.detail);
    }
    healthy_ping(name);
}

static void test_verify(bool nb)
{
    struct tlsk_context *sctx = ctx_with("agent1-cert.pem", "agent1-key.pem", NULL, 0, 0);
    struct tlsk_context *s2ctx = ctx_with("agent2-cert.pem", "agent2-key.pem", NULL, 0, 0);
    struct tlsk_context *cctx = ctx_with(NULL, NULL, "ca1-cert.pem", 0, 0);
    struct tlsk_context *insecure = ctx_with(NULL, NULL, NULL, 0, TLSK_VERIFY_NONE_INSECURE);
    char name[96];

    for (int v = 0; v < 2; v++) {
        int version = v ? TLSK_TLS1_2 : TLSK_TLS1_3;
        struct tlsk_context *sys = ctx_with(NULL, NULL, NULL, version, 0);
        snprintf(name, sizeof name, "system trust store vs agent1 (ca1), %s", vname(version));
        verify_fail(name, sctx, sys, "localhost", "unable to get local issuer", nb, true);
        tlsk_context_free(sys);
    }
    verify_fail("ca1, servername wrong.example", sctx, cctx, "wrong.example", "hostname mismatch",
                nb, false);
    verify_ok("ca1, servername 127.0.0.1 (IP SAN)", sctx, cctx, "127.0.0.1", nb);
    verify_fail("ca1, servername 127.0.0.2 (not in the IP SAN)", sctx, cctx, "127.0.0.2",
                "IP address mismatch", nb, false);
    verify_fail("ca1 vs self-signed agent2", s2ctx, cctx, "localhost", "self-signed", nb, false);
    verify_ok("TLSK_VERIFY_NONE_INSECURE vs self-signed agent2", s2ctx, insecure, "localhost", nb);
    verify_ok("TLSK_VERIFY_NONE_INSECURE vs agent2, no servername", s2ctx, insecure, NULL, nb);
    tlsk_context_free(sctx);
    tlsk_context_free(s2ctx);
    tlsk_context_free(cctx);
    tlsk_context_free(insecure);
}

/* ---------------------------------------------------------------------------------------- */
/* Raw (non-TLS) peers                                                                      */

/* Read and drop whatever comes until EOF, an error or 5 s. */
static void drain(int fd)
{
    char buf[4096];
    double end = now_s() + 5;

    h_set_nonblock(fd, true);
    while (now_s() < end) {
        struct pollfd p = { .fd = fd, .events = POLLIN };
        ssize_t n;
        if (poll(&p, 1, 200) <= 0) {
            continue;
        }
        n = read(fd, buf, sizeof buf);
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
            return;
        }
    }
}

enum raw_kind { RAW_STARS, RAW_HTTP, RAW_HEADER_CLOSE, RAW_CLOSE };

static const char *raw_name(enum raw_kind k)
{
    switch (k) {
    case RAW_STARS:
        return "1024 '*' bytes";
    case RAW_HTTP:
        return "HTTP GET";
    case RAW_HEADER_CLOSE:
        return "5-byte handshake record header, then close";
    default:
        return "nothing (closes at once)";
    }
}

static void raw_peer_case(enum raw_kind kind, bool tlsk_is_server, bool nb)
{
    static const unsigned char header[5] = { 0x16, 0x03, 0x01, 0x00, 0xc8 };
    struct tlsk_context *ctx = tlsk_is_server
                                   ? ctx_with("agent1-cert.pem", "agent1-key.pem", NULL, 0, 0)
                                   : ctx_with(NULL, NULL, "ca1-cert.pem", 0, 0);
    struct peer p = { .ctx = ctx, .server = tlsk_is_server, .servername = "localhost" };
    char stars[1024], name[160];
    pthread_t t;
    int a, b;

    snprintf(name, sizeof name, "raw %s sends %s to a tlsk %s, %s",
             tlsk_is_server ? "client" : "server", raw_name(kind),
             tlsk_is_server ? "server" : "client", mname(nb));
    begin_case(name);
    if (h_tcp_pair(&a, &b) != 0) {
        tap_bail("tcp pair");
    }
    /* b is the tlsk side, a the raw one. */
    prep_fd(b, nb);
    p.fd = b;
    h_spawn(&t, peer_main, &p);
    if (!tlsk_is_server) {
        /* Take the ClientHello first, so that the close below is a clean FIN and not an RST
         * racing the client's write. */
        struct pollfd pf = { .fd = a, .events = POLLIN };
        TAP_OK(poll(&pf, 1, TMO_MS) == 1 && read(a, stars, sizeof stars) > 0,
               "%s: ClientHello arrives", name);
    }
    switch (kind) {
    case RAW_STARS:
        memset(stars, '*', sizeof stars);
        TAP_OK(write(a, stars, sizeof stars) == (ssize_t)sizeof stars, "%s: raw write", name);
        drain(a);
        break;
    case RAW_HTTP:
        TAP_OK(write(a, "GET / HTTP/1.0\r\n\r\n", 18) == 18, "%s: raw write", name);
        drain(a);
        break;
    case RAW_HEADER_CLOSE:
        TAP_OK(write(a, header, sizeof header) == (ssize_t)sizeof header, "%s: raw write", name);
        break;
    case RAW_CLOSE:
        break;
    }
    close(a);
    pthread_join(t, NULL);
    close(b);
    tap_diag("  tlsk %s got %s (%d) after %.2f s: %s", tlsk_is_server ? "server" : "client",
             tlsk_err_name(p.rc), p.rc, p.secs, p.detail);
    TAP_OK(p.secs < TMO_MS / 1000.0 - 1, "%s: handshake ended within %.0f s", name,
           TMO_MS / 1000.0 - 1);
    if (kind == RAW_STARS || kind == RAW_HTTP) {
        TAP_OK(p.rc == TLSK_EPROTO || TLSK_IS_ALERT(p.rc), "%s: TLSK_EPROTO or an alert code (%s)",
               name, tlsk_err_name(p.rc));
        TAP_OK(p.detail[0] != '\0', "%s: detail says why (\"%s\")", name, p.detail);
        if (kind == RAW_HTTP && tlsk_is_server) {
            TAP_OK(strstr(p.detail, "http request") != NULL,
                   "%s: detail carries OpenSSL's \"http request\"", name);
        }
    } else {
        TAP_OK(p.rc == -ECONNRESET, "%s: -ECONNRESET (%s)", name, tlsk_err_name(p.rc));
    }
    TAP_OK(p.again_rc == p.rc, "%s: the failure is sticky (%s)", name, tlsk_err_name(p.again_rc));
    tlsk_context_free(ctx);
    healthy_ping(name);
}

/* ---------------------------------------------------------------------------------------- */
/* The peer closes during a large sendfile                                                  */

struct sf_server {
    struct tlsk_context *ctx;
    int fd, file_fd;
    int rc;
    off_t sent;
    char detail[256];
    struct tlsk_offload off;
};

static void *sf_server_main(void *arg)
{
    struct sf_server *sv = arg;
    struct tlsk_socket *s = NULL;
    off_t off = 0;

    sv->rc = tlsk_socket_new_server(&s, sv->ctx, sv->fd, NULL);
    if (sv->rc == 0) {
        sv->rc = h_handshake(s);
    }
    sv->off = tlsk_socket_offload(s);
    while (sv->rc == 0 && (size_t)off < SENDFILE_SIZE) {
        ssize_t n = tlsk_socket_sendfile(s, sv->file_fd, &off, SENDFILE_SIZE - (size_t)off);
        if (n == -EAGAIN) {
            struct pollfd p = { .fd = sv->fd, .events = (short)tlsk_socket_events(s) };
            if (poll(&p, 1, TMO_MS) == 0) {
                sv->rc = -ETIMEDOUT;
            }
            continue;
        }
        if (n <= 0) {
            sv->rc = n < 0 ? (int)n : -EIO;
        }
    }
    sv->sent = off;
    snprintf(sv->detail, sizeof sv->detail, "%s", tlsk_socket_error_detail(s));
    tlsk_socket_free(s);
    shutdown(sv->fd, SHUT_RDWR);
    return NULL;
}

static void sendfile_close_case(int version, bool nb, int file_fd)
{
    struct sf_server sv = { .file_fd = file_fd };
    struct tlsk_context *cctx = h_client_ctx(version, NULL, TLSK_OFFLOAD_DEFAULT, 0);
    struct tlsk_socket_options o = { .servername = "localhost" };
    struct tlsk_socket *c = NULL;
    static unsigned char buf[65536];
    size_t got = 0, want = 1u << 20;
    int cfd = -1, sfd = -1, rc;
    bool pattern_ok = true;
    pthread_t t;
    char name[128];

    snprintf(name, sizeof name, "client closes during a 64 MiB sendfile, %s, %s", vname(version),
             mname(nb));
    begin_case(name);
    sv.ctx = h_server_ctx(version, NULL, TLSK_OFFLOAD_DEFAULT, 0);
    if (!sv.ctx || !cctx || h_tcp_pair(&cfd, &sfd) != 0) {
        tap_bail("sendfile case setup");
    }
    prep_fd(cfd, nb);
    prep_fd(sfd, nb);
    sv.fd = sfd;
    h_spawn(&t, sf_server_main, &sv);
    rc = tlsk_socket_new_client(&c, cctx, cfd, &o);
    if (rc == 0) {
        rc = h_handshake(c);
    }
    TAP_OK(rc == 0, "%s: handshake (%s)", name, tlsk_err_name(rc));
    while (rc == 0 && got < want) {
        ssize_t n = h_read_some(c, buf, sizeof buf);
        if (n <= 0) {
            rc = n < 0 ? (int)n : -EPIPE;
            break;
        }
        if (h_pattern_check(4, got, buf, (size_t)n) >= 0) {
            pattern_ok = false;
        }
        got += (size_t)n;
    }
    TAP_OK(rc == 0 && got >= want && pattern_ok, "%s: client read %zu bytes, byte-exact", name, got);
    /* Abrupt close: no close_notify, unread data in the receive queue (the kernel sends RST). */
    tlsk_socket_free(c);
    close(cfd);
    pthread_join(t, NULL);
    close(sfd);
    tap_diag("  server stopped after %lld bytes with %s: %s", (long long)sv.sent,
             tlsk_err_name(sv.rc), sv.detail);
    if (h_expect_ktls()) {
        TAP_OK(sv.off.tx.mode == TLSK_MODE_KERNEL,
               "%s: server TX in the kernel (sendfile(2) on the kTLS socket)", name);
    }
    TAP_OK((size_t)sv.sent < SENDFILE_SIZE, "%s: the server did not finish the file", name);
    TAP_OK(sv.rc == -EPIPE || sv.rc == -ECONNRESET, "%s: server sendfile loop ends with -EPIPE "
           "or -ECONNRESET (%s)", name, tlsk_err_name(sv.rc));
    tlsk_context_free(sv.ctx);
    tlsk_context_free(cctx);
    healthy_ping(name);
}

/* ---------------------------------------------------------------------------------------- */
/* TCP close without close_notify                                                           */

struct trunc_server {
    struct tlsk_context *ctx;
    int fd;
    int rc;
};

static void *trunc_server_main(void *arg)
{
    struct trunc_server *sv = arg;
    struct tlsk_socket *s = NULL;

    sv->rc = tlsk_socket_new_server(&s, sv->ctx, sv->fd, NULL);
    if (sv->rc == 0) {
        sv->rc = h_handshake(s);
    }
    if (sv->rc == 0) {
        /* Wait for the client's "k": its offload is then installed.  (A FIN that arrives
         * before TCP_ULP makes the attach fail with ENOTCONN and the client stays in
         * userspace, which would not test the kernel path.) */
        char k;
        ssize_t n = h_read_full(s, &k, 1);
        sv->rc = n == 1 ? 0 : (n < 0 ? (int)n : -EPIPE);
    }
    if (sv->rc == 0) {
        sv->rc = h_write_all(s, "bye", 3);
    }
    /* No tlsk_socket_shutdown(): the TCP connection just ends. */
    tlsk_socket_free(s);
    close(sv->fd);
    return NULL;
}

static void truncation_case(int version, unsigned flags, bool nb)
{
    struct trunc_server sv = { 0 };
    struct tlsk_context *cctx = h_client_ctx(version, NULL, TLSK_OFFLOAD_DEFAULT, flags);
    struct tlsk_socket_options o = { .servername = "localhost" };
    struct tlsk_socket *c = NULL;
    char buf[64], name[128];
    ssize_t n;
    int cfd = -1, sfd = -1, rc;
    pthread_t t;

    snprintf(name, sizeof name, "server closes TCP without close_notify, %s%s, %s",
             vname(version), flags & TLSK_OFFLOAD_RX_TLS13 ? " rx opt-in" : "", mname(nb));
    begin_case(name);
    sv.ctx = h_server_ctx(version, NULL, TLSK_OFFLOAD_DEFAULT, flags);
    if (!sv.ctx || !cctx || h_tcp_pair(&cfd, &sfd) != 0) {
        tap_bail("truncation case setup");
    }
    prep_fd(cfd, nb);
    prep_fd(sfd, nb);
    sv.fd = sfd;
    h_spawn(&t, trunc_server_main, &sv);
    rc = tlsk_socket_new_client(&c, cctx, cfd, &o);
    if (rc == 0) {
        rc = h_handshake(c);
    }
    TAP_OK(rc == 0, "%s: handshake (%s)", name, tlsk_err_name(rc));
    if (rc == 0) {
        struct tlsk_offload off = tlsk_socket_offload(c);
        /* TLS 1.3 receive goes to the kernel where it re-keys, or when opted in. */
        bool kernel_rx = version == TLSK_TLS1_2 || (flags & TLSK_OFFLOAD_RX_TLS13) ||
                         h_kernel_rekey();
        if (h_expect_ktls()) {
            TAP_OK((off.rx.mode == TLSK_MODE_KERNEL) == kernel_rx,
                   "%s: client RX %s (%s, err %s)", name,
                   kernel_rx ? "in the kernel" : "in userspace", tlsk_reason_name(off.rx.reason),
                   tlsk_err_name(off.rx.err));
        }
        rc = h_write_all(c, "k", 1);
        TAP_OK(rc == 0, "%s: client write (%s)", name, tlsk_err_name(rc));
        n = h_read_full(c, buf, 3);
        TAP_OK(n == 3 && memcmp(buf, "bye", 3) == 0, "%s: data before the close arrives", name);
        n = h_read_some(c, buf, sizeof buf);
        if (!TAP_OK(n == TLSK_ETRUNCATED, "%s: then TLSK_ETRUNCATED (%s)", name,
                    tlsk_err_name((int)n))) {
            tap_diag("  detail: %s", tlsk_socket_error_detail(c));
        }
        TAP_OK(tlsk_socket_error_detail(c)[0] != '\0', "%s: detail \"%s\"", name,
               tlsk_socket_error_detail(c));
        n = h_read_some(c, buf, sizeof buf);
        TAP_OK(n == TLSK_ETRUNCATED, "%s: again TLSK_ETRUNCATED on the next read (%s)", name,
               tlsk_err_name((int)n));
    }
    pthread_join(t, NULL);
    TAP_OK(sv.rc == 0, "%s: server wrote before closing (%s)", name, tlsk_err_name(sv.rc));
    tlsk_socket_free(c);
    close(cfd);
    tlsk_context_free(sv.ctx);
    tlsk_context_free(cctx);
    healthy_ping(name);
}

/* ---------------------------------------------------------------------------------------- */
/* A record corrupted in flight                                                             */

/* Forwards client <-> server; once armed, flips one byte in the middle of the body of the
 * next record of at least 1024 bytes from the server to the client. */
struct relay {
    int cside, sside; /* relay's ends of the two loopback pairs */
    atomic_bool armed, stop;
    atomic_int flipped;
    /* record framing of the server->client stream */
    unsigned char hdr[5];
    size_t hdr_have, body_left, body_pos, flip_pos;
    bool target;
    int records;
};

static void relay_scan(struct relay *r, unsigned char *p, size_t n)
{
    for (size_t i = 0; i < n;) {
        if (r->body_left == 0) {
            r->hdr[r->hdr_have++] = p[i++];
            if (r->hdr_have == 5) {
                size_t len = (size_t)r->hdr[3] << 8 | r->hdr[4];
                r->hdr_have = 0;
                r->body_left = len;
                r->body_pos = 0;
                r->records++;
                r->target = atomic_load(&r->armed) && !atomic_load(&r->flipped) && len >= 1024;
                r->flip_pos = len / 2;
            }
            continue;
        }
        {
            size_t k = n - i < r->body_left ? n - i : r->body_left;
            if (r->target && r->flip_pos >= r->body_pos && r->flip_pos < r->body_pos + k) {
                p[i + (r->flip_pos - r->body_pos)] ^= 0x20;
                atomic_store(&r->flipped, 1);
                r->target = false;
            }
            r->body_pos += k;
            r->body_left -= k;
            i += k;
        }
    }
}

static bool write_full(int fd, const unsigned char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR) {
            continue;
        }
        if (w <= 0) {
            return false;
        }
        p += w;
        n -= (size_t)w;
    }
    return true;
}

static void *relay_main(void *arg)
{
    struct relay *r = arg;
    static unsigned char buf[65536];
    bool open_c = true, open_s = true; /* reading from client / server still open */

    while ((open_c || open_s) && !atomic_load(&r->stop)) {
        struct pollfd p[2] = { { .fd = open_c ? r->cside : -1, .events = POLLIN },
                               { .fd = open_s ? r->sside : -1, .events = POLLIN } };
        if (poll(p, 2, 100) <= 0) {
            continue;
        }
        for (int i = 0; i < 2; i++) {
            int from = i == 0 ? r->cside : r->sside, to = i == 0 ? r->sside : r->cside;
            ssize_t n;
            if (p[i].fd < 0 || !p[i].revents) {
                continue;
            }
            n = read(from, buf, sizeof buf);
            if (n > 0 && i == 1) {
                relay_scan(r, buf, (size_t)n);
            }
            if (n <= 0 || !write_full(to, buf, (size_t)n)) {
                shutdown(to, SHUT_WR);
                if (i == 0) {
                    open_c = false;
                } else {
                    open_s = false;
                }
            }
        }
    }
    return NULL;
}

struct bad_server {
    struct tlsk_context *ctx;
    int fd;
    int rc, end_rc;
    char detail[256];
};

static void *bad_server_main(void *arg)
{
    struct bad_server *sv = arg;
    struct tlsk_socket *s = NULL;
    unsigned char buf[65536];
    ssize_t n;

    sv->rc = tlsk_socket_new_server(&s, sv->ctx, sv->fd, NULL);
    if (sv->rc == 0) {
        sv->rc = h_handshake(s);
    }
    /* Echo "ping", then on "G" send 64 KiB: the relay is armed in between. */
    if (sv->rc == 0) {
        n = h_read_full(s, buf, 4);
        sv->rc = n == 4 ? h_write_all(s, buf, 4) : (n < 0 ? (int)n : -EPIPE);
    }
    if (sv->rc == 0) {
        n = h_read_full(s, buf, 1);
        sv->rc = n == 1 && buf[0] == 'G' ? 0 : (n < 0 ? (int)n : -EPROTO);
    }
    if (sv->rc == 0) {
        h_pattern(5, 0, buf, sizeof buf);
        sv->rc = h_write_all(s, buf, sizeof buf);
    }
    if (sv->rc == 0) {
        /* Wait for the client to give up: an alert (bad_record_mac) or the end of TCP. */
        n = h_read_some(s, buf, sizeof buf);
        sv->end_rc = (int)n;
    }
    snprintf(sv->detail, sizeof sv->detail, "%s", tlsk_socket_error_detail(s));
    tlsk_socket_free(s);
    shutdown(sv->fd, SHUT_RDWR);
    return NULL;
}

static void corrupt_case(int version, unsigned flags, enum tlsk_offload_policy pol, bool nb)
{
    struct relay r = { 0 };
    struct bad_server sv = { 0 };
    struct tlsk_context *cctx = h_client_ctx(version, NULL, pol, flags);
    struct tlsk_socket_options o = { .servername = "localhost" };
    struct tlsk_socket *c = NULL;
    unsigned char buf[65536];
    long long dec0 = h_tls_stat("TlsDecryptError");
    bool kernel_rx = false;
    char name[160];
    pthread_t tr, ts;
    int cfd = -1, sfd = -1, rc;
    ssize_t n, n2;
    size_t good = 0;

    snprintf(name, sizeof name, "byte flipped in a server record, %s%s%s, %s", vname(version),
             flags & TLSK_OFFLOAD_RX_TLS13 ? " rx opt-in" : "",
             pol == TLSK_OFFLOAD_OFF ? " policy off" : "", mname(nb));
    begin_case(name);
    sv.ctx = h_server_ctx(version, NULL, pol, flags);
    if (!sv.ctx || !cctx || h_tcp_pair(&cfd, &r.cside) != 0 || h_tcp_pair(&r.sside, &sfd) != 0) {
        tap_bail("corrupt case setup");
    }
    prep_fd(cfd, nb);
    prep_fd(sfd, nb);
    sv.fd = sfd;
    h_spawn(&tr, relay_main, &r);
    h_spawn(&ts, bad_server_main, &sv);
    rc = tlsk_socket_new_client(&c, cctx, cfd, &o);
    if (rc == 0) {
        rc = h_handshake(c);
    }
    TAP_OK(rc == 0, "%s: handshake through the relay (%s)", name, tlsk_err_name(rc));
    if (rc == 0) {
        rc = h_write_all(c, "ping", 4);
        n = rc == 0 ? h_read_full(c, buf, 4) : rc;
        TAP_OK(n == 4 && memcmp(buf, "ping", 4) == 0, "%s: echo round trip before arming", name);
    }
    if (rc == 0) {
        struct tlsk_offload off = tlsk_socket_offload(c);
        kernel_rx = off.rx.mode == TLSK_MODE_KERNEL;
        tap_diag("  client RX: %s (%s)", kernel_rx ? "kernel" : "userspace",
                 tlsk_reason_name(off.rx.reason));
        if (h_expect_ktls()) {
            bool want = pol != TLSK_OFFLOAD_OFF;
            TAP_OK(kernel_rx == want, "%s: client RX %s", name,
                   want ? "in the kernel (TLSK_MODE_KERNEL)" : "in userspace");
        }
        atomic_store(&r.armed, true);
        rc = h_write_all(c, "G", 1);
    }
    if (rc == 0) {
        /* Read until the failure; the corrupted record is the first large one. */
        for (;;) {
            n = h_read_some(c, buf, sizeof buf);
            if (n <= 0) {
                break;
            }
            if (h_pattern_check(5, good, buf, (size_t)n) >= 0) {
                tap_diag("  corrupted plaintext delivered at %zu", good);
                n = -EILSEQ;
                break;
            }
            good += (size_t)n;
        }
        TAP_OK(atomic_load(&r.flipped), "%s: the relay flipped a byte", name);
        tap_diag("  client read %zu good bytes, then %s (%zd): %s", good, tlsk_err_name((int)n),
                 n, tlsk_socket_error_detail(c));
        TAP_OK(n == TLSK_EBADRECORD, "%s: client read fails with TLSK_EBADRECORD (%s)", name,
               tlsk_err_name((int)n));
        TAP_OK(tlsk_socket_error_detail(c)[0] != '\0', "%s: with a detail", name);
        /* Sticky, and no hang: the blocking fd has SO_RCVTIMEO, the second call must not
         * even get that far. */
        {
            double t0 = now_s();
            n2 = tlsk_socket_read(c, buf, sizeof buf);
            TAP_OK(n2 == n && now_s() - t0 < 2, "%s: a second read returns %s again at once (%s)",
                   name, tlsk_err_name((int)n), tlsk_err_name((int)n2));
        }
        if (kernel_rx && dec0 >= 0) {
            TAP_OK(h_tls_stat("TlsDecryptError") > dec0,
                   "%s: the kernel counted the failure (TlsDecryptError %lld -> %lld)", name, dec0,
                   h_tls_stat("TlsDecryptError"));
        }
    }
    tlsk_socket_free(c);
    close(cfd);
    pthread_join(ts, NULL);
    tap_diag("  server: %s, then %s: %s", tlsk_err_name(sv.rc), tlsk_err_name(sv.end_rc),
             sv.detail);
    TAP_OK(sv.rc == 0, "%s: server handshake and writes (%s)", name, tlsk_err_name(sv.rc));
    atomic_store(&r.stop, true);
    pthread_join(tr, NULL);
    close(sfd);
    close(r.cside);
    close(r.sside);
    tlsk_context_free(sv.ctx);
    tlsk_context_free(cctx);
    healthy_ping(name);
}

/* ---------------------------------------------------------------------------------------- */
/* Argument and state errors                                                                */

struct closing_server {
    struct tlsk_context *ctx;
    int fd;
    int rc;
    ssize_t first_read;
};

static void *closing_server_main(void *arg)
{
    struct closing_server *sv = arg;
    struct tlsk_socket *s = NULL;
    char buf[16];

    sv->rc = tlsk_socket_new_server(&s, sv->ctx, sv->fd, NULL);
    if (sv->rc == 0) {
        sv->rc = h_handshake(s);
    }
    if (sv->rc == 0) {
        sv->first_read = h_read_some(s, buf, sizeof buf); /* close_notify: 0 */
        /* Reads continue after the peer's shutdown, and so do our writes. */
        sv->rc = h_write_all(s, "after", 5);
    }
    if (sv->rc == 0) {
        sv->rc = h_shutdown(s);
    }
    tlsk_socket_free(s);
    shutdown(sv->fd, SHUT_RDWR);
    return NULL;
}

static void write_after_shutdown_case(int version, bool nb, int file_fd)
{
    struct closing_server sv = { 0 };
    struct tlsk_context *cctx = h_client_ctx(version, NULL, TLSK_OFFLOAD_DEFAULT, 0);
    struct tlsk_socket_options o = { .servername = "localhost" };
    struct tlsk_socket *c = NULL;
    struct iovec iov = { .iov_base = "x", .iov_len = 1 };
    char buf[16], name[128];
    off_t off = 0;
    ssize_t n;
    int cfd = -1, sfd = -1, rc;
    pthread_t t;

    snprintf(name, sizeof name, "write after shutdown, %s, %s", vname(version), mname(nb));
    begin_case(name);
    sv.ctx = h_server_ctx(version, NULL, TLSK_OFFLOAD_DEFAULT, 0);
    if (!sv.ctx || !cctx || h_tcp_pair(&cfd, &sfd) != 0) {
        tap_bail("write after shutdown setup");
    }
    prep_fd(cfd, nb);
    prep_fd(sfd, nb);
    sv.fd = sfd;
    h_spawn(&t, closing_server_main, &sv);
    rc = tlsk_socket_new_client(&c, cctx, cfd, &o);
    if (rc == 0) {
        rc = h_handshake(c);
    }
    TAP_OK(rc == 0, "%s: handshake (%s)", name, tlsk_err_name(rc));
    if (rc == 0) {
        n = tlsk_socket_read(c, buf, 0);
        TAP_OK(n == -EINVAL, "%s: read of 0 bytes: -EINVAL (%s)", name, tlsk_err_name((int)n));
        rc = h_shutdown(c);
        TAP_OK(rc == 0, "%s: tlsk_socket_shutdown (%s)", name, tlsk_err_name(rc));
        n = tlsk_socket_write(c, "x", 1);
        TAP_OK(n == TLSK_ECLOSED, "%s: write: TLSK_ECLOSED (%s)", name, tlsk_err_name((int)n));
        n = tlsk_socket_writev(c, &iov, 1);
        TAP_OK(n == TLSK_ECLOSED, "%s: writev: TLSK_ECLOSED (%s)", name, tlsk_err_name((int)n));
        n = tlsk_socket_sendfile(c, file_fd, &off, 100);
        TAP_OK(n == TLSK_ECLOSED && off == 0, "%s: sendfile: TLSK_ECLOSED, offset untouched (%s)",
               name, tlsk_err_name((int)n));
        rc = tlsk_socket_shutdown(c);
        TAP_OK(rc == 0, "%s: a second shutdown is a no-op (%s)", name, tlsk_err_name(rc));
        n = h_read_full(c, buf, 5);
        TAP_OK(n == 5 && memcmp(buf, "after", 5) == 0, "%s: reads continue after shutdown", name);
        n = h_read_some(c, buf, sizeof buf);
        TAP_OK(n == 0, "%s: then the server's close_notify (%s)", name, tlsk_err_name((int)n));
        n = tlsk_socket_write(c, "x", 1);
        TAP_OK(n == TLSK_ECLOSED, "%s: write after both close_notify: TLSK_ECLOSED (%s)", name,
               tlsk_err_name((int)n));
    }
    pthread_join(t, NULL);
    TAP_OK(sv.rc == 0 && sv.first_read == 0,
           "%s: server saw close_notify (%zd) and could still write (%s)", name, sv.first_read,
           tlsk_err_name(sv.rc));
    tlsk_socket_free(c);
    close(cfd);
    close(sfd);
    tlsk_context_free(sv.ctx);
    tlsk_context_free(cctx);
    healthy_ping(name);
}

int main(void)
{
    const struct tlsk_kernel_caps *caps = tlsk_kernel_probe();
    double t0 = now_s();
    int file_fd;
    ssize_t n;
    char buf[4];

    /* A write to a socket whose peer has gone raises SIGPIPE unless the call says otherwise.
     * The library passes MSG_NOSIGNAL where it can (sendmsg on kTLS sockets), but sendfile(2)
     * has no such flag and OpenSSL's socket BIO uses plain write(): a peer that closes
     * mid-sendfile would kill the process.  Applications (and this test) ignore SIGPIPE and
     * get -EPIPE instead. */
    signal(SIGPIPE, SIG_IGN);
    signal(SIGALRM, on_alarm);

    tap_diag("kernel %s, tls ULP %s", caps->release, caps->ulp ? "yes" : "no");
    if (h_expect_ktls() && !TAP_OK(caps->ulp, "TLSK_EXPECT_KTLS=1: the kernel has the tls ULP")) {
        return tap_done();
    }
    healthy_start();
    healthy_ping("setup");

    begin_case("read of 0 bytes on the healthy connection");
    n = tlsk_socket_read(healthy.c, buf, 0);
    TAP_OK(n == -EINVAL, "tlsk_socket_read(len 0) on a live connection: -EINVAL (%s)",
           tlsk_err_name((int)n));
    healthy_ping("read of 0 bytes");

    for (int nb = 0; nb < 2; nb++) {
        test_verify(nb);
    }
    for (int nb = 0; nb < 2; nb++) {
        for (int k = RAW_STARS; k <= RAW_CLOSE; k++) {
            raw_peer_case((enum raw_kind)k, true, nb);
        }
        raw_peer_case(RAW_STARS, false, nb);
        raw_peer_case(RAW_HEADER_CLOSE, false, nb);
        raw_peer_case(RAW_CLOSE, false, nb);
    }

    begin_case("64 MiB pattern file");
    file_fd = h_pattern_file(4, SENDFILE_SIZE);
    if (!TAP_OK(file_fd >= 0, "64 MiB pattern file")) {
        return tap_done();
    }
    for (int nb = 0; nb < 2; nb++) {
        sendfile_close_case(TLSK_TLS1_2, nb, file_fd);
        sendfile_close_case(TLSK_TLS1_3, nb, file_fd);
    }
    for (int nb = 0; nb < 2; nb++) {
        truncation_case(TLSK_TLS1_2, 0, nb);
        truncation_case(TLSK_TLS1_3, 0, nb);
        truncation_case(TLSK_TLS1_3, TLSK_OFFLOAD_RX_TLS13, nb);
    }
    for (int nb = 0; nb < 2; nb++) {
        corrupt_case(TLSK_TLS1_2, 0, TLSK_OFFLOAD_DEFAULT, nb);
        corrupt_case(TLSK_TLS1_3, TLSK_OFFLOAD_RX_TLS13, TLSK_OFFLOAD_DEFAULT, nb);
        corrupt_case(TLSK_TLS1_2, 0, TLSK_OFFLOAD_OFF, nb);
    }
    for (int nb = 0; nb < 2; nb++) {
        write_after_shutdown_case(TLSK_TLS1_2, nb, file_fd);
        write_after_shutdown_case(TLSK_TLS1_3, nb, file_fd);
    }
    close(file_fd);

    healthy_finish();
    alarm(0);
    tap_diag("total %.1f s", now_s() - t0);
    return tap_done();
}
