/*
 * record_keys.h - the fixed keys of fuzz_record.c and its seed generator mkseed_record.c.
 *
 * The first input byte chooses the key set (low 3 bits: suites[]) and the sequence number
 * (high 5 bits: seqs[]); the rest is one protected record.
 */
#ifndef TLSK_FUZZ_RECORD_KEYS_H
#define TLSK_FUZZ_RECORD_KEYS_H

#include <stdint.h>
#include <string.h>

#include "internal.h"
#include "kconst.h"

static const struct {
    int version, tlsk_cipher, kcipher;
    size_t key_len;
    const char *name;
} suites[8] = {
    { TLS1_2_VERSION, TLSK_CIPHER_AES_128_GCM, TLSK_KCIPHER_AES_GCM_128, 16, "tls12-aes128gcm" },
    { TLS1_2_VERSION, TLSK_CIPHER_AES_256_GCM, TLSK_KCIPHER_AES_GCM_256, 32, "tls12-aes256gcm" },
    { TLS1_2_VERSION, TLSK_CIPHER_CHACHA20_POLY1305, TLSK_KCIPHER_CHACHA20_POLY1305, 32,
      "tls12-chacha20" },
    { TLS1_3_VERSION, TLSK_CIPHER_AES_128_GCM, TLSK_KCIPHER_AES_GCM_128, 16, "tls13-aes128gcm" },
    { TLS1_3_VERSION, TLSK_CIPHER_AES_256_GCM, TLSK_KCIPHER_AES_GCM_256, 32, "tls13-aes256gcm" },
    { TLS1_3_VERSION, TLSK_CIPHER_CHACHA20_POLY1305, TLSK_KCIPHER_CHACHA20_POLY1305, 32,
      "tls13-chacha20" },
    { TLS1_3_VERSION, TLSK_CIPHER_AES_128_CCM, TLSK_KCIPHER_AES_CCM_128, 16, "tls13-aes128ccm" },
    /* Not in the brief's list, but record.c handles it (RFC 6655) and keys.c can pick it. */
    { TLS1_2_VERSION, TLSK_CIPHER_AES_128_CCM, TLSK_KCIPHER_AES_CCM_128, 16, "tls12-aes128ccm" },
};

static const uint64_t seqs[32] = {
    0, 1, 2, 3, 4, 5, 6, 7, 255, 256, 65535, 65536,
    0xffffffu, 0x1000000u, 0x7fffffffu, 0x80000000u, 0xffffffffu, 0x100000000u, 0x100000001u,
    0xffffffffffffu, 0x1000000000000u, 0xffffffffffffffu, 0x100000000000000u,
    0x0102030405060708u, 0x7fffffffffffffffu, 0x8000000000000000u, 0xfffffffffffffffdu,
    0xfffffffffffffffeu, 0xffffffffffffffffu, 0xdeadbeefcafef00du, 1000000, 12345,
};

static inline void fuzz_record_keys(unsigned sel, struct tlsk__keys *k, uint64_t *seq)
{
    const unsigned s = sel & 7;

    memset(k, 0, sizeof *k);
    k->version = suites[s].version;
    k->tlsk_cipher = suites[s].tlsk_cipher;
    k->kcipher = suites[s].kcipher;
    k->key_len = suites[s].key_len;
    for (size_t i = 0; i < sizeof k->key; i++) {
        k->key[i] = (unsigned char)(0x10 + i * 7 + s);
    }
    for (size_t i = 0; i < sizeof k->iv; i++) {
        k->iv[i] = (unsigned char)(0xa0 + i * 3 + s);
    }
    *seq = seqs[(sel >> 3) & 31];
    k->seq = *seq;
}

/* The keys after a KeyUpdate (TLS 1.3), for fuzz_soft and mkseed_soft: a fixed change of the
 * key and IV, at sequence number 0.  Not RFC 8446's derivation (keys.c has that, and
 * test_lean checks it against OpenSSL): what is fuzzed here is the record layer taking a
 * new key in the middle of a stream, with records under it already read. */
static inline void fuzz_record_next_keys(struct tlsk__keys *k)
{
    for (size_t i = 0; i < sizeof k->key; i++) {
        k->key[i] ^= 0x5c;
    }
    for (size_t i = 0; i < sizeof k->iv; i++) {
        k->iv[i] ^= 0x36;
    }
    k->seq = 0;
}

#endif
