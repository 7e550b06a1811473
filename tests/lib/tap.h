/* tap.h - minimal TAP producer for tlsk's test programs (header-only). */
#ifndef TLSK_TAP_H
#define TLSK_TAP_H

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

static int tap_n, tap_failed;

static inline void tap_diag(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static inline void tap_diag(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("# ", stdout);
    vprintf(fmt, ap);
    fputc('\n', stdout);
    va_end(ap);
    fflush(stdout);
}

static inline int tap_ok(int cond, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static inline int tap_ok(int cond, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    printf("%s %d - ", cond ? "ok" : "not ok", ++tap_n);
    vprintf(fmt, ap);
    putchar('\n');
    va_end(ap);
    fflush(stdout);
    if (!cond) {
        tap_failed++;
    }
    return cond;
}

/* Skip the whole program (exit 77 keeps make/prove semantics: skipped, not passed). */
static inline void tap_skip_all(const char *why)
{
    printf("1..0 # SKIP %s\n", why);
    fflush(stdout);
    exit(0);
}

static inline void tap_bail(const char *why)
{
    printf("Bail out! %s\n", why);
    fflush(stdout);
    exit(1);
}

static inline int tap_done(void)
{
    printf("1..%d\n", tap_n);
    fflush(stdout);
    return tap_failed ? 1 : 0;
}

#define TAP_OK(cond, ...) tap_ok(!!(cond), __VA_ARGS__)
#define TAP_IS(a, b, ...)                                                                      \
    do {                                                                                       \
        long long tap_a_ = (long long)(a), tap_b_ = (long long)(b);                            \
        if (!tap_ok(tap_a_ == tap_b_, __VA_ARGS__)) {                                          \
            tap_diag("  got %lld, expected %lld (%s == %s)", tap_a_, tap_b_, #a, #b);          \
        }                                                                                      \
    } while (0)

#endif
