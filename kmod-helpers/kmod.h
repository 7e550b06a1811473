/*
 * kmod.h - internal interface of kmod-helpers/ inside the library: the kTLS capability probe
 * (probe.c) and loading the tls module (load.c).  Not installed; nothing here is public API.
 * The diagnostics (tls_stat, inet_diag, ethtool) are not part of the library: see diag/diag.h.
 */
#ifndef TLSK_KMOD_H
#define TLSK_KMOD_H

#include <stddef.h>
#include <stdint.h>

#include "tlsk.h"

/*
 * tlsk__kernel_probe_run() - probe the running kernel now, uncached (tlsk_kernel_probe()
 * caches the result of one call).
 *
 * Works on throwaway loopback TCP connections with all-zero dummy keys; see probe.c for the
 * method.  *caps is always filled.  Returns 0 when the kernel answered every question, or the
 * first -errno that stopped the probe from setting up a connection (e.g. -EMFILE); the
 * combinations it could not try are then reported unsupported, and when not even the first
 * connection could be made, caps->ulp is 0 and caps->ulp_err holds that error.
 *
 * TLSK_PROBE_DISABLE=1 in the environment: report ulp = 0, ulp_err = -ENOENT without creating
 * any socket (tests use it to exercise the userspace fallback on a kTLS kernel).
 *
 * Thread-safe; costs a few loopback connections and a few dozen system calls.
 */
int tlsk__kernel_probe_run(struct tlsk_kernel_caps *caps);

/*
 * tlsk__kernel_probe_refresh() - probe again and make the result what tlsk_kernel_probe()
 * returns from now on, when the cached answer is "no ULP" (tlsk_kernel_load_tls() calls it
 * after loading the module); otherwise, or when the few result slots are used up, return the
 * cached answer.  Pointers returned earlier stay valid and unchanged: every answer lives in a
 * slot of its own that is never written again.  Thread-safe.
 */
const struct tlsk_kernel_caps *tlsk__kernel_probe_refresh(void);

/*
 * tlsk__ulp_try_attach() - attach TCP_ULP "tls" to one end of a throwaway loopback connection.
 * With CAP_NET_ADMIN (in the initial user namespace) and tls.ko not loaded, the kernel tries
 * request_module("tcp-ulp-tls") first.  Ignores TLSK_PROBE_DISABLE.  Returns 0 when it
 * attached, the -errno of the attach (-ENOENT: no tls ULP), or of the connection setup.
 */
int tlsk__ulp_try_attach(void) __attribute__((warn_unused_result));

/* ---------------------------------------------------------------------------------------- */
/* Loading the tls module (load.c)                                                          */

/* Where tlsk_kernel_load_tls() looks; tests point it at a fake tree.  NULL members: defaults. */
struct tlsk__load_env {
    const char *modules_dir;      /* default "/lib/modules" */
    const char *release;          /* default: uname -r */
    const char *const *modprobe;  /* NULL-terminated candidate paths; default /sbin/modprobe,
                                   * /usr/sbin/modprobe (the first executable one is run) */
};

/*
 * tlsk__kmod_find_tls() - is there a tls module for kernel release in modules_dir?  Looks at
 * <modules_dir>/<release>/modules.dep for an entry whose file name is tls.ko with any
 * compression suffix (tls.ko.xz, .zst, .gz, ...), then modules.builtin for a built-in tls;
 * without modules.dep, at kernel/net/tls/tls.ko[.xz|.zst|.gz] directly.  what receives the
 * module's path as listed, or (when none) why not, e.g. "/lib/modules/6.1.0 does not exist".
 * Returns 1 (a module file), 2 (built in), 0 (none) or -EINVAL (NULL arguments).
 */
int tlsk__kmod_find_tls(const char *modules_dir, const char *release, char *what, size_t len);

/* tlsk__kmod_caps() - CAP_NET_ADMIN and CAP_SYS_MODULE in this thread's effective set
 * (capget).  Returns 0 and sets both to 0/1, or -errno. */
int tlsk__kmod_caps(int *net_admin, int *sys_module) __attribute__((warn_unused_result));

/*
 * tlsk__kernel_load_tls_env() - tlsk_kernel_load_tls() with another module tree and modprobe
 * (env NULL: the real ones).  In order:
 * 1. TCP_ULP "tls" on a loopback connection: 0 when it attaches (already loaded, built in,
 *    or loaded just now by the kernel's autoload, which it tries for CAP_NET_ADMIN callers).
 * 2. No module file (tlsk__kmod_find_tls() == 0): -ENOENT.
 * 3. Without CAP_SYS_MODULE: -EPERM, the detail naming the capability that is missing
 *    ("needs CAP_SYS_MODULE or CAP_NET_ADMIN", or just CAP_SYS_MODULE when the autoload of
 *    step 1 had CAP_NET_ADMIN and still failed).
 * 4. posix_spawn of modprobe tls (no shell, environment PATH only, stdin /dev/null, its output
 *    captured for the detail, killed after 30 s), then the attach again: 0 when it attaches;
 *    else -EPERM when modprobe said "Operation not permitted", -ETIMEDOUT, -ENOENT when no
 *    modprobe is installed, or -EIO (modprobe failed or the ULP still does not attach).
 * Other errors of step 1 (e.g. -EMFILE) are returned as they are.  After a 0 the cached probe
 * is refreshed.  detail (may be NULL when detail_len is 0) always receives one line.
 * Blocking (modprobe may take a while); thread-safe.
 */
int tlsk__kernel_load_tls_env(const struct tlsk__load_env *env, char *detail, size_t detail_len);


#endif
