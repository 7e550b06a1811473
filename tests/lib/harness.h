/* harness.h - shared test helpers: loopback pairs, fixtures, blocking/non-blocking I/O loops,
 * a deterministic byte pattern, and kernel-state checks. */
#ifndef TLSK_HARNESS_H
#define TLSK_HARNESS_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "tlsk.h"

/* Directory of the RSA fixture tree (env TLSK_FIXTURES, else build/fixtures/rsa). */
const char *h_fixture(const char *name);
/* 1 when TLSK_EXPECT_KTLS=1: a kTLS test that cannot offload must fail. */
bool h_expect_ktls(void);
/* 1 in the kTLS tier on a kernel that re-keys TLS 1.3 (Linux 6.14+, the probe's rekey). */
bool h_kernel_rekey(void);
/* 1 in the "newest" real-kernel tier (TLSK_KERNEL_TIER=newest), whose kernel must re-key. */
bool h_newest_tier(void);
/* Bulk size for transfers: env TLSK_TEST_BULK_MIB (MiB), else def_mib. */
size_t h_bulk_bytes(size_t def_mib);

/* A connected TCP pair over 127.0.0.1.  Returns 0 or -errno. */
int h_tcp_pair(int *client, int *server);
/* pthread_create, or "Bail out!" (TAP) and exit 1: a test must not join a thread it never
 * started. */
void h_spawn(pthread_t *t, void *(*fn)(void *), void *arg);
/* Listen on 127.0.0.1 with an ephemeral port. Returns fd, sets *port. */
int h_listen(int *port);
int h_set_nonblock(int fd, bool on);

/* Deterministic pattern: byte at absolute offset off of stream seed. */
void h_pattern(uint32_t seed, uint64_t off, unsigned char *buf, size_t len);
/* Check buf against the pattern; returns the first bad offset or -1. */
int64_t h_pattern_check(uint32_t seed, uint64_t off, const unsigned char *buf, size_t len);
/* Create an unlinked temporary file holding len bytes of pattern seed. */
int h_pattern_file(uint32_t seed, size_t len);

/* I/O loops that wait with poll() on -EAGAIN (tlsk_socket_events). */
int h_handshake(struct tlsk_socket *s);
int h_write_all(struct tlsk_socket *s, const void *buf, size_t len);
/* Reads exactly len bytes unless EOF/error comes first: returns bytes read or negative. */
ssize_t h_read_full(struct tlsk_socket *s, void *buf, size_t len);
ssize_t h_read_some(struct tlsk_socket *s, void *buf, size_t len);
int h_shutdown(struct tlsk_socket *s);
/* Send count bytes of file_fd from offset 0 with tlsk_socket_sendfile. */
int h_sendfile_all(struct tlsk_socket *s, int file_fd, size_t count);
/* Stream len pattern bytes; receive and verify len pattern bytes.  Return 0 or a code. */
int h_send_pattern(struct tlsk_socket *s, uint32_t seed, size_t len);
int h_recv_pattern(struct tlsk_socket *s, uint32_t seed, size_t len);

/* Contexts from the fixture tree.  version 0 = any; suite NULL = default. */
struct tlsk_context *h_server_ctx(int version, const char *suite, enum tlsk_offload_policy pol,
                                  unsigned flags);
struct tlsk_context *h_client_ctx(int version, const char *suite, enum tlsk_offload_policy pol,
                                  unsigned flags);

/* Kernel state of one direction via getsockopt(SOL_TLS): 1 installed, 0 not. */
int h_kernel_has(int fd, bool tx, int *version, int *cipher);

/* /proc/net/tls_stat counter by name, or -1 when absent. */
long long h_tls_stat(const char *name);

#endif
