#!/bin/bash
# report.sh - medians, ratios, targets and plots from the rows bench/suite.sh wrote.
#
#   bench/report.sh RESULTS.tsv OUTDIR
#
# Rows: scenario, case, server, run, value, cost (tab-separated).  In every case the first
# server is tlsk's ("tlsk"; "ktls" in the kernel scenario) and the other one is the reference
# (nginx, haproxy; "user", the same binary in userspace mode).  Writes OUTDIR/summary.md (and
# prints it) and, when gnuplot is there, OUTDIR/ratios.png, cost-vs-size.png, rate-vs-conns.png.
set -eu

tsv=$1
out=$2
host=${3:-$(dirname "$tsv")/host.tsv} # bench/suite.sh host_row: where each run's time went
hz=$(getconf CLK_TCK)
md=$out/summary.md
med=$out/medians.tsv

# median(a, k, m): the median of a[k, 1], ..., a[k, m], numerically; both awk programs below
# start with it.
median_awk='
	function median(a, k, m,   i, j, t, x) {
		for (i = 1; i <= m; i++) x[i] = a[k, i] + 0
		for (i = 2; i <= m; i++) for (j = i; j > 1 && x[j - 1] > x[j]; j--) { t = x[j]; x[j] = x[j - 1]; x[j - 1] = t }
		return m % 2 ? x[(m + 1) / 2] : (x[m / 2] + x[m / 2 + 1]) / 2
	}'

# Where each run's time went (host.tsv: scenario, case, server, run, seconds, work, server
# ticks, server CPU busy and stolen ticks, client CPU busy and stolen ticks, server user
# ticks): every bulk and proxy run, and the small-file cases' medians per request.  "busiest" names the side whose CPU was at
# 90 % or more of the run's wall-clock time, the one that held the run back; "neither" means
# both CPUs waited, as at one connection, where a request is a round trip.
host_report() {
	echo
	echo "### Where each run's time went"
	echo
	echo "From /proc/stat around every run: the server's CPU (0) and the client's, busy"
	echo "(user, system, irq, softirq) and stolen (the hypervisor ran something else on the vCPU);"
	echo "the server process's own CPU from /proc/PID/stat.  Per cent of the run's wall-clock time."
	echo
	echo "| scenario | case | run | server | GB/s | server process | server CPU busy | client CPU busy | stolen (server / client CPU) | busiest |"
	echo "|---|---|---|---|---|---|---|---|---|---|"
	awk -F'\t' -v hz="$hz" '($1 == "bulk" || $1 == "proxy") {
		w = $5 * hz; p = 100 * $7 / w; b0 = 100 * $8 / w; b1 = 100 * $10 / w
		who = p >= 90 && b1 >= 90 ? "both" : p >= 90 ? "server" : b1 >= 90 ? "client" : "neither"
		printf "| %s | %s | %s | %s | %.2f | %.0f %% | %.0f %% | %.0f %% | %.1f / %.1f %% | %s |\n", $1, $2, $4, $3,
			$6 / $5 / 1e9, p, b0, b1, 100 * $9 / w, 100 * $11 / w, who }' "$host"
	echo
	echo "Small files, medians over the runs, microseconds per request: the run's wall-clock time,"
	echo "the server CPU's and the client CPU's busy time and the stolen time per request; at one"
	echo "connection a request is a round trip, and what neither CPU was busy for is the wait for"
	echo "the other side to be woken (\"both idle\")."
	echo
	echo "| case | server | req/s | wall | server CPU | server process (its userspace) | client CPU | both idle | stolen | server busy | client busy | busiest |"
	echo "|---|---|---|---|---|---|---|---|---|---|---|---|"
	awk -F'\t' -v hz="$hz" "$median_awk"'
		function med(k, col) { return median(v, k SUBSEP col, n[k]) }
		$1 == "small" && $2 ~ /^(1|4|16)k-/ {
			k = $2 SUBSEP $3; if (!(k in n)) order[++nk] = k; i = ++n[k]; u = 1e6 / hz / $6
			v[k, 1, i] = $6 / $5; v[k, 2, i] = 1e6 * $5 / $6; v[k, 3, i] = $8 * u; v[k, 4, i] = $10 * u
			v[k, 5, i] = 1e6 * $5 / $6 - ($8 + $10) * u; v[k, 6, i] = ($9 + $11) * u
			v[k, 7, i] = 100 * $8 / ($5 * hz); v[k, 8, i] = 100 * $10 / ($5 * hz)
			v[k, 9, i] = $7 * u; v[k, 10, i] = $12 == "" ? -1 : $12 * u
		}
		END {
			for (o = 1; o <= nk; o++) {
				k = order[o]; split(k, a, SUBSEP); b0 = med(k, 7); b1 = med(k, 8)
				ut = med(k, 10)
				printf "| %s | %s | %.0f | %.1f | %.1f | %.1f%s | %.1f | %s | %.1f | %.0f %% | %.0f %% | %s |\n", a[1], a[2], med(k, 1),
					med(k, 2), med(k, 3), med(k, 9), (ut >= 0 ? sprintf(" (%.1f)", ut) : ""), med(k, 4),
					(a[1] ~ /-c1$/ ? sprintf("%.1f", med(k, 5)) : ""), med(k, 6),
					b0, b1, (b0 >= 90 && b1 >= 90 ? "both" : b0 >= 90 ? "server" : b1 >= 90 ? "client" : "neither")
				if (a[1] ~ /-c1$/) { w[a[1], a[2]] = med(k, 2); sv[a[1], a[2]] = med(k, 3); if (a[2] != "tlsk") { ref[a[1]] = a[2]; c1[++n1] = a[1] } }
			}
			if (n1) {
				print ""
				print "At one connection, what 1.2x would take: tlsk-serve'"'"'s round trip at most the reference'"'"'s / 1.2;"
				print "with its client CPU and waiting time as measured, its server CPU per request would have"
				print "to be at most:"
				print ""
			}
			for (o = 1; o <= n1; o++) {
				c = c1[o]; r = ref[c]; need = w[c, r] / 1.2 - (w[c, "tlsk"] - sv[c, "tlsk"])
				printf "- %s: %.1f us (%.2fx %s'"'"'s %.1f; now %.1f, %.2fx)\n", c, need, need / sv[c, r], r, sv[c, r],
					sv[c, "tlsk"], sv[c, "tlsk"] / sv[c, r]
			}
		}' "$host"
}

# scenario case server runs median-value median-cost, in the order the cases first appear.
awk -F'\t' "$median_awk"'
	{ k = $1 "\t" $2 "\t" $3; if (!(k in n)) order[++nk] = k; n[k]++; v[k, n[k]] = $5; c[k, n[k]] = $6 }
	END { for (i = 1; i <= nk; i++) { k = order[i]; printf "%s\t%d\t%g\t%g\n", k, n[k], median(v, k, n[k]), median(c, k, n[k]) } }
' "$tsv" >"$med"

{
	[ -s "$out/meta.txt" ] && sed 's/^ *//; s/^== //; s/$/  /' "$out/meta.txt" && echo
	echo "Every figure is a median over the runs; a ratio is tlsk's figure over the reference's."
	echo "\"every run\" for bulk is the worst of the per-run ratios (run i of tlsk against run i"
	echo "of the reference).  The kernel rows come from user-mode Linux: structure, not speed."
	echo
	echo "| scenario | case | units | tlsk | reference | ratio | tlsk cost | ref. cost | cost ratio | target | met |"
	echo "|---|---|---|---|---|---|---|---|---|---|---|"
	awk -F'\t' -v tsv="$tsv" '
		BEGIN {
			while ((getline l < tsv) > 0) {
				split(l, f, "\t"); rv[f[1], f[2], f[3], f[4]] = f[5]; rc[f[1], f[2], f[3], f[4]] = f[6]
			}
		}
		function units(s, c) {
			if (s == "bulk" || s == "proxy" || c ~ /1g$/) return "GB/s; CPU s/GiB"
			if (s == "small" || s == "ofc" || s == "workers") return "req/s; CPU ms/1000 req"
			if (s == "handshake") return "conn/s; CPU ms/conn"
			if (s == "idle") return "KiB/conn; server MiB"
			if (c ~ /^cpu/) return "utime s/GiB; stime s/GiB"
			if (c ~ /^rss/) return "KiB/conn"
			if (s == "hssys") return "syscalls/conn"
			if (s == "hsir") return "k instructions/conn (userspace); cost: of them, OpenSSL key log"
			if (s == "reqir") return "k instructions/request (userspace)"
			if (s == "hsossl") return "k instructions/conn in SSL_new + SSL_do_handshake + SSL_free; cost: share of the server total"
			return "syscalls"
		}
		{
			s = $1; c = $2; srv = $3
			if (srv == "tlsk" || srv == "ktls") { ours[s, c] = srv; ov[s, c] = $5; oc[s, c] = $6; if (!((s SUBSEP c) in seen)) { seen[s, c] = 1; order[++n] = s SUBSEP c } }
			else { ref[s, c] = srv; fv[s, c] = $5; fc[s, c] = $6 }
		}
		function r(a, b) { return b > 0 ? a / b : 0 }
		function worst(s, c, which, dir,   i, w, x) {   # the worst per-run ratio
			w = ""
			for (i = 1; ((s SUBSEP c SUBSEP ours[s, c] SUBSEP i) in rv); i++) {
				x = which == "v" ? r(rv[s, c, ours[s, c], i], rv[s, c, ref[s, c], i]) : r(rc[s, c, ours[s, c], i], rc[s, c, ref[s, c], i])
				if (w == "" || (dir > 0 ? x < w : x > w)) w = x
			}
			return w
		}
		END {
			for (i = 1; i <= n; i++) {
				split(order[i], k, SUBSEP); s = k[1]; c = k[2]
				vr = r(ov[s, c], fv[s, c]); cr = r(oc[s, c], fc[s, c]); t = ""; met = ""
				if (s == "bulk") {
					wv = worst(s, c, "v", 1); wc = worst(s, c, "c", -1)
					t = ">= 1.2x, CPU <= 0.8x, every run"; met = (wv >= 1.2 && wc <= 0.8) ? "yes" : sprintf("no (every run: %.2fx, %.2fx)", wv, wc)
				} else if (s == "small" && c ~ /^(1|4|16)k/) {
					t = ">= 1.2x, CPU <= 0.8x"; met = (vr >= 1.2 && cr <= 0.8) ? "yes" : "no"
				} else if (s == "handshake") {
					t = "CPU <= 0.9x"; met = cr <= 0.9 ? "yes" : "no"
				} else if (s == "idle") {
					t = "<= 0.5x"; met = vr <= 0.5 ? "yes" : "no"
				} else if (s == "proxy") {
					t = ">= 1.3x"; met = vr >= 1.3 ? "yes" : "no"
				} else if (s == "hsir") {
					t = "(structure)"; met = sprintf("%.2fx without the key log", r(ov[s, c] - oc[s, c], fv[s, c] - fc[s, c]))
				} else if (s == "reqir") {
					t = "(structure)"
				} else if (s == "hsossl") {
					t = "(structure)"; met = sprintf("floor %.2fx", fc[s, c])
				} else if (s == "kernel" && c == "cpu-per-gib") {
					t = "utime <= 0.05x"; met = vr <= 0.05 ? "yes" : "no"
				} else if (s == "kernel" && c == "syscalls-per-gib") {
					t = "<= 0.125x"; met = vr <= 0.125 ? "yes" : "no"
				} else if (s == "kernel" && c ~ /^rss-per-idle-conn/) {
					t = "<= 0.5x"; met = vr <= 0.5 ? "yes" : "no"
				} else if (s == "kernel" && c == "sockopts-per-conn-cbc") {
					t = "<= 1 more"; met = ov[s, c] - fv[s, c] <= 1 ? "yes" : sprintf("no (%+g)", ov[s, c] - fv[s, c])
				}
				printf "| %s | %s | %s | %g | %g %s | %s | %g | %g | %s | %s | %s |\n", s, c, units(s, c), ov[s, c], fv[s, c], ref[s, c],
					(fv[s, c] > 0 ? sprintf("%.2fx", vr) : ""), oc[s, c], fc[s, c], (fc[s, c] > 0 ? sprintf("%.2fx", cr) : ""), t, met
			}
		}
	' "$med"
	if [ -s "$host" ]; then
		host_report
	fi
} >"$md"
cat "$md"

command -v gnuplot >/dev/null 2>&1 || exit 0

# Data for the plots.
awk -F'\t' '($3 == "tlsk" || $3 == "ktls") { o[$1 SUBSEP $2] = $5 "\t" $6 } ($3 != "tlsk" && $3 != "ktls") { f[$1 SUBSEP $2] = $5 "\t" $6; order[++n] = $1 SUBSEP $2 }
	END { for (i = 1; i <= n; i++) { k = order[i]; if (!(k in o)) continue; split(k, a, SUBSEP); if (a[1] == "kernel" || a[1] == "hssys" || a[1] == "hsir" || a[1] == "hsossl" || a[1] == "reqir") continue
		split(o[k], x, "\t"); split(f[k], y, "\t")
		printf "%s/%s\t%g\t%g\n", a[1], a[2], (y[1] > 0 ? x[1] / y[1] : 0), (y[2] > 0 ? x[2] / y[2] : 0) } }' "$med" >"$out/ratios.dat"
for srv in tlsk nginx; do
	awk -F'\t' -v s="$srv" '$1 == "small" && $3 == s && $2 ~ /-c64$/ { k = $2; sub(/k-c64$/, "", k); print k * 1024 "\t" $6 }
		$1 == "bulk" && $3 == s { print 2^30 "\t" $6 * 1e6 }' "$med" | sort -g >"$out/size-$srv.dat"
	awk -F'\t' -v s="$srv" '$1 == "small" && $3 == s { split($2, a, "k-c"); print a[1] "\t" a[2] "\t" $5 }' "$med" |
		sort -k1,1n -k2,2n >"$out/conns-$srv.dat"
done

if [ -s "$out/ratios.dat" ]; then
	gnuplot <<EOF
set terminal pngcairo size 1400,600 font ",10"
set output "$out/ratios.png"
set title "tlsk / reference, medians (throughput: higher is better; CPU per unit of work: lower is better)"
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.8 border -1
set xtics rotate by -50 scale 0
set grid ytics
set yrange [0:*]
set key top left
set arrow from graph 0, first 1 to graph 1, first 1 nohead dt 2 lw 2
plot "$out/ratios.dat" using 2:xtic(1) title "throughput ratio", "" using 3 title "CPU-per-work ratio"
EOF
fi
if [ -s "$out/size-tlsk.dat" ]; then
	gnuplot <<EOF
set terminal pngcairo size 900,600 font ",10"
set output "$out/cost-vs-size.png"
set title "server CPU per response against response size (64 connections; 1 GiB: one download)"
set logscale xy
set xlabel "response body (bytes)"
set ylabel "server CPU per response (microseconds)"
set grid
set key top left
plot "$out/size-tlsk.dat" using 1:2 with linespoints lw 2 title "tlsk-serve", \
     "$out/size-nginx.dat" using 1:2 with linespoints lw 2 title "nginx"
EOF
fi
if [ -s "$out/conns-tlsk.dat" ]; then
	gnuplot <<EOF
set terminal pngcairo size 900,600 font ",10"
set output "$out/rate-vs-conns.png"
set title "requests per second against keep-alive connections (one worker each)"
set logscale x 2
set xlabel "connections"
set ylabel "requests/s"
set grid
set key outside right
plot for [k in "1 4 16 64"] "$out/conns-tlsk.dat" using (strcol(1) eq k ? \$2 : 1/0):3 with linespoints lw 2 title "tlsk ".k." KiB", \
     for [k in "1 4 16 64"] "$out/conns-nginx.dat" using (strcol(1) eq k ? \$2 : 1/0):3 with linespoints dt 2 title "nginx ".k." KiB"
EOF
fi
rm -f "$out"/*.dat
