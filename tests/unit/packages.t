#!/bin/bash
# packages.t - the Debian packages: `dpkg-buildpackage -us -uc -b` on a copy of the tree builds
# libtlsk0, libtlsk-dev and tlsk-tools; lintian reports no error and no warning; the packages
# install (for real as root on a host where none of them is installed, purged again at the end;
# otherwise unpacked into a scratch root with dpkg -x); pkg-config finds tlsk, a program builds
# against the installed header and library and runs; every tool answers --help from the
# installed path; the man pages, units and sysusers file are where the packages put them.
# Packaging has nothing to do with the kernel: native tier only.
set -u
top=${TLSK_ROOT:-$(cd "$(dirname "$0")/../.." && pwd)}
# shellcheck source-path=SCRIPTDIR source=../lib/tap.sh
. "$(dirname "$0")/../lib/tap.sh" || exit 1

if [ "${TLSK_EXPECT_KTLS:-}" = 1 ]; then
	echo "1..0 # SKIP the packages are checked in the native tier"
	exit 0
fi
tmp=$(mktemp -d "${TMPDIR:-/tmp}/packages-t.XXXXXX")
installed=0
cleanup() {
	if [ $installed = 1 ]; then
		dpkg -P tlsk-tools libtlsk-dev libtlsk0 >/dev/null 2>&1
	fi
	rm -rf "$tmp"
}
trap cleanup EXIT
pkgs="libtlsk0 libtlsk-dev tlsk-tools"
arch=$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null)

for t in dpkg-buildpackage dh lintian pkg-config; do
	command -v $t >/dev/null
	ok $? "$t is installed (scripts/deps.sh)"
done

# The tree as the repository has it (tracked and new files, not build output).
mkdir -p "$tmp/src/tlsk"
if git -C "$top" rev-parse --git-dir >/dev/null 2>&1; then
	(cd "$top" && git ls-files -co --exclude-standard -z | grep -zv '^build' |
		tar --null -cf - -T -) | tar -xf - -C "$tmp/src/tlsk"
else
	(cd "$top" && tar --exclude='./build*' -cf - .) | tar -xf - -C "$tmp/src/tlsk"
fi
start=$(date +%s)
# A plain build whatever called us: `make SANITIZE=... check` passes its variables down to
# every make through MAKEFLAGS, which would build the packaged library with sanitizers.
(cd "$tmp/src/tlsk" && env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL -u SANITIZE -u LD_PRELOAD \
	DEB_BUILD_OPTIONS="nocheck parallel=2" dpkg-buildpackage -us -uc -b) \
	>"$tmp/build.log" 2>&1
rc=$?
ok $rc "dpkg-buildpackage -us -uc -b ($(($(date +%s) - start)) s)" || tail -20 "$tmp/build.log" | diag
for p in $pkgs; do
	test -s "$tmp/src/${p}_"*"_$(dpkg --print-architecture).deb"
	ok $? "built $p"
done

lintian -I --pedantic "$tmp/src/"*.changes >"$tmp/lintian.log" 2>&1
grep -E '^[EW]: ' "$tmp/lintian.log" >"$tmp/lintian.ew"
[ ! -s "$tmp/lintian.ew" ] && ! grep -q 'error' "$tmp/lintian.log"
ok $? "lintian --pedantic: no error, no warning ($(grep -cE '^[IP]: ' "$tmp/lintian.log") info/pedantic tags)" ||
	diag <"$tmp/lintian.log"

debs=()
for p in $pkgs; do debs+=("$tmp/src/${p}_"*"_$(dpkg --print-architecture).deb"); done
any_installed=0
for p in $pkgs; do
	if dpkg-query -W -f '${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
		any_installed=1
	fi
done
if [ "$(id -u)" = 0 ] && [ $any_installed = 0 ] && [ "${TLSK_PKG_INSTALL:-1}" != 0 ]; then
	# CI and a root shell on a throwaway machine: install for real, purge at the end.
	dpkg -i "${debs[@]}" >"$tmp/install.log" 2>&1
	rc=$?
	[ $rc = 0 ] && installed=1
	ok $rc "dpkg -i $pkgs" || diag <"$tmp/install.log"
	root=
	prefix=/usr
	export PKG_CONFIG_PATH=
	getent passwd tlsk >/dev/null
	ok $? "the tlsk system user exists after installing tlsk-tools (sysusers.d)"
else
	# Not root, or the packages are already installed here: unpack into a scratch root.
	root=$tmp/root
	for d in "${debs[@]}"; do dpkg -x "$d" "$root"; done
	ok $? "dpkg -x $pkgs into a scratch root (not installing: $( [ "$(id -u)" != 0 ] && echo 'not root' || echo 'already installed or TLSK_PKG_INSTALL=0'))"
	prefix=$root/usr
	export PKG_CONFIG_PATH=$root/usr/lib/$arch/pkgconfig PKG_CONFIG_SYSROOT_DIR=$root
	export LD_LIBRARY_PATH=$root/usr/lib/$arch
fi

libs=$(pkg-config --libs tlsk 2>&1)
cflags=$(pkg-config --cflags tlsk 2>&1)
[ "$libs" != "${libs%-ltlsk*}" ]
ok $? "pkg-config --libs tlsk: $libs"
cat >"$tmp/prog.c" <<'EOF'
#include <stdio.h>
#include <tlsk.h>
int main(void)
{
    const struct tlsk_kernel_caps *k = tlsk_kernel_probe();
    printf("%s %s\n", tlsk_strerror(TLSK_EVERIFY), k->ulp ? "ulp" : "no-ulp");
    return 0;
}
EOF
# shellcheck disable=SC2086
cc -o "$tmp/prog" "$tmp/prog.c" $cflags $libs >"$tmp/cc.log" 2>&1
ok $? "a program builds against the installed header and libtlsk" || diag <"$tmp/cc.log"
out=$("$tmp/prog" 2>&1)
ok $? "and runs: $out"
if [ -n "$root" ]; then
	want="libtlsk.so.0 => $root/usr/lib/$arch/libtlsk.so.0"
else
	want="libtlsk.so.0 => (/usr)?/lib/$arch/libtlsk.so.0" # /lib is /usr/lib on merged-/usr hosts
fi
ldd "$tmp/prog" | grep -Eq "$want"
ok $? "it uses the packaged libtlsk.so.0" || ldd "$tmp/prog" | diag

for t in tlsk-serve tlsk-proxy tlsk-exec tlsk-stat tlsk-modprobe; do
	timeout 10 "$prefix/bin/$t" --help >"$tmp/help" 2>&1
	rc=$?
	[ $rc = 0 ] || [ $rc = 2 ]
	[ $? = 0 ] && grep -q -- '--' "$tmp/help"
	ok $? "$prefix/bin/$t --help answers (status $rc)"
done
for m in man7/tlsk.7 man1/tlsk-serve.1 man1/tlsk-proxy.1 man1/tlsk-exec.1 man8/tlsk-stat.8 \
	man8/tlsk-modprobe.8; do
	test -s "$prefix/share/man/$m.gz"
	ok $? "man page $m installed"
done
if [ -z "$root" ] && command -v man >/dev/null; then
	man -w tlsk-serve >/dev/null 2>&1
	ok $? "man -w tlsk-serve finds the page"
fi
for u in tlsk-serve.service tlsk-serve.socket tlsk-proxy@.service tlsk-proxy@.socket; do
	grep -q '^ExecStart=/usr/bin/tlsk-\|^ListenStream=' "$root/lib/systemd/system/$u"
	ok $? "unit $u installed in /lib/systemd/system"
done
test -s "$root/usr/lib/sysusers.d/tlsk.conf"
ok $? "sysusers.d/tlsk.conf installed"

tap_done
