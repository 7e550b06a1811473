/*
 * test_serve.c - the HTTP pieces of tlsk-serve (tools/common/http.c) on their own: request
 * parsing, mapping targets below the root, ranges, dates, entity tags, MIME types, listings;
 * the folder redirect's Location (never "//", issue 10) and listings that show nothing of a
 * symbolic link's target outside the root (issue 10).
 * Table-driven, negative cases first-class.  The end-to-end server tests with real clients
 * are in serve.t next to this file.
 *
 * http.c is compiled into this program directly: the tools' shared objects are not part of
 * the library the tests link.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../../tools/common/http.c"
#include "tap.h"

static int parse(const char *text, struct http_request *r, char *buf, size_t cap)
{
    size_t len = strlen(text), hl;
    if (len >= cap) {
        return -1;
    }
    memcpy(buf, text, len + 1);
    hl = http_head_length(buf, len);
    if (hl == 0) {
        return -2;
    }
    return http_parse_request(buf, hl, 8192, r);
}

static void test_parse(void)
{
    static const struct {
        const char *text;
        int want;
    } cases[] = {
        { "GET / HTTP/1.1\r\nHost: a\r\n\r\n", 0 },
        { "GET / HTTP/1.1\nHost: a\n\n", 0 },           /* bare LF */
        { "\r\n\r\nGET / HTTP/1.0\r\n\r\n", 0 },        /* leading empty lines, 1.0 no Host */
        { "GET / HTTP/1.1\r\n\r\n", 400 },              /* 1.1 without Host */
        { "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400 },
        { "GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505 },
        { "GET / HTTP/1.1 \r\nHost: a\r\n\r\n", 400 },  /* trailing space */
        { "GET  / HTTP/1.1\r\nHost: a\r\n\r\n", 400 },  /* two spaces */
        { "GET / FTP/1.1\r\nHost: a\r\n\r\n", 400 },
        { "G(T / HTTP/1.1\r\nHost: a\r\n\r\n", 400 },   /* method not a token */
        { "GET /a\x01 HTTP/1.1\r\nHost: a\r\n\r\n", 400 },
        { "GET / HTTP/1.1\r\nHost : a\r\n\r\n", 400 },  /* space before the colon */
        { "GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n", 400 },
        { "GET / HTTP/1.1\r\nHost: a\r\nNoColon\r\n\r\n", 400 },
        { "GET / HTTP/1.1\r\nHost: a\rb\r\n\r\n", 400 }, /* lone CR */
        { "GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400 },
        { "GET / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", 400 },
        { "GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1x\r\n\r\n", 400 },
        { "GET / HTTP/1.1\r\nHost: a\r\nX: \x7f\r\n\r\n", 400 },
    };
    char buf[4096];
    struct http_request r;

    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int got = parse(cases[i].text, &r, buf, sizeof buf);
        if (!tap_ok(got == cases[i].want, "parse case %zu -> %d", i, cases[i].want)) {
            tap_diag("  got %d", got);
        }
    }

    TAP_IS(parse("GET /x?y HTTP/1.1\r\nhost: h:1\r\nConnection: Keep-Alive, close\r\n"
                 "Range: bytes=1-2\r\nIf-None-Match: \"e\"\r\nIf-Modified-Since: d\r\n"
                 "If-Range: \"e\"\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
                 &r, buf, sizeof buf),
           0, "parse: all the fields tlsk-serve uses");
    TAP_OK(r.method == HTTP_GET && strcmp(r.target, "/x?y") == 0 && r.minor == 1,
           "request line fields");
    TAP_OK(strcmp(r.host, "h:1") == 0 && strcmp(r.range, "bytes=1-2") == 0 &&
               strcmp(r.if_none_match, "\"e\"") == 0 && strcmp(r.if_modified_since, "d") == 0 &&
               strcmp(r.if_range, "\"e\"") == 0,
           "header values, case-insensitive names, trimmed");
    TAP_OK(r.content_length == 5 && r.has_transfer_encoding, "Content-Length, Transfer-Encoding");
    TAP_OK(!r.keep_alive, "Connection: close wins");
    parse("HEAD / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", &r, buf, sizeof buf);
    TAP_OK(r.method == HTTP_HEAD && r.keep_alive, "HTTP/1.0 keep-alive when asked");
    parse("HEAD / HTTP/1.0\r\n\r\n", &r, buf, sizeof buf);
    TAP_OK(!r.keep_alive, "HTTP/1.0 closes by default");
    parse("DELETE / HTTP/1.1\r\nHost: a\r\n\r\n", &r, buf, sizeof buf);
    TAP_OK(r.method == HTTP_OTHER && strcmp(r.method_name, "DELETE") == 0, "other methods");
    TAP_IS(parse("GET / HTTP/1.1\r\nHost: a\r\n", &r, buf, sizeof buf), -2,
           "head without its empty line is incomplete");
    {
        char line[9000];
        memset(line, 'a', sizeof line);
        memcpy(line, "GET /", 5);
        strcpy(line + 8800, " HTTP/1.1\r\nHost: a\r\n\r\n");
        TAP_IS(parse(line, &r, buf, sizeof buf), -1, "(buffer check)");
        {
            char *big = malloc(20000);
            size_t hl;
            memcpy(big, line, strlen(line) + 1);
            hl = http_head_length(big, strlen(big));
            TAP_IS(http_parse_request(big, hl, 8192, &r), 414, "request line over the limit: 414");
            free(big);
        }
    }
}

static void test_paths(void)
{
    static const struct {
        const char *target, *want; /* want NULL: refused with status */
        int status;
        bool slash;
    } cases[] = {
        { "/", ".", 0, true },
        { "/a/b.txt", "a/b.txt", 0, false },
        { "/a//b/./c/", "a/b/c", 0, true },
        { "/a/../b", "b", 0, false },
        { "/a/%2e%2e/b", "b", 0, false },
        { "/%7Euser/x%20y", "~user/x y", 0, false },
        { "/q?x=/../..", "q", 0, false },
        { "/f#frag", "f", 0, false },
        { "https://host:1/a/b?q", "a/b", 0, false },
        { "http://host", ".", 0, true },
        { "/..", NULL, 400, false },
        { "/../etc/passwd", NULL, 400, false },
        { "/a/../../etc", NULL, 400, false },
        { "/%2e%2e/etc", NULL, 400, false },
        { "/%2E%2E%2Fetc", NULL, 400, false },
        { "/..%2f..%2fetc", NULL, 400, false },
        { "/a%00b", NULL, 400, false },
        { "/a%0ab", NULL, 400, false },
        { "/a%zz", NULL, 400, false },
        { "/a%2", NULL, 400, false },
        { "a/b", NULL, 400, false },
        { "*", NULL, 400, false },
    };
    char out[256];

    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        bool slash = false;
        int rc = http_target_path(cases[i].target, out, sizeof out, &slash);
        if (cases[i].want) {
            if (!tap_ok(rc == 0 && strcmp(out, cases[i].want) == 0 && slash == cases[i].slash,
                        "path %s -> %s", cases[i].target, cases[i].want)) {
                tap_diag("  rc %d, got '%s', slash %d", rc, rc == 0 ? out : "", slash);
            }
        } else {
            TAP_IS(rc, cases[i].status, "path %s refused", cases[i].target);
        }
    }
    {
        char small[8];
        bool slash;
        TAP_IS(http_target_path("/abcdefghij", small, sizeof small, &slash), 414,
               "path longer than the buffer: 414");
    }
}

static void test_ranges(void)
{
    static const struct {
        const char *v;
        long long size;
        int want;
        long long first, last;
    } cases[] = {
        { "bytes=0-99", 1000, 1, 0, 99 },
        { "bytes=100-", 1000, 1, 100, 999 },
        { "bytes=-10", 1000, 1, 990, 999 },
        { "bytes=-5000", 1000, 1, 0, 999 },
        { "bytes=500-5000", 1000, 1, 500, 999 },
        { "bytes = 1-2", 1000, 1, 1, 2 },
        { "BYTES=1-2", 1000, 1, 1, 2 },
        { "bytes=999-999", 1000, 1, 999, 999 },
        { "bytes=1000-", 1000, -1, 0, 0 },
        { "bytes=99999999999999999999999-", 1000, -1, 0, 0 },
        { "bytes=-0", 1000, -1, 0, 0 },
        { "bytes=0-", 0, -1, 0, 0 },
        { "bytes=5-1", 1000, 0, 0, 0 },
        { "bytes=1-2,4-5", 1000, 0, 0, 0 },
        { "bytes=a-b", 1000, 0, 0, 0 },
        { "bytes=-", 1000, 0, 0, 0 },
        { "items=1-2", 1000, 0, 0, 0 },
        { "bytes 1-2", 1000, 0, 0, 0 },
    };

    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        off_t f = -7, l = -7;
        int rc = http_parse_range(cases[i].v, (off_t)cases[i].size, &f, &l);
        bool good = rc == cases[i].want &&
                    (rc != 1 || (f == (off_t)cases[i].first && l == (off_t)cases[i].last));
        if (!tap_ok(good, "range '%s' of %lld -> %d", cases[i].v, cases[i].size,
                    cases[i].want)) {
            tap_diag("  got %d [%lld, %lld]", rc, (long long)f, (long long)l);
        }
    }
}

static void test_dates_tags_types(void)
{
    char d[30], tag[64];
    time_t t;
    struct stat st;

    http_date(784111777, d);
    TAP_OK(strcmp(d, "Sun, 06 Nov 1994 08:49:37 GMT") == 0, "IMF-fixdate: %s", d);
    TAP_OK(http_date_parse("Sun, 06 Nov 1994 08:49:37 GMT", &t) == 0 && t == 784111777,
           "parse IMF-fixdate");
    TAP_OK(http_date_parse("Sunday, 06-Nov-94 08:49:37 GMT", &t) == 0 && t == 784111777,
           "parse RFC 850");
    TAP_OK(http_date_parse("Sun Nov  6 08:49:37 1994", &t) == 0 && t == 784111777,
           "parse asctime");
    TAP_IS(http_date_parse("yesterday", &t), -1, "garbage date refused");
    TAP_IS(http_date_parse("Sun, 06 Nov 1994 08:49:37 GMT trailing", &t), -1,
           "trailing garbage refused");

    memset(&st, 0, sizeof st);
    st.st_size = 10;
    st.st_mtim.tv_sec = 1000;
    st.st_ino = 5;
    http_etag(&st, tag);
    TAP_OK(tag[0] == '"' && tag[strlen(tag) - 1] == '"', "entity tag is quoted: %s", tag);
    TAP_OK(http_etag_match(tag, tag), "tag matches itself");
    {
        char list[200];
        snprintf(list, sizeof list, "\"x\", W/%s", tag);
        TAP_OK(http_etag_match(list, tag), "weak form in a list matches (If-None-Match)");
    }
    TAP_OK(http_etag_match("*", tag), "* matches");
    TAP_OK(!http_etag_match("\"x\", \"y\"", tag), "other tags do not match");
    TAP_OK(!http_etag_match("\"unterminated", tag), "malformed list does not match");
    st.st_size = 11;
    {
        char tag2[64];
        http_etag(&st, tag2);
        TAP_OK(strcmp(tag, tag2) != 0, "tag changes with the size");
    }

    {
        /* The tag is written by hand (no printf on the response path): the same bytes as
         * printf's %llx for every field, at 0, 1, 2^63 and the largest values. */
        static const unsigned long long v[] = { 0, 1, 0xa, 0x1234abcdULL, 1ULL << 63, ~0ULL };
        bool same = true;
        char want[64], got[64];
        for (size_t i = 0; i < sizeof v / sizeof v[0]; i++) {
            memset(&st, 0, sizeof st);
            st.st_mtim.tv_sec = (time_t)v[i];
            st.st_size = (off_t)v[(i + 1) % 6];
            st.st_mtim.tv_nsec = (long)(v[(i + 2) % 6] % 1000000000ULL);
            st.st_ino = (ino_t)v[(i + 3) % 6];
            snprintf(want, sizeof want, "\"%llx-%llx-%lx-%llx\"",
                     (unsigned long long)st.st_mtim.tv_sec, (unsigned long long)st.st_size,
                     (unsigned long)st.st_mtim.tv_nsec, (unsigned long long)st.st_ino);
            http_etag(&st, got);
            if (strcmp(want, got) != 0) {
                tap_diag("etag %s, printf gives %s", got, want);
                same = false;
            }
        }
        TAP_OK(same, "entity tag: the bytes printf's %%llx gives, edge values included");
    }
    TAP_OK(strcmp(http_mime_type("a/INDEX.HTML"), "text/html; charset=utf-8") == 0,
           "MIME: extension case-insensitive");
    TAP_OK(strcmp(http_mime_type("x.Png"), "image/png") == 0 &&
               strcmp(http_mime_type("x.WOFF2"), "font/woff2") == 0 &&
               strcmp(http_mime_type("x.c"), "text/plain; charset=utf-8") == 0 &&
               strcmp(http_mime_type("x.pn"), "application/octet-stream") == 0 &&
               strcmp(http_mime_type("x.pngx"), "application/octet-stream") == 0 &&
               strcmp(http_mime_type("x."), "application/octet-stream") == 0,
           "MIME: mixed case, one letter, a prefix and an extension of an extension");
    TAP_OK(strcmp(http_mime_type("x.tar.gz"), "application/gzip") == 0, "MIME: last extension");
    TAP_OK(strcmp(http_mime_type("dir.d/noext"), "application/octet-stream") == 0,
           "MIME: a dot in the folder name is not an extension");
    TAP_OK(strcmp(http_mime_type(".bashrc"), "application/octet-stream") == 0,
           "MIME: unknown");
    TAP_OK(strcmp(http_reason(416), "Range Not Satisfiable") == 0, "reason phrases");
}

static void test_listing(void)
{
    char dir[] = "/tmp/test_serve.XXXXXX", path[256];
    char *page;
    size_t len = 0;
    int fd;

    if (!mkdtemp(dir)) {
        tap_bail("mkdtemp");
    }
    snprintf(path, sizeof path, "%s/<b>&\"x\".txt", dir);
    close(open(path, O_CREAT | O_WRONLY, 0644));
    snprintf(path, sizeof path, "%s/sub dir", dir);
    mkdir(path, 0755);
    fd = open(dir, O_RDONLY | O_DIRECTORY);
    page = http_listing(fd, fd, dir, ".", "/a<b>/", &len);
    TAP_OK(page && len == strlen(page), "listing built");
    TAP_OK(page && strstr(page, "Index of /a&lt;b&gt;/"), "title escaped");
    TAP_OK(page && strstr(page, "&lt;b&gt;&amp;&quot;x&quot;.txt</a>"), "names escaped");
    TAP_OK(page && strstr(page, "href=\"%3Cb%3E%26%22x%22.txt\""), "links percent-encoded");
    TAP_OK(page && strstr(page, "href=\"sub%20dir/\">sub dir/</a>") &&
               strstr(page, "sub dir/") < strstr(page, "x&quot;.txt"),
           "folders first, with a slash");
    TAP_OK(page && strstr(page, "href=\"../\""), "parent link below the root");
    free(page);
    page = http_listing(fd, fd, dir, ".", "/", &len);
    TAP_OK(page && !strstr(page, "href=\"../\""), "no parent link at the root");
    free(page);
    close(fd);
    snprintf(path, sizeof path, "%s/<b>&\"x\".txt", dir);
    unlink(path);
    snprintf(path, sizeof path, "%s/sub dir", dir);
    rmdir(path);
    rmdir(dir);
}

/* Issue 10: the redirect that adds a folder's slash is built from the normalised path. */
static void test_dir_location(void)
{
    static const struct {
        const char *target, *want;
    } cases[] = {
        { "//evil.example/..", "/" },
        { "//evil.example/../sub", "/sub/" },
        { "///evil.example/%2e%2e", "/" },
        { "/\\evil.example/..", "/" },
        { "/%5Cevil.example", "/%5Cevil.example/" },
        { "/a b/c", "/a%20b/c/" },
        { "/sub?x=1&y=//z", "/sub/?x=1&y=//z" },
        { "https://other.example//evil.example/..", "/" },
        { "/", "/" },
    };
    char rel[256], out[512];

    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        bool slash;
        int rc = http_target_path(cases[i].target, rel, sizeof rel, &slash);
        int n = rc == 0 ? http_dir_location(rel, cases[i].target, out, sizeof out) : -1;
        if (!tap_ok(n > 0 && strcmp(out, cases[i].want) == 0 && out[1] != '/',
                    "Location for %s is %s (never \"//\")", cases[i].target, cases[i].want)) {
            tap_diag("  rc %d, rel '%s', got '%s'", rc, rc == 0 ? rel : "", n > 0 ? out : "");
        }
    }
    TAP_IS(http_dir_location("abcdefghijkl", "/abcdefghijkl", out, 8), -1,
           "Location longer than the buffer: -1");
}

/* Issue 10: a listing tells nothing of what a symbolic link out of the root points to. */
static void test_listing_links(void)
{
    char top[] = "/tmp/test_serve_links.XXXXXX", root[300], p[400], q[400];
    size_t len = 0;
    char *page;
    int rfd, dfd;

    if (!mkdtemp(top)) {
        tap_bail("mkdtemp");
    }
    snprintf(root, sizeof root, "%s/root", top);
    mkdir(root, 0755);
    snprintf(p, sizeof p, "%s/outside.txt", top);
    {
        int fd = open(p, O_CREAT | O_WRONLY | O_TRUNC, 0644);
        char big[4321];
        memset(big, 'x', sizeof big);
        TAP_OK(fd >= 0 && write(fd, big, sizeof big) == (ssize_t)sizeof big, "outside file");
        close(fd);
    }
    snprintf(p, sizeof p, "%s/sub", root);
    mkdir(p, 0755);
    snprintf(p, sizeof p, "%s/sub/inside.txt", root);
    {
        int fd = open(p, O_CREAT | O_WRONLY | O_TRUNC, 0644);
        TAP_OK(fd >= 0 && write(fd, "12345", 5) == 5, "inside file");
        close(fd);
    }
    snprintf(q, sizeof q, "%s/sub/out-rel", root);
    TAP_OK(symlink("../../outside.txt", q) == 0, "link out (relative)");
    snprintf(p, sizeof p, "%s/outside.txt", top);
    snprintf(q, sizeof q, "%s/sub/out-abs", root);
    TAP_OK(symlink(p, q) == 0, "link out (absolute)");
    snprintf(q, sizeof q, "%s/sub/in-link", root);
    TAP_OK(symlink("inside.txt", q) == 0, "link inside");
    snprintf(q, sizeof q, "%s/sub/up-in", root);
    TAP_OK(symlink("../sub/inside.txt", q) == 0, "link up and back inside");
    snprintf(q, sizeof q, "%s/sub/dangling", root);
    TAP_OK(symlink("nothing-here", q) == 0, "dangling link");

    rfd = open(root, O_RDONLY | O_DIRECTORY);
    snprintf(p, sizeof p, "%s/sub", root);
    dfd = open(p, O_RDONLY | O_DIRECTORY);
    page = http_listing(dfd, rfd, root, "sub", "/sub/", &len);
    TAP_OK(page != NULL, "listing with links built");
    TAP_OK(page && !strstr(page, "4321"), "no size of the file outside the root anywhere");
    TAP_OK(page && strstr(page, ">out-rel</a></td><td>-</td><td>-</td>"),
           "relative link out: no size, no time");
    TAP_OK(page && strstr(page, ">out-abs</a></td><td>-</td><td>-</td>"),
           "absolute link out: no size, no time");
    TAP_OK(page && strstr(page, ">in-link</a></td><td>5</td>"), "link inside: its target's size");
    TAP_OK(page && strstr(page, ">up-in</a></td><td>5</td>"),
           "link through .. that stays inside: its target's size");
    TAP_OK(page && !strstr(page, "dangling"), "dangling link not listed");
    free(page);
    close(dfd);
    close(rfd);
    const char *names[] = { "sub/out-rel", "sub/out-abs", "sub/in-link", "sub/up-in",
                            "sub/dangling", "sub/inside.txt" };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        snprintf(p, sizeof p, "%s/%s", root, names[i]);
        unlink(p);
    }
    snprintf(p, sizeof p, "%s/sub", root);
    rmdir(p);
    rmdir(root);
    snprintf(p, sizeof p, "%s/outside.txt", top);
    unlink(p);
    rmdir(top);
}

int main(void)
{
    test_dir_location();
    test_listing_links();
    test_parse();
    test_paths();
    test_ranges();
    test_dates_tags_types();
    test_listing();
    return tap_done();
}
