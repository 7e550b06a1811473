/*
 * test_uv.c - the libuv adapter (include/tlsk/uv.h): the echo server of test_server.c driven
 * by uv_run() instead of tlsk_loop_run(), with three blocking tlsk clients in threads (1 B,
 * 100 KB, 4 MiB), a silent peer closed by the handshake timeout (HT-1, 300 ms), the server's
 * close making uv_run() return by itself, and an evented client on the same uv loop.
 * Afterwards uv_loop_close() succeeds (every uv handle the adapter made is closed) and the
 * fd count is back where it started.  Both tiers.  Needs libuv: link with
 * `pkg-config --libs libuv`.
 */
#include <dirent.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>

#include "tlsk/uv.h"

#include "harness.h"
#include "tap.h"

struct srvstate {
    struct tlsk_server *srv;
    int secure, client_errors, closes, ends, server_closed;
    int last_error;
    char last_detail[256];
    int64_t t_error_ms;
    size_t echoed;
    int close_after;
    struct tlsk_offload off;
};

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
    return n - 1; /* the directory's own fd */
}

static void on_data(struct tlsk_socket *s, const void *buf, size_t len, void *ud)
{
    struct srvstate *st = ud;
    st->echoed += len;
    tlsk_socket_send(s, buf, len);
}

static void on_end(struct tlsk_socket *s, int err, void *ud)
{
    struct srvstate *st = ud;
    (void)err;
    st->ends++;
    tlsk_socket_end(s);
}

static void on_close(struct tlsk_socket *s, void *ud)
{
    struct srvstate *st = ud;
    (void)s;
    st->closes++;
    if (st->close_after && st->closes == st->close_after) {
        tlsk_server_close(st->srv);
    }
}

static void on_secure(struct tlsk_server *srv, struct tlsk_socket *s, void *data)
{
    struct srvstate *st = data;
    static const struct tlsk_socket_callbacks cb = { .data = on_data, .end = on_end,
                                                     .close = on_close };
    (void)srv;
    st->secure++;
    st->off = tlsk_socket_offload(s);
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

struct client_job {
    int port;
    size_t len;
    int rc;
};

static void *echo_client(void *arg)
{
    struct client_job *j = arg;
    struct tlsk_context *c = h_client_ctx(0, NULL, TLSK_OFFLOAD_DEFAULT, 0);
    struct tlsk_socket *s = NULL;
    char port[16], b[16];

    snprintf(port, sizeof port, "%d", j->port);
    j->rc = tlsk_connect(&s, c, "localhost", port, NULL);
    if (j->rc == 0) {
        j->rc = h_handshake(s);
    }
    if (j->rc == 0 && (j->rc = h_send_pattern(s, 7, j->len)) == 0 &&
        (j->rc = h_recv_pattern(s, 7, j->len)) == 0 && (j->rc = h_shutdown(s)) == 0) {
        j->rc = (int)h_read_some(s, b, sizeof b); /* the server's close_notify: 0 */
    }
    tlsk_socket_free(s);
    tlsk_context_free(c);
    return NULL;
}

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

static int closed_within(int fd, int ms)
{
    struct pollfd p = { .fd = fd, .events = POLLIN };
    char b[256];
    if (poll(&p, 1, ms) <= 0) {
        return 0;
    }
    return read(fd, b, sizeof b) <= 0;
}

static struct tlsk_server *mk_server(struct tlsk_loop *loop, struct srvstate *st, int timeout_ms,
                                     int *port)
{
    struct tlsk_context *ctx = h_server_ctx(0, NULL, TLSK_OFFLOAD_DEFAULT, 0);
    struct tlsk_server_options o = { .ctx = ctx, .handshake_timeout_ms = timeout_ms };
    struct tlsk_server *srv = NULL;
    char host[64];

    if (!ctx || tlsk_server_new(&srv, loop, &o, &server_cb, st) != 0) {
        srv = NULL;
    } else if (tlsk_server_listen(srv, "127.0.0.1", "0", 128) != 0 ||
               tlsk_server_address(srv, host, sizeof host, port) != 0) {
        tlsk_server_close(srv);
        srv = NULL;
    }
    tlsk_context_free(ctx);
    st->srv = srv;
    return srv;
}

/* A watchdog that does not keep uv_run() alive: a hung test stops instead of hanging. */
static int g_watchdog_fired;
static void on_watchdog(uv_timer_t *t)
{
    g_watchdog_fired = 1;
    uv_stop(t->loop);
}

static void on_uv_closed(uv_handle_t *h)
{
    (void)h;
}

static void test_echo(void)
{
    uv_loop_t uv;
    uv_timer_t wd;
    struct tlsk_loop *loop = NULL;
    struct srvstate st = { .close_after = 3 };
    struct client_job jobs[3] = { { .len = 1 }, { .len = 100000 }, { .len = h_bulk_bytes(4) } };
    pthread_t t[3];
    int port = 0, silent, rc;
    int64_t t0;
    /* User-mode Linux handshakes can take longer than 300 ms with three clients at once. */
    int hs_ms = h_expect_ktls() ? 3000 : 300, slack = h_expect_ktls() ? 3000 : 700;

    TAP_IS(uv_loop_init(&uv), 0, "uv_loop_init");
    TAP_IS(tlsk_uv_loop_new(&loop, &uv), 0, "tlsk_uv_loop_new");
    if (!TAP_OK(mk_server(loop, &st, hs_ms, &port), "server on the uv loop, handshakeTimeout %d",
                hs_ms)) {
        return;
    }
    uv_timer_init(&uv, &wd);
    uv_timer_start(&wd, on_watchdog, 60000, 0);
    uv_unref((uv_handle_t *)&wd);

    t0 = now_ms();
    silent = raw_connect(port);
    for (int i = 0; i < 3; i++) {
        jobs[i].port = port;
        pthread_create(&t[i], NULL, echo_client, &jobs[i]);
    }
    rc = uv_run(&uv, UV_RUN_DEFAULT);
    if (!TAP_OK(!g_watchdog_fired, "uv_run returned by itself once the server closed (rc %d)",
                rc)) {
        tap_diag("secure %d, client errors %d (%s), closes %d", st.secure, st.client_errors,
                 tlsk_err_name(st.last_error), st.closes);
        tap_bail("uv_run did not finish: the loop still has work");
    }
    for (int i = 0; i < 3; i++) {
        pthread_join(t[i], NULL);
        TAP_OK(jobs[i].rc == 0, "client %d: %zu bytes echoed, close_notify both ways (%s)", i,
               jobs[i].len, tlsk_err_name(jobs[i].rc));
    }
    TAP_IS(st.secure, 3, "3 secureConnection events");
    TAP_IS(st.ends, 3, "3 end events");
    TAP_IS(st.closes, 3, "3 close events");
    TAP_IS(st.echoed, 1 + 100000 + h_bulk_bytes(4), "every byte echoed");
    TAP_IS(st.client_errors, 1, "HT-1: one clientError (the silent peer)");
    TAP_IS(st.last_error, -ETIMEDOUT, "HT-1: -ETIMEDOUT");
    TAP_OK(strstr(st.last_detail, "HANDSHAKE_TIMEOUT") != NULL, "HT-1: detail %s",
           st.last_detail);
    TAP_OK(st.t_error_ms - t0 >= hs_ms && st.t_error_ms - t0 <= hs_ms + slack,
           "HT-1: clientError after %lld ms (%d..%d) on libuv timers",
           (long long)(st.t_error_ms - t0), hs_ms, hs_ms + slack);
    TAP_OK(closed_within(silent, 100), "HT-1: the silent peer reads EOF");
    close(silent);
    TAP_IS(st.server_closed, 1, "server close event once");
    if (h_expect_ktls()) {
        TAP_OK(st.off.tx.mode == TLSK_MODE_KERNEL, "kTLS: connections offloaded (tx %s)",
               tlsk_reason_name(st.off.tx.reason));
    } else {
        TAP_OK(st.off.tx.mode == TLSK_MODE_USERSPACE, "native: userspace (tx %s)",
               tlsk_reason_name(st.off.tx.reason));
    }
    TAP_IS(tlsk_uv_loop_free(loop), 0, "tlsk_uv_loop_free: nothing left on the loop");
    uv_close((uv_handle_t *)&wd, on_uv_closed);
    uv_run(&uv, UV_RUN_DEFAULT);
    TAP_IS(uv_loop_close(&uv), 0, "uv_loop_close: the adapter closed every uv handle");
}

/* An evented tlsk client and the server on one uv loop. */
struct evclient {
    int secure, ends, closes;
    size_t got;
    int err;
};

static void c_secure(struct tlsk_socket *s, void *ud)
{
    struct evclient *c = ud;
    c->secure++;
    tlsk_socket_send(s, "ping", 4);
}

static void c_data(struct tlsk_socket *s, const void *buf, size_t len, void *ud)
{
    struct evclient *c = ud;
    (void)buf;
    c->got += len;
    if (c->got == 4) {
        tlsk_socket_end(s);
    }
}

static void c_end(struct tlsk_socket *s, int err, void *ud)
{
    struct evclient *c = ud;
    c->ends++;
    c->err = err;
    tlsk_socket_close(s);
}

static void c_close(struct tlsk_socket *s, void *ud)
{
    struct evclient *c = ud;
    (void)s;
    c->closes++;
}

static void c_error(struct tlsk_socket *s, int err, void *ud)
{
    struct evclient *c = ud;
    (void)s;
    c->err = err;
}

static void test_evented_client(void)
{
    uv_loop_t uv;
    uv_timer_t wd;
    struct tlsk_loop *loop = NULL;
    struct srvstate st = { .close_after = 1 };
    struct evclient ec = { 0 };
    struct tlsk_context *cctx = h_client_ctx(0, NULL, TLSK_OFFLOAD_DEFAULT, 0);
    struct tlsk_socket *s = NULL;
    static const struct tlsk_socket_callbacks ccb = { .secure = c_secure, .data = c_data,
                                                      .end = c_end, .close = c_close,
                                                      .error = c_error };
    char port[16];
    int p = 0;

    uv_loop_init(&uv);
    tlsk_uv_loop_new(&loop, &uv);
    if (!TAP_OK(mk_server(loop, &st, 0, &p), "server for the evented client")) {
        return;
    }
    uv_timer_init(&uv, &wd);
    uv_timer_start(&wd, on_watchdog, 30000, 0);
    uv_unref((uv_handle_t *)&wd);
    snprintf(port, sizeof port, "%d", p);
    TAP_IS(tlsk_connect(&s, cctx, "localhost", port, NULL), 0, "tlsk_connect");
    tlsk_socket_set_data(s, &ec);
    TAP_IS(tlsk_socket_start(s, loop, &ccb), 0, "tlsk_socket_start on the uv loop");
    uv_run(&uv, UV_RUN_DEFAULT);
    if (!TAP_OK(!g_watchdog_fired, "uv_run returned by itself")) {
        tap_bail("uv_run did not finish: the loop still has work");
    }
    TAP_IS(ec.secure, 1, "client secure event");
    TAP_IS(ec.got, 4, "client got the echo");
    TAP_IS(ec.err, 0, "clean close_notify");
    TAP_IS(ec.closes, 1, "client close event");
    TAP_IS(st.server_closed, 1, "server closed after its connection");
    TAP_IS(tlsk_uv_loop_free(loop), 0, "tlsk_uv_loop_free");
    uv_close((uv_handle_t *)&wd, on_uv_closed);
    uv_run(&uv, UV_RUN_DEFAULT);
    TAP_IS(uv_loop_close(&uv), 0, "uv_loop_close");
    tlsk_context_free(cctx);
}

/* tlsk_uv_loop_free() refuses while something is still on the loop. */
static void test_free_busy(void)
{
    uv_loop_t uv;
    struct tlsk_loop *loop = NULL;
    struct srvstate st = { 0 };
    int port;

    uv_loop_init(&uv);
    tlsk_uv_loop_new(&loop, &uv);
    mk_server(loop, &st, 0, &port);
    TAP_IS(tlsk_uv_loop_free(loop), TLSK_ESTATE, "tlsk_uv_loop_free with a server open: ESTATE");
    tlsk_server_close(st.srv);
    uv_run(&uv, UV_RUN_DEFAULT);
    TAP_IS(st.server_closed, 1, "closed server: close event");
    TAP_IS(tlsk_uv_loop_free(loop), 0, "then freed");
    TAP_IS(uv_loop_close(&uv), 0, "uv_loop_close");
    TAP_IS(tlsk_uv_loop_new(NULL, &uv), TLSK_ECONFIG, "tlsk_uv_loop_new(NULL): ECONFIG");
    TAP_IS(tlsk_uv_loop_free(NULL), 0, "tlsk_uv_loop_free(NULL): no-op");
}

int main(void)
{
    uv_loop_t warm;
    int fds0;

    /* libuv opens a process-wide signal pipe on its first loop: count from after that. */
    uv_loop_init(&warm);
    uv_loop_close(&warm);
    {
        /* The kernel probe runs once per process on first use; done here it cannot stall the
         * loop in the middle of the handshake-timeout window. */
        int64_t t0 = now_ms();
        (void)tlsk_kernel_probe();
        tap_diag("kernel probe: %lld ms", (long long)(now_ms() - t0));
    }
    fds0 = count_fds();

    test_echo();
    test_evented_client();
    test_free_busy();
    TAP_IS(count_fds(), fds0, "open fds back to the starting count");
    return tap_done();
}
