/*
 * load.c - tlsk_kernel_load_tls(): make sure the tls module is loaded (docs/KERNEL.md §2.3).
 *
 * Two ways exist, and neither needs a shell or libkmod:
 * - The kernel's own autoload: TCP_ULP "tls" on an established socket makes the kernel call
 *   request_module("tcp-ulp-tls") when tls is not registered, but only for callers with
 *   CAP_NET_ADMIN (__tcp_ulp_find_autoload).  Trying the attach is therefore step one: it
 *   answers "already there" and, with that capability, loads the module as a side effect.
 * - modprobe tls, for callers with CAP_SYS_MODULE, run with posix_spawn.
 * Whether a module file exists at all decides between "cannot" (-ENOENT) and "may not"
 * (-EPERM), so that a caller knows whether asking an administrator would help.
 */
#ifndef TLSK_PUBLIC
#define TLSK_PUBLIC __attribute__((visibility("default")))
#endif

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <linux/capability.h>

#include "kmod.h"

/* modprobe resolves dependencies and may decompress; anything longer is a hang. */
#define MODPROBE_TIMEOUT_MS 30000
/* Output of modprobe kept for the detail (its first line is what matters). */
#define MODPROBE_OUT_MAX 512

static const char *const default_modprobe[] = { "/sbin/modprobe", "/usr/sbin/modprobe", NULL };

static void detail_set(char *detail, size_t len, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void detail_set(char *detail, size_t len, const char *fmt, ...)
{
    va_list ap;

    if (detail == NULL || len == 0) {
        return;
    }
    va_start(ap, fmt);
    (void)vsnprintf(detail, len, fmt, ap);
    va_end(ap);
}

/* ---------------------------------------------------------------------------------------- */
/* Is there a module file?                                                                  */

/* "tls.ko" or "tls.ko.<anything>" as the last path component of [p, p + n). */
static int is_tls_ko(const char *p, size_t n)
{
    const char *base = p;

    for (size_t i = 0; i < n; i++) {
        if (p[i] == '/') {
            base = p + i + 1;
        }
    }
    n -= (size_t)(base - p);
    if (n < 6 || memcmp(base, "tls.ko", 6) != 0) {
        return 0;
    }
    return n == 6 || (base[6] == '.' && n > 7);
}

/* Search a modules.dep ("path: deps") or modules.builtin ("path") file. */
static int list_has_tls(const char *file, int dep_format, char *what, size_t len)
{
    FILE *f = fopen(file, "re");
    char *line = NULL;
    size_t cap = 0;
    ssize_t got;
    int found = 0;

    if (f == NULL) {
        return -errno;
    }
    while (!found && (got = getline(&line, &cap, f)) > 0) {
        size_t n = (size_t)got;
        char *colon = dep_format ? memchr(line, ':', n) : NULL;

        if (colon != NULL) {
            n = (size_t)(colon - line);
        }
        while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == ' ' || line[n - 1] == '\t')) {
            n--;
        }
        if (is_tls_ko(line, n)) {
            found = 1;
            snprintf(what, len, "%.*s", (int)(n > 400 ? 400 : n), line);
        }
    }
    free(line);
    fclose(f);
    return found;
}

int tlsk__kmod_find_tls(const char *modules_dir, const char *release, char *what, size_t len)
{
    static const char *const direct[] = { "", ".xz", ".zst", ".gz" };
    char dir[512], path[600];
    struct stat sb;
    char dummy[1];
    int rc;

    if (modules_dir == NULL || release == NULL || (what == NULL && len > 0)) {
        return -EINVAL;
    }
    if (what == NULL) {
        what = dummy;
        len = sizeof(dummy);
    }
    what[0] = '\0';
    snprintf(dir, sizeof(dir), "%s/%s", modules_dir, release);
    if (stat(dir, &sb) < 0 || !S_ISDIR(sb.st_mode)) {
        snprintf(what, len, "%s does not exist: no kernel modules are installed for %s", dir,
                 release);
        return 0;
    }
    snprintf(path, sizeof(path), "%s/modules.dep", dir);
    rc = list_has_tls(path, 1, what, len);
    if (rc > 0) {
        return 1;
    }
    int have_dep = rc == 0;
    snprintf(path, sizeof(path), "%s/modules.builtin", dir);
    if (list_has_tls(path, 0, what, len) > 0) {
        return 2;
    }
    if (!have_dep) {
        /* No modules.dep (depmod never ran): look where the kernel build installs it. */
        for (size_t i = 0; i < sizeof(direct) / sizeof(direct[0]); i++) {
            snprintf(path, sizeof(path), "%s/kernel/net/tls/tls.ko%s", dir, direct[i]);
            if (access(path, R_OK) == 0) {
                snprintf(what, len, "%s", path);
                return 1;
            }
        }
        snprintf(what, len, "no tls module for %s: %s has no modules.dep and no "
                 "kernel/net/tls/tls.ko", release, dir);
        return 0;
    }
    snprintf(what, len, "no tls module for %s: %s/modules.dep lists no tls.ko (kernel built "
             "without CONFIG_TLS?)", release, dir);
    return 0;
}

/* ---------------------------------------------------------------------------------------- */
/* Capabilities and the ULP                                                                 */

int tlsk__kmod_caps(int *net_admin, int *sys_module)
{
    struct __user_cap_header_struct hdr = { .version = _LINUX_CAPABILITY_VERSION_3, .pid = 0 };
    struct __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3];

    memset(data, 0, sizeof(data));
    if (syscall(SYS_capget, &hdr, data) < 0) {
        return -errno;
    }
    *net_admin = (data[CAP_TO_INDEX(CAP_NET_ADMIN)].effective & CAP_TO_MASK(CAP_NET_ADMIN)) != 0;
    *sys_module =
        (data[CAP_TO_INDEX(CAP_SYS_MODULE)].effective & CAP_TO_MASK(CAP_SYS_MODULE)) != 0;
    return 0;
}

/* 1 when /proc/sys/net/ipv4/tcp_available_ulp lists tls (registered, i.e. loaded). */
static int ulp_listed(void)
{
    char buf[256];
    int fd = open("/proc/sys/net/ipv4/tcp_available_ulp", O_RDONLY | O_CLOEXEC);
    ssize_t n;

    if (fd < 0) {
        return 0;
    }
    n = read(fd, buf, sizeof(buf) - 1);
    close(fd);
    if (n <= 0) {
        return 0;
    }
    buf[n] = '\0';
    char *save = NULL;
    for (char *tok = strtok_r(buf, " \t\n", &save); tok != NULL;
         tok = strtok_r(NULL, " \t\n", &save)) {
        if (strcmp(tok, "tls") == 0) {
            return 1;
        }
    }
    return 0;
}

/* ---------------------------------------------------------------------------------------- */
/* modprobe                                                                                 */

static long elapsed_ms(const struct timespec *t0)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (long)(t.tv_sec - t0->tv_sec) * 1000 + (t.tv_nsec - t0->tv_nsec) / 1000000;
}

/*
 * Run path with argv { "modprobe", "tls" }; out receives the start of its stdout+stderr.
 * Returns 0 and *status (waitpid's), or -errno (-ETIMEDOUT after MODPROBE_TIMEOUT_MS).
 */
static int run_modprobe(const char *path, char *out, size_t outlen, int *status)
{
    static char *const envp[] = { "PATH=/usr/sbin:/usr/bin:/sbin:/bin", NULL };
    char *const argv[] = { "modprobe", "tls", NULL };
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t attr;
    sigset_t none, all;
    int pfd[2];
    pid_t pid;
    size_t used = 0;
    int rc;

    out[0] = '\0';
    if (pipe2(pfd, O_CLOEXEC) < 0) {
        return -errno;
    }
    posix_spawn_file_actions_init(&fa);
    posix_spawnattr_init(&attr);
    sigemptyset(&none);
    sigfillset(&all);
    posix_spawnattr_setsigmask(&attr, &none);
    posix_spawnattr_setsigdefault(&attr, &all);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
    posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_adddup2(&fa, pfd[1], 1);
    posix_spawn_file_actions_adddup2(&fa, pfd[1], 2);
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 34))
    /* The application's descriptors without O_CLOEXEC are none of modprobe's business. */
    posix_spawn_file_actions_addclosefrom_np(&fa, 3);
#endif
    rc = posix_spawn(&pid, path, &fa, &attr, argv, envp);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&attr);
    close(pfd[1]);
    if (rc != 0) {
        close(pfd[0]);
        return -rc;
    }

    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    rc = 0;
    for (;;) {
        struct pollfd p = { .fd = pfd[0], .events = POLLIN };
        long left = MODPROBE_TIMEOUT_MS - elapsed_ms(&t0);
        char tmp[256];
        ssize_t n;

        if (left <= 0) {
            rc = -ETIMEDOUT;
            break;
        }
        n = poll(&p, 1, (int)left);
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            rc = n == 0 ? -ETIMEDOUT : -errno;
            break;
        }
        n = read(pfd[0], tmp, sizeof(tmp));
        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            break; /* EOF: modprobe exited (or closed its output) */
        }
        size_t keep = (size_t)n;
        if (keep > outlen - 1 - used) {
            keep = outlen - 1 - used;
        }
        memcpy(out + used, tmp, keep);
        used += keep;
        out[used] = '\0';
    }
    close(pfd[0]);
    if (rc == -ETIMEDOUT) {
        (void)kill(pid, SIGKILL);
    }
    while (waitpid(pid, status, 0) < 0) {
        if (errno != EINTR) {
            /* ECHILD: the application reaps children itself (SIGCHLD ignored); the attach
             * test afterwards tells whether it worked. */
            *status = 0;
            break;
        }
    }
    return rc;
}

/* The first line of s, without control characters, at most 200 bytes. */
static void first_line(char *s)
{
    size_t i = 0;

    while (s[i] != '\0' && s[i] != '\n' && i < 200) {
        if ((unsigned char)s[i] < 0x20) {
            s[i] = ' ';
        }
        i++;
    }
    s[i] = '\0';
}

static int load_with_modprobe(const struct tlsk__load_env *env, char *detail, size_t len)
{
    const char *const *cand = env != NULL && env->modprobe != NULL ? env->modprobe
                                                                   : default_modprobe;
    const char *path = NULL;
    char out[MODPROBE_OUT_MAX];
    int status = 0;
    int rc;

    for (size_t i = 0; cand[i] != NULL; i++) {
        if (access(cand[i], X_OK) == 0) {
            path = cand[i];
            break;
        }
    }
    if (path == NULL) {
        detail_set(detail, len, "no modprobe found (tried %s%s%s): install kmod", cand[0],
                   cand[0] && cand[1] ? ", " : "", cand[0] && cand[1] ? cand[1] : "");
        return -ENOENT;
    }
    rc = run_modprobe(path, out, sizeof(out), &status);
    if (rc < 0) {
        detail_set(detail, len, "%s tls: %s", path,
                   rc == -ETIMEDOUT ? "no answer in 30 s, killed" : strerror(-rc));
        return rc;
    }
    first_line(out);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        int perm = strstr(out, "Operation not permitted") != NULL;
        if (WIFEXITED(status)) {
            detail_set(detail, len, "%s tls failed (exit %d)%s%s", path, WEXITSTATUS(status),
                       out[0] ? ": " : "", out);
        } else {
            detail_set(detail, len, "%s tls failed (signal %d)", path,
                       WIFSIGNALED(status) ? WTERMSIG(status) : 0);
        }
        return perm ? -EPERM : -EIO;
    }
    rc = tlsk__ulp_try_attach();
    if (rc < 0) {
        detail_set(detail, len, "%s tls succeeded but TCP_ULP \"tls\" still fails: %s", path,
                   strerror(-rc));
        return rc == -ENOENT ? -EIO : rc;
    }
    detail_set(detail, len, "loaded with %s tls", path);
    return 0;
}

/* ---------------------------------------------------------------------------------------- */

int tlsk__kernel_load_tls_env(const struct tlsk__load_env *env, char *detail, size_t detail_len)
{
    const char *modules_dir = env != NULL && env->modules_dir ? env->modules_dir : "/lib/modules";
    const char *release = env != NULL ? env->release : NULL;
    struct utsname uts;
    char what[512];
    int net_admin = 0, sys_module = 0;
    int listed, found, rc;

    if (detail == NULL) {
        detail_len = 0;
    }
    detail_set(detail, detail_len, "%s", "");
    if (release == NULL) {
        if (uname(&uts) < 0) {
            rc = -errno;
            detail_set(detail, detail_len, "uname: %s", strerror(-rc));
            return rc;
        }
        release = uts.release;
    }

    listed = ulp_listed();
    rc = tlsk__kmod_caps(&net_admin, &sys_module);
    if (rc < 0) {
        /* Unknown: assume none, the answer that never promises too much. */
        net_admin = sys_module = 0;
    }
    rc = tlsk__ulp_try_attach();
    if (rc == 0) {
        detail_set(detail, detail_len, "%s",
                   listed ? "already available (loaded or built in)"
                          : "loaded by the kernel's TCP_ULP autoload (CAP_NET_ADMIN)");
        goto loaded;
    }
    if (rc != -ENOENT) {
        detail_set(detail, detail_len, "cannot try TCP_ULP \"tls\": %s", strerror(-rc));
        return rc;
    }

    found = tlsk__kmod_find_tls(modules_dir, release, what, sizeof(what));
    if (found <= 0) {
        detail_set(detail, detail_len, "%s", what);
        return -ENOENT;
    }
    if (!sys_module) {
        if (net_admin) {
            detail_set(detail, detail_len,
                       "%s exists, but the TCP_ULP autoload (CAP_NET_ADMIN) did not load it; "
                       "modprobe needs CAP_SYS_MODULE",
                       what);
        } else {
            detail_set(detail, detail_len,
                       "%s exists, but loading it needs CAP_SYS_MODULE or CAP_NET_ADMIN "
                       "(run tlsk-modprobe --load as root, or --persist to load it at boot)",
                       what);
        }
        return -EPERM;
    }
    rc = load_with_modprobe(env, detail, detail_len);
    if (rc < 0) {
        return rc;
    }
loaded:
    (void)tlsk__kernel_probe_refresh();
    return 0;
}

TLSK_PUBLIC int tlsk_kernel_load_tls(char *detail, size_t detail_len)
{
    return tlsk__kernel_load_tls_env(NULL, detail, detail_len);
}
