/*
 * fuzz_ethtool.c - libFuzzer target for the ethtool netlink parsers
 * (kmod-helpers/diag/ethtool.c): tlsk__ethtool_parse_features() and tlsk__genl_parse_family().
 *
 * The first input byte chooses the parser (even: features, odd: family); the rest is copied
 * so that it ends at a PROT_NONE page (rounded up to 4 bytes, as netlink buffers are
 * aligned): an overread faults even inside libmnl, which ASan does not instrument.  Inputs
 * longer than the guarded area are cut.  A small cap exercises the counting past it.
 *
 *   tests/fuzz/run.sh SECONDS   builds and runs this target with the others
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
#define FAMILY 27 /* what the seed generator uses */

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
    struct tlsk__eth_iface out[2];
    size_t n = 0;

    if (size < 1) {
        return 0;
    }
    int which = data[0] & 1;
    data++;
    size--;
    if (size > GUARDED_BYTES) {
        size = GUARDED_BYTES;
    }
    size_t room = (size + 3) & ~(size_t)3;
    unsigned char *buf = guarded_area() + GUARDED_BYTES - room;
    memset(buf + size, 0, room - size);
    memcpy(buf, data, size);

    if (which) {
        uint16_t id = 0;
        int rc = tlsk__genl_parse_family(buf, size, "ethtool", &id);
        if (rc != 0 && rc != 1 && (rc > -1 || rc < -4095)) {
            abort();
        }
        return 0;
    }
    memset(out, 0x5a, sizeof(out));
    int rc = tlsk__ethtool_parse_features(buf, size, FAMILY, out, 2, &n);
    if (rc >= 0) {
        if (rc > 1) {
            abort();
        }
        /* Each interface takes a whole reply: nlmsghdr 16, genlmsghdr 4, a header nest of 20
         * (index and a name of at least a NUL) and two bitset nests of 4 at least. */
        if (n > size / 48) {
            abort();
        }
        for (size_t i = 0; i < n && i < 2; i++) {
            if (memchr(out[i].name, '\0', sizeof(out[i].name)) == NULL) {
                abort();
            }
            for (int f = 0; f < TLSK__ETH_TLS_COUNT; f++) {
                if (out[i].hw[f] > 1 || out[i].active[f] > 1) {
                    abort();
                }
            }
        }
    } else if (rc < -4095) {
        abort();
    }
    return 0;
}
