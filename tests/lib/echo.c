/* echo.c - see echo.h. */
#include "echo.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"

int64_t te_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---------------------------------------------------------------------------------------- */
/* Server                                                                                   */

static void on_data(struct tlsk_socket *s, const void *buf, size_t len, void *ud)
{
    struct te_server_state *st = ud;
    st->echoed += len;
    tlsk_socket_send(s, buf, len);
}

static void on_end(struct tlsk_socket *s, int err, void *ud)
{
    struct te_server_state *st = ud;
    (void)err;
    st->ends++;
    tlsk_socket_end(s);
}

static void on_close(struct tlsk_socket *s, void *ud)
{
    struct te_server_state *st = ud;
    (void)s;
    st->closes++;
    if (st->close_after && st->closes == st->close_after) {
        tlsk_server_close(st->srv);
    }
}

static void on_secure(struct tlsk_server *srv, struct tlsk_socket *s, void *data)
{
    struct te_server_state *st = data;
    static const struct tlsk_socket_callbacks cb = { .data = on_data, .end = on_end,
                                                     .close = on_close };
    (void)srv;
    st->secure++;
    st->off = tlsk_socket_offload(s);
    {
        int v = 0;
        socklen_t l = sizeof v;
        st->nodelay_seen =
            getsockopt(tlsk_socket_fd(s), IPPROTO_TCP, TCP_NODELAY, &v, &l) == 0 ? v != 0 : -1;
    }
    tlsk_socket_set_data(s, st);
    tlsk_socket_set_callbacks(s, &cb);
}

static void on_client_error(struct tlsk_server *srv, int err, struct tlsk_socket *s, void *data)
{
    struct te_server_state *st = data;
    (void)srv;
    st->client_errors++;
    st->last_error = err;
    st->t_error_ms = te_now_ms();
    snprintf(st->last_detail, sizeof st->last_detail, "%s", tlsk_socket_error_detail(s));
}

static void on_server_close(struct tlsk_server *srv, void *data)
{
    struct te_server_state *st = data;
    (void)srv;
    st->server_closed++;
}

const struct tlsk_server_callbacks te_server_cb = { .secure_connection = on_secure,
                                                    .client_error = on_client_error,
                                                    .close = on_server_close };

struct tlsk_server *te_server(struct tlsk_loop *loop, struct te_server_state *st, int timeout_ms,
                              int max_connections, int *port)
{
    struct tlsk_context *ctx = h_server_ctx(0, NULL, TLSK_OFFLOAD_DEFAULT, 0);
    struct tlsk_server_options o = { .ctx = ctx, .handshake_timeout_ms = timeout_ms,
                                     .max_connections = max_connections,
                                     .no_delay = st->no_delay };
    struct tlsk_server *srv = NULL;
    char host[64];

    if (!ctx || tlsk_server_new(&srv, loop, &o, &te_server_cb, st) != 0) {
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

/* ---------------------------------------------------------------------------------------- */
/* Clients                                                                                  */

void *te_echo_client(void *arg)
{
    struct te_job *j = arg;
    struct tlsk_context *c = h_client_ctx(0, NULL, TLSK_OFFLOAD_DEFAULT, 0);
    struct tlsk_socket *s = NULL;
    char port[16], b[16];

    snprintf(port, sizeof port, "%d", j->port);
    if (j->delay_ms) {
        usleep((useconds_t)j->delay_ms * 1000);
    }
    j->rc = tlsk_connect(&s, c, "localhost", port, NULL);
    if (j->rc == 0) {
        j->rc = h_handshake(s);
    }
    if (j->rc == 0 && (j->rc = h_send_pattern(s, j->seed, j->len)) == 0 &&
        (j->rc = h_recv_pattern(s, j->seed, j->len)) == 0 && (j->rc = h_shutdown(s)) == 0) {
        j->rc = (int)h_read_some(s, b, sizeof b); /* the server's close_notify: 0 */
    }
    tlsk_socket_free(s);
    tlsk_context_free(c);
    return NULL;
}

static void c_secure(struct tlsk_socket *s, void *ud)
{
    struct te_client *c = ud;
    c->secure++;
    tlsk_socket_send(s, "ping", 4);
}

static void c_data(struct tlsk_socket *s, const void *buf, size_t len, void *ud)
{
    struct te_client *c = ud;
    (void)buf;
    c->got += len;
    if (c->got == 4) {
        tlsk_socket_end(s);
    }
}

static void c_end(struct tlsk_socket *s, int err, void *ud)
{
    struct te_client *c = ud;
    c->ends++;
    c->err = err;
    tlsk_socket_close(s);
}

static void c_close(struct tlsk_socket *s, void *ud)
{
    struct te_client *c = ud;
    (void)s;
    c->closes++;
}

static void c_error(struct tlsk_socket *s, int err, void *ud)
{
    struct te_client *c = ud;
    (void)s;
    c->err = err;
}

const struct tlsk_socket_callbacks te_client_cb = { .secure = c_secure, .data = c_data,
                                                    .end = c_end, .close = c_close,
                                                    .error = c_error };

/* ---------------------------------------------------------------------------------------- */
/* Raw TCP                                                                                  */

int te_raw_connect(int port)
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

int te_closed_within(int fd, int ms)
{
    struct pollfd p = { .fd = fd, .events = POLLIN };
    char b[256];
    if (poll(&p, 1, ms) <= 0) {
        return 0;
    }
    return read(fd, b, sizeof b) <= 0;
}
