/*
 * record.c - one protected TLS record, sealed or opened in userspace.
 *
 * The bridge (bridge.c) needs this because OpenSSL and the kernel each own a record layer:
 * a control record from kTLS RX is re-encrypted for OpenSSL, and what OpenSSL writes after
 * TX offload is decrypted for the kernel (docs/OPENSSL.md §5).  Everything here is a pure
 * function of struct tlsk__keys: no socket, no state between calls.
 *
 * The records, all with a 16-byte tag and a 12-byte AEAD nonce:
 *
 *   TLS 1.3 (RFC 8446 5.2, 5.3), every cipher:
 *       header  23 03 03 len          (opaque_type is always application_data)
 *       body    AEAD(plaintext | real content type | zero padding) | tag
 *       nonce   iv XOR the 64-bit sequence number, left-padded to 12 bytes
 *       AAD     the 5-byte header itself
 *
 *   TLS 1.2 AES-GCM (RFC 5246 6.2.3.3, RFC 5288 3) and AES-CCM (RFC 6655 3, same layout):
 *       header  type 03 03 len
 *       body    explicit nonce (8) | AEAD(plaintext) | tag
 *       nonce   4-byte implicit salt (client/server_write_IV) | explicit nonce
 *       AAD     seq_num (8) | type | 03 03 | plaintext length (2): 13 bytes
 *     The explicit nonce only has to be unique per key; we send the sequence number, as the
 *     kernel does with the IV tlsk gives it (offload.c build_crypto_info).
 *
 *   TLS 1.2 ChaCha20-Poly1305 (RFC 7905 2): no explicit nonce; the nonce is formed as in
 *     TLS 1.3 (12-byte write IV XOR sequence number) and the AAD is TLS 1.2's 13 bytes.
 */
#include <errno.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>

#include "internal.h"
#include "kconst.h"

/* The ciphers, fetched once per process (TLSK_CIPHER_* order): EVP_aes_128_gcm() and the like
 * make every EVP_CipherInit_ex() fetch by name again, a few microseconds each, and soft.c
 * keys two contexts per connection. */
static EVP_CIPHER *g_ciphers[TLSK_CIPHER_COUNT];
static CRYPTO_ONCE g_ciphers_once = CRYPTO_ONCE_STATIC_INIT;

static void ciphers_init(void)
{
    static const char *const names[TLSK_CIPHER_COUNT] = {
        [TLSK_CIPHER_AES_128_GCM] = "AES-128-GCM",
        [TLSK_CIPHER_AES_256_GCM] = "AES-256-GCM",
        [TLSK_CIPHER_CHACHA20_POLY1305] = "ChaCha20-Poly1305",
        [TLSK_CIPHER_AES_128_CCM] = "AES-128-CCM",
    };
    for (int i = 0; i < TLSK_CIPHER_COUNT; i++) {
        g_ciphers[i] = EVP_CIPHER_fetch(NULL, names[i], NULL);
    }
    ERR_clear_error();
}

static const EVP_CIPHER *evp_cipher(int tlsk_cipher)
{
    if (tlsk_cipher < 0 || tlsk_cipher >= TLSK_CIPHER_COUNT) {
        return NULL;
    }
    CRYPTO_THREAD_run_once(&g_ciphers_once, ciphers_init);
    return g_ciphers[tlsk_cipher];
}

/* The sequence number as it goes into nonces and AADs: 8 bytes, big-endian (RFC 8446 5.3,
 * RFC 5246 6.2.3.3). */
void tlsk__put_be64(unsigned char out[8], uint64_t seq)
{
    for (int i = 0; i < 8; i++) {
        out[i] = (unsigned char)(seq >> (56 - 8 * i));
    }
}

int tlsk__record_key(EVP_CIPHER_CTX *cx, const struct tlsk__keys *k, int enc)
{
    const EVP_CIPHER *ciph = evp_cipher(k->tlsk_cipher);
    int rc = -1;

    /* A kept context is for the ciphers whose tag is set per record: not CCM (below). */
    if (ciph && k->tlsk_cipher != TLSK_CIPHER_AES_128_CCM &&
        EVP_CipherInit_ex(cx, ciph, NULL, NULL, NULL, enc) == 1 &&
        EVP_CIPHER_CTX_ctrl(cx, EVP_CTRL_AEAD_SET_IVLEN, 12, NULL) == 1 &&
        EVP_CipherInit_ex(cx, NULL, NULL, k->key, NULL, enc) == 1) {
        rc = 0;
    }
    ERR_clear_error();
    return rc;
}

/* One AEAD operation with a 12-byte nonce and a 16-byte tag; with keyed, a context that
 * tlsk__record_key() prepared for k (only the nonce changes), else one made for the call. */
static int aead(int enc, const struct tlsk__keys *k, EVP_CIPHER_CTX *keyed,
                const unsigned char nonce[12], const unsigned char *aad, size_t aad_len,
                const unsigned char *in, size_t in_len, unsigned char *out,
                unsigned char tag[TLSK_TAG_LEN])
{
    const EVP_CIPHER *ciph = evp_cipher(k->tlsk_cipher);
    EVP_CIPHER_CTX *cx = keyed ? keyed : EVP_CIPHER_CTX_new();
    bool ccm = k->tlsk_cipher == TLSK_CIPHER_AES_128_CCM;
    int n, rc = -1;

    if (!cx || (keyed && ccm)) {
        goto out;
    }
    if (ccm) {
        /* CCM wants the tag length before the key, and the tag itself before decrypting. */
        if (!ciph || EVP_CipherInit_ex(cx, ciph, NULL, NULL, NULL, enc) != 1 ||
            EVP_CIPHER_CTX_ctrl(cx, EVP_CTRL_AEAD_SET_IVLEN, 12, NULL) != 1 ||
            EVP_CIPHER_CTX_ctrl(cx, EVP_CTRL_AEAD_SET_TAG, TLSK_TAG_LEN, enc ? NULL : tag) != 1 ||
            EVP_CipherInit_ex(cx, NULL, NULL, k->key, nonce, enc) != 1) {
            goto out;
        }
    } else if ((!keyed && tlsk__record_key(cx, k, enc) != 0) ||
               EVP_CipherInit_ex(cx, NULL, NULL, NULL, nonce, enc) != 1) {
        goto out;
    }
    if (ccm && EVP_CipherUpdate(cx, NULL, &n, NULL, (int)in_len) != 1) {
        goto out;
    }
    if (EVP_CipherUpdate(cx, NULL, &n, aad, (int)aad_len) != 1) {
        goto out;
    }
    if (!enc && !ccm && EVP_CIPHER_CTX_ctrl(cx, EVP_CTRL_AEAD_SET_TAG, TLSK_TAG_LEN, tag) != 1) {
        goto out;
    }
    if (EVP_CipherUpdate(cx, out, &n, in, (int)in_len) != 1) {
        goto out;
    }
    if (!ccm && EVP_CipherFinal_ex(cx, out + n, &n) != 1) {
        goto out;
    }
    if (enc && EVP_CIPHER_CTX_ctrl(cx, EVP_CTRL_AEAD_GET_TAG, TLSK_TAG_LEN, tag) != 1) {
        goto out;
    }
    rc = 0;
out:
    if (!keyed) {
        EVP_CIPHER_CTX_free(cx); /* (NULL-safe) */
    }
    if (rc != 0) {
        /* Only a failure leaves errors behind (a bad tag on open).  Clearing the queue after
         * every record cost 840 instructions a record: 6 % of the userspace work of a 1 KiB
         * request, which opens one record and seals one. */
        ERR_clear_error();
    }
    return rc;
}

static void nonce_for(const struct tlsk__keys *k, uint64_t seq, const unsigned char *explicit_iv,
                      unsigned char nonce[12])
{
    bool xor_form = k->version == TLS1_3_VERSION || k->tlsk_cipher == TLSK_CIPHER_CHACHA20_POLY1305;

    if (xor_form) {
        unsigned char s[8];

        tlsk__put_be64(s, seq);
        memcpy(nonce, k->iv, 12);
        for (int i = 0; i < 8; i++) {
            nonce[4 + i] ^= s[i];
        }
    } else {
        memcpy(nonce, k->iv, 4);
        memcpy(nonce + 4, explicit_iv, 8);
    }
}

static bool tls12_explicit(const struct tlsk__keys *k)
{
    return k->version == TLS1_2_VERSION && k->tlsk_cipher != TLSK_CIPHER_CHACHA20_POLY1305;
}

int tlsk__record_seal(const struct tlsk__keys *k, uint64_t seq, int type, const unsigned char *pt,
                      size_t pt_len, unsigned char *out, size_t out_cap, size_t *out_len)
{
    return tlsk__record_seal_cx(k, NULL, seq, type, pt, pt_len, out, out_cap, out_len);
}

int tlsk__record_open(const struct tlsk__keys *k, uint64_t seq, const unsigned char *rec,
                      size_t rec_len, int *type, unsigned char *out, size_t out_cap,
                      size_t *out_len)
{
    return tlsk__record_open_cx(k, NULL, seq, rec, rec_len, type, out, out_cap, out_len);
}

int tlsk__record_seal_cx(const struct tlsk__keys *k, EVP_CIPHER_CTX *cx, uint64_t seq, int type,
                         const unsigned char *pt, size_t pt_len, unsigned char *out,
                         size_t out_cap, size_t *out_len)
{
    unsigned char nonce[12], aad[13], explicit_iv[8];
    unsigned char *body;
    size_t inner_len, rec_len;

    if (pt_len > TLSK_MAX_PLAINTEXT) {
        return -EMSGSIZE;
    }
    tlsk__put_be64(explicit_iv, seq);
    nonce_for(k, seq, explicit_iv, nonce);
    if (k->version == TLS1_3_VERSION) {
        inner_len = pt_len + 1;
        rec_len = inner_len + TLSK_TAG_LEN;
        if (out_cap < 5 + rec_len) {
            return -ENOBUFS;
        }
        out[0] = TLSK_REC_APPDATA, out[1] = 3, out[2] = 3;
        out[3] = (unsigned char)(rec_len >> 8), out[4] = (unsigned char)rec_len;
        body = out + 5;
        memmove(body, pt, pt_len);
        body[pt_len] = (unsigned char)type;
        if (aead(1, k, cx, nonce, out, 5, body, inner_len, body, body + inner_len) != 0) {
            return -EPROTO;
        }
        *out_len = 5 + rec_len;
        return 0;
    }
    rec_len = (tls12_explicit(k) ? 8 : 0) + pt_len + TLSK_TAG_LEN;
    if (out_cap < 5 + rec_len) {
        return -ENOBUFS;
    }
    out[0] = (unsigned char)type, out[1] = 3, out[2] = 3;
    out[3] = (unsigned char)(rec_len >> 8), out[4] = (unsigned char)rec_len;
    tlsk__put_be64(aad, seq);
    aad[8] = (unsigned char)type, aad[9] = 3, aad[10] = 3;
    aad[11] = (unsigned char)(pt_len >> 8), aad[12] = (unsigned char)pt_len;
    body = out + 5;
    if (tls12_explicit(k)) {
        memcpy(body, explicit_iv, 8);
        body += 8;
    }
    memmove(body, pt, pt_len);
    if (aead(1, k, cx, nonce, aad, 13, body, pt_len, body, body + pt_len) != 0) {
        return -EPROTO;
    }
    *out_len = 5 + rec_len;
    return 0;
}

int tlsk__record_open_cx(const struct tlsk__keys *k, EVP_CIPHER_CTX *cx, uint64_t seq,
                         const unsigned char *rec, size_t rec_len, int *type, unsigned char *out,
                         size_t out_cap, size_t *out_len)
{
    unsigned char nonce[12], aad[13];
    const unsigned char *body;
    size_t body_len, ct_len;

    if (rec_len < 5 || (size_t)(rec[3] << 8 | rec[4]) != rec_len - 5) {
        return -EPROTO;
    }
    body = rec + 5;
    body_len = rec_len - 5;
    /* Records over the limits are record_overflow, as the kernel's EMSGSIZE (RFC 8446 5.2 and
     * 5.4: ciphertext at most 2^14 + 256, content at most 2^14; RFC 5246 6.2.3: 2^14 + 2048). */
    if (body_len > TLSK_MAX_PLAINTEXT + (k->version == TLS1_3_VERSION ? 256 : 2048)) {
        return -EMSGSIZE;
    }
    if (k->version == TLS1_3_VERSION) {
        unsigned char tag[TLSK_TAG_LEN];
        size_t n;

        if (body_len < TLSK_TAG_LEN + 1 || out_cap < body_len - TLSK_TAG_LEN) {
            return -EPROTO;
        }
        ct_len = body_len - TLSK_TAG_LEN;
        nonce_for(k, seq, NULL, nonce);
        memcpy(tag, body + ct_len, TLSK_TAG_LEN);
        if (aead(0, k, cx, nonce, rec, 5, body, ct_len, out, tag) != 0) {
            return -EBADMSG;
        }
        /* Strip padding; the last non-zero byte is the real content type. */
        n = ct_len;
        while (n > 0 && out[n - 1] == 0) {
            n--;
        }
        if (n == 0) {
            return -EPROTO;
        }
        if (n - 1 > TLSK_MAX_PLAINTEXT) {
            return -EMSGSIZE;
        }
        *type = out[n - 1];
        *out_len = n - 1;
        return 0;
    }
    {
        size_t ex = tls12_explicit(k) ? 8 : 0;
        unsigned char tag[TLSK_TAG_LEN];

        if (body_len < ex + TLSK_TAG_LEN || out_cap < body_len - ex - TLSK_TAG_LEN) {
            return -EPROTO;
        }
        ct_len = body_len - ex - TLSK_TAG_LEN;
        nonce_for(k, seq, body, nonce);
        tlsk__put_be64(aad, seq);
        aad[8] = rec[0], aad[9] = rec[1], aad[10] = rec[2];
        aad[11] = (unsigned char)(ct_len >> 8), aad[12] = (unsigned char)ct_len;
        memcpy(tag, body + ex + ct_len, TLSK_TAG_LEN);
        if (ct_len > TLSK_MAX_PLAINTEXT) {
            return -EMSGSIZE;
        }
        if (aead(0, k, cx, nonce, aad, 13, body + ex, ct_len, out, tag) != 0) {
            return -EBADMSG;
        }
        *type = rec[0];
        *out_len = ct_len;
        return 0;
    }
}
