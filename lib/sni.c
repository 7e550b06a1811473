/*
 * sni.c - the SNI table (Node's addContext) with the rules of docs/NODE.md §2.1 D1-D3: "*" is a
 * whole left-most label matching exactly one non-empty label; an exact name beats a wildcard;
 * adding a pattern again replaces it; matching is ASCII case-insensitive.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

struct sni_entry {
    char *name; /* lower case; for a wildcard the part after "*." */
    bool wild;
    struct tlsk_context *ctx;
};

struct tlsk_sni {
    struct sni_entry *e;
    size_t n, cap;
};

#define SNI_MAX_NAME 253

static bool label_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_';
}

/* Lower-case and validate a host name (no wildcard): labels of 1..63 characters. */
int tlsk__sni_normalize(const char *in, char *out, size_t cap)
{
    size_t len = in ? strlen(in) : 0, label = 0;

    if (len == 0 || len > SNI_MAX_NAME || len + 1 > cap) {
        return -EINVAL;
    }
    for (size_t i = 0; i < len; i++) {
        char c = in[i];
        if (c >= 'A' && c <= 'Z') {
            c = (char)(c - 'A' + 'a');
        }
        if (c == '.') {
            if (label == 0) {
                return -EINVAL;
            }
            label = 0;
        } else if (!label_char(c) || ++label > 63) {
            return -EINVAL;
        }
        out[i] = c;
    }
    if (label == 0) {
        return -EINVAL; /* trailing dot */
    }
    out[len] = '\0';
    return 0;
}

TLSK_PUBLIC int tlsk_sni_new(struct tlsk_sni **out)
{
    if (!out) {
        return TLSK_ECONFIG;
    }
    *out = calloc(1, sizeof **out);
    return *out ? 0 : TLSK_ENOMEM;
}

TLSK_PUBLIC int tlsk_sni_add(struct tlsk_sni *t, const char *pattern, struct tlsk_context *ctx)
{
    char norm[SNI_MAX_NAME + 1];
    bool wild = false;
    const char *p = pattern;

    if (!t || !pattern || !ctx) {
        return TLSK_ECONFIG;
    }
    if (p[0] == '*') {
        if (p[1] != '.') {
            return TLSK_ECONFIG;
        }
        wild = true;
        p += 2;
    }
    if (strchr(p, '*') || tlsk__sni_normalize(p, norm, sizeof norm) != 0) {
        return TLSK_ECONFIG;
    }
    {
        /* An IP literal is never a server name (RFC 6066 3). */
        unsigned char tmp[4];
        if (!wild && inet_pton(AF_INET, norm, tmp) == 1) {
            return TLSK_ECONFIG;
        }
    }
    for (size_t i = 0; i < t->n; i++) {
        if (t->e[i].wild == wild && strcmp(t->e[i].name, norm) == 0) {
            tlsk_context_ref(ctx);
            tlsk_context_free(t->e[i].ctx);
            t->e[i].ctx = ctx;
            return 0;
        }
    }
    if (t->n == t->cap) {
        size_t cap = t->cap ? 2 * t->cap : 8;
        struct sni_entry *e = realloc(t->e, cap * sizeof *e);
        if (!e) {
            return TLSK_ENOMEM;
        }
        t->e = e;
        t->cap = cap;
    }
    t->e[t->n].name = strdup(norm);
    if (!t->e[t->n].name) {
        return TLSK_ENOMEM;
    }
    t->e[t->n].wild = wild;
    t->e[t->n].ctx = tlsk_context_ref(ctx);
    t->n++;
    return 0;
}

TLSK_PUBLIC struct tlsk_context *tlsk_sni_lookup(const struct tlsk_sni *t, const char *name)
{
    char norm[SNI_MAX_NAME + 1];
    const char *rest;

    if (!t || tlsk__sni_normalize(name, norm, sizeof norm) != 0) {
        return NULL;
    }
    for (size_t i = 0; i < t->n; i++) {
        if (!t->e[i].wild && strcmp(t->e[i].name, norm) == 0) {
            return t->e[i].ctx;
        }
    }
    rest = strchr(norm, '.');
    if (!rest || rest == norm) {
        return NULL;
    }
    rest++;
    for (size_t i = 0; i < t->n; i++) {
        if (t->e[i].wild && strcmp(t->e[i].name, rest) == 0) {
            return t->e[i].ctx;
        }
    }
    return NULL;
}

TLSK_PUBLIC void tlsk_sni_free(struct tlsk_sni *t)
{
    if (!t) {
        return;
    }
    for (size_t i = 0; i < t->n; i++) {
        free(t->e[i].name);
        tlsk_context_free(t->e[i].ctx);
    }
    free(t->e);
    free(t);
}
