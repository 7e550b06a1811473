/*
 * diag.h - kTLS diagnostics for tlsk-stat and the tests: the counters of /proc/net/tls_stat
 * (tls_stat.c), the sockets with the tls ULP from inet_diag (sock_diag.c) and the NIC TLS
 * offload features from ethtool netlink (ethtool.c); docs/KERNEL.md section 6.
 *
 * Built into $(B)/libtlsk-diag.a, never into libtlsk.so or libtlsk.a: nothing the library
 * exports calls any of it (it looks at its own sockets with getsockopt(SOL_TLS)), and a
 * program that wants the same facts has `ss -tie`, /proc/net/tls_stat and `ethtool -k`.
 * Not installed; nothing here is public API.  The netlink plumbing both dumps share is in
 * nl.h.
 */
#ifndef TLSK_DIAG_H
#define TLSK_DIAG_H

#include <stddef.h>
#include <stdint.h>

/* ---------------------------------------------------------------------------------------- */
/* Counters of /proc/net/tls_stat (tls_stat.c)                                              */

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

/* ---------------------------------------------------------------------------------------- */
/* Sockets with the tls ULP, from inet_diag (what `ss -tie` shows; sock_diag.c)             */

/*
 * One TCP socket of the caller's network namespace that has the "tls" ULP attached.
 *
 * has_info is 1 when the kernel sent INET_ULP_INFO_TLS.  What a dump gets when the netlink
 * socket's opener lacks CAP_NET_ADMIN in that namespace depends on the kernel: before the 2025
 * tcp_diag.c changes INET_DIAG_ULP_INFO is omitted altogether, so the socket is not listed at
 * all (measured on 6.1: zero sockets); a kernel that sends the ULP name only lists it with
 * has_info = 0 and every TLS field 0; 7.2.7 sent the full TLS details anyway (measured in
 * user-mode Linux, tlsk-stat under setpriv without net_admin).
 */
struct tlsk__tls_sock {
    int family;                 /* AF_INET or AF_INET6 */
    char local[64], remote[64]; /* numeric addresses (inet_ntop); "" for another family */
    uint16_t lport, rport;      /* host byte order */
    uint64_t inode;             /* socket inode, as fstat() shows in st_ino for the fd */
    int has_info;               /* the fields below came from the kernel */
    uint16_t version;           /* TLS_INFO_VERSION, e.g. 0x0303; 0 when not yet set */
    uint16_t cipher;            /* TLS_INFO_CIPHER (TLS_CIPHER_*, e.g. 51); 0 when not yet set */
    uint16_t txconf, rxconf;    /* TLS_CONF_BASE 1, SW 2, HW 3, HW_RECORD 4 */
    int zc_ro_tx;               /* flag TLS_INFO_ZC_RO_TX */
    int rx_no_pad;              /* flag TLS_INFO_RX_NO_PAD */
};

/*
 * tlsk__diag_parse() - parse one buffer of netlink messages received on a NETLINK_SOCK_DIAG
 * socket in answer to an inet_diag (SOCK_DIAG_BY_FAMILY) dump.
 *
 * buf must be 4-byte aligned, as netlink buffers are; it is never read past len.  Messages are
 * walked with mnl_nlmsg_ok(); every SOCK_DIAG_BY_FAMILY reply must hold a whole struct
 * inet_diag_msg and well-formed attributes (libmnl validation: lengths, u16 sizes, flags
 * without payload, NUL-terminated ULP name).  Sockets whose INET_DIAG_ULP_INFO has
 * INET_ULP_INFO_NAME "tls" are stored in out[] in the order received; others are skipped.
 * Unknown attributes (e.g. TLS_INFO_TX_MAX_PAYLOAD_LEN of newer kernels) are ignored.
 * NLMSG_NOOP and unknown message types are skipped; nothing after NLMSG_DONE is looked at.
 *
 * *n receives the number of tls sockets found, which may exceed cap: only the first cap are
 * stored (like snprintf(), so the caller can retry with a larger array).  *n is set only when
 * the return value is >= 0; out[] may have been written to in any case.  out may be NULL when
 * cap is 0.
 *
 * Returns 1 when NLMSG_DONE was reached (the dump is complete), 0 when the buffer parsed and
 * more messages are to come, the negative error of an NLMSG_ERROR message (or of NLMSG_DONE,
 * which carries the dump's status), -EBADMSG for a malformed or truncated message (also a
 * message cut at the end of the buffer, or an error code outside -4095..-1), -EINVAL for bad
 * arguments (n NULL, buf NULL with len > 0, out NULL with cap > 0, buf not aligned, len above
 * INT_MAX).  An NLMSG_ERROR with error 0 (an acknowledgement) is skipped.
 */
int tlsk__diag_parse(const void *buf, size_t len, struct tlsk__tls_sock *out, size_t cap,
                     size_t *n) __attribute__((warn_unused_result));

/*
 * tlsk__diag_dump() - list the TCP sockets (IPv4, then IPv6) of the caller's network namespace
 * that have the tls ULP, with inet_diag over a NETLINK_SOCK_DIAG socket (libmnl).  The request
 * asks for INET_DIAG_INFO, which is what makes the kernel add INET_DIAG_ULP_INFO.
 *
 * Without CAP_NET_ADMIN older kernels (6.1) list nothing: see struct tlsk__tls_sock.  Sockets
 * that open or close during the dump may or may not be listed.  The netlink work is nl.c's.
 *
 * out, cap and *n as for tlsk__diag_parse(), counted over both families.  Returns 0, or
 * -errno from the netlink socket (e.g. -EPROTONOSUPPORT without sock_diag), the error the
 * kernel answered, or -EBADMSG for a reply that did not parse.  Blocking; thread-safe; opens
 * and closes one netlink socket.
 */
int tlsk__diag_dump(struct tlsk__tls_sock *out, size_t cap, size_t *n)
    __attribute__((warn_unused_result));

/* ---------------------------------------------------------------------------------------- */
/* NIC TLS offload features, from ethtool over generic netlink (ethtool.c)                  */

/* The netdev features that matter for kTLS, by their ethtool names. */
enum {
    TLSK__ETH_TLS_HW_TX = 0, /* "tls-hw-tx-offload": the NIC encrypts TX records */
    TLSK__ETH_TLS_HW_RX,     /* "tls-hw-rx-offload": the NIC decrypts RX records */
    TLSK__ETH_TLS_HW_RECORD, /* "tls-hw-record": the NIC runs the whole record layer */
    TLSK__ETH_TLS_COUNT,
};

/* One interface of an ETHTOOL_MSG_FEATURES_GET dump. */
struct tlsk__eth_iface {
    uint32_t ifindex;
    char name[16];                                /* IFNAMSIZ, NUL-terminated */
    unsigned char hw[TLSK__ETH_TLS_COUNT];        /* 1: the device can do it (hw bitset) */
    unsigned char active[TLSK__ETH_TLS_COUNT];    /* 1: it is on now (active bitset) */
};

/* "tls-hw-tx-offload", ...; NULL when idx is out of range. */
const char *tlsk__ethtool_feature_name(int idx);

/*
 * tlsk__genl_parse_family() - parse the answer to a CTRL_CMD_GETFAMILY request (one buffer):
 * *id receives CTRL_ATTR_FAMILY_ID of the CTRL_CMD_NEWFAMILY reply whose CTRL_ATTR_FAMILY_NAME
 * is name.  buf must be 4-byte aligned; it is never read past len.
 * Returns 1 when found, 0 when the buffer parsed without it (an acknowledgement, or no reply
 * yet), the negative error of an NLMSG_ERROR (-ENOENT: no such family), -EBADMSG for a
 * malformed or cut message, -EINVAL for bad arguments.
 */
int tlsk__genl_parse_family(const void *buf, size_t len, const char *name, uint16_t *id)
    __attribute__((warn_unused_result));

/*
 * tlsk__ethtool_parse_features() - parse one buffer of the reply to an ETHTOOL_MSG_FEATURES_GET
 * dump made without ETHTOOL_FLAG_COMPACT_BITSETS (so bits come with their names).
 *
 * Messages of type family (the ethtool family id) must be ETHTOOL_MSG_FEATURES_GET_REPLY with
 * a whole genlmsghdr, ETHTOOL_A_FEATURES_HEADER holding ETHTOOL_A_HEADER_DEV_INDEX (u32) and
 * ETHTOOL_A_HEADER_DEV_NAME (NUL-terminated, at most 15 characters), and the bitsets
 * ETHTOOL_A_FEATURES_HW and ETHTOOL_A_FEATURES_ACTIVE in the verbose form: bits listed under
 * ETHTOOL_A_BITSET_BITS, each with a u32 index and a NUL-terminated name; a listed bit is set
 * when the bitset has ETHTOOL_A_BITSET_NOMASK (the list form the kernel uses for features) or
 * the bit has ETHTOOL_A_BITSET_BIT_VALUE.  A compact bitset (no names) is -EBADMSG.  Every
 * attribute area must be exactly filled by whole attributes.  Unknown attributes and feature
 * names are ignored; NLMSG_NOOP, other message types and acknowledgements are skipped;
 * nothing after NLMSG_DONE is looked at.
 *
 * Interfaces go to out[] in the order received; *n counts them and may exceed cap (only the
 * first cap are stored), set only when the return value is >= 0.  out may be NULL when cap
 * is 0.  Returns 1 at NLMSG_DONE, 0 when the buffer parsed and more is to come, the negative
 * error of NLMSG_ERROR or NLMSG_DONE, -EBADMSG for anything malformed or cut (also an error
 * code outside -4095..-1), -EINVAL for bad arguments (n NULL, buf NULL with len > 0, out NULL
 * with cap > 0, buf not 4-byte aligned, len above INT_MAX).
 */
int tlsk__ethtool_parse_features(const void *buf, size_t len, uint16_t family,
                                 struct tlsk__eth_iface *out, size_t cap, size_t *n)
    __attribute__((warn_unused_result));

/*
 * tlsk__ethtool_dump() - the TLS features of every interface of the caller's network
 * namespace: resolves the "ethtool" generic netlink family (CTRL_CMD_GETFAMILY), then dumps
 * ETHTOOL_MSG_FEATURES_GET (libmnl).  Needs no privilege.  out, cap and *n as for
 * tlsk__ethtool_parse_features(), over the whole dump.  Returns 0; -EOPNOTSUPP when the kernel
 * has no "ethtool" family (built without CONFIG_ETHTOOL_NETLINK, before 5.6); -errno of the
 * netlink socket or the kernel's answer; -EBADMSG for a reply that does not parse.  Blocking;
 * thread-safe; opens and closes one netlink socket.
 */
int tlsk__ethtool_dump(struct tlsk__eth_iface *out, size_t cap, size_t *n)
    __attribute__((warn_unused_result));

#endif
