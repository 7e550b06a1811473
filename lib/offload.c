/*
 * offload.c - decide per direction, derive keys, install them into the kernel.
 *
 * Validate, act, then only bookkeeping: every precondition is checked with no side effect,
 * then the ULP is attached and each direction installed.  A successful TLS_TX/TLS_RX can
 * never be undone (docs/KERNEL.md §2.2), so after it nothing may fail.
 */
#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <netinet/in.h>

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

size_t tlsk__record_overhead(const struct tlsk_socket *s)
{
    const SSL_CIPHER *c = SSL_get_current_cipher(s->ssl);

    if (SSL_version(s->ssl) == TLS1_3_VERSION) {
        return 5 + 1 + 16;
    }
    if (c && SSL_CIPHER_get_cipher_nid(c) == NID_chacha20_poly1305) {
        return 5 + 16; /* RFC 7905: no explicit nonce */
    }
    return 5 + 8 + 16;
}

static int tls13_expand(const char *digest, const struct tlsk__secret *sec, const char *label,
                        unsigned char *out, size_t out_len)
{
    EVP_KDF *kdf = EVP_KDF_fetch(NULL, "TLS13-KDF", NULL);
    EVP_KDF_CTX *kc = kdf ? EVP_KDF_CTX_new(kdf) : NULL;
    int mode = EVP_KDF_HKDF_MODE_EXPAND_ONLY;
    static const char prefix[] = "tls13 ";
    int rc = -1;
    OSSL_PARAM p[] = {
        OSSL_PARAM_construct_int(OSSL_KDF_PARAM_MODE, &mode),
        OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, (char *)digest, 0),
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, (void *)sec->b, sec->len),
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_PREFIX, (void *)prefix, 6),
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_LABEL, (void *)label, strlen(label)),
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_DATA, (void *)"", 0),
        OSSL_PARAM_construct_end(),
    };

    if (kc && EVP_KDF_derive(kc, out, out_len, p) == 1) {
        rc = 0;
    }
    EVP_KDF_CTX_free(kc);
    EVP_KDF_free(kdf);
    return rc;
}

static int tls12_key_block(SSL *ssl, const char *digest, unsigned char *out, size_t out_len)
{
    unsigned char ms[SSL_MAX_MASTER_KEY_LENGTH], cr[SSL3_RANDOM_SIZE], sr[SSL3_RANDOM_SIZE];
    static const char label[] = "key expansion";
    size_t ms_len;
    EVP_KDF *kdf = NULL;
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
    kdf = EVP_KDF_fetch(NULL, "TLS1-PRF", NULL);
    kc = kdf ? EVP_KDF_CTX_new(kdf) : NULL;
    if (kc && EVP_KDF_derive(kc, out, out_len, p) == 1) {
        rc = 0;
    }
out:
    OPENSSL_cleanse(ms, sizeof ms);
    EVP_KDF_CTX_free(kc);
    EVP_KDF_free(kdf);
    return rc;
}

/*
 * Derive the keys of one direction.  write_side: 1 for the side that is us writing.
 * client_side: whether the keys are the client's write keys (RFC naming), regardless of who
 * we are.  k->seq is left for the caller.
 */
int tlsk__tls13_next_secret(struct tlsk_socket *s, struct tlsk__secret *sec)
{
    const SSL_CIPHER *c = SSL_get_current_cipher(s->ssl);
    const EVP_MD *md = c ? SSL_CIPHER_get_handshake_digest(c) : NULL;
    struct tlsk__secret next = { .len = sec->len };
    int rc;

    if (!md) {
        return TLSK_EINTERNAL;
    }
    /* RFC 8446 7.2: application_traffic_secret_N+1 = HKDF-Expand-Label(secret_N,
     * "traffic upd", "", Hash.length). */
    rc = tls13_expand(EVP_MD_get0_name(md), sec, "traffic upd", next.b, next.len);
    if (rc == 0) {
        *sec = next;
    }
    OPENSSL_cleanse(&next, sizeof next);
    return rc == 0 ? 0 : TLSK_EINTERNAL;
}

int tlsk__derive_keys_from(struct tlsk_socket *s, const struct tlsk__secret *sec,
                           struct tlsk__keys *k)
{
    const SSL_CIPHER *c = SSL_get_current_cipher(s->ssl);
    const EVP_MD *md;

    memset(k, 0, sizeof *k);
    if (!c || tlsk__cipher_of(c, &k->tlsk_cipher, &k->kcipher, &k->key_len) != 0 ||
        SSL_version(s->ssl) != TLS1_3_VERSION || sec->len == 0 ||
        !(md = SSL_CIPHER_get_handshake_digest(c))) {
        return TLSK_EINTERNAL;
    }
    k->version = TLS1_3_VERSION;
    if (tls13_expand(EVP_MD_get0_name(md), sec, "key", k->key, k->key_len) != 0 ||
        tls13_expand(EVP_MD_get0_name(md), sec, "iv", k->iv, 12) != 0) {
        OPENSSL_cleanse(k, sizeof *k);
        ERR_clear_error();
        return TLSK_EINTERNAL;
    }
    return 0;
}

int tlsk__derive_keys(struct tlsk_socket *s, int write_side, int client_side,
                      struct tlsk__keys *k)
{
    const SSL_CIPHER *c = SSL_get_current_cipher(s->ssl);
    const EVP_MD *md;
    const char *digest;
    int rc = TLSK_EINTERNAL;

    (void)write_side;
    memset(k, 0, sizeof *k);
    if (!c || tlsk__cipher_of(c, &k->tlsk_cipher, &k->kcipher, &k->key_len) != 0) {
        return TLSK_EINTERNAL;
    }
    md = SSL_CIPHER_get_handshake_digest(c);
    digest = md ? EVP_MD_get0_name(md) : NULL;
    if (!digest) {
        return TLSK_EINTERNAL;
    }
    k->version = SSL_version(s->ssl);
    if (k->version == TLS1_3_VERSION) {
        const struct tlsk__secret *sec = client_side ? &s->client_secret : &s->server_secret;
        if (sec->len == 0) {
            return tlsk__set_detail(s, TLSK_EINTERNAL, "no TLS 1.3 traffic secret captured");
        }
        if (tls13_expand(digest, sec, "key", k->key, k->key_len) != 0 ||
            tls13_expand(digest, sec, "iv", k->iv, 12) != 0) {
            goto out;
        }
        return 0;
    }
    if (k->version == TLS1_2_VERSION) {
        /* AEAD suites: client_key | server_key | client_iv | server_iv (RFC 5288, 7905). */
        size_t iv_len = k->tlsk_cipher == TLSK_CIPHER_CHACHA20_POLY1305 ? 12 : 4;
        unsigned char blk[2 * 32 + 2 * 12];
        size_t blen = 2 * k->key_len + 2 * iv_len;

        if (tls12_key_block(s->ssl, digest, blk, blen) != 0) {
            OPENSSL_cleanse(blk, sizeof blk);
            goto out;
        }
        memcpy(k->key, blk + (client_side ? 0 : k->key_len), k->key_len);
        memcpy(k->iv, blk + 2 * k->key_len + (client_side ? 0 : iv_len), iv_len);
        OPENSSL_cleanse(blk, sizeof blk);
        return 0;
    }
    return TLSK_EINTERNAL;
out:
    OPENSSL_cleanse(k, sizeof *k);
    ERR_clear_error();
    return rc;
}

static void put_be64(unsigned char *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--) {
        p[i] = (unsigned char)v;
        v >>= 8;
    }
}

static uint64_t get_be64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) {
        v = v << 8 | p[i];
    }
    return v;
}

/* The kernel's crypto_info for k: every struct is {version, cipher} then iv, key, salt,
 * rec_seq (docs/KERNEL.md §2.4). */
union crypto_info {
    struct tls_crypto_info base;
    struct tls12_crypto_info_aes_gcm_128 gcm128;
    struct tls12_crypto_info_aes_gcm_256 gcm256;
    struct tls12_crypto_info_aes_ccm_128 ccm128;
    struct tls12_crypto_info_chacha20_poly1305 chacha;
};

static size_t build_crypto_info(const struct tlsk__keys *k, union crypto_info *ci)
{
    unsigned char *iv, *key, *salt, *seq;
    unsigned char explicit_nonce[8];
    size_t len;

    memset(ci, 0, sizeof *ci);
    ci->base.version = (uint16_t)k->version;
    ci->base.cipher_type = (uint16_t)k->kcipher;
    switch (k->kcipher) {
    case TLSK_KCIPHER_AES_GCM_128:
        iv = ci->gcm128.iv, key = ci->gcm128.key, salt = ci->gcm128.salt, seq = ci->gcm128.rec_seq;
        len = sizeof ci->gcm128;
        break;
    case TLSK_KCIPHER_AES_GCM_256:
        iv = ci->gcm256.iv, key = ci->gcm256.key, salt = ci->gcm256.salt, seq = ci->gcm256.rec_seq;
        len = sizeof ci->gcm256;
        break;
    case TLSK_KCIPHER_AES_CCM_128:
        iv = ci->ccm128.iv, key = ci->ccm128.key, salt = ci->ccm128.salt, seq = ci->ccm128.rec_seq;
        len = sizeof ci->ccm128;
        break;
    case TLSK_KCIPHER_CHACHA20_POLY1305:
        memcpy(ci->chacha.iv, k->iv, 12);
        memcpy(ci->chacha.key, k->key, 32);
        put_be64(ci->chacha.rec_seq, k->seq);
        return sizeof ci->chacha;
    default:
        return 0;
    }
    memcpy(key, k->key, k->key_len);
    memcpy(salt, k->iv, 4);
    if (k->version == TLS1_3_VERSION) {
        memcpy(iv, k->iv + 4, 8);
    } else {
        /* TLS 1.2 explicit nonce: any per-key-unique value works (RFC 5288); the kernel
         * increments it per record.  The sequence number is unique and simple. */
        put_be64(explicit_nonce, k->seq);
        memcpy(iv, explicit_nonce, 8);
    }
    put_be64(seq, k->seq);
    return len;
}

/* Install one direction.  Returns 0 or -errno; the socket is unchanged on failure. */
static int install(int fd, int optname, const struct tlsk__keys *k)
{
    union crypto_info ci;
    size_t len = build_crypto_info(k, &ci);
    int rc = 0;

    if (len == 0) {
        return -EINVAL;
    }
    if (setsockopt(fd, TLSK_SOL_TLS, optname, &ci, (socklen_t)len) != 0) {
        rc = -errno;
    }
    OPENSSL_cleanse(&ci, sizeof ci);
    return rc;
}

/*
 * Read one direction's kernel state: version, cipher and the current record sequence.  The
 * kernel wants the exact struct length of the cipher (EINVAL otherwise), so version and
 * cipher are asked for first.  Returns 0 or -errno; key bytes read are wiped.
 */
static int read_kernel_state(int fd, int optname, int *version, int *cipher, uint64_t *seq)
{
    union crypto_info ci;
    socklen_t len = sizeof ci.base;
    const unsigned char *p;
    int rc = 0;

    if (getsockopt(fd, TLSK_SOL_TLS, optname, &ci, &len) != 0) {
        return -errno;
    }
    switch (ci.base.cipher_type) {
    case TLSK_KCIPHER_AES_GCM_128:
        len = sizeof ci.gcm128, p = ci.gcm128.rec_seq;
        break;
    case TLSK_KCIPHER_AES_GCM_256:
        len = sizeof ci.gcm256, p = ci.gcm256.rec_seq;
        break;
    case TLSK_KCIPHER_AES_CCM_128:
        len = sizeof ci.ccm128, p = ci.ccm128.rec_seq;
        break;
    case TLSK_KCIPHER_CHACHA20_POLY1305:
        len = sizeof ci.chacha, p = ci.chacha.rec_seq;
        break;
    default:
        return -EPROTO;
    }
    if (getsockopt(fd, TLSK_SOL_TLS, optname, &ci, &len) != 0) {
        rc = -errno;
    } else {
        *version = ci.base.version;
        *cipher = ci.base.cipher_type;
        *seq = get_be64(p);
    }
    OPENSSL_cleanse(&ci, sizeof ci);
    return rc;
}

/* The kernel's current record sequence number of one direction. */
int tlsk__kernel_seq(int fd, bool tx, uint64_t *seq)
{
    int version, cipher;

    return read_kernel_state(fd, tx ? TLSK_TLS_TX : TLSK_TLS_RX, &version, &cipher, seq);
}

/* Read the installed state back: the kernel must report our version, cipher and sequence. */
static int verify_installed(int fd, int optname, const struct tlsk__keys *k)
{
    int version, cipher;
    uint64_t seq;
    int rc = read_kernel_state(fd, optname, &version, &cipher, &seq);

    if (rc != 0) {
        return rc;
    }
    return version == k->version && cipher == k->kcipher && seq == k->seq ? 0 : -EPROTO;
}

int tlsk__kernel_rekey(struct tlsk_socket *s, bool tx)
{
    struct tlsk__keys k;
    uint64_t seq;
    int rc = tlsk__derive_keys_from(s, tx ? &s->otx_secret : &s->orx_secret, &k);

    if (rc != 0) {
        return tlsk__set_detail(s, TLSK_EKEYUPDATE, "cannot derive the next %s key",
                                tx ? "transmit" : "receive");
    }
    if (!tx && tlsk__kernel_seq(s->fd, false, &seq) == 0) {
        /* Records under the old key still count in tlsk_socket_bytes_read(). */
        s->rx_recs_done += seq - s->rx_seq0;
    }
    /* Each new key starts its records at 0 (RFC 8446 5.3). */
    k.seq = 0;
    rc = install(s->fd, tx ? TLSK_TLS_TX : TLSK_TLS_RX, &k);
    OPENSSL_cleanse(&k, sizeof k);
    if (rc != 0) {
        return tlsk__set_detail(s, TLSK_EKEYUPDATE, "the kernel refused the next %s key: %s",
                                tx ? "transmit" : "receive", strerror(-rc));
    }
    if (tx) {
        s->ktx_recs = 0;
    } else {
        s->rx_seq0 = 0;
        s->krx_recs = 0;
        s->rx_reads = 0;
    }
    return 0;
}

static void set_dir(struct tlsk_direction *d, enum tlsk_mode m, enum tlsk_reason r, int err)
{
    d->mode = m;
    d->reason = r;
    d->err = err;
}

static bool is_tcp(int fd)
{
    int v = 0;
    socklen_t l = sizeof v;

    if (getsockopt(fd, SOL_SOCKET, SO_PROTOCOL, &v, &l) != 0 || v != IPPROTO_TCP) {
        return false;
    }
    l = sizeof v;
    if (getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &v, &l) != 0) {
        return false;
    }
    return v == AF_INET || v == AF_INET6;
}

/* Switch OpenSSL's write side to a memory BIO: from now on the kernel encrypts every byte
 * written to the fd, so OpenSSL must never write there again; the bridge forwards what it
 * writes.  Returns 0 or TLSK_ENOMEM, with nothing changed on failure. */
static int prepare_mem_bio(BIO **out)
{
    *out = BIO_new(BIO_s_mem());
    return *out ? 0 : TLSK_ENOMEM;
}

/*
 * Derive, install and verify one direction; on success hand OpenSSL the memory BIO for it
 * (*mem is then NULL).  Returns 0; a positive errno when the kernel refused the keys (the
 * socket is unchanged, the direction stays in userspace); or a negative code when the
 * install succeeded but the read-back disagrees, which is past the point of no return.
 */
static int install_dir(struct tlsk_socket *s, bool tx, int version, BIO **mem)
{
    struct tlsk__keys k;
    int opt = tx ? TLSK_TLS_TX : TLSK_TLS_RX;
    /* Our write keys are the client's when we are the client; our read keys the other's. */
    int client_keys = tx ? !s->is_server : s->is_server;
    int rc;

    rc = tlsk__derive_keys(s, tx, client_keys, &k);
    if (rc != 0) {
        return EPROTO;
    }
    /* TLS 1.3 application keys start at 0 after Finished; a TLS 1.2 epoch starts at the
     * ChangeCipherSpec (then NextProtocol, if NPN, and Finished).  Counted, never assumed. */
    if (version == TLS1_3_VERSION) {
        k.seq = tx ? s->tx_after_fin : s->rx_after_fin;
    } else {
        k.seq = tx ? s->tx_after_ccs : s->rx_after_ccs;
    }
    rc = install(s->fd, opt, &k);
    if (rc != 0) {
        OPENSSL_cleanse(&k, sizeof k);
        return -rc;
    }
    rc = verify_installed(s->fd, opt, &k);
    uint64_t seq = k.seq;
    OPENSSL_cleanse(&k, sizeof k);
    if (tx) {
        s->tx_kernel = true;
    } else {
        s->rx_kernel = true;
    }
    if (rc != 0) {
        return tlsk__set_detail(s, TLSK_EINTERNAL, "kernel %s state does not match after install",
                                tx ? "TX" : "RX");
    }
    if (tx) {
        s->ossl_write_seq = seq;
        SSL_set0_wbio(s->ssl, *mem);
    } else {
        s->ossl_read_seq = seq;
        s->rx_seq0 = seq;
        SSL_set0_rbio(s->ssl, *mem);
    }
    *mem = NULL;
    return 0;
}

int tlsk__offload(struct tlsk_socket *s)
{
    const struct tlsk_kernel_caps *caps = NULL;
    const SSL_CIPHER *c = SSL_get_current_cipher(s->ssl);
    struct tlsk_direction *tx = &s->off.tx, *rx = &s->off.rx;
    int version = SSL_version(s->ssl);
    int vi = version == TLS1_3_VERSION ? 1 : 0;
    int tcipher = -1, kcipher = 0;
    size_t key_len = 0;
    bool want_tx = true, want_rx = true;
    BIO *wmem = NULL, *rmem = NULL;
    int rc;

    set_dir(tx, TLSK_MODE_KERNEL, TLSK_REASON_NONE, 0);
    set_dir(rx, TLSK_MODE_KERNEL, TLSK_REASON_NONE, 0);

#define NO(dir, reason, err)                                                                   \
    do {                                                                                       \
        set_dir((dir), TLSK_MODE_USERSPACE, (reason), (err));                                  \
        if ((dir) == tx) {                                                                     \
            want_tx = false;                                                                   \
        } else {                                                                               \
            want_rx = false;                                                                   \
        }                                                                                      \
    } while (0)

    /* 1. Validate, in order of precedence, with no side effect. */
    if (s->policy == TLSK_OFFLOAD_OFF) {
        NO(tx, TLSK_REASON_POLICY, 0);
        NO(rx, TLSK_REASON_POLICY, 0);
    } else if (!is_tcp(s->fd)) {
        NO(tx, TLSK_REASON_NOT_TCP, 0);
        NO(rx, TLSK_REASON_NOT_TCP, 0);
    } else if (!(caps = tlsk_kernel_probe())->ulp) {
        NO(tx, TLSK_REASON_NO_ULP, caps->ulp_err);
        NO(rx, TLSK_REASON_NO_ULP, caps->ulp_err);
    } else if (version == TLS1_2_VERSION && (s->ctx->flags & TLSK_ALLOW_RENEGOTIATION)) {
        /* The kernel cannot change TLS 1.2 keys: renegotiation needs userspace. */
        NO(tx, TLSK_REASON_RENEGOTIATION, 0);
        NO(rx, TLSK_REASON_RENEGOTIATION, 0);
    } else if (!c || (version != TLS1_2_VERSION && version != TLS1_3_VERSION) ||
               tlsk__cipher_of(c, &tcipher, &kcipher, &key_len) != 0) {
        NO(tx, TLSK_REASON_CIPHER, 0);
        NO(rx, TLSK_REASON_CIPHER, 0);
    } else {
        if (!caps->cipher[vi][tcipher][0]) {
            NO(tx, TLSK_REASON_CIPHER, 0);
        } else if (SSL_SESSION_get_max_fragment_length(SSL_get_session(s->ssl)) !=
                       TLSEXT_max_fragment_length_DISABLED &&
                   !caps->tx_max_payload) {
            NO(tx, TLSK_REASON_FRAGMENT, 0);
        }
        if (!caps->cipher[vi][tcipher][1]) {
            NO(rx, TLSK_REASON_CIPHER, 0);
        } else if (s->policy == TLSK_OFFLOAD_TX ||
                   (version == TLS1_3_VERSION && (s->ctx->flags & TLSK_NO_RX_TLS13))) {
            NO(rx, TLSK_REASON_POLICY, 0);
        } else if (SSL_has_pending(s->ssl)) {
            NO(rx, TLSK_REASON_PENDING_DATA, 0);
        } else if (version == TLS1_3_VERSION && !caps->rekey &&
                   !(s->ctx->flags & TLSK_OFFLOAD_RX_TLS13) && s->policy != TLSK_OFFLOAD_REQUIRE) {
            /* A peer's KeyUpdate would stop a kernel receive path that cannot take the next
             * key (before Linux 6.14, docs/KERNEL.md §7.5); where it can, the bridge re-keys. */
            NO(rx, TLSK_REASON_NO_REKEY, 0);
        }
    }
    s->kernel_rekey = caps && caps->rekey && version == TLS1_3_VERSION;
    if (s->policy == TLSK_OFFLOAD_REQUIRE && (!want_tx || !want_rx)) {
        const struct tlsk_direction *d = !want_tx ? tx : rx;
        return tlsk__set_detail(s, TLSK_ENOKTLS, "offload required but %s stays in userspace: %s",
                                !want_tx ? "transmit" : "receive", tlsk_reason_text(d->reason));
    }
    if (!want_tx && !want_rx) {
        return 0;
    }
    if ((want_tx && prepare_mem_bio(&wmem) != 0) || (want_rx && prepare_mem_bio(&rmem) != 0)) {
        BIO_free(wmem);
        BIO_free(rmem);
        return tlsk__set_detail(s, TLSK_ENOMEM, "out of memory");
    }

    /* 2. Act.  Attaching the ULP alone is harmless: a socket whose installs fail stays a
     * plain, usable TCP socket (docs/KERNEL.md §2.2). */
    if (setsockopt(s->fd, TLSK_SOL_TCP, TLSK_TCP_ULP, "tls", sizeof "tls") != 0 &&
        errno != EEXIST) {
        int e = -errno;
        BIO_free(wmem);
        BIO_free(rmem);
        /* The probe found the ULP, so this socket itself was refused: ENOTCONN when the
         * peer's FIN already arrived (tls_init wants an established socket). */
        if (want_tx) {
            NO(tx, TLSK_REASON_INSTALL, e);
        }
        if (want_rx) {
            NO(rx, TLSK_REASON_INSTALL, e);
        }
        if (s->policy == TLSK_OFFLOAD_REQUIRE) {
            return tlsk__set_detail(s, TLSK_ENOKTLS, "offload required but TCP_ULP failed: %s",
                                    strerror(-e));
        }
        return 0;
    }

    if (want_tx) {
        rc = install_dir(s, true, version, &wmem);
        if (rc < 0) {
            BIO_free(wmem);
            BIO_free(rmem);
            return rc;
        }
        if (rc > 0) {
            NO(tx, rc == ENOENT || rc == EINVAL ? TLSK_REASON_CIPHER : TLSK_REASON_INSTALL, -rc);
        }
    }
    if (want_rx && !(s->policy == TLSK_OFFLOAD_REQUIRE && !s->tx_kernel)) {
        rc = install_dir(s, false, version, &rmem);
        if (rc < 0) {
            BIO_free(wmem);
            BIO_free(rmem);
            return rc;
        }
        if (rc > 0) {
            NO(rx, rc == ENOENT || rc == EINVAL ? TLSK_REASON_CIPHER : TLSK_REASON_INSTALL, -rc);
        }
    } else if (want_rx) {
        NO(rx, TLSK_REASON_INSTALL, 0);
    }
    BIO_free(wmem);
    BIO_free(rmem);
#undef NO

    if (s->policy == TLSK_OFFLOAD_REQUIRE && (!s->tx_kernel || !s->rx_kernel)) {
        return tlsk__set_detail(s, TLSK_ENOKTLS, "offload required but the kernel refused the %s keys",
                                !s->tx_kernel ? "transmit" : "receive");
    }
    if (s->tx_kernel || s->rx_kernel) {
        /* Neither side may renegotiate once a direction is in the kernel. */
        SSL_set_options(s->ssl, SSL_OP_NO_RENEGOTIATION);
        s->otx_secret = s->is_server ? s->server_secret : s->client_secret;
        s->orx_secret = s->is_server ? s->client_secret : s->server_secret;
    }
    /* TLS 1.2 secrets are re-derived from the session when needed; TLS 1.3 secrets are kept
     * only for a direction the bridge may have to speak for. */
    if (!s->tx_kernel && !s->rx_kernel) {
        OPENSSL_cleanse(&s->client_secret, sizeof s->client_secret);
        OPENSSL_cleanse(&s->server_secret, sizeof s->server_secret);
    }
    return 0;
}
