#!/bin/bash
# install.t - `make install` lays out headers, libraries and tlsk.pc so that a program builds
# with `pkg-config --cflags --libs tlsk` and runs; the shared library has the versioned soname
# and exports only tlsk_* symbols (hidden visibility + version script).
set -u
# shellcheck source-path=SCRIPTDIR source=../lib/tap.sh
. "$(dirname "$0")/../lib/tap.sh" || exit 1
cd "${TLSK_ROOT:-$(dirname "$0")/../..}" || exit 1

# Installation has nothing to do with the kernel: it runs in the native tier only.
if [ "${TLSK_EXPECT_KTLS:-}" = 1 ]; then
	echo "1..0 # SKIP install layout is checked in the native tier"
	exit 0
fi
# Always the plain build: an application built without sanitizers cannot load an ASan library.
build=build
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

make -s install PREFIX="$tmp/prefix" B="$build" >"$tmp/install.log" 2>&1
ok $? "make install PREFIX=$tmp/prefix"
for f in include/tlsk.h lib/libtlsk.so.0 lib/libtlsk.so lib/libtlsk.a lib/pkgconfig/tlsk.pc \
	lib/systemd/system/tlsk-serve.service lib/systemd/system/tlsk-serve.socket \
	lib/systemd/system/tlsk-proxy@.service lib/systemd/system/tlsk-proxy@.socket \
	lib/sysusers.d/tlsk.conf share/man/man7/tlsk.7 share/man/man1/tlsk-serve.1 \
	share/man/man1/tlsk-proxy.1 share/man/man1/tlsk-exec.1 share/man/man8/tlsk-stat.8 \
	share/man/man8/tlsk-modprobe.8; do
	test -e "$tmp/prefix/$f"
	ok $? "installed $f"
done

grep -q "^ExecStart=$tmp/prefix/bin/tlsk-serve " "$tmp/prefix/lib/systemd/system/tlsk-serve.service"
ok $? "the installed tlsk-serve.service runs the installed tlsk-serve"

soname=$(readelf -d "$tmp/prefix/lib/libtlsk.so.0" | sed -n 's/.*(SONAME).*\[\(.*\)\]/\1/p')
test "$soname" = libtlsk.so.0
ok $? "soname is libtlsk.so.0 (got '$soname')"

others=$(nm -D --defined-only "$tmp/prefix/lib/libtlsk.so.0" | awk '{print $3}' | grep -v '^tlsk_' | grep -v '^TLSK_0$' | head -5)
test -z "$others"
ok $? "only tlsk_* symbols exported${others:+ (also: $others)}"
nm -D --defined-only "$tmp/prefix/lib/libtlsk.so.0" | grep -q ' tlsk_socket_sendfile@@TLSK_0'
ok $? "symbols carry the TLSK_0 version"

cat >"$tmp/app.c" <<'C'
#include <stdio.h>
#include <tlsk.h>
int main(void)
{
    struct tlsk_context *ctx = NULL;
    char err[256];
    int rc = tlsk_context_new(&ctx, NULL, err, sizeof err);
    printf("%s %s\n", rc == 0 ? "context-ok" : err, tlsk_reason_name(TLSK_REASON_NO_ULP));
    tlsk_context_free(ctx);
    return rc != 0;
}
C
export PKG_CONFIG_PATH="$tmp/prefix/lib/pkgconfig"
flags=$(pkg-config --cflags --libs tlsk)
ok $? "pkg-config --cflags --libs tlsk: $flags"
cc -o "$tmp/app" "$tmp/app.c" $flags -Wl,-rpath,"$tmp/prefix/lib" 2>"$tmp/cc.log"
ok $? "a program builds against the installed library"
out=$(LD_LIBRARY_PATH="$tmp/prefix/lib" "$tmp/app")
test "$out" = "context-ok no_ulp"
ok $? "and runs against libtlsk.so.0 (printed '$out')"
ldd "$tmp/app" | grep -q "libtlsk.so.0 => $tmp/prefix/lib/libtlsk.so.0"
ok $? "linked to the installed libtlsk.so.0"
tap_done
