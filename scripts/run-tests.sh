#!/bin/bash
# run-tests.sh native|ktls|all - run tlsk's test programs with prove (TAP).
#
#   native  every test on this host; the kernel path must report what this host can do
#   ktls    the same programs inside user-mode Linux with tls.ko, TLSK_EXPECT_KTLS=1
#   all     native, then ktls
#
# Environment: TLSK_BUILD (build dir, default build), TLSK_TEST_TIMEOUT (per program, s).
# Ends with one line "tlsk: N passed, N failed" counting TAP assertions of both tiers.
set -u

mode=${1:-all}
cd "$(dirname "$0")/.." || exit 2
root=$(pwd)
build=${TLSK_BUILD:-build}
per_test=${TLSK_TEST_TIMEOUT:-600}

export TLSK_FIXTURES="$root/build/fixtures/rsa"
export TLSK_FIXTURES_EC="$root/build/fixtures/ec"
export TLSK_ROOT="$root"
export TLSK_BUILD_DIR="$root/$build"
scripts/gen-fixtures.sh "$root/build/fixtures" || exit 2

tests=()
for f in "$build"/tests/unit/test_* "$build"/tests/ktls/test_* "$build"/tests/interop/test_* \
         tests/unit/*.t tests/interop/*.t tests/ktls/*.t; do
	[ -x "$f" ] && tests+=("$f")
done
if [ ${#tests[@]} -eq 0 ]; then
	echo "run-tests: no test programs found in $build (run make tests)" >&2
	exit 2
fi

total_pass=0
total_fail=0
status=0

# Count assertions from a prove log: ok lines pass, "not ok" lines fail; a program that died
# without a plan counts as one failure.
count() {
	local log=$1 p f dubious
	p=$(grep -cE '^ *ok [0-9]+' "$log")
	f=$(grep -cE '^ *not ok [0-9]+' "$log")
	dubious=$(grep -cE 'Dubious|No plan found|Parse errors|exited with|Bad plan' "$log")
	total_pass=$((total_pass + p))
	total_fail=$((total_fail + f + dubious))
}

run_native() {
	local log=$build/test-native.log
	echo "== native tier ($(uname -r)): ${#tests[@]} programs"
	prove -v --exec "timeout $per_test" "${tests[@]}" >"$log" 2>&1
	local rc=$?
	grep -E -A3 '^(not ok|Bail out)' "$log" | head -100
	tail -n 3 "$log"
	count "$log"
	[ $rc -eq 0 ] || status=1
}

run_ktls() {
	local log=$build/test-ktls.log
	echo "== real-kernel tier (user-mode Linux with tls.ko): ${#tests[@]} programs"
	TLSK_EXPECT_KTLS=1 TLSK_TEST_BULK_MIB=${TLSK_TEST_BULK_MIB:-2} \
		scripts/uml-run.sh --timeout 1500 -- \
		prove -v --exec "timeout $per_test" "${tests[@]}" >"$log" 2>&1
	local rc=$?
	grep -E -A3 '^(not ok|Bail out)' "$log" | head -100
	tail -n 3 "$log"
	count "$log"
	if [ $rc -ne 0 ]; then
		status=1
		grep -q 'ok ' "$log" || { echo "real-kernel tier did not run:"; tail -n 40 "$log"; total_fail=$((total_fail + 1)); }
	fi
}

# AddressSanitizer cannot start inside user-mode Linux (its shadow memory range does not fit
# UML's address space), so sanitizer builds run the native tier only.
if [ -n "${TLSK_SANITIZE:-}" ] && [ "$mode" != native ]; then
	echo "run-tests: SANITIZE=$TLSK_SANITIZE builds run the native tier only (ASan cannot run in user-mode Linux)"
	mode=native
fi

case $mode in
native) run_native ;;
ktls) run_ktls ;;
all)
	run_native
	run_ktls
	;;
*)
	echo "usage: $0 native|ktls|all" >&2
	exit 2
	;;
esac

echo "tlsk: $total_pass passed, $total_fail failed"
exit $status
