#!/bin/bash
# layout.t - the shape docs/ARCHITECTURE.md promises, checked on the built objects and sources:
# no call cycle among lib/ and kmod-helpers/ files (an edge A -> B when A's object refers to a
# global symbol B's object defines), no lib/ file over 620 lines, no function over 120 lines.
# The two callback pointers context.c installs on every SSL_CTX (hello.c's ClientHello
# callback, socket.c's key log) are the documented exception: data handed to OpenSSL, not a
# call (docs/ARCHITECTURE.md, "Layers").
set -u
# shellcheck source-path=SCRIPTDIR source=../lib/tap.sh
. "$(dirname "$0")/../lib/tap.sh" || exit 1
cd "${TLSK_ROOT:-$(dirname "$0")/../..}" || exit 1

# Source shape has nothing to do with the kernel: native tier only.
if [ "${TLSK_EXPECT_KTLS:-}" = 1 ]; then
	echo "1..0 # SKIP the layout is checked in the native tier"
	exit 0
fi
build=${TLSK_BUILD_DIR:-build}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# edges FILE...: "caller callee" per object pair, from nm.
edges() {
	local o
	for o in "$@"; do
		nm --defined-only -g "$o" | awk -v f="$(basename "$o" .o)" 'NF == 3 {print $3, f}'
	done | sort -k1,1 >"$tmp/defs"
	for o in "$@"; do
		nm -u "$o" | awk -v f="$(basename "$o" .o)" '{print $2, f}'
	done | sort -k1,1 >"$tmp/uses"
	join "$tmp/uses" "$tmp/defs" | awk '$2 != $3 {print $1, $2, $3}'
}

objs=("$build"/lib/*.o "$build"/kmod-helpers/*.o "$build"/kmod-helpers/diag/*.o)
test -e "${objs[0]}" && test "${#objs[@]}" -ge 10
ok $? "objects of lib/ and kmod-helpers/ found in $build (${#objs[@]})"

edges "${objs[@]}" >"$tmp/edges.sym"
grep -Ev '^(tlsk__hello_cb context hello|tlsk__keylog_cb context socket)$' "$tmp/edges.sym" |
	awk '{print $2, $3}' | sort -u >"$tmp/edges"
test "$(wc -l <"$tmp/edges")" -ge 20
ok $? "the file call graph has $(wc -l <"$tmp/edges") edges"
tsort "$tmp/edges" >"$tmp/order" 2>"$tmp/tsort.err"
ok $? "no call cycle among lib/ and kmod-helpers/ files$(sed -n 's/^tsort: \([a-z_]*\)$/ \1/p' "$tmp/tsort.err" | tr -d '\n')"
# The check itself sees a cycle: add one edge going up (errors -> socket).
{ cat "$tmp/edges"; echo "errors socket"; } | tsort >/dev/null 2>&1
test $? != 0
ok $? "the cycle check fails on a graph with an upward edge (errors -> socket)"
# The exceptions are exactly the two documented pointers, still present (else drop them here).
test "$(grep -cE '^(tlsk__hello_cb context hello|tlsk__keylog_cb context socket)$' "$tmp/edges.sym")" = 2
ok $? "the only upward references are context.c's two OpenSSL callback pointers"

for f in lib/*.c kmod-helpers/*.c kmod-helpers/diag/*.c; do
	[ -e "$f" ] || continue
	lines=$(wc -l <"$f")
	[ "$lines" -le 620 ] || { ok 1 "$f has $lines lines (at most 620)"; }
done
ok 0 "every lib/ and kmod-helpers/ file checked for length"

# A function: a line at column 0 that names one (identifier, then '('), up to the next '}' at
# column 0.  Longest reported.
longest=$(awk 'FNR == 1 {start = 0}
	/^[A-Za-z_].*\(/ && !/;[[:space:]]*$/ {name = $0; start = FNR; file = FILENAME}
	/^}/ && start {len = FNR - start; if (len > max) {max = len; where = file ": " name}; start = 0}
	END {print max "\t" where}' lib/*.c kmod-helpers/*.c kmod-helpers/diag/*.c)
test "${longest%%	*}" -le 120
ok $? "no function over 120 lines (longest ${longest%%	*}: ${longest#*	})"
printf 'static int f(void)\n{\n%s\n}\n' "$(printf '    x();\n%.0s' $(seq 130))" >"$tmp/long.c"
awk '/^[A-Za-z_].*\(/ {s = FNR} /^}/ && s {print FNR - s; s = 0}' "$tmp/long.c" | grep -qx 132
ok $? "the function measure counts a 130-line body as 132 lines"

tap_done
