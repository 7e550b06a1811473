/*
 * http.h - the HTTP/1.1 pieces of tlsk-serve that do no socket I/O: request parsing, mapping a
 * request target to a path below a root, ranges, dates, entity tags, MIME types, directory
 * listings.  Everything here is pure (or reads only the file system), so it can be tested and
 * fuzzed on its own.
 */
#ifndef TLSK_TOOLS_HTTP_H
#define TLSK_TOOLS_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <time.h>

enum http_method {
    HTTP_GET = 0,
    HTTP_HEAD,
    HTTP_OTHER, /* any other token: answered 405 */
};

/* A parsed request head.  The strings point into the buffer given to http_parse_request(),
 * which it NUL-terminates in place; NULL means the header was absent. */
struct http_request {
    enum http_method method;
    const char *method_name;
    const char *target;
    int minor; /* HTTP/1.<minor> */
    bool keep_alive;
    const char *host;
    const char *range;
    const char *if_range;
    const char *if_none_match;
    const char *if_modified_since;
    long long content_length; /* -1 when absent */
    bool has_transfer_encoding;
};

/*
 * http_head_length() - length of the request head at the start of buf (request line and
 * header fields up to and including the empty line; CRLF or bare LF line ends), or 0 when
 * the empty line has not arrived yet.  Leading empty lines (RFC 9112 2.2) count as part of it.
 */
size_t http_head_length(const char *buf, size_t len);

/*
 * http_parse_request() - parse a complete head of len bytes (from http_head_length()) in
 * place.  Returns 0, or the status code to answer with: 400 (malformed), 414 (request line
 * longer than max_line), 505 (HTTP major version other than 1).  r is filled on success and
 * may be partly filled on failure (method_name and target when they parsed, for the log).
 */
int http_parse_request(char *buf, size_t len, size_t max_line, struct http_request *r);

/*
 * http_target_path() - map a request target (origin-form "/a/b?q" or absolute-form
 * "https://host/a/b") to a relative path below the served root: percent-decoded, query and
 * fragment dropped, "." segments and repeated slashes removed, ".." resolved lexically.
 * out receives "." for the root itself.  *dir_slash says whether the path ended in '/'.
 * Returns 0, 400 (no leading '/', bad or NUL percent escape, control character, ".." above
 * the root) or 414 (longer than outlen).  This is only the first line of defence: the file is
 * then opened with RESOLVE_BENEATH, so symbolic links cannot lead out either.
 */
int http_target_path(const char *target, char *out, size_t outlen, bool *dir_slash);

/* The path part of target ("/a/b" of "https://h/a/b?q"), still encoded, without the query;
 * written to out (at most outlen bytes, NUL-terminated).  Returns its length or -1. */
int http_target_raw_path(const char *target, char *out, size_t outlen);

/*
 * http_dir_location() - the Location of the redirect that adds the slash to a folder: built
 * from rel (the normalised path from http_target_path(), "." for the root), never from the
 * raw target, so it always starts with exactly one '/' ("//evil.example/.." becomes "/", not
 * the scheme-relative "//evil.example/../"); rel is percent-encoded (a backslash, which
 * browsers read as '/', becomes %5C), and the target's query, if any, is kept.  Returns the
 * length written to out (NUL-terminated), or -1 when it does not fit.
 */
int http_dir_location(const char *rel, const char *target, char *out, size_t outlen);

/*
 * http_open_beneath() - open rel (from http_target_path) below the root open at root_fd
 * (whose resolved path is root_real), with flags (O_RDONLY, O_PATH, ...): openat2 with
 * RESOLVE_BENEATH refuses "..", absolute symbolic links and links that climb out, and magic
 * /proc links; before Linux 5.6 the path is resolved and checked to be under root_real.
 * Returns the fd, or -1 with errno (EXDEV, ELOOP, ENOENT, ...).
 */
int http_open_beneath(int root_fd, const char *root_real, const char *rel, int flags);

/*
 * http_parse_range() - evaluate a Range header value against a representation of size bytes.
 * Returns 1 with *first and *last (inclusive) for one satisfiable byte range, 0 when the
 * header must be ignored (not "bytes=", malformed, or several ranges: the whole body is sent),
 * -1 when unsatisfiable (416).
 */
int http_parse_range(const char *value, off_t size, off_t *first, off_t *last);

/* IMF-fixdate ("Sun, 06 Nov 1994 08:49:37 GMT") into out[30]. */
void http_date(time_t t, char out[30]);
/* Parse an HTTP date (IMF-fixdate, RFC 850 or asctime form).  Returns 0 or -1. */
int http_date_parse(const char *s, time_t *out);

/* Strong entity tag from modification time, size and inode: "\"...\"" into out[64]. */
void http_etag(const struct stat *st, char out[64]);
/* Whether an If-None-Match / If-Range list matches etag (weak comparison; "*" matches). */
bool http_etag_match(const char *list, const char *etag);

/* Content-Type for a file name, by extension; "application/octet-stream" when unknown. */
const char *http_mime_type(const char *name);
/* Reason phrase for a status code ("OK", "Not Found", ...). */
const char *http_reason(int status);

/*
 * http_listing() - an HTML page listing the directory open at dirfd (not consumed), which is
 * rel (as from http_target_path) below the root open at root_fd (resolved path root_real),
 * and whose request path (decoded, starting and ending with '/') is url_path: directories
 * first, then files, each sorted by name, with size and modification time.  Entries are
 * looked at without following symbolic links; a link shows its target's size and time only
 * when the target is inside the root by the rule files are opened with
 * (http_open_beneath), otherwise "-" for both: a link to /etc/passwd does not tell its size.
 * Returns a malloc'd buffer and sets *len, or NULL with errno set.
 */
char *http_listing(int dirfd, int root_fd, const char *root_real, const char *rel,
                   const char *url_path, size_t *len);

#endif
