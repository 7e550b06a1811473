/* http.c - HTTP/1.1 parsing and helpers for tlsk-serve (see http.h). */
#include "http.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <linux/openat2.h>

size_t http_head_length(const char *buf, size_t len)
{
    size_t i = 0;

    /* Skip empty lines before the request line. */
    while (i < len && (buf[i] == '\r' || buf[i] == '\n')) {
        i++;
    }
    for (; i < len; i++) {
        if (buf[i] != '\n') {
            continue;
        }
        if (i + 1 < len && buf[i + 1] == '\n') {
            return i + 2;
        }
        if (i + 2 < len && buf[i + 1] == '\r' && buf[i + 2] == '\n') {
            return i + 3;
        }
    }
    return 0;
}

/* RFC 9110 token characters. */
static bool is_tchar(unsigned char c)
{
    return isalnum(c) || (c && strchr("!#$%&'*+-.^_`|~", c));
}

static char *trim(char *s)
{
    char *e;
    while (*s == ' ' || *s == '\t') {
        s++;
    }
    e = s + strlen(s);
    while (e > s && (e[-1] == ' ' || e[-1] == '\t')) {
        *--e = '\0';
    }
    return s;
}

/* Whether a comma-separated header value lists token (case-insensitive). */
static bool list_has(const char *v, const char *token)
{
    size_t n = strlen(token);
    while (*v) {
        while (*v == ' ' || *v == '\t' || *v == ',') {
            v++;
        }
        if (strncasecmp(v, token, n) == 0 && (v[n] == '\0' || v[n] == ',' || v[n] == ' ' ||
                                               v[n] == '\t')) {
            return true;
        }
        while (*v && *v != ',') {
            v++;
        }
    }
    return false;
}

int http_parse_request(char *buf, size_t len, size_t max_line, struct http_request *r)
{
    char *p = buf, *end = buf + len, *line, *sp1, *sp2, *nl;
    bool conn_close = false, conn_keep = false;

    memset(r, 0, sizeof *r);
    r->content_length = -1;
    while (p < end && (*p == '\r' || *p == '\n')) {
        p++;
    }
    /* Split into NUL-terminated lines; a CR is only allowed right before the LF. */
    for (char *q = p; q < end; q++) {
        if (*q == '\0') {
            return 400;
        }
        if (*q == '\r') {
            if (q + 1 >= end || q[1] != '\n') {
                return 400;
            }
            *q = '\0';
        } else if (*q == '\n') {
            *q = '\0';
        }
    }

    /* Request line: method SP target SP HTTP/1.x */
    line = p;
    nl = memchr(line, '\0', (size_t)(end - line));
    if (!nl) {
        return 400;
    }
    if ((size_t)(nl - line) > max_line) {
        return 414;
    }
    sp1 = strchr(line, ' ');
    if (!sp1 || sp1 == line) {
        return 400;
    }
    *sp1 = '\0';
    for (const char *m = line; *m; m++) {
        if (!is_tchar((unsigned char)*m)) {
            return 400;
        }
    }
    r->method_name = line;
    r->method = strcmp(line, "GET") == 0 ? HTTP_GET : strcmp(line, "HEAD") == 0 ? HTTP_HEAD
                                                                                 : HTTP_OTHER;
    sp2 = strchr(sp1 + 1, ' ');
    if (!sp2 || sp2 == sp1 + 1) {
        return 400;
    }
    *sp2 = '\0';
    r->target = sp1 + 1;
    for (const unsigned char *t = (const unsigned char *)r->target; *t; t++) {
        if (*t <= 0x20 || *t == 0x7f) {
            return 400;
        }
    }
    if (strncmp(sp2 + 1, "HTTP/", 5) != 0 || !isdigit((unsigned char)sp2[6]) || sp2[7] != '.' ||
        !isdigit((unsigned char)sp2[8]) || sp2[9] != '\0') {
        return 400;
    }
    if (sp2[6] != '1') {
        return 505;
    }
    r->minor = sp2[8] - '0';

    /* Header fields. */
    for (p = nl + 1; p < end; p = nl + 1) {
        char *colon, *value;
        nl = memchr(p, '\0', (size_t)(end - p));
        if (!nl) {
            return 400;
        }
        if (nl == p) {
            continue; /* the empty line, or what follows the terminator */
        }
        if (*p == ' ' || *p == '\t') {
            return 400; /* obsolete line folding */
        }
        colon = strchr(p, ':');
        if (!colon || colon == p) {
            return 400;
        }
        *colon = '\0';
        for (const char *n = p; *n; n++) {
            if (!is_tchar((unsigned char)*n)) {
                return 400; /* includes whitespace before the colon (RFC 9112 5.1) */
            }
        }
        value = trim(colon + 1);
        for (const unsigned char *v = (const unsigned char *)value; *v; v++) {
            if ((*v < 0x20 && *v != '\t') || *v == 0x7f) {
                return 400;
            }
        }
        if (strcasecmp(p, "Host") == 0) {
            if (r->host) {
                return 400;
            }
            r->host = value;
        } else if (strcasecmp(p, "Connection") == 0) {
            conn_close |= list_has(value, "close");
            conn_keep |= list_has(value, "keep-alive");
        } else if (strcasecmp(p, "Range") == 0) {
            if (r->range) {
                return 400;
            }
            r->range = value;
        } else if (strcasecmp(p, "If-Range") == 0) {
            r->if_range = value;
        } else if (strcasecmp(p, "If-None-Match") == 0) {
            r->if_none_match = value;
        } else if (strcasecmp(p, "If-Modified-Since") == 0) {
            r->if_modified_since = value;
        } else if (strcasecmp(p, "Content-Length") == 0) {
            char *e;
            long long v;
            if (!isdigit((unsigned char)value[0])) {
                return 400;
            }
            errno = 0;
            v = strtoll(value, &e, 10);
            if (*e || errno || (r->content_length >= 0 && r->content_length != v)) {
                return 400;
            }
            r->content_length = v;
        } else if (strcasecmp(p, "Transfer-Encoding") == 0) {
            r->has_transfer_encoding = true;
        }
    }
    if (r->minor >= 1 && !r->host) {
        return 400; /* RFC 9112 3.2: a client MUST send Host in HTTP/1.1 */
    }
    r->keep_alive = r->minor >= 1 ? !conn_close : conn_keep && !conn_close;
    return 0;
}

static int hexval(int c)
{
    if (c >= '0' && c <= '9') {
        return c - '0';
    }
    c = tolower(c);
    if (c >= 'a' && c <= 'f') {
        return c - 'a' + 10;
    }
    return -1;
}

int http_target_raw_path(const char *target, char *out, size_t outlen)
{
    const char *p = target;
    size_t n;

    if (strncasecmp(p, "http://", 7) == 0 || strncasecmp(p, "https://", 8) == 0) {
        p = strstr(p, "//") + 2;
        p = p + strcspn(p, "/?#");
        if (*p != '/') {
            p = "/";
        }
    }
    if (*p != '/') {
        return -1;
    }
    n = strcspn(p, "?#");
    if (n >= outlen) {
        return -1;
    }
    memcpy(out, p, n);
    out[n] = '\0';
    return (int)n;
}

int http_target_path(const char *target, char *out, size_t outlen, bool *dir_slash)
{
    char raw[PATH_MAX], dec[PATH_MAX];
    size_t j = 0, o = 0;
    int n = http_target_raw_path(target, raw, sizeof raw);

    if (n < 0) {
        return *target == '/' || strncasecmp(target, "http", 4) == 0 ? 414 : 400;
    }
    for (int i = 0; i < n; i++) {
        int c = (unsigned char)raw[i];
        if (c == '%') {
            int hi = i + 2 < n ? hexval(raw[i + 1]) : -1, lo = i + 2 < n ? hexval(raw[i + 2]) : -1;
            if (hi < 0 || lo < 0) {
                return 400;
            }
            c = hi * 16 + lo;
            i += 2;
        }
        if (c < 0x20 || c == 0x7f) {
            return 400; /* NUL and control characters never name a file we serve */
        }
        dec[j++] = (char)c;
    }
    dec[j] = '\0';
    *dir_slash = j > 0 && dec[j - 1] == '/';

    /* Segment walk: drop empty and "." segments, pop on "..", refuse to climb above root. */
    for (char *seg = dec, *next; seg && *seg; seg = next) {
        size_t len;
        next = strchr(seg, '/');
        len = next ? (size_t)(next - seg) : strlen(seg);
        if (next) {
            next++;
        }
        if (len == 0 || (len == 1 && seg[0] == '.')) {
            continue;
        }
        if (len == 2 && seg[0] == '.' && seg[1] == '.') {
            if (o == 0) {
                return 400;
            }
            while (o > 0 && out[o - 1] != '/') {
                o--;
            }
            if (o > 0) {
                o--; /* the separator */
            }
            continue;
        }
        if (o + (o ? 1 : 0) + len + 1 > outlen) {
            return 414;
        }
        if (o) {
            out[o++] = '/';
        }
        memcpy(out + o, seg, len);
        o += len;
    }
    if (o == 0) {
        if (outlen < 2) {
            return 414;
        }
        out[o++] = '.';
    }
    out[o] = '\0';
    return 0;
}

/* Percent-encode everything but unreserved characters and '/' into out at *o (NUL-terminated);
 * false when it does not fit. */
static bool url_encode(const char *s, char *out, size_t outlen, size_t *o)
{
    static const char hex[] = "0123456789ABCDEF";
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        bool plain = isalnum(c) || strchr("-._~/", c);
        if (*o + (plain ? 1 : 3) >= outlen) {
            return false;
        }
        if (plain) {
            out[(*o)++] = (char)c;
        } else {
            out[(*o)++] = '%';
            out[(*o)++] = hex[c >> 4];
            out[(*o)++] = hex[c & 15];
        }
    }
    out[*o] = '\0';
    return true;
}

int http_dir_location(const char *rel, const char *target, char *out, size_t outlen)
{
    const char *q = strchr(target, '?');
    size_t o = 0;

    if (outlen < 2) {
        return -1;
    }
    out[o++] = '/';
    out[o] = '\0';
    if (strcmp(rel, ".") != 0) {
        if (rel[0] == '/' || !url_encode(rel, out, outlen, &o) || o + 1 >= outlen) {
            return -1;
        }
        out[o++] = '/';
        out[o] = '\0';
    }
    if (q) {
        size_t n = strlen(q);
        if (o + n >= outlen) {
            return -1;
        }
        memcpy(out + o, q, n + 1);
        o += n;
    }
    return (int)o;
}

int http_open_beneath(int root_fd, const char *root_real, const char *rel, int flags)
{
    /* O_PATH takes no other flags but O_CLOEXEC (and O_DIRECTORY, O_NOFOLLOW). */
    int extra = (flags & O_PATH) ? O_CLOEXEC : O_CLOEXEC | O_NOCTTY;
    struct open_how how = {
        .flags = (unsigned)(flags | extra),
        .resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS,
    };
    long fd = syscall(SYS_openat2, root_fd, rel, &how, sizeof how);

    if (fd < 0 && errno == ENOSYS) {
        /* Before Linux 5.6: resolve fully, then check the result is under the root. */
        char path[PATH_MAX], real[PATH_MAX];
        size_t rl = strlen(root_real);
        if ((size_t)snprintf(path, sizeof path, "%s/%s", root_real, rel) >= sizeof path) {
            errno = ENAMETOOLONG;
            return -1;
        }
        if (!realpath(path, real)) {
            return -1;
        }
        if (strncmp(real, root_real, rl) != 0 || (real[rl] != '/' && real[rl] != '\0')) {
            errno = EXDEV;
            return -1;
        }
        return open(real, flags | extra);
    }
    return (int)fd;
}

static int parse_off(const char **p, off_t *out)
{
    unsigned long long v = 0;
    if (!isdigit((unsigned char)**p)) {
        return -1;
    }
    while (isdigit((unsigned char)**p)) {
        unsigned d = (unsigned)(**p - '0');
        if (v > (unsigned long long)(INT64_MAX - d) / 10) {
            v = INT64_MAX; /* saturate: a huge first-pos is simply past the end */
        } else {
            v = v * 10 + d;
        }
        (*p)++;
    }
    *out = (off_t)v;
    return 0;
}

int http_parse_range(const char *value, off_t size, off_t *first, off_t *last)
{
    const char *p = value;
    off_t a = -1, b = -1;

    if (strncasecmp(p, "bytes", 5) != 0) {
        return 0;
    }
    p += 5;
    while (*p == ' ' || *p == '\t') {
        p++;
    }
    if (*p++ != '=') {
        return 0;
    }
    while (*p == ' ' || *p == '\t') {
        p++;
    }
    if (*p == '-') {
        p++;
        if (parse_off(&p, &b) != 0) {
            return 0;
        }
    } else {
        if (parse_off(&p, &a) != 0 || *p++ != '-') {
            return 0;
        }
        if (isdigit((unsigned char)*p) && parse_off(&p, &b) != 0) {
            return 0;
        }
    }
    while (*p == ' ' || *p == '\t') {
        p++;
    }
    if (*p != '\0') {
        return 0; /* several ranges (or junk): serve the whole representation */
    }
    if (a < 0) { /* suffix: the last b bytes */
        if (b == 0 || size == 0) {
            return -1;
        }
        *first = b >= size ? 0 : size - b;
        *last = size - 1;
        return 1;
    }
    if (b >= 0 && b < a) {
        return 0; /* invalid range-spec: ignore the header */
    }
    if (a >= size) {
        return -1;
    }
    *first = a;
    *last = b < 0 || b >= size ? size - 1 : b;
    return 1;
}

void http_date(time_t t, char out[30])
{
    struct tm tm;
    /* strftime's %a and %b are the C locale's English names: tlsk-serve never calls
     * setlocale(). */
    gmtime_r(&t, &tm);
    if (strftime(out, 30, "%a, %d %b %Y %H:%M:%S GMT", &tm) == 0) {
        out[0] = '\0';
    }
}

int http_date_parse(const char *s, time_t *out)
{
    static const char *const forms[] = {
        "%a, %d %b %Y %H:%M:%S GMT", /* IMF-fixdate */
        "%A, %d-%b-%y %H:%M:%S GMT", /* RFC 850 */
        "%a %b %e %H:%M:%S %Y",      /* asctime */
    };
    for (size_t i = 0; i < sizeof forms / sizeof forms[0]; i++) {
        struct tm tm;
        const char *e;
        memset(&tm, 0, sizeof tm);
        e = strptime(s, forms[i], &tm);
        if (e && *e == '\0') {
            *out = timegm(&tm);
            return 0;
        }
    }
    return -1;
}

/* v in lower-case hex without leading zeros ("0" for 0) at p; returns the end. */
static char *put_hex(char *p, unsigned long long v)
{
    char d[16];
    int n = 0;

    do {
        d[n++] = "0123456789abcdef"[v & 15];
        v >>= 4;
    } while (v);
    while (n) {
        *p++ = d[--n];
    }
    return p;
}

/* "mtime-size-nsec-inode" in hex, quoted, as printf's %llx would print it: written by hand
 * because it is on every file response, where its snprintf was 2,100 of the 29,000 userspace
 * instructions of a 1 KiB request (bench/README.md, small files).  At most 4 * 16 + 5 bytes. */
void http_etag(const struct stat *st, char out[64])
{
    char *p = out;

    *p++ = '"';
    p = put_hex(p, (unsigned long long)st->st_mtim.tv_sec);
    *p++ = '-';
    p = put_hex(p, (unsigned long long)st->st_size);
    *p++ = '-';
    p = put_hex(p, (unsigned long)st->st_mtim.tv_nsec);
    *p++ = '-';
    p = put_hex(p, (unsigned long long)st->st_ino);
    *p++ = '"';
    *p = '\0';
}

bool http_etag_match(const char *list, const char *etag)
{
    size_t n = strlen(etag);
    const char *p = list;

    while (*p) {
        const char *q;
        while (*p == ' ' || *p == '\t' || *p == ',') {
            p++;
        }
        if (*p == '*') {
            return true;
        }
        if (strncmp(p, "W/", 2) == 0) {
            p += 2;
        }
        if (*p != '"') {
            /* Not an entity tag: skip to the next element. */
            while (*p && *p != ',') {
                p++;
            }
            continue;
        }
        q = strchr(p + 1, '"');
        if (!q) {
            return false;
        }
        if ((size_t)(q + 1 - p) == n && memcmp(p, etag, n) == 0) {
            return true;
        }
        p = q + 1;
    }
    return false;
}

const char *http_mime_type(const char *name)
{
#define E(ext, type) { ext, sizeof ext - 1, type }
    static const struct {
        const char *ext;
        size_t len;
        const char *type;
    } t[] = {
        E("html", "text/html; charset=utf-8"),
        E("htm", "text/html; charset=utf-8"),
        E("txt", "text/plain; charset=utf-8"),
        E("md", "text/markdown; charset=utf-8"),
        E("c", "text/plain; charset=utf-8"),
        E("h", "text/plain; charset=utf-8"),
        E("sh", "text/plain; charset=utf-8"),
        E("log", "text/plain; charset=utf-8"),
        E("csv", "text/csv; charset=utf-8"),
        E("css", "text/css; charset=utf-8"),
        E("js", "text/javascript; charset=utf-8"),
        E("mjs", "text/javascript; charset=utf-8"),
        E("json", "application/json"),
        E("map", "application/json"),
        E("xml", "application/xml"),
        E("wasm", "application/wasm"),
        E("pdf", "application/pdf"),
        E("zip", "application/zip"),
        E("gz", "application/gzip"),
        E("tgz", "application/gzip"),
        E("xz", "application/x-xz"),
        E("zst", "application/zstd"),
        E("tar", "application/x-tar"),
        E("png", "image/png"),
        E("jpg", "image/jpeg"),
        E("jpeg", "image/jpeg"),
        E("gif", "image/gif"),
        E("webp", "image/webp"),
        E("avif", "image/avif"),
        E("svg", "image/svg+xml"),
        E("ico", "image/vnd.microsoft.icon"),
        E("woff", "font/woff"),
        E("woff2", "font/woff2"),
        E("ttf", "font/ttf"),
        E("otf", "font/otf"),
        E("mp4", "video/mp4"),
        E("webm", "video/webm"),
        E("mp3", "audio/mpeg"),
        E("ogg", "audio/ogg"),
        E("wav", "audio/wav"),
        E("pem", "application/x-pem-file"),
    };
#undef E
    const char *slash = strrchr(name, '/'), *dot = strrchr(slash ? slash + 1 : name, '.');
    size_t len = dot ? strlen(dot + 1) : 0;

    /* Length and first letter before strcasecmp (the table is in lower case): an extension
     * that is not in it (.bin) then costs 41 integer compares per response, not 25
     * strcasecmp calls. */
    for (size_t i = 0; dot && i < sizeof t / sizeof t[0]; i++) {
        if (t[i].len == len && t[i].ext[0] == tolower((unsigned char)dot[1]) &&
            strcasecmp(dot + 1, t[i].ext) == 0) {
            return t[i].type;
        }
    }
    return "application/octet-stream";
}

const char *http_reason(int status)
{
    switch (status) {
    case 200: return "OK";
    case 206: return "Partial Content";
    case 301: return "Moved Permanently";
    case 304: return "Not Modified";
    case 400: return "Bad Request";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 416: return "Range Not Satisfiable";
    case 421: return "Misdirected Request";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 503: return "Service Unavailable";
    case 505: return "HTTP Version Not Supported";
    default: return "Unknown";
    }
}

/* A growing output buffer; on allocation failure it stops growing and remembers it. */
struct sbuf {
    char *p;
    size_t len, cap;
    bool oom;
};

static void sb_add(struct sbuf *b, const char *s, size_t n)
{
    if (b->oom) {
        return;
    }
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        char *p;
        while (cap < b->len + n + 1) {
            cap *= 2;
        }
        p = realloc(b->p, cap);
        if (!p) {
            b->oom = true;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void sb_str(struct sbuf *b, const char *s)
{
    sb_add(b, s, strlen(s));
}

static void sb_html(struct sbuf *b, const char *s)
{
    for (; *s; s++) {
        switch (*s) {
        case '&': sb_str(b, "&amp;"); break;
        case '<': sb_str(b, "&lt;"); break;
        case '>': sb_str(b, "&gt;"); break;
        case '"': sb_str(b, "&quot;"); break;
        case '\'': sb_str(b, "&#39;"); break;
        default: sb_add(b, s, 1);
        }
    }
}

/* Percent-encode everything but unreserved characters and '/'. */
static void sb_url(struct sbuf *b, const char *s)
{
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (isalnum(c) || strchr("-._~/", c)) {
            sb_add(b, s, 1);
        } else {
            char e[4];
            snprintf(e, sizeof e, "%%%02X", c);
            sb_add(b, e, 3);
        }
    }
}

struct entry {
    char *name;
    bool dir;
    bool hidden; /* a symbolic link that leads out of the root: nothing of its target shown */
    off_t size;
    time_t mtime;
};

/* What a listing may show of entry name in the folder dirfd (rel below the root): its own
 * lstat, or for a symbolic link the target's, found with the same rule as opening a file
 * (http_open_beneath).  Returns 0, 1 for a link that leads out of the root (or through a
 * loop), -1 for an entry not to list (gone, or a dangling link). */
static int entry_stat(int dirfd, int root_fd, const char *root_real, const char *rel,
                      const char *name, struct stat *st)
{
    char path[PATH_MAX];
    int fd, rc;

    if (fstatat(dirfd, name, st, AT_SYMLINK_NOFOLLOW) != 0) {
        return -1;
    }
    if (!S_ISLNK(st->st_mode)) {
        return 0;
    }
    if ((size_t)snprintf(path, sizeof path, "%s%s%s", strcmp(rel, ".") == 0 ? "" : rel,
                         strcmp(rel, ".") == 0 ? "" : "/", name) >= sizeof path) {
        return 1;
    }
    fd = http_open_beneath(root_fd, root_real, path, O_PATH);
    if (fd < 0) {
        return errno == ENOENT ? -1 : 1;
    }
    rc = fstat(fd, st) == 0 ? 0 : 1;
    close(fd);
    return rc;
}

static int entry_cmp(const void *a, const void *b)
{
    const struct entry *x = a, *y = b;
    if (x->dir != y->dir) {
        return x->dir ? -1 : 1;
    }
    return strcmp(x->name, y->name);
}

char *http_listing(int dirfd, int root_fd, const char *root_real, const char *rel,
                   const char *url_path, size_t *len)
{
    struct sbuf b = { 0 };
    struct entry *e = NULL;
    size_t n = 0, cap = 0;
    struct dirent *d;
    DIR *dir;
    int fd = dup(dirfd);

    if (fd < 0) {
        return NULL;
    }
    dir = fdopendir(fd);
    if (!dir) {
        close(fd);
        return NULL;
    }
    rewinddir(dir);
    while ((d = readdir(dir))) {
        struct stat st;
        int how;
        if (strcmp(d->d_name, ".") == 0 || strcmp(d->d_name, "..") == 0) {
            continue;
        }
        how = entry_stat(dirfd, root_fd, root_real, rel, d->d_name, &st);
        if (how < 0) {
            continue; /* dangling link or raced away: not listed */
        }
        if (n == cap) {
            struct entry *ne = realloc(e, (cap ? cap * 2 : 64) * sizeof *e);
            if (!ne) {
                b.oom = true;
                break;
            }
            e = ne;
            cap = cap ? cap * 2 : 64;
        }
        e[n].name = strdup(d->d_name);
        if (!e[n].name) {
            b.oom = true;
            break;
        }
        e[n].hidden = how == 1;
        e[n].dir = !e[n].hidden && S_ISDIR(st.st_mode);
        e[n].size = e[n].hidden ? 0 : st.st_size;
        e[n].mtime = e[n].hidden ? 0 : st.st_mtime;
        n++;
    }
    closedir(dir);
    if (e) {
        qsort(e, n, sizeof *e, entry_cmp);
    }

    sb_str(&b, "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>Index of ");
    sb_html(&b, url_path);
    sb_str(&b, "</title></head>\n<body><h1>Index of ");
    sb_html(&b, url_path);
    sb_str(&b, "</h1>\n<table>\n");
    if (strcmp(url_path, "/") != 0) {
        sb_str(&b, "<tr><td><a href=\"../\">../</a></td><td></td><td></td></tr>\n");
    }
    for (size_t i = 0; i < n; i++) {
        char size[32], date[30];
        http_date(e[i].mtime, date);
        if (e[i].hidden) {
            snprintf(size, sizeof size, "-");
            snprintf(date, sizeof date, "-");
        } else if (e[i].dir) {
            snprintf(size, sizeof size, "-");
        } else {
            snprintf(size, sizeof size, "%lld", (long long)e[i].size);
        }
        sb_str(&b, "<tr><td><a href=\"");
        {
            /* Encode, then HTML-escape the encoded form (only '&' could matter; none left). */
            struct sbuf u = { 0 };
            sb_url(&u, e[i].name);
            if (e[i].dir) {
                sb_str(&u, "/");
            }
            if (u.oom) {
                b.oom = true;
            } else {
                sb_html(&b, u.p);
            }
            free(u.p);
        }
        sb_str(&b, "\">");
        sb_html(&b, e[i].name);
        sb_str(&b, e[i].dir ? "/" : "");
        sb_str(&b, "</a></td><td>");
        sb_str(&b, size);
        sb_str(&b, "</td><td>");
        sb_str(&b, date);
        sb_str(&b, "</td></tr>\n");
    }
    sb_str(&b, "</table></body></html>\n");
    for (size_t i = 0; i < n; i++) {
        free(e[i].name);
    }
    free(e);
    if (b.oom) {
        free(b.p);
        errno = ENOMEM;
        return NULL;
    }
    *len = b.len;
    return b.p;
}
