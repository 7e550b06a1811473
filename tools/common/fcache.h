/*
 * fcache.h - a cache of open descriptors for small files, checked against the file system on
 * every use, so it never serves what an uncached server would not.
 *
 * Serving a small file costs openat2, fstat, pread and close; the descriptor is what costs
 * (a path walk with RESOLVE_BENEATH, a struct file made and torn down).  Here a descriptor
 * stays open and each request pays one fstatat of the same path instead: the entry is used
 * only when that finds the very inode the descriptor holds (device, inode number, type and
 * mode, size, modification and change times, to the nanosecond), and the bytes are still
 * read with pread at request time.  So:
 *   - a file replaced (rename, delete and create) is another inode: opened again;
 *   - a file changed in place is read as it is now, as uncached (its size and times are
 *     compared too, so the headers match a fresh fstat);
 *   - a path that now leads elsewhere (a symbolic link swapped in, even one out of the root)
 *     finds another inode, and the open that follows is openat2's, which refuses it;
 *   - a file deleted, or a failed fstatat, drops the entry and opens as uncached, so errors
 *     are exactly the uncached ones;
 *   - what fstatat cannot see: it follows the path without openat2's RESOLVE_BENEATH, so a
 *     directory on the path moved out of the root and linked back by a symbolic link still
 *     leads to the same, unchanged inode (a file renamed itself has a new change time).  So
 *     an entry is opened again through openat2 at least once a second: for at most that
 *     long such a file is still served, as it was before the move, where uncached it would
 *     be refused (docs/KERNEL.md §15).
 * nginx's open_file_cache (off by default) instead trusts an entry for
 * open_file_cache_valid (60 s) and may serve a stale length; see bench/README.md.
 *
 * One cache per thread (no locks); direct-mapped, a new file evicts the one in its slot.
 */
#ifndef TLSK_TOOLS_FCACHE_H
#define TLSK_TOOLS_FCACHE_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/stat.h>

struct fcache;

/* A cache of slots entries (0: a cache that never holds anything) for regular files of at
 * most max_size bytes.  NULL when out of memory. */
struct fcache *fcache_new(size_t slots, off_t max_size);

/* Close every descriptor held and free the cache (NULL is ignored). */
void fcache_free(struct fcache *fc);

/* Close every descriptor held (after EMFILE, say); the cache stays usable. */
void fcache_clear(struct fcache *fc);

/*
 * fcache_open() - a descriptor for rel below root_fd, as http_open_beneath(root_fd,
 * root_real, rel, O_RDONLY | O_NONBLOCK) followed by fstat into *st would give.  gen tells
 * roots apart that reuse a descriptor number (a configuration generation, say).  *borrowed
 * says who owns the descriptor: true, the cache (do not close it; fcache_release()); false,
 * the caller.  Returns -1 with errno set as http_open_beneath() or fstat() left it.
 */
int fcache_open(struct fcache *fc, unsigned long gen, int root_fd, const char *root_real,
                const char *rel, struct stat *st, bool *borrowed);

/* Give back a descriptor from fcache_open(): closed unless the cache owns it. */
void fcache_release(int fd, bool borrowed);

/* Take over a borrowed descriptor: the cache forgets it without closing it, and the caller
 * closes it when done.  Returns fd. */
int fcache_take(struct fcache *fc, int fd);

/* Hits, misses (opened) and stale entries dropped, since the cache was made. */
struct fcache_stats {
    unsigned long long hits, misses, stale;
};
struct fcache_stats fcache_stats(const struct fcache *fc);

#endif
