/*
 * test_sni_input.c - bad SNI from clients: a name that is not a host name, one of the
 * maximum 255 bytes with over-long labels, and a 300-byte name (refused by the client side
 * before any I/O).  The server serves its default context, reports the name as sent, and a
 * healthy connection next to them is untouched.  Both tiers.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "harness.h"
#include "tap.h"

struct srv {
    struct tlsk_context *ctx;
    const struct tlsk_sni *sni;
    int fd, rc;
    char servername[320];
};

static void *server(void *arg)
{
    struct srv *sv = arg;
    struct tlsk_socket_options o = { .sni = sv->sni };
    struct tlsk_socket *s = NULL;
    char b[8];

    if ((sv->rc = tlsk_socket_new_server(&s, sv->ctx, sv->fd, &o)) == 0 &&
        (sv->rc = h_handshake(s)) == 0) {
        const char *n = tlsk_socket_servername(s);
        snprintf(sv->servername, sizeof sv->servername, "%s", n ? n : "");
        if ((sv->rc = h_write_all(s, "ok", 2)) == 0) {
            sv->rc = (int)h_read_some(s, b, sizeof b);
        }
    }
    tlsk_socket_free(s);
    return NULL;
}

static void one(const char *what, const char *name, struct tlsk_context *sctx,
                const struct tlsk_sni *sni, struct tlsk_context *cctx, const char *want_cn)
{
    struct srv sv = { .ctx = sctx, .sni = sni };
    struct tlsk_socket_options o = { .servername = name };
    struct tlsk_socket *c = NULL;
    pthread_t t;
    int cfd, rc;
    char b[4];

    if (!TAP_OK(h_tcp_pair(&cfd, &sv.fd) == 0, "%s: tcp pair", what)) {
        return;
    }
    h_spawn(&t, server, &sv);
    rc = tlsk_socket_new_client(&c, cctx, cfd, &o);
    if (rc == 0) {
        rc = h_handshake(c);
    }
    TAP_IS(rc, 0, "%s: handshake completes (%s)", what, tlsk_socket_error_detail(c));
    if (rc == 0) {
        struct tlsk_cert_info *ci = NULL;
        const char *cn = "";
        TAP_IS(h_read_full(c, b, 2), 2, "%s: data flows", what);
        if (tlsk_socket_peer_certificate(c, 0, &ci) == 0) {
            for (size_t i = 0; i < ci->subject_count; i++) {
                if (strcmp(ci->subject[i].key, "CN") == 0) {
                    cn = ci->subject[i].value;
                }
            }
        }
        TAP_OK(strcmp(cn, want_cn) == 0, "%s: served CN %s (want %s)", what, cn, want_cn);
        tlsk_cert_info_free(ci);
        h_shutdown(c);
    }
    tlsk_socket_free(c);
    close(cfd);
    pthread_join(t, NULL);
    close(sv.fd);
    TAP_IS(sv.rc, 0, "%s: server side clean (%s)", what, tlsk_err_name(sv.rc));
    TAP_OK(strcmp(sv.servername, name) == 0, "%s: servername reported as sent (%zu bytes)", what,
           strlen(sv.servername));
}

static struct tlsk_context *ctx_of(const char *cert, const char *key)
{
    struct tlsk_context_options o = { .cert_file = cert, .key_file = key };
    struct tlsk_context *c = NULL;
    char err[256];
    return tlsk_context_new(&c, &o, err, sizeof err) == 0 ? c : NULL;
}

int main(void)
{
    char cert[2][256], key[2][256], long255[256], long300[301];
    struct tlsk_context *def, *a, *cctx;
    struct tlsk_sni *sni = NULL;
    struct tlsk_socket *c = NULL;
    struct tlsk_socket_options o = { .servername = long300 };
    int fds[2];

    signal(SIGPIPE, SIG_IGN);
    snprintf(cert[0], 256, "%s", h_fixture("sni-default-cert.pem"));
    snprintf(key[0], 256, "%s", h_fixture("sni-default-key.pem"));
    snprintf(cert[1], 256, "%s", h_fixture("sni-a-cert.pem"));
    snprintf(key[1], 256, "%s", h_fixture("sni-a-key.pem"));
    def = ctx_of(cert[0], key[0]);
    a = ctx_of(cert[1], key[1]);
    cctx = h_client_ctx(0, NULL, TLSK_OFFLOAD_DEFAULT, TLSK_VERIFY_NONE_INSECURE);
    if (!TAP_OK(def && a && cctx && tlsk_sni_new(&sni) == 0 &&
                    tlsk_sni_add(sni, "a.example.com", a) == 0,
                "contexts and SNI table")) {
        return tap_done();
    }
    /* 255 bytes, the most a server_name may carry, in labels longer than 63. */
    memset(long255, 'x', 255);
    long255[100] = '.';
    long255[255] = '\0';
    memset(long300, 'y', 300);
    long300[300] = '\0';

    one("not a host name: the default serves", "not a host!", def, sni, cctx, "localhost");
    one("255 bytes, labels over 63: the default serves", long255, def, sni, cctx, "localhost");
    one("control: the table answers a valid name", "a.example.com", def, sni, cctx,
        "a.example.com");

    /* Over 255 bytes cannot be sent: the client refuses before any I/O. */
    if (TAP_OK(socketpair(AF_UNIX, SOCK_STREAM, 0, fds) == 0, "socketpair")) {
        TAP_IS(tlsk_socket_new_client(&c, cctx, fds[0], &o), TLSK_ECONFIG,
               "a 300-byte servername is refused with TLSK_ECONFIG");
        close(fds[0]);
        close(fds[1]);
    }
    tlsk_sni_free(sni);
    tlsk_context_free(def);
    tlsk_context_free(a);
    tlsk_context_free(cctx);
    return tap_done();
}
