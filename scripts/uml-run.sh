#!/bin/bash
# uml-run.sh - run a command inside user-mode Linux with kTLS (docs/KERNEL.md §12).
#
#   uml-run.sh [--kernel newest|6.1] [--timeout SECS] -- COMMAND [ARGS...]
#   uml-run.sh [--kernel newest|6.1] [--timeout SECS] --check
#   uml-run.sh [--kernel newest|6.1] --version
#
# Boots a user-mode Linux kernel with the host filesystem as its root (hostfs), loads the
# crypto modules and tls.ko, brings up lo and runs COMMAND as root in the guest, in the
# current directory (same absolute path inside). COMMAND's stdout and stderr are captured and
# printed on this script's stdout once the guest has powered off.
#
# Kernels (--kernel, or UML_RUN_KERNEL; default newest):
#   newest  Debian sid's user-mode-linux (>= 6.14, TLS 1.3 re-key), fetched and cached by
#           uml-fetch.sh (docs/KERNEL.md §12.5). Modules come from its tree through
#           `modprobe -d ROOT`, and the guest's /proc/sys/kernel/modprobe points at a wrapper
#           doing the same, so the kernel's own autoload (tcp-ulp-tls, crypto templates) works.
#   6.1     the installed Debian package's `linux` (bookworm: 6.1), modules insmod-ed by hand.
#
# Exit status: COMMAND's, or
#   2  usage error or missing prerequisites (for newest: uml-fetch.sh failed)
#   3  the guest crashed, hung or timed out (no exit status was written); the guest console
#      and whatever COMMAND printed are shown on stderr
#   4  the kernel cannot boot on this CPU: init died at its first instruction ("ptrace set fp
#      regs failed", "Attempted to kill init"; old UML against a host with AMX, docs/KERNEL.md §12.4
#      ); one line on stderr says so
# --check exits 0 if the tls ULP is available in the guest, 1 if not.
# --version prints the kernel's version (its `uname -r`) without booting it.
#
# Passed into the guest: PATH (the host's, with the standard sbin/bin directories appended),
# HOME, USER, LOGNAME, LANG, LC_ALL, TZ, ASAN/UBSAN/LSAN/MSAN/TSAN_OPTIONS, OPENSSL_CONF,
# SSL_CERT_FILE, SSL_CERT_DIR, every variable whose name starts with TLSK_ or TEST_, and the
# names listed in UML_RUN_ENV (space separated).
# TMPDIR inside the guest is a fresh tmpfs; /run and /dev/shm are guest-only tmpfs mounts too.
#
# Tunables (host environment):
#   UML_RUN_KERNEL  newest or 6.1, as --kernel
#   UML_RUN_MEM     guest memory (default 512M)
#   UML_RUN_TREE    newest: a tree made by uml-fetch.sh (its uml.env is read); default: run
#                   uml-fetch.sh, which asks Debian at most once a day
#   UML_RUN_LINUX   6.1: kernel binary (default: `linux` from PATH)
#   UML_RUN_MODDIR  6.1: module folder (default /usr/lib/uml/modules/<linux --version>/, else
#                   any /usr/lib/uml/modules/*/ that has kernel/net/tls/tls.ko)
#   UML_RUN_TMPDIR  directory for UML's memory file, must allow exec mappings (default
#                   /dev/shm unless mounted noexec, else the run's private temp dir)
#   UML_RUN_ENV     extra variable names to pass into the guest
set -eu

prog=${0##*/}
here=$(cd "$(dirname "$0")" && pwd -P)
timeout_secs=900
check=0
version=0
kernel=${UML_RUN_KERNEL:-newest}

usage() {
	echo "usage: $prog [--kernel newest|6.1] [--timeout SECS] -- COMMAND [ARGS...]" >&2
	echo "       $prog [--kernel newest|6.1] [--timeout SECS] --check" >&2
	echo "       $prog [--kernel newest|6.1] --version" >&2
	exit 2
}
die() {
	echo "$prog: $*" >&2
	exit 2
}

while [ $# -gt 0 ]; do
	case $1 in
	--timeout)
		[ $# -ge 2 ] || usage
		timeout_secs=$2
		shift 2
		;;
	--timeout=*)
		timeout_secs=${1#--timeout=}
		shift
		;;
	--kernel)
		[ $# -ge 2 ] || usage
		kernel=$2
		shift 2
		;;
	--kernel=*)
		kernel=${1#--kernel=}
		shift
		;;
	--check)
		check=1
		shift
		;;
	--version)
		version=1
		shift
		;;
	--)
		shift
		break
		;;
	-h | --help) usage ;;
	*) usage ;;
	esac
done
case $timeout_secs in '' | *[!0-9]* | 0) die "--timeout wants a positive number of seconds" ;; esac
case $kernel in newest | 6.1) ;; *) die "--kernel wants newest or 6.1, not '$kernel'" ;; esac
if [ "$check" = 1 ] || [ "$version" = 1 ]; then
	if [ $# -ne 0 ] || [ "$check$version" = 11 ]; then usage; fi
else
	[ $# -ge 1 ] || usage
fi

# ---- prerequisites -------------------------------------------------------------------------
# tool NAME: NAME's path, from PATH or the sbin directories a non-root PATH lacks
tool() {
	local d
	command -v "$1" 2>/dev/null && return 0
	for d in /usr/sbin /sbin /usr/bin /bin; do
		[ -x "$d/$1" ] && echo "$d/$1" && return 0
	done
	return 1
}
modroot=
if [ "$kernel" = newest ]; then
	# uml-fetch.sh's KEY='VALUE' lines (also in the tree's uml.env); read, never evaluated.
	if [ -n "${UML_RUN_TREE:-}" ]; then
		[ -f "$UML_RUN_TREE/uml.env" ] || die "UML_RUN_TREE=$UML_RUN_TREE has no uml.env (made by uml-fetch.sh)"
		env_lines=$(cat "$UML_RUN_TREE/uml.env")
	else
		env_lines=$("$here/uml-fetch.sh") || die "cannot get the newest user-mode Linux (uml-fetch.sh failed)"
	fi
	UML_LINUX='' UML_MODROOT='' UML_MODDIR='' UML_KVER=
	while IFS= read -r line; do
		v=${line#*=}
		v=${v#\'}
		v=${v%\'}
		case $line in
		UML_LINUX=*) UML_LINUX=$v ;;
		UML_MODROOT=*) UML_MODROOT=$v ;;
		UML_MODDIR=*) UML_MODDIR=$v ;;
		UML_KVER=*) UML_KVER=$v ;;
		esac
	done <<<"$env_lines"
	linux=$UML_LINUX
	moddir=$UML_MODDIR
	modroot=$UML_MODROOT
	if [ -z "$linux" ] || [ ! -x "$linux" ]; then
		die "uml-fetch.sh gave no runnable kernel ($linux)"
	fi
	if [ -z "$UML_KVER" ] || [ ! -d "$modroot/lib/modules/$UML_KVER" ]; then
		die "uml-fetch.sh gave no module root ($modroot/lib/modules/$UML_KVER)"
	fi
	modprobe=$(tool modprobe) || die "modprobe not found (apt-get install kmod)"
else
	linux=${UML_RUN_LINUX:-$(command -v linux || true)}
	if [ -z "$linux" ] || [ ! -x "$linux" ]; then
		die "no user-mode Linux kernel (apt-get install user-mode-linux)"
	fi
	tool insmod >/dev/null || die "insmod not found (apt-get install kmod)"
	moddir=${UML_RUN_MODDIR:-}
fi
if [ "$version" = 1 ]; then
	"$linux" --version || die "$linux --version failed"
	exit 0
fi
tool ip >/dev/null || die "ip not found (apt-get install iproute2)"
command -v timeout >/dev/null 2>&1 || die "timeout not found (coreutils)"

if [ -z "$moddir" ]; then
	kver=$("$linux" --version 2>/dev/null || true)
	if [ -n "$kver" ] && [ -f "/usr/lib/uml/modules/$kver/kernel/net/tls/tls.ko" ]; then
		moddir=/usr/lib/uml/modules/$kver
	else
		for d in /usr/lib/uml/modules/*/; do
			[ -f "${d}kernel/net/tls/tls.ko" ] && moddir=${d%/}
		done
	fi
fi
if [ -z "$moddir" ] || [ ! -f "$moddir/kernel/net/tls/tls.ko" ]; then
	die "no UML module folder with kernel/net/tls/tls.ko under /usr/lib/uml/modules"
fi

cwd=$(pwd -P)
case $cwd in
/proc | /proc/* | /sys | /sys/* | /dev | /dev/* | /run | /run/*)
	die "cannot run from $cwd: the guest mounts its own filesystem there"
	;;
esac

# ---- private temp dir (on a host filesystem path the guest sees through hostfs) ------------
tmpbase=${TMPDIR:-/tmp}
case $tmpbase in /dev/* | /run/* | /proc/* | /sys/*) tmpbase=/tmp ;; esac
work=$(mktemp -d "$tmpbase/uml-run.XXXXXX")
uml_pid=
# reap_uml: if UML's main process died hard (SIGKILL), its helper processes survive as
# orphans; kill those left in its process group, checking that each really is our kernel.
reap_uml() {
	local pg pid exe
	[ -s "$work/uml.pid" ] || return 0
	pg=$(cat "$work/uml.pid")
	exe=$(readlink -f "$linux")
	for pid in $(pgrep -g "$pg" 2>/dev/null); do
		[ "$(readlink -f "/proc/$pid/exe" 2>/dev/null)" = "$exe" ] || continue
		kill -KILL "$pid" 2>/dev/null || true
	done
}
# shellcheck disable=SC2317 # invoked through trap
cleanup() {
	if [ -n "$uml_pid" ] && kill -0 "$uml_pid" 2>/dev/null; then
		kill -TERM "$uml_pid" 2>/dev/null || true
		wait "$uml_pid" 2>/dev/null || true
	fi
	reap_uml
	rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP
work=$(cd "$work" && pwd -P)
mkdir "$work/tmp"

# sq STRING: STRING quoted for /bin/sh
sq() {
	printf "'%s'" "${1//\'/\'\\\'\'}"
}

# ---- UML's own memory directory: needs PROT_EXEC mappings ----------------------------------
exec_ok() {
	local opts
	[ -d "$1" ] && [ -w "$1" ] || return 1
	opts=$(findmnt -n -o OPTIONS --target "$1" 2>/dev/null) || return 0
	case ,$opts, in *,noexec,*) return 1 ;; esac
	return 0
}
if [ -n "${UML_RUN_TMPDIR:-}" ]; then
	umltmp=$UML_RUN_TMPDIR
	exec_ok "$umltmp" || die "UML_RUN_TMPDIR=$umltmp is not a writable exec-capable directory"
elif exec_ok /dev/shm; then
	umltmp=/dev/shm
else
	umltmp=$work
	exec_ok "$umltmp" || die "neither /dev/shm nor $tmpbase allow exec mappings; set UML_RUN_TMPDIR"
fi

# ---- the guest's init script ---------------------------------------------------------------
std_path=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
{
	echo '#!/bin/sh'
	echo "PATH=$std_path"
	echo 'export PATH'
	echo "W=$(sq "$work")"
	echo "M=$(sq "$moddir/kernel")"
	echo "K=$kernel"
	cat <<'EOF'
# Drop what the kernel put in init's environment (HOME=/, TERM=linux, unknown boot
# parameters such as mem=512M) so the command sees only what is exported below.
for v in $(env | sed -n 's/^\([A-Za-z_][A-Za-z0-9_]*\)=.*/\1/p'); do
	[ "$v" = PATH ] || unset "$v"
done
exec >"$W/init.log" 2>&1 </dev/null
mount -t proc proc /proc || echo "uml-run: mount /proc failed"
mount -t sysfs sys /sys || echo "uml-run: mount /sys failed"
# Guest-only mounts: they live in the guest kernel and never touch the host. The tmpfs on
# /run keeps guest writes out of the host's /run; /dev is the guest's devtmpfs.
mount -t tmpfs -o mode=1777 tmp "$W/tmp" || echo "uml-run: mount tmpfs on $W/tmp failed"
mount -t tmpfs -o mode=755 run /run || echo "uml-run: mount tmpfs on /run failed"
if grep -q '^devtmpfs /dev ' /proc/mounts; then
	mkdir -p /dev/shm /dev/pts
	mount -t tmpfs -o mode=1777 shm /dev/shm
	mount -t devpts -o mode=620,ptmxmode=666 devpts /dev/pts
	[ -e /dev/ptmx ] || ln -s pts/ptmx /dev/ptmx
	[ -e /dev/fd ] || ln -s /proc/self/fd /dev/fd
fi
if [ "$K" = newest ]; then
	# The modules live outside /lib/modules: the kernel's autoload goes through the wrapper
	# (modprobe -d ROOT), and the templates autoload would pick anyway are named: gcm(aes)
	# needs ctr, rfc7539(chacha20,poly1305) needs chacha (docs/KERNEL.md §12.6).
	echo "$W/modprobe" >/proc/sys/kernel/modprobe ||
		echo "uml-run: warning: cannot set /proc/sys/kernel/modprobe"
	for m in tls ctr gcm ccm chacha chacha20poly1305; do
		"$W/modprobe" "$m" || echo "uml-run: warning: modprobe $m failed"
	done
else
	# 6.1: no module autoloading for these in the guest: load every crypto template by hand,
	# in dependency order (docs/KERNEL.md §12.2), then tls.
	for m in crypto/gf128mul crypto/ghash-generic crypto/ctr crypto/gcm crypto/ccm \
		lib/crypto/libchacha crypto/chacha_generic lib/crypto/libpoly1305 \
		crypto/poly1305_generic crypto/chacha20poly1305 net/tls/tls; do
		insmod "$M/$m.ko" || echo "uml-run: warning: insmod $m failed"
	done
fi
ip link set lo up || echo "uml-run: warning: ip link set lo up failed"
if ! grep -qw tls /proc/sys/net/ipv4/tcp_available_ulp 2>/dev/null; then
	echo "uml-run: warning: tls ULP not available in the guest (tcp_available_ulp:" \
		"$(cat /proc/sys/net/ipv4/tcp_available_ulp 2>/dev/null))"
fi
EOF
	# The command's environment.
	echo "export TMPDIR=\"\$W/tmp\""
	guest_path=
	IFS=: read -ra dirs <<<"${PATH:+$PATH:}$std_path"
	for d in "${dirs[@]}"; do
		case $d in '' | [!/]*) continue ;; esac # only absolute entries
		case :$guest_path: in *:"$d":*) continue ;; esac
		guest_path=${guest_path:+$guest_path:}$d
	done
	echo "export PATH=$(sq "$guest_path")"
	names=" HOME USER LOGNAME LANG LC_ALL TZ ASAN_OPTIONS UBSAN_OPTIONS LSAN_OPTIONS"
	names+=" MSAN_OPTIONS TSAN_OPTIONS OPENSSL_CONF SSL_CERT_FILE SSL_CERT_DIR ${UML_RUN_ENV:-} "
	while IFS= read -r n; do
		case $n in TLSK_* | TEST_*) names+=" $n " ;; esac
	done < <(compgen -e)
	seen=" "
	for n in $names; do
		case $n in '' | *[!A-Za-z0-9_]* | [0-9]*) continue ;; esac
		case $seen in *" $n "*) continue ;; esac
		seen+="$n "
		[ -n "${!n+set}" ] || continue
		echo "export $n=$(sq "${!n}")"
	done
	echo "cd $(sq "$cwd") || { echo \"uml-run: cannot cd to $cwd in the guest\"; echo 2 >\"\$W/rc\"; }"
	if [ "$check" = 1 ]; then
		echo 'set -- grep -qw tls /proc/sys/net/ipv4/tcp_available_ulp'
	else
		printf 'set --'
		for a in "$@"; do printf ' %s' "$(sq "$a")"; done
		echo
	fi
	cat <<'EOF'
if [ ! -e "$W/rc" ]; then
	"$@" </dev/null >"$W/out" 2>&1
	echo $? >"$W/rc.tmp"
	sync
	mv "$W/rc.tmp" "$W/rc"
fi
sync
echo o >/proc/sysrq-trigger
sleep 10
poweroff -f
halt -f
EOF
} >"$work/init"
chmod 755 "$work/init"
if [ "$kernel" = newest ]; then
	# Run by the guest kernel for autoload (as `modprobe -q -- NAME`) and by init above.
	{
		echo '#!/bin/sh'
		echo "exec $(sq "$modprobe") -d $(sq "$modroot") \"\$@\""
	} >"$work/modprobe"
	chmod 755 "$work/modprobe"
fi

# ---- boot ----------------------------------------------------------------------------------
ulimit -c 0 # UML aborts after a sysrq power-off: no core files in the caller's directory
mem=${UML_RUN_MEM:-512M}
# Backgrounded so a signal to this script can stop the run: timeout puts itself and UML in
# their own process group, out of reach of the terminal's ^C.
# The small sh records the kernel's pid, which becomes the process group of all UML's host
# processes (UML calls setsid), for reap_uml.
# shellcheck disable=SC2016 # $$ and $@ are for that sh
TMPDIR=$umltmp timeout -k 10 "$timeout_secs" sh -c 'echo $$ >"$1"; shift; exec "$@"' sh \
	"$work/uml.pid" "$linux" "mem=$mem" rootfstype=hostfs rootflags=/ rw "init=$work/init" \
	con=null con0=null,fd:1 >"$work/console.log" 2>&1 </dev/null &
uml_pid=$!
urc=0
wait "$uml_pid" || urc=$?
uml_pid=
reap_uml

# ---- results -------------------------------------------------------------------------------
# Warnings from init (failed insmod, no tls ULP...) go to stderr.
if [ -s "$work/init.log" ]; then
	grep 'uml-run:' "$work/init.log" >&2 || true
fi

rc=
if [ -f "$work/rc" ]; then
	rc=$(cat "$work/rc")
fi
case $rc in
'' | *[!0-9]*)
	# Init killed at its first userspace instruction (it never got to write init.log): this
	# kernel cannot run on this CPU (old UML's FP/XSAVE buffer vs AMX, docs/KERNEL.md §12.4).
	sig=$(tr -d '\r' <"$work/console.log" 2>/dev/null | grep -m1 -o 'ptrace set fp regs failed.*' || true)
	if [ -z "$sig" ] && [ ! -e "$work/init.log" ]; then
		sig=$(tr -d '\r' <"$work/console.log" 2>/dev/null | grep -m1 -o 'Attempted to kill init.*' || true)
	fi
	if [ -n "$sig" ]; then
		amx=
		grep -qw amx_tile /proc/cpuinfo 2>/dev/null && amx=", host CPU has AMX"
		echo "$prog: kernel $("$linux" --version 2>/dev/null || echo "$linux") cannot boot on this CPU: $sig$amx" >&2
		exit 4
	fi
	if [ "$urc" = 124 ] || [ "$urc" = 137 ]; then
		echo "$prog: guest timed out after ${timeout_secs}s (no exit status written)" >&2
	else
		echo "$prog: guest crashed or hung: no exit status written (linux exit code $urc)" >&2
	fi
	echo "$prog: ---- guest console ----" >&2
	cat "$work/console.log" >&2 2>/dev/null || true
	if [ -s "$work/init.log" ]; then
		echo "$prog: ---- guest init log ----" >&2
		cat "$work/init.log" >&2
	fi
	if [ -s "$work/out" ]; then
		echo "$prog: ---- command output so far ----" >&2
		cat "$work/out" >&2
	fi
	exit 3
	;;
esac

if [ "$check" = 1 ]; then
	if [ "$rc" != 0 ]; then
		echo "$prog: the tls ULP is not available in the guest" >&2
		exit 1
	fi
	exit 0
fi

[ ! -f "$work/out" ] || cat "$work/out"
exit "$rc"
