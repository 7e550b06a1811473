/*
 * ethtool.c - which network interfaces can offload TLS to the NIC, and whether it is on, from
 * ethtool's generic netlink interface (ETHTOOL_MSG_FEATURES_GET, Linux 5.6+), as
 * `ethtool -k IFACE | grep tls` shows it.
 *
 * kTLS in software (what tlsk installs) needs none of this; it is for tlsk-stat and admins who
 * wonder why TlsTxDevice stays 0.  As in sock_diag.c, the parsers are separate from the socket
 * code so that they can be tested and fuzzed on synthetic buffers, and every attribute area
 * must be exactly filled by whole attributes: a short receive or a kernel that nests
 * differently gives -EBADMSG, never an out-of-bounds read.
 *
 * Bitsets are requested in the verbose form (no ETHTOOL_FLAG_COMPACT_BITSETS), so every bit
 * comes with its name and no ETH_SS_FEATURES string set is needed.  For features the kernel
 * sends the list form (ETHTOOL_A_BITSET_NOMASK): only the set bits are listed.
 */
#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <libmnl/libmnl.h>
#include <linux/ethtool_netlink.h>
#include <linux/genetlink.h>
#include <linux/netlink.h>

#include "kmod.h"

/* Like sock_diag.c: the kernel fills a dump skb of at most 32 KiB per recvmsg. */
#define ETH_RECV_BUF 32768

static const char *const feature_names[TLSK__ETH_TLS_COUNT] = {
    [TLSK__ETH_TLS_HW_TX] = "tls-hw-tx-offload",
    [TLSK__ETH_TLS_HW_RX] = "tls-hw-rx-offload",
    [TLSK__ETH_TLS_HW_RECORD] = "tls-hw-record",
};

const char *tlsk__ethtool_feature_name(int idx)
{
    if (idx < 0 || idx >= TLSK__ETH_TLS_COUNT) {
        return NULL;
    }
    return feature_names[idx];
}

/* ---------------------------------------------------------------------------------------- */
/* Attribute walking                                                                        */

/* Every attribute in [start, start + len) through cb, with libmnl's bounds checks; trailing
 * bytes too short for an attribute, or one that overruns, are -EBADMSG (see sock_diag.c). */
static int walk_attrs(const void *start, size_t len, mnl_attr_cb_t cb, void *data)
{
    const struct nlattr *attr = start;
    int left = (int)len;

    while (mnl_attr_ok(attr, left)) {
        if (cb(attr, data) != MNL_CB_OK) {
            return -EBADMSG;
        }
        left -= (int)MNL_ALIGN(attr->nla_len);
        attr = mnl_attr_next(attr);
    }
    return left > 0 ? -EBADMSG : 0;
}

static int walk_nested(const struct nlattr *nest, mnl_attr_cb_t cb, void *data)
{
    return walk_attrs(mnl_attr_get_payload(nest), mnl_attr_get_payload_len(nest), cb, data);
}

/* The error of NLMSG_ERROR or NLMSG_DONE: 0, a -errno, or -EBADMSG when out of range. */
static int msg_error(int err)
{
    if (err == 0 || (err < 0 && err >= -4095)) {
        return err;
    }
    return -EBADMSG;
}

static int check_args(const void *buf, size_t len)
{
    if ((buf == NULL && len > 0) || len > INT_MAX || ((uintptr_t)buf & 3) != 0) {
        return -EINVAL;
    }
    return 0;
}

/*
 * The message loop shared by both parsers: control messages are handled here, messages of
 * type want go to fn (which returns 0, or < 0 to stop with that error).  Returns 1 at
 * NLMSG_DONE, 0 at the end of the buffer, or an error.
 */
static int walk_msgs(const void *buf, size_t len, uint16_t want,
                     int (*fn)(const struct nlmsghdr *, void *), void *data)
{
    const struct nlmsghdr *nlh = buf;
    int left = (int)len;

    /* The unsigned comparison guards against nlmsg_len > INT_MAX (see sock_diag.c). */
    while (mnl_nlmsg_ok(nlh, left) && nlh->nlmsg_len <= (uint32_t)left) {
        if (nlh->nlmsg_type == NLMSG_DONE) {
            if (nlh->nlmsg_len >= MNL_NLMSG_HDRLEN + sizeof(int)) {
                int err;
                memcpy(&err, mnl_nlmsg_get_payload(nlh), sizeof(err));
                err = msg_error(err);
                if (err < 0) {
                    return err;
                }
            }
            return 1;
        }
        if (nlh->nlmsg_type == NLMSG_ERROR) {
            struct nlmsgerr e;
            int err;

            if (nlh->nlmsg_len < MNL_NLMSG_HDRLEN + sizeof(e)) {
                return -EBADMSG;
            }
            memcpy(&e, mnl_nlmsg_get_payload(nlh), sizeof(e));
            err = msg_error(e.error);
            if (err < 0) {
                return err;
            }
        } else if (nlh->nlmsg_type == NLMSG_OVERRUN) {
            return -EBADMSG;
        } else if (nlh->nlmsg_type == want) {
            int rc = fn(nlh, data);
            if (rc < 0) {
                return rc;
            }
        }
        nlh = mnl_nlmsg_next(nlh, &left);
    }
    return left > 0 ? -EBADMSG : 0;
}

/* The genlmsghdr of nlh and the bounds of its attributes; -EBADMSG when too short. */
static int genl_split(const struct nlmsghdr *nlh, const struct genlmsghdr **g,
                      const void **attrs, size_t *alen)
{
    const size_t hdr = MNL_NLMSG_HDRLEN + MNL_ALIGN(sizeof(struct genlmsghdr));

    if (nlh->nlmsg_len < hdr) {
        return -EBADMSG;
    }
    *g = mnl_nlmsg_get_payload(nlh);
    *attrs = (const char *)nlh + hdr;
    *alen = nlh->nlmsg_len - hdr;
    return 0;
}

/* ---------------------------------------------------------------------------------------- */
/* CTRL_CMD_GETFAMILY                                                                       */

struct family_attrs {
    const struct nlattr *id, *name;
};

static int family_attr_cb(const struct nlattr *attr, void *data)
{
    struct family_attrs *a = data;

    switch (mnl_attr_get_type(attr)) {
    case CTRL_ATTR_FAMILY_ID:
        if (mnl_attr_validate(attr, MNL_TYPE_U16) < 0) {
            return MNL_CB_ERROR;
        }
        a->id = attr;
        break;
    case CTRL_ATTR_FAMILY_NAME:
        if (mnl_attr_validate(attr, MNL_TYPE_NUL_STRING) < 0) {
            return MNL_CB_ERROR;
        }
        a->name = attr;
        break;
    default:
        break;
    }
    return MNL_CB_OK;
}

struct family_want {
    const char *name;
    uint16_t id;
    int found;
};

static int family_msg(const struct nlmsghdr *nlh, void *data)
{
    struct family_want *w = data;
    struct family_attrs fa = { 0 };
    const struct genlmsghdr *g;
    const void *attrs;
    size_t alen;

    if (genl_split(nlh, &g, &attrs, &alen) < 0 ||
        walk_attrs(attrs, alen, family_attr_cb, &fa) < 0) {
        return -EBADMSG;
    }
    if (g->cmd != CTRL_CMD_NEWFAMILY || fa.name == NULL ||
        strcmp(mnl_attr_get_str(fa.name), w->name) != 0) {
        return 0;
    }
    if (fa.id == NULL) {
        return -EBADMSG;
    }
    w->id = mnl_attr_get_u16(fa.id);
    w->found = 1;
    return 0;
}

int tlsk__genl_parse_family(const void *buf, size_t len, const char *name, uint16_t *id)
{
    struct family_want w = { .name = name };
    int rc;

    if (name == NULL || id == NULL || check_args(buf, len) < 0) {
        return -EINVAL;
    }
    rc = walk_msgs(buf, len, GENL_ID_CTRL, family_msg, &w);
    if (rc < 0) {
        return rc;
    }
    if (w.found) {
        *id = w.id;
        return 1;
    }
    return 0;
}

/* ---------------------------------------------------------------------------------------- */
/* ETHTOOL_MSG_FEATURES_GET replies                                                         */

struct features_attrs {
    const struct nlattr *header, *hw, *active;
};

static int nested_cb(const struct nlattr *attr, const struct nlattr **slot)
{
    if (mnl_attr_validate(attr, MNL_TYPE_NESTED) < 0) {
        return MNL_CB_ERROR;
    }
    *slot = attr;
    return MNL_CB_OK;
}

static int features_attr_cb(const struct nlattr *attr, void *data)
{
    struct features_attrs *a = data;

    switch (mnl_attr_get_type(attr)) {
    case ETHTOOL_A_FEATURES_HEADER:
        return nested_cb(attr, &a->header);
    case ETHTOOL_A_FEATURES_HW:
        return nested_cb(attr, &a->hw);
    case ETHTOOL_A_FEATURES_ACTIVE:
        return nested_cb(attr, &a->active);
    default:
        return MNL_CB_OK;
    }
}

struct header_attrs {
    const struct nlattr *index, *name;
};

static int header_attr_cb(const struct nlattr *attr, void *data)
{
    struct header_attrs *a = data;

    switch (mnl_attr_get_type(attr)) {
    case ETHTOOL_A_HEADER_DEV_INDEX:
        if (mnl_attr_validate(attr, MNL_TYPE_U32) < 0) {
            return MNL_CB_ERROR;
        }
        a->index = attr;
        break;
    case ETHTOOL_A_HEADER_DEV_NAME:
        if (mnl_attr_validate(attr, MNL_TYPE_NUL_STRING) < 0) {
            return MNL_CB_ERROR;
        }
        a->name = attr;
        break;
    default:
        break;
    }
    return MNL_CB_OK;
}

struct bitset_attrs {
    int nomask, compact;
    const struct nlattr *bits;
};

static int bitset_attr_cb(const struct nlattr *attr, void *data)
{
    struct bitset_attrs *a = data;

    switch (mnl_attr_get_type(attr)) {
    case ETHTOOL_A_BITSET_NOMASK:
        if (mnl_attr_validate(attr, MNL_TYPE_FLAG) < 0) {
            return MNL_CB_ERROR;
        }
        a->nomask = 1;
        break;
    case ETHTOOL_A_BITSET_SIZE:
        if (mnl_attr_validate(attr, MNL_TYPE_U32) < 0) {
            return MNL_CB_ERROR;
        }
        break;
    case ETHTOOL_A_BITSET_BITS:
        return nested_cb(attr, &a->bits);
    case ETHTOOL_A_BITSET_VALUE:
    case ETHTOOL_A_BITSET_MASK:
        a->compact = 1;
        break;
    default:
        break;
    }
    return MNL_CB_OK;
}

struct bit_attrs {
    const struct nlattr *index, *name;
    int value;
};

static int bit_attr_cb(const struct nlattr *attr, void *data)
{
    struct bit_attrs *a = data;

    switch (mnl_attr_get_type(attr)) {
    case ETHTOOL_A_BITSET_BIT_INDEX:
        if (mnl_attr_validate(attr, MNL_TYPE_U32) < 0) {
            return MNL_CB_ERROR;
        }
        a->index = attr;
        break;
    case ETHTOOL_A_BITSET_BIT_NAME:
        if (mnl_attr_validate(attr, MNL_TYPE_NUL_STRING) < 0) {
            return MNL_CB_ERROR;
        }
        a->name = attr;
        break;
    case ETHTOOL_A_BITSET_BIT_VALUE:
        if (mnl_attr_validate(attr, MNL_TYPE_FLAG) < 0) {
            return MNL_CB_ERROR;
        }
        a->value = 1;
        break;
    default:
        break;
    }
    return MNL_CB_OK;
}

struct bits_state {
    int nomask;
    unsigned char *out; /* [TLSK__ETH_TLS_COUNT] */
};

static int bits_attr_cb(const struct nlattr *attr, void *data)
{
    struct bits_state *st = data;
    struct bit_attrs b = { 0 };

    if (mnl_attr_get_type(attr) != ETHTOOL_A_BITSET_BITS_BIT) {
        return MNL_CB_OK;
    }
    if (mnl_attr_validate(attr, MNL_TYPE_NESTED) < 0 || walk_nested(attr, bit_attr_cb, &b) < 0) {
        return MNL_CB_ERROR;
    }
    /* The verbose form always names its bits; a nameless one is not what was asked for. */
    if (b.name == NULL || b.index == NULL) {
        return MNL_CB_ERROR;
    }
    if (!st->nomask && !b.value) {
        return MNL_CB_OK;
    }
    for (int i = 0; i < TLSK__ETH_TLS_COUNT; i++) {
        if (strcmp(mnl_attr_get_str(b.name), feature_names[i]) == 0) {
            st->out[i] = 1;
        }
    }
    return MNL_CB_OK;
}

static int parse_bitset(const struct nlattr *set, unsigned char out[TLSK__ETH_TLS_COUNT])
{
    struct bitset_attrs a = { 0 };
    struct bits_state st = { .out = out };

    if (walk_nested(set, bitset_attr_cb, &a) < 0 || a.compact) {
        return -EBADMSG;
    }
    if (a.bits == NULL) {
        return 0; /* nothing listed: nothing set */
    }
    st.nomask = a.nomask;
    return walk_nested(a.bits, bits_attr_cb, &st);
}

struct features_state {
    struct tlsk__eth_iface *out;
    size_t cap, found;
};

static int features_msg(const struct nlmsghdr *nlh, void *data)
{
    struct features_state *st = data;
    struct features_attrs fa = { 0 };
    struct header_attrs ha = { 0 };
    struct tlsk__eth_iface ifc;
    const struct genlmsghdr *g;
    const void *attrs;
    size_t alen;

    if (genl_split(nlh, &g, &attrs, &alen) < 0) {
        return -EBADMSG;
    }
    if (g->cmd != ETHTOOL_MSG_FEATURES_GET_REPLY) {
        return 0;
    }
    if (walk_attrs(attrs, alen, features_attr_cb, &fa) < 0 || fa.header == NULL ||
        fa.hw == NULL || fa.active == NULL || walk_nested(fa.header, header_attr_cb, &ha) < 0 ||
        ha.index == NULL || ha.name == NULL ||
        mnl_attr_get_payload_len(ha.name) > sizeof(ifc.name)) {
        return -EBADMSG;
    }
    memset(&ifc, 0, sizeof(ifc));
    ifc.ifindex = mnl_attr_get_u32(ha.index);
    /* NUL_STRING validation put a '\0' at the end of the payload, which fits in name. */
    memcpy(ifc.name, mnl_attr_get_str(ha.name), mnl_attr_get_payload_len(ha.name));
    if (parse_bitset(fa.hw, ifc.hw) < 0 || parse_bitset(fa.active, ifc.active) < 0) {
        return -EBADMSG;
    }
    if (st->found < st->cap) {
        st->out[st->found] = ifc;
    }
    st->found++;
    return 0;
}

int tlsk__ethtool_parse_features(const void *buf, size_t len, uint16_t family,
                                 struct tlsk__eth_iface *out, size_t cap, size_t *n)
{
    struct features_state st = { .out = out, .cap = cap };
    int rc;

    if (n == NULL || (out == NULL && cap > 0) || check_args(buf, len) < 0) {
        return -EINVAL;
    }
    /* Control message types are below NLMSG_MIN_TYPE; a family id never is. */
    if (family < NLMSG_MIN_TYPE) {
        return -EINVAL;
    }
    rc = walk_msgs(buf, len, family, features_msg, &st);
    if (rc < 0) {
        return rc;
    }
    *n = st.found;
    return rc;
}

/* ---------------------------------------------------------------------------------------- */
/* The dump                                                                                 */

static int resolve_family(struct mnl_socket *nl, void *buf, uint16_t *id)
{
    char req[256] __attribute__((aligned(4)));
    struct nlmsghdr *nlh;
    struct genlmsghdr *g;
    ssize_t got;
    int rc;

    memset(req, 0, sizeof(req));
    nlh = mnl_nlmsg_put_header(req);
    nlh->nlmsg_type = GENL_ID_CTRL;
    nlh->nlmsg_flags = NLM_F_REQUEST; /* one reply or one NLMSG_ERROR, no acknowledgement */
    nlh->nlmsg_seq = 1;
    g = mnl_nlmsg_put_extra_header(nlh, sizeof(*g));
    g->cmd = CTRL_CMD_GETFAMILY;
    g->version = 1;
    mnl_attr_put_strz(nlh, CTRL_ATTR_FAMILY_NAME, ETHTOOL_GENL_NAME);
    if (mnl_socket_sendto(nl, nlh, nlh->nlmsg_len) < 0) {
        return -errno;
    }
    do {
        got = mnl_socket_recvfrom(nl, buf, ETH_RECV_BUF);
    } while (got < 0 && errno == EINTR);
    if (got < 0) {
        return -errno;
    }
    rc = tlsk__genl_parse_family(buf, (size_t)got, ETHTOOL_GENL_NAME, id);
    if (rc == -ENOENT) {
        return -EOPNOTSUPP;
    }
    if (rc == 0) {
        return -EBADMSG; /* neither the reply nor an error */
    }
    return rc < 0 ? rc : 0;
}

int tlsk__ethtool_dump(struct tlsk__eth_iface *out, size_t cap, size_t *n)
{
    char req[256] __attribute__((aligned(4)));
    struct mnl_socket *nl;
    struct nlmsghdr *nlh;
    struct genlmsghdr *g;
    struct nlattr *hdr;
    void *buf = NULL;
    uint16_t family = 0;
    size_t total = 0;
    int rc;

    if (n == NULL || (out == NULL && cap > 0)) {
        return -EINVAL;
    }
    nl = mnl_socket_open2(NETLINK_GENERIC, SOCK_CLOEXEC);
    if (nl == NULL) {
        return -errno;
    }
    if (mnl_socket_bind(nl, 0, MNL_SOCKET_AUTOPID) < 0) {
        rc = -errno;
        goto out;
    }
    buf = malloc(ETH_RECV_BUF);
    if (buf == NULL) {
        rc = -ENOMEM;
        goto out;
    }
    rc = resolve_family(nl, buf, &family);
    if (rc < 0) {
        goto out;
    }

    memset(req, 0, sizeof(req));
    nlh = mnl_nlmsg_put_header(req);
    nlh->nlmsg_type = family;
    nlh->nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
    nlh->nlmsg_seq = 2;
    g = mnl_nlmsg_put_extra_header(nlh, sizeof(*g));
    g->cmd = ETHTOOL_MSG_FEATURES_GET;
    g->version = ETHTOOL_GENL_VERSION;
    hdr = mnl_attr_nest_start(nlh, ETHTOOL_A_FEATURES_HEADER);
    /* No ETHTOOL_FLAG_COMPACT_BITSETS: bits come with their names. */
    mnl_attr_put_u32(nlh, ETHTOOL_A_HEADER_FLAGS, 0);
    mnl_attr_nest_end(nlh, hdr);
    if (mnl_socket_sendto(nl, nlh, nlh->nlmsg_len) < 0) {
        rc = -errno;
        goto out;
    }
    for (;;) {
        ssize_t got = mnl_socket_recvfrom(nl, buf, ETH_RECV_BUF);
        size_t k = 0;

        if (got < 0) {
            if (errno == EINTR) {
                continue;
            }
            rc = -errno;
            goto out;
        }
        if (got == 0) {
            rc = -EBADMSG;
            goto out;
        }
        rc = tlsk__ethtool_parse_features(buf, (size_t)got, family,
                                          total < cap ? out + total : NULL,
                                          total < cap ? cap - total : 0, &k);
        if (rc < 0) {
            goto out;
        }
        total += k;
        if (rc == 1) {
            break;
        }
    }
    *n = total;
    rc = 0;
out:
    free(buf);
    mnl_socket_close(nl);
    return rc;
}
