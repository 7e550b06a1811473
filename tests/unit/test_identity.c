/*
 * test_identity.c - a client's own server-identity check (Node's checkServerIdentity)
 * replaces the built-in host-name match: accepting, rejecting, and rejecting under
 * TLSK_VERIFY_NONE_INSECURE (recorded, not fatal).  Both tiers.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"
#include "tap.h"

struct seen {
    int calls;
    char servername[64];
    char cn[64];
    int answer;
};

static int check(const char *servername, const struct tlsk_cert_info *cert, void *data)
{
    struct seen *sn = data;
    sn->calls++;
    snprintf(sn->servername, sizeof sn->servername, "%s", servername ? servername : "");
    for (size_t i = 0; i < cert->subject_count; i++) {
        if (strcmp(cert->subject[i].key, "CN") == 0) {
            snprintf(sn->cn, sizeof sn->cn, "%s", cert->subject[i].value);
        }
    }
    return sn->answer;
}

struct srv {
    struct tlsk_context *ctx;
    int fd, rc;
};

static void *server(void *arg)
{
    struct srv *sv = arg;
    struct tlsk_socket *s = NULL;
    char b[8];
    if ((sv->rc = tlsk_socket_new_server(&s, sv->ctx, sv->fd, NULL)) == 0 &&
        (sv->rc = h_handshake(s)) == 0) {
        sv->rc = (int)h_read_some(s, b, sizeof b);
    }
    tlsk_socket_free(s);
    return NULL;
}

static void one(const char *what, unsigned flags, int answer, int want_rc, int want_auth,
                const char *want_err)
{
    struct tlsk_context *cctx = h_client_ctx(0, NULL, TLSK_OFFLOAD_DEFAULT, flags);
    struct srv sv = { .ctx = h_server_ctx(0, NULL, TLSK_OFFLOAD_DEFAULT, 0) };
    struct seen sn = { .answer = answer };
    struct tlsk_socket_options o = { .servername = "wrong.example", .check_identity = check,
                                     .check_identity_data = &sn };
    struct tlsk_socket *c = NULL;
    pthread_t t;
    int cfd, rc;

    if (!TAP_OK(cctx && sv.ctx && h_tcp_pair(&cfd, &sv.fd) == 0, "%s: setup", what)) {
        return;
    }
    h_spawn(&t, server, &sv);
    rc = tlsk_socket_new_client(&c, cctx, cfd, &o);
    if (rc == 0) {
        rc = h_handshake(c);
    }
    TAP_IS(rc, want_rc, "%s: client handshake %s (%s)", what, tlsk_err_name(want_rc),
           tlsk_socket_error_detail(c));
    TAP_IS(sn.calls, 1, "%s: the check ran once", what);
    TAP_OK(strcmp(sn.servername, "wrong.example") == 0 && strcmp(sn.cn, "agent1") == 0,
           "%s: it saw servername %s and the server's certificate CN %s", what, sn.servername,
           sn.cn);
    if (rc == 0) {
        const char *e = tlsk_socket_authorization_error(c);
        TAP_IS(tlsk_socket_authorized(c), want_auth, "%s: authorized %d", what, want_auth);
        TAP_OK(want_err ? e && strcmp(e, want_err) == 0 : e == NULL, "%s: authorization error %s",
               what, e ? e : "(none)");
        h_shutdown(c);
    }
    tlsk_socket_free(c);
    close(cfd);
    pthread_join(t, NULL);
    close(sv.fd);
    tlsk_context_free(cctx);
    tlsk_context_free(sv.ctx);
}

int main(void)
{
    /* OpenSSL's socket writes (an alert to a peer that already left) can raise SIGPIPE. */
    signal(SIGPIPE, SIG_IGN);
    /* "wrong.example" would fail the built-in name match: only the callback decides. */
    one("check accepts", 0, 0, 0, 1, NULL);
    one("check rejects", 0, -EPERM, TLSK_EVERIFY, 0, NULL);
    one("check rejects, insecure", TLSK_VERIFY_NONE_INSECURE, -EPERM, 0, 0, "HOSTNAME_MISMATCH");
    return tap_done();
}
