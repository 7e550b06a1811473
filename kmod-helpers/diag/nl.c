/*
 * nl.c - the netlink plumbing of the diagnostics: message walk, attribute walk, request loop.
 *
 * The request loop uses libmnl's socket calls but not mnl_cb_run(): its message walk relies
 * on mnl_nlmsg_ok() alone, which in libmnl 1.0.4 compares (int)nlmsg_len with the length
 * left, so an nlmsg_len above INT_MAX passes as negative and mnl_nlmsg_next() then jumps far
 * out of the buffer (found by test_diag's corruption test).  It also ignores the status a
 * dump's NLMSG_DONE carries and a cut message at the end of a buffer.  tlsk__nl_parse() bounds
 * all three, and the dumps use the very walk the unit tests and fuzz targets run on raw
 * buffers.
 */
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <linux/netlink.h>

#include "nl.h"

/* A dump reply is at most 32 KiB per recvmsg (netlink_dump() sizes its skb from the receive
 * buffer, capped at 32 KiB); a smaller buffer would make recvmsg truncate (MSG_TRUNC).
 * malloc'd: too much stack for a helper that threads may call. */
#define NL_RECV_BUF 32768

/* ---------------------------------------------------------------------------------------- */
/* Messages                                                                                 */

/* The error of NLMSG_ERROR or NLMSG_DONE: 0, a -errno, or -EBADMSG when out of range. */
static int msg_error(int err)
{
    if (err == 0 || (err < 0 && err >= -4095)) {
        return err;
    }
    return -EBADMSG;
}

/* A control message: 1 at NLMSG_DONE, 0 to go on, or an error. */
static int control_msg(const struct nlmsghdr *nlh)
{
    int err = 0;

    switch (nlh->nlmsg_type) {
    case NLMSG_DONE:
        /* A dump's NLMSG_DONE carries its status as an int (netlink_dump_done()). */
        if (nlh->nlmsg_len >= MNL_NLMSG_HDRLEN + sizeof(int)) {
            memcpy(&err, mnl_nlmsg_get_payload(nlh), sizeof(err));
            err = msg_error(err);
        }
        return err < 0 ? err : 1;
    case NLMSG_ERROR: {
        struct nlmsgerr e;

        if (nlh->nlmsg_len < MNL_NLMSG_HDRLEN + sizeof(e)) {
            return -EBADMSG;
        }
        memcpy(&e, mnl_nlmsg_get_payload(nlh), sizeof(e));
        return msg_error(e.error); /* 0: an acknowledgement */
    }
    case NLMSG_OVERRUN:
        return -EBADMSG;
    default:
        return 0; /* NLMSG_NOOP */
    }
}

int tlsk__nl_parse(const void *buf, size_t len, uint16_t want, tlsk__nl_msg_fn fn, void *data)
{
    const struct nlmsghdr *nlh = buf;
    int left;

    /* Control message types are below NLMSG_MIN_TYPE; a family or request type never is. */
    if ((buf == NULL && len > 0) || len > INT_MAX || ((uintptr_t)buf & 3) != 0 || fn == NULL ||
        want < NLMSG_MIN_TYPE) {
        return -EINVAL;
    }
    left = (int)len;
    /* mnl_nlmsg_ok() alone would let an nlmsg_len above INT_MAX through (see the top of this
     * file): compare unsigned too. */
    while (mnl_nlmsg_ok(nlh, left) && nlh->nlmsg_len <= (uint32_t)left) {
        int rc;

        if (nlh->nlmsg_type < NLMSG_MIN_TYPE) {
            rc = control_msg(nlh);
        } else {
            rc = nlh->nlmsg_type == want ? fn(nlh, data) : 0;
        }
        if (rc != 0) {
            return rc;
        }
        nlh = mnl_nlmsg_next(nlh, &left);
    }
    /* Bytes left that do not form a whole message: the buffer was cut.  (A negative count
     * only means the last message's alignment padding was not in the buffer.) */
    return left > 0 ? -EBADMSG : 0;
}

void tlsk__nl_out_add(struct tlsk__nl_out *o, const void *item)
{
    if (o->found < o->cap) {
        memcpy((char *)o->out + o->found * o->size, item, o->size);
    }
    o->found++;
}

static int check_out(const struct tlsk__nl_out *o, const size_t *n)
{
    return n == NULL || (o->out == NULL && o->cap > 0) ? -EINVAL : 0;
}

int tlsk__nl_parse_out(const void *buf, size_t len, uint16_t want, tlsk__nl_msg_fn fn,
                       struct tlsk__nl_out *o, size_t *n)
{
    int rc = check_out(o, n);

    if (rc == 0) {
        rc = tlsk__nl_parse(buf, len, want, fn, o);
    }
    if (rc >= 0) {
        *n = o->found;
    }
    return rc;
}

/* ---------------------------------------------------------------------------------------- */
/* Attributes                                                                               */

int tlsk__nl_walk(const void *start, size_t len, mnl_attr_cb_t cb, void *data)
{
    const struct nlattr *attr = start;
    int left;

    /* Attribute areas lie inside a message already bounded by tlsk__nl_parse(). */
    if (len > INT_MAX) {
        return -EBADMSG;
    }
    left = (int)len;
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

struct attrs_table {
    const tlsk__nl_policy *policy;
    uint16_t max;
    const struct nlattr **tb;
};

static int attrs_cb(const struct nlattr *attr, void *data)
{
    const struct attrs_table *t = data;
    uint16_t type = mnl_attr_get_type(attr);

    if (type > t->max || t->policy[type] == MNL_TYPE_UNSPEC) {
        return MNL_CB_OK;
    }
    if (mnl_attr_validate(attr, t->policy[type]) < 0) {
        return MNL_CB_ERROR;
    }
    t->tb[type] = attr;
    return MNL_CB_OK;
}

int tlsk__nl_attrs(const void *start, size_t len, const tlsk__nl_policy *policy,
                   uint16_t max, const struct nlattr **tb)
{
    struct attrs_table t = { policy, max, tb };

    memset(tb, 0, ((size_t)max + 1) * sizeof(*tb));
    return tlsk__nl_walk(start, len, attrs_cb, &t);
}

int tlsk__nl_nested(const struct nlattr *nest, const tlsk__nl_policy *policy,
                    uint16_t max, const struct nlattr **tb)
{
    return tlsk__nl_attrs(mnl_attr_get_payload(nest), mnl_attr_get_payload_len(nest), policy,
                          max, tb);
}

const void *tlsk__nl_msg_header(const struct nlmsghdr *nlh, size_t hdrlen)
{
    /* tlsk__nl_parse() has checked nlmsg_len against the buffer; here, against the header. */
    return nlh->nlmsg_len < MNL_NLMSG_HDRLEN + MNL_ALIGN(hdrlen) ? NULL
                                                                 : mnl_nlmsg_get_payload(nlh);
}

int tlsk__nl_msg_attrs(const struct nlmsghdr *nlh, size_t hdrlen,
                       const tlsk__nl_policy *policy, uint16_t max,
                       const struct nlattr **tb)
{
    const size_t hdr = MNL_NLMSG_HDRLEN + MNL_ALIGN(hdrlen);

    if (tlsk__nl_msg_header(nlh, hdrlen) == NULL) {
        return -EBADMSG;
    }
    return tlsk__nl_attrs((const char *)nlh + hdr, nlh->nlmsg_len - hdr, policy, max, tb);
}

/* ---------------------------------------------------------------------------------------- */
/* The socket                                                                               */

int tlsk__nl_open(struct tlsk__nl *nl, int bus)
{
    int rc;

    memset(nl, 0, sizeof(*nl));
    nl->sock = mnl_socket_open2(bus, SOCK_CLOEXEC);
    if (nl->sock == NULL) {
        return -errno;
    }
    if (mnl_socket_bind(nl->sock, 0, MNL_SOCKET_AUTOPID) < 0) {
        rc = -errno;
        goto fail;
    }
    nl->buf = malloc(NL_RECV_BUF);
    if (nl->buf == NULL) {
        rc = -ENOMEM;
        goto fail;
    }
    return 0;
fail:
    mnl_socket_close(nl->sock);
    nl->sock = NULL;
    return rc;
}

void tlsk__nl_close(struct tlsk__nl *nl)
{
    free(nl->buf);
    if (nl->sock != NULL) {
        mnl_socket_close(nl->sock);
    }
    memset(nl, 0, sizeof(*nl));
}

int tlsk__nl_request(struct tlsk__nl *nl, struct nlmsghdr *req, uint16_t want, tlsk__nl_msg_fn fn,
                     void *data)
{
    const int dump = (req->nlmsg_flags & NLM_F_DUMP) == NLM_F_DUMP;

    req->nlmsg_seq = ++nl->seq;
    if (mnl_socket_sendto(nl->sock, req, req->nlmsg_len) < 0) {
        return -errno;
    }
    for (;;) {
        ssize_t got = mnl_socket_recvfrom(nl->sock, nl->buf, NL_RECV_BUF);
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
        rc = tlsk__nl_parse(nl->buf, (size_t)got, want, fn, data);
        if (rc < 0) {
            return rc;
        }
        if (rc == 1 || !dump) {
            return 0;
        }
    }
}

int tlsk__nl_dump(int bus, int (*requests)(struct tlsk__nl *nl, struct tlsk__nl_out *o),
                  struct tlsk__nl_out *o, size_t *n)
{
    struct tlsk__nl nl;
    int rc = check_out(o, n);

    if (rc == 0) {
        rc = tlsk__nl_open(&nl, bus);
    }
    if (rc < 0) {
        return rc;
    }
    rc = requests(&nl, o);
    tlsk__nl_close(&nl);
    if (rc == 0) {
        *n = o->found;
    }
    return rc;
}
