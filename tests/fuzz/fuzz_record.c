/*
 * fuzz_record.c - libFuzzer target for the bridge's record layer (lib/record.c):
 * tlsk__record_open() and tlsk__record_seal(), pure functions of struct tlsk__keys.
 *
 * Input: one selector byte (record_keys.h: low 3 bits the suite, TLS 1.2 and 1.3 with
 * AES-128-GCM, AES-256-GCM, ChaCha20-Poly1305 and AES-128-CCM; high 5 bits the sequence
 * number), then one record.  Fixed keys, so the seeds (mkseed_record.c, sealed at build time)
 * authenticate and the fuzzer starts inside valid MACs; mutations mostly fail the tag, which
 * exercises the length and header checks in front of it.
 *
 * Each input is used twice:
 *   1. opened, with an output buffer of exactly the record's length less header and tag, so
 *      ASan sees a write past it.  On success: the type and length are plausible, a buffer
 *      one byte shorter than what open needs is refused with -EPROTO, and sealing the
 *      result again at the same sequence number reproduces the input byte for byte (a TLS
 *      1.3 record's zero padding is resealed as part of the plaintext; a TLS 1.2 record
 *      whose explicit nonce is not the sequence number, which is what seal sends, or whose
 *      version bytes are not 03 03 is not compared).  On failure: only -EPROTO or -EBADMSG,
 *      or -EMSGSIZE for a record over the limits (over_limits()).
 *   2. the same bytes as plaintext: sealed into a buffer of exactly the record's size (one
 *      byte less must give -ENOBUFS; over 2^14 bytes -EMSGSIZE), then opened again: same
 *      type and plaintext.
 *
 *   tests/fuzz/run.sh SECONDS   builds and runs this target with the others
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "record_keys.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fail(const char *what, const struct tlsk__keys *k, uint64_t seq, int rc)
{
    fprintf(stderr, "fuzz_record: %s (version %#x cipher %d seq %llu rc %d)\n", what, k->version,
            k->tlsk_cipher, (unsigned long long)seq, rc);
    abort();
}

static bool tls12_explicit(const struct tlsk__keys *k)
{
    return k->version == TLS1_2_VERSION && k->tlsk_cipher != TLSK_CIPHER_CHACHA20_POLY1305;
}

/* Bytes tlsk__record_seal() makes of n bytes of plaintext. */
static size_t sealed_len(const struct tlsk__keys *k, size_t n)
{
    return 5 + (k->version == TLS1_3_VERSION ? 1 : 0) + (tls12_explicit(k) ? 8 : 0) + n +
           TLSK_TAG_LEN;
}

/*
 * Whether a record may be refused as record_overflow (-EMSGSIZE): its ciphertext is over
 * 2^14 + 256 (TLS 1.3) or 2^14 + 2048 (TLS 1.2), or it could hold more than 2^14 bytes of
 * content (RFC 8446 5.2, 5.4; RFC 5246 6.2.3).  A well-formed header is needed first.
 */
static bool over_limits(const struct tlsk__keys *k, const unsigned char *rec, size_t len)
{
    size_t body, over;

    if (len < 5 || (size_t)(rec[3] << 8 | rec[4]) != len - 5) {
        return false;
    }
    body = len - 5;
    if (k->version == TLS1_3_VERSION) {
        over = TLSK_MAX_PLAINTEXT + 1 + TLSK_TAG_LEN; /* content | type | tag */
        return body > TLSK_MAX_PLAINTEXT + 256 || body > over;
    }
    over = TLSK_MAX_PLAINTEXT + (tls12_explicit(k) ? 8 : 0) + TLSK_TAG_LEN;
    return body > TLSK_MAX_PLAINTEXT + 2048 || body > over;
}

/* Seal pt again and compare with rec. */
static void reseal(const struct tlsk__keys *k, uint64_t seq, int type, const unsigned char *pt,
                   size_t pt_len, const unsigned char *rec, size_t rec_len)
{
    unsigned char *out;
    size_t out_len = 0;
    int rc;

    if (pt_len > TLSK_MAX_PLAINTEXT) {
        return; /* opened, but more than seal makes: nothing to compare with */
    }
    out = malloc(rec_len);
    if (!out) {
        return;
    }
    rc = tlsk__record_seal(k, seq, type, pt, pt_len, out, rec_len, &out_len);
    if (rc != 0 || out_len != rec_len || memcmp(out, rec, rec_len) != 0) {
        fail("seal(open(record)) is not the record", k, seq, rc);
    }
    free(out);
}

static void open_record(const struct tlsk__keys *k, uint64_t seq, const unsigned char *rec,
                        size_t len)
{
    size_t cap = len > 5 + TLSK_TAG_LEN ? len - 5 - TLSK_TAG_LEN : 0, out_len = 0, need;
    unsigned char *out = malloc(cap ? cap : 1), *shortbuf;
    int type = -1, rc;

    if (!out) {
        return;
    }
    rc = tlsk__record_open(k, seq, rec, len, &type, out, cap, &out_len);
    if (rc != 0) {
        if (rc == -EMSGSIZE ? !over_limits(k, rec, len) : rc != -EPROTO && rc != -EBADMSG) {
            fail("open: unexpected error", k, seq, rc);
        }
        free(out);
        return;
    }
    if (out_len > cap || type < 0 || type > 255 ||
        (k->version == TLS1_3_VERSION && (type == 0 || out_len + 1 > cap))) {
        fail("open: implausible type or length", k, seq, rc);
    }

    /* What open needs of out_cap: the whole inner plaintext (TLS 1.3), or the plaintext. */
    need = k->version == TLS1_3_VERSION ? cap : out_len;
    if (need > 0) {
        int t2;
        size_t l2;
        shortbuf = malloc(need - 1 ? need - 1 : 1);
        if (shortbuf) {
            rc = tlsk__record_open(k, seq, rec, len, &t2, shortbuf, need - 1, &l2);
            if (rc != -EPROTO) {
                fail("open: a short output buffer is not refused", k, seq, rc);
            }
            free(shortbuf);
        }
    }

    if (k->version == TLS1_3_VERSION) {
        size_t pad = cap - out_len - 1;
        if (pad == 0) {
            reseal(k, seq, type, out, out_len, rec, len);
        } else {
            /* plaintext | type | pad-1 zeros, sealed as type 0: the last zero is the
             * "type" seal appends, so the inner plaintext is the record's again. */
            out[out_len] = (unsigned char)type;
            memset(out + out_len + 1, 0, pad - 1);
            reseal(k, seq, 0, out, cap - 1, rec, len);
        }
    } else {
        unsigned char be[8];
        tlsk__put_be64(be, seq);
        if (rec[1] == 3 && rec[2] == 3 && (!tls12_explicit(k) || memcmp(rec + 5, be, 8) == 0)) {
            reseal(k, seq, type, out, out_len, rec, len);
        }
    }
    free(out);
}

static void seal_then_open(const struct tlsk__keys *k, uint64_t seq, const unsigned char *pt,
                           size_t len)
{
    int type = len ? 20 + (pt[0] & 3) : 23, type2 = -1, rc;
    size_t rec_len = sealed_len(k, len), out_len = 0, pt_len = 0;
    unsigned char *rec, *back;

    rec = malloc(rec_len);
    if (!rec) {
        return;
    }
    rc = tlsk__record_seal(k, seq, type, pt, len, rec, rec_len, &out_len);
    if (len > TLSK_MAX_PLAINTEXT) {
        if (rc != -EMSGSIZE) {
            fail("seal: more than 2^14 bytes not refused", k, seq, rc);
        }
        free(rec);
        return;
    }
    if (rc != 0 || out_len != rec_len) {
        fail("seal: failed or wrong length", k, seq, rc);
    }
    {
        size_t l2;
        rc = tlsk__record_seal(k, seq, type, pt, len, rec, rec_len - 1, &l2);
        if (rc != -ENOBUFS) {
            fail("seal: a short output buffer is not refused", k, seq, rc);
        }
        /* The refused call must not have touched rec: seal it again to be sure. */
        rc = tlsk__record_seal(k, seq, type, pt, len, rec, rec_len, &out_len);
        if (rc != 0) {
            fail("seal: failed the second time", k, seq, rc);
        }
    }
    back = malloc(len + 1);
    if (!back) {
        free(rec);
        return;
    }
    rc = tlsk__record_open(k, seq, rec, rec_len, &type2, back, len + 1, &pt_len);
    if (rc != 0 || type2 != type || pt_len != len || memcmp(back, pt, len) != 0) {
        fail("open(seal(plaintext)) is not the plaintext", k, seq, rc);
    }
    /* The neighbouring sequence number must not authenticate. */
    rc = tlsk__record_open(k, seq + 1, rec, rec_len, &type2, back, len + 1, &pt_len);
    if (rc != -EBADMSG) {
        fail("open at seq + 1 authenticated", k, seq, rc);
    }
    free(back);
    free(rec);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct tlsk__keys k;
    uint64_t seq;

    if (size < 1) {
        return 0;
    }
    fuzz_record_keys(data[0], &k, &seq);
    open_record(&k, seq, data + 1, size - 1);
    seal_then_open(&k, seq, data + 1, size - 1);
    return 0;
}
