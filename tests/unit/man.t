#!/bin/bash
# man.t - the manual pages in man/: one for the library (tlsk(7)) and one for every tool; each
# formats without a groff warning, and each tool's page names exactly the options its --help
# names (both ways), so neither can drift.  Native tier only (nothing here involves the kernel).
set -u
top=${TLSK_ROOT:-$(cd "$(dirname "$0")/../.." && pwd)}
build=${TLSK_BUILD_DIR:-$top/build}
# shellcheck source-path=SCRIPTDIR source=../lib/tap.sh
. "$(dirname "$0")/../lib/tap.sh" || exit 1

if [ "${TLSK_EXPECT_KTLS:-}" = 1 ]; then
	echo "1..0 # SKIP the manual pages are checked in the native tier"
	exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

command -v groff >/dev/null
ok $? "groff is installed (scripts/deps.sh)"
# Options as a sorted list: "--name" tokens of the help text or the page as plain text
# (no hyphenation, long lines, so no option is split).
help_opts() { "$@" --help 2>&1 | grep -oE -- '--[a-z][a-z0-9-]*' | sort -u; }
page_opts() { groff -man -rHY=0 -rLL=300n -Tascii -P -cbou "$1" 2>/dev/null |
	grep -oE -- '--[a-z][a-z0-9-]*' | sort -u; }

for page in tlsk.7 tlsk-serve.1 tlsk-proxy.1 tlsk-exec.1 tlsk-stat.8 tlsk-modprobe.8; do
	f=$top/man/$page
	test -s "$f"
	ok $? "man/$page exists"
	groff -ww -man -z "$f" >"$tmp/warn" 2>&1 && [ ! -s "$tmp/warn" ]
	ok $? "man/$page formats without a warning" || sed 's/^/#   /' "$tmp/warn"
	grep -q '^\.SH NAME' "$f" && grep -q '^\.SH SEE ALSO' "$f" && grep -q '^\.SH DESCRIPTION' "$f"
	ok $? "man/$page has NAME, DESCRIPTION and SEE ALSO"
done
for t in tlsk-serve:$build/tools/tlsk-serve:1 tlsk-proxy:$build/tools/tlsk-proxy:1 \
	tlsk-exec:$build/tools/tlsk-exec:1 tlsk-stat:$build/tools/tlsk-stat:8 \
	tlsk-modprobe:$top/kmod-helpers/tlsk-modprobe:8; do
	IFS=: read -r name bin sec <<<"$t"
	help_opts "$bin" >"$tmp/h"
	page_opts "$top/man/$name.$sec" >"$tmp/p"
	[ "$(wc -l <"$tmp/h")" -ge 4 ] && diff "$tmp/h" "$tmp/p" >"$tmp/d"
	ok $? "$name: --help and $name($sec) name the same $(wc -l <"$tmp/h") options" ||
		sed 's/^/#   /' "$tmp/d"
	grep -q "^\.SH EXIT STATUS" "$top/man/$name.$sec"
	ok $? "$name($sec) has EXIT STATUS"
done
# The comparison can fail: drop one option's line from a page.
grep -v '^\.B \\-\\-log\\-handshake\\-errors$' "$top/man/tlsk-serve.1" >"$tmp/short.1"
help_opts "$build/tools/tlsk-serve" >"$tmp/h"
page_opts "$tmp/short.1" >"$tmp/p"
! diff -q "$tmp/h" "$tmp/p" >/dev/null && grep -qx -- '--log-handshake-errors' "$tmp/h"
ok $? "the comparison catches a page without --log-handshake-errors"

tap_done
