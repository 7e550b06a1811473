/* service.c - socket activation and readiness notification through libsystemd, the
 * well-kept implementation of both protocols (sd_listen_fds(3), sd_notify(3)). */
#include "service.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <systemd/sd-daemon.h>

int svc_listen_fd(char *why, size_t why_len)
{
    int n = sd_listen_fds(1), fd = SD_LISTEN_FDS_START, fl;

    if (n < 0) {
        snprintf(why, why_len, "LISTEN_FDS from the service manager: %s", strerror(-n));
        return n;
    }
    if (n == 0) {
        return -ENOENT;
    }
    if (n > 1) {
        snprintf(why, why_len,
                 "the service manager passed %d sockets; one listening TCP socket is taken "
                 "(one ListenStream= in the .socket unit)", n);
        return -E2BIG;
    }
    if (sd_is_socket_inet(fd, AF_UNSPEC, SOCK_STREAM, 1, 0) <= 0) {
        snprintf(why, why_len,
                 "descriptor %d from the service manager is not a listening TCP socket "
                 "(ListenStream= with an address or port is wanted)", fd);
        return -ENOTSOCK;
    }
    fcntl(fd, F_SETFD, FD_CLOEXEC);
    fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) != 0) {
        snprintf(why, why_len, "descriptor %d: %s", fd, strerror(errno));
        return -errno;
    }
    return fd;
}

void svc_notify(const char *state)
{
    sd_notify(0, state);
}
