/*
 * nl.h - the netlink plumbing the diagnostics share (nl.c): one walk over the messages of a
 * received buffer, one over attributes, and one request/receive loop on a libmnl socket.
 * sock_diag.c (inet_diag) and ethtool.c (generic netlink) are written on top of it.
 *
 * The walks work on raw buffers, so that the parsers built on them can be tested and fuzzed
 * without a socket, and they never trust a length: everything comes from the kernel, but a
 * buffer cut by a short receive or a kernel that nests attributes differently must give
 * -EBADMSG, never an out-of-bounds read.  Internal to diag/; not installed.
 */
#ifndef TLSK_DIAG_NL_H
#define TLSK_DIAG_NL_H

#include <stddef.h>
#include <stdint.h>

#include <libmnl/libmnl.h>

/* How an attribute type is validated (tlsk__nl_attrs()); MNL_TYPE_UNSPEC: not looked at. */
typedef enum mnl_attr_data_type tlsk__nl_policy;

/* Called for each message of the wanted type: 0 to go on, or a negative error that stops the
 * walk and is returned from it. */
typedef int (*tlsk__nl_msg_fn)(const struct nlmsghdr *nlh, void *data);

/*
 * tlsk__nl_parse() - walk one buffer of netlink messages as received from the kernel.
 *
 * buf must be 4-byte aligned, as netlink buffers are; it is never read past len.  Messages of
 * type want go to fn.  The control messages are handled here: NLMSG_NOOP, acknowledgements
 * (NLMSG_ERROR with error 0) and messages of other types are skipped; NLMSG_ERROR with an
 * error returns it; NLMSG_DONE ends the walk (nothing after it is looked at) and returns the
 * dump's status when it carries an error; NLMSG_OVERRUN is -EBADMSG.
 *
 * Returns 1 at NLMSG_DONE, 0 when the buffer ended between two messages, the kernel's error,
 * what fn returned when < 0, -EBADMSG for a malformed or cut message (also bytes left over
 * that do not form a whole message, or an error code outside -4095..-1), -EINVAL for bad
 * arguments (buf NULL with len > 0, buf not aligned, len above INT_MAX, fn NULL, want below
 * NLMSG_MIN_TYPE).
 */
int tlsk__nl_parse(const void *buf, size_t len, uint16_t want, tlsk__nl_msg_fn fn, void *data)
    __attribute__((warn_unused_result));

/*
 * tlsk__nl_walk() - every attribute in [start, start + len) through cb, with libmnl's bounds
 * checks.  Unlike mnl_attr_parse(), which silently stops at an attribute that overruns its
 * area, that and trailing bytes too short for an attribute are -EBADMSG: they mean a cut or
 * corrupt reply.  A cb result other than MNL_CB_OK is -EBADMSG too.  Returns 0 or -EBADMSG.
 */
int tlsk__nl_walk(const void *start, size_t len, mnl_attr_cb_t cb, void *data)
    __attribute__((warn_unused_result));

/*
 * tlsk__nl_attrs() - the attributes in [start, start + len) by type, as tlsk__nl_walk() walks
 * them.  tb[0..max] is cleared; an attribute of type t <= max whose policy[t] is not
 * MNL_TYPE_UNSPEC must pass mnl_attr_validate(policy[t]) and is stored in tb[t] (when a type
 * repeats, the last one).  Other types are ignored, so a newer kernel's extra attributes are
 * harmless.  Returns 0 or -EBADMSG.
 */
int tlsk__nl_attrs(const void *start, size_t len, const tlsk__nl_policy *policy,
                   uint16_t max, const struct nlattr **tb) __attribute__((warn_unused_result));

/* tlsk__nl_attrs() over the payload of the attribute nest. */
int tlsk__nl_nested(const struct nlattr *nest, const tlsk__nl_policy *policy,
                    uint16_t max, const struct nlattr **tb) __attribute__((warn_unused_result));

/* tlsk__nl_msg_header() - the fixed header of hdrlen bytes that starts the payload of message
 * nlh (struct inet_diag_msg, struct genlmsghdr, ...), or NULL when nlmsg_len cannot hold it. */
const void *tlsk__nl_msg_header(const struct nlmsghdr *nlh, size_t hdrlen);

/*
 * tlsk__nl_msg_attrs() - tlsk__nl_attrs() over the attributes of message nlh, which follow its
 * fixed header of hdrlen bytes.  -EBADMSG when nlmsg_len cannot hold that header; once this
 * returned 0, mnl_nlmsg_get_payload(nlh) is the whole fixed header.
 */
int tlsk__nl_msg_attrs(const struct nlmsghdr *nlh, size_t hdrlen,
                       const tlsk__nl_policy *policy, uint16_t max,
                       const struct nlattr **tb) __attribute__((warn_unused_result));

/*
 * Where a parser puts the items it finds, over every buffer of a dump: like snprintf(), found
 * counts them all and only the first cap are stored in out[] (items of size bytes), so that
 * the caller can retry with a larger array.
 */
struct tlsk__nl_out {
    void *out;
    size_t size, cap, found;
};

/* tlsk__nl_out_add() - count item and store it when there is room. */
void tlsk__nl_out_add(struct tlsk__nl_out *o, const void *item);

/*
 * tlsk__nl_parse_out() - tlsk__nl_parse() for a parser whose fn adds to o.  *n receives
 * o->found, only when the return value is >= 0.  -EINVAL also when n is NULL or o->out is
 * NULL with o->cap > 0.
 */
int tlsk__nl_parse_out(const void *buf, size_t len, uint16_t want, tlsk__nl_msg_fn fn,
                       struct tlsk__nl_out *o, size_t *n) __attribute__((warn_unused_result));

/* One netlink socket and its receive buffer (see tlsk__nl_open()). */
struct tlsk__nl {
    struct mnl_socket *sock;
    void *buf;
    uint32_t seq; /* of the last request */
};

/* tlsk__nl_open() - open and bind a netlink socket of protocol bus (NETLINK_SOCK_DIAG,
 * NETLINK_GENERIC, ...) with a receive buffer.  Returns 0 or -errno; on error nothing is left
 * to close. */
int tlsk__nl_open(struct tlsk__nl *nl, int bus) __attribute__((warn_unused_result));

/* tlsk__nl_close() - close what tlsk__nl_open() opened. */
void tlsk__nl_close(struct tlsk__nl *nl);

/*
 * tlsk__nl_request() - send req (its nlmsg_seq is set here, one per request) and walk the
 * answer with tlsk__nl_parse(..., want, fn, data): with NLM_F_DUMP every buffer up to
 * NLMSG_DONE, otherwise the one buffer that holds the reply or the error.  Retries reads
 * interrupted by a signal.
 *
 * Returns 0, -errno of the socket, the kernel's error, what fn returned when < 0, or -EBADMSG
 * for an answer that does not parse (also an empty read).  Blocking.
 */
int tlsk__nl_request(struct tlsk__nl *nl, struct nlmsghdr *req, uint16_t want, tlsk__nl_msg_fn fn,
                     void *data) __attribute__((warn_unused_result));

/*
 * tlsk__nl_dump() - open a netlink socket of protocol bus (NETLINK_SOCK_DIAG, NETLINK_GENERIC,
 * ...), let requests() make its requests on it with tlsk__nl_request(), adding what the
 * replies hold to o (it returns 0 or a negative error), and close it.  *n receives o->found
 * when the return value is 0.
 *
 * Returns 0, -EINVAL (n NULL, o->out NULL with o->cap > 0), -errno of the socket, or what
 * requests() returned when < 0.  Blocking; thread-safe as long as requests() is.
 */
int tlsk__nl_dump(int bus, int (*requests)(struct tlsk__nl *nl, struct tlsk__nl_out *o),
                  struct tlsk__nl_out *o, size_t *n) __attribute__((warn_unused_result));

#endif
