/*
 * tls_stat.c - /proc/net/tls_stat reader.
 *
 * The file is small (17 lines on 6.14) and its format has never changed since 5.5, but new
 * counters get appended, so the parser keys on names, never on line numbers.
 */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#include "diag.h"

#define TLS_STAT_PATH "/proc/net/tls_stat"

static const char *const stat_names[TLSK__STAT_COUNT] = {
    [TLSK__STAT_CURR_TX_SW] = "TlsCurrTxSw",
    [TLSK__STAT_CURR_RX_SW] = "TlsCurrRxSw",
    [TLSK__STAT_CURR_TX_DEVICE] = "TlsCurrTxDevice",
    [TLSK__STAT_CURR_RX_DEVICE] = "TlsCurrRxDevice",
    [TLSK__STAT_TX_SW] = "TlsTxSw",
    [TLSK__STAT_RX_SW] = "TlsRxSw",
    [TLSK__STAT_TX_DEVICE] = "TlsTxDevice",
    [TLSK__STAT_RX_DEVICE] = "TlsRxDevice",
    [TLSK__STAT_DECRYPT_ERROR] = "TlsDecryptError",
    [TLSK__STAT_RX_DEVICE_RESYNC] = "TlsRxDeviceResync",
    [TLSK__STAT_DECRYPT_RETRY] = "TlsDecryptRetry",
    [TLSK__STAT_RX_NO_PAD_VIOLATION] = "TlsRxNoPadViolation",
    [TLSK__STAT_RX_REKEY_OK] = "TlsRxRekeyOk",
    [TLSK__STAT_RX_REKEY_ERROR] = "TlsRxRekeyError",
    [TLSK__STAT_TX_REKEY_OK] = "TlsTxRekeyOk",
    [TLSK__STAT_TX_REKEY_ERROR] = "TlsTxRekeyError",
    [TLSK__STAT_RX_REKEY_RECEIVED] = "TlsRxRekeyReceived",
};

const char *tlsk__tls_stat_name(int idx)
{
    return idx >= 0 && idx < TLSK__STAT_COUNT ? stat_names[idx] : NULL;
}

static int is_blank(char c)
{
    /* Only what the kernel's "%-32s\t" emits; '\r' is deliberately not a separator. */
    return c == ' ' || c == '\t';
}

/* The index after the run of blanks (blank 1) or of other characters (blank 0) at line[i]. */
static size_t span(const char *line, size_t i, size_t len, int blank)
{
    while (i < len && is_blank(line[i]) == blank) {
        i++;
    }
    return i;
}

static int stat_lookup(const char *name, size_t len)
{
    for (int i = 0; i < TLSK__STAT_COUNT; i++) {
        if (strlen(stat_names[i]) == len && memcmp(stat_names[i], name, len) == 0) {
            return i;
        }
    }
    return -1;
}

/* One line, without its '\n'.  Unknown names are skipped; see diag.h for the rules. */
static int parse_line(struct tlsk__tls_stat *st, const char *line, size_t len)
{
    size_t name_start = span(line, 0, len, 1);
    if (name_start == len) {
        return 0;
    }
    size_t i = span(line, name_start, len, 0);
    int idx = stat_lookup(line + name_start, i - name_start);
    if (idx < 0) {
        return 0;
    }

    /* The name token ended at a blank or at the end of the line; only the first leaves room
     * for a value. */
    i = span(line, i, len, 1);
    uint64_t v = 0;
    size_t digits = 0;
    while (i < len && line[i] >= '0' && line[i] <= '9') {
        unsigned d = (unsigned)(line[i] - '0');
        if (v > (UINT64_MAX - d) / 10) {
            return -ERANGE;
        }
        v = v * 10 + d;
        digits++;
        i++;
    }
    /* No digits covers a name alone on its line, too. */
    if (digits == 0) {
        return -EINVAL;
    }
    if (span(line, i, len, 1) != len) {
        return -EINVAL;
    }
    if (st->have[idx]) {
        return -EINVAL;
    }
    st->v[idx] = v;
    st->have[idx] = 1;
    return 0;
}

int tlsk__tls_stat_parse(struct tlsk__tls_stat *st, const char *text, size_t len)
{
    int rc = 0;
    size_t pos = 0;

    memset(st, 0, sizeof(*st));
    st->present = 1;
    while (pos < len) {
        const char *line = text + pos;
        const char *nl = memchr(line, '\n', len - pos);
        int lrc;

        if (nl == NULL) {
            /* The kernel ends every line with '\n': an unterminated tail is a cut read, and
             * a number cut short would look valid, so none of it is trusted. */
            lrc = -EINVAL;
            pos = len;
        } else {
            lrc = parse_line(st, line, (size_t)(nl - line));
            pos += (size_t)(nl - line) + 1;
        }
        if (lrc < 0 && rc == 0) {
            rc = lrc;
        }
    }
    return rc;
}

int tlsk__tls_stat_read(struct tlsk__tls_stat *st)
{
    /* 17 lines of at most 32 + 1 + 20 + 1 bytes today; 16 KiB leaves room for hundreds of
     * future counters.  Past that, only complete lines are kept: the known ones come first. */
    char buf[16384];
    size_t len = 0;
    int full = 0;
    int rc;

    int fd = open(TLS_STAT_PATH, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT) {
            memset(st, 0, sizeof(*st));
            return 0;
        }
        return -errno;
    }
    for (;;) {
        ssize_t n = read(fd, buf + len, sizeof(buf) - len);
        if (n < 0) {
            if (errno == EINTR) {
                continue;
            }
            rc = -errno;
            goto out;
        }
        if (n == 0) {
            break;
        }
        len += (size_t)n;
        if (len == sizeof(buf)) {
            full = 1;
            break;
        }
    }
    if (full) {
        while (len > 0 && buf[len - 1] != '\n') {
            len--;
        }
    }
    rc = tlsk__tls_stat_parse(st, buf, len);
out:
    close(fd);
    return rc;
}
