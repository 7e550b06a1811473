/*
 * test_sni_resume.c - a session resumes only under the context it was made under (lib/session.c
 * sid_ctx; the hostile review's "client-certificate requirement skipped through resumption
 * across SNI contexts").
 *
 * A server's default context asks for no client certificate; an SNI context for
 * "secure.example" requires one.  A client without a certificate makes a session under the
 * default context, then offers it with SNI "secure.example".  The session must not resume:
 * the handshake is a full one, the certificate is asked for, and without one it fails.  Cases:
 * TLS 1.2 session ids, TLS 1.2 without tickets, TLS 1.3 stateful tickets, TLS 1.3 stateless
 * tickets (both contexts given the same ticket keys, so only the session id context can
 * refuse), each against a blocking server with an SNI table and against the evented server
 * (tlsk_server_add_context).  A control resumes under the default context, so the test shows
 * that resumption works at all.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "harness.h"
#include "tap.h"

static const unsigned char ticket_keys[48] = "tlsk shared ticket keys for the SNI resume test!";

static struct tlsk_context *server_ctx(int version, unsigned flags)
{
    struct tlsk_context_options o = { 0 };
    struct tlsk_context *c = NULL;
    char err[512];

    o.cert_file = h_fixture("agent1-cert.pem");
    o.key_file = h_fixture("agent1-key.pem");
    o.ca_file = h_fixture("ca1-cert.pem");
    o.min_version = o.max_version = version;
    o.flags = flags;
    o.ticket_keys = ticket_keys;
    if (tlsk_context_new(&c, &o, err, sizeof err) != 0) {
        tap_diag("context: %s", err);
    }
    return c;
}

struct kase {
    const char *name;
    int version;
    unsigned flags;
};

/* ---- the blocking server: one connection at a time, SNI table ------------------------------ */

struct bserver {
    int lfd;
    struct tlsk_context *def;
    struct tlsk_sni *sni;
    int conns;
};

static void *bserver_main(void *arg)
{
    struct bserver *b = arg;

    for (int i = 0; i < b->conns; i++) {
        struct tlsk_socket_options o = { .flags = TLSK_SOCKET_OWN_FD, .sni = b->sni };
        struct tlsk_socket *s = NULL;
        char buf[16];
        int fd = accept(b->lfd, NULL, NULL);

        if (fd < 0 || tlsk_socket_new_server(&s, b->def, fd, &o) != 0) {
            if (fd >= 0) {
                close(fd);
            }
            continue;
        }
        if (h_handshake(s) == 0 && h_read_some(s, buf, sizeof buf) == 0) {
            h_shutdown(s);
        }
        tlsk_socket_free(s);
    }
    return NULL;
}

/* ---- the evented server ------------------------------------------------------------------- */

static void ev_secure(struct tlsk_server *srv, struct tlsk_socket *s, void *data)
{
    (void)srv;
    (void)data;
    tlsk_socket_end(s);
}

static const struct tlsk_server_callbacks ev_cb = { .secure_connection = ev_secure };

struct eserver {
    struct tlsk_loop *loop;
    struct tlsk_server *srv;
};

static void *eserver_main(void *arg)
{
    struct eserver *e = arg;
    tlsk_loop_run(e->loop, 20000);
    return NULL;
}

/* ---- the client ------------------------------------------------------------------------- */

struct result {
    int rc;
    int reused;
    unsigned char sess[8192];
    ssize_t sess_len;
};

/* One client connection with SNI name, offering sess (if any); keeps its session. */
static void client(int port, int version, const char *name, const struct result *offer,
                   struct result *out)
{
    struct tlsk_context *c = h_client_ctx(version, NULL, TLSK_OFFLOAD_DEFAULT,
                                          TLSK_VERIFY_NONE_INSECURE);
    struct tlsk_socket_options o = { .servername = name };
    struct tlsk_socket *s = NULL;
    char p[16], buf[16];

    snprintf(p, sizeof p, "%d", port);
    if (offer && offer->sess_len > 0) {
        o.session = offer->sess;
        o.session_len = (size_t)offer->sess_len;
    }
    memset(out, 0, sizeof *out);
    out->rc = c ? tlsk_connect(&s, c, "127.0.0.1", p, &o) : -ENOMEM;
    if (out->rc == 0) {
        out->rc = h_handshake(s);
    }
    if (out->rc == 0) {
        out->reused = tlsk_socket_session_reused(s);
        /* TLS 1.3 tickets arrive after the handshake: read to the server's close_notify.  A
         * TLS 1.3 server refuses a client certificate after the client's handshake is done,
         * so its alert is read here. */
        if ((out->rc = h_shutdown(s)) == 0) {
            ssize_t n = h_read_some(s, buf, sizeof buf);
            out->rc = n < 0 ? (int)n : 0;
        }
        out->sess_len = tlsk_socket_session(s, out->sess, sizeof out->sess);
    }
    tlsk_socket_free(s);
    tlsk_context_free(c);
}

static void check(const char *what, const struct result *made, const struct result *same,
                  const struct result *other)
{
    TAP_OK(made->rc == 0 && made->sess_len > 0,
           "%s: a session is made under the default context (%s, %zd bytes)", what,
           tlsk_err_name(made->rc), made->sess_len);
    TAP_OK(same->rc == 0 && same->reused,
           "%s: control: it resumes under the same context (%s, reused %d)", what,
           tlsk_err_name(same->rc), same->reused);
    if (!TAP_OK(!(other->rc == 0 && other->reused),
                "%s: it does not resume under the SNI context that requires a certificate", what)) {
        tap_diag("  the client, holding no certificate, was let in by resumption");
    }
    TAP_OK(other->rc != 0,
           "%s: the full handshake asks for a certificate and the connection fails without one "
           "(%s)",
           what,
           tlsk_err_name(other->rc));
}

static void blocking_case(const struct kase *k)
{
    struct bserver b = { .conns = 3 };
    struct tlsk_context *secure = server_ctx(k->version, k->flags | TLSK_REQUIRE_PEER_CERT);
    struct result made, same, other;
    pthread_t t;
    int port;
    char what[128];

    snprintf(what, sizeof what, "blocking server, %s", k->name);
    b.def = server_ctx(k->version, k->flags);
    if (!b.def || !secure || tlsk_sni_new(&b.sni) != 0 ||
        tlsk_sni_add(b.sni, "secure.example", secure) != 0 || (b.lfd = h_listen(&port)) < 0) {
        tap_bail("setup");
    }
    h_spawn(&t, bserver_main, &b);
    client(port, k->version, "www.example", NULL, &made);
    client(port, k->version, "www.example", &made, &same);
    client(port, k->version, "secure.example", &made, &other);
    pthread_join(t, NULL);
    check(what, &made, &same, &other);
    close(b.lfd);
    tlsk_sni_free(b.sni);
    tlsk_context_free(b.def);
    tlsk_context_free(secure);
}

static void evented_case(const struct kase *k)
{
    struct eserver e = { 0 };
    struct tlsk_context *def = server_ctx(k->version, k->flags);
    struct tlsk_context *secure = server_ctx(k->version, k->flags | TLSK_REQUIRE_PEER_CERT);
    struct tlsk_server_options so = { .ctx = def, .handshake_timeout_ms = 5000 };
    struct result made, same, other;
    pthread_t t;
    char host[64], what[128];
    int port;

    snprintf(what, sizeof what, "evented server, %s", k->name);
    if (!def || !secure || tlsk_loop_new(&e.loop) != 0 ||
        tlsk_server_new(&e.srv, e.loop, &so, &ev_cb, NULL) != 0 ||
        tlsk_server_add_context(e.srv, "secure.example", secure) != 0 ||
        tlsk_server_listen(e.srv, "127.0.0.1", "0", 16) != 0 ||
        tlsk_server_address(e.srv, host, sizeof host, &port) != 0) {
        tap_bail("evented setup");
    }
    h_spawn(&t, eserver_main, &e);
    client(port, k->version, "www.example", NULL, &made);
    client(port, k->version, "www.example", &made, &same);
    client(port, k->version, "secure.example", &made, &other);
    tlsk_loop_stop(e.loop);
    pthread_join(t, NULL);
    tlsk_server_close(e.srv);
    tlsk_loop_run(e.loop, 2000);
    check(what, &made, &same, &other);
    tlsk_loop_free(e.loop);
    tlsk_context_free(def);
    tlsk_context_free(secure);
}

int main(void)
{
    static const struct kase kases[] = {
        { "TLS 1.2 session id", TLSK_TLS1_2, 0 },
        { "TLS 1.2 without tickets", TLSK_TLS1_2, TLSK_NO_TICKETS },
        { "TLS 1.3 stateful tickets", TLSK_TLS1_3, TLSK_STATEFUL_TICKETS },
        { "TLS 1.3 stateless tickets, shared ticket keys", TLSK_TLS1_3, 0 },
    };

    signal(SIGPIPE, SIG_IGN);
    alarm(120);
    for (size_t i = 0; i < sizeof kases / sizeof kases[0]; i++) {
        blocking_case(&kases[i]);
        evented_case(&kases[i]);
    }
    return tap_done();
}
