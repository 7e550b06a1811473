# shellcheck shell=bash
# tap.sh - the TAP (Test Anything Protocol) core of the shell tests (tests/*/*.t), sourced:
#   . "$(dirname "$0")/../lib/tap.sh" || exit 1
# (before any cd: $0 is the script's path as run, relative to the starting directory).
# Provides:
#   n, fail            assertions so far; 1 once one has failed, else 0
#   ok STATUS DESC     "ok N - DESC" if STATUS is 0, else "not ok N - DESC" and fail=1;
#                      returns 0 or 1 likewise, so "ok $? DESC || diag FILE" explains a
#                      failure (no .t file runs under set -e)
#   diag [FILE...]     FILE(s), or stdin, as TAP comment lines ("#   " before each)
#   tap_done           prints the plan "1..N" and exits with $fail
# A script that needs more (a test of two values, diagnostics from messages) defines it
# itself, on top of these.

n=0
fail=0
ok() { # status description
	n=$((n + 1))
	if [ "$1" = 0 ]; then
		echo "ok $n - $2"
	else
		echo "not ok $n - $2"
		fail=1
		return 1
	fi
}
diag() { sed 's/^/#   /' "$@"; }
tap_done() {
	echo "1..$n"
	exit $fail
}
