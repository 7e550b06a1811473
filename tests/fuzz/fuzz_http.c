/*
 * fuzz_http.c - libFuzzer target for tlsk-serve's HTTP/1.1 parsing (tools/common/http.c):
 * http_head_length(), http_parse_request(), and on every request that parses, what
 * tlsk-serve then does with it: http_target_path(), http_target_raw_path(),
 * http_dir_location(), http_parse_range(), http_etag() and http_etag_match(),
 * http_date_parse() (with a format/parse round trip), http_mime_type(), http_reason().
 * Not here: http_open_beneath() and http_listing(), which work on the file system.
 *
 * Input: one selector byte, then the bytes as received on a connection.  The stream is cut
 * into heads with http_head_length() as tlsk-serve does (pipelined requests follow each
 * other); each head is copied into a buffer of exactly its length, so ASan sees any read
 * past it.  Selector bits: 0 a 64-byte request line limit instead of 8192 (414), 1 24-byte
 * outputs for http_target_path() and http_target_raw_path() instead of PATH_MAX (414), 2 a
 * 16-byte Location buffer,
 * 3-5 the size of the representation the Range header is evaluated against.
 *
 * What is checked beyond memory safety (the promises of http.h): a mapped path is relative,
 * "." or made of non-empty segments none of which is "." or ".." and free of control
 * characters; a Location starts with exactly one '/'; a satisfiable range lies inside the
 * representation; a parsed date survives http_date() and back.
 *
 *   tests/fuzz/run.sh SECONDS   builds and runs this target with the others
 */
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "http.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_REQUESTS 64

static void fail(const char *what, const char *detail)
{
    fprintf(stderr, "fuzz_http: %s: \"%s\"\n", what, detail ? detail : "(null)");
    abort();
}

static void check_rel(const char *rel, const char *target)
{
    const char *seg = rel;

    if (strcmp(rel, ".") == 0) {
        return;
    }
    if (rel[0] == '\0' || rel[0] == '/') {
        fail("http_target_path: not a relative path", target);
    }
    for (;;) {
        size_t n = strcspn(seg, "/");
        if (n == 0 || (n == 1 && seg[0] == '.') || (n == 2 && seg[0] == '.' && seg[1] == '.')) {
            fail("http_target_path: empty, \".\" or \"..\" segment left", target);
        }
        for (size_t i = 0; i < n; i++) {
            unsigned char c = (unsigned char)seg[i];
            if (c < 0x20 || c == 0x7f) {
                fail("http_target_path: control character in the path", target);
            }
        }
        if (seg[n] == '\0') {
            break;
        }
        seg += n + 1;
    }
}

static void check_date(const char *s)
{
    time_t t, t2;
    char buf[30];

    if (!s || http_date_parse(s, &t) != 0) {
        return;
    }
    /* Years 0001..9999: what the four-digit IMF-fixdate can carry. */
    if (t < -62135596800LL || t > 253402300799LL) {
        return;
    }
    http_date(t, buf);
    if (http_date_parse(buf, &t2) != 0 || t2 != t) {
        fail("http_date/http_date_parse: no round trip", s);
    }
}

static void one_request(const char *head, size_t len, unsigned sel)
{
    static const off_t sizes[8] = { 0, 1, 2, 100, 4096, 1 << 20, (off_t)1 << 40, INT64_MAX };
    char *buf = malloc(len);
    struct http_request r;
    int rc;

    if (!buf) {
        return;
    }
    memcpy(buf, head, len);
    rc = http_parse_request(buf, len, (sel & 1) ? 64 : 8192, &r);
    (void)http_reason(rc ? rc : 200);
    if (rc != 0) {
        if (rc != 400 && rc != 414 && rc != 505) {
            fail("http_parse_request: unexpected status", r.method_name);
        }
        free(buf);
        return;
    }
    if (!r.method_name || !r.target || r.minor < 0 || r.minor > 9) {
        fail("http_parse_request: 0 without method, target or version", r.target);
    }

    {
        char rel[PATH_MAX], raw[PATH_MAX], loc[16 + 3 * PATH_MAX];
        size_t rel_cap = (sel & 2) ? 24 : sizeof rel;
        bool dir_slash = false;
        int n;

        n = http_target_raw_path(r.target, raw, (sel & 2) ? 24 : sizeof raw);
        if (n >= 0 && (raw[0] != '/' || strlen(raw) != (size_t)n || (size_t)n >= rel_cap ||
                       strcspn(raw, "?#") != (size_t)n)) {
            fail("http_target_raw_path", r.target);
        }
        rc = http_target_path(r.target, rel, rel_cap, &dir_slash);
        if (rc != 0 && rc != 400 && rc != 414) {
            fail("http_target_path: unexpected status", r.target);
        }
        if (rc == 0) {
            if (strlen(rel) >= rel_cap) {
                fail("http_target_path: longer than its buffer", r.target);
            }
            check_rel(rel, r.target);
            (void)http_mime_type(rel);
            n = http_dir_location(rel, r.target, loc, (sel & 4) ? 16 : sizeof loc);
            if (n >= 0) {
                if ((size_t)n != strlen(loc) || loc[0] != '/' || loc[1] == '/' ||
                    strcspn(loc, "?\\") < strcspn(loc, "?")) {
                    fail("http_dir_location: not a single-slash local path", loc);
                }
            } else if (!(sel & 4) && 3 * strlen(rel) + strlen(r.target) + 3 <= sizeof loc) {
                fail("http_dir_location: -1 although the Location fits", r.target);
            }
        }
    }

    if (r.range) {
        off_t size = sizes[(sel >> 3) & 7], first = -1, last = -1;
        rc = http_parse_range(r.range, size, &first, &last);
        if (rc == 1 && (first < 0 || first > last || last >= size)) {
            fail("http_parse_range: range outside the representation", r.range);
        }
        if (rc < -1 || rc > 1) {
            fail("http_parse_range: unexpected result", r.range);
        }
    }
    if (r.if_none_match || r.if_range) {
        /* The entity tag of the seeds' If-None-Match and If-Range. */
        struct stat st = { .st_size = 26, .st_ino = 42 };
        char etag[64];
        st.st_mtim.tv_sec = 100000000;
        http_etag(&st, etag);
        if (strcmp(etag, "\"5f5e100-1a-0-2a\"") != 0) {
            fail("http_etag", etag);
        }
        if (r.if_none_match) {
            (void)http_etag_match(r.if_none_match, etag);
            (void)http_etag_match(r.if_none_match, "\"\"");
        }
        if (r.if_range && r.if_range[0] != '"') {
            check_date(r.if_range);
        }
    }
    check_date(r.if_modified_since);
    free(buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *p;
    size_t left;
    unsigned sel;

    if (size < 1) {
        return 0;
    }
    sel = data[0];
    p = (const char *)data + 1;
    left = size - 1;
    for (int i = 0; i < MAX_REQUESTS && left > 0; i++) {
        size_t hl = http_head_length(p, left);
        if (hl == 0) {
            break;
        }
        if (hl > left) {
            fail("http_head_length: past the end of the buffer", NULL);
        }
        one_request(p, hl, sel);
        p += hl;
        left -= hl;
    }
    return 0;
}
