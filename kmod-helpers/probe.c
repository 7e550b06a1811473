/*
 * probe.c - what the running kernel's TLS ULP can do, found out by trying it.
 *
 * Kernel versions say little (distributions backport, modules may be missing, crypto
 * templates may not load), so every capability is tested on throwaway loopback TCP
 * connections with all-zero dummy keys; no real secret is ever involved.
 *
 * Method (docs/KERNEL.md §1.3, §2, §7):
 * - TCP_ULP "tls" needs an established socket, so the probe connects to its own listener on
 *   127.0.0.1 and an ephemeral port.  A failed attach ends the probe: its errno is ulp_err
 *   (ENOENT: no tls module, or one we may not autoload).
 * - A failed TLS_TX/TLS_RX leaves the socket in TLS_BASE, so a socket is reused after
 *   failures; a successful install cannot be undone, so a socket that took keys is closed.
 *   Each (version, cipher) takes one fresh socket and installs TX, then RX on it, which is
 *   how the library itself uses a socket; both ends of a connection serve as probe sockets.
 *   On 6.1 that makes four connections for the eight combinations.
 * - Rekey is a second TLS_TX on the first TLS 1.3 socket that took TX (AES-128-GCM when the
 *   kernel has it): success on 6.14+, EBUSY before.  TLS_RX_EXPECT_NO_PAD is tried on the
 *   first TLS 1.3 socket that took RX, TLS_TX_ZEROCOPY_RO and TLS_TX_MAX_PAYLOAD_LEN on the
 *   first socket that took TX; any error (ENOPROTOOPT on kernels without them) means 0.
 * - Every socket is closed with SO_LINGER 0 (a reset) so the probe leaves no TIME_WAIT
 *   entries behind in processes that start often.
 *
 * TLSK_PROBE_DISABLE=1 in the environment makes the probe report ulp = 0, ulp_err = -ENOENT
 * without creating a socket, as on a kernel without the tls module.  It exists so that tests
 * and users can exercise the userspace fallback on a kTLS kernel.
 */
#ifndef TLSK_PUBLIC
#define TLSK_PUBLIC __attribute__((visibility("default")))
#endif

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/utsname.h>
#include <unistd.h>

#include "kconst.h"
#include "kmod.h"

/* Bounds each wait on the loopback handshake.  Loopback connects complete within the
 * connect() call in practice; this only keeps a sick kernel from hanging the process. */
#define PROBE_WAIT_MS 2000
/* Other local processes may connect to our listener; their connections are dropped. */
#define PROBE_MAX_STRAY_ACCEPTS 8

static const struct {
    int kcipher;
    socklen_t len;
    const char *name;
} probe_ciphers[TLSK_CIPHER_COUNT] = {
    [TLSK_CIPHER_AES_128_GCM] = { TLSK_KCIPHER_AES_GCM_128,
                                  sizeof(struct tls12_crypto_info_aes_gcm_128), "AES-128-GCM" },
    [TLSK_CIPHER_AES_256_GCM] = { TLSK_KCIPHER_AES_GCM_256,
                                  sizeof(struct tls12_crypto_info_aes_gcm_256), "AES-256-GCM" },
    [TLSK_CIPHER_CHACHA20_POLY1305] = { TLSK_KCIPHER_CHACHA20_POLY1305,
                                        sizeof(struct tls12_crypto_info_chacha20_poly1305),
                                        "ChaCha20-Poly1305" },
    [TLSK_CIPHER_AES_128_CCM] = { TLSK_KCIPHER_AES_CCM_128,
                                  sizeof(struct tls12_crypto_info_aes_ccm_128), "AES-128-CCM" },
};

static const int probe_versions[2] = { TLSK_TLS1_2, TLSK_TLS1_3 };

/* Large enough for every struct above; all-zero except the header. */
union probe_crypto {
    struct tls_crypto_info info;
    struct tls12_crypto_info_aes_gcm_128 aes_gcm_128;
    struct tls12_crypto_info_aes_gcm_256 aes_gcm_256;
    struct tls12_crypto_info_chacha20_poly1305 chacha20_poly1305;
    struct tls12_crypto_info_aes_ccm_128 aes_ccm_128;
};

struct probe {
    int lfd;                 /* listener */
    struct sockaddr_in addr; /* where it listens */
    int spare[2];            /* ULP-attached sockets still in TLS_BASE */
    int nspare;
    int did_tx_opts, did_rekey, did_no_pad;
};

static void probe_close(int *fd)
{
    if (*fd < 0) {
        return;
    }
    struct linger lg = { .l_onoff = 1, .l_linger = 0 };
    (void)setsockopt(*fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
    (void)close(*fd);
    *fd = -1;
}

static int probe_wait(int fd, short events)
{
    struct pollfd pfd = { .fd = fd, .events = events };

    for (;;) {
        int n = poll(&pfd, 1, PROBE_WAIT_MS);
        if (n > 0) {
            return 0;
        }
        if (n == 0) {
            return -ETIMEDOUT;
        }
        if (errno != EINTR) {
            return -errno;
        }
    }
}

static int probe_listen(struct probe *p)
{
    socklen_t alen = sizeof(p->addr);

    p->lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (p->lfd < 0) {
        return -errno;
    }
    memset(&p->addr, 0, sizeof(p->addr));
    p->addr.sin_family = AF_INET;
    p->addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    p->addr.sin_port = 0;
    if (bind(p->lfd, (struct sockaddr *)&p->addr, sizeof(p->addr)) < 0 ||
        listen(p->lfd, 4) < 0 || getsockname(p->lfd, (struct sockaddr *)&p->addr, &alen) < 0) {
        int rc = -errno;
        probe_close(&p->lfd);
        return rc;
    }
    return 0;
}

/* Make one established loopback connection; both ends are non-blocking. */
static int probe_connect(struct probe *p, int out[2])
{
    struct sockaddr_in local, peer;
    socklen_t alen = sizeof(local);
    int cfd, afd = -1;
    int rc = 0;

    cfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (cfd < 0) {
        return -errno;
    }
    if (connect(cfd, (struct sockaddr *)&p->addr, sizeof(p->addr)) < 0) {
        if (errno != EINPROGRESS) {
            rc = -errno;
            goto out;
        }
        rc = probe_wait(cfd, POLLOUT);
        if (rc < 0) {
            goto out;
        }
        int soerr = 0;
        socklen_t elen = sizeof(soerr);
        if (getsockopt(cfd, SOL_SOCKET, SO_ERROR, &soerr, &elen) < 0) {
            rc = -errno;
            goto out;
        }
        if (soerr != 0) {
            rc = -soerr;
            goto out;
        }
    }
    if (getsockname(cfd, (struct sockaddr *)&local, &alen) < 0) {
        rc = -errno;
        goto out;
    }
    for (int tries = 0; tries < PROBE_MAX_STRAY_ACCEPTS; tries++) {
        rc = probe_wait(p->lfd, POLLIN);
        if (rc < 0) {
            goto out;
        }
        alen = sizeof(peer);
        afd = accept4(p->lfd, (struct sockaddr *)&peer, &alen, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (afd < 0) {
            if (errno == EAGAIN || errno == EINTR || errno == ECONNABORTED) {
                continue;
            }
            rc = -errno;
            goto out;
        }
        if (peer.sin_port == local.sin_port && peer.sin_addr.s_addr == local.sin_addr.s_addr) {
            out[0] = cfd;
            out[1] = afd;
            return 0;
        }
        probe_close(&afd);
    }
    rc = -ETIMEDOUT;
out:
    probe_close(&afd);
    probe_close(&cfd);
    return rc;
}

static int probe_attach(int fd)
{
    if (setsockopt(fd, TLSK_SOL_TCP, TLSK_TCP_ULP, "tls", sizeof("tls")) < 0) {
        return -errno;
    }
    return 0;
}

/* A ULP-attached socket in TLS_BASE: a spare one, else one end of a new connection. */
static int probe_take(struct probe *p, int *fd)
{
    int pair[2] = { -1, -1 };
    int rc;

    if (p->nspare > 0) {
        *fd = p->spare[--p->nspare];
        return 0;
    }
    rc = probe_connect(p, pair);
    if (rc < 0) {
        return rc;
    }
    rc = probe_attach(pair[0]);
    if (rc == 0) {
        rc = probe_attach(pair[1]);
    }
    if (rc < 0) {
        probe_close(&pair[0]);
        probe_close(&pair[1]);
        return rc;
    }
    p->spare[p->nspare++] = pair[1];
    *fd = pair[0];
    return 0;
}

/* A socket comes back only while still in TLS_BASE, right after it was taken, so the spares
 * never outnumber the two ends of one connection. */
static void probe_give_back(struct probe *p, int fd)
{
    p->spare[p->nspare++] = fd;
}

static int probe_setopt(int fd, int opt, const void *val, socklen_t len)
{
    return setsockopt(fd, TLSK_SOL_TLS, opt, val, len) == 0;
}

static void probe_combo(struct probe *p, struct tlsk_kernel_caps *caps, int vi, int ci, int fd)
{
    union probe_crypto key;
    socklen_t len = probe_ciphers[ci].len;

    memset(&key, 0, sizeof(key));
    key.info.version = (uint16_t)probe_versions[vi];
    key.info.cipher_type = (uint16_t)probe_ciphers[ci].kcipher;

    int tx = probe_setopt(fd, TLSK_TLS_TX, &key, len);
    int rx = probe_setopt(fd, TLSK_TLS_RX, &key, len);
    caps->cipher[vi][ci][0] = (unsigned char)tx;
    caps->cipher[vi][ci][1] = (unsigned char)rx;
    if (!tx && !rx) {
        probe_give_back(p, fd);
        return;
    }

    if (tx && !p->did_tx_opts) {
        unsigned int one = 1;
        uint16_t max_payload = TLSK_MAX_PLAINTEXT; /* the default; a u16 per the uapi */
        caps->tx_zerocopy = probe_setopt(fd, TLSK_TLS_TX_ZEROCOPY_RO, &one, sizeof(one));
        caps->tx_max_payload =
            probe_setopt(fd, TLSK_TLS_TX_MAX_PAYLOAD_LEN, &max_payload, sizeof(max_payload));
        p->did_tx_opts = 1;
    }
    if (probe_versions[vi] == TLSK_TLS1_3 && tx && !p->did_rekey) {
        /* Same dummy key again: on 6.14+ a legal (if pointless) TX key update. */
        caps->rekey = probe_setopt(fd, TLSK_TLS_TX, &key, len);
        p->did_rekey = 1;
    }
    if (probe_versions[vi] == TLSK_TLS1_3 && rx && !p->did_no_pad) {
        uint32_t one = 1;
        caps->rx_no_pad = probe_setopt(fd, TLSK_TLS_RX_EXPECT_NO_PAD, &one, sizeof(one));
        p->did_no_pad = 1;
    }
    probe_close(&fd);
}

static int probe_disabled(void)
{
    const char *v = getenv("TLSK_PROBE_DISABLE");
    return v != NULL && strcmp(v, "1") == 0;
}

int tlsk__kernel_probe_run(struct tlsk_kernel_caps *caps)
{
    struct tlsk_kernel_caps c;
    struct probe p = { .lfd = -1, .spare = { -1, -1 } };
    struct utsname uts;
    int pair[2] = { -1, -1 };
    int fd;
    int rc;

    memset(&c, 0, sizeof(c));
    if (uname(&uts) == 0) {
        snprintf(c.release, sizeof(c.release), "%s", uts.release);
    }
    if (probe_disabled()) {
        c.ulp_err = -ENOENT;
        rc = 0;
        goto out;
    }

    rc = probe_listen(&p);
    if (rc == 0) {
        rc = probe_connect(&p, pair);
    }
    if (rc < 0) {
        c.ulp_err = rc;
        goto out;
    }
    rc = probe_attach(pair[0]);
    if (rc < 0) {
        /* A refused attach is the kernel's answer, not a failure of the probe. */
        c.ulp_err = rc;
        rc = 0;
        probe_close(&pair[0]);
        probe_close(&pair[1]);
        goto out;
    }
    c.ulp = 1;
    probe_give_back(&p, pair[0]);
    if (probe_attach(pair[1]) == 0) {
        probe_give_back(&p, pair[1]);
    } else {
        probe_close(&pair[1]);
    }

    for (int vi = 0; vi < 2; vi++) {
        for (int ci = 0; ci < TLSK_CIPHER_COUNT; ci++) {
            rc = probe_take(&p, &fd);
            if (rc < 0) {
                /* Out of descriptors or similar: what is left stays reported unsupported,
                 * the safe answer, since the caller then keeps those in userspace. */
                goto out;
            }
            probe_combo(&p, &c, vi, ci, fd);
        }
    }
out:
    while (p.nspare > 0) {
        probe_close(&p.spare[--p.nspare]);
    }
    probe_close(&p.lfd);
    *caps = c;
    return rc;
}

int tlsk__ulp_try_attach(void)
{
    struct probe p = { .lfd = -1, .spare = { -1, -1 } };
    int pair[2] = { -1, -1 };
    int rc = probe_listen(&p);

    if (rc == 0) {
        rc = probe_connect(&p, pair);
    }
    if (rc == 0) {
        rc = probe_attach(pair[0]);
    }
    probe_close(&pair[0]);
    probe_close(&pair[1]);
    probe_close(&p.lfd);
    return rc;
}

/*
 * The cache.  Each result is written once into a slot of its own and then published, so a
 * pointer returned by tlsk_kernel_probe() stays valid and unchanged for the life of the
 * process, also across tlsk__kernel_probe_refresh().  A refresh only ever happens after the
 * tls module was loaded (tlsk_kernel_load_tls()), and only while the published answer is
 * "no ULP", so a handful of slots is plenty; when they run out, the last answer stays.
 * The mutex serializes probes (concurrent first callers share one); readers of an already
 * published answer take the acquire load only.
 */
#define PROBE_SLOTS 4
static pthread_mutex_t probe_lock = PTHREAD_MUTEX_INITIALIZER;
static struct tlsk_kernel_caps probe_slot[PROBE_SLOTS];
static int probe_used; /* slots written so far; under probe_lock */
static _Atomic(const struct tlsk_kernel_caps *) probe_current;

/* Called with probe_lock held. */
static const struct tlsk_kernel_caps *probe_publish_new(void)
{
    struct tlsk_kernel_caps *slot = &probe_slot[probe_used++];

    (void)tlsk__kernel_probe_run(slot);
    atomic_store_explicit(&probe_current, slot, memory_order_release);
    return slot;
}

TLSK_PUBLIC const struct tlsk_kernel_caps *tlsk_kernel_probe(void)
{
    const struct tlsk_kernel_caps *c = atomic_load_explicit(&probe_current, memory_order_acquire);

    if (c != NULL) {
        return c;
    }
    (void)pthread_mutex_lock(&probe_lock);
    c = atomic_load_explicit(&probe_current, memory_order_relaxed);
    if (c == NULL) {
        c = probe_publish_new();
    }
    (void)pthread_mutex_unlock(&probe_lock);
    return c;
}

const struct tlsk_kernel_caps *tlsk__kernel_probe_refresh(void)
{
    const struct tlsk_kernel_caps *c;

    (void)pthread_mutex_lock(&probe_lock);
    c = atomic_load_explicit(&probe_current, memory_order_relaxed);
    if (c == NULL || (!c->ulp && probe_used < PROBE_SLOTS)) {
        c = probe_publish_new();
    }
    (void)pthread_mutex_unlock(&probe_lock);
    return c;
}

TLSK_PUBLIC const char *tlsk_kernel_cipher_name(int cipher)
{
    if (cipher < 0 || cipher >= TLSK_CIPHER_COUNT) {
        return "unknown";
    }
    return probe_ciphers[cipher].name;
}
