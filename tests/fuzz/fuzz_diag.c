/*
 * fuzz_diag.c - libFuzzer target for tlsk__diag_parse() (kmod-helpers/diag/sock_diag.c).
 *
 * The input is copied so that it ends at a PROT_NONE page (rounded up to 4 bytes, as netlink
 * buffers are aligned): an overread faults even inside libmnl, which ASan does not instrument.
 * Inputs longer than the guarded area are cut.  A small cap exercises the counting past it.
 *
 *   tests/fuzz/run.sh SECONDS   builds and runs this target and fuzz_tls_stat.c
 */
#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "diag.h"

#define GUARDED_BYTES 65536

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static unsigned char *guarded_area(void)
{
    static unsigned char *base;
    if (base == NULL) {
        size_t pg = (size_t)sysconf(_SC_PAGESIZE);
        base = mmap(NULL, GUARDED_BYTES + pg, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                    -1, 0);
        if (base == MAP_FAILED || mprotect(base + GUARDED_BYTES, pg, PROT_NONE) != 0) {
            abort();
        }
    }
    return base;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct tlsk__tls_sock out[3];
    size_t n = 0;

    if (size > GUARDED_BYTES) {
        size = GUARDED_BYTES;
    }
    size_t room = (size + 3) & ~(size_t)3;
    unsigned char *buf = guarded_area() + GUARDED_BYTES - room;
    memset(buf + size, 0, room - size);
    memcpy(buf, data, size);

    int rc = tlsk__diag_parse(buf, size, out, 3, &n);
    if (rc >= 0) {
        /* Each socket takes a whole inet_diag reply (16 + 72 bytes at least). */
        if (n > size / 88) {
            abort();
        }
        for (size_t i = 0; i < n && i < 3; i++) {
            if (memchr(out[i].local, '\0', sizeof(out[i].local)) == NULL ||
                memchr(out[i].remote, '\0', sizeof(out[i].remote)) == NULL) {
                abort();
            }
        }
    }
    /* 1 (done), 0, or a -errno: never anything else. */
    if (rc > 1 || rc < -4095) {
        abort();
    }
    return 0;
}
