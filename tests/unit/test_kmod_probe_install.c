/*
 * test_kmod_probe_install.c - the probe's cipher table matches what an actual install accepts.
 *
 * For each TLS version x cipher x direction, on a fresh loopback connection: TCP_ULP "tls",
 * then one setsockopt(SOL_TLS, TLS_TX or TLS_RX) with an all-zero dummy key of the cipher's
 * uapi struct.  The install must succeed exactly when tlsk_kernel_probe() says the
 * combination is supported, and a successful one must read back (getsockopt) with the same
 * version and cipher.
 *
 * Without kTLS (the usual CI host) the probe must say nothing is supported and every TCP_ULP
 * must fail with ENOENT.  With kTLS, /proc/net/tls_stat's TlsTxSw and TlsRxSw must move by
 * exactly the number of TX and RX installs this test made (the probe runs before the first
 * reading; tests run one at a time inside the guest), and TlsCurrTxSw/TlsCurrRxSw must be
 * back where they were once the sockets are closed.  With TLSK_EXPECT_KTLS=1 the ULP must
 * attach.
 */
#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "harness.h"
#include "kconst.h"
#include "diag.h"
#include "kmod.h"
#include "tap.h"

static const char *const ver_name[2] = { "TLS1.2", "TLS1.3" };
static const char *const dir_name[2] = { "TX", "RX" };
static const uint16_t versions[2] = { TLS_1_2_VERSION, TLS_1_3_VERSION };

static const struct {
    uint16_t type;
    socklen_t len;
} kciphers[TLSK_CIPHER_COUNT] = {
    [TLSK_CIPHER_AES_128_GCM] = { TLS_CIPHER_AES_GCM_128,
                                  sizeof(struct tls12_crypto_info_aes_gcm_128) },
    [TLSK_CIPHER_AES_256_GCM] = { TLS_CIPHER_AES_GCM_256,
                                  sizeof(struct tls12_crypto_info_aes_gcm_256) },
    [TLSK_CIPHER_CHACHA20_POLY1305] = { TLS_CIPHER_CHACHA20_POLY1305,
                                        sizeof(struct tls12_crypto_info_chacha20_poly1305) },
    [TLSK_CIPHER_AES_128_CCM] = { TLS_CIPHER_AES_CCM_128,
                                  sizeof(struct tls12_crypto_info_aes_ccm_128) },
};

union dummy_key {
    struct tls_crypto_info info;
    struct tls12_crypto_info_aes_gcm_128 gcm128;
    struct tls12_crypto_info_aes_gcm_256 gcm256;
    struct tls12_crypto_info_chacha20_poly1305 chacha;
    struct tls12_crypto_info_aes_ccm_128 ccm128;
};

struct outcome {
    int ulp_err;   /* errno of TCP_ULP, 0 when it attached */
    int inst_err;  /* errno of TLS_TX/TLS_RX, 0 when it took the key */
    int readback;  /* 1: getsockopt showed the same version and cipher */
    int setup_err; /* the loopback pair could not be made */
};

static struct outcome install(int vi, int ci, int dir)
{
    struct outcome r = { 0 };
    union dummy_key key;
    int c = -1, s = -1;

    int rc = h_tcp_pair(&c, &s);
    if (rc < 0) {
        r.setup_err = -rc;
        return r;
    }
    if (setsockopt(c, TLSK_SOL_TCP, TLSK_TCP_ULP, "tls", sizeof("tls")) < 0) {
        r.ulp_err = errno;
        goto out;
    }
    memset(&key, 0, sizeof(key));
    key.info.version = versions[vi];
    key.info.cipher_type = kciphers[ci].type;
    if (setsockopt(c, TLSK_SOL_TLS, dir ? TLSK_TLS_RX : TLSK_TLS_TX, &key, kciphers[ci].len) <
        0) {
        r.inst_err = errno;
        goto out;
    }
    int v = 0, k = 0;
    r.readback = h_kernel_has(c, dir == 0, &v, &k) == 1 && v == versions[vi] &&
                 k == kciphers[ci].type;
out:
    close(c);
    close(s);
    return r;
}

static long long stat_of(const struct tlsk__tls_stat *st, int idx)
{
    return st->have[idx] ? (long long)st->v[idx] : -1;
}

int main(void)
{
    const struct tlsk_kernel_caps *caps = tlsk_kernel_probe();
    struct tlsk__tls_stat st0, st1;
    int installs[2] = { 0, 0 };
    int mismatches = 0, readback_bad = 0, setup_bad = 0, ulp_enoent = 0, ulp_ok = 0;

    tap_diag("kernel %s: probe ulp %d (%s)", caps->release, caps->ulp,
             tlsk_err_name(caps->ulp_err));
    if (h_expect_ktls()) {
        TAP_IS(caps->ulp, 1, "TLSK_EXPECT_KTLS=1: the probe finds the tls ULP");
    }
    /* After the probe, whose own installs must not be counted. */
    int st0_rc = tlsk__tls_stat_read(&st0);

    for (int vi = 0; vi < 2; vi++) {
        for (int ci = 0; ci < TLSK_CIPHER_COUNT; ci++) {
            for (int d = 0; d < 2; d++) {
                struct outcome o = install(vi, ci, d);
                int said = caps->cipher[vi][ci][d];
                int took = !o.setup_err && !o.ulp_err && !o.inst_err;

                setup_bad += o.setup_err != 0;
                ulp_enoent += o.ulp_err == ENOENT;
                ulp_ok += !o.setup_err && !o.ulp_err;
                installs[d] += took;
                readback_bad += took && !o.readback;
                if (!TAP_OK(took == said, "%s %-17s %s: install %s, probe says %s", ver_name[vi],
                            tlsk_kernel_cipher_name(ci), dir_name[d],
                            took ? "succeeds" : "fails", said ? "supported" : "unsupported")) {
                    mismatches++;
                    tap_diag("  setup %s, TCP_ULP %s, install %s", strerror(o.setup_err),
                             strerror(o.ulp_err), strerror(o.inst_err));
                }
            }
        }
    }
    int st1_rc = tlsk__tls_stat_read(&st1);
    const int total = 2 * TLSK_CIPHER_COUNT * 2;

    TAP_IS(setup_bad, 0, "every loopback pair was made");
    TAP_IS(readback_bad, 0, "every successful install reads back with its version and cipher");
    if (!caps->ulp) {
        int any = 0;
        for (int vi = 0; vi < 2; vi++) {
            for (int ci = 0; ci < TLSK_CIPHER_COUNT; ci++) {
                any += caps->cipher[vi][ci][0] + caps->cipher[vi][ci][1];
            }
        }
        TAP_IS(any, 0, "no ULP: the probe says no combination is supported");
        TAP_IS(ulp_enoent, total, "no ULP: TCP_ULP \"tls\" failed with ENOENT on all %d "
                                  "connections", total);
        TAP_IS(caps->ulp_err, -ENOENT, "no ULP: the probe's ulp_err is -ENOENT too");
        TAP_OK(st0_rc == 0 && st1_rc == 0 && !st0.present && !st1.present,
               "no ULP: /proc/net/tls_stat is absent");
    } else {
        TAP_IS(ulp_ok, total, "TCP_ULP \"tls\" attached on all %d connections", total);
        tap_diag("installs: TX %d, RX %d", installs[0], installs[1]);
        TAP_OK(st0_rc == 0 && st1_rc == 0 && st0.present && st1.present,
               "/proc/net/tls_stat reads cleanly before and after");
        long long dtx = stat_of(&st1, TLSK__STAT_TX_SW) - stat_of(&st0, TLSK__STAT_TX_SW);
        long long drx = stat_of(&st1, TLSK__STAT_RX_SW) - stat_of(&st0, TLSK__STAT_RX_SW);
        if (h_expect_ktls()) {
            /* Alone in the guest: nothing else installs keys meanwhile. */
            TAP_IS(dtx, installs[0], "TlsTxSw moved by exactly the %d TX installs", installs[0]);
            TAP_IS(drx, installs[1], "TlsRxSw moved by exactly the %d RX installs", installs[1]);
            TAP_IS(stat_of(&st1, TLSK__STAT_CURR_TX_SW), stat_of(&st0, TLSK__STAT_CURR_TX_SW),
                   "TlsCurrTxSw is back where it was once the sockets are closed");
            TAP_IS(stat_of(&st1, TLSK__STAT_CURR_RX_SW), stat_of(&st0, TLSK__STAT_CURR_RX_SW),
                   "TlsCurrRxSw is back where it was");
            TAP_OK(installs[0] > 0 && installs[1] > 0, "some installs succeeded both ways");
        } else {
            /* A shared host: other kTLS users may add to the counters, never take away. */
            TAP_OK(dtx >= installs[0] && drx >= installs[1],
                   "TlsTxSw/TlsRxSw moved by at least our installs (%lld >= %d, %lld >= %d)",
                   dtx, installs[0], drx, installs[1]);
        }
    }
    TAP_IS(mismatches, 0, "the probe's table matches the kernel on all %d combinations", total);
    return tap_done();
}
