/*
 * sock_diag.c - which TCP sockets have the tls ULP, and how, from inet_diag (docs/KERNEL.md §6.2).
 *
 * This is for admin tools and tests (tlsk-stat); the library looks at its own sockets with
 * getsockopt(SOL_TLS) instead.  The parser is separate from the socket code so that it can
 * be tested and fuzzed on synthetic buffers: everything it reads comes from the kernel, but a
 * buffer cut by a short receive or a kernel that nests attributes differently must never make
 * it read out of bounds.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <libmnl/libmnl.h>
#include <linux/inet_diag.h>
#include <linux/netlink.h>
#include <linux/sock_diag.h>
#include <linux/tls.h>

#include "kmod.h"

/* A dump reply is at most 32 KiB per recvmsg (netlink_dump() sizes its skb from the receive
 * buffer, capped at 32 KiB); a smaller buffer would make recvmsg truncate (MSG_TRUNC). */
#define DIAG_RECV_BUF 32768

/* Attributes of one reply that matter here; NULL when absent. */
struct diag_attrs {
    const struct nlattr *ulp;
};

struct ulp_attrs {
    const struct nlattr *name;
    const struct nlattr *tls;
};

struct tls_attrs {
    const struct nlattr *version, *cipher, *txconf, *rxconf, *zc_ro_tx, *rx_no_pad;
};

static int diag_attr_cb(const struct nlattr *attr, void *data)
{
    struct diag_attrs *a = data;

    if (mnl_attr_get_type(attr) == INET_DIAG_ULP_INFO) {
        if (mnl_attr_validate(attr, MNL_TYPE_NESTED) < 0) {
            return MNL_CB_ERROR;
        }
        a->ulp = attr;
    }
    return MNL_CB_OK;
}

static int ulp_attr_cb(const struct nlattr *attr, void *data)
{
    struct ulp_attrs *a = data;

    switch (mnl_attr_get_type(attr)) {
    case INET_ULP_INFO_NAME:
        /* NUL_STRING checks that the payload ends in '\0', so strcmp() stays inside it. */
        if (mnl_attr_validate(attr, MNL_TYPE_NUL_STRING) < 0) {
            return MNL_CB_ERROR;
        }
        a->name = attr;
        break;
    case INET_ULP_INFO_TLS:
        if (mnl_attr_validate(attr, MNL_TYPE_NESTED) < 0) {
            return MNL_CB_ERROR;
        }
        a->tls = attr;
        break;
    default:
        break;
    }
    return MNL_CB_OK;
}

static int tls_attr_cb(const struct nlattr *attr, void *data)
{
    struct tls_attrs *a = data;
    const struct nlattr **slot = NULL;
    enum mnl_attr_data_type type = MNL_TYPE_U16;

    switch (mnl_attr_get_type(attr)) {
    case TLS_INFO_VERSION:
        slot = &a->version;
        break;
    case TLS_INFO_CIPHER:
        slot = &a->cipher;
        break;
    case TLS_INFO_TXCONF:
        slot = &a->txconf;
        break;
    case TLS_INFO_RXCONF:
        slot = &a->rxconf;
        break;
    case TLS_INFO_ZC_RO_TX:
        slot = &a->zc_ro_tx;
        type = MNL_TYPE_FLAG;
        break;
    case TLS_INFO_RX_NO_PAD:
        slot = &a->rx_no_pad;
        type = MNL_TYPE_FLAG;
        break;
    default:
        return MNL_CB_OK;
    }
    if (mnl_attr_validate(attr, type) < 0) {
        return MNL_CB_ERROR;
    }
    *slot = attr;
    return MNL_CB_OK;
}

/*
 * Walk the attributes in [start, start + len) with libmnl's bounds checks.  Unlike
 * mnl_attr_parse(), which silently stops at an attribute that overruns its area, that and any
 * trailing bytes too short for an attribute are -EBADMSG: they mean a cut or corrupt reply.
 */
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
    /* Negative: the last attribute's alignment padding was not there, which is harmless. */
    return left > 0 ? -EBADMSG : 0;
}

static int walk_nested(const struct nlattr *nest, mnl_attr_cb_t cb, void *data)
{
    return walk_attrs(mnl_attr_get_payload(nest), mnl_attr_get_payload_len(nest), cb, data);
}

static void format_addr(int family, const __be32 addr[4], char *dst, size_t dstlen)
{
    dst[0] = '\0';
    if ((family != AF_INET && family != AF_INET6) ||
        inet_ntop(family, addr, dst, (socklen_t)dstlen) == NULL) {
        dst[0] = '\0';
    }
}

/*
 * One SOCK_DIAG_BY_FAMILY reply.  Returns 1 and fills *s for a tls socket, 0 for another
 * socket, -EBADMSG when the message does not parse.
 */
static int parse_reply(const struct nlmsghdr *nlh, struct tlsk__tls_sock *s)
{
    struct diag_attrs da = { 0 };
    struct ulp_attrs ua = { 0 };
    struct tls_attrs ta = { 0 };
    const struct inet_diag_msg *m;
    const size_t hdr = MNL_NLMSG_HDRLEN + MNL_ALIGN(sizeof(*m));

    /* mnl_nlmsg_ok() has checked nlmsg_len against the buffer; here, against the header. */
    if (nlh->nlmsg_len < hdr) {
        return -EBADMSG;
    }
    m = mnl_nlmsg_get_payload(nlh);
    if (walk_attrs((const char *)nlh + hdr, nlh->nlmsg_len - hdr, diag_attr_cb, &da) < 0) {
        return -EBADMSG;
    }
    if (da.ulp == NULL) {
        return 0;
    }
    if (walk_nested(da.ulp, ulp_attr_cb, &ua) < 0) {
        return -EBADMSG;
    }
    if (ua.name == NULL || strcmp(mnl_attr_get_str(ua.name), "tls") != 0) {
        return 0;
    }
    if (ua.tls != NULL && walk_nested(ua.tls, tls_attr_cb, &ta) < 0) {
        return -EBADMSG;
    }

    memset(s, 0, sizeof(*s));
    s->family = m->idiag_family;
    format_addr(m->idiag_family, m->id.idiag_src, s->local, sizeof(s->local));
    format_addr(m->idiag_family, m->id.idiag_dst, s->remote, sizeof(s->remote));
    s->lport = ntohs(m->id.idiag_sport);
    s->rport = ntohs(m->id.idiag_dport);
    s->inode = m->idiag_inode;
    if (ua.tls != NULL) {
        s->has_info = 1;
        s->version = ta.version ? mnl_attr_get_u16(ta.version) : 0;
        s->cipher = ta.cipher ? mnl_attr_get_u16(ta.cipher) : 0;
        s->txconf = ta.txconf ? mnl_attr_get_u16(ta.txconf) : 0;
        s->rxconf = ta.rxconf ? mnl_attr_get_u16(ta.rxconf) : 0;
        s->zc_ro_tx = ta.zc_ro_tx != NULL;
        s->rx_no_pad = ta.rx_no_pad != NULL;
    }
    return 1;
}

/* The error of NLMSG_ERROR or NLMSG_DONE: 0, a -errno, or -EBADMSG when out of range. */
static int msg_error(int err)
{
    if (err == 0 || (err < 0 && err >= -4095)) {
        return err;
    }
    return -EBADMSG;
}

int tlsk__diag_parse(const void *buf, size_t len, struct tlsk__tls_sock *out, size_t cap,
                     size_t *n)
{
    const struct nlmsghdr *nlh = buf;
    size_t found = 0;
    int left;
    int done = 0;

    if (n == NULL || (buf == NULL && len > 0) || (out == NULL && cap > 0) || len > INT_MAX ||
        ((uintptr_t)buf & 3) != 0) {
        return -EINVAL;
    }
    left = (int)len;
    /* mnl_nlmsg_ok() compares (int)nlmsg_len with the length left, so an nlmsg_len above
     * INT_MAX passes it as negative and mnl_nlmsg_next() would then jump far out of the
     * buffer (libmnl 1.0.4; found by test_diag's corruption test).  Compare unsigned too. */
    while (mnl_nlmsg_ok(nlh, left) && nlh->nlmsg_len <= (uint32_t)left) {
        if (nlh->nlmsg_type == NLMSG_DONE) {
            /* A dump's NLMSG_DONE carries its status as an int (netlink_dump_done()). */
            if (nlh->nlmsg_len >= MNL_NLMSG_HDRLEN + sizeof(int)) {
                int err;
                memcpy(&err, mnl_nlmsg_get_payload(nlh), sizeof(err));
                err = msg_error(err);
                if (err < 0) {
                    return err;
                }
            }
            done = 1;
            left = 0;
            break;
        }
        if (nlh->nlmsg_type == NLMSG_ERROR) {
            const struct nlmsgerr *e = mnl_nlmsg_get_payload(nlh);
            int err;

            if (nlh->nlmsg_len < MNL_NLMSG_HDRLEN + sizeof(*e)) {
                return -EBADMSG;
            }
            err = msg_error(e->error);
            if (err < 0) {
                return err;
            }
        } else if (nlh->nlmsg_type == SOCK_DIAG_BY_FAMILY) {
            struct tlsk__tls_sock tmp;
            int rc = parse_reply(nlh, &tmp);

            if (rc < 0) {
                return rc;
            }
            if (rc > 0) {
                if (found < cap) {
                    out[found] = tmp;
                }
                found++;
            }
        } else if (nlh->nlmsg_type == NLMSG_OVERRUN) {
            return -EBADMSG;
        }
        nlh = mnl_nlmsg_next(nlh, &left);
    }
    /* Bytes left that do not form a whole message: the buffer was cut.  (A negative count
     * only means the last message's alignment padding was not in the buffer.) */
    if (left > 0) {
        return -EBADMSG;
    }
    *n = found;
    return done;
}

/* Dump one address family into out[]; *n receives the count found (may exceed cap). */
static int dump_family(struct mnl_socket *nl, uint8_t family, uint32_t seq, void *buf,
                       struct tlsk__tls_sock *out, size_t cap, size_t *n)
{
    char req[MNL_ALIGN(sizeof(struct nlmsghdr)) + MNL_ALIGN(sizeof(struct inet_diag_req_v2))]
        __attribute__((aligned(4)));
    struct nlmsghdr *nlh;
    struct inet_diag_req_v2 *r;
    size_t total = 0;

    memset(req, 0, sizeof(req));
    nlh = mnl_nlmsg_put_header(req);
    nlh->nlmsg_type = SOCK_DIAG_BY_FAMILY;
    nlh->nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
    nlh->nlmsg_seq = seq;
    r = mnl_nlmsg_put_extra_header(nlh, sizeof(*r));
    r->sdiag_family = family;
    r->sdiag_protocol = IPPROTO_TCP;
    /* INET_DIAG_INFO is what makes tcp_diag add its aux attributes (the ULP info). */
    r->idiag_ext = 1 << (INET_DIAG_INFO - 1);
    r->idiag_states = ~0u;

    if (mnl_socket_sendto(nl, nlh, nlh->nlmsg_len) < 0) {
        return -errno;
    }
    for (;;) {
        ssize_t got = mnl_socket_recvfrom(nl, buf, DIAG_RECV_BUF);
        size_t k = 0;
        int rc;

        if (got < 0) {
            if (errno == EINTR) {
                continue;
            }
            return -errno;
        }
        if (got == 0) {
            return -EBADMSG;
        }
        rc = tlsk__diag_parse(buf, (size_t)got, total < cap ? out + total : NULL,
                              total < cap ? cap - total : 0, &k);
        if (rc < 0) {
            return rc;
        }
        total += k;
        if (rc == 1) {
            break;
        }
    }
    *n = total;
    return 0;
}

int tlsk__diag_dump(struct tlsk__tls_sock *out, size_t cap, size_t *n)
{
    static const uint8_t families[2] = { AF_INET, AF_INET6 };
    struct mnl_socket *nl;
    void *buf = NULL;
    size_t total = 0;
    int rc = 0;

    if (n == NULL || (out == NULL && cap > 0)) {
        return -EINVAL;
    }
    nl = mnl_socket_open2(NETLINK_SOCK_DIAG, SOCK_CLOEXEC);
    if (nl == NULL) {
        return -errno;
    }
    if (mnl_socket_bind(nl, 0, MNL_SOCKET_AUTOPID) < 0) {
        rc = -errno;
        goto out;
    }
    /* malloc: 32 KiB is too much stack for a helper that threads may call. */
    buf = malloc(DIAG_RECV_BUF);
    if (buf == NULL) {
        rc = -ENOMEM;
        goto out;
    }
    for (size_t i = 0; i < sizeof(families); i++) {
        size_t k = 0;

        rc = dump_family(nl, families[i], (uint32_t)i + 1, buf, total < cap ? out + total : NULL,
                         total < cap ? cap - total : 0, &k);
        if (rc < 0) {
            goto out;
        }
        total += k;
    }
    *n = total;
out:
    free(buf);
    mnl_socket_close(nl);
    return rc;
}
