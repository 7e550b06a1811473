/*
 * mkseed_record.c DIR - seeds for fuzz_record: records sealed with tlsk__record_seal() under
 * the fuzzer's fixed keys (record_keys.h), one file per record, each prefixed with its
 * selector byte.  For every suite: application data, a close_notify alert, a TLS 1.3
 * KeyUpdate-shaped handshake message, an empty record, 1000 bytes, and for TLS 1.3 a padded
 * record (plaintext | type | zeros sealed as type 0) and one of padding only, at several
 * sequence numbers; one record of 2^14 bytes (TLS 1.3 AES-128-GCM); and three records over
 * the limits (unsealed: open refuses them before the tag).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "record_keys.h"

static int written;

static int put(const char *dir, unsigned sel, int type, const void *pt, size_t len)
{
    static unsigned char rec[1 + 5 + 8 + TLSK_MAX_PLAINTEXT + 1 + TLSK_TAG_LEN];
    struct tlsk__keys k;
    uint64_t seq;
    size_t n = 0;
    char path[4096];
    FILE *f;
    int rc;

    fuzz_record_keys(sel, &k, &seq);
    rec[0] = (unsigned char)sel;
    rc = tlsk__record_seal(&k, seq, type, pt, len, rec + 1, sizeof rec - 1, &n);
    if (rc != 0) {
        fprintf(stderr, "mkseed_record: seal %s: %d\n", suites[sel & 7].name, rc);
        return -1;
    }
    snprintf(path, sizeof path, "%s/seed-%s-%02u", dir, suites[sel & 7].name, (unsigned)written++);
    f = fopen(path, "wb");
    if (!f || fwrite(rec, 1, n + 1, f) != n + 1 || fclose(f) != 0) {
        perror(path);
        return -1;
    }
    return 0;
}

/* A record of body_len bytes that no key sealed: the header and a filler body. */
static int put_raw(const char *dir, unsigned sel, size_t body_len)
{
    static unsigned char rec[1 + 5 + TLSK_MAX_PLAINTEXT + 2048 + 1];
    char path[4096];
    FILE *f;

    if (1 + 5 + body_len > sizeof rec) {
        return -1;
    }
    rec[0] = (unsigned char)sel;
    rec[1] = TLSK_REC_APPDATA, rec[2] = 3, rec[3] = 3;
    rec[4] = (unsigned char)(body_len >> 8), rec[5] = (unsigned char)body_len;
    memset(rec + 6, 0x5a, body_len);
    snprintf(path, sizeof path, "%s/seed-%s-%02u", dir, suites[sel & 7].name, (unsigned)written++);
    f = fopen(path, "wb");
    if (!f || fwrite(rec, 1, 6 + body_len, f) != 6 + body_len || fclose(f) != 0) {
        perror(path);
        return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    static const char http[] = "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n";
    static const unsigned char close_notify[2] = { 1, 0 };
    static const unsigned char key_update[5] = { 24, 0, 0, 1, 0 };
    static unsigned char big[1000], padded[64];
    int rc = 0;

    if (argc != 2) {
        fprintf(stderr, "usage: %s DIR\n", argv[0]);
        return 2;
    }
    for (size_t i = 0; i < sizeof big; i++) {
        big[i] = (unsigned char)(i * 31 + 7);
    }
    for (unsigned s = 0; s < 8; s++) {
        rc |= put(argv[1], s | 0u << 3, TLSK_REC_APPDATA, http, sizeof http - 1);
        rc |= put(argv[1], s | 1u << 3, TLSK_REC_ALERT, close_notify, sizeof close_notify);
        rc |= put(argv[1], s | 28u << 3, TLSK_REC_HANDSHAKE, key_update, sizeof key_update);
        rc |= put(argv[1], s | 17u << 3, TLSK_REC_APPDATA, "", 0);
        rc |= put(argv[1], s | 5u << 3, TLSK_REC_APPDATA, big, sizeof big);
        if (suites[s].version == TLS1_3_VERSION) {
            size_t n = sizeof http - 1 < 40 ? sizeof http - 1 : 40;
            memcpy(padded, http, n);
            padded[n] = TLSK_REC_APPDATA;
            memset(padded + n + 1, 0, 7);
            rc |= put(argv[1], s | 2u << 3, 0, padded, n + 8);
            /* Only padding, no content type: open must refuse it (RFC 8446 5.4). */
            rc |= put(argv[1], s | 3u << 3, 0, "\0\0\0", 3);
        }
    }
    /* The largest record (2^14 bytes of plaintext), once. */
    {
        static unsigned char max[TLSK_MAX_PLAINTEXT];
        memset(max, 'x', sizeof max);
        rc |= put(argv[1], 3 | 4u << 3, TLSK_REC_APPDATA, max, sizeof max);
    }
    /* Records over the limits, which open refuses as record_overflow (-EMSGSIZE) before
     * authenticating: one byte of content too many (TLS 1.2 ChaCha20, no explicit nonce),
     * ciphertext over 2^14 + 256 (TLS 1.3) and over 2^14 + 2048 (TLS 1.2). */
    rc |= put_raw(argv[1], 2 | 7u << 3, TLSK_MAX_PLAINTEXT + 1 + TLSK_TAG_LEN);
    rc |= put_raw(argv[1], 3 | 7u << 3, TLSK_MAX_PLAINTEXT + 256 + 1);
    rc |= put_raw(argv[1], 0 | 7u << 3, TLSK_MAX_PLAINTEXT + 2048 + 1);
    return rc ? 1 : 0;
}
