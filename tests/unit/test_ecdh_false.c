/*
 * test_ecdh_false.c - EC-4: groups "" (Node's ecdhCurve: false).  A TLS 1.2 server whose only
 * suite is ECDHE-RSA-AES128-GCM-SHA256 cannot complete with anyone (handshake_failure, 40);
 * TLS 1.3 runs on ffdhe2048 with a client that offers it, and a client offering only X25519
 * is refused.  Both tiers.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"
#include "tap.h"

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
        (sv->rc = h_handshake(s)) == 0 && (sv->rc = h_write_all(s, "ok", 2)) == 0) {
        sv->rc = (int)h_read_some(s, b, sizeof b);
    }
    tlsk_socket_free(s);
    return NULL;
}

static struct tlsk_context *ctx(bool server, int version, const char *ciphers, const char *groups)
{
    char cert[256], key[256], ca[256];
    struct tlsk_context_options o = { .min_version = version, .max_version = version,
                                      .ciphers = ciphers, .groups = groups };
    struct tlsk_context *c = NULL;
    char err[256];

    snprintf(cert, sizeof cert, "%s", h_fixture("agent1-cert.pem"));
    snprintf(key, sizeof key, "%s", h_fixture("agent1-key.pem"));
    snprintf(ca, sizeof ca, "%s", h_fixture("ca1-cert.pem"));
    if (server) {
        o.cert_file = cert, o.key_file = key;
    } else {
        o.ca_file = ca;
    }
    if (tlsk_context_new(&c, &o, err, sizeof err) != 0) {
        tap_diag("context: %s", err);
    }
    return c;
}

static int run(const char *what, struct tlsk_context *sc, struct tlsk_context *cc, int *srv_rc)
{
    struct srv sv = { .ctx = sc };
    struct tlsk_socket_options o = { .servername = "localhost" };
    struct tlsk_socket *c = NULL;
    pthread_t t;
    int cfd, rc;
    char b[4];

    if (!TAP_OK(sc && cc && h_tcp_pair(&cfd, &sv.fd) == 0, "%s: setup", what)) {
        return -1;
    }
    h_spawn(&t, server, &sv);
    rc = tlsk_socket_new_client(&c, cc, cfd, &o);
    if (rc == 0) {
        rc = h_handshake(c);
    }
    if (rc == 0) {
        rc = h_read_full(c, b, 2) == 2 ? 0 : -EPROTO;
        h_shutdown(c);
    }
    tlsk_socket_free(c);
    close(cfd);
    pthread_join(t, NULL);
    close(sv.fd);
    *srv_rc = sv.rc;
    return rc;
}

int main(void)
{
    struct tlsk_context *s12, *s13, *c12, *c13, *c13x;
    int src, rc;

    signal(SIGPIPE, SIG_IGN);
    s12 = ctx(true, TLSK_TLS1_2, "ECDHE-RSA-AES128-GCM-SHA256", "");
    s13 = ctx(true, TLSK_TLS1_3, NULL, "");
    c12 = ctx(false, TLSK_TLS1_2, "ECDHE-RSA-AES128-GCM-SHA256", NULL);
    c13 = ctx(false, TLSK_TLS1_3, NULL, "");
    c13x = ctx(false, TLSK_TLS1_3, NULL, "X25519");
    TAP_OK(s12 && s13 && c12 && c13 && c13x, "groups \"\" is accepted");

    rc = run("1.2 ECDHE only", s12, c12, &src);
    TAP_IS(rc, TLSK_EALERT(40), "1.2: the client is refused with handshake_failure (%s)",
           tlsk_err_name(rc));
    TAP_OK(src < 0 && src != -EAGAIN, "1.2: the server's handshake fails (%s)", tlsk_err_name(src));

    rc = run("1.3 ffdhe", s13, c13, &src);
    TAP_IS(rc, 0, "1.3: a client offering ffdhe groups connects (%s)", tlsk_err_name(rc));
    TAP_IS(src, 0, "1.3: the server completes and sees close_notify");

    rc = run("1.3 X25519 only", s13, c13x, &src);
    TAP_OK(rc < 0 && rc != -EAGAIN, "1.3: a client offering only X25519 is refused (%s)",
           tlsk_err_name(rc));
    TAP_OK(src < 0, "1.3: and the server's handshake fails (%s)", tlsk_err_name(src));

    tlsk_context_free(s12);
    tlsk_context_free(s13);
    tlsk_context_free(c12);
    tlsk_context_free(c13);
    tlsk_context_free(c13x);
    return tap_done();
}
