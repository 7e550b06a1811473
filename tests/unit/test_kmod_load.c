/*
 * test_kmod_load.c - tlsk_kernel_load_tls() and the refreshable probe cache.
 *
 * - tlsk__kmod_find_tls() on synthetic /lib/modules trees (modules.dep with every compression
 *   suffix, look-alike names, modules.builtin, no modules.dep, long lines, bad arguments) and
 *   on the real one.
 * - tlsk__kmod_caps() against CapEff of /proc/self/status.
 * - tlsk_kernel_load_tls() on the real system: 0 with TLSK_EXPECT_KTLS=1 (tls.ko loaded by
 *   the runner); -ENOENT with the tree's reason when no module file exists (the usual CI
 *   host, which may have no /lib/modules at all); detail buffer handling; no leaked fds.
 * - Every branch of the decision, with a fake module tree and fake modprobe scripts, in forked
 *   children whose capabilities are dropped with capset() or setuid(nobody): -EPERM naming
 *   the missing capability, modprobe's argv/environment/stdin, its failure text, "Operation
 *   not permitted" -> -EPERM, no modprobe -> -ENOENT.  These branches need a kernel where the
 *   ULP does not attach; where it does (kTLS kernels) the same calls must return 0 at once.
 * - In user-mode Linux (TLSK_EXPECT_KTLS=1, root, the UML module folder present) the real
 *   thing, in a child: rmmod tls, then load it back through the modprobe path (a fake
 *   modprobe that insmods the real tls.ko), through the kernel's TCP_ULP autoload
 *   (/proc/sys/kernel/modprobe pointed at that script), and see -EPERM without capabilities;
 *   the cached probe must be refreshed (new pointer, ulp 1) while the old pointer still reads
 *   ulp 0.  tls is always put back afterwards.
 * - The probe cache: refresh semantics, slot exhaustion, old pointers never rewritten,
 *   concurrent readers and refreshers.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

#include <linux/capability.h>

#include "harness.h"
#include "kmod.h"
#include "tap.h"

static char tmpdir[256];
static struct utsname uts;

/* ---------------------------------------------------------------------------------------- */
/* Helpers                                                                                  */

static void write_file(const char *path, const char *text, mode_t mode)
{
    FILE *f = fopen(path, "w");
    if (f == NULL || fputs(text, f) < 0 || fclose(f) != 0 || chmod(path, mode) != 0) {
        tap_bail("write_file");
    }
}

static void mkdirs(const char *path)
{
    char tmp[PATH_MAX];
    snprintf(tmp, sizeof(tmp), "%s", path);
    for (char *p = tmp + 1; *p != '\0'; p++) {
        if (*p == '/') {
            *p = '\0';
            (void)mkdir(tmp, 0755);
            *p = '/';
        }
    }
    if (mkdir(tmp, 0755) < 0 && errno != EEXIST) {
        tap_bail("mkdir");
    }
}

static int rm_rf(const char *path)
{
    char cmd[PATH_MAX + 16];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", path);
    return system(cmd);
}

static char *read_all(const char *path, char *buf, size_t cap)
{
    FILE *f = fopen(path, "r");
    size_t n = 0;
    buf[0] = '\0';
    if (f != NULL) {
        n = fread(buf, 1, cap - 1, f);
        fclose(f);
    }
    buf[n] = '\0';
    return buf;
}

static int count_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    int n = 0;
    if (d == NULL) {
        tap_bail("opendir /proc/self/fd");
    }
    while (readdir(d) != NULL) {
        n++;
    }
    closedir(d);
    return n;
}

static uint64_t capeff_from_status(void)
{
    char buf[4096];
    unsigned long long v = 0;
    const char *p = strstr(read_all("/proc/self/status", buf, sizeof(buf)), "CapEff:");
    if (p == NULL || sscanf(p, "CapEff: %llx", &v) != 1) {
        tap_bail("CapEff");
    }
    return v;
}

/* Drop capabilities from the effective, permitted and inheritable sets. */
static int drop_caps(int net_admin, int sys_module)
{
    struct __user_cap_header_struct hdr = { .version = _LINUX_CAPABILITY_VERSION_3 };
    struct __user_cap_data_struct d[_LINUX_CAPABILITY_U32S_3];
    uint32_t mask = 0;

    if (syscall(SYS_capget, &hdr, d) < 0) {
        return -errno;
    }
    if (net_admin) {
        mask |= CAP_TO_MASK(CAP_NET_ADMIN);
    }
    if (sys_module) {
        mask |= CAP_TO_MASK(CAP_SYS_MODULE);
    }
    d[0].effective &= ~mask;
    d[0].permitted &= ~mask;
    d[0].inheritable &= ~mask;
    return syscall(SYS_capset, &hdr, d) < 0 ? -errno : 0;
}

/* What a child reports back through a pipe. */
struct child_out {
    int ran;
    int rc;
    int aux[4];
    char detail[512];
};

/* Run fn(arg, out) in a child; returns 1 when it reported. */
static int in_child(void (*fn)(const void *, struct child_out *), const void *arg,
                    struct child_out *out)
{
    int pfd[2];
    memset(out, 0, sizeof(*out));
    if (pipe(pfd) < 0) {
        tap_bail("pipe");
    }
    fflush(stdout);
    pid_t pid = fork();
    if (pid < 0) {
        tap_bail("fork");
    }
    if (pid == 0) {
        struct child_out o;
        memset(&o, 0, sizeof(o));
        close(pfd[0]);
        fn(arg, &o);
        o.ran = 1;
        ssize_t n = write(pfd[1], &o, sizeof(o));
        _exit(n == (ssize_t)sizeof(o) ? 0 : 1);
    }
    close(pfd[1]);
    ssize_t n = read(pfd[0], out, sizeof(*out));
    close(pfd[0]);
    int st;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
    }
    return n == (ssize_t)sizeof(*out) && out->ran && WIFEXITED(st) && WEXITSTATUS(st) == 0;
}

/* ---------------------------------------------------------------------------------------- */
/* tlsk__kmod_find_tls                                                                      */

struct dep_case {
    const char *dep;     /* modules.dep text, NULL: no file */
    const char *builtin; /* modules.builtin text, NULL: no file */
    const char *file;    /* a file to create under the release dir, or NULL */
    int want;
    const char *want_what; /* expected what (exact) or a substring prefixed with '~' */
    const char *label;
};

static void test_find(void)
{
    static const struct dep_case cases[] = {
        { "kernel/net/tls/tls.ko.zst: kernel/net/tls/x.ko\n", NULL, NULL, 1,
          "kernel/net/tls/tls.ko.zst", "modules.dep: tls.ko.zst" },
        { "kernel/a.ko:\nkernel/net/tls/tls.ko.xz:\n", NULL, NULL, 1, "kernel/net/tls/tls.ko.xz",
          "modules.dep: tls.ko.xz after another module" },
        { "kernel/net/tls/tls.ko.gz:\n", NULL, NULL, 1, "kernel/net/tls/tls.ko.gz",
          "modules.dep: tls.ko.gz" },
        { "kernel/net/tls/tls.ko:", NULL, NULL, 1, "kernel/net/tls/tls.ko",
          "modules.dep: tls.ko on a last line without newline" },
        { "/opt/extra/tls.ko: \n", NULL, NULL, 1, "/opt/extra/tls.ko",
          "modules.dep: an absolute path" },
        { "kernel/net/tls/tls.kox:\nkernel/x/mytls.ko:\nkernel/net/tls/tls.ko.:\n"
          "kernel/net/tls/tls.k:\nkernel/net/tls/:\ntls.ko/x.ko:\n\n",
          NULL, NULL, 0, "~lists no tls.ko", "modules.dep: look-alike names are not tls.ko" },
        { "kernel/a.ko: kernel/net/tls/tls.ko\n", NULL, NULL, 0, "~lists no tls.ko",
          "modules.dep: tls.ko as a dependency of another module is not an entry" },
        { "", "kernel/net/tls/tls.ko\n", NULL, 2, "kernel/net/tls/tls.ko",
          "modules.builtin: built in" },
        { NULL, "kernel/a.ko\n", "kernel/net/tls/tls.ko.xz", 1, "~kernel/net/tls/tls.ko.xz",
          "no modules.dep: the file itself" },
        { NULL, NULL, NULL, 0, "~has no modules.dep", "no modules.dep, no file" },
        { NULL, NULL, "kernel/net/tls/tls.ko.bz2", 0, "~has no modules.dep",
          "no modules.dep: an unknown suffix is not looked for" },
    };
    char what[512];

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const struct dep_case *c = &cases[i];
        char root[PATH_MAX], dir[PATH_MAX + 32], path[PATH_MAX + 128];

        snprintf(root, sizeof(root), "%s/find%zu", tmpdir, i);
        snprintf(dir, sizeof(dir), "%s/9.9.9-test", root);
        mkdirs(dir);
        if (c->dep != NULL) {
            snprintf(path, sizeof(path), "%s/modules.dep", dir);
            write_file(path, c->dep, 0644);
        }
        if (c->builtin != NULL) {
            snprintf(path, sizeof(path), "%s/modules.builtin", dir);
            write_file(path, c->builtin, 0644);
        }
        if (c->file != NULL) {
            snprintf(path, sizeof(path), "%s/%s", dir, c->file);
            char *slash = strrchr(path, '/');
            *slash = '\0';
            mkdirs(path);
            *slash = '/';
            write_file(path, "", 0644);
        }
        int rc = tlsk__kmod_find_tls(root, "9.9.9-test", what, sizeof(what));
        int what_ok = c->want_what[0] == '~' ? strstr(what, c->want_what + 1) != NULL
                                             : strcmp(what, c->want_what) == 0;
        if (!TAP_OK(rc == c->want && what_ok, "find_tls: %s", c->label)) {
            tap_diag("  rc %d (want %d), what '%s' (want '%s')", rc, c->want, what,
                     c->want_what);
        }
    }

    /* A dependency list far longer than any line buffer, then tls. */
    {
        char root[PATH_MAX], dir[PATH_MAX + 32], path[PATH_MAX + 64];
        size_t big = 100000;
        char *text = malloc(big + 64);
        snprintf(root, sizeof(root), "%s/findlong", tmpdir);
        snprintf(dir, sizeof(dir), "%s/9.9.9-test", root);
        mkdirs(dir);
        memcpy(text, "kernel/a.ko:", 12);
        memset(text + 12, 'x', big);
        strcpy(text + 12 + big, "\nkernel/net/tls/tls.ko.xz:\n");
        snprintf(path, sizeof(path), "%s/modules.dep", dir);
        write_file(path, text, 0644);
        free(text);
        int rc = tlsk__kmod_find_tls(root, "9.9.9-test", what, sizeof(what));
        TAP_OK(rc == 1 && strcmp(what, "kernel/net/tls/tls.ko.xz") == 0,
               "find_tls: a 100 kB line before the entry (rc %d)", rc);
    }

    int rc = tlsk__kmod_find_tls(tmpdir, "no-such-release", what, sizeof(what));
    TAP_OK(rc == 0 && strstr(what, "/no-such-release does not exist") != NULL,
           "find_tls: missing release directory: 0, says it does not exist ('%s')", what);
    char tiny[8];
    rc = tlsk__kmod_find_tls(tmpdir, "no-such-release", tiny, sizeof(tiny));
    TAP_OK(rc == 0 && strlen(tiny) == 7, "find_tls: reason cut to a small buffer, terminated");
    TAP_IS(tlsk__kmod_find_tls(NULL, "x", what, sizeof(what)), -EINVAL, "find_tls: NULL dir");
    TAP_IS(tlsk__kmod_find_tls(tmpdir, NULL, what, sizeof(what)), -EINVAL,
           "find_tls: NULL release");
    TAP_IS(tlsk__kmod_find_tls(tmpdir, "x", NULL, 5), -EINVAL, "find_tls: NULL what, len 5");
    TAP_IS(tlsk__kmod_find_tls(tmpdir, "x", NULL, 0), 0, "find_tls: NULL what, len 0 is fine");

    /* The real tree. */
    char real[PATH_MAX];
    struct stat sb;
    snprintf(real, sizeof(real), "/lib/modules/%s", uts.release);
    int exists = stat(real, &sb) == 0 && S_ISDIR(sb.st_mode);
    rc = tlsk__kmod_find_tls("/lib/modules", uts.release, what, sizeof(what));
    tap_diag("real tree: %s %s; find_tls %d: %s", real, exists ? "exists" : "does not exist", rc,
             what);
    if (!exists) {
        TAP_OK(rc == 0 && strstr(what, real) != NULL,
               "real tree: no %s, so no tls module, and the reason names it", real);
    } else {
        TAP_OK(rc >= 0 && rc <= 2 && what[0] != '\0', "real tree: an answer with a reason");
    }
}

/* ---------------------------------------------------------------------------------------- */
/* Capabilities                                                                             */

static void child_caps(const void *arg, struct child_out *o)
{
    const int *drop = arg;
    o->rc = drop_caps(drop[0], drop[1]);
    if (o->rc == 0) {
        o->rc = tlsk__kmod_caps(&o->aux[0], &o->aux[1]);
    }
    uint64_t eff = capeff_from_status();
    o->aux[2] = (int)((eff >> CAP_NET_ADMIN) & 1);
    o->aux[3] = (int)((eff >> CAP_SYS_MODULE) & 1);
}

static void test_caps(void)
{
    int na = -1, sm = -1;
    uint64_t eff = capeff_from_status();
    int rc = tlsk__kmod_caps(&na, &sm);
    TAP_OK(rc == 0 && na == (int)((eff >> CAP_NET_ADMIN) & 1) &&
               sm == (int)((eff >> CAP_SYS_MODULE) & 1),
           "kmod_caps agrees with CapEff (net_admin %d, sys_module %d)", na, sm);
    if (na && sm) {
        static const int drops[3][2] = { { 1, 0 }, { 0, 1 }, { 1, 1 } };
        for (int i = 0; i < 3; i++) {
            struct child_out o;
            int ran = in_child(child_caps, drops[i], &o);
            TAP_OK(ran && o.rc == 0 && o.aux[0] == !drops[i][0] && o.aux[1] == !drops[i][1] &&
                       o.aux[2] == o.aux[0] && o.aux[3] == o.aux[1],
                   "kmod_caps after dropping%s%s: net_admin %d sys_module %d",
                   drops[i][0] ? " CAP_NET_ADMIN" : "", drops[i][1] ? " CAP_SYS_MODULE" : "",
                   o.aux[0], o.aux[1]);
        }
    } else {
        tap_diag("not privileged: capability dropping not checked");
    }
}

/* ---------------------------------------------------------------------------------------- */
/* The real system                                                                          */

static void test_real(int attaches)
{
    char detail[512], what[512];
    const struct tlsk_kernel_caps *before = tlsk_kernel_probe();
    struct tlsk_kernel_caps copy = *before;
    int fds = count_fds();
    int found = tlsk__kmod_find_tls("/lib/modules", uts.release, what, sizeof(what));

    memset(detail, 'x', sizeof(detail));
    int rc = tlsk_kernel_load_tls(detail, sizeof(detail));
    tap_diag("tlsk_kernel_load_tls: %d (%s): %s", rc, tlsk_err_name(rc), detail);
    TAP_OK(memchr(detail, '\0', sizeof(detail)) != NULL && detail[0] != '\0',
           "the detail is a terminated, non-empty line");
    TAP_OK(strchr(detail, '\n') == NULL, "the detail has no newline");
    TAP_IS(count_fds(), fds, "no descriptor left open");

    if (h_expect_ktls()) {
        TAP_IS(rc, 0, "TLSK_EXPECT_KTLS=1: returns 0 (tls.ko loaded by the runner)");
        TAP_OK(strstr(detail, "already available") != NULL, "and says it was already there");
    }
    if (attaches) {
        TAP_IS(rc, 0, "the ULP attaches here: 0");
        TAP_OK(tlsk_kernel_probe() == before && before->ulp == 1,
               "nothing to refresh: the cached probe stays (ulp 1)");
    } else if (found == 0) {
        TAP_IS(rc, -ENOENT, "no tls module for %s: -ENOENT", uts.release);
        TAP_OK(strcmp(detail, what) == 0, "the detail is the module tree's reason");
        TAP_OK(strstr(detail, uts.release) != NULL, "the detail names the kernel release");
        TAP_OK(tlsk_kernel_probe() == before && memcmp(before, &copy, sizeof(copy)) == 0 &&
                   before->ulp == 0,
               "failure: the cached probe is unchanged");
    } else {
        /* A module exists but is not loaded: depends on privileges and the module itself. */
        TAP_OK(rc == 0 || rc == -EPERM || rc == -EIO,
               "a module exists: 0, -EPERM or -EIO (%d)", rc);
        if (rc == 0) {
            TAP_OK(tlsk_kernel_probe()->ulp == 1, "loaded: the refreshed probe says ulp 1");
        }
    }

    int rc2 = tlsk_kernel_load_tls(NULL, 0);
    TAP_IS(rc2, rc, "detail NULL, length 0: same answer");
    char small[6];
    memset(small, 'x', sizeof(small));
    rc2 = tlsk_kernel_load_tls(small, sizeof(small));
    TAP_OK(rc2 == rc && small[5] == '\0' && strlen(small) == 5,
           "a 6-byte detail buffer: same answer, cut and terminated");
}

/* ---------------------------------------------------------------------------------------- */
/* Every branch, with a fake module tree and fake modprobe                                  */

struct fake {
    char modules[PATH_MAX];      /* tree listing tls.ko.xz */
    char modules_none[PATH_MAX]; /* tree without tls */
    char mp_fail[PATH_MAX + 32];
    char mp_ok[PATH_MAX + 32];
    char mp_eperm[PATH_MAX + 32];
    char record[PATH_MAX + 32];
};
static struct fake fk;

struct load_case {
    const char *modules;
    const char *modprobe;
    int drop_na, drop_sm, setuid_nobody;
};

static int setgroups_ok(void)
{
    gid_t nogroup[1] = { 65534 };
    return setgroups(1, nogroup);
}

static void child_load(const void *arg, struct child_out *o)
{
    const struct load_case *c = arg;
    const char *const mp[] = { c->modprobe, NULL };
    struct tlsk__load_env env = { .modules_dir = c->modules, .release = "9.9.9-test",
                                  .modprobe = mp };

    if (c->setuid_nobody) {
        if (setgroups_ok() < 0 || setgid(65534) < 0 || setuid(65534) < 0) {
            o->rc = 1000;
            return;
        }
    } else if ((c->drop_na || c->drop_sm) && drop_caps(c->drop_na, c->drop_sm) < 0) {
        o->rc = 1000;
        return;
    }
    int fds = count_fds();
    o->rc = tlsk__kernel_load_tls_env(&env, o->detail, sizeof(o->detail));
    o->aux[0] = count_fds() - fds;
}

static void make_fake(void)
{
    char dir[PATH_MAX + 32], path[PATH_MAX + 64];

    snprintf(fk.modules, sizeof(fk.modules), "%s/fake-modules", tmpdir);
    snprintf(dir, sizeof(dir), "%s/9.9.9-test", fk.modules);
    mkdirs(dir);
    snprintf(path, sizeof(path), "%s/modules.dep", dir);
    write_file(path, "kernel/net/tls/tls.ko.xz: kernel/crypto/gcm.ko.xz\n", 0644);
    snprintf(fk.modules_none, sizeof(fk.modules_none), "%s/fake-none", tmpdir);
    snprintf(dir, sizeof(dir), "%s/9.9.9-test", fk.modules_none);
    mkdirs(dir);
    snprintf(path, sizeof(path), "%s/modules.dep", dir);
    write_file(path, "kernel/crypto/gcm.ko.xz:\n", 0644);

    snprintf(fk.record, sizeof(fk.record), "%s/record", tmpdir);
    snprintf(fk.mp_fail, sizeof(fk.mp_fail), "%s/modprobe-fail", tmpdir);
    write_file(fk.mp_fail,
               "#!/bin/sh\necho \"modprobe: FATAL: Module tls not found in directory "
               "/lib/modules/9.9.9-test\" >&2\nexit 1\n",
               0755);
    snprintf(fk.mp_eperm, sizeof(fk.mp_eperm), "%s/modprobe-eperm", tmpdir);
    write_file(fk.mp_eperm,
               "#!/bin/sh\necho \"modprobe: ERROR: could not insert 'tls': Operation not "
               "permitted\" >&2\nexit 1\n",
               0755);
    snprintf(fk.mp_ok, sizeof(fk.mp_ok), "%s/modprobe-ok", tmpdir);
    char script[PATH_MAX * 2];
    snprintf(script, sizeof(script),
             "#!/bin/sh\n{ echo \"argc=$# args=$*\"; env | sort; "
             "if read -r line; then echo stdin-had-data; else echo stdin-empty; fi; "
             "ls /proc/$$/fd | wc -l; } >'%s'\nexit 0\n",
             fk.record);
    write_file(fk.mp_ok, script, 0755);
    /* Readable for nobody. */
    chmod(tmpdir, 0755);
}

static void test_branches(int attaches)
{
    struct child_out o;
    char rec[4096];

    if (attaches) {
        /* Loading is never needed here: every variant returns 0 before looking further. */
        const struct load_case c = { fk.modules, fk.mp_fail, 1, 1, 0 };
        int ran = in_child(child_load, &c, &o);
        TAP_OK(ran && o.rc == 0, "ULP attaches: 0 even without capabilities (%d: %s)", o.rc,
               o.detail);
        const struct load_case c2 = { fk.modules_none, "/nonexistent/modprobe", 0, 0, 0 };
        ran = in_child(child_load, &c2, &o);
        TAP_OK(ran && o.rc == 0, "ULP attaches: 0 even with no module file and no modprobe");
        tap_diag("the -EPERM/-EIO/modprobe branches need a kernel without the tls ULP; "
                 "in user-mode Linux they run after rmmod tls (see below)");
        return;
    }

    int na = 0, sm = 0;
    if (tlsk__kmod_caps(&na, &sm) < 0 || !na || !sm) {
        tap_diag("not root: only the unprivileged branches are checked");
    }

    struct {
        struct load_case c;
        int want;
        const char *want_detail;
        const char *label;
        int needs_root;
    } cases[] = {
        { { fk.modules_none, fk.mp_ok, 0, 0, 0 }, -ENOENT, "lists no tls.ko",
          "no module file: -ENOENT even with every capability", 0 },
        { { fk.modules_none, fk.mp_ok, 1, 1, 0 }, -ENOENT, "lists no tls.ko",
          "no module file, no capabilities: still -ENOENT (nothing to load)", 1 },
        { { fk.modules, fk.mp_fail, 1, 1, 0 }, -EPERM, "needs CAP_SYS_MODULE or CAP_NET_ADMIN",
          "module file, capset without both: -EPERM naming both capabilities", 1 },
        { { fk.modules, fk.mp_fail, 0, 0, 1 }, -EPERM, "needs CAP_SYS_MODULE or CAP_NET_ADMIN",
          "module file, setuid(nobody): -EPERM naming both capabilities", 1 },
        { { fk.modules, fk.mp_fail, 0, 1, 0 }, -EPERM, "modprobe needs CAP_SYS_MODULE",
          "module file, CAP_NET_ADMIN only: -EPERM, the autoload was tried, needs "
          "CAP_SYS_MODULE", 1 },
        { { fk.modules, fk.mp_fail, 1, 0, 0 }, -EIO,
          "exit 1): modprobe: FATAL: Module tls not found",
          "CAP_SYS_MODULE only: modprobe runs, its failure is -EIO with its message", 1 },
        { { fk.modules, fk.mp_eperm, 0, 0, 0 }, -EPERM, "Operation not permitted",
          "modprobe says Operation not permitted: -EPERM", 1 },
        { { fk.modules, "/nonexistent/modprobe", 0, 0, 0 }, -ENOENT, "no modprobe found",
          "no modprobe installed: -ENOENT", 1 },
        { { fk.modules, fk.mp_ok, 0, 0, 0 }, -EIO, "succeeded but TCP_ULP \"tls\" still fails",
          "modprobe exits 0 but the ULP still fails: -EIO", 1 },
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        if (cases[i].needs_root && !(na && sm)) {
            continue;
        }
        unlink(fk.record);
        int ran = in_child(child_load, &cases[i].c, &o);
        if (!TAP_OK(ran && o.rc == cases[i].want && strstr(o.detail, cases[i].want_detail) &&
                        o.aux[0] == 0,
                    "%s", cases[i].label)) {
            tap_diag("  ran %d rc %d (want %d) fds %+d detail '%s'", ran, o.rc, cases[i].want,
                     o.aux[0], o.detail);
        }
        int ran_mp = access(fk.record, F_OK) == 0;
        if (cases[i].c.modprobe == fk.mp_ok && cases[i].want == -ENOENT) {
            TAP_OK(!ran_mp, "  and modprobe was not run");
        } else if (cases[i].c.modprobe == fk.mp_ok) {
            TAP_OK(ran_mp, "  modprobe was run");
            char lines[sizeof(rec)];
            read_all(fk.record, rec, sizeof(rec));
            memcpy(lines, rec, sizeof(rec));
            for (char *save = NULL, *l = strtok_r(lines, "\n", &save); l != NULL;
                 l = strtok_r(NULL, "\n", &save)) {
                tap_diag("fake modprobe saw: %s", l);
            }
            TAP_OK(strstr(rec, "argc=1 args=tls\n") != NULL, "modprobe argv is exactly 'tls'");
            TAP_OK(strstr(rec, "PATH=/usr/sbin:/usr/bin:/sbin:/bin\n") != NULL &&
                       strstr(rec, "HOME=") == NULL && strstr(rec, "TLSK_") == NULL,
                   "modprobe's environment is PATH only");
            TAP_OK(strstr(rec, "stdin-empty") != NULL, "modprobe's stdin is /dev/null");
        }
    }
}

/* ---------------------------------------------------------------------------------------- */
/* User-mode Linux: unload and load for real                                                */

static char uml_ko[PATH_MAX];
static char uml_mp[PATH_MAX + 32];

static int tls_listed(void)
{
    char buf[256];
    read_all("/proc/sys/net/ipv4/tcp_available_ulp", buf, sizeof(buf));
    for (char *save = NULL, *t = strtok_r(buf, " \t\n", &save); t != NULL;
         t = strtok_r(NULL, " \t\n", &save)) {
        if (strcmp(t, "tls") == 0) {
            return 1;
        }
    }
    return 0;
}

static int rmmod_tls(void)
{
    for (int i = 0; i < 50; i++) {
        if (syscall(SYS_delete_module, "tls", O_NONBLOCK) == 0) {
            return 0;
        }
        if (errno != EAGAIN && errno != EBUSY) {
            return -errno;
        }
        usleep(100000); /* sockets of the previous step are still being freed */
    }
    return -EBUSY;
}

static void put_back_tls(void)
{
    char cmd[PATH_MAX + 32];
    if (!tls_listed()) {
        snprintf(cmd, sizeof(cmd), "insmod '%s'", uml_ko);
        if (system(cmd) != 0 || !tls_listed()) {
            tap_bail("could not put tls.ko back");
        }
    }
}

static int set_kernel_modprobe(const char *path)
{
    int fd = open("/proc/sys/kernel/modprobe", O_WRONLY | O_TRUNC);
    if (fd < 0) {
        return -errno;
    }
    ssize_t n = write(fd, path, strlen(path));
    close(fd);
    return n == (ssize_t)strlen(path) ? 0 : -EIO;
}

/* aux: [0] ulp of the probe before, [1] ulp after, [2] pointers differ, [3] old one intact */
static void child_uml(const void *arg, struct child_out *o)
{
    int mode = *(const int *)arg;
    const char *const mp[] = { uml_mp, NULL };
    struct tlsk__load_env env = { .modules_dir = fk.modules, .release = "9.9.9-test",
                                  .modprobe = mp };
    char saved[PATH_MAX];

    int rc = rmmod_tls();
    if (rc < 0 || tls_listed()) {
        o->rc = 1000;
        o->aux[0] = rc;
        return;
    }
    const struct tlsk_kernel_caps *p0 = tlsk_kernel_probe();
    struct tlsk_kernel_caps c0 = *p0;
    o->aux[0] = p0->ulp;
    if (mode == 0) {
        /* The modprobe path: the kernel's own autoload fails (no /lib/modules in the guest). */
        o->rc = tlsk__kernel_load_tls_env(&env, o->detail, sizeof(o->detail));
    } else if (mode == 1) {
        /* The autoload path: the kernel runs our script as its modprobe. */
        read_all("/proc/sys/kernel/modprobe", saved, sizeof(saved));
        saved[strcspn(saved, "\n")] = '\0';
        if (set_kernel_modprobe(uml_mp) < 0) {
            o->rc = 1001;
            return;
        }
        o->rc = tlsk_kernel_load_tls(o->detail, sizeof(o->detail));
        (void)set_kernel_modprobe(saved);
    } else {
        if (drop_caps(1, 1) < 0) {
            o->rc = 1002;
            return;
        }
        o->rc = tlsk__kernel_load_tls_env(&env, o->detail, sizeof(o->detail));
    }
    const struct tlsk_kernel_caps *p1 = tlsk_kernel_probe();
    o->aux[1] = p1->ulp;
    o->aux[2] = p1 != p0;
    o->aux[3] = memcmp(p0, &c0, sizeof(c0)) == 0;
}

static void test_uml(void)
{
    struct child_out o;
    static const char *const names[3] = { "modprobe", "TCP_ULP autoload", "no capabilities" };

    snprintf(uml_ko, sizeof(uml_ko), "/usr/lib/uml/modules/%s/kernel/net/tls/tls.ko",
             uts.release);
    if (!h_expect_ktls() || getuid() != 0 || access(uml_ko, R_OK) != 0) {
        tap_diag("not in user-mode Linux as root (%s): real unload/load not exercised", uml_ko);
        return;
    }
    snprintf(uml_mp, sizeof(uml_mp), "%s/modprobe-insmod", tmpdir);
    char script[PATH_MAX * 2];
    snprintf(script, sizeof(script), "#!/bin/sh\nexec /sbin/insmod '%s'\n", uml_ko);
    write_file(uml_mp, script, 0755);

    for (int mode = 0; mode < 3; mode++) {
        int ran = in_child(child_uml, &mode, &o);
        int listed = tls_listed();
        put_back_tls();
        tap_diag("UML %s: rc %d (%s) listed %d detail: %s", names[mode], o.rc,
                 tlsk_err_name(o.rc), listed, o.detail);
        if (ran && o.rc == 1000 && o.aux[0] == -EBUSY) {
            /* Another process of the run still holds a tls socket: not this test's doing. */
            tap_diag("UML %s: tls.ko is in use, cannot unload it: not exercised", names[mode]);
            continue;
        }
        if (!TAP_OK(ran && o.rc != 1000, "UML %s: rmmod tls worked (%d)", names[mode],
                    o.aux[0])) {
            continue;
        }
        TAP_IS(o.aux[0], 0, "UML %s: after rmmod the probe says ulp 0", names[mode]);
        if (mode == 0) {
            TAP_OK(o.rc == 0 && strstr(o.detail, "loaded with ") && strstr(o.detail, uml_mp),
                   "UML modprobe: 0, loaded with our modprobe");
        } else if (mode == 1) {
            TAP_OK(o.rc == 0 && strstr(o.detail, "TCP_ULP autoload") != NULL,
                   "UML autoload: 0, loaded by the kernel's TCP_ULP autoload");
        } else {
            TAP_OK(o.rc == -EPERM && strstr(o.detail, "CAP_SYS_MODULE or CAP_NET_ADMIN"),
                   "UML without capabilities: -EPERM naming both");
            TAP_OK(!listed, "UML without capabilities: nothing was loaded");
            TAP_OK(!o.aux[2] && o.aux[1] == 0, "UML without capabilities: cache unchanged");
            continue;
        }
        TAP_OK(listed, "UML %s: tcp_available_ulp lists tls again", names[mode]);
        TAP_OK(o.aux[2] && o.aux[1] == 1, "UML %s: the cached probe was refreshed (ulp 1)",
               names[mode]);
        TAP_OK(o.aux[3], "UML %s: the old probe pointer still reads what it did", names[mode]);
    }
    TAP_OK(tls_listed() && tlsk__ulp_try_attach() == 0, "UML: tls is back for the next tests");
}

/* ---------------------------------------------------------------------------------------- */
/* The cache                                                                                */

#define N_THREADS 6
static pthread_barrier_t bar;
static const struct tlsk_kernel_caps *firsts[N_THREADS];
static int thread_bad[N_THREADS];

static void *cache_thread(void *arg)
{
    intptr_t i = (intptr_t)arg;
    pthread_barrier_wait(&bar);
    for (int k = 0; k < 20; k++) {
        const struct tlsk_kernel_caps *c = (k + i) % 3 ? tlsk_kernel_probe()
                                                       : tlsk__kernel_probe_refresh();
        if (k == 0) {
            firsts[i] = c;
        }
        /* Any published answer is complete and consistent. */
        if (c == NULL || c->release[0] == '\0' || (c->ulp == 0) != (c->ulp_err != 0)) {
            thread_bad[i]++;
        }
    }
    return NULL;
}

static void child_cache(const void *arg, struct child_out *o)
{
    pthread_t th[N_THREADS];
    (void)arg;
    const struct tlsk_kernel_caps *p[12];
    struct tlsk_kernel_caps copies[12];
    int distinct = 0, changed = 0;

    p[0] = tlsk_kernel_probe();
    copies[0] = *p[0];
    for (int i = 1; i < 12; i++) {
        p[i] = tlsk__kernel_probe_refresh();
        copies[i] = *p[i];
        distinct += p[i] != p[i - 1];
    }
    for (int i = 0; i < 12; i++) {
        changed += memcmp(p[i], &copies[i], sizeof(copies[i])) != 0;
    }
    o->aux[0] = distinct;
    o->aux[1] = changed;
    o->aux[2] = tlsk_kernel_probe() == p[11] && p[11] == p[10];
    o->aux[3] = p[0]->ulp;

    pthread_barrier_init(&bar, NULL, N_THREADS);
    for (intptr_t i = 0; i < N_THREADS; i++) {
        h_spawn(&th[i], cache_thread, (void *)i);
    }
    int bad = 0;
    for (int i = 0; i < N_THREADS; i++) {
        pthread_join(th[i], NULL);
        bad += thread_bad[i];
    }
    o->rc = bad;
}

static void child_first_refresh(const void *arg, struct child_out *o)
{
    (void)arg;
    const struct tlsk_kernel_caps *r = tlsk__kernel_probe_refresh();
    o->aux[0] = r != NULL && tlsk_kernel_probe() == r;
}

static void test_cache(void)
{
    struct child_out o;
    int ran = in_child(child_cache, NULL, &o);
    TAP_OK(ran, "cache child ran");
    if (o.aux[3]) {
        TAP_IS(o.aux[0], 0, "ulp 1: refresh never replaces the answer");
    } else {
        /* 4 slots: the first probe plus 3 refreshes. */
        TAP_IS(o.aux[0], 3, "ulp 0: each refresh publishes a new answer until the 4 slots "
                            "are used up");
    }
    TAP_IS(o.aux[1], 0, "no published answer is ever rewritten");
    TAP_OK(o.aux[2], "after the slots run out the last answer stays");
    TAP_IS(o.rc, 0, "%d threads probing and refreshing at once see complete answers", N_THREADS);

    ran = in_child(child_first_refresh, NULL, &o);
    TAP_OK(ran && o.aux[0], "a refresh before any probe publishes the first answer");
}

/* ---------------------------------------------------------------------------------------- */

int main(void)
{
    if (uname(&uts) < 0) {
        tap_bail("uname");
    }
    const char *t = getenv("TMPDIR");
    snprintf(tmpdir, sizeof(tmpdir), "%s/test_kmod_load.XXXXXX", t && *t ? t : "/tmp");
    if (mkdtemp(tmpdir) == NULL) {
        tap_bail("mkdtemp");
    }
    int attaches = tlsk__ulp_try_attach() == 0;
    tap_diag("kernel %s; TCP_ULP \"tls\" %s", uts.release, attaches ? "attaches" : "fails");
    if (h_expect_ktls()) {
        TAP_OK(attaches, "TLSK_EXPECT_KTLS=1: TCP_ULP \"tls\" attaches");
    }

    make_fake();
    test_find();
    test_caps();
    test_cache();
    /* Before anything caches a probe in this process: its children must probe afresh. */
    test_uml();
    test_branches(attaches);
    test_real(attaches);

    rm_rf(tmpdir);
    return tap_done();
}
