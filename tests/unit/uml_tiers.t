#!/bin/bash
# uml_tiers.t - the real-kernel tiers' rules on a host whose CPU the old kernel cannot boot on
# (docs/KERNEL.md §12.4): uml-run.sh tells that failure apart (exit 4, one line naming the
# signature) from a crash (exit 3); run-tests.sh then prints one "not run" line for the tier and
# counts no failure, unless TLSK_REQUIRE_TIERS names it.  A stand-in kernel prints the console
# such a host shows ("ptrace set fp regs failed", "Attempted to kill init") and dies, so this
# runs on every host; the real kernels are booted by the tiers themselves.
set -u
# shellcheck source-path=SCRIPTDIR source=../lib/tap.sh
. "$(dirname "$0")/../lib/tap.sh" || exit 1
cd "${TLSK_ROOT:-$(dirname "$0")/../..}" || exit 1

# The tier logic is host-side: checked in the native tier only.
if [ "${TLSK_EXPECT_KTLS:-}" = 1 ]; then
	echo "1..0 # SKIP the tier runner is checked in the native tier"
	exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# The nested runs must not inherit this run's choices (a sanitizer build runs native only).
unset TLSK_SANITIZE TLSK_TESTS TLSK_TIERS TLSK_REQUIRE_TIERS

cat >"$tmp/amx-linux" <<'EOF'
#!/bin/sh
case ${1-} in --version) echo 6.1.176; exit 0 ;; esac
echo "Linux version 6.1.176 (stand-in)"
echo "userspace - ptrace set fp regs failed, errno = 14"
echo "Kernel panic - not syncing: Attempted to kill init! exitcode=0x0000000b"
kill -ABRT $$
EOF
cat >"$tmp/crash-linux" <<'EOF'
#!/bin/sh
case ${1-} in --version) echo 6.1.176; exit 0 ;; esac
echo "Linux version 6.1.176 (stand-in)"
echo "Kernel panic - not syncing: VFS: Unable to mount root fs"
kill -ABRT $$
EOF
chmod +x "$tmp/amx-linux" "$tmp/crash-linux"
# A build folder with one trivial test program, so the runner has something to run.
mkdir -p "$tmp/build/tests/unit"
printf '#!/bin/sh\necho 1..1\necho "ok 1 - stand-in"\n' >"$tmp/build/tests/unit/test_standin"
chmod +x "$tmp/build/tests/unit/test_standin"

# The module folder is only looked at, never loaded: the stand-in dies first.
moddir=$(ls -d /usr/lib/uml/modules/*/ 2>/dev/null | head -n 1)
export UML_RUN_MODDIR=${moddir%/}

out=$(UML_RUN_LINUX="$tmp/amx-linux" scripts/uml-run.sh --kernel 6.1 --timeout 30 -- true 2>&1)
rc=$?
ok $((rc != 4)) "uml-run.sh: a kernel that dies at init's first instruction exits 4 (got $rc)"
line=$(echo "$out" | grep "cannot boot on this CPU: ptrace set fp regs failed")
ok $? "uml-run.sh names the signature in one line ($line)"

out=$(UML_RUN_LINUX="$tmp/crash-linux" scripts/uml-run.sh --kernel 6.1 --timeout 30 -- true 2>&1)
rc=$?
ok $((rc != 3)) "uml-run.sh: any other guest crash stays exit 3 (got $rc)"

out=$(UML_RUN_LINUX="$tmp/amx-linux" TLSK_BUILD="$tmp/build" TLSK_TIERS=6.1 \
	TLSK_REQUIRE_TIERS=newest scripts/run-tests.sh ktls 2>&1)
rc=$?
echo "$out" | grep -q "^real-kernel tier 6.1: not run: .*ptrace set fp regs failed"
ok $? "run-tests.sh: one 'real-kernel tier 6.1: not run: <reason>' line"
ok $((rc != 0)) "run-tests.sh: a tier the CPU cannot boot is no failure when not required (exit $rc)"
echo "$out" | tail -n 1 | grep -qx "tlsk: 0 passed, 0 failed"
ok $? "run-tests.sh: the last line counts nothing for it ($(echo "$out" | tail -n 1))"

out=$(UML_RUN_LINUX="$tmp/amx-linux" TLSK_BUILD="$tmp/build" TLSK_TIERS=6.1 \
	TLSK_REQUIRE_TIERS="newest 6.1" scripts/run-tests.sh ktls 2>&1)
rc=$?
ok $((rc == 0)) "run-tests.sh: TLSK_REQUIRE_TIERS=\"newest 6.1\" makes it a failure (exit $rc)"
echo "$out" | tail -n 1 | grep -qx "tlsk: 0 passed, 1 failed"
ok $? "run-tests.sh: counted as one failure ($(echo "$out" | tail -n 1))"

out=$(UML_RUN_LINUX="$tmp/crash-linux" TLSK_BUILD="$tmp/build" TLSK_TIERS=6.1 \
	TLSK_REQUIRE_TIERS=newest scripts/run-tests.sh ktls 2>&1)
rc=$?
ok $((rc == 0)) "run-tests.sh: a kernel that crashes otherwise fails even when not required (exit $rc)"

tap_done
