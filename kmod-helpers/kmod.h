/*
 * kmod.h - internal interface of kmod-helpers/: what tlsk asks the kernel about kTLS itself
 * (capability probe, /proc/net/tls_stat).  Not installed; nothing here is public API.
 */
#ifndef TLSK_KMOD_H
#define TLSK_KMOD_H

#include <stddef.h>
#include <stdint.h>

#include "tlsk.h"

/*
 * Counters of /proc/net/tls_stat known up to current kernels, in the order the kernel prints
 * them (net/tls/tls_proc.c).  5.5 has the first ten, 6.0 adds DECRYPT_RETRY and
 * RX_NO_PAD_VIOLATION (6.1 has exactly those twelve), 6.14 adds the five rekey counters.
 */
enum {
    TLSK__STAT_CURR_TX_SW = 0,      /* TlsCurrTxSw: software TX sessions installed now */
    TLSK__STAT_CURR_RX_SW,          /* TlsCurrRxSw */
    TLSK__STAT_CURR_TX_DEVICE,      /* TlsCurrTxDevice: NIC-offloaded TX sessions now */
    TLSK__STAT_CURR_RX_DEVICE,      /* TlsCurrRxDevice */
    TLSK__STAT_TX_SW,               /* TlsTxSw: software TX sessions ever installed */
    TLSK__STAT_RX_SW,               /* TlsRxSw */
    TLSK__STAT_TX_DEVICE,           /* TlsTxDevice */
    TLSK__STAT_RX_DEVICE,           /* TlsRxDevice */
    TLSK__STAT_DECRYPT_ERROR,       /* TlsDecryptError: records that failed authentication */
    TLSK__STAT_RX_DEVICE_RESYNC,    /* TlsRxDeviceResync */
    TLSK__STAT_DECRYPT_RETRY,       /* TlsDecryptRetry (6.0+) */
    TLSK__STAT_RX_NO_PAD_VIOLATION, /* TlsRxNoPadViolation (6.0+) */
    TLSK__STAT_RX_REKEY_OK,         /* TlsRxRekeyOk (6.14+) */
    TLSK__STAT_RX_REKEY_ERROR,      /* TlsRxRekeyError (6.14+) */
    TLSK__STAT_TX_REKEY_OK,         /* TlsTxRekeyOk (6.14+) */
    TLSK__STAT_TX_REKEY_ERROR,      /* TlsTxRekeyError (6.14+) */
    TLSK__STAT_RX_REKEY_RECEIVED,   /* TlsRxRekeyReceived (6.14+) */
    TLSK__STAT_COUNT,
};

struct tlsk__tls_stat {
    int present;                          /* the file existed (tls.ko loaded, kernel >= 5.5) */
    uint64_t v[TLSK__STAT_COUNT];         /* value of each counter, 0 when !have[i] */
    unsigned char have[TLSK__STAT_COUNT]; /* 1: the counter was in the text and parsed */
};

/* The kernel's name of counter idx ("TlsCurrTxSw", ...), or NULL when idx is out of range. */
const char *tlsk__tls_stat_name(int idx);

/*
 * tlsk__tls_stat_parse() - parse text in the /proc/net/tls_stat format.
 *
 * The kernel prints one counter per line as "%-32s\t%lu\n": a name, blanks (spaces or tabs),
 * a decimal value.  text need not be NUL-terminated and is never read past len; NULL is
 * allowed with len 0.  st is always overwritten: zeroed, present = 1, then filled.
 *
 * Rules:
 * - Lines whose first word is not a known counter name are ignored whatever follows, so a
 *   newer kernel's extra counters and any garbage line are harmless.  Blank lines are ignored;
 *   leading blanks before a name are tolerated.
 * - For a known name the rest of the line must be blanks, one or more decimal digits, and
 *   optional trailing blanks.  Anything else (no value, sign, a second word, '\r', ...) is
 *   -EINVAL; a value above UINT64_MAX is -ERANGE.  A name that appears twice is -EINVAL and
 *   the first value is kept.
 * - Every line must end in '\n', as the kernel writes it.  A non-empty last line without one
 *   means the text was cut (possibly mid-number), so it is not used and the result is
 *   -EINVAL.  A cut exactly at a line boundary cannot be detected: have[] tells what came.
 *
 * Parsing never stops at a bad line: on -EINVAL or -ERANGE st still holds every counter that
 * parsed (have[i] = 1), and the bad ones have have[i] = 0.  The first error found is returned.
 *
 * Returns 0, -EINVAL or -ERANGE.
 */
int tlsk__tls_stat_parse(struct tlsk__tls_stat *st, const char *text, size_t len)
    __attribute__((warn_unused_result));

/*
 * tlsk__tls_stat_read() - read and parse /proc/net/tls_stat of the caller's network namespace.
 *
 * The file exists only while tls.ko is loaded: when it is absent, st is zeroed (present = 0)
 * and 0 is returned.  Otherwise returns what tlsk__tls_stat_parse() returns (st filled as it
 * describes), or -errno from open()/read(), in which case st is left untouched.
 */
int tlsk__tls_stat_read(struct tlsk__tls_stat *st) __attribute__((warn_unused_result));

/*
 * tlsk__kernel_probe_run() - probe the running kernel now, uncached (tlsk_kernel_probe()
 * caches the result of one call).
 *
 * Works on throwaway loopback TCP connections with all-zero dummy keys; see probe.c for the
 * method.  *caps is always filled.  Returns 0 when the kernel answered every question, or the
 * first -errno that stopped the probe from setting up a connection (e.g. -EMFILE); the
 * combinations it could not try are then reported unsupported, and when not even the first
 * connection could be made, caps->ulp is 0 and caps->ulp_err holds that error.
 *
 * TLSK_PROBE_DISABLE=1 in the environment: report ulp = 0, ulp_err = -ENOENT without creating
 * any socket (tests use it to exercise the userspace fallback on a kTLS kernel).
 *
 * Thread-safe; costs a few loopback connections and a few dozen system calls.
 */
int tlsk__kernel_probe_run(struct tlsk_kernel_caps *caps);

#endif
