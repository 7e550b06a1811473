/*
 * test_server.c - the evented layer: a tlsk_server on the built-in loop with echo
 * connections, the event order (secureConnection, data, end, close, server close), the
 * handshake timeout (HT-1..HT-3), maxConnections (MC-1), and an evented client
 * (tlsk_socket_start) against it.  Both tiers.
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>

#include "harness.h"
#include "tap.h"

struct srvstate {
    struct tlsk_server *srv;
    int secure, client_errors, closes, ends, server_closed;
    int last_error;
    char last_detail[256];
    int64_t t_accept_ms, t_error_ms;
    size_t echoed;
    int close_after; /* close the server after this many secure connections closed */
    struct tlsk_offload off;
};

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
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
    int delay_ms;
};

static void *echo_client(void *arg)
{
    struct client_job *j = arg;
    struct tlsk_context *c = h_client_ctx(0, NULL, TLSK_OFFLOAD_DEFAULT, 0);
    struct tlsk_socket *s = NULL;
    char port[16], b[16];
    unsigned char *buf = malloc(j->len);

    snprintf(port, sizeof port, "%d", j->port);
    if (j->delay_ms) {
        usleep((useconds_t)j->delay_ms * 1000);
    }
    j->rc = tlsk_connect(&s, c, "localhost", port, NULL);
    if (j->rc == 0) {
        j->rc = h_handshake(s);
    }
    if (j->rc == 0 && (j->rc = h_send_pattern(s, 5, j->len)) == 0 &&
        (j->rc = h_recv_pattern(s, 5, j->len)) == 0 && (j->rc = h_shutdown(s)) == 0) {
        j->rc = (int)h_read_some(s, b, sizeof b); /* server's close_notify: 0 */
    }
    tlsk_socket_free(s);
    tlsk_context_free(c);
    free(buf);
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

/* 1 when the peer closed the raw connection (EOF) within ms. */
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
                                     int maxc, int *port)
{
    struct tlsk_context *ctx = h_server_ctx(0, NULL, TLSK_OFFLOAD_DEFAULT, 0);
    struct tlsk_server_options o = { .ctx = ctx, .handshake_timeout_ms = timeout_ms,
                                     .max_connections = maxc };
    struct tlsk_server *srv = NULL;
    char host[64];

    if (tlsk_server_new(&srv, loop, &o, &server_cb, st) != 0 ||
        tlsk_server_listen(srv, "127.0.0.1", "0", 128) != 0 ||
        tlsk_server_address(srv, host, sizeof host, port) != 0) {
        srv = NULL;
    }
    tlsk_context_free(ctx);
    st->srv = srv;
    return srv;
}

static void test_echo(void)
{
    struct tlsk_loop *loop = NULL;
    struct srvstate st = { .close_after = 3 };
    struct client_job jobs[3] = { { .len = 1 }, { .len = 100000 }, { .len = h_bulk_bytes(8) } };
    pthread_t t[3];
    int port = 0;

    TAP_OK(tlsk_loop_new(&loop) == 0, "loop");
    if (!TAP_OK(mk_server(loop, &st, 0, 0, &port), "server listening on 127.0.0.1")) {
        return;
    }
    for (int i = 0; i < 3; i++) {
        jobs[i].port = port;
        pthread_create(&t[i], NULL, echo_client, &jobs[i]);
    }
    TAP_IS(tlsk_loop_run(loop, 60000), 0, "loop ran until the server closed");
    for (int i = 0; i < 3; i++) {
        pthread_join(t[i], NULL);
        TAP_OK(jobs[i].rc == 0, "client %d: %zu bytes echoed, close_notify both ways (%s)", i,
               jobs[i].len, tlsk_err_name(jobs[i].rc));
    }
    TAP_IS(st.secure, 3, "3 secureConnection events");
    TAP_IS(st.ends, 3, "3 end events (close_notify from the clients)");
    TAP_IS(st.closes, 3, "3 close events");
    TAP_IS(st.client_errors, 0, "no clientError");
    TAP_IS(st.server_closed, 1, "server close event once, after the last connection");
    TAP_IS(st.echoed, 1 + 100000 + h_bulk_bytes(8), "every byte echoed");
    if (h_expect_ktls()) {
        TAP_OK(st.off.tx.mode == TLSK_MODE_KERNEL, "evented connections are offloaded (tx %s)",
               tlsk_reason_name(st.off.tx.reason));
    }
    TAP_IS(tlsk_loop_free(loop), 0, "loop freed with nothing left on it");
}

static void test_timeout(void)
{
    struct tlsk_loop *loop = NULL;
    struct srvstate st = { 0 };
    struct client_job ok = { .len = 1000, .delay_ms = 50 };
    pthread_t t;
    int port = 0, silent, partial;
    int64_t t0;

    tlsk_loop_new(&loop);
    if (!TAP_OK(mk_server(loop, &st, 300, 0, &port), "server with handshakeTimeout 300")) {
        return;
    }
    t0 = now_ms();
    silent = raw_connect(port);
    partial = raw_connect(port);
    if (partial >= 0) {
        (void)!write(partial, "\x16\x03\x01\x02\x00", 5); /* a handshake header, then nothing */
    }
    ok.port = port;
    pthread_create(&t, NULL, echo_client, &ok);
    tlsk_loop_run(loop, 1500);
    pthread_join(t, NULL);
    TAP_IS(st.client_errors, 2, "HT-1/HT-2: exactly two clientError (silent and partial)");
    TAP_IS(st.last_error, -ETIMEDOUT, "the error is -ETIMEDOUT");
    TAP_OK(strstr(st.last_detail, "HANDSHAKE_TIMEOUT") != NULL, "detail says HANDSHAKE_TIMEOUT (%s)",
           st.last_detail);
    TAP_OK(st.t_error_ms - t0 >= 300 && st.t_error_ms - t0 <= 1000,
           "clientError after %lld ms (300..1000)", (long long)(st.t_error_ms - t0));
    TAP_OK(closed_within(silent, 100), "the silent peer reads EOF");
    TAP_OK(closed_within(partial, 100), "the partial peer reads EOF");
    TAP_OK(ok.rc == 0, "HT-3: a normal client finished (%s)", tlsk_err_name(ok.rc));
    TAP_IS(st.secure, 1, "HT-3: one secureConnection");
    TAP_IS(tlsk_server_connections(st.srv), 0, "connections back to 0");
    close(silent);
    close(partial);
    tlsk_server_close(st.srv);
    tlsk_loop_run(loop, 1000);
    TAP_IS(st.server_closed, 1, "server closed");
    TAP_IS(tlsk_loop_free(loop), 0, "loop freed");
}

static void test_max_connections(void)
{
    struct tlsk_loop *loop = NULL;
    struct srvstate st = { 0 };
    int port = 0, fds[3];

    tlsk_loop_new(&loop);
    if (!TAP_OK(mk_server(loop, &st, 5000, 2, &port), "server with maxConnections 2")) {
        return;
    }
    for (int i = 0; i < 3; i++) {
        fds[i] = raw_connect(port);
        tlsk_loop_run(loop, 100);
    }
    TAP_IS(tlsk_server_connections(st.srv), 2, "MC-1: 2 connections held");
    TAP_OK(closed_within(fds[2], 200), "MC-1: the third is closed at accept");
    TAP_OK(!closed_within(fds[0], 50) && !closed_within(fds[1], 50), "the first two stay open");
    for (int i = 0; i < 3; i++) {
        close(fds[i]);
    }
    tlsk_loop_run(loop, 300);
    TAP_IS(tlsk_server_connections(st.srv), 0, "peers gone: 0 connections");
    TAP_IS(st.client_errors, 2, "their early close is a clientError each");
    tlsk_server_close(st.srv);
    tlsk_loop_run(loop, 1000);
    TAP_IS(tlsk_loop_free(loop), 0, "loop freed");
}

/* An evented client (tlsk_socket_start) against the evented server, on one loop. */
struct evclient {
    int secure, ends, closes;
    size_t got;
    int err;
};

static void c_secure(struct tlsk_socket *s, void *ud)
{
    (void)ud;
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

    tlsk_loop_new(&loop);
    if (!TAP_OK(mk_server(loop, &st, 0, 0, &p), "server for the evented client")) {
        return;
    }
    snprintf(port, sizeof port, "%d", p);
    TAP_IS(tlsk_connect(&s, cctx, "localhost", port, NULL), 0, "tlsk_connect");
    tlsk_socket_set_data(s, &ec);
    TAP_IS(tlsk_socket_start(s, loop, &ccb), 0, "tlsk_socket_start");
    TAP_IS(tlsk_loop_run(loop, 10000), 0, "loop ran to completion");
    TAP_IS(ec.got, 4, "client got the echo");
    TAP_IS(ec.ends, 1, "client end event");
    TAP_IS(ec.err, 0, "clean close_notify");
    TAP_IS(ec.closes, 1, "client close event");
    TAP_IS(st.server_closed, 1, "server closed after its connection");
    TAP_IS(tlsk_loop_free(loop), 0, "loop freed");
    tlsk_context_free(cctx);
}

int main(void)
{
    test_echo();
    test_timeout();
    test_max_connections();
    test_evented_client();
    return tap_done();
}
