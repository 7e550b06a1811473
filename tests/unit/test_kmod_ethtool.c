/*
 * test_kmod_ethtool.c - NIC TLS offload features over ethtool netlink
 * (kmod-helpers/diag/ethtool.c).
 *
 * Synthetic buffers: a dump of three interfaces (no TLS features, TLS available but off, TLS
 * on) in the list form the kernel sends and in the mask form; control messages (NLMSG_DONE
 * with and without an error, NLMSG_ERROR, acknowledgements, NLMSG_NOOP, NLMSG_OVERRUN, other
 * commands and types, bytes after NLMSG_DONE); malformed replies (missing or short attributes,
 * unterminated or too long names, compact bitsets, nameless bits, cut genlmsghdr); bad
 * arguments; a valid buffer cut at every offset and corrupted at every byte, parsed from a
 * copy ending at a PROT_NONE page and from an exact-size heap copy.  The same for the
 * CTRL_CMD_GETFAMILY parser.
 *
 * Live: tlsk__ethtool_dump() lists exactly the interfaces if_nameindex() knows, lo among
 * them with no TLS feature; -EOPNOTSUPP is accepted only when an independent generic netlink
 * controller dump confirms that the kernel has no "ethtool" family.  tlsk-stat shows the
 * interfaces in its table and its JSON.
 */
#include <errno.h>
#include <limits.h>
#include <net/if.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <libmnl/libmnl.h>
#include <linux/ethtool_netlink.h>
#include <linux/genetlink.h>
#include <linux/netlink.h>

#include "harness.h"
#include "diag.h"
#include "tap.h"

#define FAM 27 /* any id >= NLMSG_MIN_TYPE */

/* ---------------------------------------------------------------------------------------- */
/* Building synthetic replies                                                               */

struct msgbuf {
    union {
        unsigned char b[16384];
        uint32_t align;
    } u;
    size_t len;
    size_t bounds[16]; /* end offset of each message */
    int nbounds;
};

static void msg_init(struct msgbuf *m)
{
    memset(m, 0, sizeof(*m));
}

static struct nlmsghdr *msg_start(struct msgbuf *m, uint16_t type)
{
    struct nlmsghdr *nlh = mnl_nlmsg_put_header(m->u.b + m->len);
    nlh->nlmsg_type = type;
    nlh->nlmsg_flags = NLM_F_MULTI;
    nlh->nlmsg_seq = 2;
    return nlh;
}

static void msg_end(struct msgbuf *m, struct nlmsghdr *nlh)
{
    m->len += MNL_ALIGN(nlh->nlmsg_len);
    m->bounds[m->nbounds++] = m->len;
}

static struct nlmsghdr *genl_start(struct msgbuf *m, uint16_t type, uint8_t cmd)
{
    struct nlmsghdr *nlh = msg_start(m, type);
    struct genlmsghdr *g = mnl_nlmsg_put_extra_header(nlh, sizeof(*g));
    g->cmd = cmd;
    g->version = 1;
    return nlh;
}

enum bitset_form {
    FORM_LIST,    /* NOMASK: only set bits listed (what the kernel sends for features) */
    FORM_MASK,    /* every bit listed, VALUE on the set ones */
    FORM_COMPACT, /* VALUE/MASK bitmaps, no names */
};

/* Some non-TLS features every interface lists, then the TLS ones by bit mask (1, 2, 4). */
static void put_bitset(struct nlmsghdr *nlh, uint16_t type, unsigned tls, enum bitset_form form)
{
    static const char *const others[] = { "rx-checksum", "loopback", "tx-scatter-gather" };
    static const char *const tlsn[] = { "tls-hw-tx-offload", "tls-hw-rx-offload",
                                        "tls-hw-record" };
    struct nlattr *set = mnl_attr_nest_start(nlh, type);

    if (form == FORM_LIST) {
        mnl_attr_put(nlh, ETHTOOL_A_BITSET_NOMASK, 0, NULL);
    }
    mnl_attr_put_u32(nlh, ETHTOOL_A_BITSET_SIZE, 64);
    if (form == FORM_COMPACT) {
        uint32_t v[2] = { tls, 0 }, mk[2] = { 7, 0 };
        mnl_attr_put(nlh, ETHTOOL_A_BITSET_VALUE, sizeof(v), v);
        mnl_attr_put(nlh, ETHTOOL_A_BITSET_MASK, sizeof(mk), mk);
        mnl_attr_nest_end(nlh, set);
        return;
    }
    struct nlattr *bits = mnl_attr_nest_start(nlh, ETHTOOL_A_BITSET_BITS);
    for (int i = 0; i < 3 + 3; i++) {
        int is_tls = i >= 3;
        int on = is_tls ? (tls >> (i - 3)) & 1 : 1;
        if (form == FORM_LIST && !on) {
            continue;
        }
        struct nlattr *bit = mnl_attr_nest_start(nlh, ETHTOOL_A_BITSET_BITS_BIT);
        mnl_attr_put_u32(nlh, ETHTOOL_A_BITSET_BIT_INDEX, (uint32_t)(is_tls ? 40 + i : i));
        mnl_attr_put_strz(nlh, ETHTOOL_A_BITSET_BIT_NAME, is_tls ? tlsn[i - 3] : others[i]);
        if (form == FORM_MASK && on) {
            mnl_attr_put(nlh, ETHTOOL_A_BITSET_BIT_VALUE, 0, NULL);
        }
        mnl_attr_nest_end(nlh, bit);
    }
    mnl_attr_nest_end(nlh, bits);
    mnl_attr_nest_end(nlh, set);
}

static void add_iface(struct msgbuf *m, uint32_t ifindex, const char *name, unsigned hw,
                      unsigned active, enum bitset_form form)
{
    struct nlmsghdr *nlh = genl_start(m, FAM, ETHTOOL_MSG_FEATURES_GET_REPLY);
    struct nlattr *hdr = mnl_attr_nest_start(nlh, ETHTOOL_A_FEATURES_HEADER);
    mnl_attr_put_u32(nlh, ETHTOOL_A_HEADER_DEV_INDEX, ifindex);
    mnl_attr_put_strz(nlh, ETHTOOL_A_HEADER_DEV_NAME, name);
    mnl_attr_nest_end(nlh, hdr);
    put_bitset(nlh, ETHTOOL_A_FEATURES_HW, hw, form);
    put_bitset(nlh, ETHTOOL_A_FEATURES_WANTED, active, form);
    put_bitset(nlh, ETHTOOL_A_FEATURES_ACTIVE, active, form);
    put_bitset(nlh, ETHTOOL_A_FEATURES_NOCHANGE, 0, form);
    mnl_attr_put_u32(nlh, 99, 7); /* an attribute of some future kernel */
    msg_end(m, nlh);
}

static void add_done(struct msgbuf *m, int err)
{
    struct nlmsghdr *nlh = msg_start(m, NLMSG_DONE);
    int *e = mnl_nlmsg_put_extra_header(nlh, sizeof(int));
    *e = err;
    msg_end(m, nlh);
}

static void add_error(struct msgbuf *m, int err)
{
    struct nlmsghdr *nlh = msg_start(m, NLMSG_ERROR);
    struct nlmsgerr *e = mnl_nlmsg_put_extra_header(nlh, sizeof(*e));
    e->error = err;
    msg_end(m, nlh);
}

static void build_standard(struct msgbuf *m, enum bitset_form form)
{
    msg_init(m);
    add_iface(m, 1, "lo", 0, 0, form);
    add_iface(m, 2, "eth0", 3, 0, form);
    add_iface(m, 7, "mlx5-p0123456789", 7, 5, form); /* 16 characters: too long... */
    add_done(m, 0);
}

/* The standard buffer with a legal 15-character name. */
static void build_ok(struct msgbuf *m, enum bitset_form form)
{
    msg_init(m);
    add_iface(m, 1, "lo", 0, 0, form);
    add_iface(m, 2, "eth0", 3, 0, form);
    add_iface(m, 7, "mlx5-p012345678", 7, 5, form);
    add_done(m, 0);
}

/* ---------------------------------------------------------------------------------------- */
/* Guarded copies (see test_diag.c)                                                         */

static unsigned char *guard_base;
static size_t guard_size;

static void guard_init(void)
{
    long pg = sysconf(_SC_PAGESIZE);
    guard_size = 8 * (size_t)pg;
    guard_base = mmap(NULL, guard_size + (size_t)pg, PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (guard_base == MAP_FAILED || mprotect(guard_base + guard_size, (size_t)pg, PROT_NONE)) {
        tap_bail("mmap guard page");
    }
}

static const void *guarded(const void *src, size_t len)
{
    size_t room = (len + 3) & ~(size_t)3;
    unsigned char *dst = guard_base + guard_size - room;
    memset(dst, 0, room);
    memcpy(dst, src, len);
    return dst;
}

static int parse_copies(const void *src, size_t len, struct tlsk__eth_iface *out, size_t cap,
                        size_t *n, int *agree)
{
    size_t n1 = 99, n2 = 99;
    int rc1 = tlsk__ethtool_parse_features(guarded(src, len), len, FAM, out, cap, &n1);
    void *heap = malloc(len ? len : 1);
    memcpy(heap, src, len);
    int rc2 = tlsk__ethtool_parse_features(heap, len, FAM, out, cap, &n2);
    free(heap);
    *agree = rc1 == rc2 && n1 == n2;
    *n = n1;
    return rc1;
}

/* ---------------------------------------------------------------------------------------- */
/* Synthetic tests                                                                          */

static int same_flags(const unsigned char *got, unsigned want)
{
    for (int i = 0; i < TLSK__ETH_TLS_COUNT; i++) {
        if (got[i] != ((want >> i) & 1)) {
            return 0;
        }
    }
    return 1;
}

static void check_standard(const char *form, const struct tlsk__eth_iface *o, size_t n, int rc)
{
    TAP_OK(rc == 1 && n == 3, "%s: three interfaces, dump complete (rc %d n %zu)", form, rc, n);
    TAP_OK(o[0].ifindex == 1 && strcmp(o[0].name, "lo") == 0 && same_flags(o[0].hw, 0) &&
               same_flags(o[0].active, 0),
           "%s: lo, no TLS feature", form);
    TAP_OK(o[1].ifindex == 2 && strcmp(o[1].name, "eth0") == 0 && same_flags(o[1].hw, 3) &&
               same_flags(o[1].active, 0),
           "%s: eth0, TLS TX and RX available, off", form);
    TAP_OK(o[2].ifindex == 7 && strcmp(o[2].name, "mlx5-p012345678") == 0 &&
               same_flags(o[2].hw, 7) && same_flags(o[2].active, 5),
           "%s: a 15-character name; all three available, TX and record on", form);
}

static void test_standard(void)
{
    struct msgbuf m;
    struct tlsk__eth_iface o[4];
    size_t n = 0;
    int rc;

    TAP_OK(strcmp(tlsk__ethtool_feature_name(TLSK__ETH_TLS_HW_TX), "tls-hw-tx-offload") == 0 &&
               strcmp(tlsk__ethtool_feature_name(TLSK__ETH_TLS_HW_RX), "tls-hw-rx-offload") ==
                   0 &&
               strcmp(tlsk__ethtool_feature_name(TLSK__ETH_TLS_HW_RECORD), "tls-hw-record") ==
                   0 &&
               tlsk__ethtool_feature_name(-1) == NULL &&
               tlsk__ethtool_feature_name(TLSK__ETH_TLS_COUNT) == NULL,
           "feature names, NULL out of range");

    build_ok(&m, FORM_LIST);
    memset(o, 0xa5, sizeof(o));
    rc = tlsk__ethtool_parse_features(m.u.b, m.len, FAM, o, 4, &n);
    check_standard("list form", o, n, rc);
    build_ok(&m, FORM_MASK);
    memset(o, 0xa5, sizeof(o));
    rc = tlsk__ethtool_parse_features(m.u.b, m.len, FAM, o, 4, &n);
    check_standard("mask form", o, n, rc);

    build_ok(&m, FORM_LIST);
    memset(o, 0, sizeof(o));
    rc = tlsk__ethtool_parse_features(m.u.b, m.len, FAM, o, 1, &n);
    TAP_OK(rc == 1 && n == 3 && strcmp(o[0].name, "lo") == 0 && o[1].name[0] == '\0',
           "cap 1: counts 3, stores only the first");
    rc = tlsk__ethtool_parse_features(m.u.b, m.len, FAM, NULL, 0, &n);
    TAP_OK(rc == 1 && n == 3, "out NULL, cap 0: counts 3");
    rc = tlsk__ethtool_parse_features(m.u.b, m.len, FAM + 1, o, 4, &n);
    TAP_OK(rc == 1 && n == 0, "another family id: the replies are not ours, skipped");
    rc = tlsk__ethtool_parse_features(m.u.b, m.bounds[1], FAM, o, 4, &n);
    TAP_OK(rc == 0 && n == 2, "two messages without NLMSG_DONE: 0, more to come");

    build_standard(&m, FORM_LIST);
    rc = tlsk__ethtool_parse_features(m.u.b, m.len, FAM, o, 4, &n);
    TAP_IS(rc, -EBADMSG, "a 16-character interface name: -EBADMSG");
    build_ok(&m, FORM_COMPACT);
    rc = tlsk__ethtool_parse_features(m.u.b, m.len, FAM, o, 4, &n);
    TAP_IS(rc, -EBADMSG, "compact bitsets (no names): -EBADMSG");
}

static void test_control(void)
{
    struct msgbuf m;
    struct tlsk__eth_iface o[4];
    size_t n = 99;
    struct nlmsghdr *nlh;

    msg_init(&m);
    add_error(&m, -EPERM);
    TAP_IS(tlsk__ethtool_parse_features(m.u.b, m.len, FAM, o, 4, &n), -EPERM,
           "NLMSG_ERROR -EPERM is returned");
    msg_init(&m);
    add_error(&m, 0);
    add_iface(&m, 1, "lo", 0, 0, FORM_LIST);
    nlh = msg_start(&m, NLMSG_NOOP);
    msg_end(&m, nlh);
    nlh = genl_start(&m, FAM, ETHTOOL_MSG_FEATURES_NTF);
    msg_end(&m, nlh);
    nlh = genl_start(&m, FAM + 3, 1);
    msg_end(&m, nlh);
    add_done(&m, 0);
    /* Garbage after NLMSG_DONE is never looked at. */
    memset(m.u.b + m.len, 0xff, 8);
    m.len += 8;
    n = 99;
    int rc = tlsk__ethtool_parse_features(m.u.b, m.len, FAM, o, 4, &n);
    TAP_OK(rc == 1 && n == 1 && strcmp(o[0].name, "lo") == 0,
           "ack, NOOP, another command, another type skipped; bytes after DONE ignored "
           "(rc %d n %zu)",
           rc, n);
    msg_init(&m);
    add_done(&m, -EINTR);
    TAP_IS(tlsk__ethtool_parse_features(m.u.b, m.len, FAM, o, 4, &n), -EINTR,
           "NLMSG_DONE carrying -EINTR (dump interrupted) is returned");
    msg_init(&m);
    add_done(&m, 5);
    TAP_IS(tlsk__ethtool_parse_features(m.u.b, m.len, FAM, o, 4, &n), -EBADMSG,
           "NLMSG_DONE with a positive error: -EBADMSG");
    msg_init(&m);
    add_error(&m, -5000);
    TAP_IS(tlsk__ethtool_parse_features(m.u.b, m.len, FAM, o, 4, &n), -EBADMSG,
           "NLMSG_ERROR below -4095: -EBADMSG");
    msg_init(&m);
    nlh = msg_start(&m, NLMSG_OVERRUN);
    msg_end(&m, nlh);
    TAP_IS(tlsk__ethtool_parse_features(m.u.b, m.len, FAM, o, 4, &n), -EBADMSG,
           "NLMSG_OVERRUN: -EBADMSG");
    msg_init(&m);
    nlh = msg_start(&m, NLMSG_DONE);
    msg_end(&m, nlh);
    n = 99;
    TAP_OK(tlsk__ethtool_parse_features(m.u.b, m.len, FAM, o, 4, &n) == 1 && n == 0,
           "NLMSG_DONE without a status: complete, nothing listed");
}

/* Malformed replies, each built by a small function. */
static void mal_no_header(struct nlmsghdr *nlh)
{
    put_bitset(nlh, ETHTOOL_A_FEATURES_HW, 0, FORM_LIST);
    put_bitset(nlh, ETHTOOL_A_FEATURES_ACTIVE, 0, FORM_LIST);
}

static void put_header(struct nlmsghdr *nlh, int index, const char *name)
{
    struct nlattr *hdr = mnl_attr_nest_start(nlh, ETHTOOL_A_FEATURES_HEADER);
    if (index) {
        mnl_attr_put_u32(nlh, ETHTOOL_A_HEADER_DEV_INDEX, 3);
    }
    if (name != NULL) {
        mnl_attr_put_strz(nlh, ETHTOOL_A_HEADER_DEV_NAME, name);
    }
    mnl_attr_nest_end(nlh, hdr);
}

static void mal_no_index(struct nlmsghdr *nlh)
{
    put_header(nlh, 0, "lo");
    mal_no_header(nlh);
}

static void mal_no_name(struct nlmsghdr *nlh)
{
    put_header(nlh, 1, NULL);
    mal_no_header(nlh);
}

static void mal_unterminated_name(struct nlmsghdr *nlh)
{
    struct nlattr *hdr = mnl_attr_nest_start(nlh, ETHTOOL_A_FEATURES_HEADER);
    mnl_attr_put_u32(nlh, ETHTOOL_A_HEADER_DEV_INDEX, 3);
    mnl_attr_put(nlh, ETHTOOL_A_HEADER_DEV_NAME, 4, "eth0");
    mnl_attr_nest_end(nlh, hdr);
    mal_no_header(nlh);
}

static void mal_short_index(struct nlmsghdr *nlh)
{
    struct nlattr *hdr = mnl_attr_nest_start(nlh, ETHTOOL_A_FEATURES_HEADER);
    mnl_attr_put_u16(nlh, ETHTOOL_A_HEADER_DEV_INDEX, 3);
    mnl_attr_put_strz(nlh, ETHTOOL_A_HEADER_DEV_NAME, "lo");
    mnl_attr_nest_end(nlh, hdr);
    mal_no_header(nlh);
}

static void mal_no_hw(struct nlmsghdr *nlh)
{
    put_header(nlh, 1, "lo");
    put_bitset(nlh, ETHTOOL_A_FEATURES_ACTIVE, 0, FORM_LIST);
}

static void mal_no_active(struct nlmsghdr *nlh)
{
    put_header(nlh, 1, "lo");
    put_bitset(nlh, ETHTOOL_A_FEATURES_HW, 0, FORM_LIST);
}

static void put_odd_bitset(struct nlmsghdr *nlh, int what)
{
    struct nlattr *set = mnl_attr_nest_start(nlh, ETHTOOL_A_FEATURES_HW);
    mnl_attr_put(nlh, ETHTOOL_A_BITSET_NOMASK, 0, NULL);
    struct nlattr *bits = mnl_attr_nest_start(nlh, ETHTOOL_A_BITSET_BITS);
    if (what == 0) { /* a bit without a name */
        struct nlattr *bit = mnl_attr_nest_start(nlh, ETHTOOL_A_BITSET_BITS_BIT);
        mnl_attr_put_u32(nlh, ETHTOOL_A_BITSET_BIT_INDEX, 40);
        mnl_attr_nest_end(nlh, bit);
    } else if (what == 1) { /* a bit without an index */
        struct nlattr *bit = mnl_attr_nest_start(nlh, ETHTOOL_A_BITSET_BITS_BIT);
        mnl_attr_put_strz(nlh, ETHTOOL_A_BITSET_BIT_NAME, "tls-hw-record");
        mnl_attr_nest_end(nlh, bit);
    } else if (what == 2) { /* VALUE flag with a payload */
        struct nlattr *bit = mnl_attr_nest_start(nlh, ETHTOOL_A_BITSET_BITS_BIT);
        mnl_attr_put_u32(nlh, ETHTOOL_A_BITSET_BIT_INDEX, 40);
        mnl_attr_put_strz(nlh, ETHTOOL_A_BITSET_BIT_NAME, "tls-hw-record");
        mnl_attr_put_u32(nlh, ETHTOOL_A_BITSET_BIT_VALUE, 1);
        mnl_attr_nest_end(nlh, bit);
    } else if (what == 3) { /* BITS_BIT that is a 2-byte blob, not a nest */
        mnl_attr_put_u16(nlh, ETHTOOL_A_BITSET_BITS_BIT, 1);
    } else { /* unknown attributes inside BITS are fine */
        mnl_attr_put_u32(nlh, 77, 1);
    }
    mnl_attr_nest_end(nlh, bits);
    mnl_attr_nest_end(nlh, set);
}

static void mal_bit_noname(struct nlmsghdr *nlh)
{
    put_header(nlh, 1, "lo");
    put_odd_bitset(nlh, 0);
    put_bitset(nlh, ETHTOOL_A_FEATURES_ACTIVE, 0, FORM_LIST);
}

static void mal_bit_noindex(struct nlmsghdr *nlh)
{
    put_header(nlh, 1, "lo");
    put_odd_bitset(nlh, 1);
    put_bitset(nlh, ETHTOOL_A_FEATURES_ACTIVE, 0, FORM_LIST);
}

static void mal_bit_value_payload(struct nlmsghdr *nlh)
{
    put_header(nlh, 1, "lo");
    put_odd_bitset(nlh, 2);
    put_bitset(nlh, ETHTOOL_A_FEATURES_ACTIVE, 0, FORM_LIST);
}

static void mal_bit_not_nest(struct nlmsghdr *nlh)
{
    put_header(nlh, 1, "lo");
    put_odd_bitset(nlh, 3);
    put_bitset(nlh, ETHTOOL_A_FEATURES_ACTIVE, 0, FORM_LIST);
}

static void ok_bits_unknown(struct nlmsghdr *nlh)
{
    put_header(nlh, 1, "lo");
    put_odd_bitset(nlh, 4);
    put_bitset(nlh, ETHTOOL_A_FEATURES_ACTIVE, 0, FORM_LIST);
}

static void mal_hw_not_nest(struct nlmsghdr *nlh)
{
    put_header(nlh, 1, "lo");
    mnl_attr_put_u16(nlh, ETHTOOL_A_FEATURES_HW, 1);
    put_bitset(nlh, ETHTOOL_A_FEATURES_ACTIVE, 0, FORM_LIST);
}

static void mal_trailing_bytes(struct nlmsghdr *nlh)
{
    put_header(nlh, 1, "lo");
    mal_no_header(nlh);
    /* Two bytes after the last attribute: too short for another one. */
    memset((char *)nlh + nlh->nlmsg_len, 0, 4);
    nlh->nlmsg_len += 2;
}

static void mal_attr_overrun(struct nlmsghdr *nlh)
{
    put_header(nlh, 1, "lo");
    mal_no_header(nlh);
    struct nlattr *a = (struct nlattr *)((char *)nlh + nlh->nlmsg_len);
    a->nla_type = 99;
    a->nla_len = 64; /* claims more than the message has */
    nlh->nlmsg_len += 8;
}

static void test_malformed(void)
{
    static const struct {
        void (*build)(struct nlmsghdr *);
        int want;
        const char *label;
    } cases[] = {
        { mal_no_header, -EBADMSG, "no ETHTOOL_A_FEATURES_HEADER" },
        { mal_no_index, -EBADMSG, "header without DEV_INDEX" },
        { mal_no_name, -EBADMSG, "header without DEV_NAME" },
        { mal_unterminated_name, -EBADMSG, "DEV_NAME without its NUL" },
        { mal_short_index, -EBADMSG, "DEV_INDEX of 2 bytes" },
        { mal_no_hw, -EBADMSG, "no HW bitset" },
        { mal_no_active, -EBADMSG, "no ACTIVE bitset" },
        { mal_bit_noname, -EBADMSG, "a bit without a name" },
        { mal_bit_noindex, -EBADMSG, "a bit without an index" },
        { mal_bit_value_payload, -EBADMSG, "BIT_VALUE flag with a payload" },
        { mal_bit_not_nest, -EBADMSG, "BITS_BIT of 2 bytes" },
        { mal_hw_not_nest, -EBADMSG, "HW bitset of 2 bytes" },
        { mal_trailing_bytes, -EBADMSG, "2 stray bytes after the attributes" },
        { mal_attr_overrun, -EBADMSG, "an attribute longer than its message" },
        { ok_bits_unknown, 1, "unknown attributes inside BITS are ignored" },
    };
    struct tlsk__eth_iface o[2];

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct msgbuf m;
        size_t n = 0;
        msg_init(&m);
        struct nlmsghdr *nlh = genl_start(&m, FAM, ETHTOOL_MSG_FEATURES_GET_REPLY);
        cases[i].build(nlh);
        msg_end(&m, nlh);
        add_done(&m, 0);
        int rc = tlsk__ethtool_parse_features(m.u.b, m.len, FAM, o, 2, &n);
        if (!TAP_OK(rc == cases[i].want, "malformed: %s", cases[i].label)) {
            tap_diag("  got %d, expected %d", rc, cases[i].want);
            continue;
        }
        if (cases[i].want != 1) {
            continue;
        }
        TAP_OK(n == 1 && strcmp(o[0].name, "lo") == 0 && o[0].ifindex == 3,
               "  and the interface is listed");
    }

    /* A genlmsghdr cut short. */
    struct msgbuf m;
    size_t n = 0;
    msg_init(&m);
    struct nlmsghdr *nlh = msg_start(&m, FAM);
    nlh->nlmsg_len += 2;
    msg_end(&m, nlh);
    TAP_IS(tlsk__ethtool_parse_features(m.u.b, m.len, FAM, o, 2, &n), -EBADMSG,
           "malformed: a 2-byte genlmsghdr");
}

static void test_args(void)
{
    struct msgbuf m;
    struct tlsk__eth_iface o[2];
    size_t n = 99;

    build_ok(&m, FORM_LIST);
    TAP_IS(tlsk__ethtool_parse_features(m.u.b, m.len, FAM, o, 2, NULL), -EINVAL, "n NULL");
    TAP_IS(tlsk__ethtool_parse_features(NULL, 4, FAM, o, 2, &n), -EINVAL, "buf NULL, len 4");
    TAP_IS(tlsk__ethtool_parse_features(m.u.b, m.len, FAM, NULL, 2, &n), -EINVAL,
           "out NULL, cap 2");
    TAP_IS(tlsk__ethtool_parse_features(m.u.b + 2, 16, FAM, o, 2, &n), -EINVAL,
           "buffer not 4-byte aligned");
    TAP_IS(tlsk__ethtool_parse_features(m.u.b, (size_t)INT_MAX + 1, FAM, o, 2, &n), -EINVAL,
           "len above INT_MAX");
    TAP_IS(tlsk__ethtool_parse_features(m.u.b, m.len, NLMSG_DONE, o, 2, &n), -EINVAL,
           "a family id below NLMSG_MIN_TYPE");
    n = 99;
    TAP_OK(tlsk__ethtool_parse_features(NULL, 0, FAM, NULL, 0, &n) == 0 && n == 0,
           "empty buffer: 0, nothing");
    TAP_IS(tlsk__ethtool_dump(NULL, 2, &n), -EINVAL, "dump: out NULL with cap 2");
    TAP_IS(tlsk__ethtool_dump(o, 2, NULL), -EINVAL, "dump: n NULL");
}

static void test_truncation(enum bitset_form form, const char *label)
{
    struct msgbuf m;
    struct tlsk__eth_iface o[4];
    int bad = 0, disagree = 0;

    build_ok(&m, form);
    for (size_t k = 0; k <= m.len; k++) {
        size_t n = 0, want_n = 0;
        int want = -EBADMSG, agree;
        int rc = parse_copies(m.u.b, k, o, 4, &n, &agree);

        if (k == 0) {
            want = 0;
        }
        for (int i = 0; i < m.nbounds; i++) {
            if (k == m.bounds[i]) {
                want = i == m.nbounds - 1 ? 1 : 0;
                want_n = (size_t)(i < 3 ? i + 1 : 3);
            }
        }
        disagree += !agree;
        if (rc != want || (rc >= 0 && n != want_n)) {
            if (bad++ < 5) {
                tap_diag("  cut at %zu: rc %d n %zu, want rc %d n %zu", k, rc, n, want, want_n);
            }
        }
    }
    TAP_IS(bad, 0, "%s: cut at each of %zu offsets: whole messages parse, a cut one is -EBADMSG",
           label, m.len + 1);
    TAP_IS(disagree, 0, "%s: guard-page and heap copies give the same results", label);
}

static void test_corruption(void)
{
    static struct msgbuf m, c;
    struct tlsk__eth_iface o[4];
    static const unsigned char vals[] = { 0x00, 0xff, 0x80, 0x01, 0x7f };
    size_t tried = 0, errors = 0, more = 0, unterminated = 0, disagree = 0;

    build_ok(&m, FORM_MASK);
    for (size_t k = 0; k < m.len; k++) {
        for (size_t v = 0; v < sizeof(vals); v++) {
            size_t n = 0;
            int agree;
            c = m;
            c.u.b[k] = vals[v];
            int rc = parse_copies(c.u.b, c.len, o, 4, &n, &agree);
            tried++;
            errors += rc < 0;
            disagree += !agree;
            more += rc >= 0 && n > 3;
            for (size_t i = 0; rc >= 0 && i < n && i < 4; i++) {
                unterminated += memchr(o[i].name, '\0', sizeof(o[i].name)) == NULL;
                for (int f = 0; f < TLSK__ETH_TLS_COUNT; f++) {
                    unterminated += o[i].hw[f] > 1 || o[i].active[f] > 1;
                }
            }
        }
    }
    TAP_OK(more == 0 && unterminated == 0 && disagree == 0,
           "%zu single-byte corruptions: no crash, at most 3 interfaces, names terminated, "
           "flags 0/1 (%zu were errors)",
           tried, errors);
}

/* ---------------------------------------------------------------------------------------- */
/* CTRL_CMD_GETFAMILY parser                                                                */

static void add_family(struct msgbuf *m, const char *name, int with_id, uint16_t id)
{
    struct nlmsghdr *nlh = genl_start(m, GENL_ID_CTRL, CTRL_CMD_NEWFAMILY);
    mnl_attr_put_strz(nlh, CTRL_ATTR_FAMILY_NAME, name);
    if (with_id) {
        mnl_attr_put_u16(nlh, CTRL_ATTR_FAMILY_ID, id);
    }
    mnl_attr_put_u32(nlh, CTRL_ATTR_VERSION, 1);
    mnl_attr_put_u32(nlh, CTRL_ATTR_MAXATTR, 40);
    struct nlattr *ops = mnl_attr_nest_start(nlh, CTRL_ATTR_OPS);
    struct nlattr *op = mnl_attr_nest_start(nlh, 1);
    mnl_attr_put_u32(nlh, CTRL_ATTR_OP_ID, 1);
    mnl_attr_nest_end(nlh, op);
    mnl_attr_nest_end(nlh, ops);
    msg_end(m, nlh);
}

static void test_family(void)
{
    struct msgbuf m;
    uint16_t id = 0;
    int bad = 0;

    msg_init(&m);
    add_family(&m, "ethtool", 1, 21);
    TAP_OK(tlsk__genl_parse_family(m.u.b, m.len, "ethtool", &id) == 1 && id == 21,
           "family: the ethtool reply gives its id (%u)", id);
    id = 0;
    TAP_OK(tlsk__genl_parse_family(m.u.b, m.len, "ethtoo", &id) == 0 && id == 0,
           "family: another name is not a match (no prefix match)");
    for (size_t k = 0; k < m.len; k++) {
        int rc = tlsk__genl_parse_family(guarded(m.u.b, k), k, "ethtool", &id);
        bad += k == 0 ? rc != 0 : rc != -EBADMSG;
    }
    TAP_IS(bad, 0, "family: cut at each of %zu offsets: -EBADMSG", m.len);
    msg_init(&m);
    add_error(&m, -ENOENT);
    TAP_IS(tlsk__genl_parse_family(m.u.b, m.len, "ethtool", &id), -ENOENT,
           "family: NLMSG_ERROR -ENOENT (no such family) is returned");
    msg_init(&m);
    add_family(&m, "nlctrl", 1, 16);
    add_family(&m, "ethtool", 1, 30);
    add_error(&m, 0);
    TAP_OK(tlsk__genl_parse_family(m.u.b, m.len, "ethtool", &id) == 1 && id == 30,
           "family: found after another family, ack skipped");
    msg_init(&m);
    add_family(&m, "ethtool", 0, 0);
    TAP_IS(tlsk__genl_parse_family(m.u.b, m.len, "ethtool", &id), -EBADMSG,
           "family: the right name without an id: -EBADMSG");
    TAP_IS(tlsk__genl_parse_family(m.u.b, m.len, NULL, &id), -EINVAL, "family: name NULL");
    TAP_IS(tlsk__genl_parse_family(m.u.b, m.len, "ethtool", NULL), -EINVAL, "family: id NULL");
    TAP_IS(tlsk__genl_parse_family(m.u.b + 1, 8, "ethtool", &id), -EINVAL,
           "family: misaligned buffer");
}

/* ---------------------------------------------------------------------------------------- */
/* Live                                                                                     */

/* Does the kernel have a generic netlink family called name?  1, 0, or -errno.  Written
 * independently of ethtool.c: a CTRL_CMD_GETFAMILY dump walked with mnl_cb_run(). */
static int ctrl_cb_attr(const struct nlattr *attr, void *data)
{
    const char **name = data;
    if (mnl_attr_get_type(attr) == CTRL_ATTR_FAMILY_NAME &&
        mnl_attr_validate(attr, MNL_TYPE_NUL_STRING) >= 0) {
        *name = mnl_attr_get_str(attr);
    }
    return MNL_CB_OK;
}

struct ctrl_seen {
    const char *want;
    int found, families;
};

static int ctrl_cb(const struct nlmsghdr *nlh, void *data)
{
    struct ctrl_seen *s = data;
    const char *name = NULL;
    mnl_attr_parse(nlh, sizeof(struct genlmsghdr), ctrl_cb_attr, &name);
    s->families++;
    if (name != NULL && strcmp(name, s->want) == 0) {
        s->found = 1;
    }
    return MNL_CB_OK;
}

static int genl_family_exists(const char *name, int *families)
{
    static char buf[65536] __attribute__((aligned(4)));
    struct ctrl_seen seen = { .want = name };
    struct mnl_socket *nl = mnl_socket_open(NETLINK_GENERIC);
    int rc = 0;

    if (nl == NULL) {
        return -errno;
    }
    if (mnl_socket_bind(nl, 0, MNL_SOCKET_AUTOPID) < 0) {
        rc = -errno;
        goto out;
    }
    struct nlmsghdr *nlh = mnl_nlmsg_put_header(buf);
    nlh->nlmsg_type = GENL_ID_CTRL;
    nlh->nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
    nlh->nlmsg_seq = 77;
    struct genlmsghdr *g = mnl_nlmsg_put_extra_header(nlh, sizeof(*g));
    g->cmd = CTRL_CMD_GETFAMILY;
    g->version = 1;
    if (mnl_socket_sendto(nl, nlh, nlh->nlmsg_len) < 0) {
        rc = -errno;
        goto out;
    }
    unsigned portid = mnl_socket_get_portid(nl);
    for (;;) {
        ssize_t got = mnl_socket_recvfrom(nl, buf, sizeof(buf));
        if (got < 0) {
            rc = -errno;
            goto out;
        }
        int r = mnl_cb_run(buf, (size_t)got, 77, portid, ctrl_cb, &seen);
        if (r < 0) {
            rc = -errno;
            goto out;
        }
        if (r == MNL_CB_STOP) {
            break;
        }
    }
    rc = seen.found;
    *families = seen.families;
out:
    mnl_socket_close(nl);
    return rc;
}

static const char *build_dir(void)
{
    const char *b = getenv("TLSK_BUILD_DIR");
    return b != NULL && *b != '\0' ? b : "build";
}

static int run_capture(const char *cmd, char *out, size_t cap)
{
    FILE *p = popen(cmd, "r");
    size_t n = 0;
    if (p == NULL) {
        return -1;
    }
    while (n + 1 < cap) {
        size_t k = fread(out + n, 1, cap - 1 - n, p);
        if (k == 0) {
            break;
        }
        n += k;
    }
    out[n] = '\0';
    return pclose(p);
}

static void test_live(void)
{
    struct tlsk__eth_iface list[256];
    size_t n = 0, n0 = 99, n1 = 0;
    int families = 0;
    int exists = genl_family_exists("ethtool", &families);
    int rc = tlsk__ethtool_dump(list, 256, &n);

    tap_diag("ethtool family %s (controller dump: %d families); dump rc %d (%s), %zu interfaces",
             exists == 1 ? "present" : exists == 0 ? "absent" : "unknown", families, rc,
             tlsk_err_name(rc), n);
    TAP_OK(exists >= 0 && families > 0, "the generic netlink controller dump works");
    if (rc == -EOPNOTSUPP) {
        TAP_IS(exists, 0, "-EOPNOTSUPP only because the kernel has no ethtool family");
        return;
    }
    TAP_IS(exists, 1, "the kernel has the ethtool family");
    TAP_IS(rc, 0, "tlsk__ethtool_dump");
    if (rc != 0) {
        return;
    }
    for (size_t i = 0; i < n && i < 256; i++) {
        tap_diag("  %u %-16s hw %d%d%d active %d%d%d", list[i].ifindex, list[i].name,
                 list[i].hw[0], list[i].hw[1], list[i].hw[2], list[i].active[0],
                 list[i].active[1], list[i].active[2]);
    }

    /* Exactly the interfaces the kernel knows. */
    struct if_nameindex *ifs = if_nameindex();
    size_t known = 0, matched = 0;
    for (struct if_nameindex *p = ifs; p != NULL && p->if_index != 0; p++) {
        known++;
        for (size_t i = 0; i < n && i < 256; i++) {
            matched += list[i].ifindex == p->if_index && strcmp(list[i].name, p->if_name) == 0;
        }
    }
    if_freenameindex(ifs);
    TAP_OK(n == known && matched == known,
           "the dump lists exactly the %zu interfaces of if_nameindex() (%zu listed, %zu match)",
           known, n, matched);
    const struct tlsk__eth_iface *lo = NULL;
    for (size_t i = 0; i < n && i < 256; i++) {
        if (strcmp(list[i].name, "lo") == 0) {
            lo = &list[i];
        }
    }
    TAP_OK(lo != NULL, "lo is listed");
    if (lo != NULL) {
        TAP_OK(lo->ifindex == if_nametoindex("lo"), "lo has its ifindex (%u)", lo->ifindex);
        TAP_OK(same_flags(lo->hw, 0) && same_flags(lo->active, 0),
               "lo: no TLS offload feature available or on");
    }
    rc = tlsk__ethtool_dump(NULL, 0, &n0);
    TAP_OK(rc == 0 && n0 == n, "cap 0: the same count (%zu)", n0);
    memset(list, 0, sizeof(list));
    rc = tlsk__ethtool_dump(list, 1, &n1);
    TAP_OK(rc == 0 && n1 == n && list[0].name[0] != '\0' && list[1].name[0] == '\0',
           "cap 1: the same count, one stored");

    /* The tool. */
    static char out[65536];
    char cmd[PATH_MAX + 64];
    snprintf(cmd, sizeof(cmd), "%s/tools/tlsk-stat --json 2>/dev/null", build_dir());
    int st = run_capture(cmd, out, sizeof(out));
    TAP_OK(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == (tlsk_kernel_probe()->ulp ? 0 : 1),
           "tlsk-stat --json runs (exit status says whether kTLS is usable)");
    TAP_OK(strstr(out, "\"interfaces\": {\n    \"error\": null,") != NULL &&
               strstr(out, "{\"name\": \"lo\", \"ifindex\": ") != NULL &&
               strstr(out, "\"tls-hw-tx-offload\": {\"available\": false, \"on\": false}, "
                           "\"tls-hw-rx-offload\": {\"available\": false, \"on\": false}, "
                           "\"tls-hw-record\": {\"available\": false, \"on\": false}}") != NULL,
           "tlsk-stat --json lists lo under interfaces, without TLS features");
    char key[64];
    snprintf(key, sizeof(key), "\"interfaces\": {\n    \"error\": null,\n    \"count\": %zu,", n);
    TAP_OK(strstr(out, key) != NULL, "tlsk-stat --json counts %zu interfaces", n);
    if (system("command -v python3 >/dev/null 2>&1") == 0) {
        snprintf(cmd, sizeof(cmd),
                 "%s/tools/tlsk-stat --json 2>/dev/null | python3 -c 'import json,sys; "
                 "d=json.load(sys.stdin); sys.exit(0 if any(i[\"name\"]==\"lo\" for i in "
                 "d[\"interfaces\"][\"list\"]) else 1)'",
                 build_dir());
        TAP_IS(system(cmd), 0, "tlsk-stat --json is valid JSON with lo in interfaces.list");
    }
    snprintf(cmd, sizeof(cmd), "%s/tools/tlsk-stat 2>/dev/null", build_dir());
    run_capture(cmd, out, sizeof(out));
    const char *sec = strstr(out, "NIC TLS offload per interface");
    TAP_OK(sec != NULL && strstr(sec, "\n  lo               no                 no"
                                      "                 no\n") != NULL,
           "tlsk-stat table: the interfaces section shows lo with no, no, no");
}

int main(void)
{
    guard_init();
    test_standard();
    test_control();
    test_malformed();
    test_args();
    test_truncation(FORM_LIST, "list form");
    test_truncation(FORM_MASK, "mask form");
    test_corruption();
    test_family();
    test_live();
    return tap_done();
}
