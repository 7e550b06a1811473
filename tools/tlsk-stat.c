/*
 * tlsk-stat - what the kernel's TLS (kTLS) can do and is doing right now.
 *
 *   tlsk-stat [--json] [--watch N]
 *   tlsk-stat [--json] --load
 *
 * Prints the capability probe (tlsk_kernel_probe()), the counters of /proc/net/tls_stat, the
 * TCP sockets that have the tls ULP (inet_diag, like `ss -tie`) and the NIC TLS offload
 * features of each network interface (ethtool netlink, like `ethtool -k IFACE`), as a table
 * or as one JSON document.  --watch N prints instead, N times, the change of every counter
 * over one second (with --json: one JSON object per line).  --load instead loads the tls
 * module if this process may (tlsk_kernel_load_tls()) and prints the outcome.
 *
 * Exit status: 0 when kTLS is usable (TCP_ULP "tls" attaches; with --load: it is loaded
 * afterwards), 1 when not, with one line on stderr saying why; 2 for a usage error.
 *
 * Counters and sockets are read before the probe runs: the probe installs dummy keys on
 * throwaway sockets, which would show up in the counters.  Socket TLS details need
 * CAP_NET_ADMIN (see kmod-helpers/diag/diag.h, struct tlsk__tls_sock).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <linux/tls.h>

#include "diag.h"
#include "tlsk.h"

#define CAP_NET_ADMIN_BIT 12

static const char *const ver_label[2] = { "TLS1.2", "TLS1.3" };

struct report {
    const struct tlsk_kernel_caps *caps;
    struct tlsk__tls_stat st;
    int st_err;
    struct tlsk__tls_sock *socks;
    size_t nsocks;
    int socks_err;
    int net_admin; /* 1 yes, 0 no, -1 unknown */
    struct tlsk__eth_iface *ifs;
    size_t nifs;
    int ifs_err;
    char reason[256];
};

static void usage(FILE *f)
{
    fputs("usage: tlsk-stat [--json] [--watch N]\n"
          "       tlsk-stat [--json] --load\n"
          "Shows what the kernel's TLS (kTLS) supports (capability probe), its counters\n"
          "(/proc/net/tls_stat), the TCP sockets with the tls ULP (inet_diag) and the NIC\n"
          "TLS offload features of each interface (ethtool netlink).\n"
          "  --json     one JSON document instead of tables\n"
          "  --watch N  print the change of each counter per second, N times\n"
          "             (with --json: one JSON object per line)\n"
          "  --load     load the tls module (needs CAP_SYS_MODULE or CAP_NET_ADMIN)\n"
          "             and print what happened\n"
          "  --help     this text\n"
          "Socket TLS details need CAP_NET_ADMIN.  Exit status 0 when kTLS is usable,\n"
          "1 when not (the reason goes to stderr), 2 for a usage error.\n",
          f);
}

/* ---------------------------------------------------------------------------------------- */
/* Names                                                                                    */

static const char *version_name(uint16_t v, char *tmp, size_t len)
{
    if (v == TLS_1_2_VERSION) {
        return "TLS1.2";
    }
    if (v == TLS_1_3_VERSION) {
        return "TLS1.3";
    }
    if (v == 0) {
        return "-";
    }
    snprintf(tmp, len, "0x%04x", v);
    return tmp;
}

static const char *cipher_name(uint16_t c, char *tmp, size_t len)
{
    switch (c) {
    case 0:
        return "-";
    case TLS_CIPHER_AES_GCM_128:
        return "AES-128-GCM";
    case TLS_CIPHER_AES_GCM_256:
        return "AES-256-GCM";
    case TLS_CIPHER_AES_CCM_128:
        return "AES-128-CCM";
    case TLS_CIPHER_CHACHA20_POLY1305:
        return "ChaCha20-Poly1305";
#ifdef TLS_CIPHER_SM4_GCM
    case TLS_CIPHER_SM4_GCM:
        return "SM4-GCM";
#endif
#ifdef TLS_CIPHER_SM4_CCM
    case TLS_CIPHER_SM4_CCM:
        return "SM4-CCM";
#endif
#ifdef TLS_CIPHER_ARIA_GCM_128
    case TLS_CIPHER_ARIA_GCM_128:
        return "ARIA-128-GCM";
#endif
#ifdef TLS_CIPHER_ARIA_GCM_256
    case TLS_CIPHER_ARIA_GCM_256:
        return "ARIA-256-GCM";
#endif
    default:
        snprintf(tmp, len, "cipher-%u", c);
        return tmp;
    }
}

/* As ss(8) prints them. */
static const char *conf_name(uint16_t c)
{
    switch (c) {
    case 0:
        return "-";
    case TLS_CONF_BASE:
        return "none";
    case TLS_CONF_SW:
        return "sw";
    case TLS_CONF_HW:
        return "hw";
    case TLS_CONF_HW_RECORD:
        return "hw-record";
    default:
        return "?";
    }
}

/* ---------------------------------------------------------------------------------------- */
/* Gathering                                                                                */

static int has_net_admin(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    int r = -1;

    if (f == NULL) {
        return -1;
    }
    while (fgets(line, sizeof(line), f) != NULL) {
        unsigned long long cap;
        if (sscanf(line, "CapEff: %llx", &cap) == 1) {
            r = (int)((cap >> CAP_NET_ADMIN_BIT) & 1);
            break;
        }
    }
    fclose(f);
    return r;
}

static void gather_sockets(struct report *r)
{
    size_t cap = 256;

    /* Retry when sockets appeared between two dumps; three rounds are plenty. */
    for (int round = 0; round < 3; round++) {
        struct tlsk__tls_sock *a = calloc(cap, sizeof(*a));
        size_t n = 0;
        int rc;

        if (a == NULL) {
            r->socks_err = -ENOMEM;
            return;
        }
        rc = tlsk__diag_dump(a, cap, &n);
        if (rc < 0) {
            free(a);
            r->socks_err = rc;
            return;
        }
        if (n <= cap) {
            r->socks = a;
            r->nsocks = n;
            return;
        }
        free(a);
        cap = n + 64;
    }
    r->socks_err = -EAGAIN;
}

static void gather_interfaces(struct report *r)
{
    size_t cap = 64;

    for (int round = 0; round < 3; round++) {
        struct tlsk__eth_iface *a = calloc(cap, sizeof(*a));
        size_t n = 0;
        int rc;

        if (a == NULL) {
            r->ifs_err = -ENOMEM;
            return;
        }
        rc = tlsk__ethtool_dump(a, cap, &n);
        if (rc < 0) {
            free(a);
            r->ifs_err = rc;
            return;
        }
        if (n <= cap) {
            r->ifs = a;
            r->nifs = n;
            return;
        }
        free(a);
        cap = n + 16;
    }
    r->ifs_err = -EAGAIN;
}

/* The one-line reason why kTLS is not usable ("" when it is). */
static void make_reason(const struct tlsk_kernel_caps *c, char *buf, size_t len)
{
    const char *hint = "";
    const char *dis = getenv("TLSK_PROBE_DISABLE");

    buf[0] = '\0';
    if (c->ulp) {
        return;
    }
    if (dis != NULL && strcmp(dis, "1") == 0) {
        hint = " (TLSK_PROBE_DISABLE=1)";
    } else if (c->ulp_err == -ENOENT) {
        hint = " (modprobe tls)";
    }
    snprintf(buf, len, "TCP_ULP \"tls\" failed: %s%s",
             c->ulp_err < 0 ? strerror(-c->ulp_err) : "unknown error", hint);
}

static void gather(struct report *r)
{
    memset(r, 0, sizeof(*r));
    r->st_err = tlsk__tls_stat_read(&r->st);
    gather_sockets(r);
    gather_interfaces(r);
    r->net_admin = has_net_admin();
    r->caps = tlsk_kernel_probe();
    make_reason(r->caps, r->reason, sizeof(r->reason));
}

/* ---------------------------------------------------------------------------------------- */
/* Table                                                                                    */

static const char *yn(int v)
{
    return v ? "yes" : "no";
}

static void print_table(const struct report *r)
{
    const struct tlsk_kernel_caps *c = r->caps;
    char t1[32], t2[32];

    printf("kernel          %s\n", c->release);
    if (c->ulp) {
        printf("kTLS            usable (TCP_ULP \"tls\" attaches)\n");
    } else {
        printf("kTLS            not usable: %s\n", r->reason);
    }
    printf("\n%-20s %-9s %s\n", "", ver_label[0], ver_label[1]);
    printf("%-20s %-4s%-5s %-4s%s\n", "cipher", "TX", "RX", "TX", "RX");
    for (int ci = 0; ci < TLSK_CIPHER_COUNT; ci++) {
        printf("%-20s %-4s%-5s %-4s%s\n", tlsk_kernel_cipher_name(ci), yn(c->cipher[0][ci][0]),
               yn(c->cipher[0][ci][1]), yn(c->cipher[1][ci][0]), yn(c->cipher[1][ci][1]));
    }
    printf("rekey %s  rx_no_pad %s  tx_zerocopy %s  tx_max_payload %s\n", yn(c->rekey),
           yn(c->rx_no_pad), yn(c->tx_zerocopy), yn(c->tx_max_payload));

    printf("\ncounters (/proc/net/tls_stat)\n");
    if (r->st_err < 0 && !r->st.present) {
        printf("  unreadable: %s\n", strerror(-r->st_err));
    } else if (!r->st.present) {
        printf("  absent (the tls module is not loaded)\n");
    } else {
        if (r->st_err < 0) {
            printf("  (partly unparsable: %s)\n", strerror(-r->st_err));
        }
        for (int i = 0; i < TLSK__STAT_COUNT; i++) {
            if (r->st.have[i]) {
                printf("  %-22s %" PRIu64 "\n", tlsk__tls_stat_name(i), r->st.v[i]);
            }
        }
    }

    printf("\nsockets with the tls ULP (inet_diag)\n");
    if (r->socks_err < 0) {
        printf("  unavailable: %s\n", strerror(-r->socks_err));
    } else if (r->nsocks == 0) {
        printf("  none\n");
    } else {
        int any_noinfo = 0;

        printf("  %-28s %-28s %-9s %-7s %-18s %-5s %-5s %s\n", "LOCAL", "REMOTE", "INODE",
               "VERSION", "CIPHER", "TX", "RX", "FLAGS");
        for (size_t i = 0; i < r->nsocks; i++) {
            const struct tlsk__tls_sock *s = &r->socks[i];
            char la[80], ra[80];
            const char *fmt = s->family == AF_INET6 ? "[%s]:%u" : "%s:%u";

            snprintf(la, sizeof(la), fmt, s->local, s->lport);
            snprintf(ra, sizeof(ra), fmt, s->remote, s->rport);
            if (!s->has_info) {
                any_noinfo = 1;
                printf("  %-28s %-28s %-9" PRIu64 " %-7s %-18s %-5s %-5s %s\n", la, ra, s->inode,
                       "?", "?", "?", "?", "?");
                continue;
            }
            const char *flags = s->zc_ro_tx && s->rx_no_pad ? "zc_ro_tx,rx_no_pad"
                                : s->zc_ro_tx                 ? "zc_ro_tx"
                                : s->rx_no_pad                ? "rx_no_pad"
                                                              : "-";
            printf("  %-28s %-28s %-9" PRIu64 " %-7s %-18s %-5s %-5s %s\n", la, ra, s->inode,
                   version_name(s->version, t1, sizeof(t1)), cipher_name(s->cipher, t2, sizeof(t2)),
                   conf_name(s->txconf), conf_name(s->rxconf), flags);
        }
        if (any_noinfo) {
            printf("  (?: the kernel shows TLS details only to CAP_NET_ADMIN)\n");
        }
    }
    if (r->net_admin == 0) {
        printf("  note: without CAP_NET_ADMIN most kernels hide the ULP of every socket, so this"
               " list may be empty\n");
    }

    printf("\nNIC TLS offload per interface (ethtool features; on / off / no = not available)\n");
    if (r->ifs_err == -EOPNOTSUPP) {
        printf("  unavailable: the kernel has no ethtool netlink interface\n");
    } else if (r->ifs_err < 0) {
        printf("  unavailable: %s\n", strerror(-r->ifs_err));
    } else if (r->nifs == 0) {
        printf("  no interfaces\n");
    } else {
        printf("  %-16s", "IFACE");
        for (int f = 0; f < TLSK__ETH_TLS_COUNT; f++) {
            printf(" %-*s", f + 1 < TLSK__ETH_TLS_COUNT ? 18 : 0, tlsk__ethtool_feature_name(f));
        }
        printf("\n");
        for (size_t i = 0; i < r->nifs; i++) {
            const struct tlsk__eth_iface *e = &r->ifs[i];

            printf("  %-16s", e->name);
            for (int f = 0; f < TLSK__ETH_TLS_COUNT; f++) {
                printf(" %-*s", f + 1 < TLSK__ETH_TLS_COUNT ? 18 : 0,
                       e->active[f] ? "on" : e->hw[f] ? "off" : "no");
            }
            printf("\n");
        }
    }
}

/* ---------------------------------------------------------------------------------------- */
/* JSON                                                                                     */

static void json_str(const char *s)
{
    putchar('"');
    for (const unsigned char *p = (const unsigned char *)s; *p != '\0'; p++) {
        if (*p == '"' || *p == '\\') {
            printf("\\%c", *p);
        } else if (*p < 0x20 || *p == 0x7f) {
            printf("\\u%04x", *p);
        } else {
            putchar(*p);
        }
    }
    putchar('"');
}

static const char *jb(int v)
{
    return v ? "true" : "false";
}

static void json_err(int err)
{
    if (err < 0) {
        json_str(tlsk_err_name(err));
    } else {
        fputs("null", stdout);
    }
}

static void print_json(const struct report *r)
{
    const struct tlsk_kernel_caps *c = r->caps;
    char tmp[32];

    printf("{\n  \"usable\": %s,\n  \"reason\": ", jb(c->ulp));
    if (c->ulp) {
        fputs("null", stdout);
    } else {
        json_str(r->reason);
    }
    printf(",\n  \"kernel\": {\n    \"release\": ");
    json_str(c->release);
    printf(",\n    \"ulp\": %s,\n    \"ulp_error\": ", jb(c->ulp));
    json_err(c->ulp_err);
    printf(",\n    \"ciphers\": {");
    for (int v = 0; v < 2; v++) {
        printf("%s\n      \"%s\": {", v ? "," : "", ver_label[v]);
        for (int ci = 0; ci < TLSK_CIPHER_COUNT; ci++) {
            printf("%s\n        ", ci ? "," : "");
            json_str(tlsk_kernel_cipher_name(ci));
            printf(": {\"tx\": %s, \"rx\": %s}", jb(c->cipher[v][ci][0]), jb(c->cipher[v][ci][1]));
        }
        printf("\n      }");
    }
    printf("\n    },\n    \"rekey\": %s,\n    \"rx_no_pad\": %s,\n    \"tx_zerocopy\": %s,\n"
           "    \"tx_max_payload\": %s\n  },\n",
           jb(c->rekey), jb(c->rx_no_pad), jb(c->tx_zerocopy), jb(c->tx_max_payload));

    printf("  \"counters\": {\n    \"present\": %s,\n    \"error\": ", jb(r->st.present));
    json_err(r->st_err);
    printf(",\n    \"values\": {");
    int first = 1;
    for (int i = 0; i < TLSK__STAT_COUNT; i++) {
        if (r->st.have[i]) {
            printf("%s\n      \"%s\": %" PRIu64, first ? "" : ",", tlsk__tls_stat_name(i),
                   r->st.v[i]);
            first = 0;
        }
    }
    printf("%s}\n  },\n", first ? "" : "\n    ");

    printf("  \"sockets\": {\n    \"error\": ");
    json_err(r->socks_err);
    printf(",\n    \"cap_net_admin\": %s,\n    \"count\": %zu,\n    \"list\": [",
           r->net_admin < 0 ? "null" : jb(r->net_admin), r->nsocks);
    for (size_t i = 0; i < r->nsocks; i++) {
        const struct tlsk__tls_sock *s = &r->socks[i];

        printf("%s\n      {\"family\": \"%s\", \"local\": ", i ? "," : "",
               s->family == AF_INET6 ? "inet6" : "inet");
        json_str(s->local);
        printf(", \"lport\": %u, \"remote\": ", s->lport);
        json_str(s->remote);
        printf(", \"rport\": %u, \"inode\": %" PRIu64 ", \"tls\": ", s->rport, s->inode);
        if (!s->has_info) {
            fputs("null}", stdout);
            continue;
        }
        printf("{\"version\": ");
        json_str(version_name(s->version, tmp, sizeof(tmp)));
        printf(", \"version_raw\": %u, \"cipher\": ", s->version);
        json_str(cipher_name(s->cipher, tmp, sizeof(tmp)));
        printf(", \"cipher_raw\": %u, \"txconf\": \"%s\", \"rxconf\": \"%s\", \"txconf_raw\": %u, "
               "\"rxconf_raw\": %u, \"zc_ro_tx\": %s, \"rx_no_pad\": %s}}",
               s->cipher, conf_name(s->txconf), conf_name(s->rxconf), s->txconf, s->rxconf,
               jb(s->zc_ro_tx), jb(s->rx_no_pad));
    }
    printf("%s]\n  },\n", r->nsocks ? "\n    " : "");

    printf("  \"interfaces\": {\n    \"error\": ");
    json_err(r->ifs_err);
    printf(",\n    \"count\": %zu,\n    \"list\": [", r->nifs);
    for (size_t i = 0; i < r->nifs; i++) {
        const struct tlsk__eth_iface *e = &r->ifs[i];

        printf("%s\n      {\"name\": ", i ? "," : "");
        json_str(e->name);
        printf(", \"ifindex\": %" PRIu32, e->ifindex);
        for (int f = 0; f < TLSK__ETH_TLS_COUNT; f++) {
            printf(", \"%s\": {\"available\": %s, \"on\": %s}", tlsk__ethtool_feature_name(f),
                   jb(e->hw[f]), jb(e->active[f]));
        }
        printf("}");
    }
    printf("%s]\n  }\n}\n", r->nifs ? "\n    " : "");
}

/* ---------------------------------------------------------------------------------------- */
/* Watch                                                                                    */

static int watch(int count, int json)
{
    struct tlsk__tls_stat prev, cur;
    int rc = tlsk__tls_stat_read(&prev);

    if (rc < 0 && !prev.present) {
        fprintf(stderr, "tlsk-stat: cannot read /proc/net/tls_stat: %s\n", strerror(-rc));
        return -1;
    }
    if (!prev.present) {
        fprintf(stderr, "tlsk-stat: no /proc/net/tls_stat (the tls module is not loaded)\n");
        return -1;
    }
    if (!json) {
        printf("change per second of /proc/net/tls_stat (counters that moved)\n");
    }
    fflush(stdout);
    for (int t = 1; t <= count; t++) {
        struct timespec ts = { 1, 0 };
        while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {
        }
        rc = tlsk__tls_stat_read(&cur);
        if (rc < 0 && !cur.present) {
            fprintf(stderr, "tlsk-stat: cannot read /proc/net/tls_stat: %s\n", strerror(-rc));
            return -1;
        }
        if (json) {
            printf("{\"t\": %d, \"present\": %s, \"deltas\": {", t, jb(cur.present));
        } else {
            printf("%4ds", t);
        }
        int any = 0;
        for (int i = 0; i < TLSK__STAT_COUNT; i++) {
            if (!cur.have[i] || !prev.have[i]) {
                continue;
            }
            /* Curr* counters are gauges and may fall: signed difference. */
            int64_t d = (int64_t)(cur.v[i] - prev.v[i]);
            if (json) {
                printf("%s\"%s\": %" PRId64, any ? ", " : "", tlsk__tls_stat_name(i), d);
                any = 1;
            } else if (d != 0) {
                printf("  %s %+" PRId64, tlsk__tls_stat_name(i), d);
                any = 1;
            }
        }
        if (json) {
            printf("}}\n");
        } else {
            printf("%s\n", any ? "" : "  (no change)");
        }
        fflush(stdout);
        prev = cur;
    }
    return 0;
}

/* ---------------------------------------------------------------------------------------- */
/* Load                                                                                     */

static int load(int json)
{
    char detail[512];
    int rc = tlsk_kernel_load_tls(detail, sizeof(detail));

    if (json) {
        printf("{\"loaded\": %s, \"error\": ", jb(rc == 0));
        json_err(rc);
        printf(", \"detail\": ");
        json_str(detail);
        printf("}\n");
    } else if (rc == 0) {
        printf("tls module: %s\n", detail);
    }
    fflush(stdout);
    if (rc < 0) {
        fprintf(stderr, "tls module not loaded: %s: %s\n", tlsk_err_name(rc), detail);
        return 1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    int json = 0, do_load = 0;
    long watch_n = -1;
    struct report r;

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0) {
            json = 1;
        } else if (strcmp(argv[i], "--watch") == 0 && i + 1 < argc) {
            char *end;
            errno = 0;
            watch_n = strtol(argv[++i], &end, 10);
            if (errno != 0 || *end != '\0' || end == argv[i] || watch_n < 1 || watch_n > 1000000) {
                fprintf(stderr, "tlsk-stat: --watch wants a count from 1 to 1000000\n");
                return 2;
            }
        } else if (strcmp(argv[i], "--load") == 0) {
            do_load = 1;
        } else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            return 0;
        } else {
            usage(stderr);
            return 2;
        }
    }

    if (do_load && watch_n > 0) {
        fprintf(stderr, "tlsk-stat: --load and --watch do not go together\n");
        return 2;
    }
    if (do_load) {
        return load(json);
    }
    if (watch_n > 0) {
        const struct tlsk_kernel_caps *c = tlsk_kernel_probe();
        if (watch((int)watch_n, json) < 0) {
            return 1;
        }
        if (!c->ulp) {
            make_reason(c, r.reason, sizeof(r.reason));
            fprintf(stderr, "kTLS not usable: %s\n", r.reason);
            return 1;
        }
        return 0;
    }

    gather(&r);
    if (json) {
        print_json(&r);
    } else {
        print_table(&r);
    }
    fflush(stdout);
    free(r.socks);
    free(r.ifs);
    if (!r.caps->ulp) {
        fprintf(stderr, "kTLS not usable: %s\n", r.reason);
        return 1;
    }
    return 0;
}
