/* cli.h - small helpers shared by the tlsk command-line tools: logging, addresses, listening
 * and connecting with bounded waits, offload policy names, a bounded handshake. */
#ifndef TLSK_CLI_H
#define TLSK_CLI_H

#include <stdbool.h>
#include <stddef.h>

#include "tlsk.h"

/* Program name used as the prefix of every log line. */
extern const char *cli_prog;

/* cli_log() - one line "PROG: message\n" to stderr in a single write(2), so lines from
 * threads and processes never interleave. */
void cli_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* "auto", "tx", "off", "require".  Returns 0, or -EINVAL for another name. */
int cli_parse_offload(const char *name, enum tlsk_offload_policy *out);

/* Put fd in (on) or out of non-blocking mode.  Returns 0 or -errno. */
int cli_set_nonblock(int fd, bool on);

/*
 * cli_listen() - a listening TCP socket for "HOST:PORT", "[V6]:PORT" or ":PORT" (every
 * address).  Port 0 picks a free port; the address actually bound is written to bound
 * ("127.0.0.1:40123").  Returns the fd (close-on-exec, blocking) or -errno; a name that does
 * not resolve is -EADDRNOTAVAIL.  The accept queue is SOMAXCONN long (the kernel caps it at
 * net.core.somaxconn, 4096 by default): with a short queue a burst of connections overflows
 * it, and a connection whose final ACK the kernel dropped while the queue was full (syncookies)
 * sits established on the client's side and unknown on ours until the client sends.
 * Under socket activation (service.h) the socket the service manager passed is returned
 * instead (non-blocking) and spec is not used; a passed descriptor that is not a listening TCP
 * socket is logged and refused (-ENOTSOCK, -E2BIG).
 */
int cli_listen(const char *spec, char *bound, size_t bound_len);

/*
 * cli_connect() - connect to "HOST:PORT", "[V6]:PORT" or "unix:/path", trying each address,
 * within timeout_ms.  Returns a connected non-blocking close-on-exec fd, or -errno
 * (-ECONNREFUSED, -ETIMEDOUT, -EADDRNOTAVAIL when the name does not resolve, ...).
 */
int cli_connect(const char *spec, int timeout_ms);

/* Run the handshake on a non-blocking socket, waiting at most timeout_ms in total.
 * Returns 0 or a negative code (-ETIMEDOUT when the peer is too slow). */
int cli_handshake(struct tlsk_socket *s, int timeout_ms);

/* "TLSv1.2 ECDHE-RSA-AES128-GCM-SHA256, tx kernel, rx userspace (no_rekey)" */
void cli_describe(const struct tlsk_socket *s, char *out, size_t len);

/* Numeric "host:port" ("[v6]:port") of the local (remote = false) or remote end of fd,
 * or "unix" / "?" when there is none. */
void cli_sockname(int fd, bool remote, char *out, size_t len);

/* The same for an address in hand (from accept(2)). */
struct sockaddr;
void cli_addr_name(const struct sockaddr *sa, char *out, size_t len);

/* Numeric host and port separately (for PROXY headers and environment variables).
 * Returns the address family, or -errno. */
int cli_sockaddr(int fd, bool remote, char *host, size_t host_len, int *port);

/* Milliseconds on the monotonic clock. */
long long cli_now_ms(void);

/*
 * cli_escape() - untrusted bytes (a server name, an error detail) made safe for one log line:
 * printable ASCII is copied, every other byte and the backslash become "\xNN".  NULL becomes
 * "-".  Truncated to fit out (always NUL-terminated).  Returns out.
 */
const char *cli_escape(const char *in, char *out, size_t len);

/*
 * cli_servername_ok() - whether a server name a client sent (SNI) is one the tools accept:
 * 1 to 255 bytes of ASCII letters, digits, '-', '_' and '.'.  A host name never needs more;
 * anything else (control bytes, spaces, quotes, '/', non-ASCII) is refused during the
 * handshake by tlsk-proxy and tlsk-exec, so it never reaches a backend, a PROXY header, an
 * environment variable or a log line as it came.
 */
bool cli_servername_ok(const char *name);

/* How long and how much a lingering close drains (cli_linger_close, tlsk-serve's loop). */
#define CLI_LINGER_MS 1000
#define CLI_LINGER_BYTES (256u << 10)

/*
 * cli_linger_close() - close a TCP connection so that what was sent last (a fatal alert, a
 * close_notify) reaches the peer: shutdown(SHUT_WR), then read and discard what the peer
 * still sends until its FIN, CLI_LINGER_MS or CLI_LINGER_BYTES, then close.  Closing with
 * unread bytes queued would send RST, and a peer that gets RST may never read our alert.
 * On a kTLS socket control records are consumed too; when nothing more can be read (a
 * record the kernel refused), it waits for the peer's FIN within the same bound.
 */
void cli_linger_close(int fd);

/* cli_free_lingering() - tlsk_socket_free(s), whose descriptor it owns, with a lingering
 * close of the connection (cli_linger_close).  For every close after a fatal error. */
void cli_free_lingering(struct tlsk_socket *s);

/* cli_abort_close() - close with SO_LINGER 0: a TCP peer gets RST, never a clean FIN. */
void cli_abort_close(int fd);

#endif
