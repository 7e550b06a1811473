#!/bin/sh
# deps.sh [--check-only] - make sure the Debian packages tlsk's build and tests need are installed.
#
# Exits 0 silently if everything is installed. Otherwise, as root and without --check-only,
# runs apt-get to install what is missing; if not root (or with --check-only) prints the
# command to run and exits 1.
set -eu

# One package per word; append here. patchelf: scripts/uml-fetch.sh points sid's user-mode
# Linux (the newest real-kernel tier) at sid's glibc; it fetches that kernel itself.
# clang, libclang-rt-14-dev: `make fuzz` (libFuzzer and the sanitizer runtimes are in the
# latter, which clang only recommends; 14 is Debian 12's clang).
PACKAGES="build-essential pkg-config libssl-dev openssl libmnl-dev libsystemd-dev systemd libhiredis-dev redis-server redis-tools debhelper dpkg-dev lintian groff-base man-db libuv1-dev user-mode-linux kmod iproute2 gnutls-bin socat curl wget python3 nodejs patchelf clang libclang-rt-14-dev"

check_only=0
case ${1-} in
'') ;;
--check-only) check_only=1 ;;
*)
	echo "usage: $0 [--check-only]" >&2
	exit 2
	;;
esac
[ $# -le 1 ] || {
	echo "usage: $0 [--check-only]" >&2
	exit 2
}

command -v dpkg-query >/dev/null 2>&1 || {
	echo "$0: dpkg-query not found: this script expects Debian or a derivative" >&2
	exit 1
}

missing=
for p in $PACKAGES; do
	status=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
	[ "$status" = installed ] || missing="$missing $p"
done
missing=${missing# }
[ -n "$missing" ] || exit 0

if [ "$check_only" = 0 ] && [ "$(id -u)" = 0 ]; then
	echo "$0: installing missing Debian packages: $missing" >&2
	apt-get update
	# shellcheck disable=SC2086 # word splitting wanted
	DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $missing
	exit 0
fi

echo "$0: missing Debian packages: $missing" >&2
echo "sudo apt-get install -y $missing"
exit 1
