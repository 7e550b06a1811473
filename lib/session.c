/*
 * session.c - a context's sessions: the session id context, the internal cache or the
 * application's store (Node's newSession/resumeSession), and ticket keys that can be set,
 * read and rotated (the previous key still decrypts), or given as a list (the first
 * encrypts, all decrypt) for a fleet's rotation.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/pkcs12.h>
#include <openssl/sha.h>
#include <openssl/rand.h>
#include <openssl/core_names.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "internal.h"


/* The seed derives the default session id context from the command line. */
/* Feed a string (or NULL) to the digest, with its length so that fields cannot run into
 * each other. */
static void put_field(EVP_MD_CTX *md, const void *p, size_t n)
{
    uint64_t len = p ? n : UINT64_MAX;
    EVP_DigestUpdate(md, &len, sizeof len);
    if (p) {
        EVP_DigestUpdate(md, p, n);
    }
}

/*
 * The session id context: a session resumes only under a context with the same one (OpenSSL
 * checks it for session ids, stateful and stateless tickets, and the application's store).
 * So it names what a resumption skips: who made the sessions (the application's
 * session_id_context, or by default this program's command line, as Node) and how the peer
 * was verified (the client certificate policy and the CA and CRL sets).  A session made under
 * a context that asked for no certificate then never resumes under one that requires it, even
 * after SNI switched contexts mid-handshake; servers with the same configuration (a fleet, or
 * forked workers) still share sessions.
 */
static int sid_ctx(const struct tlsk_context_options *o, unsigned char out[SHA256_DIGEST_LENGTH])
{
    static const unsigned verify_bits = TLSK_REQUIRE_PEER_CERT | TLSK_REQUEST_PEER_CERT;
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    unsigned policy = o->flags & verify_bits, len = 0;
    char cmd[4096];
    size_t n = 0;
    int ok;

    if (!o->session_id_context) {
        FILE *f = fopen("/proc/self/cmdline", "r");
        if (f) {
            n = fread(cmd, 1, sizeof cmd, f);
            fclose(f);
        }
    }
    ok = md && EVP_DigestInit_ex(md, EVP_sha256(), NULL) == 1;
    if (ok) {
        put_field(md, "tlsk session id context 1", 25);
        put_field(md, o->session_id_context ? o->session_id_context : cmd,
                  o->session_id_context ? strlen(o->session_id_context) : n);
        put_field(md, &policy, sizeof policy);
        put_field(md, o->ca_file, o->ca_file ? strlen(o->ca_file) : 0);
        put_field(md, o->ca_pem, o->ca_pem ? (o->ca_pem_len ? o->ca_pem_len : strlen(o->ca_pem)) : 0);
        put_field(md, o->pfx_file, o->pfx_file ? strlen(o->pfx_file) : 0);
        put_field(md, o->pfx, o->pfx ? o->pfx_len : 0);
        put_field(md, o->crl_file, o->crl_file ? strlen(o->crl_file) : 0);
        put_field(md, o->crl_pem, o->crl_pem ? (o->crl_pem_len ? o->crl_pem_len : strlen(o->crl_pem)) : 0);
        ok = EVP_DigestFinal_ex(md, out, &len) == 1 && len == SHA256_DIGEST_LENGTH;
    }
    EVP_MD_CTX_free(md);
    return ok ? 0 : -1;
}

/* Servers: a session to keep (external store); clients: a session the server issued. */
static int new_session_cb(SSL *ssl, SSL_SESSION *sess)
{
    struct tlsk_socket *s = SSL_get_app_data(ssl);
    unsigned char *der = NULL;
    int len;

    if (!s) {
        return 0;
    }
    if (s->is_server ? !s->ctx->has_store && !(s->sni_ctx && s->sni_ctx->has_store)
                     : !s->on_session) {
        return 0;
    }
    len = i2d_SSL_SESSION(sess, &der);
    if (len > 0) {
        if (s->is_server) {
            const struct tlsk_context *c = s->sni_ctx && s->sni_ctx->has_store ? s->sni_ctx : s->ctx;
            unsigned int idlen;
            const unsigned char *id = SSL_SESSION_get_id(sess, &idlen);
            c->store.new_session(s, id, idlen, der, (size_t)len, c->store.ud);
        } else if (SSL_SESSION_is_resumable(sess)) {
            s->on_session(s, der, (size_t)len, s->on_session_data);
        }
    }
    OPENSSL_free(der);
    return 0; /* we keep no reference */
}

static SSL_SESSION *get_session_cb(SSL *ssl, const unsigned char *id, int idlen, int *copy)
{
    struct tlsk_socket *s = SSL_get_app_data(ssl);
    const unsigned char *p;
    SSL_SESSION *sess;

    *copy = 0;
    if (!s || !s->resume_data || (size_t)idlen != s->resume_id_len ||
        memcmp(id, s->resume_id, (size_t)idlen) != 0) {
        return NULL;
    }
    p = s->resume_data;
    sess = d2i_SSL_SESSION(NULL, &p, (long)s->resume_data_len);
    ERR_clear_error();
    return sess; /* NULL for garbage: a full handshake (SS-5) */
}

/* The ticket cipher, fetched once per process: EVP_aes_128_cbc() makes OpenSSL 3 look it up
 * by name on every ticket sealed or opened (as keys.c does for the KDFs). */
static EVP_CIPHER *g_ticket_cipher;
static CRYPTO_ONCE g_ticket_once = CRYPTO_ONCE_STATIC_INIT;

static void ticket_cipher_init(void)
{
    g_ticket_cipher = EVP_CIPHER_fetch(NULL, "AES-128-CBC", NULL);
}

static const EVP_CIPHER *ticket_cipher(void)
{
    CRYPTO_THREAD_run_once(&g_ticket_once, ticket_cipher_init);
    return g_ticket_cipher ? g_ticket_cipher : EVP_aes_128_cbc();
}

/* Ticket keys: AES-128-CBC and HMAC-SHA256, as OpenSSL's own default, but with keys the
 * application can set, rotate and share across processes. */
static int ticket_cb(SSL *ssl, unsigned char key_name[16], unsigned char iv[16],
                     EVP_CIPHER_CTX *ectx, EVP_MAC_CTX *hctx, int enc)
{
    struct tlsk_socket *s = SSL_get_app_data(ssl);
    struct tlsk_context *c = s && s->sni_ctx ? s->sni_ctx : s ? s->ctx : NULL;
    unsigned char k[48];
    int which = -1, rc = -1;

    if (!c) {
        return -1;
    }
    pthread_mutex_lock(&c->tk_lock);
    if (enc) {
        which = 0;
    } else {
        for (size_t i = 0; i < c->tk_n; i++) {
            if (memcmp(key_name, c->tk[i], 16) == 0) {
                which = (int)i;
                break;
            }
        }
    }
    if (which >= 0) {
        memcpy(k, c->tk[which], 48);
    }
    pthread_mutex_unlock(&c->tk_lock);
    if (which < 0) {
        return 0; /* unknown key: full handshake */
    }
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY, k + 16, 16),
        OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0),
        OSSL_PARAM_construct_end(),
    };
    if (enc) {
        memcpy(key_name, k, 16);
        if (RAND_bytes(iv, 16) != 1 ||
            EVP_EncryptInit_ex(ectx, ticket_cipher(), NULL, k + 32, iv) != 1) {
            goto out;
        }
    } else if (EVP_DecryptInit_ex(ectx, ticket_cipher(), NULL, k + 32, iv) != 1) {
        goto out;
    }
    if (EVP_MAC_CTX_set_params(hctx, params) != 1) {
        goto out;
    }
    /* A ticket under any other key of the list resumes and is renewed under the first.  In
     * TLS 1.3 every resumption gets a fresh ticket (OpenSSL sends one only when asked to
     * renew), so a client always holds an unused ticket (SS-8). */
    rc = which > 0 || SSL_version(ssl) == TLS1_3_VERSION ? 2 : 1;
out:
    OPENSSL_cleanse(k, sizeof k);
    return rc;
}

/* Swap in a new list (n keys of 48 bytes) and wipe the old one; on failure nothing changes. */
static int replace_keys(struct tlsk_context *ctx, const unsigned char *first,
                        const unsigned char *rest, size_t nrest)
{
    unsigned char(*nk)[48] = OPENSSL_malloc((1 + nrest) * 48), (*old)[48];
    size_t old_n;

    if (!nk) {
        return TLSK_ENOMEM;
    }
    memcpy(nk[0], first, 48);
    if (nrest) {
        memcpy(nk[1], rest, nrest * 48);
    }
    pthread_mutex_lock(&ctx->tk_lock);
    old = ctx->tk;
    old_n = ctx->tk_n;
    ctx->tk = nk;
    ctx->tk_n = 1 + nrest;
    pthread_mutex_unlock(&ctx->tk_lock);
    if (old) {
        OPENSSL_clear_free(old, old_n * 48);
    }
    return 0;
}

TLSK_PUBLIC int tlsk_context_set_ticket_keys(struct tlsk_context *ctx, const unsigned char keys[48])
{
    unsigned char prev[48];
    int rc;

    if (!ctx || !keys) {
        return TLSK_ECONFIG;
    }
    pthread_mutex_lock(&ctx->tk_lock);
    memcpy(prev, ctx->tk[0], 48);
    pthread_mutex_unlock(&ctx->tk_lock);
    /* The previous first key keeps decrypting, so tickets issued just before still resume. */
    rc = memcmp(prev, keys, 48) == 0 ? 0 : replace_keys(ctx, keys, prev, 1);
    OPENSSL_cleanse(prev, sizeof prev);
    return rc;
}

TLSK_PUBLIC int tlsk_context_set_ticket_key_list(struct tlsk_context *ctx,
                                                 const unsigned char *keys, size_t n)
{
    if (!ctx || !keys || n == 0 || n > TLSK_TICKET_KEYS_MAX) {
        return TLSK_ECONFIG;
    }
    return replace_keys(ctx, keys, keys + 48, n - 1);
}

TLSK_PUBLIC int tlsk_context_get_ticket_keys(const struct tlsk_context *ctx, unsigned char keys[48])
{
    if (!ctx || !keys) {
        return TLSK_ECONFIG;
    }
    if (ctx->flags & TLSK_NO_TICKETS) {
        return TLSK_ESTATE;
    }
    pthread_mutex_lock((pthread_mutex_t *)&ctx->tk_lock);
    memcpy(keys, ctx->tk[0], 48);
    pthread_mutex_unlock((pthread_mutex_t *)&ctx->tk_lock);
    return 0;
}

/* The session settings of a new context: id context, timeout, ticket keys and kinds, the
 * internal cache or the application's store. */
int tlsk__context_sessions(struct tlsk_context *c, SSL_CTX *sc,
                           const struct tlsk_context_options *o, struct tlsk__detail *d)
{
    unsigned char sid[SHA256_DIGEST_LENGTH];

    if (sid_ctx(o, sid) != 0 || SSL_CTX_set_session_id_context(sc, sid, sizeof sid) != 1) {
        return tlsk__config_error(d, TLSK_EINTERNAL, "cannot set the session id context");
    }
    SSL_CTX_set_timeout(sc, o->session_timeout ? o->session_timeout : 300);
    {
        unsigned char k[48];
        int rc;
        if (o->ticket_keys) {
            memcpy(k, o->ticket_keys, 48);
        } else if (RAND_bytes(k, 48) != 1) {
            return tlsk__config_error(d, TLSK_EINTERNAL, "no randomness for ticket keys");
        }
        rc = replace_keys(c, k, NULL, 0);
        OPENSSL_cleanse(k, sizeof k);
        if (rc != 0) {
            return tlsk__config_error(d, rc, "out of memory");
        }
    }
    SSL_CTX_set_tlsext_ticket_key_evp_cb(sc, ticket_cb);
    if (o->flags & (TLSK_NO_TICKETS | TLSK_STATEFUL_TICKETS)) {
        /* In TLS 1.3 NO_TICKET means stateful tickets; no tickets at all is num_tickets 0. */
        SSL_CTX_set_options(sc, SSL_OP_NO_TICKET);
        if (o->flags & TLSK_NO_TICKETS) {
            SSL_CTX_set_num_tickets(sc, 0);
        }
    }
    if (o->session_store) {
        if (!o->session_store->new_session || !o->session_store->resume_session) {
            return tlsk__config_error(d, TLSK_ECONFIG,
                                      "session_store: both callbacks are required");
        }
        c->store = *o->session_store;
        c->has_store = true;
    }
    /* Servers cache internally unless there is a store (A5); clients get new_session_cb
     * for the 'session' event. */
    SSL_CTX_set_session_cache_mode(sc, SSL_SESS_CACHE_BOTH |
                                           (c->has_store ? SSL_SESS_CACHE_NO_INTERNAL_LOOKUP |
                                                               SSL_SESS_CACHE_NO_INTERNAL_STORE
                                                         : 0));
    SSL_CTX_sess_set_new_cb(sc, new_session_cb);
    SSL_CTX_sess_set_get_cb(sc, get_session_cb);
    if (o->session_cache_size > 0) {
        SSL_CTX_sess_set_cache_size(sc, o->session_cache_size);
    }
    return 0;
}
