/* service.h - the tools under a service manager (systemd): sockets passed by socket
 * activation (the LISTEN_FDS protocol, sd_listen_fds(3)) and state notifications (Type=notify,
 * sd_notify(3)).  Without a service manager both are no-ops: no LISTEN_FDS in the
 * environment, no NOTIFY_SOCKET.  docs/DEPLOY.md says how the shipped units use them. */
#ifndef TLSK_SERVICE_H
#define TLSK_SERVICE_H

#include <stddef.h>

/*
 * svc_listen_fd() - the listening socket the service manager passed, if any.  Takes the
 * LISTEN_FDS/LISTEN_PID/LISTEN_FDNAMES variables out of the environment (children never see
 * them).  Variables meant for another process (LISTEN_PID not ours) are ignored.
 * Returns the fd (non-blocking, close-on-exec), -ENOENT when none was passed, or another
 * negative errno with why filled: more than one socket (-E2BIG), or a descriptor that is not
 * a listening TCP socket (-ENOTSOCK).
 */
int svc_listen_fd(char *why, size_t why_len);

/* svc_notify() - send a state line ("READY=1", "RELOADING=1", "STOPPING=1", "STATUS=...")
 * to the service manager; nothing when the process was not started with NOTIFY_SOCKET. */
void svc_notify(const char *state);

#endif
