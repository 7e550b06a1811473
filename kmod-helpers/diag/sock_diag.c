/*
 * sock_diag.c - which TCP sockets have the tls ULP, and how, from inet_diag (docs/KERNEL.md §6.2).
 *
 * This is for admin tools and tests (tlsk-stat); the library looks at its own sockets with
 * getsockopt(SOL_TLS) instead.  The parser is separate from the socket code so that it can
 * be tested and fuzzed on synthetic buffers; the bounds checks are nl.c's.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>

#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <linux/tls.h>

#include "diag.h"
#include "nl.h"

/* The attributes that matter here, by type (MNL_TYPE_UNSPEC: ignored).  NUL_STRING checks
 * that the payload ends in '\0', so strcmp() on the ULP name stays inside it. */
static const tlsk__nl_policy diag_policy[INET_DIAG_MAX + 1] = {
    [INET_DIAG_ULP_INFO] = MNL_TYPE_NESTED };
static const tlsk__nl_policy ulp_policy[INET_ULP_INFO_MAX + 1] = {
    [INET_ULP_INFO_NAME] = MNL_TYPE_NUL_STRING, [INET_ULP_INFO_TLS] = MNL_TYPE_NESTED };
static const tlsk__nl_policy tls_policy[TLS_INFO_MAX + 1] = {
    [TLS_INFO_VERSION] = MNL_TYPE_U16,   [TLS_INFO_CIPHER] = MNL_TYPE_U16,
    [TLS_INFO_TXCONF] = MNL_TYPE_U16,    [TLS_INFO_RXCONF] = MNL_TYPE_U16,
    [TLS_INFO_ZC_RO_TX] = MNL_TYPE_FLAG, [TLS_INFO_RX_NO_PAD] = MNL_TYPE_FLAG };

static void format_addr(int family, const __be32 addr[4], char *dst, size_t dstlen)
{
    dst[0] = '\0';
    if ((family != AF_INET && family != AF_INET6) ||
        inet_ntop(family, addr, dst, (socklen_t)dstlen) == NULL) {
        dst[0] = '\0';
    }
}

static uint16_t u16_or_0(const struct nlattr *attr)
{
    return attr != NULL ? mnl_attr_get_u16(attr) : 0;
}

/*
 * One SOCK_DIAG_BY_FAMILY reply.  Returns 1 and fills *s for a tls socket, 0 for another
 * socket, -EBADMSG when the message does not parse.
 */
static int parse_reply(const struct nlmsghdr *nlh, struct tlsk__tls_sock *s)
{
    const struct nlattr *da[INET_DIAG_MAX + 1], *ua[INET_ULP_INFO_MAX + 1];
    const struct nlattr *ta[TLS_INFO_MAX + 1];
    const struct inet_diag_msg *m;
    const struct nlattr *name;

    if (tlsk__nl_msg_attrs(nlh, sizeof(*m), diag_policy, INET_DIAG_MAX, da) < 0) {
        return -EBADMSG;
    }
    m = mnl_nlmsg_get_payload(nlh);
    if (da[INET_DIAG_ULP_INFO] == NULL) {
        return 0;
    }
    if (tlsk__nl_nested(da[INET_DIAG_ULP_INFO], ulp_policy, INET_ULP_INFO_MAX, ua) < 0) {
        return -EBADMSG;
    }
    name = ua[INET_ULP_INFO_NAME];
    if (name == NULL || strcmp(mnl_attr_get_str(name), "tls") != 0) {
        return 0;
    }
    if (ua[INET_ULP_INFO_TLS] != NULL &&
        tlsk__nl_nested(ua[INET_ULP_INFO_TLS], tls_policy, TLS_INFO_MAX, ta) < 0) {
        return -EBADMSG;
    }

    memset(s, 0, sizeof(*s));
    s->family = m->idiag_family;
    format_addr(m->idiag_family, m->id.idiag_src, s->local, sizeof(s->local));
    format_addr(m->idiag_family, m->id.idiag_dst, s->remote, sizeof(s->remote));
    s->lport = ntohs(m->id.idiag_sport);
    s->rport = ntohs(m->id.idiag_dport);
    s->inode = m->idiag_inode;
    if (ua[INET_ULP_INFO_TLS] != NULL) {
        s->has_info = 1;
        s->version = u16_or_0(ta[TLS_INFO_VERSION]);
        s->cipher = u16_or_0(ta[TLS_INFO_CIPHER]);
        s->txconf = u16_or_0(ta[TLS_INFO_TXCONF]);
        s->rxconf = u16_or_0(ta[TLS_INFO_RXCONF]);
        s->zc_ro_tx = ta[TLS_INFO_ZC_RO_TX] != NULL;
        s->rx_no_pad = ta[TLS_INFO_RX_NO_PAD] != NULL;
    }
    return 1;
}

/* One message of an inet_diag dump: a tls socket goes to the struct tlsk__nl_out in data. */
static int reply_msg(const struct nlmsghdr *nlh, void *data)
{
    struct tlsk__tls_sock s;
    int rc = parse_reply(nlh, &s);

    if (rc > 0) {
        tlsk__nl_out_add(data, &s);
    }
    return rc < 0 ? rc : 0;
}

int tlsk__diag_parse(const void *buf, size_t len, struct tlsk__tls_sock *out, size_t cap,
                     size_t *n)
{
    struct tlsk__nl_out o = { out, sizeof(*out), cap, 0 };

    return tlsk__nl_parse_out(buf, len, SOCK_DIAG_BY_FAMILY, reply_msg, &o, n);
}

/* The dump of every TCP socket, IPv4 then IPv6. */
static int dump_sockets(struct tlsk__nl *nl, struct tlsk__nl_out *o)
{
    static const uint8_t families[2] = { AF_INET, AF_INET6 };
    int rc = 0;

    for (size_t i = 0; i < sizeof(families) && rc == 0; i++) {
        char req[MNL_ALIGN(sizeof(struct nlmsghdr)) + MNL_ALIGN(sizeof(struct inet_diag_req_v2))]
            __attribute__((aligned(4))) = { 0 };
        struct nlmsghdr *nlh = mnl_nlmsg_put_header(req);
        struct inet_diag_req_v2 *r;

        nlh->nlmsg_type = SOCK_DIAG_BY_FAMILY;
        nlh->nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
        r = mnl_nlmsg_put_extra_header(nlh, sizeof(*r));
        r->sdiag_family = families[i];
        r->sdiag_protocol = IPPROTO_TCP;
        /* INET_DIAG_INFO is what makes tcp_diag add its aux attributes (the ULP info). */
        r->idiag_ext = 1 << (INET_DIAG_INFO - 1);
        r->idiag_states = ~0u;
        rc = tlsk__nl_request(nl, nlh, SOCK_DIAG_BY_FAMILY, reply_msg, o);
    }
    return rc;
}

int tlsk__diag_dump(struct tlsk__tls_sock *out, size_t cap, size_t *n)
{
    struct tlsk__nl_out o = { out, sizeof(*out), cap, 0 };

    return tlsk__nl_dump(NETLINK_SOCK_DIAG, dump_sockets, &o, n);
}
