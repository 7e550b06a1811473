/*
 * test_review.c - defects found by the hostile review of the library's API (issue "Hostile
 * review"), each a case that failed before its fix:
 *  - the evented server no longer spins when accept() fails with EMFILE: it pauses, its CPU
 *    stays near idle, and a waiting client is served once descriptors are free (item 7);
 *  - tlsk_socket_writev() refuses lengths that add up past SSIZE_MAX with -EINVAL instead of
 *    wrapping past its small-write buffer check, and the socket goes on (item 6);
 *  - the negotiated ALPN protocol is the socket's own, not a buffer the next call on another
 *    socket overwrites (item 14);
 *  - after a failed verification the reason stays readable: DEPTH_ZERO_SELF_SIGNED_CERT and
 *    HOSTNAME_MISMATCH are told apart (item 15);
 *  - socket and context flags cannot be confused: a context flag in socket options (which
 *    used to equal TLSK_SOCKET_OWN_FD and hand the fd over) and unknown bits are refused
 *    (item 16);
 *  - a server with no certificate anywhere is refused at creation/listen (item 17).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "tap.h"

static struct tlsk_context *ctx_with(const char *cert, const char *const *alpn, unsigned flags)
{
    struct tlsk_context_options o = { 0 };
    struct tlsk_context *c = NULL;
    char cf[128], kf[128], err[512];

    if (cert) {
        snprintf(cf, sizeof cf, "%s-cert.pem", cert);
        snprintf(kf, sizeof kf, "%s-key.pem", cert);
        o.cert_file = h_fixture(cf);
        o.key_file = h_fixture(kf);
    }
    o.ca_file = h_fixture("ca1-cert.pem");
    o.alpn = alpn;
    o.flags = flags;
    if (tlsk_context_new(&c, &o, err, sizeof err) != 0) {
        tap_diag("context: %s", err);
    }
    return c;
}

/* ---- a handshake over a loopback pair, the server end in a thread ------------------------ */

struct srv_end {
    struct tlsk_context *ctx;
    int fd;
    struct tlsk_socket *s;
    int rc;
};

static void *srv_main(void *arg)
{
    struct srv_end *e = arg;
    e->rc = tlsk_socket_new_server(&e->s, e->ctx, e->fd, NULL);
    if (e->rc == 0) {
        e->rc = h_handshake(e->s);
    }
    if (e->rc != 0) {
        shutdown(e->fd, SHUT_RDWR);
    }
    return NULL;
}

/* Client and server sockets after a handshake; *crc is the client's result. */
static void pair(struct tlsk_context *sctx, struct tlsk_context *cctx, const char *name,
                 struct srv_end *sv, struct tlsk_socket **c, int *cfd, int *crc)
{
    struct tlsk_socket_options o = { .servername = name };
    pthread_t t;

    memset(sv, 0, sizeof *sv);
    sv->ctx = sctx;
    *c = NULL;
    if (h_tcp_pair(cfd, &sv->fd) != 0) {
        *crc = -EIO;
        return;
    }
    h_spawn(&t, srv_main, sv);
    *crc = tlsk_socket_new_client(c, cctx, *cfd, &o);
    if (*crc == 0) {
        *crc = h_handshake(*c);
    }
    if (*crc != 0) {
        shutdown(*cfd, SHUT_RDWR);
    }
    pthread_join(t, NULL);
}

static void unpair(struct srv_end *sv, struct tlsk_socket *c, int cfd)
{
    tlsk_socket_free(c);
    tlsk_socket_free(sv->s);
    close(cfd);
    close(sv->fd);
}

/* ---- item 6: writev lengths ---------------------------------------------------------------- */

static void writev_wrap(void)
{
    struct tlsk_context *sctx = ctx_with("agent1", NULL, 0), *cctx = ctx_with(NULL, NULL, 0);
    struct srv_end sv;
    struct tlsk_socket *c;
    int cfd, rc;
    char buf[16] = "0123456789abcdef", got[16];

    pair(sctx, cctx, "localhost", &sv, &c, &cfd, &rc);
    if (TAP_OK(rc == 0 && sv.rc == 0, "writev: handshake (%s)", tlsk_err_name(rc))) {
        struct iovec wrap[2] = { { buf, 16 }, { buf, (size_t)SSIZE_MAX } };
        struct iovec wrap2[3] = { { buf, 16 }, { buf, SIZE_MAX - 8 }, { buf, 16 } };
        TAP_IS((int)tlsk_socket_writev(c, wrap, 2), -EINVAL,
               "writev: lengths past SSIZE_MAX give -EINVAL");
        TAP_IS((int)tlsk_socket_writev(c, wrap2, 3), -EINVAL,
               "writev: lengths that wrap size_t give -EINVAL, nothing copied");
        TAP_OK(h_write_all(c, "ok", 2) == 0 && h_read_full(sv.s, got, 2) == 2 &&
                   memcmp(got, "ok", 2) == 0,
               "writev: the socket goes on after the refusal");
    }
    unpair(&sv, c, cfd);
    tlsk_context_free(sctx);
    tlsk_context_free(cctx);
}

/* ---- item 14: ALPN per socket ------------------------------------------------------------ */

static void alpn_per_socket(void)
{
    static const char *const both[] = { "h2", "http/1.1", NULL };
    static const char *const h2[] = { "h2", NULL }, *const h11[] = { "http/1.1", NULL };
    struct tlsk_context *sctx = ctx_with("agent1", both, 0);
    struct tlsk_context *ca = ctx_with(NULL, h2, 0), *cb = ctx_with(NULL, h11, 0);
    struct srv_end sa, sb;
    struct tlsk_socket *a, *b;
    int fa, fb, ra, rb;

    pair(sctx, ca, "localhost", &sa, &a, &fa, &ra);
    pair(sctx, cb, "localhost", &sb, &b, &fb, &rb);
    if (TAP_OK(ra == 0 && rb == 0, "ALPN: two handshakes (%s, %s)", tlsk_err_name(ra),
               tlsk_err_name(rb))) {
        const char *pa = tlsk_socket_alpn_protocol(a);
        const char *pb = tlsk_socket_alpn_protocol(b);
        const char *psa = tlsk_socket_alpn_protocol(sa.s);
        TAP_OK(pa && pb && psa && strcmp(pa, "h2") == 0 && strcmp(pb, "http/1.1") == 0 &&
                   strcmp(psa, "h2") == 0,
               "ALPN: each socket keeps its own protocol after calls on the others (%s, %s, %s)",
               pa ? pa : "NULL", pb ? pb : "NULL", psa ? psa : "NULL");
    }
    unpair(&sa, a, fa);
    unpair(&sb, b, fb);
    tlsk_context_free(sctx);
    tlsk_context_free(ca);
    tlsk_context_free(cb);
}

/* ---- item 15: the verification's reason after a failed handshake ------------------------- */

static void verify_reason(const char *cert, const char *name, const char *want)
{
    struct tlsk_context *sctx = ctx_with(cert, NULL, 0), *cctx = ctx_with(NULL, NULL, 0);
    struct srv_end sv;
    struct tlsk_socket *c;
    int cfd, rc;
    const char *why;

    pair(sctx, cctx, name, &sv, &c, &cfd, &rc);
    why = c ? tlsk_socket_authorization_error(c) : NULL;
    TAP_OK(rc == TLSK_EVERIFY && why && strcmp(why, want) == 0,
           "%s as %s: TLSK_EVERIFY, and authorization_error says %s (%s, %s)", cert, name, want,
           tlsk_err_name(rc), why ? why : "NULL");
    unpair(&sv, c, cfd);
    tlsk_context_free(sctx);
    tlsk_context_free(cctx);
}

/* ---- item 16: flags ------------------------------------------------------------------------ */

static void flags_apart(void)
{
    struct tlsk_context *sctx = ctx_with("agent1", NULL, 0), *bad = NULL;
    struct tlsk_context_options co = { 0 };
    struct tlsk_socket_options so = { .flags = TLSK_VERIFY_NONE_INSECURE };
    struct tlsk_socket *s = NULL;
    int a, b, rc;
    char err[256];

    TAP_OK((TLSK_SOCKET_OWN_FD & (TLSK_VERIFY_NONE_INSECURE | TLSK_OFFLOAD_RX_TLS13 |
                                  TLSK_REQUIRE_PEER_CERT | TLSK_NO_RX_TLS13)) == 0 &&
               (TLSK_SOCKET_SENDFILE_MMAP & (TLSK_VERIFY_NONE_INSECURE | TLSK_OFFLOAD_RX_TLS13)) ==
                   0,
           "flags: socket flag bits are not context flag bits");
    if (h_tcp_pair(&a, &b) != 0) {
        tap_bail("socketpair");
    }
    rc = tlsk_socket_new_server(&s, sctx, b, &so);
    TAP_IS(rc, TLSK_ECONFIG, "flags: a context flag in socket options is refused");
    TAP_OK(fcntl(b, F_GETFD) >= 0, "flags: and the descriptor was not taken over");
    so.flags = 1u << 30;
    TAP_IS(tlsk_socket_new_server(&s, sctx, b, &so), TLSK_ECONFIG,
           "flags: an unknown socket flag is refused");
    co.flags = TLSK_SOCKET_OWN_FD;
    TAP_IS(tlsk_context_new(&bad, &co, err, sizeof err), TLSK_ECONFIG,
           "flags: a socket flag in context options is refused (%s)", err);
    close(a);
    close(b);
    tlsk_context_free(sctx);
}

/* ---- item 17: a server with no certificate ---------------------------------------------- */

static void certless_server(void)
{
    struct tlsk_context *none = ctx_with(NULL, NULL, 0), *cert = ctx_with("agent1", NULL, 0);
    struct tlsk_server_options o = { .ctx = none };
    struct tlsk_server *srv = NULL;
    struct tlsk_loop *loop = NULL;
    struct tlsk_socket *s = NULL;
    int a, b;

    if (h_tcp_pair(&a, &b) != 0 || tlsk_loop_new(&loop) != 0) {
        tap_bail("setup");
    }
    TAP_IS(tlsk_socket_new_server(&s, none, b, NULL), TLSK_ECONFIG,
           "no certificate: a server socket without one (and no SNI) is refused");
    TAP_OK(tlsk_server_new(&srv, loop, &o, NULL, NULL) == 0, "no certificate: server made");
    TAP_IS(tlsk_server_listen(srv, "127.0.0.1", "0", 8), TLSK_ECONFIG,
           "no certificate: listen is refused while no SNI context has one");
    TAP_IS(tlsk_server_add_context(srv, "www.example", cert), 0, "add_context with a certificate");
    TAP_IS(tlsk_server_listen(srv, "127.0.0.1", "0", 8), 0, "then listen works");
    tlsk_server_close(srv);
    tlsk_loop_run(loop, 1000);
    tlsk_loop_free(loop);
    close(a);
    close(b);
    tlsk_context_free(none);
    tlsk_context_free(cert);
}

/* ---- item 7: EMFILE ------------------------------------------------------------------------ */

static void emfile_secure(struct tlsk_server *srv, struct tlsk_socket *s, void *data)
{
    (void)srv;
    (void)data;
    tlsk_socket_end(s);
}

static const struct tlsk_server_callbacks emfile_cb = { .secure_connection = emfile_secure };

/* The child: an evented server that runs out of descriptors at 16. */
static void emfile_child(int wfd)
{
    struct tlsk_context *ctx = ctx_with("agent1", NULL, 0);
    struct tlsk_server_options o = { .ctx = ctx, .handshake_timeout_ms = 60000 };
    struct tlsk_server *srv = NULL;
    struct tlsk_loop *loop = NULL;
    struct rlimit rl = { 16, 16 };
    char host[64];
    int port = 0;

    if (!ctx || tlsk_loop_new(&loop) != 0 || tlsk_server_new(&srv, loop, &o, &emfile_cb, NULL) ||
        tlsk_server_listen(srv, "127.0.0.1", "0", 64) != 0 ||
        tlsk_server_address(srv, host, sizeof host, &port) != 0) {
        _exit(2);
    }
    if (write(wfd, &port, sizeof port) != sizeof port || setrlimit(RLIMIT_NOFILE, &rl) != 0) {
        _exit(3);
    }
    tlsk_loop_run(loop, 30000);
    _exit(0);
}

static double cpu_seconds(pid_t pid)
{
    char path[64], buf[1024], *p;
    unsigned long ut = 0, st = 0;
    FILE *f;

    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    if (!(f = fopen(path, "r"))) {
        return -1;
    }
    p = fgets(buf, sizeof buf, f);
    fclose(f);
    p = p ? strrchr(buf, ')') : NULL;
    /* After ")": state, then fields 4..13, then utime (14) and stime (15). */
    if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2) {
        return -1;
    }
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

static int raw_connect(int port)
{
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        close(fd);
        fd = -1;
    }
    return fd;
}

static void emfile(void)
{
    int p[2], port = 0, raw[24], n = 0, rc;
    struct tlsk_context *cctx = ctx_with(NULL, NULL, 0);
    struct tlsk_socket *c = NULL;
    double cpu0, cpu1;
    char ps[16];
    pid_t pid;

    if (pipe(p) != 0 || (pid = fork()) < 0) {
        tap_bail("fork");
    }
    if (pid == 0) {
        close(p[0]);
        emfile_child(p[1]);
    }
    close(p[1]);
    if (read(p[0], &port, sizeof port) != sizeof port) {
        tap_bail("emfile child did not start");
    }
    close(p[0]);
    /* More silent connections than the child has descriptors: accept() fails with EMFILE
     * while the rest wait in the backlog. */
    for (int i = 0; i < 24; i++) {
        if ((raw[n] = raw_connect(port)) >= 0) {
            n++;
        }
    }
    usleep(300 * 1000);
    cpu0 = cpu_seconds(pid);
    usleep(1000 * 1000);
    cpu1 = cpu_seconds(pid);
    TAP_OK(cpu0 >= 0 && cpu1 - cpu0 < 0.3,
           "EMFILE: the evented server does not spin while it cannot accept (%.2f s CPU in 1 s, "
           "%d waiting connections)",
           cpu1 - cpu0, n);
    for (int i = 0; i < n; i++) {
        close(raw[i]);
    }
    snprintf(ps, sizeof ps, "%d", port);
    rc = tlsk_connect(&c, cctx, "127.0.0.1", ps, &(struct tlsk_socket_options){ .servername = "localhost" });
    if (rc == 0) {
        struct pollfd pf = { .fd = tlsk_socket_fd(c) };
        int64_t end = 5000;
        while ((rc = tlsk_socket_handshake(c)) == -EAGAIN && end > 0) {
            pf.events = (short)tlsk_socket_events(c);
            poll(&pf, 1, 100);
            end -= 100;
        }
    }
    TAP_OK(rc == 0, "EMFILE: once descriptors are free a waiting client is served (%s)",
           tlsk_err_name(rc));
    tlsk_socket_free(c);
    tlsk_context_free(cctx);
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    alarm(120);
    writev_wrap();
    alpn_per_socket();
    verify_reason("agent2", "localhost", "DEPTH_ZERO_SELF_SIGNED_CERT");
    verify_reason("agent1", "wrong.example", "HOSTNAME_MISMATCH");
    flags_apart();
    certless_server();
    emfile();
    return tap_done();
}
