/*
 * test_events_peers.c - server events with real peers (docs/NODE.md §1.6, §1.8).
 *
 *   CE-2  1024 bytes of '*' on raw TCP: one clientError, TLSK_EPROTO, no secureConnection
 *   CE-3  1 MiB of junk closed promptly; "blah\nblah\n" likewise
 *   CE-4  openssl s_client -verify_return_error without -CAfile: clientError TLSK_EALERT(48)
 *   CE-5  TCP FIN before any byte: -ECONNRESET; a reset: -ECONNRESET, addresses still readable
 *   SE-1  secureConnection once per handshake, authorized/servername final inside it
 *   LS-1  listen on 127.0.0.1 / ::1 with port "0"; a port in use is an error
 *   CL-1  tlsk_server_close() with a connection open: new connections refused, the open one
 *         keeps echoing, the close event only after it ends
 *   AD-1  tlsk_socket_address() on the server's socket (IPv4, ::1, v4 on a dual-stack listener)
 *   AC-1..3  tlsk_server_add_context() against openssl s_client -servername/-verify_hostname
 *   BW-1..4  bytes_written deltas of a tlsk client for three suites (1000 B, 100 000 B,
 *         sendfile 1 MiB, close_notify), and the totals against a counting TCP relay
 *
 * The server runs on the built-in loop in the main thread; tlsk clients run in threads,
 * external peers as child processes with bounded waits (an alarm kills them on a hang).
 * Both tiers: with TLSK_EXPECT_KTLS=1 the BW deltas must be identical with the kernel
 * holding TX.
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
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>

#include "harness.h"
#include "tap.h"

static bool g_ktls;
static int g_slow = 1; /* timing multiplier for user-mode Linux */

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static struct tlsk_context *mkctx(const char *name, const char *ca, int version,
                                  const char *suite, unsigned flags)
{
    struct tlsk_context_options o = { 0 };
    struct tlsk_context *c = NULL;
    char cert[128], key[128], err[512];

    if (name) {
        snprintf(cert, sizeof cert, "%s-cert.pem", name);
        snprintf(key, sizeof key, "%s-key.pem", name);
        o.cert_file = h_fixture(cert);
        o.key_file = h_fixture(key);
    }
    o.ca_file = ca ? h_fixture(ca) : NULL;
    o.min_version = o.max_version = version;
    if (suite && strncmp(suite, "TLS_", 4) == 0) {
        o.ciphersuites = suite;
    } else if (suite) {
        o.ciphers = suite;
    }
    o.flags = flags;
    if (tlsk_context_new(&c, &o, err, sizeof err) != 0) {
        tap_diag("context %s: %s", name ? name : "(client)", err);
        return NULL;
    }
    return c;
}

/* ---------------------------------------------------------------------------------------- */
/* Child processes                                                                          */

#define MAX_KIDS 4
static volatile pid_t g_kids[MAX_KIDS];

static void on_alarm(int sig)
{
    static const char msg[] = "Bail out! test_events_peers: timed out; children killed\n";
    (void)sig;
    for (int i = 0; i < MAX_KIDS; i++) {
        if (g_kids[i] > 0) {
            kill(g_kids[i], SIGKILL);
        }
    }
    if (write(1, msg, sizeof msg - 1) < 0) {
        /* nothing to do */
    }
    _exit(1);
}

struct kid {
    pid_t pid;
    int log; /* unlinked file: stdout and stderr */
    int status;
    bool done;
};

/* Start argv with stdin from in_fd (-1: /dev/null), output to a temporary file. */
static int kid_start(struct kid *k, char *const argv[], int in_fd)
{
    char path[] = "/tmp/tlsk-ev-XXXXXX";
    int nul = open("/dev/null", O_RDONLY | O_CLOEXEC);

    memset(k, 0, sizeof *k);
    k->log = mkostemp(path, O_CLOEXEC);
    if (k->log < 0 || nul < 0) {
        return -errno;
    }
    unlink(path);
    k->pid = fork();
    if (k->pid == 0) {
        dup2(in_fd >= 0 ? in_fd : nul, 0);
        dup2(k->log, 1);
        dup2(k->log, 2);
        execvp(argv[0], argv);
        _exit(127);
    }
    close(nul);
    for (int i = 0; i < MAX_KIDS; i++) {
        if (g_kids[i] == 0) {
            g_kids[i] = k->pid;
            break;
        }
    }
    return k->pid > 0 ? 0 : -errno;
}

static void kid_untrack(pid_t p)
{
    for (int i = 0; i < MAX_KIDS; i++) {
        if (g_kids[i] == p) {
            g_kids[i] = 0;
        }
    }
}

static bool kid_poll(struct kid *k)
{
    int st;
    if (k->done) {
        return true;
    }
    if (waitpid(k->pid, &st, WNOHANG) == k->pid) {
        k->done = true;
        k->status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        kid_untrack(k->pid);
    }
    return k->done;
}

/* Run the loop until the child exits (or ms pass: then kill it). */
static int kid_run(struct kid *k, struct tlsk_loop *loop, int ms)
{
    int64_t end = now_ms() + ms;

    while (!kid_poll(k)) {
        if (now_ms() > end) {
            kill(k->pid, SIGKILL);
            waitpid(k->pid, NULL, 0);
            kid_untrack(k->pid);
            k->done = true;
            k->status = -ETIMEDOUT;
            break;
        }
        if (loop) {
            tlsk_loop_run(loop, 20);
        } else {
            usleep(10000);
        }
    }
    return k->status;
}

/* The child's output (malloc'd, NUL-terminated); closes the log. */
static char *kid_output(struct kid *k)
{
    struct stat st;
    size_t len = 0;
    char *s;

    if (k->log >= 0 && fstat(k->log, &st) == 0) {
        len = (size_t)st.st_size;
    }
    s = calloc(1, len + 1);
    if (s && len && pread(k->log, s, len, 0) != (ssize_t)len) {
        s[0] = 0;
    }
    for (size_t i = 0; s && i < len; i++) {
        if (!s[i]) {
            s[i] = ' ';
        }
    }
    if (k->log >= 0) {
        close(k->log);
        k->log = -1;
    }
    return s;
}

/* ---------------------------------------------------------------------------------------- */
/* Server                                                                                   */

enum { MODE_ECHO, MODE_SINK };

struct conninfo {
    int authorized;
    char authz_err[64];
    char servername[64];
    int has_servername;
    char version[16];
    char rhost[64], lhost[64];
    int rport, lport, addr_rc;
    uint64_t bytes_read;
};

struct srvstate {
    struct tlsk_server *srv;
    int mode;
    int secure, client_errors, closes, server_closed;
    int last_error;
    char last_detail[256];
    int64_t t_error_ms;
    /* addresses seen in the last clientError */
    int err_addr_rc, err_rport;
    char err_rhost[64];
    struct conninfo ci[16];
    int closes_at_server_close;
    size_t got;
};

static void on_data(struct tlsk_socket *s, const void *buf, size_t len, void *ud)
{
    struct srvstate *st = ud;
    st->got += len;
    if (st->mode == MODE_ECHO) {
        tlsk_socket_send(s, buf, len);
    }
}

static void on_end(struct tlsk_socket *s, int err, void *ud)
{
    (void)err;
    (void)ud;
    tlsk_socket_end(s);
}

static void on_close(struct tlsk_socket *s, void *ud)
{
    struct srvstate *st = ud;
    int i = st->closes++;
    if (i < 16) {
        st->ci[i].bytes_read = tlsk_socket_bytes_read(s);
    }
}

static void on_secure(struct tlsk_server *srv, struct tlsk_socket *s, void *data)
{
    struct srvstate *st = data;
    static const struct tlsk_socket_callbacks cb = { .data = on_data, .end = on_end,
                                                     .close = on_close };
    int i = st->secure++;
    (void)srv;
    if (i < 16) {
        struct conninfo *c = &st->ci[i];
        const char *e = tlsk_socket_authorization_error(s), *n = tlsk_socket_servername(s),
                   *v = tlsk_socket_version(s);
        c->authorized = tlsk_socket_authorized(s);
        snprintf(c->authz_err, sizeof c->authz_err, "%s", e ? e : "");
        c->has_servername = n != NULL;
        snprintf(c->servername, sizeof c->servername, "%s", n ? n : "");
        snprintf(c->version, sizeof c->version, "%s", v ? v : "");
        c->addr_rc = tlsk_socket_address(s, 1, c->rhost, sizeof c->rhost, &c->rport);
        if (c->addr_rc == 0) {
            c->addr_rc = tlsk_socket_address(s, 0, c->lhost, sizeof c->lhost, &c->lport);
        }
    }
    tlsk_socket_set_data(s, st);
    tlsk_socket_set_callbacks(s, &cb);
}

static void on_client_error(struct tlsk_server *srv, int err, struct tlsk_socket *s, void *data)
{
    struct srvstate *st = data;
    (void)srv;
    st->client_errors++;
    st->last_error = err;
    st->t_error_ms = now_ms();
    snprintf(st->last_detail, sizeof st->last_detail, "%s", tlsk_socket_error_detail(s));
    st->err_rport = 0;
    st->err_rhost[0] = 0;
    st->err_addr_rc = tlsk_socket_address(s, 1, st->err_rhost, sizeof st->err_rhost,
                                          &st->err_rport);
}

static void on_server_close(struct tlsk_server *srv, void *data)
{
    struct srvstate *st = data;
    (void)srv;
    st->server_closed++;
    st->closes_at_server_close = st->closes;
}

static const struct tlsk_server_callbacks server_cb = { .secure_connection = on_secure,
                                                         .client_error = on_client_error,
                                                         .close = on_server_close };

/* A server on a new built-in loop.  Returns 0 or the listen error. */
static int srv_open(struct tlsk_loop **loop, struct srvstate *st, struct tlsk_context *ctx,
                    const char *host, int timeout_ms, int *port)
{
    struct tlsk_server_options o = { .ctx = ctx, .handshake_timeout_ms = timeout_ms };
    int rc;

    memset(st, 0, sizeof *st);
    *loop = NULL;
    if ((rc = tlsk_loop_new(loop)) != 0 ||
        (rc = tlsk_server_new(&st->srv, *loop, &o, &server_cb, st)) != 0) {
        return rc;
    }
    rc = tlsk_server_listen(st->srv, host, "0", 128);
    if (rc == 0) {
        rc = tlsk_server_address(st->srv, NULL, 0, port);
    }
    return rc;
}

/* Close the server, run the loop until its close event, free the loop. */
static void srv_close(struct tlsk_loop *loop, struct srvstate *st, const char *tag)
{
    int64_t end = now_ms() + 5000 * g_slow;

    tlsk_server_close(st->srv);
    while (!st->server_closed && now_ms() < end) {
        tlsk_loop_run(loop, 50);
    }
    if (!TAP_OK(st->server_closed == 1, "%s: server close event", tag)) {
        tap_diag("connections still open: %u", tlsk_server_connections(st->srv));
    }
    TAP_IS(tlsk_loop_free(loop), 0, "%s: loop freed", tag);
}

static int run_until_errors(struct tlsk_loop *loop, struct srvstate *st, int n, int ms)
{
    int64_t end = now_ms() + ms;
    while (st->client_errors < n && now_ms() < end) {
        tlsk_loop_run(loop, 20);
    }
    return st->client_errors;
}

static int raw_connect_af(int af, int port)
{
    struct sockaddr_in a4 = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                              .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    struct sockaddr_in6 a6 = { .sin6_family = AF_INET6, .sin6_port = htons((uint16_t)port),
                               .sin6_addr = IN6ADDR_LOOPBACK_INIT };
    int fd = socket(af, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int rc = fd < 0 ? -1
             : af == AF_INET ? connect(fd, (struct sockaddr *)&a4, sizeof a4)
                             : connect(fd, (struct sockaddr *)&a6, sizeof a6);
    if (fd >= 0 && rc != 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    return fd;
}

static int raw_connect(int port)
{
    return raw_connect_af(AF_INET, port);
}

static int local_port(int fd)
{
    struct sockaddr_storage a;
    socklen_t l = sizeof a;
    if (getsockname(fd, (struct sockaddr *)&a, &l) != 0) {
        return -1;
    }
    return ntohs(a.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&a)->sin6_port
                                         : ((struct sockaddr_in *)&a)->sin_port);
}

/* 1 when the peer closed (EOF or reset) within ms while the loop runs. */
static int closed_while_running(struct tlsk_loop *loop, int fd, int ms)
{
    int64_t end = now_ms() + ms;
    while (now_ms() < end) {
        struct pollfd p = { .fd = fd, .events = POLLIN };
        char b[4096];
        if (poll(&p, 1, 0) == 1) {
            ssize_t n = read(fd, b, sizeof b);
            if (n <= 0) {
                return 1;
            }
            continue; /* an alert or other bytes first */
        }
        tlsk_loop_run(loop, 10);
    }
    return 0;
}

/* ---------------------------------------------------------------------------------------- */
/* CE-2, CE-3, CE-5                                                                         */

struct junk {
    int fd;
    size_t len, written;
    int err;
};

static void *junk_writer(void *arg)
{
    struct junk *j = arg;
    static char buf[65536];

    memset(buf, 'J', sizeof buf);
    while (j->written < j->len) {
        size_t n = j->len - j->written < sizeof buf ? j->len - j->written : sizeof buf;
        ssize_t w = send(j->fd, buf, n, MSG_NOSIGNAL);
        if (w <= 0) {
            j->err = errno;
            break;
        }
        j->written += (size_t)w;
    }
    return NULL;
}

static void test_client_errors(void)
{
    struct tlsk_context *ctx = mkctx("agent1", NULL, 0, NULL, 0);
    struct tlsk_loop *loop;
    struct srvstate st;
    int port, fd;
    char stars[1024];
    int64_t t0;

    if (srv_open(&loop, &st, ctx, "127.0.0.1", 0, &port) != 0) {
        TAP_OK(0, "CE: server");
        return;
    }
    /* CE-2 */
    memset(stars, '*', sizeof stars);
    fd = raw_connect(port);
    TAP_IS(write(fd, stars, sizeof stars), (ssize_t)sizeof stars, "CE-2: 1024 '*' written");
    run_until_errors(loop, &st, 1, 3000 * g_slow);
    TAP_IS(st.client_errors, 1, "CE-2: exactly one clientError");
    TAP_IS(st.last_error, TLSK_EPROTO, "CE-2: TLSK_EPROTO (%s: %s)", tlsk_err_name(st.last_error),
           st.last_detail);
    TAP_OK(closed_while_running(loop, fd, 1000 * g_slow), "CE-2: connection closed");
    tlsk_loop_run(loop, 100);
    TAP_IS(st.client_errors, 1, "CE-2: still one clientError");
    TAP_IS(st.secure, 0, "CE-2: no secureConnection");
    close(fd);

    /* CE-3: 1 MiB of junk */
    {
        struct junk j = { .len = 1u << 20 };
        pthread_t t;
        int closed;
        st.client_errors = 0;
        j.fd = raw_connect(port);
        t0 = now_ms();
        h_spawn(&t, junk_writer, &j);
        run_until_errors(loop, &st, 1, 3000 * g_slow);
        closed = closed_while_running(loop, j.fd, 2000 * g_slow);
        shutdown(j.fd, SHUT_RDWR);
        pthread_join(t, NULL);
        TAP_IS(st.client_errors, 1, "CE-3: 1 MiB junk: one clientError");
        TAP_IS(st.last_error, TLSK_EPROTO, "CE-3: TLSK_EPROTO (%s: %s)",
               tlsk_err_name(st.last_error), st.last_detail);
        TAP_OK(closed && st.t_error_ms - t0 < 1000 * g_slow,
               "CE-3: closed promptly (clientError after %lld ms; the writer got %zu bytes "
               "out, then %s)", (long long)(st.t_error_ms - t0), j.written,
               j.err ? strerror(j.err) : "no error");
        close(j.fd);
    }
    /* CE-3: "blah\nblah\n" */
    st.client_errors = 0;
    fd = raw_connect(port);
    TAP_IS(write(fd, "blah\nblah\n", 10), 10, "CE-3: blah\\nblah\\n written");
    run_until_errors(loop, &st, 1, 3000 * g_slow);
    TAP_IS(st.client_errors, 1, "CE-3: blah: one clientError");
    TAP_IS(st.last_error, TLSK_EPROTO, "CE-3: blah: TLSK_EPROTO (%s: %s)",
           tlsk_err_name(st.last_error), st.last_detail);
    TAP_OK(closed_while_running(loop, fd, 1000 * g_slow), "CE-3: blah: connection closed");
    close(fd);

    /* CE-5: FIN before any byte */
    st.client_errors = 0;
    fd = raw_connect(port);
    {
        int lp = local_port(fd);
        close(fd);
        run_until_errors(loop, &st, 1, 3000 * g_slow);
        TAP_IS(st.client_errors, 1, "CE-5: FIN before any byte: one clientError");
        TAP_IS(st.last_error, -ECONNRESET, "CE-5: -ECONNRESET (%s)", tlsk_err_name(st.last_error));
        TAP_OK(st.err_addr_rc == 0 && strcmp(st.err_rhost, "127.0.0.1") == 0 &&
                   st.err_rport == lp,
               "CE-5/AD-1: remote address readable in clientError after a FIN (%s:%d, rc %s)",
               st.err_rhost, st.err_rport, tlsk_err_name(st.err_addr_rc));
    }
    /* CE-5 with a reset instead of a FIN: the address must still be readable (AD-1: captured
     * at connect time). */
    st.client_errors = 0;
    fd = raw_connect(port);
    {
        struct linger lg = { 1, 0 };
        int lp = local_port(fd);
        tlsk_loop_run(loop, 50 * g_slow); /* accepted and waiting for bytes */
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
        close(fd);
        run_until_errors(loop, &st, 1, 3000 * g_slow);
        TAP_IS(st.client_errors, 1, "CE-5: reset before any byte: one clientError");
        TAP_IS(st.last_error, -ECONNRESET, "CE-5: reset: -ECONNRESET (%s)",
               tlsk_err_name(st.last_error));
        TAP_OK(st.err_addr_rc == 0 && strcmp(st.err_rhost, "127.0.0.1") == 0 &&
                   st.err_rport == lp,
               "AD-1: remote address readable in clientError after a reset (%s:%d, rc %s)",
               st.err_rhost, st.err_rport, tlsk_err_name(st.err_addr_rc));
    }
    TAP_IS(st.secure, 0, "CE-*: no secureConnection at all");
    TAP_IS(tlsk_server_connections(st.srv), 0, "CE-*: connections back to 0");
    srv_close(loop, &st, "CE");
    tlsk_context_free(ctx);
}

/* CE-4: s_client rejects the server's certificate. */
static void test_ce4(void)
{
    struct tlsk_context *ctx = mkctx("agent1", NULL, 0, NULL, 0);
    struct tlsk_loop *loop;
    struct srvstate st;
    struct kid k;
    char addr[64];
    int port;

    if (srv_open(&loop, &st, ctx, "127.0.0.1", 0, &port) != 0) {
        TAP_OK(0, "CE-4: server");
        return;
    }
    for (int v = 0; v < 2; v++) {
        snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
        char *argv[] = { "openssl", "s_client", "-connect", addr, "-verify_return_error",
                         "-servername", "localhost", v ? "-tls1_3" : "-tls1_2", NULL };
        st.client_errors = 0;
        st.last_error = 0;
        kid_start(&k, argv, -1);
        kid_run(&k, loop, 10000 * g_slow);
        run_until_errors(loop, &st, 1, 2000 * g_slow);
        free(kid_output(&k));
        TAP_IS(st.client_errors, 1, "CE-4 %s: one clientError", v ? "1.3" : "1.2");
        TAP_IS(st.last_error, TLSK_EALERT(48), "CE-4 %s: TLSK_EALERT(48) unknown_ca (%s: %s)",
               v ? "1.3" : "1.2", tlsk_err_name(st.last_error), st.last_detail);
    }
    TAP_IS(st.secure, 0, "CE-4: no secureConnection");
    srv_close(loop, &st, "CE-4");
    tlsk_context_free(ctx);
}

/* ---------------------------------------------------------------------------------------- */
/* tlsk clients in threads                                                                  */

struct cjob {
    int af;
    const char *host;
    int port;
    struct tlsk_context *ctx;
    const char *servername;
    size_t len;
    int rc;
    int lport;
    char lhost[64];
    atomic_int done;
};

static void *echo_client(void *arg)
{
    struct cjob *j = arg;
    struct tlsk_socket_options o = { .servername = j->servername };
    struct tlsk_socket *s = NULL;
    char port[16], b[16];

    snprintf(port, sizeof port, "%d", j->port);
    j->rc = tlsk_connect(&s, j->ctx, j->host, port, &o);
    if (j->rc == 0) {
        j->rc = tlsk_socket_address(s, 0, j->lhost, sizeof j->lhost, &j->lport);
    }
    if (j->rc == 0) {
        j->rc = h_handshake(s);
    }
    if (j->rc == 0 && (j->rc = h_send_pattern(s, 3, j->len)) == 0 &&
        (j->rc = h_recv_pattern(s, 3, j->len)) == 0 && (j->rc = h_shutdown(s)) == 0) {
        j->rc = (int)h_read_some(s, b, sizeof b);
    }
    tlsk_socket_free(s);
    atomic_store(&j->done, 1);
    return NULL;
}

static void run_until_done(struct tlsk_loop *loop, atomic_int *done, int ms)
{
    int64_t end = now_ms() + ms;
    while (!atomic_load(done) && now_ms() < end) {
        tlsk_loop_run(loop, 20);
    }
    /* Let the server see the client's last bytes and close. */
    tlsk_loop_run(loop, 50);
}

/* SE-1 */
static void test_se1(void)
{
    struct tlsk_context *sctx = mkctx("agent1", "ca1-cert.pem", 0, NULL, TLSK_REQUEST_PEER_CERT);
    struct tlsk_context *with = mkctx("agent1", "ca1-cert.pem", 0, NULL, 0);
    struct tlsk_context *without = mkctx(NULL, "ca1-cert.pem", 0, NULL, 0);
    struct tlsk_loop *loop;
    struct srvstate st;
    int port;

    if (srv_open(&loop, &st, sctx, "127.0.0.1", 0, &port) != 0) {
        TAP_OK(0, "SE-1: server");
        return;
    }
    for (int i = 0; i < 3; i++) {
        struct cjob j = { .host = "127.0.0.1", .port = port, .ctx = i == 1 ? without : with,
                          .servername = "localhost", .len = 100 };
        pthread_t t;
        h_spawn(&t, echo_client, &j);
        run_until_done(loop, &j.done, 15000 * g_slow);
        pthread_join(t, NULL);
        TAP_IS(j.rc, 0, "SE-1: client %d done (%s)", i, tlsk_err_name(j.rc));
    }
    tlsk_loop_run(loop, 100);
    TAP_IS(st.secure, 3, "SE-1: secureConnection once per handshake (3)");
    TAP_IS(st.client_errors, 0, "SE-1: no clientError");
    TAP_OK(st.ci[0].authorized == 1 && st.ci[0].authz_err[0] == 0,
           "SE-1: inside the callback: client with agent1 authorized (%d %s)", st.ci[0].authorized,
           st.ci[0].authz_err);
    TAP_OK(st.ci[1].authorized == 0 && strcmp(st.ci[1].authz_err, "NO_PEER_CERTIFICATE") == 0,
           "SE-1: inside the callback: client without a certificate: NO_PEER_CERTIFICATE (%d %s)",
           st.ci[1].authorized, st.ci[1].authz_err);
    TAP_OK(st.ci[0].has_servername && strcmp(st.ci[0].servername, "localhost") == 0,
           "SE-1: servername final inside the callback (%s)", st.ci[0].servername);
    TAP_OK(st.ci[2].version[0] == 'T', "SE-1: version known inside the callback (%s)",
           st.ci[2].version);
    TAP_IS(st.closes, 3, "SE-1: 3 close events");
    srv_close(loop, &st, "SE-1");
    tlsk_context_free(sctx);
    tlsk_context_free(with);
    tlsk_context_free(without);
}

/* LS-1, AD-1 */
static bool have_ipv6(void)
{
    int fd = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in6 a = { .sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT };
    bool ok = fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof a) == 0;
    if (fd >= 0) {
        close(fd);
    }
    return ok;
}

static void addr_case(struct tlsk_context *sctx, struct tlsk_context *cctx, const char *listen_host,
                      const char *connect_host, const char *want_local, const char *want_remote)
{
    struct tlsk_loop *loop;
    struct srvstate st;
    char host[64] = "";
    int port = 0, rc;
    struct cjob j = { .ctx = cctx, .servername = "localhost", .len = 10 };
    pthread_t t;
    const char *lh = listen_host ? listen_host : "(all)";

    rc = srv_open(&loop, &st, sctx, listen_host, 0, &port);
    TAP_IS(rc, 0, "LS-1: listen %s port 0", lh);
    if (rc != 0) {
        if (loop) {
            srv_close(loop, &st, "LS-1");
        }
        return;
    }
    tlsk_server_address(st.srv, host, sizeof host, &port);
    if (listen_host) {
        TAP_OK(strcmp(host, want_local) == 0 && port > 0, "LS-1: address %s port %d", host, port);
    } else {
        tap_diag("LS-1: listening with no host on %s port %d", host, port);
    }
    j.host = connect_host;
    j.port = port;
    h_spawn(&t, echo_client, &j);
    run_until_done(loop, &j.done, 15000 * g_slow);
    pthread_join(t, NULL);
    TAP_IS(j.rc, 0, "AD-1 %s -> %s: echo (%s)", connect_host, lh, tlsk_err_name(j.rc));
    TAP_IS(st.ci[0].addr_rc, 0, "AD-1 %s -> %s: tlsk_socket_address", connect_host, lh);
    TAP_OK(strcmp(st.ci[0].rhost, want_remote) == 0, "AD-1 %s -> %s: remote address %s (want %s)",
           connect_host, lh, st.ci[0].rhost, want_remote);
    TAP_IS(st.ci[0].rport, j.lport, "AD-1 %s -> %s: remote port == the client's local port",
           connect_host, lh);
    TAP_IS(st.ci[0].lport, port, "AD-1 %s -> %s: local port == the listening port", connect_host,
           lh);
    if (listen_host) {
        /* LS-1: the same port again is in use. */
        struct tlsk_server *other = NULL;
        struct tlsk_server_options o = { .ctx = sctx };
        char p[16];
        snprintf(p, sizeof p, "%d", port);
        tlsk_server_new(&other, loop, &o, NULL, NULL);
        rc = tlsk_server_listen(other, listen_host, p, 16);
        TAP_OK(rc < 0, "LS-1: listen on %s port %d again: %s", listen_host, port,
               tlsk_err_name(rc));
        tlsk_server_close(other);
    }
    srv_close(loop, &st, "LS-1/AD-1");
}

static void test_address(void)
{
    struct tlsk_context *sctx = mkctx("agent1", NULL, 0, NULL, 0);
    struct tlsk_context *cctx = mkctx(NULL, "ca1-cert.pem", 0, NULL, 0);

    addr_case(sctx, cctx, "127.0.0.1", "127.0.0.1", "127.0.0.1", "127.0.0.1");
    if (have_ipv6()) {
        addr_case(sctx, cctx, "::1", "::1", "::1", "::1");
        addr_case(sctx, cctx, NULL, "127.0.0.1", NULL, "::ffff:127.0.0.1");
    } else {
        tap_diag("no IPv6 loopback here: ::1 and dual-stack cases skipped");
    }
    tlsk_context_free(sctx);
    tlsk_context_free(cctx);
}

/* CL-1 */
struct cl1 {
    int port;
    struct tlsk_context *ctx;
    atomic_int phase; /* 1: first echo done, 2: server closed, 3: second echo done */
    int rc1, rc2, rc3;
    atomic_int done;
};

static void *cl1_client(void *arg)
{
    struct cl1 *c = arg;
    struct tlsk_socket_options o = { .servername = "localhost" };
    struct tlsk_socket *s = NULL;
    char port[16], b[16];
    int64_t end;

    snprintf(port, sizeof port, "%d", c->port);
    c->rc1 = tlsk_connect(&s, c->ctx, "127.0.0.1", port, &o);
    if (c->rc1 == 0 && (c->rc1 = h_handshake(s)) == 0 &&
        (c->rc1 = h_send_pattern(s, 9, 1000)) == 0) {
        c->rc1 = h_recv_pattern(s, 9, 1000);
    }
    atomic_store(&c->phase, 1);
    end = now_ms() + 10000 * g_slow;
    while (atomic_load(&c->phase) < 2 && now_ms() < end) {
        usleep(5000);
    }
    if (c->rc1 == 0 && (c->rc2 = h_send_pattern(s, 10, 5000)) == 0) {
        c->rc2 = h_recv_pattern(s, 10, 5000);
    }
    atomic_store(&c->phase, 3);
    usleep(200000); /* the server must not close while we are connected */
    if (c->rc1 == 0 && (c->rc3 = h_shutdown(s)) == 0) {
        c->rc3 = (int)h_read_some(s, b, sizeof b);
    }
    tlsk_socket_free(s);
    atomic_store(&c->done, 1);
    return NULL;
}

static void test_cl1(void)
{
    struct tlsk_context *sctx = mkctx("agent1", NULL, 0, NULL, 0);
    struct cl1 c = { .ctx = mkctx(NULL, "ca1-cert.pem", 0, NULL, 0) };
    struct tlsk_loop *loop;
    struct srvstate st;
    pthread_t t;
    int port, fd, err = 0, closed_early;
    int64_t end;

    if (srv_open(&loop, &st, sctx, "127.0.0.1", 0, &port) != 0) {
        TAP_OK(0, "CL-1: server");
        return;
    }
    c.port = port;
    h_spawn(&t, cl1_client, &c);
    end = now_ms() + 15000 * g_slow;
    while (atomic_load(&c.phase) < 1 && now_ms() < end) {
        tlsk_loop_run(loop, 20);
    }
    TAP_IS(c.rc1, 0, "CL-1: connection open and echoing (%s)", tlsk_err_name(c.rc1));
    tlsk_server_close(st.srv);
    tlsk_loop_run(loop, 50);
    fd = raw_connect(port);
    err = fd < 0 ? errno : 0;
    closed_early = fd >= 0 ? closed_while_running(loop, fd, 500) : 1;
    TAP_OK(fd < 0 || closed_early, "CL-1: a new connection after close() is refused (%s)",
           fd < 0 ? strerror(err) : "connected, then closed");
    if (fd >= 0) {
        close(fd);
    }
    TAP_IS(st.server_closed, 0, "CL-1: no close event while a connection is open");
    atomic_store(&c.phase, 2);
    while (atomic_load(&c.phase) < 3 && now_ms() < end) {
        tlsk_loop_run(loop, 20);
    }
    TAP_IS(c.rc2, 0, "CL-1: the open connection keeps echoing after close() (%s)",
           tlsk_err_name(c.rc2));
    tlsk_loop_run(loop, 100);
    TAP_IS(st.server_closed, 0, "CL-1: still no close event");
    run_until_done(loop, &c.done, 10000 * g_slow);
    pthread_join(t, NULL);
    end = now_ms() + 3000 * g_slow;
    while (!st.server_closed && now_ms() < end) {
        tlsk_loop_run(loop, 20);
    }
    TAP_IS(c.rc3, 0, "CL-1: the connection ended with close_notify both ways (%s)",
           tlsk_err_name(c.rc3));
    TAP_IS(st.server_closed, 1, "CL-1: close event once the connection ended");
    TAP_IS(st.closes_at_server_close, 1, "CL-1: ... after the connection's close event");
    TAP_IS(tlsk_loop_free(loop), 0, "CL-1: loop freed");
    tlsk_context_free(sctx);
    tlsk_context_free(c.ctx);
}

/* ---------------------------------------------------------------------------------------- */
/* AC-1..3: addContext with openssl s_client                                                */

struct sc_result {
    int status;
    char cn[64];
    int verify; /* Verify return code, -1 when absent */
};

static void s_client_once(struct tlsk_loop *loop, int port, const char *sni, struct sc_result *r)
{
    char addr[64], ca[512];
    struct kid k;
    char *out, *p;

    snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
    snprintf(ca, sizeof ca, "%s", h_fixture("ca1-cert.pem"));
    char *with[] = { "openssl", "s_client", "-connect", addr, "-CAfile", ca, "-servername",
                     (char *)sni, "-verify_hostname", (char *)sni, NULL };
    char *none[] = { "openssl", "s_client", "-connect", addr, "-CAfile", ca, "-noservername",
                     NULL };
    memset(r, 0, sizeof *r);
    r->verify = -1;
    kid_start(&k, sni ? with : none, -1);
    r->status = kid_run(&k, loop, 10000 * g_slow);
    out = kid_output(&k);
    if (!out) {
        return;
    }
    /* OpenSSL 3.0: "subject=O = tlsk test, CN = x.test.com" */
    if ((p = strstr(out, "\nsubject=")) && (p = strstr(p, "CN = "))) {
        sscanf(p + 5, "%63[^,\n]", r->cn);
    }
    if ((p = strstr(out, "Verify return code: "))) {
        r->verify = atoi(p + 20);
    }
    free(out);
}

static void test_add_context(void)
{
    struct tlsk_context *def = mkctx("sni-default", NULL, 0, NULL, 0);
    struct tlsk_context *a = mkctx("sni-a", NULL, 0, NULL, 0);
    struct tlsk_context *wild = mkctx("sni-wild", NULL, 0, NULL, 0);
    struct tlsk_context *x = mkctx("sni-x", NULL, 0, NULL, 0);
    static const struct {
        const char *sni, *cn;
    } table[] = {
        { "a.example.com", "a.example.com" }, { "A.EXAMPLE.COM", "a.example.com" },
        { "x.test.com", "*.test.com" },       { "X.TEST.COM", "*.test.com" },
        { "a.b.test.com", "localhost" },      { "test.com", "localhost" },
        { "c.wrong.com", "localhost" },       { NULL, "localhost" },
    };
    struct tlsk_loop *loop;
    struct srvstate st;
    struct sc_result r;
    int port, n;

    if (!def || !a || !wild || !x || srv_open(&loop, &st, def, "127.0.0.1", 0, &port) != 0) {
        TAP_OK(0, "AC: setup");
        return;
    }
    TAP_IS(tlsk_server_add_context(st.srv, "a.example.com", a), 0, "AC: addContext a.example.com");
    TAP_IS(tlsk_server_add_context(st.srv, "*.test.com", wild), 0, "AC: addContext *.test.com");
    n = (int)(sizeof table / sizeof table[0]);
    for (int i = 0; i < n; i++) {
        s_client_once(loop, port, table[i].sni, &r);
        TAP_OK(strcmp(r.cn, table[i].cn) == 0, "AC table: SNI %s served %s (want %s)",
               table[i].sni ? table[i].sni : "(none)", r.cn, table[i].cn);
    }
    tlsk_loop_run(loop, 100);
    /* AC-3: servername values are exactly the names sent. */
    {
        int ok = 1;
        for (int i = 0; i < n && i < 16; i++) {
            const struct conninfo *c = &st.ci[i];
            bool want = table[i].sni != NULL;
            if (c->has_servername != want || (want && strcmp(c->servername, table[i].sni) != 0)) {
                tap_diag("connection %d: servername %s%s, sent %s", i,
                         c->has_servername ? "" : "(none)", c->servername,
                         table[i].sni ? table[i].sni : "(none)");
                ok = 0;
            }
        }
        TAP_OK(ok && st.secure == n, "AC-3: the server's servername is exactly the name sent "
                                     "(case kept, NULL without SNI) (%d connections)", st.secure);
    }
    /* AC-1: verification with -verify_hostname. */
    s_client_once(loop, port, "x.test.com", &r);
    TAP_IS(r.verify, 0, "AC-1: x.test.com verifies (Verify return code 0)");
    s_client_once(loop, port, "a.b.test.com", &r);
    TAP_IS(r.verify, 62, "AC-1: a.b.test.com served the default: hostname mismatch (62)");

    /* AC-3: invalid patterns. */
    TAP_OK(tlsk_server_add_context(st.srv, NULL, a) < 0, "AC-3: addContext(NULL): error");
    TAP_OK(tlsk_server_add_context(st.srv, "", a) < 0, "AC-3: addContext(\"\"): error");
    TAP_OK(tlsk_server_add_context(st.srv, "127.0.0.1", a) < 0,
           "AC-3: addContext(IP literal): error");
    TAP_OK(tlsk_server_add_context(st.srv, "a.*.com", a) < 0, "AC-3: addContext(a.*.com): error");
    TAP_OK(tlsk_server_add_context(st.srv, "x*.test.com", a) < 0,
           "AC-3: addContext(x*.test.com): error");
    srv_close(loop, &st, "AC-1");

    /* AC-2: overlap, both orders, and replacement. */
    for (int order = 0; order < 3; order++) {
        if (srv_open(&loop, &st, def, "127.0.0.1", 0, &port) != 0) {
            TAP_OK(0, "AC-2: server");
            break;
        }
        if (order == 0) {
            tlsk_server_add_context(st.srv, "*.test.com", wild);
            tlsk_server_add_context(st.srv, "x.test.com", x);
        } else if (order == 1) {
            tlsk_server_add_context(st.srv, "x.test.com", x);
            tlsk_server_add_context(st.srv, "*.test.com", wild);
        } else {
            tlsk_server_add_context(st.srv, "x.test.com", x);
            tlsk_server_add_context(st.srv, "x.test.com", a); /* replaces */
        }
        s_client_once(loop, port, "x.test.com", &r);
        if (order < 2) {
            TAP_OK(strcmp(r.cn, "x.test.com") == 0, "AC-2 (%s): x.test.com -> sni-x (%s)",
                   order ? "exact first" : "wildcard first", r.cn);
            s_client_once(loop, port, "y.test.com", &r);
            TAP_OK(strcmp(r.cn, "*.test.com") == 0, "AC-2 (%s): y.test.com -> sni-wild (%s)",
                   order ? "exact first" : "wildcard first", r.cn);
        } else {
            TAP_OK(strcmp(r.cn, "a.example.com") == 0,
                   "AC-2: adding x.test.com again replaces it (%s)", r.cn);
        }
        srv_close(loop, &st, "AC-2");
    }
    tlsk_context_free(def);
    tlsk_context_free(a);
    tlsk_context_free(wild);
    tlsk_context_free(x);
}

/* ---------------------------------------------------------------------------------------- */
/* BW-1..4                                                                                  */

struct relay {
    int lfd, port;
    int target;
    uint64_t c2s, s2c;
    int rc;
};

/* Accept one connection, connect to target, copy both ways counting, until both ends close. */
static void *relay_main(void *arg)
{
    struct relay *r = arg;
    int c = accept4(r->lfd, NULL, NULL, SOCK_CLOEXEC), s = -1;
    bool c_eof = false, s_eof = false;
    char buf[65536];

    if (c < 0 || (s = raw_connect(r->target)) < 0) {
        r->rc = -errno;
        goto out;
    }
    while (!(c_eof && s_eof)) {
        struct pollfd p[2] = { { .fd = c_eof ? -1 : c, .events = POLLIN },
                               { .fd = s_eof ? -1 : s, .events = POLLIN } };
        if (poll(p, 2, 30000) <= 0) {
            r->rc = -ETIMEDOUT;
            break;
        }
        for (int i = 0; i < 2; i++) {
            int from = i ? s : c, to = i ? c : s;
            ssize_t n;
            if (!p[i].revents) {
                continue;
            }
            n = read(from, buf, sizeof buf);
            if (n <= 0) {
                shutdown(to, SHUT_WR);
                if (i) {
                    s_eof = true;
                } else {
                    c_eof = true;
                }
                continue;
            }
            for (ssize_t off = 0; off < n;) {
                ssize_t w = write(to, buf + off, (size_t)(n - off));
                if (w <= 0) {
                    r->rc = -errno;
                    goto out;
                }
                off += w;
            }
            if (i) {
                r->s2c += (uint64_t)n;
            } else {
                r->c2s += (uint64_t)n;
            }
        }
    }
out:
    if (c >= 0) {
        close(c);
    }
    if (s >= 0) {
        close(s);
    }
    return NULL;
}

struct bwjob {
    int port;
    struct tlsk_context *ctx;
    enum tlsk_offload_policy pol;
    int file;
    /* deltas */
    long long d1000, d100k, dfile, dclose;
    uint64_t written, read;
    int rc;
    struct tlsk_offload off;
    char cipher[64];
    atomic_int done;
};

static void *bw_client(void *arg)
{
    struct bwjob *j = arg;
    struct tlsk_socket_options o = { .servername = "localhost", .offload = j->pol };
    struct tlsk_socket *s = NULL;
    static unsigned char big[100000];
    char port[16], b[64];
    uint64_t w0;

    snprintf(port, sizeof port, "%d", j->port);
    memset(big, 'b', sizeof big);
    if ((j->rc = tlsk_connect(&s, j->ctx, "127.0.0.1", port, &o)) != 0 ||
        (j->rc = h_handshake(s)) != 0) {
        goto out;
    }
    j->off = tlsk_socket_offload(s);
    snprintf(j->cipher, sizeof j->cipher, "%s", tlsk_socket_cipher(s));
    w0 = tlsk_socket_bytes_written(s);
    if ((j->rc = h_write_all(s, big, 1000)) != 0) {
        goto out;
    }
    j->d1000 = (long long)(tlsk_socket_bytes_written(s) - w0);
    w0 = tlsk_socket_bytes_written(s);
    {
        ssize_t n = tlsk_socket_write(s, big, sizeof big); /* one write call */
        if (n != (ssize_t)sizeof big) {
            j->rc = n < 0 ? (int)n : -EIO;
            goto out;
        }
    }
    j->d100k = (long long)(tlsk_socket_bytes_written(s) - w0);
    w0 = tlsk_socket_bytes_written(s);
    if ((j->rc = h_sendfile_all(s, j->file, 1u << 20)) != 0) {
        goto out;
    }
    j->dfile = (long long)(tlsk_socket_bytes_written(s) - w0);
    w0 = tlsk_socket_bytes_written(s);
    if ((j->rc = h_shutdown(s)) != 0) {
        goto out;
    }
    j->dclose = (long long)(tlsk_socket_bytes_written(s) - w0);
    j->rc = (int)h_read_some(s, b, sizeof b); /* the server's close_notify */
    j->written = tlsk_socket_bytes_written(s);
    j->read = tlsk_socket_bytes_read(s);
out:
    tlsk_socket_free(s);
    atomic_store(&j->done, 1);
    return NULL;
}

static void test_bytes_written(enum tlsk_offload_policy pol)
{
    static const struct {
        int version;
        const char *suite;
        int ovh, close;
    } cases[] = {
        { TLSK_TLS1_3, "TLS_AES_128_GCM_SHA256", 22, 24 },
        { TLSK_TLS1_2, "ECDHE-RSA-AES128-GCM-SHA256", 29, 31 },
        { TLSK_TLS1_2, "ECDHE-RSA-CHACHA20-POLY1305", 21, 23 },
    };
    struct tlsk_context *sctx = mkctx("agent1", NULL, 0, NULL, 0);
    int file = h_pattern_file(4, 1u << 20);

    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char tag[96];
        const char *n = tag;
        int ovh = cases[i].ovh;
        struct bwjob j = { .ctx = mkctx(NULL, "ca1-cert.pem", cases[i].version, cases[i].suite,
                                        0),
                           .file = file,
                           .pol = pol };
        struct relay r = { 0 };
        struct tlsk_loop *loop;
        struct srvstate st;
        pthread_t tr, tc;
        int sport;

        snprintf(tag, sizeof tag, "%s (client offload %s)", cases[i].suite,
                 pol == TLSK_OFFLOAD_OFF ? "off" : "auto");
        if (!j.ctx || srv_open(&loop, &st, sctx, "127.0.0.1", 0, &sport) != 0) {
            TAP_OK(0, "BW %s: setup", n);
            continue;
        }
        st.mode = MODE_SINK;
        r.target = sport;
        r.lfd = h_listen(&r.port);
        j.port = r.port;
        h_spawn(&tr, relay_main, &r);
        h_spawn(&tc, bw_client, &j);
        run_until_done(loop, &j.done, 60000 * g_slow);
        pthread_join(tc, NULL);
        tlsk_loop_run(loop, 100);
        pthread_join(tr, NULL);
        close(r.lfd);
        TAP_IS(j.rc, 0, "BW %s: client ran to the server's close_notify (%s)", n,
               tlsk_err_name(j.rc));
        TAP_OK(strcmp(j.cipher, cases[i].suite) == 0, "BW %s: negotiated %s", n, j.cipher);
        if (pol == TLSK_OFFLOAD_OFF) {
            TAP_OK(j.off.tx.mode == TLSK_MODE_USERSPACE && j.off.tx.reason == TLSK_REASON_POLICY,
                   "BW %s: TX in userspace by policy (%s)", n, tlsk_reason_name(j.off.tx.reason));
        } else if (g_ktls) {
            TAP_OK(j.off.tx.mode == TLSK_MODE_KERNEL, "BW %s: kTLS: TX in the kernel (%s)", n,
                   tlsk_reason_name(j.off.tx.reason));
        }
        TAP_IS(j.d1000, 1000 + ovh, "BW-1 %s: 1000 bytes -> %d", n, 1000 + ovh);
        TAP_IS(j.d100k, 100000 + 7 * ovh, "BW-2 %s: one write of 100 000 -> 7 records", n);
        TAP_IS(j.dfile, (1 << 20) + 64 * ovh, "BW-2 %s: sendfile 1 MiB -> 64 records", n);
        TAP_IS(j.dclose, cases[i].close, "BW-3 %s: close_notify adds %d", n, cases[i].close);
        TAP_IS(j.written, r.c2s, "BW-4 %s: bytes_written == the relay's count client->server", n);
        TAP_IS(j.read, r.s2c, "BW-4 %s: bytes_read == the relay's count server->client", n);
        TAP_IS(st.ci[0].bytes_read, r.c2s, "BW-4 %s: the server's bytes_read == the relay's count",
               n);
        TAP_IS(st.got, 1000 + 100000 + (1 << 20), "BW %s: the server received every byte", n);
        srv_close(loop, &st, "BW");
        tlsk_context_free(j.ctx);
    }
    close(file);
    tlsk_context_free(sctx);
}

int main(void)
{
    g_ktls = h_expect_ktls();
    g_slow = g_ktls ? 5 : 1;
    signal(SIGPIPE, SIG_IGN);
    signal(SIGALRM, on_alarm);
    alarm(g_ktls ? 600 : 180);
    test_client_errors();
    test_ce4();
    test_se1();
    test_address();
    test_cl1();
    test_add_context();
    test_bytes_written(TLSK_OFFLOAD_DEFAULT);
    test_bytes_written(TLSK_OFFLOAD_OFF);
    return tap_done();
}
