/* pair.c - see pair.h. */
#include "pair.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "harness.h"

int tp_wait(struct tlsk_socket *s)
{
    struct pollfd p = { .fd = tlsk_socket_fd(s), .events = (short)tlsk_socket_events(s) };
    int r = poll(&p, 1, 20000);
    return r == 0 ? -ETIMEDOUT : r < 0 ? -errno : 0;
}

static void *run_end(void *arg)
{
    struct tp_end *e = arg;
    struct tlsk_socket *s = NULL;
    struct tlsk_socket_options o = { .servername = "localhost", .offload = e->policy,
                                     .flags = e->sock_flags,
                                     .session = e->session, .session_len = e->session_len,
                                     .on_session = e->on_session, .on_session_data = e };
    int rc;

    rc = e->server ? tlsk_socket_new_server(&s, e->ctx, e->fd, &o)
                   : tlsk_socket_new_client(&s, e->ctx, e->fd, &o);
    if (rc) {
        e->hs_rc = e->rc = rc;
        return NULL;
    }
    e->hs_rc = h_handshake(s);
    if (e->hs_rc != 0) {
        e->rc = e->hs_rc;
        snprintf(e->detail, sizeof e->detail, "%s", tlsk_socket_error_detail(s));
        shutdown(e->fd, SHUT_RDWR);
        tlsk_socket_free(s);
        return NULL;
    }
    e->off = tlsk_socket_offload(s);
    e->kernel_tx = h_kernel_has(e->fd, true, NULL, NULL);
    e->kernel_rx = h_kernel_has(e->fd, false, NULL, NULL);
    e->rc = e->body(e, s);
    e->key_updates = tlsk_socket_key_updates(s);
    if (e->rc) {
        snprintf(e->detail, sizeof e->detail, "%s", tlsk_socket_error_detail(s));
        shutdown(e->fd, SHUT_RDWR);
    }
    tlsk_socket_free(s);
    return NULL;
}

static void reset(struct tp_end *e, bool server)
{
    e->server = server;
    e->rc = e->hs_rc = 0;
    memset(&e->off, 0, sizeof e->off);
    e->kernel_tx = e->kernel_rx = false;
    e->key_updates = 0;
    memset(e->r, 0, sizeof e->r);
    memset(e->v, 0, sizeof e->v);
    e->detail[0] = e->note[0] = '\0';
}

void tp_conn(struct tp_end *sv, struct tp_end *cl)
{
    pthread_t a, b;

    reset(sv, true);
    reset(cl, false);
    if (h_tcp_pair(&cl->fd, &sv->fd) != 0) {
        sv->rc = cl->rc = -EIO;
        return;
    }
    if (sv->nonblock) {
        h_set_nonblock(sv->fd, true);
    }
    if (cl->nonblock) {
        h_set_nonblock(cl->fd, true);
    }
    h_spawn(&a, run_end, sv);
    h_spawn(&b, run_end, cl);
    pthread_join(a, NULL);
    pthread_join(b, NULL);
    close(sv->fd);
    close(cl->fd);
}

int tp_expect_byte(struct tlsk_socket *s, char want)
{
    char b;
    ssize_t n = h_read_full(s, &b, 1);
    if (n < 0) {
        return (int)n;
    }
    return n == 1 && b == want ? 0 : -EPROTO;
}

int tp_finish(struct tlsk_socket *s, bool server)
{
    char b[16];
    int rc;
    if (server) {
        rc = (int)h_read_some(s, b, sizeof b);
        if (rc != 0) {
            return rc < 0 ? rc : -EPROTO;
        }
        return h_shutdown(s);
    }
    if ((rc = h_shutdown(s)) != 0) {
        return rc;
    }
    rc = (int)h_read_some(s, b, sizeof b);
    return rc > 0 ? -EPROTO : rc;
}

struct tlsk_context *tp_ctx(int version, unsigned flags, const char *cert, uint64_t ku_records,
                            int reneg_limit, int reneg_window)
{
    struct tlsk_context_options o = { 0 };
    struct tlsk_context *c = NULL;
    char err[512], cf[256], kf[256];

    if (cert) {
        snprintf(cf, sizeof cf, "%s-cert.pem", cert);
        snprintf(kf, sizeof kf, "%s-key.pem", cert);
        o.cert_file = h_fixture(cf);
        o.key_file = h_fixture(kf);
    }
    o.ca_file = h_fixture("ca1-cert.pem");
    o.min_version = o.max_version = version;
    o.flags = flags;
    o.key_update_records = ku_records;
    o.client_reneg_limit = reneg_limit;
    o.client_reneg_window_s = reneg_window;
    if (tlsk_context_new(&c, &o, err, sizeof err) != 0) {
        tap_diag("context: %s", err);
        return NULL;
    }
    return c;
}
