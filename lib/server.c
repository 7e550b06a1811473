/*
 * server.c - Node's tls.Server: listen, accept, handshake timeout, maxConnections, SNI
 * table, and the secureConnection / clientError / close events.
 */
#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <netinet/in.h>
#include <netinet/tcp.h>

#include "internal.h"

#define DEFAULT_HANDSHAKE_TIMEOUT_MS 120000
#define ACCEPT_RETRY_MS 100 /* after EMFILE and friends */
#define ACCEPTS_PER_DISPATCH 64

struct tlsk_server {
    struct tlsk_loop *loop;
    struct tlsk_handle lh; /* the listening socket */
    struct tlsk_handle th; /* timer only: the deferred close callback */
    struct tlsk_context *ctx;
    struct tlsk_sni *sni;
    tlsk_sni_cb sni_cb;
    void *sni_data;
    int64_t hs_timeout_ms;
    unsigned max_conns;
    bool no_delay;
    struct tlsk_server_callbacks cb;
    void *data;
    int lfd;
    bool listening, closing, close_reported;
    int live_handles;
    unsigned conns;
    struct tlsk_socket *list;
};

static void server_release(struct tlsk_handle *h)
{
    struct tlsk_server *srv = h->owner;

    if (h == &srv->lh && srv->lfd >= 0) {
        close(srv->lfd);
        srv->lfd = -1;
    }
    if (--srv->live_handles == 0) {
        tlsk_sni_free(srv->sni);
        tlsk_context_free(srv->ctx);
        free(srv);
    }
}

static void on_timer(struct tlsk_handle *h, int revents)
{
    struct tlsk_server *srv = h->owner;

    (void)revents;
    if (srv->closing && srv->conns == 0 && !srv->close_reported) {
        srv->close_reported = true;
        if (srv->cb.close) {
            srv->cb.close(srv, srv->data);
        }
        tlsk__handle_close(&srv->th);
    }
}

/* How the evented layer tells the server about its connections (defined below). */
static const struct tlsk__ev_owner conn_owner;

static void on_accept(struct tlsk_handle *h, int revents)
{
    struct tlsk_server *srv = h->owner;

    if (revents == 0) {
        /* The retry timer after running out of descriptors: listen again. */
        tlsk__handle_timer(&srv->lh, -1);
        tlsk__handle_watch(&srv->lh, POLLIN);
    }
    for (int i = 0; i < ACCEPTS_PER_DISPATCH && !srv->closing; i++) {
        struct tlsk_socket_options o = { .flags = TLSK_SOCKET_OWN_FD, .sni = srv->sni,
                                         .sni_cb = srv->sni_cb, .sni_data = srv->sni_data };
        struct tlsk_socket *s = NULL;
        int fd = accept4(srv->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);

        if (fd < 0) {
            if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
                /* The pending connection stays queued and the listener readable: under
                 * level-triggered epoll that would wake the loop at once, forever.  Stop
                 * listening for a moment; the waiting client is accepted once descriptors
                 * are free again. */
                tlsk__handle_watch(&srv->lh, 0);
                tlsk__handle_timer(&srv->lh, ACCEPT_RETRY_MS);
            }
            return; /* EAGAIN: drained */
        }
        if (srv->max_conns && srv->conns >= srv->max_conns) {
            close(fd);
            continue;
        }
        if (srv->no_delay) {
            /* Cannot fail on a TCP socket just accepted; were it to, Nagle stays on, which
             * delays but loses nothing. */
            int one = 1;
            (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        }
        if (tlsk_socket_new_server(&s, srv->ctx, fd, &o) != 0) {
            close(fd);
            continue;
        }
        if (tlsk__ev_start(s, srv->loop, &conn_owner, srv, srv->hs_timeout_ms) != 0) {
            tlsk_socket_free(s);
            continue;
        }
        s->ev->in_server_list = true;
        s->ev->next = srv->list;
        if (srv->list) {
            srv->list->ev->prev = s;
        }
        srv->list = s;
        srv->conns++;
    }
}

static void conn_closed(void *owner, struct tlsk_socket *s)
{
    struct tlsk_server *srv = owner;
    struct tlsk__ev *ev = s->ev;

    if (!ev->in_server_list) {
        return;
    }
    ev->in_server_list = false;
    if (ev->prev) {
        ev->prev->ev->next = ev->next;
    } else {
        srv->list = ev->next;
    }
    if (ev->next) {
        ev->next->ev->prev = ev->prev;
    }
    srv->conns--;
    if (srv->closing && srv->conns == 0) {
        tlsk__handle_timer(&srv->th, 0);
    }
}

static void conn_secure(void *owner, struct tlsk_socket *s)
{
    struct tlsk_server *srv = owner;

    if (srv->cb.secure_connection) {
        srv->cb.secure_connection(srv, s, srv->data);
    }
}

static void conn_client_error(void *owner, struct tlsk_socket *s, int err)
{
    struct tlsk_server *srv = owner;

    if (srv->cb.client_error) {
        srv->cb.client_error(srv, err, s, srv->data);
    }
}

static const struct tlsk__ev_owner conn_owner = {
    .secure = conn_secure,
    .client_error = conn_client_error,
    .closed = conn_closed,
};

TLSK_PUBLIC int tlsk_server_new(struct tlsk_server **out, struct tlsk_loop *loop,
                                const struct tlsk_server_options *o,
                                const struct tlsk_server_callbacks *cb, void *data)
{
    struct tlsk_server *srv;

    if (!out || !loop || !o || !o->ctx || o->max_connections < 0) {
        return TLSK_ECONFIG;
    }
    srv = calloc(1, sizeof *srv);
    if (!srv) {
        return TLSK_ENOMEM;
    }
    srv->loop = loop;
    srv->ctx = tlsk_context_ref(o->ctx);
    srv->sni_cb = o->sni_cb;
    srv->sni_data = o->sni_data;
    srv->hs_timeout_ms = o->handshake_timeout_ms == 0 ? DEFAULT_HANDSHAKE_TIMEOUT_MS
                         : o->handshake_timeout_ms < 0 ? 0
                                                       : o->handshake_timeout_ms;
    srv->max_conns = (unsigned)o->max_connections;
    srv->no_delay = o->no_delay != 0;
    if (cb) {
        srv->cb = *cb;
    }
    srv->data = data;
    srv->lfd = -1;
    tlsk__handle_init(&srv->th, loop, -1, on_timer, server_release, srv);
    srv->live_handles = 1;
    *out = srv;
    return 0;
}

TLSK_PUBLIC int tlsk_server_add_context(struct tlsk_server *srv, const char *pattern,
                                        struct tlsk_context *ctx)
{
    int rc;

    if (!srv) {
        return TLSK_ECONFIG;
    }
    if (!srv->sni && (rc = tlsk_sni_new(&srv->sni)) != 0) {
        return rc;
    }
    return tlsk_sni_add(srv->sni, pattern, ctx);
}

static int try_listen(const struct addrinfo *ai, int backlog)
{
    int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
                    ai->ai_protocol);
    int one = 1, zero = 0;

    if (fd < 0) {
        return -errno;
    }
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (ai->ai_family == AF_INET6) {
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof zero);
    }
    if (bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 || listen(fd, backlog) != 0) {
        int e = -errno;
        close(fd);
        return e;
    }
    return fd;
}

TLSK_PUBLIC int tlsk_server_listen(struct tlsk_server *srv, const char *host, const char *port,
                                   int backlog)
{
    struct addrinfo hints = { .ai_socktype = SOCK_STREAM, .ai_protocol = IPPROTO_TCP,
                              .ai_flags = AI_PASSIVE };
    struct addrinfo *res = NULL;
    int fd = -EADDRNOTAVAIL, rc;

    if (!srv || !port) {
        return TLSK_ECONFIG;
    }
    if (srv->listening || srv->closing) {
        return TLSK_ESTATE;
    }
    if (!srv->ctx->has_cert && !srv->sni_cb && !srv->sni) {
        /* No certificate anywhere: every handshake would fail (Node requires key and cert
         * for servers). */
        return TLSK_ECONFIG;
    }
    /* No host: one dual-stack IPv6 socket, else IPv4. */
    hints.ai_family = host ? AF_UNSPEC : AF_INET6;
    rc = getaddrinfo(host, port, &hints, &res);
    if (rc != 0 && !host) {
        hints.ai_family = AF_INET;
        rc = getaddrinfo(NULL, port, &hints, &res);
    }
    if (rc != 0) {
        return TLSK_ECONFIG;
    }
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        fd = try_listen(ai, backlog > 0 ? backlog : 511);
        if (fd >= 0) {
            break;
        }
    }
    freeaddrinfo(res);
    if (fd < 0 && !host) {
        struct addrinfo *r4 = NULL;
        hints.ai_family = AF_INET;
        if (getaddrinfo(NULL, port, &hints, &r4) == 0) {
            fd = try_listen(r4, backlog > 0 ? backlog : 511);
            freeaddrinfo(r4);
        }
    }
    if (fd < 0) {
        return fd;
    }
    srv->lfd = fd;
    tlsk__handle_init(&srv->lh, srv->loop, fd, on_accept, server_release, srv);
    srv->live_handles++;
    srv->listening = true;
    rc = tlsk__handle_watch(&srv->lh, POLLIN);
    if (rc != 0) {
        srv->listening = false;
        tlsk__handle_close(&srv->lh);
        return rc;
    }
    return 0;
}

TLSK_PUBLIC int tlsk_server_address(const struct tlsk_server *srv, char *host, size_t hostlen,
                                    int *port)
{
    struct sockaddr_storage ss;
    socklen_t l = sizeof ss;
    char serv[16];

    if (!srv || srv->lfd < 0) {
        return TLSK_ESTATE;
    }
    if (getsockname(srv->lfd, (struct sockaddr *)&ss, &l) != 0) {
        return -errno;
    }
    if (getnameinfo((struct sockaddr *)&ss, l, host, host ? (socklen_t)hostlen : 0, serv,
                    sizeof serv, NI_NUMERICHOST | NI_NUMERICSERV) != 0) {
        return -EINVAL;
    }
    if (port) {
        *port = atoi(serv);
    }
    return 0;
}

TLSK_PUBLIC unsigned tlsk_server_connections(const struct tlsk_server *srv)
{
    return srv ? srv->conns : 0;
}

TLSK_PUBLIC void *tlsk_server_get_data(const struct tlsk_server *srv)
{
    return srv ? srv->data : NULL;
}

TLSK_PUBLIC int tlsk_server_close(struct tlsk_server *srv)
{
    int rc = 0;

    if (!srv) {
        return TLSK_ECONFIG;
    }
    if (srv->closing) {
        return TLSK_ESTATE;
    }
    srv->closing = true;
    if (srv->listening) {
        srv->listening = false;
        tlsk__handle_close(&srv->lh);
    } else {
        rc = TLSK_ESTATE;
    }
    if (srv->conns == 0) {
        tlsk__handle_timer(&srv->th, 0);
    }
    return rc;
}
