/*
 * kmsg.c - records on a kTLS socket with their type: recvmsg with a TLS_GET_RECORD_TYPE
 * control buffer (without one the kernel answers a control record with EIO, forever), and
 * sendmsg with TLS_SET_RECORD_TYPE for alerts and handshake messages (docs/KERNEL.md §3.2,
 * §4.3).  The one place that builds or parses that control message.
 */
#include <errno.h>
#include <string.h>
#include <sys/socket.h>

#include "internal.h"
#include "kconst.h"

ssize_t tlsk__krecv(int fd, void *buf, size_t len, int *type, bool *eor)
{
    char cbuf[CMSG_SPACE(sizeof(unsigned char))];
    struct iovec iov = { .iov_base = buf, .iov_len = len };
    struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf,
                          .msg_controllen = sizeof cbuf };
    struct cmsghdr *cm;
    ssize_t n;

    do {
        n = recvmsg(fd, &msg, 0);
    } while (n < 0 && errno == EINTR);
    if (n < 0) {
        return errno == EWOULDBLOCK ? -EAGAIN : -errno;
    }
    *type = TLSK_REC_APPDATA;
    for (cm = CMSG_FIRSTHDR(&msg); cm; cm = CMSG_NXTHDR(&msg, cm)) {
        if (cm->cmsg_level == TLSK_SOL_TLS && cm->cmsg_type == TLSK_TLS_GET_RECORD_TYPE) {
            *type = *CMSG_DATA(cm);
        }
    }
    /* A control record longer than the buffer comes in pieces; the last has MSG_EOR. */
    *eor = (msg.msg_flags & MSG_EOR) != 0;
    return n;
}

ssize_t tlsk__ksend(int fd, int type, const void *data, size_t len)
{
    char cbuf[CMSG_SPACE(1)];
    struct iovec iov = { .iov_base = (void *)data, .iov_len = len };
    struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf,
                          .msg_controllen = sizeof cbuf };
    struct cmsghdr *cm;
    ssize_t n;

    memset(cbuf, 0, sizeof cbuf);
    cm = CMSG_FIRSTHDR(&msg);
    cm->cmsg_level = TLSK_SOL_TLS;
    cm->cmsg_type = TLSK_TLS_SET_RECORD_TYPE;
    cm->cmsg_len = CMSG_LEN(1);
    *CMSG_DATA(cm) = (unsigned char)type;
    do {
        n = sendmsg(fd, &msg, MSG_NOSIGNAL);
    } while (n < 0 && errno == EINTR);
    if (n < 0) {
        return errno == EWOULDBLOCK ? -EAGAIN : -errno;
    }
    return n;
}
