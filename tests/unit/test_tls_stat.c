/* test_tls_stat.c - the /proc/net/tls_stat parser, on fixtures (no kernel needed). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "diag.h"
#include "tap.h"

/* Linux 6.1 exactly as tls_proc.c prints it: "%-32s\t%lu\n". */
static const char fixture_6_1[] =
    "TlsCurrTxSw                     \t1\n"
    "TlsCurrRxSw                     \t2\n"
    "TlsCurrTxDevice                 \t0\n"
    "TlsCurrRxDevice                 \t0\n"
    "TlsTxSw                         \t17\n"
    "TlsRxSw                         \t16\n"
    "TlsTxDevice                     \t0\n"
    "TlsRxDevice                     \t0\n"
    "TlsDecryptError                 \t3\n"
    "TlsRxDeviceResync               \t0\n"
    "TlsDecryptRetry                 \t5\n"
    "TlsRxNoPadViolation             \t4\n";

/* A 6.14-style file, with the rekey counters and mixed separators. */
static const char fixture_6_14[] = "TlsCurrTxSw\t0\n"
                                   "TlsCurrRxSw  0\n"
                                   "TlsCurrTxDevice \t 0\n"
                                   "TlsCurrRxDevice\t\t0\n"
                                   "TlsTxSw                         \t1000\n"
                                   "TlsRxSw                         \t999\n"
                                   "TlsTxDevice                     \t0\n"
                                   "TlsRxDevice                     \t0\n"
                                   "TlsDecryptError                 \t0\n"
                                   "TlsRxDeviceResync               \t0\n"
                                   "TlsDecryptRetry                 \t0\n"
                                   "TlsRxNoPadViolation             \t0\n"
                                   "TlsRxRekeyOk                    \t11\n"
                                   "TlsRxRekeyError                 \t12\n"
                                   "TlsTxRekeyOk                    \t13\n"
                                   "TlsTxRekeyError                 \t14\n"
                                   "TlsRxRekeyReceived              \t15\n";

static int parse_str(struct tlsk__tls_stat *st, const char *s)
{
    return tlsk__tls_stat_parse(st, s, strlen(s));
}

static int count_have(const struct tlsk__tls_stat *st)
{
    int n = 0;
    for (int i = 0; i < TLSK__STAT_COUNT; i++) {
        n += st->have[i] != 0;
    }
    return n;
}

/* Parse from a heap copy with no terminator, so ASan flags any read past len. */
static int parse_exact(struct tlsk__tls_stat *st, const char *s, size_t len)
{
    char *buf = malloc(len ? len : 1);
    if (buf == NULL) {
        tap_bail("malloc");
    }
    memcpy(buf, s, len);
    int rc = tlsk__tls_stat_parse(st, buf, len);
    free(buf);
    return rc;
}

static void test_names(void)
{
    static const char *const expect[TLSK__STAT_COUNT] = {
        "TlsCurrTxSw",     "TlsCurrRxSw",       "TlsCurrTxDevice", "TlsCurrRxDevice",
        "TlsTxSw",         "TlsRxSw",           "TlsTxDevice",     "TlsRxDevice",
        "TlsDecryptError", "TlsRxDeviceResync", "TlsDecryptRetry", "TlsRxNoPadViolation",
        "TlsRxRekeyOk",    "TlsRxRekeyError",   "TlsTxRekeyOk",    "TlsTxRekeyError",
        "TlsRxRekeyReceived",
    };
    int bad = 0;
    for (int i = 0; i < TLSK__STAT_COUNT; i++) {
        const char *n = tlsk__tls_stat_name(i);
        if (n == NULL || strcmp(n, expect[i]) != 0) {
            tap_diag("name %d: %s", i, n ? n : "(null)");
            bad++;
        }
    }
    TAP_IS(TLSK__STAT_COUNT, 17, "17 known counters");
    TAP_OK(bad == 0, "every counter has its kernel name, in kernel order");
    TAP_OK(tlsk__tls_stat_name(-1) == NULL && tlsk__tls_stat_name(TLSK__STAT_COUNT) == NULL,
           "out-of-range names are NULL");
}

static void test_6_1(void)
{
    struct tlsk__tls_stat st;
    int rc = parse_str(&st, fixture_6_1);

    TAP_IS(rc, 0, "6.1 file parses");
    TAP_IS(st.present, 1, "6.1: present");
    TAP_IS(count_have(&st), 12, "6.1: exactly twelve counters");
    TAP_OK(st.have[TLSK__STAT_RX_NO_PAD_VIOLATION] && !st.have[TLSK__STAT_RX_REKEY_OK] &&
               !st.have[TLSK__STAT_RX_REKEY_RECEIVED],
           "6.1: has the 6.0 counters, not the 6.14 ones");
    TAP_IS(st.v[TLSK__STAT_CURR_TX_SW], 1, "6.1: TlsCurrTxSw");
    TAP_IS(st.v[TLSK__STAT_CURR_RX_SW], 2, "6.1: TlsCurrRxSw");
    TAP_IS(st.v[TLSK__STAT_TX_SW], 17, "6.1: TlsTxSw");
    TAP_IS(st.v[TLSK__STAT_RX_SW], 16, "6.1: TlsRxSw");
    TAP_IS(st.v[TLSK__STAT_DECRYPT_ERROR], 3, "6.1: TlsDecryptError");
    TAP_IS(st.v[TLSK__STAT_DECRYPT_RETRY], 5, "6.1: TlsDecryptRetry");
    TAP_IS(st.v[TLSK__STAT_RX_NO_PAD_VIOLATION], 4, "6.1: TlsRxNoPadViolation (last line)");
}

static void test_6_14(void)
{
    struct tlsk__tls_stat st;
    int rc = parse_str(&st, fixture_6_14);

    TAP_IS(rc, 0, "6.14 file parses");
    TAP_IS(count_have(&st), 17, "6.14: all seventeen counters");
    TAP_IS(st.v[TLSK__STAT_TX_SW], 1000, "6.14: TlsTxSw");
    TAP_IS(st.v[TLSK__STAT_RX_SW], 999, "6.14: TlsRxSw");
    TAP_OK(st.v[TLSK__STAT_RX_REKEY_OK] == 11 && st.v[TLSK__STAT_RX_REKEY_ERROR] == 12 &&
               st.v[TLSK__STAT_TX_REKEY_OK] == 13 && st.v[TLSK__STAT_TX_REKEY_ERROR] == 14 &&
               st.v[TLSK__STAT_RX_REKEY_RECEIVED] == 15,
           "6.14: rekey counters");
}

static void test_unknown_lines(void)
{
    struct tlsk__tls_stat st;
    int rc = parse_str(&st, "TlsFutureCounter                \t77\n"
                            "TlsTxSw                         \t5\n"
                            "TlsTxSwExtra 9\n"        /* a known name as a prefix */
                            "Tls 3\n"                 /* and as a suffix */
                            "this line is not a counter at all\n"
                            "TlsFutureWords\tnot a number\n"
                            "\n"
                            "   \t \n"
                            "  TlsRxSw\t6\n"          /* leading blanks tolerated */
                            "TlsAnotherOne\t18446744073709551616999\n");
    TAP_IS(rc, 0, "unknown lines are ignored, whatever their value");
    TAP_IS(count_have(&st), 2, "unknown lines: only the two known counters");
    TAP_OK(st.v[TLSK__STAT_TX_SW] == 5 && st.v[TLSK__STAT_RX_SW] == 6,
           "unknown lines: prefix and suffix matches do not clobber values");
}

static void test_truncated(void)
{
    struct tlsk__tls_stat st;
    const char *cut_name = strstr(fixture_6_1, "TlsDecryptError");
    size_t mid_name = (size_t)(cut_name - fixture_6_1) + 7; /* "TlsDecr" */
    int rc = tlsk__tls_stat_parse(&st, fixture_6_1, mid_name);

    TAP_IS(rc, -EINVAL, "cut mid-name: -EINVAL");
    TAP_IS(count_have(&st), 8, "cut mid-name: the eight complete lines are kept");
    TAP_IS(st.v[TLSK__STAT_TX_SW], 17, "cut mid-name: earlier values intact");

    const char *cut_num = strstr(fixture_6_1, "TlsTxSw");
    size_t mid_num = (size_t)(strchr(cut_num, '\t') - fixture_6_1) + 2; /* "\t1" of "\t17" */
    rc = tlsk__tls_stat_parse(&st, fixture_6_1, mid_num);
    TAP_IS(rc, -EINVAL, "cut mid-number: -EINVAL");
    TAP_OK(!st.have[TLSK__STAT_TX_SW] && st.v[TLSK__STAT_TX_SW] == 0,
           "cut mid-number: the partial value (1 of 17) is not used");
    TAP_IS(count_have(&st), 4, "cut mid-number: the four complete lines are kept");

    rc = parse_str(&st, "TlsTxSw\t17");
    TAP_IS(rc, -EINVAL, "a single line without its newline is a cut read");

    size_t at_boundary = (size_t)(cut_num - fixture_6_1);
    rc = tlsk__tls_stat_parse(&st, fixture_6_1, at_boundary);
    TAP_OK(rc == 0 && count_have(&st) == 4,
           "cut at a line boundary: valid, have[] shows what came");
}

static void test_malformed(void)
{
    static const struct {
        const char *text;
        int rc;
    } cases[] = {
        { "TlsTxSw\n", -EINVAL },
        { "TlsTxSw   \t \n", -EINVAL },
        { "TlsTxSw\tabc\n", -EINVAL },
        { "TlsTxSw\t12abc\n", -EINVAL },
        { "TlsTxSw\t-1\n", -EINVAL },
        { "TlsTxSw\t+1\n", -EINVAL },
        { "TlsTxSw\t1 2\n", -EINVAL },
        { "TlsTxSw\t0x10\n", -EINVAL },
        { "TlsTxSw\t5\r\n", -EINVAL },
        { "TlsTxSw\t1.5\n", -EINVAL },
        { "TlsTxSw\t18446744073709551616\n", -ERANGE },
        { "TlsTxSw\t99999999999999999999999999999999\n", -ERANGE },
        { "TlsTxSw\t184467440737095516150\n", -ERANGE },
    };
    int bad = 0;
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct tlsk__tls_stat st;
        int rc = parse_str(&st, cases[i].text);
        if (rc != cases[i].rc || st.have[TLSK__STAT_TX_SW] || st.v[TLSK__STAT_TX_SW] != 0) {
            tap_diag("case %zu: rc %d have %d", i, rc, st.have[TLSK__STAT_TX_SW]);
            bad++;
        }
    }
    TAP_OK(bad == 0, "malformed values of a known counter are rejected and not stored");

    struct tlsk__tls_stat st;
    int rc = parse_str(&st, "TlsTxSw\t18446744073709551615\nTlsRxSw\t00042 \n");
    TAP_OK(rc == 0 && st.v[TLSK__STAT_TX_SW] == UINT64_MAX && st.v[TLSK__STAT_RX_SW] == 42,
           "UINT64_MAX, leading zeros and trailing blanks are valid");

    rc = parse_str(&st, "TlsTxSw\tjunk\nTlsRxSw\t3\nTlsDecryptError\t99999999999999999999\n"
                        "TlsCurrTxSw\t1\n");
    TAP_IS(rc, -EINVAL, "first error wins (EINVAL before ERANGE)");
    TAP_OK(st.have[TLSK__STAT_RX_SW] && st.v[TLSK__STAT_RX_SW] == 3 &&
               st.have[TLSK__STAT_CURR_TX_SW] && !st.have[TLSK__STAT_DECRYPT_ERROR],
           "a bad line does not stop parsing");

    rc = parse_str(&st, "TlsTxSw\t1\nTlsTxSw\t2\n");
    TAP_OK(rc == -EINVAL && st.v[TLSK__STAT_TX_SW] == 1, "duplicate name: -EINVAL, first kept");
}

static void test_garbage_and_empty(void)
{
    struct tlsk__tls_stat st;
    static const char garbage[] = "\x01\x02\xff\xfe binary \x7f\n\t\t\n%%%%\n"
                                  "TlsTxSw\0\t5\n" /* NUL inside the name: not a known name */
                                  "\xff\xff\xff\xff\xff\xff\xff\n";
    int rc = tlsk__tls_stat_parse(&st, garbage, sizeof(garbage) - 1);
    TAP_OK(rc == 0 && count_have(&st) == 0, "garbage lines: ignored, no counter");

    memset(&st, 0xAA, sizeof(st));
    rc = tlsk__tls_stat_parse(&st, "", 0);
    TAP_OK(rc == 0 && st.present == 1 && count_have(&st) == 0 && st.v[0] == 0,
           "empty text: present, nothing, st zeroed");
    rc = tlsk__tls_stat_parse(&st, NULL, 0);
    TAP_OK(rc == 0 && count_have(&st) == 0, "NULL text with length 0");
}

static void test_not_terminated(void)
{
    struct tlsk__tls_stat st;
    /* Exact-size heap buffers: a read past len is a heap overflow under ASan. */
    int rc = parse_exact(&st, fixture_6_1, strlen(fixture_6_1));
    TAP_OK(rc == 0 && count_have(&st) == 12 && st.v[TLSK__STAT_RX_NO_PAD_VIOLATION] == 4,
           "unterminated buffer: full 6.1 file");

    static const char tail_digits[] = "TlsRxSw\t7\nTlsTxSw\t123";
    rc = parse_exact(&st, tail_digits, sizeof(tail_digits) - 1);
    TAP_OK(rc == -EINVAL && st.v[TLSK__STAT_RX_SW] == 7 && !st.have[TLSK__STAT_TX_SW],
           "unterminated buffer ending in digits: stops at len");

    static const char tail_blank[] = "TlsRxSw\t7\nTlsTxSw  \t ";
    rc = parse_exact(&st, tail_blank, sizeof(tail_blank) - 1);
    TAP_IS(rc, -EINVAL, "unterminated buffer ending in blanks: stops at len");

    /* The length limits parsing even when valid text follows in memory. */
    static const char longer[] = "TlsRxSw\t7\nTlsTxSw\t9\n";
    rc = tlsk__tls_stat_parse(&st, longer, 10);
    TAP_OK(rc == 0 && st.have[TLSK__STAT_RX_SW] && !st.have[TLSK__STAT_TX_SW],
           "nothing past len is read");
}

static void test_read(void)
{
    struct tlsk__tls_stat st;
    int rc = tlsk__tls_stat_read(&st);
    int exists = access("/proc/net/tls_stat", R_OK) == 0;

    TAP_IS(rc, 0, "reading /proc/net/tls_stat succeeds (absent counts as success)");
    TAP_IS(st.present, exists, "present matches the file's existence");
    if (st.present) {
        TAP_OK(count_have(&st) >= 10, "a real file has at least the 5.5 counters");
    }
    tap_diag("/proc/net/tls_stat %s", st.present ? "present" : "absent");
}

int main(void)
{
    test_names();
    test_6_1();
    test_6_14();
    test_unknown_lines();
    test_truncated();
    test_malformed();
    test_garbage_and_empty();
    test_not_terminated();
    test_read();
    return tap_done();
}
