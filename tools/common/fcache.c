/*
 * fcache.c - a cache of open descriptors for small files, revalidated by fstatat on every
 * use (fcache.h says why each change to a file is seen).
 */
#include "fcache.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "http.h"

struct entry {
    int fd; /* -1: empty */
    int root_fd;
    unsigned long gen;
    char *rel;
    struct stat st;      /* fstat of fd when it was opened */
    long long opened_ms; /* CLOCK_MONOTONIC_COARSE then: trusted for FCACHE_MAX_AGE_MS */
};

/* An entry is opened again (openat2, the root checks and all) at least this often, so that a
 * change to the directories on its path counts within this time (fcache.h). */
#define FCACHE_MAX_AGE_MS 1000

struct fcache {
    size_t mask; /* slots - 1; slots a power of two, or no slots at all */
    off_t max_size;
    struct fcache_stats stats;
    struct entry *slot;
};

struct fcache *fcache_new(size_t slots, off_t max_size)
{
    struct fcache *fc = calloc(1, sizeof *fc);
    size_t n = 1;

    if (!fc) {
        return NULL;
    }
    fc->max_size = max_size;
    if (slots == 0) {
        return fc;
    }
    while (n < slots && n < ((size_t)1 << 20)) {
        n <<= 1;
    }
    fc->slot = calloc(n, sizeof *fc->slot);
    if (!fc->slot) {
        free(fc);
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        fc->slot[i].fd = -1;
    }
    fc->mask = n - 1;
    return fc;
}

static void drop(struct entry *e)
{
    if (e->fd >= 0) {
        close(e->fd);
        e->fd = -1;
    }
    free(e->rel);
    e->rel = NULL;
}

void fcache_clear(struct fcache *fc)
{
    for (size_t i = 0; fc && fc->slot && i <= fc->mask; i++) {
        drop(&fc->slot[i]);
    }
}

void fcache_free(struct fcache *fc)
{
    if (fc) {
        fcache_clear(fc);
        free(fc->slot);
        free(fc);
    }
}

/* FNV-1a over the path, mixed with the root and generation. */
static size_t hash(unsigned long gen, int root_fd, const char *rel)
{
    uint64_t h = 0xcbf29ce484222325u ^ ((uint64_t)gen << 20) ^ (uint64_t)(unsigned)root_fd;

    for (const unsigned char *p = (const unsigned char *)rel; *p; p++) {
        h = (h ^ *p) * 0x100000001b3u;
    }
    return (size_t)(h ^ h >> 29);
}

static long long now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The same inode in the same state: what fstat of the cached descriptor said at open. */
static bool same_file(const struct stat *a, const struct stat *b)
{
    return a->st_dev == b->st_dev && a->st_ino == b->st_ino && a->st_mode == b->st_mode &&
           a->st_size == b->st_size && a->st_mtim.tv_sec == b->st_mtim.tv_sec &&
           a->st_mtim.tv_nsec == b->st_mtim.tv_nsec && a->st_ctim.tv_sec == b->st_ctim.tv_sec &&
           a->st_ctim.tv_nsec == b->st_ctim.tv_nsec;
}

static int open_uncached(struct fcache *fc, int root_fd, const char *root_real, const char *rel,
                         struct stat *st)
{
    int fd = http_open_beneath(root_fd, root_real, rel, O_RDONLY | O_NONBLOCK), e;

    if (fd < 0 && (errno == EMFILE || errno == ENFILE) && fc && fc->slot) {
        fcache_clear(fc); /* our descriptors first, the request after */
        fd = http_open_beneath(root_fd, root_real, rel, O_RDONLY | O_NONBLOCK);
    }
    if (fd < 0) {
        return -1;
    }
    if (fstat(fd, st) != 0) {
        e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    return fd;
}

int fcache_open(struct fcache *fc, unsigned long gen, int root_fd, const char *root_real,
                const char *rel, struct stat *st, bool *borrowed)
{
    struct entry *e = NULL;
    long long now = 0;
    char *copy;
    int fd;

    *borrowed = false;
    if (fc && fc->slot) {
        e = &fc->slot[hash(gen, root_fd, rel) & fc->mask];
        now = now_ms();
        if (e->fd >= 0 && e->gen == gen && e->root_fd == root_fd && strcmp(e->rel, rel) == 0 &&
            now - e->opened_ms <= FCACHE_MAX_AGE_MS) {
            struct stat cur;
            if (fstatat(root_fd, rel, &cur, 0) == 0 && same_file(&cur, &e->st)) {
                fc->stats.hits++;
                *st = e->st;
                *borrowed = true;
                return e->fd;
            }
            fc->stats.stale++;
            drop(e);
        }
    }
    fd = open_uncached(fc, root_fd, root_real, rel, st);
    if (fd < 0) {
        return -1;
    }
    if (fc) {
        fc->stats.misses++;
    }
    if (!e || !S_ISREG(st->st_mode) || st->st_size > fc->max_size || !(copy = strdup(rel))) {
        return fd;
    }
    drop(e);
    *e = (struct entry){
        .fd = fd, .root_fd = root_fd, .gen = gen, .rel = copy, .st = *st, .opened_ms = now
    };
    *borrowed = true;
    return fd;
}

void fcache_release(int fd, bool borrowed)
{
    if (fd >= 0 && !borrowed) {
        close(fd);
    }
}

int fcache_take(struct fcache *fc, int fd)
{
    for (size_t i = 0; fc && fc->slot && i <= fc->mask; i++) {
        if (fc->slot[i].fd == fd) {
            fc->slot[i].fd = -1;
            drop(&fc->slot[i]);
            break;
        }
    }
    return fd;
}

struct fcache_stats fcache_stats(const struct fcache *fc)
{
    return fc ? fc->stats : (struct fcache_stats){ 0 };
}
