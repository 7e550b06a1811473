/*
 * test_load.c - the evented server under load (issue acceptance "Under load").
 *
 *   Phase 1  a tlsk_server on the built-in loop (main thread), handshake timeout 1000 ms
 *            (2000 ms in the kernel tier).  A helper thread opens 1000 TCP connections (200
 *            in the kernel tier: user-mode Linux is slow) in batches and sends nothing; each
 *            must be closed by the timeout with exactly one clientError -ETIMEDOUT (matched
 *            per connection by its port).  Meanwhile a client thread completes 100 (20) full
 *            handshakes plus a small echo: all secureConnection, no error.
 *   Phase 2  max_connections 50 and 80 silent connections: exactly 50 held at the peak, the
 *            other 30 closed at accept; once the peers go, connections drop to 0.
 *   After    tlsk_server_connections() == 0, the loop frees, and the process's fd count
 *            (/proc/self/fd) is back to its starting value.  Run it under ASan/LSan by hand
 *            for leaks (make SANITIZE=address,undefined tests).
 */
#include <dirent.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>

#include "harness.h"
#include "tap.h"

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int count_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    struct dirent *e;
    int n = 0;

    if (!d) {
        return -1;
    }
    while ((e = readdir(d))) {
        if (e->d_name[0] != '.') {
            n++;
        }
    }
    closedir(d);
    return n - 1;
}

/* ---------------------------------------------------------------------------------------- */
/* Server side                                                                              */

struct srvstate {
    struct tlsk_server *srv;
    int secure, closes, server_closed;
    int errors_timeout, errors_other, last_other;
    int64_t first_err_ms, last_err_ms;
    unsigned short errs_by_port[65536]; /* clientError per remote port */
    unsigned peak;
};

static void on_data(struct tlsk_socket *s, const void *buf, size_t len, void *ud)
{
    (void)ud;
    tlsk_socket_send(s, buf, len);
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
    (void)s;
    st->closes++;
}

static void on_secure(struct tlsk_server *srv, struct tlsk_socket *s, void *data)
{
    struct srvstate *st = data;
    static const struct tlsk_socket_callbacks cb = { .data = on_data, .end = on_end,
                                                     .close = on_close };
    st->secure++;
    if (tlsk_server_connections(srv) > st->peak) {
        st->peak = tlsk_server_connections(srv);
    }
    tlsk_socket_set_data(s, st);
    tlsk_socket_set_callbacks(s, &cb);
}

static void on_client_error(struct tlsk_server *srv, int err, struct tlsk_socket *s, void *data)
{
    struct srvstate *st = data;
    char host[64];
    int port = 0;

    (void)srv;
    if (tlsk_socket_address(s, 1, host, sizeof host, &port) == 0 && port > 0 && port < 65536) {
        st->errs_by_port[port]++;
    }
    if (err == -ETIMEDOUT) {
        st->errors_timeout++;
    } else {
        st->errors_other++;
        st->last_other = err;
    }
    if (!st->first_err_ms) {
        st->first_err_ms = now_ms();
    }
    st->last_err_ms = now_ms();
}

static void on_server_close(struct tlsk_server *srv, void *data)
{
    struct srvstate *st = data;
    (void)srv;
    st->server_closed++;
}

static const struct tlsk_server_callbacks server_cb = { .secure_connection = on_secure,
                                                         .client_error = on_client_error,
                                                         .close = on_server_close };

static struct tlsk_server *mk_server(struct tlsk_loop *loop, struct tlsk_context *ctx,
                                     struct srvstate *st, int timeout_ms, int maxc, int *port)
{
    struct tlsk_server_options o = { .ctx = ctx, .handshake_timeout_ms = timeout_ms,
                                     .max_connections = maxc };
    struct tlsk_server *srv = NULL;

    if (tlsk_server_new(&srv, loop, &o, &server_cb, st) != 0) {
        return NULL;
    }
    if (tlsk_server_listen(srv, "127.0.0.1", "0", 4096) != 0 ||
        tlsk_server_address(srv, NULL, 0, port) != 0) {
        tlsk_server_close(srv);
        return NULL;
    }
    st->srv = srv;
    return srv;
}

/* ---------------------------------------------------------------------------------------- */
/* Peers                                                                                    */

static int raw_connect(int port)
{
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static int local_port(int fd)
{
    struct sockaddr_in a;
    socklen_t l = sizeof a;
    return getsockname(fd, (struct sockaddr *)&a, &l) == 0 ? ntohs(a.sin_port) : -1;
}

struct opener {
    int port, n, batch, batch_gap_ms, wait_ms;
    int *fds;
    int opened, failed_connect;
    int closed;         /* peers that saw EOF or a reset */
    int64_t t_open_done, t_all_closed;
    atomic_int done;
};

/* Open n silent connections, then wait (up to wait_ms) until the server closed each. */
static void *opener_main(void *arg)
{
    struct opener *o = arg;
    struct pollfd *p = calloc((size_t)o->n, sizeof *p);
    int64_t end;

    for (int i = 0; i < o->n; i++) {
        o->fds[i] = raw_connect(o->port);
        if (o->fds[i] < 0) {
            o->failed_connect++;
        } else {
            o->opened++;
        }
        if ((i + 1) % o->batch == 0 && o->batch_gap_ms) {
            usleep((useconds_t)o->batch_gap_ms * 1000);
        }
    }
    o->t_open_done = now_ms();
    end = now_ms() + o->wait_ms;
    while (o->closed < o->opened && now_ms() < end) {
        int n = 0;
        for (int i = 0; i < o->n; i++) {
            if (o->fds[i] >= 0) {
                p[n++] = (struct pollfd){ .fd = o->fds[i], .events = POLLIN };
            }
        }
        if (poll(p, (nfds_t)n, 100) <= 0) {
            continue;
        }
        for (int k = 0; k < n; k++) {
            char b[64];
            if (!p[k].revents) {
                continue;
            }
            if (read(p[k].fd, b, sizeof b) <= 0) {
                for (int i = 0; i < o->n; i++) {
                    if (o->fds[i] == p[k].fd) {
                        o->fds[i] = -1 - o->fds[i]; /* remember it closed; fd kept open */
                        break;
                    }
                }
                o->closed++;
            }
        }
    }
    o->t_all_closed = now_ms();
    free(p);
    atomic_store(&o->done, 1);
    return NULL;
}

static void opener_close_all(struct opener *o)
{
    for (int i = 0; i < o->n; i++) {
        int fd = o->fds[i] >= 0 ? o->fds[i] : -1 - o->fds[i];
        if (fd >= 0) {
            close(fd);
        }
    }
}

struct clients {
    int port, n;
    int ok, failed, first_err;
    int64_t max_ms;
    atomic_int done;
};

static void *clients_main(void *arg)
{
    struct clients *c = arg;
    struct tlsk_context *ctx = h_client_ctx(0, NULL, TLSK_OFFLOAD_DEFAULT, 0);
    char port[16];

    snprintf(port, sizeof port, "%d", c->port);
    for (int i = 0; i < c->n; i++) {
        struct tlsk_socket *s = NULL;
        unsigned char b[200];
        int64_t t0 = now_ms();
        int rc = tlsk_connect(&s, ctx, "localhost", port, NULL);

        if (rc == 0) {
            rc = h_handshake(s);
        }
        if (rc == 0 && (rc = h_send_pattern(s, (uint32_t)i, 200)) == 0 &&
            (rc = h_recv_pattern(s, (uint32_t)i, 200)) == 0 && (rc = h_shutdown(s)) == 0) {
            rc = (int)h_read_some(s, b, sizeof b);
        }
        tlsk_socket_free(s);
        if (rc == 0) {
            c->ok++;
        } else {
            c->failed++;
            if (!c->first_err) {
                c->first_err = rc;
            }
        }
        if (now_ms() - t0 > c->max_ms) {
            c->max_ms = now_ms() - t0;
        }
    }
    tlsk_context_free(ctx);
    atomic_store(&c->done, 1);
    return NULL;
}

/* ---------------------------------------------------------------------------------------- */

static void phase1(struct tlsk_context *sctx, bool uml)
{
    static struct srvstate st;
    struct tlsk_loop *loop = NULL;
    int nsilent = uml ? 200 : 1000, nhs = uml ? 20 : 100, timeout = uml ? 2000 : 1000, port;
    struct opener o = { .n = nsilent, .batch = 50, .batch_gap_ms = 20,
                        .wait_ms = timeout + (uml ? 20000 : 8000) };
    struct clients c = { .n = nhs };
    pthread_t to, tc;
    int64_t t0, end;
    int multi = 0, missing = 0, stray = 0;

    memset(&st, 0, sizeof st);
    o.fds = calloc((size_t)nsilent, sizeof *o.fds);
    tlsk_loop_new(&loop);
    if (!TAP_OK(mk_server(loop, sctx, &st, timeout, 0, &port), "server, handshakeTimeout %d",
                timeout)) {
        return;
    }
    o.port = c.port = port;
    t0 = now_ms();
    h_spawn(&to, opener_main, &o);
    h_spawn(&tc, clients_main, &c);
    end = now_ms() + o.wait_ms + 30000;
    while (now_ms() < end) {
        tlsk_loop_run(loop, 50);
        if (tlsk_server_connections(st.srv) > st.peak) {
            st.peak = tlsk_server_connections(st.srv);
        }
        if (atomic_load(&o.done) && atomic_load(&c.done) &&
            tlsk_server_connections(st.srv) == 0) {
            break;
        }
    }
    pthread_join(to, NULL);
    pthread_join(tc, NULL);
    tap_diag("phase 1: %d silent opened in %lld ms, all closed after %lld ms; %d handshakes "
             "(slowest %lld ms); peak %u connections; clientErrors from %lld to %lld ms",
             o.opened, (long long)(o.t_open_done - t0), (long long)(o.t_all_closed - t0), c.ok,
             (long long)c.max_ms, st.peak, (long long)(st.first_err_ms - t0),
             (long long)(st.last_err_ms - t0));

    TAP_IS(o.opened, nsilent, "%d silent TCP connections opened", nsilent);
    TAP_IS(o.closed, nsilent, "every silent connection was closed by the server");
    TAP_IS(st.errors_timeout, nsilent, "%d clientError -ETIMEDOUT", nsilent);
    TAP_IS(st.errors_other, 0, "no other clientError (last %s)", tlsk_err_name(st.last_other));
    for (int i = 0; i < nsilent; i++) {
        int fd = o.fds[i] >= 0 ? o.fds[i] : -1 - o.fds[i];
        int lp = local_port(fd);
        if (lp <= 0) {
            continue;
        }
        if (st.errs_by_port[lp] == 0) {
            missing++;
        } else if (st.errs_by_port[lp] > 1) {
            multi++;
        }
        st.errs_by_port[lp] = 0;
    }
    for (int p = 0; p < 65536; p++) {
        stray += st.errs_by_port[p];
    }
    TAP_OK(missing == 0 && multi == 0, "exactly one clientError per silent connection (%d "
                                       "without, %d with more)", missing, multi);
    TAP_IS(stray, 0, "no clientError for any other connection");
    TAP_OK(st.first_err_ms - t0 >= timeout, "no timeout before %d ms (first after %lld)", timeout,
           (long long)(st.first_err_ms - t0));
    TAP_IS(c.ok, nhs, "%d concurrent clients completed handshake + echo + close_notify", nhs);
    TAP_IS(c.failed, 0, "no client failed (first error %s)", tlsk_err_name(c.first_err));
    TAP_IS(st.secure, nhs, "%d secureConnection", nhs);
    TAP_IS(st.closes, nhs, "%d close events for them", nhs);
    TAP_IS(tlsk_server_connections(st.srv), 0, "connections back to 0");
    opener_close_all(&o);
    free(o.fds);
    tlsk_server_close(st.srv);
    tlsk_loop_run(loop, 2000);
    TAP_IS(st.server_closed, 1, "server close event");
    TAP_IS(tlsk_loop_free(loop), 0, "loop freed");
}

static void phase2(struct tlsk_context *sctx)
{
    static struct srvstate st;
    struct tlsk_loop *loop = NULL;
    int port, fds[80], n = 80, early = 0;
    int64_t end;

    memset(&st, 0, sizeof st);
    tlsk_loop_new(&loop);
    if (!TAP_OK(mk_server(loop, sctx, &st, 10000, 50, &port), "server with maxConnections 50")) {
        return;
    }
    for (int i = 0; i < n; i++) {
        fds[i] = raw_connect(port);
        if (i % 10 == 9) {
            tlsk_loop_run(loop, 10);
        }
    }
    end = now_ms() + 1000;
    while (now_ms() < end) {
        tlsk_loop_run(loop, 50);
        if (tlsk_server_connections(st.srv) > st.peak) {
            st.peak = tlsk_server_connections(st.srv);
        }
    }
    TAP_IS(st.peak, 50, "maxConnections: peak of exactly 50 connections");
    TAP_IS(tlsk_server_connections(st.srv), 50, "50 held");
    for (int i = 0; i < n; i++) {
        struct pollfd p = { .fd = fds[i], .events = POLLIN };
        char b[8];
        if (fds[i] >= 0 && poll(&p, 1, 0) == 1 && read(fds[i], b, sizeof b) <= 0) {
            early++;
        }
    }
    TAP_IS(early, n - 50, "the other %d were closed at accept", n - 50);
    TAP_IS(st.errors_timeout + st.errors_other, 0, "no clientError for connections never held");
    for (int i = 0; i < n; i++) {
        if (fds[i] >= 0) {
            close(fds[i]);
        }
    }
    end = now_ms() + 5000;
    while (now_ms() < end && tlsk_server_connections(st.srv) > 0) {
        tlsk_loop_run(loop, 50);
    }
    TAP_IS(tlsk_server_connections(st.srv), 0, "peers gone: 0 connections");
    TAP_IS(st.errors_other, 50, "a clientError for each held connection that closed early");
    TAP_IS(st.last_other, -ECONNRESET, "... -ECONNRESET");
    tlsk_server_close(st.srv);
    tlsk_loop_run(loop, 2000);
    TAP_IS(st.server_closed, 1, "server close event");
    TAP_IS(tlsk_loop_free(loop), 0, "loop freed");
}

static void on_alarm(int sig)
{
    static const char msg[] = "Bail out! test_load: timed out\n";
    (void)sig;
    if (write(1, msg, sizeof msg - 1) < 0) {
        /* nothing to do */
    }
    _exit(1);
}

int main(void)
{
    struct rlimit rl;
    struct tlsk_context *sctx;
    bool uml = h_expect_ktls();
    int fds0;

    signal(SIGPIPE, SIG_IGN);
    signal(SIGALRM, on_alarm);
    alarm(uml ? 400 : 120);
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < 4096) {
        if (rl.rlim_max < 4096) {
            rl.rlim_max = 4096; /* works as root; otherwise the soft limit below fails */
        }
        rl.rlim_cur = 4096;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0) {
            getrlimit(RLIMIT_NOFILE, &rl);
            rl.rlim_cur = rl.rlim_max;
            setrlimit(RLIMIT_NOFILE, &rl);
        }
    }
    getrlimit(RLIMIT_NOFILE, &rl);
    if (!TAP_OK(rl.rlim_cur >= (uml ? 512u : 2200u), "RLIMIT_NOFILE %llu",
                (unsigned long long)rl.rlim_cur)) {
        return tap_done();
    }
    sctx = h_server_ctx(0, NULL, TLSK_OFFLOAD_DEFAULT, 0);
    if (!sctx) {
        tap_bail("server context");
    }
    (void)tlsk_kernel_probe(); /* cached for the process: opens nothing later */
    fds0 = count_fds();
    tap_diag("tier: %s", uml ? "kernel (scaled down)" : "native");
    phase1(sctx, uml);
    phase2(sctx);
    tlsk_context_free(sctx);
    TAP_IS(count_fds(), fds0, "open fds back to the starting count (%d)", fds0);
    return tap_done();
}
