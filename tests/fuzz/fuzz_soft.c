/*
 * fuzz_soft.c - libFuzzer target for tlsk's own record layer's receive side (lib/soft.c):
 * the byte stream a peer sends, read back through tlsk__soft_recv() as a lean connection
 * without the kernel reads it (docs/KERNEL.md §16).
 *
 * Input: the selector byte of record_keys.h (low 3 bits the suite, high 5 bits the starting
 * sequence number; the two CCM suites, which soft.c does not carry, must be refused at
 * install), then the stream.  It is written into one end of a socket pair and that end is
 * shut, so the stream ends in EOF; the other end is read through tlsk__soft_recv() with
 * buffer sizes taken from the stream's own bytes (1 byte to 64 KiB), so records are handed
 * up whole, in pieces and several at a time.  Checked on every call:
 *   - a count never exceeds the buffer, and ASan sees a write past it (the buffer is exactly
 *     that long);
 *   - data never shares a read with a control record: a read of a control record type is
 *     that record alone, "end of record" only on its last piece;
 *   - the only failures are those of kernel RX and OpenSSL's unexpected_message (EBADMSG,
 *     EMSGSIZE, EINVAL, EPROTO), EKEYEXPIRED past the last sequence number, or ENOMEM, and a
 *     failure is sticky: the next read gives it again;
 *   - the receive sequence number never goes back;
 *   - tlsk__soft_pending() says so exactly when a read can answer without the socket.
 *   - a TLS 1.3 KeyUpdate read whole (type 24, length 1, its five bytes in one handshake
 *     record or split over several) is answered as the bridge answers it: the next key is
 *     installed at sequence number 0 (fuzz_record_next_keys), and the records behind it,
 *     often read already, must open under that key.
 * The seeds: fuzz_record's single sealed records (mkseed_record.c) and streams of several
 * records at consecutive sequence numbers (mkseed_soft.c: data, alerts, empty records, a full
 * record, a split KeyUpdate and data under the next key), so the fuzzer starts inside valid
 * tags.
 *
 *   tests/fuzz/run.sh SECONDS   builds and runs this target with the others
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "record_keys.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fail(const char *what, long a, long b)
{
    fprintf(stderr, "fuzz_soft: %s (%ld, %ld)\n", what, a, b);
    abort();
}

static bool allowed(ssize_t rc)
{
    return rc == -EBADMSG || rc == -EMSGSIZE || rc == -EINVAL || rc == -EPROTO || rc == -ENOMEM ||
           rc == -EKEYEXPIRED; /* the last sequence number used */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct tlsk_socket *s;
    struct tlsk__keys k;
    uint64_t seq;
    int sv[2], rc;
    size_t pick = 1, guard = 0;
    struct {
        unsigned char h[4], last; /* header, and the body's latest byte */
        size_t have, left;        /* header bytes read; body bytes still to come */
    } hm = { 0 };
    bool in_ctrl = false, rekeyed;

    if (size < 1 || size > (1u << 17)) {
        return 0;
    }
    fuzz_record_keys(data[0], &k, &seq);
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0) {
        return 0;
    }
    /* Room for the whole stream, so the write below never blocks. */
    setsockopt(sv[1], SOL_SOCKET, SO_SNDBUF, &(int){ 1 << 20 }, sizeof(int));
    setsockopt(sv[0], SOL_SOCKET, SO_RCVBUF, &(int){ 1 << 20 }, sizeof(int));
    if (size > 1 && write(sv[1], data + 1, size - 1) != (ssize_t)(size - 1)) {
        close(sv[0]);
        close(sv[1]);
        return 0;
    }
    shutdown(sv[1], SHUT_WR);
    fcntl(sv[0], F_SETFL, O_NONBLOCK);

    if (!(s = calloc(1, sizeof *s))) {
        abort();
    }
    s->fd = sv[0];
    if (tlsk__soft_new(s) != 0) {
        abort();
    }
    rc = tlsk__soft_install(s, false, &k);
    if (k.tlsk_cipher == TLSK_CIPHER_AES_128_CCM) {
        if (rc != -EINVAL) {
            fail("a CCM key was taken", rc, 0);
        }
        goto out;
    }
    if (rc != 0 || tlsk__soft_seq(s, false) != seq) {
        fail("install", rc, 0);
    }
    for (;;) {
        /* The next buffer size, from the stream itself: 1 byte to 64 KiB. */
        size_t len = 1 + ((size_t)data[pick % size] * 257 + pick) % 65536;
        unsigned char *buf = malloc(len);
        bool pending = tlsk__soft_pending(s);
        uint64_t seq0 = tlsk__soft_seq(s, false);
        ssize_t n, again;
        int type;
        bool eor;

        pick = pick * 31 + 7;
        if (!buf) {
            abort();
        }
        n = tlsk__soft_recv(s, buf, len, &type, &eor);
        rekeyed = false;
        if (n > 0 && type == TLSK_REC_HANDSHAKE && k.version == TLS1_3_VERSION) {
            /* Handshake messages, which may span records: re-key after a whole KeyUpdate. */
            for (ssize_t i = 0; i < n; i++) {
                if (hm.have < 4) {
                    hm.h[hm.have++] = buf[i];
                    hm.left = (size_t)hm.h[1] << 16 | (size_t)hm.h[2] << 8 | hm.h[3];
                    if (hm.have < 4 || hm.left > 0) {
                        continue;
                    }
                } else {
                    hm.last = buf[i];
                    if (--hm.left > 0) {
                        continue;
                    }
                }
                if (hm.h[0] == 24 && hm.h[1] == 0 && hm.h[2] == 0 && hm.h[3] == 1 && hm.last <= 1) {
                    fuzz_record_next_keys(&k);
                    if (tlsk__soft_install(s, false, &k) != 0 || tlsk__soft_seq(s, false) != 0) {
                        fail("the next key was not taken", 0, 0);
                    }
                    rekeyed = true;
                }
                hm.have = 0; /* the message is over */
            }
        }
        free(buf);
        if (n > (ssize_t)len) {
            fail("more than the buffer", (long)n, (long)len);
        }
        if (tlsk__soft_seq(s, false) < seq0 && !rekeyed) {
            fail("the sequence number went back", (long)seq0, 0);
        }
        if (n == -EAGAIN) {
            if (pending) {
                fail("pending, yet the read waited for the socket", 0, 0);
            }
            fail("EAGAIN after the stream ended", 0, 0);
        }
        if (n < 0) {
            if (!allowed(n)) {
                fail("an unexpected failure", (long)n, 0);
            }
            buf = malloc(16);
            again = buf ? tlsk__soft_recv(s, buf, 16, &type, &eor) : n;
            free(buf);
            if (again != n) {
                fail("a failure that did not stay", (long)n, (long)again);
            }
            break;
        }
        if (n == 0 && type == TLSK_REC_APPDATA) {
            break; /* the end of the stream */
        }
        if (type != TLSK_REC_APPDATA) {
            /* A control record: alone, pieces in order, the end marked on the last. */
            in_ctrl = !eor;
        } else if (in_ctrl) {
            fail("data inside a control record", (long)n, 0);
        }
        if (++guard > (1u << 20)) {
            fail("no end", 0, 0);
        }
    }
out:
    tlsk__soft_free(s);
    free(s);
    close(sv[0]);
    close(sv[1]);
    return 0;
}
