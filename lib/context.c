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

static int version_ok(int v)
{
    return v == 0 || v == TLSK_TLS1_2 || v == TLSK_TLS1_3;
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

/* Node's secureProtocol names (D9): the TLS 1.2 minimum is not negotiable. */
static int secure_protocol(const char *name, int *min, int *max, struct tlsk__detail *d)
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
            return tlsk__config_error(d, TLSK_EUNSUPPORTED_PROTOCOL,
                        "secure_protocol %s selects %s; tlsk requires TLS 1.2 or later", name,
                        t[i].what);
        }
        *min = t[i].min;
        *max = t[i].max;
        return 0;
    }
    return tlsk__config_error(d, TLSK_ECONFIG, "secure_protocol: unknown method name \"%s\"", name);
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

/* Option checks that need no OpenSSL object: 0 or TLSK_ECONFIG with the reason. */
static int check_options(const struct tlsk_context_options *o, struct tlsk__detail *d)
{
    if (!version_ok(o->min_version) || !version_ok(o->max_version)) {
        return tlsk__config_error(d, TLSK_ECONFIG, "min_version/max_version: only TLS 1.2 (0x0303) and TLS 1.3 "
                                      "(0x0304) are supported");
    }
    if (o->min_version && o->max_version && o->min_version > o->max_version) {
        return tlsk__config_error(d, TLSK_ECONFIG, "min_version is above max_version");
    }
    if (o->flags & ~(unsigned)TLSK__CONTEXT_FLAGS) {
        return tlsk__config_error(d, TLSK_ECONFIG, "flags: unknown bits 0x%x (socket flags are "
                                                   "not context flags)",
                                  o->flags & ~(unsigned)TLSK__CONTEXT_FLAGS);
    }
    if ((unsigned)o->offload > TLSK_OFFLOAD_REQUIRE) {
        return tlsk__config_error(d, TLSK_ECONFIG, "offload: unknown policy %d", (int)o->offload);
    }
    if (o->cert_file && o->cert_pem) {
        return tlsk__config_error(d, TLSK_ECONFIG, "cert_file and cert_pem both given: choose one");
    }
    if (o->key_file && o->key_pem) {
        return tlsk__config_error(d, TLSK_ECONFIG, "key_file and key_pem both given: choose one");
    }
    if (o->ca_file && o->ca_pem) {
        return tlsk__config_error(d, TLSK_ECONFIG, "ca_file and ca_pem both given: choose one");
    }
    if ((o->pfx_file || o->pfx) &&
        (o->cert_file || o->cert_pem || o->key_file || o->key_pem || o->ca_file || o->ca_pem)) {
        return tlsk__config_error(d, TLSK_ECONFIG, "pfx cannot be combined with cert, key or ca");
    }
    if (o->pfx && !o->pfx_len) {
        return tlsk__config_error(d, TLSK_ECONFIG, "pfx given without pfx_len");
    }
    if (o->session_id_context && strlen(o->session_id_context) > SSL_MAX_SID_CTX_LENGTH) {
        return tlsk__config_error(d, TLSK_ECONFIG, "session_id_context: longer than %d bytes",
                    SSL_MAX_SID_CTX_LENGTH);
    }
    if (o->session_timeout < 0) {
        return tlsk__config_error(d, TLSK_ECONFIG, "session_timeout: negative");
    }
    if ((o->cert_file || o->cert_pem) != (o->key_file || o->key_pem)) {
        return tlsk__config_error(d, TLSK_ECONFIG, "%s given without %s",
                    (o->cert_file || o->cert_pem) ? "cert" : "key",
                    (o->cert_file || o->cert_pem) ? "key" : "cert");
    }
    return 0;
}

/* The OpenSSL context with tlsk's fixed settings and the version range. */
static int new_ssl_ctx(const struct tlsk_context_options *o, struct tlsk__detail *d,
                       SSL_CTX **out)
{
    int vmin = o->min_version ? o->min_version : TLS1_2_VERSION;
    int vmax = o->max_version ? o->max_version : TLS1_3_VERSION;
    SSL_CTX *sc;
    int rc;

    if (o->secure_protocol && (rc = secure_protocol(o->secure_protocol, &vmin, &vmax, d)) != 0) {
        return rc;
    }
    ERR_clear_error();
    sc = SSL_CTX_new(TLS_method());
    if (!sc) {
        return tlsk__config_error(d, TLSK_ENOMEM, "SSL_CTX_new failed");
    }
    /* An explicit minimum: relying on the security level alone gives internal_error (80)
     * instead of protocol_version (70) to a TLS 1.1 peer (SP-4). */
    SSL_CTX_set_min_proto_version(sc, vmin);
    SSL_CTX_set_max_proto_version(sc, vmax);
    SSL_CTX_set_mode(sc, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                             SSL_MODE_RELEASE_BUFFERS);
    SSL_CTX_set_options(sc, SSL_OP_NO_COMPRESSION);
    SSL_CTX_clear_options(sc, SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_ENABLE_KTLS);
    if (o->flags & TLSK_HONOR_CIPHER_ORDER) {
        SSL_CTX_set_options(sc, SSL_OP_CIPHER_SERVER_PREFERENCE);
    }
    /* Without the option OpenSSL 3 already refuses client-initiated renegotiation with a
     * no_renegotiation warning; offloaded connections refuse every kind (offload.c). */
    if (o->flags & TLSK_ALLOW_RENEGOTIATION) {
        SSL_CTX_set_options(sc, SSL_OP_ALLOW_CLIENT_RENEGOTIATION);
    }
    SSL_CTX_set_client_hello_cb(sc, tlsk__hello_cb, NULL);
    *out = sc;
    return 0;
}

/* Cipher suites and groups. */
static int set_ciphers(SSL_CTX *sc, const struct tlsk_context_options *o, struct tlsk__detail *d)
{
    /* As Node: names starting "TLS_" in ciphers form the TLS 1.3 list, the rest the TLS 1.2
     * list (a list of only TLS 1.3 names leaves TLS 1.2 with the defaults removed: nothing). */
    char v12[2048] = "", v13[1024] = "";
    const char *l12 = default_ciphers, *l13 = default_ciphersuites;
    const char *groups = !o->groups ? default_groups : o->groups[0] == 0 ? ffdhe_groups
                                                                           : o->groups;

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
                    return tlsk__config_error(d, TLSK_ECONFIG, "ciphers: list too long");
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
        return tlsk__config_error(d, TLSK_ECONFIG, "ciphers: \"%s\" selects no usable suite",
                                  o->ciphers);
    }
    ERR_clear_error();
    if (SSL_CTX_set_ciphersuites(sc, l13) != 1) {
        return tlsk__config_error(d, TLSK_ECONFIG, "ciphersuites: \"%s\" is invalid", l13);
    }
    if (o->ciphers && !v12[0] && !o->ciphersuites && !strstr(o->ciphers, "TLS_")) {
        return tlsk__config_error(d, TLSK_ECONFIG, "ciphers: \"%s\" selects no usable suite",
                                  o->ciphers);
    }
    if (SSL_CTX_set1_groups_list(sc, groups) != 1) {
        return tlsk__config_error(d, TLSK_ECONFIG, "groups: \"%s\" is invalid", o->groups);
    }
    return 0;
}

/* ALPN and NPN lists and their selection callbacks. */
static int set_protocols(struct tlsk_context *c, SSL_CTX *sc,
                         const struct tlsk_context_options *o, struct tlsk__detail *d)
{
    if (o->alpn && proto_wire(o->alpn, &c->alpn, &c->alpn_len) != 0) {
        return tlsk__config_error(d, TLSK_ECONFIG, "alpn: every protocol name must be 1 to "
                                                   "255 bytes, and the list non-empty");
    }
    if (o->npn && proto_wire(o->npn, &c->npn, &c->npn_len) != 0) {
        return tlsk__config_error(d, TLSK_ECONFIG, "npn: every protocol name must be 1 to 255 "
                                                   "bytes, and the list non-empty");
    }
    if (c->alpn) {
        SSL_CTX_set_alpn_select_cb(sc, alpn_select_cb, c);
        /* Note the inverted convention: 0 is success. */
        if (SSL_CTX_set_alpn_protos(sc, c->alpn, (unsigned)c->alpn_len) != 0) {
            return tlsk__config_error(d, TLSK_ENOMEM, "alpn: out of memory");
        }
    }
    if (c->npn) {
        SSL_CTX_set_next_protos_advertised_cb(sc, npn_advertise_cb, c);
        SSL_CTX_set_next_proto_select_cb(sc, npn_select_cb, c);
    }
    return 0;
}

TLSK_PUBLIC int tlsk_context_new(struct tlsk_context **out, const struct tlsk_context_options *opts,
                                 char *err_detail, size_t err_detail_len)
{
    static const struct tlsk_context_options zero;
    const struct tlsk_context_options *o = opts ? opts : &zero;
    struct tlsk__detail d = { err_detail, err_detail_len };
    struct tlsk_context *c = NULL;
    SSL_CTX *sc = NULL;
    int rc;

    if (err_detail && err_detail_len) {
        err_detail[0] = '\0';
    }
    if (!out) {
        return tlsk__config_error(&d, TLSK_ECONFIG, "out is NULL");
    }
    if ((rc = check_options(o, &d)) != 0 || (rc = new_ssl_ctx(o, &d, &sc)) != 0) {
        return rc;
    }
    if ((rc = set_ciphers(sc, o, &d)) != 0 || (rc = tlsk__load_credentials(sc, o, &d)) != 0) {
        goto err;
    }
    c = calloc(1, sizeof *c);
    if (!c) {
        rc = tlsk__config_error(&d, TLSK_ENOMEM, "out of memory");
        goto err;
    }
    pthread_mutex_init(&c->tk_lock, NULL);
    if ((rc = set_protocols(c, sc, o, &d)) != 0 ||
        (rc = tlsk__context_sessions(c, sc, o, &d)) != 0) {
        goto err;
    }
    c->has_cert = SSL_CTX_get0_certificate(sc) != NULL;
    c->reneg_limit = o->client_reneg_limit;
    c->reneg_window_s = o->client_reneg_window_s;
    c->key_update_records = o->key_update_records;
    atomic_init(&c->refs, 1);
    c->ssl_ctx = sc;
    c->offload = o->offload == TLSK_OFFLOAD_DEFAULT ? TLSK_OFFLOAD_AUTO : o->offload;
    c->flags = o->flags;
    /* Probe the kernel now (cached), not inside the first handshake on a loop thread; the
     * TLS 1.3 secrets are captured only where the kernel could take them (a socket may ask
     * for offload although its context's policy is off). */
    c->keylog = tlsk_kernel_probe()->ulp || (o->flags & TLSK_LEAN_USERSPACE);
    if (c->keylog) {
        SSL_CTX_set_keylog_callback(sc, tlsk__keylog_cb);
    }
    /* Bytes past the peer's Finished must stay in the kernel for kTLS RX, so OpenSSL reads
     * exactly one record at a time where the kernel could take the connection; where it
     * cannot, OpenSSL reads what has arrived in one read(2) (docs/OPENSSL.md §4). */
    SSL_CTX_set_read_ahead(sc, !c->keylog);
    *out = c;
    return 0;
err:
    if (c) {
        if (c->tk) {
            OPENSSL_clear_free(c->tk, c->tk_n * 48);
        }
        pthread_mutex_destroy(&c->tk_lock);
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
    OPENSSL_clear_free(ctx->tk, ctx->tk_n * 48);
    pthread_mutex_destroy(&ctx->tk_lock);
    free(ctx->alpn);
    free(ctx->npn);
    free(ctx);
}
