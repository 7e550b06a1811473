/*
 * hello.c - what a server decides at the ClientHello, before OpenSSL answers it: the context
 * by SNI (the application's callback, else the addContext table, else the default), and an
 * external session store's lookup.  Both may answer later (tlsk_socket_sni_answer,
 * tlsk_socket_resume_answer): the handshake then waits, and the evented layer is woken.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include "internal.h"

/* The server name from the ClientHello extension, or NULL. */
static char *hello_servername(SSL *ssl)
{
    const unsigned char *p;
    size_t len, n;
    char *name;

    if (!SSL_client_hello_get0_ext(ssl, TLSEXT_TYPE_server_name, &p, &len) || len < 5) {
        return NULL;
    }
    /* server_name_list length, then name_type 0 (host_name) and its length. */
    if ((size_t)(p[0] << 8 | p[1]) != len - 2 || p[2] != TLSEXT_NAMETYPE_host_name) {
        return NULL;
    }
    n = (size_t)(p[3] << 8 | p[4]);
    if (n == 0 || n > len - 5 || memchr(p + 5, 0, n)) {
        return NULL;
    }
    name = malloc(n + 1);
    if (name) {
        memcpy(name, p + 5, n);
        name[n] = '\0';
    }
    return name;
}

static int sni_apply(struct tlsk_socket *s, struct tlsk_context *c, int *al)
{
    if (!c || c == s->ctx) {
        return SSL_CLIENT_HELLO_SUCCESS;
    }
    if (!c->has_cert) {
        s->sni_err = tlsk__set_detail(s, TLSK_EINVALID_SNI_CONTEXT,
                                      "SNI chose a context without a certificate");
        *al = SSL_AD_INTERNAL_ERROR;
        return SSL_CLIENT_HELLO_ERROR;
    }
    if (SSL_set_SSL_CTX(s->ssl, c->ssl_ctx) != c->ssl_ctx) {
        s->sni_err = tlsk__set_detail(s, TLSK_EINTERNAL, "SSL_set_SSL_CTX failed");
        *al = SSL_AD_INTERNAL_ERROR;
        return SSL_CLIENT_HELLO_ERROR;
    }
    /* Client certificates are requested and checked as the chosen context says (SC-4). */
    tlsk__apply_verify(s->ssl, c, true);
    tlsk_context_free(s->sni_ctx);
    s->sni_ctx = tlsk_context_ref(c);
    return SSL_CLIENT_HELLO_SUCCESS;
}

static int sni_select(struct tlsk_socket *s, int *al)
{
    struct tlsk_context *c = NULL;
    int rc;

    if (!s->is_server) {
        return SSL_CLIENT_HELLO_SUCCESS;
    }
    if (s->sni_state == 1) {
        return SSL_CLIENT_HELLO_RETRY;
    }
    if (s->sni_state == 2) {
        s->sni_state = 0;
        c = s->sni_answer;
        s->sni_answer = NULL;
        if (s->sni_err) {
            *al = SSL_AD_INTERNAL_ERROR;
            tlsk_context_free(c);
            return SSL_CLIENT_HELLO_ERROR;
        }
        rc = sni_apply(s, c, al);
        tlsk_context_free(c);
        return rc;
    }
    free(s->servername);
    s->servername = hello_servername(s->ssl);
    if (!s->servername || (!s->sni_cb && !s->sni)) {
        return SSL_CLIENT_HELLO_SUCCESS;
    }
    if (s->sni_cb) {
        rc = s->sni_cb(s, s->servername, s->sni_data, &c);
        if (rc == TLSK_SNI_PENDING) {
            s->sni_state = 1;
            return SSL_CLIENT_HELLO_RETRY;
        }
        if (rc < 0) {
            s->sni_err = tlsk__set_detail(s, rc, "SNI callback failed: %s", tlsk_strerror(rc));
            *al = SSL_AD_INTERNAL_ERROR;
            return SSL_CLIENT_HELLO_ERROR;
        }
        return sni_apply(s, c, al);
    }
    return sni_apply(s, tlsk_sni_lookup(s->sni, s->servername), al);
}

TLSK_PUBLIC int tlsk_socket_sni_answer(struct tlsk_socket *s, struct tlsk_context *ctx, int err)
{
    if (!s || s->sni_state != 1) {
        return TLSK_ESTATE;
    }
    s->sni_state = 2;
    s->sni_answer = tlsk_context_ref(ctx);
    if (err < 0) {
        s->sni_err = tlsk__set_detail(s, err, "SNI callback failed: %s", tlsk_strerror(err));
    }
    if (s->ev) {
        s->ev->hooks->wake(s); /* resume the handshake from the loop */
    }
    return 0;
}

static bool hello_offers_tls13(SSL *ssl)
{
    const unsigned char *p;
    size_t len;

    if (!SSL_client_hello_get0_ext(ssl, TLSEXT_TYPE_supported_versions, &p, &len) || len < 1 ||
        (size_t)p[0] + 1 > len) {
        return false;
    }
    for (size_t i = 1; i + 1 < (size_t)p[0] + 1; i += 2) {
        if (p[i] == 3 && p[i + 1] == 4) {
            return true;
        }
    }
    return false;
}

/* The id the external store should look up: a TLS 1.2 session id, or the first identity of
 * a TLS 1.3 pre_shared_key (stateful tickets).  0 when there is none (D6). */
static size_t hello_resume_id(struct tlsk_socket *s, unsigned char *out, size_t cap)
{
    const unsigned char *p;
    size_t len;
    int max = SSL_get_max_proto_version(s->ssl);

    if (hello_offers_tls13(s->ssl) && (max == 0 || max >= TLS1_3_VERSION)) {
        size_t n;
        if (!(s->ctx->flags & TLSK_STATEFUL_TICKETS) ||
            !SSL_client_hello_get0_ext(s->ssl, TLSEXT_TYPE_psk, &p, &len) || len < 4) {
            return 0;
        }
        n = (size_t)(p[2] << 8 | p[3]);
        if (n == 0 || n + 4 > len || n > cap) {
            return 0;
        }
        memcpy(out, p + 4, n);
        return n;
    }
    if (SSL_client_hello_get0_ext(s->ssl, TLSEXT_TYPE_session_ticket, &p, &len) && len > 0) {
        /* A TLS 1.2 ticket: the session id beside it is the client's random marker, and
         * ticket sessions fire neither callback (SS-7). */
        return 0;
    }
    len = SSL_client_hello_get0_session_id(s->ssl, &p);
    if (len == 0 || len > cap) {
        return 0;
    }
    memcpy(out, p, len);
    return len;
}

static int client_hello(struct tlsk_socket *s, int *al)
{
    const struct tlsk_context *c;
    int rc = sni_select(s, al);

    if (rc != SSL_CLIENT_HELLO_SUCCESS || !s->is_server) {
        return rc;
    }
    c = s->sni_ctx ? s->sni_ctx : s->ctx;
    if (!c->has_store) {
        return SSL_CLIENT_HELLO_SUCCESS;
    }
    if (s->resume_state == 1) {
        return SSL_CLIENT_HELLO_RETRY;
    }
    if (s->resume_state == 2) {
        if (s->resume_err) {
            *al = SSL_AD_INTERNAL_ERROR;
            return SSL_CLIENT_HELLO_ERROR;
        }
        return SSL_CLIENT_HELLO_SUCCESS;
    }
    if (!s->resume_id && !(s->resume_id = malloc(TLSK__RESUME_ID_CAP))) {
        s->sni_err = tlsk__set_detail(s, TLSK_ENOMEM, "out of memory");
        *al = SSL_AD_INTERNAL_ERROR;
        return SSL_CLIENT_HELLO_ERROR;
    }
    s->resume_id_len = hello_resume_id(s, s->resume_id, TLSK__RESUME_ID_CAP);
    if (s->resume_id_len == 0) {
        return SSL_CLIENT_HELLO_SUCCESS;
    }
    s->resume_state = 1;
    rc = c->store.resume_session(s, s->resume_id, s->resume_id_len, c->store.ud);
    if (rc == TLSK_SESSION_PENDING && s->resume_state == 1) {
        return SSL_CLIENT_HELLO_RETRY;
    }
    if (rc < 0) {
        s->resume_state = 2;
        s->resume_err = tlsk__set_detail(s, TLSK_ESESSION, "session store lookup failed: %s",
                                         tlsk_strerror(rc));
        s->sni_err = s->resume_err;
        *al = SSL_AD_INTERNAL_ERROR;
        return SSL_CLIENT_HELLO_ERROR;
    }
    if (s->resume_state == 1) {
        s->resume_state = 2; /* answered "not found" by returning 0 without an answer */
    }
    if (s->resume_err) {
        /* Answered with an error from inside the callback. */
        *al = SSL_AD_INTERNAL_ERROR;
        return SSL_CLIENT_HELLO_ERROR;
    }
    return SSL_CLIENT_HELLO_SUCCESS;
}

/* OpenSSL's ClientHello callback, installed on every server context (context.c). */
int tlsk__hello_cb(SSL *ssl, int *al, void *arg)
{
    struct tlsk_socket *s = SSL_get_app_data(ssl);

    (void)arg;
    if (!s) {
        return SSL_CLIENT_HELLO_SUCCESS;
    }
    return client_hello(s, al);
}

TLSK_PUBLIC int tlsk_socket_resume_answer(struct tlsk_socket *s, const void *data, size_t len,
                                          int err)
{
    if (!s || s->resume_state != 1) {
        return TLSK_ESTATE;
    }
    s->resume_state = 2;
    if (err < 0) {
        s->resume_err = tlsk__set_detail(s, TLSK_ESESSION, "session store lookup failed: %s",
                                         tlsk_strerror(err));
        s->sni_err = s->resume_err;
    } else if (data && len) {
        s->resume_data = malloc(len);
        if (!s->resume_data) {
            return TLSK_ENOMEM;
        }
        memcpy(s->resume_data, data, len);
        s->resume_data_len = len;
    }
    if (s->ev) {
        s->ev->hooks->wake(s);
    }
    return 0;
}
