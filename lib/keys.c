/*
 * keys.c - the traffic keys of a connection, derived with OpenSSL's public KDFs: TLS 1.3 from
 * the traffic secrets the key log gave (TLS13-KDF, RFC 8446 7.3; the next secret after a
 * KeyUpdate, 7.2), TLS 1.2 from the session's master secret (TLS1-PRF key block, RFC 5246
 * 6.3).  docs/OPENSSL.md §2.  Keys live on the caller's stack and are wiped after use.
 */
#include <errno.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/ssl.h>

#include "internal.h"
#include "kconst.h"

/* OpenSSL cipher -> tlsk and kernel cipher.  Returns 0, or -1 when the kernel has no such
 * cipher (CBC suites, CCM_8). */
int tlsk__cipher_of(const SSL_CIPHER *c, int *tlsk_cipher, int *kcipher, size_t *key_len)
{
    const char *name = SSL_CIPHER_get_name(c);

    if (strstr(name, "CCM8") || strstr(name, "CCM_8")) {
        return -1;
    }
    switch (SSL_CIPHER_get_cipher_nid(c)) {
    case NID_aes_128_gcm:
        *tlsk_cipher = TLSK_CIPHER_AES_128_GCM;
        *kcipher = TLSK_KCIPHER_AES_GCM_128;
        *key_len = 16;
        return 0;
    case NID_aes_256_gcm:
        *tlsk_cipher = TLSK_CIPHER_AES_256_GCM;
        *kcipher = TLSK_KCIPHER_AES_GCM_256;
        *key_len = 32;
        return 0;
    case NID_chacha20_poly1305:
        *tlsk_cipher = TLSK_CIPHER_CHACHA20_POLY1305;
        *kcipher = TLSK_KCIPHER_CHACHA20_POLY1305;
        *key_len = 32;
        return 0;
    case NID_aes_128_ccm:
        *tlsk_cipher = TLSK_CIPHER_AES_128_CCM;
        *kcipher = TLSK_KCIPHER_AES_CCM_128;
        *key_len = 16;
        return 0;
    default:
        return -1;
    }
}

/* The ciphers lib/soft.c carries: those with a per-record tag it can keep a context for. */
bool tlsk__soft_cipher(const SSL_CIPHER *c)
{
    int nid = c ? SSL_CIPHER_get_cipher_nid(c) : NID_undef;

    return nid == NID_aes_128_gcm || nid == NID_aes_256_gcm || nid == NID_chacha20_poly1305;
}

size_t tlsk__record_overhead(const struct tlsk_socket *s)
{
    const SSL_CIPHER *c = tlsk__cipher(s);

    if (tlsk__version(s) == TLS1_3_VERSION) {
        return 5 + 1 + 16;
    }
    if (c && SSL_CIPHER_get_cipher_nid(c) == NID_chacha20_poly1305) {
        return 5 + 16; /* RFC 7905: no explicit nonce */
    }
    return 5 + 8 + 16;
}

/* The two KDFs, fetched once per process: a fetch by name costs a few microseconds, on every
 * connection otherwise (OpenSSL's own handshake code fetches its algorithms once per SSL_CTX). */
static EVP_KDF *g_kdf13, *g_kdf12;
static CRYPTO_ONCE g_kdf_once = CRYPTO_ONCE_STATIC_INIT;

static void kdf_init(void)
{
    g_kdf13 = EVP_KDF_fetch(NULL, "TLS13-KDF", NULL);
    g_kdf12 = EVP_KDF_fetch(NULL, "TLS1-PRF", NULL);
}

static EVP_KDF_CTX *kdf_ctx(bool tls13)
{
    EVP_KDF *kdf;

    CRYPTO_THREAD_run_once(&g_kdf_once, kdf_init);
    kdf = tls13 ? g_kdf13 : g_kdf12;
    return kdf ? EVP_KDF_CTX_new(kdf) : NULL;
}

/* A TLS13-KDF context for HKDF-Expand-Label (RFC 8446 7.1) with this digest.  Each
 * tls13_expand() on it sets only the secret, the label and the empty context, which replace
 * the previous call's, so one context serves every expansion of a derivation: the context is
 * made and the digest fetched by name once, not once per key and IV. */
static EVP_KDF_CTX *tls13_kdf(const char *digest)
{
    EVP_KDF_CTX *kc = kdf_ctx(true);
    int mode = EVP_KDF_HKDF_MODE_EXPAND_ONLY;
    static const char prefix[] = "tls13 ";
    OSSL_PARAM p[] = {
        OSSL_PARAM_construct_int(OSSL_KDF_PARAM_MODE, &mode),
        OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, (char *)digest, 0),
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_PREFIX, (void *)prefix, 6),
        OSSL_PARAM_construct_end(),
    };

    if (kc && (!digest || EVP_KDF_CTX_set_params(kc, p) != 1)) {
        EVP_KDF_CTX_free(kc);
        kc = NULL;
    }
    return kc;
}

static int tls13_expand(EVP_KDF_CTX *kc, const struct tlsk__secret *sec, const char *label,
                        unsigned char *out, size_t out_len)
{
    OSSL_PARAM p[] = {
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, (void *)sec->b, sec->len),
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_LABEL, (void *)label, strlen(label)),
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_DATA, (void *)"", 0),
        OSSL_PARAM_construct_end(),
    };

    return kc && EVP_KDF_derive(kc, out, out_len, p) == 1 ? 0 : -1;
}

/* A direction's key (k->key_len bytes) and IV from its traffic secret (RFC 8446 7.3). */
static int tls13_key_iv(EVP_KDF_CTX *kc, const struct tlsk__secret *sec, struct tlsk__keys *k)
{
    return tls13_expand(kc, sec, "key", k->key, k->key_len) == 0 &&
                   tls13_expand(kc, sec, "iv", k->iv, 12) == 0
               ? 0
               : -1;
}

static int tls12_key_block(SSL *ssl, const char *digest, unsigned char *out, size_t out_len)
{
    unsigned char ms[SSL_MAX_MASTER_KEY_LENGTH], cr[SSL3_RANDOM_SIZE], sr[SSL3_RANDOM_SIZE];
    static const char label[] = "key expansion";
    size_t ms_len;
    EVP_KDF_CTX *kc = NULL;
    int rc = -1;

    ms_len = SSL_SESSION_get_master_key(SSL_get_session(ssl), ms, sizeof ms);
    if (ms_len == 0 || SSL_get_client_random(ssl, cr, sizeof cr) != sizeof cr ||
        SSL_get_server_random(ssl, sr, sizeof sr) != sizeof sr) {
        goto out;
    }
    OSSL_PARAM p[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, (char *)digest, 0),
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SECRET, ms, ms_len),
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SEED, (void *)label, sizeof label - 1),
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SEED, sr, sizeof sr),
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SEED, cr, sizeof cr),
        OSSL_PARAM_construct_end(),
    };
    kc = kdf_ctx(false);
    if (kc && EVP_KDF_derive(kc, out, out_len, p) == 1) {
        rc = 0;
    }
out:
    OPENSSL_cleanse(ms, sizeof ms);
    EVP_KDF_CTX_free(kc);
    return rc;
}

int tlsk__tls13_next_secret(struct tlsk_socket *s, struct tlsk__secret *sec)
{
    const SSL_CIPHER *c = tlsk__cipher(s);
    const EVP_MD *md = c ? SSL_CIPHER_get_handshake_digest(c) : NULL;
    struct tlsk__secret next = { .len = sec->len };
    EVP_KDF_CTX *kc;
    int rc;

    if (!md) {
        return TLSK_EINTERNAL;
    }
    /* RFC 8446 7.2: application_traffic_secret_N+1 = HKDF-Expand-Label(secret_N,
     * "traffic upd", "", Hash.length). */
    kc = tls13_kdf(EVP_MD_get0_name(md));
    rc = tls13_expand(kc, sec, "traffic upd", next.b, next.len);
    EVP_KDF_CTX_free(kc);
    if (rc == 0) {
        *sec = next;
    }
    OPENSSL_cleanse(&next, sizeof next);
    return rc == 0 ? 0 : TLSK_EINTERNAL;
}

int tlsk__derive_keys_from(struct tlsk_socket *s, const struct tlsk__secret *sec,
                           struct tlsk__keys *k)
{
    const SSL_CIPHER *c = tlsk__cipher(s);
    const EVP_MD *md;
    EVP_KDF_CTX *kc;
    int rc;

    memset(k, 0, sizeof *k);
    if (!c || tlsk__cipher_of(c, &k->tlsk_cipher, &k->kcipher, &k->key_len) != 0 ||
        tlsk__version(s) != TLS1_3_VERSION || sec->len == 0 ||
        !(md = SSL_CIPHER_get_handshake_digest(c))) {
        return TLSK_EINTERNAL;
    }
    k->version = TLS1_3_VERSION;
    kc = tls13_kdf(EVP_MD_get0_name(md));
    rc = tls13_key_iv(kc, sec, k) == 0 ? 0 : TLSK_EINTERNAL;
    EVP_KDF_CTX_free(kc);
    if (rc != 0) {
        OPENSSL_cleanse(k, sizeof *k);
        ERR_clear_error();
    }
    return rc;
}

/* The write keys of the client and of the server, whoever we are (either may be NULL): for TLS
 * 1.2 from one key block.  k->seq is left for the caller. */
int tlsk__derive_key_pair(struct tlsk_socket *s, struct tlsk__keys *client, struct tlsk__keys *server)
{
    const SSL_CIPHER *c = tlsk__cipher(s);
    const EVP_MD *md = c ? SSL_CIPHER_get_handshake_digest(c) : NULL;
    const char *digest = md ? EVP_MD_get0_name(md) : NULL;
    struct tlsk__keys *ks[2] = { client, server };
    struct tlsk__keys k;
    unsigned char blk[2 * 32 + 2 * 12];
    int rc = TLSK_EINTERNAL;

    memset(&k, 0, sizeof k);
    if (!c || tlsk__cipher_of(c, &k.tlsk_cipher, &k.kcipher, &k.key_len) != 0 || !digest) {
        return TLSK_EINTERNAL;
    }
    k.version = tlsk__version(s);
    for (int i = 0; i < 2; i++) {
        if (ks[i]) {
            *ks[i] = k;
        }
    }
    if (k.version == TLS1_3_VERSION) {
        EVP_KDF_CTX *kc = tls13_kdf(digest);
        bool ok = true;

        for (int i = 0; i < 2 && ok; i++) {
            /* The first secrets, before the bridge moves them on (install time). */
            const struct tlsk__secret *sec = (i == 0) == s->is_server ? &s->orx_secret
                                                                      : &s->otx_secret;
            if (!ks[i]) {
                continue;
            }
            if (sec->len == 0) {
                rc = tlsk__set_detail(s, TLSK_EINTERNAL, "no TLS 1.3 traffic secret captured");
                ok = false;
            } else {
                ok = tls13_key_iv(kc, sec, ks[i]) == 0;
            }
        }
        EVP_KDF_CTX_free(kc);
        if (ok) {
            return 0;
        }
        goto out;
    }
    if (k.version == TLS1_2_VERSION) {
        /* AEAD suites: client_key | server_key | client_iv | server_iv (RFC 5288, 7905). */
        size_t iv_len = k.tlsk_cipher == TLSK_CIPHER_CHACHA20_POLY1305 ? 12 : 4;

        if (tls12_key_block(s->ssl, digest, blk, 2 * k.key_len + 2 * iv_len) != 0) {
            goto out;
        }
        for (int i = 0; i < 2; i++) {
            if (ks[i]) {
                memcpy(ks[i]->key, blk + (size_t)i * k.key_len, k.key_len);
                memcpy(ks[i]->iv, blk + 2 * k.key_len + (size_t)i * iv_len, iv_len);
            }
        }
        OPENSSL_cleanse(blk, sizeof blk);
        return 0;
    }
out:
    OPENSSL_cleanse(blk, sizeof blk);
    for (int i = 0; i < 2; i++) {
        if (ks[i]) {
            OPENSSL_cleanse(ks[i], sizeof *ks[i]);
        }
    }
    ERR_clear_error();
    return rc;
}

int tlsk__derive_keys(struct tlsk_socket *s, int client_side, struct tlsk__keys *k)
{
    return tlsk__derive_key_pair(s, client_side ? k : NULL, client_side ? NULL : k);
}
