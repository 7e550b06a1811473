#!/bin/bash
# uml-fetch.sh - fetch Debian sid's user-mode Linux (the newest kernel, with TLS 1.3 re-key)
# and cache it for uml-run.sh --kernel newest (docs/KERNEL.md §12.5).
#
#   uml-fetch.sh
#
# Prints on stdout shell-sourceable KEY='VALUE' lines describing the cached tree:
#   UML_TREE     the tree: ${XDG_CACHE_HOME:-$HOME/.cache}/tlsk/uml/<package version>
#   UML_LINUX    the kernel ($UML_TREE/usr/bin/linux.uml, patched to run on the tree's glibc)
#   UML_MODROOT  the root for `modprobe -d` ($UML_MODROOT/lib/modules/<kver> is the module folder)
#   UML_MODDIR   the module folder ($UML_TREE/usr/lib/uml/modules/<kver>, with modules.dep)
#   UML_KVER     the kernel version (`uname -r` in the guest), e.g. 7.2.7
#   UML_PKGVER   the Debian package version, e.g. 7.2um1
#   UML_SUITE    the suite it came from (sid or experimental)
# The same lines are in $UML_TREE/uml.env. Nothing else goes to stdout.
#
# How: a private apt state in a temp dir (its own sources.list, lists, cache and an empty dpkg
# status), so the host's apt configuration and package state are never touched; `apt-get
# download user-mode-linux libc6` from sid, both extracted with dpkg-deb, and linux.uml pointed
# at the extracted glibc with patchelf (it needs glibc >= 2.38, bookworm has 2.36; the guest's
# programs keep using the host's libraries through hostfs). The kernel must be >= 6.14 (TLS 1.3
# re-key); if sid's is older, experimental is tried, else this fails with a message.
#
# Cache: sid is asked at most once a day (the mtime of uml/checked), or on every run with
# TLSK_UML_REFRESH=1; otherwise the tree uml/current points to is used without any network
# access. A tree appears in the cache only complete (built in uml/.tmp.*, then renamed), under
# a lock, so concurrent or interrupted runs never leave half a tree. If the mirror cannot be
# reached but a tree is cached, the cached one is used (with a warning on stderr) and the
# mirror is asked again an hour later.
# The two newest trees are kept; older ones are removed.
#
# Exit status: 0 with the lines above; 1 nothing usable (no network and no cache, no kernel
# >= 6.14, missing tools); 2 usage.
#
# Environment: TLSK_UML_REFRESH=1 (ask sid now), TLSK_UML_MIRROR (default
# http://deb.debian.org/debian), TLSK_UML_SUITES (default "sid experimental", tried in order),
# TLSK_UML_MIN_KERNEL (default 6.14).
set -eu

prog=${0##*/}
min_kernel=${TLSK_UML_MIN_KERNEL:-6.14}
mirror=${TLSK_UML_MIRROR:-http://deb.debian.org/debian}
suites=${TLSK_UML_SUITES:-sid experimental}
keyring=/usr/share/keyrings/debian-archive-keyring.gpg

die() {
	echo "$prog: $*" >&2
	exit 1
}
warn() {
	echo "$prog: $*" >&2
}

[ $# -eq 0 ] || {
	echo "usage: $prog" >&2
	exit 2
}

for t in apt-get apt-cache dpkg dpkg-deb patchelf flock; do
	command -v "$t" >/dev/null 2>&1 || die "$t not found (scripts/deps.sh installs what is needed)"
done
depmod=$(command -v depmod 2>/dev/null || true)
for d in /usr/sbin/depmod /sbin/depmod; do
	[ -n "$depmod" ] || [ ! -x "$d" ] || depmod=$d
done

# ---- the cache and its lock -----------------------------------------------------------------
cache=${XDG_CACHE_HOME:-${HOME:-}/.cache}
case $cache in /*) ;; *) die "cannot find a cache directory (set XDG_CACHE_HOME or HOME)" ;; esac
cache=$cache/tlsk/uml
mkdir -p "$cache"
cache=$(cd "$cache" && pwd -P) # patchelf bakes this path into linux.uml
# uml.env quotes values with '...': refuse paths that would break that.
case $cache in *\'* | *$'\n'*) die "cache path $cache contains a quote or newline" ;; esac

exec 9>>"$cache/.lock"
flock -w 1800 9 || die "timed out waiting for another $prog (lock $cache/.lock)"
# Holding the lock, every .tmp.* is left over from an interrupted run.
rm -rf "$cache"/.tmp.*

work=
# shellcheck disable=SC2317 # invoked through trap
cleanup() {
	[ -z "$work" ] || rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

# valid DIR: DIR is a complete tree (uml.env is written last, just before the rename).
valid() {
	[ -f "$1/uml.env" ] && [ -x "$1/usr/bin/linux.uml" ]
}
emit() {
	cat "$1/uml.env"
}
set_current() {
	ln -s "$1" "$cache/.tmp.current"
	mv -T "$cache/.tmp.current" "$cache/current"
}
current=
if [ -L "$cache/current" ] && valid "$cache/current"; then
	current=$(readlink -f "$cache/current")
fi

# Asked within the last day: no network.
if [ "${TLSK_UML_REFRESH:-0}" != 1 ] && [ -n "$current" ] &&
	[ -n "$(find "$cache/checked" -maxdepth 0 -mmin -1440 2>/dev/null)" ]; then
	emit "$current"
	exit 0
fi

# ---- ask the mirror ------------------------------------------------------------------------
work=$(mktemp -d "$cache/.tmp.XXXXXX")
apt_opts=()
# apt_state SUITE...: a private apt state in $work/apt listing SUITE... from the mirror.
# Verified against the host's Debian archive keyring (bookworm's holds the keys sid is signed
# with); [trusted=yes] only where that keyring is missing.
apt_state() {
	local a=$work/apt s opt
	rm -rf "$a"
	mkdir -p "$a/lists/partial" "$a/cache/archives/partial"
	opt="[trusted=yes]"
	[ ! -r "$keyring" ] || opt="[signed-by=$keyring]"
	for s in "$@"; do
		echo "deb $opt $mirror $s main"
	done >"$a/sources.list"
	: >"$a/status"
	apt_opts=(-o "Dir::Etc::sourcelist=$a/sources.list" -o Dir::Etc::sourceparts=/dev/null
		-o "Dir::State::Lists=$a/lists" -o "Dir::Cache=$a/cache" -o "Dir::State::status=$a/status"
		-o Dir::Etc::preferences=/dev/null -o Dir::Etc::preferencesparts=/dev/null
		-o APT::Sandbox::User=root -o APT::Update::Error-Mode=any
		-o Acquire::http::Timeout=30 -o Acquire::Retries=1 -o Acquire::Languages=none
		-o Acquire::PDiffs=false)
	# apt-get update's output is noise unless it fails.
	if ! apt-get "${apt_opts[@]}" update >"$work/apt.log" 2>&1; then
		grep -E '^(E|W):' "$work/apt.log" | head -5 >&2 || true
		return 1
	fi
}
# field NAME: NAME's value in the package record on stdin
field() {
	sed -n "s/^$1: *//p" | head -n 1
}
# kernel_ok VERSION: VERSION >= the minimum (a release candidate of the minimum counts)
kernel_ok() {
	dpkg --compare-versions "$1" ge "$min_kernel~"
}

# build_tree PKGVER SUITE: download, extract, patch and cache; prints the tree's path.
build_tree() {
	local pkgver=$1 suite=$2 t final ld libdir kver mods v
	final=$cache/$pkgver
	t=$work/tree
	mkdir -p "$work/debs" "$t"
	(cd "$work/debs" && apt-get "${apt_opts[@]}" download "user-mode-linux=$pkgver" libc6) \
		>>"$work/apt.log" 2>&1 || {
		grep -E '^(E|W):' "$work/apt.log" | head -5 >&2 || true
		warn "apt-get download user-mode-linux=$pkgver libc6 failed"
		return 1
	}
	for f in "$work"/debs/*.deb; do
		dpkg-deb -x "$f" "$t" || {
			warn "dpkg-deb -x $f failed"
			return 1
		}
	done
	rm -rf "$work/debs"

	# The module folder's name is the kernel's `uname -r`.
	kver=
	for mods in "$t"/usr/lib/uml/modules/*/; do
		[ -f "${mods}kernel/net/tls/tls.ko" ] && kver=$(basename "$mods")
	done
	[ -n "$kver" ] || {
		warn "user-mode-linux $pkgver has no usr/lib/uml/modules/*/kernel/net/tls/tls.ko"
		return 1
	}
	[ -f "$t/usr/bin/linux.uml" ] || {
		warn "user-mode-linux $pkgver has no usr/bin/linux.uml"
		return 1
	}
	ld=
	for f in "$t"/usr/lib/*/ld-linux*.so.* "$t"/lib/*/ld-linux*.so.*; do
		[ -f "$f" ] && [ ! -L "$f" ] && ld=$f && break
	done
	[ -n "$ld" ] || {
		warn "libc6 from $suite has no ld-linux*.so.* under usr/lib/<triplet>/"
		return 1
	}
	libdir=$(dirname "$ld")

	# The kernel must run on the extracted glibc before it goes into the cache; its own
	# version line is what the guest's uname -r will say. Checked on a copy patched to the
	# temp paths (not through `ld.so linux.uml`: UML re-executes /proc/self/exe at start).
	cp "$t/usr/bin/linux.uml" "$work/linux.check"
	patchelf --set-interpreter "$ld" --set-rpath "$libdir" "$work/linux.check" || {
		warn "patchelf on linux.uml failed"
		return 1
	}
	v=$("$work/linux.check" --version 2>&1) || {
		warn "linux.uml $pkgver does not run with sid's glibc on this host: $v"
		return 1
	}
	[ "$v" = "$kver" ] || {
		warn "linux.uml --version says '$v' but the module folder is $kver"
		return 1
	}
	rm -f "$work/linux.check"
	kernel_ok "$kver" || {
		warn "user-mode-linux $pkgver from $suite has kernel $kver, older than $min_kernel"
		return 1
	}

	# patchelf with the final paths: the tree is only renamed, never copied.
	patchelf --set-interpreter "$final${ld#"$t"}" --set-rpath "$final${libdir#"$t"}" \
		"$t/usr/bin/linux.uml" || {
		warn "patchelf on linux.uml failed"
		return 1
	}
	# modprobe -d ROOT looks in ROOT/lib/modules/$(uname -r).
	mkdir -p "$t/root/lib/modules"
	ln -s "../../../usr/lib/uml/modules/$kver" "$t/root/lib/modules/$kver"
	if [ ! -s "$t/usr/lib/uml/modules/$kver/modules.dep" ]; then
		[ -n "$depmod" ] || {
			warn "no modules.dep in the package and depmod not found (kmod)"
			return 1
		}
		"$depmod" -b "$t/root" "$kver" || {
			warn "depmod failed"
			return 1
		}
	fi
	{
		echo "UML_TREE='$final'"
		echo "UML_LINUX='$final/usr/bin/linux.uml'"
		echo "UML_MODROOT='$final/root'"
		echo "UML_MODDIR='$final/usr/lib/uml/modules/$kver'"
		echo "UML_KVER='$kver'"
		echo "UML_PKGVER='$pkgver'"
		echo "UML_SUITE='$suite'"
	} >"$t/uml.env"
	# Another run cannot have made $final meanwhile (we hold the lock), but if a stale
	# incomplete one exists (made by hand?), replace it.
	[ ! -e "$final" ] || rm -rf "$final"
	mv -T "$t" "$final"
	"$final/usr/bin/linux.uml" --version >/dev/null 2>&1 || {
		warn "$final/usr/bin/linux.uml does not run after patchelf"
		rm -rf "$final"
		return 1
	}
	echo "$final"
}

# prune: keep the two newest trees (by mtime) and whatever current points to.
prune() {
	local keep d n=0
	keep=$(readlink -f "$cache/current")
	while IFS= read -r d; do
		n=$((n + 1))
		[ "$n" -gt 2 ] || continue
		[ "$cache/$d" != "$keep" ] || continue
		rm -rf "${cache:?}/$d"
	done < <(cd "$cache" && find . -mindepth 1 -maxdepth 1 -type d ! -name '.*' -printf '%T@ %f\n' |
		sort -rn | cut -d' ' -f2-)
}

unreachable=0
seen=
tree=
prev=
for suite in $suites; do
	# experimental holds only what differs from sid; libc6 still comes from sid.
	case $suite in
	sid | unstable) state=("$suite") ;;
	*) state=(sid "$suite") ;;
	esac
	if ! apt_state "${state[@]}"; then
		warn "cannot update the package lists of $suite from $mirror"
		unreachable=1
		break
	fi
	rec=$(apt-cache "${apt_opts[@]}" show --no-all-versions "user-mode-linux/$suite" 2>/dev/null || true)
	pkgver=$(field Version <<<"$rec")
	if [ -z "$pkgver" ]; then
		# sid always has the package; an empty answer means the lists did not load.
		if [ "$suite" = sid ] || [ "$suite" = unstable ]; then
			warn "no user-mode-linux in the package lists of $suite from $mirror"
			unreachable=1
			break
		fi
		seen="$seen, $suite has no user-mode-linux"
		continue
	fi
	# Built-Using: linux (= 7.2.7-1) names the kernel before anything is downloaded.
	hint=$(field Built-Using <<<"$rec" | sed -n 's/.*\blinux (= \([^)]*\)).*/\1/p')
	hint=${hint%-*}
	seen="$seen, $suite has user-mode-linux $pkgver${hint:+ (kernel $hint)}"
	if [ -n "$hint" ] && ! kernel_ok "$hint"; then
		continue
	fi
	if valid "$cache/$pkgver"; then
		tree=$cache/$pkgver
		break
	fi
	if tree=$(build_tree "$pkgver" "$suite"); then
		break
	fi
	tree=
	rm -rf "$work/tree" "$work/debs"
done
seen=${seen#, }

if [ -n "$tree" ]; then
	prev=$current
	set_current "$(basename "$tree")"
	touch "$cache/checked"
	[ "$prev" = "$(readlink -f "$tree")" ] || prune
	emit "$tree"
	exit 0
fi
if [ -n "$current" ]; then
	# Offline (or nothing new worked): what the cache has is still >= the minimum.
	if [ "$unreachable" = 1 ]; then
		warn "using the cached $(basename "$current") (could not ask $mirror)"
		# Offline: ask again in an hour rather than on every run (each try can take a while).
		touch -d '-23 hours' "$cache/checked" 2>/dev/null || true
	else
		warn "no usable user-mode-linux in $suites (${seen:-nothing found}); using the cached $(basename "$current")"
	fi
	emit "$current"
	exit 0
fi
if [ "$unreachable" = 1 ]; then
	die "cannot reach $mirror and no user-mode Linux is cached in $cache"
fi
die "no user-mode-linux with kernel >= $min_kernel that runs here in: $suites (${seen:-nothing found})"
