/*
 * mkseed_soft.c DIR - seeds for fuzz_soft: byte streams of several records sealed with
 * tlsk__record_seal() under the fuzzer's fixed keys (record_keys.h) at consecutive sequence
 * numbers, as a peer sends them, each file prefixed with its selector byte.  For every suite
 * soft.c carries, at three starting sequence numbers: data, data; data, a warning alert, data,
 * close_notify; 20 empty records, then data; a 2^14-byte record, then 3,000 bytes; and for TLS
 * 1.3 a KeyUpdate split over two records, then data under the next key (fuzz_record_next_keys,
 * as fuzz_soft installs it), a whole KeyUpdate in one record and data under the key after
 * that.  fuzz_record's single records are seeds too (tests/fuzz/run.sh).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "record_keys.h"

static unsigned char g_buf[1 + 8 * (5 + 8 + TLSK_MAX_PLAINTEXT + 1 + TLSK_TAG_LEN) + 32 * 64];
static size_t g_len;
static struct tlsk__keys g_k;
static uint64_t g_seq;
static int g_written;

static void begin(unsigned sel)
{
    fuzz_record_keys(sel, &g_k, &g_seq);
    g_buf[0] = (unsigned char)sel;
    g_len = 1;
}

static int add(int type, const void *pt, size_t len)
{
    size_t n = 0;
    int rc = tlsk__record_seal(&g_k, g_seq, type, pt, len, g_buf + g_len, sizeof g_buf - g_len, &n);

    if (rc != 0) {
        fprintf(stderr, "mkseed_soft: seal %d\n", rc);
        return -1;
    }
    g_seq++;
    g_len += n;
    return 0;
}

static int done(const char *dir, const char *what)
{
    char path[4096];
    FILE *f;

    snprintf(path, sizeof path, "%s/seed-stream-%s-%s-%02d", dir, suites[g_buf[0] & 7].name, what,
             g_written++);
    f = fopen(path, "wb");
    if (!f || fwrite(g_buf, 1, g_len, f) != g_len || fclose(f) != 0) {
        perror(path);
        return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    static const char http[] = "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n";
    static const unsigned char warn[2] = { 1, 200 }, close_notify[2] = { 1, 0 };
    static const unsigned char ku[5] = { 24, 0, 0, 1, 1 };
    static unsigned char big[TLSK_MAX_PLAINTEXT];
    static const unsigned seqsel[3] = { 0, 3, 8 }; /* seqs[] 0, 3 and 255 */
    int rc = 0;

    if (argc != 2) {
        fprintf(stderr, "usage: %s DIR\n", argv[0]);
        return 2;
    }
    for (size_t i = 0; i < sizeof big; i++) {
        big[i] = (unsigned char)(i * 13 + 7);
    }
    for (unsigned s = 0; s < 6; s++) { /* the suites soft.c carries: not CCM */
        for (unsigned q = 0; q < 3; q++) {
            unsigned sel = s | seqsel[q] << 3;
            bool tls13 = suites[s].version == TLS1_3_VERSION;

            begin(sel);
            rc |= add(TLSK_REC_APPDATA, http, sizeof http - 1);
            rc |= add(TLSK_REC_APPDATA, "x", 1);
            rc |= done(argv[1], "data");
            begin(sel);
            rc |= add(TLSK_REC_APPDATA, http, sizeof http - 1);
            rc |= add(TLSK_REC_ALERT, warn, sizeof warn);
            rc |= add(TLSK_REC_APPDATA, "y", 1);
            rc |= add(TLSK_REC_ALERT, close_notify, sizeof close_notify);
            rc |= done(argv[1], "alerts");
            begin(sel);
            for (int i = 0; i < 20; i++) {
                rc |= add(TLSK_REC_APPDATA, "", 0);
            }
            rc |= add(TLSK_REC_APPDATA, http, sizeof http - 1);
            rc |= done(argv[1], "empty");
            begin(sel);
            rc |= add(TLSK_REC_APPDATA, big, sizeof big);
            rc |= add(TLSK_REC_APPDATA, big, 3000);
            rc |= done(argv[1], "big");
            if (tls13) {
                begin(sel);
                rc |= add(TLSK_REC_APPDATA, http, sizeof http - 1);
                rc |= add(TLSK_REC_HANDSHAKE, ku, 2);
                rc |= add(TLSK_REC_HANDSHAKE, ku + 2, 3);
                fuzz_record_next_keys(&g_k);
                g_seq = 0;
                rc |= add(TLSK_REC_APPDATA, "after the first update", 22);
                rc |= add(TLSK_REC_HANDSHAKE, ku, sizeof ku);
                fuzz_record_next_keys(&g_k);
                g_seq = 0;
                rc |= add(TLSK_REC_APPDATA, http, sizeof http - 1);
                rc |= add(TLSK_REC_ALERT, close_notify, sizeof close_notify);
                rc |= done(argv[1], "ku-split");
            }
        }
    }
    printf("mkseed_soft: %d streams\n", g_written);
    return rc ? 1 : 0;
}
