/*
 * fuzz_tls_stat.c - libFuzzer target for tlsk__tls_stat_parse() (kmod-helpers/diag/tls_stat.c).
 *
 * The input ends at a PROT_NONE page, so reading past len faults (the parser must not treat
 * the text as NUL-terminated).  Checks the documented contract: only -EINVAL or -ERANGE as
 * errors, present = 1, have[] only 0 or 1 and values 0 where have[] is 0.
 *
 *   tests/fuzz/run.sh SECONDS   builds and runs this target and fuzz_diag.c
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
    struct tlsk__tls_stat st;

    if (size > GUARDED_BYTES) {
        size = GUARDED_BYTES;
    }
    char *text = (char *)guarded_area() + GUARDED_BYTES - size;
    memcpy(text, data, size);

    int rc = tlsk__tls_stat_parse(&st, text, size);
    if (rc != 0 && rc != -EINVAL && rc != -ERANGE) {
        abort();
    }
    if (st.present != 1) {
        abort();
    }
    for (int i = 0; i < TLSK__STAT_COUNT; i++) {
        if (st.have[i] > 1 || (!st.have[i] && st.v[i] != 0)) {
            abort();
        }
    }
    return 0;
}
