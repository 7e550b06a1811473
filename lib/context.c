/* context.c - SecureContext: credentials, trust, versions, ciphers, groups, policy. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/pkcs12.h>
#include <openssl/sha.h>
#include <openssl/rand.h>
#include <openssl/core_names.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "internal.h"

/* D8 in docs/NODE.md §2.1: AEAD only, every suite one the kernel can offload. */
static const char default_ciphers[] =
    "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:"
    "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:"
    "ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305";
static const char default_ciphersuites[] =
    "TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256:TLS_AES_128_GCM_SHA256";
static const char default_groups[] = "X25519:P-256:P-384";
/* Node's ecdhCurve: false (A6). */
static const char ffdhe_groups[] = "ffdhe2048:ffdhe3072:ffdhe4096";

struct detail {
    char *buf;
    size_t len;
};

static int fail(struct detail *d, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(struct detail *d, int code, const char *fmt, ...)
{
    va_list ap;

    if (d->buf && d->len) {
        va_start(ap, fmt);
        vsnprintf(d->buf, d->len, fmt, ap);
        va_end(ap);
        tlsk__append_ossl_errors(d->buf, d->len);
    }
    ERR_clear_error();
    return code;
}

/* Never prompt: OpenSSL's default would read the terminal. */
static int passwd_cb(char *buf, int size, int rwflag, void *u)
{
    const char *pw = u;
    size_t n;

    (void)rwflag;
    if (!pw || size <= 0) {
        return 0;
    }
    n = strlen(pw);
    if (n > (size_t)size) {
        return 0;
    }
    memcpy(buf, pw, n);
    return (int)n;
}

static BIO *pem_bio(const char *file, const char *pem, size_t pem_len)
{
    if (file) {
        return BIO_new_file(file, "r");
    }
    return BIO_new_mem_buf(pem, pem_len ? (int)pem_len : -1);
}

static int load_cert_chain(SSL_CTX *sc, const struct tlsk_context_options *o, struct detail *d)
{
    BIO *b = pem_bio(o->cert_file, o->cert_pem, o->cert_pem_len);
    X509 *leaf = NULL, *x;
    int rc = 0;

    if (!b) {
        return fail(d, TLSK_ECERT, "cert: cannot open %s", o->cert_file ? o->cert_file : "PEM");
    }
    leaf = PEM_read_bio_X509_AUX(b, NULL, NULL, NULL);
    if (!leaf) {
        rc = fail(d, TLSK_ECERT, "cert: no PEM certificate in %s",
                  o->cert_file ? o->cert_file : "the PEM string");
        goto out;
    }
    if (SSL_CTX_use_certificate(sc, leaf) != 1) {
        rc = fail(d, TLSK_ECERT, "cert: rejected");
        goto out;
    }
    SSL_CTX_clear_chain_certs(sc);
    while ((x = PEM_read_bio_X509(b, NULL, NULL, NULL)) != NULL) {
        if (SSL_CTX_add0_chain_cert(sc, x) != 1) {
            X509_free(x);
            rc = fail(d, TLSK_ECERT, "cert: chain certificate rejected");
            goto out;
        }
    }
    /* The loop ends on "no start line", which is not an error. */
    ERR_clear_error();
out:
    X509_free(leaf);
    BIO_free(b);
    return rc;
}

static int load_key(SSL_CTX *sc, const struct tlsk_context_options *o, struct detail *d)
{
    BIO *b = pem_bio(o->key_file, o->key_pem, o->key_pem_len);
    EVP_PKEY *pk;
    int rc = 0;

    if (!b) {
        return fail(d, TLSK_EKEY, "key: cannot open %s", o->key_file ? o->key_file : "PEM");
    }
    pk = PEM_read_bio_PrivateKey(b, NULL, passwd_cb, (void *)o->passphrase);
    if (!pk) {
        char why[512] = "";
        char head[128] = "";

        tlsk__append_ossl_errors(why, sizeof why);
        (void)BIO_reset(b);
        (void)BIO_read(b, head, sizeof head - 1);
        if (strstr(why, "bad decrypt") || strstr(why, "bad password read") ||
            (!o->passphrase && strstr(head, "ENCRYPTED"))) {
            rc = fail(d, TLSK_EPASSPHRASE, "key: %s (%s)",
                      o->passphrase ? "wrong passphrase, bad decrypt"
                                    : "encrypted key and no passphrase, bad decrypt",
                      why);
        } else {
            rc = fail(d, TLSK_EKEY, "key: no usable PEM private key in %s (%s)",
                      o->key_file ? o->key_file : "the PEM string", why);
        }
        goto out;
    }
    {
        X509 *leaf = SSL_CTX_get0_certificate(sc);
        if (leaf && X509_check_private_key(leaf, pk) != 1) {
            EVP_PKEY_free(pk);
            rc = fail(d, TLSK_EKEY, "key: does not match the certificate");
            goto out;
        }
    }
    if (SSL_CTX_use_PrivateKey(sc, pk) != 1) {
        rc = fail(d, TLSK_EKEY, "key: rejected");
    } else if (SSL_CTX_check_private_key(sc) != 1) {
        rc = fail(d, TLSK_EKEY, "key: does not match the certificate");
    }
    EVP_PKEY_free(pk);
out:
    BIO_free(b);
    return rc;
}

static int load_trust(SSL_CTX *sc, const struct tlsk_context_options *o, struct detail *d)
{
    if (o->ca_file) {
        if (SSL_CTX_load_verify_locations(sc, o->ca_file, NULL) != 1) {
            return fail(d, TLSK_ECERT, "ca: cannot load %s", o->ca_file);
        }
        return 0;
    }
    if (o->ca_pem) {
        BIO *b = BIO_new_mem_buf(o->ca_pem, o->ca_pem_len ? (int)o->ca_pem_len : -1);
        X509_STORE *st = SSL_CTX_get_cert_store(sc);
        X509 *x;
        int n = 0;

        if (!b) {
            return fail(d, TLSK_ENOMEM, "ca: out of memory");
        }
        while ((x = PEM_read_bio_X509(b, NULL, NULL, NULL)) != NULL) {
            X509_STORE_add_cert(st, x);
            X509_free(x);
            n++;
        }
        BIO_free(b);
        if (n == 0) {
            return fail(d, TLSK_ECERT, "ca: no PEM certificate in the ca string");
        }
        ERR_clear_error();
        return 0;
    }
    if (SSL_CTX_set_default_verify_paths(sc) != 1) {
        return fail(d, TLSK_ECERT, "ca: cannot load the system trust store");
    }
    return 0;
}

static int version_ok(int v)
{
    return v == 0 || v == TLSK_TLS1_2 || v == TLSK_TLS1_3;
}

static void keylog_cb(const SSL *ssl, const char *line)
{
    struct tlsk_socket *s = SSL_get_app_data(ssl);
    struct tlsk__secret *dst = NULL;
    const char *p;
    size_t n = 0;

    if (!s) {
        return;
    }
    /* Only the first application traffic secrets matter for the install; later ones
     * (after KeyUpdate) replace them, as the bridge will follow OpenSSL's keys. */
    /* Only the first application secrets: later ones (after KeyUpdate) are derived by the
     * bridge itself, which must know exactly which key OpenSSL used for each record. */
    if (strncmp(line, "CLIENT_TRAFFIC_SECRET_0 ", 24) == 0) {
        dst = &s->client_secret;
    } else if (strncmp(line, "SERVER_TRAFFIC_SECRET_0 ", 24) == 0) {
        dst = &s->server_secret;
    } else {
        return;
    }
    /* "<LABEL> <client_random hex> <secret hex>" */
    p = strchr(line, ' ');
    p = p ? strchr(p + 1, ' ') : NULL;
    if (!p) {
        return;
    }
    p++;
    while (p[0] && p[1] && n < sizeof dst->b) {
        unsigned hi, lo;
        if (sscanf(p, "%1x%1x", &hi, &lo) != 2) {
            break;
        }
        dst->b[n++] = (unsigned char)(hi << 4 | lo);
        p += 2;
    }
    dst->len = n;
}


static int verify_accept_cb(int ok, X509_STORE_CTX *x)
{
    /* Accept, but OpenSSL still records the failure for tlsk_socket_authorized(). */
    (void)ok;
    (void)x;
    return 1;
}

void tlsk__apply_verify(SSL *ssl, const struct tlsk_context *c, bool server)
{
    tlsk__apply_verify_flags(ssl, c->flags, server);
}

void tlsk__apply_verify_flags(SSL *ssl, unsigned flags, bool server)
{
    if (server) {
        if (flags & TLSK_REQUIRE_PEER_CERT) {
            SSL_set_verify(ssl, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
        } else if (flags & TLSK_REQUEST_PEER_CERT) {
            SSL_set_verify(ssl, SSL_VERIFY_PEER, verify_accept_cb);
        } else {
            SSL_set_verify(ssl, SSL_VERIFY_NONE, NULL);
        }
    } else {
        SSL_set_verify(ssl, SSL_VERIFY_PEER,
                       (flags & TLSK_VERIFY_NONE_INSECURE) ? verify_accept_cb : NULL);
    }
}

/* A NULL-terminated protocol list to wire format (each name 1..255 bytes). */
static int proto_wire(const char *const *list, unsigned char **out, size_t *len)
{
    size_t total = 0, off = 0;

    for (size_t i = 0; list[i]; i++) {
        size_t n = strlen(list[i]);
        if (n == 0 || n > 255) {
            return -1;
        }
        total += 1 + n;
    }
    if (total == 0 || total > 65535) {
        return -1;
    }
    *out = malloc(total);
    if (!*out) {
        return -1;
    }
    for (size_t i = 0; list[i]; i++) {
        size_t n = strlen(list[i]);
        (*out)[off++] = (unsigned char)n;
        memcpy(*out + off, list[i], n);
        off += n;
    }
    *len = total;
    return 0;
}

/* ALPN, server preference (RFC 7301); no overlap is fatal no_application_protocol (D4). */
static int alpn_select_cb(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                          const unsigned char *in, unsigned int inlen, void *arg)
{
    const struct tlsk_context *c = arg;

    (void)ssl;
    for (size_t i = 0; i < c->alpn_len; i += 1 + c->alpn[i]) {
        for (unsigned j = 0; j < inlen; j += 1u + in[j]) {
            if (j + 1u + in[j] > inlen) {
                break;
            }
            if (in[j] == c->alpn[i] && memcmp(in + j + 1, c->alpn + i + 1, in[j]) == 0) {
                *out = in + j + 1;
                *outlen = in[j];
                return SSL_TLSEXT_ERR_OK;
            }
        }
    }
    return SSL_TLSEXT_ERR_ALERT_FATAL;
}

static int npn_advertise_cb(SSL *ssl, const unsigned char **out, unsigned int *outlen, void *arg)
{
    const struct tlsk_context *c = arg;

    (void)ssl;
    *out = c->npn;
    *outlen = (unsigned)c->npn_len;
    return SSL_TLSEXT_ERR_OK;
}

/* NPN: the client chooses; without overlap its first protocol (D4). */
static int npn_select_cb(SSL *ssl, unsigned char **out, unsigned char *outlen,
                         const unsigned char *in, unsigned int inlen, void *arg)
{
    const struct tlsk_context *c = arg;

    (void)ssl;
    SSL_select_next_proto(out, outlen, in, inlen, c->npn, (unsigned)c->npn_len);
    return SSL_TLSEXT_ERR_OK;
}

static int hello_cb(SSL *ssl, int *al, void *arg)
{
    struct tlsk_socket *s = SSL_get_app_data(ssl);

    (void)arg;
    if (!s) {
        return SSL_CLIENT_HELLO_SUCCESS;
    }
    return tlsk__client_hello(s, al);
}

/* Node's secureProtocol names (D9): the TLS 1.2 minimum is not negotiable. */
static int secure_protocol(const char *name, int *min, int *max, struct detail *d)
{
    static const struct {
        const char *prefix;
        int min, max; /* 0 = refuse */
        const char *what;
    } t[] = {
        { "TLS_", TLS1_2_VERSION, TLS1_3_VERSION, NULL },
        { "SSLv23_", TLS1_2_VERSION, TLS1_3_VERSION, NULL },
        { "TLSv1_3_", TLS1_3_VERSION, TLS1_3_VERSION, NULL },
        { "TLSv1_2_", TLS1_2_VERSION, TLS1_2_VERSION, NULL },
        { "TLSv1_1_", 0, 0, "TLS 1.1" },
        { "TLSv1_", 0, 0, "TLS 1.0" },
        { "SSLv3_", 0, 0, "SSL 3.0" },
        { "SSLv2_", 0, 0, "SSL 2.0" },
    };
    for (size_t i = 0; i < TLSK_ARRAY_SIZE(t); i++) {
        size_t pl = strlen(t[i].prefix);
        const char *rest = name + pl;
        if (strncmp(name, t[i].prefix, pl) != 0 ||
            (strcmp(rest, "method") != 0 && strcmp(rest, "server_method") != 0 &&
             strcmp(rest, "client_method") != 0)) {
            continue;
        }
        if (!t[i].min) {
            return fail(d, TLSK_EUNSUPPORTED_PROTOCOL,
                        "secure_protocol %s selects %s; tlsk requires TLS 1.2 or later", name,
                        t[i].what);
        }
        *min = t[i].min;
        *max = t[i].max;
        return 0;
    }
    return fail(d, TLSK_ECONFIG, "secure_protocol: unknown method name \"%s\"", name);
}

static int load_pfx(SSL_CTX *sc, const struct tlsk_context_options *o, struct detail *d)
{
    BIO *b = o->pfx_file ? BIO_new_file(o->pfx_file, "rb")
                         : BIO_new_mem_buf(o->pfx, (int)o->pfx_len);
    PKCS12 *p12 = NULL;
    EVP_PKEY *pk = NULL;
    X509 *cert = NULL;
    STACK_OF(X509) *ca = NULL;
    int rc = 0;

    if (!b || !(p12 = d2i_PKCS12_bio(b, NULL))) {
        rc = fail(d, TLSK_ECERT, "pfx: cannot read a PKCS#12 bundle from %s",
                  o->pfx_file ? o->pfx_file : "the pfx bytes");
        goto out;
    }
    if (!PKCS12_verify_mac(p12, o->passphrase ? o->passphrase : "", -1) &&
        !(o->passphrase == NULL && PKCS12_verify_mac(p12, NULL, 0))) {
        rc = fail(d, TLSK_EPASSPHRASE, "pfx: mac verify failure (wrong passphrase)");
        goto out;
    }
    if (!PKCS12_parse(p12, o->passphrase ? o->passphrase : "", &pk, &cert, &ca) || !pk || !cert) {
        rc = fail(d, TLSK_EPASSPHRASE, "pfx: cannot decrypt the bundle (bad decrypt)");
        goto out;
    }
    if (SSL_CTX_use_certificate(sc, cert) != 1 || SSL_CTX_use_PrivateKey(sc, pk) != 1 ||
        SSL_CTX_check_private_key(sc) != 1) {
        rc = fail(d, TLSK_EKEY, "pfx: key does not match the certificate");
        goto out;
    }
    for (int i = 0; ca && i < sk_X509_num(ca); i++) {
        X509 *x = sk_X509_value(ca, i);
        /* As Node: the bundle's CA certificates are both chain and trust anchors. */
        X509_STORE_add_cert(SSL_CTX_get_cert_store(sc), x);
        if (SSL_CTX_add1_chain_cert(sc, x) != 1) {
            rc = fail(d, TLSK_ECERT, "pfx: chain certificate rejected");
            goto out;
        }
    }
    ERR_clear_error();
out:
    sk_X509_pop_free(ca, X509_free);
    X509_free(cert);
    EVP_PKEY_free(pk);
    PKCS12_free(p12);
    BIO_free(b);
    return rc;
}

static int load_crl(SSL_CTX *sc, const struct tlsk_context_options *o, struct detail *d)
{
    BIO *b = o->crl_file ? BIO_new_file(o->crl_file, "r")
                         : BIO_new_mem_buf(o->crl_pem, o->crl_pem_len ? (int)o->crl_pem_len : -1);
    X509_STORE *st = SSL_CTX_get_cert_store(sc);
    X509_CRL *crl;
    int n = 0;

    if (!b) {
        return fail(d, TLSK_ECERT, "crl: cannot open %s", o->crl_file ? o->crl_file : "PEM");
    }
    while ((crl = PEM_read_bio_X509_CRL(b, NULL, NULL, NULL)) != NULL) {
        X509_STORE_add_crl(st, crl);
        X509_CRL_free(crl);
        n++;
    }
    BIO_free(b);
    if (n == 0) {
        return fail(d, TLSK_ECERT, "crl: no PEM CRL in %s", o->crl_file ? o->crl_file : "crl_pem");
    }
    ERR_clear_error();
    X509_STORE_set_flags(st, X509_V_FLAG_CRL_CHECK);
    return 0;
}

/* The seed derives the default session id context from the command line. */
static void default_sid_ctx(unsigned char out[SSL_MAX_SID_CTX_LENGTH])
{
    char buf[4096];
    ssize_t n = 0;
    FILE *f = fopen("/proc/self/cmdline", "r");

    if (f) {
        n = (ssize_t)fread(buf, 1, sizeof buf, f);
        fclose(f);
    }
    SHA256((const unsigned char *)buf, n > 0 ? (size_t)n : 0, out);
}

/* ---- sessions ------------------------------------------------------------------------- */

static atomic_int g_reneg_limit = 3, g_reneg_window = 600;

TLSK_PUBLIC void tlsk_set_client_reneg_limit(int limit, int window_s)
{
    atomic_store(&g_reneg_limit, limit < 0 ? 0 : limit);
    atomic_store(&g_reneg_window, window_s < 0 ? 0 : window_s);
}

void tlsk__reneg_limits(const struct tlsk_context *c, int *limit, int *window_s)
{
    if (c->reneg_limit == 0 && c->reneg_window_s == 0) {
        *limit = atomic_load(&g_reneg_limit);
        *window_s = atomic_load(&g_reneg_window);
    } else {
        *limit = c->reneg_limit < 0 ? 0 : c->reneg_limit;
        *window_s = c->reneg_window_s > 0 ? c->reneg_window_s : 600;
    }
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
        memcpy(k, c->tk[0], 48);
        which = 0;
    } else if (memcmp(key_name, c->tk[0], 16) == 0) {
        memcpy(k, c->tk[0], 48);
        which = 0;
    } else if (c->tk_prev && memcmp(key_name, c->tk[1], 16) == 0) {
        memcpy(k, c->tk[1], 48);
        which = 1;
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
            EVP_EncryptInit_ex(ectx, EVP_aes_128_cbc(), NULL, k + 32, iv) != 1) {
            goto out;
        }
    } else if (EVP_DecryptInit_ex(ectx, EVP_aes_128_cbc(), NULL, k + 32, iv) != 1) {
        goto out;
    }
    if (EVP_MAC_CTX_set_params(hctx, params) != 1) {
        goto out;
    }
    /* A ticket under the previous keys resumes and is renewed under the current ones.  In
     * TLS 1.3 every resumption gets a fresh ticket (OpenSSL sends one only when asked to
     * renew), so a client always holds an unused ticket (SS-8). */
    rc = which == 1 || SSL_version(ssl) == TLS1_3_VERSION ? 2 : 1;
out:
    OPENSSL_cleanse(k, sizeof k);
    return rc;
}

TLSK_PUBLIC int tlsk_context_set_ticket_keys(struct tlsk_context *ctx, const unsigned char keys[48])
{
    if (!ctx || !keys) {
        return TLSK_ECONFIG;
    }
    pthread_mutex_lock(&ctx->tk_lock);
    if (memcmp(ctx->tk[0], keys, 48) != 0) {
        memcpy(ctx->tk[1], ctx->tk[0], 48);
        ctx->tk_prev = true;
        memcpy(ctx->tk[0], keys, 48);
    }
    pthread_mutex_unlock(&ctx->tk_lock);
    return 0;
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

TLSK_PUBLIC int tlsk_context_new(struct tlsk_context **out, const struct tlsk_context_options *opts,
                                 char *err_detail, size_t err_detail_len)
{
    static const struct tlsk_context_options zero;
    const struct tlsk_context_options *o = opts ? opts : &zero;
    struct detail d = { err_detail, err_detail_len };
    struct tlsk_context *c = NULL;
    SSL_CTX *sc = NULL;
    int rc;

    if (err_detail && err_detail_len) {
        err_detail[0] = '\0';
    }
    if (!out) {
        return fail(&d, TLSK_ECONFIG, "out is NULL");
    }
    if (!version_ok(o->min_version) || !version_ok(o->max_version)) {
        return fail(&d, TLSK_ECONFIG, "min_version/max_version: only TLS 1.2 (0x0303) and TLS 1.3 "
                                      "(0x0304) are supported");
    }
    if (o->min_version && o->max_version && o->min_version > o->max_version) {
        return fail(&d, TLSK_ECONFIG, "min_version is above max_version");
    }
    if ((unsigned)o->offload > TLSK_OFFLOAD_REQUIRE) {
        return fail(&d, TLSK_ECONFIG, "offload: unknown policy %d", (int)o->offload);
    }
    if (o->cert_file && o->cert_pem) {
        return fail(&d, TLSK_ECONFIG, "cert_file and cert_pem both given: choose one");
    }
    if (o->key_file && o->key_pem) {
        return fail(&d, TLSK_ECONFIG, "key_file and key_pem both given: choose one");
    }
    if (o->ca_file && o->ca_pem) {
        return fail(&d, TLSK_ECONFIG, "ca_file and ca_pem both given: choose one");
    }
    if ((o->pfx_file || o->pfx) &&
        (o->cert_file || o->cert_pem || o->key_file || o->key_pem || o->ca_file || o->ca_pem)) {
        return fail(&d, TLSK_ECONFIG, "pfx cannot be combined with cert, key or ca");
    }
    if (o->pfx && !o->pfx_len) {
        return fail(&d, TLSK_ECONFIG, "pfx given without pfx_len");
    }
    if (o->session_id_context && strlen(o->session_id_context) > SSL_MAX_SID_CTX_LENGTH) {
        return fail(&d, TLSK_ECONFIG, "session_id_context: longer than %d bytes",
                    SSL_MAX_SID_CTX_LENGTH);
    }
    if (o->session_timeout < 0) {
        return fail(&d, TLSK_ECONFIG, "session_timeout: negative");
    }
    if ((o->cert_file || o->cert_pem) != (o->key_file || o->key_pem)) {
        return fail(&d, TLSK_ECONFIG, "%s given without %s",
                    (o->cert_file || o->cert_pem) ? "cert" : "key",
                    (o->cert_file || o->cert_pem) ? "key" : "cert");
    }

    int vmin = o->min_version ? o->min_version : TLS1_2_VERSION;
    int vmax = o->max_version ? o->max_version : TLS1_3_VERSION;
    if (o->secure_protocol && (rc = secure_protocol(o->secure_protocol, &vmin, &vmax, &d)) != 0) {
        return rc;
    }
    ERR_clear_error();
    sc = SSL_CTX_new(TLS_method());
    if (!sc) {
        return fail(&d, TLSK_ENOMEM, "SSL_CTX_new failed");
    }
    /* An explicit minimum: relying on the security level alone gives internal_error (80)
     * instead of protocol_version (70) to a TLS 1.1 peer (SP-4). */
    SSL_CTX_set_min_proto_version(sc, vmin);
    SSL_CTX_set_max_proto_version(sc, vmax);
    SSL_CTX_set_mode(sc, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                             SSL_MODE_RELEASE_BUFFERS);
    /* Bytes past the peer's Finished must stay in the kernel for kTLS RX (docs/OPENSSL.md §4). */
    SSL_CTX_set_read_ahead(sc, 0);
    SSL_CTX_set_options(sc, SSL_OP_NO_COMPRESSION);
    SSL_CTX_clear_options(sc, SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_ENABLE_KTLS);
    if (o->flags & TLSK_HONOR_CIPHER_ORDER) {
        SSL_CTX_set_options(sc, SSL_OP_CIPHER_SERVER_PREFERENCE);
    }
    SSL_CTX_set_client_hello_cb(sc, hello_cb, NULL);
    SSL_CTX_set_timeout(sc, o->session_timeout ? o->session_timeout : 300);
    {
        unsigned char sid[SSL_MAX_SID_CTX_LENGTH];
        size_t sid_len = SSL_MAX_SID_CTX_LENGTH;
        if (o->session_id_context) {
            sid_len = strlen(o->session_id_context);
            memcpy(sid, o->session_id_context, sid_len);
        } else {
            default_sid_ctx(sid);
        }
        SSL_CTX_set_session_id_context(sc, sid, (unsigned)sid_len);
    }
    SSL_CTX_set_default_passwd_cb(sc, passwd_cb);
    SSL_CTX_set_keylog_callback(sc, keylog_cb);

    {
        /* As Node: names starting "TLS_" in ciphers form the TLS 1.3 list, the rest the
         * TLS 1.2 list (a list of only TLS 1.3 names leaves TLS 1.2 with the defaults
         * removed: nothing). */
        char v12[2048] = "", v13[1024] = "";
        const char *l12 = default_ciphers, *l13 = default_ciphersuites;

        if (o->ciphers) {
            const char *p = o->ciphers;
            bool any13 = false;
            while (*p) {
                size_t n = strcspn(p, ":, ");
                if (n > 0) {
                    char *dst = strncmp(p, "TLS_", 4) == 0 ? v13 : v12;
                    size_t cap = dst == v13 ? sizeof v13 : sizeof v12;
                    any13 |= dst == v13;
                    if (strlen(dst) + n + 2 > cap) {
                        rc = fail(&d, TLSK_ECONFIG, "ciphers: list too long");
                        goto err;
                    }
                    if (dst[0]) {
                        strcat(dst, ":");
                    }
                    strncat(dst, p, n);
                }
                p += n + (p[n] ? 1 : 0);
            }
            l12 = v12[0] ? v12 : "!ALL";
            if (any13) {
                l13 = v13;
            }
        }
        if (o->ciphersuites) {
            l13 = o->ciphersuites;
        }
        if (o->ciphers && !v12[0]) {
            /* Only TLS 1.3 suites named: no TLS 1.2 suite may remain. */
            SSL_CTX_set_min_proto_version(sc, TLS1_3_VERSION);
            l12 = default_ciphers;
        }
        if (SSL_CTX_set_cipher_list(sc, l12) != 1) {
            rc = fail(&d, TLSK_ECONFIG, "ciphers: \"%s\" selects no usable suite", o->ciphers);
            goto err;
        }
        ERR_clear_error();
        if (SSL_CTX_set_ciphersuites(sc, l13) != 1) {
            rc = fail(&d, TLSK_ECONFIG, "ciphersuites: \"%s\" is invalid", l13);
            goto err;
        }
        if (o->ciphers && !v12[0] && !o->ciphersuites && !strstr(o->ciphers, "TLS_")) {
            rc = fail(&d, TLSK_ECONFIG, "ciphers: \"%s\" selects no usable suite", o->ciphers);
            goto err;
        }
    }
    if (SSL_CTX_set1_groups_list(sc, !o->groups        ? default_groups
                                     : o->groups[0] == 0 ? ffdhe_groups
                                                         : o->groups) != 1) {
        rc = fail(&d, TLSK_ECONFIG, "groups: \"%s\" is invalid", o->groups);
        goto err;
    }
    if (o->cert_file || o->cert_pem) {
        if ((rc = load_cert_chain(sc, o, &d)) != 0 || (rc = load_key(sc, o, &d)) != 0) {
            goto err;
        }
    }
    if ((rc = load_trust(sc, o, &d)) != 0) {
        goto err;
    }
    if ((o->pfx_file || o->pfx) && (rc = load_pfx(sc, o, &d)) != 0) {
        goto err;
    }
    if ((o->crl_file || o->crl_pem) && (rc = load_crl(sc, o, &d)) != 0) {
        goto err;
    }

    c = calloc(1, sizeof *c);
    if (!c) {
        rc = fail(&d, TLSK_ENOMEM, "out of memory");
        goto err;
    }
    if (o->alpn && proto_wire(o->alpn, &c->alpn, &c->alpn_len) != 0) {
        rc = fail(&d, TLSK_ECONFIG, "alpn: every protocol name must be 1 to 255 bytes, and "
                                    "the list non-empty");
        goto err;
    }
    if (o->npn && proto_wire(o->npn, &c->npn, &c->npn_len) != 0) {
        rc = fail(&d, TLSK_ECONFIG, "npn: every protocol name must be 1 to 255 bytes, and the "
                                    "list non-empty");
        goto err;
    }
    if (c->alpn) {
        SSL_CTX_set_alpn_select_cb(sc, alpn_select_cb, c);
        /* Note the inverted convention: 0 is success. */
        if (SSL_CTX_set_alpn_protos(sc, c->alpn, (unsigned)c->alpn_len) != 0) {
            rc = fail(&d, TLSK_ENOMEM, "alpn: out of memory");
            goto err;
        }
    }
    if (c->npn) {
        SSL_CTX_set_next_protos_advertised_cb(sc, npn_advertise_cb, c);
        SSL_CTX_set_next_proto_select_cb(sc, npn_select_cb, c);
    }
    c->has_cert = SSL_CTX_get0_certificate(sc) != NULL;
    pthread_mutex_init(&c->tk_lock, NULL);
    if (o->ticket_keys) {
        memcpy(c->tk[0], o->ticket_keys, 48);
    } else if (RAND_bytes(c->tk[0], 48) != 1) {
        rc = fail(&d, TLSK_EINTERNAL, "no randomness for ticket keys");
        goto err;
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
            rc = fail(&d, TLSK_ECONFIG, "session_store: both callbacks are required");
            goto err;
        }
        c->store = *o->session_store;
        c->has_store = true;
    }
    /* Servers cache internally unless there is a store (A5); clients get new_session_cb
     * for the 'session' event. */
    SSL_CTX_set_session_cache_mode(sc, SSL_SESS_CACHE_BOTH | SSL_SESS_CACHE_NO_INTERNAL_LOOKUP *
                                                                  (c->has_store ? 1 : 0) |
                                           (c->has_store ? SSL_SESS_CACHE_NO_INTERNAL_STORE : 0));
    SSL_CTX_sess_set_new_cb(sc, new_session_cb);
    SSL_CTX_sess_set_get_cb(sc, get_session_cb);
    if (o->session_cache_size > 0) {
        SSL_CTX_sess_set_cache_size(sc, o->session_cache_size);
    }
    /* Without the option OpenSSL 3 already refuses client-initiated renegotiation with a
     * no_renegotiation warning; offloaded connections refuse every kind (offload.c). */
    if (o->flags & TLSK_ALLOW_RENEGOTIATION) {
        SSL_CTX_set_options(sc, SSL_OP_ALLOW_CLIENT_RENEGOTIATION);
    }
    c->reneg_limit = o->client_reneg_limit;
    c->reneg_window_s = o->client_reneg_window_s;
    c->key_update_records = o->key_update_records;
    atomic_init(&c->refs, 1);
    c->ssl_ctx = sc;
    c->offload = o->offload == TLSK_OFFLOAD_DEFAULT ? TLSK_OFFLOAD_AUTO : o->offload;
    c->flags = o->flags;
    *out = c;
    return 0;
err:
    if (c) {
        free(c->alpn);
        free(c->npn);
        free(c);
    }
    SSL_CTX_free(sc);
    return rc;
}

TLSK_PUBLIC struct tlsk_context *tlsk_context_ref(struct tlsk_context *ctx)
{
    if (ctx) {
        atomic_fetch_add(&ctx->refs, 1);
    }
    return ctx;
}

TLSK_PUBLIC void tlsk_context_free(struct tlsk_context *ctx)
{
    if (!ctx || atomic_fetch_sub(&ctx->refs, 1) != 1) {
        return;
    }
    SSL_CTX_free(ctx->ssl_ctx);
    OPENSSL_cleanse(ctx->tk, sizeof ctx->tk);
    pthread_mutex_destroy(&ctx->tk_lock);
    free(ctx->alpn);
    free(ctx->npn);
    free(ctx);
}
