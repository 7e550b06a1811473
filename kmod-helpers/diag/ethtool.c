/*
 * ethtool.c - which network interfaces can offload TLS to the NIC, and whether it is on, from
 * ethtool's generic netlink interface (ETHTOOL_MSG_FEATURES_GET, Linux 5.6+), as
 * `ethtool -k IFACE | grep tls` shows it.
 *
 * kTLS in software (what tlsk installs) needs none of this; it is for tlsk-stat and admins who
 * wonder why TlsTxDevice stays 0.  As in sock_diag.c, the parsers are separate from the socket
 * code so that they can be tested and fuzzed on synthetic buffers, and every attribute area
 * must be exactly filled by whole attributes (nl.c): a short receive or a kernel that nests
 * differently gives -EBADMSG, never an out-of-bounds read.
 *
 * Bitsets are requested in the verbose form (no ETHTOOL_FLAG_COMPACT_BITSETS), so every bit
 * comes with its name and no ETH_SS_FEATURES string set is needed.  For features the kernel
 * sends the list form (ETHTOOL_A_BITSET_NOMASK): only the set bits are listed.
 */
#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>

#include <linux/ethtool_netlink.h>
#include <linux/genetlink.h>
#include <linux/netlink.h>

#include "diag.h"
#include "nl.h"

static const char *const feature_names[TLSK__ETH_TLS_COUNT] = {
    [TLSK__ETH_TLS_HW_TX] = "tls-hw-tx-offload",
    [TLSK__ETH_TLS_HW_RX] = "tls-hw-rx-offload",
    [TLSK__ETH_TLS_HW_RECORD] = "tls-hw-record",
};

const char *tlsk__ethtool_feature_name(int idx)
{
    return idx >= 0 && idx < TLSK__ETH_TLS_COUNT ? feature_names[idx] : NULL;
}

/* The attributes that matter here, by type (MNL_TYPE_UNSPEC: ignored).  A bitset's VALUE and
 * MASK are only looked for: either means the compact form. */
static const tlsk__nl_policy family_policy[CTRL_ATTR_MAX + 1] = {
    [CTRL_ATTR_FAMILY_ID] = MNL_TYPE_U16, [CTRL_ATTR_FAMILY_NAME] = MNL_TYPE_NUL_STRING };
static const tlsk__nl_policy features_policy[ETHTOOL_A_FEATURES_MAX + 1] = {
    [ETHTOOL_A_FEATURES_HEADER] = MNL_TYPE_NESTED, [ETHTOOL_A_FEATURES_HW] = MNL_TYPE_NESTED,
    [ETHTOOL_A_FEATURES_ACTIVE] = MNL_TYPE_NESTED };
static const tlsk__nl_policy header_policy[ETHTOOL_A_HEADER_MAX + 1] = {
    [ETHTOOL_A_HEADER_DEV_INDEX] = MNL_TYPE_U32,
    [ETHTOOL_A_HEADER_DEV_NAME] = MNL_TYPE_NUL_STRING };
static const tlsk__nl_policy bitset_policy[ETHTOOL_A_BITSET_MAX + 1] = {
    [ETHTOOL_A_BITSET_NOMASK] = MNL_TYPE_FLAG, [ETHTOOL_A_BITSET_SIZE] = MNL_TYPE_U32,
    [ETHTOOL_A_BITSET_BITS] = MNL_TYPE_NESTED, [ETHTOOL_A_BITSET_VALUE] = MNL_TYPE_BINARY,
    [ETHTOOL_A_BITSET_MASK] = MNL_TYPE_BINARY };
static const tlsk__nl_policy bit_policy[ETHTOOL_A_BITSET_BIT_MAX + 1] = {
    [ETHTOOL_A_BITSET_BIT_INDEX] = MNL_TYPE_U32,
    [ETHTOOL_A_BITSET_BIT_NAME] = MNL_TYPE_NUL_STRING,
    [ETHTOOL_A_BITSET_BIT_VALUE] = MNL_TYPE_FLAG };

/* ---------------------------------------------------------------------------------------- */
/* CTRL_CMD_GETFAMILY                                                                       */

struct family_want {
    const char *name;
    uint16_t id;
    int found;
};

static int family_msg(const struct nlmsghdr *nlh, void *data)
{
    struct family_want *w = data;
    const struct nlattr *tb[CTRL_ATTR_MAX + 1];
    const struct genlmsghdr *g;

    if (tlsk__nl_msg_attrs(nlh, sizeof(*g), family_policy, CTRL_ATTR_MAX, tb) < 0) {
        return -EBADMSG;
    }
    g = mnl_nlmsg_get_payload(nlh);
    if (g->cmd != CTRL_CMD_NEWFAMILY || tb[CTRL_ATTR_FAMILY_NAME] == NULL ||
        strcmp(mnl_attr_get_str(tb[CTRL_ATTR_FAMILY_NAME]), w->name) != 0) {
        return 0;
    }
    if (tb[CTRL_ATTR_FAMILY_ID] == NULL) {
        return -EBADMSG;
    }
    w->id = mnl_attr_get_u16(tb[CTRL_ATTR_FAMILY_ID]);
    w->found = 1;
    return 0;
}

int tlsk__genl_parse_family(const void *buf, size_t len, const char *name, uint16_t *id)
{
    struct family_want w = { .name = name };
    int rc;

    if (name == NULL || id == NULL) {
        return -EINVAL;
    }
    rc = tlsk__nl_parse(buf, len, GENL_ID_CTRL, family_msg, &w);
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

struct bits_state {
    int nomask;
    unsigned char *out; /* [TLSK__ETH_TLS_COUNT] */
};

static int bits_attr_cb(const struct nlattr *attr, void *data)
{
    struct bits_state *st = data;
    const struct nlattr *tb[ETHTOOL_A_BITSET_BIT_MAX + 1];
    const struct nlattr *name;

    if (mnl_attr_get_type(attr) != ETHTOOL_A_BITSET_BITS_BIT) {
        return MNL_CB_OK;
    }
    if (mnl_attr_validate(attr, MNL_TYPE_NESTED) < 0 ||
        tlsk__nl_nested(attr, bit_policy, ETHTOOL_A_BITSET_BIT_MAX, tb) < 0) {
        return MNL_CB_ERROR;
    }
    /* The verbose form always names its bits; a nameless one is not what was asked for. */
    name = tb[ETHTOOL_A_BITSET_BIT_NAME];
    if (name == NULL || tb[ETHTOOL_A_BITSET_BIT_INDEX] == NULL) {
        return MNL_CB_ERROR;
    }
    if (!st->nomask && tb[ETHTOOL_A_BITSET_BIT_VALUE] == NULL) {
        return MNL_CB_OK;
    }
    for (int i = 0; i < TLSK__ETH_TLS_COUNT; i++) {
        if (strcmp(mnl_attr_get_str(name), feature_names[i]) == 0) {
            st->out[i] = 1;
        }
    }
    return MNL_CB_OK;
}

static int parse_bitset(const struct nlattr *set, unsigned char out[TLSK__ETH_TLS_COUNT])
{
    const struct nlattr *tb[ETHTOOL_A_BITSET_MAX + 1];
    struct bits_state st = { .out = out };
    const struct nlattr *bits;

    if (tlsk__nl_nested(set, bitset_policy, ETHTOOL_A_BITSET_MAX, tb) < 0 ||
        tb[ETHTOOL_A_BITSET_VALUE] != NULL || tb[ETHTOOL_A_BITSET_MASK] != NULL) {
        return -EBADMSG;
    }
    bits = tb[ETHTOOL_A_BITSET_BITS];
    if (bits == NULL) {
        return 0; /* nothing listed: nothing set */
    }
    st.nomask = tb[ETHTOOL_A_BITSET_NOMASK] != NULL;
    return tlsk__nl_walk(mnl_attr_get_payload(bits), mnl_attr_get_payload_len(bits),
                         bits_attr_cb, &st);
}

/* One message of the features dump: the interface goes to the struct tlsk__nl_out in data. */
static int features_msg(const struct nlmsghdr *nlh, void *data)
{
    const struct nlattr *fa[ETHTOOL_A_FEATURES_MAX + 1], *ha[ETHTOOL_A_HEADER_MAX + 1];
    const struct nlattr *index, *name;
    struct tlsk__eth_iface ifc;
    const struct genlmsghdr *g;

    g = tlsk__nl_msg_header(nlh, sizeof(*g));
    if (g == NULL) {
        return -EBADMSG;
    }
    if (g->cmd != ETHTOOL_MSG_FEATURES_GET_REPLY) {
        return 0;
    }
    if (tlsk__nl_msg_attrs(nlh, sizeof(*g), features_policy, ETHTOOL_A_FEATURES_MAX, fa) < 0 ||
        fa[ETHTOOL_A_FEATURES_HEADER] == NULL || fa[ETHTOOL_A_FEATURES_HW] == NULL ||
        fa[ETHTOOL_A_FEATURES_ACTIVE] == NULL ||
        tlsk__nl_nested(fa[ETHTOOL_A_FEATURES_HEADER], header_policy, ETHTOOL_A_HEADER_MAX,
                        ha) < 0) {
        return -EBADMSG;
    }
    index = ha[ETHTOOL_A_HEADER_DEV_INDEX];
    name = ha[ETHTOOL_A_HEADER_DEV_NAME];
    if (index == NULL || name == NULL || mnl_attr_get_payload_len(name) > sizeof(ifc.name)) {
        return -EBADMSG;
    }
    memset(&ifc, 0, sizeof(ifc));
    ifc.ifindex = mnl_attr_get_u32(index);
    /* NUL_STRING validation checked the '\0' at the end of the payload, which fits in name. */
    memcpy(ifc.name, mnl_attr_get_str(name), mnl_attr_get_payload_len(name));
    if (parse_bitset(fa[ETHTOOL_A_FEATURES_HW], ifc.hw) < 0 ||
        parse_bitset(fa[ETHTOOL_A_FEATURES_ACTIVE], ifc.active) < 0) {
        return -EBADMSG;
    }
    tlsk__nl_out_add(data, &ifc);
    return 0;
}

int tlsk__ethtool_parse_features(const void *buf, size_t len, uint16_t family,
                                 struct tlsk__eth_iface *out, size_t cap, size_t *n)
{
    struct tlsk__nl_out o = { out, sizeof(*out), cap, 0 };

    return tlsk__nl_parse_out(buf, len, family, features_msg, &o, n);
}

/* ---------------------------------------------------------------------------------------- */
/* The dump                                                                                 */

/* A generic netlink request in req: header, genlmsghdr, no attributes yet. */
static struct nlmsghdr *genl_request(void *req, uint16_t type, uint16_t flags, uint8_t cmd,
                                     uint8_t version)
{
    struct nlmsghdr *nlh = mnl_nlmsg_put_header(req);
    struct genlmsghdr *g;

    nlh->nlmsg_type = type;
    nlh->nlmsg_flags = flags;
    g = mnl_nlmsg_put_extra_header(nlh, sizeof(*g));
    g->cmd = cmd;
    g->version = version;
    return nlh;
}

/* The id of the "ethtool" family: 0, or -EOPNOTSUPP when the kernel has none. */
static int resolve_family(struct tlsk__nl *nl, uint16_t *id)
{
    char req[256] __attribute__((aligned(4))) = { 0 };
    struct family_want w = { .name = ETHTOOL_GENL_NAME };
    /* No NLM_F_DUMP, no NLM_F_ACK: one reply or one NLMSG_ERROR. */
    struct nlmsghdr *nlh = genl_request(req, GENL_ID_CTRL, NLM_F_REQUEST, CTRL_CMD_GETFAMILY, 1);
    int rc;

    mnl_attr_put_strz(nlh, CTRL_ATTR_FAMILY_NAME, ETHTOOL_GENL_NAME);
    rc = tlsk__nl_request(nl, nlh, GENL_ID_CTRL, family_msg, &w);
    if (rc == -ENOENT) {
        return -EOPNOTSUPP;
    }
    if (rc < 0) {
        return rc;
    }
    if (!w.found) {
        return -EBADMSG; /* neither the reply nor an error */
    }
    *id = w.id;
    return 0;
}

/* Resolve the family, then dump the features of every interface. */
static int dump_features(struct tlsk__nl *nl, struct tlsk__nl_out *o)
{
    char req[256] __attribute__((aligned(4))) = { 0 };
    struct nlmsghdr *nlh;
    struct nlattr *hdr;
    uint16_t family = 0;
    int rc = resolve_family(nl, &family);

    if (rc < 0) {
        return rc;
    }
    nlh = genl_request(req, family, NLM_F_REQUEST | NLM_F_DUMP, ETHTOOL_MSG_FEATURES_GET,
                       ETHTOOL_GENL_VERSION);
    hdr = mnl_attr_nest_start(nlh, ETHTOOL_A_FEATURES_HEADER);
    /* No ETHTOOL_FLAG_COMPACT_BITSETS: bits come with their names. */
    mnl_attr_put_u32(nlh, ETHTOOL_A_HEADER_FLAGS, 0);
    mnl_attr_nest_end(nlh, hdr);
    return tlsk__nl_request(nl, nlh, family, features_msg, o);
}

int tlsk__ethtool_dump(struct tlsk__eth_iface *out, size_t cap, size_t *n)
{
    struct tlsk__nl_out o = { out, sizeof(*out), cap, 0 };

    return tlsk__nl_dump(NETLINK_GENERIC, dump_features, &o, n);
}
